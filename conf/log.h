/* Logging: one line per event, level checked before formatting, never a secret. */
#ifndef CREDPROXY_CONF_LOG_H
#define CREDPROXY_CONF_LOG_H

#include "conf/config.h"

extern enum log_level log_current_level;

void log_set_level(enum log_level level);

/* Writes "TIME LEVEL message\n" to stderr as one write, so threads do not interleave. */
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Copies len bytes of client-supplied data into buf (size n) for a log line:
 * printable ASCII stays, backslash and every other byte (control characters,
 * newlines, non-ASCII) become \xNN, and the copy is cut with "..." when it
 * does not fit. Returns buf.
 */
const char *log_escape(char *buf, size_t n, const void *data, size_t len);

#define LOG_AT(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) <= log_current_level)                                                            \
            log_write((lvl), __VA_ARGS__);                                                         \
    } while (0)
#define log_error(...) LOG_AT(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  LOG_AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  LOG_AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
