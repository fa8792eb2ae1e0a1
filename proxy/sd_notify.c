/* systemd notifications over a datagram socket (sd_notify.h). */
#include "proxy/sd_notify.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "conf/log.h"

/* Fills *sa from a $NOTIFY_SOCKET value; returns the address length, or 0 when unusable. */
static socklen_t notify_address(const char *name, struct sockaddr_un *sa)
{
    size_t len = strlen(name);
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if ((name[0] != '/' && name[0] != '@') || len < 2 || len >= sizeof(sa->sun_path))
        return 0; /* neither a path nor an abstract name (vsock: is not supported) */
    memcpy(sa->sun_path, name, len);
    if (name[0] == '@') {
        sa->sun_path[0] = 0; /* abstract: no terminating NUL counts in the length */
        return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    }
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

int sd_notify_send(const char *state)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static int fd = -1;
    static bool complained;
    const char *name = getenv("NOTIFY_SOCKET");
    if (!name || !*name)
        return 0;
    struct sockaddr_un sa;
    socklen_t salen = notify_address(name, &sa);
    if (!salen) {
        if (!complained)
            log_warn("NOTIFY_SOCKET '%.100s' is not a unix socket path or @name; not notifying "
                     "systemd",
                     name);
        complained = true;
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&mu);
    if (fd < 0)
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ssize_t n = fd < 0 ? -1
                       : sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT,
                                (struct sockaddr *)&sa, salen);
    int saved = errno;
    pthread_mutex_unlock(&mu);
    if (n < 0) {
        log_debug("sd_notify to '%.100s' failed: %s", name, strerror(saved));
        errno = saved;
        return -1;
    }
    return 1;
}

uint64_t sd_watchdog_usec(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (!usec || !*usec)
        return 0;
    if (pid && *pid) {
        char *end;
        errno = 0;
        unsigned long long p = strtoull(pid, &end, 10);
        if (errno || *end || p != (unsigned long long)getpid())
            return 0; /* meant for another process (a parent that exec'ed us, say) */
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(usec, &end, 10);
    if (errno || *end || v == 0 || usec[0] == '-')
        return 0;
    return (uint64_t)v;
}

uint64_t sd_monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
