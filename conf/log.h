/* Logging: one line per event, level checked before formatting, never a secret. */
#ifndef CREDPROXY_CONF_LOG_H
#define CREDPROXY_CONF_LOG_H

#include <stddef.h>

#include "conf/config.h"

extern enum log_level log_current_level;

void log_set_level(enum log_level level);

/*
 * Formats "TIME LEVEL message\n" and hands it on as one unit, so threads do not interleave.
 * Control bytes in the message are escaped, so no argument can start a line of its own.
 * Before log_start() (and after log_stop()) the line is written to stderr at once; in
 * between it goes to a bounded queue that the log thread drains: a caller never waits for
 * the reader of stderr. When the queue is full the line is dropped and counted, and the
 * count is reported ("N log lines dropped") as soon as lines flow again.
 *
 * Rate limit: a call site (its format string) that logs more than LOG_RATE_LIMIT lines in
 * one second at error, warn or info level has the rest of that second's lines suppressed;
 * one "suppressed N similar lines" line follows when the second is over. Debug lines are
 * never rate-limited (the queue still protects the workers).
 */
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * LOG_FORMAT_TEXT: "TIME LEVEL message". LOG_FORMAT_JSON: one object per line, for log
 * shippers: {"time":"2026-01-02T03:04:05.678Z","level":"info", then the call site's identity
 * prefix as fields when it has one ("client":"C-12","peer":"127.0.0.1:5000" from
 * "C-12 127.0.0.1:5000: ", "route", "secret", "worker"), "msg" with the rest; the log's own
 * lines add "event":"suppressed" or "dropped" and the count under the same key. Every string
 * is escaped (control bytes and malformed UTF-8 as \u00XX), so each line is valid JSON.
 */
void log_set_format(enum log_format format);

/*
 * Opens path for appending (mode 0640, created if needed) in place of stderr, so stray
 * writes to stderr land there too, and remembers it for log_reopen(). Call before
 * log_start(). False with err filled in when it cannot be opened (stderr unchanged).
 */
bool log_open_file(const char *path, char *err, size_t errlen);

/*
 * SIGUSR1 after a rotation (the file renamed): opens the log file's path afresh, from the
 * log thread, so new lines go to the new file; a failure is logged and the old file stays.
 * Returns false (doing nothing) when no log file is configured.
 */
bool log_reopen(void);

/* Lines per call site per second before the rest are suppressed. */
#define LOG_RATE_LIMIT 20

/* Starts the log thread; returns false (and keeps logging synchronously) if it cannot. */
bool log_start(void);

/*
 * Writes every pending summary, flushes the queue (waiting at most timeout_ms for a stalled
 * reader) and stops the log thread. Lines logged afterwards are written synchronously.
 */
void log_stop(int timeout_ms);

/* Writes every pending "suppressed N similar lines" summary now, whatever its window. */
void log_flush_suppressed(void);

/*
 * Escapes a client-supplied string for a log line into buf (size n >= 4), NUL-terminated:
 * printable ASCII and well-formed UTF-8 pass; backslash and both quotes get a backslash;
 * \n, \r and \t are written as such; every other control byte, DEL and each byte of a
 * malformed UTF-8 sequence is written as \xNN. An output that does not fit ends in "...".
 * Returns buf.
 */
const char *log_escape(char *buf, size_t n, const void *s, size_t len);

#define LOG_AT(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((int)(lvl) <= (int)__atomic_load_n(&log_current_level, __ATOMIC_RELAXED))              \
            log_write((lvl), __VA_ARGS__);                                                         \
    } while (0)
#define log_error(...) LOG_AT(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  LOG_AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  LOG_AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
