/* The file source: reads an RDS-format secret from disk and re-reads it when it changes. */
#include "secrets/secret_file.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf/log.h"

#define SECRET_FILE_MAX             (64 * 1024)
#define SECRET_FILE_DEFAULT_POLL_MS 1000
/*
 * Kernel file timestamps tick at jiffy granularity, so a same-size rewrite
 * within one tick leaves the stat identity unchanged. A file modified this
 * recently is re-read at every poll until it is older (git's "racy" rule).
 */
#define RACY_WINDOW_SEC 2

/* What stat() says about the file: any difference means it may have changed. */
struct file_id {
    bool present;
    int err; /* errno of a failed stat/open when !present */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
};

struct secret_file {
    struct secret_source source; /* first: the route sees only this */
    struct event_base *base;
    char *path;
    struct secret_store *store;
    struct event *poll_ev;
    struct event *now_ev;
    struct creds *current; /* last published here, to skip re-publishing identical content */
    struct file_id seen;   /* identity of the file as last read */
    bool recheck;          /* re-read at the next poll even if seen is unchanged */
    bool pending_bad;      /* a bad read waiting to be confirmed by the next poll */
    struct file_id pending_id;
    bool err_logged; /* an error is logged for err_id; stay quiet until it changes */
    struct file_id err_id;
    bool warned_mode;
};

static bool ts_equal(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static bool file_id_equal(const struct file_id *a, const struct file_id *b)
{
    if (!a->present || !b->present)
        return a->present == b->present && a->err == b->err;
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           ts_equal(&a->mtim, &b->mtim) && ts_equal(&a->ctim, &b->ctim);
}

static void file_id_from_stat(struct file_id *id, const struct stat *st)
{
    memset(id, 0, sizeof(*id));
    id->present = true;
    id->dev = st->st_dev;
    id->ino = st->st_ino;
    id->size = st->st_size;
    id->mtim = st->st_mtim;
    id->ctim = st->st_ctim;
}

/* stat() rather than lstat(): Kubernetes mounts the file as a symlink through ..data. */
static void file_id_of_path(struct file_id *id, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        file_id_from_stat(id, &st);
        return;
    }
    memset(id, 0, sizeof(*id));
    id->err = errno;
}

static bool is_racy(const struct stat *st)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    time_t newest =
        st->st_mtim.tv_sec > st->st_ctim.tv_sec ? st->st_mtim.tv_sec : st->st_ctim.tv_sec;
    return now.tv_sec - newest < RACY_WINDOW_SEC;
}

static void warn_mode_once(struct secret_file *sf, const struct stat *st)
{
    if (sf->warned_mode || !(st->st_mode & 077))
        return;
    sf->warned_mode = true;
    log_warn("secret file %s is readable by group or others (mode %03o); chmod 600 it", sf->path,
             (unsigned)(st->st_mode & 0777));
}

/* Reads at most SECRET_FILE_MAX bytes; one more means the file is too big. */
static bool read_all(int fd, char *buf, size_t *len, char *err, size_t errlen)
{
    *len = 0;
    while (*len <= SECRET_FILE_MAX) {
        ssize_t n = read(fd, buf + *len, SECRET_FILE_MAX + 1 - *len);
        if (n == 0)
            break;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s", strerror(errno));
            return false;
        }
        *len += (size_t)n;
    }
    if (*len > SECRET_FILE_MAX) {
        snprintf(err, errlen, "file is larger than %d bytes", SECRET_FILE_MAX);
        return false;
    }
    return true;
}

/* Parses the open file; the buffer holding the raw secret is wiped before it is freed. */
static struct creds *parse_fd(int fd, char *err, size_t errlen)
{
    char *buf = malloc(SECRET_FILE_MAX + 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t len = 0;
    struct creds *c = NULL;
    if (read_all(fd, buf, &len, err, errlen))
        c = creds_parse_rds_json(buf, len, err, errlen);
    OPENSSL_cleanse(buf, len);
    free(buf);
    return c;
}

static bool check_stat(const struct stat *st, char *err, size_t errlen)
{
    if (!S_ISREG(st->st_mode)) {
        snprintf(err, errlen, "not a regular file");
        return false;
    }
    if (st->st_size > SECRET_FILE_MAX) {
        snprintf(err, errlen, "file is larger than %d bytes", SECRET_FILE_MAX);
        return false;
    }
    return true;
}

static char *version_of(const struct stat *st)
{
    char v[64];
    snprintf(v, sizeof(v), "mtime:%lld.%09ld", (long long)st->st_mtim.tv_sec,
             (long)st->st_mtim.tv_nsec);
    return strdup(v);
}

/*
 * Opens, checks and parses the file. id is the identity of what was read
 * (fstat of the open file, so a swap after our stat is seen next poll).
 */
static struct creds *load(struct secret_file *sf, struct file_id *id, bool *racy, char *err,
                          size_t errlen)
{
    *racy = false;
    file_id_of_path(id, sf->path);
    /* O_NONBLOCK so a FIFO at the path cannot hang the loop in open(). */
    int fd = open(sf->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        return NULL;
    }
    struct stat st;
    struct creds *c = NULL;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s", strerror(errno));
    } else {
        file_id_from_stat(id, &st);
        *racy = is_racy(&st);
        warn_mode_once(sf, &st);
        if (check_stat(&st, err, errlen))
            c = parse_fd(fd, err, errlen);
        if (c && !(c->version = version_of(&st))) {
            snprintf(err, errlen, "out of memory");
            creds_unref(c);
            c = NULL;
        }
    }
    close(fd);
    return c;
}

static bool same_content(const struct creds *a, const struct creds *b)
{
    if (!a || !b || !creds_same_login(a, b))
        return false;
    if (!a->dbname || !b->dbname)
        return a->dbname == b->dbname;
    return strcmp(a->dbname, b->dbname) == 0;
}

static void publish(struct secret_file *sf, struct creds *c)
{
    creds_unref(sf->current);
    sf->current = creds_ref(c);
    secret_store_publish(sf->store, c);
}

static void apply_good(struct secret_file *sf, struct creds *c)
{
    const char *again = sf->err_logged ? "valid again; " : "";
    sf->err_logged = false;
    sf->pending_bad = false;
    if (same_content(sf->current, c)) {
        secret_source_read_ok(&sf->source, false, NULL, 0);
        if (*again)
            log_info("secret file %s: valid again; credentials unchanged", sf->path);
        creds_unref(c);
        return;
    }
    publish(sf, c);
    secret_source_read_ok(&sf->source, true, sf->current->version, sf->current->generation);
    log_info("secret file %s: %sloaded new credentials (version %s, generation %" PRIu64 ")",
             sf->path, again, sf->current->version, sf->current->generation);
}

/*
 * A bad read is logged only when the next poll finds the same file, so a
 * writer caught mid-write (truncate, then write) does not log a false alarm;
 * after that it is logged once until the file changes.
 */
static void apply_bad(struct secret_file *sf, const struct file_id *id, const char *msg)
{
    secret_source_read_error(&sf->source, msg);
    if (!sf->pending_bad || !file_id_equal(&sf->pending_id, id)) {
        sf->pending_bad = true;
        sf->pending_id = *id;
        sf->recheck = true;
        return;
    }
    if (sf->err_logged && file_id_equal(&sf->err_id, id))
        return;
    sf->err_logged = true;
    sf->err_id = *id;
    log_error("secret file %s: %s; keeping the previous credentials", sf->path, msg);
}

static void reload(struct secret_file *sf)
{
    char err[256] = "";
    struct file_id id;
    bool racy;
    struct creds *c = load(sf, &id, &racy, err, sizeof(err));
    sf->seen = id;
    sf->recheck = racy;
    if (c)
        apply_good(sf, c);
    else
        apply_bad(sf, &id, err);
}

static void check(struct secret_file *sf, bool force)
{
    struct file_id id;
    file_id_of_path(&id, sf->path);
    if (force || sf->recheck || !file_id_equal(&id, &sf->seen))
        reload(sf);
    else if (!sf->pending_bad)
        secret_source_read_ok(&sf->source, false, NULL, 0); /* the file in use is still there */
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    check(arg, false);
}

static void on_check_now(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    check(arg, true);
}

static struct timeval poll_interval(int poll_ms)
{
    if (poll_ms <= 0)
        poll_ms = SECRET_FILE_DEFAULT_POLL_MS;
    return (struct timeval){poll_ms / 1000, (poll_ms % 1000) * 1000};
}

static bool start_events(struct secret_file *sf, int poll_ms)
{
    struct timeval tv = poll_interval(poll_ms);
    sf->poll_ev = event_new(sf->base, -1, EV_PERSIST, on_poll, sf);
    sf->now_ev = event_new(sf->base, -1, 0, on_check_now, sf);
    return sf->poll_ev && sf->now_ev && event_add(sf->poll_ev, &tv) == 0;
}

/* The first read: failures go to the caller (start-up must stop), not to the log. */
static bool first_load(struct secret_file *sf, char *err, size_t errlen)
{
    char msg[256] = "";
    bool racy;
    struct creds *c = load(sf, &sf->seen, &racy, msg, sizeof(msg));
    if (!c) {
        snprintf(err, errlen, "%s: %s", sf->path, msg);
        return false;
    }
    sf->recheck = racy;
    publish(sf, c);
    secret_source_read_ok(&sf->source, true, c->version, c->generation);
    log_info("secret file %s: loaded credentials (version %s)", sf->path, c->version);
    return true;
}

static void source_refresh_now(struct secret_source *src)
{
    secret_file_check_now((struct secret_file *)src);
}

static void source_destroy(struct secret_source *src)
{
    secret_file_free((struct secret_file *)src);
}

/* A reload changed secret_poll: the next check comes one new interval from now. */
static void source_set_period(struct secret_source *src, int ms)
{
    struct secret_file *sf = (struct secret_file *)src;
    struct timeval tv = poll_interval(ms);
    event_add(sf->poll_ev, &tv); /* re-adding a pending event reschedules it */
}

struct secret_source *secret_file_source(struct secret_file *sf)
{
    return &sf->source;
}

struct secret_file *secret_file_open(struct event_base *base, const char *path,
                                     struct secret_store *store, int poll_ms, char *err,
                                     size_t errlen)
{
    struct secret_file *sf = calloc(1, sizeof(*sf));
    if (!sf || !(sf->path = strdup(path))) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(sf);
        return NULL;
    }
    sf->source.kind = "file";
    sf->source.where = sf->path;
    sf->source.refresh_now = source_refresh_now;
    sf->source.destroy = source_destroy;
    sf->source.set_period = source_set_period;
    sf->base = base;
    sf->store = store;
    if (!first_load(sf, err, errlen)) {
        secret_file_free(sf);
        return NULL;
    }
    if (!start_events(sf, poll_ms)) {
        snprintf(err, errlen, "%s: cannot create the poll timer", path);
        secret_file_free(sf);
        return NULL;
    }
    return sf;
}

void secret_file_check_now(struct secret_file *sf)
{
    /* event_active rather than a direct call: safe from other threads once libevent's
     * pthreads support is enabled, and the read then runs on sf's own loop. */
    if (sf && sf->now_ev)
        event_active(sf->now_ev, EV_TIMEOUT, 0);
}

void secret_file_free(struct secret_file *sf)
{
    if (!sf)
        return;
    if (sf->poll_ev)
        event_free(sf->poll_ev);
    if (sf->now_ev)
        event_free(sf->now_ev);
    creds_unref(sf->current);
    free(sf->path);
    free(sf);
}
