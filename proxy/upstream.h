/* Logging in to the upstream server without blocking: DNS, TCP, TLS, auth plugins. */
#ifndef CREDPROXY_PROXY_UPSTREAM_H
#define CREDPROXY_PROXY_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "auth/proto.h"
#include "conf/config.h"

struct bufferevent;
struct event_base;
struct evdns_base;

/* What a login asks for. Strings are copied; the caller may free them after start. */
struct upstream_params {
    const char *host;
    int port;
    enum upstream_tls_mode tls_mode; /* AUTO already resolved by the caller */
    SSL_CTX *tls_ctx;                /* needed unless tls_mode is DISABLED */
    const char *user;
    const char *password;
    const char *database; /* may be NULL */
    size_t database_len;
    uint64_t client_caps; /* what the client negotiated with credproxy */
    uint8_t charset;      /* the client's collation id */
    const uint8_t *attrs; /* the client's connect attributes, forwarded */
    size_t attrs_len;
    int timeout_ms;
};

/* What the server said about itself, and what was negotiated. */
struct upstream_info {
    char server_version[64];
    uint64_t server_caps; /* greeting capabilities, MariaDB extended bits included */
    uint64_t caps;        /* negotiated for this connection */
    uint8_t server_charset;
    uint8_t charset; /* the collation this login asked for */
    uint16_t status; /* from the final OK */
    uint32_t thread_id;
    bool tls;
};

/* Why a login failed: a MySQL error to hand to the client. */
struct upstream_error {
    uint16_t code; /* 2003 when unreachable; the server's code (e.g. 1045) otherwise */
    char sqlstate[6];
    char message[512]; /* never contains the password */
};

/*
 * Called once. On success bev is the connected stream (plain or TLS), owned
 * by the callee, with no callbacks and reading disabled; err is NULL. On
 * failure bev is NULL and err says why. The login is freed after it returns.
 */
typedef void (*upstream_done_fn)(void *arg, struct bufferevent *bev,
                                 const struct upstream_info *info,
                                 const struct upstream_error *err);

struct upstream_login;

struct upstream_login *upstream_login_start(struct event_base *base, struct evdns_base *dns,
                                            const struct upstream_params *params,
                                            upstream_done_fn done, void *arg);

/* Abandons a login in progress; done is not called. */
void upstream_login_cancel(struct upstream_login *login);

/* Capabilities credproxy can relay unchanged (no compression; TLS is per hop). */
#define UPSTREAM_RELAYABLE_CAPS                                                                    \
    (~(PROTO_CAP_COMPRESS | PROTO_CAP_SSL | PROTO_CAP_ZSTD | PROTO_CAP_SSL_VERIFY_SERVER |         \
       PROTO_CAP_REMEMBER_OPTIONS))

/*
 * The capabilities a login negotiates for a client's: the client's own where
 * the server has them, plus session tracking (how credproxy follows session
 * state). Pools compare connections by it.
 */
uint64_t upstream_caps_for(uint64_t client_caps, uint64_t server_caps);

/* An SSL_CTX for upstream connections trusting ca_file (or the system store), or NULL with err. */
SSL_CTX *upstream_tls_ctx_new(const char *ca_file, char *err, size_t errlen);

#endif
