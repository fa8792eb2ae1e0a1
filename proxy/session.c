/* Client sessions: the server side of the MySQL login, then the packet relay. */
#include "proxy/session.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "auth/handshake.h"
#include "auth/proto.h"
#include "auth/reply.h"
#include "auth/response.h"
#include "auth/scramble.h"
#include "auth/session_track.h"
#include "auth/users.h"
#include "conf/log.h"
#include "proxy/pool.h"
#include "proxy/query_scan.h"
#include "proxy/route.h"
#include "proxy/session_state.h"
#include "proxy/upstream.h"
#include "proxy/worker.h"
#include "secrets/secret_source.h"

/* Login packets (with connect attributes) stay far below this; bigger is garbage. */
#define LOGIN_MAX_PACKET (64 * 1024)
/* Past this much unsent data toward one side, stop reading from the other (backpressure). */
#define RELAY_HIGH_WATER (256 * 1024)

enum session_phase {
    SESSION_HANDSHAKE,    /* greeting sent; waiting for the login request (or SSLRequest) */
    SESSION_AUTH_SWITCH,  /* asked the client to answer with mysql_native_password */
    SESSION_CONNECTING,   /* logging in upstream for this client */
    SESSION_RELAY,        /* moving packets both ways */
    SESSION_CHANGE_USER,  /* credproxy's own reset commands are in flight upstream */
    SESSION_RECONNECTING, /* the connection was lost while idle: borrowing a new one */
    SESSION_RESTORING,    /* replaying the session's state on the new connection */
    SESSION_CLOSING,      /* a last packet is being flushed to the client */
};

struct session {
    struct session *prev, *next; /* the worker's list of live sessions */
    struct worker *worker;
    struct route *route;
    struct bufferevent *client;
    struct bufferevent *server; /* the lent connection's stream, or NULL */
    struct pool_conn *conn;     /* lent by the pool for the session's lifetime */
    struct pool_request *req;   /* while waiting for the pool */
    struct event *timer;        /* handshake timeout */
    enum session_phase state;
    uint64_t id;
    char peer[80];  /* "ADDR:PORT" or "unix:uid=N" for logs */
    char user[129]; /* the name the client gave, for logs and password mode */
    uint8_t scramble[PROTO_SCRAMBLE_LEN];
    uint64_t offered_caps; /* what the greeting offered */
    uint64_t caps;         /* what the client asked for */
    uint8_t charset;
    uint8_t seq;    /* next sequence id toward the client during login */
    char *database; /* schema asked for at login, or NULL */
    uint8_t *attrs; /* connect attributes, forwarded upstream */
    size_t attrs_len;
    /* relay state */
    struct response_tracker rt;    /* where the server is in its reply to the current command */
    size_t to_server_left;         /* bytes of the current client packet still to forward */
    size_t to_client_left;         /* bytes of the current server packet still to forward */
    unsigned client_continues : 1; /* last client packet was 16 MiB - 1: next continues it */
    unsigned server_continues : 1; /* same for the server's last packet */
    unsigned untrackable : 1;      /* lost track of the reply: the connection cannot be reused */
    unsigned detached : 1;         /* the connection died while the client was idle */
    unsigned dirty : 1;            /* the session may have changed state: reset before reuse */
    unsigned cursor_open : 1;      /* a server-side cursor is open (lost with the connection) */
    struct session_state st;       /* what a new connection must be given to continue the session */
    struct restore *restore;       /* while SESSION_RESTORING */
    char *set_names_collation;     /* COLLATE of a SET NAMES awaiting its OK ("" for none) */
    unsigned client_throttled : 1; /* client reads paused until the server side drains */
    unsigned server_throttled : 1; /* server reads paused until the client side drains */
    unsigned tls : 1;
    unsigned is_unix : 1;
    unsigned peer_denied : 1; /* peer mode refused this uid: deny after its login request */
    unsigned released : 1;    /* detached by choice (multiplexing), not by a lost connection */
    unsigned greet_waits : 8; /* checks for the upstream's profile before greeting */
};

/*
 * The connection can serve another client when its reply stream was followed
 * to the end, and no transaction is open.
 */
static bool session_conn_clean(const struct session *s)
{
    return s->state == SESSION_RELAY && !s->untrackable && !s->to_client_left &&
           !s->to_server_left && response_idle(&s->rt) && !(s->rt.status & PROTO_STATUS_IN_TRANS) &&
           !s->worker->stopping;
}

/* Gives the connection back to the pool (clean: reset and reuse), forgetting it. */
static void drop_conn(struct session *s, bool clean)
{
    if (!s->conn)
        return;
    bufferevent_setcb(s->server, NULL, NULL, NULL, NULL);
    pool_release(s->conn, clean, s->dirty);
    s->conn = NULL;
    s->server = NULL;
}

static void client_read_cb(struct bufferevent *bev, void *arg);
static void client_write_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);

/* The one way a session ends: logs why and frees everything it holds. */
static void session_close(struct session *s, const char *why)
{
    /* Port probes and health checks connect and leave; only a login cut short upstream is news. */
    if (s->state == SESSION_CONNECTING)
        log_info("C-%llu %s: closed during login: %s", (unsigned long long)s->id, s->peer, why);
    else
        log_debug("C-%llu %s: closed%s: %s", (unsigned long long)s->id, s->peer,
                  s->state == SESSION_HANDSHAKE || s->state == SESSION_AUTH_SWITCH ? " during login"
                                                                                   : "",
                  why);
    if (s->req)
        pool_cancel(s->req);
    drop_conn(s, session_conn_clean(s));
    if (s->client)
        bufferevent_free(s->client);
    if (s->timer)
        event_free(s->timer);
    free(s->database);
    free(s->attrs);
    session_state_free(&s->st);
    free(s->restore);
    free(s->set_names_collation);
    if (s->prev)
        s->prev->next = s->next;
    else
        s->worker->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->worker->n_sessions--;
    free(s);
}

void session_close_all(struct worker *w)
{
    while (w->sessions)
        session_close(w->sessions, "credproxy is shutting down");
}

/* Sends a last packet to the client, then closes once it has left. */
static void session_fail(struct session *s, uint16_t code, const char *sqlstate, const char *msg)
{
    /* Client-side codes describe credproxy's own view; send them as server errors. */
    if (code == PROTO_ER_SERVER_LOST) {
        code = PROTO_ER_ABORTING;
        sqlstate = "08S01";
    } else if (code >= 2000 && code < 3000) {
        code = PROTO_ER_CANNOT_CONNECT;
        sqlstate = "08001";
    }
    log_info("C-%llu %s: error %u: %s", (unsigned long long)s->id, s->peer, code, msg);
    struct wire_writer w;
    wire_writer_init(&w);
    err_packet_write(&w, s->seq, code, sqlstate, msg);
    if (!w.failed)
        bufferevent_write(s->client, w.buf, w.len);
    wire_writer_free(&w);
    if (s->req) {
        pool_cancel(s->req);
        s->req = NULL;
    }
    drop_conn(s, false);
    s->state = SESSION_CLOSING;
    bufferevent_disable(s->client, EV_READ);
    bufferevent_setwatermark(s->client, EV_WRITE, 0, 0);
    bufferevent_enable(s->client, EV_WRITE);
}

/*
 * Sends data (drained) to dst. On a plain socket with nothing queued it is
 * written at once: bufferevents otherwise wait for the next loop turn and
 * register and unregister write interest around every write, two epoll_ctl
 * calls that cost more than the relay itself. Whatever the socket does not
 * take is queued on the bufferevent, which then handles it as usual.
 */
static void send_now(struct bufferevent *dst, struct evbuffer *data)
{
    struct evbuffer *out = bufferevent_get_output(dst);
    if (evbuffer_get_length(out) == 0 && !bufferevent_openssl_get_ssl(dst) &&
        !bufferevent_get_underlying(dst)) {
        while (evbuffer_get_length(data) > 0 && evbuffer_write(data, bufferevent_getfd(dst)) > 0)
            ;
    }
    if (evbuffer_get_length(data) > 0)
        evbuffer_add_buffer(out, data);
}

static void send_to_client(struct session *s, const struct wire_writer *w)
{
    if (w->failed)
        return;
    struct evbuffer *scratch = s->worker->scratch;
    evbuffer_add(scratch, w->buf, w->len);
    send_now(s->client, scratch);
}

/* --- login --------------------------------------------------------------------------------- */

static void send_greeting(struct session *s)
{
    struct server_profile prof;
    route_profile(s->route, &prof);
    s->offered_caps = (prof.caps & UPSTREAM_RELAYABLE_CAPS) | PROTO_CAP_PROTOCOL_41 |
                      PROTO_CAP_SECURE_CONNECTION | PROTO_CAP_PLUGIN_AUTH |
                      PROTO_CAP_PLUGIN_AUTH_LENENC | PROTO_CAP_CONNECT_WITH_DB;
    if (s->route->frontend_tls)
        s->offered_caps |= PROTO_CAP_SSL;
    scramble_generate(s->scramble);
    struct greeting g = {
        .server_version = prof.version,
        .connection_id = (uint32_t)s->id,
        .capabilities = s->offered_caps,
        .charset = prof.charset,
        .status = PROTO_STATUS_AUTOCOMMIT,
        .auth_plugin = "mysql_native_password",
    };
    memcpy(g.scramble, s->scramble, sizeof(g.scramble));
    struct wire_writer w;
    wire_writer_init(&w);
    greeting_write(&w, &g);
    send_to_client(s, &w);
    wire_writer_free(&w);
}

static void pool_ready(void *arg, struct pool_conn *conn, const struct upstream_error *err);
static void server_read_cb(struct bufferevent *bev, void *arg);
static void server_write_cb(struct bufferevent *bev, void *arg);
static void server_event_cb(struct bufferevent *bev, short what, void *arg);

static void enter_relay(struct session *s, uint64_t caps, uint16_t status);
static void arm_idle_release(struct session *s);

/*
 * With multiplexing, a login needs no connection yet: the client is let in
 * at once and its first command borrows one (so thousands of idle clients
 * cost no server connections). An unknown schema or a refused secret then
 * shows at that first command instead of at login.
 */
static void lazy_login(struct session *s)
{
    struct server_profile prof;
    route_profile(s->route, &prof);
    s->detached = 1;
    s->released = 1;
    enter_relay(s, upstream_caps_for(s->caps, prof.caps), PROTO_STATUS_AUTOCOMMIT);
}

/* The client is who it says (or trusted): borrow an upstream connection for it. */
static void begin_upstream(struct session *s)
{
    if (s->route->cfg->pool_release_idle_ms > 0) {
        lazy_login(s);
        return;
    }
    struct pool_want want = {
        .client_caps = s->caps,
        .charset = s->charset,
        .database = s->database,
        .attrs = s->attrs,
        .attrs_len = s->attrs_len,
    };
    s->state = SESSION_CONNECTING;
    bufferevent_disable(s->client, EV_READ);
    s->req = pool_acquire(worker_pool(s->worker, s->route), &want, pool_ready, s);
}

/* Takes over a connection's callbacks for the relay. */
static void attach_conn(struct session *s, struct pool_conn *conn)
{
    s->conn = conn;
    s->server = pool_conn_bev(conn);
    bufferevent_setcb(s->server, server_read_cb, server_write_cb, server_event_cb, s);
    bufferevent_setwatermark(s->server, EV_READ, 0, RELAY_HIGH_WATER);
    bufferevent_setwatermark(s->server, EV_WRITE, 0, 0);
    bufferevent_enable(s->server, EV_READ | EV_WRITE);
}

static void pool_ready(void *arg, struct pool_conn *conn, const struct upstream_error *err)
{
    struct session *s = arg;
    s->req = NULL;
    if (err) {
        session_fail(s, err->code, err->sqlstate, err->message);
        return;
    }
    attach_conn(s, conn);
    const struct upstream_info *info = pool_conn_info(conn);
    log_debug("C-%llu %s: upstream connection as '%s' (thread %u%s)", (unsigned long long)s->id,
              s->peer, pool_conn_user(conn), info->thread_id, info->tls ? ", TLS" : "");
    enter_relay(s, info->caps, info->status);
}

/* Login done: OK to the client, then relay (with or without a connection yet). */
static void enter_relay(struct session *s, uint64_t caps, uint16_t status)
{
    response_tracker_init(&s->rt, caps);
    s->rt.status = status;
    struct wire_writer w;
    wire_writer_init(&w);
    ok_packet_write(&w, s->seq, 0, 0, status, 0);
    send_to_client(s, &w);
    wire_writer_free(&w);
    s->state = SESSION_RELAY;
    event_del(s->timer);
    bufferevent_setwatermark(s->client, EV_READ, 0, RELAY_HIGH_WATER);
    bufferevent_enable(s->client, EV_READ);
    if (s->conn && s->route->cfg->pool_release_idle_ms > 0)
        arm_idle_release(s);
    if (evbuffer_get_length(bufferevent_get_input(s->client)) > 0)
        client_read_cb(s->client, s);
}

/* Switches the client connection to TLS after its SSLRequest. */
static bool start_client_tls(struct session *s)
{
    SSL *ssl = SSL_new(s->route->frontend_tls);
    if (!ssl)
        return false;
    struct bufferevent *tls =
        bufferevent_openssl_filter_new(s->worker->base, s->client, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!tls) {
        SSL_free(ssl);
        return false;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
    s->client = tls;
    s->tls = 1;
    bufferevent_setcb(tls, client_read_cb, client_write_cb, client_event_cb, s);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
    return true;
}

static bool verify_local_password(struct session *s, const uint8_t *reply, size_t len)
{
    const uint8_t *stage2 = local_users_find(s->route->users, s->user, strlen(s->user));
    return stage2 && native_password_verify(stage2, s->scramble, reply, len);
}

static void deny_local_login(struct session *s)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "Access denied for user '%s' (credproxy local user)", s->user);
    session_fail(s, PROTO_ER_ACCESS_DENIED, "28000", msg);
}

static void handle_login_request(struct session *s, const uint8_t *p, size_t len)
{
    struct handshake_response hr;
    switch (handshake_response_parse(p, len, s->offered_caps, &hr)) {
    case HANDSHAKE_MALFORMED:
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "Bad handshake");
        return;
    case HANDSHAKE_SSL_REQUEST:
        if (s->tls || !s->route->frontend_tls || !start_client_tls(s))
            session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "Bad handshake: TLS is not available");
        return;
    case HANDSHAKE_PARSED:
        break;
    }
    if (hr.user_len >= sizeof(s->user)) {
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "Bad handshake: user name too long");
        return;
    }
    s->caps = hr.capabilities;
    s->charset = hr.charset;
    snprintf(s->user, sizeof(s->user), "%.*s", (int)hr.user_len, hr.user);
    if (hr.database && hr.database_len)
        s->database = strndup(hr.database, hr.database_len);
    if (hr.attrs_len && (s->attrs = malloc(hr.attrs_len))) {
        memcpy(s->attrs, hr.attrs, hr.attrs_len);
        s->attrs_len = hr.attrs_len;
    }
    if (s->peer_denied) {
        char msg[200];
        snprintf(msg, sizeof(msg), "credproxy: peer %s is not allowed on route %s", s->peer,
                 s->route->cfg->name);
        session_fail(s, PROTO_ER_ACCESS_DENIED, "28000", msg);
        return;
    }
    if (s->route->cfg->client_auth != CLIENT_AUTH_PASSWORD) {
        begin_upstream(s);
        return;
    }
    bool native = !hr.auth_plugin || (hr.auth_plugin_len == 21 &&
                                      !memcmp(hr.auth_plugin, "mysql_native_password", 21));
    if (native && hr.auth_len == 20) {
        if (verify_local_password(s, hr.auth, hr.auth_len))
            begin_upstream(s);
        else
            deny_local_login(s);
        return;
    }
    /* The client used another plugin (caching_sha2 from MySQL 8 clients): ask for native. */
    struct wire_writer w;
    wire_writer_init(&w);
    auth_switch_request_write(&w, s->seq++, "mysql_native_password", s->scramble,
                              sizeof(s->scramble));
    send_to_client(s, &w);
    wire_writer_free(&w);
    s->state = SESSION_AUTH_SWITCH;
}

/* Reads whole login packets; anything oversized or out of sequence ends the session. */
static void login_read(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->client);
    while (s->state == SESSION_HANDSHAKE || s->state == SESSION_AUTH_SWITCH) {
        uint8_t hdr[4];
        if (evbuffer_copyout(in, hdr, 4) < 4)
            return;
        uint32_t len = wire_header_len(hdr);
        if (len > LOGIN_MAX_PACKET || wire_header_seq(hdr) != s->seq) {
            session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "Bad handshake");
            return;
        }
        if (evbuffer_get_length(in) < 4 + (size_t)len)
            return;
        uint8_t *p = malloc(len ? len : 1);
        if (!p) {
            session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "out of memory");
            return;
        }
        evbuffer_drain(in, 4);
        evbuffer_remove(in, p, len);
        s->seq++;
        struct bufferevent *before = s->client;
        if (s->state == SESSION_HANDSHAKE) {
            handle_login_request(s, p, len);
        } else if (verify_local_password(s, p, len)) {
            begin_upstream(s);
        } else {
            deny_local_login(s);
        }
        OPENSSL_cleanse(p, len);
        free(p);
        if (s->client != before)
            return; /* switched to TLS: the new bufferevent delivers what follows */
    }
}

/* --- relay ----------------------------------------------------------------------------------- */

/* Pauses reading from src while dst has too much unsent; dst's write callback resumes it. */
static void throttle(struct session *s, struct bufferevent *src, struct bufferevent *dst)
{
    if (evbuffer_get_length(bufferevent_get_output(dst)) < RELAY_HIGH_WATER)
        return;
    bufferevent_disable(src, EV_READ);
    bufferevent_setwatermark(dst, EV_WRITE, RELAY_HIGH_WATER / 2, 0);
    if (src == s->client)
        s->client_throttled = 1;
    else
        s->server_throttled = 1;
}

/* The reset for COM_CHANGE_USER finished: answer the client with OK or the first error. */
static void change_user_done(void *arg, const uint8_t *err, size_t err_len)
{
    struct session *s = arg;
    attach_conn(s, s->conn);
    struct wire_writer w;
    wire_writer_init(&w);
    if (err) {
        wire_begin_packet(&w, s->seq);
        wire_put_bytes(&w, err, err_len);
        wire_end_packet(&w);
    } else {
        ok_packet_write(&w, s->seq, 0, 0, PROTO_STATUS_AUTOCOMMIT, 0);
        s->rt.status = PROTO_STATUS_AUTOCOMMIT;
    }
    send_to_client(s, &w);
    wire_writer_free(&w);
    s->state = SESSION_RELAY;
    bufferevent_enable(s->client, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(s->client)) > 0)
        client_read_cb(s->client, s);
}

/* Resets the server session (and what credproxy knows of it), then selects db. */
static void reset_session(struct session *s, const char *db, size_t db_len)
{
    session_state_reset(&s->st);
    s->cursor_open = 0;
    s->dirty = 0;
    if (db_len)
        s->st.schema = strndup(db, db_len);
    s->state = SESSION_CHANGE_USER;
    bufferevent_disable(s->client, EV_READ);
    pool_conn_reset(s->conn, db, db_len, change_user_done, s);
}

/*
 * COM_CHANGE_USER is answered by credproxy: the upstream identity stays the
 * secret's, the session is reset (COM_RESET_CONNECTION) and the schema the
 * client names is selected (COM_INIT_DB).
 */
static void handle_change_user(struct session *s, const uint8_t *p, size_t len)
{
    struct change_user_request cu;
    s->seq = 1;
    if (!change_user_parse(p, len, s->caps, &cu)) {
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "Malformed COM_CHANGE_USER");
        return;
    }
    if (cu.user_len >= sizeof(s->user)) {
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "Bad COM_CHANGE_USER: user name too long");
        return;
    }
    snprintf(s->user, sizeof(s->user), "%.*s", (int)cu.user_len, cu.user);
    if (s->route->cfg->client_auth == CLIENT_AUTH_PASSWORD &&
        !verify_local_password(s, cu.auth, cu.auth_len)) {
        deny_local_login(s);
        return;
    }
    if (!response_idle(&s->rt) || s->to_client_left) {
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "COM_CHANGE_USER while a reply is pending");
        return;
    }
    log_debug("C-%llu %s: COM_CHANGE_USER to '%s': session reset", (unsigned long long)s->id,
              s->peer, s->user);
    reset_session(s, cu.database, cu.database_len);
}

/*
 * COM_RESET_CONNECTION is done by credproxy too, because the reset also
 * clears the session tracking credproxy relies on, which must be turned
 * back on before the client continues.
 */
static void handle_reset_connection(struct session *s)
{
    s->seq = 1;
    if (!response_idle(&s->rt) || s->to_client_left) {
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01",
                     "COM_RESET_CONNECTION while a reply is pending");
        return;
    }
    const char *db = s->st.schema ? s->st.schema : s->database;
    char *keep = db ? strdup(db) : NULL;
    reset_session(s, keep, keep ? strlen(keep) : 0);
    free(keep);
}

/* Rewrites the statement id of a COM_STMT_* command when the session was moved. */
static void map_stmt_id(struct session *s, struct evbuffer *in, uint8_t cmd)
{
    uint8_t *p = evbuffer_pullup(in, 9);
    if (!p)
        return;
    uint32_t id =
        (uint32_t)p[5] | (uint32_t)p[6] << 8 | (uint32_t)p[7] << 16 | (uint32_t)p[8] << 24;
    if (cmd == PROTO_COM_STMT_CLOSE)
        s->cursor_open = 0;
    uint32_t server_id = session_state_server_id(&s->st, id);
    if (cmd == PROTO_COM_STMT_CLOSE)
        session_state_stmt_closed(&s->st, id);
    if (server_id == id)
        return;
    p[5] = (uint8_t)server_id;
    p[6] = (uint8_t)(server_id >> 8);
    p[7] = (uint8_t)(server_id >> 16);
    p[8] = (uint8_t)(server_id >> 24);
}

static bool is_stmt_command(uint8_t cmd)
{
    return cmd == PROTO_COM_STMT_EXECUTE || cmd == PROTO_COM_STMT_SEND_LONG_DATA ||
           cmd == PROTO_COM_STMT_CLOSE || cmd == PROTO_COM_STMT_RESET ||
           cmd == PROTO_COM_STMT_FETCH || cmd == PROTO_COM_STMT_BULK_EXECUTE;
}

/*
 * Largest COM_STMT_PREPARE / COM_QUERY credproxy waits for whole to look at
 * its text; it must stay below the read watermark (RELAY_HIGH_WATER).
 */
#define TEXT_LOOK_MAX LOGIN_MAX_PACKET

/*
 * Bookkeeping for one client command before it is forwarded. Returns false
 * when more bytes must arrive first.
 */
static bool note_command(struct session *s, struct evbuffer *in, size_t avail, uint8_t cmd,
                         uint32_t len)
{
    if (cmd == PROTO_COM_QUERY) {
        if (len <= TEXT_LOOK_MAX && avail < 4 + (size_t)len)
            return false;
        enum query_kind kind = len <= TEXT_LOOK_MAX ? query_scan(in, 5, len - 1) : QUERY_WRITE;
        if (kind == QUERY_PINNED && !s->st.unrestorable)
            s->st.unrestorable = "the session used user variables, GET_LOCK or LAST_INSERT_ID() "
                                 "in a way credproxy cannot carry to a new connection";
        if (kind != QUERY_READ)
            s->dirty = 1;
        char collation[65];
        if (len <= TEXT_LOOK_MAX && query_set_names(in, 5, len - 1, collation, sizeof(collation))) {
            free(s->set_names_collation);
            s->set_names_collation = strdup(collation);
        }
    } else if (cmd != PROTO_COM_PING && cmd != PROTO_COM_STATISTICS &&
               cmd != PROTO_COM_FIELD_LIST) {
        s->dirty = 1;
    }
    if (cmd == PROTO_COM_STMT_PREPARE) {
        if (len > TEXT_LOOK_MAX) {
            s->st.unrestorable = "a prepared statement is too large to re-prepare";
            session_state_prepare_sent(&s->st, (const uint8_t *)"", 0);
        } else {
            if (avail < 4 + (size_t)len)
                return false;
            const uint8_t *p = evbuffer_pullup(in, 4 + (ssize_t)len);
            session_state_prepare_sent(&s->st, p + 5, len - 1);
        }
    } else if (is_stmt_command(cmd)) {
        if (len >= 5 && avail < 9)
            return false;
        if (len >= 5)
            map_stmt_id(s, in, cmd);
        if (cmd == PROTO_COM_STMT_RESET)
            s->cursor_open = 0;
    }
    (void)response_begin(&s->rt, cmd);
    return true;
}

static void begin_reconnect(struct session *s);

/*
 * Sends what the relay staged for the server. Called before anything that
 * may end or pause the session, so staged bytes never outlive the callback
 * (the staging buffer is the worker's, shared by all its sessions).
 */
static void flush_to_server(struct session *s)
{
    struct evbuffer *scratch = s->worker->scratch;
    if (evbuffer_get_length(scratch) == 0)
        return;
    if (s->server)
        send_now(s->server, scratch);
    else
        evbuffer_drain(scratch, evbuffer_get_length(scratch));
}

/*
 * Moves client packets to the server without copying payloads. Only the
 * header and, at a command boundary (sequence id 0, not a continuation), the
 * command byte are looked at: COM_QUIT and COM_CHANGE_USER are handled here,
 * and prepared statements are noted for reconnects.
 */
static void relay_client_to_server(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->client);
    while (s->state == SESSION_RELAY) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
        if (s->to_server_left) {
            size_t n = avail < s->to_server_left ? avail : s->to_server_left;
            evbuffer_remove_buffer(in, s->worker->scratch, n);
            s->to_server_left -= n;
            continue;
        }
        uint8_t h[5];
        if (avail < 4 || evbuffer_copyout(in, h, avail < 5 ? 4 : 5) < 4)
            break;
        uint32_t len = wire_header_len(h);
        bool command = !s->client_continues && wire_header_seq(h) == 0 && len > 0;
        if (command && avail < 5)
            break;
        if (command && h[4] == PROTO_COM_QUIT) {
            flush_to_server(s);
            session_close(s, "client quit");
            return;
        }
        if (command && s->detached) {
            flush_to_server(s);
            begin_reconnect(s);
            return;
        }
        if (command && h[4] == PROTO_COM_RESET_CONNECTION) {
            evbuffer_drain(in, 4 + (size_t)len);
            flush_to_server(s);
            handle_reset_connection(s);
            return;
        }
        if (command && h[4] == PROTO_COM_CHANGE_USER) {
            flush_to_server(s);
            if (len > LOGIN_MAX_PACKET) {
                s->seq = 1;
                session_fail(s, PROTO_ER_NET_PACKET_TOO_LARGE, "08S01",
                             "COM_CHANGE_USER packet too large");
                return;
            }
            if (avail < 4 + (size_t)len)
                break;
            uint8_t *p = malloc(len);
            if (!p)
                break;
            evbuffer_drain(in, 4);
            evbuffer_remove(in, p, len);
            handle_change_user(s, p, len);
            OPENSSL_cleanse(p, len);
            free(p);
            return;
        }
        if (command && !note_command(s, in, avail, h[4], len))
            break;
        s->client_continues = len == PROTO_MAX_PAYLOAD;
        s->to_server_left = 4 + (size_t)len;
    }
    flush_to_server(s);
    if (s->server)
        throttle(s, s->client, s->server);
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct session *s = arg;
    switch (s->state) {
    case SESSION_HANDSHAKE:
    case SESSION_AUTH_SWITCH:
        login_read(s);
        break;
    case SESSION_RELAY:
        relay_client_to_server(s);
        break;
    case SESSION_CONNECTING:
    case SESSION_CHANGE_USER:
    case SESSION_RECONNECTING:
    case SESSION_RESTORING:
    case SESSION_CLOSING:
        break; /* reading is paused; data waits in the buffer */
    }
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    if (s->state == SESSION_CLOSING) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            session_close(s, "error sent");
        return;
    }
    if (s->server_throttled && s->server) {
        s->server_throttled = 0;
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        bufferevent_enable(s->server, EV_READ);
        if (evbuffer_get_length(bufferevent_get_input(s->server)))
            server_read_cb(s->server, s);
    }
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct session *s = arg;
    if (what & BEV_EVENT_EOF)
        session_close(s, "client disconnected");
    else if (what & BEV_EVENT_ERROR)
        session_close(s, "client connection error");
}

/* Records what an OK packet says changed, and hides it from clients that did not ask. */
static bool state_changed_ok(struct session *s, struct evbuffer *in, struct evbuffer *out,
                             size_t len)
{
    uint8_t *pkt = malloc(4 + len);
    if (!pkt)
        return false;
    evbuffer_remove(in, pkt, 4 + len);
    struct ok_packet ok;
    if (!ok_packet_parse(pkt + 4, len, &ok)) {
        s->st.unrestorable = "the server sent an OK packet credproxy could not read";
        evbuffer_add(out, pkt, 4 + len);
        free(pkt);
        return true;
    }
    session_state_on_changes(&s->st, ok.state, ok.state_len, s->set_names_collation);
    free(s->set_names_collation);
    s->set_names_collation = NULL;
    s->dirty = 1; /* a multi-statement "SELECT ...; SET ..." ends here too */
    if (s->caps & PROTO_CAP_SESSION_TRACK) {
        evbuffer_add(out, pkt, 4 + len);
    } else {
        struct wire_writer w;
        wire_writer_init(&w);
        wire_begin_packet(&w, pkt[3]);
        ok_packet_write_untracked(&w, &ok);
        wire_end_packet(&w);
        if (!w.failed)
            evbuffer_add(out, w.buf, w.len);
        wire_writer_free(&w);
    }
    free(pkt);
    return true;
}

/* After a reconnect the client's ids for new statements may differ from the server's. */
static void map_prepare_ok(struct session *s, struct evbuffer *in)
{
    uint32_t server_id = s->rt.prepared_stmt_id;
    uint32_t client_id = session_state_prepare_done(&s->st, true, server_id);
    if (client_id == server_id)
        return;
    uint8_t *p = evbuffer_pullup(in, 9);
    if (p) {
        p[5] = (uint8_t)client_id;
        p[6] = (uint8_t)(client_id >> 8);
        p[7] = (uint8_t)(client_id >> 16);
        p[8] = (uint8_t)(client_id >> 24);
    }
}

/* What a finished reply tells about the session beyond its status. */
static void reply_done(struct session *s)
{
    if (s->rt.cmd == PROTO_COM_STMT_PREPARE && s->rt.last_was_error)
        (void)session_state_prepare_done(&s->st, false, 0);
    if (s->rt.cmd == PROTO_COM_STMT_EXECUTE && (s->rt.status & PROTO_STATUS_CURSOR_EXISTS))
        s->cursor_open = 1;
    if (s->rt.cmd == PROTO_COM_STMT_FETCH && (s->rt.status & PROTO_STATUS_LAST_ROW_SENT))
        s->cursor_open = 0;
}

static void idle_release_cb(evutil_socket_t fd, short what, void *arg);

/* Multiplexing: the client went quiet with no reply pending; release its connection later. */
static void arm_idle_release(struct session *s)
{
    int ms = s->route->cfg->pool_release_idle_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_del(s->timer);
    event_assign(s->timer, s->worker->base, -1, 0, idle_release_cb, s);
    evtimer_add(s->timer, &tv);
}

/*
 * Gives the connection of a client that stayed idle back to the pool, when
 * everything it holds on the server can be replayed: its next command then
 * runs on whatever connection the pool lends, with its state restored.
 */
static void idle_release_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    bool quiet = s->state == SESSION_RELAY && s->conn && response_idle(&s->rt) &&
                 !s->to_client_left && !s->to_server_left && !s->untrackable &&
                 evbuffer_get_length(bufferevent_get_input(s->client)) == 0;
    bool replayable = !(s->rt.status & PROTO_STATUS_IN_TRANS) && !s->cursor_open &&
                      !s->st.unrestorable && pool_conn_tracked(s->conn);
    if (!quiet || !replayable)
        return;
    drop_conn(s, true);
    s->detached = 1;
    s->released = 1;
}

/*
 * Moves server packets to the client. Payloads move as buffer chains; only
 * each packet's header and first bytes are read, for the response tracker.
 * Small packets that may be OKs are waited for whole, because an OK that
 * reports session-state changes is read (and, for clients without session
 * tracking, rewritten).
 */
static void server_read_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    if (s->state != SESSION_RELAY)
        return;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer *out = s->worker->scratch; /* sent at once below, in order */
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
        if (s->to_client_left) {
            size_t n = avail < s->to_client_left ? avail : s->to_client_left;
            evbuffer_remove_buffer(in, out, n);
            s->to_client_left -= n;
            continue;
        }
        uint8_t h[4 + RESPONSE_PREFIX_MAX];
        if (avail < 4)
            break;
        evbuffer_copyout(in, h, 4);
        size_t len = wire_header_len(h);
        size_t prefix = len < RESPONSE_PREFIX_MAX ? len : RESPONSE_PREFIX_MAX;
        if (avail < 4 + prefix)
            break;
        bool tracked = !s->server_continues && !s->untrackable;
        if (tracked) {
            evbuffer_copyout(in, h, 4 + prefix);
            bool maybe_ok = len > 0 && len <= LOGIN_MAX_PACKET && (h[4] == 0x00 || h[4] == 0xfe);
            if (maybe_ok && avail < 4 + len)
                break; /* wait for the whole packet before looking at it */
            enum response_event ev = response_feed(&s->rt, h + 4, prefix, len);
            if (ev == RESPONSE_UNTRACKABLE)
                s->untrackable = 1;
            if (s->rt.prepare_ok)
                map_prepare_ok(s, in);
            if (ev == RESPONSE_DONE)
                reply_done(s);
            if (s->rt.ok_packet && (s->rt.status & PROTO_STATUS_STATE_CHANGED) &&
                state_changed_ok(s, in, out, len)) {
                s->server_continues = 0;
                continue;
            }
        }
        s->server_continues = len == PROTO_MAX_PAYLOAD;
        s->to_client_left = 4 + len;
    }
    if (evbuffer_get_length(out))
        send_now(s->client, out);
    throttle(s, bev, s->client);
    if (s->route->cfg->pool_release_idle_ms > 0 && !s->to_client_left && response_idle(&s->rt))
        arm_idle_release(s);
}

static void server_write_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    if (s->client_throttled) {
        s->client_throttled = 0;
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        bufferevent_enable(s->client, EV_READ);
        if (evbuffer_get_length(bufferevent_get_input(s->client)))
            client_read_cb(s->client, s);
    }
}

/*
 * The upstream connection ended. If the client was idle, it is told nothing
 * yet: its next command runs on a new connection with its state restored.
 * Otherwise a reply was cut short and the client loses its connection too.
 */
static void server_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    struct evbuffer *in = bufferevent_get_input(bev);
    bool idle = s->state == SESSION_RELAY && response_idle(&s->rt) && !s->to_client_left &&
                !s->to_server_left && !s->client_continues && evbuffer_get_length(in) == 0 &&
                !s->untrackable;
    if (!idle && evbuffer_get_length(in))
        bufferevent_write_buffer(s->client, in); /* often the server's last words, an ERR */
    bool tracked = s->conn && pool_conn_tracked(s->conn);
    drop_conn(s, false);
    if (idle) {
        s->detached = 1;
        if (s->rt.status & PROTO_STATUS_IN_TRANS)
            s->st.unrestorable = "a transaction was open";
        else if (s->cursor_open)
            s->st.unrestorable = "a server-side cursor was open";
        else if (!tracked)
            s->st.unrestorable = "the server does not report session state";
        log_info("C-%llu %s: upstream connection lost while idle; %s%s", (unsigned long long)s->id,
                 s->peer,
                 s->st.unrestorable ? "cannot continue the session: "
                                    : "will reconnect on the next command",
                 s->st.unrestorable ? s->st.unrestorable : "");
        return;
    }
    s->state = SESSION_CLOSING;
    bufferevent_disable(s->client, EV_READ);
    bufferevent_setwatermark(s->client, EV_WRITE, 0, 0);
    if (evbuffer_get_length(bufferevent_get_output(s->client)) == 0)
        session_close(s, "upstream connection lost during a command");
}

/* Replaying a session's state: how many replies are left, and which statement is next. */
struct restore {
    struct response_tracker rt;
    unsigned replies_left;
    size_t next_stmt;
};

static void restore_fail(struct session *s, const char *why)
{
    char msg[700];
    snprintf(msg, sizeof(msg),
             "credproxy: could not give this session a database connection (its previous one "
             "was lost or released): %s",
             why);
    s->seq = 1;
    session_fail(s, PROTO_ER_SERVER_LOST, "HY000", msg);
}

static void restore_finish(struct session *s)
{
    free(s->restore);
    s->restore = NULL;
    attach_conn(s, s->conn);
    response_tracker_init(&s->rt, pool_conn_info(s->conn)->caps);
    s->rt.status = pool_conn_info(s->conn)->status;
    s->state = SESSION_RELAY;
    /* Replayed state differs from a fresh session's: reset before anyone else gets it. */
    s->dirty = s->st.vars || s->st.stmts || s->st.schema;
    LOG_AT(s->released ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,
           "C-%llu %s: session moved to a new upstream connection (thread %u)",
           (unsigned long long)s->id, s->peer, pool_conn_info(s->conn)->thread_id);
    s->released = 0;
    if (s->route->cfg->pool_release_idle_ms > 0)
        arm_idle_release(s); /* released again if the command never comes */
    bufferevent_enable(s->client, EV_READ);
    client_read_cb(s->client, s);
}

/* Swallows the replies to the restore commands, noting re-prepared statement ids. */
static void restore_read_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    struct restore *r = s->restore;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (r->replies_left) {
        uint8_t h[4 + RESPONSE_PREFIX_MAX];
        if (evbuffer_copyout(in, h, 4) < 4)
            return;
        size_t len = wire_header_len(h);
        if (evbuffer_get_length(in) < 4 + len)
            return;
        size_t prefix = len < RESPONSE_PREFIX_MAX ? len : RESPONSE_PREFIX_MAX;
        evbuffer_copyout(in, h, 4 + prefix);
        evbuffer_drain(in, 4 + len);
        enum response_event ev = response_feed(&r->rt, h + 4, prefix, len);
        if (ev == RESPONSE_UNTRACKABLE || (ev == RESPONSE_DONE && r->rt.last_was_error)) {
            restore_fail(s, "the server refused to replay the session's settings");
            return;
        }
        if (r->rt.prepare_ok)
            session_state_restored(&s->st, r->next_stmt++, r->rt.prepared_stmt_id);
        if (ev == RESPONSE_DONE)
            r->replies_left--;
    }
    restore_finish(s);
}

static void restore_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        restore_fail(arg, "the new connection was lost too");
}

/* A new connection for a detached session: replay variables and prepared statements. */
static void reconnect_ready(void *arg, struct pool_conn *conn, const struct upstream_error *err)
{
    struct session *s = arg;
    s->req = NULL;
    if (err) {
        restore_fail(s, err->message);
        return;
    }
    s->conn = conn;
    s->server = pool_conn_bev(conn);
    s->detached = 0;
    struct wire_writer w;
    wire_writer_init(&w);
    unsigned n = 0;
    session_state_write_restore(&s->st, &w, &n);
    s->restore = calloc(1, sizeof(*s->restore));
    if (w.failed || !s->restore) {
        wire_writer_free(&w);
        restore_fail(s, "out of memory");
        return;
    }
    if (n == 0) {
        wire_writer_free(&w);
        restore_finish(s);
        return;
    }
    struct restore *r = s->restore;
    response_tracker_init(&r->rt, pool_conn_info(conn)->caps);
    r->replies_left = n;
    s->state = SESSION_RESTORING;
    /* Commands first, then one reply each: the tracker needs them queued in order. */
    struct wire_reader rd;
    wire_reader_init(&rd, w.buf, w.len);
    while (wire_remaining(&rd) >= 5) {
        uint32_t plen = wire_get_u24(&rd);
        wire_get_u8(&rd);
        const uint8_t *payload = wire_get_bytes(&rd, plen);
        if (payload)
            (void)response_begin(&r->rt, payload[0]);
    }
    bufferevent_setcb(s->server, restore_read_cb, NULL, restore_event_cb, s);
    bufferevent_write(s->server, w.buf, w.len);
    bufferevent_enable(s->server, EV_READ | EV_WRITE);
    wire_writer_free(&w);
}

/* The client sent a command to a session whose connection is gone. */
static void begin_reconnect(struct session *s)
{
    if (s->st.unrestorable) {
        restore_fail(s, s->st.unrestorable);
        return;
    }
    struct pool_want want = {
        .client_caps = s->caps,
        .charset = s->charset,
        .database = s->st.schema ? s->st.schema : s->database,
        .attrs = s->attrs,
        .attrs_len = s->attrs_len,
    };
    s->state = SESSION_RECONNECTING;
    bufferevent_disable(s->client, EV_READ);
    s->req = pool_acquire(worker_pool(s->worker, s->route), &want, reconnect_ready, s);
}

static void handshake_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    if (s->state == SESSION_HANDSHAKE || s->state == SESSION_AUTH_SWITCH)
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "Bad handshake: timed out");
}

/* --- start ----------------------------------------------------------------------------------- */

/* How long a client that arrives during start-up waits for the upstream's profile. */
#define GREET_WAIT_STEP_MS 20
#define GREET_WAIT_STEPS   50

/*
 * Greets the client, after the start-up login has shown the server's version
 * and capabilities (or failed): a greeting built from the configured
 * defaults would announce a different server than the one the client gets.
 */
static void greet_wait_cb(evutil_socket_t fd, short what, void *arg);

static void greet_when_ready(struct session *s)
{
    event_del(s->timer);
    if (route_probing(s->route) && s->greet_waits < GREET_WAIT_STEPS) {
        s->greet_waits++;
        struct timeval tv = {0, GREET_WAIT_STEP_MS * 1000};
        event_assign(s->timer, s->worker->base, -1, 0, greet_wait_cb, s);
        evtimer_add(s->timer, &tv);
        return;
    }
    int ms = s->route->cfg->handshake_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_assign(s->timer, s->worker->base, -1, 0, handshake_timeout_cb, s);
    evtimer_add(s->timer, &tv);
    s->seq = 0;
    send_greeting(s);
    s->seq = 1;
}

static void greet_wait_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    greet_when_ready(arg);
}

static bool peer_allowed(const struct route_config *cfg, uid_t uid, gid_t gid)
{
    for (size_t i = 0; i < cfg->n_peer_uids; i++)
        if (cfg->peer_uids[i] == uid)
            return true;
    for (size_t i = 0; i < cfg->n_peer_gids; i++)
        if (cfg->peer_gids[i] == gid)
            return true;
    return false;
}

static void describe_peer(struct session *s, int fd, const struct sockaddr *addr, bool is_unix,
                          struct ucred *cred, bool *have_cred)
{
    socklen_t len = sizeof(*cred);
    *have_cred = is_unix && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) == 0;
    if (is_unix) {
        if (*have_cred)
            snprintf(s->peer, sizeof(s->peer), "unix:uid=%u,pid=%d", (unsigned)cred->uid,
                     (int)cred->pid);
        else
            snprintf(s->peer, sizeof(s->peer), "unix");
        return;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(s->peer, sizeof(s->peer), "%s:%d", host, port);
}

void session_start(struct worker *w, struct route *r, int fd, const struct sockaddr *addr,
                   socklen_t addrlen, bool is_unix)
{
    (void)addrlen;
    struct session *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        return;
    }
    s->worker = w;
    s->route = r;
    s->id = ++w->next_session_id * 256 + (uint64_t)w->index;
    s->is_unix = is_unix;
    w->n_sessions++;
    s->next = w->sessions;
    if (s->next)
        s->next->prev = s;
    w->sessions = s;
    struct ucred cred;
    bool have_cred;
    describe_peer(s, fd, addr, is_unix, &cred, &have_cred);
    if (!is_unix) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    s->client =
        bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    s->timer = evtimer_new(w->base, handshake_timeout_cb, s);
    if (!s->client || !s->timer) {
        if (!s->client)
            close(fd);
        session_close(s, "out of memory");
        return;
    }
    bufferevent_setcb(s->client, client_read_cb, client_write_cb, client_event_cb, s);
    bufferevent_setwatermark(s->client, EV_READ, 0, LOGIN_MAX_PACKET + 4);
    bufferevent_enable(s->client, EV_READ | EV_WRITE);
    log_debug("C-%llu %s: accepted on route %s", (unsigned long long)s->id, s->peer, r->cfg->name);
    /* Refused peers still get a greeting, so clients show the 1045 that follows as it is. */
    s->peer_denied = r->cfg->client_auth == CLIENT_AUTH_PEER &&
                     !(have_cred && peer_allowed(r->cfg, cred.uid, cred.gid));
    greet_when_ready(s);
}
