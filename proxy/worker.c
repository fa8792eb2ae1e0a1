/* Worker threads: each runs its own event loop with its own listening sockets. */
#include "proxy/worker.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf/log.h"
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

int worker_init(struct worker *w, int index, int n_workers)
{
    memset(w, 0, sizeof(*w));
    w->index = index;
    w->n_workers = n_workers;
    /*
     * The changelist folds the enable/disable pairs a connection goes through
     * in one loop turn (lent from the pool, answered, returned) into at most
     * one epoll_ctl.
     */
    struct event_config *cfg = event_config_new();
    if (cfg)
        event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = cfg ? event_base_new_with_config(cfg) : NULL;
    if (cfg)
        event_config_free(cfg);
    w->scratch = evbuffer_new();
    if (!w->base || !w->scratch)
        return -1;
    w->reap_event = event_new(w->base, -1, 0, reap_cb, w);
    if (!w->reap_event)
        return -1;
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!w->dns) /* no resolv.conf: numeric hosts and /etc/hosts still work */
        w->dns = evdns_base_new(w->base, 0);
    return w->dns ? 0 : -1;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr,
                      int addrlen, void *arg)
{
    struct worker *w = arg;
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (w->listeners[i] == l) {
            session_start(w, w->listener_routes[i], fd, addr, (socklen_t)addrlen,
                          addr->sa_family == AF_UNIX);
            return;
        }
    }
    close(fd);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    struct worker *w = arg;
    /* EMFILE and friends: log and keep listening; the next accept may succeed. */
    log_error("worker %d: accept failed: %s", w->index,
              evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
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

int worker_listen(struct worker *w, int fd, struct route *r)
{
    if (r->cfg->client_idle_timeout_ms > 0 && !w->sweep_event) {
        struct timeval one_second = {1, 0};
        w->sweep_event = event_new(w->base, -1, EV_PERSIST, sweep_cb, w);
        if (!w->sweep_event || event_add(w->sweep_event, &one_second) < 0)
            return -1;
    }
    if (ensure_pool(w, r) < 0) {
        close(fd);
        return -1;
    }
    struct evconnlistener *l = evconnlistener_new(
        w->base, accept_cb, w, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!l)
        return -1;
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
    return 0;
}

/* Runs on the worker's own thread: close everything it owns, then leave the loop. */
static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    for (size_t i = 0; i < w->n_listeners; i++)
        evconnlistener_disable(w->listeners[i]);
    w->stopping = 1;
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

int worker_start(struct worker *w)
{
    w->stop_event = event_new(w->base, -1, 0, stop_cb, w);
    if (!w->stop_event)
        return -1;
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
    if (w->reap_event)
        event_free(w->reap_event);
    if (w->stop_event)
        event_free(w->stop_event);
    free(w->listener_routes);
    if (w->dns)
        evdns_base_free(w->dns, 0);
    if (w->scratch)
        evbuffer_free(w->scratch);
    if (w->base)
        event_base_free(w->base);
}
