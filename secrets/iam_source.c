/* RDS IAM auth tokens as a route's credentials: made on the main loop, never on a worker. */
#include "secrets/iam_source.h"

#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/log.h"
#include "secrets/aws_creds.h"
#include "secrets/aws_endpoint.h"
#include "secrets/aws_setup.h"
#include "secrets/rds_token.h"
#include "secrets/secure_mem.h"

/*
 * A token is valid 15 minutes; a new one is made every 5, so the one a login takes is never
 * older than that (the bound is 10) and a connection attempt always has 10 left.
 */
#define TOKEN_REFRESH_SEC 300
/* After a failure to get AWS credentials, try again this soon. */
#define RETRY_SEC 5
/* A forced remake (after a refused login) waits this long after the previous one. */
#define MIN_FORCED_GAP_MS 1000

struct iam_source {
    struct secret_source source; /* first: the route sees only this */
    struct aws_ctx ctx;
    char *route;
    char *user, *host;           /* the route's overrides, or NULL */
    int port;                    /* the route's override, or 0 */
    struct secret_source *inner; /* the route's secret, or NULL */
    struct secret_store *inner_store;
    struct secret_store *store; /* where the tokens go */
    struct aws_creds_cache *cc;
    struct aws_fetch *fetch; /* credentials being fetched for a token */
    struct event *timer_ev;  /* the next scheduled token */
    struct event *now_ev;    /* a token now: the secret changed, or a forced remake */
    int force;               /* atomic: refresh_now() asked for fresh AWS credentials */
    bool again;              /* a token was asked for while a fetch was in flight */
    bool again_fresh;        /* ... and it must use freshly fetched AWS credentials */
    int64_t last_forced_ms;  /* monotonic time of the last forced remake */
    bool starting, start_end, start_ok;
    char start_err[512];
    char fail_key[160]; /* the failure last logged; "" while tokens are made */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void schedule(struct iam_source *s, long sec)
{
    struct timeval tv = {sec > 0 ? sec : 1, 0};
    evtimer_add(s->timer_ev, &tv);
}

/* Start-up failures end the wait in iam_source_open(); later ones are logged once per kind. */
static void report_failure(struct iam_source *s, const char *msg)
{
    secret_source_read_error(&s->source, msg);
    if (s->starting) {
        s->start_end = true;
        s->start_ok = false;
        snprintf(s->start_err, sizeof(s->start_err), "%s", msg);
        return;
    }
    if (strncmp(msg, s->fail_key, sizeof(s->fail_key) - 1) != 0) {
        log_error("route %s: cannot make an IAM auth token: %s; logins use the last one while it "
                  "is valid",
                  s->route, msg);
        snprintf(s->fail_key, sizeof(s->fail_key), "%.159s", msg);
    }
    schedule(s, RETRY_SEC);
}

/* ---- Making a token ------------------------------------------------------------------------ */

/* The next token in TOKEN_REFRESH_SEC, or sooner when the AWS credentials expire before. */
static long next_token_in(const struct aws_credentials *c, time_t now)
{
    long in = TOKEN_REFRESH_SEC;
    if (c->expiration) {
        long left = (long)(c->expiration - now) - 60;
        if (left < in)
            in = left < RETRY_SEC ? RETRY_SEC : left;
    }
    return in;
}

/* Publishes a token signed with c for the user, host and port of the route and its secret. */
static void make_token(struct iam_source *s, const struct aws_credentials *c)
{
    struct creds *base = s->inner_store ? secret_store_get(s->inner_store) : NULL;
    const char *user = s->user ? s->user : base ? base->username : NULL;
    const char *host = s->host ? s->host : base ? base->host : NULL;
    int port = s->port > 0 ? s->port : base ? base->port : 3306;
    char msg[256];
    if (!user || !host) {
        snprintf(msg, sizeof(msg), "no database %s: set upstream_%s, or put it in the secret",
                 user ? "host" : "user", user ? "host" : "user");
        creds_unref(base);
        report_failure(s, msg);
        return;
    }
    time_t now = time(NULL);
    /*
     * RDS accepts a token signed for the database's own region only: an RDS endpoint name says
     * which (its host may change with the secret), whatever region the secret was read from.
     */
    char host_region[64];
    const char *region =
        aws_rds_host_region(host, host_region, sizeof(host_region)) ? host_region : s->ctx.region;
    struct rds_token_signer signer = {c->access_key_id, c->secret_access_key, c->session_token,
                                      region};
    char *token = rds_token_make(&signer, host, port, user, now);
    char version[64];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(version, sizeof(version), "IAM token %Y-%m-%dT%H:%M:%SZ", &tm);
    struct creds *t =
        token ? creds_new(user, token, host, port, base ? base->dbname : NULL, version) : NULL;
    secure_free(token); /* wipes it: the snapshot holds the only copy now */
    if (!t) {
        creds_unref(base);
        report_failure(s, "out of memory");
        return;
    }
    t->iam = true;
    log_debug("route %s: new IAM auth token for '%s' at %s:%d (region %s, AWS credentials from "
              "%s)",
              s->route, user, host, port, region, aws_creds_cache_source(s->cc));
    if (s->fail_key[0])
        log_info("route %s: IAM auth tokens are made again", s->route);
    s->fail_key[0] = '\0';
    creds_unref(base);
    secret_store_publish(s->store, t);
    secret_source_read_ok(&s->source, true, t->version, t->generation);
    schedule(s, next_token_in(c, now));
    if (s->starting) {
        s->start_end = true;
        s->start_ok = true;
    }
}

static void start_token(struct iam_source *s);

static void got_credentials(struct aws_credentials *c, const char *err, void *arg)
{
    struct iam_source *s = arg;
    s->fetch = NULL;
    if (c) {
        make_token(s, c);
        aws_credentials_unref(c);
    } else {
        char msg[512];
        snprintf(msg, sizeof(msg), "AWS credentials from %s: %s", aws_creds_cache_source(s->cc),
                 err ? err : "unknown error");
        report_failure(s, msg);
    }
    if (s->again) {
        s->again = false;
        if (s->again_fresh)
            aws_creds_cache_invalidate(s->cc);
        s->again_fresh = false;
        start_token(s);
    }
}

/* Gets AWS credentials (cached, or freshly fetched after a forced remake), then a token. */
static void start_token(struct iam_source *s)
{
    if (s->fetch) {
        s->again = true; /* the one in flight may predate what asked for this one */
        return;
    }
    evtimer_del(s->timer_ev);
    s->fetch = aws_creds_cache_get(s->cc, got_credentials, s);
    if (!s->fetch)
        report_failure(s, "out of memory");
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_token(arg);
}

/* A forced remake drops the cached AWS credentials first, at most once a MIN_FORCED_GAP_MS. */
static void on_now(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct iam_source *s = arg;
    if (__atomic_exchange_n(&s->force, 0, __ATOMIC_ACQ_REL)) {
        int64_t since = now_ms() - s->last_forced_ms;
        if (since < MIN_FORCED_GAP_MS) {
            __atomic_store_n(&s->force, 1, __ATOMIC_RELEASE);
            struct timeval tv = {0, (suseconds_t)((MIN_FORCED_GAP_MS - since) * 1000)};
            event_add(s->now_ev, &tv);
            return;
        }
        s->last_forced_ms = now_ms();
        log_info("route %s: making a new IAM auth token with AWS credentials fetched again from "
                 "%s",
                 s->route, aws_creds_cache_source(s->cc));
        if (s->fetch) {
            s->again = s->again_fresh = true; /* after the one in flight, which may be cached */
            return;
        }
        aws_creds_cache_invalidate(s->cc);
    }
    start_token(s);
}

/* ---- The secret_source interface ------------------------------------------------------------- */

/* Any thread: a login was refused, or no candidate is left. */
static void source_refresh_now(struct secret_source *src)
{
    struct iam_source *s = (struct iam_source *)src;
    secret_source_refresh_now(s->inner); /* the user or host may have changed too */
    __atomic_store_n(&s->force, 1, __ATOMIC_RELEASE);
    if (s->now_ev)
        event_active(s->now_ev, EV_TIMEOUT, 0);
}

/* The secret changed (main loop): a token for its user and host. */
static void inner_published(void *arg)
{
    struct iam_source *s = arg;
    if (s->now_ev)
        event_active(s->now_ev, EV_TIMEOUT, 0);
}

static void iam_source_free(struct iam_source *s)
{
    aws_fetch_cancel(s->fetch);
    if (s->inner_store)
        secret_store_on_publish(s->inner_store, NULL, NULL);
    secret_source_free(s->inner);
    if (s->inner_store)
        secret_store_free(s->inner_store);
    if (s->timer_ev)
        event_free(s->timer_ev);
    if (s->now_ev)
        event_free(s->now_ev);
    aws_creds_cache_free(s->cc);
    aws_ctx_cleanup(&s->ctx);
    free(s->route);
    free(s->user);
    free(s->host);
    free(s);
}

static void source_destroy(struct secret_source *src)
{
    iam_source_free((struct iam_source *)src);
}

/* The route's secret's period (the tokens' own lifetime is fixed). */
static void source_set_period(struct secret_source *src, int ms)
{
    secret_source_set_period(((struct iam_source *)src)->inner, ms);
}

/* ---- Set-up ---------------------------------------------------------------------------------- */

struct secret_source *iam_source_open(struct event_base *base, const struct iam_source_config *cfg,
                                      struct secret_source *inner, struct secret_store *inner_store,
                                      struct secret_store *store, char *err, size_t errlen)
{
    struct iam_source *s = calloc(1, sizeof(*s));
    if (!s) {
        secret_source_free(inner);
        secret_store_free(inner_store);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->inner = inner;
    s->inner_store = inner_store;
    s->store = store;
    s->port = cfg->port;
    s->source.kind = "iam";
    s->source.refresh_now = source_refresh_now;
    s->source.destroy = source_destroy;
    s->source.set_period = source_set_period;
    s->route = strdup(cfg->route);
    s->source.where = s->route;
    s->user = cfg->user ? strdup(cfg->user) : NULL;
    s->host = cfg->host ? strdup(cfg->host) : NULL;
    if (!s->route || (cfg->user && !s->user) || (cfg->host && !s->host) ||
        !aws_ctx_setup(&s->ctx, base, cfg->timeout_ms)) {
        snprintf(err, errlen, "out of memory");
        iam_source_free(s);
        return NULL;
    }
    struct creds *c = inner_store ? secret_store_get(inner_store) : NULL;
    const char *host = s->host ? s->host : c ? c->host : NULL;
    char why[512];
    struct aws_provider *p = NULL;
    struct aws_region_hint hint = {.region = cfg->region,
                                   .arn = cfg->secret_id,
                                   .rds_host = host,
                                   .purpose = " for IAM tokens"};
    bool ok = aws_ctx_resolve_region(&s->ctx, &hint, why, sizeof(why)) &&
              (p = aws_provider_chain(&s->ctx, why, sizeof(why)));
    char host_region[64] = "";
    if (ok && !aws_rds_host_region(host, host_region, sizeof(host_region)))
        snprintf(host_region, sizeof(host_region), "%s", s->ctx.region);
    creds_unref(c);
    if (!ok) {
        snprintf(err, errlen, "IAM authentication: %s", why);
        iam_source_free(s);
        return NULL;
    }
    s->cc = aws_creds_cache_new(&s->ctx, p);
    s->timer_ev = evtimer_new(base, on_timer, s);
    s->now_ev = event_new(base, -1, 0, on_now, s);
    if (!s->cc || !s->timer_ev || !s->now_ev) {
        snprintf(err, errlen, "out of memory");
        iam_source_free(s);
        return NULL;
    }
    log_info("route %s: IAM database authentication, tokens signed for region %s, AWS credentials "
             "from %s",
             s->route, host_region, p->name);
    s->starting = true;
    start_token(s);
    bool ran = aws_run_until(base, &s->start_end);
    s->starting = false;
    if (!ran || !s->start_ok) {
        snprintf(err, errlen, "IAM authentication: %s",
                 ran ? s->start_err : "the event loop stopped before the first token");
        iam_source_free(s);
        return NULL;
    }
    if (inner_store)
        secret_store_on_publish(inner_store, inner_published, s);
    return &s->source;
}
