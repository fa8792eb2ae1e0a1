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

/* Closes every socket of set. */
void listener_set_close(struct listener_set *set);

/*
 * Opens a listening unix socket at path (replacing a stale socket file), mode 0666, and
 * remembers the socket file's identity (device, inode) for listener_unlink_own_unix.
 */
int listener_open_unix(const char *path, char *err, size_t errlen);

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
