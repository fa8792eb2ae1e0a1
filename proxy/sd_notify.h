/*
 * systemd's notification protocol (sd_notify(3)) without libsystemd: one datagram of
 * "KEY=VALUE\n" lines to the unix socket named by $NOTIFY_SOCKET (a path, or an abstract
 * name written with a leading '@'), and the watchdog period from $WATCHDOG_USEC.
 */
#ifndef CREDPROXY_PROXY_SD_NOTIFY_H
#define CREDPROXY_PROXY_SD_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Sends state (e.g. "READY=1\nSTATUS=ready") to $NOTIFY_SOCKET. Never blocks: a full
 * socket buffer drops the message. Returns 1 when sent, 0 when $NOTIFY_SOCKET is not set
 * (not supervised), -1 on an error (errno set; a bad address is logged once).
 * Any thread.
 */
int sd_notify_send(const char *state);

/*
 * The watchdog period systemd asks for, in microseconds: $WATCHDOG_USEC when it is set,
 * valid, and $WATCHDOG_PID is unset or this process' pid; otherwise 0 (no watchdog).
 */
uint64_t sd_watchdog_usec(void);

/* CLOCK_MONOTONIC in microseconds: the clock of RELOADING=1's MONOTONIC_USEC. */
uint64_t sd_monotonic_usec(void);

#endif
