/* One AWS API request over HTTP: SigV4-signed headers, and what an error response means. */
#include "secrets/aws_request.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "secrets/aws_endpoint.h"
#include "secrets/sigv4.h"

#define MAX_HEADER 4096

/* "Name: value" into a fresh buffer; NULL when out of memory. */
static char *header_line(const char *name, const char *value)
{
    char *s = NULL;
    return asprintf(&s, "%s: %s", name, value) < 0 ? NULL : s;
}

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

struct http_request *aws_request_start(struct http_client *http, const struct aws_request_params *p,
                                       const struct aws_credentials *creds, http_done_cb cb,
                                       void *arg, char *err, size_t errlen)
{
    char host[512], path[1024], date[SIGV4_DATE_LEN + 1];
    if (!aws_url_host_path(p->url, host, sizeof(host), path, sizeof(path))) {
        snprintf(err, errlen, "endpoint '%.200s' is not a valid URL", p->url);
        return NULL;
    }
    sigv4_format_date(time(NULL), date);
    struct sigv4_header h[6];
    size_t n = 0;
    h[n++] = (struct sigv4_header){"Host", host};
    h[n++] = (struct sigv4_header){"X-Amz-Date", date};
    h[n++] = (struct sigv4_header){"Content-Type", p->content_type};
    if (p->target)
        h[n++] = (struct sigv4_header){"X-Amz-Target", p->target};
    if (creds && creds->session_token)
        h[n++] = (struct sigv4_header){"X-Amz-Security-Token", creds->session_token};
    char *lines[8] = {0};
    char authz[1024];
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++)
        ok = (lines[i] = header_line(h[i].name, h[i].value)) != NULL;
    if (ok && creds) {
        struct sigv4_request req = {"POST", path, NULL, h, n, p->body, p->body_len};
        struct sigv4_key key = {creds->access_key_id, creds->secret_access_key, p->region,
                                p->service, date};
        ok = sigv4_authorization(&req, &key, authz, sizeof(authz)) &&
             (lines[n] = header_line("Authorization", authz)) != NULL;
    }
    struct http_request *r = NULL;
    if (!ok) {
        snprintf(err, errlen, "cannot sign the request (out of memory)");
    } else {
        struct http_request_params hp = {
            .method = "POST",
            .url = p->url,
            .headers = (const char *const *)lines,
            .body = p->body,
            .body_len = p->body_len,
            .timeout_ms = p->timeout_ms,
        };
        r = http_request_start(http, &hp, cb, arg, err, errlen);
    }
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        wipe_free(lines[i]);
    return r;
}

/* Copies at most outlen - 1 printable ASCII bytes of s[0..len). */
static void printable(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < outlen; i++)
        out[o++] = isprint((unsigned char)s[i]) ? s[i] : ' ';
    if (outlen)
        out[o] = '\0';
}

/* "prefix#Code:suffix" or "Code:http://..." down to "Code". */
static void bare_code(const char *s, char *out, size_t outlen)
{
    const char *hash = strrchr(s, '#');
    if (hash)
        s = hash + 1;
    size_t len = strcspn(s, ":");
    printable(s, len, out, outlen);
}

/* The text between <tag> and </tag> in an XML body. */
static bool xml_text(const char *body, const char *tag, char *out, size_t outlen)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *a = strstr(body, open);
    const char *b = a ? strstr(a, close) : NULL;
    if (!a || !b)
        return false;
    a += strlen(open);
    printable(a, (size_t)(b - a), out, outlen);
    return true;
}

void aws_response_error(const struct http_response *res, char *code, size_t codelen, char *msg,
                        size_t msglen)
{
    code[0] = msg[0] = '\0';
    if (res->error_type)
        bare_code(res->error_type, code, codelen);
    if (!res->body || !res->body_len)
        return;
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    if (j) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "__type");
        if (!cJSON_IsString(t))
            t = cJSON_GetObjectItemCaseSensitive(j, "code");
        if (!code[0] && cJSON_IsString(t))
            bare_code(t->valuestring, code, codelen);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
        if (!cJSON_IsString(m))
            m = cJSON_GetObjectItemCaseSensitive(j, "Message");
        if (cJSON_IsString(m))
            printable(m->valuestring, strlen(m->valuestring), msg, msglen);
        cJSON_Delete(j);
        return;
    }
    if (!code[0])
        xml_text(res->body, "Code", code, codelen);
    xml_text(res->body, "Message", msg, msglen);
}

static const char *const throttling_codes[] = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
    "IDPCommunicationError",
};

bool aws_error_retryable(const struct http_response *res, const char *code)
{
    if (res->status == 0 || res->status >= 500 || res->status == 429)
        return true;
    for (size_t i = 0; code && i < sizeof(throttling_codes) / sizeof(throttling_codes[0]); i++)
        if (strcmp(code, throttling_codes[i]) == 0)
            return true;
    return false;
}

bool aws_error_bad_credentials(const char *code)
{
    return strcmp(code, "ExpiredTokenException") == 0 || strcmp(code, "ExpiredToken") == 0 ||
           strcmp(code, "RequestExpired") == 0;
}

long aws_backoff_ms(int attempt, long base_ms, long cap_ms)
{
    long max = base_ms;
    for (int i = 0; i < attempt && max < cap_ms; i++)
        max *= 2;
    if (max > cap_ms)
        max = cap_ms;
    unsigned int r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        return max / 2;
    return (long)(r % (unsigned long)(max + 1));
}
