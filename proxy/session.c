/*
 * Client sessions: their lifecycle (start, state changes, close, deferred
 * free), the one decision about what happens to an upstream connection a
 * session gives back, and the commands credproxy answers itself
 * (COM_CHANGE_USER, COM_RESET_CONNECTION).
 */
#include "proxy/session.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "auth/handshake.h"
#include "auth/reply.h"
#include "conf/log.h"
#include "proxy/pool.h"
#include "proxy/route.h"
#include "proxy/session_int.h"
#include "proxy/sock_reader.h"
#include "proxy/stream_send.h"

static const char *const state_names[SESSION_N_STATES] = {
    [SESSION_GREET_WAIT] = "greet-wait",
    [SESSION_HANDSHAKE] = "handshake",
    [SESSION_AUTH_SWITCH] = "auth-switch",
    [SESSION_CONNECTING] = "connecting",
    [SESSION_RELAY] = "relay",
    [SESSION_DETACHED] = "detached",
    [SESSION_RECONNECTING] = "reconnecting",
    [SESSION_RESTORING] = "restoring",
    [SESSION_CHANGE_USER_AUTH] = "change-user-auth",
    [SESSION_RESETTING] = "resetting",
    [SESSION_CLOSING] = "closing",
    [SESSION_CLOSED] = "closed",
};

#define S(x) (1u << (x))
/* For each state, the states it may move to. Any live state may close. */
static const unsigned legal_next[SESSION_N_STATES] = {
    [SESSION_GREET_WAIT] = S(SESSION_HANDSHAKE),
    [SESSION_HANDSHAKE] = S(SESSION_AUTH_SWITCH) | S(SESSION_CONNECTING) | S(SESSION_DETACHED),
    [SESSION_AUTH_SWITCH] = S(SESSION_CONNECTING) | S(SESSION_DETACHED),
    [SESSION_CONNECTING] = S(SESSION_RELAY),
    [SESSION_RELAY] = S(SESSION_DETACHED) | S(SESSION_RESETTING) | S(SESSION_CHANGE_USER_AUTH),
    [SESSION_CHANGE_USER_AUTH] = S(SESSION_RESETTING),
    [SESSION_DETACHED] = S(SESSION_RECONNECTING),
    [SESSION_RECONNECTING] = S(SESSION_RESTORING) | S(SESSION_RELAY),
    [SESSION_RESTORING] = S(SESSION_RELAY),
    [SESSION_RESETTING] = S(SESSION_RELAY) | S(SESSION_DETACHED),
    [SESSION_CLOSING] = 0,
    [SESSION_CLOSED] = 0,
};
#define ANY_LIVE_TO_END (S(SESSION_CLOSING) | S(SESSION_CLOSED))

void session_check_failed(const char *what, const char *file, int line)
{
    log_error("internal check failed at %s:%d: %s", file, line, what);
#ifdef CREDPROXY_STRICT
    abort();
#endif
}

void session_set_state(struct session *s, enum session_phase to, const char *why)
{
    enum session_phase from = s->state;
    unsigned allowed = legal_next[from];
    if (from != SESSION_CLOSED && from != SESSION_CLOSING)
        allowed |= ANY_LIVE_TO_END;
    if (from == SESSION_CLOSING)
        allowed |= S(SESSION_CLOSED);
    if (!(allowed & S(to))) {
        log_error("C-%llu: illegal session state change %s -> %s (%s)", (unsigned long long)s->id,
                  state_names[from], state_names[to], why);
        session_check_failed("legal session state change", __FILE__, __LINE__);
    }
    log_debug("C-%llu %s: %s -> %s: %s", (unsigned long long)s->id, s->peer, state_names[from],
              state_names[to], why);
    if (s->timer)
        event_del(s->timer);
    s->state = to;
}

void session_arm_timer(struct session *s, int ms, void (*cb)(evutil_socket_t, short, void *))
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_del(s->timer);
    event_assign(s->timer, s->worker->base, -1, 0, cb, s);
    evtimer_add(s->timer, &tv);
}

/*
 * The OK credproxy sends for a login or a COM_CHANGE_USER: as the server
 * does, a client with CLIENT_SESSION_TRACK sees SERVER_SESSION_STATE_CHANGED
 * (with an empty list: credproxy does not invent the server's records), one
 * without it never does.
 */
void session_write_login_ok(const struct session *s, struct wire_writer *w, uint16_t status)
{
    status &= (uint16_t)~PROTO_STATUS_STATE_CHANGED;
    if (!(s->caps & PROTO_CAP_SESSION_TRACK)) {
        ok_packet_write(w, s->seq, 0, 0, status, 0);
        return;
    }
    wire_begin_packet(w, s->seq);
    wire_put_u8(w, 0x00);
    wire_put_lenenc(w, 0);
    wire_put_lenenc(w, 0);
    wire_put_u16(w, (uint16_t)(status | PROTO_STATUS_STATE_CHANGED));
    wire_put_u16(w, 0);
    wire_put_lenenc(w, 0); /* info */
    wire_put_lenenc(w, 0); /* session state: no records */
    wire_end_packet(w);
}

void session_send(struct session *s, const struct wire_writer *w)
{
    if (w->failed || !s->client)
        return;
    struct evbuffer *scratch = s->worker->scratch;
    evbuffer_add(scratch, w->buf, w->len);
    stream_send_now(s->client, scratch);
}

/* --- the one cleanup decision ---------------------------------------------------------------- */

/*
 * What becomes of the connection a session gives back, and why. It can
 * serve another client only when its reply stream was followed to the end
 * and no transaction is open; it is reset first unless the client only ran
 * plain reads.
 */
static enum pool_return conn_verdict(const struct session *s, const char **why)
{
    if (s->worker->stopping)
        return *why = "credproxy is stopping", POOL_CLOSE;
    if (s->state != SESSION_RELAY)
        return *why = "the session was not relaying", POOL_CLOSE;
    if (s->untrackable)
        return *why = "the reply stream could not be followed", POOL_CLOSE;
    if (s->to_client_left || s->to_server_left || !response_idle(&s->rt) || s->client_continues)
        return *why = "a command or its reply was in flight", POOL_CLOSE;
    if (s->rt.status & PROTO_STATUS_IN_TRANS)
        return *why = "a transaction was open", POOL_CLOSE;
    if (s->dirty || s->cursor_open)
        return *why = "the session may have changed state", POOL_RESET;
    return *why = "the client ran no command", POOL_KEEP;
}

static void release_conn(struct session *s, enum pool_return how, const char *reason,
                         const char *why)
{
    static const char *const verbs[] = {
        [POOL_KEEP] = "pooled", [POOL_RESET] = "reset and pooled", [POOL_CLOSE] = "closed"};
    log_debug("C-%llu %s: upstream connection (thread %u) %s: %s; %s", (unsigned long long)s->id,
              s->peer, pool_conn_info(s->conn)->thread_id, verbs[how], reason, why);
    pool_conn_attach(s->conn, NULL, NULL);
    pool_release(s->conn, how);
    s->conn = NULL;
    s->server = NULL;
    registry_set_thread(&s->kill, 0);
}

void session_drop_conn(struct session *s, const char *why)
{
    if (!s->conn)
        return;
    const char *reason;
    enum pool_return how = conn_verdict(s, &reason);
    release_conn(s, how, reason, why);
}

/* The connection is known dead (the server ended it): closed, whatever the session did. */
void session_drop_dead_conn(struct session *s, const char *why)
{
    if (s->conn)
        release_conn(s, POOL_CLOSE, "the server ended it", why);
}

/* The session takes a lent connection; the relay (or a restore) attaches to it after. */
void session_take_conn(struct session *s, struct pool_conn *conn)
{
    s->conn = conn;
    s->server = pool_conn_bev(conn);
    s->writer = pool_conn_wants_writer(conn);
    s->retry_len = 0;
    s->ro_move = 0;
    registry_set_thread(&s->kill, pool_conn_info(conn)->thread_id);
}

/* --- end of a session ------------------------------------------------------------------------ */

static void session_free(struct deferred_free *d)
{
    struct session *s = (struct session *)d;
    free(s->database);
    if (s->attrs)
        OPENSSL_cleanse(s->attrs, s->attrs_len);
    free(s->attrs);
    session_state_free(&s->st);
    free(s->restore);
    free(s->set_names_collation);
    free(s->change_db);
    if (s->retry_pkt)
        OPENSSL_cleanse(s->retry_pkt, s->retry_cap); /* statement text may hold secrets */
    free(s->retry_pkt);
    sock_reader_free(s->client_rd);
    sock_reader_free(s->old_rd);
    OPENSSL_cleanse(s->scramble, sizeof(s->scramble));
    free(s);
}

/*
 * The one way a session ends: logs why, gives back what it holds and queues
 * the session for the worker's safe point. Callers up the stack may still
 * look at s (its state is SESSION_CLOSED) until their callback returns.
 */
void session_close(struct session *s, const char *why)
{
    if (s->state == SESSION_CLOSED)
        return;
    /* Port probes and health checks connect and leave; only a login cut short upstream is news. */
    if (s->state == SESSION_CONNECTING)
        log_info("C-%llu %s: closed during login: %s", (unsigned long long)s->id, s->peer, why);
    else
        log_debug("C-%llu %s: closed%s: %s", (unsigned long long)s->id, s->peer,
                  s->state <= SESSION_AUTH_SWITCH ? " during login" : "", why);
    if (s->req) {
        pool_cancel(s->req);
        s->req = NULL;
    }
    session_drop_conn(s, why);
    session_set_state(s, SESSION_CLOSED, why);
    if (s->client) {
        sock_reader_detach(s->client_rd);
        bufferevent_setcb(s->client, NULL, NULL, NULL, NULL);
        bufferevent_free(s->client);
        s->client = NULL;
    }
    if (s->timer) {
        event_free(s->timer);
        s->timer = NULL;
    }
    registry_remove(&s->kill);
    struct worker *w = s->worker;
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    w->n_sessions--;
    worker_session_closed(w, s->route);
    worker_defer_free(w, &s->reap, session_free);
}

void session_kill(struct worker *w, uint32_t id)
{
    struct kill_target *t = registry_find_own(id, w);
    if (!t)
        return; /* gone already */
    struct session *s = (struct session *)((char *)t - offsetof(struct session, kill));
    /* The FIN now: freeing the bufferevent closes the socket only later in the loop. */
    evutil_socket_t fd = s->client ? bufferevent_getfd(s->client) : -1;
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    session_close(s, "killed by KILL CONNECTION");
}

void session_close_all(struct worker *w)
{
    while (w->sessions)
        session_close(w->sessions, "credproxy is shutting down");
}

static void closing_linger_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    session_close(arg, "the client did not take its last packet in time");
}

/* Sends a last packet (an error) to the client, then closes. */
/* Counts why a client's login was refused, by the state it failed in and the error it gets. */
static void count_refusal(struct session *s, uint16_t code)
{
    bool login = s->state == SESSION_GREET_WAIT || s->state == SESSION_HANDSHAKE ||
                 s->state == SESSION_AUTH_SWITCH || s->state == SESSION_CONNECTING;
    if (!login || s->refusal_counted)
        return;
    s->refusal_counted = 1;
    enum stat_key why = s->state == SESSION_CONNECTING   ? ST_REFUSED_UPSTREAM
                        : code == PROTO_ER_ACCESS_DENIED ? ST_REFUSED_AUTH
                        : code == 3159                   ? ST_REFUSED_TLS_REQUIRED
                                                         : ST_REFUSED_BAD_PACKET;
    stats_inc(s->stats, why);
}

void session_fail(struct session *s, uint16_t code, const char *sqlstate, const char *msg)
{
    if (s->state == SESSION_CLOSED || s->state == SESSION_CLOSING)
        return;
    count_refusal(s, code);
    /* Client-side codes describe credproxy's own view; send them as server errors. */
    if (code == PROTO_ER_SERVER_LOST) {
        code = PROTO_ER_ABORTING;
        sqlstate = "08S01";
    } else if (code >= 2000 && code < 3000) {
        code = PROTO_ER_CANNOT_CONNECT;
        sqlstate = "08001";
    }
    log_info("C-%llu %s: error %u: %s", (unsigned long long)s->id, s->peer, code, msg);
    if (s->req) {
        pool_cancel(s->req);
        s->req = NULL;
    }
    session_drop_conn(s, "the session failed");
    session_set_state(s, SESSION_CLOSING, msg);
    struct wire_writer w;
    wire_writer_init(&w);
    err_packet_write(&w, s->seq, code, sqlstate, msg);
    session_send(s, &w);
    wire_writer_free(&w);
    session_close_after_flush(s, "error sent");
}

/*
 * In SESSION_CLOSING: closes once what is queued for the client is written,
 * or after CLOSING_LINGER_MS, so a client that never reads (or a TLS
 * handshake that never finishes) cannot hold the session open.
 */
void session_close_after_flush(struct session *s, const char *why)
{
    session_client_read(s, false);
    bufferevent_setwatermark(s->client, EV_WRITE, 0, 0);
    bufferevent_enable(s->client, EV_WRITE);
    if (evbuffer_get_length(bufferevent_get_output(s->client)) == 0 && !s->tls) {
        session_close(s, why);
        return;
    }
    session_arm_timer(s, CLOSING_LINGER_MS, closing_linger_cb);
}

/* --- client socket callbacks ----------------------------------------------------------------- */

static void change_user_auth_read(struct session *s);

static void client_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    switch (s->state) {
    case SESSION_HANDSHAKE:
    case SESSION_AUTH_SWITCH:
        login_read(s);
        break;
    case SESSION_RELAY:
    case SESSION_DETACHED:
        relay_client_to_server(s);
        break;
    case SESSION_CHANGE_USER_AUTH:
        change_user_auth_read(s);
        break;
    case SESSION_GREET_WAIT:
    case SESSION_CONNECTING:
    case SESSION_RECONNECTING:
    case SESSION_RESTORING:
    case SESSION_RESETTING:
    case SESSION_CLOSING:
    case SESSION_CLOSED:
    case SESSION_N_STATES:
        break; /* reading is paused; data waits in the buffer */
    }
}

/*
 * A TLS client's last packet has left the TLS bufferevent only for the socket
 * bufferevent under it, which session_close frees with it: write it out now
 * (non-blocking; it is one small record) after a close_notify, so the client
 * reads the error rather than "unexpected eof".
 */
static void client_tls_flush(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    struct bufferevent *under = bufferevent_get_underlying(bev);
    if (!ssl || !under)
        return;
    (void)SSL_shutdown(ssl); /* into under's output, like every record */
    ERR_clear_error();
    struct evbuffer *out = bufferevent_get_output(under);
    evbuffer_unfreeze(out, 1); /* a socket bufferevent lets only itself drain its output */
    while (evbuffer_get_length(out) > 0 && evbuffer_write(out, bufferevent_getfd(under)) > 0)
        ;
    evbuffer_freeze(out, 1);
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    if (s->state == SESSION_CLOSING) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
            if (s->tls)
                client_tls_flush(bev);
            session_close(s, "error sent");
        }
        return;
    }
    relay_client_write(s);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    if (what & BEV_EVENT_EOF)
        session_close(s, "client disconnected");
    else if (what & BEV_EVENT_ERROR)
        session_close(s, "client connection error");
}

void session_client_read(struct session *s, bool on)
{
    stream_read(s->client_rd, s->client, on);
}

void session_client_read_high(struct session *s, size_t high)
{
    stream_read_high(s->client_rd, s->client, high);
}

/* Points the client stream's callbacks at the session (at start, and after a TLS upgrade). */
void session_client_callbacks(struct session *s)
{
    bufferevent_setcb(s->client, client_read_cb, client_write_cb, client_event_cb, s);
}

/* --- commands credproxy answers itself ------------------------------------------------------- */

/*
 * A reset whose connection is gone (lost during the reset, or before it
 * began): the session is fresh now, so nothing is lost. The client gets its
 * OK and its next command borrows a new connection, which logs in with the
 * session's charset and selects its schema.
 */
static void reset_without_conn(struct session *s, const char *why)
{
    struct wire_writer w;
    wire_writer_init(&w);
    session_drop_conn(s, why);
    session_write_login_ok(s, &w, PROTO_STATUS_AUTOCOMMIT);
    session_send(s, &w);
    wire_writer_free(&w);
    s->rt.status = PROTO_STATUS_AUTOCOMMIT;
    session_set_state(s, SESSION_DETACHED, why);
    session_client_read(s, true);
    relay_resume(s);
}

/* The reset for COM_CHANGE_USER or COM_RESET_CONNECTION finished: OK, or the first error. */
static void reset_done(void *arg, const uint8_t *err, size_t err_len, bool lost)
{
    struct session *s = arg;
    if (s->state != SESSION_RESETTING)
        return;
    if (lost) {
        reset_without_conn(s, "connection lost during a reset");
        return;
    }
    struct wire_writer w;
    wire_writer_init(&w);
    if (err) {
        wire_begin_packet(&w, s->seq);
        wire_put_bytes(&w, err, err_len);
        wire_end_packet(&w);
    } else {
        /* The server's own status after the reset; its tracking is credproxy's, not shown. */
        uint16_t status = pool_conn_info(s->conn)->status & ~PROTO_STATUS_STATE_CHANGED;
        session_write_login_ok(s, &w, status);
        s->rt.status = status;
    }
    session_send(s, &w);
    wire_writer_free(&w);
    session_set_state(s, SESSION_RELAY, "reset done");
    pool_conn_attach(s->conn, &relay_handler, s);
    if (s->route->cfg->pool_release_idle_ms > 0)
        reconnect_arm_idle_release(s);
    session_client_read(s, true);
    relay_resume(s);
}

/*
 * Resets the server session (and what credproxy knows of it), selects db
 * and, for a COM_CHANGE_USER that names one, the character set.
 */
static void reset_session(struct session *s, const char *db, size_t db_len, uint16_t charset)
{
    session_state_reset(&s->st);
    s->cursor_open = 0;
    s->next_tx = s->next_tx_open = 0;
    s->dirty = 0;
    s->own_tracking = 0; /* the reset puts credproxy's tracking back */
    if (db_len)
        s->st.schema = strndup(db, db_len);
    if (charset && charset <= 255 && charset != s->charset) {
        /* New connections for this session (a reconnect) log in with it too. */
        s->charset = (uint8_t)charset;
        s->dirty = 1; /* the connection's charset is no longer its login's */
    }
    session_set_state(s, SESSION_RESETTING, "client asked for a reset");
    if (!s->conn) {
        reset_without_conn(s, "the connection was lost before the reset");
        return;
    }
    session_client_read(s, false);
    pool_conn_attach(s->conn, NULL, NULL);
    pool_conn_reset(s->conn, db, db_len, charset <= 255 ? charset : 0, reset_done, s);
}

/* Checks the COM_CHANGE_USER's password (password mode), then resets. */
static void change_user_proceed(struct session *s, const uint8_t *auth, size_t auth_len)
{
    if (s->route->cfg->client_auth == CLIENT_AUTH_PASSWORD &&
        !login_verify_local_password(s, auth, auth_len)) {
        login_deny_local(s);
        return;
    }
    log_debug("C-%llu %s: COM_CHANGE_USER to '%s': session reset", (unsigned long long)s->id,
              s->peer, s->user_log);
    char *db = s->change_db;
    uint16_t charset = s->change_charset;
    s->change_db = NULL;
    s->change_charset = 0;
    reset_session(s, db, db ? strlen(db) : 0, charset);
    free(db);
}

/*
 * COM_CHANGE_USER is answered by credproxy: the upstream identity stays the
 * secret's, the session is reset (COM_RESET_CONNECTION), the schema the
 * client names is selected (COM_INIT_DB) and its character set applied. A
 * client that answers with another plugin than mysql_native_password is
 * asked to switch, as at login.
 */
void session_handle_change_user(struct session *s, const uint8_t *p, size_t len)
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
    if (!response_idle(&s->rt) || s->to_client_left) {
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "COM_CHANGE_USER while a reply is pending");
        return;
    }
    snprintf(s->user, sizeof(s->user), "%.*s", (int)cu.user_len, cu.user);
    log_escape(s->user_log, sizeof(s->user_log), cu.user, cu.user_len);
    free(s->change_db);
    s->change_db = cu.database_len ? strndup(cu.database, cu.database_len) : NULL;
    s->change_charset = cu.charset;
    if (!login_plugin_is_native(cu.auth_plugin, cu.auth_plugin_len)) {
        login_send_auth_switch(s);
        session_set_state(s, SESSION_CHANGE_USER_AUTH, "COM_CHANGE_USER: asked for native auth");
        change_user_auth_read(s); /* the answer may be in already */
        return;
    }
    change_user_proceed(s, cu.auth, cu.auth_len);
}

/*
 * Takes the client's next whole login-phase packet (a login request or an
 * auth answer) into *out (malloc'd; the caller wipes and frees it). Returns
 * 1 with a packet, 0 when more bytes must come, -1 when the session failed
 * (oversized, out of sequence) with why.
 */
int session_take_login_packet(struct session *s, uint8_t **out, uint32_t *out_len, const char *why)
{
    struct evbuffer *in = bufferevent_get_input(s->client);
    uint8_t hdr[4];
    if (evbuffer_copyout(in, hdr, 4) < 4)
        return 0;
    uint32_t len = wire_header_len(hdr);
    if (len > LOGIN_MAX_PACKET || wire_header_seq(hdr) != s->seq) {
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01", why);
        return -1;
    }
    if (evbuffer_get_length(in) < 4 + (size_t)len)
        return 0;
    uint8_t *p = malloc(len ? len : 1);
    if (!p) {
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "out of memory");
        return -1;
    }
    evbuffer_drain(in, 4);
    if (evbuffer_remove(in, p, len) != (int)len) {
        free(p);
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01", why);
        return -1;
    }
    *out = p;
    *out_len = len;
    return 1;
}

/* The client's answer to the auth switch of a COM_CHANGE_USER. */
static void change_user_auth_read(struct session *s)
{
    uint8_t *p;
    uint32_t len;
    if (session_take_login_packet(s, &p, &len, "Bad COM_CHANGE_USER auth answer") <= 0)
        return;
    s->seq++;
    change_user_proceed(s, p, len);
    OPENSSL_cleanse(p, len);
    free(p);
}

/*
 * COM_RESET_CONNECTION is done by credproxy too, because the reset also
 * clears the session tracking credproxy relies on, which must be turned
 * back on before the client continues.
 */
void session_handle_reset_connection(struct session *s)
{
    s->seq = 1;
    if (!response_idle(&s->rt) || s->to_client_left) {
        session_fail(s, PROTO_ER_HANDSHAKE, "08S01",
                     "COM_RESET_CONNECTION while a reply is pending");
        return;
    }
    const char *db = s->st.schema ? s->st.schema : s->database;
    char *keep = db ? strdup(db) : NULL;
    reset_session(s, keep, keep ? strlen(keep) : 0, 0);
    free(keep);
}

uint64_t session_now_ms(const struct session *s)
{
    struct timeval tv;
    event_base_gettimeofday_cached(s->worker->base, &tv);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/*
 * The server counts wait_timeout from the end of its reply, credproxy from when
 * that reply went through it, a moment later; an upstream connection that
 * closes this close to the limit is the server's timeout.
 */
#define WAIT_TIMEOUT_SLACK_MS 250u

bool session_own_wait_timeout_passed(const struct session *s)
{
    uint64_t limit = session_state_wait_timeout_ms(&s->st);
    uint64_t now = session_now_ms(s);
    if (!limit || now < s->last_active_ms)
        return false;
    return now - s->last_active_ms + WAIT_TIMEOUT_SLACK_MS >= limit;
}

/*
 * client_idle_timeout: closes sessions that sent no command for that long
 * with no reply pending (as the server's wait_timeout would). Runs once a
 * second from the worker's loop.
 */
void session_sweep_idle(struct worker *w)
{
    struct session *s = w->sessions;
    while (s) {
        struct session *next = s->next;
        int limit = s->route->cfg->client_idle_timeout_ms;
        bool between_commands = (s->state == SESSION_RELAY && response_idle(&s->rt) &&
                                 !s->to_client_left && !s->to_server_left) ||
                                s->state == SESSION_DETACHED;
        if (limit > 0 && between_commands &&
            session_now_ms(s) - s->last_active_ms >= (uint64_t)limit)
            session_close(s, "idle for longer than client_idle_timeout");
        s = next;
    }
}

void session_publish_stats(struct worker *w)
{
    enum { ACTIVE, WAITING, IDLE, LOGIN, N };
    size_t n = w->n_pools;
    uint64_t(*c)[N] = n ? calloc(n, sizeof(*c)) : NULL;
    if (!c)
        return;
    for (struct session *s = w->sessions; s; s = s->next) {
        if (s->route->index >= n)
            continue;
        uint64_t *k = c[s->route->index];
        switch (s->state) {
        case SESSION_GREET_WAIT:
        case SESSION_HANDSHAKE:
        case SESSION_AUTH_SWITCH:
        case SESSION_CHANGE_USER_AUTH:
            k[LOGIN]++;
            break;
        case SESSION_CONNECTING:
        case SESSION_RECONNECTING:
            k[WAITING]++;
            break;
        case SESSION_DETACHED:
            k[IDLE]++;
            break;
        case SESSION_RELAY:
        case SESSION_RESTORING:
        case SESSION_RESETTING:
            k[ACTIVE]++;
            break;
        case SESSION_CLOSING:
        case SESSION_CLOSED:
        case SESSION_N_STATES:
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct pool *p = w->pools[i];
        if (!p)
            continue;
        /* The pool knows its route; the route's counters for this worker take the counts. */
        struct route_stats *st = pool_stats(p);
        stats_set(st, ST_G_CL_ACTIVE, c[i][ACTIVE]);
        stats_set(st, ST_G_CL_WAITING, c[i][WAITING]);
        stats_set(st, ST_G_CL_IDLE, c[i][IDLE]);
        stats_set(st, ST_G_CL_LOGIN, c[i][LOGIN]);
    }
    free(c);
}

/* --- start ----------------------------------------------------------------------------------- */

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

/*
 * Session ids are the connection ids clients see: one counter for the whole
 * daemon, so they are unique whatever the number of workers. They start at
 * 2^30, far above the thread ids a server hands out, so a KILL of an id a
 * client read from CONNECTION_ID() or SHOW PROCESSLIST gets "Unknown thread
 * id" instead of reaching another session.
 */
#define SESSION_ID_BASE (1u << 30)

/*
 * A bufferevent enabled for writing with nothing to write registers write
 * interest, wakes once and unregisters it: two epoll_ctl calls for nothing.
 * Greetings and OKs go out with one send (stream_send_now), so a client's
 * socket starts with reading only, and this callback on its output enables
 * writing the first time bytes are queued there, by whichever code queues them
 * (the bufferevent's own write callback then writes and resumes them as
 * usual). It does its work once, then disables itself.
 */
static void enable_write_on_queue(struct evbuffer *out, const struct evbuffer_cb_info *info,
                                  void *arg)
{
    struct bufferevent *bev = arg;
    if (!info->n_added || (bufferevent_get_enabled(bev) & EV_WRITE))
        return;
    bufferevent_enable(bev, EV_WRITE);
    evbuffer_remove_cb(out, enable_write_on_queue, arg); /* safe: libevent saved the next entry */
}
static _Atomic uint32_t next_session_id;

void session_start(struct worker *w, struct route *r, int fd, const struct sockaddr *addr,
                   socklen_t addrlen, bool is_unix)
{
    (void)addrlen;
    struct session *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        worker_session_closed(w, r); /* the accept counted it */
        return;
    }
    s->worker = w;
    s->route = r;
    s->stats = worker_stats(w, r);
    uint32_t id;
    id = SESSION_ID_BASE +
         (atomic_fetch_add_explicit(&next_session_id, 1, memory_order_relaxed) %
          (UINT32_MAX - SESSION_ID_BASE)) +
         1;
    s->id = id;
    s->kill.id = id;
    s->kill.route = r;
    s->kill.worker = w;
    registry_add(&s->kill);
    s->is_unix = is_unix;
    s->state = SESSION_GREET_WAIT;
    s->last_active_ms = session_now_ms(s);
    s->started_ms = s->last_active_ms;
    w->n_sessions++;
    s->next = w->sessions;
    if (s->next)
        s->next->prev = s;
    w->sessions = s;
    struct ucred cred;
    bool have_cred;
    describe_peer(s, fd, addr, is_unix, &cred, &have_cred);
    if (!is_unix && w->nodelay_per_client) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    s->client =
        bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    s->timer = evtimer_new(w->base, closing_linger_cb, s);
    if (!s->client || !s->timer) {
        if (!s->client)
            close(fd);
        session_close(s, "out of memory");
        return;
    }
    session_client_callbacks(s);
    bufferevent_setwatermark(s->client, EV_READ, 0, LOGIN_MAX_PACKET + 4);
    /* Reading only: writing is turned on by the first bytes the socket does not take at once. */
    if (!evbuffer_add_cb(bufferevent_get_output(s->client), enable_write_on_queue, s->client))
        bufferevent_enable(s->client, EV_WRITE);
    bufferevent_enable(s->client, EV_READ);
    log_debug("C-%llu %s: accepted on route %s", (unsigned long long)s->id, s->peer, r->cfg->name);
    /* Refused peers still get a greeting, so clients show the 1045 that follows as it is. */
    s->peer_denied = r->cfg->client_auth == CLIENT_AUTH_PEER &&
                     !(have_cred && peer_allowed(r->cfg, cred.uid, cred.gid));
    login_greet_when_ready(s);
}
