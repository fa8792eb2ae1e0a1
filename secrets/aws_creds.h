/* AWS credentials: the snapshot type, the provider interface, the SDKs' chain and its cache. */
#ifndef CREDPROXY_SECRETS_AWS_CREDS_H
#define CREDPROXY_SECRETS_AWS_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct cJSON;
struct event_base;
struct http_client;

/*
 * One set of AWS credentials, immutable and reference-counted (main loop
 * only). The last unref wipes every string with OPENSSL_cleanse.
 */
struct aws_credentials {
    int refs;
    char *access_key_id;
    char *secret_access_key;
    char *session_token; /* NULL for long-term keys */
    time_t expiration;   /* 0 when they do not expire */
};

/* Copies the strings; token may be NULL or "". NULL when out of memory or a key is empty. */
struct aws_credentials *aws_credentials_new(const char *akid, const char *secret, const char *token,
                                            time_t expiration);
struct aws_credentials *aws_credentials_ref(struct aws_credentials *c);
void aws_credentials_unref(struct aws_credentials *c);

/*
 * Reads {"AccessKeyId","SecretAccessKey","Token" or "SessionToken","Expiration"}
 * as IMDS, the container endpoints and credential_process write them. On error
 * NULL with err naming the missing or bad key (never a value).
 */
struct aws_credentials *aws_credentials_from_json(const struct cJSON *obj, char *err,
                                                  size_t errlen);

/* "2024-02-29T23:59:59Z" (fractions and +00:00 allowed) as time_t; -1 when malformed. */
time_t aws_parse_time(const char *s);

/* What every provider and AWS call needs: the loop, the HTTP client and a few settings. */
struct aws_ctx {
    struct event_base *base;
    struct http_client *http;
    char *region;      /* resolved region, or NULL */
    int timeout_ms;    /* per HTTP request */
    char *profile;     /* AWS_PROFILE or "default" */
    char *creds_file;  /* AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials */
    char *config_file; /* AWS_CONFIG_FILE or ~/.aws/config */
};

/*
 * Called once with a new reference to credentials (caller unrefs) or NULL and
 * a message. Never called from inside the call that started the fetch.
 */
typedef void (*aws_creds_cb)(struct aws_credentials *c, const char *err, void *arg);

/* An operation under way; cancelling it means its callback never runs. */
struct aws_fetch {
    void (*cancel)(struct aws_fetch *f);
};

static inline void aws_fetch_cancel(struct aws_fetch *f)
{
    if (f)
        f->cancel(f);
}

/* One way of getting credentials (environment, a profile, STS, IMDS, ...). */
struct aws_provider {
    const char *name; /* for logs: "environment", "profile prod", "IMDS", ... */
    struct aws_fetch *(*fetch)(struct aws_provider *p, aws_creds_cb cb, void *arg, char *err,
                               size_t errlen);
    void (*destroy)(struct aws_provider *p);
};

static inline void aws_provider_free(struct aws_provider *p)
{
    if (p)
        p->destroy(p);
}

/* Credentials fixed at start-up (environment variables, static keys in a profile). */
struct aws_provider *aws_provider_static(struct aws_ctx *ctx, const char *name, const char *akid,
                                         const char *secret, const char *token);

/*
 * Picks the provider the SDKs would, in their order: environment variables,
 * web identity, the shared config/credentials profile, the container
 * endpoint, then EC2 instance metadata. A source that is configured is used
 * alone (its failures are not hidden by falling through). NULL with a
 * message when none is configured or a configuration is invalid.
 */
struct aws_provider *aws_provider_chain(struct aws_ctx *ctx, char *err, size_t errlen);

/* ---- The cache: current credentials, refreshed before they expire ----------------------- */

struct aws_creds_cache;

/* Takes ownership of p. */
struct aws_creds_cache *aws_creds_cache_new(struct aws_ctx *ctx, struct aws_provider *p);
void aws_creds_cache_free(struct aws_creds_cache *cc);

/* A reference to credentials usable for at least another minute, or NULL. */
struct aws_credentials *aws_creds_cache_current(struct aws_creds_cache *cc);

/*
 * Gets usable credentials: from the cache when it has some, else from one
 * fetch that every concurrent caller shares. The callback runs later on the
 * loop. Returns the waiter, which aws_fetch_cancel() removes.
 */
struct aws_fetch *aws_creds_cache_get(struct aws_creds_cache *cc, aws_creds_cb cb, void *arg);

/* Drops the current credentials (e.g. AWS said they expired) so the next get fetches. */
void aws_creds_cache_invalidate(struct aws_creds_cache *cc);

/* The provider's name, for messages. */
const char *aws_creds_cache_source(const struct aws_creds_cache *cc);

#endif
