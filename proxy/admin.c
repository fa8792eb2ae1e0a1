/*
 * The HTTP admin endpoint (admin.h): metrics, health, readiness and a status
 * page, on the main loop. Every value comes from the workers' counters
 * (summed here), the routes' atomics, the secret sources' read statistics
 * (main-thread data) and /proc/self.
 */
#include "proxy/admin.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "conf/log.h"
#include "proxy/daemon.h"
#include "proxy/listener.h"
#include "proxy/route.h"
#include "proxy/stats.h"
#include "proxy/upstream.h"
#include "proxy/worker.h"
#include "secrets/secret_source.h"

/* /healthz fails when a worker loop has not beaten for this long. */
#define HEALTH_STALE_MS 5000
/* /readyz wants an upstream login this recent when no connection is open ... */
#define READY_LOGIN_MS 60000
/* ... and starts a probe login of its own once the last one is this old. */
#define PROBE_AFTER_MS 30000
/* Probes of one route start at most this often. */
#define PROBE_GAP_MS 5000

/* A readiness probe: one upstream login on the main loop, for a route with no connection open. */
struct probe {
    struct admin *a;
    size_t route;
    struct upstream_login *login; /* in flight, or NULL */
    int64_t started_ms;           /* monotonic, 0 never */
    char last_error[256];         /* the last failed probe's error (never a secret), "" if none */
};

struct admin {
    struct event_base *base;
    struct evhttp *http;
    struct admin_view v;
    struct probe *probes; /* by route index */
    size_t n_probes;
    double start_unix; /* the process' start time, from /proc */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Snapshots ----------------------------------------------------------------------------- */

/* Everything shown of one route, taken once per request. */
struct route_snap {
    struct route *r;
    uint64_t v[ST_N];  /* the workers' counters, summed */
    int clients_open;  /* all workers, exact */
    int upstream_open; /* slots held (connections and logins), exact */
    bool listening;    /* some worker has a listener for it */
    bool have_secret;  /* a snapshot is published */
    char version[80];  /* of the credentials new logins use */
    char user[80];     /* their user name (not a secret) */
    char host[160];    /* where they log in */
    int port;
    uint64_t generation;
    const char *stage; /* AWSCURRENT, AWSPENDING, file, iam-token */
    double login_age;  /* seconds since the last good upstream login; INFINITY never */
    double secret_age; /* seconds since the last good secret read; INFINITY never */
    const struct secret_source *src; /* NULL: the route has no source of its own */
};

static void snap_route(struct admin *a, struct route *r, struct route_snap *s)
{
    memset(s, 0, sizeof(*s));
    s->r = r;
    stats_sum(r->stats, a->v.n_workers, s->v);
    s->clients_open = __atomic_load_n(&r->n_clients, __ATOMIC_RELAXED);
    s->upstream_open = __atomic_load_n(&r->upstream_open, __ATOMIC_RELAXED);
    s->listening = __atomic_load_n(&r->n_listeners, __ATOMIC_RELAXED) > 0; /* 0 once draining */
    int64_t now = mono_ms();
    int64_t login = __atomic_load_n(&r->last_login_mono_ms, __ATOMIC_RELAXED);
    s->login_age = login ? (double)(now - login) / 1000.0 : INFINITY;
    s->src = r->source;
    s->secret_age = s->src && s->src->stats.last_ok_mono_ms
                        ? (double)(now - s->src->stats.last_ok_mono_ms) / 1000.0
                        : INFINITY;
    const char *kind = s->src ? s->src->kind : "none";
    s->stage = strcmp(kind, "aws") == 0   ? "AWSCURRENT"
               : strcmp(kind, "iam") == 0 ? "iam-token"
                                          : "file";
    struct creds *c = secret_store_get(r->store);
    if (!c)
        return;
    s->have_secret = true;
    s->generation = c->generation;
    snprintf(s->version, sizeof(s->version), "%s", c->version ? c->version : "?");
    snprintf(s->user, sizeof(s->user), "%s",
             r->cfg->upstream_user ? r->cfg->upstream_user : c->username);
    const char *host = route_upstream_host(r, c);
    snprintf(s->host, sizeof(s->host), "%s", host ? host : "");
    s->port = route_upstream_port(r, c);
    /* A version that logged in while AWSCURRENT was refused stands in for it. */
    pthread_mutex_lock(&r->lock);
    if (r->preferred && r->preferred_over == c->generation) {
        snprintf(s->version, sizeof(s->version), "%s",
                 r->preferred->version ? r->preferred->version : "?");
        s->stage = "AWSPENDING";
    }
    pthread_mutex_unlock(&r->lock);
    creds_unref(c);
}

/* The process as /proc/self shows it. */
struct proc_snap {
    double cpu_seconds;
    uint64_t rss_bytes, vsize_bytes;
    long open_fds, max_fds;
};

static void snap_proc(struct proc_snap *p)
{
    memset(p, 0, sizeof(*p));
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    const char *rp = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0, vsize = 0, rss = 0;
    /* Fields after the command name, from field 3 (state): utime is 14, vsize 23, rss 24. */
    if (rp && sscanf(rp + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                     "%*d %*u %llu %llu",
                     &ut, &st, &vsize, &rss) == 4) {
        long tck = sysconf(_SC_CLK_TCK);
        p->cpu_seconds = (double)(ut + st) / (double)(tck > 0 ? tck : 100);
        p->vsize_bytes = vsize;
        p->rss_bytes = rss * (uint64_t)sysconf(_SC_PAGESIZE);
    }
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.')
            p->open_fds++;
    if (d) {
        closedir(d);
        p->open_fds--; /* the directory's own descriptor */
    }
    struct rlimit rl;
    p->max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : -1;
}

/*
 * The process' start as a Unix time: its start in clock ticks after boot (/proc/self/stat),
 * against the time since boot now (CLOCK_BOOTTIME), so the result follows the wall clock
 * even where the boot time in /proc/stat does not match it (containers, adjusted clocks).
 */
static double process_start_unix(void)
{
    char buf[1024];
    unsigned long long start = 0;
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    const char *rp = strrchr(buf, ')');
    struct timespec boot, real;
    long tck = sysconf(_SC_CLK_TCK);
    if (!rp ||
        sscanf(rp + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &start) != 1 ||
        clock_gettime(CLOCK_BOOTTIME, &boot) != 0 || clock_gettime(CLOCK_REALTIME, &real) != 0)
        return (double)time(NULL);
    double since_boot = (double)boot.tv_sec + (double)boot.tv_nsec / 1e9;
    double now = (double)real.tv_sec + (double)real.tv_nsec / 1e9;
    return now - (since_boot - (double)start / (double)(tck > 0 ? tck : 100));
}

static struct route_snap *snap_routes(struct admin *a)
{
    struct route_snap *s = calloc(a->v.n_routes ? a->v.n_routes : 1, sizeof(*s));
    for (size_t i = 0; s && i < a->v.n_routes; i++)
        snap_route(a, a->v.routes[i], &s[i]);
    return s;
}

/* Seconds since worker k's loop last stamped its heartbeat (worker.h). */
static double worker_silence(const struct admin *a, int k)
{
    return (double)worker_heartbeat_age_ms(&a->v.workers[k]) / 1000.0;
}

/* ---- /metrics -------------------------------------------------------------------------------- */

/* A label value in the text format: backslash, double quote and newline escaped. */
static void label_escape(char *out, size_t outlen, const char *in)
{
    size_t o = 0;
    for (; in && *in && o + 3 < outlen; in++) {
        if (*in == '\\' || *in == '"') {
            out[o++] = '\\';
            out[o++] = *in;
        } else if (*in == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *in;
        }
    }
    out[o] = 0;
}

static void family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A sample: name{route="R"<,extra>} value. extra is already escaped, may be "". */
static void sample(struct evbuffer *b, const char *name, const char *route, const char *extra,
                   double value)
{
    char r[200];
    label_escape(r, sizeof(r), route);
    if (isinf(value))
        evbuffer_add_printf(b, "%s{route=\"%s\"%s%s} +Inf\n", name, r, *extra ? "," : "", extra);
    else if (value == floor(value) && fabs(value) < 1e15)
        evbuffer_add_printf(b, "%s{route=\"%s\"%s%s} %.0f\n", name, r, *extra ? "," : "", extra,
                            value);
    else
        evbuffer_add_printf(b, "%s{route=\"%s\"%s%s} %.6f\n", name, r, *extra ? "," : "", extra,
                            value);
}

/* One family with one sample per route of stat k. */
static void per_route(struct evbuffer *b, const struct route_snap *s, size_t n, const char *name,
                      const char *type, const char *help, enum stat_key k)
{
    family(b, name, type, help);
    for (size_t i = 0; i < n; i++)
        sample(b, name, s[i].r->cfg->name, "", (double)s[i].v[k]);
}

/* One family with a sample per route and per value of one label. */
static void per_route_by(struct evbuffer *b, const struct route_snap *s, size_t n, const char *name,
                         const char *type, const char *help, const char *label,
                         const char *const *values, const enum stat_key *stats, size_t nv)
{
    family(b, name, type, help);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < nv; j++) {
            char extra[96];
            snprintf(extra, sizeof(extra), "%s=\"%s\"", label, values[j]);
            sample(b, name, s[i].r->cfg->name, extra, (double)s[i].v[stats[j]]);
        }
    }
}

static void metrics_clients(struct evbuffer *b, const struct route_snap *s, size_t n)
{
    family(b, "credproxy_client_connections_open", "gauge", "Client connections open now.");
    for (size_t i = 0; i < n; i++)
        sample(b, "credproxy_client_connections_open", s[i].r->cfg->name, "", s[i].clients_open);
    static const char *const cl_states[] = {"active", "waiting", "idle", "login"};
    static const enum stat_key cl_stats[] = {ST_G_CL_ACTIVE, ST_G_CL_WAITING, ST_G_CL_IDLE,
                                             ST_G_CL_LOGIN};
    per_route_by(b, s, n, "credproxy_client_connections", "gauge",
                 "Client connections by state (sampled each second): active holds an upstream "
                 "connection, waiting waits for one, idle holds none (multiplexing), login is "
                 "logging in.",
                 "state", cl_states, cl_stats, 4);
    per_route(b, s, n, "credproxy_client_connections_accepted_total", "counter",
              "Client connections accepted.", ST_CLIENTS_ACCEPTED);
    static const char *const reasons[] = {"auth",       "limit",        "handshake_timeout",
                                          "bad_packet", "tls_required", "upstream_error"};
    static const enum stat_key reason_stats[] = {
        ST_REFUSED_AUTH,       ST_REFUSED_LIMIT,        ST_REFUSED_HANDSHAKE_TIMEOUT,
        ST_REFUSED_BAD_PACKET, ST_REFUSED_TLS_REQUIRED, ST_REFUSED_UPSTREAM};
    per_route_by(b, s, n, "credproxy_client_connections_refused_total", "counter",
                 "Client connections refused before relaying, by reason.", "reason", reasons,
                 reason_stats, 6);
}

static void metrics_pool(struct evbuffer *b, const struct route_snap *s, size_t n)
{
    static const char *const sv_states[] = {"in_use", "idle", "resetting", "opening"};
    static const enum stat_key sv_stats[] = {ST_G_SV_ACTIVE, ST_G_SV_IDLE, ST_G_SV_USED,
                                             ST_G_SV_OPENING};
    per_route_by(b, s, n, "credproxy_upstream_connections", "gauge",
                 "Upstream connections by state (sampled each second): in_use lent to a client, "
                 "idle pooled, resetting being reset or set up, opening logging in.",
                 "state", sv_states, sv_stats, 4);
    family(b, "credproxy_upstream_connections_max", "gauge",
           "Most upstream connections of the route (pool_size).");
    for (size_t i = 0; i < n; i++)
        sample(b, "credproxy_upstream_connections_max", s[i].r->cfg->name, "",
               s[i].r->cfg->pool_size);
    static const double bounds[STATS_N_WAIT] = STATS_WAIT_BOUNDS;
    family(b, "credproxy_pool_wait_seconds", "histogram",
           "Time clients waited for an upstream connection while the pool was at pool_size.");
    for (size_t i = 0; i < n; i++) {
        uint64_t cum = 0;
        for (int j = 0; j <= STATS_N_WAIT; j++) {
            char extra[48];
            cum += s[i].v[ST_WAIT_BUCKET + j];
            if (j < STATS_N_WAIT)
                snprintf(extra, sizeof(extra), "le=\"%g\"", bounds[j]);
            else
                snprintf(extra, sizeof(extra), "le=\"+Inf\"");
            sample(b, "credproxy_pool_wait_seconds_bucket", s[i].r->cfg->name, extra, (double)cum);
        }
        sample(b, "credproxy_pool_wait_seconds_sum", s[i].r->cfg->name, "",
               (double)s[i].v[ST_WAIT_SUM_US] / 1e6);
        sample(b, "credproxy_pool_wait_seconds_count", s[i].r->cfg->name, "",
               (double)s[i].v[ST_WAITS]);
    }
    per_route(b, s, n, "credproxy_pool_wait_timeouts_total", "counter",
              "Clients refused after waiting pool_wait_timeout for a connection.",
              ST_WAIT_TIMEOUTS);
    family(b, "credproxy_pool_max_wait_seconds", "gauge",
           "How long the longest waiting client has waited now (sampled each second).");
    for (size_t i = 0; i < n; i++)
        sample(b, "credproxy_pool_max_wait_seconds", s[i].r->cfg->name, "",
               (double)s[i].v[ST_G_MAX_WAIT_US] / 1e6);
}

static void metrics_relay(struct evbuffer *b, const struct route_snap *s, size_t n)
{
    per_route(b, s, n, "credproxy_commands_total", "counter", "Client commands relayed upstream.",
              ST_COMMANDS);
    static const char *const dirs[] = {"in", "out"};
    static const enum stat_key dir_stats[] = {ST_BYTES_IN, ST_BYTES_OUT};
    per_route_by(b, s, n, "credproxy_relayed_bytes_total", "counter",
                 "Bytes relayed (MySQL packets, headers included): in from clients to the "
                 "server, out from the server to clients.",
                 "direction", dirs, dir_stats, 2);
    static const char *const results[] = {"ok", "access_denied", "other_error"};
    static const enum stat_key result_stats[] = {ST_LOGIN_OK, ST_LOGIN_ACCESS_DENIED,
                                                 ST_LOGIN_OTHER_ERROR};
    per_route_by(b, s, n, "credproxy_upstream_logins_total", "counter",
                 "Upstream login attempts by result.", "result", results, result_stats, 3);
    static const char *const stages[] = {"AWSCURRENT", "AWSPENDING"};
    static const enum stat_key stage_stats[] = {ST_CANDIDATE_CURRENT, ST_CANDIDATE_PENDING};
    per_route_by(b, s, n, "credproxy_upstream_login_versions_total", "counter",
                 "Successful upstream logins by the secret version that logged in: the "
                 "published one (AWSCURRENT; a file's only version), or AWSPENDING during a "
                 "rotation.",
                 "stage", stages, stage_stats, 2);
    family(b, "credproxy_upstream_last_login_age_seconds", "gauge",
           "Seconds since the last successful upstream login (+Inf: none yet).");
    for (size_t i = 0; i < n; i++)
        sample(b, "credproxy_upstream_last_login_age_seconds", s[i].r->cfg->name, "",
               s[i].login_age);
    static const char *const rc[] = {"restored", "refused_pinned"};
    static const enum stat_key rc_stats[] = {ST_RECONNECT_RESTORED, ST_RECONNECT_REFUSED_PINNED};
    per_route_by(b, s, n, "credproxy_reconnects_total", "counter",
                 "Idle clients whose upstream connection was lost: moved to a new one with "
                 "their state (restored), or closed because their state could not be rebuilt "
                 "(refused_pinned).",
                 "result", rc, rc_stats, 2);
    per_route(b, s, n, "credproxy_multiplexing_releases_total", "counter",
              "Idle clients' upstream connections given back to the pool "
              "(pool_release_idle_after).",
              ST_RELEASES);
}

static void metrics_secrets(struct evbuffer *b, const struct route_snap *s, size_t n)
{
    char extra[600], a1[300], a2[100];
    family(b, "credproxy_secret_reads_total", "counter",
           "Reads of the route's secret by result: ok (new credentials), unchanged, error (the "
           "previous credentials stay).");
    for (size_t i = 0; i < n; i++) {
        if (!s[i].src)
            continue;
        const struct secret_source_stats *st = &s[i].src->stats;
        const uint64_t v[3] = {st->reads_ok, st->reads_unchanged, st->reads_error};
        static const char *const res[3] = {"ok", "unchanged", "error"};
        for (int j = 0; j < 3; j++) {
            snprintf(extra, sizeof(extra), "source=\"%s\",result=\"%s\"", s[i].src->kind, res[j]);
            sample(b, "credproxy_secret_reads_total", s[i].r->cfg->name, extra, (double)v[j]);
        }
    }
    family(b, "credproxy_secret_last_good_read_age_seconds", "gauge",
           "Seconds since the secret was last read successfully.");
    for (size_t i = 0; i < n; i++)
        if (s[i].src)
            sample(b, "credproxy_secret_last_good_read_age_seconds", s[i].r->cfg->name, "",
                   s[i].secret_age);
    family(b, "credproxy_secret_info", "gauge",
           "The secret in use (always 1): its source, id or file, stage and version; never "
           "its value.");
    for (size_t i = 0; i < n; i++) {
        if (!s[i].have_secret)
            continue;
        label_escape(a1, sizeof(a1), s[i].src && s[i].src->where ? s[i].src->where : "");
        label_escape(a2, sizeof(a2), s[i].version);
        snprintf(extra, sizeof(extra), "source=\"%s\",id=\"%s\",stage=\"%s\",version=\"%s\"",
                 s[i].src ? s[i].src->kind : "none", a1, s[i].stage, a2);
        sample(b, "credproxy_secret_info", s[i].r->cfg->name, extra, 1);
    }
    family(b, "credproxy_secret_rotations_total", "counter",
           "New credentials published after the first (rotations, or new IAM tokens).");
    for (size_t i = 0; i < n; i++)
        sample(b, "credproxy_secret_rotations_total", s[i].r->cfg->name, "",
               s[i].generation > 1 ? (double)(s[i].generation - 1) : 0);
}

static void metrics_process(struct admin *a, struct evbuffer *b)
{
    struct proc_snap p;
    snap_proc(&p);
    evbuffer_add_printf(b,
                        "# HELP credproxy_build_info credproxy's version (always 1).\n"
                        "# TYPE credproxy_build_info gauge\n"
                        "credproxy_build_info{version=\"%s\"} 1\n",
                        CREDPROXY_VERSION);
    family(b, "credproxy_phase", "gauge",
           "The process' phase: 1 for the current one (starting, ready, reloading, draining, "
           "stopping).");
    enum daemon_phase now = daemon_phase();
    for (int ph = DAEMON_STARTING; ph <= DAEMON_STOPPING; ph++)
        evbuffer_add_printf(b, "credproxy_phase{phase=\"%s\"} %d\n",
                            daemon_phase_name((enum daemon_phase)ph), ph == (int)now);
    family(b, "credproxy_worker_heartbeat_age_seconds", "gauge",
           "Seconds since each worker's event loop last stamped its heartbeat (every 250 ms).");
    for (int k = 0; k < a->v.n_workers; k++) {
        double s = worker_silence(a, k);
        if (isinf(s))
            evbuffer_add_printf(b, "credproxy_worker_heartbeat_age_seconds{worker=\"%d\"} +Inf\n",
                                k);
        else
            evbuffer_add_printf(b, "credproxy_worker_heartbeat_age_seconds{worker=\"%d\"} %.3f\n",
                                k, s);
    }
    evbuffer_add_printf(
        b,
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n"
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %" PRIu64 "\n"
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
        "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %" PRIu64 "\n"
        "# HELP process_open_fds Number of open file descriptors.\n"
        "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n"
        "# HELP process_max_fds Maximum number of open file descriptors.\n"
        "# TYPE process_max_fds gauge\nprocess_max_fds %ld\n"
        "# HELP process_start_time_seconds Start time of the process since unix epoch in "
        "seconds.\n"
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
        p.cpu_seconds, p.rss_bytes, p.vsize_bytes, p.open_fds, p.max_fds, a->start_unix);
}

static int serve_metrics(struct admin *a, struct evbuffer *b, const char **type)
{
    *type = "text/plain; version=0.0.4; charset=utf-8";
    struct route_snap *s = snap_routes(a);
    if (!s)
        return 500;
    size_t n = a->v.n_routes;
    metrics_clients(b, s, n);
    metrics_pool(b, s, n);
    metrics_relay(b, s, n);
    metrics_secrets(b, s, n);
    metrics_process(a, b);
    free(s);
    return 200;
}

/* ---- /healthz and /readyz -------------------------------------------------------------------- */

static int serve_healthz(struct admin *a, struct evbuffer *b, const char **type)
{
    *type = "text/plain; charset=utf-8";
    for (int k = 0; k < a->v.n_workers; k++) {
        double s = worker_silence(a, k);
        if (s * 1000.0 > HEALTH_STALE_MS) {
            evbuffer_add_printf(b, "worker %d: event loop silent for %.1f s\n", k, s);
            return 503;
        }
    }
    evbuffer_add_printf(b, "ok\n");
    return 200;
}

static void probe_done(void *arg, struct bufferevent *bev, const struct upstream_info *info,
                       const struct upstream_error *err)
{
    struct probe *p = arg;
    p->login = NULL;
    struct route *r = p->route < p->a->v.n_routes ? p->a->v.routes[p->route] : NULL;
    if (r && info)
        route_learn(r, info); /* a route whose start-up login failed greets as the server now */
    if (err) {
        snprintf(p->last_error, sizeof(p->last_error), "%.255s", err->message);
        return;
    }
    bufferevent_free(bev);
    p->last_error[0] = 0;
    if (r)
        route_login_worked(r);
}

/* Starts one upstream login for a route with nothing open and no recent login (rate-limited). */
static void maybe_probe(struct admin *a, const struct route_snap *s, size_t i)
{
    if (i >= a->n_probes || !s->have_secret)
        return;
    struct probe *p = &a->probes[i];
    int64_t now = mono_ms();
    bool has_conn = s->v[ST_G_SV_ACTIVE] + s->v[ST_G_SV_IDLE] + s->v[ST_G_SV_USED] > 0;
    if (p->login || has_conn || s->login_age * 1000.0 < PROBE_AFTER_MS ||
        (p->started_ms && now - p->started_ms < PROBE_GAP_MS))
        return;
    struct creds *c = secret_store_get(s->r->store);
    struct upstream_params params;
    if (c && route_login_params(s->r, c, NULL, &params)) {
        params.client_caps = UPSTREAM_RELAYABLE_CAPS;
        params.charset = 45; /* utf8mb4_general_ci */
        p->started_ms = now;
        p->login = upstream_login_start(a->base, a->v.dns, &params, probe_done, p);
    }
    creds_unref(c);
}

/* Why route s is not ready, into why; false when it is. */
static bool route_not_ready(struct admin *a, const struct route_snap *s, size_t i, char *why,
                            size_t len)
{
    const char *name = s->r->cfg->name;
    if (!s->listening) {
        snprintf(why, len, "route %s: not listening", name);
        return true;
    }
    if (!s->have_secret) {
        snprintf(why, len, "route %s: no usable secret", name);
        return true;
    }
    maybe_probe(a, s, i);
    bool has_conn = s->v[ST_G_SV_ACTIVE] + s->v[ST_G_SV_IDLE] + s->v[ST_G_SV_USED] > 0;
    if (has_conn || s->login_age * 1000.0 < READY_LOGIN_MS)
        return false;
    const char *err = i < a->n_probes ? a->probes[i].last_error : "";
    if (isinf(s->login_age))
        snprintf(why, len, "route %s: upstream not reached yet%s%.200s", name, *err ? ": " : "",
                 err);
    else
        snprintf(why, len, "route %s: upstream not reached in the last %d s%s%.200s", name,
                 READY_LOGIN_MS / 1000, *err ? ": " : "", err);
    return true;
}

static int serve_readyz(struct admin *a, struct evbuffer *b, const char **type)
{
    *type = "text/plain; charset=utf-8";
    enum daemon_phase ph = daemon_phase();
    if (ph == DAEMON_DRAINING || ph == DAEMON_STOPPING) {
        evbuffer_add_printf(b, "draining\n");
        return 503;
    }
    if (ph != DAEMON_READY) {
        evbuffer_add_printf(b, "%s\n", daemon_phase_name(ph));
        return 503;
    }
    struct route_snap *s = snap_routes(a);
    if (!s)
        return 500;
    char why[400];
    int code = 200;
    for (size_t i = 0; i < a->v.n_routes; i++) {
        if (route_not_ready(a, &s[i], i, why, sizeof(why))) {
            for (char *c = why; *c; c++)
                if (*c == '\n' || *c == '\r')
                    *c = ' '; /* one line */
            evbuffer_add_printf(b, "%s\n", why);
            code = 503;
            break;
        }
    }
    free(s);
    if (code == 200)
        evbuffer_add_printf(b, "ready\n");
    return code;
}

/* ---- /status.json ---------------------------------------------------------------------------- */

static void json_num(cJSON *o, const char *k, double v)
{
    if (isinf(v))
        cJSON_AddNullToObject(o, k);
    else
        cJSON_AddNumberToObject(o, k, v);
}

static cJSON *json_process(struct admin *a)
{
    struct proc_snap p;
    snap_proc(&p);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "version", CREDPROXY_VERSION);
    json_num(o, "pid", (double)getpid());
    cJSON_AddStringToObject(o, "phase", daemon_phase_name(daemon_phase()));
    json_num(o, "uptime_seconds", fmax(0, floor((double)time(NULL) - a->start_unix)));
    json_num(o, "start_time_seconds", a->start_unix);
    json_num(o, "resident_memory_bytes", (double)p.rss_bytes);
    json_num(o, "open_fds", (double)p.open_fds);
    json_num(o, "max_fds", (double)p.max_fds);
    json_num(o, "cpu_seconds", p.cpu_seconds);
    cJSON *w = cJSON_AddArrayToObject(o, "workers");
    for (int k = 0; k < a->v.n_workers; k++) {
        cJSON *e = cJSON_CreateObject();
        json_num(e, "index", k);
        json_num(e, "heartbeat_age_seconds", worker_silence(a, k));
        cJSON_AddItemToArray(w, e);
    }
    return o;
}

static cJSON *json_secret(const struct route_snap *s)
{
    cJSON *o = cJSON_CreateObject();
    const struct secret_source *src = s->src;
    cJSON_AddStringToObject(o, "source", src ? src->kind : "none");
    cJSON_AddStringToObject(o, "id", src && src->where ? src->where : "");
    cJSON_AddStringToObject(o, "version", s->version);
    cJSON_AddStringToObject(o, "stage", s->stage);
    json_num(o, "generation", (double)s->generation);
    json_num(o, "last_good_read_age_seconds", s->secret_age);
    if (!src)
        return o;
    const struct secret_source_stats *st = &src->stats;
    json_num(o, "reads_ok", (double)st->reads_ok);
    json_num(o, "reads_unchanged", (double)st->reads_unchanged);
    json_num(o, "reads_error", (double)st->reads_error);
    cJSON_AddStringToObject(o, "last_error", st->last_error);
    json_num(o, "last_error_time", (double)st->last_error_unix);
    cJSON *h = cJSON_AddArrayToObject(o, "recent_versions");
    unsigned have = st->n_seen < SECRET_SOURCE_HISTORY ? st->n_seen : SECRET_SOURCE_HISTORY;
    for (unsigned j = 0; j < have; j++) {
        const struct secret_version_seen *v =
            &st->seen[(st->n_seen - have + j) % SECRET_SOURCE_HISTORY];
        cJSON *e = cJSON_CreateObject();
        json_num(e, "time", (double)v->at_unix);
        cJSON_AddStringToObject(e, "version", v->version);
        json_num(e, "generation", (double)v->generation);
        cJSON_AddItemToArray(h, e);
    }
    return o;
}

static cJSON *json_route(const struct route_snap *s)
{
    const struct route_config *rc = s->r->cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", rc->name);
    cJSON *l = cJSON_AddArrayToObject(o, "listen");
    for (size_t j = 0; j < rc->n_listen; j++)
        cJSON_AddItemToArray(l, cJSON_CreateString(rc->listen[j]));
    if (rc->socket_path)
        cJSON_AddItemToArray(l, cJSON_CreateString(rc->socket_path));
    cJSON_AddBoolToObject(o, "listening", s->listening);
    cJSON_AddStringToObject(o, "client_auth", config_client_auth_name(rc->client_auth));
    bool eph = false;
    const char *fp = route_tls_fingerprint(s->r, &eph);
    cJSON *tls = cJSON_AddObjectToObject(o, "client_tls");
    cJSON_AddStringToObject(tls, "fingerprint_sha256", fp ? fp : "");
    cJSON_AddBoolToObject(tls, "ephemeral", fp && eph);
    cJSON *up = cJSON_AddObjectToObject(o, "upstream");
    cJSON_AddStringToObject(up, "user", s->user);
    cJSON_AddStringToObject(up, "host", s->host);
    json_num(up, "port", s->port);
    json_num(up, "last_login_age_seconds", s->login_age);
    cJSON *p = cJSON_AddObjectToObject(o, "pool");
    json_num(p, "clients_open", s->clients_open);
    json_num(p, "cl_active", (double)s->v[ST_G_CL_ACTIVE]);
    json_num(p, "cl_waiting", (double)s->v[ST_G_CL_WAITING]);
    json_num(p, "cl_idle", (double)s->v[ST_G_CL_IDLE]);
    json_num(p, "cl_login", (double)s->v[ST_G_CL_LOGIN]);
    json_num(p, "sv_active", (double)s->v[ST_G_SV_ACTIVE]);
    json_num(p, "sv_idle", (double)s->v[ST_G_SV_IDLE]);
    json_num(p, "sv_used", (double)s->v[ST_G_SV_USED]);
    json_num(p, "sv_opening", (double)s->v[ST_G_SV_OPENING]);
    json_num(p, "pool_size", rc->pool_size);
    json_num(p, "maxwait_seconds", (double)s->v[ST_G_MAX_WAIT_US] / 1e6);
    cJSON *t = cJSON_AddObjectToObject(o, "totals");
    json_num(t, "clients_accepted", (double)s->v[ST_CLIENTS_ACCEPTED]);
    json_num(t, "clients_refused",
             (double)(s->v[ST_REFUSED_AUTH] + s->v[ST_REFUSED_LIMIT] +
                      s->v[ST_REFUSED_HANDSHAKE_TIMEOUT] + s->v[ST_REFUSED_BAD_PACKET] +
                      s->v[ST_REFUSED_TLS_REQUIRED] + s->v[ST_REFUSED_UPSTREAM]));
    json_num(t, "commands", (double)s->v[ST_COMMANDS]);
    json_num(t, "bytes_in", (double)s->v[ST_BYTES_IN]);
    json_num(t, "bytes_out", (double)s->v[ST_BYTES_OUT]);
    json_num(t, "upstream_logins_ok", (double)s->v[ST_LOGIN_OK]);
    json_num(t, "upstream_logins_failed",
             (double)(s->v[ST_LOGIN_ACCESS_DENIED] + s->v[ST_LOGIN_OTHER_ERROR]));
    json_num(t, "reconnects_restored", (double)s->v[ST_RECONNECT_RESTORED]);
    json_num(t, "reconnects_refused_pinned", (double)s->v[ST_RECONNECT_REFUSED_PINNED]);
    json_num(t, "multiplexing_releases", (double)s->v[ST_RELEASES]);
    cJSON_AddItemToObject(o, "secret", json_secret(s));
    return o;
}

static cJSON *json_status(struct admin *a)
{
    struct route_snap *s = snap_routes(a);
    cJSON *o = cJSON_CreateObject();
    if (!s || !o) {
        free(s);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToObject(o, "process", json_process(a));
    cJSON *rs = cJSON_AddArrayToObject(o, "routes");
    for (size_t i = 0; i < a->v.n_routes; i++)
        cJSON_AddItemToArray(rs, json_route(&s[i]));
    struct stats_event ev[STATS_EVENTS];
    size_t n = stats_events(ev, STATS_EVENTS);
    cJSON *es = cJSON_AddArrayToObject(o, "events");
    for (size_t i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        json_num(e, "time", (double)ev[i].at_unix);
        cJSON_AddStringToObject(e, "route", ev[i].route);
        cJSON_AddStringToObject(e, "event", ev[i].what);
        cJSON_AddItemToArray(es, e);
    }
    free(s);
    return o;
}

static int serve_status_json(struct admin *a, struct evbuffer *b, const char **type)
{
    *type = "application/json";
    cJSON *o = json_status(a);
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text)
        return 500;
    evbuffer_add(b, text, strlen(text));
    evbuffer_add(b, "\n", 1);
    cJSON_free(text);
    return 200;
}

/* ---- /status --------------------------------------------------------------------------------- */

/* Appends s with &, <, >, " and ' escaped: every string on the page is data, not markup. */
static void html(struct evbuffer *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            evbuffer_add(b, "&amp;", 5);
            break;
        case '<':
            evbuffer_add(b, "&lt;", 4);
            break;
        case '>':
            evbuffer_add(b, "&gt;", 4);
            break;
        case '"':
            evbuffer_add(b, "&quot;", 6);
            break;
        case '\'':
            evbuffer_add(b, "&#39;", 5);
            break;
        default:
            evbuffer_add(b, s, 1);
        }
    }
}

/* A table cell of class cls (a constant, or NULL) holding the escaped text of fmt. */
__attribute__((format(printf, 3, 4))) static void td_class(struct evbuffer *b, const char *cls,
                                                           const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (cls)
        evbuffer_add_printf(b, "<td class=\"%s\">", cls);
    else
        evbuffer_add_printf(b, "<td>");
    html(b, text);
    evbuffer_add_printf(b, "</td>");
}

#define td(b, ...) td_class(b, NULL, __VA_ARGS__)

static void th_row(struct evbuffer *b, const char *const *cols)
{
    evbuffer_add_printf(b, "<tr>");
    for (; *cols; cols++)
        evbuffer_add_printf(b, "<th>%s</th>", *cols); /* constant headings */
    evbuffer_add_printf(b, "</tr>\n");
}

static void fmt_age(char *out, size_t len, double s)
{
    if (isinf(s) || s < 0)
        snprintf(out, len, "never");
    else if (s < 120)
        snprintf(out, len, "%.0f s", s);
    else if (s < 7200)
        snprintf(out, len, "%.0f min", s / 60);
    else
        snprintf(out, len, "%.1f h", s / 3600);
}

static void fmt_time(char *out, size_t len, int64_t t)
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%SZ", &tm);
}

static void status_routes(struct evbuffer *b, const struct route_snap *s, size_t n)
{
    static const char *const cols[] = {
        "route", "listen", "client auth", "client TLS certificate (SHA-256)", "upstream", NULL};
    evbuffer_add_printf(b, "<h2>Routes</h2>\n<table>\n");
    th_row(b, cols);
    for (size_t i = 0; i < n; i++) {
        const struct route_config *rc = s[i].r->cfg;
        char listen[512] = "";
        for (size_t j = 0; j < rc->n_listen; j++)
            snprintf(listen + strlen(listen), sizeof(listen) - strlen(listen), "%s%s",
                     j ? ", " : "", rc->listen[j]);
        if (rc->socket_path)
            snprintf(listen + strlen(listen), sizeof(listen) - strlen(listen), "%s%s",
                     rc->n_listen ? ", " : "", rc->socket_path);
        bool eph = false;
        const char *fp = route_tls_fingerprint(s[i].r, &eph);
        evbuffer_add_printf(b, "<tr>");
        td(b, "%s", rc->name);
        td(b, "%s%s", listen, s[i].listening ? "" : " (not listening)");
        td(b, "%s", config_client_auth_name(rc->client_auth));
        td_class(b, "fp", "%s%s", fp ? fp : "no TLS", fp && eph ? " (ephemeral)" : "");
        td(b, "%s@%s:%d", s[i].user, s[i].host, s[i].port);
        evbuffer_add_printf(b, "</tr>\n");
    }
    evbuffer_add_printf(b, "</table>\n");
}

static void status_pools(struct evbuffer *b, const struct route_snap *s, size_t n)
{
    static const char *const cols[] = {
        "route",   "cl_active",  "cl_waiting", "cl_idle", "cl_login", "sv_active",  "sv_idle",
        "sv_used", "sv_opening", "pool_size",  "maxwait", "commands", "last login", NULL};
    evbuffer_add_printf(b, "<h2>Pools</h2>\n<table class=\"num\">\n");
    th_row(b, cols);
    for (size_t i = 0; i < n; i++) {
        const uint64_t *v = s[i].v;
        char age[32];
        fmt_age(age, sizeof(age), s[i].login_age);
        evbuffer_add_printf(b, "<tr>");
        td(b, "%s", s[i].r->cfg->name);
        td(b, "%" PRIu64, v[ST_G_CL_ACTIVE]);
        td(b, "%" PRIu64, v[ST_G_CL_WAITING]);
        td(b, "%" PRIu64, v[ST_G_CL_IDLE]);
        td(b, "%" PRIu64, v[ST_G_CL_LOGIN]);
        td(b, "%" PRIu64, v[ST_G_SV_ACTIVE]);
        td(b, "%" PRIu64, v[ST_G_SV_IDLE]);
        td(b, "%" PRIu64, v[ST_G_SV_USED]);
        td(b, "%" PRIu64, v[ST_G_SV_OPENING]);
        td(b, "%d", s[i].r->cfg->pool_size);
        td(b, "%.3f s", (double)v[ST_G_MAX_WAIT_US] / 1e6);
        td(b, "%" PRIu64, v[ST_COMMANDS]);
        td(b, "%s%s", age, isinf(s[i].login_age) ? "" : " ago");
        evbuffer_add_printf(b, "</tr>\n");
    }
    evbuffer_add_printf(b, "</table>\n");
}

static void status_secrets(struct evbuffer *b, const struct route_snap *s, size_t n)
{
    static const char *const cols[] = {"route",
                                       "source",
                                       "id or file",
                                       "version",
                                       "stage",
                                       "last good read",
                                       "reads ok/unchanged/error",
                                       "last error",
                                       NULL};
    evbuffer_add_printf(b, "<h2>Secrets</h2>\n<table>\n");
    th_row(b, cols);
    for (size_t i = 0; i < n; i++) {
        const struct secret_source *src = s[i].src;
        char age[32];
        fmt_age(age, sizeof(age), s[i].secret_age);
        evbuffer_add_printf(b, "<tr>");
        td(b, "%s", s[i].r->cfg->name);
        td(b, "%s", src ? src->kind : "none");
        td_class(b, "wrap", "%s", src && src->where ? src->where : "");
        td_class(b, "wrap", "%s (generation %" PRIu64 ")", s[i].version, s[i].generation);
        td(b, "%s", s[i].stage);
        td(b, "%s%s", age, isinf(s[i].secret_age) ? "" : " ago");
        if (src)
            td(b, "%" PRIu64 " / %" PRIu64 " / %" PRIu64, src->stats.reads_ok,
               src->stats.reads_unchanged, src->stats.reads_error);
        else
            td(b, "-");
        td(b, "%s", src && src->stats.last_error[0] ? src->stats.last_error : "none");
        evbuffer_add_printf(b, "</tr>\n");
    }
    evbuffer_add_printf(b, "</table>\n");
}

static void status_events(struct evbuffer *b, const struct route_snap *s, size_t n)
{
    static const char *const cols[] = {"time", "route", "event", NULL};
    char when[40], what[200];
    evbuffer_add_printf(b, "<h2>Recent rotations and reconnects</h2>\n<table>\n");
    th_row(b, cols);
    for (size_t i = 0; i < n; i++) {
        const struct secret_source *src = s[i].src;
        if (!src)
            continue;
        const struct secret_source_stats *st = &src->stats;
        unsigned have = st->n_seen < SECRET_SOURCE_HISTORY ? st->n_seen : SECRET_SOURCE_HISTORY;
        for (unsigned j = 0; j < have; j++) {
            const struct secret_version_seen *v =
                &st->seen[(st->n_seen - have + j) % SECRET_SOURCE_HISTORY];
            fmt_time(when, sizeof(when), v->at_unix);
            snprintf(what, sizeof(what), "secret version %s loaded (generation %" PRIu64 ")",
                     v->version, v->generation);
            evbuffer_add_printf(b, "<tr>");
            td(b, "%s", when);
            td(b, "%s", s[i].r->cfg->name);
            td(b, "%s", what);
            evbuffer_add_printf(b, "</tr>\n");
        }
    }
    struct stats_event ev[STATS_EVENTS];
    size_t ne = stats_events(ev, STATS_EVENTS);
    for (size_t i = 0; i < ne; i++) {
        fmt_time(when, sizeof(when), ev[i].at_unix);
        evbuffer_add_printf(b, "<tr>");
        td(b, "%s", when);
        td(b, "%s", ev[i].route);
        td(b, "%s", ev[i].what);
        evbuffer_add_printf(b, "</tr>\n");
    }
    evbuffer_add_printf(b, "</table>\n");
}

static const char STATUS_STYLE[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}"
    "h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.25em .6em;"
    "text-align:left;vertical-align:top}th{background:#f0f0f0;font-weight:600}"
    "table.num td{text-align:right}table.num td:first-child{text-align:left}"
    ".meta{color:#555}td.fp{font:12px monospace;word-break:break-all;max-width:26em}"
    "td.wrap{word-break:break-all;max-width:22em}";

static int serve_status(struct admin *a, struct evbuffer *b, const char **type)
{
    *type = "text/html; charset=utf-8";
    struct route_snap *s = snap_routes(a);
    if (!s)
        return 500;
    struct proc_snap p;
    snap_proc(&p);
    char up[32], started[40];
    fmt_age(up, sizeof(up), fmax(0, (double)time(NULL) - a->start_unix));
    fmt_time(started, sizeof(started), (int64_t)a->start_unix);
    evbuffer_add_printf(b,
                        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                        "<title>credproxy status</title><style>%s</style></head><body>\n"
                        "<h1>credproxy %s</h1>\n<p class=\"meta\">",
                        STATUS_STYLE, CREDPROXY_VERSION);
    char meta[512];
    snprintf(meta, sizeof(meta),
             "pid %d, %s; up %s (since %s); %d workers; RSS %.1f MiB; %ld of %ld file "
             "descriptors open",
             (int)getpid(), daemon_phase_name(daemon_phase()), up, started, a->v.n_workers,
             (double)p.rss_bytes / (1024.0 * 1024.0), p.open_fds, p.max_fds);
    html(b, meta);
    evbuffer_add_printf(b, "</p>\n");
    status_routes(b, s, a->v.n_routes);
    status_pools(b, s, a->v.n_routes);
    status_secrets(b, s, a->v.n_routes);
    status_events(b, s, a->v.n_routes);
    evbuffer_add_printf(b, "<p class=\"meta\">Also: /metrics, /healthz, /readyz, "
                           "/status.json.</p>\n</body></html>\n");
    free(s);
    return 200;
}

/* ---- The server -------------------------------------------------------------------------- */

struct endpoint {
    const char *path;
    int (*serve)(struct admin *a, struct evbuffer *b, const char **type);
};

static const struct endpoint endpoints[] = {
    {"/metrics", serve_metrics}, {"/healthz", serve_healthz},         {"/readyz", serve_readyz},
    {"/status", serve_status},   {"/status.json", serve_status_json}, {"/", serve_status},
};

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Content-Security-Policy",
                      "default-src 'none'; style-src 'unsafe-inline'");
    evhttp_send_reply(req, code, reason, body);
}

static const char *reason_of(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const struct endpoint *ep = NULL;
    for (size_t i = 0; path && i < sizeof(endpoints) / sizeof(endpoints[0]); i++)
        if (strcmp(path, endpoints[i].path) == 0)
            ep = &endpoints[i];
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    const char *type = "text/plain; charset=utf-8";
    int code;
    if (!ep) {
        evbuffer_add_printf(b, "not found; try /metrics, /healthz, /readyz, /status, "
                               "/status.json\n");
        code = 404;
    } else if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        evbuffer_add_printf(b, "method not allowed; use GET\n");
        code = 405;
    } else {
        code = ep->serve(a, b, &type);
        if (code == 500) {
            evbuffer_drain(b, evbuffer_get_length(b));
            evbuffer_add_printf(b, "out of memory\n");
            type = "text/plain; charset=utf-8";
        }
    }
    reply(req, code, reason_of(code), type, b);
    evbuffer_free(b);
}

void admin_set_view(struct admin *a, const struct admin_view *v)
{
    for (size_t i = 0; i < a->n_probes; i++)
        if (a->probes[i].login)
            upstream_login_cancel(a->probes[i].login);
    free(a->probes);
    a->v = *v;
    a->n_probes = v->n_routes;
    a->probes = calloc(a->n_probes ? a->n_probes : 1, sizeof(*a->probes));
    if (!a->probes)
        a->n_probes = 0;
    for (size_t i = 0; i < a->n_probes; i++) {
        a->probes[i].a = a;
        a->probes[i].route = i;
    }
}

struct admin *admin_start(struct event_base *base, const char *listen, const struct admin_view *v,
                          char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof(*a));
    if (!a || !(a->http = evhttp_new(base))) {
        snprintf(err, errlen, "admin_listen: out of memory");
        free(a);
        return NULL;
    }
    a->base = base;
    a->start_unix = process_start_unix();
    admin_set_view(a, v);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_max_headers_size(a->http, 16384);
    evhttp_set_max_body_size(a->http, 4096);
    evhttp_set_gencb(a->http, handle, a);
    /* The config allowed only loopback unless admin_listen_public; the listener binds it as is. */
    struct listener_set set;
    char why[512];
    if (!listener_open_tcp(listen, false, &set, why, sizeof(why))) {
        snprintf(err, errlen, "admin_listen: %s", why);
        admin_free(a);
        return NULL;
    }
    for (size_t i = 0; i < set.n; i++) {
        if (!evhttp_accept_socket_with_handle(a->http, set.fds[i])) {
            snprintf(err, errlen, "admin_listen: cannot serve %s", set.addrs[i]);
            for (size_t j = i; j < set.n; j++)
                close(set.fds[j]);
            admin_free(a);
            return NULL;
        }
    }
    char addrs[LISTENER_MAX_ADDRS * 66] = "";
    for (size_t i = 0; i < set.n; i++)
        snprintf(addrs + strlen(addrs), sizeof(addrs) - strlen(addrs), "%s%s", i ? ", " : "",
                 set.addrs[i]);
    log_info("admin endpoint on http://%s/ (%s): /metrics /healthz /readyz /status", listen, addrs);
    return a;
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n_probes; i++)
        if (a->probes[i].login)
            upstream_login_cancel(a->probes[i].login);
    free(a->probes);
    if (a->http)
        evhttp_free(a->http);
    free(a);
}
