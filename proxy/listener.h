/* Listening sockets: TCP with SO_REUSEPORT (one per worker), and unix sockets. */
#ifndef CREDPROXY_PROXY_LISTENER_H
#define CREDPROXY_PROXY_LISTENER_H

#include <stddef.h>

/*
 * Opens a non-blocking listening TCP socket on "HOST:PORT" ("[::1]:PORT" for
 * IPv6) with SO_REUSEPORT, so every worker can bind its own. Returns the fd,
 * or -1 with a message in err.
 */
int listener_open_tcp(const char *hostport, char *err, size_t errlen);

/* Opens a listening unix socket at path (replacing a stale socket file), mode 0666. */
int listener_open_unix(const char *path, char *err, size_t errlen);

#endif
