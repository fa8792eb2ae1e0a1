/* Where a route's credentials come from (a file, AWS Secrets Manager), behind one interface. */
#ifndef CREDPROXY_SECRETS_SECRET_SOURCE_H
#define CREDPROXY_SECRETS_SECRET_SOURCE_H

#include <stdbool.h>

#include <stdint.h>
#include <stdio.h>
#include <time.h>

/* How many past versions a source remembers for the status page. */
#define SECRET_SOURCE_HISTORY 8

/* One version a source published: when, which, and its generation. */
struct secret_version_seen {
    int64_t at_unix;  /* wall-clock second it was published */
    char version[72]; /* file mtime or Secrets Manager VersionId (never the value) */
    uint64_t generation;
};

/*
 * What a source's reads did, for the admin endpoint. Written and read only on
 * the source's loop (the main thread), so plain fields are enough. Nothing in
 * it is ever a secret: error messages name keys, never values.
 */
struct secret_source_stats {
    uint64_t reads_ok;        /* reads that published new credentials */
    uint64_t reads_unchanged; /* reads that found the credentials in use */
    uint64_t reads_error;     /* reads that failed; the previous credentials stay */
    int64_t last_ok_mono_ms;  /* CLOCK_MONOTONIC ms of the last good read (ok or unchanged) */
    int64_t last_error_unix;  /* wall-clock second of the last failed read, 0 never */
    char last_error[256];     /* its message; "" once a read works again */
    struct secret_version_seen seen[SECRET_SOURCE_HISTORY]; /* ring: newest at (n_seen - 1) % N */
    unsigned n_seen;                                        /* published so far (all time) */
};

/*
 * A source publishes snapshots to its route's secret_store from its own
 * event loop (the main thread). Implementations embed this as their first
 * member.
 */
struct secret_source {
    const char *kind;  /* "file", "aws" or "iam", for logs */
    const char *where; /* the file's path, the secret id, or the route (iam); for status pages */
    struct secret_source_stats stats;
    /*
     * Re-reads the secret as soon as possible, e.g. after the server said
     * "access denied" to a new login. Callable from any thread; calls that
     * arrive while a read is in flight join it (single flight).
     */
    void (*refresh_now)(struct secret_source *src);
    void (*destroy)(struct secret_source *src);
    /*
     * Optional (NULL: the period is fixed at open): from now on, checks the
     * secret every ms (<= 0: the source's default). Main loop only; a reload
     * calls it.
     */
    void (*set_period)(struct secret_source *src, int ms);
};

static inline void secret_source_refresh_now(struct secret_source *src)
{
    if (src)
        src->refresh_now(src);
}

static inline int64_t secret_source_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A read worked: changed says it published a new version (version, generation). */
static inline void secret_source_read_ok(struct secret_source *src, bool changed,
                                         const char *version, uint64_t generation)
{
    struct secret_source_stats *st = &src->stats;
    st->last_ok_mono_ms = secret_source_mono_ms();
    st->last_error[0] = '\0';
    if (!changed) {
        st->reads_unchanged++;
        return;
    }
    st->reads_ok++;
    struct secret_version_seen *v = &st->seen[st->n_seen++ % SECRET_SOURCE_HISTORY];
    v->at_unix = (int64_t)time(NULL);
    snprintf(v->version, sizeof(v->version), "%s", version ? version : "?");
    v->generation = generation;
}

/* A read failed with msg (which names no secret value). */
static inline void secret_source_read_error(struct secret_source *src, const char *msg)
{
    src->stats.reads_error++;
    src->stats.last_error_unix = (int64_t)time(NULL);
    snprintf(src->stats.last_error, sizeof(src->stats.last_error), "%s", msg ? msg : "?");
}

static inline void secret_source_set_period(struct secret_source *src, int ms)
{
    if (src && src->set_period)
        src->set_period(src, ms);
}

static inline void secret_source_free(struct secret_source *src)
{
    if (src)
        src->destroy(src);
}

#endif
