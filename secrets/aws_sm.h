/* The Secrets Manager API (JSON 1.1 protocol): signed calls with bounded, jittered retries. */
#ifndef CREDPROXY_SECRETS_AWS_SM_H
#define CREDPROXY_SECRETS_AWS_SM_H

#include <stdbool.h>

#include "secrets/aws_creds.h"

struct cJSON;
struct aws_sm;

/* The outcome of one call, after its retries. */
struct aws_sm_result {
    bool ok;
    struct cJSON *json; /* the response when ok; freed (and wiped) after the callback */
    bool retryable;     /* the last failure was of a kind that is retried (throttling, 5xx, ...) */
    char code[64];      /* AWS error code ("ResourceNotFoundException"), or a short kind */
    char message[512];  /* "GetSecretValue: ResourceNotFoundException: ..." without values */
    int attempts;       /* requests sent */
};

typedef void (*aws_sm_cb)(const struct aws_sm_result *r, void *arg);

/*
 * A client for endpoint, signing for region (the SigV4 scope: the region the
 * endpoint serves) with credentials from cc. max_attempts bounds the requests
 * of one call (at least 1). Does not own cc.
 */
struct aws_sm *aws_sm_new(struct aws_ctx *ctx, struct aws_creds_cache *cc, const char *endpoint,
                          const char *region, int max_attempts);
void aws_sm_free(struct aws_sm *sm);

/*
 * Calls secretsmanager.<op> with the JSON body (taken by the call and freed,
 * wiped, when it ends). Transport errors, timeouts, 5xx and throttling are
 * retried with full-jitter exponential backoff; expired credentials are
 * fetched again once. The callback runs once, later, unless the returned
 * operation is cancelled; NULL when it cannot start (out of memory).
 */
struct aws_fetch *aws_sm_call(struct aws_sm *sm, const char *op, struct cJSON *body, aws_sm_cb cb,
                              void *arg);

/* The same with at most max_attempts requests (<= 0, or more than the client's: the client's). */
struct aws_fetch *aws_sm_call_limited(struct aws_sm *sm, const char *op, struct cJSON *body,
                                      int max_attempts, aws_sm_cb cb, void *arg);

#endif
