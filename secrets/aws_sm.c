/* The Secrets Manager API (JSON 1.1 protocol): signed calls with bounded, jittered retries. */
#include "secrets/aws_sm.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/log.h"
#include "secrets/aws_request.h"

#define BACKOFF_BASE_MS 500
#define BACKOFF_CAP_MS  20000

struct aws_sm {
    struct aws_ctx *ctx;
    struct aws_creds_cache *cc;
    char *endpoint;
    char *region; /* the SigV4 scope's region: the region this endpoint serves */
    int max_attempts;
};

/* One API call, across its attempts. */
struct sm_call {
    struct aws_fetch base;
    struct aws_sm *sm;
    char op[48];
    char target[80];
    char *body; /* the request JSON, wiped when the call ends */
    size_t body_len;
    aws_sm_cb cb;
    void *arg;
    int max_attempts;             /* of this call */
    struct aws_fetch *creds_wait; /* waiting for credentials */
    struct http_request *req;     /* the attempt in flight */
    struct event *retry_ev;       /* backoff before the next attempt */
    bool creds_retried;           /* expired credentials were replaced once already */
    struct aws_sm_result res;
};

static void call_free(struct sm_call *c)
{
    aws_fetch_cancel(c->creds_wait);
    http_request_cancel(c->req);
    if (c->retry_ev)
        event_free(c->retry_ev);
    if (c->body) {
        OPENSSL_cleanse(c->body, c->body_len);
        free(c->body);
    }
    free(c);
}

static void call_cancel(struct aws_fetch *base)
{
    call_free((struct sm_call *)base);
}

/* Ends the call: the callback, then the JSON (wiped by cJSON's hooks) and the call. */
static void call_end(struct sm_call *c)
{
    c->creds_wait = NULL;
    c->req = NULL;
    if (!c->res.ok && c->res.attempts > 1) {
        size_t n = strlen(c->res.message);
        snprintf(c->res.message + n, sizeof(c->res.message) - n, " (after %d attempts)",
                 c->res.attempts);
    }
    c->cb(&c->res, c->arg);
    cJSON_Delete(c->res.json);
    call_free(c);
}

static void attempt(struct sm_call *c);

static void retry_later(struct sm_call *c)
{
    long ms = aws_backoff_ms(c->res.attempts - 1, BACKOFF_BASE_MS, BACKOFF_CAP_MS);
    log_debug("Secrets Manager %s; retrying in %ld ms", c->res.message, ms);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->retry_ev, &tv);
}

/* Either retries (when the failure is retryable and attempts remain) or ends the call. */
static void failed(struct sm_call *c)
{
    if (c->res.retryable && c->res.attempts < c->max_attempts) {
        retry_later(c);
        return;
    }
    call_end(c);
}

static void on_response(const struct http_response *r, void *arg)
{
    struct sm_call *c = arg;
    c->req = NULL;
    struct aws_sm_result *res = &c->res;
    char msg[300];
    if (r->status == 0) {
        res->retryable = true;
        snprintf(res->code, sizeof(res->code), "%s", r->timed_out ? "Timeout" : "NetworkError");
        if (r->timed_out)
            snprintf(res->message, sizeof(res->message), "%s: no answer from %s within %d ms",
                     c->op, c->sm->endpoint, c->sm->ctx->timeout_ms);
        else
            snprintf(res->message, sizeof(res->message), "%s: cannot reach %s: %s", c->op,
                     c->sm->endpoint, r->error);
        failed(c);
        return;
    }
    if (r->status >= 200 && r->status < 300) {
        res->json = cJSON_ParseWithLength(r->body, r->body_len);
        if (cJSON_IsObject(res->json)) {
            res->ok = true;
            call_end(c);
            return;
        }
        cJSON_Delete(res->json);
        res->json = NULL;
        res->retryable = false;
        snprintf(res->code, sizeof(res->code), "MalformedResponse");
        snprintf(res->message, sizeof(res->message),
                 "%s: the response from %s is not a JSON object (HTTP %ld)", c->op, c->sm->endpoint,
                 r->status);
        failed(c);
        return;
    }
    aws_response_error(r, res->code, sizeof(res->code), msg, sizeof(msg));
    if (!res->code[0])
        snprintf(res->code, sizeof(res->code), "HTTP%ld", r->status);
    res->retryable = aws_error_retryable(r, res->code);
    snprintf(res->message, sizeof(res->message), "%s: %s%s%s (HTTP %ld)", c->op, res->code,
             msg[0] ? ": " : "", msg, r->status);
    if (aws_error_bad_credentials(res->code) && !c->creds_retried) {
        c->creds_retried = true;
        aws_creds_cache_invalidate(c->sm->cc);
        c->res.attempts--; /* a fresh set of credentials does not use up an attempt */
        attempt(c);
        return;
    }
    failed(c);
}

static void on_creds(struct aws_credentials *creds, const char *err, void *arg)
{
    struct sm_call *c = arg;
    c->creds_wait = NULL;
    if (!creds) {
        c->res.retryable = true;
        snprintf(c->res.code, sizeof(c->res.code), "NoCredentials");
        snprintf(c->res.message, sizeof(c->res.message), "%s: no AWS credentials from %s: %s",
                 c->op, aws_creds_cache_source(c->sm->cc), err ? err : "unknown error");
        call_end(c); /* the cache has its own retries; more attempts would only repeat them */
        return;
    }
    struct aws_request_params p = {
        .url = c->sm->endpoint,
        .region = c->sm->region,
        .service = "secretsmanager",
        .content_type = "application/x-amz-json-1.1",
        .target = c->target,
        .body = c->body,
        .body_len = c->body_len,
        .timeout_ms = c->sm->ctx->timeout_ms,
    };
    char err2[256];
    c->res.attempts++;
    c->req = aws_request_start(c->sm->ctx->http, &p, creds, on_response, c, err2, sizeof(err2));
    aws_credentials_unref(creds);
    if (!c->req) {
        c->res.retryable = false;
        snprintf(c->res.code, sizeof(c->res.code), "ClientError");
        snprintf(c->res.message, sizeof(c->res.message), "%s: %s", c->op, err2);
        call_end(c);
    }
}

static void attempt(struct sm_call *c)
{
    memset(c->res.code, 0, sizeof(c->res.code));
    c->creds_wait = aws_creds_cache_get(c->sm->cc, on_creds, c);
    if (!c->creds_wait) {
        snprintf(c->res.message, sizeof(c->res.message), "%s: out of memory", c->op);
        call_end(c);
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    attempt(arg);
}

struct aws_fetch *aws_sm_call(struct aws_sm *sm, const char *op, cJSON *body, aws_sm_cb cb,
                              void *arg)
{
    return aws_sm_call_limited(sm, op, body, 0, cb, arg);
}

struct aws_fetch *aws_sm_call_limited(struct aws_sm *sm, const char *op, cJSON *body,
                                      int max_attempts, aws_sm_cb cb, void *arg)
{
    struct sm_call *c = calloc(1, sizeof(*c));
    char *text = body ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    if (!c || !text || !(c->retry_ev = evtimer_new(sm->ctx->base, on_retry, c))) {
        free(c);
        if (text) {
            OPENSSL_cleanse(text, strlen(text));
            free(text);
        }
        return NULL;
    }
    c->base.cancel = call_cancel;
    c->sm = sm;
    snprintf(c->op, sizeof(c->op), "%s", op);
    snprintf(c->target, sizeof(c->target), "secretsmanager.%s", op);
    c->body = text;
    c->body_len = strlen(text);
    c->cb = cb;
    c->arg = arg;
    c->max_attempts =
        max_attempts > 0 && max_attempts < sm->max_attempts ? max_attempts : sm->max_attempts;
    /* The first attempt only queues a wait for credentials: its callback runs later. */
    c->creds_wait = aws_creds_cache_get(sm->cc, on_creds, c);
    if (!c->creds_wait) {
        call_free(c);
        return NULL;
    }
    return &c->base;
}

struct aws_sm *aws_sm_new(struct aws_ctx *ctx, struct aws_creds_cache *cc, const char *endpoint,
                          const char *region, int max_attempts)
{
    struct aws_sm *sm = calloc(1, sizeof(*sm));
    if (!sm || !(sm->endpoint = strdup(endpoint)) || !(sm->region = strdup(region))) {
        if (sm)
            free(sm->endpoint);
        free(sm->region);
        free(sm);
        return NULL;
    }
    sm->ctx = ctx;
    sm->cc = cc;
    sm->max_attempts = max_attempts > 0 ? max_attempts : 1;
    return sm;
}

void aws_sm_free(struct aws_sm *sm)
{
    if (sm) {
        free(sm->endpoint);
        free(sm->region);
        free(sm);
    }
}
