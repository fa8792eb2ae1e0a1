/* Writes to a bufferevent's socket at once when nothing is queued before them. */
#include "proxy/stream_send.h"

#include <limits.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* The TLS connection bev writes itself, or NULL; *direct: bev may be written to at once. */
static SSL *direct_target(struct bufferevent *bev, bool *direct)
{
    *direct =
        evbuffer_get_length(bufferevent_get_output(bev)) == 0 && !bufferevent_get_underlying(bev);
    return *direct ? bufferevent_openssl_get_ssl(bev) : NULL;
}

/*
 * One SSL_write of n bytes at p: what it wrote, 0 when it wrote nothing. Without partial
 * writes a record is written whole or not at all; after SSL_ERROR_WANT_WRITE, OpenSSL wants
 * the retry to pass the same bytes and length, so the caller queues exactly these n bytes as
 * the output's first chunk, which is what libevent's retry hands SSL_write.
 */
static size_t ssl_write_once(SSL *ssl, const void *p, size_t n)
{
    ERR_clear_error();
    int r = SSL_write(ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    if (r <= 0) {
        ERR_clear_error(); /* found again, and reported, by the bufferevent's retry */
        return 0;
    }
    return (size_t)r;
}

bool stream_send_now(struct bufferevent *bev, struct evbuffer *data)
{
    bool direct;
    SSL *ssl = direct_target(bev, &direct);
    while (direct && evbuffer_get_length(data) > 0) {
        if (ssl) { /* chunk by chunk, so that a chunk not written stays whole */
            struct evbuffer_iovec v;
            size_t w = evbuffer_peek(data, -1, NULL, &v, 1) < 1
                           ? 0
                           : ssl_write_once(ssl, v.iov_base, v.iov_len);
            if (w == 0)
                break;
            evbuffer_drain(data, w);
        } else if (evbuffer_write(data, bufferevent_getfd(bev)) <= 0) {
            break;
        }
    }
    return evbuffer_get_length(data) == 0 ||
           evbuffer_add_buffer(bufferevent_get_output(bev), data) == 0;
}

bool stream_send_bytes_now(struct bufferevent *bev, const void *p, size_t len)
{
    const uint8_t *b = p;
    bool direct;
    SSL *ssl = direct_target(bev, &direct);
    while (direct && len > 0) {
        size_t w;
        if (ssl) {
            w = ssl_write_once(ssl, b, len);
        } else {
            ssize_t n = send(bufferevent_getfd(bev), b, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            w = n > 0 ? (size_t)n : 0;
        }
        if (w == 0)
            break;
        b += w;
        len -= w;
    }
    return len == 0 || bufferevent_write(bev, b, len) == 0;
}
