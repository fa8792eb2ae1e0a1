/*
 * Writing to a bufferevent at once. A bufferevent writes on the next loop turn, and registers
 * and unregisters write interest around each write: two epoll_ctl calls that cost more than
 * relaying a small packet. When nothing is queued, these write on the spot (a plain socket, or
 * SSL_write on a socket TLS bufferevent) and queue only what the socket does not take, which
 * the bufferevent then writes as usual. A filtering bufferevent (a client's TLS) only queues.
 */
#ifndef CREDPROXY_PROXY_STREAM_SEND_H
#define CREDPROXY_PROXY_STREAM_SEND_H

#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct evbuffer;

/* Sends data, which is drained. False when the rest could not be queued (out of memory). */
bool stream_send_now(struct bufferevent *bev, struct evbuffer *data);

/* Sends len bytes at p. False when the rest could not be queued (out of memory). */
bool stream_send_bytes_now(struct bufferevent *bev, const void *p, size_t len);

#endif
