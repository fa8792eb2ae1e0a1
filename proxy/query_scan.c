/* Classifying queries by their first keyword and a few tell-tale tokens. */
#include "proxy/query_scan.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

/* Skips spaces and comments; returns the offset of the first keyword character. */
static size_t skip_blank(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (isspace((unsigned char)p[i])) {
            i++;
        } else if (p[i] == '/' && i + 1 < n && p[i + 1] == '*' && !(i + 2 < n && p[i + 2] == '!')) {
            size_t j = i + 2;
            while (j + 1 < n && !(p[j] == '*' && p[j + 1] == '/'))
                j++;
            i = j + 1 < n ? j + 2 : n;
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

static bool is_word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$';
}

static bool word_is(const char *w, size_t wl, const char *kw)
{
    return strlen(kw) == wl && strncasecmp(w, kw, wl) == 0;
}

/* Functions whose effect outlives the statement and no reply reports. */
static const char *const lock_functions[] = {"GET_LOCK", "IS_USED_LOCK", "RELEASE_ALL_LOCKS", NULL};

const char *query_pin_reason(const char *p, size_t n)
{
    size_t i = 0;
    bool statement_start = true;
    char prev[16] = "";
    while (i < n) {
        i += skip_blank(p + i, n - i);
        if (i >= n)
            break;
        char c = p[i];
        if (c == '\'' || c == '"' || c == '`') {
            size_t j = i + 1;
            while (j < n && p[j] != c) {
                if (p[j] == '\\' && c != '`')
                    j++;
                j++;
            }
            i = j + 1;
            statement_start = false;
            continue;
        }
        if (c == '/' && i + 2 < n && p[i + 1] == '*' && p[i + 2] == '!') {
            i += 3; /* executable comment: its contents are code */
            while (i < n && isdigit((unsigned char)p[i]))
                i++;
            continue;
        }
        if (c == '*' && i + 1 < n && p[i + 1] == '/') {
            i += 2;
            continue;
        }
        if (c == '@') {
            if (i + 1 < n && p[i + 1] == '@') {
                i += 2; /* a system variable: the server reports its changes */
                while (i < n && (is_word_char(p[i]) || p[i] == '.'))
                    i++;
                continue;
            }
            return "the session uses user variables";
        }
        if (c == ';') {
            statement_start = true;
            prev[0] = 0;
            i++;
            continue;
        }
        if (!is_word_char(c)) {
            i++;
            statement_start = false;
            continue;
        }
        const char *w = p + i;
        size_t wl = 0;
        while (i + wl < n && is_word_char(p[i + wl]))
            wl++;
        i += wl;
        size_t after = i + skip_blank(p + i, n - i);
        bool call = after < n && p[after] == '(';
        for (int k = 0; lock_functions[k]; k++)
            if (call && word_is(w, wl, lock_functions[k]))
                return "the session took a user lock (GET_LOCK)";
        if (call && word_is(w, wl, "LAST_INSERT_ID")) {
            size_t j = after + 1;
            j += skip_blank(p + j, n - j);
            if (j < n && p[j] != ')')
                return "the session set LAST_INSERT_ID(expr)";
        }
        if (word_is(w, wl, "TEMPORARY"))
            return "the session uses temporary tables";
        if (word_is(w, wl, "SQL_CALC_FOUND_ROWS") || (call && word_is(w, wl, "FOUND_ROWS")))
            return "the session uses FOUND_ROWS()";
        if ((word_is(w, wl, "TABLES") || word_is(w, wl, "TABLE")) &&
            word_is(prev, strlen(prev), "LOCK"))
            return "the session locked tables (LOCK TABLES)";
        if (statement_start &&
            (word_is(w, wl, "HANDLER") || word_is(w, wl, "XA") || word_is(w, wl, "CALL") ||
             word_is(w, wl, "PREPARE") || word_is(w, wl, "EXECUTE") || word_is(w, wl, "LOCK")))
            return word_is(w, wl, "HANDLER") ? "the session opened a HANDLER"
                   : word_is(w, wl, "XA")    ? "the session used XA transactions"
                   : word_is(w, wl, "CALL")  ? "the session called a stored procedure"
                   : word_is(w, wl, "LOCK")  ? "the session locked tables (LOCK TABLES)"
                                             : "the session used SQL-level prepared statements";
        if (wl < sizeof(prev)) {
            memcpy(prev, w, wl);
            prev[wl] = 0;
        } else {
            prev[0] = 0;
        }
        statement_start = false;
    }
    return NULL;
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
