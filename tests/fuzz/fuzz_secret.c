/*
 * libFuzzer target for the RDS secret parser (creds_parse_rds_json in secrets/creds.c), which
 * reads what a secret file or Secrets Manager holds.
 *
 * Input: the secret's bytes (not NUL-terminated). Checked: a parsed secret has a username, a
 * password and a port in 1..65535; a rejected one gets one of creds.c's fixed messages, which
 * name keys but never quote the input (so never a password).
 */
#include <stdbool.h>

#include "secrets/creds.h"
#include "tests/fuzz/fuzz_common.h"

/* True when msg is one of creds.c's messages: fixed text, key names and an offset only. */
static bool known_message(const char *msg)
{
    static const char *const keys[] = {"username", "password", "host",
                                       "dbname",   "engine",   "dbClusterIdentifier"};
    static const char *const fixed[] = {"out of memory", "empty input", "not a JSON object",
                                        "key 'port' must be a number 1-65535 or a numeric string"};
    char buf[128];
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (strcmp(msg, fixed[i]) == 0)
            return true;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        snprintf(buf, sizeof(buf), "key '%s' must be a string", keys[i]);
        if (strcmp(msg, buf) == 0)
            return true;
        snprintf(buf, sizeof(buf), "missing key '%s'", keys[i]);
        if (strcmp(msg, buf) == 0)
            return true;
        snprintf(buf, sizeof(buf), "key '%s' is empty", keys[i]);
        if (strcmp(msg, buf) == 0)
            return true;
    }
    const char *p = "invalid JSON near offset ";
    if (strncmp(msg, p, strlen(p)) != 0)
        return false;
    msg += strlen(p);
    if (!*msg)
        return false;
    for (; *msg; msg++)
        if (*msg < '0' || *msg > '9')
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = (char *)fuzz_copy(data, size);
    if (!json)
        return 0;
    char err[256];
    memset(err, 'x', sizeof(err));
    struct creds *c = creds_parse_rds_json(json, size, err, sizeof(err));
    if (c) {
        FUZZ_CHECK(c->refs == 1);
        FUZZ_CHECK(c->username && c->password);
        FUZZ_CHECK(c->port >= 1 && c->port <= 65535);
        fuzz_touch(c->username, strlen(c->username));
        fuzz_touch(c->password, strlen(c->password));
        if (c->host)
            fuzz_touch(c->host, strlen(c->host));
        FUZZ_CHECK(creds_same_login(c, c));
        struct creds *again = creds_ref(c);
        FUZZ_CHECK(again == c && c->refs == 2);
        creds_unref(again);
        creds_unref(c);
    } else {
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
        FUZZ_CHECK(known_message(err));
    }
    free(json);
    return 0;
}
