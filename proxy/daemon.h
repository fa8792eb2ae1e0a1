/*
 * The process' phase, one value every module may read (the admin endpoint's /readyz, the
 * listeners, the workers) and only the main loop changes, in one place: daemon_set_phase,
 * which logs the change and tells systemd (sd_notify) when it supervises the process.
 */
#ifndef CREDPROXY_PROXY_DAEMON_H
#define CREDPROXY_PROXY_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct worker;

enum daemon_phase {
    DAEMON_STARTING,  /* reading the secrets, opening listeners */
    DAEMON_READY,     /* listening with a usable secret */
    DAEMON_RELOADING, /* SIGHUP: applying a re-read configuration */
    DAEMON_DRAINING,  /* SIGTERM: no new clients; open ones end at their first idle moment */
    DAEMON_STOPPING,  /* exiting now */
};

/* Any thread. */
enum daemon_phase daemon_phase(void);
const char *daemon_phase_name(enum daemon_phase p);

/*
 * Main loop only. why is logged at debug level and sent to systemd as STATUS=. systemd hears:
 * READY=1 for READY (also after a reload), RELOADING=1 with MONOTONIC_USEC= for RELOADING
 * (Type=notify-reload, systemd >= 253), STOPPING=1 for DRAINING and STOPPING; STARTING
 * sends only a STATUS= line.
 */
void daemon_set_phase(enum daemon_phase p, const char *why);

/*
 * The sd_notify message daemon_set_phase sends for a change to p: "KEY=VALUE" lines, the
 * status being "PHASE: why", mono_usec the CLOCK_MONOTONIC time for MONOTONIC_USEC=.
 * Written into buf (NUL-terminated, cut to n - 1 bytes); returns buf.
 */
const char *daemon_notify_message(enum daemon_phase p, const char *why, uint64_t mono_usec,
                                  char *buf, size_t n);

/*
 * A worker whose loop has not turned for this long is stuck: the watchdog pings stop, so
 * systemd (WatchdogSec=) restarts the process.
 */
#define DAEMON_WORKER_STUCK_MS 2000

/*
 * Starts the systemd watchdog on base (the main loop) when $WATCHDOG_USEC asks for one:
 * WATCHDOG=1 every WATCHDOG_USEC / 2, sent only while every one of the n workers' loops
 * turns (worker_heartbeat_age_ms() < DAEMON_WORKER_STUCK_MS); a stuck worker is logged
 * once. Returns false only when the timer cannot be created; without $WATCHDOG_USEC it
 * does nothing and returns true.
 */
bool daemon_watchdog_start(struct event_base *base, struct worker *workers, int n);

/* Stops the watchdog timer (before the workers are freed). */
void daemon_watchdog_stop(void);

#endif
