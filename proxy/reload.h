/*
 * Reload on SIGHUP: the configuration (same command line, file and environment) and the users
 * files are read again, and what can change without a restart is applied; open clients keep
 * working. All or nothing: a file with an error, an unreadable users file or CA bundle changes
 * nothing. Main loop only.
 */
#ifndef CREDPROXY_PROXY_RELOAD_H
#define CREDPROXY_PROXY_RELOAD_H

#include <stddef.h>

struct config;
struct route;
struct worker;
struct event_base;

/* What a reload changes: the daemon's own (main.c), which must outlive every reload. */
struct reload_target {
    struct config *cfg;   /* the running configuration: replaced as a whole by a reload */
    struct route *routes; /* the running routes, by index */
    size_t n_routes;
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
 * After the workers stopped and the routes were destroyed: frees the configurations, users
 * and TLS contexts earlier reloads replaced (the running configuration stays the caller's).
 */
void reload_shutdown(void);

#endif
