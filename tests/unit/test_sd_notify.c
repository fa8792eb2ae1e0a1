/*
 * Unit tests for proxy/sd_notify.c and the systemd side of proxy/daemon.c: the message for
 * each phase, datagrams on a real socket (path and abstract name), $WATCHDOG_USEC and
 * $WATCHDOG_PID, and the watchdog pings stopping while a real worker's loop is stuck.
 */
#include "proxy/daemon.h"
#include "proxy/sd_notify.h"
#include "proxy/worker.h"
#include "tests/check.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

static void test_messages(void)
{
    static const struct {
        enum daemon_phase p;
        const char *why, *out;
    } cases[] = {
        {DAEMON_STARTING, "reading secrets", "STATUS=starting: reading secrets"},
        {DAEMON_READY, "listening", "READY=1\nSTATUS=ready: listening"},
        {DAEMON_RELOADING, "SIGHUP", "RELOADING=1\nSTATUS=reloading: SIGHUP\nMONOTONIC_USEC=42"},
        {DAEMON_DRAINING, "SIGTERM", "STOPPING=1\nSTATUS=draining: SIGTERM"},
        {DAEMON_STOPPING, "exiting", "STOPPING=1\nSTATUS=stopping: exiting"},
        /* A newline in why cannot forge a key of its own. */
        {DAEMON_READY, "x\nWATCHDOG=trigger", "READY=1\nSTATUS=ready: x WATCHDOG=trigger"},
        {DAEMON_READY, NULL, "READY=1\nSTATUS=ready: "},
    };
    char buf[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_STR(daemon_notify_message(cases[i].p, cases[i].why, 42, buf, sizeof(buf)),
                  cases[i].out);
    CHECK_STR(daemon_notify_message(DAEMON_READY, "listening", 0, buf, 12), "READY=1\nSTA");
}

/* Binds a datagram socket at name ("/path" or "@abstract"); returns it, non-blocking. */
static int bind_notify(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    memcpy(sa.sun_path, name, len);
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    if (name[0] == '@') {
        sa.sun_path[0] = 0;
        salen--;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&sa, salen) == 0);
    return fd;
}

/* The next datagram on fd, waiting up to 1 s; "" when none came. */
static const char *recv_msg(int fd)
{
    static char buf[512];
    for (int i = 0; i < 100; i++) {
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
        if (n >= 0) {
            buf[n] = 0;
            return buf;
        }
        usleep(10000);
    }
    return "";
}

static void test_datagrams(void)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/test_sd_notify.%d", (int)getpid());
    unlink(path);
    int fd = bind_notify(path);
    unsetenv("NOTIFY_SOCKET");
    CHECK(sd_notify_send("READY=1") == 0); /* not supervised: nothing sent, no error */
    setenv("NOTIFY_SOCKET", path, 1);
    CHECK(sd_notify_send("READY=1") == 1);
    CHECK_STR(recv_msg(fd), "READY=1");
    /* daemon_set_phase's mapping, end to end over the socket. */
    uint64_t before = sd_monotonic_usec();
    daemon_set_phase(DAEMON_RELOADING, "SIGHUP");
    const char *m = recv_msg(fd);
    CHECK(strncmp(m, "RELOADING=1\nSTATUS=reloading: SIGHUP\nMONOTONIC_USEC=", 52) == 0);
    unsigned long long usec = strtoull(m + 52, NULL, 10);
    CHECK(usec >= before && usec <= sd_monotonic_usec());
    CHECK(daemon_phase() == DAEMON_RELOADING);
    daemon_set_phase(DAEMON_READY, "reloaded");
    CHECK_STR(recv_msg(fd), "READY=1\nSTATUS=ready: reloaded");
    daemon_set_phase(DAEMON_DRAINING, "SIGTERM");
    CHECK_STR(recv_msg(fd), "STOPPING=1\nSTATUS=draining: SIGTERM");
    close(fd);
    unlink(path);
    /* Nobody listening any more: an error, never a hang or a signal. */
    CHECK(sd_notify_send("STATUS=x") == -1);

    char abstract[64];
    snprintf(abstract, sizeof(abstract), "@test_sd_notify/%d", (int)getpid());
    fd = bind_notify(abstract);
    setenv("NOTIFY_SOCKET", abstract, 1);
    CHECK(sd_notify_send("STOPPING=1") == 1);
    CHECK_STR(recv_msg(fd), "STOPPING=1");
    close(fd);
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    CHECK(sd_notify_send("READY=1") == -1);
    unsetenv("NOTIFY_SOCKET");
}

static void test_watchdog_env(void)
{
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
    CHECK(sd_watchdog_usec() == 0);
    setenv("WATCHDOG_USEC", "3000000", 1);
    CHECK(sd_watchdog_usec() == 3000000);
    setenv("WATCHDOG_PID", pid, 1);
    CHECK(sd_watchdog_usec() == 3000000);
    setenv("WATCHDOG_PID", "1", 1); /* meant for another process */
    CHECK(sd_watchdog_usec() == 0);
    unsetenv("WATCHDOG_PID");
    static const char *const bad[] = {"", "0", "-5", "12x", "abc"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("WATCHDOG_USEC", bad[i], 1);
        CHECK(sd_watchdog_usec() == 0);
    }
    unsetenv("WATCHDOG_USEC");
}

/* Runs base for ms, then counts the WATCHDOG=1 datagrams waiting on fd. */
static int pings_during(struct event_base *base, int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
    char buf[64];
    int n = 0;
    ssize_t got;
    while ((got = recv(fd, buf, sizeof(buf) - 1, 0)) >= 0) {
        buf[got] = 0;
        CHECK_STR(buf, "WATCHDOG=1");
        n++;
    }
    return n;
}

/* Blocks a worker's loop until the pipe it reads from gets a byte. */
static void stall_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    char c;
    while (read(*(int *)arg, &c, 1) < 0 && errno == EINTR)
        ;
}

static void test_watchdog_stuck_worker(void)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/test_sd_notify_wd.%d", (int)getpid());
    unlink(path);
    int fd = bind_notify(path);
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "200000", 1); /* a ping every 100 ms */
    struct event_base *base = event_base_new();
    struct worker w[2];
    for (int k = 0; k < 2; k++) {
        CHECK(worker_init(&w[k], k, 2) == 0);
        CHECK(worker_start(&w[k]) == 0);
    }
    CHECK(daemon_watchdog_start(base, w, 2));
    int healthy = pings_during(base, fd, 700);
    CHECK(healthy >= 4 && healthy <= 9); /* the first at once, then every 100 ms */

    int p[2];
    CHECK(pipe(p) == 0);
    struct timeval now = {0, 0};
    CHECK(event_base_once(w[1].base, -1, EV_TIMEOUT, stall_cb, &p[0], &now) == 0);
    /* Pings go on until the stall is DAEMON_WORKER_STUCK_MS old, then stop. */
    int early = pings_during(base, fd, DAEMON_WORKER_STUCK_MS - 500);
    CHECK(early >= 5);
    pings_during(base, fd, 800);
    int stuck = pings_during(base, fd, 800);
    CHECK(stuck == 0);
    CHECK(worker_heartbeat_age_ms(&w[1]) >= DAEMON_WORKER_STUCK_MS);
    CHECK(worker_heartbeat_age_ms(&w[0]) < DAEMON_WORKER_STUCK_MS);

    CHECK(write(p[1], "x", 1) == 1); /* the loop turns again: pings resume */
    int resumed = pings_during(base, fd, 700);
    CHECK(resumed >= 4);

    daemon_watchdog_stop();
    for (int k = 0; k < 2; k++) {
        worker_stop(&w[k]);
        worker_destroy(&w[k]);
    }
    event_base_free(base);
    close(p[0]);
    close(p[1]);
    close(fd);
    unlink(path);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
}

int main(void)
{
    evthread_use_pthreads();
    test_messages();
    test_datagrams();
    test_watchdog_env();
    test_watchdog_stuck_worker();
    return test_summary();
}
