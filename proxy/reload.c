/* Reload on SIGHUP (reload.h). */
#include "proxy/reload.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "auth/users.h"
#include "conf/config.h"
#include "conf/log.h"
#include "proxy/admin.h"
#include "proxy/daemon.h"
#include "proxy/listener.h"
#include "proxy/route.h"
#include "proxy/stats.h"
#include "proxy/upstream.h"
#include "proxy/worker.h"
#include "secrets/secret_source.h"

/*
 * Per-route settings a reload applies. Workers read them through route->cfg afresh for each
 * new client, login or pool operation. Every other per-route setting (listeners, the secret's
 * source, client_auth, client_tls...) needs a restart: a reload keeps its running value and
 * says so. A setting added to the table later is restart-only until it is listed here.
 */
static const char *const live_route_keys[] = {
    "upstream_host",
    "upstream_port",
    "upstream_user",
    "upstream_tls",
    "upstream_role",
    "upstream_ca",
    "tls_cert",
    "tls_key",
    "peer_uids",
    "peer_gids",
    "users_file",
    "connect_timeout",
    "handshake_timeout",
    "client_idle_timeout",
    "secret_poll_interval",
    "secret_refresh",
    "pool_size",
    "pool_min_idle",
    "pool_idle_timeout",
    "pool_max_lifetime",
    "pool_release_idle_after",
    "pool_wait_timeout",
    "max_client_connections",
};

/* Where and as whom logins go: a change recycles the route's pooled connections. */
static const char *const upstream_keys[] = {"upstream_host", "upstream_port", "upstream_user",
                                            "upstream_tls", "upstream_ca"};

/* With upstream_auth=iam these are copied into the token maker at start-up. */
static const char *const iam_fixed_keys[] = {"upstream_host", "upstream_port", "upstream_user"};

static const char *const live_global_keys[] = {"log_level", "shutdown_timeout"};

#define MAX_KEYS 64

/*
 * What a reload replaced, freed once every worker has passed a safe point after it (their
 * synced generation reached gen): workers never keep these pointers across callbacks.
 */
struct retired {
    struct retired *next;
    uint64_t gen;
    struct config *cfg;            /* the configuration before, or NULL */
    struct local_users **users;    /* by route; NULL entries for none */
    SSL_CTX **tls;                 /* by route */
    struct frontend_tls *frontend; /* by route; empty entries for none */
    size_t n;
    struct secret_source *source; /* a removed route's, retired (route_retire_source), or NULL */
    struct route *source_route;   /* its route */
};

static struct reload_target target;
static uint64_t generation;
static struct retired *retired_head;
static bool reap_scheduled;  /* a reap_cb is due (event_base_once: the base frees it) */
static bool watch_scheduled; /* a watch_removed_cb is due (likewise) */

static bool in_list(const char *key, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, list[i]) == 0)
            return true;
    return false;
}

#define IN(key, list) in_list(key, list, sizeof(list) / sizeof(list[0]))

/* True while a running route still uses one of old's route settings (a route that was removed). */
static bool still_used(const struct config *old)
{
    for (size_t i = 0; i < target.routes->n; i++) {
        const struct route_config *rc = target.routes->all[i]->cfg;
        if (rc >= old->routes && rc < old->routes + old->n_routes)
            return true;
    }
    return false;
}

static void retired_free(struct retired *r)
{
    if (r->cfg) {
        config_free(r->cfg);
        free(r->cfg);
    }
    for (size_t i = 0; i < r->n; i++) {
        if (r->users && r->users[i])
            local_users_free(r->users[i]);
        if (r->tls)
            SSL_CTX_free(r->tls[i]);
        if (r->frontend)
            frontend_tls_release(&r->frontend[i]);
    }
    free(r->users);
    free(r->tls);
    free(r->frontend);
    secret_source_free(r->source);
    free(r);
}

static uint64_t all_synced(void)
{
    uint64_t min = UINT64_MAX;
    for (int k = 0; k < target.n_workers; k++) {
        uint64_t g = worker_synced(&target.workers[k]);
        if (g < min)
            min = g;
    }
    return min;
}

static void reap_cb(evutil_socket_t fd, short what, void *arg);

/* reap_cb in 100 ms, unless one is due already. */
static void schedule_reap(void)
{
    struct timeval tv = {0, 100 * 1000};
    if (!reap_scheduled)
        reap_scheduled = event_base_once(target.base, -1, EV_TIMEOUT, reap_cb, NULL, &tv) == 0;
}

/* Frees what no worker can hold any more; comes back while something waits. */
static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    reap_scheduled = false;
    /*
     * stop() turns the main loop a few times after freeing the workers and routes: what is
     * left is reload_shutdown's to free.
     */
    if (daemon_phase() == DAEMON_STOPPING)
        return;
    uint64_t synced = all_synced();
    bool waiting = false;
    for (struct retired **pp = &retired_head; *pp;) {
        struct retired *r = *pp;
        if (r->gen <= synced && !(r->cfg && still_used(r->cfg))) {
            *pp = r->next;
            if (r->source_route)
                route_source_freed(r->source_route); /* the route stays until the exit */
            retired_free(r);
            continue;
        }
        if (r->gen > synced)
            waiting = true; /* a removed route's configuration waits for the exit instead */
        pp = &r->next;
    }
    if (waiting)
        schedule_reap();
}

static void watch_removed_cb(evutil_socket_t fd, short what, void *arg);

/* watch_removed_cb in a second, unless one is due already. */
static void watch_removed(void)
{
    struct timeval tv = {1, 0};
    if (!watch_scheduled)
        watch_scheduled =
            event_base_once(target.base, -1, EV_TIMEOUT, watch_removed_cb, NULL, &tv) == 0;
}

/*
 * A removed route reads its secret while its clients stay (they may need a rotated password);
 * once the last one has left and its last pooled connection has closed, it stops: no more
 * Secrets Manager calls, and no errors logged for a secret deleted with the route.
 */
static void watch_removed_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    watch_scheduled = false;
    if (daemon_phase() == DAEMON_STOPPING)
        return;
    bool waiting = false;
    for (size_t i = 0; i < target.routes->n; i++) {
        struct route *r = target.routes->all[i];
        if (!__atomic_load_n(&r->removed, __ATOMIC_ACQUIRE) || r->source_retired || !r->source)
            continue;
        struct retired *old = NULL;
        if (__atomic_load_n(&r->n_clients, __ATOMIC_ACQUIRE) > 0 ||
            __atomic_load_n(&r->upstream_open, __ATOMIC_ACQUIRE) > 0 ||
            !(old = calloc(1, sizeof(*old)))) {
            waiting = true;
            continue;
        }
        old->source = route_retire_source(r);
        old->source_route = r;
        old->gen = ++generation;
        for (int k = 0; k < target.n_workers; k++)
            worker_post_sync(&target.workers[k], old->gen);
        old->next = retired_head;
        retired_head = old;
        schedule_reap();
        log_info("route %s: its last client left: its secret is no longer read", r->cfg->name);
    }
    if (waiting)
        watch_removed();
}

static bool fds_add(struct route_fds *out, int fd, int worker)
{
    if (out->n == out->cap) {
        size_t cap = out->cap ? 2 * out->cap : 8;
        int *f = realloc(out->fd, cap * sizeof(*f));
        if (f)
            out->fd = f;
        int *w = realloc(out->worker, cap * sizeof(*w));
        if (w)
            out->worker = w;
        if (!f || !w) {
            close(fd);
            return false;
        }
        out->cap = cap;
    }
    out->fd[out->n] = fd;
    out->worker[out->n++] = worker;
    return true;
}

void route_fds_close(struct route_fds *out)
{
    for (size_t i = 0; i < out->n; i++)
        if (out->fd[i] >= 0)
            close(out->fd[i]);
    free(out->fd);
    free(out->worker);
    memset(out, 0, sizeof(*out));
}

/* Joins the addresses of set into "A, B" for the log. */
static void join_addrs(const struct listener_set *set, char *out, size_t outlen)
{
    out[0] = 0;
    for (size_t i = 0, used = 0; i < set->n && used < outlen; i++, used = strlen(out))
        snprintf(out + used, outlen - used, "%s%s", i ? ", " : "", set->addrs[i]);
}

/*
 * Every worker gets its own socket on every address of every listen entry (SO_REUSEPORT), so
 * a name like localhost is served on 127.0.0.1 and ::1.
 */
bool route_listeners_open(const struct route_config *rc, int n_workers, bool upgrade,
                          struct route_fds *out)
{
    char err[512], addrs[LISTENER_MAX_ADDRS * 66];
    bool loopback_only = rc->client_auth == CLIENT_AUTH_TRUST;
    memset(out, 0, sizeof(*out));
    for (size_t j = 0; j < rc->n_listen; j++) {
        struct listener_set set;
        if (!upgrade && !listener_probe_tcp(rc->listen[j], err, sizeof(err)))
            goto fail;
        for (int k = 0; k < n_workers; k++) {
            if (!listener_open_tcp(rc->listen[j], loopback_only, &set, err, sizeof(err)))
                goto fail;
            if (k == 0 && set.skipped[0])
                log_warn("route %s: %s: skipped addresses this machine does not have: %s", rc->name,
                         rc->listen[j], set.skipped);
            for (size_t i = 0; i < set.n; i++) {
                if (!fds_add(out, set.fds[i], k)) {
                    for (size_t m = i + 1; m < set.n; m++)
                        close(set.fds[m]);
                    snprintf(err, sizeof(err), "out of memory");
                    goto fail;
                }
            }
        }
        join_addrs(&set, addrs, sizeof(addrs));
        log_info("route %s: listening on %s (%s; %d workers)", rc->name, rc->listen[j], addrs,
                 n_workers);
    }
    if (rc->socket_path) {
        int fd = listener_open_unix(rc->socket_path, upgrade, err, sizeof(err));
        if (fd < 0)
            goto fail;
        if (!fds_add(out, fd, 0)) {
            snprintf(err, sizeof(err), "out of memory");
            listener_unlink_own_unix(rc->socket_path);
            goto fail;
        }
        log_info("route %s: listening on %s", rc->name, rc->socket_path);
    }
    return true;
fail:
    log_error("route %s: %s", rc->name, err);
    route_fds_close(out);
    return false;
}

/* A route a reload adds, made ready before anything changes. */
struct new_route {
    struct route *r;
    struct route_fds fds;
};

/* Undoes what was made for routes a failed reload would have added. */
static void new_routes_free(struct new_route *nr, size_t n)
{
    for (size_t i = 0; nr && i < n; i++) {
        if (!nr[i].r)
            continue;
        route_fds_close(&nr[i].fds);
        if (nr[i].r->cfg && nr[i].r->cfg->socket_path)
            listener_unlink_own_unix(nr[i].r->cfg->socket_path); /* the bound, unpublished one */
        route_destroy(nr[i].r);
        free(nr[i].r);
    }
    free(nr);
}

/*
 * Makes ready the routes of next that do not run yet: secret read, users, TLS, listeners
 * open (not yet served). False (logged) when one cannot be: then nothing was kept.
 */
static bool prepare_new_routes(struct config *next, struct new_route **out, size_t *n_out)
{
    struct new_route *nr = calloc(next->n_routes ? next->n_routes : 1, sizeof(*nr));
    size_t n = 0;
    if (!nr) {
        log_error("reload: out of memory");
        return false;
    }
    for (size_t j = 0; j < next->n_routes; j++) {
        bool known = false;
        for (size_t i = 0; i < target.routes->n_active && !known; i++)
            known = strcmp(target.routes->active[i]->cfg->name, next->routes[j].name) == 0;
        if (known)
            continue;
        char err[1024];
        struct new_route *x = &nr[n++];
        x->r = calloc(1, sizeof(*x->r));
        if (!x->r) {
            log_error("reload: out of memory");
            goto fail;
        }
        x->r->index = target.routes->n + n - 1;
        bool ok = route_init(x->r, &next->routes[j], target.base, err, sizeof(err));
        if (!ok) {
            log_error("reload: %s", err);
            goto fail;
        }
        x->r->stats = stats_new(target.n_workers);
        if (!route_listeners_open(x->r->cfg, target.n_workers, false, &x->fds))
            goto fail;
    }
    *out = nr;
    *n_out = n;
    return true;
fail:
    new_routes_free(nr, n);
    return false;
}

/* Rebuilds the list of routes in the configuration and shows it to the admin endpoint. */
static void update_active(void)
{
    struct route_table *t = target.routes;
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        if (!__atomic_load_n(&t->all[i]->removed, __ATOMIC_RELAXED))
            t->active[n++] = t->all[i];
    t->n_active = n;
    if (target.admin) {
        struct admin_view v = {t->active, t->n_active, target.workers, target.n_workers,
                               target.dns};
        admin_set_view(target.admin, &v);
    }
}

void reload_init(const struct reload_target *t)
{
    target = *t;
}

void reload_stop_sources(void)
{
    for (struct retired *r = retired_head; r; r = r->next) {
        if (!r->source_route)
            continue;
        secret_source_free(r->source);
        r->source = NULL;
        route_source_freed(r->source_route);
        r->source_route = NULL;
    }
}

void reload_shutdown(void)
{
    while (retired_head) {
        struct retired *r = retired_head;
        retired_head = r->next;
        retired_free(r);
    }
}

/* The running route named name in cfg, or NULL. */
static struct route_config *find_route(struct config *cfg, const char *name)
{
    for (size_t j = 0; j < cfg->n_routes; j++)
        if (strcmp(cfg->routes[j].name, name) == 0)
            return &cfg->routes[j];
    return NULL;
}

/* What a reload will do to one running route, prepared before anything is changed. */
struct route_plan {
    struct route_config *next;    /* its settings in the new configuration; NULL: removed */
    struct local_users *users;    /* re-read users (password mode) */
    SSL_CTX *tls;                 /* a new upstream TLS context, or NULL to keep the old */
    bool new_tls;                 /* tls replaces the running one (which may become NULL) */
    struct frontend_tls frontend; /* the certificate clients get, when it is another one */
    bool upstream_changed;        /* pooled connections are recycled */
    bool period_changed;          /* the secret source's period is set again */
};

static void plan_free(struct route_plan *plans, size_t n)
{
    for (size_t i = 0; plans && i < n; i++) {
        if (plans[i].users)
            local_users_free(plans[i].users);
        SSL_CTX_free(plans[i].tls);
        frontend_tls_release(&plans[i].frontend);
    }
    free(plans);
}

/* Appends ", key" to a summary line. */
static void add_key(char *buf, size_t len, const char *prefix, const char *key)
{
    size_t used = strlen(buf);
    if (used < len)
        snprintf(buf + used, len - used, "%s%s%s", used ? ", " : "", prefix, key);
}

/*
 * Prepares route i: which of its changed settings apply (a restart-only one gets its running
 * value back in next, and is named in the log), its users file read again, a new upstream TLS
 * context. False (with err) when something cannot be read: then nothing changes.
 */
static bool plan_route(struct route *r, struct route_config *next, struct route_plan *plan,
                       char *applied, size_t applied_len, char *err, size_t errlen)
{
    const struct route_config *cur = r->cfg;
    plan->next = next;
    const char *keys[MAX_KEYS];
    size_t n = config_route_changes(cur, next, keys, MAX_KEYS);
    if (n > MAX_KEYS)
        n = MAX_KEYS;
    for (size_t k = 0; k < n; k++) {
        const char *key = keys[k];
        bool live = IN(key, live_route_keys) &&
                    !(cur->upstream_auth == UPSTREAM_AUTH_IAM && IN(key, iam_fixed_keys)) &&
                    !(strcmp(key, "users_file") == 0 && cur->client_auth != CLIENT_AUTH_PASSWORD);
        if (!live) {
            log_warn("reload: route %s: setting %s changed; restart credproxy to apply it "
                     "(keeping the running value until then)",
                     cur->name, key);
            if (!config_route_keep(next, cur, key))
                log_error("reload: route %s: cannot keep %s", cur->name, key);
            continue;
        }
        if (strcmp(key, "tls_cert") == 0 || strcmp(key, "tls_key") == 0)
            continue; /* named below if the certificate clients get changes */
        char prefix[160];
        snprintf(prefix, sizeof(prefix), "%s.", cur->name);
        add_key(applied, applied_len, prefix, key);
        if (IN(key, upstream_keys))
            plan->upstream_changed = true;
        if (strcmp(key, "secret_poll_interval") == 0 || strcmp(key, "secret_refresh") == 0)
            plan->period_changed = true;
    }
    char why[512];
    if (next->client_auth == CLIENT_AUTH_PASSWORD) {
        /* Read every time: the usual reason for a SIGHUP is an edited users file. */
        plan->users = local_users_load(next->users_file, why, sizeof(why));
        if (!plan->users) {
            snprintf(err, errlen, "route %s: %s", cur->name, why);
            return false;
        }
    }
    /*
     * The certificate and key are read again on every reload, like a CA bundle: the usual
     * reason for a SIGHUP after a renewal is new files at the same paths. (client_tls, which
     * decides whether there is a context at all, is restart-only: next has the running one.)
     */
    if (!route_frontend_tls_make(next, &plan->frontend, err, errlen))
        return false;
    if (plan->frontend.fingerprint[0] &&
        strcmp(plan->frontend.fingerprint, r->frontend_fingerprint) == 0)
        frontend_tls_release(&plan->frontend); /* the same certificate: nothing to change */
    bool tls_changed = cur->upstream_tls != next->upstream_tls ||
                       !((cur->upstream_ca == NULL && next->upstream_ca == NULL) ||
                         (cur->upstream_ca && next->upstream_ca &&
                          strcmp(cur->upstream_ca, next->upstream_ca) == 0));
    /* A CA bundle is read again too, so a renewed one on disk is picked up. */
    if (tls_changed || next->upstream_ca) {
        plan->new_tls = true;
        if (next->upstream_tls != UPSTREAM_TLS_DISABLED) {
            plan->tls = upstream_tls_ctx_new(next->upstream_ca, why, sizeof(why));
            if (!plan->tls) {
                snprintf(err, errlen, "route %s: upstream TLS: %s", cur->name, why);
                return false;
            }
        }
    }
    return true;
}

void reload_run(void)
{
    if (daemon_phase() != DAEMON_READY) {
        /* Draining or stopping: a reload would also turn the phase back to ready. */
        log_warn("received SIGHUP while %s; not reloading", daemon_phase_name(daemon_phase()));
        return;
    }
    daemon_set_phase(DAEMON_RELOADING, "SIGHUP");
    struct config *cur = target.cfg;
    log_info("received SIGHUP: reloading the configuration%s%s", cur->config_file ? " from " : "",
             cur->config_file ? cur->config_file : " (flags and environment)");
    struct config *next = calloc(1, sizeof(*next));
    struct route_plan *plans = calloc(target.routes->n ? target.routes->n : 1, sizeof(*plans));
    struct retired *old = calloc(1, sizeof(*old));
    if (old) {
        old->n = target.routes->n;
        old->users = calloc(old->n ? old->n : 1, sizeof(*old->users));
        old->tls = calloc(old->n ? old->n : 1, sizeof(*old->tls));
        old->frontend = calloc(old->n ? old->n : 1, sizeof(*old->frontend));
    }
    if (!next || !plans || !old || !old->users || !old->tls || !old->frontend) {
        log_error("reload: out of memory; the running configuration stays");
        free(next);
        free(plans);
        if (old)
            retired_free(old);
        daemon_set_phase(DAEMON_READY, "reload failed");
        return;
    }
    struct config_errors errs = {0};
    bool ok = config_load(next, target.argc, target.argv, NULL, &errs);
    for (size_t i = 0; i < errs.n; i++)
        log_error("reload: %s", errs.lines[i]);
    config_errors_free(&errs);
    char applied[2048] = "", err[1024] = "";
    struct new_route *added = NULL;
    size_t n_added = 0;
    if (ok) {
        const char *keys[MAX_KEYS];
        size_t n = config_global_changes(cur, next, keys, MAX_KEYS);
        for (size_t k = 0; k < n && k < MAX_KEYS; k++) {
            if (IN(keys[k], live_global_keys)) {
                add_key(applied, sizeof(applied), "", keys[k]);
                continue;
            }
            log_warn("reload: setting %s changed; restart credproxy to apply it (keeping the "
                     "running value until then)",
                     keys[k]);
            (void)config_global_keep(next, cur, keys[k]);
        }
        for (size_t i = 0; ok && i < target.routes->n; i++) {
            struct route *r = target.routes->all[i];
            struct route_config *rc = find_route(next, r->cfg->name);
            if (r->removed || !rc)
                continue; /* removed before, or now: keeps its settings while its clients stay */
            ok = plan_route(r, rc, &plans[i], applied, sizeof(applied), err, sizeof(err));
        }
        if (!ok)
            log_error("reload: %s", err);
        /* Last, as it opens listeners: a failure above leaves no port or path taken. */
        if (ok)
            ok = prepare_new_routes(next, &added, &n_added);
        /* Room in the table, so that nothing fails after this. */
        struct route_table *t = target.routes;
        struct route **all = ok ? realloc(t->all, (t->n + n_added + 1) * sizeof(*all)) : NULL;
        if (all)
            t->all = all;
        struct route **active =
            all ? realloc(t->active, (t->n + n_added + 1) * sizeof(*all)) : NULL;
        if (active)
            t->active = active; /* same contents: what the admin endpoint reads stays valid */
        if (ok && !active) {
            log_error("reload: out of memory");
            ok = false;
        }
    }
    /* The last allocation before the commit: the old configuration's memory moves to it. */
    struct config *was = ok ? malloc(sizeof(*was)) : NULL;
    if (ok && !was) {
        log_error("reload: out of memory");
        ok = false;
    }
    if (!ok) {
        log_error("reload failed: the running configuration stays, nothing was changed");
        new_routes_free(added, n_added);
        plan_free(plans, target.routes->n);
        config_free(next);
        free(next);
        retired_free(old);
        daemon_set_phase(DAEMON_READY, "reload failed");
        return;
    }

    /* Commit: nothing below can fail. */
    *was = *cur;
    *cur = *next; /* routes now points at the new array; was->routes at the one still in use */
    free(next);
    old->cfg = was;
    old->gen = ++generation;
    log_set_level(cur->log_level);
    for (size_t i = 0; i < target.routes->n; i++) {
        struct route *r = target.routes->all[i];
        struct route_plan *p = &plans[i];
        if (!p->next && !r->removed) {
            /*
             * Removed: its listeners close on every worker now, its clients keep their
             * sessions (and its settings, in was, kept while it exists) until they leave; no
             * pooled connection is lent again, and none is opened to keep the pool warm.
             */
            __atomic_store_n(&r->removed, 1, __ATOMIC_RELEASE);
            route_upstream_changed(r);
            for (int k = 0; k < target.n_workers; k++)
                if (worker_post_unlisten(&target.workers[k], r) < 0)
                    log_error("route %s: worker %d: cannot close its listeners (out of memory)",
                              r->cfg->name, k);
            if (r->cfg->socket_path)
                listener_unlink_own_unix(r->cfg->socket_path);
            log_info("route %s removed: its listeners close; its %d open clients keep working "
                     "until they disconnect",
                     r->cfg->name, __atomic_load_n(&r->n_clients, __ATOMIC_RELAXED));
            watch_removed();
            add_key(applied, sizeof(applied), "-route ", r->cfg->name);
        }
        if (!p->next)
            continue;
        /* The same index in cur: plan->next pointed into next's routes, now cur's. */
        r->cfg = p->next;
        if (p->users) {
            old->users[i] = r->users;
            r->users = p->users;
            p->users = NULL;
        }
        if (p->new_tls) {
            old->tls[i] = r->upstream_tls;
            r->upstream_tls = p->tls;
            p->tls = NULL;
        }
        if (p->frontend.ctx) {
            route_frontend_tls_swap(r, &p->frontend);
            old->frontend[i] = p->frontend; /* the replaced one, freed at the safe point */
            memset(&p->frontend, 0, sizeof(p->frontend));
            if (r->frontend_ephemeral)
                log_info("route %s: no tls_cert any more: new TLS clients get the ephemeral "
                         "certificate, SHA-256 fingerprint %s (was %s); connected ones keep "
                         "theirs",
                         r->cfg->name, r->frontend_fingerprint, old->frontend[i].fingerprint);
            else
                log_info("route %s: TLS certificate %s, SHA-256 fingerprint %s (was %s): new TLS "
                         "clients get it; connected ones keep theirs",
                         r->cfg->name, r->cfg->tls_cert, r->frontend_fingerprint,
                         old->frontend[i].fingerprint);
            char prefix[160];
            snprintf(prefix, sizeof(prefix), "%s.", r->cfg->name);
            add_key(applied, sizeof(applied), prefix, "tls_cert");
        }
        if (p->upstream_changed) {
            route_upstream_changed(r); /* after cfg and upstream_tls: see pool.c's start_login */
            log_info("route %s: new upstream connections go to %s:%d%s (pooled ones are "
                     "replaced as they come back)",
                     r->cfg->name,
                     r->cfg->upstream_host ? r->cfg->upstream_host : "(secret's host)",
                     r->cfg->upstream_port, r->cfg->upstream_port > 0 ? "" : " (secret's port)");
        }
        if (p->period_changed)
            secret_source_set_period(r->source, r->cfg->secret_file ? r->cfg->secret_poll_ms
                                                                    : r->cfg->secret_refresh_ms);
    }
    plan_free(plans, target.routes->n);
    for (size_t i = 0; i < n_added; i++) {
        struct route *r = added[i].r;
        target.routes->all[target.routes->n++] = r; /* r->index is this slot */
        /* Before its listeners reach the workers: its first clients wait for the real server. */
        route_probe_start(r, target.base, target.dns);
        for (size_t j = 0; j < added[i].fds.n; j++) {
            int k = added[i].fds.worker[j];
            if (worker_post_listen(&target.workers[k], added[i].fds.fd[j], r) < 0)
                log_error("route %s: worker %d: cannot add listener (out of memory)", r->cfg->name,
                          k);
            added[i].fds.fd[j] = -1; /* the worker's now */
        }
        route_fds_close(&added[i].fds);
        log_info("route %s added", r->cfg->name);
        add_key(applied, sizeof(applied), "+route ", r->cfg->name);
    }
    free(added);
    (void)listener_publish_unix(); /* the new routes' sockets; logged if one fails */
    update_active();
    for (int k = 0; k < target.n_workers; k++)
        worker_post_sync(&target.workers[k], old->gen);
    old->next = retired_head;
    retired_head = old;
    schedule_reap(); /* if it cannot be scheduled, what was replaced is freed at the exit */
    if (applied[0])
        log_info("configuration reloaded; applied: %s", applied);
    else
        log_info("configuration reloaded; no setting that applies live changed");
    daemon_set_phase(DAEMON_READY, "reloaded");
}
