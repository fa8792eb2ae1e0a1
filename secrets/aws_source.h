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
    const char *endpoint;  /* --secrets-endpoint (the primary region's), or NULL */
    int refresh_ms;        /* DescribeSecret every refresh_ms, +-10 % jitter */
    int timeout_ms;        /* limit of each HTTP request */
    int max_attempts; /* requests per API call, retries included; <= 0: AWS_MAX_ATTEMPTS or 3 */

    /*
     * secret_regions: the primary (which then is the region) and the replica
     * regions read, in order, while the ones before fail; n_regions 0 for one
     * region. endpoints: "REGION=URL" overrides for some of them.
     */
    char *const *regions;
    size_t n_regions;
    char *const *endpoints;
    size_t n_endpoints;
};

/*
 * Resolves the regions, endpoints and AWS credentials, reads the secret's
 * AWSCURRENT version (and AWSPENDING, when a rotation is under way) and
 * publishes them to store, running base until that first read finishes:
 * call it before other threads use base. On failure returns NULL with a
 * message naming the secret and the AWS error code in err. Afterwards the
 * secret is checked every refresh_ms on base.
 *
 * With several regions, each read starts at the primary; when a call there
 * fails in a way that says nothing about the secret (no connection, timeout,
 * 5xx, throttling, each after its retries), the read starts over in the next
 * region. An answer (AccessDenied, ResourceNotFound, ...) is never overruled
 * by a replica. A replica whose AWSCURRENT is a version seen replaced (or
 * labelled AWSPREVIOUS) is behind and never used to go back.
 */
struct secret_source *aws_source_open(struct event_base *base, const struct aws_source_config *cfg,
                                      struct secret_store *store, char *err, size_t errlen);

#endif
