/*
 * Counters for the admin endpoint: one block per route per worker, written
 * only by that worker's thread (a relaxed load and store, no lock and no
 * locked instruction), read by the main loop with relaxed loads and summed
 * at scrape time. Gauges (pool and client states) are sampled by each worker
 * once a second, with its heartbeat. A small ring of recent events
 * (reconnects) is shared under a mutex: those are rare.
 */
#ifndef CREDPROXY_PROXY_STATS_H
#define CREDPROXY_PROXY_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bounds (seconds) of the pool wait-time histogram; a last bucket is +Inf. */
#define STATS_WAIT_BOUNDS                                                                          \
    {                                                                                              \
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10                             \
    }
#define STATS_N_WAIT 12

/* Every value kept per route and worker. */
enum stat_key {
    /* counters */
    ST_CLIENTS_ACCEPTED,
    ST_REFUSED_AUTH,              /* access denied at login (password, peer) */
    ST_REFUSED_LIMIT,             /* max_client_connections, or out of descriptors */
    ST_REFUSED_HANDSHAKE_TIMEOUT, /* no login within handshake_timeout */
    ST_REFUSED_BAD_PACKET,        /* malformed, oversized or out-of-sequence login packets */
    ST_REFUSED_TLS_REQUIRED,      /* client_tls = required and the client did not use TLS */
    ST_REFUSED_UPSTREAM,          /* logged in, but no upstream connection could be had */
    ST_COMMANDS,                  /* client commands relayed */
    ST_BYTES_IN,                  /* client to server, packet headers included */
    ST_BYTES_OUT,                 /* server to client */
    ST_LOGIN_OK,                  /* upstream logins */
    ST_LOGIN_ACCESS_DENIED,
    ST_LOGIN_OTHER_ERROR,
    ST_CANDIDATE_CURRENT, /* successful logins with the published (AWSCURRENT) version */
    ST_CANDIDATE_PENDING, /* ... with AWSPENDING during a rotation */
    ST_RECONNECT_RESTORED,
    ST_RECONNECT_REFUSED_PINNED,
    ST_RELEASES,      /* multiplexing: idle clients' connections given back */
    ST_WAITS,         /* requests that queued for a connection (the histogram's count) */
    ST_WAIT_TIMEOUTS, /* ... and were refused after pool_wait_timeout */
    ST_WAIT_SUM_US,   /* total time queued, microseconds */
    ST_WAIT_BUCKET,   /* STATS_N_WAIT + 1 buckets, not cumulative */
    /* gauges, sampled once a second */
    ST_G_CL_ACTIVE = ST_WAIT_BUCKET + STATS_N_WAIT + 1, /* clients with a connection */
    ST_G_CL_WAITING,  /* clients waiting for the pool to lend one */
    ST_G_CL_IDLE,     /* logged in, holding none (multiplexing) */
    ST_G_CL_LOGIN,    /* still logging in */
    ST_G_SV_ACTIVE,   /* upstream connections lent to clients */
    ST_G_SV_IDLE,     /* in the idle list */
    ST_G_SV_USED,     /* being reset or set up by credproxy */
    ST_G_SV_OPENING,  /* logins in flight */
    ST_G_MAX_WAIT_US, /* longest current wait for a connection (max over workers) */
    ST_N
};

/* One route's values on one worker; aligned so workers never share a cache line. */
struct route_stats {
    _Atomic uint64_t v[ST_N];
} __attribute__((aligned(64)));

/* Adds n: only ever called by the owning worker, so load + store cannot lose an update. */
static inline void stats_add(struct route_stats *st, enum stat_key k, uint64_t n)
{
    atomic_store_explicit(&st->v[k], atomic_load_explicit(&st->v[k], memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void stats_inc(struct route_stats *st, enum stat_key k)
{
    stats_add(st, k, 1);
}

static inline void stats_set(struct route_stats *st, enum stat_key k, uint64_t v)
{
    atomic_store_explicit(&st->v[k], v, memory_order_relaxed);
}

/* Counts one wait for a connection that lasted us microseconds. */
void stats_wait(struct route_stats *st, uint64_t us);

/* n_workers zeroed blocks (free()), or NULL when out of memory. */
struct route_stats *stats_new(int n_workers);

/* Sums n blocks into out (gauges too, but ST_G_MAX_WAIT_US is the maximum). Any thread. */
void stats_sum(const struct route_stats *blocks, int n, uint64_t out[ST_N]);

/* A recent event for the status page (reconnects): kept in a ring of the last few. */
#define STATS_EVENTS 32
struct stats_event {
    int64_t at_unix;
    char route[64];
    char what[160];
};

/* Records an event; any thread. route is the route's name; what is plain text. */
void stats_event(const char *route, const char *what);

/* Copies the events, oldest first, into out (at most max); returns how many. */
size_t stats_events(struct stats_event *out, size_t max);

#endif
