/* Drain on SIGTERM: the main loop's side (drain.h). */
#include "proxy/drain.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>

#include "conf/log.h"
#include "proxy/daemon.h"
#include "proxy/listener.h"
#include "proxy/worker.h"

/* After the cut, how long the last error packets may take to flush before the exit. */
#define CUT_GRACE_MS 3000

/* One drain per process: the main loop owns the plain fields, workers touch the atomics. */
static struct {
    struct event_base *base;
    struct worker *workers;
    int n_workers;
    int timeout_ms;       /* shutdown_timeout */
    struct event *timer;  /* shutdown_timeout, then CUT_GRACE_MS */
    struct event *notify; /* activated by workers when they report */
    void (*done)(void *arg);
    void *arg;
    struct timespec started;
    bool active;
    bool start_logged;
    bool cut;      /* shutdown_timeout passed */
    bool finished; /* done() was called */
    _Atomic int began, emptied;
    _Atomic size_t open, in_trans, closed_idle, n_cut;
} dr;

static double elapsed_s(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - dr.started.tv_sec) +
           (double)(now.tv_nsec - dr.started.tv_nsec) / 1e9;
}

static void finish(const char *how)
{
    if (dr.finished)
        return;
    dr.finished = true;
    size_t open = atomic_load(&dr.open), idle = atomic_load(&dr.closed_idle),
           cut = atomic_load(&dr.n_cut);
    size_t left = open > idle + cut ? open - idle - cut : 0;
    log_info("drain %s after %.1f s: %zu clients closed when idle, %zu left by themselves, %zu "
             "cut at shutdown_timeout",
             how, elapsed_s(), idle, left, cut);
    if (dr.timer)
        event_del(dr.timer);
    dr.done(dr.arg);
}

/* Main loop: a worker reported. Logs the start once all have counted; ends when all are empty. */
static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (!dr.start_logged && atomic_load(&dr.began) >= dr.n_workers) {
        dr.start_logged = true;
        log_info("draining: stopped accepting; %zu clients open, %zu in a transaction; each "
                 "closes at its first idle moment (shutdown_timeout %.1f s)",
                 atomic_load(&dr.open), atomic_load(&dr.in_trans), dr.timeout_ms / 1000.0);
    }
    if (atomic_load(&dr.emptied) >= dr.n_workers)
        finish(dr.cut ? "ended at shutdown_timeout" : "done");
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (dr.cut) {
        finish("ended: the last clients did not take their error in time");
        return;
    }
    dr.cut = true;
    log_warn("drain: shutdown_timeout passed after %.1f s; closing the clients still open",
             elapsed_s());
    for (int k = 0; k < dr.n_workers; k++)
        worker_post_drain(&dr.workers[k], WORKER_DRAIN_CUT);
    struct timeval tv = {CUT_GRACE_MS / 1000, (CUT_GRACE_MS % 1000) * 1000};
    evtimer_add(dr.timer, &tv);
}

bool drain_begin(struct event_base *base, struct worker *workers, int n_workers, int timeout_ms,
                 void (*done)(void *arg), void *arg)
{
    if (dr.active)
        return false;
    dr.active = true;
    dr.base = base;
    dr.workers = workers;
    dr.n_workers = n_workers;
    dr.timeout_ms = timeout_ms;
    dr.done = done;
    dr.arg = arg;
    clock_gettime(CLOCK_MONOTONIC, &dr.started);
    daemon_set_phase(DAEMON_DRAINING, "SIGTERM");
    listener_unlink_own_unix(NULL); /* new clients find no socket; an upgrade's is left alone */
    dr.timer = evtimer_new(base, timer_cb, NULL);
    dr.notify = event_new(base, -1, 0, notify_cb, NULL);
    if (!dr.timer || !dr.notify) {
        log_error("drain: out of memory; stopping at once");
        done(arg);
        return true;
    }
    for (int k = 0; k < n_workers; k++)
        worker_post_drain(&workers[k], WORKER_DRAIN_BEGIN);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(dr.timer, &tv);
    return true;
}

void drain_free(void)
{
    if (dr.timer)
        event_free(dr.timer);
    if (dr.notify)
        event_free(dr.notify);
    dr.timer = dr.notify = NULL;
}

void drain_report_began(size_t open, size_t in_trans)
{
    atomic_fetch_add(&dr.open, open);
    atomic_fetch_add(&dr.in_trans, in_trans);
    atomic_fetch_add(&dr.began, 1);
    event_active(dr.notify, EV_TIMEOUT, 0);
}

void drain_report_empty(void)
{
    atomic_fetch_add(&dr.emptied, 1);
    event_active(dr.notify, EV_TIMEOUT, 0);
}

void drain_count_idle_close(void)
{
    atomic_fetch_add(&dr.closed_idle, 1);
}

void drain_count_cut(void)
{
    atomic_fetch_add(&dr.n_cut, 1);
}
