/*
 * Start-up of an AWS-using secret source: its aws_ctx (profile, shared files, HTTP client) and
 * its region, resolved the way the AWS SDKs do. Runs on the main loop before the workers
 * start; asking instance metadata for the region is the only wait, bounded by the timeout.
 */
#ifndef CREDPROXY_SECRETS_AWS_SETUP_H
#define CREDPROXY_SECRETS_AWS_SETUP_H

#include <stdbool.h>
#include <stddef.h>

#include "secrets/aws_creds.h"

struct event_base;

/* Fills ctx from AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE and HOME. */
bool aws_ctx_setup(struct aws_ctx *ctx, struct event_base *base, int timeout_ms);
/* Frees what aws_ctx_setup and aws_ctx_resolve_region gave ctx. */
void aws_ctx_cleanup(struct aws_ctx *ctx);

/* Where a source may find its region besides the environment, the profile and IMDS. */
struct aws_region_hint {
    const char *region;      /* configured; wins over everything */
    const char *region_from; /* the setting's name, for messages */
    const char *arn;         /* a secret ARN whose region label is used, or NULL */
    const char *rds_host;    /* an RDS endpoint name whose region label is used, or NULL */
    const char *purpose;     /* "" or e.g. " for IAM tokens", for messages */
};

/*
 * Sets ctx->region from, in order: the hint's region, AWS_REGION, AWS_DEFAULT_REGION, the
 * profile, the ARN, the RDS host name, instance metadata. false with err when none answers.
 */
bool aws_ctx_resolve_region(struct aws_ctx *ctx, const struct aws_region_hint *hint, char *err,
                            size_t errlen);

/* Runs base until *done (bounded by the operations' own time limits). */
bool aws_run_until(struct event_base *base, const bool *done);

/* getenv, with an empty value taken as unset (as the SDKs do). */
const char *aws_env_nonempty(const char *name);

#endif
