/*
 * Unit tests for secrets/sigv4.c: AWS's public SigV4 test suite (aws4_testsuite/, Apache-2.0,
 * see its LICENSE and NOTICE) and GetSecretValue requests signed by Debian's python3-botocore
 * (tests/aws/gen_sigv4_vectors.py prints the vectors below).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "secrets/sigv4.h"

#define SUITE "aws4_testsuite/"

/* The suite's fixed inputs (aws4_testsuite/README in the shared test data). */
#define SUITE_AKID   "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_TOKEN  "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"

/*
 * Every case of the suite. The four that botocore's own runner skips are here
 * too: they only need a sort by key, then value, of the decoded parameters.
 */
static const char *const suite_cases[] = {
    "get-header-key-duplicate",
    "get-header-value-multiline",
    "get-header-value-order",
    "get-header-value-trim",
    "get-unreserved",
    "get-utf8",
    "get-vanilla",
    "get-vanilla-empty-query-key",
    "get-vanilla-query",
    "get-vanilla-query-order-encoded",
    "get-vanilla-query-order-key",
    "get-vanilla-query-order-key-case",
    "get-vanilla-query-order-value",
    "get-vanilla-query-unreserved",
    "get-vanilla-utf8-query",
    "get-vanilla-with-session-token",
    "normalize-path/get-relative",
    "normalize-path/get-relative-relative",
    "normalize-path/get-slash",
    "normalize-path/get-slash-dot-slash",
    "normalize-path/get-slash-pointless-dot",
    "normalize-path/get-slashes",
    "normalize-path/get-space",
    "normalize-path/get-special-character",
    "post-header-key-case",
    "post-header-key-sort",
    "post-header-value-case",
    "post-sts-token/post-sts-header-after",
    "post-sts-token/post-sts-header-before",
    "post-vanilla",
    "post-vanilla-empty-query-value",
    "post-vanilla-query",
    "post-x-www-form-urlencoded",
    "post-x-www-form-urlencoded-parameters",
};

/* Reads a whole file; NULL (and a failed check) when it cannot. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* Strips one trailing newline (some expected files end with one, some do not). */
static void chomp(char *s)
{
    size_t n = strlen(s);
    if (n && s[n - 1] == '\n')
        s[n - 1] = '\0';
}

#define MAX_HEADERS 16

/* A raw request from a .req file, split in place. */
struct parsed_req {
    char *method, *path, *query, *body;
    struct sigv4_header headers[MAX_HEADERS];
    size_t n_headers;
};

/*
 * Parses "METHOD TARGET HTTP/1.1\n" then "Name:value" lines (a line starting
 * with a blank continues the previous value), an empty line, and the body.
 */
static bool parse_req(char *text, struct parsed_req *r)
{
    memset(r, 0, sizeof(*r));
    char *line_end = strchr(text, '\n');
    if (!line_end)
        line_end = text + strlen(text);
    *line_end = '\0';
    char *proto = strrchr(text, ' ');
    char *sp = strchr(text, ' ');
    if (!sp || !proto || proto == sp)
        return false;
    *sp = '\0';
    *proto = '\0';
    r->method = text;
    r->path = sp + 1;
    char *q = strchr(r->path, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    }
    char *p = line_end + 1;
    while (*p && *p != '\n') {
        char *e = strchr(p, '\n');
        char *next = e ? e + 1 : p + strlen(p);
        if (e)
            *e = '\0';
        if ((*p == ' ' || *p == '\t') && r->n_headers) {
            /* Continuation: rejoin onto the previous value, which ends right before p. */
            p[-1] = '\n';
        } else {
            char *colon = strchr(p, ':');
            if (!colon || r->n_headers == MAX_HEADERS)
                return false;
            *colon = '\0';
            r->headers[r->n_headers].name = p;
            r->headers[r->n_headers++].value = colon + 1;
        }
        p = next;
    }
    r->body = *p == '\n' ? p + 1 : p;
    return true;
}

static void run_suite_case(const char *name)
{
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    char path[512];
    char *files[4];
    static const char *const ext[] = {"req", "creq", "sts", "authz"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), SUITE "%s/%s.%s", name, base, ext[i]);
        files[i] = slurp(path);
    }
    CHECK(files[0] && files[1] && files[2] && files[3]);
    if (!files[0] || !files[1] || !files[2] || !files[3])
        goto out;
    for (int i = 1; i < 4; i++)
        chomp(files[i]);
    struct parsed_req r;
    bool parsed = parse_req(files[0], &r);
    CHECK(parsed);
    if (!parsed)
        goto out;
    /* The session-token case signs a token the .req does not show; add it as a signer does. */
    if (strcmp(base, "get-vanilla-with-session-token") == 0)
        r.headers[r.n_headers++] = (struct sigv4_header){"X-Amz-Security-Token", SUITE_TOKEN};
    struct sigv4_request req = {
        .method = r.method,
        .path = r.path,
        .query = r.query,
        .headers = r.headers,
        .n_headers = r.n_headers,
        .payload = r.body,
        .payload_len = strlen(r.body),
    };
    struct sigv4_key key = {SUITE_AKID, SUITE_SECRET, "us-east-1", "service", "20150830T123600Z"};
    char *signed_headers = NULL;
    char *creq = sigv4_canonical_request(&req, &signed_headers);
    char *sts = creq ? sigv4_string_to_sign(creq, &key) : NULL;
    char authz[512] = "";
    bool ok = sigv4_authorization(&req, &key, authz, sizeof(authz));
    if (!creq || strcmp(creq, files[1]) != 0)
        fprintf(stderr, "case %s: canonical request differs:\n%s\n---- expected:\n%s\n", name,
                creq ? creq : "(null)", files[1]);
    CHECK_STR(creq, files[1]);
    CHECK_STR(sts, files[2]);
    CHECK(ok);
    CHECK_STR(authz, files[3]);
    free(creq);
    free(sts);
    free(signed_headers);
out:
    for (int i = 0; i < 4; i++)
        free(files[i]);
}

/* ---- botocore's signatures of GetSecretValue --------------------------------------------- */

struct botocore_vector {
    const char *name, *region, *host, *body, *akid, *secret, *token, *amz_date;
    const char *authz;
};

/* Output of tests/aws/gen_sigv4_vectors.py (Debian's python3-botocore 1.29). */
static const struct botocore_vector botocore_vectors[] = {
    {"no session token", "us-east-1", "secretsmanager.us-east-1.amazonaws.com",
     "{\"SecretId\":\"prod/app/db\",\"VersionStage\":\"AWSCURRENT\"}", "AKIDEXAMPLE",
     "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL, "20240229T235959Z",
     "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240229/us-east-1/secretsmanager/aws4_request, "
     "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
     "Signature=843c715c52a9ee4ef9fdbb4ff8706aa35baa443ed6f0c8ebf4b1cfa889667c59"},
    {"with session token", "eu-west-3", "secretsmanager.eu-west-3.amazonaws.com",
     "{\"SecretId\":\"arn:aws:secretsmanager:eu-west-3:123456789012:secret:prod/db-AbCdEf\","
     "\"VersionStage\":\"AWSPENDING\"}",
     "ASIAEXAMPLEEXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
     "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+EXAMPLE/token==",
     "20240229T235959Z",
     "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEEXAMPLE/20240229/eu-west-3/secretsmanager/"
     "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;"
     "x-amz-target, Signature=1d367c1f5577a65ed41af983ffe528576d7566494214a5d89251ee4e2b33cb90"},
};

static void run_botocore_vector(const struct botocore_vector *v)
{
    struct sigv4_header h[5] = {
        {"Content-Type", "application/x-amz-json-1.1"},
        {"X-Amz-Target", "secretsmanager.GetSecretValue"},
        {"Host", v->host},
        {"X-Amz-Date", v->amz_date},
        {"X-Amz-Security-Token", v->token},
    };
    struct sigv4_request req = {"POST", "/", NULL, h, v->token ? 5 : 4, v->body, strlen(v->body)};
    struct sigv4_key key = {v->akid, v->secret, v->region, "secretsmanager", v->amz_date};
    char authz[512] = "";
    CHECK(sigv4_authorization(&req, &key, authz, sizeof(authz)));
    if (strcmp(authz, v->authz) != 0)
        fprintf(stderr, "botocore vector '%s' differs\n", v->name);
    CHECK_STR(authz, v->authz);
    /* A different secret key must give a different signature. */
    key.secret_access_key = "wrong";
    char other[512] = "";
    CHECK(sigv4_authorization(&req, &key, other, sizeof(other)));
    CHECK(strcmp(other, v->authz) != 0);
}

/* ---- small pieces ------------------------------------------------------------------------- */

static void test_helpers(void)
{
    char d[SIGV4_DATE_LEN + 1];
    sigv4_format_date(1440938160, d); /* 2015-08-30 12:36:00 UTC */
    CHECK_STR(d, "20150830T123600Z");
    char h[65];
    sigv4_sha256_hex("", 0, h);
    CHECK_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    char *e = sigv4_uri_encode("a b/c~d+e=", 10, false);
    CHECK_STR(e, "a%20b%2Fc~d%2Be%3D");
    free(e);
    e = sigv4_uri_encode("/a b/", 5, true);
    CHECK_STR(e, "/a%20b/");
    free(e);
    /* Too small an output buffer is an error, not a cut header. */
    struct sigv4_header hd[] = {{"Host", "h"}, {"X-Amz-Date", "20150830T123600Z"}};
    struct sigv4_request req = {"GET", "/", NULL, hd, 2, NULL, 0};
    struct sigv4_key key = {SUITE_AKID, SUITE_SECRET, "us-east-1", "service", "20150830T123600Z"};
    char small[32];
    CHECK(!sigv4_authorization(&req, &key, small, sizeof(small)));
    key.amz_date = "2015";
    char big[512];
    CHECK(!sigv4_authorization(&req, &key, big, sizeof(big)));
}

int main(void)
{
    for (size_t i = 0; i < sizeof(suite_cases) / sizeof(suite_cases[0]); i++)
        run_suite_case(suite_cases[i]);
    for (size_t i = 0; i < sizeof(botocore_vectors) / sizeof(botocore_vectors[0]); i++)
        run_botocore_vector(&botocore_vectors[i]);
    test_helpers();
    return test_summary();
}
