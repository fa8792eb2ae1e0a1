/* Unit tests for conf/log.c: escaping client strings, line sanitising, the rate limit, drops. */
#include "conf/log.h"
#include "tests/check.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

static const char *esc(const char *s, size_t len, size_t bufsize)
{
    static char buf[256];
    return log_escape(buf, bufsize, s, len);
}

static void test_escape(void)
{
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"app", 3, "app"},
        {"x\nERROR forged", 14, "x\\nERROR forged"},
        {"a\r\tb", 4, "a\\r\\tb"},
        {"back\\slash", 10, "back\\\\slash"},
        {"it's \"q\"", 8, "it\\'s \\\"q\\\""},
        {"nul\0x", 5, "nul\\x00x"},
        {"\x1b[31m", 5, "\\x1b[31m"},
        {"del\x7f", 4, "del\\x7f"},
        {"caf\xc3\xa9", 5, "caf\xc3\xa9"},           /* well-formed UTF-8 passes */
        {"\xe2\x82\xac", 3, "\xe2\x82\xac"},         /* euro sign */
        {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"}, /* 4-byte */
        {"bad\xff", 4, "bad\\xff"},                  /* never valid */
        {"\xc3", 1, "\\xc3"},                        /* truncated sequence */
        {"\xc0\xaf", 2, "\\xc0\\xaf"},               /* overlong '/' */
        {"\xed\xa0\x80", 3, "\\xed\\xa0\\x80"},      /* surrogate */
        {"\xc2\x85", 2, "\\xc2\\x85"},               /* C1 NEL: a line break to some */
        {"\xe2\x28\xa1", 3, "\\xe2(\\xa1"},          /* bad continuation */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_STR(esc(cases[i].in, cases[i].len, 256), cases[i].out);
    /* Truncation never cuts an escape in half and says so. */
    CHECK_STR(esc("abcdefghij", 10, 8), "abcd...");
    CHECK_STR(esc("abcdefg", 7, 8), "abcdefg"); /* fits exactly */
    CHECK_STR(esc("abc\n\n\n", 6, 8), "abc...");
    CHECK_STR(esc("\n\n\n\n", 4, 9), "\\n\\n\\n\\n"); /* fits exactly */
    CHECK_STR(esc("\n\n\n\n", 4, 8), "\\n\\n...");
    CHECK_STR(esc("", 0, 4), "");
}

/* Redirects stderr to a fresh file; returns the file's descriptor for reading back. */
static int capture(char *path)
{
    strcpy(path, "/tmp/test_log_XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    fflush(stderr);
    dup2(fd, STDERR_FILENO);
    return fd;
}

static char *read_back(int fd)
{
    static char buf[256 * 1024];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void flood(int n)
{
    for (int i = 0; i < n; i++)
        log_info("flood line %d from 127.0.0.1", i);
}

static void test_rate_limit_and_lines(int saved_stderr)
{
    char path[64];
    int fd = capture(path);
    log_set_level(LOG_LEVEL_DEBUG);
    log_info("user %s", "x\nERROR forged"); /* a newline in an argument stays in its line */
    /* Rate limit: the first LOG_RATE_LIMIT of a call site per second, then one summary. The
     * flood may straddle a second boundary, so up to two windows' worth may pass. */
    flood(200);
    log_flush_suppressed();
    for (int i = 0; i < 50; i++)
        log_debug("debug line %d", i); /* never rate-limited */
    char *out = read_back(fd);
    CHECK(strstr(out, "INFO user x\\x0aERROR forged\n") != NULL);
    CHECK(count(out, "\nERROR") == 0);
    CHECK(count(out, "DEBUG debug line ") == 50);
    int logged = count(out, "INFO flood line ");
    CHECK(logged >= LOG_RATE_LIMIT && logged <= 2 * LOG_RATE_LIMIT);
    /* Every suppressed line is accounted for by a summary. */
    int suppressed = 0, summaries = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        const char *p = strstr(line, "INFO suppressed ");
        if (p && strstr(p, "similar lines in one second (like: flood line %d")) {
            suppressed += atoi(p + strlen("INFO suppressed "));
            summaries++;
        }
    }
    CHECK(summaries >= 1 && summaries <= 2);
    CHECK(logged + suppressed == 200);
    dup2(saved_stderr, STDERR_FILENO);
    close(fd);
    unlink(path);
}

/* Reads fd into buf (at *got) until nothing has come for 200 ms. */
static void drain_until_quiet(int fd, char *buf, size_t cap, size_t *got)
{
    for (int quiet = 0; quiet < 20;) {
        ssize_t n = read(fd, buf + *got, cap - 1 - *got);
        if (n > 0) {
            *got += (size_t)n;
            quiet = 0;
        } else {
            quiet++;
            usleep(10000);
        }
        buf[*got] = 0;
    }
}

/* With the log thread and a stderr pipe nobody reads: logging never blocks, drops are counted. */
static void test_stalled_reader(int saved_stderr)
{
    int p[2];
    CHECK(pipe(p) == 0);
    fcntl(p[1], F_SETPIPE_SZ, 4096);
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    CHECK(log_start());
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 5000; i++)
        log_debug("stalled line %d ........................................................", i);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(secs < 2.0); /* 5000 lines into a stalled pipe returned at once */
    /* Now read: the log thread goes on and reports what it dropped. */
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    static char buf[512 * 1024];
    size_t got = 0;
    for (int tries = 0; tries < 300 && !strstr(buf, "log lines dropped"); tries++) {
        ssize_t n = read(p[0], buf + got, sizeof(buf) - 1 - got);
        if (n > 0)
            got += (size_t)n;
        else
            usleep(10000);
        buf[got] = 0;
    }
    CHECK(strstr(buf, "log lines dropped: stderr was not keeping up") != NULL);
    /*
     * Drain until quiet (the queue may still hold lines from before the stall ended), then
     * log one more line: with room in the queue it must arrive.
     */
    drain_until_quiet(p[0], buf, sizeof(buf), &got);
    log_debug("after the stall");
    drain_until_quiet(p[0], buf, sizeof(buf), &got);
    CHECK(strstr(buf, "DEBUG after the stall\n") != NULL);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    log_stop(2000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* Whole elapsed time: comparing the seconds fields alone fails across a second boundary. */
    double stop_secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(stop_secs < 1.0);
    dup2(saved_stderr, STDERR_FILENO);
    close(p[0]);
}

/* The string field key of JSON object o, or NULL. */
static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* log_format = json: every line one valid object, identity prefixes as fields. */
static void test_json(int saved_stderr)
{
    char path[64];
    int fd = capture(path);
    log_set_format(LOG_FORMAT_JSON);
    log_set_level(LOG_LEVEL_DEBUG);
    log_info("C-%d %s: closed: %s", 12, "127.0.0.1:5000", "bye");
    log_info("C-%d: illegal state", 13);
    log_warn("route %s: upstream not reachable", "main");
    log_error("secret '%s': read failed", "arn:aws:x");
    log_info("worker %d: accept paused", 3);
    log_info("route %s: %s", "r2", "C-99 [::1]:4: nested prefixes stay in msg? no: fields");
    /* Quotes, backslashes, every control byte, DEL, malformed UTF-8, good UTF-8. */
    char nasty[300];
    size_t k = 0;
    for (int c = 1; c < 0x20; c++)
        nasty[k++] = (char)c;
    strcpy(nasty + k, "\"q\\\x7f\xff\xc3(\xc3\xa9\xf0\x9f\x98\x80");
    log_info("user '%s'", nasty);
    char longer[4000];
    memset(longer, '"', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = 0;
    log_info("long %s", longer); /* cut to the line limit, still valid JSON */
    for (int i = 0; i < 60; i++)
        log_info("json flood %d", i);
    log_flush_suppressed();
    char *out = read_back(fd);
    int lines = 0, objects = 0, summaries = 0, flood = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        lines++;
        for (const unsigned char *c = (const unsigned char *)line; *c; c++)
            CHECK(*c >= 0x20 && *c != 0x7f); /* JSON allows no raw control character */
        cJSON *o = cJSON_Parse(line);
        if (!o) {
            fprintf(stderr, "not JSON: %s\n", line);
            CHECK(o != NULL);
            continue;
        }
        objects++;
        const char *msg = jstr(o, "msg"), *time = jstr(o, "time"), *level = jstr(o, "level");
        CHECK(msg && time && level);
        CHECK(time && strlen(time) == 24 && time[10] == 'T' && time[23] == 'Z');
        if (msg && strcmp(msg, "closed: bye") == 0) {
            CHECK_STR(jstr(o, "client"), "C-12");
            CHECK_STR(jstr(o, "peer"), "127.0.0.1:5000");
            CHECK_STR(level, "info");
        } else if (msg && strcmp(msg, "illegal state") == 0) {
            CHECK_STR(jstr(o, "client"), "C-13");
            CHECK(jstr(o, "peer") == NULL);
        } else if (msg && strcmp(msg, "upstream not reachable") == 0) {
            CHECK_STR(jstr(o, "route"), "main");
            CHECK_STR(level, "warn");
        } else if (msg && strcmp(msg, "read failed") == 0) {
            CHECK_STR(jstr(o, "secret"), "arn:aws:x");
            CHECK_STR(level, "error");
        } else if (msg && strcmp(msg, "accept paused") == 0) {
            CHECK_STR(jstr(o, "worker"), "3");
        } else if (msg && strncmp(msg, "nested", 6) == 0) {
            CHECK_STR(jstr(o, "route"), "r2");
            CHECK_STR(jstr(o, "client"), "C-99");
            CHECK_STR(jstr(o, "peer"), "[::1]:4");
        } else if (msg && strncmp(msg, "user '", 6) == 0) {
            /* Every byte came through escaped: decoding gives back the controls themselves. */
            CHECK(strncmp(msg + 6, nasty, 0x1f) == 0);
            CHECK(strstr(msg, "\"q\\\x7f\xc3\xbf\xc3\x83(\xc3\xa9\xf0\x9f\x98\x80'") != NULL);
        } else if (msg && strncmp(msg, "long ", 5) == 0) {
            CHECK(strlen(line) < 2048);
            CHECK(strcmp(msg + strlen(msg) - 3, "...") == 0);
        } else if (msg && strncmp(msg, "json flood ", 11) == 0) {
            flood++;
        } else if (jstr(o, "event") && strcmp(jstr(o, "event"), "suppressed") == 0) {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "suppressed");
            CHECK(cJSON_IsNumber(n));
            if (cJSON_IsNumber(n) && strstr(msg, "json flood"))
                flood += n->valueint, summaries++;
        } else {
            fprintf(stderr, "unexpected JSON line: %s\n", line);
            CHECK(0);
        }
        cJSON_Delete(o);
    }
    CHECK(lines == objects && lines >= 10);
    CHECK(summaries >= 1);
    CHECK(flood == 60); /* logged + suppressed: none lost silently */
    log_set_format(LOG_FORMAT_TEXT);
    dup2(saved_stderr, STDERR_FILENO);
    close(fd);
    unlink(path);
}

static char *slurp(const char *path)
{
    static char buf[2][64 * 1024];
    static int which;
    char *b = buf[which ^= 1];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(b, 1, sizeof(buf[0]) - 1, f) : 0;
    b[n] = 0;
    if (f)
        fclose(f);
    return b;
}

/* log_file and log_reopen(): after a rename, new lines go to a new file at the path. */
static void test_file_and_reopen(int saved_stderr)
{
    char path[64], rotated[80];
    snprintf(path, sizeof(path), "/tmp/test_log_file.%d", (int)getpid());
    snprintf(rotated, sizeof(rotated), "%s.1", path);
    unlink(path);
    unlink(rotated);
    CHECK(!log_reopen()); /* no file configured yet */
    char err[256];
    CHECK(!log_open_file("/nonexistent-dir/x.log", err, sizeof(err)));
    CHECK(strstr(err, "cannot open log file /nonexistent-dir/x.log") != NULL);
    CHECK(log_open_file(path, err, sizeof(err)));
    log_info("before the rotation");
    CHECK(rename(path, rotated) == 0);
    log_info("after the rename, before the reopen");
    CHECK(log_reopen()); /* no log thread: at once */
    log_info("after the reopen");
    CHECK(strstr(slurp(rotated), "after the rename, before the reopen") != NULL);
    CHECK(strstr(slurp(rotated), "after the reopen") == NULL);
    CHECK(strstr(slurp(path), "INFO after the reopen\n") != NULL);
    CHECK(strstr(slurp(path), "log file /tmp/test_log_file.") != NULL);
    /* Again with the log thread: the reopen happens there. */
    CHECK(log_start());
    log_info("threaded before");
    unlink(rotated);
    CHECK(rename(path, rotated) == 0);
    CHECK(log_reopen());
    log_info("threaded after");
    log_stop(2000);
    CHECK(strstr(slurp(rotated), "threaded before") != NULL);
    CHECK(strstr(slurp(path), "threaded after") != NULL);
    CHECK(strstr(slurp(path), "reopened") != NULL);
    dup2(saved_stderr, STDERR_FILENO);
    unlink(path);
    unlink(rotated);
}

int main(void)
{
    int saved = dup(STDERR_FILENO);
    test_escape();
    test_rate_limit_and_lines(saved);
    test_json(saved);
    test_file_and_reopen(saved);
    test_stalled_reader(saved);
    return test_summary();
}
