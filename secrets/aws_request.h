/* One AWS API request over HTTP: SigV4-signed headers, and what an error response means. */
#ifndef CREDPROXY_SECRETS_AWS_REQUEST_H
#define CREDPROXY_SECRETS_AWS_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "secrets/aws_creds.h"
#include "secrets/http_client.h"

/* What to send; the Host, X-Amz-Date, token and Authorization headers are added here. */
struct aws_request_params {
    const char *url;     /* endpoint, e.g. https://secretsmanager.us-east-1.amazonaws.com */
    const char *region;  /* signing region */
    const char *service; /* signing name: "secretsmanager", "sts" */
    const char
        *content_type;  /* "application/x-amz-json-1.1", "application/x-www-form-urlencoded" */
    const char *target; /* X-Amz-Target, or NULL */
    const char *body;
    size_t body_len;
    int timeout_ms;
};

/*
 * Signs (when creds is not NULL) and starts the request on http; the callback
 * gets the raw response. NULL with a message in err when it cannot start.
 */
struct http_request *aws_request_start(struct http_client *http, const struct aws_request_params *p,
                                       const struct aws_credentials *creds, http_done_cb cb,
                                       void *arg, char *err, size_t errlen);

/*
 * The AWS error code of an unsuccessful response ("ThrottlingException"): the
 * x-amzn-ErrorType header, the JSON body's __type or code, or an XML body's
 * <Code>; and AWS's message, reduced to printable ASCII. Empty when absent.
 */
void aws_response_error(const struct http_response *res, char *code, size_t codelen, char *msg,
                        size_t msglen);

/* True for what the SDKs retry: transport errors, timeouts, 5xx, 429 and throttling codes. */
bool aws_error_retryable(const struct http_response *res, const char *code);

/* True when the code says the credentials expired or are unknown (so fetch them again). */
bool aws_error_bad_credentials(const char *code);

/* Full-jitter exponential backoff: a random delay in [0, min(cap, base * 2^attempt)] ms. */
long aws_backoff_ms(int attempt, long base_ms, long cap_ms);

#endif
