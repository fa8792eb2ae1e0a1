/* Per-worker upstream pools: lend, reset and reuse connections; log in through rotations. */
#include "proxy/pool.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "auth/proto.h"
#include "auth/wire.h"
#include "conf/log.h"
#include "proxy/route.h"
#include "proxy/worker.h"
#include "secrets/secret_source.h"

/* How often a login refused during a rotation, or a down server, is tried again. */
#define RETRY_DELAY_MS 200

/* Capability bits that do not change what goes over the wire after login. */
#define LOGIN_ONLY_CAPS                                                                            \
    (PROTO_CAP_LONG_PASSWORD | PROTO_CAP_CONNECT_WITH_DB | PROTO_CAP_SSL |                         \
     PROTO_CAP_SECURE_CONNECTION | PROTO_CAP_PLUGIN_AUTH | PROTO_CAP_PLUGIN_AUTH_LENENC |          \
     PROTO_CAP_CONNECT_ATTRS | PROTO_CAP_EXPIRED_PASSWORDS)

struct pool_conn {
    struct pool_conn *prev, *next;         /* the pool's idle list */
    struct pool_conn *all_prev, *all_next; /* every connection of the pool, for shutdown */
    struct pool *pool;
    struct bufferevent *bev;
    struct upstream_info info;
    struct creds *creds; /* the version it logged in with */
    char *database;      /* its schema as credproxy last set it; NULL if unknown */
    time_t created;
    time_t idle_since;
    bool idle;
    bool tracked; /* session-state tracking is on */
    /* credproxy's own commands in flight (reset, schema) */
    unsigned replies_left;
    uint8_t *error; /* first ERR payload among their replies */
    size_t error_len;
    void (*internal_done)(struct pool_conn *c, void *arg);
    void *internal_arg;
    pool_reset_fn reset_done; /* pool_conn_reset's caller */
    void *reset_arg;
};

enum request_state { REQ_WAITING, REQ_LOGIN, REQ_RETRY, REQ_PREPARING };

struct pool_request {
    struct pool_request *next; /* wait queue */
    struct pool *pool;
    enum request_state state;
    pool_ready_fn ready;
    void *arg;
    uint64_t client_caps;
    uint8_t charset;
    char *database;
    uint8_t *attrs;
    size_t attrs_len;
    struct upstream_login *login;
    struct creds *creds;           /* the version being tried */
    struct event *timer;           /* queue timeout, or the next retry */
    struct timespec deadline;      /* connect_timeout from the first attempt */
    uint64_t refused_current;      /* generation of AWSCURRENT the server refused (0: none) */
    struct creds *refused_pending; /* pending version the server refused */
    struct upstream_error last_error;
    struct pool_conn *conn; /* while its schema is being selected */
    bool warming;           /* opened by the janitor for pool_min_idle */
};

struct pool {
    struct worker *worker;
    struct route *route;
    struct pool_conn *idle; /* most recently returned first */
    size_t n_idle;
    size_t n_open; /* idle + lent + logging in + resetting */
    size_t max;    /* this worker's share of pool_size */
    size_t min_idle;
    struct pool_request *wait_head, *wait_tail;
    struct event *janitor;
    uint64_t last_caps; /* the last client's wants, for warming */
    uint8_t last_charset;
    bool have_last;
    bool warming;
    struct pool_request *warm_req; /* the janitor's login in flight, if any */
    struct pool_conn *all;         /* every open connection */
};

static time_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static bool past(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

static void start_timer(struct event *ev, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

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
    c->idle = false;
    p->n_idle--;
}

static void conn_close(struct pool_conn *c)
{
    static const uint8_t quit[5] = {1, 0, 0, 0, PROTO_COM_QUIT};
    struct pool *p = c->pool;
    if (c->idle)
        unlink_idle(c);
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        p->all = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    /* A polite COM_QUIT when the socket is idle: a tiny write that cannot block. */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl)
            (void)SSL_write(ssl, quit, sizeof(quit));
        else
            (void)!send(bufferevent_getfd(c->bev), quit, sizeof(quit), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    bufferevent_free(c->bev);
    creds_unref(c->creds);
    free(c->database);
    free(c->error);
    free(c);
    p->n_open--;
}

static void idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    struct pool_conn *c = arg;
    log_debug("route %s: idle upstream connection (thread %u) closed by the server",
              c->pool->route->cfg->name, c->info.thread_id);
    conn_close(c);
}

static void idle_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    /* An idle connection has nothing to say; whatever it is (a kill notice), drop it. */
    idle_event_cb(bev, BEV_EVENT_EOF, arg);
}

static void internal_read_cb(struct bufferevent *bev, void *arg);
static void internal_event_cb(struct bufferevent *bev, short what, void *arg);

/*
 * Sends credproxy's own commands (already framed) and swallows their n
 * replies, keeping the first error; then calls done. Each reply to these
 * commands is a single OK or ERR packet.
 */
static void conn_run(struct pool_conn *c, const uint8_t *pkts, size_t len, unsigned n,
                     void (*done)(struct pool_conn *, void *), void *arg)
{
    c->replies_left = n;
    c->internal_done = done;
    c->internal_arg = arg;
    free(c->error);
    c->error = NULL;
    bufferevent_setcb(c->bev, internal_read_cb, NULL, internal_event_cb, c);
    bufferevent_write(c->bev, pkts, len);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void internal_read_cb(struct bufferevent *bev, void *arg)
{
    struct pool_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (c->replies_left) {
        uint8_t hdr[5];
        if (evbuffer_copyout(in, hdr, 4) < 4)
            return;
        uint32_t len = wire_header_len(hdr);
        if (evbuffer_get_length(in) < 4 + (size_t)len)
            return;
        evbuffer_drain(in, 4);
        uint8_t first = 0;
        if (len)
            evbuffer_copyout(in, &first, 1);
        if (first == 0xff && !c->error && (c->error = malloc(len))) {
            evbuffer_remove(in, c->error, len);
            c->error_len = len;
        } else {
            evbuffer_drain(in, len);
        }
        c->replies_left--;
    }
    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    c->internal_done(c, c->internal_arg);
}

static void internal_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    struct pool_conn *c = arg;
    static const uint8_t lost[] = {0xff, 0xdd, 0x07, '#', 'H', 'Y', '0', '0', '0', 'c', 'o', 'n',
                                   'n',  'e',  'c',  't', 'i', 'o', 'n', ' ', 'l', 'o', 's', 't'};
    /* Report the loss as an error reply (2013); done decides what happens to c. */
    if (!c->error && (c->error = malloc(sizeof(lost)))) {
        memcpy(c->error, lost, sizeof(lost));
        c->error_len = sizeof(lost);
    }
    c->replies_left = 0;
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(c->bev, EV_READ);
    c->internal_done(c, c->internal_arg);
}

/*
 * Turns on the session-state tracking that lets sessions move to a new
 * connection: schema, every system variable, and "something else changed".
 */
static const char TRACKING_SQL[] = "SET SESSION session_track_schema=ON, "
                                   "session_track_state_change=ON, "
                                   "session_track_system_variables='*'";

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

/* --- lending --------------------------------------------------------------------------------- */

static void request_free(struct pool_request *req)
{
    if (req->pool->warm_req == req)
        req->pool->warm_req = NULL;
    if (req->login)
        upstream_login_cancel(req->login);
    if (req->timer)
        event_free(req->timer);
    creds_unref(req->creds);
    creds_unref(req->refused_pending);
    free(req->database);
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
}

static void deliver(struct pool_request *req, struct pool_conn *c, const struct upstream_error *err)
{
    pool_ready_fn ready = req->ready;
    void *arg = req->arg;
    struct pool *p = req->pool;
    bool warming = req->warming;
    request_free(req);
    if (warming)
        p->warming = false;
    if (ready)
        ready(arg, c, err);
    else if (c)
        pool_release(c, true, false); /* nobody wants it any more (cancelled, or warming) */
}

static const char *wanted_db(const struct pool_request *req)
{
    return req->database;
}

static bool same_db(const char *a, const char *b)
{
    return (!a || !*a) ? (!b || !*b) : (b && strcmp(a, b) == 0);
}

static void prepared_cb(struct pool_conn *c, void *arg)
{
    struct pool_request *req = arg;
    req->conn = NULL;
    if (c->error) {
        /* Unknown schema or no access: the client's error, and the connection stays good. */
        struct upstream_error err = {.code = 1049};
        struct wire_reader r;
        wire_reader_init(&r, c->error, c->error_len);
        wire_get_u8(&r);
        err.code = wire_get_u16(&r);
        size_t mlen;
        const uint8_t *m = wire_get_rest(&r, &mlen);
        if (mlen > 6 && m[0] == '#') {
            memcpy(err.sqlstate, m + 1, 5);
            m += 6;
            mlen -= 6;
        } else {
            strcpy(err.sqlstate, "HY000");
        }
        snprintf(err.message, sizeof(err.message), "%.*s", (int)mlen, (const char *)m);
        pool_release(c, true, false);
        deliver(req, NULL, &err);
        return;
    }
    free(c->database);
    c->database = wanted_db(req) ? strdup(wanted_db(req)) : NULL;
    deliver(req, c, NULL);
}

/*
 * Hands c to req, first selecting the schema the client wants when c is
 * elsewhere. Returns true while that is in flight, false once req is done.
 */
static bool lend(struct pool_request *req, struct pool_conn *c)
{
    const char *db = wanted_db(req);
    if (same_db(db, c->database) || !db || !*db) {
        deliver(req, c, NULL);
        return false;
    }
    struct wire_writer w;
    wire_writer_init(&w);
    put_init_db(&w, db, strlen(db));
    req->state = REQ_PREPARING;
    req->conn = c;
    if (w.failed) {
        wire_writer_free(&w);
        conn_close(c);
        struct upstream_error err = {.code = 2008, .sqlstate = "HY000", .message = "out of memory"};
        deliver(req, NULL, &err);
        return false;
    }
    conn_run(c, w.buf, w.len, 1, prepared_cb, req);
    wire_writer_free(&w);
    return true;
}

static bool conn_matches(const struct pool_conn *c, uint64_t client_caps, uint8_t charset)
{
    uint64_t want = upstream_caps_for(client_caps, c->info.server_caps);
    return c->info.charset == charset && ((want ^ c->info.caps) & ~(uint64_t)LOGIN_ONLY_CAPS) == 0;
}

static void take_idle(struct pool_conn *c)
{
    unlink_idle(c);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
}

static struct pool_conn *find_idle(struct pool *p, uint64_t caps, uint8_t charset)
{
    uint64_t gen = secret_store_generation(p->route->store);
    struct pool_conn *fallback = NULL;
    for (struct pool_conn *c = p->idle; c; c = c->next) {
        if (!conn_matches(c, caps, charset))
            continue;
        if (c->creds->generation == gen)
            return c;
        if (!fallback)
            fallback = c; /* an older version still logged in works as well */
    }
    return fallback;
}

static bool start_login(struct pool_request *req);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pool_request *req = arg;
    if (req->state == REQ_WAITING) {
        unqueue(req);
        struct upstream_error err = {.code = 1040, .sqlstate = "08004"};
        snprintf(err.message, sizeof(err.message),
                 "credproxy: all %d upstream connections of route %s are in use; waited %d ms",
                 req->pool->route->cfg->pool_size, req->pool->route->cfg->name,
                 req->pool->route->cfg->pool_wait_timeout_ms);
        deliver(req, NULL, &err);
        return;
    }
    (void)start_login(req);
}

/* True when the server already refused c during this request. */
static bool was_refused(const struct pool_request *req, const struct creds *c)
{
    if (c->generation != 0 && c->generation == req->refused_current)
        return true;
    return req->refused_pending && creds_same_login(c, req->refused_pending);
}

/*
 * The next version to try: AWSCURRENT (or the version standing in for it),
 * then AWSPENDING, skipping what the server refused. NULL when every
 * candidate has failed for now.
 */
static struct creds *next_candidate(struct pool_request *req)
{
    struct route *r = req->pool->route;
    struct creds *cur = route_login_creds(r);
    if (cur && !was_refused(req, cur))
        return cur;
    creds_unref(cur);
    struct creds *pend = secret_store_get_pending(r->store);
    if (pend && !was_refused(req, pend))
        return pend;
    creds_unref(pend);
    return NULL;
}

static void login_done(void *arg, struct bufferevent *bev, const struct upstream_info *info,
                       const struct upstream_error *err);

/* Tries the next version of the secret. Returns true while req is pending, false once done. */
static bool start_login(struct pool_request *req)
{
    struct pool *p = req->pool;
    struct route *r = p->route;
    struct creds *c = next_candidate(req);
    if (!c) {
        /* Nothing new to try yet: ask the source again and look back shortly. */
        if (past(&req->deadline)) {
            struct upstream_error err = req->last_error;
            p->n_open--;
            deliver(req, NULL, &err);
            return false;
        }
        secret_source_refresh_now(r->source);
        req->state = REQ_RETRY;
        start_timer(req->timer, RETRY_DELAY_MS);
        return true;
    }
    creds_unref(req->creds);
    req->creds = c;
    struct upstream_params params;
    if (!route_login_params(r, c, req->database, &params)) {
        struct upstream_error err = {.code = 2003, .sqlstate = "HY000"};
        snprintf(err.message, sizeof(err.message),
                 "credproxy: the secret has no host and upstream_host is not set");
        p->n_open--;
        deliver(req, NULL, &err);
        return false;
    }
    params.client_caps = req->client_caps;
    params.charset = req->charset;
    params.attrs = req->attrs;
    params.attrs_len = req->attrs_len;
    req->state = REQ_LOGIN;
    req->login = upstream_login_start(p->worker->base, p->worker->dns, &params, login_done, req);
    if (!req->login) {
        struct upstream_error err = {.code = 2008, .sqlstate = "HY000", .message = "out of memory"};
        p->n_open--;
        deliver(req, NULL, &err);
        return false;
    }
    return true;
}

static void add_idle(struct pool *p, struct pool_conn *c);

/* A new connection is ready (tracking on, or not available): lend it or keep it. */
static void tracking_on_cb(struct pool_conn *c, void *arg)
{
    struct pool_request *req = arg;
    struct pool *p = req->pool;
    req->conn = NULL;
    c->tracked = (c->info.caps & PROTO_CAP_SESSION_TRACK) && !c->error;
    if (c->error)
        log_warn("route %s: session tracking is unavailable on this server; clients cannot be "
                 "moved to a new connection if theirs is lost",
                 p->route->cfg->name);
    if (!req->ready) {
        if (req->warming)
            p->warming = false;
        request_free(req);
        add_idle(p, c);
        return;
    }
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
        if (refused) {
            /* Published versions have a generation; AWSPENDING and its stand-in do not. */
            if (req->creds->generation != 0) {
                req->refused_current = req->creds->generation;
            } else {
                creds_unref(req->refused_pending);
                req->refused_pending = creds_ref(req->creds);
            }
            secret_source_refresh_now(r->source); /* perhaps the secret was rotated */
            log_info("route %s: login as '%s' (version %s) refused; trying the secret's other "
                     "versions",
                     r->cfg->name, req->creds->username,
                     req->creds->version ? req->creds->version : "?");
        }
        /* Refused (rotation) or unreachable (restart, failover): retry until the deadline. */
        bool retryable = refused || err->code == 2003 || err->code == 2013 || err->code == 1040 ||
                         err->code == 1129 || err->code == 2026 || err->code == 1053;
        if (retryable && !past(&req->deadline)) {
            if (!refused) {
                req->state = REQ_RETRY;
                start_timer(req->timer, RETRY_DELAY_MS);
            } else {
                (void)start_login(req);
            }
            return;
        }
        p->n_open--;
        struct upstream_error e = *err;
        if (refused)
            snprintf(e.message, sizeof(e.message),
                     "credproxy: every version of the secret for route %s was refused by the "
                     "server (tried AWSCURRENT%s): %.300s",
                     r->cfg->name, req->refused_pending ? " and AWSPENDING" : "",
                     req->last_error.message);
        deliver(req, NULL, &e);
        return;
    }
    route_learn(r, info);
    uint64_t gen = secret_store_generation(r->store);
    if (req->creds->generation != gen && req->refused_current == gen)
        route_prefer(r, req->creds, gen);
    struct pool_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        bufferevent_free(bev);
        p->n_open--;
        struct upstream_error e = {.code = 2008, .sqlstate = "HY000", .message = "out of memory"};
        deliver(req, NULL, &e);
        return;
    }
    c->pool = p;
    c->bev = bev;
    c->info = *info;
    c->all_next = p->all;
    if (p->all)
        p->all->all_prev = c;
    p->all = c;
    c->creds = creds_ref(req->creds);
    const char *db = req->database ? req->database : req->creds->dbname;
    c->database = db ? strdup(db) : NULL;
    c->created = now_s();
    if (!(info->caps & PROTO_CAP_SESSION_TRACK)) {
        tracking_on_cb(c, req);
        return;
    }
    struct wire_writer w;
    wire_writer_init(&w);
    put_query(&w, TRACKING_SQL);
    req->state = REQ_PREPARING;
    req->conn = c;
    conn_run(c, w.buf, w.len, 1, tracking_on_cb, req);
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
    req->timer = evtimer_new(p->worker->base, retry_cb, req);
    clock_gettime(CLOCK_MONOTONIC, &req->deadline);
    int ms = p->route->cfg->connect_timeout_ms;
    req->deadline.tv_sec += ms / 1000;
    req->deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (req->deadline.tv_nsec >= 1000000000L) {
        req->deadline.tv_sec++;
        req->deadline.tv_nsec -= 1000000000L;
    }
    if (!req->timer) {
        request_free(req);
        return NULL;
    }
    return req;
}

struct pool_request *pool_acquire(struct pool *p, const struct pool_want *want, pool_ready_fn ready,
                                  void *arg)
{
    p->last_caps = want->client_caps;
    p->last_charset = want->charset;
    p->have_last = true;
    struct pool_request *req = request_new(p, want, ready, arg);
    if (!req) {
        struct upstream_error err = {.code = 2008, .sqlstate = "HY000", .message = "out of memory"};
        ready(arg, NULL, &err);
        return NULL;
    }
    struct pool_conn *c = find_idle(p, want->client_caps, want->charset);
    if (c) {
        take_idle(c);
        return lend(req, c) ? req : NULL;
    }
    if (p->n_open >= p->max && p->idle) {
        conn_close(p->idle); /* an idle mismatch makes room for a connection that fits */
    }
    if (p->n_open < p->max) {
        p->n_open++;
        return start_login(req) ? req : NULL;
    }
    req->state = REQ_WAITING;
    if (p->wait_tail)
        p->wait_tail->next = req;
    else
        p->wait_head = req;
    p->wait_tail = req;
    start_timer(req->timer, p->route->cfg->pool_wait_timeout_ms);
    return req;
}

void pool_cancel(struct pool_request *req)
{
    struct pool *p = req->pool;
    switch (req->state) {
    case REQ_WAITING:
        unqueue(req);
        break;
    case REQ_LOGIN:
    case REQ_RETRY:
        p->n_open--;
        break;
    case REQ_PREPARING:
        /* The schema change is in flight: let it finish, then the connection goes back. */
        req->ready = NULL;
        req->arg = NULL;
        return;
    }
    request_free(req);
}

/* A freed slot or a returned connection: serve the first waiter. */
static void serve_waiter(struct pool *p)
{
    struct pool_request *req = p->wait_head;
    if (!req)
        return;
    struct pool_conn *c = find_idle(p, req->client_caps, req->charset);
    if (!c && p->n_open >= p->max && p->idle)
        conn_close(p->idle);
    if (!c && p->n_open >= p->max)
        return;
    unqueue(req);
    event_del(req->timer);
    if (c) {
        take_idle(c);
        (void)lend(req, c);
    } else {
        p->n_open++;
        (void)start_login(req);
    }
}

static void add_idle(struct pool *p, struct pool_conn *c)
{
    c->idle = true;
    c->idle_since = now_s();
    c->prev = NULL;
    c->next = p->idle;
    if (p->idle)
        p->idle->prev = c;
    p->idle = c;
    p->n_idle++;
    bufferevent_setcb(c->bev, idle_read_cb, NULL, idle_event_cb, c);
    bufferevent_enable(c->bev, EV_READ);
    serve_waiter(p);
}

static bool conn_reusable(const struct pool_conn *c)
{
    const struct route_config *cfg = c->pool->route->cfg;
    if (now_s() - c->created >= cfg->pool_max_lifetime_ms / 1000)
        return false;
    /* Recycle connections of a superseded secret version as their clients leave. */
    struct creds *cur = route_login_creds(c->pool->route);
    bool same = cur && creds_same_login(cur, c->creds);
    creds_unref(cur);
    return same;
}

static void reset_for_pool_cb(struct pool_conn *c, void *arg)
{
    (void)arg;
    if (c->error) {
        conn_close(c);
        serve_waiter(c->pool);
        return;
    }
    add_idle(c->pool, c);
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

void pool_release(struct pool_conn *c, bool clean, bool reset)
{
    struct pool *p = c->pool;
    if (!clean || !conn_reusable(c)) {
        conn_close(c);
        serve_waiter(p);
        return;
    }
    if (!reset) {
        add_idle(p, c); /* only plain reads ran: nothing to undo */
        return;
    }
    /* Reset the session, then put back the schema the next client most likely wants. */
    struct wire_writer w;
    wire_writer_init(&w);
    struct creds *cur = secret_store_get(p->route->store);
    const char *db = cur ? cur->dbname : NULL;
    unsigned n = write_reset(c, &w, db, db ? strlen(db) : 0);
    creds_unref(cur);
    if (w.failed) {
        wire_writer_free(&w);
        conn_close(c);
        serve_waiter(p);
        return;
    }
    conn_run(c, w.buf, w.len, n, reset_for_pool_cb, NULL);
    wire_writer_free(&w);
}

static void client_reset_cb(struct pool_conn *c, void *arg)
{
    (void)arg;
    pool_reset_fn done = c->reset_done;
    void *darg = c->reset_arg;
    c->reset_done = NULL;
    uint8_t *e = c->error;
    size_t elen = c->error_len;
    c->error = NULL;
    done(darg, e, elen);
    free(e);
}

void pool_conn_reset(struct pool_conn *c, const char *database, size_t database_len,
                     pool_reset_fn done, void *arg)
{
    struct wire_writer w;
    wire_writer_init(&w);
    unsigned n = write_reset(c, &w, database, database_len);
    c->reset_done = done;
    c->reset_arg = arg;
    conn_run(c, w.buf, w.len, n, client_reset_cb, NULL);
    wire_writer_free(&w);
}

struct bufferevent *pool_conn_bev(struct pool_conn *c)
{
    return c->bev;
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
    time_t now = now_s();
    struct pool_conn *c = p->idle;
    while (c) {
        struct pool_conn *next = c->next;
        bool expired = now - c->created >= cfg->pool_max_lifetime_ms / 1000;
        bool idle_too_long =
            p->n_idle > p->min_idle && now - c->idle_since >= cfg->pool_idle_timeout_ms / 1000;
        if (expired || idle_too_long)
            conn_close(c);
        c = next;
    }
    if (p->have_last && !p->warming && p->n_idle < p->min_idle && p->n_open < p->max) {
        struct pool_want want = {.client_caps = p->last_caps, .charset = p->last_charset};
        struct pool_request *req = request_new(p, &want, NULL, NULL);
        if (req) {
            req->warming = true; /* no ready callback: login_done puts it in the idle list */
            p->warming = true;
            p->warm_req = req;
            p->n_open++;
            (void)start_login(req);
        }
    }
}

struct pool *pool_new(struct worker *w, struct route *r)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->worker = w;
    p->route = r;
    /* Unix-socket-only routes are served by one worker, which then gets the whole pool. */
    int n = w->n_workers > 0 && r->cfg->n_listen ? w->n_workers : 1;
    p->max = ((size_t)r->cfg->pool_size + (size_t)n - 1) / (size_t)n;
    p->min_idle = ((size_t)r->cfg->pool_min_idle + (size_t)n - 1) / (size_t)n;
    p->janitor = event_new(w->base, -1, EV_PERSIST, janitor_cb, p);
    if (!p->janitor) {
        free(p);
        return NULL;
    }
    start_timer(p->janitor, 1000);
    return p;
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    /* Sessions are closed first, so what is left is idle, resetting or warming up. */
    while (p->all)
        conn_close(p->all);
    if (p->warm_req)
        request_free(p->warm_req);
    while (p->wait_head) {
        struct pool_request *req = p->wait_head;
        unqueue(req);
        request_free(req);
    }
    event_free(p->janitor);
    free(p);
}
