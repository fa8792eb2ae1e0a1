/* Credential snapshots and the parser for RDS-format secrets. */
#include "secrets/creds.h"
#include "secrets/secure_mem.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CREDS_DEFAULT_PORT 3306

/* Error text is formatted only from literals and key names, never from values. */
static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void wipe_str(char *s)
{
    if (s)
        OPENSSL_cleanse(s, strlen(s));
}

static void wipe_free(char *s)
{
    wipe_str(s);
    free(s);
}

/* cJSON keeps its own copies of every string; wipe them before cJSON_Delete frees them. */
static void wipe_json_tree(cJSON *node)
{
    for (; node; node = node->next) {
        wipe_str(node->valuestring);
        wipe_json_tree(node->child);
    }
}

/* Outcome of reading one key: absent (or JSON null), present and valid, or wrong. */
enum field_status { FIELD_ABSENT, FIELD_OK, FIELD_BAD };

/* Copies an optional string value; an empty string counts as absent. */
static enum field_status get_string(const cJSON *obj, const char *key, char **out, char *err,
                                    size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!item || cJSON_IsNull(item))
        return FIELD_ABSENT;
    if (!cJSON_IsString(item) || !item->valuestring) {
        set_err(err, errlen, "key '%s' must be a string", key);
        return FIELD_BAD;
    }
    if (item->valuestring[0] == '\0')
        return FIELD_ABSENT;
    *out = strdup(item->valuestring);
    if (!*out) {
        set_err(err, errlen, "out of memory");
        return FIELD_BAD;
    }
    return FIELD_OK;
}

/* Like get_string, but the key must be there with a non-empty value. */
static bool get_required_string(const cJSON *obj, const char *key, char **out, char *err,
                                size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!item) {
        set_err(err, errlen, "missing key '%s'", key);
        return false;
    }
    enum field_status st = get_string(obj, key, out, err, errlen);
    if (st == FIELD_ABSENT)
        set_err(err, errlen, "key '%s' is empty", key);
    return st == FIELD_OK;
}

/* A port given as a string: 1-5 ASCII digits, nothing else (no sign, no spaces). */
static int port_from_string(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5 || strspn(s, "0123456789") != n)
        return 0;
    int v = atoi(s);
    return v <= 65535 ? v : 0;
}

/* A port given as a number must be a whole number; 3306.5 is a typo, not 3306. */
static int port_from_number(double d)
{
    if (!(d >= 1 && d <= 65535) || d != (double)(int)d)
        return 0;
    return (int)d;
}

static bool get_port(const cJSON *obj, int *port, char *err, size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, "port");
    *port = CREDS_DEFAULT_PORT;
    if (!item || cJSON_IsNull(item))
        return true;
    int v = 0;
    if (cJSON_IsNumber(item))
        v = port_from_number(item->valuedouble);
    else if (cJSON_IsString(item) && item->valuestring)
        v = port_from_string(item->valuestring);
    if (v == 0) {
        set_err(err, errlen, "key 'port' must be a number 1-65535 or a numeric string");
        return false;
    }
    *port = v;
    return true;
}

static bool fill_creds(struct creds *c, const cJSON *obj, char *err, size_t errlen)
{
    char *pw = NULL;
    if (!get_required_string(obj, "username", &c->username, err, errlen) ||
        !get_required_string(obj, "password", &pw, err, errlen))
        return false;
    /* The one long-lived copy of the password: in memory no core dump holds. */
    c->password = secure_strdup(pw);
    wipe_free(pw);
    if (!c->password) {
        set_err(err, errlen, "out of memory");
        return false;
    }
    if (get_string(obj, "host", &c->host, err, errlen) == FIELD_BAD ||
        get_string(obj, "dbname", &c->dbname, err, errlen) == FIELD_BAD ||
        get_string(obj, "engine", &c->engine, err, errlen) == FIELD_BAD ||
        get_string(obj, "dbClusterIdentifier", &c->cluster_id, err, errlen) == FIELD_BAD)
        return false;
    return get_port(obj, &c->port, err, errlen);
}

/* Only whitespace (or the NUL some writers leave) may follow the JSON value. */
static bool only_trailing_space(const char *p, const char *end)
{
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0')
            return false;
    return true;
}

/*
 * The _Opts variant returns the error position through an out-parameter
 * instead of cJSON's global error pointer, so parsing is thread-safe.
 */
static cJSON *parse_json(const char *json, size_t len, char *err, size_t errlen)
{
    const char *end = NULL;
    if (!json || len == 0) {
        set_err(err, errlen, "empty input");
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (root && only_trailing_space(end, json + len))
        return root;
    size_t off = end && end >= json ? (size_t)(end - json) : 0;
    set_err(err, errlen, "invalid JSON near offset %zu", off);
    if (root) {
        wipe_json_tree(root);
        cJSON_Delete(root);
    }
    return NULL;
}

struct creds *creds_parse_rds_json(const char *json, size_t len, char *err, size_t errlen)
{
    cJSON *root = parse_json(json, len, err, errlen);
    if (!root)
        return NULL;
    struct creds *c = NULL;
    if (!cJSON_IsObject(root)) {
        set_err(err, errlen, "not a JSON object");
    } else if (!(c = calloc(1, sizeof(*c)))) {
        set_err(err, errlen, "out of memory");
    } else {
        c->refs = 1;
        if (!fill_creds(c, root, err, errlen)) {
            creds_unref(c);
            c = NULL;
        }
    }
    wipe_json_tree(root);
    cJSON_Delete(root);
    return c;
}

struct creds *creds_new(const char *username, const char *password, const char *host, int port,
                        const char *dbname, const char *version)
{
    struct creds *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->refs = 1;
    c->port = port;
    c->username = username ? strdup(username) : NULL;
    c->password = password ? secure_strdup(password) : NULL;
    c->host = host ? strdup(host) : NULL;
    c->dbname = dbname ? strdup(dbname) : NULL;
    c->version = version ? strdup(version) : NULL;
    if (!c->username || !c->password || (host && !c->host) || (dbname && !c->dbname) ||
        (version && !c->version)) {
        creds_unref(c);
        return NULL;
    }
    return c;
}

struct creds *creds_ref(struct creds *c)
{
    if (c)
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

void creds_unref(struct creds *c)
{
    /* ACQ_REL: the thread that frees must see every other thread's last use. */
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    wipe_free(c->username);
    secure_free(c->password);
    wipe_free(c->host);
    wipe_free(c->dbname);
    wipe_free(c->engine);
    wipe_free(c->cluster_id);
    wipe_free(c->version);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

/* Equal strings, where two NULLs are equal and NULL differs from any string. */
static bool same_str(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

bool creds_same_login(const struct creds *a, const struct creds *b)
{
    if (!a || !b)
        return a == b;
    return a->port == b->port && same_str(a->username, b->username) &&
           ((a->iam && b->iam) || same_str(a->password, b->password)) && same_str(a->host, b->host);
}
