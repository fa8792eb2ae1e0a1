/* AWS regions, partitions and service endpoints, with the SDKs' overrides. */
#ifndef CREDPROXY_SECRETS_AWS_ENDPOINT_H
#define CREDPROXY_SECRETS_AWS_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>

/* True for a plausible region name: lower-case letters, digits and dashes. */
bool aws_region_valid(const char *region);

/* The DNS suffix of region's partition: amazonaws.com, amazonaws.com.cn, c2s.ic.gov, ... */
const char *aws_region_dns_suffix(const char *region);

/* The region field of an ARN ("arn:PARTITION:SERVICE:REGION:..."); false when there is none. */
bool aws_arn_region(const char *arn, char *out, size_t outlen);

/*
 * The region of an RDS endpoint name ("NAME.ID.REGION.rds.amazonaws.com", or ".com.cn"; any
 * case, a final dot allowed): the database's region, the one its IAM tokens are signed for.
 * False for any other host name.
 */
bool aws_rds_host_region(const char *host, char *out, size_t outlen);

/*
 * The endpoint URL of a service, malloc'd: explicit when given, else
 * AWS_ENDPOINT_URL_<env_id> (e.g. SECRETS_MANAGER, STS), else AWS_ENDPOINT_URL,
 * else https://<prefix>.<region>.<partition suffix>, with "-fips" after the
 * prefix when AWS_USE_FIPS_ENDPOINT=true. The URL is checked with
 * aws_endpoint_check(). NULL with a message in err.
 */
char *aws_service_endpoint(const char *explicit_url, const char *prefix, const char *env_id,
                           const char *region, char *err, size_t errlen);

/* An endpoint must be https://, or http:// to a loopback address. */
bool aws_endpoint_check(const char *url, char *err, size_t errlen);

/*
 * Splits url into the Host header value (host[:port], the port only when not
 * the scheme's default) and the path ("/" when empty). False when malformed.
 */
bool aws_url_host_path(const char *url, char *host, size_t hostlen, char *path, size_t pathlen);

/* True when the environment variable is set to "true" (any case). */
bool aws_env_true(const char *name);

#endif
