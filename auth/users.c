/* The local users file: parsed once into a sorted table, hashes wiped when freed. */
#include "auth/users.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "auth/scramble.h"

#define STAGE2_LEN 20

struct local_user {
    char *name; /* owned, NUL-terminated */
    size_t name_len;
    uint8_t stage2[STAGE2_LEN]; /* SHA1(SHA1(password)) */
    unsigned line;              /* where it was defined, for duplicate reports */
};

struct local_users {
    struct local_user *v; /* sorted by name for bsearch */
    size_t n;
    size_t cap;
};

/* Loader state: where we are in which file, for "PATH:LINE: reason" errors. */
struct load_ctx {
    const char *path;
    unsigned line;
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 2, 3))) static void load_error(struct load_ctx *c, const char *fmt,
                                                             ...)
{
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (c->errlen)
        snprintf(c->err, c->errlen, "%s:%u: %s", c->path, c->line, reason);
}

/* Orders by bytes, then length, so lookups by (name, len) need no NUL. */
static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return (alen > blen) - (alen < blen);
}

static int user_cmp(const void *a, const void *b)
{
    const struct local_user *x = a, *y = b;
    return name_cmp(x->name, x->name_len, y->name, y->name_len);
}

void local_users_free(struct local_users *users)
{
    if (!users)
        return;
    for (size_t i = 0; i < users->n; i++) {
        OPENSSL_cleanse(users->v[i].stage2, STAGE2_LEN);
        free(users->v[i].name);
    }
    free(users->v);
    OPENSSL_cleanse(users, sizeof(*users));
    free(users);
}

/* Appends one user; false only when out of memory. */
static bool users_add(struct local_users *u, const char *name, size_t name_len,
                      const uint8_t stage2[STAGE2_LEN], unsigned line)
{
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 16;
        struct local_user *v = realloc(u->v, cap * sizeof(*v));
        if (!v)
            return false;
        u->v = v;
        u->cap = cap;
    }
    char *copy = strndup(name, name_len);
    if (!copy)
        return false;
    struct local_user *e = &u->v[u->n++];
    e->name = copy;
    e->name_len = name_len;
    memcpy(e->stage2, stage2, STAGE2_LEN);
    e->line = line;
    return true;
}

/* Drops trailing whitespace (including "\r\n") in place. */
static void rstrip(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && strchr(" \t\r\n", s[n - 1]))
        s[--n] = '\0';
}

/*
 * Parses one line into u. Blank lines and '#' comments are skipped. The
 * reasons never quote the hash part of the line.
 */
static bool parse_line(struct load_ctx *c, char *line, struct local_users *u)
{
    uint8_t stage2[STAGE2_LEN];
    rstrip(line);
    const char *start = line + strspn(line, " \t");
    if (*start == '\0' || *start == '#')
        return true;
    char *colon = strchr(line, ':');
    if (!colon) {
        load_error(c, "expected \"name:*HASH\" (no ':' found)");
        return false;
    }
    size_t name_len = (size_t)(colon - line);
    if (name_len == 0 || strcspn(line, " \t") < name_len) {
        load_error(c, "user name is empty or contains whitespace");
        return false;
    }
    if (!native_password_parse_hash(colon + 1, stage2)) {
        load_error(c,
                   "hash for user '%.*s' is not '*' followed by 40 hex digits "
                   "(make one with credproxy --hash-password)",
                   (int)name_len, line);
        return false;
    }
    bool added = users_add(u, line, name_len, stage2, c->line);
    OPENSSL_cleanse(stage2, sizeof(stage2));
    if (!added)
        load_error(c, "out of memory");
    return added;
}

/* Reads every line of f into u; false with c->err set on the first bad line. */
static bool parse_file(struct load_ctx *c, FILE *f, struct local_users *u)
{
    char *line = NULL;
    size_t cap = 0;
    bool ok = true;
    while (ok && getline(&line, &cap, f) >= 0) {
        c->line++;
        ok = parse_line(c, line, u);
    }
    if (ok && ferror(f)) {
        load_error(c, "read error: %s", strerror(errno));
        ok = false;
    }
    if (line)
        OPENSSL_cleanse(line, cap); /* the buffer held hashes */
    free(line);
    return ok;
}

/* Sorts for lookup and rejects a name defined twice, naming both lines. */
static bool sort_and_check(struct load_ctx *c, struct local_users *u)
{
    if (u->n > 1)
        qsort(u->v, u->n, sizeof(*u->v), user_cmp);
    for (size_t i = 1; i < u->n; i++) {
        if (user_cmp(&u->v[i - 1], &u->v[i]) != 0)
            continue;
        const struct local_user *a = &u->v[i - 1], *b = &u->v[i];
        c->line = a->line > b->line ? a->line : b->line;
        load_error(c, "duplicate user '%s' (first defined on line %u)", a->name,
                   a->line < b->line ? a->line : b->line);
        return false;
    }
    return true;
}

struct local_users *local_users_load(const char *path, char *err, size_t errlen)
{
    struct load_ctx c = {.path = path, .line = 0, .err = err, .errlen = errlen};
    struct local_users *u = calloc(1, sizeof(*u));
    FILE *f = fopen(path, "re");
    if (!f || !u) {
        if (errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(f ? ENOMEM : errno));
        goto out_free;
    }
    /* A native hash logs in as that user (it is what the scramble proves): keep it private. */
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 066)) {
        if (errlen)
            snprintf(err, errlen,
                     "%s: readable or writable by group or others (mode %03o); chmod 600 it", path,
                     (unsigned)(st.st_mode & 0777));
        goto out_free;
    }
    if (!parse_file(&c, f, u) || !sort_and_check(&c, u))
        goto out_free;
    fclose(f);
    return u;
out_free:
    if (f)
        fclose(f);
    local_users_free(u);
    return NULL;
}

const uint8_t *local_users_find(const struct local_users *users, const char *name, size_t name_len)
{
    size_t lo = 0, hi = users ? users->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct local_user *e = &users->v[mid];
        int c = name_cmp(name, name_len, e->name, e->name_len);
        if (c == 0)
            return e->stage2;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

void local_users_format_hash(const char *password, size_t len, char out[42])
{
    static const char hex[] = "0123456789ABCDEF";
    uint8_t stage2[STAGE2_LEN];
    native_password_stage2(password, len, stage2);
    out[0] = '*';
    for (size_t i = 0; i < STAGE2_LEN; i++) {
        out[1 + 2 * i] = hex[stage2[i] >> 4];
        out[2 + 2 * i] = hex[stage2[i] & 0xf];
    }
    out[1 + 2 * STAGE2_LEN] = '\0';
    OPENSSL_cleanse(stage2, sizeof(stage2));
}
