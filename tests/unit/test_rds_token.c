/*
 * Unit tests for secrets/rds_token.c: RDS IAM auth tokens must be exactly what botocore's
 * generate_db_auth_token makes for the same credentials and time. The vectors below were
 * printed by tests/aws/gen_rds_token_vectors.py; the test also runs that script live with
 * Debian's /usr/bin/python3 (python3-botocore) when it is there, so a change on either side
 * shows.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"
#include "secrets/rds_token.h"
#include "secrets/secure_mem.h"

struct vector {
    time_t epoch;
    const char *region, *host;
    int port;
    const char *user, *akid, *secret, *session_token, *token;
};

static const struct vector vectors[] = {
    {1700000000, "us-east-1", "mydb.abcdefghijkl.us-east-1.rds.amazonaws.com", 3306, "app",
     "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL,
     "mydb.abcdefghijkl.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=app&X-Amz-"
     "Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Fus-east-1%2Frds-db%"
     "2Faws4_request&X-Amz-Date=20231114T221320Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-"
     "Amz-Signature=896f6411971464e23b46f19e1fed799954fe656e4f97cbbc1f1672e60a6437f8"},
    {1767225599, "eu-west-1", "cluster.cluster-xyz.eu-west-1.rds.amazonaws.com", 3307,
     "iam user+1@x", "AKIAIOSFODNN7EXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY", NULL,
     "cluster.cluster-xyz.eu-west-1.rds.amazonaws.com:3307/?Action=connect&DBUser=iam%20user%"
     "2B1%40x&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20251231%"
     "2Feu-west-1%2Frds-db%2Faws4_request&X-Amz-Date=20251231T235959Z&X-Amz-Expires=900&X-Amz-"
     "SignedHeaders=host&X-Amz-Signature="
     "f30475c0892c9edef505da43348a15fa5665aa1e56390704ced0179660052cf4"},
    /* Temporary credentials: the session token is signed as X-Amz-Security-Token. */
    {1704067200, "ap-southeast-2", "127.0.0.1", 13306, "iam_app", "ASIAEXAMPLETEMPKEY",
     "tempSecret/With+Symbols=",
     "IQoJb3JpZ2luX2VjEHIaCXVzLWVhc3QtMSJHMEUCIQD/+token==with/slashes+plus",
     "127.0.0.1:13306/?Action=connect&DBUser=iam_app&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-"
     "Credential=ASIAEXAMPLETEMPKEY%2F20240101%2Fap-southeast-2%2Frds-db%2Faws4_request&X-Amz-"
     "Date=20240101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token="
     "IQoJb3JpZ2luX2VjEHIaCXVzLWVhc3QtMSJHMEUCIQD%2F%2Btoken%3D%3Dwith%2Fslashes%2Bplus&X-Amz-"
     "Signature=ab93df493fde909cd1dafde6f9b0909b16471890df4e6ab6139bc7ffd78d05c7"},
};

static char *make(const struct vector *v)
{
    struct rds_token_signer s = {v->akid, v->secret, v->session_token, v->region};
    return rds_token_make(&s, v->host, v->port, v->user, v->epoch);
}

static void test_vectors(void)
{
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        char *t = make(&vectors[i]);
        CHECK_STR(t, vectors[i].token);
        secure_free(t);
    }
}

/* Another second, user, port or key gives another token; missing inputs give none. */
static void test_inputs_matter(void)
{
    struct vector v = vectors[0];
    char *base = make(&v);
    v.epoch++;
    char *later = make(&v);
    v = vectors[0];
    v.user = "other";
    char *user = make(&v);
    v = vectors[0];
    v.secret = "another-secret";
    char *key = make(&v);
    CHECK(base && later && user && key);
    CHECK(strcmp(base, later) != 0 && strcmp(base, user) != 0 && strcmp(base, key) != 0);
    CHECK(strstr(user, "DBUser=other&") != NULL);
    secure_free(base);
    secure_free(later);
    secure_free(user);
    secure_free(key);
    v = vectors[0];
    v.user = "";
    CHECK(make(&v) == NULL);
    v = vectors[0];
    v.port = 0;
    CHECK(make(&v) == NULL);
    v = vectors[0];
    v.region = NULL;
    CHECK(make(&v) == NULL);
    CHECK(rds_token_make(NULL, "h", 1, "u", 0) == NULL);
}

/* Splits a query at '&' into a sorted, NUL-separated list for an order-free comparison. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool same_params(const char *a, const char *b)
{
    char *x = strdup(a), *y = strdup(b);
    char *px[32], *py[32];
    size_t nx = 0, ny = 0;
    for (char *s = strtok(x, "?&"); s && nx < 32; s = strtok(NULL, "?&"))
        px[nx++] = s;
    for (char *s = strtok(y, "?&"); s && ny < 32; s = strtok(NULL, "?&"))
        py[ny++] = s;
    bool same = nx == ny;
    qsort(px, nx, sizeof(char *), cmp_str);
    qsort(py, ny, sizeof(char *), cmp_str);
    for (size_t i = 0; same && i < nx; i++)
        same = strcmp(px[i], py[i]) == 0;
    free(x);
    free(y);
    return same;
}

/* Each line of the live script: the same token ("python" signer) or parameters ("crt"). */
static void test_live_botocore(void)
{
    const char *py = "/usr/bin/python3";
    if (access(py, X_OK) != 0 || system("/usr/bin/python3 -c 'import botocore' 2>/dev/null")) {
        printf("SKIP live botocore comparison: /usr/bin/python3 with botocore not available\n");
        return;
    }
    FILE *f = popen("/usr/bin/python3 ../aws/gen_rds_token_vectors.py", "r");
    CHECK(f != NULL);
    if (!f)
        return;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *field[10];
        size_t k = 0;
        for (char *p = line; k < 10; k++) {
            field[k] = p;
            char *tab = strchr(p, '\t');
            if (!tab) {
                k++;
                break;
            }
            *tab = '\0';
            p = tab + 1;
        }
        CHECK(k == 10);
        if (k != 10)
            continue;
        struct vector v = {
            .epoch = (time_t)atoll(field[1]),
            .region = field[2],
            .host = field[3],
            .port = atoi(field[4]),
            .user = field[5],
            .akid = field[6],
            .secret = field[7],
            .session_token = strcmp(field[8], "-") == 0 ? NULL : field[8],
        };
        char *t = make(&v);
        if (strcmp(field[0], "python") == 0)
            CHECK_STR(t, field[9]);
        else
            CHECK(t && same_params(t, field[9]));
        secure_free(t);
        n++;
    }
    CHECK(pclose(f) == 0);
    CHECK(n >= 3);
    printf("compared %d tokens with botocore's generate_db_auth_token\n", n);
}

int main(void)
{
    test_vectors();
    test_inputs_matter();
    test_live_botocore();
    return test_summary();
}
