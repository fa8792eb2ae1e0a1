/* RDS IAM database authentication tokens: a SigV4-presigned "connect" request, made offline. */
#ifndef CREDPROXY_SECRETS_RDS_TOKEN_H
#define CREDPROXY_SECRETS_RDS_TOKEN_H

#include <time.h>

/* How long a token is valid after it is made (X-Amz-Expires), as RDS requires. */
#define RDS_TOKEN_EXPIRES_SEC 900

/* Who signs: the strings of one set of AWS credentials. */
struct rds_token_signer {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL or "" for long-term keys */
    const char *region;        /* the database's region, "eu-west-1" */
};

/*
 * The IAM auth token for logging in to host:port as user, signed at time
 * now: "HOST:PORT/?Action=connect&DBUser=USER&X-Amz-Algorithm=...&
 * X-Amz-Signature=HEX", exactly what the AWS SDKs' generate_db_auth_token
 * makes (the presigned URL without "https://"), valid RDS_TOKEN_EXPIRES_SEC.
 * Pure: HMAC-SHA256 only, no I/O. Returns a string in secure memory (free it
 * with secure_free, which wipes it), or NULL when out of memory or an
 * argument is missing.
 */
char *rds_token_make(const struct rds_token_signer *s, const char *host, int port, const char *user,
                     time_t now);

#endif
