/* The shared AWS config and credentials files (~/.aws/config, ~/.aws/credentials) and profiles. */
#ifndef CREDPROXY_SECRETS_AWS_PROFILE_H
#define CREDPROXY_SECRETS_AWS_PROFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "secrets/aws_creds.h"

/*
 * The credentials of profile ctx->profile: role_arn with source_profile,
 * credential_source or web_identity_token_file (STS), else static keys
 * (aws_access_key_id, aws_secret_access_key, aws_session_token), else
 * credential_process. Keys in the credentials file win over the config file.
 * *configured is false (and the result NULL without a message) when the
 * profile does not exist or holds no credentials and AWS_PROFILE was not set.
 */
struct aws_provider *aws_profile_provider(struct aws_ctx *ctx, bool *configured, char *err,
                                          size_t errlen);

/* The region of profile ctx->profile, malloc'd, or NULL. */
char *aws_profile_region(struct aws_ctx *ctx);

/*
 * One value of a profile (from the credentials file, then the config file),
 * malloc'd, or NULL. For tests and the region.
 */
char *aws_profile_get(const struct aws_ctx *ctx, const char *profile, const char *key);

#endif
