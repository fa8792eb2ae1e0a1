/* Listening sockets: TCP with SO_REUSEPORT (one per worker), and unix sockets. */
#ifndef CREDPROXY_PROXY_LISTENER_H
#define CREDPROXY_PROXY_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

/* Most addresses one listen host may stand for ("localhost": 127.0.0.1 and ::1). */
#define LISTENER_MAX_ADDRS 8

/* The sockets opened for one "HOST:PORT": one per address the host resolves to. */
struct listener_set {
    int fds[LISTENER_MAX_ADDRS];
    char addrs[LISTENER_MAX_ADDRS][64]; /* "127.0.0.1:3306", "[::1]:3306", for logs */
    size_t n;
    char skipped[256]; /* addresses this machine does not have, for the log; "" when none */
};

/*
 * Opens a non-blocking listening TCP socket with SO_REUSEPORT (so every
 * worker can bind its own) on every address HOST of "HOST:PORT" ("[::1]:PORT"
 * for IPv6) resolves to. An address the machine does not have (EADDRNOTAVAIL,
 * or no IPv6 at all) is skipped and named in out->skipped; it is an error
 * when none binds. With loopback_only (client_auth=trust) a host that
 * resolves to any address that is not loopback is an error. Returns false
 * with a message in err, and nothing left open.
 */
bool listener_open_tcp(const char *hostport, bool loopback_only, struct listener_set *out,
                       char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Fails, with "Address already in use" in err, when another process listens on any address
 * of hostport. Called before the first listener_open_tcp of hostport (whose SO_REUSEPORT
 * would otherwise let a second credproxy started by mistake silently share the port), and
 * skipped with --upgrade, where sharing is the point. Binds a probe socket without
 * SO_REUSEPORT, which the kernel refuses beside any listening socket.
 */
bool listener_probe_tcp(const char *hostport, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Closes every socket of set. */
void listener_set_close(struct listener_set *set);

/*
 * Opens a listening unix socket for path, mode 0666, bound at a temporary name beside it
 * ("PATH.PID.new"); listener_publish_unix renames it over path. A socket file at path that
 * a live process still serves is an error ("Address already in use") unless upgrade is true
 * (then the rename takes the path over and the old process keeps the clients it has); a
 * stale one is replaced. The socket file's identity (device, inode) is remembered for
 * listener_unlink_own_unix. Main thread only.
 */
int listener_open_unix(const char *path, bool upgrade, char *err, size_t errlen);

/*
 * Renames every socket listener_open_unix bound over its path, atomically: a client finds
 * the old socket or the new one, never none. Called once every listener is open, so a
 * start-up that fails takes no path away from a running credproxy. Returns false (logged)
 * if a rename failed.
 */
bool listener_publish_unix(void);

/*
 * Removes the socket file at path (NULL: every one this process opened) only if it is
 * still the one this process bound: during an upgrade the path may already name the new
 * process's socket, which must stay. Main thread only.
 */
void listener_unlink_own_unix(const char *path);

/*
 * Tells a client that was accepted only to be turned away "Too many
 * connections" (ERR 1040, SQLSTATE 08004, sequence id 0, in place of the
 * greeting, as MySQL does at max_connections) and closes fd. Never blocks: a
 * fresh socket's send buffer always has room for the few bytes.
 */
void listener_refuse(int fd);

#endif
