/* Asynchronous HTTP(S) requests: libcurl's multi interface driven by a libevent loop. */
#ifndef CREDPROXY_SECRETS_HTTP_CLIENT_H
#define CREDPROXY_SECRETS_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct http_client;
struct http_request;

/* What came back. Body bytes may hold secrets: the client wipes them after the callback. */
struct http_response {
    long status;       /* HTTP status, 0 when no response arrived */
    bool timed_out;    /* the request hit its time limit */
    const char *error; /* transport failure (DNS, connect, TLS, ...), NULL when status > 0 */
    const char *body;  /* NUL-terminated */
    size_t body_len;
    const char *error_type; /* x-amzn-ErrorType response header, or NULL */
};

/*
 * Called once per request on the client's loop, unless the request was
 * cancelled. The request is already finished: do not cancel it here.
 */
typedef void (*http_done_cb)(const struct http_response *res, void *arg);

/* One request. Strings are copied; body bytes too, and wiped when the request is done. */
struct http_request_params {
    const char *method;         /* "GET", "PUT", "POST" */
    const char *url;            /* http:// or https:// only */
    const char *const *headers; /* "Name: value" lines, NULL-terminated, or NULL */
    const void *body;
    size_t body_len;
    int timeout_ms;         /* whole request, connect included */
    int connect_timeout_ms; /* 0: timeout_ms */
};

/*
 * A client on base: all its requests share libcurl's connection cache and DNS
 * cache. NULL when libcurl cannot be set up. The caller frees it after every
 * request is finished or cancelled.
 */
struct http_client *http_client_new(struct event_base *base);
void http_client_free(struct http_client *c);

/*
 * The shared client of base, created on first use: takes a reference, which
 * http_client_release() drops (the last one frees it).
 */
struct http_client *http_client_shared(struct event_base *base);
void http_client_release(struct http_client *c);

/*
 * Starts a request; the callback runs later on the client's loop (never from
 * inside this call). Returns NULL, with a reason in err, when it cannot start.
 */
struct http_request *http_request_start(struct http_client *c, const struct http_request_params *p,
                                        http_done_cb cb, void *arg, char *err, size_t errlen);

/* Stops a request that has not finished; its callback will not run. NULL is ignored. */
void http_request_cancel(struct http_request *r);

/* Requests started and not yet finished or cancelled (for tests). */
size_t http_client_in_flight(const struct http_client *c);

#endif
