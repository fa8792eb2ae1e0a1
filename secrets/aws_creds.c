/* AWS credentials: the snapshot type, the SDKs' provider chain, and the refreshing cache. */
#include "secrets/aws_creds.h"
#include "secrets/secure_mem.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/log.h"
#include "secrets/aws_metadata.h"
#include "secrets/aws_profile.h"
#include "secrets/aws_sts.h"

/* Temporary credentials are refreshed this long before they expire, as the SDKs do. */
#define REFRESH_EARLY_SEC 300
/* Credentials this close to expiry are not handed out: a request signed now may land later. */
#define USABLE_MARGIN_SEC 30
/* After a failed background refresh, try again after this long (doubling, capped). */
#define RETRY_FIRST_SEC 5
#define RETRY_MAX_SEC   60

/* ---- The snapshot ------------------------------------------------------------------------ */

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

struct aws_credentials *aws_credentials_new(const char *akid, const char *secret, const char *token,
                                            time_t expiration)
{
    if (!akid || !*akid || !secret || !*secret)
        return NULL;
    struct aws_credentials *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->refs = 1;
    c->access_key_id = strdup(akid);
    c->secret_access_key = secure_strdup(secret); /* out of core dumps */
    c->session_token = token && *token ? secure_strdup(token) : NULL;
    c->expiration = expiration;
    if (!c->access_key_id || !c->secret_access_key || (token && *token && !c->session_token)) {
        c->refs = 1;
        aws_credentials_unref(c);
        return NULL;
    }
    return c;
}

struct aws_credentials *aws_credentials_ref(struct aws_credentials *c)
{
    if (c)
        c->refs++;
    return c;
}

void aws_credentials_unref(struct aws_credentials *c)
{
    if (!c || --c->refs > 0)
        return;
    wipe_free(c->access_key_id);
    secure_free(c->secret_access_key);
    secure_free(c->session_token);
    free(c);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static long days_from_civil(long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long)doe - 719468;
}

time_t aws_parse_time(const char *s)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || !n)
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    const char *p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    long offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (sscanf(p + 1, "%2d:%2d", &oh, &om) != 2)
            return -1;
        offset = (*p == '-' ? -1 : 1) * (oh * 3600L + om * 60L);
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    long days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    return (time_t)(days * 86400L + h * 3600L + mi * 60L + sec - offset);
}

static const char *json_str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

struct aws_credentials *aws_credentials_from_json(const cJSON *obj, char *err, size_t errlen)
{
    if (!cJSON_IsObject(obj)) {
        snprintf(err, errlen, "the response is not a JSON object");
        return NULL;
    }
    const char *akid = json_str(obj, "AccessKeyId");
    const char *secret = json_str(obj, "SecretAccessKey");
    const char *token = json_str(obj, "Token");
    if (!token)
        token = json_str(obj, "SessionToken");
    const char *exp = json_str(obj, "Expiration");
    time_t expiration = 0;
    if (!akid || !secret) {
        snprintf(err, errlen, "the response has no '%s'", akid ? "SecretAccessKey" : "AccessKeyId");
        return NULL;
    }
    if (exp && (expiration = aws_parse_time(exp)) < 0) {
        snprintf(err, errlen, "the response's 'Expiration' is not an ISO 8601 time");
        return NULL;
    }
    struct aws_credentials *c = aws_credentials_new(akid, secret, token, expiration);
    if (!c)
        snprintf(err, errlen, "out of memory");
    return c;
}

/* ---- Static credentials ------------------------------------------------------------------- */

struct static_provider {
    struct aws_provider base;
    struct aws_ctx *ctx;
    char *name;
    struct aws_credentials *creds;
};

/* Hands out the fixed credentials on the next loop iteration. */
struct static_fetch {
    struct aws_fetch base;
    struct event *ev;
    struct aws_credentials *creds;
    aws_creds_cb cb;
    void *arg;
};

static void static_fetch_free(struct static_fetch *f)
{
    event_free(f->ev);
    aws_credentials_unref(f->creds);
    free(f);
}

static void static_fetch_cancel(struct aws_fetch *base)
{
    static_fetch_free((struct static_fetch *)base);
}

static void static_fetch_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct static_fetch *f = arg;
    f->cb(aws_credentials_ref(f->creds), NULL, f->arg);
    static_fetch_free(f);
}

static struct aws_fetch *static_fetch(struct aws_provider *p, aws_creds_cb cb, void *arg, char *err,
                                      size_t errlen)
{
    struct static_provider *sp = (struct static_provider *)p;
    struct static_fetch *f = calloc(1, sizeof(*f));
    if (!f || !(f->ev = event_new(sp->ctx->base, -1, 0, static_fetch_fire, f))) {
        free(f);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->base.cancel = static_fetch_cancel;
    f->creds = aws_credentials_ref(sp->creds);
    f->cb = cb;
    f->arg = arg;
    event_active(f->ev, EV_TIMEOUT, 0);
    return &f->base;
}

static void static_destroy(struct aws_provider *p)
{
    struct static_provider *sp = (struct static_provider *)p;
    aws_credentials_unref(sp->creds);
    free(sp->name);
    free(sp);
}

struct aws_provider *aws_provider_static(struct aws_ctx *ctx, const char *name, const char *akid,
                                         const char *secret, const char *token)
{
    struct static_provider *sp = calloc(1, sizeof(*sp));
    if (!sp)
        return NULL;
    sp->ctx = ctx;
    sp->name = strdup(name);
    sp->creds = aws_credentials_new(akid, secret, token, 0);
    if (!sp->name || !sp->creds) {
        aws_credentials_unref(sp->creds);
        free(sp->name);
        free(sp);
        return NULL;
    }
    sp->base.name = sp->name;
    sp->base.fetch = static_fetch;
    sp->base.destroy = static_destroy;
    return &sp->base;
}

/* ---- The chain ---------------------------------------------------------------------------- */

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static struct aws_provider *from_environment(struct aws_ctx *ctx, bool *configured, char *err,
                                             size_t errlen)
{
    const char *akid = env_nonempty("AWS_ACCESS_KEY_ID");
    const char *secret = env_nonempty("AWS_SECRET_ACCESS_KEY");
    *configured = akid || secret;
    if (!*configured)
        return NULL;
    if (!akid || !secret) {
        snprintf(err, errlen,
                 "AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY or the other "
                 "way round; set both");
        return NULL;
    }
    struct aws_provider *p =
        aws_provider_static(ctx, "environment", akid, secret, env_nonempty("AWS_SESSION_TOKEN"));
    if (!p)
        snprintf(err, errlen, "out of memory");
    return p;
}

static struct aws_provider *from_web_identity(struct aws_ctx *ctx, bool *configured, char *err,
                                              size_t errlen)
{
    const char *file = env_nonempty("AWS_WEB_IDENTITY_TOKEN_FILE");
    const char *role = env_nonempty("AWS_ROLE_ARN");
    *configured = file && role;
    if (!*configured)
        return NULL;
    return aws_provider_web_identity(ctx, "web identity", file, role,
                                     env_nonempty("AWS_ROLE_SESSION_NAME"), err, errlen);
}

struct aws_provider *aws_provider_chain(struct aws_ctx *ctx, char *err, size_t errlen)
{
    typedef struct aws_provider *(*step_fn)(struct aws_ctx *, bool *, char *, size_t);
    static const step_fn steps[] = {from_environment, from_web_identity, aws_profile_provider,
                                    aws_provider_container};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        bool configured = false;
        err[0] = '\0';
        struct aws_provider *p = steps[i](ctx, &configured, err, errlen);
        if (p || configured || err[0])
            return p;
    }
    const char *off = getenv("AWS_EC2_METADATA_DISABLED");
    if (off && strcasecmp(off, "true") == 0) {
        snprintf(err, errlen,
                 "no AWS credentials: none in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                 "AWS_WEB_IDENTITY_TOKEN_FILE, profile '%s' of %s and %s, or "
                 "AWS_CONTAINER_CREDENTIALS_*_URI, and EC2 instance metadata is disabled by "
                 "AWS_EC2_METADATA_DISABLED",
                 ctx->profile, ctx->creds_file, ctx->config_file);
        return NULL;
    }
    struct aws_provider *p = aws_provider_imds(ctx);
    if (!p)
        snprintf(err, errlen, "out of memory");
    return p;
}

/* ---- The cache ---------------------------------------------------------------------------- */

struct waiter {
    struct aws_fetch base;
    struct aws_creds_cache *cc;
    aws_creds_cb cb;
    void *arg;
    struct waiter *prev, *next;
};

struct aws_creds_cache {
    struct aws_ctx *ctx;
    struct aws_provider *p;
    struct aws_credentials *cur; /* last good credentials, until they expire */
    struct aws_fetch *inflight;  /* the one fetch every waiter shares */
    struct waiter *waiters;
    struct event *deliver_ev; /* hands cached credentials to waiters on the next iteration */
    struct event *refresh_ev; /* background refresh before expiry, or retry after a failure */
    int retry_sec;            /* next retry delay after a failed background refresh */
    bool failing;             /* a refresh failure was logged; log the recovery */
    bool loaded;              /* credentials were obtained at least once */
};

static bool usable(const struct aws_credentials *c, time_t now)
{
    return c && (c->expiration == 0 || now < c->expiration - USABLE_MARGIN_SEC);
}

static void waiter_unlink(struct waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        w->cc->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
}

static void waiter_cancel(struct aws_fetch *base)
{
    struct waiter *w = (struct waiter *)base;
    waiter_unlink(w);
    free(w);
}

/* Answers every waiter with c (or err); each waiter is unlinked before its callback runs. */
static void answer_all(struct aws_creds_cache *cc, struct aws_credentials *c, const char *err)
{
    struct waiter *w;
    while ((w = cc->waiters)) {
        waiter_unlink(w);
        w->cb(aws_credentials_ref(c), c ? NULL : err, w->arg);
        free(w);
    }
}

static void fetch_done(struct aws_credentials *c, const char *err, void *arg);
static void fetch_failed(struct aws_creds_cache *cc, const char *err, time_t now);

static void start_fetch(struct aws_creds_cache *cc)
{
    if (cc->inflight)
        return;
    char msg[512] = "";
    cc->inflight = cc->p->fetch(cc->p, fetch_done, cc, msg, sizeof(msg));
    if (!cc->inflight)
        fetch_failed(cc, msg[0] ? msg : "cannot start the request", time(NULL));
}

static void schedule_refresh(struct aws_creds_cache *cc, long delay_sec)
{
    if (delay_sec < 1)
        delay_sec = 1;
    struct timeval tv = {delay_sec, 0};
    evtimer_add(cc->refresh_ev, &tv);
}

static long jitter(long max)
{
    unsigned int r = 0;
    if (max <= 0 || RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        return 0;
    return (long)(r % (unsigned long)(max + 1));
}

/* Refresh REFRESH_EARLY_SEC before expiry, or halfway through the usable life of short ones. */
static void plan_refresh(struct aws_creds_cache *cc, time_t now)
{
    if (!cc->cur || cc->cur->expiration == 0)
        return;
    long left = (long)(cc->cur->expiration - now);
    long at = left > 2 * REFRESH_EARLY_SEC ? left - REFRESH_EARLY_SEC - jitter(60)
                                           : (left - USABLE_MARGIN_SEC) / 2;
    schedule_refresh(cc, at);
}

static void fmt_time(time_t t, char *out, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void fetch_ok(struct aws_creds_cache *cc, struct aws_credentials *c, time_t now)
{
    char when[32] = "";
    if (c->expiration)
        fmt_time(c->expiration, when, sizeof(when));
    if (!cc->loaded)
        log_info("AWS credentials from %s%s%s%s", cc->p->name, c->expiration ? " (expire at " : "",
                 when, c->expiration ? ")" : "");
    else if (cc->failing)
        log_info("AWS credentials from %s: refreshed again (expire at %s)", cc->p->name,
                 c->expiration ? when : "never");
    else
        log_debug("AWS credentials from %s: refreshed (expire at %s)", cc->p->name,
                  c->expiration ? when : "never");
    cc->loaded = true;
    cc->failing = false;
    cc->retry_sec = RETRY_FIRST_SEC;
    aws_credentials_unref(cc->cur);
    cc->cur = c;
    plan_refresh(cc, now);
    answer_all(cc, c, NULL);
}

/* A failed fetch keeps credentials that still work, and says until when, once per failure run. */
static void fetch_failed(struct aws_creds_cache *cc, const char *err, time_t now)
{
    if (usable(cc->cur, now)) {
        char when[32];
        fmt_time(cc->cur->expiration, when, sizeof(when));
        if (!cc->failing)
            log_warn("AWS credentials from %s: refresh failed: %s; keeping the current ones "
                     "until they expire at %s",
                     cc->p->name, err, when);
        cc->failing = true;
        long left = (long)(cc->cur->expiration - now - USABLE_MARGIN_SEC);
        schedule_refresh(cc, cc->retry_sec < left ? cc->retry_sec : left);
        cc->retry_sec = cc->retry_sec * 2 > RETRY_MAX_SEC ? RETRY_MAX_SEC : cc->retry_sec * 2;
        answer_all(cc, cc->cur, NULL);
        return;
    }
    if (cc->cur) {
        log_error("AWS credentials from %s expired and could not be refreshed: %s", cc->p->name,
                  err);
        aws_credentials_unref(cc->cur);
        cc->cur = NULL;
        cc->failing = true;
    }
    answer_all(cc, NULL, err);
}

static void fetch_done(struct aws_credentials *c, const char *err, void *arg)
{
    struct aws_creds_cache *cc = arg;
    cc->inflight = NULL;
    time_t now = time(NULL);
    if (c && !usable(c, now)) {
        aws_credentials_unref(c);
        c = NULL;
        err = "the credentials received have already expired";
    }
    if (c)
        fetch_ok(cc, c, now);
    else
        fetch_failed(cc, err ? err : "unknown error", now);
}

static void on_refresh(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_fetch(arg);
}

static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct aws_creds_cache *cc = arg;
    if (usable(cc->cur, time(NULL)))
        answer_all(cc, cc->cur, NULL);
    else if (cc->waiters)
        start_fetch(cc);
}

struct aws_creds_cache *aws_creds_cache_new(struct aws_ctx *ctx, struct aws_provider *p)
{
    struct aws_creds_cache *cc = calloc(1, sizeof(*cc));
    if (!cc) {
        aws_provider_free(p);
        return NULL;
    }
    cc->ctx = ctx;
    cc->p = p;
    cc->retry_sec = RETRY_FIRST_SEC;
    cc->deliver_ev = event_new(ctx->base, -1, 0, on_deliver, cc);
    cc->refresh_ev = evtimer_new(ctx->base, on_refresh, cc);
    if (!cc->deliver_ev || !cc->refresh_ev) {
        aws_creds_cache_free(cc);
        return NULL;
    }
    return cc;
}

void aws_creds_cache_free(struct aws_creds_cache *cc)
{
    if (!cc)
        return;
    aws_fetch_cancel(cc->inflight);
    while (cc->waiters)
        waiter_cancel(&cc->waiters->base);
    if (cc->deliver_ev)
        event_free(cc->deliver_ev);
    if (cc->refresh_ev)
        event_free(cc->refresh_ev);
    aws_credentials_unref(cc->cur);
    aws_provider_free(cc->p);
    free(cc);
}

struct aws_credentials *aws_creds_cache_current(struct aws_creds_cache *cc)
{
    return usable(cc->cur, time(NULL)) ? aws_credentials_ref(cc->cur) : NULL;
}

struct aws_fetch *aws_creds_cache_get(struct aws_creds_cache *cc, aws_creds_cb cb, void *arg)
{
    struct waiter *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->base.cancel = waiter_cancel;
    w->cc = cc;
    w->cb = cb;
    w->arg = arg;
    w->next = cc->waiters;
    if (cc->waiters)
        cc->waiters->prev = w;
    cc->waiters = w;
    if (usable(cc->cur, time(NULL)))
        event_active(cc->deliver_ev, EV_TIMEOUT, 0);
    else if (!cc->inflight)
        event_active(cc->deliver_ev, EV_TIMEOUT, 0); /* starts the fetch outside the caller */
    return &w->base;
}

void aws_creds_cache_invalidate(struct aws_creds_cache *cc)
{
    aws_credentials_unref(cc->cur);
    cc->cur = NULL;
}

const char *aws_creds_cache_source(const struct aws_creds_cache *cc)
{
    return cc->p->name;
}
