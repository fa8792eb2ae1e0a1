/* Where a route's credentials come from (a file, AWS Secrets Manager), behind one interface. */
#ifndef CREDPROXY_SECRETS_SECRET_SOURCE_H
#define CREDPROXY_SECRETS_SECRET_SOURCE_H

/*
 * A source publishes snapshots to its route's secret_store from its own
 * event loop (the main thread). Implementations embed this as their first
 * member.
 */
struct secret_source {
    const char *kind; /* "file" or "aws", for logs */
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
