/* Worker threads: each runs its own event loop with its own listening sockets. */
#include "proxy/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf/log.h"
#include "proxy/drain.h"
#include "proxy/listener.h"
#include "proxy/pool.h"
#include "proxy/route.h"
#include "proxy/session.h"

void worker_reap_now(struct worker *w)
{
    while (w->reap) {
        struct deferred_free *d = w->reap;
        w->reap = NULL;
        while (d) {
            struct deferred_free *next = d->next;
            d->free_fn(d);
            d = next;
        }
    }
}

/* The safe point: runs from the loop itself, after the callbacks that closed the objects. */
static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker_reap_now(arg);
}

void worker_defer_free(struct worker *w, struct deferred_free *d,
                       void (*free_fn)(struct deferred_free *d))
{
    d->free_fn = free_fn;
    d->next = w->reap;
    if (!w->reap && w->reap_event)
        event_active(w->reap_event, EV_TIMEOUT, 0);
    w->reap = d;
}

/* The first pause after an accept error, and the longest (it doubles in between). */
#define ACCEPT_PAUSE_MIN_MS 100
#define ACCEPT_PAUSE_MAX_MS 1000
/* An accept-error episode ends after this long without another error. */
#define ACCEPT_QUIET_MS 1000
/* Most waiting clients refused in one go, so one listener cannot hold the loop for long. */
#define REFUSE_BATCH 64

static void accept_timer_cb(evutil_socket_t fd, short what, void *arg);

/*
 * Descriptors on /dev/null held in reserve, one per worker, so that at EMFILE
 * one can be given up to accept a waiting client and refuse it. The reserve
 * is shared: a slot freed by one worker may be taken by another thread's
 * accept or open in between, so a worker that lost its own still refuses
 * with another's. Touched only around accept errors, never on the hot path.
 */
#define SPARES_MAX 64
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static int spare_fds[SPARES_MAX]; /* guarded by spare_lock */
static size_t n_spare;            /* guarded by spare_lock */
static size_t spare_want;         /* guarded by spare_lock: one per worker, at most SPARES_MAX */
static int spare_short;           /* atomic: n_spare < spare_want */

static void spares_refill_locked(void)
{
    while (n_spare < spare_want) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break;
        spare_fds[n_spare++] = fd;
    }
    __atomic_store_n(&spare_short, n_spare < spare_want, __ATOMIC_RELAXED);
}

/* Tops the reserve up; false when it is still short (no descriptor free). */
static bool spares_refill(void)
{
    pthread_mutex_lock(&spare_lock);
    spares_refill_locked();
    bool full = n_spare >= spare_want;
    pthread_mutex_unlock(&spare_lock);
    return full;
}

/* Adds (one) or removes (minus one) a worker's share of the reserve. */
static void spares_resize(int delta)
{
    pthread_mutex_lock(&spare_lock);
    if (delta > 0 && spare_want < SPARES_MAX)
        spare_want++;
    else if (delta < 0 && spare_want > 0)
        spare_want--;
    while (n_spare > spare_want)
        close(spare_fds[--n_spare]);
    spares_refill_locked();
    pthread_mutex_unlock(&spare_lock);
}

void worker_post_kill(struct worker *w, uint32_t id)
{
    pthread_mutex_lock(&w->kill_lock);
    if (w->n_kills == w->cap_kills) {
        size_t cap = w->cap_kills ? 2 * w->cap_kills : 16;
        uint32_t *k = realloc(w->kills, cap * sizeof(*k));
        if (!k) {
            pthread_mutex_unlock(&w->kill_lock);
            return; /* the session closes at its next command instead (it is marked killed) */
        }
        w->kills = k;
        w->cap_kills = cap;
    }
    w->kills[w->n_kills++] = id;
    pthread_mutex_unlock(&w->kill_lock);
    event_active(w->kill_event, EV_TIMEOUT, 0);
}

/* Closes the sessions other workers' KILL CONNECTIONs named. */
static void kill_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->kill_lock);
        uint32_t id = 0;
        bool any = w->n_kills > 0;
        if (any)
            id = w->kills[--w->n_kills];
        pthread_mutex_unlock(&w->kill_lock);
        if (!any)
            break;
        session_kill(w, id);
    }
}

static uint64_t now_ms(void);

struct route_stats *worker_stats(struct worker *w, const struct route *r)
{
    return r->stats ? &r->stats[w->index] : &w->stats_sink;
}

/* Once a second: the pools' and clients' gauges for the admin endpoint. */
static void stats_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (w->stopping)
        return;
    session_publish_stats(w);
    for (size_t i = 0; i < w->n_pools; i++)
        if (w->pools[i])
            pool_publish_stats(w->pools[i]);
}

static int ensure_sweep(struct worker *w);

/* Closes every listener of route r (a reload removed r). */
static void unlisten(struct worker *w, struct route *r)
{
    size_t kept = 0;
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (w->listener_routes[i] != r) {
            w->listeners[kept] = w->listeners[i];
            w->listener_routes[kept++] = w->listener_routes[i];
            continue;
        }
        evconnlistener_free(w->listeners[i]);
        __atomic_fetch_sub(&r->n_listeners, 1, __ATOMIC_RELAXED);
    }
    w->n_listeners = kept;
}

/* Listeners a reload added or removed. */
static void take_cmds(struct worker *w)
{
    pthread_mutex_lock(&w->cmd_lock);
    struct worker_cmd *cmds = w->cmds;
    size_t n = w->n_cmds;
    w->cmds = NULL;
    w->n_cmds = 0;
    pthread_mutex_unlock(&w->cmd_lock);
    for (size_t i = 0; i < n; i++) {
        struct worker_cmd *c = &cmds[i];
        if (c->fd < 0)
            unlisten(w, c->route);
        else if (w->draining || w->stopping)
            close(c->fd);
        else if (worker_listen(w, c->fd, c->route) < 0)
            log_error("worker %d: route %s: cannot add listener", w->index, c->route->cfg->name);
    }
    free(cmds);
}

static int post_cmd(struct worker *w, int fd, struct route *r)
{
    pthread_mutex_lock(&w->cmd_lock);
    struct worker_cmd *c = realloc(w->cmds, (w->n_cmds + 1) * sizeof(*c));
    if (c) {
        w->cmds = c;
        w->cmds[w->n_cmds++] = (struct worker_cmd){fd, r};
    }
    pthread_mutex_unlock(&w->cmd_lock);
    if (!c && fd >= 0)
        close(fd);
    return c ? 0 : -1;
}

int worker_post_listen(struct worker *w, int fd, struct route *r)
{
    return post_cmd(w, fd, r);
}

int worker_post_unlisten(struct worker *w, struct route *r)
{
    return post_cmd(w, -1, r);
}

/* A reload's new settings, taken at a safe point of this worker's loop. */
static void sync_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    uint64_t gen = __atomic_load_n(&w->sync_gen, __ATOMIC_ACQUIRE);
    take_cmds(w);
    for (size_t i = 0; i < w->n_pools && !w->stopping; i++)
        if (w->pools[i])
            pool_settings_changed(w->pools[i]);
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listener_routes[i]->cfg->client_idle_timeout_ms > 0 && ensure_sweep(w) < 0)
            log_error("worker %d: cannot start the client_idle_timeout sweep", w->index);
    __atomic_store_n(&w->synced_gen, gen, __ATOMIC_RELEASE);
}

void worker_post_sync(struct worker *w, uint64_t gen)
{
    __atomic_store_n(&w->sync_gen, gen, __ATOMIC_RELEASE);
    event_active(w->sync_event, EV_TIMEOUT, 0);
}

uint64_t worker_synced(const struct worker *w)
{
    return __atomic_load_n(&w->synced_gen, __ATOMIC_ACQUIRE);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr,
                      int addrlen, void *arg);

/* While draining, idle sessions are looked for at least this often (besides every poke). */
#define DRAIN_SWEEP_MS 50

/*
 * Takes the clients already waiting in each listener's backlog (closing a listening socket
 * would reset them), then closes the listeners: from here the kernel refuses new clients
 * (or, during an upgrade, gives them to the new process's sockets).
 */
static void listeners_close_for_drain(struct worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        struct evconnlistener *l = w->listeners[i];
        int lfd = evconnlistener_get_fd(l);
        evconnlistener_disable(l);
        for (;;) {
            struct sockaddr_storage ss;
            socklen_t len = sizeof(ss);
            int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0)
                break;
            accept_cb(l, fd, (struct sockaddr *)&ss, (int)len, w);
        }
        __atomic_fetch_sub(&w->listener_routes[i]->n_listeners, 1, __ATOMIC_RELAXED);
        /*
         * Closed (LEV_OPT_CLOSE_ON_FREE) right after its backlog was found empty: a client
         * the kernel queues in between is reset, unless net.ipv4.tcp_migrate_req hands it to
         * another socket of the SO_REUSEPORT group (README, "Upgrading").
         */
        evconnlistener_free(l);
    }
    __atomic_store_n(&w->n_listeners, 0, __ATOMIC_RELAXED); /* the admin endpoint reads it */
    w->acc.paused = 0;
    event_del(w->acc.timer);
}

/* The drain's safe point: closes idle sessions; tells the main loop once none is left. */
static void drain_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (w->stopping)
        return;
    session_drain_sweep(w);
    if (w->n_sessions == 0 && !w->drain_reported_empty) {
        w->drain_reported_empty = 1;
        event_del(w->drain_sweep);
        drain_report_empty();
    }
}

/* Runs on the worker's thread: takes the drain steps the main loop asked for. */
static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    int step = atomic_load(&w->drain_cmd);
    if (w->stopping || step <= w->drain_done)
        return;
    if (w->drain_done < WORKER_DRAIN_BEGIN) {
        w->draining = 1;
        listeners_close_for_drain(w);
        size_t open = 0, in_trans = 0;
        session_drain_count(w, &open, &in_trans);
        drain_report_began(open, in_trans);
        struct timeval tv = {0, DRAIN_SWEEP_MS * 1000};
        event_add(w->drain_sweep, &tv);
    }
    if (step >= WORKER_DRAIN_CUT)
        session_drain_cut(w);
    w->drain_done = step;
    drain_sweep_cb(-1, 0, w);
}

void worker_post_drain(struct worker *w, int step)
{
    atomic_store(&w->drain_cmd, step);
    event_active(w->drain_event, EV_TIMEOUT, 0);
}

void worker_drain_poke(struct worker *w)
{
    if (w->draining && !w->drain_reported_empty)
        event_active(w->drain_sweep, EV_TIMEOUT, 0);
}

int worker_init(struct worker *w, int index, int n_workers)
{
    memset(w, 0, sizeof(*w));
    w->index = index;
    w->n_workers = n_workers;
    w->acc.backoff_ms = ACCEPT_PAUSE_MIN_MS;
    /*
     * No EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST: a closed socket's removal waits
     * in the changelist until the next pass, and a new socket that gets the
     * same descriptor number meanwhile can have its registration folded into
     * that removal, leaving the client unserved (found by ThreadSanitizer as
     * an epoll_ctl on a descriptor another worker had just accepted).
     */
    w->base = event_base_new();
    w->scratch = evbuffer_new();
    if (!w->base || !w->scratch)
        return -1;
    w->reap_event = event_new(w->base, -1, 0, reap_cb, w);
    w->kill_event = event_new(w->base, -1, 0, kill_cb, w);
    w->sync_event = event_new(w->base, -1, 0, sync_cb, w);
    pthread_mutex_init(&w->kill_lock, NULL);
    pthread_mutex_init(&w->cmd_lock, NULL);
    w->drain_event = event_new(w->base, -1, 0, drain_cb, w);
    w->drain_sweep = event_new(w->base, -1, EV_PERSIST, drain_sweep_cb, w);
    if (!w->reap_event || !w->kill_event || !w->sync_event || !w->drain_event || !w->drain_sweep)
        return -1;
    w->acc.timer = evtimer_new(w->base, accept_timer_cb, w);
    w->stats_event = event_new(w->base, -1, EV_PERSIST, stats_cb, w);
    struct timeval one_second = {1, 0};
    if (!w->acc.timer || !w->stats_event || event_add(w->stats_event, &one_second) < 0)
        return -1;
    spares_resize(1);
    w->acc.holds_spare = 1;
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!w->dns) /* no resolv.conf: numeric hosts and /etc/hosts still work */
        w->dns = evdns_base_new(w->base, 0);
    return w->dns ? 0 : -1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void accept_timer_arm(struct worker *w, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(w->acc.timer, &tv);
}

static void listeners_enable(struct worker *w, bool on)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (on)
            evconnlistener_enable(w->listeners[i]);
        else
            evconnlistener_disable(w->listeners[i]);
    }
}

/* Turns the listeners back on, then watches for a quiet second to end the episode. */
static void accept_resume(struct worker *w)
{
    spares_refill();
    w->acc.paused = 0;
    listeners_enable(w, true);
    accept_timer_arm(w, ACCEPT_QUIET_MS);
}

/* Resumes a pause that has run its course, or ends an episode that has been quiet long enough. */
static void accept_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (w->stopping)
        return;
    if (w->acc.paused) {
        accept_resume(w);
        return;
    }
    if (!w->acc.episode)
        return;
    uint64_t now = now_ms(), quiet = now - w->acc.last_err_ms;
    if (quiet < ACCEPT_QUIET_MS) {
        accept_timer_arm(w, (int)(ACCEPT_QUIET_MS - quiet));
        return;
    }
    log_info("worker %d: accepting again: accept errors for %.1f s, paused %llu times, %llu "
             "waiting clients refused with 1040 (%zu clients open)",
             w->index, (double)(w->acc.last_err_ms - w->acc.started_ms) / 1000.0,
             (unsigned long long)w->acc.n_pauses, (unsigned long long)w->acc.n_refused,
             w->n_sessions);
    w->acc.episode = 0;
    w->acc.backoff_ms = ACCEPT_PAUSE_MIN_MS;
}

/*
 * Out of descriptors, clients waiting in the backlog would hang until they
 * time out. A spare descriptor is given up to accept one, tell it 1040 Too
 * many connections and close it, then taken back; repeated while clients
 * wait (at most REFUSE_BATCH). Returns how many were refused.
 */
static uint64_t refuse_waiting(int lfd)
{
    uint64_t n = 0;
    pthread_mutex_lock(&spare_lock);
    while (n_spare > 0 && n < REFUSE_BATCH) {
        close(spare_fds[--n_spare]);
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            listener_refuse(fd);
            n++;
        }
        spares_refill_locked(); /* the slot may be gone to another thread: see spare_lock */
        if (fd < 0)
            break; /* none left waiting, or the slot was taken */
    }
    pthread_mutex_unlock(&spare_lock);
    return n;
}

/*
 * An accept failed for a reason other than "nobody waiting" (EMFILE, ENFILE,
 * ENOBUFS, ENOMEM...). libevent would call again at once while a client
 * waits, so the listeners are turned off until a timer (100 ms doubling to
 * 1 s) or a closing session turns them back on. One line starts the episode,
 * one ends it.
 */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct worker *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    if (w->stopping)
        return;
    bool out_of_fds = err == EMFILE || err == ENFILE;
    uint64_t refused = out_of_fds ? refuse_waiting(evconnlistener_get_fd(l)) : 0;
    uint64_t now = now_ms();
    if (!w->acc.episode) {
        w->acc.episode = 1;
        w->acc.started_ms = now;
        w->acc.n_pauses = 0;
        w->acc.n_refused = 0;
        log_warn("worker %d: accept paused: %s (%zu clients open)%s", w->index,
                 evutil_socket_error_to_string(err), w->n_sessions,
                 out_of_fds ? "; waiting clients are told 1040 Too many connections" : "");
    }
    w->acc.last_err_ms = now;
    w->acc.n_pauses++;
    w->acc.n_refused += refused;
    w->acc.paused = 1;
    listeners_enable(w, false);
    accept_timer_arm(w, w->acc.backoff_ms);
    w->acc.backoff_ms =
        w->acc.backoff_ms * 2 > ACCEPT_PAUSE_MAX_MS ? ACCEPT_PAUSE_MAX_MS : w->acc.backoff_ms * 2;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr,
                      int addrlen, void *arg)
{
    struct worker *w = arg;
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (w->listeners[i] != l)
            continue;
        struct route *r = w->listener_routes[i];
        /*
         * The reserve lost a descriptor to a race and none is free: this
         * client's slot refills it, or the next clients at the limit could
         * not even be told.
         */
        if (__atomic_load_n(&spare_short, __ATOMIC_RELAXED) && !spares_refill()) {
            listener_refuse(fd);
            spares_refill();
            w->acc.n_refused++;
            stats_inc(worker_stats(w, r), ST_REFUSED_LIMIT);
            return;
        }
        if (!route_client_enter(r)) {
            stats_inc(worker_stats(w, r), ST_REFUSED_LIMIT);
            listener_refuse(fd); /* max_client_connections reached */
            route_client_refused(r);
            return;
        }
        stats_inc(worker_stats(w, r), ST_CLIENTS_ACCEPTED);
        session_start(w, r, fd, addr, (socklen_t)addrlen, addr->sa_family == AF_UNIX);
        return;
    }
    close(fd);
}

void worker_session_closed(struct worker *w, struct route *r)
{
    route_client_leave(r);
    if (w->acc.paused && !w->stopping)
        accept_resume(w); /* a descriptor was just freed */
}

struct pool *worker_pool(struct worker *w, struct route *r)
{
    return r->index < w->n_pools ? w->pools[r->index] : NULL;
}

static int ensure_pool(struct worker *w, struct route *r)
{
    if (worker_pool(w, r))
        return 0;
    if (r->index >= w->n_pools) {
        struct pool **ps = realloc(w->pools, (r->index + 1) * sizeof(*ps));
        if (!ps)
            return -1;
        for (size_t i = w->n_pools; i <= r->index; i++)
            ps[i] = NULL;
        w->pools = ps;
        w->n_pools = r->index + 1;
    }
    w->pools[r->index] = pool_new(w, r);
    return w->pools[r->index] ? 0 : -1;
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    session_sweep_idle(arg);
}

/* The once-a-second client_idle_timeout sweep, started by the first route that has one. */
static int ensure_sweep(struct worker *w)
{
    if (w->sweep_event)
        return 0;
    struct timeval one_second = {1, 0};
    w->sweep_event = event_new(w->base, -1, EV_PERSIST, sweep_cb, w);
    return w->sweep_event && event_add(w->sweep_event, &one_second) == 0 ? 0 : -1;
}

int worker_listen(struct worker *w, int fd, struct route *r)
{
    if (r->cfg->client_idle_timeout_ms > 0 && ensure_sweep(w) < 0)
        return -1;
    if (ensure_pool(w, r) < 0) {
        close(fd);
        return -1;
    }
    /* Set once here, accepted sockets inherit it: one setsockopt less per client. */
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 && errno != EOPNOTSUPP)
        w->nodelay_per_client = 1;
    struct evconnlistener *l = evconnlistener_new(
        w->base, accept_cb, w, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!l) {
        close(fd);
        return -1;
    }
    evconnlistener_set_error_cb(l, accept_error_cb);
    struct evconnlistener **ls = realloc(w->listeners, (w->n_listeners + 1) * sizeof(*ls));
    struct route **rs = realloc(w->listener_routes, (w->n_listeners + 1) * sizeof(*rs));
    if (ls)
        w->listeners = ls;
    if (rs)
        w->listener_routes = rs;
    if (!ls || !rs) {
        evconnlistener_free(l);
        return -1;
    }
    w->listeners[w->n_listeners] = l;
    w->listener_routes[w->n_listeners] = r;
    w->n_listeners++;
    __atomic_fetch_add(&r->n_listeners, 1, __ATOMIC_RELAXED);
    return 0;
}

/* Runs on the worker's own thread: close everything it owns, then leave the loop. */
static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    listeners_enable(w, false);
    w->stopping = 1;
    event_del(w->acc.timer);
    session_close_all(w);
    for (size_t i = 0; i < w->n_pools; i++)
        pool_free(w->pools[i]);
    w->n_pools = 0;
    event_base_loopbreak(w->base);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    /*
     * Bufferevents freed while stopping finish freeing in deferred callbacks;
     * give those a few turns of the loop, or their memory (and their TLS
     * sessions) would never be released.
     */
    for (int i = 0; i < 8; i++)
        event_base_loop(w->base, EVLOOP_NONBLOCK);
    return NULL;
}

/* Runs on the worker's loop: proof for the main thread that the loop still turns. */
static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    atomic_store_explicit(&w->beat_ms, now_ms(), memory_order_relaxed);
}

uint64_t worker_heartbeat_age_ms(struct worker *w)
{
    uint64_t beat = atomic_load_explicit(&w->beat_ms, memory_order_relaxed), now = now_ms();
    return beat && now > beat ? now - beat : 0;
}

int worker_start(struct worker *w)
{
    static const struct timeval beat = {0, WORKER_HEARTBEAT_MS * 1000};
    w->stop_event = event_new(w->base, -1, 0, stop_cb, w);
    w->beat_event = event_new(w->base, -1, EV_PERSIST, heartbeat_cb, w);
    if (!w->stop_event || !w->beat_event || event_add(w->beat_event, &beat) < 0)
        return -1;
    atomic_store_explicit(&w->beat_ms, now_ms(), memory_order_relaxed);
    return pthread_create(&w->thread, NULL, worker_main, w);
}

void worker_stop(struct worker *w)
{
    event_active(w->stop_event, 0, 0);
    pthread_join(w->thread, NULL);
}

void worker_destroy(struct worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        evconnlistener_free(w->listeners[i]);
    free(w->listeners);
    for (size_t i = 0; i < w->n_pools; i++)
        pool_free(w->pools[i]);
    free(w->pools);
    worker_reap_now(w);
    if (w->sweep_event)
        event_free(w->sweep_event);
    if (w->beat_event)
        event_free(w->beat_event);
    if (w->stats_event)
        event_free(w->stats_event);
    if (w->kill_event)
        event_free(w->kill_event);
    if (w->drain_event)
        event_free(w->drain_event);
    if (w->drain_sweep)
        event_free(w->drain_sweep);
    if (w->sync_event)
        event_free(w->sync_event);
    free(w->kills);
    pthread_mutex_destroy(&w->kill_lock);
    for (size_t i = 0; i < w->n_cmds; i++)
        if (w->cmds[i].fd >= 0)
            close(w->cmds[i].fd);
    free(w->cmds);
    pthread_mutex_destroy(&w->cmd_lock);
    if (w->reap_event)
        event_free(w->reap_event);
    if (w->stop_event)
        event_free(w->stop_event);
    if (w->acc.timer)
        event_free(w->acc.timer);
    if (w->acc.holds_spare)
        spares_resize(-1);
    free(w->listener_routes);
    if (w->dns)
        evdns_base_free(w->dns, 0);
    if (w->scratch)
        evbuffer_free(w->scratch);
    if (w->base)
        event_base_free(w->base);
}
