/*
 * The relay's socket reads (see sock_reader.h). One recv() per readable
 * event, into space reserved in the input buffer: as large as the packet
 * the owner expects, at least READ_MIN, growing while reads keep filling it
 * (a stream of rows) up to READ_MAX, and never past the high mark.
 */
#include "proxy/sock_reader.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#define READ_MIN (16 * 1024)
#define READ_MAX (256 * 1024)

struct sock_reader {
    struct event *ev; /* EV_READ | EV_PERSIST on the socket */
    struct bufferevent *bev;
    struct evbuffer *in;
    struct evbuffer_cb_entry *room; /* resumes reading once the input drains below high */
    size_t high;
    size_t expect; /* bytes the owner said are coming */
    size_t size;   /* the next read's size when nothing is expected */
    bool on;       /* the owner wants to read */
    bool full;     /* the input holds high bytes: paused until it drains */
    bool added;    /* the event is registered */
};

/* Registers or unregisters the read event to match what is wanted. */
static void sync_event(struct sock_reader *r)
{
    bool want = r->on && !r->full && r->bev;
    if (want && !r->added)
        r->added = event_add(r->ev, NULL) == 0;
    else if (!want && r->added) {
        event_del(r->ev);
        r->added = false;
    }
}

static void set_full(struct sock_reader *r, bool full)
{
    if (r->full == full)
        return;
    r->full = full;
    if (full)
        evbuffer_cb_set_flags(r->in, r->room, EVBUFFER_CB_ENABLED);
    else
        evbuffer_cb_clear_flags(r->in, r->room, EVBUFFER_CB_ENABLED);
    sync_event(r);
}

static void room_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct sock_reader *r = arg;
    if (info->n_deleted && r->full && (!r->high || evbuffer_get_length(buf) < r->high))
        set_full(r, false);
}

/* As libevent's socket bufferevent does: reading stops, then the owner hears why. */
static void report(struct sock_reader *r, short what)
{
    int err = errno;
    bufferevent_event_cb eventcb = NULL;
    void *arg = NULL;
    bufferevent_getcb(r->bev, NULL, NULL, &eventcb, &arg);
    r->on = false;
    sync_event(r);
    if (eventcb) {
        errno = err;
        eventcb(r->bev, (short)(BEV_EVENT_READING | what), arg);
    }
}

static void readable_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct sock_reader *r = arg;
    size_t len = evbuffer_get_length(r->in);
    size_t n = r->expect > r->size ? r->expect : r->size;
    if (n > READ_MAX)
        n = READ_MAX;
    if (r->high) {
        if (len >= r->high) {
            set_full(r, true);
            return;
        }
        if (n > r->high - len)
            n = r->high - len;
    }
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(r->in, (ev_ssize_t)n, &v, 1) < 1) {
        errno = ENOMEM;
        report(r, BEV_EVENT_ERROR);
        return;
    }
    ssize_t got = recv(fd, v.iov_base, n, 0);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        report(r, BEV_EVENT_ERROR);
        return;
    }
    if (got == 0) {
        report(r, BEV_EVENT_EOF);
        return;
    }
    v.iov_len = (size_t)got;
    evbuffer_commit_space(r->in, &v, 1);
    r->expect = r->expect > (size_t)got ? r->expect - (size_t)got : 0;
    /* A read that filled its space means more is waiting: read more next time. */
    if ((size_t)got == n && n >= r->size)
        r->size = n * 2 < READ_MAX ? n * 2 : READ_MAX;
    else if ((size_t)got < READ_MIN)
        r->size = READ_MIN;
    if (r->high && len + (size_t)got >= r->high)
        set_full(r, true);
    bufferevent_data_cb readcb = NULL;
    void *cbarg = NULL;
    bufferevent_getcb(r->bev, &readcb, NULL, NULL, &cbarg);
    if (readcb)
        readcb(r->bev, cbarg); /* may close the owner: r stays valid, r->bev may not */
}

struct sock_reader *sock_reader_new(struct event_base *base, struct bufferevent *bev)
{
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd < 0 || bufferevent_openssl_get_ssl(bev) || bufferevent_get_underlying(bev))
        return NULL;
    struct sock_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->ev = event_new(base, fd, EV_READ | EV_PERSIST, readable_cb, r);
    r->bev = bev;
    r->in = bufferevent_get_input(bev);
    r->room = r->ev ? evbuffer_add_cb(r->in, room_cb, r) : NULL;
    if (!r->room) {
        if (r->ev)
            event_free(r->ev);
        free(r);
        return NULL;
    }
    evbuffer_cb_clear_flags(r->in, r->room, EVBUFFER_CB_ENABLED);
    /* A socket bufferevent keeps its input's end frozen to all but itself; the reader is it now. */
    evbuffer_unfreeze(r->in, 0);
    r->size = READ_MIN;
    size_t high = 0;
    bufferevent_getwatermark(bev, EV_READ, NULL, &high);
    r->high = high;
    r->on = bufferevent_get_enabled(bev) & EV_READ;
    /* Ours first: the socket stays registered with epoll through the hand-over. */
    sync_event(r);
    bufferevent_disable(bev, EV_READ);
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    if (r->high && evbuffer_get_length(r->in) >= r->high)
        set_full(r, true);
    return r;
}

void sock_reader_detach(struct sock_reader *r)
{
    if (!r || !r->bev)
        return;
    if (r->added)
        event_del(r->ev);
    r->added = false;
    evbuffer_remove_cb_entry(r->in, r->room);
    r->room = NULL;
    r->bev = NULL;
    r->in = NULL;
}

void sock_reader_free(struct sock_reader *r)
{
    if (!r)
        return;
    sock_reader_detach(r);
    event_free(r->ev);
    free(r);
}

void sock_reader_set(struct sock_reader *r, bool on)
{
    if (!r->bev)
        return;
    r->on = on;
    sync_event(r);
}

void sock_reader_set_high(struct sock_reader *r, size_t high)
{
    if (!r->bev)
        return;
    r->high = high;
    set_full(r, high && evbuffer_get_length(r->in) >= high);
}

void sock_reader_expect(struct sock_reader *r, size_t n)
{
    r->expect = n;
}

void stream_read(struct sock_reader *r, struct bufferevent *bev, bool on)
{
    if (r)
        sock_reader_set(r, on);
    else if (on)
        bufferevent_enable(bev, EV_READ);
    else
        bufferevent_disable(bev, EV_READ);
}

void stream_read_high(struct sock_reader *r, struct bufferevent *bev, size_t high)
{
    if (r)
        sock_reader_set_high(r, high);
    else
        bufferevent_setwatermark(bev, EV_READ, 0, high);
}
