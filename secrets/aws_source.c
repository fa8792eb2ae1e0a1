/* The AWS Secrets Manager source: reads an RDS secret and keeps it fresh, never blocking. */
#include "secrets/aws_source.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/log.h"
#include "secrets/aws_creds.h"
#include "secrets/aws_endpoint.h"
#include "secrets/aws_metadata.h"
#include "secrets/aws_profile.h"
#include "secrets/aws_sm.h"
#include "secrets/http_client.h"

#define DEFAULT_REFRESH_MS   300000
#define DEFAULT_TIMEOUT_MS   5000
#define DEFAULT_MAX_ATTEMPTS 3
/* A forced refresh (after an access-denied login) waits this long after the previous read. */
#define MIN_GAP_MS 1000

/* Where a read of the secret is. */
enum step { STEP_IDLE, STEP_DESCRIBE, STEP_GET_CURRENT, STEP_GET_PENDING };

struct aws_source {
    struct secret_source source; /* first: the route sees only this */
    struct aws_ctx ctx;
    char *secret_id;
    char *endpoint;
    int refresh_ms;
    struct secret_store *store;
    struct aws_creds_cache *cc;
    struct aws_sm *sm;
    struct event *timer_ev; /* the next scheduled read */
    struct event *now_ev;   /* refresh_now() from any thread */
    struct aws_fetch *call; /* the API call in flight */
    enum step step;
    char cur_id[128];      /* AWSCURRENT's VersionId as DescribeSecret showed it */
    char pend_id[128];     /* AWSPENDING's, when on another version; "" when none */
    struct creds *current; /* last published as current */
    struct creds *pending; /* last published as pending */
    struct timespec last_end;
    bool starting;  /* the first read, inside aws_source_open() */
    bool start_ok;  /* ... and it succeeded */
    bool start_end; /* ... and it finished */
    char start_err[640];
    char fail_key[160];      /* what the logged failure was; "" while reads succeed */
    char pend_fail_key[160]; /* likewise for the AWSPENDING version */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t ms_since(const struct timespec *t)
{
    return now_ms() - ((int64_t)t->tv_sec * 1000 + t->tv_nsec / 1000000);
}

static void schedule(struct aws_source *s, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(s->timer_ev, &tv);
}

/* refresh_ms +- 10 %, so a fleet of proxies does not call Secrets Manager in step. */
static int64_t jittered(int refresh_ms)
{
    uint32_t r = 0;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    int64_t span = refresh_ms / 5;
    return refresh_ms - refresh_ms / 10 + (span > 0 ? (int64_t)(r % (uint32_t)(span + 1)) : 0);
}

/* ---- The end of a read --------------------------------------------------------------------- */

static void cycle_end(struct aws_source *s, bool ok, const char *msg)
{
    s->step = STEP_IDLE;
    s->call = NULL;
    clock_gettime(CLOCK_MONOTONIC, &s->last_end);
    if (s->starting) {
        s->start_end = true;
        s->start_ok = ok;
        if (!ok)
            snprintf(s->start_err, sizeof(s->start_err), "secret '%s': %s", s->secret_id, msg);
        return;
    }
    if (ok && s->fail_key[0]) {
        log_info("secret '%s': Secrets Manager read works again (version %s)", s->secret_id,
                 s->current->version);
        s->fail_key[0] = '\0';
    } else if (!ok) {
        /* Once per kind of failure, not once per attempt or per read. */
        char key[160];
        snprintf(key, sizeof(key), "%.150s", msg);
        char *paren = strstr(key, " (after ");
        if (paren)
            *paren = '\0';
        if (strcmp(key, s->fail_key) != 0) {
            log_error("secret '%s': %s; keeping the credentials of version %s", s->secret_id, msg,
                      s->current->version);
            snprintf(s->fail_key, sizeof(s->fail_key), "%s", key);
        }
    }
    schedule(s, jittered(s->refresh_ms));
}

/* ---- Parsing a secret value ------------------------------------------------------------------ */

static const char *json_string(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The creds of a GetSecretValue response, or NULL with a message that never holds a value. */
static struct creds *parse_value(const cJSON *resp, const char *stage, char *err, size_t errlen)
{
    const char *vid = json_string(resp, "VersionId");
    const char *str = json_string(resp, "SecretString");
    if (!vid || !*vid) {
        snprintf(err, errlen, "GetSecretValue (%s): the response has no VersionId", stage);
        return NULL;
    }
    if (!str) {
        if (cJSON_GetObjectItemCaseSensitive(resp, "SecretBinary"))
            snprintf(err, errlen,
                     "version %.64s (%s) holds SecretBinary, which credproxy does not read; store "
                     "the RDS JSON as SecretString",
                     vid, stage);
        else
            snprintf(err, errlen, "version %.64s (%s): the response has no SecretString", vid,
                     stage);
        return NULL;
    }
    char why[256];
    struct creds *c = creds_parse_rds_json(str, strlen(str), why, sizeof(why));
    if (!c) {
        snprintf(err, errlen, "version %.64s (%s) is not an RDS secret: %s", vid, stage, why);
        return NULL;
    }
    if (!(c->version = strdup(vid))) {
        creds_unref(c);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return c;
}

static bool same_creds(const struct creds *a, const struct creds *b)
{
    return a && b && strcmp(a->version, b->version) == 0 && creds_same_login(a, b);
}

/* ---- The steps of a read ------------------------------------------------------------------- */

static void start_get(struct aws_source *s, enum step step);

static cJSON *request_body(const struct aws_source *s, const char *stage)
{
    cJSON *b = cJSON_CreateObject();
    if (b && (!cJSON_AddStringToObject(b, "SecretId", s->secret_id) ||
              (stage && !cJSON_AddStringToObject(b, "VersionStage", stage)))) {
        cJSON_Delete(b);
        b = NULL;
    }
    return b;
}

static void pending_done(struct aws_source *s)
{
    cycle_end(s, true, NULL);
}

/* After the current version: publishes, fetches or clears the AWSPENDING one. */
static void pending_step(struct aws_source *s)
{
    if (!s->pend_id[0]) {
        if (s->pending) {
            log_info("secret '%s': AWSPENDING version %s is gone", s->secret_id,
                     s->pending->version);
            creds_unref(s->pending);
            s->pending = NULL;
            secret_store_publish_pending(s->store, NULL);
        }
        s->pend_fail_key[0] = '\0';
        pending_done(s);
        return;
    }
    if (s->pending && strcmp(s->pending->version, s->pend_id) == 0) {
        pending_done(s);
        return;
    }
    start_get(s, STEP_GET_PENDING);
}

static void got_pending(struct aws_source *s, const struct aws_sm_result *r)
{
    char err[512];
    struct creds *c = r->ok ? parse_value(r->json, "AWSPENDING", err, sizeof(err)) : NULL;
    if (!r->ok)
        snprintf(err, sizeof(err), "%s", r->message);
    if (!c) {
        /* Not fatal: AWSCURRENT is what serves; log each kind of failure once. */
        if (strncmp(err, s->pend_fail_key, sizeof(s->pend_fail_key) - 1) != 0) {
            log_warn("secret '%s': cannot use the AWSPENDING version: %s", s->secret_id, err);
            snprintf(s->pend_fail_key, sizeof(s->pend_fail_key), "%.159s", err);
        }
        pending_done(s);
        return;
    }
    s->pend_fail_key[0] = '\0';
    if (s->current && strcmp(c->version, s->current->version) == 0) {
        creds_unref(c); /* rotation finished between the two calls */
    } else {
        log_info("secret '%s': AWSPENDING version %s loaded (tried only if AWSCURRENT fails)",
                 s->secret_id, c->version);
        creds_unref(s->pending);
        s->pending = creds_ref(c);
        secret_store_publish_pending(s->store, c);
    }
    pending_done(s);
}

static void got_current(struct aws_source *s, const struct aws_sm_result *r)
{
    char err[512];
    if (!r->ok) {
        cycle_end(s, false, r->message);
        return;
    }
    struct creds *c = parse_value(r->json, "AWSCURRENT", err, sizeof(err));
    if (!c) {
        cycle_end(s, false, err);
        return;
    }
    if (same_creds(s->current, c)) {
        creds_unref(c);
    } else {
        bool first = !s->current;
        creds_unref(s->current);
        s->current = creds_ref(c);
        secret_store_publish(s->store, c);
        log_info("secret '%s': %s credentials (version %s, generation %" PRIu64 ")", s->secret_id,
                 first ? "loaded" : "loaded new", s->current->version, s->current->generation);
    }
    pending_step(s);
}

/* Reads VersionIdsToStages: which version is AWSCURRENT, and which (other) is AWSPENDING. */
static bool read_stages(struct aws_source *s, const cJSON *resp, char *err, size_t errlen)
{
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(resp, "VersionIdsToStages");
    s->cur_id[0] = s->pend_id[0] = '\0';
    const cJSON *ver;
    cJSON_ArrayForEach(ver, map)
    {
        const cJSON *stage;
        cJSON_ArrayForEach(stage, ver)
        {
            if (!cJSON_IsString(stage) || strlen(ver->string) >= sizeof(s->cur_id))
                continue;
            if (strcmp(stage->valuestring, "AWSCURRENT") == 0)
                snprintf(s->cur_id, sizeof(s->cur_id), "%s", ver->string);
            else if (strcmp(stage->valuestring, "AWSPENDING") == 0)
                snprintf(s->pend_id, sizeof(s->pend_id), "%s", ver->string);
        }
    }
    if (!s->cur_id[0]) {
        snprintf(err, errlen, "DescribeSecret: the secret has no AWSCURRENT version%s",
                 cJSON_GetObjectItemCaseSensitive(resp, "DeletedDate") ? " (it is scheduled "
                                                                         "for deletion)"
                                                                       : "");
        return false;
    }
    if (strcmp(s->pend_id, s->cur_id) == 0)
        s->pend_id[0] = '\0';
    return true;
}

static void described(struct aws_source *s, const struct aws_sm_result *r)
{
    char err[512];
    if (!r->ok) {
        cycle_end(s, false, r->message);
        return;
    }
    if (!read_stages(s, r->json, err, sizeof(err))) {
        cycle_end(s, false, err);
        return;
    }
    /* A VersionId never changes content, so the value is fetched only for a new one. */
    if (s->current && strcmp(s->current->version, s->cur_id) == 0) {
        log_debug("secret '%s': AWSCURRENT is still version %s", s->secret_id, s->cur_id);
        pending_step(s);
        return;
    }
    start_get(s, STEP_GET_CURRENT);
}

static void on_result(const struct aws_sm_result *r, void *arg)
{
    struct aws_source *s = arg;
    s->call = NULL;
    switch (s->step) {
    case STEP_DESCRIBE:
        described(s, r);
        break;
    case STEP_GET_CURRENT:
        got_current(s, r);
        break;
    case STEP_GET_PENDING:
        got_pending(s, r);
        break;
    case STEP_IDLE:
        break;
    }
}

static void start_call(struct aws_source *s, enum step step, const char *op, const char *stage)
{
    s->step = step;
    s->call = aws_sm_call(s->sm, op, request_body(s, stage), on_result, s);
    if (!s->call)
        cycle_end(s, false, "out of memory");
}

static void start_get(struct aws_source *s, enum step step)
{
    start_call(s, step, "GetSecretValue", step == STEP_GET_CURRENT ? "AWSCURRENT" : "AWSPENDING");
}

static void start_cycle(struct aws_source *s)
{
    if (s->step != STEP_IDLE)
        return;
    evtimer_del(s->timer_ev);
    start_call(s, STEP_DESCRIBE, "DescribeSecret", NULL);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_cycle(arg);
}

/* A forced read joins one in flight, and waits MIN_GAP_MS after the last one. */
static void on_now(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct aws_source *s = arg;
    if (s->step != STEP_IDLE)
        return;
    int64_t since = ms_since(&s->last_end);
    if (since < MIN_GAP_MS)
        schedule(s, MIN_GAP_MS - since);
    else
        start_cycle(s);
}

/* ---- Set-up ---------------------------------------------------------------------------------- */

static void source_refresh_now(struct secret_source *src)
{
    struct aws_source *s = (struct aws_source *)src;
    if (s->now_ev)
        event_active(s->now_ev, EV_TIMEOUT, 0);
}

static void aws_source_free(struct aws_source *s)
{
    aws_fetch_cancel(s->call);
    if (s->timer_ev)
        event_free(s->timer_ev);
    if (s->now_ev)
        event_free(s->now_ev);
    aws_sm_free(s->sm);
    aws_creds_cache_free(s->cc);
    creds_unref(s->current);
    creds_unref(s->pending);
    if (s->ctx.http)
        http_client_release(s->ctx.http);
    free(s->ctx.region);
    free(s->ctx.profile);
    free(s->ctx.creds_file);
    free(s->ctx.config_file);
    free(s->secret_id);
    free(s->endpoint);
    free(s);
}

static void source_destroy(struct secret_source *src)
{
    aws_source_free((struct aws_source *)src);
}

/* Runs base until *done (bounded by the operations' own time limits). */
static bool run_until(struct event_base *base, const bool *done)
{
    while (!*done)
        if (event_base_loop(base, EVLOOP_ONCE) != 0)
            return false;
    return true;
}

struct region_wait {
    bool done;
    char *region;
    char err[256];
};

static void region_done(const char *region, const char *err, void *arg)
{
    struct region_wait *w = arg;
    w->done = true;
    if (region)
        w->region = strdup(region);
    else
        snprintf(w->err, sizeof(w->err), "%s", err);
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* --region, AWS_REGION, AWS_DEFAULT_REGION, the profile, the ARN, then IMDS. */
static bool resolve_region(struct aws_source *s, const char *explicit_region, char *err,
                           size_t errlen)
{
    const char *r = explicit_region && *explicit_region ? explicit_region : NULL;
    const char *from = "--region";
    char arn_region[65];
    if (!r && (r = env_nonempty("AWS_REGION")))
        from = "AWS_REGION";
    if (!r && (r = env_nonempty("AWS_DEFAULT_REGION")))
        from = "AWS_DEFAULT_REGION";
    char *prof = r ? NULL : aws_profile_region(&s->ctx);
    if (prof) {
        r = prof;
        from = "the profile";
    }
    if (!r && aws_arn_region(s->secret_id, arn_region, sizeof(arn_region))) {
        r = arn_region;
        from = "the secret's ARN";
    }
    if (r) {
        if (!aws_region_valid(r)) {
            snprintf(err, errlen, "region '%.64s' (from %s) is not a valid AWS region name", r,
                     from);
            free(prof);
            return false;
        }
        s->ctx.region = strdup(r);
        free(prof);
        log_debug("AWS region %s (from %s)", s->ctx.region, from);
        return s->ctx.region != NULL;
    }
    if (aws_env_true("AWS_EC2_METADATA_DISABLED")) {
        snprintf(err, errlen,
                 "no AWS region: set --region, AWS_REGION or the profile's region, or use the "
                 "secret's ARN (instance metadata is disabled by AWS_EC2_METADATA_DISABLED)");
        return false;
    }
    struct region_wait w = {0};
    struct aws_fetch *f = aws_imds_region(&s->ctx, region_done, &w);
    if (!f || !run_until(s->ctx.base, &w.done)) {
        aws_fetch_cancel(f);
        snprintf(err, errlen, "no AWS region: cannot ask instance metadata");
        return false;
    }
    if (!w.region) {
        snprintf(err, errlen, "no AWS region: set --region or AWS_REGION (instance metadata: %s)",
                 w.err);
        return false;
    }
    s->ctx.region = w.region;
    log_info("AWS region %s (from instance metadata)", s->ctx.region);
    return true;
}

static bool setup_ctx(struct aws_source *s, struct event_base *base, int timeout_ms)
{
    const char *home = env_nonempty("HOME");
    const char *profile = env_nonempty("AWS_PROFILE");
    if (!profile)
        profile = env_nonempty("AWS_DEFAULT_PROFILE");
    const char *cf = env_nonempty("AWS_SHARED_CREDENTIALS_FILE");
    const char *gf = env_nonempty("AWS_CONFIG_FILE");
    s->ctx.base = base;
    s->ctx.timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
    s->ctx.profile = strdup(profile ? profile : "default");
    if (cf)
        s->ctx.creds_file = strdup(cf);
    else if (asprintf(&s->ctx.creds_file, "%s/.aws/credentials", home ? home : "") < 0)
        s->ctx.creds_file = NULL;
    if (gf)
        s->ctx.config_file = strdup(gf);
    else if (asprintf(&s->ctx.config_file, "%s/.aws/config", home ? home : "") < 0)
        s->ctx.config_file = NULL;
    s->ctx.http = http_client_shared(base);
    return s->ctx.profile && s->ctx.creds_file && s->ctx.config_file && s->ctx.http;
}

static int max_attempts(int configured)
{
    if (configured > 0)
        return configured;
    const char *v = env_nonempty("AWS_MAX_ATTEMPTS");
    int n = v ? atoi(v) : 0;
    return n > 0 && n <= 20 ? n : DEFAULT_MAX_ATTEMPTS;
}

static bool first_read(struct aws_source *s, char *err, size_t errlen)
{
    s->starting = true;
    start_cycle(s);
    bool ran = run_until(s->ctx.base, &s->start_end);
    s->starting = false;
    if (!ran) {
        snprintf(err, errlen, "secret '%s': the event loop stopped during the first read",
                 s->secret_id);
        return false;
    }
    if (!s->start_ok) {
        snprintf(err, errlen, "%s", s->start_err);
        return false;
    }
    schedule(s, jittered(s->refresh_ms));
    return true;
}

struct secret_source *aws_source_open(struct event_base *base, const struct aws_source_config *cfg,
                                      struct secret_store *store, char *err, size_t errlen)
{
    struct aws_source *s = calloc(1, sizeof(*s));
    if (!s || !(s->secret_id = strdup(cfg->secret_id)) || !setup_ctx(s, base, cfg->timeout_ms)) {
        snprintf(err, errlen, "secret '%s': out of memory", cfg->secret_id);
        if (s)
            aws_source_free(s);
        return NULL;
    }
    s->source.kind = "aws";
    s->source.refresh_now = source_refresh_now;
    s->source.destroy = source_destroy;
    s->store = store;
    s->refresh_ms = cfg->refresh_ms > 0 ? cfg->refresh_ms : DEFAULT_REFRESH_MS;
    char why[512];
    struct aws_provider *p = NULL;
    if (!resolve_region(s, cfg->region, why, sizeof(why)) ||
        !(s->endpoint = aws_service_endpoint(cfg->endpoint, "secretsmanager", "SECRETS_MANAGER",
                                             s->ctx.region, why, sizeof(why))) ||
        !(p = aws_provider_chain(&s->ctx, why, sizeof(why)))) {
        snprintf(err, errlen, "secret '%s': %s", s->secret_id, why);
        aws_source_free(s);
        return NULL;
    }
    s->cc = aws_creds_cache_new(&s->ctx, p);
    s->sm = s->cc ? aws_sm_new(&s->ctx, s->cc, s->endpoint, max_attempts(cfg->max_attempts)) : NULL;
    s->timer_ev = evtimer_new(base, on_timer, s);
    s->now_ev = event_new(base, -1, 0, on_now, s);
    if (!s->sm || !s->timer_ev || !s->now_ev) {
        snprintf(err, errlen, "secret '%s': out of memory", s->secret_id);
        aws_source_free(s);
        return NULL;
    }
    log_info("secret '%s': Secrets Manager at %s, region %s, AWS credentials from %s", s->secret_id,
             s->endpoint, s->ctx.region, p->name);
    if (!first_read(s, err, errlen)) {
        aws_source_free(s);
        return NULL;
    }
    return &s->source;
}
