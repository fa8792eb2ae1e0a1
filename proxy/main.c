/* credproxy: start-up, signals and shutdown. */
#include <errno.h>
#include <sched.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/crypto.h>

#include "auth/users.h"
#include "conf/config.h"
#include "conf/log.h"
#include "proxy/admin.h"
#include "proxy/daemon.h"
#include "proxy/drain.h"
#include "proxy/listener.h"
#include "proxy/reload.h"
#include "proxy/route.h"
#include "proxy/stats.h"
#include "proxy/upstream.h"
#include "proxy/worker.h"

/* Everything the main thread owns. */
struct daemon {
    struct config cfg;
    struct event_base *base; /* signals, secret sources, the start-up probe */
    struct evdns_base *dns;
    struct route_table routes; /* reloads add and remove routes (reload.h) */
    struct worker *workers;
    int n_workers;
    struct admin *admin; /* the HTTP admin endpoint (admin_listen), or NULL */
};

/* cJSON copies secret values into its own heap blocks: wipe every block it frees. */
static void wiping_free(void *p)
{
    if (p)
        OPENSSL_cleanse(p, malloc_usable_size(p));
    free(p);
}

/* Reads a password from standard input (never argv) and prints its users-file hash. */
static int hash_password(void)
{
    char line[1024];
    if (!fgets(line, sizeof(line), stdin)) {
        fprintf(stderr, "credproxy: --hash-password reads the password from standard input\n");
        return 2;
    }
    line[strcspn(line, "\r\n")] = 0;
    char out[42];
    local_users_format_hash(line, strlen(line), out);
    OPENSSL_cleanse(line, sizeof(line));
    printf("%s\n", out);
    return 0;
}

/*
 * workers = 0: one event loop per two CPUs this process may run on, at least
 * one. credproxy sits next to the application (and, in the benchmark, the
 * database) on the same CPUs; measured on 2 vCPUs, a second loop costs as
 * much CPU per query and gives fewer queries a second than one (bench/run.sh
 * --only workers; docs/bench.md). Affinity (taskset, cpusets) counts, not
 * the host's CPUs.
 */
static int default_workers(void)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    return n / 2 > 1 ? n / 2 : 1;
}

static int open_listeners(struct daemon *d)
{
    if (d->cfg.upgrade)
        log_info("--upgrade: sharing the listeners of a running credproxy, if any; send it "
                 "SIGTERM once this one is ready");
    for (size_t i = 0; i < d->routes.n; i++) {
        struct route *r = d->routes.all[i];
        struct route_fds fds;
        if (!route_listeners_open(r->cfg, d->n_workers, d->cfg.upgrade, &fds))
            return -1;
        for (size_t j = 0; j < fds.n; j++) {
            int fd = fds.fd[j];
            fds.fd[j] = -1; /* worker_listen owns it from here, even when it fails */
            if (worker_listen(&d->workers[fds.worker[j]], fd, r) < 0) {
                log_error("route %s: cannot add listener", r->cfg->name);
                route_fds_close(&fds);
                return -1;
            }
        }
        route_fds_close(&fds);
    }
    return listener_publish_unix() ? 0 : -1; /* only once all are open: see listener.h */
}

static void drained(void *arg)
{
    event_base_loopexit(((struct daemon *)arg)->base, NULL);
}

/* SIGTERM drains (drain.h); a second SIGTERM, or SIGINT, stops at once. */
static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct daemon *d = arg;
    if (sig == SIGTERM &&
        drain_begin(d->base, d->workers, d->n_workers, d->cfg.shutdown_timeout_ms, drained, d))
        return;
    log_info("received signal %d, stopping at once", (int)sig);
    event_base_loopexit(d->base, NULL);
}

/*
 * Signals an operator may send that must not end the daemon (their default
 * action would, silently; systemd even counts a SIGHUP death as clean).
 * SIGHUP reloads the configuration (proxy/reload.c), SIGUSR1 reopens the log file, SIGUSR2 is
 * logged and ignored.
 */
static void other_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    if (sig == SIGHUP)
        reload_run();
    else if (sig == SIGUSR1 && log_reopen())
        log_info("received SIGUSR1: reopening the log file");
    else if (sig == SIGUSR1)
        log_warn("received SIGUSR1: logs go to standard error (no log_file), there is no log "
                 "file to reopen; ignoring it");
    else
        log_warn("received signal %d; ignoring it", (int)sig);
}

static int start(struct daemon *d)
{
    char err[1024];
    d->base = event_base_new();
    d->dns = d->base ? evdns_base_new(d->base, EVDNS_BASE_INITIALIZE_NAMESERVERS) : NULL;
    if (d->base && !d->dns)
        d->dns = evdns_base_new(d->base, 0);
    d->routes.n = d->cfg.n_routes;
    d->routes.all = calloc(d->routes.n ? d->routes.n : 1, sizeof(*d->routes.all));
    d->routes.active = calloc(d->routes.n ? d->routes.n : 1, sizeof(*d->routes.active));
    for (size_t i = 0; d->routes.all && i < d->routes.n; i++)
        if (!(d->routes.all[i] = calloc(1, sizeof(struct route))))
            d->routes.n = i; /* out of memory: failed below */
    d->n_workers = d->cfg.workers > 0 ? d->cfg.workers : default_workers();
    if (d->n_workers < 1)
        d->n_workers = 1;
    d->workers = calloc((size_t)d->n_workers, sizeof(*d->workers));
    if (!d->base || !d->dns || !d->routes.all || !d->routes.active ||
        d->routes.n != d->cfg.n_routes || !d->workers) {
        log_error("out of memory at start-up");
        return -1;
    }
    for (size_t i = 0; i < d->routes.n; i++) {
        struct route *r = d->routes.all[i];
        d->routes.active[i] = r;
        r->index = i;
        if (!route_init(r, &d->cfg.routes[i], d->base, err, sizeof(err))) {
            log_error("%s", err);
            d->routes.n = i + 1; /* destroy what was set up, including this one */
            return -1;
        }
        /* One block of counters per worker; without one a route counts nowhere, but works. */
        r->stats = stats_new(d->n_workers);
    }
    d->routes.n_active = d->routes.n;
    for (int k = 0; k < d->n_workers; k++) {
        if (worker_init(&d->workers[k], k, d->n_workers) < 0) {
            log_error("cannot create worker %d", k);
            return -1;
        }
    }
    if (open_listeners(d) < 0)
        return -1;
    /* Before workers accept anyone, so the first clients wait for the real profile. */
    for (size_t i = 0; i < d->routes.n; i++)
        route_probe_start(d->routes.all[i], d->base, d->dns);
    for (int k = 0; k < d->n_workers; k++) {
        if (worker_start(&d->workers[k]) != 0) {
            log_error("cannot start worker thread %d", k);
            d->n_workers = k;
            return -1;
        }
    }
    if (d->cfg.admin_listen) {
        struct admin_view v = {d->routes.active, d->routes.n_active, d->workers, d->n_workers,
                               d->dns};
        d->admin = admin_start(d->base, d->cfg.admin_listen, &v, err, sizeof(err));
        if (!d->admin) {
            log_error("%s", err);
            return -1;
        }
    }
    return 0;
}

static void stop(struct daemon *d)
{
    admin_free(d->admin); /* first: it reads the routes and workers freed below */
    d->admin = NULL;
    for (int k = 0; k < d->n_workers; k++)
        if (d->workers[k].thread)
            worker_stop(&d->workers[k]);
    for (int k = 0; d->workers && k < d->n_workers; k++)
        worker_destroy(&d->workers[k]);
    free(d->workers);
    drain_free(); /* after the workers are joined: they report to its events until then */
    for (size_t i = 0; d->routes.all && i < d->routes.n; i++)
        route_probe_cancel(d->routes.all[i]);
    reload_stop_sources();
    for (int i = 0; d->base && i < 8; i++)
        event_base_loop(d->base, EVLOOP_NONBLOCK); /* deferred frees of what was just freed */
    for (size_t i = 0; d->routes.all && i < d->routes.n; i++) {
        struct route *r = d->routes.all[i];
        if (r->cfg && r->cfg->socket_path && !r->removed)
            listener_unlink_own_unix(r->cfg->socket_path);
        if (r->cfg)
            route_destroy(r);
        free(r);
    }
    free(d->routes.all);
    free(d->routes.active);
    if (d->dns)
        evdns_base_free(d->dns, 0);
    if (d->base)
        event_base_free(d->base);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--hash-password") == 0)
        return hash_password();
    cJSON_Hooks hooks = {.malloc_fn = malloc, .free_fn = wiping_free};
    cJSON_InitHooks(&hooks);
    struct daemon d = {0};
    struct config_errors errs = {0};
    bool ok = config_load(&d.cfg, argc, argv, NULL, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "credproxy: %s\n", errs.lines[i]);
    config_errors_free(&errs);
    if (!ok) {
        config_free(&d.cfg);
        return 2;
    }
    if (d.cfg.show_help || d.cfg.show_man || d.cfg.show_version || d.cfg.check_only) {
        if (d.cfg.show_help)
            config_print_help(stdout, argv[0]);
        else if (d.cfg.show_man)
            config_print_man(stdout);
        else if (d.cfg.show_version)
            printf("credproxy %s\n", CREDPROXY_VERSION);
        else
            printf("credproxy: configuration OK (%zu route%s)\n", d.cfg.n_routes,
                   d.cfg.n_routes == 1 ? "" : "s");
        config_free(&d.cfg);
        return 0;
    }
    log_set_level(d.cfg.log_level);
    log_set_format(d.cfg.log_format);
    char log_err[512];
    if (d.cfg.log_file && !log_open_file(d.cfg.log_file, log_err, sizeof(log_err))) {
        fprintf(stderr, "credproxy: %s\n", log_err);
        config_free(&d.cfg);
        return 2;
    }
    /*
     * Not dumpable: no core dump (it would hold the current password), and processes of the
     * same user cannot ptrace credproxy or read its /proc/PID/mem. Set before any secret is
     * read; the systemd unit's LimitCORE=0 is then a second fence, not the only one.
     */
    if (!d.cfg.allow_core_dumps && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        log_warn("cannot turn off core dumps (PR_SET_DUMPABLE): %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    /*
     * Until the loop handles them (other_signal_cb) these wait, blocked: never fatal, and not
     * lost either (a SIGHUP sent while the secret is read at start-up reloads once credproxy
     * is ready). Every thread started meanwhile inherits the mask, so only this one ever
     * takes them; a credential_process child gets an empty mask (secrets/aws_process.c).
     */
    sigset_t later;
    sigemptyset(&later);
    sigaddset(&later, SIGHUP);
    sigaddset(&later, SIGUSR1);
    sigaddset(&later, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &later, NULL);
    /* From here a stalled reader of stderr delays no worker: lines go through the log thread. */
    if (!log_start())
        log_warn("cannot start the log thread; logging synchronously");
    evthread_use_pthreads();
    int rc = 1;
    if (start(&d) == 0) {
        struct event *sigterm = evsignal_new(d.base, SIGTERM, signal_cb, &d);
        struct event *sigint = evsignal_new(d.base, SIGINT, signal_cb, &d);
        evsignal_add(sigterm, NULL);
        evsignal_add(sigint, NULL);
        static const int others[] = {SIGHUP, SIGUSR1, SIGUSR2};
        struct event *other[3];
        for (int i = 0; i < 3; i++) {
            other[i] = evsignal_new(d.base, others[i], other_signal_cb, &d);
            if (other[i])
                evsignal_add(other[i], NULL);
        }
        if (!daemon_watchdog_start(d.base, d.workers, d.n_workers))
            log_error("cannot start the systemd watchdog timer; systemd will restart credproxy");
        struct reload_target rt = {.cfg = &d.cfg,
                                   .routes = &d.routes,
                                   .admin = d.admin,
                                   .dns = d.dns,
                                   .workers = d.workers,
                                   .n_workers = d.n_workers,
                                   .base = d.base,
                                   .argc = argc,
                                   .argv = argv};
        reload_init(&rt);
        log_info("credproxy %s ready", CREDPROXY_VERSION);
        /* start() read every route's secret (a failed first read is fatal) and listens. */
        daemon_set_phase(DAEMON_READY, "listening, secrets loaded");
        pthread_sigmask(SIG_UNBLOCK, &later, NULL); /* one that waited runs in the loop */
        event_base_loop(d.base, EVLOOP_NO_EXIT_ON_EMPTY);
        event_free(sigterm);
        event_free(sigint);
        for (int i = 0; i < 3; i++)
            if (other[i])
                event_free(other[i]);
        rc = 0;
    }
    daemon_set_phase(DAEMON_STOPPING, "exiting");
    daemon_watchdog_stop();
    stop(&d);
    reload_shutdown(); /* what reloads replaced, now that no worker or route holds it */
    config_free(&d.cfg);
    log_info("credproxy stopped");
    log_stop(2000); /* flush, but never hang an exit on a reader that stopped reading */
    return rc;
}
