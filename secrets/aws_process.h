/* credential_process: credentials from a command's JSON output, without blocking the loop. */
#ifndef CREDPROXY_SECRETS_AWS_PROCESS_H
#define CREDPROXY_SECRETS_AWS_PROCESS_H

#include <stddef.h>

#include "secrets/aws_creds.h"

/*
 * Runs command (split into words like a shell would, quotes honoured, but no
 * shell) with posix_spawnp, reads its standard output on the loop and
 * parses {"Version":1,"AccessKeyId",...}. A command that has not finished
 * within the time limit is killed. Nothing secret is passed on the command
 * line; the environment is inherited. NULL when out of memory or the command
 * is empty.
 */
struct aws_provider *aws_provider_process(struct aws_ctx *ctx, const char *name,
                                          const char *command, char *err, size_t errlen);

#endif
