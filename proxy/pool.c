/*
 * Per-worker upstream pools: lend connections, take them back (reset or
 * closed as the session's cleanup decided), log new ones in. Which secret
 * version a login tries is proxy/login_policy.c's business.
 *
 * Lifetimes: a connection or request that ends is marked closed and queued
 * on the worker (worker_defer_free); nothing is freed inside a callback
 * chain. Callbacks to the pool's users (ready, reset done) always run from
 * the loop, never inside the call that asked for them.
 */
#include "proxy/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "auth/proto.h"
#include "auth/reply.h"
#include "auth/response.h"
#include "auth/session_track.h"
#include "auth/wire.h"
#include "conf/log.h"
#include "proxy/login_policy.h"
#include "proxy/route.h"
#include "proxy/sock_reader.h"
#include "proxy/stream_send.h"
#include "proxy/stats.h"
#include "proxy/worker.h"
#include "secrets/secret_source.h"

/* How often a login refused during a rotation, or a down server, is tried again. */
#define RETRY_DELAY_MS 200
/* How often a pool whose route is at pool_size looks for a slot another worker gave up. */
#define STARVED_POLL_MS 50

/* Replies among credproxy's own commands whose first row is kept. */
#define POOL_ROWS 2

/* Capability bits that do not change what goes over the wire after login. */
#define LOGIN_ONLY_CAPS                                                                            \
    (PROTO_CAP_LONG_PASSWORD | PROTO_CAP_CONNECT_WITH_DB | PROTO_CAP_SSL |                         \
     PROTO_CAP_SECURE_CONNECTION | PROTO_CAP_PLUGIN_AUTH | PROTO_CAP_PLUGIN_AUTH_LENENC |          \
     PROTO_CAP_CONNECT_ATTRS | PROTO_CAP_EXPIRED_PASSWORDS)

/* Who drives a connection's stream now. */
enum conn_mode {
    CONN_INTERNAL, /* credproxy's own commands (tracking, schema, reset) are in flight */
    CONN_IDLE,     /* in the idle list */
    CONN_LENT,     /* a session's: events go to its handler */
    CONN_CLOSED,   /* queued for the safe point */
};

struct pool_conn {
    struct deferred_free reap;             /* first: freed through it */
    struct pool_conn *prev, *next;         /* the pool's idle list */
    struct pool_conn *all_prev, *all_next; /* every connection of the pool, for shutdown */
    struct pool *pool;
    struct bufferevent *bev;
    struct sock_reader *rd; /* reads bev's socket (NULL with TLS: bev reads) */
    enum conn_mode mode;
    const struct pool_conn_handler *handler; /* while CONN_LENT */
    void *handler_arg;
    struct upstream_info info;
    struct creds *creds; /* the version it logged in with */
    char *database;      /* its schema as credproxy last set it; NULL if unknown */
    uint64_t created_ms;
    uint64_t idle_since_ms;
    bool tracked; /* session-state tracking is on */
    /*
     * upstream_role=writer: the route's read-only epoch when the server was
     * last seen writable; a connection checked before a newer epoch, or one
     * whose client saw an error, is checked again before it is lent.
     */
    uint64_t ro_epoch;
    bool suspect;
    uint64_t upstream_gen; /* route_upstream_gen() when it logged in: older ones are not lent */
    /* credproxy's own commands in flight */
    struct response_tracker irt; /* follows their replies (one may be a result set) */
    uint8_t *rows[POOL_ROWS];    /* the first row of the first replies' results (payload) */
    size_t rows_len[POOL_ROWS];
    unsigned replies_total;
    unsigned replies_left;
    uint8_t *error; /* first ERR payload among their replies */
    size_t error_len;
    struct event *timer; /* bounds credproxy's own commands (connect_timeout) */
    bool lost;           /* the connection died before every reply came (or never answered) */
    bool last_failed;    /* the last of the replies was an ERR */
    void (*internal_done)(struct pool_conn *c, void *arg);
    void *internal_arg;
    pool_reset_fn reset_done; /* pool_conn_reset's caller */
    void *reset_arg;
};

enum request_state {
    REQ_WAITING,    /* queued: the route's connections are all open */
    REQ_LOGIN,      /* logging in a new connection */
    REQ_RETRY,      /* waiting to try the login again */
    REQ_PREPARING,  /* a connection is being set up for it (tracking, schema) */
    REQ_DELIVERING, /* its result waits for the loop to call ready */
    REQ_DONE,       /* delivered or dropped; queued for the safe point */
};

struct pool_request {
    struct deferred_free reap;                /* first: freed through it */
    struct pool_request *next;                /* wait queue */
    struct pool_request *all_prev, *all_next; /* every live request, for shutdown */
    struct pool *pool;
    enum request_state state;
    pool_ready_fn ready; /* NULL once cancelled, and for the janitor's warm-ups */
    void *arg;
    uint64_t client_caps;
    uint8_t charset;
    char *database;
    uint8_t *attrs;
    size_t attrs_len;
    struct upstream_login *login;
    struct login_attempt attempt;
    struct event *timer;  /* queue timeout, next retry, or delivery */
    uint64_t deadline_ms; /* connect_timeout from the first attempt */
    struct upstream_error last_error;
    struct pool_conn *conn; /* while PREPARING or DELIVERING */
    struct upstream_error result;
    bool failed;           /* result holds the error to deliver */
    bool holds_slot;       /* counts in the route's upstream_open (logging in) */
    bool warming;          /* opened by the janitor for pool_min_idle */
    bool checking;         /* its connection's set-up or lend includes READ_ONLY_SQL, first */
    bool read_only;        /* a server it reached was read-only (upstream_role=writer) */
    uint64_t queued_us;    /* monotonic us it joined the wait queue (REQ_WAITING) */
    uint64_t upstream_gen; /* route_upstream_gen() when its login started */
};

struct pool {
    struct worker *worker;
    struct route *route;
    struct pool_conn *idle; /* most recently returned first */
    size_t n_idle;
    size_t n_open;   /* this worker's share of route->upstream_open */
    size_t min_idle; /* this worker's share of pool_min_idle */
    struct pool_request *wait_head, *wait_tail;
    struct pool_request *requests; /* every live request */
    struct event *janitor;
    struct event *starved_poll;
    uint64_t last_caps; /* the last client's wants, for warming */
    uint8_t last_charset;
    bool have_last;
    bool warming;
    struct pool_conn *all;     /* every open connection */
    struct route_stats *stats; /* the worker's counters for the route */
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void start_timer(struct event *ev, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* --- slots: at most pool_size connections per route, whichever worker opens them ------------- */

static bool take_slot(struct pool *p)
{
    struct route *r = p->route;
    int n = __atomic_add_fetch(&r->upstream_open, 1, __ATOMIC_ACQ_REL);
    if (n > r->cfg->pool_size) {
        __atomic_sub_fetch(&r->upstream_open, 1, __ATOMIC_ACQ_REL);
        return false;
    }
    p->n_open++;
    return true;
}

static void give_slot(struct pool *p)
{
    p->n_open--;
    __atomic_sub_fetch(&p->route->upstream_open, 1, __ATOMIC_ACQ_REL);
}

static void serve_waiters(struct pool *p);

/* --- connections ----------------------------------------------------------------------------- */

/* Takes c out of its pool's idle list. */
static void unlink_idle(struct pool_conn *c)
{
    struct pool *p = c->pool;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->idle = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    p->n_idle--;
}

static void conn_free(struct deferred_free *d)
{
    struct pool_conn *c = (struct pool_conn *)d;
    creds_unref(c->creds);
    free(c->database);
    free(c->error);
    for (int i = 0; i < POOL_ROWS; i++)
        free(c->rows[i]);
    if (c->timer)
        event_free(c->timer);
    sock_reader_free(c->rd);
    free(c);
}

/*
 * Reading on, and writing armed. A bufferevent armed for writing queues its
 * output by itself; arming it again each time would register write interest
 * with epoll for an empty buffer (two epoll_ctl calls and a wasted wake-up).
 */
static void conn_read_write(struct pool_conn *c)
{
    stream_read(c->rd, c->bev, true);
    if (!(bufferevent_get_enabled(c->bev) & EV_WRITE))
        bufferevent_enable(c->bev, EV_WRITE);
}

/* Closes c now (socket, slot, lists) and frees it at the worker's safe point. */
static void conn_close(struct pool_conn *c)
{
    static const uint8_t quit[5] = {1, 0, 0, 0, PROTO_COM_QUIT};
    if (c->mode == CONN_CLOSED)
        return;
    struct pool *p = c->pool;
    if (c->mode == CONN_IDLE)
        unlink_idle(c);
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        p->all = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    c->all_prev = c->all_next = NULL;
    /* A polite COM_QUIT when the socket is idle: a tiny write that cannot block. */
    if (!c->lost && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl)
            (void)SSL_write(ssl, quit, sizeof(quit));
        else
            (void)!send(bufferevent_getfd(c->bev), quit, sizeof(quit), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    sock_reader_detach(c->rd);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_free(c->bev);
    c->bev = NULL;
    if (c->timer)
        event_del(c->timer);
    c->mode = CONN_CLOSED;
    c->handler = NULL;
    give_slot(p);
    worker_defer_free(p->worker, &c->reap, conn_free);
}

static void internal_read(struct pool_conn *c);
static void internal_lost(struct pool_conn *c);

/* The stream's only callbacks: each event goes to whoever drives the connection now. */
static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct pool_conn *c = arg;
    switch (c->mode) {
    case CONN_LENT:
        if (c->handler && c->handler->read)
            c->handler->read(c->handler_arg);
        break;
    case CONN_INTERNAL:
        internal_read(c);
        break;
    case CONN_IDLE: {
        /* An idle connection has nothing to say; whatever it is (a kill notice), drop it. */
        struct pool *p = c->pool;
        log_debug("route %s: idle upstream connection (thread %u) spoke unasked; closed",
                  p->route->cfg->name, c->info.thread_id);
        conn_close(c);
        serve_waiters(p);
        break;
    }
    case CONN_CLOSED:
        break;
    }
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct pool_conn *c = arg;
    if (c->mode == CONN_LENT && c->handler && c->handler->write)
        c->handler->write(c->handler_arg);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct pool_conn *c = arg;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    switch (c->mode) {
    case CONN_LENT:
        if (c->handler && c->handler->event)
            c->handler->event(c->handler_arg, what);
        break;
    case CONN_INTERNAL:
        internal_lost(c);
        break;
    case CONN_IDLE: {
        struct pool *p = c->pool;
        log_debug("route %s: idle upstream connection (thread %u) closed by the server",
                  p->route->cfg->name, c->info.thread_id);
        c->lost = true;
        conn_close(c);
        serve_waiters(p);
        break;
    }
    case CONN_CLOSED:
        break;
    }
}

void pool_conn_attach(struct pool_conn *c, const struct pool_conn_handler *h, void *arg)
{
    c->handler = h;
    c->handler_arg = arg;
    if (h)
        conn_read_write(c);
}

/*
 * Sends credproxy's own commands (already framed) and swallows their n
 * replies, keeping the first error and the first row of a result set; then
 * calls done from the read callback. A connection lost meanwhile, or one
 * whose replies cannot be followed, calls done with c->lost set.
 */
static void conn_run(struct pool_conn *c, const uint8_t *pkts, size_t len, unsigned n,
                     void (*done)(struct pool_conn *, void *), void *arg)
{
    c->mode = CONN_INTERNAL;
    c->handler = NULL;
    c->replies_left = n;
    c->replies_total = n;
    c->internal_done = done;
    c->internal_arg = arg;
    c->lost = false;
    free(c->error);
    c->error = NULL;
    for (int i = 0; i < POOL_ROWS; i++) {
        free(c->rows[i]);
        c->rows[i] = NULL;
    }
    response_tracker_init(&c->irt, c->info.caps);
    struct wire_reader rd;
    wire_reader_init(&rd, pkts, len);
    while (wire_remaining(&rd) >= 5) {
        uint32_t plen = wire_get_u24(&rd);
        wire_get_u8(&rd);
        const uint8_t *payload = wire_get_bytes(&rd, plen);
        if (payload && plen)
            (void)response_begin(&c->irt, payload[0]);
    }
    stream_read_high(c->rd, c->bev, 0);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    if (!stream_send_bytes_now(c->bev, pkts, len))
        c->lost = true; /* reported when the write fails for good, through the event */
    conn_read_write(c);
    if (c->timer)
        start_timer(c->timer, c->pool->route->cfg->connect_timeout_ms);
}

static void internal_read(struct pool_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->replies_left) {
        uint8_t hdr[4];
        if (evbuffer_copyout(in, hdr, 4) < 4)
            return;
        uint32_t len = wire_header_len(hdr);
        if (len > (1u << 20)) {
            c->lost = true; /* no reply to credproxy's commands is this large */
            break;
        }
        if (evbuffer_get_length(in) < 4 + (size_t)len)
            return;
        uint8_t *p = malloc(len ? len : 1);
        if (!p) {
            c->lost = true;
            break;
        }
        evbuffer_drain(in, 4);
        evbuffer_remove(in, p, len);
        bool row = response_in_rows(&c->irt);
        enum response_event ev =
            response_feed(&c->irt, p, len < RESPONSE_PREFIX_MAX ? len : RESPONSE_PREFIX_MAX, len);
        if (ev == RESPONSE_UNTRACKABLE) {
            free(p);
            c->lost = true;
            break;
        }
        if (len && p[0] == 0xff && !c->error) {
            c->error = p;
            c->error_len = len;
        } else if (row && ev == RESPONSE_MORE && c->replies_total - c->replies_left < POOL_ROWS &&
                   !c->rows[c->replies_total - c->replies_left]) {
            c->rows[c->replies_total - c->replies_left] = p;
            c->rows_len[c->replies_total - c->replies_left] = len;
        } else {
            free(p);
        }
        if (ev == RESPONSE_DONE) {
            c->last_failed = c->irt.last_was_error;
            if (c->irt.ok_packet || !c->irt.last_was_error)
                c->info.status = c->irt.status; /* for the OK credproxy sends its client */
            c->replies_left--;
        }
    }
    if (!c->lost && evbuffer_get_length(in) > 0)
        c->lost = true; /* more than was asked for: the stream is out of step; never lend it */
    if (c->lost)
        stream_read(c->rd, c->bev, false);
    if (c->timer)
        event_del(c->timer);
    c->internal_done(c, c->internal_arg);
}

static void internal_lost(struct pool_conn *c)
{
    c->lost = true;
    c->replies_left = 0;
    stream_read(c->rd, c->bev, false);
    if (c->timer)
        event_del(c->timer);
    c->internal_done(c, c->internal_arg);
}

/* A server that does not answer credproxy's own commands is as good as gone. */
static void internal_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pool_conn *c = arg;
    if (c->mode != CONN_INTERNAL)
        return;
    log_info("route %s: upstream connection (thread %u) did not answer credproxy's own commands "
             "within connect_timeout; closing it",
             c->pool->route->cfg->name, c->info.thread_id);
    internal_lost(c);
}

/* What the server tracks for a client by default (credproxy shows clients only that). */
static const char TRACK_VIEW_SQL[] =
    "SELECT @@session.session_track_schema, @@session.session_track_state_change, "
    "@@session.session_track_system_variables, @@session.session_track_transaction_info";

/*
 * Turns on the session-state tracking that lets sessions move to a new
 * connection: schema, every system variable, and "something else changed".
 */
static const char TRACKING_SQL[] = "SET SESSION session_track_schema=ON, "
                                   "session_track_state_change=ON, "
                                   "session_track_system_variables='*'";

/*
 * upstream_role=writer: is this server writable? Aurora replicas report
 * innodb_read_only, MySQL and MariaDB replicas (and an RDS instance after a
 * failover) read_only; both exist on MySQL and MariaDB, so one query serves all.
 */
static const char READ_ONLY_SQL[] = "SELECT @@global.read_only, @@global.innodb_read_only";

/*
 * The row READ_ONLY_SQL returned: 1 read-only, 0 writable, -1 unknown (no
 * row: the query failed). Values are 0/1, or OFF/ON and NO_LOCK... where
 * read_only is an enum.
 */
static int read_only_verdict(const uint8_t *row, size_t len)
{
    if (!row)
        return -1;
    struct wire_reader r;
    wire_reader_init(&r, row, len);
    for (int i = 0; i < 2; i++) {
        bool is_null = false;
        uint64_t n = wire_get_lenenc(&r, &is_null);
        if (r.failed)
            return -1;
        if (is_null)
            continue;
        const uint8_t *v = wire_get_bytes(&r, (size_t)n);
        if (!v)
            return -1;
        bool off =
            (n == 1 && v[0] == '0') || (n == 3 && strncasecmp((const char *)v, "OFF", 3) == 0);
        if (!off)
            return 1;
    }
    return 0;
}

static bool conn_wants_writer(const struct pool_conn *c)
{
    struct route *r = c->pool->route;
    return route_wants_writer(r, route_upstream_host(r, c->creds));
}

/* Logs a read-only server found by a check and makes every connection checked before suspect. */
static void saw_read_only(struct pool_conn *c, const char *when, bool again)
{
    struct route *r = c->pool->route;
    route_saw_read_only(r);
    LOG_AT(again ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,
           "route %s: upstream %s:%d (thread %u) is read-only %s; closing that connection "
           "(upstream_role=writer)",
           r->cfg->name, route_upstream_host(r, c->creds), route_upstream_port(r, c->creds),
           c->info.thread_id, when);
}

/* What a client gets when no writable server answered within connect_timeout. */
static void deliver_read_only_error(struct pool_request *req);

static void put_query(struct wire_writer *w, const char *sql)
{
    wire_begin_packet(w, 0);
    wire_put_u8(w, PROTO_COM_QUERY);
    wire_put_bytes(w, sql, strlen(sql));
    wire_end_packet(w);
}

/* Appends COM_INIT_DB for db to w. */
static void put_init_db(struct wire_writer *w, const char *db, size_t len)
{
    wire_begin_packet(w, 0);
    wire_put_u8(w, PROTO_COM_INIT_DB);
    wire_put_bytes(w, db, len);
    wire_end_packet(w);
}

static bool conn_reusable(const struct pool_conn *c)
{
    const struct route_config *cfg = c->pool->route->cfg;
    if (now_ms() - c->created_ms >= (uint64_t)cfg->pool_max_lifetime_ms)
        return false;
    if (c->upstream_gen != route_upstream_gen(c->pool->route))
        return false; /* a reload sent new logins elsewhere, or as someone else */
    /* Recycle connections of a superseded secret version as their clients leave. */
    struct creds *cur = login_policy_current(c->pool->route);
    bool same = cur && creds_same_login(cur, c->creds);
    creds_unref(cur);
    return same;
}

/* Puts c in the idle list (or closes it for a starved worker), then serves waiters. */
static void add_idle(struct pool *p, struct pool_conn *c)
{
    c->handler = NULL;
    if (!p->wait_head && __atomic_load_n(&p->route->starved, __ATOMIC_ACQUIRE) &&
        __atomic_exchange_n(&p->route->starved, 0, __ATOMIC_ACQ_REL)) {
        conn_close(c); /* another worker waits for a slot at pool_size: give it this one */
        return;
    }
    if (!p->wait_head &&
        __atomic_load_n(&p->route->upstream_open, __ATOMIC_ACQUIRE) > p->route->cfg->pool_size) {
        conn_close(c); /* a reload lowered pool_size: the route is over it */
        return;
    }
    c->mode = CONN_IDLE;
    c->idle_since_ms = now_ms();
    c->prev = NULL;
    c->next = p->idle;
    if (p->idle)
        p->idle->prev = c;
    p->idle = c;
    p->n_idle++;
    stream_read_high(c->rd, c->bev, 0);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    stream_read(c->rd, c->bev, true);
    serve_waiters(p);
}

/* --- requests -------------------------------------------------------------------------------- */

static void request_free(struct deferred_free *d)
{
    struct pool_request *req = (struct pool_request *)d;
    if (req->timer)
        event_free(req->timer);
    login_attempt_clear(&req->attempt);
    free(req->database);
    if (req->attrs)
        OPENSSL_cleanse(req->attrs, req->attrs_len);
    free(req->attrs);
    free(req);
}

static void unqueue(struct pool_request *req)
{
    struct pool *p = req->pool;
    struct pool_request **pp = &p->wait_head;
    struct pool_request *prev = NULL;
    while (*pp && *pp != req) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = req->next;
    if (p->wait_tail == req)
        p->wait_tail = prev;
    req->next = NULL;
    uint64_t now = now_us();
    stats_wait(p->stats, now > req->queued_us ? now - req->queued_us : 0);
}

/* Ends a request: gives back what it holds and queues it for the safe point. */
static void request_finish(struct pool_request *req)
{
    struct pool *p = req->pool;
    if (req->state == REQ_DONE)
        return;
    if (req->state == REQ_WAITING)
        unqueue(req);
    if (req->login) {
        upstream_login_cancel(req->login);
        req->login = NULL;
    }
    if (req->holds_slot) {
        req->holds_slot = false;
        give_slot(p);
    }
    if (req->warming)
        p->warming = false;
    event_del(req->timer);
    req->state = REQ_DONE;
    if (req->all_prev)
        req->all_prev->all_next = req->all_next;
    else
        p->requests = req->all_next;
    if (req->all_next)
        req->all_next->all_prev = req->all_prev;
    req->all_prev = req->all_next = NULL;
    worker_defer_free(p->worker, &req->reap, request_free);
}

static void request_event_cb(evutil_socket_t fd, short what, void *arg);

/* Hands the result (c, or the error) to the loop, which calls ready. */
static void deliver(struct pool_request *req, struct pool_conn *c, const struct upstream_error *err)
{
    req->state = REQ_DELIVERING;
    req->conn = c;
    req->failed = err != NULL;
    if (err)
        req->result = *err;
    if (c)
        c->mode = CONN_LENT; /* lent to the request until its session attaches */
    event_del(req->timer);
    event_active(req->timer, EV_TIMEOUT, 0);
}

static void deliver_error(struct pool_request *req, uint16_t code, const char *sqlstate,
                          const char *msg)
{
    struct upstream_error err = {.code = code};
    snprintf(err.sqlstate, sizeof(err.sqlstate), "%s", sqlstate);
    snprintf(err.message, sizeof(err.message), "%s", msg);
    deliver(req, NULL, &err);
}

static void start_login(struct pool_request *req);
static void dispatch(struct pool_request *req);

/* The request's one event: queue timeout, login retry, or delivery. */
static void request_event_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pool_request *req = arg;
    struct pool *p = req->pool;
    switch (req->state) {
    case REQ_WAITING: {
        unqueue(req);
        stats_inc(p->stats, ST_WAIT_TIMEOUTS);
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "credproxy: all %d upstream connections of route %s are in use; waited %d ms",
                 p->route->cfg->pool_size, p->route->cfg->name,
                 p->route->cfg->pool_wait_timeout_ms);
        deliver_error(req, 1040, "08004", msg);
        break;
    }
    case REQ_RETRY:
        if (req->holds_slot)
            start_login(req);
        else if (now_ms() >= req->deadline_ms)
            deliver_read_only_error(req);
        else
            dispatch(req); /* after a read-only server: an idle connection, or a new login */
        break;
    case REQ_DELIVERING: {
        pool_ready_fn ready = req->ready;
        void *rarg = req->arg;
        struct pool_conn *c = req->conn;
        struct upstream_error err = req->result;
        bool failed = req->failed;
        req->conn = NULL;
        request_finish(req);
        if (ready)
            ready(rarg, c, failed ? &err : NULL);
        else if (c)
            add_idle(p, c); /* a warm-up, or nobody wants it any more */
        break;
    }
    case REQ_LOGIN:
    case REQ_PREPARING:
    case REQ_DONE:
        break;
    }
}

static bool same_db(const char *a, const char *b)
{
    return (!a || !*a) ? (!b || !*b) : (b && strcmp(a, b) == 0);
}

/*
 * A read-only server where a writer is wanted: close c and try again after
 * RETRY_DELAY_MS (DNS is resolved again by the next login), until
 * connect_timeout; the client waits meanwhile.
 */
static void retry_after_read_only(struct pool_request *req, struct pool_conn *c, const char *when)
{
    struct pool *p = req->pool;
    saw_read_only(c, when, req->read_only); /* once per client at info: the rest at debug */
    conn_close(c);
    req->read_only = true;
    if (!req->ready) {
        request_finish(req);
    } else if (now_ms() + RETRY_DELAY_MS >= req->deadline_ms) {
        deliver_read_only_error(req);
    } else {
        req->state = REQ_RETRY;
        start_timer(req->timer, RETRY_DELAY_MS);
    }
    serve_waiters(p);
}

static void deliver_read_only_error(struct pool_request *req)
{
    const struct route_config *cfg = req->pool->route->cfg;
    char msg[300];
    snprintf(msg, sizeof(msg),
             "credproxy: route %s: the server is read-only and no writable server answered "
             "within connect_timeout (%d ms; upstream_role=writer)",
             cfg->name, cfg->connect_timeout_ms);
    deliver_error(req, PROTO_ER_OPTION_PREVENTS_STATEMENT, "HY000", msg);
}

static void prepared_cb(struct pool_conn *c, void *arg)
{
    struct pool_request *req = arg;
    struct pool *p = req->pool;
    req->conn = NULL;
    bool sent_db = c->replies_total > (req->checking ? 1u : 0u);
    if (!c->lost && req->checking) {
        req->checking = false;
        if (read_only_verdict(c->rows[0], c->rows_len[0]) == 1) {
            retry_after_read_only(req, c, "(checked before reuse)");
            return;
        }
        c->suspect = false;
    }
    if (c->lost) {
        conn_close(c);
        if (req->ready)
            dispatch(req); /* try another connection */
        else
            request_finish(req);
        serve_waiters(p);
        return;
    }
    if (c->error && sent_db && c->last_failed) {
        /* Unknown schema or no access: the client's error, and the connection stays good. */
        struct upstream_error err = {.code = 1049};
        struct server_reply rep;
        if (server_reply_parse(c->error, c->error_len, &rep) && rep.kind == REPLY_ERR) {
            err.code = rep.error_code;
            snprintf(err.sqlstate, sizeof(err.sqlstate), "%s", rep.sqlstate);
            snprintf(err.message, sizeof(err.message), "%.*s", (int)rep.message_len, rep.message);
        } else {
            strcpy(err.sqlstate, "HY000");
            strcpy(err.message, "credproxy: the server refused the schema");
        }
        free(c->database);
        c->database = NULL;
        deliver(req, NULL, &err);
        add_idle(p, c);
        return;
    }
    free(c->error);
    c->error = NULL;
    if (req->database && *req->database) {
        free(c->database);
        c->database = strdup(req->database);
    }
    deliver(req, c, NULL);
}

/* Hands c to req, first selecting the schema the client wants when c is elsewhere. */
static void lend(struct pool_request *req, struct pool_conn *c)
{
    const char *db = req->database;
    bool need_db = db && *db && !same_db(db, c->database);
    /* upstream_role=writer: checked again when a read-only server was seen since its last check. */
    uint64_t epoch = route_read_only_epoch(req->pool->route);
    bool check = c->ro_epoch != epoch && conn_wants_writer(c);
    if (!need_db && !check) {
        deliver(req, c, NULL);
        return;
    }
    struct wire_writer w;
    wire_writer_init(&w);
    unsigned n = 0;
    req->checking = check;
    if (check) {
        c->ro_epoch = epoch;
        put_query(&w, READ_ONLY_SQL);
        n++;
    }
    if (need_db) {
        put_init_db(&w, db, strlen(db));
        n++;
    }
    if (w.failed) {
        wire_writer_free(&w);
        conn_close(c);
        deliver_error(req, 2008, "HY000", "credproxy: out of memory");
        return;
    }
    req->state = REQ_PREPARING;
    req->conn = c;
    conn_run(c, w.buf, w.len, n, prepared_cb, req);
    wire_writer_free(&w);
}

static bool conn_matches(const struct pool_conn *c, uint64_t client_caps, uint8_t charset)
{
    uint64_t want = upstream_caps_for(client_caps, c->info.server_caps);
    return c->info.charset == charset && ((want ^ c->info.caps) & ~(uint64_t)LOGIN_ONLY_CAPS) == 0;
}

static struct pool_conn *find_idle(struct pool *p, uint64_t caps, uint8_t charset)
{
    uint64_t gen = secret_store_generation(p->route->store);
    struct pool_conn *fallback = NULL;
    uint64_t upstream_gen = route_upstream_gen(p->route);
    for (struct pool_conn *c = p->idle; c; c = c->next) {
        if (!conn_matches(c, caps, charset) || c->upstream_gen != upstream_gen)
            continue;
        if (c->creds->generation == gen)
            return c;
        if (!fallback)
            fallback = c; /* an older version still logged in works as well */
    }
    return fallback;
}

static void take_idle(struct pool_conn *c)
{
    unlink_idle(c);
    c->mode = CONN_LENT;
    c->handler = NULL;
}

/*
 * Gets req a connection: an idle one that fits, a new login when the route
 * has a free slot (closing an idle misfit to make one), or a place in the
 * queue.
 */
static void dispatch(struct pool_request *req)
{
    struct pool *p = req->pool;
    struct pool_conn *c = find_idle(p, req->client_caps, req->charset);
    if (c) {
        take_idle(c);
        lend(req, c);
        return;
    }
    bool slot = take_slot(p);
    if (!slot && p->idle) {
        conn_close(p->idle); /* an idle mismatch makes room for a connection that fits */
        slot = take_slot(p);
    }
    if (slot) {
        req->holds_slot = true;
        start_login(req);
        return;
    }
    req->state = REQ_WAITING;
    req->next = NULL;
    req->queued_us = now_us();
    if (p->wait_tail)
        p->wait_tail->next = req;
    else
        p->wait_head = req;
    p->wait_tail = req;
    event_del(req->timer);
    start_timer(req->timer, p->route->cfg->pool_wait_timeout_ms);
    /* Other workers may hold the route's slots idle: ask them to give one up, and look again. */
    __atomic_store_n(&p->route->starved, 1, __ATOMIC_RELEASE);
    if (!event_pending(p->starved_poll, EV_TIMEOUT, NULL))
        start_timer(p->starved_poll, STARVED_POLL_MS);
}

/* A freed slot or a returned connection: serve the waiters in order while they can be. */
static void serve_waiters(struct pool *p)
{
    while (p->wait_head) {
        struct pool_request *req = p->wait_head;
        struct pool_conn *c = find_idle(p, req->client_caps, req->charset);
        bool slot = !c && take_slot(p);
        if (!c && !slot && p->idle) {
            conn_close(p->idle);
            slot = take_slot(p);
        }
        if (!c && !slot)
            return;
        unqueue(req);
        event_del(req->timer);
        if (c) {
            take_idle(c);
            lend(req, c);
        } else {
            req->holds_slot = true;
            start_login(req);
        }
    }
}

static void starved_poll_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pool *p = arg;
    serve_waiters(p);
    if (p->wait_head) {
        __atomic_store_n(&p->route->starved, 1, __ATOMIC_RELEASE);
        start_timer(p->starved_poll, STARVED_POLL_MS);
    }
}

/* --- logging in ------------------------------------------------------------------------------ */

static void login_done(void *arg, struct bufferevent *bev, const struct upstream_info *info,
                       const struct upstream_error *err);

/* A login that will not succeed: give its slot back and tell the client. */
static void login_give_up(struct pool_request *req, const struct upstream_error *err)
{
    struct pool *p = req->pool;
    req->holds_slot = false;
    give_slot(p);
    deliver(req, NULL, err);
    serve_waiters(p);
}

/* Tries the next version of the secret, within what is left of connect_timeout. */
static void start_login(struct pool_request *req)
{
    struct pool *p = req->pool;
    struct route *r = p->route;
    uint64_t now = now_ms();
    if (!login_policy_next(r, &req->attempt)) {
        if (now >= req->deadline_ms) {
            login_give_up(req, &req->last_error);
            return;
        }
        req->state = REQ_RETRY;
        start_timer(req->timer, RETRY_DELAY_MS);
        return;
    }
    struct upstream_params params;
    /* Read before the settings: a reload in between leaves the connection marked older. */
    req->upstream_gen = route_upstream_gen(r);
    if (!route_login_params(r, req->attempt.creds, req->database, &params)) {
        struct upstream_error err = {.code = 2003, .sqlstate = "HY000"};
        snprintf(err.message, sizeof(err.message),
                 "credproxy: the secret has no host and upstream_host is not set");
        login_give_up(req, &err);
        return;
    }
    params.client_caps = req->client_caps;
    params.charset = req->charset;
    params.attrs = req->attrs;
    params.attrs_len = req->attrs_len;
    /* A retry gets what is left of connect_timeout, not a whole one again. */
    uint64_t left = req->deadline_ms > now ? req->deadline_ms - now : 1;
    if ((uint64_t)params.timeout_ms > left)
        params.timeout_ms = (int)left;
    req->state = REQ_LOGIN;
    req->login = upstream_login_start(p->worker->base, p->worker->dns, &params, login_done, req);
    if (!req->login) {
        struct upstream_error err = {
            .code = 2008, .sqlstate = "HY000", .message = "credproxy: out of memory"};
        login_give_up(req, &err);
    }
}

/* A new connection's set-up is done (tracking on, or not available): lend it or keep it. */
static void tracking_on_cb(struct pool_conn *c, void *arg)
{
    struct pool_request *req = arg;
    struct pool *p = req->pool;
    req->conn = NULL;
    if (c->lost) {
        /* Lost while being set up: not a server's answer about tracking. Try again. */
        conn_close(c);
        if (!req->ready) {
            request_finish(req);
        } else if (now_ms() < req->deadline_ms && take_slot(p)) {
            req->holds_slot = true;
            start_login(req);
        } else {
            struct upstream_error err = {.code = 2013, .sqlstate = "HY000"};
            snprintf(err.message, sizeof(err.message),
                     "credproxy: lost the new connection to route %s's server while setting it up",
                     p->route->cfg->name);
            deliver(req, NULL, &err);
        }
        serve_waiters(p);
        return;
    }
    bool checked = req->checking;
    req->checking = false;
    if (checked) {
        int ro = read_only_verdict(c->rows[0], c->rows_len[0]);
        if (ro == 1) {
            retry_after_read_only(req, c, "(a new connection)");
            return;
        }
        if (ro < 0)
            log_warn("route %s: could not read whether the server is read-only "
                     "(upstream_role=writer); taking it as writable",
                     p->route->cfg->name);
    }
    /* The tracking SET is the last command: the view SELECT before it may fail alone. */
    bool tracking = c->info.caps & PROTO_CAP_SESSION_TRACK;
    c->tracked = tracking && !c->last_failed;
    struct track_view view;
    unsigned vi = checked ? 1 : 0;
    if (c->tracked && c->rows[vi] && track_view_parse(&view, c->rows[vi], c->rows_len[vi]))
        route_set_track_view(p->route, &view);
    if (tracking && c->last_failed)
        log_warn("route %s: session tracking is unavailable on this server; clients cannot be "
                 "moved to a new connection if theirs is lost",
                 p->route->cfg->name);
    free(c->error);
    c->error = NULL;
    deliver(req, c, NULL);
}

static void login_done(void *arg, struct bufferevent *bev, const struct upstream_info *info,
                       const struct upstream_error *err)
{
    struct pool_request *req = arg;
    struct pool *p = req->pool;
    struct route *r = p->route;
    req->login = NULL;
    if (err) {
        req->last_error = *err;
        bool refused = err->code == PROTO_ER_ACCESS_DENIED;
        stats_inc(p->stats, refused ? ST_LOGIN_ACCESS_DENIED : ST_LOGIN_OTHER_ERROR);
        if (refused)
            login_policy_refused(r, &req->attempt);
        /* Refused (rotation) or unreachable (restart, failover): retry until the deadline. */
        if (login_policy_retryable(err->code) && now_ms() < req->deadline_ms &&
            !(refused && login_policy_give_up(r, &req->attempt))) {
            if (refused) {
                start_login(req);
            } else {
                req->state = REQ_RETRY;
                start_timer(req->timer, RETRY_DELAY_MS);
            }
            return;
        }
        struct upstream_error e = *err;
        login_policy_final_error(r, &req->attempt, &e);
        login_give_up(req, &e);
        return;
    }
    route_learn(r, info);
    login_policy_succeeded(r, &req->attempt);
    stats_inc(p->stats, ST_LOGIN_OK);
    /* Published versions have a generation; AWSPENDING (tried during a rotation) has none. */
    stats_inc(p->stats,
              req->attempt.creds->generation ? ST_CANDIDATE_CURRENT : ST_CANDIDATE_PENDING);
    route_login_worked(r);
    struct pool_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        bufferevent_free(bev);
        struct upstream_error e = {
            .code = 2008, .sqlstate = "HY000", .message = "credproxy: out of memory"};
        login_give_up(req, &e);
        return;
    }
    req->holds_slot = false; /* the slot is the connection's now */
    c->pool = p;
    c->bev = bev;
    c->info = *info;
    c->mode = CONN_INTERNAL;
    c->all_next = p->all;
    if (p->all)
        p->all->all_prev = c;
    p->all = c;
    c->creds = creds_ref(req->attempt.creds);
    const char *db = req->database ? req->database : req->attempt.creds->dbname;
    c->database = db ? strdup(db) : NULL;
    c->created_ms = now_ms();
    c->upstream_gen = req->upstream_gen;
    c->timer = evtimer_new(p->worker->base, internal_timeout_cb, c);
    bufferevent_setcb(bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    c->rd = sock_reader_new(p->worker->base, bev);
    req->state = REQ_PREPARING;
    req->conn = c;
    /* upstream_role=writer: whether the server is writable is asked in the same round trip. */
    req->checking = conn_wants_writer(c);
    c->ro_epoch = route_read_only_epoch(r);
    bool tracking = info->caps & PROTO_CAP_SESSION_TRACK;
    if (!tracking && !req->checking) {
        tracking_on_cb(c, req);
        return;
    }
    struct wire_writer w;
    wire_writer_init(&w);
    unsigned n = 0;
    if (req->checking) {
        put_query(&w, READ_ONLY_SQL); /* first: its row is rows[0] */
        n++;
    }
    if (tracking) {
        if (!route_track_view(r)) {
            put_query(&w, TRACK_VIEW_SQL); /* the first connection learns the clients' defaults */
            n++;
        }
        put_query(&w, TRACKING_SQL);
        n++;
    }
    conn_run(c, w.buf, w.len, n, tracking_on_cb, req);
    wire_writer_free(&w);
}

static struct pool_request *request_new(struct pool *p, const struct pool_want *want,
                                        pool_ready_fn ready, void *arg)
{
    struct pool_request *req = calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    req->pool = p;
    req->ready = ready;
    req->arg = arg;
    req->client_caps = want->client_caps;
    req->charset = want->charset;
    req->database = want->database ? strdup(want->database) : NULL;
    if (want->attrs_len && (req->attrs = malloc(want->attrs_len))) {
        memcpy(req->attrs, want->attrs, want->attrs_len);
        req->attrs_len = want->attrs_len;
    }
    req->timer = evtimer_new(p->worker->base, request_event_cb, req);
    req->deadline_ms = now_ms() + (uint64_t)p->route->cfg->connect_timeout_ms;
    if (!req->timer || (want->database && !req->database)) {
        if (req->timer)
            event_free(req->timer);
        free(req->database);
        free(req->attrs);
        free(req);
        return NULL;
    }
    req->all_next = p->requests;
    if (p->requests)
        p->requests->all_prev = req;
    p->requests = req;
    return req;
}

struct pool_request *pool_acquire(struct pool *p, const struct pool_want *want, pool_ready_fn ready,
                                  void *arg)
{
    p->last_caps = want->client_caps;
    p->last_charset = want->charset;
    p->have_last = true;
    struct pool_request *req = request_new(p, want, ready, arg);
    if (req)
        dispatch(req);
    return req;
}

void pool_cancel(struct pool_request *req)
{
    req->ready = NULL;
    req->arg = NULL;
    switch (req->state) {
    case REQ_PREPARING:
        return; /* its connection's set-up is in flight: the connection goes idle after */
    case REQ_DELIVERING: {
        struct pool_conn *c = req->conn;
        struct pool *p = req->pool;
        req->conn = NULL;
        request_finish(req);
        if (c)
            add_idle(p, c);
        return;
    }
    case REQ_WAITING:
    case REQ_LOGIN:
    case REQ_RETRY:
        request_finish(req);
        return;
    case REQ_DONE:
        return;
    }
}

/* --- taking connections back ----------------------------------------------------------------- */

static void reset_for_pool_cb(struct pool_conn *c, void *arg)
{
    bool checked = arg != NULL;
    struct pool *p = c->pool;
    if (checked && !c->lost && read_only_verdict(c->rows[0], c->rows_len[0]) == 1) {
        saw_read_only(c, "(checked after an error)", false);
        conn_close(c);
        serve_waiters(p);
        return;
    }
    if (checked)
        c->suspect = false;
    if (c->error || c->lost) {
        log_debug("route %s: upstream connection (thread %u) closed: its reset %s",
                  p->route->cfg->name, c->info.thread_id, c->lost ? "lost it" : "failed");
        conn_close(c);
        serve_waiters(p);
        return;
    }
    add_idle(p, c);
}

/*
 * Appends the commands that return c to a fresh session: COM_RESET_CONNECTION,
 * session tracking back on, and db selected when given. Returns how many
 * replies they produce.
 */
static unsigned write_reset(struct pool_conn *c, struct wire_writer *w, const char *db,
                            size_t db_len)
{
    wire_begin_packet(w, 0);
    wire_put_u8(w, PROTO_COM_RESET_CONNECTION);
    wire_end_packet(w);
    unsigned n = 1;
    if (c->tracked) {
        put_query(w, TRACKING_SQL);
        n++;
    }
    /* After a reset MariaDB keeps the current schema; select db or forget what it is. */
    free(c->database);
    c->database = NULL;
    if (db && db_len) {
        put_init_db(w, db, db_len);
        n++;
        c->database = strndup(db, db_len);
    }
    return n;
}

void pool_release(struct pool_conn *c, enum pool_return how)
{
    struct pool *p = c->pool;
    if (c->mode == CONN_CLOSED)
        return;
    if (how == POOL_CLOSE || c->mode != CONN_LENT || !conn_reusable(c)) {
        conn_close(c);
        serve_waiters(p);
        return;
    }
    if (how == POOL_KEEP) {
        add_idle(p, c); /* only plain reads ran: nothing to undo */
        return;
    }
    /* Reset the session, then put back the schema the next client most likely wants. */
    struct wire_writer w;
    wire_writer_init(&w);
    /* A client saw an error on it: is the server still writable? Asked in the same round trip. */
    bool check = c->suspect && conn_wants_writer(c);
    unsigned n = 0;
    if (check) {
        c->ro_epoch = route_read_only_epoch(p->route);
        put_query(&w, READ_ONLY_SQL); /* first: its row is rows[0] */
        n++;
    }
    struct creds *cur = secret_store_get(p->route->store);
    const char *db = cur ? cur->dbname : NULL;
    n += write_reset(c, &w, db, db ? strlen(db) : 0);
    creds_unref(cur);
    if (w.failed) {
        wire_writer_free(&w);
        conn_close(c);
        serve_waiters(p);
        return;
    }
    conn_run(c, w.buf, w.len, n, reset_for_pool_cb, check ? (void *)c : NULL);
    wire_writer_free(&w);
}

bool pool_conn_wants_writer(const struct pool_conn *c)
{
    return conn_wants_writer(c);
}

void pool_conn_suspect(struct pool_conn *c)
{
    c->suspect = true;
}

static void client_reset_cb(struct pool_conn *c, void *arg)
{
    (void)arg;
    pool_reset_fn done = c->reset_done;
    void *darg = c->reset_arg;
    c->reset_done = NULL;
    c->reset_arg = NULL;
    c->mode = CONN_LENT;
    uint8_t *e = c->error;
    size_t elen = c->error_len;
    c->error = NULL;
    if (done)
        done(darg, e, elen, c->lost);
    free(e);
}

void pool_conn_reset(struct pool_conn *c, const char *database, size_t database_len,
                     uint16_t charset, pool_reset_fn done, void *arg)
{
    struct wire_writer w;
    wire_writer_init(&w);
    unsigned n = write_reset(c, &w, database, database_len);
    if (charset && charset != c->info.charset) {
        /*
         * The reset restores the login's character set. A number names a
         * collation to these variables, which is what the handshake and
         * COM_CHANGE_USER carry; the server sets exactly what a login with
         * that collation gets.
         */
        char sql[200];
        snprintf(sql, sizeof(sql),
                 "SET character_set_client=%u, character_set_connection=%u, "
                 "character_set_results=%u, collation_connection=%u",
                 charset, charset, charset, charset);
        put_query(&w, sql);
        n++;
    }
    c->reset_done = done;
    c->reset_arg = arg;
    if (w.failed)
        c->lost = true; /* cannot happen short of memory; the connection is given up */
    conn_run(c, w.buf, w.failed ? 0 : w.len, w.failed ? 0 : n, client_reset_cb, NULL);
    wire_writer_free(&w);
}

struct bufferevent *pool_conn_bev(struct pool_conn *c)
{
    return c->bev;
}

void pool_conn_read(struct pool_conn *c, bool on)
{
    stream_read(c->rd, c->bev, on);
}

void pool_conn_read_high(struct pool_conn *c, size_t high)
{
    stream_read_high(c->rd, c->bev, high);
}

void pool_conn_expect(struct pool_conn *c, size_t n)
{
    if (c->rd)
        sock_reader_expect(c->rd, n);
}

const struct upstream_info *pool_conn_info(const struct pool_conn *c)
{
    return &c->info;
}

bool pool_conn_tracked(const struct pool_conn *c)
{
    return c->tracked;
}

const char *pool_conn_user(const struct pool_conn *c)
{
    return c->creds->username;
}

/* --- janitor --------------------------------------------------------------------------------- */

/* Once a second: idle timeouts, lifetimes, and keeping pool_min_idle connections warm. */
static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pool *p = arg;
    const struct route_config *cfg = p->route->cfg;
    uint64_t now = now_ms();
    struct pool_conn *c = p->idle;
    bool closed = false;
    while (c) {
        struct pool_conn *next = c->next;
        bool expired = now - c->created_ms >= (uint64_t)cfg->pool_max_lifetime_ms ||
                       c->upstream_gen != route_upstream_gen(p->route);
        bool idle_too_long = p->n_idle > p->min_idle &&
                             now - c->idle_since_ms >= (uint64_t)cfg->pool_idle_timeout_ms;
        bool wanted_elsewhere = !p->wait_head &&
                                __atomic_load_n(&p->route->starved, __ATOMIC_ACQUIRE) &&
                                __atomic_exchange_n(&p->route->starved, 0, __ATOMIC_ACQ_REL);
        if (expired || idle_too_long || wanted_elsewhere) {
            conn_close(c);
            closed = true;
        }
        c = next;
    }
    if (closed)
        serve_waiters(p);
    if (p->have_last && !p->warming && p->n_idle < p->min_idle && !p->wait_head) {
        struct pool_want want = {.client_caps = p->last_caps, .charset = p->last_charset};
        struct pool_request *req = request_new(p, &want, NULL, NULL);
        if (!req)
            return;
        if (!take_slot(p)) {
            request_finish(req);
            return;
        }
        req->warming = true; /* no ready callback: the connection goes to the idle list */
        req->holds_slot = true;
        p->warming = true;
        start_login(req);
    }
}

/* This worker's part of a route-wide number: n split as evenly as the workers allow. */
static size_t share_of(int total, int n_workers, int index)
{
    return (size_t)(total / n_workers + (index < total % n_workers ? 1 : 0));
}

static size_t min_idle_share(const struct pool *p)
{
    const struct worker *w = p->worker;
    const struct route_config *cfg = p->route->cfg;
    if (__atomic_load_n(&p->route->removed, __ATOMIC_ACQUIRE))
        return 0; /* a removed route keeps nothing warm: its pool empties as clients leave */
    /* Unix-socket-only routes are served by one worker, which then keeps them all warm. */
    int n = w->n_workers > 0 && cfg->n_listen ? w->n_workers : 1;
    return share_of(cfg->pool_min_idle, n, n > 1 ? w->index : 0);
}

void pool_settings_changed(struct pool *p)
{
    p->min_idle = min_idle_share(p);
    uint64_t gen = route_upstream_gen(p->route);
    bool closed = false;
    for (struct pool_conn *c = p->idle, *next; c; c = next) {
        next = c->next;
        /* Idle ones to the old server go now; over a lowered pool_size, idle ones give way. */
        bool over =
            __atomic_load_n(&p->route->upstream_open, __ATOMIC_ACQUIRE) > p->route->cfg->pool_size;
        if (c->upstream_gen != gen || over) {
            conn_close(c);
            closed = true;
        }
    }
    if (closed)
        serve_waiters(p);
}

struct pool *pool_new(struct worker *w, struct route *r)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->worker = w;
    p->route = r;
    p->stats = worker_stats(w, r);
    p->min_idle = min_idle_share(p);
    p->janitor = event_new(w->base, -1, EV_PERSIST, janitor_cb, p);
    p->starved_poll = evtimer_new(w->base, starved_poll_cb, p);
    if (!p->janitor || !p->starved_poll) {
        if (p->janitor)
            event_free(p->janitor);
        if (p->starved_poll)
            event_free(p->starved_poll);
        free(p);
        return NULL;
    }
    start_timer(p->janitor, 1000);
    return p;
}

struct route_stats *pool_stats(struct pool *p)
{
    return p->stats;
}

void pool_publish_stats(struct pool *p)
{
    uint64_t active = 0, idle = 0, used = 0, opening = 0, max_wait = 0;
    for (struct pool_conn *c = p->all; c; c = c->all_next) {
        if (c->mode == CONN_LENT)
            active++;
        else if (c->mode == CONN_IDLE)
            idle++;
        else if (c->mode == CONN_INTERNAL)
            used++;
    }
    for (struct pool_request *q = p->requests; q; q = q->all_next)
        if (q->holds_slot)
            opening++;
    if (p->wait_head) {
        uint64_t now = now_us();
        max_wait = now > p->wait_head->queued_us ? now - p->wait_head->queued_us : 0;
    }
    stats_set(p->stats, ST_G_SV_ACTIVE, active);
    stats_set(p->stats, ST_G_SV_IDLE, idle);
    stats_set(p->stats, ST_G_SV_USED, used);
    stats_set(p->stats, ST_G_SV_OPENING, opening);
    stats_set(p->stats, ST_G_MAX_WAIT_US, max_wait);
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    /* Sessions are closed first, so what is left is idle, being reset or set up, or warming. */
    while (p->requests) {
        struct pool_request *req = p->requests;
        struct pool_conn *c = req->conn;
        req->conn = NULL;
        request_finish(req);
        if (c && c->mode != CONN_CLOSED)
            conn_close(c);
    }
    while (p->all)
        conn_close(p->all);
    event_free(p->janitor);
    event_free(p->starved_poll);
    free(p);
}
