/* A client's login to credproxy: the greeting, frontend auth (trust, peer, password) and TLS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "auth/handshake.h"
#include "auth/reply.h"
#include "auth/scramble.h"
#include "auth/users.h"
#include "conf/log.h"
#include "proxy/pool.h"
#include "proxy/route.h"
#include "proxy/session_int.h"
#include "proxy/sock_reader.h"
#include "proxy/upstream.h"

/* How long a client that arrives during start-up waits for the upstream's profile. */
#define GREET_WAIT_STEP_MS 20
#define GREET_WAIT_STEPS   50

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
    session_send(s, &w);
    wire_writer_free(&w);
}

static void handshake_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    if (!s->refusal_counted)
        stats_inc(s->stats, ST_REFUSED_HANDSHAKE_TIMEOUT);
    s->refusal_counted = 1;
    if (s->tls) {
        /* Perhaps mid TLS handshake, where a MySQL error cannot be sent: just close. */
        session_close(s, "timed out during the TLS handshake");
        return;
    }
    session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "Bad handshake: timed out");
}

static void greet_wait_cb(evutil_socket_t fd, short what, void *arg);

/*
 * Greets the client, after the start-up login has shown the server's version
 * and capabilities (or failed): a greeting built from the configured
 * defaults would announce a different server than the one the client gets.
 */
void login_greet_when_ready(struct session *s)
{
    if (route_probing(s->route) && s->greet_waits < GREET_WAIT_STEPS) {
        s->greet_waits++;
        session_arm_timer(s, GREET_WAIT_STEP_MS, greet_wait_cb);
        return;
    }
    session_set_state(s, SESSION_HANDSHAKE, "greeting sent");
    session_arm_timer(s, s->route->cfg->handshake_timeout_ms, handshake_timeout_cb);
    s->seq = 0;
    send_greeting(s);
    s->seq = 1;
    /*
     * From here the client's socket is read by a sock_reader, as it will be while relaying:
     * its login packet costs one recv, not libevent's FIONREAD ioctl and readv. An SSLRequest
     * hands the socket back to its bufferevent (start_client_tls).
     */
    if (!s->client_rd && !s->tls && s->state == SESSION_HANDSHAKE)
        s->client_rd = sock_reader_new(s->worker->base, s->client);
}

static void greet_wait_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    login_greet_when_ready(s);
}

/* Switches the client connection to TLS after its SSLRequest. */
static bool start_client_tls(struct session *s)
{
    SSL *ssl = SSL_new(s->route->frontend_tls);
    if (!ssl)
        return false;
    if (s->client_rd) {
        /* TLS reads through the bufferevent; this callback may be the reader's own: freed later. */
        sock_reader_detach(s->client_rd);
        s->old_rd = s->client_rd;
        s->client_rd = NULL;
    }
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
    session_client_callbacks(s);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
    return true;
}

bool login_plugin_is_native(const char *plugin, size_t len)
{
    return !plugin || (len == 21 && !memcmp(plugin, "mysql_native_password", 21));
}

/* AuthSwitchRequest to mysql_native_password with the session's scramble. */
void login_send_auth_switch(struct session *s)
{
    struct wire_writer w;
    wire_writer_init(&w);
    auth_switch_request_write(&w, s->seq++, "mysql_native_password", s->scramble,
                              sizeof(s->scramble));
    session_send(s, &w);
    wire_writer_free(&w);
}

bool login_verify_local_password(struct session *s, const uint8_t *reply, size_t len)
{
    const uint8_t *stage2 = local_users_find(s->route->users, s->user, strlen(s->user));
    return stage2 && native_password_verify(stage2, s->scramble, reply, len);
}

void login_deny_local(struct session *s)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "Access denied for user '%s' (credproxy local user)", s->user_log);
    session_fail(s, PROTO_ER_ACCESS_DENIED, "28000", msg);
}

/* The pool lent the session's first connection (or could not). */
static void first_conn_ready(void *arg, struct pool_conn *conn, const struct upstream_error *err)
{
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    s->req = NULL;
    if (err) {
        session_fail(s, err->code, err->sqlstate, err->message);
        return;
    }
    session_take_conn(s, conn);
    const struct upstream_info *info = pool_conn_info(conn);
    log_debug("C-%llu %s: upstream connection as '%s' (thread %u%s)", (unsigned long long)s->id,
              s->peer, pool_conn_user(conn), info->thread_id, info->tls ? ", TLS" : "");
    relay_enter(s, info->caps, info->status);
}

/* The client is who it says (or trusted): borrow an upstream connection for it. */
static void begin_upstream(struct session *s)
{
    if (s->route->cfg->pool_release_idle_ms > 0) {
        reconnect_lazy_login(s);
        return;
    }
    struct pool_want want = {
        .client_caps = s->caps,
        .charset = s->charset,
        .database = s->database,
        .attrs = s->attrs,
        .attrs_len = s->attrs_len,
    };
    /*
     * Reading stays on (turning it off and on again costs two epoll_ctl calls per login): in
     * CONNECTING the read callback leaves what the client sends in the buffer, bounded by the
     * login watermark, for the relay to take up, and a client that leaves is seen at once.
     */
    session_set_state(s, SESSION_CONNECTING, "logged in; borrowing a connection");
    s->req = pool_acquire(worker_pool(s->worker, s->route), &want, first_conn_ready, s);
    if (!s->req)
        session_fail(s, PROTO_ER_CANNOT_CONNECT, "08001", "credproxy: out of memory");
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
    if (s->route->cfg->client_tls == CLIENT_TLS_REQUIRED && !s->tls && !s->is_unix) {
        /* MySQL's own answer under require_secure_transport (ER_SECURE_TRANSPORT_REQUIRED). */
        session_fail(s, 3159, "HY000",
                     "Connections using insecure transport are prohibited (credproxy client_tls = "
                     "required): connect with TLS");
        return;
    }
    s->caps = hr.capabilities;
    s->charset = hr.charset;
    snprintf(s->user, sizeof(s->user), "%.*s", (int)hr.user_len, hr.user);
    log_escape(s->user_log, sizeof(s->user_log), hr.user, hr.user_len);
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
    bool native = login_plugin_is_native(hr.auth_plugin, hr.auth_plugin_len);
    bool password_mode = s->route->cfg->client_auth == CLIENT_AUTH_PASSWORD;
    if (native && (!password_mode || hr.auth_len == 20)) {
        if (!password_mode || login_verify_local_password(s, hr.auth, hr.auth_len))
            begin_upstream(s);
        else
            login_deny_local(s);
        return;
    }
    /*
     * The client answered with another plugin (caching_sha2_password from
     * MySQL 8 clients, sha256_password, client_ed25519): as a server whose
     * account uses mysql_native_password would, ask it to switch. Even in
     * trust mode, an OK in place of what its plugin expects next is an error
     * to the client.
     */
    login_send_auth_switch(s);
    session_set_state(s, SESSION_AUTH_SWITCH, "asked the client for mysql_native_password");
    session_arm_timer(s, s->route->cfg->handshake_timeout_ms, handshake_timeout_cb);
}

/*
 * Reads whole login packets; anything oversized or out of sequence ends the
 * session. Stops at the first packet that moves the session out of the
 * login: what the client pipelined after it is read in the next state.
 */
void login_read(struct session *s)
{
    while (s->state == SESSION_HANDSHAKE || s->state == SESSION_AUTH_SWITCH) {
        uint8_t *p;
        uint32_t len;
        if (session_take_login_packet(s, &p, &len, "Bad handshake") <= 0)
            return;
        s->seq++;
        struct bufferevent *before = s->client;
        if (s->state == SESSION_HANDSHAKE)
            handle_login_request(s, p, len);
        else if (s->route->cfg->client_auth != CLIENT_AUTH_PASSWORD ||
                 login_verify_local_password(s, p, len))
            begin_upstream(s);
        else
            login_deny_local(s);
        OPENSSL_cleanse(p, len);
        free(p);
        if (s->client != before)
            return; /* switched to TLS: the new bufferevent delivers what follows */
    }
}
