/* The AWS Secrets Manager source: reads an RDS secret and keeps it fresh, never blocking. */
#ifndef CREDPROXY_SECRETS_AWS_SOURCE_H
#define CREDPROXY_SECRETS_AWS_SOURCE_H

#include <stddef.h>

#include "secrets/secret_source.h"
#include "secrets/secret_store.h"

struct event_base;

/* What the route's configuration says about the secret; strings are copied. */
struct aws_source_config {
    const char *secret_id; /* name or ARN */
    const char *region;    /* --region, or NULL for the SDKs' resolution */
    const char *endpoint;  /* --secrets-endpoint, or NULL */
    int refresh_ms;        /* DescribeSecret every refresh_ms, +-10 % jitter */
    int timeout_ms;        /* limit of each HTTP request */
    int max_attempts; /* requests per API call, retries included; <= 0: AWS_MAX_ATTEMPTS or 3 */
};

/*
 * Resolves the region, endpoint and AWS credentials, reads the secret's
 * AWSCURRENT version (and AWSPENDING, when a rotation is under way) and
 * publishes them to store, running base until that first read finishes:
 * call it before other threads use base. On failure returns NULL with a
 * message naming the secret and the AWS error code in err. Afterwards the
 * secret is checked every refresh_ms on base.
 */
struct secret_source *aws_source_open(struct event_base *base, const struct aws_source_config *cfg,
                                      struct secret_store *store, char *err, size_t errlen);

#endif
