/*
 * RDS IAM database authentication: a secret source whose password is an IAM auth token,
 * made on the main loop from the AWS credential chain and re-made every few minutes.
 */
#ifndef CREDPROXY_SECRETS_IAM_SOURCE_H
#define CREDPROXY_SECRETS_IAM_SOURCE_H

#include <stddef.h>

#include "secrets/secret_source.h"
#include "secrets/secret_store.h"

struct event_base;

/* What the route says; strings are copied. */
struct iam_source_config {
    const char *route;     /* for logs */
    const char *region;    /* --region, or NULL: AWS_REGION, the profile's, the host's, IMDS */
    const char *user;      /* upstream_user, or NULL for the secret's username */
    const char *host;      /* upstream_host, or NULL for the secret's host */
    int port;              /* upstream_port, or 0 for the secret's (3306 without a secret) */
    const char *secret_id; /* the route's secret_id when it has one (its ARN names a region) */
    int timeout_ms;        /* limit of each AWS HTTP request */
};

/*
 * Publishes to store, as the route's current credentials, {user, token, host, port, dbname}
 * with creds.iam set: the user, host and port from cfg, else from what inner (the route's
 * secret source, owned from now on; NULL when the route has none) publishes to inner_store
 * (owned too). A new token is made every few minutes (well within its 15 minutes), whenever
 * the secret changes, and, when refresh_now() asks (a login was refused), from AWS
 * credentials fetched afresh. Resolves the region and the credential chain and makes the
 * first token now, running base until it is made: call it before other threads use base.
 * NULL with a message in err; inner and inner_store are freed then too.
 */
struct secret_source *iam_source_open(struct event_base *base, const struct iam_source_config *cfg,
                                      struct secret_source *inner, struct secret_store *inner_store,
                                      struct secret_store *store, char *err, size_t errlen);

#endif
