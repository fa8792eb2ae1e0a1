/* Reload on SIGHUP (reload.h). */
#include "proxy/reload.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "auth/users.h"
#include "conf/config.h"
#include "conf/log.h"
#include "proxy/daemon.h"
#include "proxy/route.h"
#include "proxy/upstream.h"
#include "proxy/worker.h"
#include "secrets/secret_source.h"

/*
 * Per-route settings a reload applies. Workers read them through route->cfg afresh for each
 * new client, login or pool operation. Every other per-route setting (listeners, the secret's
 * source, client_auth, frontend TLS...) needs a restart: a reload keeps its running value and
 * says so. A setting added to the table later is restart-only until it is listed here.
 */
static const char *const live_route_keys[] = {
    "upstream_host",
    "upstream_port",
    "upstream_user",
    "upstream_tls",
    "upstream_role",
    "upstream_ca",
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
    struct config *cfg;         /* the configuration before, or NULL */
    struct local_users **users; /* by route; NULL entries for none */
    SSL_CTX **tls;              /* by route */
    size_t n;
};

static struct reload_target target;
static uint64_t generation;
static struct retired *retired_head;
static bool reap_scheduled; /* a reap_cb is due (event_base_once: the base frees it) */

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
    for (size_t i = 0; i < target.n_routes; i++) {
        const struct route_config *rc = target.routes[i].cfg;
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
        if (r->users[i])
            local_users_free(r->users[i]);
        SSL_CTX_free(r->tls[i]);
    }
    free(r->users);
    free(r->tls);
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
    uint64_t synced = all_synced();
    bool waiting = false;
    for (struct retired **pp = &retired_head; *pp;) {
        struct retired *r = *pp;
        if (r->gen <= synced && !(r->cfg && still_used(r->cfg))) {
            *pp = r->next;
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

void reload_init(const struct reload_target *t)
{
    target = *t;
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
    struct route_config *next; /* its settings in the new configuration; NULL: removed */
    struct local_users *users; /* re-read users (password mode) */
    SSL_CTX *tls;              /* a new upstream TLS context, or NULL to keep the old */
    bool new_tls;              /* tls replaces the running one (which may become NULL) */
    bool upstream_changed;     /* pooled connections are recycled */
    bool period_changed;       /* the secret source's period is set again */
};

static void plan_free(struct route_plan *plans, size_t n)
{
    for (size_t i = 0; plans && i < n; i++) {
        if (plans[i].users)
            local_users_free(plans[i].users);
        SSL_CTX_free(plans[i].tls);
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
    struct route_plan *plans = calloc(target.n_routes ? target.n_routes : 1, sizeof(*plans));
    struct retired *old = calloc(1, sizeof(*old));
    if (old) {
        old->n = target.n_routes;
        old->users = calloc(old->n ? old->n : 1, sizeof(*old->users));
        old->tls = calloc(old->n ? old->n : 1, sizeof(*old->tls));
    }
    if (!next || !plans || !old || !old->users || !old->tls) {
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
        for (size_t j = 0; j < next->n_routes; j++) {
            bool known = false;
            for (size_t i = 0; i < target.n_routes && !known; i++)
                known = strcmp(target.routes[i].cfg->name, next->routes[j].name) == 0;
            if (!known)
                log_warn("reload: route %s is new in the configuration; adding a route needs a "
                         "restart: restart credproxy to apply it",
                         next->routes[j].name);
        }
        for (size_t i = 0; ok && i < target.n_routes; i++) {
            struct route *r = &target.routes[i];
            struct route_config *rc = find_route(next, r->cfg->name);
            if (!rc) {
                log_warn("reload: route %s is no longer in the configuration; removing a route "
                         "needs a restart: it keeps serving with its running settings until then",
                         r->cfg->name);
                continue;
            }
            ok = plan_route(r, rc, &plans[i], applied, sizeof(applied), err, sizeof(err));
        }
        if (!ok)
            log_error("reload: %s", err);
    }
    if (!ok) {
        log_error("reload failed: the running configuration stays, nothing was changed");
        plan_free(plans, target.n_routes);
        config_free(next);
        free(next);
        retired_free(old);
        daemon_set_phase(DAEMON_READY, "reload failed");
        return;
    }

    /* Commit: nothing below can fail. The old configuration's memory moves to old->cfg. */
    struct config *was = malloc(sizeof(*was));
    if (!was) {
        log_error("reload: out of memory; the running configuration stays");
        plan_free(plans, target.n_routes);
        config_free(next);
        free(next);
        retired_free(old);
        daemon_set_phase(DAEMON_READY, "reload failed");
        return;
    }
    *was = *cur;
    *cur = *next; /* routes now points at the new array; was->routes at the one still in use */
    free(next);
    old->cfg = was;
    old->gen = ++generation;
    log_set_level(cur->log_level);
    for (size_t i = 0; i < target.n_routes; i++) {
        struct route *r = &target.routes[i];
        struct route_plan *p = &plans[i];
        if (!p->next)
            continue; /* removed: keeps its settings (in was, kept while it runs) */
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
    plan_free(plans, target.n_routes);
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
