/* Upstream connection pools: one per worker and route, so the hot path takes no lock. */
#ifndef CREDPROXY_PROXY_POOL_H
#define CREDPROXY_PROXY_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/upstream.h"

struct worker;
struct route;
struct pool;
struct pool_conn;
struct pool_request;

/* What a client needs from a connection. Strings are copied. */
struct pool_want {
    uint64_t client_caps; /* negotiated with the client: the connection must match */
    uint8_t charset;
    const char *database; /* schema to select; NULL for the secret's dbname */
    const uint8_t *attrs; /* connect attributes for a new login */
    size_t attrs_len;
};

/*
 * Called once, from the worker's loop (never inside pool_acquire), with a
 * lent connection or with err. The connection has no handler until the
 * callee attaches one (pool_conn_attach).
 */
typedef void (*pool_ready_fn)(void *arg, struct pool_conn *conn, const struct upstream_error *err);

struct pool *pool_new(struct worker *w, struct route *r);
/* Samples the pool's connections and waiters into its worker's stats (stats.h gauges). */
void pool_publish_stats(struct pool *p);
/* The worker's counters for the pool's route. */
struct route_stats *pool_stats(struct pool *p);

/* Closes every connection and drops every request; sessions must be closed first. */
void pool_free(struct pool *p);

/*
 * Its route's settings were reloaded (on p's worker): pool_min_idle is shared out again, and
 * idle connections made for the old upstream settings, or over a lowered pool_size, close.
 */
void pool_settings_changed(struct pool *p);

/*
 * Lends a matching idle connection, or logs in a new one (retrying through a
 * secret rotation or a server restart until connect_timeout), or queues the
 * request while the route's pool_size connections are all open
 * (pool_wait_timeout). Returns a handle for pool_cancel; NULL only when out
 * of memory, and then ready is never called.
 */
struct pool_request *pool_acquire(struct pool *p, const struct pool_want *want, pool_ready_fn ready,
                                  void *arg);
/* Drops a request whose ready has not run; ready will not run. */
void pool_cancel(struct pool_request *req);

/* What a session's cleanup decided for the connection it gives back. */
enum pool_return {
    POOL_KEEP,  /* nothing changed on it: back to the idle list as it is */
    POOL_RESET, /* reset (COM_RESET_CONNECTION, tracking, schema), then idle */
    POOL_CLOSE, /* state unknown or unwanted: closed */
};

/*
 * Gives a lent connection back. Kept connections are still closed when too
 * old or logged in with a superseded secret.
 */
void pool_release(struct pool_conn *c, enum pool_return how);

/*
 * Who gets a lent connection's stream events. The pool is the only owner of
 * the stream's callbacks; it forwards them to the handler attached last.
 */
struct pool_conn_handler {
    void (*read)(void *arg);              /* input arrived */
    void (*write)(void *arg);             /* output drained to its low watermark; may be NULL */
    void (*event)(void *arg, short what); /* BEV_EVENT_EOF or BEV_EVENT_ERROR */
};
/* Attaches h (NULL: events are ignored) and enables reading and writing. */
void pool_conn_attach(struct pool_conn *c, const struct pool_conn_handler *h, void *arg);

struct bufferevent *pool_conn_bev(struct pool_conn *c);
/*
 * The lent connection's read side (its socket is read by a sock_reader, not
 * by the bufferevent): on/off, the read high mark (0: none), and how many
 * bytes of a packet are still to come (sizes the next read).
 */
void pool_conn_read(struct pool_conn *c, bool on);
void pool_conn_read_high(struct pool_conn *c, size_t high);
void pool_conn_expect(struct pool_conn *c, size_t n);
const struct upstream_info *pool_conn_info(const struct pool_conn *c);
const char *pool_conn_user(const struct pool_conn *c);
/*
 * Its client saw an error: with upstream_role=writer, the server is asked
 * whether it is still writable (in the round trip of the reset that returns
 * it to the pool) before it serves anyone else.
 */
void pool_conn_suspect(struct pool_conn *c);
/* True when its route wants a writable server (upstream_role, resolved for its host). */
bool pool_conn_wants_writer(const struct pool_conn *c);
/* True when the server reports session-state changes on this connection. */
bool pool_conn_tracked(const struct pool_conn *c);

/*
 * Resets a lent connection's session and selects database (may be NULL or
 * empty), on behalf of its client (COM_CHANGE_USER, COM_RESET_CONNECTION);
 * charset (a collation id; 0 keeps the login's) becomes the session's
 * character set, as a COM_CHANGE_USER naming one asks.
 * done runs from the loop with the first error packet's payload (or NULL),
 * or with lost true when the connection died meanwhile (then the caller
 * gives it back with POOL_CLOSE). The handler is detached meanwhile.
 */
typedef void (*pool_reset_fn)(void *arg, const uint8_t *err_payload, size_t err_len, bool lost);
void pool_conn_reset(struct pool_conn *c, const char *database, size_t database_len,
                     uint16_t charset, pool_reset_fn done, void *arg);

#endif
