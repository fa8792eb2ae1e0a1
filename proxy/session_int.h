/*
 * The client session's private parts, shared by the files that make it up:
 * session.c (lifecycle, states, the cleanup decision, change-user and reset),
 * login.c (greeting, frontend auth, TLS), relay.c (the hot path) and
 * reconnect.c (detaching, multiplexing, restoring on a new connection).
 * Nothing outside proxy/session*.c, login.c, relay.c and reconnect.c includes it.
 */
#ifndef CREDPROXY_PROXY_SESSION_INT_H
#define CREDPROXY_PROXY_SESSION_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

#include "auth/proto.h"
#include "auth/response.h"
#include "auth/wire.h"
#include "proxy/session_registry.h"
#include "proxy/session_state.h"
#include "proxy/stats.h"
#include "proxy/worker.h"

struct bufferevent;
struct evbuffer;
struct event;
struct pool_conn;
struct pool_request;
struct route;
struct sock_reader;

/* Login packets (with connect attributes) stay far below this; bigger is garbage. */
#define LOGIN_MAX_PACKET (64 * 1024)
/* Past this much unsent data toward one side, stop reading from the other (backpressure). */
#define RELAY_HIGH_WATER (256 * 1024)
/* Largest COM_QUERY kept to retry once on a writer after a read-only refusal (1290). */
#define RETRY_STMT_MAX (16 * 1024)
/* How long a session may spend flushing its last packet to a client that does not read. */
#define CLOSING_LINGER_MS 2000

/*
 * Every state a session is in. session_set_state() is the only place that
 * changes it; it checks the transition against the table in session.c. The
 * session's timer belongs to its state: every transition stops it, and the
 * new state arms it if it needs one.
 */
enum session_phase {
    SESSION_GREET_WAIT,       /* accepted; waiting for the upstream's profile before greeting */
    SESSION_HANDSHAKE,        /* greeting sent; waiting for the login request or SSLRequest */
    SESSION_AUTH_SWITCH,      /* asked the client to answer with mysql_native_password */
    SESSION_CONNECTING,       /* logged in; waiting for the pool to lend a first connection */
    SESSION_RELAY,            /* moving packets both ways on a lent connection */
    SESSION_DETACHED,         /* logged in with no connection: the next command borrows one */
    SESSION_RECONNECTING,     /* borrowing a connection for a detached session */
    SESSION_RESTORING,        /* replaying the session's state on that connection */
    SESSION_CHANGE_USER_AUTH, /* COM_CHANGE_USER: asked the client for mysql_native_password */
    SESSION_RESETTING,        /* credproxy's own reset (change-user, reset-connection) upstream */
    SESSION_CLOSING,          /* flushing a last packet to the client, then closed */
    SESSION_CLOSED,           /* queued; freed at the worker's next safe point */
    SESSION_N_STATES
};

struct restore;

struct session {
    struct deferred_free reap;   /* first: the worker frees the session through it */
    struct session *prev, *next; /* the worker's list of live sessions */
    struct worker *worker;
    struct route *route;
    struct route_stats *stats; /* the worker's counters for the route (stats.h) */
    struct bufferevent *client;
    struct sock_reader *client_rd; /* reads the client's socket from the greeting (not TLS) */
    struct sock_reader *old_rd;    /* the one a TLS upgrade retired; freed with the session */
    struct bufferevent *server;    /* the lent connection's stream, or NULL */
    struct pool_conn *conn;        /* lent by the pool while RELAY, RESTORING or RESETTING */
    struct pool_request *req;      /* while CONNECTING or RECONNECTING */
    struct event *timer;           /* the current state's timer (see enum session_phase) */
    enum session_phase state;
    uint64_t id;
    struct kill_target kill; /* the registry's entry: id, route, upstream thread */
    uint64_t last_active_ms; /* last command or completed reply, for client_idle_timeout */
    uint64_t started_ms;     /* accepted, for the drain: young sessions are mid-set-up */
    char peer[80];           /* "ADDR:PORT" or "unix:uid=N" for logs */
    char user[129];          /* the name the client gave, for password mode */
    char user_log[160];      /* the same, escaped for logs (a client's bytes are not log lines) */
    uint8_t scramble[PROTO_SCRAMBLE_LEN];
    uint64_t offered_caps; /* what the greeting offered */
    uint64_t caps;         /* what the client asked for */
    uint8_t charset;
    uint16_t change_charset; /* charset of a COM_CHANGE_USER awaiting its auth answer */
    char *change_db;         /* its schema */
    uint8_t seq;             /* next sequence id toward the client during login */
    char *database;          /* schema asked for at login, or NULL */
    uint8_t *attrs;          /* connect attributes, forwarded upstream */
    size_t attrs_len;
    /* relay state */
    struct response_tracker rt;    /* where the server is in its reply to the current command */
    size_t to_server_left;         /* bytes of the current client packet still to forward */
    size_t to_client_left;         /* bytes of the current server packet still to forward */
    unsigned client_continues : 1; /* last client packet was 16 MiB - 1: next continues it */
    unsigned server_continues : 1; /* same for the server's last packet */
    unsigned untrackable : 1;      /* lost track of the reply: the connection cannot be reused */
    unsigned dirty : 1;            /* the session may have changed state: reset before reuse */
    unsigned cursor_open : 1;      /* a server-side cursor is open (lost with the connection) */
    unsigned client_throttled : 1; /* client reads paused until the server side drains */
    unsigned server_throttled : 1; /* server reads paused until the client side drains */
    unsigned tls : 1;
    unsigned is_unix : 1;
    unsigned peer_denied : 1;  /* peer mode refused this uid: deny after its login request */
    unsigned released : 1;     /* DETACHED by choice (multiplexing), not by a lost connection */
    unsigned big_ok_wait : 1;  /* waiting for a whole OK packet larger than the read watermark */
    unsigned hold_conn : 1;    /* the last reply has warnings or affected rows: do not release */
    unsigned keeps_thread : 1; /* it read CONNECTION_ID(): never released (multiplexing) */
    unsigned next_tx : 1;      /* SET TRANSACTION is pending: kept, cannot move (query_marks) */
    unsigned next_tx_open : 1; /* ...and the transaction it applies to has been seen open */
    unsigned own_tracking : 1; /* the client set or read session_track_*: shown unfiltered */
    unsigned swallow : 2;      /* replies to credproxy's own commands still due in the stream */
    unsigned client_waits : 1; /* the client's next command waits for replies to come */
    unsigned greet_waits : 8;  /* checks for the upstream's profile before greeting */
    unsigned drain_poked : 1;  /* draining: a reply just left whole (session_drain.c) */
    /* upstream_role=writer (see relay.c, "read-only refusals") */
    unsigned writer : 1;           /* the lent connection's route wants a writable server */
    unsigned ro_retry_pending : 1; /* the next command is a refused statement sent again */
    unsigned ro_retried : 1;       /* the statement in flight was sent again already */
    unsigned ro_move : 1;          /* refused as read-only: move off this connection when idle */
    unsigned refusal_counted : 1;  /* its login's refusal is counted already (handshake timeout) */
    uint8_t *retry_pkt; /* the COM_QUERY in flight (header and payload), while retry_len */
    size_t retry_len, retry_cap;
    struct session_state st;   /* what a new connection must be given to continue the session */
    struct restore *restore;   /* while RESTORING */
    char *set_names_collation; /* COLLATE of a SET NAMES awaiting its OK ("" for none) */
};

/*
 * Internal consistency checks that stay on in every build: a failed one is
 * logged, and aborts in sanitizer and debug builds (CREDPROXY_STRICT).
 */
void session_check_failed(const char *what, const char *file, int line);
#define SESSION_CHECK(cond)                                                                        \
    do {                                                                                           \
        if (!(cond))                                                                               \
            session_check_failed(#cond, __FILE__, __LINE__);                                       \
    } while (0)
/* Every callback starts with the worker's staging buffer empty: no bytes outlive a callback. */
#define SCRATCH_EMPTY(s) SESSION_CHECK(evbuffer_get_length((s)->worker->scratch) == 0)

/* session.c: lifecycle */
void session_set_state(struct session *s, enum session_phase to, const char *why);
void session_arm_timer(struct session *s, int ms, void (*cb)(evutil_socket_t, short, void *));
void session_close(struct session *s, const char *why);
void session_fail(struct session *s, uint16_t code, const char *sqlstate, const char *msg);
void session_close_after_flush(struct session *s, const char *why);
void session_client_callbacks(struct session *s);
/* Reading the client on or off, and its read high mark (through its sock_reader when it has one).
 */
void session_client_read(struct session *s, bool on);
void session_client_read_high(struct session *s, size_t high);
void session_drop_conn(struct session *s, const char *why);
void session_drop_dead_conn(struct session *s, const char *why);
void session_take_conn(struct session *s, struct pool_conn *conn);
void session_send(struct session *s, const struct wire_writer *w);
int session_take_login_packet(struct session *s, uint8_t **out, uint32_t *out_len, const char *why);
void session_write_login_ok(const struct session *s, struct wire_writer *w, uint16_t status);
void session_handle_change_user(struct session *s, const uint8_t *p, size_t len);
void session_handle_reset_connection(struct session *s);

/* The loop's cached clock in milliseconds: cheap enough for the hot path. */
uint64_t session_now_ms(const struct session *s);

/*
 * True when the client set its session's wait_timeout and has sent nothing for
 * that long: the server would have closed its connection by now, so the
 * session must end rather than move to a new connection.
 */
bool session_own_wait_timeout_passed(const struct session *s);

/* login.c */
void login_greet_when_ready(struct session *s);
void login_read(struct session *s);
bool login_verify_local_password(struct session *s, const uint8_t *reply, size_t len);
bool login_plugin_is_native(const char *plugin, size_t len);
void login_send_auth_switch(struct session *s);
void login_deny_local(struct session *s);

/* relay.c */
void relay_enter(struct session *s, uint64_t caps, uint16_t status);
void relay_resume(struct session *s);
void relay_client_to_server(struct session *s);
void relay_client_write(struct session *s);
extern const struct pool_conn_handler relay_handler;

/* session_drain.c: a reply left whole; while draining, the session may close at this moment */
void session_drain_poke(struct session *s);

/* reconnect.c */
void reconnect_lazy_login(struct session *s);
void reconnect_begin(struct session *s);
void reconnect_detach(struct session *s, const char *why);
void reconnect_arm_idle_release(struct session *s);
void reconnect_server_lost(struct session *s);

#endif
