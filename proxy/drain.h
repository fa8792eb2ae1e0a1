/*
 * Drain on SIGTERM: stop accepting at once, let every command in flight and every open
 * transaction finish, close each client at its first idle moment, then exit; clients still
 * open after shutdown_timeout are cut with error 1053. The main loop runs the drain
 * (drain_begin); each worker drains its own sessions on its own thread (worker.c,
 * session_drain.c) and reports here.
 */
#ifndef CREDPROXY_PROXY_DRAIN_H
#define CREDPROXY_PROXY_DRAIN_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct worker;

/*
 * Main loop. Starts the drain: sets the phase to DAEMON_DRAINING, removes the unix sockets
 * this process bound, asks every worker to close its listeners and drain, and arms
 * shutdown_timeout. done(arg) runs on the main loop once every client is gone (or cut).
 * Returns false, doing nothing, when a drain is already under way (a second SIGTERM means
 * "stop now").
 */
bool drain_begin(struct event_base *base, struct worker *workers, int n_workers, int timeout_ms,
                 void (*done)(void *arg), void *arg);

/* Frees the main loop's drain events (after the loop has stopped). */
void drain_free(void);

/* Worker threads report to the main loop through these (any thread). */
void drain_report_began(size_t open, size_t in_trans); /* once per worker, at its start */
void drain_report_empty(void);                         /* once per worker: no session left */
void drain_count_idle_close(void);                     /* closed at an idle moment */
void drain_count_cut(void);                            /* cut at shutdown_timeout */

/* Session side (session_drain.c), on the worker's own thread. */

/* Counts the worker's sessions, and those in a transaction. */
void session_drain_count(struct worker *w, size_t *open, size_t *in_trans);
/* Closes every session of w that is idle outside a transaction (a safe point of the loop). */
void session_drain_sweep(struct worker *w);
/* shutdown_timeout: closes every remaining session of w, with error 1053 where it can. */
void session_drain_cut(struct worker *w);

#endif
