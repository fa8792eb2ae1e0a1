/* Upstream login: credproxy plays the MySQL client, on the worker's event loop. */
#include "proxy/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "auth/client_auth.h"
#include "auth/handshake.h"
#include "auth/proto.h"
#include "auth/reply.h"
#include "auth/wire.h"
#include "secrets/secure_mem.h"

/* Login packets are small; anything bigger is not a MySQL server talking. */
#define LOGIN_MAX_PACKET (64 * 1024)

enum login_state {
    LOGIN_CONNECTING, /* DNS + TCP */
    LOGIN_GREETING,   /* waiting for the server's handshake */
    LOGIN_TLS,        /* TLS handshake after SSLRequest */
    LOGIN_AUTH,       /* HandshakeResponse sent, answering plugin requests */
    LOGIN_DONE,       /* done was called; freed when the callback that ended it returns */
};

struct upstream_login {
    struct event_base *base;
    struct bufferevent *bev;
    struct event *timer;
    enum login_state state;
    upstream_done_fn done;
    void *arg;
    /* copies of the parameters */
    char *host;
    int port;
    enum upstream_tls_mode tls_mode;
    SSL_CTX *tls_ctx;
    char *user;
    char *password; /* secure memory: not in core dumps, wiped on free */
    char *database;
    uint64_t client_caps;
    uint8_t charset;
    uint8_t *attrs;
    size_t attrs_len;
    /* protocol state */
    uint8_t seq;
    uint8_t nonce[32];
    size_t nonce_len;
    enum client_auth_plugin plugin;
    bool awaiting_pubkey;
    struct upstream_info info;
    struct evdns_getaddrinfo_request *dns_req; /* the lookup in flight, or NULL */
    char setup_error[160]; /* a DNS or socket failure, reported from the timer */
};

static void login_free(struct upstream_login *l)
{
    if (l->dns_req)
        evdns_getaddrinfo_cancel(l->dns_req); /* its callback sees EVUTIL_EAI_CANCEL, not l */
    if (l->timer)
        event_free(l->timer);
    if (l->bev)
        bufferevent_free(l->bev);
    secure_free(l->password); /* wipes it */
    OPENSSL_cleanse(l->nonce, sizeof(l->nonce));
    free(l->host);
    free(l->user);
    free(l->database);
    free(l->attrs);
    free(l);
}

static void login_fail(struct upstream_login *l, uint16_t code, const char *sqlstate,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Ends the login: nothing more is read or timed, and the callback that ended
 * it frees it when it returns (login_end_of_callback), never before, so no
 * caller up the stack holds a freed login.
 */
static void login_finish(struct upstream_login *l)
{
    l->state = LOGIN_DONE;
    if (l->timer)
        event_del(l->timer);
    if (l->bev) {
        bufferevent_disable(l->bev, EV_READ | EV_WRITE);
        bufferevent_setcb(l->bev, NULL, NULL, NULL, NULL);
    }
}

/* Every libevent callback of a login ends here. */
static void login_end_of_callback(struct upstream_login *l)
{
    if (l->state == LOGIN_DONE)
        login_free(l);
}

/* Reports failure once; the login is freed when the current callback returns. */
static void login_fail(struct upstream_login *l, uint16_t code, const char *sqlstate,
                       const char *fmt, ...)
{
    if (l->state == LOGIN_DONE)
        return;
    struct upstream_error err = {.code = code};
    snprintf(err.sqlstate, sizeof(err.sqlstate), "%s", sqlstate);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof(err.message), fmt, ap);
    va_end(ap);
    login_finish(l);
    l->done(l->arg, NULL, NULL, &err);
}

static void login_succeed(struct upstream_login *l)
{
    struct bufferevent *bev = l->bev;
    login_finish(l);
    l->bev = NULL; /* the caller's now */
    l->done(l->arg, bev, &l->info, NULL);
}

static void send_packet(struct upstream_login *l, const uint8_t *payload, size_t len)
{
    uint8_t hdr[4] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16), l->seq++};
    struct evbuffer *out = bufferevent_get_output(l->bev);
    evbuffer_add(out, hdr, 4);
    evbuffer_add(out, payload, len);
}

static void wipe_and_free(const void *data, size_t len, void *extra)
{
    (void)extra;
    OPENSSL_cleanse((void *)data, len);
    free((void *)data);
}

/*
 * For packets that hold the password or what is derived from it: the output buffer only
 * references our copy, which is wiped when libevent is done with it (sent, or the
 * connection freed). evbuffer_add() would copy it into chains that are freed unwiped.
 */
static void send_secret_packet(struct upstream_login *l, const uint8_t *payload, size_t len)
{
    uint8_t *p = malloc(4 + len);
    if (!p)
        return; /* the server times the login out */
    p[0] = (uint8_t)len;
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)(len >> 16);
    p[3] = l->seq++;
    memcpy(p + 4, payload, len);
    if (evbuffer_add_reference(bufferevent_get_output(l->bev), p, 4 + len, wipe_and_free, NULL) < 0)
        wipe_and_free(p, 4 + len, NULL);
}

/* Parses the server's Initial Handshake Packet into l->info and l->nonce. */
static bool parse_greeting(struct upstream_login *l, const uint8_t *p, size_t len, char *why,
                           size_t whylen)
{
    struct server_greeting g;
    if (!server_greeting_parse(p, len, &g, why, whylen))
        return false;
    l->info.thread_id = g.thread_id;
    l->info.server_charset = g.charset;
    l->info.status = g.status;
    l->info.server_caps = g.capabilities;
    snprintf(l->info.server_version, sizeof(l->info.server_version), "%s", g.version);
    memcpy(l->nonce, g.scramble, g.scramble_len);
    l->nonce_len = g.scramble_len;
    OPENSSL_cleanse(g.scramble, sizeof(g.scramble));
    l->plugin =
        client_auth_plugin_by_name(g.auth_plugin, strlen(g.auth_plugin)) == CLIENT_AUTH_CACHING_SHA2
            ? CLIENT_AUTH_CACHING_SHA2
            : CLIENT_AUTH_NATIVE;
    return true;
}

uint64_t upstream_caps_for(uint64_t client_caps, uint64_t server_caps)
{
    uint64_t caps = client_caps & server_caps & UPSTREAM_RELAYABLE_CAPS;
    /* Session tracking is how credproxy follows session state for reconnects. */
    caps |= server_caps & PROTO_CAP_SESSION_TRACK;
    if (server_caps & PROTO_CAP_LONG_PASSWORD)
        caps &= 0xffffffffull; /* a MySQL server: no MariaDB extended flags */
    return caps;
}

/* The flags of this connection: exactly the client's, where the server has them too. */
static uint64_t negotiated_caps(const struct upstream_login *l, bool tls)
{
    uint64_t caps = upstream_caps_for(l->client_caps, l->info.server_caps);
    caps |= PROTO_CAP_PROTOCOL_41 | PROTO_CAP_SECURE_CONNECTION | PROTO_CAP_PLUGIN_AUTH;
    caps |= l->info.server_caps & PROTO_CAP_PLUGIN_AUTH_LENENC;
    caps &= ~PROTO_CAP_CONNECT_WITH_DB;
    if (l->database)
        caps |= PROTO_CAP_CONNECT_WITH_DB;
    if (l->attrs_len)
        caps |= l->info.server_caps & PROTO_CAP_CONNECT_ATTRS;
    else
        caps &= ~PROTO_CAP_CONNECT_ATTRS;
    if (tls)
        caps |= PROTO_CAP_SSL;
    if (!(l->info.server_caps & PROTO_CAP_LONG_PASSWORD))
        caps &= ~PROTO_CAP_LONG_PASSWORD;
    return caps;
}

/* The fixed 32-byte head shared by SSLRequest and HandshakeResponse41. */
static void put_response_head(struct wire_writer *w, uint64_t caps, uint8_t charset)
{
    wire_put_u32(w, (uint32_t)caps);
    wire_put_u32(w, PROTO_MAX_PAYLOAD + 1);
    wire_put_u8(w, charset);
    wire_put_zeros(w, 19);
    wire_put_u32(w, (uint32_t)(caps >> 32));
}

/* The current plugin's answer to the nonce, or -1 after failing (and freeing) the login. */
static int plugin_reply(struct upstream_login *l, uint8_t reply[CLIENT_AUTH_MAX_REPLY])
{
    char err[160];
    int n = client_auth_first_reply(l->plugin, l->password, l->nonce, l->nonce_len, l->info.tls,
                                    reply, err, sizeof(err));
    if (n < 0)
        login_fail(l, 2059, "HY000", "credproxy: login to %s:%d as '%s': %s", l->host, l->port,
                   l->user, err);
    return n;
}

static void send_handshake_response(struct upstream_login *l)
{
    uint8_t reply[CLIENT_AUTH_MAX_REPLY];
    int n = plugin_reply(l, reply);
    if (n < 0)
        return;
    struct wire_writer w;
    wire_writer_init(&w);
    put_response_head(&w, l->info.caps, l->charset);
    wire_put_cstr(&w, l->user);
    if (l->info.caps & PROTO_CAP_PLUGIN_AUTH_LENENC) {
        wire_put_lenenc_bytes(&w, reply, (size_t)n);
    } else {
        wire_put_u8(&w, (uint8_t)n);
        wire_put_bytes(&w, reply, (size_t)n);
    }
    if (l->info.caps & PROTO_CAP_CONNECT_WITH_DB)
        wire_put_cstr(&w, l->database);
    wire_put_cstr(&w, l->plugin == CLIENT_AUTH_CACHING_SHA2 ? "caching_sha2_password"
                                                            : "mysql_native_password");
    if (l->info.caps & PROTO_CAP_CONNECT_ATTRS)
        wire_put_lenenc_bytes(&w, l->attrs, l->attrs_len);
    OPENSSL_cleanse(reply, sizeof(reply));
    if (!w.failed)
        send_secret_packet(l, w.buf, w.len);
    OPENSSL_cleanse(w.buf, w.len);
    wire_writer_free(&w);
    l->state = LOGIN_AUTH;
}

static bool host_is_ip(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void login_event_cb(struct bufferevent *bev, short what, void *arg);
static void login_read_cb(struct bufferevent *bev, void *arg);

/* Sends SSLRequest in the clear, then hands the socket to a TLS bufferevent. */
static void start_tls(struct upstream_login *l)
{
    struct wire_writer w;
    wire_writer_init(&w);
    wire_begin_packet(&w, l->seq++);
    put_response_head(&w, l->info.caps, l->charset);
    wire_end_packet(&w);
    evutil_socket_t fd = bufferevent_getfd(l->bev);
    /* The socket is fresh and idle, so 36 bytes go out at once or something is wrong. */
    ssize_t sent = w.failed ? -1 : send(fd, w.buf, w.len, MSG_NOSIGNAL);
    bool ok = sent == (ssize_t)w.len;
    wire_writer_free(&w);
    if (!ok) {
        login_fail(l, 2026, "HY000", "credproxy: could not start TLS with %s:%d: %s", l->host,
                   l->port, strerror(errno));
        return;
    }
    SSL *ssl = SSL_new(l->tls_ctx);
    if (!ssl) {
        login_fail(l, 2026, "HY000", "credproxy: could not create a TLS session");
        return;
    }
    bool verify =
        l->tls_mode == UPSTREAM_TLS_VERIFY_CA || l->tls_mode == UPSTREAM_TLS_VERIFY_IDENTITY;
    SSL_set_verify(ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    bool is_ip = host_is_ip(l->host);
    if (l->tls_mode == UPSTREAM_TLS_VERIFY_IDENTITY) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (is_ip)
            X509_VERIFY_PARAM_set1_ip_asc(vp, l->host);
        else
            SSL_set1_host(ssl, l->host);
    }
    if (!is_ip)
        SSL_set_tlsext_host_name(ssl, l->host);
    bufferevent_setcb(l->bev, NULL, NULL, NULL, NULL);
    bufferevent_setfd(l->bev, -1); /* the socket moves to the TLS bufferevent, open */
    bufferevent_free(l->bev);
    l->bev = bufferevent_openssl_socket_new(l->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!l->bev) {
        evutil_closesocket(fd);
        login_fail(l, 2026, "HY000", "credproxy: could not start TLS");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(l->bev, 1);
    bufferevent_setcb(l->bev, login_read_cb, NULL, login_event_cb, l);
    bufferevent_enable(l->bev, EV_READ | EV_WRITE);
    l->state = LOGIN_TLS;
}

static void handle_greeting(struct upstream_login *l, const uint8_t *p, size_t len)
{
    char why[160];
    if (len > 0 && p[0] == 0xff) {
        struct server_reply rep;
        if (server_reply_parse(p, len, &rep))
            login_fail(l, rep.error_code, rep.sqlstate,
                       "credproxy: %s:%d refused the connection: %.*s", l->host, l->port,
                       (int)rep.message_len, rep.message);
        else
            login_fail(l, 2013, "HY000", "credproxy: %s:%d refused the connection", l->host,
                       l->port);
        return;
    }
    if (!parse_greeting(l, p, len, why, sizeof(why))) {
        login_fail(l, 2027, "HY000", "credproxy: %s:%d: %s", l->host, l->port, why);
        return;
    }
    bool server_tls = l->info.server_caps & PROTO_CAP_SSL;
    bool want_tls = l->tls_mode != UPSTREAM_TLS_DISABLED && server_tls;
    if (l->tls_mode >= UPSTREAM_TLS_REQUIRED && !server_tls) {
        login_fail(l, 2026, "HY000", "credproxy: %s:%d does not offer TLS, and upstream_tls is %s",
                   l->host, l->port, config_upstream_tls_name(l->tls_mode));
        return;
    }
    l->info.caps = negotiated_caps(l, want_tls);
    if (want_tls)
        start_tls(l);
    else
        send_handshake_response(l);
}

/* Answers an AuthSwitchRequest: a new plugin and a new nonce. */
static bool handle_auth_switch(struct upstream_login *l, const uint8_t *p, size_t len)
{
    struct wire_reader r;
    wire_reader_init(&r, p + 1, len - 1);
    size_t nlen, dlen;
    const char *name = wire_get_cstr(&r, &nlen);
    const uint8_t *data = wire_get_rest(&r, &dlen);
    if (!name) {
        login_fail(l, 2027, "HY000", "credproxy: malformed auth switch from %s:%d", l->host,
                   l->port);
        return false;
    }
    /*
     * Scramble-based plugins get 20 bytes and a NUL; client_ed25519's nonce is
     * 32 random bytes with none, whose last byte may well be 0 (1 in 256).
     */
    if (dlen == 21 && data[20] == 0)
        dlen = 20;
    l->plugin = client_auth_plugin_by_name(name, nlen);
    if (l->plugin == CLIENT_AUTH_UNKNOWN) {
        login_fail(l, 2059, "HY000",
                   "credproxy: %s:%d asks for auth plugin '%.*s', which credproxy does not support",
                   l->host, l->port, (int)nlen, name);
        return false;
    }
    if (l->plugin == CLIENT_AUTH_CLEAR && !l->info.tls) {
        login_fail(l, 2059, "HY000",
                   "credproxy: %s:%d asks for the cleartext password without TLS; refusing",
                   l->host, l->port);
        return true;
    }
    if (dlen > sizeof(l->nonce))
        dlen = sizeof(l->nonce);
    memcpy(l->nonce, data, dlen);
    l->nonce_len = dlen;
    uint8_t reply[CLIENT_AUTH_MAX_REPLY];
    int n = plugin_reply(l, reply);
    if (n < 0)
        return false;
    l->awaiting_pubkey = l->plugin == CLIENT_AUTH_SHA256 && !l->info.tls;
    send_secret_packet(l, reply, (size_t)n);
    OPENSSL_cleanse(reply, sizeof(reply));
    return true;
}

/* AuthMoreData (0x01): caching_sha2's fast/full auth marker, or an RSA public key. */
static bool handle_more_data(struct upstream_login *l, const uint8_t *p, size_t len)
{
    uint8_t reply[CLIENT_AUTH_MAX_REPLY];
    char err[160];
    if (l->awaiting_pubkey) {
        int n = client_auth_rsa_reply(l->password, l->nonce, l->nonce_len, p + 1, len - 1, reply,
                                      err, sizeof(err));
        l->awaiting_pubkey = false;
        if (n < 0) {
            login_fail(l, 2059, "HY000", "credproxy: login to %s:%d: %s", l->host, l->port, err);
            return false;
        }
        send_secret_packet(l, reply, (size_t)n);
        OPENSSL_cleanse(reply, sizeof(reply));
        return true;
    }
    if (l->plugin != CLIENT_AUTH_CACHING_SHA2 || len != 2)
        return true; /* nothing to answer; the OK or ERR follows */
    if (p[1] == 3)
        return true; /* fast auth succeeded; OK follows */
    if (p[1] != 4) {
        login_fail(l, 2027, "HY000", "credproxy: unexpected caching_sha2 state from %s:%d", l->host,
                   l->port);
        return false;
    }
    /* Full authentication: the password itself, protected by TLS or by the server's RSA key. */
    if (l->info.tls) {
        size_t n = strlen(l->password) + 1;
        send_secret_packet(l, (const uint8_t *)l->password, n);
    } else {
        uint8_t req = 2;
        l->awaiting_pubkey = true;
        send_packet(l, &req, 1);
    }
    return true;
}

/* Returns false once the login has ended (and l is freed). */
static bool handle_auth_reply(struct upstream_login *l, const uint8_t *p, size_t len)
{
    struct server_reply rep;
    if (len == 0) {
        login_fail(l, 2027, "HY000", "credproxy: empty packet from %s:%d", l->host, l->port);
        return false;
    }
    switch (p[0]) {
    case 0x00:
        if (server_reply_parse(p, len, &rep) && rep.kind == REPLY_OK)
            l->info.status = rep.status;
        login_succeed(l);
        return false;
    case 0xff:
        if (!server_reply_parse(p, len, &rep)) {
            login_fail(l, 2027, "HY000", "credproxy: malformed error from %s:%d", l->host, l->port);
            return false;
        }
        login_fail(l, rep.error_code, rep.sqlstate,
                   "credproxy: upstream %s:%d refused login as '%s': %.*s", l->host, l->port,
                   l->user, (int)rep.message_len, rep.message);
        return false;
    case 0xfe:
        return handle_auth_switch(l, p, len);
    case 0x01:
        return handle_more_data(l, p, len);
    default:
        login_fail(l, 2027, "HY000", "credproxy: unexpected packet 0x%02x from %s:%d", p[0],
                   l->host, l->port);
        return false;
    }
}

/* Feeds every complete packet to the state machine; stops once the login is handed over. */
static void login_read_cb(struct bufferevent *bev, void *arg)
{
    struct upstream_login *l = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while ((l->state == LOGIN_GREETING || l->state == LOGIN_AUTH) && l->bev == bev) {
        uint8_t hdr[4];
        if (evbuffer_copyout(in, hdr, 4) < 4)
            break;
        uint32_t len = wire_header_len(hdr);
        if (len > LOGIN_MAX_PACKET) {
            login_fail(l, 2027, "HY000", "credproxy: %s:%d sent an oversized login packet", l->host,
                       l->port);
            break;
        }
        if (evbuffer_get_length(in) < 4 + (size_t)len)
            break;
        uint8_t *p = malloc(len ? len : 1);
        if (!p) {
            login_fail(l, 2008, "HY000", "credproxy: out of memory");
            break;
        }
        evbuffer_drain(in, 4);
        evbuffer_remove(in, p, len);
        l->seq = (uint8_t)(wire_header_seq(hdr) + 1);
        /* After the greeting the login may be over, or its bufferevent replaced for TLS. */
        if (l->state == LOGIN_GREETING)
            handle_greeting(l, p, len);
        else
            (void)handle_auth_reply(l, p, len);
        OPENSSL_cleanse(p, len);
        free(p);
    }
    login_end_of_callback(l);
}

static void login_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct upstream_login *l = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (l->state == LOGIN_CONNECTING) {
            evutil_socket_t fd = bufferevent_getfd(bev);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            l->state = LOGIN_GREETING;
        } else if (l->state == LOGIN_TLS) {
            l->info.tls = true;
            send_handshake_response(l);
        }
        login_end_of_callback(l);
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
        char reason[256];
        int dns_err = bufferevent_socket_get_dns_error(bev);
        unsigned long ssl_err = 0;
        while (l->state == LOGIN_TLS && (ssl_err = bufferevent_get_openssl_error(bev)) == 0)
            break;
        if (dns_err)
            snprintf(reason, sizeof(reason), "cannot resolve host: %s",
                     evutil_gai_strerror(dns_err));
        else if (ssl_err)
            snprintf(reason, sizeof(reason), "TLS handshake failed: %s",
                     ERR_reason_error_string(ssl_err) ? ERR_reason_error_string(ssl_err)
                                                      : "unknown");
        else if (what & BEV_EVENT_EOF)
            snprintf(reason, sizeof(reason), "the server closed the connection");
        else
            snprintf(reason, sizeof(reason), "%s",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        uint16_t code = l->state == LOGIN_CONNECTING ? 2003 : 2013;
        login_fail(l, code, "HY000", "credproxy could not %s %s:%d: %s",
                   l->state == LOGIN_CONNECTING ? "reach" : "log in to", l->host, l->port, reason);
    }
    login_end_of_callback(l);
}

static void login_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream_login *l = arg;
    if (l->setup_error[0]) {
        login_fail(l, 2003, "HY000", "credproxy could not reach %s:%d: %s", l->host, l->port,
                   l->setup_error);
        return;
    }
    login_fail(l, l->state == LOGIN_CONNECTING ? 2003 : 2013, "HY000",
               "credproxy could not %s %s:%d: timed out",
               l->state == LOGIN_CONNECTING ? "reach" : "log in to", l->host, l->port);
    login_end_of_callback(l);
}

/* Fails the login from the timer, never inside upstream_login_start() itself. */
static void fail_soon(struct upstream_login *l, const char *why)
{
    snprintf(l->setup_error, sizeof(l->setup_error), "%s", why);
    struct timeval now = {0, 0};
    evtimer_add(l->timer, &now);
}

/*
 * The host is resolved here rather than by bufferevent_socket_connect_hostname(), because
 * libevent would create the socket without close-on-exec: created here with SOCK_CLOEXEC,
 * no spawned process (credential_process) can inherit a database connection.
 */
static void resolved_cb(int result, struct evutil_addrinfo *ai, void *arg)
{
    if (result == EVUTIL_EAI_CANCEL)
        return; /* the login was freed; arg is gone */
    struct upstream_login *l = arg;
    l->dns_req = NULL;
    char why[160];
    if (result != 0 || !ai) {
        snprintf(why, sizeof(why), "cannot resolve host: %s", evutil_gai_strerror(result));
        fail_soon(l, why);
    } else {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0 || bufferevent_setfd(l->bev, fd) < 0) {
            snprintf(why, sizeof(why), "cannot create a socket: %s", strerror(errno));
            if (fd >= 0)
                close(fd);
            fail_soon(l, why);
        } else if (bufferevent_socket_connect(l->bev, ai->ai_addr, (int)ai->ai_addrlen) < 0) {
            snprintf(why, sizeof(why), "%s", strerror(errno));
            fail_soon(l, why); /* the bufferevent owns fd and closes it */
        }
    }
    if (ai)
        evutil_freeaddrinfo(ai);
}

struct upstream_login *upstream_login_start(struct event_base *base, struct evdns_base *dns,
                                            const struct upstream_params *p, upstream_done_fn done,
                                            void *arg)
{
    struct upstream_login *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->base = base;
    l->done = done;
    l->arg = arg;
    l->host = strdup(p->host);
    l->port = p->port;
    l->tls_mode = p->tls_mode;
    l->tls_ctx = p->tls_ctx;
    l->user = strdup(p->user);
    l->password = secure_strdup(p->password);
    l->database = p->database ? strndup(p->database, p->database_len) : NULL;
    l->client_caps = p->client_caps;
    l->charset = p->charset;
    l->info.charset = p->charset;
    if (p->attrs_len) {
        l->attrs = malloc(p->attrs_len);
        if (l->attrs) {
            memcpy(l->attrs, p->attrs, p->attrs_len);
            l->attrs_len = p->attrs_len;
        }
    }
    l->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    l->timer = evtimer_new(base, login_timeout_cb, l);
    if (!l->host || !l->user || !l->password || !l->bev || !l->timer ||
        (p->database && !l->database) || (l->tls_mode != UPSTREAM_TLS_DISABLED && !l->tls_ctx)) {
        login_free(l);
        return NULL;
    }
    struct timeval tv = {p->timeout_ms / 1000, (p->timeout_ms % 1000) * 1000};
    evtimer_add(l->timer, &tv);
    bufferevent_setcb(l->bev, login_read_cb, NULL, login_event_cb, l);
    bufferevent_enable(l->bev, EV_READ | EV_WRITE);
    struct evutil_addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
    char port[8];
    snprintf(port, sizeof(port), "%d", l->port);
    /* May answer at once (an IP literal): resolved_cb then fails only through the timer. */
    l->dns_req = evdns_getaddrinfo(dns, l->host, port, &hints, resolved_cb, l);
    return l;
}

void upstream_login_cancel(struct upstream_login *login)
{
    login_free(login);
}

SSL_CTX *upstream_tls_ctx_new(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Verification is chosen per connection (SSL_set_verify), as the mode may depend on the host.
     */
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        snprintf(err, errlen, "cannot load CA bundle %s: %s", ca_file ? ca_file : "(system)",
                 ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}
