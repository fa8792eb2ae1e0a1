/*
 * Drain on SIGTERM, the sessions' side (drain.h): which session is at an idle moment
 * outside a transaction, and closing them, on the worker's own thread and from its own
 * events (worker.c), never inside a session's callback chain.
 */
#include <errno.h>
#include <stdbool.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "conf/log.h"
#include "proxy/drain.h"
#include "proxy/session_int.h"

/* A session that never ran a command, idle this long in a drain, is closed without one. */
#define FRESH_GRACE_MS 1000

#define ER_SERVER_SHUTDOWN 1053

/*
 * Nothing is on its way in either direction on the client's side: no unread bytes in the
 * stream or still in the socket (a command the client has sent and credproxy not yet read),
 * nothing waiting to be written. Closing then cuts no command and no reply.
 */
static bool client_quiet(const struct session *s)
{
    if (!s->client || evbuffer_get_length(bufferevent_get_input(s->client)) ||
        evbuffer_get_length(bufferevent_get_output(s->client)))
        return false;
    struct bufferevent *under = bufferevent_get_underlying(s->client);
    if (under && (evbuffer_get_length(bufferevent_get_input(under)) ||
                  evbuffer_get_length(bufferevent_get_output(under))))
        return false;
    char b;
    ssize_t n = recv(bufferevent_getfd(s->client), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Between commands: every command answered in full, nothing half-relayed. */
static bool between_commands(const struct session *s)
{
    if (s->state == SESSION_DETACHED)
        return true;
    return s->state == SESSION_RELAY && response_idle(&s->rt) && !s->to_client_left &&
           !s->to_server_left && !s->client_continues && !s->swallow && !s->client_waits;
}

static bool in_transaction(const struct session *s)
{
    return s->state == SESSION_RELAY && ((s->rt.status & PROTO_STATUS_IN_TRANS) || s->cursor_open);
}

void session_drain_count(struct worker *w, size_t *open, size_t *in_trans)
{
    *open = *in_trans = 0;
    for (struct session *s = w->sessions; s; s = s->next) {
        ++*open;
        if (in_transaction(s))
            ++*in_trans;
    }
}

/*
 * A session that logged in but never ran a command (just accepted, or a pool's spare) is
 * given FRESH_GRACE_MS to send one: it was opened to run something, and closing it right
 * after its login would fail that command.
 */
static bool fresh_waits(struct session *s)
{
    if (!s->fresh)
        return false;
    uint64_t now = session_now_ms(s);
    if (!s->drain_idle_ms)
        s->drain_idle_ms = now;
    return now - s->drain_idle_ms < FRESH_GRACE_MS;
}

void session_drain_sweep(struct worker *w)
{
    struct session *s = w->sessions;
    while (s) {
        struct session *next = s->next;
        if (between_commands(s) && !in_transaction(s) && client_quiet(s) && !fresh_waits(s)) {
            drain_count_idle_close();
            session_close(s, "credproxy is draining: closed at an idle moment");
        }
        s = next;
    }
}

void session_drain_cut(struct worker *w)
{
    struct session *s = w->sessions;
    while (s) {
        struct session *next = s->next;
        if (s->state == SESSION_CLOSING) {
            s = next;
            continue; /* its last packet is on its way already */
        }
        drain_count_cut();
        /*
         * Between commands (idle in a transaction) or waiting for credproxy to find it a
         * connection, the client reads the error as the answer to its next or current
         * command (sequence 1). During login the login's own sequence applies. In the middle
         * of a reply no packet can be slipped in: the connection is just closed.
         */
        if (between_commands(s) || s->state == SESSION_RECONNECTING ||
            s->state == SESSION_RESTORING)
            s->seq = 1;
        else if (s->state > SESSION_CONNECTING) {
            session_close(s, "credproxy is shutting down: shutdown_timeout passed mid-command");
            s = next;
            continue;
        }
        session_fail(s, ER_SERVER_SHUTDOWN, "08S01",
                     "credproxy is shutting down (shutdown_timeout passed)");
        s = next;
    }
}
