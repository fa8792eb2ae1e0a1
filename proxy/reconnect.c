/*
 * Sessions without a connection: detaching when the connection dies while
 * the client is idle or when multiplexing takes it back, and borrowing a new
 * one at the next command with the session's state replayed on it.
 */
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf/log.h"
#include "proxy/pool.h"
#include "proxy/route.h"
#include "proxy/session_int.h"

/* Replaying a session's state: how many replies are left, and which statement is next. */
struct restore {
    struct response_tracker rt;
    unsigned replies_left;
    size_t next_stmt;
};

/*
 * With multiplexing, a login needs no connection yet: the client is let in
 * at once and its first command borrows one (so thousands of idle clients
 * cost no server connections). An unknown schema or a refused secret then
 * shows at that first command instead of at login.
 */
void reconnect_lazy_login(struct session *s)
{
    struct server_profile prof;
    route_profile(s->route, &prof);
    s->released = 1;
    relay_enter(s, upstream_caps_for(s->caps, prof.caps), PROTO_STATUS_AUTOCOMMIT);
}

static void reset_client_on_close(struct session *s);

/*
 * A detached session that set its own wait_timeout: the server would close the
 * client's connection once it has been idle that long, whether or not the
 * client sends anything, so credproxy does too, as MariaDB does it: nothing
 * sent, the connection reset.
 */
static void own_wait_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    if (s->state != SESSION_DETACHED || !session_own_wait_timeout_passed(s))
        return;
    log_info("C-%llu %s: idle past the session's own wait_timeout; closing it, as the server "
             "would have",
             (unsigned long long)s->id, s->peer);
    reset_client_on_close(s); /* MariaDB resets a connection it ends at its wait_timeout */
    session_close(s, "idle past its own wait_timeout");
}

/* The session is idle and gives its connection up (lost, or released); its next command reconnects.
 */
void reconnect_detach(struct session *s, const char *why)
{
    session_drop_conn(s, why);
    session_set_state(s, SESSION_DETACHED, why);
    uint64_t limit = session_state_wait_timeout_ms(&s->st);
    if (limit) {
        /* The state change took the timer; no connection is left to time out, so it counts. */
        uint64_t now = session_now_ms(s);
        uint64_t idle = now > s->last_active_ms ? now - s->last_active_ms : 0;
        uint64_t left = idle < limit ? limit - idle : 0;
        session_arm_timer(s, left > INT_MAX ? INT_MAX : (int)left, own_wait_timeout_cb);
    }
}

static void idle_release_cb(evutil_socket_t fd, short what, void *arg);

/* Multiplexing: the client went quiet with no reply pending; release its connection later. */
void reconnect_arm_idle_release(struct session *s)
{
    session_arm_timer(s, s->route->cfg->pool_release_idle_ms, idle_release_cb);
}

/*
 * Gives the connection of a client that stayed idle back to the pool, when
 * everything it holds on the server can be replayed: its next command then
 * runs on whatever connection the pool lends, with its state restored.
 */
static void idle_release_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    if (s->state != SESSION_RELAY || !s->conn)
        return;
    bool quiet = response_idle(&s->rt) && !s->to_client_left && !s->to_server_left &&
                 !s->client_continues && !s->untrackable &&
                 evbuffer_get_length(bufferevent_get_input(s->client)) == 0 &&
                 evbuffer_get_length(bufferevent_get_input(s->server)) == 0;
    bool replayable = !(s->rt.status & PROTO_STATUS_IN_TRANS) && !s->cursor_open && !s->hold_conn &&
                      !s->keeps_thread && !s->next_tx && !s->st.unrestorable &&
                      pool_conn_tracked(s->conn);
    if (!quiet || !replayable)
        return;
    s->released = 1;
    stats_inc(s->stats, ST_RELEASES);
    reconnect_detach(s, "idle: connection released (multiplexing)");
}

/*
 * True when the server reset its connection (RST) rather than closed it (FIN):
 * the socket is then in CLOSE, not CLOSE_WAIT. MariaDB resets a session it
 * ends at its wait_timeout (SO_LINGER 0); KILL and shutdown close it.
 */
static bool server_reset_conn(struct session *s)
{
    evutil_socket_t fd = bufferevent_getfd(s->server);
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 || len < 1)
        return false; /* not TCP (a unix socket): no reset to pass on */
    return ti.tcpi_state == TCP_CLOSE;
}

/* The client's connection will end as the server's did: with a reset (SO_LINGER 0). */
static void reset_client_on_close(struct session *s)
{
    evutil_socket_t fd = bufferevent_getfd(s->client);
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    if (fd >= 0 && !s->is_unix && setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) != 0)
        log_debug("C-%llu %s: SO_LINGER: %s", (unsigned long long)s->id, s->peer,
                  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

/*
 * The upstream connection ended. If the client was idle, it is told nothing
 * yet: its next command runs on a new connection with its state restored.
 * Otherwise a reply was cut short and the client loses its connection too.
 */
void reconnect_server_lost(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->server);
    if (s->state == SESSION_CHANGE_USER_AUTH && !registry_killed(&s->kill)) {
        /* The client is mid COM_CHANGE_USER: its reset starts it afresh without this connection. */
        session_drop_dead_conn(s, "the upstream connection was lost during a COM_CHANGE_USER");
        return;
    }
    if (registry_killed(&s->kill)) {
        /* KILL CONNECTION: the client loses its connection, as from the server. */
        if (evbuffer_get_length(in))
            bufferevent_write_buffer(s->client, in);
        session_drop_dead_conn(s, "killed by KILL CONNECTION");
        session_set_state(s, SESSION_CLOSING, "killed by KILL CONNECTION");
        session_close_after_flush(s, "killed by KILL CONNECTION");
        return;
    }
    bool idle = response_idle(&s->rt) && !s->to_client_left && !s->to_server_left &&
                !s->client_continues && evbuffer_get_length(in) == 0 && !s->untrackable;
    if (!idle) {
        if (evbuffer_get_length(in))
            bufferevent_write_buffer(s->client, in); /* often the server's last words, an ERR */
        session_drop_dead_conn(s, "the upstream connection was lost");
        session_set_state(s, SESSION_CLOSING, "upstream connection lost during a command");
        session_close_after_flush(s, "upstream connection lost during a command");
        return;
    }
    if (session_own_wait_timeout_passed(s)) {
        /*
         * The server ended it as the client asked: the client's connection ends too,
         * and the same way (a reset from MariaDB: ECONNRESET, 2006 for most clients).
         */
        bool reset = server_reset_conn(s);
        log_info("C-%llu %s: upstream connection %s after the session's own wait_timeout; "
                 "closing the session, as the server did",
                 (unsigned long long)s->id, s->peer, reset ? "reset" : "closed");
        if (reset)
            reset_client_on_close(s);
        session_drop_dead_conn(s, "the session's own wait_timeout passed");
        session_close(s, "idle past its own wait_timeout");
        return;
    }
    bool tracked = pool_conn_tracked(s->conn);
    if (s->rt.status & PROTO_STATUS_IN_TRANS)
        s->st.unrestorable = "a transaction was open";
    else if (s->next_tx && !s->st.unrestorable)
        s->st.unrestorable = "the next transaction's characteristics were set (SET TRANSACTION)";
    else if (s->cursor_open)
        s->st.unrestorable = "a server-side cursor was open";
    else if (!tracked)
        s->st.unrestorable = "the server does not report session state";
    if (s->st.unrestorable) {
        stats_inc(s->stats, ST_RECONNECT_REFUSED_PINNED);
        char ev[160];
        snprintf(ev, sizeof(ev), "C-%llu: upstream connection lost; not moved (%s)",
                 (unsigned long long)s->id, s->st.unrestorable);
        stats_event(s->route->cfg->name, ev);
        /*
         * As the server's end of it did: the client's connection closes now, so
         * its driver sees a lost connection (2006/2013) and reconnects, as it
         * would directly. The reason is logged.
         */
        log_info("C-%llu %s: upstream connection lost while idle; closing the session, which "
                 "cannot be moved: %s",
                 (unsigned long long)s->id, s->peer, s->st.unrestorable);
        session_drop_dead_conn(s, "the upstream connection was lost while idle");
        session_close(s, "its upstream connection was lost and its state cannot be rebuilt");
        return;
    }
    log_info("C-%llu %s: upstream connection lost while idle; will reconnect on the next command",
             (unsigned long long)s->id, s->peer);
    s->released = 0;
    session_drop_dead_conn(s, "the upstream connection was lost while idle");
    reconnect_detach(s, "the upstream connection was lost while idle");
}

static void restore_fail(struct session *s, const char *why)
{
    char msg[700];
    snprintf(msg, sizeof(msg),
             "credproxy: could not give this session a database connection (its previous one "
             "was lost or released): %s",
             why);
    s->seq = 1;
    session_fail(s, PROTO_ER_SERVER_LOST, "HY000", msg);
}

static void restore_finish(struct session *s)
{
    free(s->restore);
    s->restore = NULL;
    response_tracker_init(&s->rt, pool_conn_info(s->conn)->caps);
    s->rt.status = pool_conn_info(s->conn)->status;
    session_set_state(s, SESSION_RELAY, "session state restored");
    pool_conn_attach(s->conn, &relay_handler, s);
    /* Replayed state differs from a fresh session's: reset before anyone else gets it. */
    s->dirty = s->st.vars || s->st.stmts || s->st.schema;
    if (!s->released) {
        char ev[160];
        stats_inc(s->stats, ST_RECONNECT_RESTORED);
        snprintf(ev, sizeof(ev), "C-%llu: moved to a new upstream connection (thread %u)",
                 (unsigned long long)s->id, pool_conn_info(s->conn)->thread_id);
        stats_event(s->route->cfg->name, ev);
    }
    LOG_AT(s->released ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,
           "C-%llu %s: session moved to a new upstream connection (thread %u)",
           (unsigned long long)s->id, s->peer, pool_conn_info(s->conn)->thread_id);
    s->released = 0;
    if (s->route->cfg->pool_release_idle_ms > 0)
        reconnect_arm_idle_release(s); /* released again if the command never comes */
    session_client_read(s, true);
    relay_resume(s);
}

/* Swallows the replies to the restore commands, noting re-prepared statement ids. */
static void restore_read(void *arg)
{
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    if (s->state != SESSION_RESTORING)
        return;
    struct restore *r = s->restore;
    struct evbuffer *in = bufferevent_get_input(s->server);
    while (r->replies_left) {
        uint8_t h[4 + RESPONSE_PREFIX_MAX];
        if (evbuffer_copyout(in, h, 4) < 4)
            return;
        size_t len = wire_header_len(h);
        if (evbuffer_get_length(in) < 4 + len)
            return;
        size_t prefix = len < RESPONSE_PREFIX_MAX ? len : RESPONSE_PREFIX_MAX;
        evbuffer_copyout(in, h, 4 + prefix);
        evbuffer_drain(in, 4 + len);
        enum response_event ev = response_feed(&r->rt, h + 4, prefix, len);
        if (ev == RESPONSE_UNTRACKABLE || (ev == RESPONSE_DONE && r->rt.last_was_error)) {
            restore_fail(s, "the server refused to replay the session's settings");
            return;
        }
        if (r->rt.prepare_ok)
            session_state_restored(&s->st, r->next_stmt++, r->rt.prepared_stmt_id);
        if (ev == RESPONSE_DONE)
            r->replies_left--;
    }
    restore_finish(s);
}

static void restore_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    restore_fail(s, "the new connection did not answer the replay within connect_timeout");
}

static void restore_event(void *arg, short what)
{
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        restore_fail(s, "the new connection was lost too");
}

static const struct pool_conn_handler restore_handler = {
    .read = restore_read,
    .event = restore_event,
};

/* A new connection for a detached session: replay variables and prepared statements. */
static void reconnect_ready(void *arg, struct pool_conn *conn, const struct upstream_error *err)
{
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    s->req = NULL;
    if (err) {
        restore_fail(s, err->message);
        return;
    }
    session_take_conn(s, conn);
    struct wire_writer w;
    wire_writer_init(&w);
    unsigned n = 0;
    session_state_write_restore(&s->st, &w, &n);
    if (w.failed || !(s->restore = calloc(1, sizeof(*s->restore)))) {
        wire_writer_free(&w);
        restore_fail(s, "out of memory");
        return;
    }
    if (n == 0) {
        wire_writer_free(&w);
        restore_finish(s);
        return;
    }
    struct restore *r = s->restore;
    response_tracker_init(&r->rt, pool_conn_info(conn)->caps);
    r->replies_left = n;
    session_set_state(s, SESSION_RESTORING, "replaying the session's state");
    session_arm_timer(s, s->route->cfg->connect_timeout_ms, restore_timeout_cb);
    /* Commands first, then one reply each: the tracker needs them queued in order. */
    struct wire_reader rd;
    wire_reader_init(&rd, w.buf, w.len);
    while (wire_remaining(&rd) >= 5) {
        uint32_t plen = wire_get_u24(&rd);
        wire_get_u8(&rd);
        const uint8_t *payload = wire_get_bytes(&rd, plen);
        if (payload)
            (void)response_begin(&r->rt, payload[0]);
    }
    pool_conn_attach(conn, &restore_handler, s);
    if (bufferevent_write(s->server, w.buf, w.len) < 0) {
        wire_writer_free(&w);
        restore_fail(s, "could not send the session's state to the new connection");
        return;
    }
    wire_writer_free(&w);
}

/* The client sent a command to a session whose connection is gone. */
void reconnect_begin(struct session *s)
{
    if (registry_killed(&s->kill)) {
        s->seq = 1;
        session_fail(s, 1927, "70100", "Connection was killed");
        return;
    }
    if (s->st.unrestorable) {
        restore_fail(s, s->st.unrestorable);
        return;
    }
    struct pool_want want = {
        .client_caps = s->caps,
        .charset = s->charset,
        .database = s->st.schema ? s->st.schema : s->database,
        .attrs = s->attrs,
        .attrs_len = s->attrs_len,
    };
    session_set_state(s, SESSION_RECONNECTING, "a command arrived; borrowing a connection");
    session_client_read(s, false);
    s->req = pool_acquire(worker_pool(s->worker, s->route), &want, reconnect_ready, s);
    if (!s->req)
        restore_fail(s, "out of memory");
}
