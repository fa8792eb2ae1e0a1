/* The process' phase (daemon.h), and what systemd is told about it. */
#include "proxy/daemon.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include <event2/event.h>

#include "conf/log.h"
#include "proxy/sd_notify.h"
#include "proxy/worker.h"

static _Atomic int phase = DAEMON_STARTING;

enum daemon_phase daemon_phase(void)
{
    return (enum daemon_phase)atomic_load_explicit(&phase, memory_order_acquire);
}

const char *daemon_phase_name(enum daemon_phase p)
{
    static const char *const names[] = {[DAEMON_STARTING] = "starting",
                                        [DAEMON_READY] = "ready",
                                        [DAEMON_RELOADING] = "reloading",
                                        [DAEMON_DRAINING] = "draining",
                                        [DAEMON_STOPPING] = "stopping"};
    return (unsigned)p < sizeof(names) / sizeof(names[0]) ? names[p] : "?";
}

const char *daemon_notify_message(enum daemon_phase p, const char *why, uint64_t mono_usec,
                                  char *buf, size_t n)
{
    const char *state = "";
    char extra[48] = "";
    switch (p) {
    case DAEMON_STARTING:
        break;
    case DAEMON_READY:
        state = "READY=1\n";
        break;
    case DAEMON_RELOADING:
        state = "RELOADING=1\n";
        snprintf(extra, sizeof(extra), "\nMONOTONIC_USEC=%llu", (unsigned long long)mono_usec);
        break;
    case DAEMON_DRAINING:
    case DAEMON_STOPPING:
        state = "STOPPING=1\n";
        break;
    }
    /* STATUS= is one line: a newline in why would start a line systemd reads as a key. */
    char status[200];
    snprintf(status, sizeof(status), "%s: %s", daemon_phase_name(p), why ? why : "");
    for (char *c = status; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    snprintf(buf, n, "%sSTATUS=%s%s", state, status, extra);
    return buf;
}

void daemon_set_phase(enum daemon_phase p, const char *why)
{
    enum daemon_phase from = daemon_phase();
    atomic_store_explicit(&phase, p, memory_order_release);
    log_debug("daemon: %s -> %s: %s", daemon_phase_name(from), daemon_phase_name(p), why);
    char msg[320];
    sd_notify_send(daemon_notify_message(p, why, sd_monotonic_usec(), msg, sizeof(msg)));
}

/* The watchdog's state: main loop only. */
static struct {
    struct event *timer;
    struct worker *workers;
    int n;
    int stuck; /* index + 1 of the worker last reported stuck; 0 when all turn */
} wd;

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    for (int k = 0; k < wd.n; k++) {
        uint64_t age = worker_heartbeat_age_ms(&wd.workers[k]);
        if (age >= DAEMON_WORKER_STUCK_MS) {
            if (wd.stuck != k + 1)
                log_error("worker %d: its event loop has not turned for %llu ms; withholding "
                          "the systemd watchdog ping",
                          k, (unsigned long long)age);
            wd.stuck = k + 1;
            return;
        }
    }
    if (wd.stuck)
        log_warn("worker %d: its event loop turns again; watchdog pings resume", wd.stuck - 1);
    wd.stuck = 0;
    sd_notify_send("WATCHDOG=1");
}

bool daemon_watchdog_start(struct event_base *base, struct worker *workers, int n)
{
    uint64_t usec = sd_watchdog_usec();
    if (!usec)
        return true;
    uint64_t half = usec / 2 ? usec / 2 : 1;
    struct timeval every = {(time_t)(half / 1000000), (suseconds_t)(half % 1000000)};
    wd.workers = workers;
    wd.n = n;
    wd.stuck = 0;
    wd.timer = event_new(base, -1, EV_PERSIST, watchdog_cb, NULL);
    if (!wd.timer || event_add(wd.timer, &every) < 0)
        return false;
    log_info("systemd watchdog: pinging every %llu ms while every worker's loop turns",
             (unsigned long long)(half / 1000));
    sd_notify_send("WATCHDOG=1");
    return true;
}

void daemon_watchdog_stop(void)
{
    if (wd.timer)
        event_free(wd.timer);
    wd.timer = NULL;
    wd.n = 0;
}
