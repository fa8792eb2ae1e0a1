/* LD_PRELOAD shim for the Connector/C conformance run (connector_c.py): refuses every
 * connect(), sendto() and sendmsg() whose destination is not loopback or a unix socket, so
 * that nothing the unit tests do (including name lookups) can leave the machine. A refused
 * attempt fails with ENETUNREACH and is appended to the file named by
 * CREDPROXY_GUARD_LOG; the harness fails the run when that file is not empty. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

static int loopback_or_local(const struct sockaddr *sa, socklen_t len)
{
    if (sa == NULL || len < sizeof(sa_family_t))
        return 1; /* no destination: a connected socket, checked at connect() */
    switch (sa->sa_family) {
    case AF_UNIX:
    case AF_UNSPEC: /* connect(AF_UNSPEC) dissolves an association */
        return 1;
    case AF_INET: {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return len >= sizeof(*in) && (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (len < sizeof(*in6))
            return 0;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    default:
        return 0;
    }
}

static void record(const char *call, const struct sockaddr *sa)
{
    char addr[INET6_ADDRSTRLEN] = "?";
    char line[256];
    const char *path = getenv("CREDPROXY_GUARD_LOG");
    int port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
        port = ntohs(in6->sin6_port);
    }
    int n = snprintf(line, sizeof(line),
                     "loopback_guard: refused %s to family %d %s port %d (pid %d)\n", call,
                     sa->sa_family, addr, port, (int)getpid());
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    if (write(2, line, (size_t)n) < 0) {
        /* nothing to do: the log file below is what the harness reads */
    }
    if (path != NULL) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, line, (size_t)n) < 0) {
                /* the message on stderr still stands */
            }
            close(fd);
        }
    }
}

int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!loopback_or_local(sa, len)) {
        record("connect", sa);
        errno = ENETUNREACH;
        return -1;
    }
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "connect");
    return real(fd, sa, len);
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *sa,
               socklen_t len)
{
    static ssize_t (*real)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    if (sa != NULL && !loopback_or_local(sa, len)) {
        record("sendto", sa);
        errno = ENETUNREACH;
        return -1;
    }
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "sendto");
    return real(fd, buf, n, flags, sa, len);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    static ssize_t (*real)(int, const struct msghdr *, int);
    if (msg != NULL && msg->msg_name != NULL &&
        !loopback_or_local((const struct sockaddr *)msg->msg_name, msg->msg_namelen)) {
        record("sendmsg", (const struct sockaddr *)msg->msg_name);
        errno = ENETUNREACH;
        return -1;
    }
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "sendmsg");
    return real(fd, msg, flags);
}
