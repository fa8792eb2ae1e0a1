/*
 * Reads a plain socket for its bufferevent: recv() straight into the
 * bufferevent's input buffer, sized from what the owner expects (packet
 * headers), with no FIONREAD ioctl before every read (libevent's
 * evbuffer_read makes one, and reads at most 4 KiB at a time). The socket's
 * read interest is registered with epoll once and stays registered while
 * reading is on; writes and the write side's callbacks stay with the
 * bufferevent. The bufferevent's own read side is never enabled again: every
 * "read on/off" and read watermark of the owner goes through this reader,
 * which calls the bufferevent's read and event callbacks as libevent would.
 * TLS streams keep their bufferevents (OpenSSL reads into the same buffers).
 */
#ifndef CREDPROXY_PROXY_SOCK_READER_H
#define CREDPROXY_PROXY_SOCK_READER_H

#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct event_base;
struct sock_reader;

/*
 * Takes over reading bev (a socket bufferevent without TLS or filter). Reading
 * is on if bev was reading; bev's read side is turned off without touching
 * epoll (the reader registers first). NULL when out of memory or when bev is
 * not a plain socket: the caller keeps using bev as before.
 */
struct sock_reader *sock_reader_new(struct event_base *base, struct bufferevent *bev);

/* Stops reading for good (before bev is freed); the memory stays until sock_reader_free. */
void sock_reader_detach(struct sock_reader *r);
/* At a safe point of the loop, after sock_reader_detach. */
void sock_reader_free(struct sock_reader *r);

/* Reading on or off (bufferevent_enable / bufferevent_disable of EV_READ). */
void sock_reader_set(struct sock_reader *r, bool on);
/* Stop reading while the input holds this much; 0 for no limit (the read high watermark). */
void sock_reader_set_high(struct sock_reader *r, size_t high);
/* The owner knows this many more bytes are coming (the rest of a packet): read that much. */
void sock_reader_expect(struct sock_reader *r, size_t n);

/*
 * Helpers for owners that hold either a reader or a plain bufferevent (TLS,
 * or a reader that could not be made): they act on whichever is in use.
 */
void stream_read(struct sock_reader *r, struct bufferevent *bev, bool on);
void stream_read_high(struct sock_reader *r, struct bufferevent *bev, size_t high);

#endif
