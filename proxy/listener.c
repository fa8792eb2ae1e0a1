/* Listening sockets, opened before the workers start so errors stop start-up. */
#include "proxy/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/config.h"
#include "conf/log.h"

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Splits "HOST:PORT" or "[V6]:PORT" into host and port strings. */
static int split_hostport(const char *hp, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon = strrchr(hp, ':');
    if (!colon || !colon[1])
        return -1;
    const char *h = hp;
    size_t n = (size_t)(colon - hp);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n == 0 || n >= hostlen || strlen(colon + 1) >= portlen)
        return -1;
    memcpy(host, h, n);
    host[n] = 0;
    snprintf(port, portlen, "%s", colon + 1);
    return 0;
}

/* "ADDR:PORT" or "[ADDR]:PORT" of a resolved address, and whether it is loopback. */
static bool describe_addr(const struct addrinfo *ai, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ai->ai_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ai->ai_addr;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (ai->ai_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ai->ai_addr;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(out, outlen, ai->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
    return (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) && config_host_is_loopback(host);
}

/*
 * One listening socket on one resolved address. v6only keeps an IPv6 socket off
 * IPv4 when the same name also gave an IPv4 address. Returns the fd, or -1 with errno set.
 */
static int open_one(const struct addrinfo *ai, bool v6only)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        (v6only && ai->ai_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0 ||
        set_nonblocking(fd) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Errors that mean the address (family) does not exist here, not that something is wrong. */
static bool address_absent(int e)
{
    return e == EADDRNOTAVAIL || e == EAFNOSUPPORT;
}

/*
 * True when a process accepts connections at ai's address (a wildcard address is tried on
 * its loopback). A bind that fails with EADDRINUSE may only mean a TIME_WAIT left on the
 * port; a connection that completes means a listener.
 */
static bool tcp_listening(const struct addrinfo *ai)
{
    struct sockaddr_storage ss;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        if (in->sin_addr.s_addr == htonl(INADDR_ANY))
            in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
            in6->sin6_addr = in6addr_loopback;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return false;
    bool up = connect(fd, (struct sockaddr *)&ss, ai->ai_addrlen) == 0;
    if (!up && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int e = 0;
        socklen_t len = sizeof(e);
        up =
            poll(&p, 1, 1000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e == 0;
    }
    close(fd);
    return up;
}

bool listener_probe_tcp(const char *hostport, char *err, size_t errlen)
{
    char host[256], port[16];
    if (split_hostport(hostport, host, sizeof(host), port, sizeof(port)) < 0) {
        snprintf(err, errlen, "listen address '%s' is not HOST:PORT", hostport);
        return false;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return true; /* listener_open_tcp reports it */
    size_t n_ai = 0;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
        n_ai++;
    bool ok = true;
    for (const struct addrinfo *ai = res; ai && ok; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        /* SO_REUSEADDR: a TIME_WAIT left by a previous run is no conflict; a listener is. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (n_ai > 1 && ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno == EADDRINUSE && tcp_listening(ai)) {
            char addr[64];
            describe_addr(ai, addr, sizeof(addr));
            snprintf(err, errlen,
                     "cannot listen on %s (%s): %s (another process listens there; to replace "
                     "a running credproxy, start the new one with --upgrade)",
                     hostport, addr, strerror(EADDRINUSE));
            ok = false;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return ok;
}

void listener_set_close(struct listener_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        close(set->fds[i]);
    set->n = 0;
}

bool listener_open_tcp(const char *hostport, bool loopback_only, struct listener_set *out,
                       char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char host[256], port[16];
    if (split_hostport(hostport, host, sizeof(host), port, sizeof(port)) < 0) {
        snprintf(err, errlen, "listen address '%s' is not HOST:PORT", hostport);
        return false;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "listen address '%s': %s", hostport, gai_strerror(rc));
        return false;
    }
    /* Every address first: trust must never listen beyond this host, even through a name. */
    size_t n_ai = 0;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next, n_ai++) {
        char addr[64];
        if (!describe_addr(ai, addr, sizeof(addr)) && loopback_only) {
            snprintf(err, errlen,
                     "client_auth=trust refused: listen address '%s' resolves to %s, which is "
                     "not loopback",
                     hostport, addr);
            freeaddrinfo(res);
            return false;
        }
    }
    bool ok = true;
    for (const struct addrinfo *ai = res; ai && ok; ai = ai->ai_next) {
        char addr[64];
        describe_addr(ai, addr, sizeof(addr));
        bool dup = false; /* a hosts file may list the same address twice */
        for (size_t i = 0; i < out->n; i++)
            dup = dup || strcmp(out->addrs[i], addr) == 0;
        if (dup || out->n == LISTENER_MAX_ADDRS)
            continue;
        int fd = open_one(ai, n_ai > 1);
        if (fd >= 0) {
            out->fds[out->n] = fd;
            snprintf(out->addrs[out->n++], sizeof(out->addrs[0]), "%s", addr);
        } else if (address_absent(errno) && n_ai > 1) {
            size_t used = strlen(out->skipped);
            snprintf(out->skipped + used, sizeof(out->skipped) - used, "%s%s (%s)",
                     used ? ", " : "", addr, strerror(errno));
        } else {
            snprintf(err, errlen, "cannot listen on %s (%s): %s", hostport, addr, strerror(errno));
            ok = false;
        }
    }
    freeaddrinfo(res);
    if (ok && out->n == 0) {
        snprintf(err, errlen, "cannot listen on %s: no address of it exists here: %s", hostport,
                 out->skipped);
        ok = false;
    }
    if (!ok)
        listener_set_close(out);
    return ok;
}

/* The unix socket files this process bound, by path and identity (main thread only). */
struct own_socket {
    char *path; /* where clients find it (once published) */
    char *tmp;  /* where it is bound until listener_publish_unix renames it; NULL after */
    dev_t dev;
    ino_t ino;
};
static struct own_socket *own_sockets;
static size_t n_own_sockets;

static bool remember_own(const char *path, const char *tmp)
{
    struct stat st;
    struct own_socket *o = realloc(own_sockets, (n_own_sockets + 1) * sizeof(*o));
    if (!o)
        return false;
    own_sockets = o;
    o += n_own_sockets;
    o->path = strdup(path);
    o->tmp = strdup(tmp);
    if (!o->path || !o->tmp || lstat(tmp, &st) < 0) {
        free(o->path);
        free(o->tmp);
        return false;
    }
    o->dev = st.st_dev;
    o->ino = st.st_ino;
    n_own_sockets++;
    return true;
}

void listener_unlink_own_unix(const char *path)
{
    for (size_t i = 0; i < n_own_sockets; i++) {
        struct own_socket *o = &own_sockets[i];
        if (!o->path || (path && strcmp(path, o->path) != 0))
            continue;
        struct stat st;
        const char *at = o->tmp ? o->tmp : o->path;
        if (lstat(at, &st) == 0 && st.st_dev == o->dev && st.st_ino == o->ino)
            unlink(at);
        free(o->path);
        free(o->tmp);
        o->path = o->tmp = NULL;
    }
}

bool listener_publish_unix(void)
{
    bool ok = true;
    for (size_t i = 0; i < n_own_sockets; i++) {
        struct own_socket *o = &own_sockets[i];
        if (!o->path || !o->tmp)
            continue;
        if (rename(o->tmp, o->path) < 0) {
            log_error("cannot listen on %s: rename from %s: %s", o->path, o->tmp, strerror(errno));
            ok = false;
            continue;
        }
        free(o->tmp);
        o->tmp = NULL;
    }
    return ok;
}

/* True when a process accepts (or queues) connections on the unix socket at path. */
static bool unix_served(const struct sockaddr_un *sun)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return false;
    bool served = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0 || errno == EAGAIN;
    close(fd);
    return served;
}

int listener_open_unix(const char *path, bool upgrade, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX}, tmp = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path) ||
        (size_t)snprintf(tmp.sun_path, sizeof(tmp.sun_path), "%s.%ld.new", path, (long)getpid()) >=
            sizeof(tmp.sun_path)) {
        snprintf(err, errlen, "socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sun.sun_path, path);
    struct stat st;
    /* Replace a socket file left by a previous run, but never any other kind of file. */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "cannot listen on %s: a file that is not a socket is there",
                     path);
            return -1;
        }
        if (!upgrade && unix_served(&sun)) {
            snprintf(err, errlen,
                     "cannot listen on %s: %s (a running process serves it; to replace a "
                     "running credproxy, start the new one with --upgrade)",
                     path, strerror(EADDRINUSE));
            return -1;
        }
    }
    unlink(tmp.sun_path); /* left by a crashed start of a process with the same pid */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&tmp, sizeof(tmp)) < 0 ||
        chmod(tmp.sun_path, 0666) < 0 || listen(fd, 1024) < 0 || set_nonblocking(fd) < 0 ||
        !remember_own(path, tmp.sun_path)) {
        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp.sun_path);
        return -1;
    }
    return fd;
}

void listener_refuse(int fd)
{
    static const char msg[] = "Too many connections";
    uint8_t pkt[4 + 9 + sizeof(msg) - 1];
    size_t len = sizeof(pkt) - 4;
    pkt[0] = (uint8_t)len;
    pkt[1] = (uint8_t)(len >> 8);
    pkt[2] = (uint8_t)(len >> 16);
    pkt[3] = 0; /* sequence id 0: the packet stands where the greeting would */
    pkt[4] = 0xff;
    pkt[5] = 1040 & 0xff;
    pkt[6] = 1040 >> 8;
    memcpy(pkt + 7, "#08004", 6);
    memcpy(pkt + 13, msg, sizeof(msg) - 1);
    ssize_t sent = send(fd, pkt, sizeof(pkt), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)sent; /* a client that left already needs no answer */
    close(fd);
}
