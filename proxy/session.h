/* One client connection: its login to credproxy, its upstream connection, the relay between them.
 */
#ifndef CREDPROXY_PROXY_SESSION_H
#define CREDPROXY_PROXY_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct worker;
struct route;

/*
 * Takes ownership of fd (a connected client socket) and starts the MySQL
 * handshake. peer_uid/peer_gid are the unix-socket peer's credentials, or -1
 * on TCP. Everything after this is driven by the worker's event loop.
 */
void session_start(struct worker *w, struct route *r, int fd, const struct sockaddr *addr,
                   socklen_t addrlen, bool is_unix);

/* Closes the worker's sessions idle past their route's client_idle_timeout. */
void session_sweep_idle(struct worker *w);

/* Closes the worker's session with connection id id, if it has one (KILL CONNECTION). */
void session_kill(struct worker *w, uint32_t id);

/* Samples how many clients of each route are active, waiting, idle or logging in (stats.h). */
void session_publish_stats(struct worker *w);

/* Closes every session of the worker (at shutdown). */
void session_close_all(struct worker *w);

#endif
