/*
 * The relay, credproxy's hot path: whole packets move between the client and
 * its lent connection as evbuffer chains. Only headers, command bytes and
 * the first bytes of server packets are read (for the reply tracker); OK
 * packets that report session-state changes are read whole.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "auth/reply.h"
#include "auth/session_track.h"
#include "conf/log.h"
#include "proxy/pool.h"
#include "proxy/query_scan.h"
#include "proxy/route.h"
#include "proxy/session.h"
#include "proxy/session_int.h"
#include "proxy/sock_reader.h"
#include "proxy/stream_send.h"

/* Login done: OK to the client, then relay (or wait detached for the first command). */
void relay_enter(struct session *s, uint64_t caps, uint16_t status)
{
    response_tracker_init(&s->rt, caps);
    s->rt.status = status;
    struct wire_writer w;
    wire_writer_init(&w);
    session_write_login_ok(s, &w, status);
    session_send(s, &w);
    wire_writer_free(&w);
    if (s->conn) {
        session_set_state(s, SESSION_RELAY, "logged in");
        pool_conn_attach(s->conn, &relay_handler, s);
        if (s->route->cfg->pool_release_idle_ms > 0)
            reconnect_arm_idle_release(s);
    } else {
        session_set_state(s, SESSION_DETACHED, "logged in; a connection is borrowed on demand");
    }
    /* From here the client's socket is read directly, for the session's lifetime (not TLS). */
    if (!s->tls && !s->client_rd)
        s->client_rd = sock_reader_new(s->worker->base, s->client);
    session_client_read_high(s, RELAY_HIGH_WATER);
    session_client_read(s, true);
    relay_resume(s);
}

/* Takes up whatever the client sent while the session was busy. */
void relay_resume(struct session *s)
{
    if ((s->state == SESSION_RELAY || s->state == SESSION_DETACHED) && s->client &&
        evbuffer_get_length(bufferevent_get_input(s->client)) > 0)
        relay_client_to_server(s);
}

/*
 * Pauses reading one side while the other has too much unsent; the other's
 * write callback resumes it (relay_client_write, server_write).
 */
static void throttle_client(struct session *s)
{
    if (evbuffer_get_length(bufferevent_get_output(s->server)) < RELAY_HIGH_WATER)
        return;
    session_client_read(s, false);
    bufferevent_setwatermark(s->server, EV_WRITE, RELAY_HIGH_WATER / 2, 0);
    s->client_throttled = 1;
}

static void throttle_server(struct session *s)
{
    if (evbuffer_get_length(bufferevent_get_output(s->client)) < RELAY_HIGH_WATER)
        return;
    pool_conn_read(s->conn, false);
    bufferevent_setwatermark(s->client, EV_WRITE, RELAY_HIGH_WATER / 2, 0);
    s->server_throttled = 1;
}

/* Rewrites the statement id of a COM_STMT_* command when the session was moved. */
static void map_stmt_id(struct session *s, struct evbuffer *in, uint8_t cmd)
{
    uint8_t *p = evbuffer_pullup(in, 9);
    if (!p)
        return;
    uint32_t id =
        (uint32_t)p[5] | (uint32_t)p[6] << 8 | (uint32_t)p[7] << 16 | (uint32_t)p[8] << 24;
    if (cmd == PROTO_COM_STMT_CLOSE)
        s->cursor_open = 0;
    uint32_t server_id = session_state_server_id(&s->st, id);
    if (cmd == PROTO_COM_STMT_CLOSE)
        session_state_stmt_closed(&s->st, id);
    if (server_id == id)
        return;
    p[5] = (uint8_t)server_id;
    p[6] = (uint8_t)(server_id >> 8);
    p[7] = (uint8_t)(server_id >> 16);
    p[8] = (uint8_t)(server_id >> 24);
}

static bool is_stmt_command(uint8_t cmd)
{
    return cmd == PROTO_COM_STMT_EXECUTE || cmd == PROTO_COM_STMT_SEND_LONG_DATA ||
           cmd == PROTO_COM_STMT_CLOSE || cmd == PROTO_COM_STMT_RESET ||
           cmd == PROTO_COM_STMT_FETCH || cmd == PROTO_COM_STMT_BULK_EXECUTE;
}

/*
 * Largest COM_STMT_PREPARE / COM_QUERY credproxy waits for whole to look at
 * its text; it must stay below the read watermark (RELAY_HIGH_WATER).
 */
#define TEXT_LOOK_MAX LOGIN_MAX_PACKET

/* The reply stream can no longer be followed: the session cannot move, and records nothing. */
static void lose_track(struct session *s)
{
    s->untrackable = 1;
    session_state_stop_recording(&s->st, "credproxy lost track of the server's replies");
}

static int own_tracking_intercept(struct session *s, const uint8_t *text, size_t len);

/* Pins the session when the statement text leaves state credproxy cannot carry over. */
static void scan_text(struct session *s, const uint8_t *text, size_t len)
{
    struct query_marks marks = {0};
    const char *why = query_pin_reason((const char *)text, len, &marks);
    if (why && !s->st.unrestorable)
        s->st.unrestorable = why;
    if (marks.reads_connection_id)
        s->keeps_thread = 1;
    if (marks.sets_next_transaction) {
        s->next_tx = 1;
        s->next_tx_open = 0;
    }
}

/*
 * Read-only refusals (upstream_role=writer). During a failover the writer's
 * name still points at the old writer, now read-only, and a connection to
 * it answers writes with 1290 (--read-only). A COM_QUERY sent with nothing
 * else in flight, in autocommit mode and outside a transaction, by a session
 * that can move, is kept (at most RETRY_STMT_MAX bytes): when the first
 * packet of its reply is such a 1290, the statement did not run, so the ERR
 * is dropped and the session moves to a writable connection the way a
 * session whose connection was lost does (DETACHED, then the pool waits for
 * a writer until connect_timeout and the session's state is replayed), with
 * the statement put back in front of the client's input. It is sent again
 * once. Other 1290s reach the client; the session then leaves the connection
 * as soon as no transaction is open (moved, or closed when it cannot move).
 * Normal replies cost one test of retry_len, and only on writer routes.
 */
static void keep_for_retry(struct session *s, struct evbuffer *in, uint8_t cmd, uint32_t len)
{
    s->ro_retried = s->ro_retry_pending;
    s->ro_retry_pending = 0;
    s->retry_len = 0;
    uint16_t st = s->rt.status;
    if (cmd != PROTO_COM_QUERY || len > RETRY_STMT_MAX || !response_idle(&s->rt) ||
        s->to_client_left || s->swallow || s->untrackable || s->cursor_open || s->st.unrestorable ||
        s->next_tx || !(st & PROTO_STATUS_AUTOCOMMIT) || (st & PROTO_STATUS_IN_TRANS))
        return;
    size_t n = 4 + (size_t)len;
    if (n > s->retry_cap) {
        /* Grown to fit (idle clients stay cheap), in 512-byte steps; never shrunk. */
        size_t cap = (n + 511) & ~(size_t)511;
        uint8_t *p = malloc(cap);
        if (!p)
            return;
        if (s->retry_pkt)
            OPENSSL_cleanse(s->retry_pkt, s->retry_cap);
        free(s->retry_pkt);
        s->retry_pkt = p;
        s->retry_cap = cap;
    }
    if (evbuffer_copyout(in, s->retry_pkt, n) == (ssize_t)n)
        s->retry_len = n;
}

static bool says_read_only(const uint8_t *p, size_t len)
{
    struct server_reply rep;
    if (!server_reply_parse(p, len, &rep) || rep.kind != REPLY_ERR ||
        rep.error_code != PROTO_ER_OPTION_PREVENTS_STATEMENT)
        return false;
    return memmem(rep.message, rep.message_len, "read-only", 9) ||
           memmem(rep.message, rep.message_len, "read_only", 9);
}

/*
 * The first packet of the kept statement's reply: 1 when it is a read-only
 * refusal the session retries (the packet is drained), 0 otherwise (the
 * statement is no longer kept), -1 to wait for the rest of the packet.
 */
static int read_only_refusal(struct session *s, struct evbuffer *in, size_t avail, uint8_t first,
                             size_t len)
{
    if (first != 0xff || len > 1024 || s->ro_retried) {
        s->retry_len = 0;
        return 0;
    }
    if (avail < 4 + len)
        return -1;
    const uint8_t *p = evbuffer_pullup(in, 4 + (ssize_t)len);
    bool retry = p && avail == 4 + len && says_read_only(p + 4, len) && !s->to_server_left &&
                 !s->client_continues && !s->st.unrestorable && !s->cursor_open &&
                 pool_conn_tracked(s->conn);
    if (!retry ||
        evbuffer_prepend(bufferevent_get_input(s->client), s->retry_pkt, s->retry_len) < 0) {
        s->retry_len = 0;
        return 0;
    }
    evbuffer_drain(in, 4 + len);
    return 1;
}

/* The kept statement is back in the client's input: move to a writable server and send it. */
static void retry_on_writer(struct session *s)
{
    s->retry_len = 0;
    s->ro_retry_pending = 1;
    route_saw_read_only(s->route);
    log_info("C-%llu %s: the server (thread %u) refused a statement as read-only; sending it again "
             "on a writable server (upstream_role=writer)",
             (unsigned long long)s->id, s->peer, pool_conn_info(s->conn)->thread_id);
    s->released = 0;
    reconnect_detach(s, "its server is read-only: the refused statement goes to a writable one");
    relay_resume(s);
}

/* A 1290 reached the client; no transaction is open now: leave the read-only server. */
static void move_off_read_only(struct session *s)
{
    s->ro_move = 0;
    if (s->st.unrestorable || s->cursor_open || s->untrackable || s->next_tx ||
        !pool_conn_tracked(s->conn)) {
        session_close(s, "its server refused a statement as read-only (upstream_role=writer) and "
                         "the session cannot be moved");
        return;
    }
    s->released = 0;
    reconnect_detach(s, "its server refused a statement as read-only: the next command goes to a "
                        "writable server");
    relay_resume(s);
}

/*
 * Bookkeeping for one client command before it is forwarded. Returns false
 * when more bytes must arrive first. Every command but COM_PING and
 * COM_STATISTICS marks the session for a reset before its connection serves
 * anyone else: no reply tells reliably that nothing changed (GET_LOCK,
 * LAST_INSERT_ID(n) and stored functions leave no trace in them).
 */
static bool note_command(struct session *s, struct evbuffer *in, size_t avail, uint8_t cmd,
                         uint32_t len)
{
    if (response_queue_full(&s->rt)) {
        /* As many commands in flight as the tracker follows: read more once replies come. */
        s->client_waits = 1;
        return false;
    }
    bool text = cmd == PROTO_COM_QUERY || cmd == PROTO_COM_STMT_PREPARE;
    if (text && len <= TEXT_LOOK_MAX && avail < 4 + (size_t)len)
        return false;
    if (is_stmt_command(cmd) && len >= 5 && avail < 9)
        return false;
    s->hold_conn = 0; /* warnings and ROW_COUNT() of the last reply are past */
    if (cmd != PROTO_COM_PING && cmd != PROTO_COM_STATISTICS)
        s->dirty = 1;
    if (text) {
        /* The whole text when it is small; else the part that has arrived. */
        size_t look = len <= TEXT_LOOK_MAX ? len : (avail - 4 < len ? avail - 4 : len);
        const uint8_t *p = evbuffer_pullup(in, 4 + (ssize_t)look);
        if (p && look > 1 && own_tracking_intercept(s, p + 5, look - 1) < 0)
            return false;
        if (p && look > 1)
            scan_text(s, p + 5, look - 1);
        if (cmd == PROTO_COM_QUERY && p && len <= TEXT_LOOK_MAX) {
            char collation[65];
            if (query_set_names(in, 5, len - 1, collation, sizeof(collation))) {
                free(s->set_names_collation);
                s->set_names_collation = strdup(collation);
            }
        }
        if (cmd == PROTO_COM_STMT_PREPARE) {
            if (len > TEXT_LOOK_MAX || !p)
                session_state_stop_recording(&s->st,
                                             "a prepared statement is too large to re-prepare");
            else
                session_state_prepare_sent(&s->st, p + 5, len - 1);
        }
    } else if (is_stmt_command(cmd) && len >= 5) {
        map_stmt_id(s, in, cmd);
        if (cmd == PROTO_COM_STMT_RESET)
            s->cursor_open = 0;
    }
    if (s->writer)
        keep_for_retry(s, in, cmd, len);
    (void)response_begin(&s->rt, cmd);
    if (response_lost(&s->rt) && !s->untrackable)
        lose_track(s);
    return true;
}

/*
 * Sends what the relay staged for the server. Called before anything that
 * may end or pause the session, so staged bytes never outlive the callback
 * (the staging buffer is the worker's, shared by all its sessions).
 */
static void flush_to_server(struct session *s)
{
    struct evbuffer *scratch = s->worker->scratch;
    if (evbuffer_get_length(scratch) == 0)
        return;
    if (s->server)
        stream_send_now(s->server, scratch);
    else
        evbuffer_drain(scratch, evbuffer_get_length(scratch));
}

/* Takes a whole command packet (header and payload) off the client's input; false if short. */
static uint8_t *take_packet(struct evbuffer *in, uint32_t len)
{
    if (evbuffer_get_length(in) < 4 + (size_t)len)
        return NULL;
    uint8_t *p = malloc(len ? len : 1);
    if (!p)
        return NULL;
    evbuffer_drain(in, 4);
    if (evbuffer_remove(in, p, len) != (int)len) {
        free(p);
        return NULL;
    }
    return p;
}

/* Queues credproxy's own COM_QUERY for the server, in the stream where it stands. */
static void stage_query(struct session *s, const char *sql, size_t n)
{
    struct wire_writer w;
    wire_writer_init(&w);
    wire_begin_packet(&w, 0);
    wire_put_u8(&w, PROTO_COM_QUERY);
    wire_put_bytes(&w, sql, n);
    wire_end_packet(&w);
    if (!w.failed)
        evbuffer_add(s->worker->scratch, w.buf, w.len);
    wire_writer_free(&w);
}

/* Answers the client's KILL itself (OK or ERR, sequence 1). */
static void kill_reply(struct session *s, uint16_t code, const char *msg)
{
    struct wire_writer w;
    wire_writer_init(&w);
    if (code)
        err_packet_write(&w, 1, code, "HY000", msg);
    else
        ok_packet_write(&w, 1, 0, 0, s->rt.status, 0);
    session_send(s, &w);
    wire_writer_free(&w);
}

/*
 * KILL [QUERY|CONNECTION] n and COM_PROCESS_KILL name credproxy's connection
 * ids (the greeting's): n becomes that session's upstream thread, an id
 * credproxy never gave is "Unknown thread id" (1094), and forms that cannot
 * be aimed are refused. Returns 1 when the command was consumed (answered
 * here, or sent rewritten), 0 when it is no KILL, -1 to wait for bytes or
 * for earlier replies.
 */
static int kill_intercept(struct session *s, struct evbuffer *in, size_t avail, uint8_t cmd,
                          uint32_t len)
{
    struct kill_stmt k = {.hardness = ""};
    enum kill_kind kind;
    if (cmd == PROTO_COM_PROCESS_KILL) {
        if (avail < 4 + (size_t)len)
            return -1;
        if (len != 5)
            return 0; /* malformed: the server answers it */
        uint8_t b[9];
        evbuffer_copyout(in, b, 9);
        k.id = (uint32_t)b[5] | (uint32_t)b[6] << 8 | (uint32_t)b[7] << 16 | (uint32_t)b[8] << 24;
        kind = KILL_THREAD;
    } else {
        if (len > TEXT_LOOK_MAX)
            return 0;
        if (avail < 4 + (size_t)len)
            return -1;
        const uint8_t *p = evbuffer_pullup(in, 4 + (ssize_t)len);
        if (!p)
            return 0;
        kind = query_kill_parse((const char *)p + 5, len - 1, &k);
        if (kind == KILL_NONE)
            return 0;
    }
    uint32_t thread = 0;
    struct worker *owner = NULL;
    bool found = kind == KILL_THREAD && k.id <= UINT32_MAX &&
                 registry_kill((uint32_t)k.id, s->route, !k.query, &thread, &owner);
    if (found && thread == 0 && !k.query && owner) {
        /*
         * No upstream to kill: its worker closes it. On this worker that happens
         * now, so the killed client's connection ends before the KILL's OK goes
         * out, as the server does it (a client told OK may rely on the other
         * connection being gone). A session killing itself closes after its OK.
         */
        if (owner == s->worker && (uint32_t)k.id != s->kill.id)
            session_kill(owner, (uint32_t)k.id);
        else
            worker_post_kill(owner, (uint32_t)k.id);
    }
    if (!found || thread == 0) {
        /* Answered here: after the replies to what came before, in order. */
        if (!response_idle(&s->rt) || s->to_client_left) {
            s->client_waits = 1;
            return -1;
        }
        evbuffer_drain(in, 4 + (size_t)len);
        s->last_active_ms = session_now_ms(s);
        char msg[160];
        if (kind == KILL_UNSUPPORTED)
            snprintf(msg, sizeof(msg), "credproxy does not support %s", k.why);
        else
            snprintf(msg, sizeof(msg), "Unknown thread id: %llu", (unsigned long long)k.id);
        /* Found with no upstream thread: nothing runs; a KILL CONNECTION is marked already. */
        kill_reply(s, found ? 0 : kind == KILL_UNSUPPORTED ? 1235 : 1094, msg);
        return 1;
    }
    char sql[80];
    int n = snprintf(sql, sizeof(sql), "KILL %s%s%u", k.hardness,
                     k.query ? "QUERY " : "CONNECTION ", thread);
    evbuffer_drain(in, 4 + (size_t)len);
    stage_query(s, sql, (size_t)n);
    log_debug("C-%llu %s: KILL %s%llu -> upstream thread %u", (unsigned long long)s->id, s->peer,
              k.query ? "QUERY " : "", (unsigned long long)k.id, thread);
    s->hold_conn = 0;
    s->dirty = 1;
    (void)response_begin(&s->rt, PROTO_COM_QUERY);
    return 1;
}

/*
 * Moves client packets to the server without copying payloads. Only the
 * header and, at a command boundary (sequence id 0, not a continuation), the
 * command byte are looked at: COM_QUIT, COM_CHANGE_USER and
 * COM_RESET_CONNECTION are handled here, and prepared statements are noted
 * for reconnects. A detached session borrows a connection at its next command.
 */
void relay_client_to_server(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->client);
    if (s->state == SESSION_DETACHED && evbuffer_get_length(in) &&
        session_own_wait_timeout_passed(s)) {
        /*
         * Released (multiplexing) or lost, the session had no connection to time
         * out: the server would have closed this one, so it ends here (2013).
         */
        log_info("C-%llu %s: idle past the session's own wait_timeout; closing it, as the "
                 "server would have",
                 (unsigned long long)s->id, s->peer);
        session_close(s, "idle past its own wait_timeout");
        return;
    }
    s->last_active_ms = session_now_ms(s);
    while (s->state == SESSION_RELAY || s->state == SESSION_DETACHED) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
        if (s->to_server_left) {
            size_t n = avail < s->to_server_left ? avail : s->to_server_left;
            evbuffer_remove_buffer(in, s->worker->scratch, n);
            s->to_server_left -= n;
            continue;
        }
        uint8_t h[5];
        if (avail < 4 || evbuffer_copyout(in, h, avail < 5 ? 4 : 5) < 4)
            break;
        uint32_t len = wire_header_len(h);
        bool command = !s->client_continues && wire_header_seq(h) == 0 && len > 0;
        if (command && avail < 5)
            break;
        /*
         * Commands credproxy answers itself wait, like the server would, until
         * everything sent before them has been answered.
         */
        bool own = command && (h[4] == PROTO_COM_QUIT || h[4] == PROTO_COM_RESET_CONNECTION ||
                               h[4] == PROTO_COM_CHANGE_USER);
        if (own && s->state == SESSION_RELAY && !s->untrackable &&
            (!response_idle(&s->rt) || s->to_client_left)) {
            s->client_waits = 1;
            break;
        }
        if (command && h[4] == PROTO_COM_QUIT) {
            flush_to_server(s);
            session_close(s, "client quit");
            return;
        }
        if (s->state == SESSION_DETACHED) {
            flush_to_server(s);
            if (!command) {
                session_fail(s, PROTO_ER_HANDSHAKE, "08S01", "Malformed packet");
                return;
            }
            reconnect_begin(s);
            return;
        }
        if (command && h[4] == PROTO_COM_RESET_CONNECTION) {
            flush_to_server(s);
            if (avail < 4 + (size_t)len)
                break;
            evbuffer_drain(in, 4 + (size_t)len);
            session_handle_reset_connection(s);
            return;
        }
        if (command && h[4] == PROTO_COM_CHANGE_USER) {
            flush_to_server(s);
            if (len > LOGIN_MAX_PACKET) {
                s->seq = 1;
                session_fail(s, PROTO_ER_NET_PACKET_TOO_LARGE, "08S01",
                             "COM_CHANGE_USER packet too large");
                return;
            }
            uint8_t *p = take_packet(in, len);
            if (!p)
                break;
            session_handle_change_user(s, p, len);
            OPENSSL_cleanse(p, len);
            free(p);
            return;
        }
        if (command && (h[4] == PROTO_COM_QUERY || h[4] == PROTO_COM_PROCESS_KILL)) {
            int k = kill_intercept(s, in, avail, h[4], len);
            if (k < 0)
                break;
            if (k > 0)
                continue;
        }
        if (command && !note_command(s, in, avail, h[4], len))
            break;
        s->client_continues = len == PROTO_MAX_PAYLOAD;
        s->to_server_left = 4 + (size_t)len;
        stats_add(s->stats, ST_BYTES_IN, 4 + (size_t)len);
        if (command)
            stats_inc(s->stats, ST_COMMANDS);
    }
    flush_to_server(s);
    if (s->to_server_left && s->client_rd)
        sock_reader_expect(s->client_rd, s->to_server_left);
    if (s->state == SESSION_RELAY && s->server)
        throttle_client(s);
}

/* The client's output drained: resume reading the server if it was paused for it. */
void relay_client_write(struct session *s)
{
    if (s->worker->draining && response_idle(&s->rt) && !s->to_client_left)
        session_drain_poke(s); /* the reply has left whole */
    if (s->server_throttled && s->server) {
        s->server_throttled = 0;
        bufferevent_setwatermark(s->client, EV_WRITE, 0, 0);
        pool_conn_read(s->conn, true);
        if (evbuffer_get_length(bufferevent_get_input(s->server)))
            relay_handler.read(s);
    }
}

/* Records what an OK packet says changed, and hides it from clients that did not ask. */
static bool state_changed_ok(struct session *s, struct evbuffer *in, struct evbuffer *out,
                             size_t len)
{
    uint8_t *pkt = malloc(4 + len);
    if (!pkt)
        return false;
    if (evbuffer_remove(in, pkt, 4 + len) != (int)(4 + len)) {
        /* Never happens: the caller waited for the whole packet. Stop here, loudly. */
        SESSION_CHECK(!"OK packet shorter than its header says");
        free(pkt);
        return false;
    }
    struct ok_packet ok;
    if (!ok_packet_parse(pkt + 4, len, &ok)) {
        s->st.unrestorable = "the server sent an OK packet credproxy could not read";
        evbuffer_add(out, pkt, 4 + len);
        free(pkt);
        return true;
    }
    session_state_on_changes(&s->st, ok.state, ok.state_len, s->set_names_collation);
    free(s->set_names_collation);
    s->set_names_collation = NULL;
    s->dirty = 1; /* a multi-statement "SELECT ...; SET ..." ends here too */
    /* Show the client what its own tracking settings would have: credproxy's are wider. */
    const struct track_view *view = route_track_view(s->route);
    bool tracks = s->caps & PROTO_CAP_SESSION_TRACK;
    if (tracks && (s->own_tracking || !view)) {
        evbuffer_add(out, pkt, 4 + len);
    } else {
        struct wire_writer w;
        wire_writer_init(&w);
        wire_begin_packet(&w, pkt[3]);
        if (tracks)
            ok_packet_write_filtered(&w, &ok, view);
        else
            ok_packet_write_untracked(&w, &ok);
        wire_end_packet(&w);
        if (!w.failed)
            evbuffer_add(out, w.buf, w.len);
        wire_writer_free(&w);
    }
    free(pkt);
    return true;
}

/*
 * An EOF's SERVER_SESSION_STATE_CHANGED flag comes from credproxy's wider
 * tracking; the client's own (or none, without CLIENT_SESSION_TRACK) would
 * only raise it for changes it tracks, which an EOF cannot list: keep it
 * only when the client tracks every change.
 */
static void filter_eof_flag(struct session *s, struct evbuffer *in, size_t len)
{
    if (s->own_tracking || len < 5 || len >= 9)
        return;
    const struct track_view *view = route_track_view(s->route);
    bool tracks = s->caps & PROTO_CAP_SESSION_TRACK;
    if (tracks && (!view || view->state_change || view->all_sysvars))
        return;
    uint8_t *p = evbuffer_pullup(in, 4 + (ssize_t)len);
    if (p && p[4] == 0xfe && (p[4 + 4] & (PROTO_STATUS_STATE_CHANGED >> 8)))
        p[4 + 4] &= (uint8_t) ~(PROTO_STATUS_STATE_CHANGED >> 8);
}

/*
 * A statement that names session_track_* reads or sets the client's own
 * tracking settings. Before it runs, credproxy puts back what the server
 * would have had (its reply swallowed), and from then on the client's
 * tracking is the session's: nothing is filtered, and the session cannot be
 * moved (credproxy no longer sees every change). Returns -1 to wait for
 * earlier replies, else 0.
 */
static int own_tracking_intercept(struct session *s, const uint8_t *text, size_t len)
{
    if (s->own_tracking || !query_names_session_tracking((const char *)text, len))
        return 0;
    if (!response_idle(&s->rt) || s->to_client_left) {
        s->client_waits = 1;
        return -1;
    }
    s->own_tracking = 1;
    if (!s->st.unrestorable)
        s->st.unrestorable = "the client manages its own session tracking";
    const struct track_view *v = route_track_view(s->route);
    if (!v || !s->conn || !pool_conn_tracked(s->conn))
        return 0;
    char sql[1300];
    int n = snprintf(sql, sizeof(sql),
                     "SET SESSION session_track_schema=%d, session_track_state_change=%d, "
                     "session_track_system_variables='%s', session_track_transaction_info='%s'",
                     v->schema, v->state_change, v->sysvars, v->transaction);
    if (n < 0 || (size_t)n >= sizeof(sql))
        return 0;
    stage_query(s, sql, (size_t)n);
    (void)response_begin(&s->rt, PROTO_COM_QUERY);
    s->swallow++;
    return 0;
}

/* After a reconnect the client's ids for new statements may differ from the server's. */
static void map_prepare_ok(struct session *s, struct evbuffer *in)
{
    uint32_t server_id = s->rt.prepared_stmt_id;
    uint32_t client_id = session_state_prepare_done(&s->st, true, server_id);
    if (client_id == server_id)
        return;
    uint8_t *p = evbuffer_pullup(in, 9);
    if (p) {
        p[5] = (uint8_t)client_id;
        p[6] = (uint8_t)(client_id >> 8);
        p[7] = (uint8_t)(client_id >> 16);
        p[8] = (uint8_t)(client_id >> 24);
    }
}

/* What a finished reply tells about the session beyond its status. */
static void reply_done(struct session *s)
{
    /* SHOW WARNINGS and ROW_COUNT() still refer to this reply: keep the connection a while. */
    s->hold_conn = s->rt.warnings > 0 || s->rt.affected_rows > 0;
    if (s->rt.last_insert_id)
        s->st.last_insert_id = s->rt.last_insert_id;
    if (s->rt.last_was_error && s->writer) {
        pool_conn_suspect(s->conn); /* is its server still writable? asked at its reset */
        if (s->rt.last_error_code == PROTO_ER_OPTION_PREVENTS_STATEMENT)
            s->ro_move = 1;
    }
    if (s->rt.cmd == PROTO_COM_STMT_PREPARE && s->rt.last_was_error)
        (void)session_state_prepare_done(&s->st, false, 0);
    if (s->rt.cmd == PROTO_COM_STMT_EXECUTE && (s->rt.status & PROTO_STATUS_CURSOR_EXISTS))
        s->cursor_open = 1;
    if (s->rt.cmd == PROTO_COM_STMT_FETCH && (s->rt.status & PROTO_STATUS_LAST_ROW_SENT))
        s->cursor_open = 0;
    /*
     * SET TRANSACTION applies to the next transaction: held until one has been seen open
     * and closed. An autocommit statement also uses it up, but no flag says so: the hold
     * then lasts until a later transaction ends (longer than needed, never too short).
     */
    if (s->next_tx && (s->rt.status & PROTO_STATUS_IN_TRANS))
        s->next_tx_open = 1;
    else if (s->next_tx && s->next_tx_open)
        s->next_tx = s->next_tx_open = 0;
}

/*
 * Waits for a whole OK packet of len bytes, letting the read watermark grow
 * past RELAY_HIGH_WATER for it (an OK listing many changed variables can be
 * large; it is still one packet, below 16 MiB).
 */
static void wait_whole_ok(struct session *s, size_t len)
{
    if (4 + len > RELAY_HIGH_WATER) {
        pool_conn_read_high(s->conn, 4 + len);
        s->big_ok_wait = 1;
    }
}

/*
 * Moves server packets to the client. Payloads move as buffer chains; only
 * each packet's header and first bytes are read, for the response tracker.
 * Packets that may be OKs are waited for whole, because an OK that reports
 * session-state changes is read (and, for clients without session tracking,
 * rewritten).
 */
static void server_read(void *arg)
{
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    if (s->state != SESSION_RELAY)
        return;
    struct evbuffer *in = bufferevent_get_input(s->server);
    struct evbuffer *out = s->worker->scratch; /* sent at once below, in order */
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
        if (s->to_client_left) {
            size_t n = avail < s->to_client_left ? avail : s->to_client_left;
            evbuffer_remove_buffer(in, out, n);
            s->to_client_left -= n;
            continue;
        }
        uint8_t h[4 + RESPONSE_PREFIX_MAX];
        if (avail < 4)
            break;
        evbuffer_copyout(in, h, 4);
        size_t len = wire_header_len(h);
        size_t prefix = len < RESPONSE_PREFIX_MAX ? len : RESPONSE_PREFIX_MAX;
        if (avail < 4 + prefix)
            break;
        bool tracked = !s->server_continues && !s->untrackable;
        if (tracked && s->swallow) {
            /* The reply to credproxy's own command in the stream: never the client's. */
            if (avail < 4 + len)
                break;
            evbuffer_copyout(in, h, 4 + prefix);
            enum response_event ev = response_feed(&s->rt, h + 4, prefix, len);
            evbuffer_drain(in, 4 + len);
            if (ev == RESPONSE_UNTRACKABLE)
                lose_track(s);
            if (ev == RESPONSE_DONE || ev == RESPONSE_UNTRACKABLE)
                s->swallow--;
            continue;
        }
        if (tracked && s->retry_len) {
            evbuffer_copyout(in, h, 4 + prefix);
            int r = read_only_refusal(s, in, avail, len ? h[4] : 0, len);
            if (r < 0)
                break;
            if (r > 0) {
                if (evbuffer_get_length(out))
                    stream_send_now(s->client, out);
                retry_on_writer(s);
                return;
            }
        }
        if (tracked) {
            evbuffer_copyout(in, h, 4 + prefix);
            bool maybe_ok =
                len > 0 && len < PROTO_MAX_PAYLOAD && response_next_may_be_ok(&s->rt, h[4]);
            if (maybe_ok && avail < 4 + len) {
                wait_whole_ok(s, len);
                break;
            }
            enum response_event ev = response_feed(&s->rt, h + 4, prefix, len);
            if (ev == RESPONSE_UNTRACKABLE)
                lose_track(s);
            else if (h[4] == 0xfe && !s->rt.ok_packet && len < 9)
                filter_eof_flag(s, in, len);
            if (s->rt.prepare_ok)
                map_prepare_ok(s, in);
            if (ev == RESPONSE_DONE) {
                reply_done(s);
                s->last_active_ms = session_now_ms(s);
            }
            if (s->rt.ok_packet && (s->rt.status & PROTO_STATUS_STATE_CHANGED) &&
                avail >= 4 + len && state_changed_ok(s, in, out, len)) {
                s->server_continues = 0;
                continue;
            }
        }
        s->server_continues = len == PROTO_MAX_PAYLOAD;
        s->to_client_left = 4 + len;
        stats_add(s->stats, ST_BYTES_OUT, 4 + len);
    }
    if (s->to_client_left)
        pool_conn_expect(s->conn, s->to_client_left); /* the rest of a large row: one read */
    if (s->big_ok_wait && evbuffer_get_length(in) < RELAY_HIGH_WATER) {
        s->big_ok_wait = 0;
        pool_conn_read_high(s->conn, RELAY_HIGH_WATER);
    }
    if (evbuffer_get_length(out))
        stream_send_now(s->client, out);
    throttle_server(s);
    if (s->ro_move && response_idle(&s->rt) && !s->to_client_left &&
        !(s->rt.status & PROTO_STATUS_IN_TRANS) && evbuffer_get_length(in) == 0) {
        move_off_read_only(s);
        return;
    }
    if (s->worker->draining && response_idle(&s->rt) && !s->to_client_left)
        session_drain_poke(s); /* the sweep closes it at this idle moment, not here */
    if (s->client_waits && !s->client_throttled) {
        /* Replies came in: the commands the client had to hold back may go now. */
        s->client_waits = 0;
        relay_resume(s);
        return;
    }
    if (s->route->cfg->pool_release_idle_ms > 0 && !s->to_client_left && response_idle(&s->rt))
        reconnect_arm_idle_release(s);
}

/* The server's output drained: resume reading the client if it was paused for it. */
static void server_write(void *arg)
{
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    if (s->client_throttled && s->state == SESSION_RELAY) {
        s->client_throttled = 0;
        bufferevent_setwatermark(s->server, EV_WRITE, 0, 0);
        session_client_read(s, true);
        relay_resume(s);
    }
}

static void server_event(void *arg, short what)
{
    struct session *s = arg;
    SCRATCH_EMPTY(s);
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        reconnect_server_lost(s);
}

const struct pool_conn_handler relay_handler = {
    .read = server_read,
    .write = server_write,
    .event = server_event,
};
