/*
 * libFuzzer target for a whole client session, in-process, on the real proxy
 * code: one worker, its event loop, four routes (trust, trust with
 * multiplexing, password, peer), and a fake MySQL server on a 127.0.0.1
 * socket driven by the same loop. Both sides are fuzzed: the input holds
 * what the client does and what the server answers.
 *
 * Input layout:
 *   byte 0      flags: bits 0-1 route (plain, mux, password, peer); bit 2 unix peer
 *   bytes 1-2   length of the client script (little endian)
 *   client script: records, each an op byte (op % 8) and its operands:
 *     0 W L [LL LL if L == 255] bytes  write L bytes to the client socket
 *     1 T n       advance the (virtual) clock by one of time_steps_ms[n % 8]
 *     2 S         half-close: shutdown(SHUT_WR) of the client
 *     3 P         stop / resume reading what the proxy sends the client
 *     4 K         the server drops every connection
 *     5 Q         write COM_QUERY "SELECT 1"
 *     6 L n       write a login request (variant n) in sequence 1
 *     7 D         drain the client socket once more
 *   the rest: the server script. Its first byte picks the server's greeting
 *   and login behaviour (SRV_* below); bit 0 of the second says whether
 *   credproxy's own commands (session tracking on, COM_RESET_CONNECTION,
 *   COM_INIT_DB) take reply ops too, or get a plain OK; then each command the
 *   server receives takes one reply op from it (reply_from_script); once it is
 *   used up, every command gets a plausible default reply.
 *
 * Time is virtual: clock_gettime(CLOCK_MONOTONIC*) is interposed, so timers
 * (handshake timeout, linger, retries, idle release, janitor) fire exactly
 * when the input advances the clock, and a crash reproduces.
 *
 * After the script the client closes; the session must then end (with
 * FUZZ_SESSION_STRICT set, a session still there two virtual minutes later
 * is a failure; otherwise it is shut down). Every upstream slot must be given
 * back. The pools are rebuilt for each input, so nothing carries over.
 *
 * FUZZ_SESSION_LOG=debug|info shows credproxy's log; FUZZ_SESSION_TRACE=1
 * what the fake server receives and sends.
 *
 * Build and run (tests/fuzz/CMakeLists.txt; ctest -L fuzz runs fuzz_session for
 * CREDPROXY_FUZZ_SECONDS, and fuzz_session_corpus replays the seeds alone):
 *
 *   CC=clang cmake -S . -B build-fuzz -DCREDPROXY_FUZZ=ON && cmake --build build-fuzz -j2
 *   build-fuzz/tests/fuzz/fuzz_session -dict=tests/fuzz/fuzz_session.dict -max_total_time=600 \
 *       /tmp/corpus tests/fuzz/corpus/fuzz_session
 *
 * Seeds: tests/fuzz/gen_session_corpus.py. Findings: tests/fuzz/crashes/README.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "auth/proto.h"
#include "auth/users.h"
#include "conf/config.h"
#include "conf/log.h"
#include "proxy/pool.h"
#include "proxy/route.h"
#include "proxy/session.h"
#include "proxy/worker.h"
#include "secrets/creds.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* --- virtual monotonic clock ------------------------------------------------------------------ */

static uint64_t virtual_ns = 1000000ull * 1000000ull; /* an arbitrary start: 1e6 seconds */

/*
 * Replaces libc's for the whole process (libevent's shared library too). Only
 * the monotonic clocks are virtual; CLOCK_REALTIME (libFuzzer's timing) is real.
 */
int clock_gettime(clockid_t id, struct timespec *ts);
int clock_gettime(clockid_t id, struct timespec *ts)
{
    if (id == CLOCK_MONOTONIC || id == CLOCK_MONOTONIC_COARSE || id == CLOCK_MONOTONIC_RAW ||
        id == CLOCK_BOOTTIME) {
        ts->tv_sec = (time_t)(virtual_ns / 1000000000ull);
        ts->tv_nsec = (long)(virtual_ns % 1000000000ull);
        return 0;
    }
    return (int)syscall(SYS_clock_gettime, id, ts);
}

static const unsigned time_steps_ms[8] = {1, 20, 101, 250, 1001, 2100, 10001, 300001};

/* --- the daemon's pieces ---------------------------------------------------------------------- */

enum { ROUTE_PLAIN, ROUTE_MUX, ROUTE_PASSWORD, ROUTE_PEER, N_ROUTES };

static struct worker W;
static struct config CFG;
static struct route ROUTES[N_ROUTES];
static struct server_profile initial_profile[N_ROUTES];
static char tmpdir[64];
static char path_secret[128], path_config[128], path_users[128];
static int listen_fd = -1;
static struct event *listen_ev;
static uint64_t progress; /* bumped by everything the harness sees happen */
static bool trace;        /* FUZZ_SESSION_TRACE set: the fake server says what it does */
static bool strict;       /* FUZZ_SESSION_STRICT set: a session that outlives its client fails */
#define TRACE(...)                                                                                 \
    do {                                                                                           \
        if (trace)                                                                                 \
            fprintf(stderr, "fake server: " __VA_ARGS__);                                          \
    } while (0)

/* --- the fake server -------------------------------------------------------------------------- */

enum {
    SRV_MARIADB = 1 << 0,     /* MariaDB greeting: no CLIENT_MYSQL, extended caps */
    SRV_NO_TRACK = 1 << 1,    /* no CLIENT_SESSION_TRACK */
    SRV_NO_DEPR_EOF = 1 << 2, /* no CLIENT_DEPRECATE_EOF */
    SRV_REFUSE = 1 << 3,      /* every login gets ERR 1045 */
    SRV_SWITCH = 1 << 4,      /* auth switch request before the OK */
    SRV_GREET_ERR = 1 << 5,   /* the greeting is ERR 1040 */
    SRV_SHA2 = 1 << 6,        /* caching_sha2_password greeting, fast-auth marker before the OK */
    SRV_SSL = 1 << 7,         /* offers CLIENT_SSL (the routes do not use it) */
};

enum fconn_state { FC_LOGIN, FC_SWITCHED, FC_READY };

struct fconn {
    struct fconn *next;
    int fd;
    struct event *rev, *wev;
    struct evbuffer *in, *out;
    enum fconn_state state;
    uint64_t caps; /* the client's (credproxy's) login capabilities */
    uint32_t next_stmt_id;
};

static struct fconn *fconns;
static unsigned srv_flags;
static bool script_internal; /* credproxy's own commands take script ops too */
static const uint8_t *script;
static size_t script_len, script_pos;

static int script_byte(void)
{
    return script_pos < script_len ? script[script_pos++] : -1;
}

static void fconn_free(struct fconn *c)
{
    struct fconn **pp = &fconns;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    TRACE("closing fd %d\n", c->fd);
    event_free(c->rev);
    event_free(c->wev);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    close(c->fd);
    free(c);
    progress++;
}

static void fconn_flush(struct fconn *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        TRACE("fd %d: wrote %d bytes\n", c->fd, n);
        if (n <= 0)
            break;
        progress++;
    }
    if (evbuffer_get_length(c->out) > 0)
        event_add(c->wev, NULL);
    else
        event_del(c->wev);
}

/* Packet writing: begin, put bytes, end (fills the 3-byte length). */
static uint8_t pkt[1 << 16];
static size_t pkt_len;

static void pk_begin(void)
{
    pkt_len = 4;
}
static void pk_u8(unsigned v)
{
    if (pkt_len < sizeof(pkt))
        pkt[pkt_len++] = (uint8_t)v;
}
static void pk_u16(unsigned v)
{
    pk_u8(v & 0xff);
    pk_u8((v >> 8) & 0xff);
}
static void pk_u32(uint32_t v)
{
    pk_u16(v & 0xffff);
    pk_u16(v >> 16);
}
static void pk_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        pk_u8(b[i]);
}
static void pk_str(const char *s)
{
    pk_bytes(s, strlen(s));
}
static void pk_lenenc_str(const char *s)
{
    pk_u8((unsigned)strlen(s)); /* only short strings here */
    pk_str(s);
}
static void pk_end(struct fconn *c, uint8_t *seq)
{
    size_t len = pkt_len - 4;
    pkt[0] = (uint8_t)len;
    pkt[1] = (uint8_t)(len >> 8);
    pkt[2] = (uint8_t)(len >> 16);
    pkt[3] = (*seq)++;
    evbuffer_add(c->out, pkt, pkt_len);
}

static void send_ok(struct fconn *c, uint8_t *seq, uint8_t head, unsigned status)
{
    pk_begin();
    pk_u8(head);
    pk_u8(0); /* affected rows */
    pk_u8(0); /* insert id */
    pk_u16(status);
    pk_u16(0); /* warnings */
    pk_end(c, seq);
}

static void send_err(struct fconn *c, uint8_t *seq, unsigned code, const char *state,
                     const char *msg)
{
    pk_begin();
    pk_u8(0xff);
    pk_u16(code);
    pk_u8('#');
    pk_str(state);
    pk_str(msg);
    pk_end(c, seq);
}

static void send_eof(struct fconn *c, uint8_t *seq, unsigned status)
{
    pk_begin();
    pk_u8(0xfe);
    pk_u16(0);
    pk_u16(status);
    pk_end(c, seq);
}

/* The end of column definitions or rows: EOF, or an OK with 0xfe under DEPRECATE_EOF. */
static void send_terminator(struct fconn *c, uint8_t *seq, unsigned status)
{
    if (c->caps & PROTO_CAP_DEPRECATE_EOF)
        send_ok(c, seq, 0xfe, status);
    else
        send_eof(c, seq, status);
}

static void send_coldef(struct fconn *c, uint8_t *seq, const char *name)
{
    pk_begin();
    pk_lenenc_str("def");
    pk_lenenc_str("app");
    pk_lenenc_str("t");
    pk_lenenc_str("t");
    pk_lenenc_str(name);
    pk_lenenc_str(name);
    pk_u8(0x0c);
    pk_u16(45);
    pk_u32(11);
    pk_u8(3); /* LONG */
    pk_u16(0);
    pk_u8(0);
    pk_u16(0);
    pk_end(c, seq);
}

static void send_resultset(struct fconn *c, uint8_t *seq, unsigned cols, unsigned rows,
                           unsigned status)
{
    static const char *const names[] = {"a", "b", "c", "d"};
    pk_begin();
    pk_u8(cols);
    pk_end(c, seq);
    for (unsigned i = 0; i < cols; i++)
        send_coldef(c, seq, names[i & 3]);
    if (!(c->caps & PROTO_CAP_DEPRECATE_EOF))
        send_eof(c, seq, status);
    for (unsigned r = 0; r < rows; r++) {
        pk_begin();
        for (unsigned i = 0; i < cols; i++)
            pk_lenenc_str(r & 1 ? "1" : "22");
        pk_end(c, seq);
    }
    send_terminator(c, seq, status);
}

/* One column, rows of 8000 bytes: past RELAY_HIGH_WATER when the client does not read. */
static void send_big_resultset(struct fconn *c, uint8_t *seq, unsigned rows, unsigned status)
{
    pk_begin();
    pk_u8(1);
    pk_end(c, seq);
    send_coldef(c, seq, "big");
    if (!(c->caps & PROTO_CAP_DEPRECATE_EOF))
        send_eof(c, seq, status);
    for (unsigned r = 0; r < rows; r++) {
        pk_begin();
        pk_u8(0xfc);
        pk_u16(8000);
        memset(pkt + pkt_len, 'a' + (int)(r % 26), 8000);
        pkt_len += 8000;
        pk_end(c, seq);
    }
    send_terminator(c, seq, status);
}

/* The answer to credproxy's look at the clients' default tracking: MariaDB's defaults. */
static void send_track_view(struct fconn *c, uint8_t *seq)
{
    static const char *const names[] = {"schema", "state", "vars", "trx"};
    pk_begin();
    pk_u8(4);
    pk_end(c, seq);
    for (unsigned i = 0; i < 4; i++)
        send_coldef(c, seq, names[i]);
    if (!(c->caps & PROTO_CAP_DEPRECATE_EOF))
        send_eof(c, seq, PROTO_STATUS_AUTOCOMMIT);
    pk_begin();
    pk_lenenc_str("1");
    pk_lenenc_str("0");
    pk_lenenc_str("autocommit,character_set_client,character_set_connection,"
                  "character_set_results,time_zone");
    pk_lenenc_str("OFF");
    pk_end(c, seq);
    send_terminator(c, seq, PROTO_STATUS_AUTOCOMMIT);
}

/* The rows of an open cursor, for COM_STMT_FETCH. */
static void send_rows(struct fconn *c, uint8_t *seq, unsigned cols, unsigned rows, unsigned status)
{
    for (unsigned r = 0; r < rows; r++) {
        pk_begin();
        for (unsigned i = 0; i < cols; i++)
            pk_lenenc_str("7");
        pk_end(c, seq);
    }
    send_terminator(c, seq, status);
}

/* An execute that opened a cursor: the metadata and one terminator, no rows. */
static void send_cursor_metadata(struct fconn *c, uint8_t *seq, unsigned cols, unsigned status)
{
    pk_begin();
    pk_u8(cols);
    pk_end(c, seq);
    for (unsigned i = 0; i < cols; i++)
        send_coldef(c, seq, "k");
    send_terminator(c, seq, status);
}

static void send_prepare_ok(struct fconn *c, uint8_t *seq, unsigned params, unsigned cols)
{
    pk_begin();
    pk_u8(0);
    pk_u32(++c->next_stmt_id);
    pk_u16(cols);
    pk_u16(params);
    pk_u8(0);
    pk_u16(0);
    pk_end(c, seq);
    for (unsigned i = 0; i < params; i++)
        send_coldef(c, seq, "?");
    if (params && !(c->caps & PROTO_CAP_DEPRECATE_EOF))
        send_eof(c, seq, PROTO_STATUS_AUTOCOMMIT);
    for (unsigned i = 0; i < cols; i++)
        send_coldef(c, seq, "x");
    if (cols && !(c->caps & PROTO_CAP_DEPRECATE_EOF))
        send_eof(c, seq, PROTO_STATUS_AUTOCOMMIT);
}

/* An OK with SERVER_SESSION_STATE_CHANGED and a session-state block picked by v. */
static void send_state_ok(struct fconn *c, uint8_t *seq, unsigned v, unsigned status)
{
    static const char *const vars[][2] = {
        {"autocommit", "OFF"},         {"character_set_client", "latin1"},
        {"sql_mode", "ANSI_QUOTES"},   {"time_zone", "+01:00"},
        {"collation_connection", "x"}, {"transaction_isolation", "SERIALIZABLE"},
        {"character_set_results", ""}, {"wait_timeout", "12"},
    };
    uint8_t block[256];
    size_t n = 0;
    unsigned kinds = (v & 7) ? (v & 7) : 7;
    if (kinds & 1) { /* SESSION_TRACK_SYSTEM_VARIABLES */
        const char *k = vars[(v >> 3) & 7][0], *val = vars[(v >> 3) & 7][1];
        size_t kl = strlen(k), vl = strlen(val);
        block[n++] = 0;
        block[n++] = (uint8_t)(1 + kl + 1 + vl);
        block[n++] = (uint8_t)kl;
        memcpy(block + n, k, kl), n += kl;
        block[n++] = (uint8_t)vl;
        memcpy(block + n, val, vl), n += vl;
    }
    if (kinds & 2) { /* SESSION_TRACK_SCHEMA */
        const char *db = (v & 0x40) ? "other" : "app";
        size_t dl = strlen(db);
        block[n++] = 1;
        block[n++] = (uint8_t)(1 + dl);
        block[n++] = (uint8_t)dl;
        memcpy(block + n, db, dl), n += dl;
    }
    if (kinds & 4) { /* SESSION_TRACK_STATE_CHANGE */
        block[n++] = 2;
        block[n++] = 2;
        block[n++] = 1;
        block[n++] = '1';
    }
    if (v & 0x80) { /* an unknown type, which readers must skip */
        block[n++] = 0x1f;
        block[n++] = 1;
        block[n++] = 0;
    }
    pk_begin();
    pk_u8(0);
    pk_u8(0);
    pk_u8(0);
    pk_u16(status | PROTO_STATUS_STATE_CHANGED);
    pk_u16(0);
    pk_u8(0); /* info: empty lenenc string */
    pk_u8((unsigned)n);
    pk_bytes(block, n);
    pk_end(c, seq);
}

static unsigned status_from(int b)
{
    unsigned st = PROTO_STATUS_AUTOCOMMIT;
    if (b < 0)
        return st;
    if (b & 1)
        st |= PROTO_STATUS_IN_TRANS;
    if (b & 2)
        st &= ~(unsigned)PROTO_STATUS_AUTOCOMMIT;
    if (b & 4)
        st |= PROTO_STATUS_CURSOR_EXISTS;
    if (b & 8)
        st |= PROTO_STATUS_LAST_ROW_SENT;
    if ((b & 0x30) == 0x30)
        st |= PROTO_STATUS_MORE_RESULTS;
    return st;
}

/* A reply a command would plausibly get, once the script is used up. */
static void default_reply(struct fconn *c, uint8_t cmd, uint8_t *seq)
{
    switch (cmd) {
    case PROTO_COM_STMT_PREPARE:
        send_prepare_ok(c, seq, 1, 1);
        break;
    case PROTO_COM_STMT_EXECUTE:
    case PROTO_COM_STMT_FETCH:
        send_resultset(c, seq, 1, 1, PROTO_STATUS_AUTOCOMMIT);
        break;
    case PROTO_COM_FIELD_LIST:
        send_coldef(c, seq, "a");
        send_eof(c, seq, PROTO_STATUS_AUTOCOMMIT);
        break;
    case PROTO_COM_STATISTICS:
        pk_begin();
        pk_str("Uptime: 1");
        pk_end(c, seq);
        break;
    default:
        send_ok(c, seq, 0, PROTO_STATUS_AUTOCOMMIT);
        break;
    }
}

/* Returns false when the connection was closed. */
static bool reply_from_script(struct fconn *c, uint8_t cmd, uint8_t seq)
{
    for (int chained = 0; chained < 8; chained++) {
        int op = script_byte();
        if (op < 0) {
            default_reply(c, cmd, &seq);
            break;
        }
        int a = script_byte();
        unsigned status = status_from(a);
        switch (op % 11) {
        case 0:
            send_ok(c, &seq, 0, status);
            break;
        case 1:
            send_err(c, &seq, a < 0 ? 1064 : 1000 + (unsigned)a, "42000", "You have an error");
            status = 0;
            break;
        case 2: {
            int b = script_byte();
            unsigned cols = 1 + (unsigned)(b < 0 ? 0 : b % 3);
            unsigned rows = (unsigned)(b < 0 ? 1 : (b >> 2) % 5);
            if (cmd == PROTO_COM_STMT_FETCH)
                send_rows(c, &seq, cols, rows, status);
            else if (cmd == PROTO_COM_STMT_EXECUTE && (status & PROTO_STATUS_CURSOR_EXISTS))
                send_cursor_metadata(c, &seq, cols, status);
            else
                send_resultset(c, &seq, cols, rows, status);
            break;
        }
        case 3: {
            int b = script_byte();
            send_prepare_ok(c, &seq, b < 0 ? 0 : b & 3, b < 0 ? 0 : (b >> 2) & 3);
            status = 0;
            break;
        }
        case 4: {
            int b = script_byte();
            send_state_ok(c, &seq, b < 0 ? 0 : (unsigned)b, status);
            break;
        }
        case 5: { /* raw bytes, verbatim */
            size_t n = a < 0 ? 0 : (size_t)a;
            if (n > script_len - script_pos)
                n = script_len - script_pos;
            evbuffer_add(c->out, script + script_pos, n);
            script_pos += n;
            status = 0;
            break;
        }
        case 6: /* the server dies, perhaps halfway through a reply */
            if (a > 0 && (a & 1))
                send_resultset(c, &seq, 1, 3, PROTO_STATUS_AUTOCOMMIT);
            fconn_flush(c);
            if (a > 0 && (a & 2)) { /* cut in the middle of the last packet */
                uint8_t half[3] = {10, 0, 0};
                (void)!send(c->fd, half, sizeof(half), MSG_NOSIGNAL | MSG_DONTWAIT);
            }
            fconn_free(c);
            return false;
        case 7: /* silence */
            status = 0;
            break;
        case 8: /* a reply, and an unasked extra OK */
            default_reply(c, cmd, &seq);
            send_ok(c, &seq, 0, PROTO_STATUS_AUTOCOMMIT);
            status = 0;
            break;
        case 10: /* a result set big enough for backpressure (320 KiB to 2.5 MiB) */
            send_big_resultset(c, &seq, 40u * (1 + ((unsigned)(a < 0 ? 0 : a) & 7)), status);
            break;
        case 9: /* an error with an odd sqlstate marker */
            pk_begin();
            pk_u8(0xff);
            pk_u16(1927);
            pk_str("Connection was killed");
            pk_end(c, &seq);
            status = 0;
            break;
        }
        if (!(status & PROTO_STATUS_MORE_RESULTS))
            break;
    }
    fconn_flush(c);
    return true;
}

static void send_greeting(struct fconn *c)
{
    uint8_t seq = 0;
    if (srv_flags & SRV_GREET_ERR) {
        send_err(c, &seq, 1040, "08004", "Too many connections");
        fconn_flush(c);
        return;
    }
    uint64_t caps = PROTO_CAP_LONG_PASSWORD | PROTO_CAP_FOUND_ROWS | PROTO_CAP_LONG_FLAG |
                    PROTO_CAP_CONNECT_WITH_DB | PROTO_CAP_NO_SCHEMA | PROTO_CAP_ODBC |
                    PROTO_CAP_LOCAL_FILES | PROTO_CAP_IGNORE_SPACE | PROTO_CAP_PROTOCOL_41 |
                    PROTO_CAP_INTERACTIVE | PROTO_CAP_IGNORE_SIGPIPE | PROTO_CAP_TRANSACTIONS |
                    PROTO_CAP_RESERVED | PROTO_CAP_SECURE_CONNECTION | PROTO_CAP_MULTI_STATEMENTS |
                    PROTO_CAP_MULTI_RESULTS | PROTO_CAP_PS_MULTI_RESULTS | PROTO_CAP_PLUGIN_AUTH |
                    PROTO_CAP_CONNECT_ATTRS | PROTO_CAP_PLUGIN_AUTH_LENENC |
                    PROTO_CAP_SESSION_TRACK | PROTO_CAP_DEPRECATE_EOF;
    if (srv_flags & SRV_MARIADB)
        caps = (caps & ~PROTO_CAP_LONG_PASSWORD) | PROTO_CAP_MARIADB_PROGRESS |
               PROTO_CAP_MARIADB_STMT_BULK | PROTO_CAP_MARIADB_EXT_METADATA;
    if (srv_flags & SRV_NO_TRACK)
        caps &= ~PROTO_CAP_SESSION_TRACK;
    if (srv_flags & SRV_NO_DEPR_EOF)
        caps &= ~PROTO_CAP_DEPRECATE_EOF;
    if (srv_flags & SRV_SSL)
        caps |= PROTO_CAP_SSL;
    pk_begin();
    pk_u8(10);
    pk_str(srv_flags & SRV_MARIADB ? "5.5.5-10.11.6-MariaDB-fake" : "8.0.36-fake");
    pk_u8(0);
    pk_u32(77);
    pk_str("abcdefgh");
    pk_u8(0);
    pk_u16((unsigned)(caps & 0xffff));
    pk_u8(45);
    pk_u16(PROTO_STATUS_AUTOCOMMIT);
    pk_u16((unsigned)((caps >> 16) & 0xffff));
    pk_u8(21);
    for (int i = 0; i < 6; i++)
        pk_u8(0);
    pk_u32((uint32_t)(caps >> 32));
    pk_str("ijklmnopqrst");
    pk_u8(0);
    pk_str(srv_flags & SRV_SHA2 ? "caching_sha2_password" : "mysql_native_password");
    pk_u8(0);
    pk_end(c, &seq);
    fconn_flush(c);
}

/* Returns false when c was closed. */
static bool handle_packet(struct fconn *c, const uint8_t *p, size_t len, uint8_t seq)
{
    uint8_t out_seq = (uint8_t)(seq + 1);
    TRACE("fd %d state %d: packet seq %u len %zu first 0x%02x\n", c->fd, (int)c->state, seq, len,
          len ? p[0] : 0);
    switch (c->state) {
    case FC_LOGIN:
        if (len >= 4)
            c->caps =
                (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
        if (srv_flags & SRV_REFUSE) {
            send_err(c, &out_seq, 1045, "28000", "Access denied for user 'u'@'localhost'");
        } else if (srv_flags & SRV_SWITCH) {
            pk_begin();
            pk_u8(0xfe);
            pk_str("mysql_native_password");
            pk_u8(0);
            pk_str("01234567890123456789");
            pk_u8(0);
            pk_end(c, &out_seq);
            c->state = FC_SWITCHED;
        } else {
            if (srv_flags & SRV_SHA2) {
                pk_begin();
                pk_u8(1);
                pk_u8(3);
                pk_end(c, &out_seq);
            }
            send_ok(c, &out_seq, 0, PROTO_STATUS_AUTOCOMMIT);
            c->state = FC_READY;
        }
        fconn_flush(c);
        return true;
    case FC_SWITCHED:
        send_ok(c, &out_seq, 0, PROTO_STATUS_AUTOCOMMIT);
        c->state = FC_READY;
        fconn_flush(c);
        return true;
    case FC_READY:
        break;
    }
    if (seq != 0 || len == 0)
        return true; /* a continuation or long data: no reply of its own */
    switch (p[0]) {
    case PROTO_COM_QUIT:
        fconn_free(c);
        return false;
    case PROTO_COM_STMT_CLOSE:
    case PROTO_COM_STMT_SEND_LONG_DATA:
        return true;
    case PROTO_COM_RESET_CONNECTION:
    case PROTO_COM_INIT_DB:
        break;
    case PROTO_COM_QUERY: {
        static const char tracking[] = "SET SESSION session_track_";
        static const char view[] = "SELECT @@session.session_track_";
        if (len - 1 >= sizeof(tracking) - 1 && !memcmp(p + 1, tracking, sizeof(tracking) - 1))
            break;
        if (len - 1 >= sizeof(view) - 1 && !memcmp(p + 1, view, sizeof(view) - 1)) {
            if (script_internal)
                return reply_from_script(c, p[0], seq);
            send_track_view(c, &out_seq);
            fconn_flush(c);
            return true;
        }
        return reply_from_script(c, p[0], seq);
    }
    default:
        return reply_from_script(c, p[0], seq);
    }
    /* One of credproxy's own commands (or the client's COM_INIT_DB). */
    if (script_internal)
        return reply_from_script(c, p[0], seq);
    default_reply(c, p[0], &out_seq);
    fconn_flush(c);
    return true;
}

static void fconn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct fconn *c = arg;
    int n = evbuffer_read(c->in, c->fd, 1 << 16);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        fconn_free(c);
        return;
    }
    progress++;
    for (;;) {
        uint8_t hdr[4];
        if (evbuffer_copyout(c->in, hdr, 4) < 4)
            return;
        size_t len = (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16;
        if (evbuffer_get_length(c->in) < 4 + len)
            return;
        evbuffer_drain(c->in, 4);
        uint8_t *p = evbuffer_pullup(c->in, (ssize_t)len);
        bool alive = handle_packet(c, p, len, hdr[3]);
        if (!alive)
            return;
        evbuffer_drain(c->in, len);
    }
}

static void fconn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fconn_flush(arg);
}

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0)
        return;
    progress++;
    TRACE("accepted fd %d\n", cfd);
    struct fconn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(cfd);
        return;
    }
    c->fd = cfd;
    /* Without it, Nagle holds back a second small reply until a delayed ACK, in real time. */
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->rev = event_new(W.base, cfd, EV_READ | EV_PERSIST, fconn_read_cb, c);
    c->wev = event_new(W.base, cfd, EV_WRITE, fconn_write_cb, c);
    c->next = fconns;
    fconns = c;
    event_add(c->rev, NULL);
    send_greeting(c);
}

/* --- the client ------------------------------------------------------------------------------- */

static int client_fd = -1;
static bool client_paused;

static void drain_client(void)
{
    if (client_fd < 0 || client_paused)
        return;
    uint8_t buf[65536];
    ssize_t n;
    while ((n = recv(client_fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
        progress++;
}

/* Runs the loop until nothing more happens without the clock moving. */
static void run_until_quiet(void)
{
    int idle = 0;
    for (int i = 0; i < 400 && idle < 2; i++) {
        uint64_t before = progress;
        event_base_loop(W.base, EVLOOP_NONBLOCK);
        drain_client();
        if (progress == before && event_base_get_num_events(W.base, EVENT_BASE_COUNT_ACTIVE) == 0)
            idle++;
        else
            idle = 0;
    }
}

static void advance(unsigned ms)
{
    virtual_ns += (uint64_t)ms * 1000000ull;
    run_until_quiet();
}

static void client_write(const void *p, size_t len)
{
    if (client_fd < 0)
        return;
    const uint8_t *b = p;
    if (trace) {
        fprintf(stderr, "client: writes %zu bytes:", len);
        for (size_t i = 0; i < len && i < 16; i++)
            fprintf(stderr, " %02x", b[i]);
        fprintf(stderr, "%s\n", len > 16 ? " ..." : "");
    }
    while (len > 0) {
        ssize_t n = send(client_fd, b, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0)
            break; /* full (the proxy is not reading) or shut: the rest is lost */
        b += n;
        len -= (size_t)n;
    }
    run_until_quiet();
}

/* A HandshakeResponse41 for trust mode; v picks capabilities and optional parts. */
static void client_login(unsigned v)
{
    uint32_t caps =
        (uint32_t)(PROTO_CAP_LONG_PASSWORD | PROTO_CAP_LONG_FLAG | PROTO_CAP_PROTOCOL_41 |
                   PROTO_CAP_SECURE_CONNECTION | PROTO_CAP_PLUGIN_AUTH | PROTO_CAP_TRANSACTIONS |
                   PROTO_CAP_MULTI_STATEMENTS | PROTO_CAP_MULTI_RESULTS |
                   PROTO_CAP_PS_MULTI_RESULTS);
    if (v & 1)
        caps |= (uint32_t)PROTO_CAP_SESSION_TRACK;
    if (v & 2)
        caps |= (uint32_t)PROTO_CAP_DEPRECATE_EOF;
    if (v & 4)
        caps |= (uint32_t)PROTO_CAP_CONNECT_WITH_DB;
    if (v & 8)
        caps |= (uint32_t)PROTO_CAP_CONNECT_ATTRS;
    if (v & 16)
        caps |= (uint32_t)PROTO_CAP_PLUGIN_AUTH_LENENC;
    pk_begin();
    pk_u32(caps);
    pk_u32(1 << 24);
    pk_u8(v & 32 ? 8 : 45);
    for (int i = 0; i < 23; i++)
        pk_u8(0);
    pk_str("app_user");
    pk_u8(0);
    if (v & 64) {
        pk_u8(20);
        pk_str("01234567890123456789");
    } else {
        pk_u8(0);
    }
    if (v & 4) {
        pk_str(v & 128 ? "other" : "app");
        pk_u8(0);
    }
    pk_str(v & 64 ? "caching_sha2_password" : "mysql_native_password");
    pk_u8(0);
    if (v & 8) {
        static const char attrs[] = "\x0c_client_name\x0a"
                                    "libmariadb";
        pk_u8(sizeof(attrs) - 1);
        pk_bytes(attrs, sizeof(attrs) - 1);
    }
    size_t len = pkt_len - 4;
    pkt[0] = (uint8_t)len;
    pkt[1] = (uint8_t)(len >> 8);
    pkt[2] = (uint8_t)(len >> 16);
    pkt[3] = 1;
    client_write(pkt, pkt_len);
}

/* --- set-up ----------------------------------------------------------------------------------- */

static void cleanup_files(void)
{
    unlink(path_secret);
    unlink(path_config);
    unlink(path_users);
    rmdir(tmpdir);
}

static void die(const char *what)
{
    fprintf(stderr, "fuzz_session: set-up failed: %s\n", what);
    cleanup_files();
    exit(1);
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd) != 0)
        die(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    trace = getenv("FUZZ_SESSION_TRACE") != NULL;
    strict = getenv("FUZZ_SESSION_STRICT") != NULL;
    const char *lv = getenv("FUZZ_SESSION_LOG");
    log_set_level(lv && *lv == 'd'   ? LOG_LEVEL_DEBUG
                  : lv && *lv == 'i' ? LOG_LEVEL_INFO
                                     : LOG_LEVEL_ERROR);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/fuzz_session.XXXXXX");
    if (!mkdtemp(tmpdir))
        die("mkdtemp");
    atexit(cleanup_files);

    /* The fake server, on a port the kernel picks. */
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof(sa);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(listen_fd, 64) != 0 || getsockname(listen_fd, (struct sockaddr *)&sa, &salen) != 0)
        die("fake server socket");

    char text[2048];
    snprintf(path_secret, sizeof(path_secret), "%s/secret.json", tmpdir);
    snprintf(text, sizeof(text),
             "{\"username\":\"u\",\"password\":\"p\",\"engine\":\"mysql\","
             "\"host\":\"127.0.0.1\",\"port\":%d,\"dbname\":\"app\"}",
             ntohs(sa.sin_port));
    write_file(path_secret, text);
    snprintf(path_users, sizeof(path_users), "%s/users", tmpdir);
    char hash[42];
    local_users_format_hash("pw", 2, hash);
    snprintf(text, sizeof(text), "app_user:%s\n", hash);
    write_file(path_users, text);
    snprintf(path_config, sizeof(path_config), "%s/credproxy.conf", tmpdir);
    snprintf(text, sizeof(text),
             "secret_file = %s\n"
             "upstream_tls = disabled\n"
             "client_tls = off\n"
             "pool_min_idle = 0\n"
             "workers = 1\n"
             "[route plain]\n"
             "listen = 127.0.0.1:1\n"
             "[route mux]\n"
             "listen = 127.0.0.1:2\n"
             "pool_release_idle_after = 100ms\n"
             "pool_size = 2\n"
             "pool_wait_timeout = 2s\n"
             "[route password]\n"
             "listen = 127.0.0.1:3\n"
             "client_auth = password\n"
             "users_file = %s\n"
             "[route peer]\n"
             "socket = %s/peer.sock\n"
             "client_auth = peer\n"
             "peer_uids = %u\n",
             path_secret, path_users, tmpdir, (unsigned)getuid());
    write_file(path_config, text);

    char *args[] = {"fuzz_session", "--config", path_config, NULL};
    char *envp[] = {NULL};
    struct config_errors errs = {0};
    bool ok = config_load(&CFG, 3, args, envp, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "fuzz_session: %s\n", errs.lines[i]);
    config_errors_free(&errs);
    if (!ok || CFG.n_routes != N_ROUTES)
        die("configuration");
    log_set_level(lv && *lv == 'd'   ? LOG_LEVEL_DEBUG
                  : lv && *lv == 'i' ? LOG_LEVEL_INFO
                                     : LOG_LEVEL_ERROR);

    if (worker_init(&W, 0, 1) != 0)
        die("worker_init");
    W.pools = calloc(N_ROUTES, sizeof(*W.pools));
    W.n_pools = N_ROUTES;
    for (size_t i = 0; i < N_ROUTES; i++) {
        char err[512];
        ROUTES[i].index = i;
        if (!route_init(&ROUTES[i], &CFG.routes[i], W.base, err, sizeof(err)))
            die(err);
        initial_profile[i] = ROUTES[i].profile;
        W.pools[i] = pool_new(&W, &ROUTES[i]);
        if (!W.pools[i])
            die("pool_new");
    }
    listen_ev = event_new(W.base, listen_fd, EV_READ | EV_PERSIST, accept_cb, NULL);
    event_add(listen_ev, NULL);
    return 0;
}

/* --- one input -------------------------------------------------------------------------------- */

static void check(bool cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_session: invariant broken: %s\n", what);
        abort();
    }
}

static void end_of_input(void)
{
    /* The client leaves; its session must end (timers may need the clock to move). */
    if (client_fd >= 0) {
        close(client_fd);
        client_fd = -1;
    }
    run_until_quiet();
    for (int i = 0; i < 40 && W.n_sessions > 0; i++)
        advance(3000);
    if (W.n_sessions > 0) {
        /*
         * The client left two virtual minutes ago and its session is still there: it
         * waits for a server that may never answer, and never looks at the client. With
         * FUZZ_SESSION_STRICT set that is a failure; otherwise shut the sessions down.
         */
        check(!strict, "a session outlived its client by two minutes (FUZZ_SESSION_STRICT)");
        session_close_all(&W);
        run_until_quiet();
    }
    check(W.n_sessions == 0 && W.sessions == NULL, "every session ended");
    /* Fresh pools, so the next input starts from nothing. */
    for (size_t i = 0; i < N_ROUTES; i++) {
        pool_free(W.pools[i]);
        W.pools[i] = NULL;
    }
    while (fconns)
        fconn_free(fconns);
    run_until_quiet();
    worker_reap_now(&W);
    for (int i = 0; i < 4; i++)
        event_base_loop(W.base, EVLOOP_NONBLOCK); /* bufferevents finish freeing */
    for (size_t i = 0; i < N_ROUTES; i++) {
        struct route *r = &ROUTES[i];
        check(__atomic_load_n(&r->upstream_open, __ATOMIC_ACQUIRE) == 0,
              "every upstream slot given back");
        r->profile = initial_profile[i];
        creds_unref(r->preferred);
        r->preferred = NULL;
        r->starved = 0;
        check(__atomic_load_n(&r->n_clients, __ATOMIC_ACQUIRE) == 0,
              "every client slot given back");
        free(r->track_view); /* learned from this input's server: the next may differ */
        r->track_view = NULL;
        W.pools[i] = pool_new(&W, r);
        check(W.pools[i] != NULL, "pool_new");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return -1;
    unsigned flags = data[0];
    size_t clen = (size_t)data[1] | (size_t)data[2] << 8;
    data += 3;
    size -= 3;
    if (clen > size)
        clen = size;
    const uint8_t *cs = data;
    script = data + clen;
    script_len = size - clen;
    script_pos = 0;
    int sf = script_byte();
    srv_flags = sf < 0 ? 0 : (unsigned)sf;
    int sf2 = script_byte();
    script_internal = sf2 > 0 && (sf2 & 1);

    unsigned route = flags & 3;
    bool is_unix = (flags & 4) != 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return 0;
    client_fd = sv[0];
    client_paused = false;
    struct sockaddr_in peer = {
        .sin_family = AF_INET, .sin_port = htons(40000), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* As the worker's accept does: the client's slot first, given back when the session ends. */
    if (!route_client_enter(&ROUTES[route])) {
        close(sv[0]);
        close(sv[1]);
        client_fd = -1;
        return 0;
    }
    session_start(&W, &ROUTES[route], sv[1], (const struct sockaddr *)&peer, sizeof(peer), is_unix);
    run_until_quiet();

    size_t i = 0;
    while (i < clen) {
        uint8_t op = cs[i++] % 8;
        switch (op) {
        case 0: {
            if (i >= clen)
                break;
            size_t n = cs[i++];
            if (n == 255 && i + 2 <= clen) {
                n = (size_t)cs[i] | (size_t)cs[i + 1] << 8;
                i += 2;
            }
            if (n > clen - i)
                n = clen - i;
            client_write(cs + i, n);
            i += n;
            break;
        }
        case 1:
            advance(time_steps_ms[i < clen ? cs[i++] % 8 : 0]);
            break;
        case 2:
            if (client_fd >= 0)
                shutdown(client_fd, SHUT_WR);
            run_until_quiet();
            break;
        case 3:
            client_paused = !client_paused;
            run_until_quiet();
            break;
        case 4:
            while (fconns)
                fconn_free(fconns);
            run_until_quiet();
            break;
        case 5: {
            static const uint8_t q[] = {9,   0,   0,   0,  PROTO_COM_QUERY, 'S', 'E', 'L', 'E',
                                        'C', 'T', ' ', '1'};
            client_write(q, sizeof(q));
            break;
        }
        case 6:
            client_login(i < clen ? cs[i++] : 0);
            break;
        case 7:
            drain_client();
            run_until_quiet();
            break;
        }
    }
    end_of_input();
    return 0;
}
