/* A worker thread: one event loop, its own listeners, the sessions it accepted. */
#ifndef CREDPROXY_PROXY_WORKER_H
#define CREDPROXY_PROXY_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/stats.h"

struct event_base;
struct evdns_base;
struct evconnlistener;
struct route;
struct session;
struct pool;
struct event;
struct evbuffer;

/*
 * Embedded in every object a worker frees late (sessions, upstream connections, pool
 * requests): closing an object queues it here, and its free_fn runs at the next safe
 * point of the loop, outside every callback chain, so no caller up the stack is left
 * holding a freed pointer.
 */
struct deferred_free {
    struct deferred_free *next;
    void (*free_fn)(struct deferred_free *d);
};

/*
 * Accepting paused after an accept error (EMFILE and friends): the listeners
 * are off until a timer or a closing session turns them back on, and the
 * episode is logged once when it starts and once when it ends.
 */
struct accept_pause {
    struct event *timer;  /* re-enables the listeners; then waits for a quiet second */
    int holds_spare;      /* counted in the shared reserve of spare descriptors (worker.c) */
    int paused;           /* the listeners are disabled */
    int episode;          /* accept errors were seen and have not been quiet for a second yet */
    int backoff_ms;       /* the next pause: 100 ms, doubling up to 1 s within an episode */
    uint64_t started_ms;  /* when the episode began (monotonic) */
    uint64_t last_err_ms; /* the episode's latest accept error (monotonic) */
    uint64_t n_pauses;    /* pauses in this episode */
    uint64_t n_refused;   /* clients told 1040 in this episode */
};

struct worker {
    int index;
    int n_workers;       /* of the daemon: pools take a 1/n share of pool_size */
    struct pool **pools; /* indexed by route->index; created with the first listener */
    size_t n_pools;
    pthread_t thread;
    struct event_base *base;
    struct evdns_base *dns; /* asynchronous resolver for upstream hosts */
    struct evconnlistener **listeners;
    struct route **listener_routes; /* the route each listener serves */
    size_t n_listeners;
    /*
     * A TCP listener of this worker lacks TCP_NODELAY (Linux passes it from a listening
     * socket to the sockets it accepts): sessions set it on each client socket instead.
     */
    int nodelay_per_client;
    uint64_t next_session_id;
    size_t n_sessions;          /* live sessions, for logs and shutdown */
    struct session *sessions;   /* every live session, so shutdown can close them */
    struct event *stop_event;   /* activated from the main thread to stop this loop */
    int stopping;               /* shutting down: connections are closed, not pooled */
    struct evbuffer *scratch;   /* staging for relayed bytes; empty between callbacks */
    struct deferred_free *reap; /* closed objects waiting for the safe point */
    struct event *reap_event;   /* activated when reap becomes non-empty */
    struct event *sweep_event;  /* once a second: client_idle_timeout */
    struct event *kill_event;   /* activated from other threads: kills are queued */
    pthread_mutex_t kill_lock;  /* guards kills */
    uint32_t *kills;            /* connection ids to close, posted by other workers */
    size_t n_kills, cap_kills;
    struct accept_pause acc; /* accept errors: pause, back off, log once per episode */

    /* Proof that the loop turns, read by the main thread (systemd's watchdog). */
    struct event *beat_event; /* every WORKER_HEARTBEAT_MS: stamps beat_ms */
    _Atomic uint64_t beat_ms; /* monotonic ms of the latest stamp; 0 before worker_start */

    struct event *stats_event;     /* once a second: samples the gauges in stats (stats.h) */
    struct route_stats stats_sink; /* counts of routes without stats blocks (tests, fuzzers) */
    struct event *sync_event;      /* activated by a reload: take the new settings, then say so */
    uint64_t sync_gen;             /* atomic: the reload generation asked for */
    uint64_t synced_gen;           /* atomic: the last one this worker's loop has taken */
    pthread_mutex_t cmd_lock;      /* guards cmds */
    struct worker_cmd *cmds;       /* listeners a reload adds or removes, taken by sync_cb */
    size_t n_cmds;

    /* drain on SIGTERM (drain.h): asked by the main loop, done on this thread */
    struct event *drain_event; /* activated from the main thread: drain_cmd says what */
    _Atomic int drain_cmd;     /* the furthest step asked: WORKER_DRAIN_BEGIN, then _CUT */
    int drain_done;            /* the furthest step taken */
    int draining;              /* listeners closed; sessions close at their first idle moment */
    int drain_reported_empty;  /* told the main loop this worker has no session left */
    struct event *drain_sweep; /* closes idle sessions: poked, and every DRAIN_SWEEP_MS */
};

/* Steps of a drain the main loop asks of a worker (worker_post_drain). */
enum { WORKER_DRAIN_BEGIN = 1, WORKER_DRAIN_CUT = 2 };

/*
 * From the main thread: WORKER_DRAIN_BEGIN closes w's listeners (clients already waiting
 * in their backlog are accepted first, not reset) and drains its sessions;
 * WORKER_DRAIN_CUT closes the ones still open (shutdown_timeout).
 */
void worker_post_drain(struct worker *w, int step);

/*
 * On w's thread, from session code: a session may have become idle; while draining, the
 * sweep runs at the loop's next safe point (never inside the caller's callback chain).
 */
void worker_drain_poke(struct worker *w);

/* w's counters for route r: written only from w's thread. */
struct route_stats *worker_stats(struct worker *w, const struct route *r);

/* From any thread: w closes its session with connection id id (KILL CONNECTION). */
void worker_post_kill(struct worker *w, uint32_t id);

/*
 * From the main thread, after a reload published new settings as generation gen: w's loop
 * applies what it owns (its pools' shares, the idle sweep) and then records gen, which
 * worker_synced() returns. Once every worker has recorded gen, no worker still holds a
 * pointer to the settings that generation replaced (they are never kept across callbacks).
 */
void worker_post_sync(struct worker *w, uint64_t gen);
uint64_t worker_synced(const struct worker *w);

/* A listener a reload adds (fd >= 0) or a route whose listeners it closes (fd < 0). */
struct worker_cmd {
    int fd;
    struct route *route;
};

/*
 * From the main thread, before worker_post_sync: w's loop takes these at its next sync.
 * worker_post_listen owns fd from here (closed if it cannot be queued, or later added); it
 * returns -1 when it cannot be queued. worker_post_unlisten closes every listener of r.
 */
int worker_post_listen(struct worker *w, int fd, struct route *r);
int worker_post_unlisten(struct worker *w, struct route *r);

/* Queues d; free_fn(d) runs from the worker's loop, never inside the caller's stack. */
void worker_defer_free(struct worker *w, struct deferred_free *d,
                       void (*free_fn)(struct deferred_free *d));

/* Frees everything queued now (the loop has stopped). */
void worker_reap_now(struct worker *w);

/* Creates the worker's loop and resolver; listeners are added with worker_listen(). */
int worker_init(struct worker *w, int index, int n_workers);

/* The worker's pool for route r (created by worker_listen). */
struct pool *worker_pool(struct worker *w, struct route *r);

/* Adds a listening socket (already bound and listening) serving route r, and r's pool. */
int worker_listen(struct worker *w, int fd, struct route *r);

/*
 * Called by the session code whenever a session of route r ends: counts it
 * out of r's clients and, if accepting was paused for lack of descriptors,
 * resumes at once, since one has just been freed.
 */
void worker_session_closed(struct worker *w, struct route *r);

/* How often a running worker's loop stamps its heartbeat. */
#define WORKER_HEARTBEAT_MS 250

/*
 * Any thread: milliseconds since w's loop last stamped its heartbeat. A loop that turns
 * stays under about WORKER_HEARTBEAT_MS; a stuck one (a callback that never returns) grows
 * without bound. 0 before worker_start().
 */
uint64_t worker_heartbeat_age_ms(struct worker *w);

int worker_start(struct worker *w);
/* Asks the loop to stop (from any thread) and joins it. */
void worker_stop(struct worker *w);
void worker_destroy(struct worker *w);

#endif
