/* A route at run time: its configuration, its secret, its TLS contexts, what it knows of its
 * server. */
#ifndef CREDPROXY_PROXY_ROUTE_H
#define CREDPROXY_PROXY_ROUTE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "auth/tls.h"
#include "conf/config.h"
#include "secrets/secret_store.h"

struct event_base;
struct evdns_base;
struct upstream_login;
struct secret_source;
struct local_users;
struct upstream_info;
struct route_stats;

/* What the greeting tells clients: the upstream's own, once a login has shown it. */
struct server_profile {
    char version[64];
    uint64_t caps;
    uint8_t charset;
    bool learned; /* false while only the configured defaults are known */
};

/*
 * cfg, users, frontend_tls and upstream_tls are replaced by a reload (SIGHUP, proxy/reload.c) while
 * workers read them: they are atomic pointers, read afresh in each callback and never kept across
 * one, and what they pointed to is freed only once every worker has passed a safe point.
 */
struct route {
    size_t index; /* position in the daemon's routes: workers index pools by it */
    const struct route_config *_Atomic cfg;
    struct secret_store *store;
    struct secret_source *source;
    struct local_users *_Atomic users; /* password mode only */
    /* tls_cert's, the shared ephemeral one, or NULL (client_tls off); a reload may replace it */
    SSL_CTX *_Atomic frontend_tls;
    bool frontend_ephemeral;       /* frontend_tls serves the process's ephemeral certificate */
    SSL_CTX *_Atomic upstream_tls; /* NULL when upstream_tls is disabled */
    pthread_mutex_t lock;          /* guards profile and preferred */
    /* SHA-256 fingerprint of frontend_tls's certificate ("AB:CD:..."), or "" */
    char frontend_fingerprint[TLS_FINGERPRINT_LEN];
    struct server_profile profile;
    struct creds *preferred;       /* a non-current version that logged in (rotation window) */
    int probing;                   /* atomic: the start-up login that learns the profile runs */
    struct upstream_login *probe;  /* main thread: that login, while in flight */
    uint64_t preferred_over;       /* the AWSCURRENT generation it stands in for */
    int upstream_open;             /* atomic: upstream connections of every worker, <= pool_size */
    int starved;                   /* atomic: a worker waits for a slot another worker holds idle */
    int n_clients;                 /* atomic: open client sessions, all workers together */
    struct track_view *track_view; /* atomic pointer, set once: clients' own session tracking */
    uint64_t n_refused;            /* atomic: clients refused at max_client_connections, unlogged */
    uint64_t read_only_epoch;      /* atomic: bumped when a read-only server is found (writer) */
    int64_t refused_log_s;         /* atomic: monotonic second of the last such log line, 0 never */
    struct route_stats *stats;     /* counters, one block per worker (stats.h); may be NULL */
    int64_t last_login_mono_ms;    /* atomic: monotonic ms of the last upstream login that worked */
    uint64_t upstream_gen;         /* atomic: bumped when a reload changes where or how logins go */
    int n_listeners;               /* atomic: listening sockets of every worker (admin endpoint) */
    int removed;        /* atomic: a reload took it out of the configuration; kept until the exit */
    int source_retired; /* atomic: removed, its clients gone: source is no longer read */
};

/*
 * Loads everything a route needs before it can serve: the secret (read once
 * now; start-up fails if it cannot be), users, TLS contexts. The file source
 * then polls on base. Returns false with a message in err.
 */
bool route_init(struct route *r, const struct route_config *cfg, struct event_base *base, char *err,
                size_t errlen) __attribute__((warn_unused_result));
void route_destroy(struct route *r);

struct track_view;
/* The session tracking the server gives a client by default, once a connection has shown it. */
const struct track_view *route_track_view(const struct route *r);
/* Publishes it (the first caller wins; v is copied). */
void route_set_track_view(struct route *r, const struct track_view *v);

void route_profile(struct route *r, struct server_profile *out);

/*
 * The SHA-256 fingerprint ("AB:CD:...") of the certificate the route serves to
 * clients, or NULL when it offers no TLS; *ephemeral (if not NULL) says whether
 * it is the ephemeral one made at start-up. For the log and a status page.
 */
const char *route_tls_fingerprint(const struct route *r, bool *ephemeral);

/* A frontend TLS context and what describes it, made for a route's configuration. */
struct frontend_tls {
    SSL_CTX *ctx;   /* NULL: client_tls off */
    bool ephemeral; /* the process's shared ephemeral certificate (a reference to it) */
    char fingerprint[TLS_FINGERPRINT_LEN]; /* of its certificate, or "" */
};

/*
 * Makes the context cfg asks for: tls_cert and tls_key read now, else a reference to the
 * ephemeral certificate, or none when client_tls is off. False with a message in err.
 */
bool route_frontend_tls_make(const struct route_config *cfg, struct frontend_tls *out, char *err,
                             size_t errlen) __attribute__((warn_unused_result));
/*
 * Main thread: r serves ft from now on (new TLS clients get it; a connected client's TLS
 * holds its own reference to the context it started with); *ft gets the replaced one, to be
 * released once every worker has passed a safe point.
 */
void route_frontend_tls_swap(struct route *r, struct frontend_tls *ft);
void frontend_tls_release(struct frontend_tls *ft);

/*
 * Main thread, before any worker accepts on r (at start-up, or when a reload adds r): one
 * login teaches r the server's version and capabilities, so that its first clients already
 * see the real server; their greeting waits for it (login_greet_when_ready), a bounded time.
 */
void route_probe_start(struct route *r, struct event_base *base, struct evdns_base *dns);
/* Main thread: cancels that login if it is still in flight (before r is destroyed). */
void route_probe_cancel(struct route *r);
/* True while that login is in flight. */
bool route_probing(const struct route *r);

/* Any thread: reads r's secret again as soon as possible (a login was refused, say). */
void route_refresh_secret(struct route *r);
/*
 * Main thread, for a removed route that no client uses any more: r stops reading its secret.
 * Returns the source, now the caller's, to free once every worker has passed a safe point
 * (a worker may be calling route_refresh_secret with it until then); then the caller calls
 * route_source_freed(r) unless the route is gone.
 */
struct secret_source *route_retire_source(struct route *r);
void route_source_freed(struct route *r);
void route_learn(struct route *r, const struct upstream_info *info);
/* An upstream login of r worked (any thread): what readiness looks at. */
void route_login_worked(struct route *r);

/*
 * Counts a new client of r in, across workers; false (and nothing counted)
 * when r already has max_client_connections clients.
 */
bool route_client_enter(struct route *r) __attribute__((warn_unused_result));
/* Counts a client of r out (its session ended). */
void route_client_leave(struct route *r);
/* Notes a client refused at max_client_connections: logged at most every 10 s, with a count. */
void route_client_refused(struct route *r);

/* The upstream host/port for creds: the route's override, else the secret's. */
const char *route_upstream_host(const struct route *r, const struct creds *c);
int route_upstream_port(const struct route *r, const struct creds *c);

struct upstream_params;

/*
 * Fills where and as whom a login with creds c goes: host and port (the
 * route's overrides first), TLS, user, password, database (db, or the
 * secret's dbname when db is NULL) and timeout. Strings point into c and
 * the route. Returns false when neither the secret nor the route has a host.
 */
bool route_login_params(const struct route *r, const struct creds *c, const char *db,
                        struct upstream_params *out) __attribute__((warn_unused_result));

/* upstream_role resolved for host: true when only a writable server's connections may be lent. */
bool route_wants_writer(const struct route *r, const char *host);

/*
 * A connection of r was found on a read-only server where a writer is
 * wanted: connections that were checked before this must be checked again
 * before they are lent. route_read_only_epoch() is the current count.
 */
void route_saw_read_only(struct route *r);
uint64_t route_read_only_epoch(const struct route *r);

/*
 * Where, as whom and how new upstream logins go changed (a reload): connections made before
 * are not lent again. route_upstream_gen() is the current count.
 */
void route_upstream_changed(struct route *r);
uint64_t route_upstream_gen(const struct route *r);

/* AUTO resolved: verify-identity, or preferred for a loopback host (not with upstream_auth=iam). */
enum upstream_tls_mode route_tls_mode(const struct route *r, const char *host);

#endif
