/*
 * The HTTP admin endpoint (admin_listen): /metrics (Prometheus text format),
 * /healthz, /readyz, /status (HTML) and /status.json. Served by libevent's
 * evhttp on the main loop, never on a worker: a scrape reads the workers'
 * counters (stats.h) with relaxed loads and never takes a lock they take.
 * No endpoint shows a password, an AWS key or a token.
 */
#ifndef CREDPROXY_PROXY_ADMIN_H
#define CREDPROXY_PROXY_ADMIN_H

#include <stddef.h>

struct event_base;
struct evdns_base;
struct route;
struct worker;
struct admin;

/* What the endpoint reports on; owned by the daemon, which outlives the endpoint. */
struct admin_view {
    struct route **routes; /* the routes in the configuration (not the removed ones) */
    size_t n_routes;
    struct worker *workers;
    int n_workers;
    struct evdns_base *dns; /* for the readiness probe's upstream login */
};

/*
 * Serves listen ("HOST:PORT", "[IPV6]:PORT") on base. Returns NULL with a
 * message in err when the address is malformed or cannot be bound.
 */
struct admin *admin_start(struct event_base *base, const char *listen, const struct admin_view *v,
                          char *err, size_t errlen) __attribute__((warn_unused_result));

/* Points the endpoint at a new set of routes and workers (after a reload). */
void admin_set_view(struct admin *a, const struct admin_view *v);

/* Closes the listener and any request in progress. NULL is fine. */
void admin_free(struct admin *a);

#endif
