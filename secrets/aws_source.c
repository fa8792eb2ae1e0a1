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
#include "secrets/aws_setup.h"
#include "secrets/aws_sm.h"

#define DEFAULT_REFRESH_MS   300000
#define DEFAULT_MAX_ATTEMPTS 3
/* A forced refresh (after an access-denied login) waits this long after the previous read. */
#define MIN_GAP_MS 1000

/* Where a read of the secret is. */
enum step { STEP_IDLE, STEP_DESCRIBE, STEP_GET_CURRENT, STEP_GET_PENDING };

#define MAX_REGIONS 8 /* CONFIG_MAX_SECRET_REGIONS */
/* VersionIds remembered as replaced: more than years of rotations every few hours. */
#define RETIRED_MAX 64
#define VID_MAX     128

/* One region holding the secret (a replicated secret has the same name and VersionIds). */
struct sm_region {
    char *name;      /* us-east-1 */
    char *endpoint;  /* its Secrets Manager endpoint */
    char *secret_id; /* the configured id; an ARN with this region in it */
    struct aws_sm *sm;
};

struct aws_source {
    struct secret_source source; /* first: the route sees only this */
    struct aws_ctx ctx;
    char *secret_id;
    int refresh_ms;
    struct secret_store *store;
    struct aws_creds_cache *cc;
    struct sm_region regions[MAX_REGIONS]; /* [0] is the primary */
    size_t n_regions;
    size_t at;                          /* the region the read under way asks */
    size_t serving;                     /* the region the last good read came from */
    char primary_fail[300];             /* why the primary failed in the read under way */
    char region_fails[640];             /* "REGION: why; ..." of every region failed in it */
    char retired[RETIRED_MAX][VID_MAX]; /* versions seen replaced: never gone back to */
    size_t n_retired, next_retired;
    struct event *timer_ev; /* the next scheduled read */
    struct event *now_ev;   /* refresh_now() from any thread */
    struct aws_fetch *call; /* the API call in flight */
    enum step step;
    char cur_id[VID_MAX];  /* AWSCURRENT's VersionId as DescribeSecret showed it */
    char pend_id[VID_MAX]; /* AWSPENDING's, when on another version; "" when none */
    struct creds *current; /* last published as current */
    struct creds *pending; /* last published as pending */
    struct timespec last_end;
    bool starting;     /* the first read, inside aws_source_open() */
    bool start_ok;     /* ... and it succeeded */
    bool start_end;    /* ... and it finished */
    bool read_changed; /* the read under way published a new AWSCURRENT */
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

/* Says once when reads move to a replica region, and once when they are back on the primary. */
static void note_region(struct aws_source *s)
{
    if (s->at == s->serving)
        return;
    if (s->at > 0)
        log_warn("reading secret '%s' from replica region %s: primary %s failed: %s", s->secret_id,
                 s->regions[s->at].name, s->regions[0].name, s->primary_fail);
    else
        log_info("secret '%s': primary region %s answers again; reading from it (not from "
                 "replica %s)",
                 s->secret_id, s->regions[0].name, s->regions[s->serving].name);
    s->serving = s->at;
}

static void cycle_end(struct aws_source *s, bool ok, const char *msg)
{
    s->step = STEP_IDLE;
    s->call = NULL;
    clock_gettime(CLOCK_MONOTONIC, &s->last_end);
    if (ok)
        secret_source_read_ok(&s->source, s->read_changed, s->current ? s->current->version : NULL,
                              s->current ? s->current->generation : 0);
    else
        secret_source_read_error(&s->source, msg);
    s->read_changed = false;
    if (ok)
        note_region(s);
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

/* ---- Versions seen replaced ------------------------------------------------------------------ */

/*
 * VersionIds are UUIDs, with no order to compare. What is known is which
 * versions were replaced: each AWSCURRENT this source published and then saw
 * replaced, and each version any region labels AWSPREVIOUS. A replica whose
 * AWSCURRENT is one of them is behind.
 */
static bool is_retired(const struct aws_source *s, const char *vid)
{
    for (size_t i = 0; i < s->n_retired; i++)
        if (strcmp(s->retired[i], vid) == 0)
            return true;
    return false;
}

static void retire(struct aws_source *s, const char *vid)
{
    if (!vid || !*vid || strlen(vid) >= VID_MAX || is_retired(s, vid))
        return;
    snprintf(s->retired[s->next_retired], VID_MAX, "%s", vid);
    s->next_retired = (s->next_retired + 1) % RETIRED_MAX;
    if (s->n_retired < RETIRED_MAX)
        s->n_retired++;
}

static void unretire(struct aws_source *s, const char *vid)
{
    for (size_t i = 0; i < s->n_retired; i++)
        if (strcmp(s->retired[i], vid) == 0)
            s->retired[i][0] = '\0'; /* an empty slot matches no VersionId */
}

/* Every version labelled AWSPREVIOUS in a DescribeSecret response. */
static void retire_previous(struct aws_source *s, const cJSON *resp)
{
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(resp, "VersionIdsToStages");
    const cJSON *ver;
    cJSON_ArrayForEach(ver, map)
    {
        const cJSON *stage;
        cJSON_ArrayForEach(stage, ver)
        {
            if (cJSON_IsString(stage) && strcmp(stage->valuestring, "AWSPREVIOUS") == 0 &&
                strcmp(ver->string, s->cur_id) != 0)
                retire(s, ver->string);
        }
    }
}

/* ---- The steps of a read ------------------------------------------------------------------- */

static void start_get(struct aws_source *s, enum step step);
static void region_failed(struct aws_source *s, const char *why);

static cJSON *request_body(const struct aws_source *s, const char *stage)
{
    cJSON *b = cJSON_CreateObject();
    if (b && (!cJSON_AddStringToObject(b, "SecretId", s->regions[s->at].secret_id) ||
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
    if (s->at > 0 && s->current && is_retired(s, c->version)) {
        /* AWSCURRENT moved back on the replica between DescribeSecret and this call. */
        snprintf(err, sizeof(err), "its AWSCURRENT is version %.64s, older than version %.64s",
                 c->version, s->current->version);
        creds_unref(c);
        region_failed(s, err);
        return;
    }
    if (same_creds(s->current, c)) {
        creds_unref(c);
    } else {
        bool first = !s->current;
        if (s->current && strcmp(s->current->version, c->version) != 0)
            retire(s, s->current->version);
        creds_unref(s->current);
        s->current = creds_ref(c);
        secret_store_publish(s->store, c);
        s->read_changed = true;
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

/*
 * A replica is behind when its AWSCURRENT is a version seen replaced, or when
 * it still has the version in use as AWSPENDING (a rotation it has not seen end).
 */
static bool replica_behind(struct aws_source *s, char *why, size_t whylen)
{
    if (!s->current || strcmp(s->current->version, s->cur_id) == 0)
        return false;
    if (is_retired(s, s->cur_id) || strcmp(s->pend_id, s->current->version) == 0) {
        snprintf(why, whylen,
                 "its AWSCURRENT is version %.64s, older than version %.64s (the replica is "
                 "behind; never going back to older credentials)",
                 s->cur_id, s->current->version);
        return true;
    }
    return false;
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
    if (s->at > 0 && replica_behind(s, err, sizeof(err))) {
        region_failed(s, err);
        return;
    }
    if (s->at == 0 && is_retired(s, s->cur_id)) {
        /* The primary is the authority: a version moved back there is a deliberate rollback. */
        log_warn("secret '%s': AWSCURRENT went back to version %s, which had been replaced, in "
                 "primary region %s; following it",
                 s->secret_id, s->cur_id, s->regions[0].name);
        unretire(s, s->cur_id);
    }
    retire_previous(s, r->json);
    /* A VersionId never changes content, so the value is fetched only for a new one. */
    if (s->current && strcmp(s->current->version, s->cur_id) == 0) {
        log_debug("secret '%s': AWSCURRENT is still version %s", s->secret_id, s->cur_id);
        pending_step(s);
        return;
    }
    start_get(s, STEP_GET_CURRENT);
}

/* Failures that say the region is unwell, not something about the secret. */
static bool regional_failure(const struct aws_sm_result *r)
{
    return !r->ok && r->retryable && strcmp(r->code, "NoCredentials") != 0;
}

static void start_call(struct aws_source *s, enum step step, const char *op, const char *stage);

/*
 * The region being asked failed: the read starts over in the next region, or,
 * after the last, ends failed, naming every region's failure.
 */
static void region_failed(struct aws_source *s, const char *why)
{
    const char *name = s->regions[s->at].name;
    if (s->at == 0)
        snprintf(s->primary_fail, sizeof(s->primary_fail), "%s", why);
    size_t n = strlen(s->region_fails);
    snprintf(s->region_fails + n, sizeof(s->region_fails) - n, "%s%s: %s", n ? "; " : "", name,
             why);
    if (s->at + 1 < s->n_regions) {
        log_debug("secret '%s': region %s failed (%s); asking region %s", s->secret_id, name, why,
                  s->regions[s->at + 1].name);
        s->at++;
        start_call(s, STEP_DESCRIBE, "DescribeSecret", NULL);
        return;
    }
    cycle_end(s, false, s->n_regions > 1 ? s->region_fails : why);
}

static void on_result(const struct aws_sm_result *r, void *arg)
{
    struct aws_source *s = arg;
    s->call = NULL;
    if (!r->ok && s->n_regions > 1 && (s->step == STEP_DESCRIBE || s->step == STEP_GET_CURRENT) &&
        (regional_failure(r) || s->at > 0)) {
        region_failed(s, r->message);
        return;
    }
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
    /* While a replica serves, the failing primary is asked once per read, not with retries. */
    int attempts = s->at == 0 && s->serving != 0 ? 1 : 0;
    s->call = aws_sm_call_limited(s->regions[s->at].sm, op, request_body(s, stage), attempts,
                                  on_result, s);
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
    s->at = 0;
    s->primary_fail[0] = s->region_fails[0] = '\0';
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
    for (size_t i = 0; i < s->n_regions; i++) {
        aws_sm_free(s->regions[i].sm);
        free(s->regions[i].name);
        free(s->regions[i].endpoint);
        free(s->regions[i].secret_id);
    }
    aws_creds_cache_free(s->cc);
    creds_unref(s->current);
    creds_unref(s->pending);
    aws_ctx_cleanup(&s->ctx);
    free(s->secret_id);
    free(s);
}

static void source_destroy(struct secret_source *src)
{
    aws_source_free((struct aws_source *)src);
}

/*
 * A reload changed secret_refresh: a waiting timer is re-armed with the new period; a read
 * in flight schedules the next one with it when it ends.
 */
static void source_set_period(struct secret_source *src, int ms)
{
    struct aws_source *s = (struct aws_source *)src;
    int refresh_ms = ms > 0 ? ms : DEFAULT_REFRESH_MS;
    if (refresh_ms == s->refresh_ms)
        return;
    s->refresh_ms = refresh_ms;
    if (evtimer_pending(s->timer_ev, NULL))
        schedule(s, jittered(refresh_ms));
}

static int max_attempts(int configured)
{
    if (configured > 0)
        return configured;
    const char *v = aws_env_nonempty("AWS_MAX_ATTEMPTS");
    int n = v ? atoi(v) : 0;
    return n > 0 && n <= 20 ? n : DEFAULT_MAX_ATTEMPTS;
}

static bool first_read(struct aws_source *s, char *err, size_t errlen)
{
    s->starting = true;
    start_cycle(s);
    bool ran = aws_run_until(s->ctx.base, &s->start_end);
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

/* The ARN id with its region field replaced by region (a replica's ARN); other ids as they are. */
static char *id_in_region(const char *id, const char *region)
{
    char r[65];
    if (!aws_arn_region(id, r, sizeof(r)) || strcmp(r, region) == 0)
        return strdup(id);
    const char *p = id;
    for (int field = 0; field < 3; field++) /* arn, partition, service */
        p = strchr(p, ':') + 1;
    const char *end = strchr(p, ':');
    char *out = NULL;
    if (asprintf(&out, "%.*s%s%s", (int)(p - id), id, region, end) < 0)
        return NULL;
    return out;
}

/* The URL of "REGION=URL" entries for region, or NULL. */
static const char *endpoint_for(const struct aws_source_config *cfg, const char *region)
{
    size_t n = strlen(region);
    for (size_t i = 0; i < cfg->n_endpoints; i++)
        if (strncmp(cfg->endpoints[i], region, n) == 0 && cfg->endpoints[i][n] == '=')
            return cfg->endpoints[i] + n + 1;
    return NULL;
}

/*
 * One client per region, each signing for its own region. The primary's
 * endpoint: its secrets_endpoints entry, secrets_endpoint, then the SDKs'
 * AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL, then the region's own;
 * a replica's the same without secrets_endpoint.
 */
static bool setup_regions(struct aws_source *s, const struct aws_source_config *cfg, int attempts,
                          char *err, size_t errlen)
{
    size_t n = cfg->n_regions ? cfg->n_regions : 1;
    if (n > MAX_REGIONS) {
        snprintf(err, errlen, "%zu regions; at most %d", n, MAX_REGIONS);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        struct sm_region *g = &s->regions[i];
        const char *name = i == 0 ? s->ctx.region : cfg->regions[i];
        if (!aws_region_valid(name)) {
            snprintf(err, errlen, "region '%.64s' is not a valid AWS region name", name);
            return false;
        }
        const char *explicit_url = endpoint_for(cfg, name);
        if (!explicit_url && i == 0)
            explicit_url = cfg->endpoint;
        s->n_regions = i + 1;
        if (!(g->name = strdup(name)) || !(g->secret_id = id_in_region(s->secret_id, name))) {
            snprintf(err, errlen, "out of memory");
            return false;
        }
        if (!(g->endpoint = aws_service_endpoint(explicit_url, "secretsmanager", "SECRETS_MANAGER",
                                                 name, err, errlen)))
            return false;
        if (!(g->sm = aws_sm_new(&s->ctx, s->cc, g->endpoint, name, attempts))) {
            snprintf(err, errlen, "out of memory");
            return false;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->regions[j].endpoint, g->endpoint) == 0)
                log_warn("secret '%s': regions %s and %s both use endpoint %s: a failing "
                         "region's replica is asked at the same place",
                         s->secret_id, s->regions[j].name, name, g->endpoint);
    }
    return true;
}

struct secret_source *aws_source_open(struct event_base *base, const struct aws_source_config *cfg,
                                      struct secret_store *store, char *err, size_t errlen)
{
    struct aws_source *s = calloc(1, sizeof(*s));
    if (!s || !(s->secret_id = strdup(cfg->secret_id)) ||
        !aws_ctx_setup(&s->ctx, base, cfg->timeout_ms)) {
        snprintf(err, errlen, "secret '%s': out of memory", cfg->secret_id);
        if (s)
            aws_source_free(s);
        return NULL;
    }
    s->source.kind = "aws";
    s->source.where = s->secret_id;
    s->source.refresh_now = source_refresh_now;
    s->source.destroy = source_destroy;
    s->source.set_period = source_set_period;
    s->store = store;
    s->refresh_ms = cfg->refresh_ms > 0 ? cfg->refresh_ms : DEFAULT_REFRESH_MS;
    char why[512];
    struct aws_provider *p = NULL;
    const char *primary = cfg->n_regions ? cfg->regions[0] : cfg->region;
    struct aws_region_hint hint = {.region = primary,
                                   .region_from = cfg->n_regions ? "secret_regions" : "--region",
                                   .arn = s->secret_id};
    if (!aws_ctx_resolve_region(&s->ctx, &hint, why, sizeof(why)) ||
        !(p = aws_provider_chain(&s->ctx, why, sizeof(why)))) {
        snprintf(err, errlen, "secret '%s': %s", s->secret_id, why);
        aws_source_free(s);
        return NULL;
    }
    if (!(s->cc = aws_creds_cache_new(&s->ctx, p)) ||
        !setup_regions(s, cfg, max_attempts(cfg->max_attempts), why, sizeof(why))) {
        snprintf(err, errlen, "secret '%s': %s", s->secret_id, s->cc ? why : "out of memory");
        aws_source_free(s);
        return NULL;
    }
    s->timer_ev = evtimer_new(base, on_timer, s);
    s->now_ev = event_new(base, -1, 0, on_now, s);
    if (!s->timer_ev || !s->now_ev) {
        snprintf(err, errlen, "secret '%s': out of memory", s->secret_id);
        aws_source_free(s);
        return NULL;
    }
    log_info("secret '%s': Secrets Manager at %s, region %s, AWS credentials from %s", s->secret_id,
             s->regions[0].endpoint, s->ctx.region, p->name);
    for (size_t i = 1; i < s->n_regions; i++)
        log_info("secret '%s': replica region %s at %s, read while the regions before it fail",
                 s->secret_id, s->regions[i].name, s->regions[i].endpoint);
    if (!first_read(s, err, errlen)) {
        aws_source_free(s);
        return NULL;
    }
    return &s->source;
}
