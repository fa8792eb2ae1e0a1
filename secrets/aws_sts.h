/* Temporary credentials from STS: AssumeRoleWithWebIdentity (EKS IRSA) and AssumeRole. */
#ifndef CREDPROXY_SECRETS_AWS_STS_H
#define CREDPROXY_SECRETS_AWS_STS_H

#include <stddef.h>

#include "secrets/aws_creds.h"

/*
 * AssumeRoleWithWebIdentity with the token in token_file (re-read at every
 * fetch, since it is rotated), unsigned, on the STS endpoint
 * (AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, else the region's). session_name
 * may be NULL. NULL with a message in err when the endpoint is invalid.
 */
struct aws_provider *aws_provider_web_identity(struct aws_ctx *ctx, const char *name,
                                               const char *token_file, const char *role_arn,
                                               const char *session_name, char *err, size_t errlen);

/*
 * AssumeRole signed with the credentials of source (owned: freed with the
 * provider). external_id may be NULL; duration_sec 0 means STS's default.
 */
struct aws_provider *aws_provider_assume_role(struct aws_ctx *ctx, const char *name,
                                              struct aws_provider *source, const char *role_arn,
                                              const char *session_name, const char *external_id,
                                              int duration_sec, char *err, size_t errlen);

#endif
