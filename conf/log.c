/*
 * Logging to stderr, where systemd and container runtimes collect it (or to log_file, which
 * becomes stderr): through a bounded queue and a log thread, so a stalled reader never stops
 * a worker, with a per-call-site rate limit so a flood leaves a count instead of a wall of
 * lines. Lines are text or JSON objects (log_format).
 */
#include "conf/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_BYTES    (64 * 1024) /* lines waiting for the log thread */
#define LINE_MAX_BYTES 2048        /* longer lines are cut */
#define RATE_SLOTS     256         /* call sites followed by the rate limit */
#define RATE_PROBES    16          /* a site that finds no slot this close is not limited */

enum log_level log_current_level = LOG_LEVEL_INFO;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char *const json_level_names[] = {"error", "warn", "info", "debug"};

static _Atomic int line_format = LOG_FORMAT_TEXT; /* enum log_format */

/* One call site's count in the current one-second window. */
struct rate_slot {
    const char *fmt;      /* the call site's format string; NULL when free */
    enum log_level level; /* for the summary line */
    time_t window;        /* monotonic second the counts belong to */
    unsigned count;       /* lines in this window, logged or not */
    unsigned suppressed;  /* lines not logged, waiting for their summary */
};

/* Everything shared by the loggers and the log thread, under mu. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* lines queued, or stop asked */
    pthread_cond_t exited;  /* the log thread has finished */
    char ring[QUEUE_BYTES]; /* queued lines, whole, oldest at head */
    size_t head, len;       /* ring position and bytes queued */
    unsigned long dropped;  /* lines dropped since the last report */
    bool running;           /* the log thread owns the output */
    bool stopping;          /* log_stop() asked it to finish */
    bool done;              /* it has finished */
    bool reopen;            /* log_reopen() asked the log thread to reopen file */
    size_t reopen_at;       /* bytes of the queue logged before that request */
    char *file;             /* log_file, or NULL when logging to the inherited stderr */
    pthread_t thread;
    struct rate_slot slots[RATE_SLOTS];
} lg = {.mu = PTHREAD_MUTEX_INITIALIZER,
        .wake = PTHREAD_COND_INITIALIZER,
        .exited = PTHREAD_COND_INITIALIZER};

void log_set_level(enum log_level level)
{
    __atomic_store_n(&log_current_level, level, __ATOMIC_RELAXED); /* a reload, workers reading */
}

void log_set_format(enum log_format format)
{
    atomic_store_explicit(&line_format, (int)format, memory_order_relaxed);
}

/* Opens path for appending and puts it in place of stderr; false with errno on failure. */
static bool file_to_stderr(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0)
        return false;
    int ok = fd == STDERR_FILENO || dup2(fd, STDERR_FILENO) == STDERR_FILENO;
    int saved = errno;
    if (fd != STDERR_FILENO)
        close(fd);
    errno = saved;
    return ok;
}

bool log_open_file(const char *path, char *err, size_t errlen)
{
    if (!file_to_stderr(path)) {
        snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
        return false;
    }
    pthread_mutex_lock(&lg.mu);
    free(lg.file);
    lg.file = strdup(path);
    pthread_mutex_unlock(&lg.mu);
    return true;
}

/* Writes everything, waiting out a non-blocking stderr; gives up on a real error. */
static void write_all(const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, p, len);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
            poll(&pfd, 1, 1000);
        } else if (!(w < 0 && errno == EINTR)) {
            return;
        }
    }
}

/* Hands a whole line to the queue (or, without a log thread, to stderr). */
static void emit(const char *line, size_t len)
{
    pthread_mutex_lock(&lg.mu);
    if (!lg.running) {
        pthread_mutex_unlock(&lg.mu);
        write_all(line, len); /* one write per line keeps lines whole between threads */
        return;
    }
    if (QUEUE_BYTES - lg.len < len) {
        lg.dropped++;
    } else {
        size_t tail = (lg.head + lg.len) % QUEUE_BYTES;
        size_t first = QUEUE_BYTES - tail < len ? QUEUE_BYTES - tail : len;
        memcpy(lg.ring + tail, line, first);
        memcpy(lg.ring, line + first, len - first);
        lg.len += len;
        if (lg.len == len)
            pthread_cond_signal(&lg.wake);
    }
    pthread_mutex_unlock(&lg.mu);
}

/* "2026-01-02T03:04:05.678Z" into out (at least 32 bytes); returns its length. */
static size_t format_time(char *out, size_t size)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(out + n, size - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
    return n + (m > 0 ? (size_t)m : 0);
}

/* "TIME LEVEL " into line; returns its length. */
static size_t line_prefix(char *line, size_t size, enum log_level level)
{
    size_t n = format_time(line, size);
    int m = snprintf(line + n, size - n, " %s ", level_names[level]);
    return n + (m > 0 ? (size_t)m : 0);
}

/*
 * Appends msg to line[n..size) with every control byte escaped, then "\n"; returns the
 * line's length. Whatever an argument holds, it cannot begin a line of its own.
 */
static size_t line_finish(char *line, size_t n, size_t size, const char *msg)
{
    static const char hex[] = "0123456789abcdef";
    for (const unsigned char *p = (const unsigned char *)msg; *p && n + 5 < size; p++) {
        if (*p >= 0x20 && *p != 0x7f) {
            line[n++] = (char)*p;
        } else {
            line[n++] = '\\';
            line[n++] = 'x';
            line[n++] = hex[*p >> 4];
            line[n++] = hex[*p & 15];
        }
    }
    line[n++] = '\n';
    return n;
}

static size_t utf8_len(const unsigned char *p, size_t left);

/*
 * Appends s (len bytes) to line[*n..) as the inside of a JSON string, leaving at least
 * reserve bytes free: well-formed UTF-8 passes, quote and backslash are escaped, control
 * bytes, DEL and every byte of a malformed sequence become \u00XX, so any input is valid
 * JSON. A value that does not fit ends in "..." (never half an escape); returns false then.
 */
static bool json_chars(char *line, size_t *n, size_t size, size_t reserve, const char *s,
                       size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        char piece[8];
        size_t plen, adv = 1;
        unsigned char c = p[i];
        size_t u = c >= 0x80 ? utf8_len(p + i, len - i) : 0;
        if (u) {
            memcpy(piece, p + i, u);
            plen = adv = u;
        } else if (c == '"' || c == '\\') {
            piece[0] = '\\';
            piece[1] = (char)c;
            plen = 2;
        } else if (c >= 0x20 && c < 0x7f) {
            piece[0] = (char)c;
            plen = 1;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            piece[0] = '\\';
            piece[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            plen = 2;
        } else {
            memcpy(piece, "\\u00", 4);
            piece[4] = hex[c >> 4];
            piece[5] = hex[c & 15];
            plen = 6;
        }
        if (*n + plen + 3 + reserve > size) {
            memcpy(line + *n, "...", 3);
            *n += 3;
            return false;
        }
        memcpy(line + *n, piece, plen);
        *n += plen;
        i += adv;
    }
    return true;
}

/* Appends ,"key":"value" (value escaped, len bytes), leaving reserve bytes free. */
static void json_field(char *line, size_t *n, size_t size, size_t reserve, const char *key,
                       const char *value, size_t len)
{
    size_t klen = strlen(key);
    if (*n + klen + 6 + 3 + reserve > size)
        return;
    line[(*n)++] = ',';
    line[(*n)++] = '"';
    memcpy(line + *n, key, klen);
    *n += klen;
    memcpy(line + *n, "\":\"", 3);
    *n += 3;
    json_chars(line, n, size, reserve + 1, value, len);
    line[(*n)++] = '"';
}

/* Length of the run of bytes in s that are not space and not ": " (a prefix's name). */
static size_t prefix_word(const char *s)
{
    size_t i = 0;
    while (s[i] && s[i] != ' ' && !(s[i] == ':' && s[i + 1] == ' '))
        i++;
    return i;
}

/*
 * The identity prefixes of the call sites, as JSON fields: "C-12 PEER: " (client, peer),
 * "C-12: ", "route NAME: ", "secret 'ID': ", "worker N: ". Appends the fields it finds
 * and returns the rest of msg.
 */
static const char *json_prefixes(char *line, size_t *n, size_t size, size_t reserve,
                                 const char *msg)
{
    for (int round = 0; round < 2; round++) {
        const char *p = msg;
        if (p[0] == 'C' && p[1] == '-' && p[2] >= '0' && p[2] <= '9') {
            size_t id = 2 + strspn(p + 2, "0123456789");
            if (p[id] == ':' && p[id + 1] == ' ') {
                json_field(line, n, size, reserve, "client", p, id);
                msg = p + id + 2;
                continue;
            }
            size_t peer = p[id] == ' ' ? prefix_word(p + id + 1) : 0;
            if (peer && p[id + 1 + peer] == ':' && p[id + 2 + peer] == ' ') {
                json_field(line, n, size, reserve, "client", p, id);
                json_field(line, n, size, reserve, "peer", p + id + 1, peer);
                msg = p + id + peer + 3;
                continue;
            }
        }
        static const struct {
            const char *word, *key;
        } named[] = {{"route ", "route"}, {"worker ", "worker"}, {"secret '", "secret"}};
        for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++) {
            size_t wl = strlen(named[k].word);
            if (strncmp(p, named[k].word, wl) != 0)
                continue;
            const char *v = p + wl, *end;
            if (named[k].word[wl - 1] == '\'') {
                end = strstr(v, "': ");
                if (end)
                    msg = end + 3;
            } else {
                end = v + prefix_word(v);
                if (end > v && end[0] == ':' && end[1] == ' ')
                    msg = end + 2;
                else
                    end = NULL;
            }
            if (end)
                json_field(line, n, size, reserve, named[k].key, v, (size_t)(end - v));
            break;
        }
        if (msg == p)
            break;
    }
    return msg;
}

/*
 * One whole line for msg at level in the configured format; event (with count) marks the
 * log's own lines: "suppressed" and "dropped". Returns the line's length (<= size).
 */
static size_t format_line(char *line, size_t size, enum log_level level, const char *msg,
                          const char *event, unsigned long count)
{
    if (atomic_load_explicit(&line_format, memory_order_relaxed) != LOG_FORMAT_JSON) {
        size_t n = line_prefix(line, size, level);
        return line_finish(line, n, size, msg);
    }
    char ts[40], num[48] = "";
    format_time(ts, sizeof(ts));
    size_t n = (size_t)snprintf(line, size, "{\"time\":\"%s\",\"level\":\"%s\"", ts,
                                json_level_names[level]);
    if (event)
        snprintf(num, sizeof(num), ",\"%s\":%lu", event, count);
    size_t reserve = strlen(num) + 3; /* the count, "}\n" and the NUL */
    if (event)
        json_field(line, &n, size, reserve, "event", event, strlen(event));
    msg = json_prefixes(line, &n, size, reserve + 16, msg);
    json_field(line, &n, size, reserve, "msg", msg, strlen(msg));
    memcpy(line + n, num, strlen(num));
    n += strlen(num);
    line[n++] = '}';
    line[n++] = '\n';
    return n;
}

static void emit_message(enum log_level level, const char *msg)
{
    char line[LINE_MAX_BYTES];
    emit(line, format_line(line, sizeof(line), level, msg, NULL, 0));
}

static void emit_summary(enum log_level level, unsigned n, const char *fmt)
{
    char msg[256], line[LINE_MAX_BYTES];
    snprintf(msg, sizeof(msg), "suppressed %u similar line%s in one second (like: %.120s)", n,
             n == 1 ? "" : "s", fmt);
    emit(line, format_line(line, sizeof(line), level, msg, "suppressed", n));
}

static time_t now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/*
 * Counts a line of the call site fmt; returns whether it may be logged. *prev gets the
 * number suppressed in the site's previous window, whose summary the caller writes first.
 */
static bool rate_allow(const char *fmt, enum log_level level, unsigned *prev)
{
    *prev = 0;
    uintptr_t h = (uintptr_t)fmt;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    size_t start = (size_t)(h >> 40) % RATE_SLOTS;
    time_t now = now_seconds();
    bool allow = true;
    pthread_mutex_lock(&lg.mu);
    for (size_t i = 0; i < RATE_PROBES; i++) {
        struct rate_slot *s = &lg.slots[(start + i) % RATE_SLOTS];
        if (s->fmt && s->fmt != fmt)
            continue;
        if (!s->fmt) {
            s->fmt = fmt;
            s->level = level;
            s->window = now;
        }
        if (s->window != now) {
            *prev = s->suppressed;
            s->suppressed = 0;
            s->count = 0;
            s->window = now;
        }
        allow = ++s->count <= LOG_RATE_LIMIT;
        if (!allow)
            s->suppressed++;
        break;
    }
    pthread_mutex_unlock(&lg.mu);
    return allow;
}

/* Writes the summaries of windows that are over (all of them when force). */
static void rate_sweep(bool force)
{
    struct {
        const char *fmt;
        enum log_level level;
        unsigned n;
    } due[RATE_SLOTS];
    size_t n_due = 0;
    time_t now = now_seconds();
    pthread_mutex_lock(&lg.mu);
    for (size_t i = 0; i < RATE_SLOTS; i++) {
        struct rate_slot *s = &lg.slots[i];
        if (s->suppressed && (force || s->window != now)) {
            due[n_due].fmt = s->fmt;
            due[n_due].level = s->level;
            due[n_due++].n = s->suppressed;
            s->suppressed = 0;
        }
    }
    pthread_mutex_unlock(&lg.mu);
    for (size_t i = 0; i < n_due; i++)
        emit_summary(due[i].level, due[i].n, due[i].fmt);
}

void log_flush_suppressed(void)
{
    rate_sweep(true);
}

void log_write(enum log_level level, const char *fmt, ...)
{
    unsigned prev = 0;
    if (level != LOG_LEVEL_DEBUG && !rate_allow(fmt, level, &prev))
        return;
    if (prev)
        emit_summary(level, prev, fmt);
    char msg[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    emit_message(level, msg);
}

/*
 * Puts a fresh open of path in place of stderr (logrotate renamed the old file) and says so
 * in the new file; on failure the old file goes on, and the failure is logged there.
 */
static void reopen_file(const char *path)
{
    char line[LINE_MAX_BYTES], msg[600];
    enum log_level level = LOG_LEVEL_INFO;
    if (file_to_stderr(path)) {
        snprintf(msg, sizeof(msg), "log file %.500s reopened", path);
    } else {
        snprintf(msg, sizeof(msg),
                 "cannot reopen log file %.500s: %s; still writing to the "
                 "one open before",
                 path, strerror(errno));
        level = LOG_LEVEL_ERROR;
    }
    write_all(line, format_line(line, sizeof(line), level, msg, NULL, 0));
}

/* The log thread: drains the queue to stderr, reports drops, writes due summaries. */
static void *log_main(void *arg)
{
    (void)arg;
    static char batch[QUEUE_BYTES];
    pthread_mutex_lock(&lg.mu);
    for (;;) {
        if (lg.len == 0 && lg.dropped == 0 && !lg.reopen) {
            if (lg.stopping)
                break;
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&lg.wake, &lg.mu, &until);
        }
        size_t len = lg.len;
        size_t first = QUEUE_BYTES - lg.head < len ? QUEUE_BYTES - lg.head : len;
        memcpy(batch, lg.ring + lg.head, first);
        memcpy(batch + first, lg.ring, len - first);
        lg.head = (lg.head + len) % QUEUE_BYTES;
        lg.len = 0;
        unsigned long dropped = lg.dropped;
        lg.dropped = 0;
        char *reopen = lg.reopen && lg.file ? strdup(lg.file) : NULL;
        size_t old_part = reopen ? lg.reopen_at : 0; /* lines for the file being replaced */
        lg.reopen = false;
        pthread_mutex_unlock(&lg.mu);
        if (reopen) {
            write_all(batch, old_part);
            reopen_file(reopen);
            free(reopen);
            memmove(batch, batch + old_part, len - old_part);
            len -= old_part;
        }
        if (dropped) {
            char line[LINE_MAX_BYTES], msg[160];
            snprintf(msg, sizeof(msg), "%lu log line%s dropped: stderr was not keeping up", dropped,
                     dropped == 1 ? "" : "s");
            write_all(line,
                      format_line(line, sizeof(line), LOG_LEVEL_WARN, msg, "dropped", dropped));
        }
        write_all(batch, len);
        rate_sweep(false);
        pthread_mutex_lock(&lg.mu);
    }
    lg.done = true;
    pthread_cond_broadcast(&lg.exited);
    pthread_mutex_unlock(&lg.mu);
    return NULL;
}

bool log_reopen(void)
{
    pthread_mutex_lock(&lg.mu);
    char *path = lg.file && !lg.running ? strdup(lg.file) : NULL;
    bool has_file = lg.file != NULL;
    if (has_file && lg.running) {
        lg.reopen = true;
        lg.reopen_at = lg.len; /* what is queued now was logged before the rotation */
        pthread_cond_signal(&lg.wake);
    }
    pthread_mutex_unlock(&lg.mu);
    if (path) {
        reopen_file(path); /* no log thread: at once */
        free(path);
    }
    return has_file;
}

bool log_start(void)
{
    pthread_mutex_lock(&lg.mu);
    bool ok = lg.running;
    if (!ok) {
        lg.stopping = lg.done = false;
        ok = pthread_create(&lg.thread, NULL, log_main, NULL) == 0;
        lg.running = ok;
    }
    pthread_mutex_unlock(&lg.mu);
    return ok;
}

void log_stop(int timeout_ms)
{
    rate_sweep(true);
    pthread_mutex_lock(&lg.mu);
    if (!lg.running) {
        pthread_mutex_unlock(&lg.mu);
        return;
    }
    lg.stopping = true;
    pthread_cond_signal(&lg.wake);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!lg.done && pthread_cond_timedwait(&lg.exited, &lg.mu, &until) == 0)
        ;
    bool done = lg.done;
    if (done)
        lg.running = false;
    pthread_mutex_unlock(&lg.mu);
    /* A reader that stays stalled keeps the thread in write(): leave it; the process exits. */
    if (done)
        pthread_join(lg.thread, NULL);
    else
        pthread_detach(lg.thread);
}

/* Writes the escape for byte c into out; returns its length. */
static size_t put_escaped(char *out, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    out[0] = '\\';
    switch (c) {
    case '\n':
        out[1] = 'n';
        return 2;
    case '\r':
        out[1] = 'r';
        return 2;
    case '\t':
        out[1] = 't';
        return 2;
    case '\\':
    case '\'':
    case '"':
        out[1] = (char)c;
        return 2;
    default:
        out[1] = 'x';
        out[2] = hex[c >> 4];
        out[3] = hex[c & 15];
        return 4;
    }
}

/* Length of the well-formed UTF-8 sequence at p (not C1 controls), or 0. */
static size_t utf8_len(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        if (c == 0xc2)
            lo = 0xa0; /* U+0080..U+009F are C1 control codes */
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        if (c == 0xf4)
            hi = 0x8f; /* beyond U+10FFFF */
    } else {
        return 0;
    }
    if (n > left || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}

const char *log_escape(char *buf, size_t n, const void *s, size_t len)
{
    const unsigned char *p = s;
    size_t o = 0, i = 0, mark = 0; /* mark: the last piece boundary with room for "..." */
    if (n < 4) {
        if (n)
            buf[0] = 0;
        return buf;
    }
    while (i < len) {
        char piece[16];
        size_t plen, adv;
        unsigned char c = p[i];
        size_t u = c >= 0x80 ? utf8_len(p + i, len - i) : 0;
        if (u) {
            memcpy(piece, p + i, u);
            plen = adv = u;
        } else if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'' && c != '"') {
            piece[0] = (char)c;
            plen = adv = 1;
        } else {
            plen = put_escaped(piece, c);
            adv = 1;
        }
        if (o + plen > n - 1) {
            memcpy(buf + mark, "...", 3); /* never half an escape */
            buf[mark + 3] = 0;
            return buf;
        }
        memcpy(buf + o, piece, plen);
        o += plen;
        i += adv;
        if (o + 3 <= n - 1)
            mark = o;
    }
    buf[o] = 0;
    return buf;
}
