/* Classifying queries by their first keyword and a few tell-tale tokens. */
#include "proxy/query_scan.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

/* Keywords that start statements returning rows and, by themselves, changing nothing. */
static const char *const read_keywords[] = {"SELECT", "SHOW",   "EXPLAIN", "DESCRIBE", "DESC",
                                            "WITH",   "VALUES", "TABLE",   NULL};

/* Skips spaces and comments; returns the offset of the first keyword character. */
static size_t skip_blank(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (isspace((unsigned char)p[i])) {
            i++;
        } else if (p[i] == '/' && i + 1 < n && p[i + 1] == '*' && !(i + 2 < n && p[i + 2] == '!')) {
            const char *end = i + 2 < n ? strstr(p + i + 2, "*/") : NULL;
            i = end ? (size_t)(end - p) + 2 : n;
        } else if (p[i] == '#' || (p[i] == '-' && i + 2 < n && p[i + 1] == '-' &&
                                   isspace((unsigned char)p[i + 2]))) {
            const char *nl = memchr(p + i, '\n', n - i);
            i = nl ? (size_t)(nl - p) + 1 : n;
        } else {
            break;
        }
    }
    return i;
}

static bool contains(struct evbuffer *buf, size_t start, size_t len, const char *what)
{
    struct evbuffer_ptr s, e;
    if (evbuffer_ptr_set(buf, &s, start, EVBUFFER_PTR_SET) < 0 ||
        evbuffer_ptr_set(buf, &e, start + len, EVBUFFER_PTR_SET) < 0)
        return false;
    return evbuffer_search_range(buf, what, strlen(what), &s, &e).pos >= 0;
}

/* A user variable: '@' not part of '@@' (system variables are tracked). */
static bool has_user_variable(struct evbuffer *buf, size_t start, size_t len)
{
    struct evbuffer_ptr s, e;
    if (evbuffer_ptr_set(buf, &s, start, EVBUFFER_PTR_SET) < 0 ||
        evbuffer_ptr_set(buf, &e, start + len, EVBUFFER_PTR_SET) < 0)
        return false;
    for (;;) {
        struct evbuffer_ptr at = evbuffer_search_range(buf, "@", 1, &s, &e);
        if (at.pos < 0)
            return false;
        char next[2] = {0, 0};
        struct evbuffer_ptr after = at;
        if (evbuffer_ptr_set(buf, &after, 1, EVBUFFER_PTR_ADD) == 0 && after.pos < e.pos)
            evbuffer_copyout_from(buf, &after, next, 1);
        if (next[0] != '@')
            return true;
        s = after;
        if (evbuffer_ptr_set(buf, &s, 1, EVBUFFER_PTR_ADD) < 0 || s.pos >= e.pos)
            return false;
    }
}

enum query_kind query_scan(struct evbuffer *buf, size_t start, size_t len)
{
    char head[64];
    size_t n = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
    struct evbuffer_ptr s;
    if (evbuffer_ptr_set(buf, &s, start, EVBUFFER_PTR_SET) < 0)
        return QUERY_WRITE;
    n = (size_t)evbuffer_copyout_from(buf, &s, head, n);
    head[n] = 0;
    size_t i = skip_blank(head, n);
    bool read = false;
    for (int k = 0; read_keywords[k] && !read; k++) {
        size_t kl = strlen(read_keywords[k]);
        read = n - i >= kl && strncasecmp(head + i, read_keywords[k], kl) == 0 &&
               (i + kl == n || !isalnum((unsigned char)head[i + kl]));
    }
    /* Session-wide effects no OK packet will report. */
    if (contains(buf, start, len, "GET_LOCK") || contains(buf, start, len, "get_lock") ||
        contains(buf, start, len, "LAST_INSERT_ID(") ||
        contains(buf, start, len, "last_insert_id("))
        return QUERY_PINNED;
    if (!read)
        return QUERY_WRITE;
    return has_user_variable(buf, start, len) ? QUERY_PINNED : QUERY_READ;
}

/* Consumes keyword kw (case-insensitive, whole word) at *i, with the blanks after it. */
static bool take_keyword(const char *p, size_t n, size_t *i, const char *kw)
{
    size_t kl = strlen(kw);
    if (n - *i < kl || strncasecmp(p + *i, kw, kl) != 0 ||
        (*i + kl < n && (isalnum((unsigned char)p[*i + kl]) || p[*i + kl] == '_')))
        return false;
    *i += kl;
    *i += skip_blank(p + *i, n - *i);
    return true;
}

bool query_set_names(struct evbuffer *buf, size_t start, size_t len, char *collation, size_t cap)
{
    char head[256];
    struct evbuffer_ptr s;
    if (cap == 0 || evbuffer_ptr_set(buf, &s, start, EVBUFFER_PTR_SET) < 0)
        return false;
    size_t n = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
    n = (size_t)evbuffer_copyout_from(buf, &s, head, n);
    head[n] = 0;
    size_t i = skip_blank(head, n);
    if (!take_keyword(head, n, &i, "SET"))
        return false;
    bool names = take_keyword(head, n, &i, "NAMES") || take_keyword(head, n, &i, "CHARSET") ||
                 (take_keyword(head, n, &i, "CHARACTER") && take_keyword(head, n, &i, "SET"));
    if (!names)
        return false;
    collation[0] = 0;
    while (i < n && !isspace((unsigned char)head[i]) && head[i] != ';')
        i++; /* the charset */
    i += skip_blank(head + i, n - i);
    if (!take_keyword(head, n, &i, "COLLATE"))
        return true;
    size_t k = 0;
    while (i < n && k + 1 < cap &&
           (isalnum((unsigned char)head[i]) || head[i] == '_' || head[i] == '\'' ||
            head[i] == '"' || head[i] == '`')) {
        if (isalnum((unsigned char)head[i]) || head[i] == '_')
            collation[k++] = head[i];
        i++;
    }
    collation[k] = 0;
    return true;
}
