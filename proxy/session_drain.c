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

/*
 * When to close. Right after a reply has left whole is the best moment: the end of the
 * connection reaches the client with the reply, before it can send anything else, so a
 * client (or pool) that checks a connection before reusing it never loses a command. A
 * session quiet for DRAIN_QUIET_MS is closed too (a pool's spare). A session accepted less
 * than DRAIN_YOUNG_MS ago is still in its set-up (drivers send several statements back to
 * back after login: SET autocommit, SET NAMES...): it is only closed once quiet.
 */
#define DRAIN_QUIET_MS 250
#define DRAIN_YOUNG_MS 1000

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

void session_drain_poke(struct session *s)
{
    s->drain_poked = 1;
    worker_drain_poke(s->worker);
}

/* Whether now is the moment to close s, idle outside a transaction (see DRAIN_QUIET_MS). */
static bool moment_to_close(const struct session *s)
{
    uint64_t now = session_now_ms(s);
    if (now - s->last_active_ms >= DRAIN_QUIET_MS)
        return true;
    return s->drain_poked && now - s->started_ms >= DRAIN_YOUNG_MS;
}

void session_drain_sweep(struct worker *w)
{
    struct session *s = w->sessions;
    while (s) {
        struct session *next = s->next;
        if (between_commands(s) && !in_transaction(s) && client_quiet(s) && moment_to_close(s)) {
            drain_count_idle_close();
            session_close(s, "credproxy is draining: closed at an idle moment");
        } else {
            s->drain_poked = 0; /* the moment has passed */
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
