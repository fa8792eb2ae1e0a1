/* Asynchronous HTTP(S) requests: libcurl's multi interface driven by a libevent loop. */
#include "secrets/http_client.h"
#include "secrets/wipe_buf.h"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define RESPONSE_MAX (1024 * 1024) /* no AWS answer we read comes near this */
#define USER_AGENT   "credproxy/" CREDPROXY_VERSION

struct http_client {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;       /* libcurl's single timeout */
    struct http_request *reqs; /* in flight, doubly linked */
    size_t n_reqs;
    struct sock_watch *watches; /* every socket libcurl asked to watch */
    int refs;                   /* references through http_client_shared() */
};

/* One transfer and everything it owns until it is finished or cancelled. */
struct http_request {
    struct http_client *c;
    CURL *easy;
    struct curl_slist *headers;
    char *body; /* our copy of the request body, wiped when done */
    size_t body_len;
    struct wipe_buf resp; /* response body so far, wiped when done */
    bool too_big;
    char error_type[128]; /* x-amzn-ErrorType */
    char errbuf[CURL_ERROR_SIZE];
    http_done_cb cb;
    void *arg;
    struct http_request *prev, *next;
};

/* The libevent watch on one socket that libcurl asked about. */
struct sock_watch {
    struct http_client *c;
    struct event *ev;
    struct sock_watch *prev, *next;
};

static void watch_free(struct sock_watch *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        w->c->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (w->ev)
        event_free(w->ev);
    free(w);
}

static struct http_client *shared_client;

/* ---- Requests --------------------------------------------------------------------------- */

static void request_free(struct http_request *r)
{
    struct http_client *c = r->c;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    c->n_reqs--;
    if (r->easy) {
        curl_multi_remove_handle(c->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->headers);
    if (r->body) {
        OPENSSL_cleanse(r->body, r->body_len);
        free(r->body);
    }
    wipe_buf_wipe(&r->resp);
    free(r);
}

/* Grows without realloc, so no unwiped copy of a secret is left in the heap. */
static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_request *r = arg;
    size_t n = size * nmemb;
    if (r->resp.len + n + 1 > RESPONSE_MAX) {
        r->too_big = true;
        return 0;
    }
    wipe_buf_putn(&r->resp, data, n);
    return r->resp.oom ? 0 : n; /* 0 makes curl fail the transfer */
}

/* Keeps x-amzn-ErrorType, which JSON-protocol errors carry besides the body's __type. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_request *r = arg;
    size_t n = size * nmemb;
    static const char name[] = "x-amzn-errortype:";
    if (n > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0) {
        const char *v = data + sizeof(name) - 1;
        size_t len = n - (sizeof(name) - 1);
        while (len && (*v == ' ' || *v == '\t'))
            v++, len--;
        while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
            len--;
        if (len >= sizeof(r->error_type))
            len = sizeof(r->error_type) - 1;
        memcpy(r->error_type, v, len);
        r->error_type[len] = '\0';
    }
    return n;
}

static void finish(struct http_request *r, CURLcode code)
{
    struct http_response res = {0};
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
    res.body = r->resp.p ? r->resp.p : "";
    res.body_len = r->resp.len;
    res.error_type = r->error_type[0] ? r->error_type : NULL;
    if (code != CURLE_OK) {
        res.timed_out = code == CURLE_OPERATION_TIMEDOUT;
        if (r->too_big)
            res.error = "response larger than 1 MiB";
        else
            res.error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
        res.status = 0;
    }
    /* Finished before the callback: it may start or cancel other requests. */
    curl_multi_remove_handle(r->c->multi, r->easy);
    http_done_cb cb = r->cb;
    void *arg = r->arg;
    cb(&res, arg);
    request_free(r);
}

static void check_done(struct http_client *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct http_request *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (r)
            finish(r, msg->data.result);
    }
}

/* ---- libcurl <-> libevent ------------------------------------------------------------- */

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct http_client *c = arg;
    int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(c->multi, fd, flags, &running);
    check_done(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_client *c = arg;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct http_client *c = userp;
    struct sock_watch *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            watch_free(w);
            curl_multi_assign(c->multi, s, NULL);
        }
        return 0;
    }
    if (!w) {
        w = calloc(1, sizeof(*w));
        if (!w)
            return -1;
        w->c = c;
        w->next = c->watches;
        if (c->watches)
            c->watches->prev = w;
        c->watches = w;
        curl_multi_assign(c->multi, s, w);
    } else if (w->ev) {
        event_free(w->ev);
    }
    short ev =
        EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    w->ev = event_new(c->base, s, ev, on_socket_event, c);
    return w->ev && event_add(w->ev, NULL) == 0 ? 0 : -1;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct http_client *c = userp;
    if (timeout_ms < 0)
        return evtimer_del(c->timer);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    return evtimer_add(c->timer, &tv);
}

/* ---- The client --------------------------------------------------------------------------- */

/*
 * Sets close-on-exec on every descriptor above stderr that lacks it. Only for what a library
 * opens out of our reach; credproxy's own descriptors are created close-on-exec.
 */
static void cloexec_sweep(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        int fl = fd > 2 && fd != dirfd(d) ? fcntl(fd, F_GETFD) : -1;
        if (fl >= 0 && !(fl & FD_CLOEXEC))
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
    closedir(d);
}

struct http_client *http_client_new(struct event_base *base)
{
    static bool global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return NULL;
        global_done = true;
    }
    struct http_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->base = base;
    c->multi = curl_multi_init();
    cloexec_sweep(); /* curl 7.88's multi handle opens a wakeup socketpair without it */
    c->timer = evtimer_new(base, on_timer, c);
    if (!c->multi || !c->timer) {
        http_client_free(c);
        return NULL;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    return c;
}

void http_client_free(struct http_client *c)
{
    if (!c)
        return;
    while (c->reqs)
        request_free(c->reqs);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    while (c->watches)
        watch_free(c->watches);
    if (c->timer)
        event_free(c->timer);
    if (shared_client == c)
        shared_client = NULL;
    free(c);
}

struct http_client *http_client_shared(struct event_base *base)
{
    if (shared_client && shared_client->base == base) {
        shared_client->refs++;
        return shared_client;
    }
    struct http_client *c = http_client_new(base);
    if (c) {
        c->refs = 1;
        if (!shared_client)
            shared_client = c;
    }
    return c;
}

void http_client_release(struct http_client *c)
{
    if (c && --c->refs <= 0)
        http_client_free(c);
}

size_t http_client_in_flight(const struct http_client *c)
{
    return c->n_reqs;
}

static bool set_body(struct http_request *r, const struct http_request_params *p)
{
    bool has_body =
        p->body_len > 0 || strcmp(p->method, "POST") == 0 || strcmp(p->method, "PUT") == 0;
    if (!has_body)
        return true;
    r->body = malloc(p->body_len + 1);
    if (!r->body)
        return false;
    if (p->body_len)
        memcpy(r->body, p->body, p->body_len);
    r->body[p->body_len] = '\0';
    r->body_len = p->body_len;
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
    return true;
}

static bool set_headers(struct http_request *r, const struct http_request_params *p)
{
    /* An empty "Expect:" stops libcurl from waiting for 100-continue on larger bodies. */
    struct curl_slist *l = curl_slist_append(NULL, "Expect:");
    for (size_t i = 0; l && p->headers && p->headers[i]; i++) {
        struct curl_slist *n = curl_slist_append(l, p->headers[i]);
        if (!n) {
            curl_slist_free_all(l);
            return false;
        }
        l = n;
    }
    r->headers = l;
    return l && curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, l) == CURLE_OK;
}

/* curl's sockets, created close-on-exec (curl 7.88 creates them without). */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)arg;
    (void)purpose;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static bool setup(struct http_request *r, const struct http_request_params *p)
{
    CURL *e = r->easy;
    const char *ca = getenv("AWS_CA_BUNDLE");
    int timeout = p->timeout_ms > 0 ? p->timeout_ms : 30000;
    int connect = p->connect_timeout_ms > 0 ? p->connect_timeout_ms : timeout;
    bool ok = curl_easy_setopt(e, CURLOPT_URL, p->url) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_PRIVATE, r) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_WRITEDATA, r) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_HEADERDATA, r) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)connect) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket) == CURLE_OK &&
              set_headers(r, p) && set_body(r, p);
    if (ok && strcmp(p->method, "POST") != 0 && (r->body || strcmp(p->method, "GET") != 0))
        ok = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, p->method) == CURLE_OK;
    if (ok && ca && *ca)
        ok = curl_easy_setopt(e, CURLOPT_CAINFO, ca) == CURLE_OK;
    return ok;
}

struct http_request *http_request_start(struct http_client *c, const struct http_request_params *p,
                                        http_done_cb cb, void *arg, char *err, size_t errlen)
{
    struct http_request *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->c = c;
    r->cb = cb;
    r->arg = arg;
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    c->n_reqs++;
    r->easy = curl_easy_init();
    if (!r->easy || !setup(r, p)) {
        snprintf(err, errlen, "cannot set up the HTTP request to %s", p->url);
        request_free(r);
        return NULL;
    }
    CURLMcode mc = curl_multi_add_handle(c->multi, r->easy);
    if (mc != CURLM_OK) {
        snprintf(err, errlen, "cannot start the HTTP request: %s", curl_multi_strerror(mc));
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
        request_free(r);
        return NULL;
    }
    return r;
}

void http_request_cancel(struct http_request *r)
{
    if (r)
        request_free(r);
}
