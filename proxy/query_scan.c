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

/* Past the quoted string or identifier that starts at p[i] (backslash escapes in strings). */
static size_t skip_quoted(const char *p, size_t n, size_t i)
{
    char q = p[i];
    size_t j = i + 1;
    while (j < n && p[j] != q)
        j += (p[j] == '\\' && q != '`') ? 2 : 1;
    return j + 1;
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

/*
 * The transaction characteristics variables: `SET @@name = v`, with no scope,
 * sets them for the next transaction only, as `SET TRANSACTION` does; nothing
 * reports that (it is no session variable), so it cannot be replayed.
 */
static bool next_transaction_var(const char *w, size_t wl)
{
    return word_is(w, wl, "tx_isolation") || word_is(w, wl, "tx_read_only") ||
           word_is(w, wl, "transaction_isolation") || word_is(w, wl, "transaction_read_only");
}

/* True when p[i] (after blanks) is an assignment: '=' or ':='. */
static bool assigned(const char *p, size_t n, size_t i)
{
    i += skip_blank(p + i, n - i);
    return i < n && (p[i] == '=' || (p[i] == ':' && i + 1 < n && p[i + 1] == '='));
}

const char *query_pin_reason(const char *p, size_t n, struct query_marks *marks)
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
            i = skip_quoted(p, n, i);
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
                size_t name = i;
                while (i < n && (is_word_char(p[i]) || p[i] == '.'))
                    i++;
                if (next_transaction_var(p + name, i - name) && assigned(p, n, i))
                    marks->sets_next_transaction = true;
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
        if (call && word_is(w, wl, "CONNECTION_ID"))
            marks->reads_connection_id = true;
        if (word_is(w, wl, "TRANSACTION") && word_is(prev, strlen(prev), "SET"))
            marks->sets_next_transaction = true;
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

/* The word at p[*i] (after blanks), advancing past it; its length, 0 when none. */
static size_t next_word(const char *p, size_t n, size_t *i, const char **w)
{
    *i += skip_blank(p + *i, n - *i);
    *w = p + *i;
    size_t wl = 0;
    while (*i + wl < n && is_word_char(p[*i + wl]))
        wl++;
    *i += wl;
    return wl;
}

/* True when a statement after the first starts with KILL. */
static bool later_kill(const char *p, size_t n)
{
    size_t i = 0;
    bool start = false;
    while (i < n) {
        i += skip_blank(p + i, n - i);
        if (i >= n)
            break;
        char c = p[i];
        if (c == '\'' || c == '"' || c == '`') {
            i = skip_quoted(p, n, i);
            start = false;
        } else if (c == ';') {
            start = true;
            i++;
        } else if (is_word_char(c)) {
            const char *w;
            size_t wl = next_word(p, n, &i, &w);
            if (start && word_is(w, wl, "KILL"))
                return true;
            start = false;
        } else {
            i++;
            start = false;
        }
    }
    return false;
}

enum kill_kind query_kill_parse(const char *p, size_t n, struct kill_stmt *out)
{
    size_t i = 0;
    const char *w;
    size_t wl = next_word(p, n, &i, &w);
    if (!word_is(w, wl, "KILL")) {
        if (memchr(p, ';', n) && later_kill(p, n)) {
            out->why = "KILL in a multi-statement";
            return KILL_UNSUPPORTED;
        }
        return KILL_NONE;
    }
    out->query = false;
    out->hardness = "";
    out->id = 0;
    out->why = "this form of KILL";
    wl = next_word(p, n, &i, &w);
    if (word_is(w, wl, "HARD") || word_is(w, wl, "SOFT")) {
        out->hardness = word_is(w, wl, "HARD") ? "HARD " : "SOFT ";
        wl = next_word(p, n, &i, &w);
    }
    if (word_is(w, wl, "CONNECTION")) {
        wl = next_word(p, n, &i, &w);
    } else if (word_is(w, wl, "QUERY")) {
        out->query = true;
        wl = next_word(p, n, &i, &w);
        if (word_is(w, wl, "ID")) {
            out->why = "KILL QUERY ID (query ids are the server's)";
            return KILL_UNSUPPORTED;
        }
    }
    if (word_is(w, wl, "USER")) {
        out->why = "KILL USER (every client of credproxy is the same database user)";
        return KILL_UNSUPPORTED;
    }
    if (wl == 0 || wl > 10)
        return KILL_UNSUPPORTED;
    uint64_t id = 0;
    for (size_t k = 0; k < wl; k++) {
        if (!isdigit((unsigned char)w[k]))
            return KILL_UNSUPPORTED;
        id = id * 10 + (uint64_t)(w[k] - '0');
    }
    i += skip_blank(p + i, n - i);
    while (i < n && p[i] == ';') {
        i++;
        i += skip_blank(p + i, n - i);
    }
    if (i != n) {
        out->why = "KILL in a multi-statement";
        return KILL_UNSUPPORTED;
    }
    out->id = id;
    return KILL_THREAD;
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

bool query_names_session_tracking(const char *p, size_t n)
{
    static const char needle[] = "session_track_";
    const size_t k = sizeof(needle) - 1;
    for (size_t i = 0; i + k <= n; i++)
        if ((p[i] == 's' || p[i] == 'S') && strncasecmp(p + i, needle, k) == 0)
            return true;
    return false;
}
