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
 * Called once with a ready connection (no callbacks set, reading enabled by
 * the callee), or with err. It may be called before pool_acquire returns.
 */
typedef void (*pool_ready_fn)(void *arg, struct pool_conn *conn, const struct upstream_error *err);

struct pool *pool_new(struct worker *w, struct route *r);
/* Closes every idle connection; lent ones must have been released. */
void pool_free(struct pool *p);

/*
 * Lends a matching idle connection, or logs in a new one (retrying through a
 * secret rotation or a server restart until connect_timeout), or queues the
 * request while the pool is full (pool_wait_timeout). Returns a handle for
 * pool_cancel, or NULL when ready was already called.
 */
struct pool_request *pool_acquire(struct pool *p, const struct pool_want *want, pool_ready_fn ready,
                                  void *arg);
void pool_cancel(struct pool_request *req);

/*
 * Gives a connection back. clean means no command is in flight and no
 * transaction is open: it is kept, after a reset (COM_RESET_CONNECTION) when
 * reset says the client may have changed session state.
 * Otherwise, or if it is too old or logged in with a superseded secret, it
 * is closed.
 */
void pool_release(struct pool_conn *c, bool clean, bool reset);

struct bufferevent *pool_conn_bev(struct pool_conn *c);
const struct upstream_info *pool_conn_info(const struct pool_conn *c);
const char *pool_conn_user(const struct pool_conn *c);
/* True when the server reports session-state changes on this connection. */
bool pool_conn_tracked(const struct pool_conn *c);

/*
 * Resets a lent connection's session and selects database (may be NULL or
 * empty), on behalf of its client (COM_CHANGE_USER). done gets the first
 * error packet's payload, or NULL. The connection's callbacks are taken over
 * until done is called, then cleared.
 */
typedef void (*pool_reset_fn)(void *arg, const uint8_t *err_payload, size_t err_len);
void pool_conn_reset(struct pool_conn *c, const char *database, size_t database_len,
                     pool_reset_fn done, void *arg);

#endif
