/* Credentials and region from HTTP metadata endpoints: EC2 IMDSv2 and the container endpoint. */
#ifndef CREDPROXY_SECRETS_AWS_METADATA_H
#define CREDPROXY_SECRETS_AWS_METADATA_H

#include <stdbool.h>
#include <stddef.h>

#include "secrets/aws_creds.h"

/*
 * EC2 instance metadata, IMDSv2 only: a session token (PUT), the role name,
 * then the role's credentials. AWS_EC2_METADATA_SERVICE_ENDPOINT (or
 * _ENDPOINT_MODE=IPv6) selects the endpoint; AWS_METADATA_SERVICE_TIMEOUT
 * (seconds) bounds each request.
 */
struct aws_provider *aws_provider_imds(struct aws_ctx *ctx);

/*
 * The ECS / EKS Pod Identity endpoint: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
 * (on 169.254.170.2) or AWS_CONTAINER_CREDENTIALS_FULL_URI (https, or http to
 * loopback or the ECS/EKS link-local addresses), with the
 * AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (re-read every time) or
 * AWS_CONTAINER_AUTHORIZATION_TOKEN header. *configured tells whether the
 * variables are set; NULL with err when they are but are invalid.
 */
struct aws_provider *aws_provider_container(struct aws_ctx *ctx, bool *configured, char *err,
                                            size_t errlen);

typedef void (*aws_region_cb)(const char *region, const char *err, void *arg);

/* The instance's region from IMDSv2 (placement/region); the callback runs later. */
struct aws_fetch *aws_imds_region(struct aws_ctx *ctx, aws_region_cb cb, void *arg);

#endif
