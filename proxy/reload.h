/*
 * Reload on SIGHUP: the configuration (same command line, file and environment) and the users
 * files are read again, and what can change without a restart is applied; open clients keep
 * working. Routes (matched by name) are added, with their secret read and listeners opened, and
 * removed: their listeners close, their clients stay until they leave. All or nothing: a file
 * with an error, an unreadable users file or CA bundle, a new route whose secret or listener
 * cannot be had changes nothing. Main loop only.
 */
#ifndef CREDPROXY_PROXY_RELOAD_H
#define CREDPROXY_PROXY_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct route;
struct route_config;
struct worker;
struct event_base;
struct evdns_base;
struct admin;

/*
 * The daemon's routes, each allocated on its own so adding one never moves the others.
 * all[i]->index == i, and workers index their pools by it. A route a reload removes stays in
 * all (removed set) until the exit, since its open clients keep using it; active lists the
 * ones in the running configuration. Main thread only.
 */
struct route_table {
    struct route **all;
    size_t n;
    struct route **active;
    size_t n_active;
};

/* The listening sockets opened for a route, by the worker that is to serve each. */
struct route_fds {
    int *fd;
    int *worker;
    size_t n, cap;
};

/*
 * Opens rc's listeners: one TCP socket per worker on every address of every listen entry,
 * and its unix socket (for worker 0, bound beside its path until listener_publish_unix).
 * Unless upgrade, an address another process listens on is an error. All or nothing: false
 * (logged) with nothing left open.
 */
bool route_listeners_open(const struct route_config *rc, int n_workers, bool upgrade,
                          struct route_fds *out) __attribute__((warn_unused_result));
/* Closes what out still holds (fd -1 is skipped) and frees it. */
void route_fds_close(struct route_fds *out);

/* What a reload changes: the daemon's own (main.c), which must outlive every reload. */
struct reload_target {
    struct config *cfg;         /* the running configuration: replaced as a whole by a reload */
    struct route_table *routes; /* routes are added and removed in place */
    struct admin *admin;        /* shown the routes again after a reload; NULL without one */
    struct evdns_base *dns;     /* for the admin view */
    struct worker *workers;
    int n_workers;
    struct event_base *base; /* the main loop */
    int argc;
    char **argv;
};

/* Remembers t (copied) for later reloads. */
void reload_init(const struct reload_target *t);

/* SIGHUP: re-reads and applies; logs what changed, what needs a restart, or why nothing did. */
void reload_run(void);

/*
 * After the workers stopped, before the routes are destroyed and while the main loop's base
 * exists: frees the secret sources of removed routes that stopped reading their secret.
 */
void reload_stop_sources(void);

/*
 * After the workers stopped and the routes were destroyed: frees the configurations, users
 * and TLS contexts earlier reloads replaced (the running configuration stays the caller's).
 */
void reload_shutdown(void);

#endif
