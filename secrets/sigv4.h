/* AWS Signature Version 4 (header-based, AWS4-HMAC-SHA256): pure functions over buffers. */
#ifndef CREDPROXY_SECRETS_SIGV4_H
#define CREDPROXY_SECRETS_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* One request header as sent; names are matched case-insensitively. */
struct sigv4_header {
    const char *name;
    const char *value; /* may span lines (obsolete folding): folded into single spaces */
};

/* The parts of an HTTP request that the signature covers. */
struct sigv4_request {
    const char *method;                 /* "GET", "POST" */
    const char *path;                   /* as sent, without the query; "" means "/" */
    const char *query;                  /* after '?', as sent, or NULL */
    const struct sigv4_header *headers; /* every header to sign, Host and X-Amz-Date included */
    size_t n_headers;
    const void *payload; /* request body, may be NULL when payload_len is 0 */
    size_t payload_len;
};

/* Who signs, and for what scope. */
struct sigv4_key {
    const char *access_key_id;
    const char *secret_access_key;
    const char *region;   /* "us-east-1" */
    const char *service;  /* "secretsmanager", "sts" */
    const char *amz_date; /* "YYYYMMDDTHHMMSSZ", the request's X-Amz-Date */
};

#define SIGV4_DATE_LEN 16 /* strlen("20150830T123600Z") */

/* Formats t (UTC) as an X-Amz-Date value into out (at least SIGV4_DATE_LEN + 1 bytes). */
void sigv4_format_date(time_t t, char *out);

/*
 * The canonical request (task 1), as a malloc'd string, or NULL when out of
 * memory or when a header name is empty. The path is normalized (dot segments
 * removed, repeated slashes collapsed) and every byte outside the unreserved
 * set is percent-encoded, as every service but S3 expects; query parameters
 * are decoded, re-encoded and sorted. With signed_headers, also returns the
 * SignedHeaders list ("host;x-amz-date"), malloc'd.
 */
char *sigv4_canonical_request(const struct sigv4_request *req, char **signed_headers);

/* The string to sign (task 2) for a canonical request, malloc'd, or NULL when out of memory. */
char *sigv4_string_to_sign(const char *canonical_request, const struct sigv4_key *key);

/*
 * The Authorization header value for req, signed with key, into out. False
 * when out is too small or memory runs out. Intermediate keys derived from
 * the secret are wiped before returning.
 */
bool sigv4_authorization(const struct sigv4_request *req, const struct sigv4_key *key, char *out,
                         size_t outlen);

#define SIGV4_SIGNATURE_HEX 64 /* hex digits of a signature */

/*
 * The signature of req with key, as lower-case hex, into out; with
 * signed_headers, also the SignedHeaders list (malloc'd). A presigned URL
 * puts its X-Amz-* parameters in req->query and sends this as
 * X-Amz-Signature. False when memory runs out. Derived keys are wiped.
 */
bool sigv4_signature(const struct sigv4_request *req, const struct sigv4_key *key,
                     char out[SIGV4_SIGNATURE_HEX + 1], char **signed_headers);

/* "YYYYMMDD/REGION/SERVICE/aws4_request" for key into out. */
void sigv4_credential_scope(const struct sigv4_key *key, char *out, size_t outlen);

/* Lower-case hex SHA-256 of data into out (65 bytes). */
void sigv4_sha256_hex(const void *data, size_t len, char *out);

/*
 * s percent-encoded as SigV4 and the AWS query protocol want (RFC 3986:
 * everything but A-Z a-z 0-9 - _ . ~), '/' kept when keep_slash; malloc'd,
 * or NULL when out of memory.
 */
char *sigv4_uri_encode(const char *s, size_t len, bool keep_slash);

#endif
