/*
 * bench_churn_proto: connection churn with a client that speaks the MySQL
 * protocol itself.
 *
 * Same workload, command line and output as bench_churn (connect, SELECT 1,
 * close, N threads, as fast as they can), but without Connector/C: each cycle
 * is one connect(), one buffered read per server flight and one send per
 * client packet, with no option queries, no attribute block and no library
 * state to set up and tear down. Measured through credproxy on the 2-vCPU
 * bench machine: about 2 us of user CPU per connection (Connector/C: 11) and
 * 57 us in all with the kernel's TCP work (Connector/C: 83), so more of the
 * machine goes to the server or proxy behind the port, which is what the run
 * measures.
 *
 * The protocol spoken: HandshakeV10 greeting, HandshakeResponse41 offering
 * mysql_native_password (the scramble computed with OpenSSL's SHA1 when
 * BENCH_PASSWORD is set and non-empty, empty otherwise), an AuthSwitchRequest
 * to mysql_native_password or caching_sha2_password (fast-auth path only; a
 * server asking for full authentication is an error), then COM_QUERY
 * "SELECT 1" with the classic EOF-terminated result set (CLIENT_DEPRECATE_EOF
 * is not offered), the value checked to be "1", then COM_QUIT and close().
 *
 * Every reply is bounds-checked: a short, oversized, out-of-sequence or
 * otherwise malformed packet ends the cycle as a counted error (the first one
 * is reported in first_error), never as a crash.
 *
 * Prints one JSON object on stdout, the same shape as bench_churn:
 *
 *   {"threads":8,"seconds":10.00,"connections":N,"errors":E,"cps":X,
 *    "p50_ms":..,"p99_ms":..,"ok_per_s":[..],"err_per_s":[..],"first_error":".."}
 *
 * The password comes from the environment (BENCH_PASSWORD), never argv.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "churn_run.h"

/* Largest packet accepted: a greeting, an OK/ERR or one row of SELECT 1 is far smaller. */
#define MAX_PAYLOAD  16384
#define IO_TIMEOUT_S 10

/* Capability flags (MySQL protocol). */
#define CLIENT_LONG_PASSWORD     0x00000001u
#define CLIENT_LONG_FLAG         0x00000004u
#define CLIENT_CONNECT_WITH_DB   0x00000008u
#define CLIENT_PROTOCOL_41       0x00000200u
#define CLIENT_TRANSACTIONS      0x00002000u
#define CLIENT_SECURE_CONNECTION 0x00008000u
#define CLIENT_PLUGIN_AUTH       0x00080000u

#define COM_QUIT  0x01
#define COM_QUERY 0x03

#define NATIVE_PLUGIN "mysql_native_password"
#define SHA2_PLUGIN   "caching_sha2_password"
#define SCRAMBLE_LEN  20

struct options {
    struct churn_options c;
    struct sockaddr_storage addr; /* host:port, resolved once */
    socklen_t addrlen;
};

/* One client connection: the socket, a read buffer and the expected sequence number. */
struct conn {
    int fd;
    uint8_t seq;                        /* sequence number of the next packet, either way */
    size_t start, end;                  /* unread bytes are buf[start, end) */
    uint8_t buf[2 * (MAX_PAYLOAD + 4)]; /* room for one whole packet after compaction */
};

/* A received packet: points into conn.buf, valid until the next read. */
struct packet {
    const uint8_t *p;
    size_t len;
};

/* Bounds-checked reader over one packet's payload. */
struct reader {
    const uint8_t *p, *end;
};

/* Keeps the first error of the run; always returns 0 so callers can `return fail(...)`. */
#define fail churn_fail

/* ---- reading packets ------------------------------------------------------------------- */

/* Reads until at least `need` unread bytes are buffered; 1 on success. */
static int fill(struct conn *c, size_t need, const char *what)
{
    while (c->end - c->start < need) {
        if (c->start + need > sizeof(c->buf)) { /* compact: move the unread bytes to the front */
            memmove(c->buf, c->buf + c->start, c->end - c->start);
            c->end -= c->start;
            c->start = 0;
        }
        ssize_t n = recv(c->fd, c->buf + c->end, sizeof(c->buf) - c->end, 0);
        if (n > 0) {
            c->end += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return fail("%s: server closed the connection", what);
        return fail("%s: recv: %s", what, strerror(errno));
    }
    return 1;
}

/* Reads one packet and checks its sequence number; 1 on success. */
static int read_packet(struct conn *c, struct packet *pk, const char *what)
{
    if (!fill(c, 4, what))
        return 0;
    const uint8_t *h = c->buf + c->start;
    size_t len = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16;
    if (len > MAX_PAYLOAD)
        return fail("%s: packet of %zu bytes, more than the %d this client accepts", what, len,
                    MAX_PAYLOAD);
    if (h[3] != c->seq)
        return fail("%s: packet sequence %u, expected %u", what, h[3], c->seq);
    if (!fill(c, 4 + len, what))
        return 0;
    pk->p = c->buf + c->start + 4;
    pk->len = len;
    c->start += 4 + len;
    c->seq++;
    return 1;
}

static int get_u8(struct reader *r, uint8_t *v)
{
    if (r->end - r->p < 1)
        return 0;
    *v = *r->p++;
    return 1;
}

static int get_u16(struct reader *r, uint16_t *v)
{
    if (r->end - r->p < 2)
        return 0;
    *v = (uint16_t)(r->p[0] | r->p[1] << 8);
    r->p += 2;
    return 1;
}

static int skip(struct reader *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        return 0;
    r->p += n;
    return 1;
}

/* A NUL-terminated string inside the packet; NULL when the NUL is missing. */
static const char *get_cstr(struct reader *r, size_t *len)
{
    const uint8_t *nul = memchr(r->p, 0, (size_t)(r->end - r->p));
    if (!nul)
        return NULL;
    const char *s = (const char *)r->p;
    *len = (size_t)(nul - r->p);
    r->p = nul + 1;
    return s;
}

/* Length-encoded integer; 0 on a short packet or a NULL (0xfb) marker. */
static int get_lenenc(struct reader *r, uint64_t *v)
{
    uint8_t b;
    if (!get_u8(r, &b))
        return 0;
    size_t n = b < 0xfb ? 0 : b == 0xfc ? 2 : b == 0xfd ? 3 : b == 0xfe ? 8 : SIZE_MAX;
    if (n == SIZE_MAX || (size_t)(r->end - r->p) < n)
        return 0;
    if (n == 0) {
        *v = b;
        return 1;
    }
    *v = 0;
    for (size_t i = 0; i < n; i++)
        *v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    return 1;
}

/* An ERR packet's "code message" for first_error; returns 0 (the cycle failed). */
static int fail_err_packet(const struct packet *pk, const char *what)
{
    struct reader r = {pk->p + 1, pk->p + pk->len};
    uint16_t code = 0;
    if (!get_u16(&r, &code))
        return fail("%s: short ERR packet", what);
    if (r.end - r.p >= 6 && r.p[0] == '#')
        r.p += 6; /* SQL state marker and state */
    return fail("%s: %u %.*s", what, code, (int)(r.end - r.p), (const char *)r.p);
}

static int is_eof(const struct packet *pk)
{
    return pk->len >= 1 && pk->len < 9 && pk->p[0] == 0xfe;
}

/* ---- writing packets ------------------------------------------------------------------- */

/* Sends one packet: header + payload assembled in `frame` (4 bytes reserved in front). */
static int send_packet(struct conn *c, uint8_t *frame, size_t payload_len, const char *what)
{
    frame[0] = (uint8_t)payload_len;
    frame[1] = (uint8_t)(payload_len >> 8);
    frame[2] = (uint8_t)(payload_len >> 16);
    frame[3] = c->seq++;
    size_t off = 0, total = payload_len + 4;
    while (off < total) {
        ssize_t n = send(c->fd, frame + off, total - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return fail("%s: send: %s", what, n < 0 ? strerror(errno) : "wrote nothing");
    }
    return 1;
}

/* ---- authentication -------------------------------------------------------------------- */

/* mysql_native_password: SHA1(pw) XOR SHA1(salt + SHA1(SHA1(pw))). */
static void native_scramble(const char *pw, const uint8_t salt[SCRAMBLE_LEN],
                            uint8_t out[SHA_DIGEST_LENGTH])
{
    uint8_t h1[SHA_DIGEST_LENGTH], h2[SHA_DIGEST_LENGTH], h3[SHA_DIGEST_LENGTH];
    SHA1((const uint8_t *)pw, strlen(pw), h1);
    SHA1(h1, sizeof(h1), h2);
    uint8_t cat[SCRAMBLE_LEN + SHA_DIGEST_LENGTH];
    memcpy(cat, salt, SCRAMBLE_LEN);
    memcpy(cat + SCRAMBLE_LEN, h2, sizeof(h2));
    SHA1(cat, sizeof(cat), h3);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        out[i] = h1[i] ^ h3[i];
    OPENSSL_cleanse(h1, sizeof(h1)); /* h1 and h2 stand for the password */
    OPENSSL_cleanse(h2, sizeof(h2));
    OPENSSL_cleanse(cat, sizeof(cat));
}

/* caching_sha2_password: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce). */
static void sha2_scramble(const char *pw, const uint8_t nonce[SCRAMBLE_LEN],
                          uint8_t out[SHA256_DIGEST_LENGTH])
{
    uint8_t h1[SHA256_DIGEST_LENGTH], h2[SHA256_DIGEST_LENGTH], h3[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)pw, strlen(pw), h1);
    SHA256(h1, sizeof(h1), h2);
    uint8_t cat[SHA256_DIGEST_LENGTH + SCRAMBLE_LEN];
    memcpy(cat, h2, sizeof(h2));
    memcpy(cat + sizeof(h2), nonce, SCRAMBLE_LEN);
    SHA256(cat, sizeof(cat), h3);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        out[i] = h1[i] ^ h3[i];
    OPENSSL_cleanse(h1, sizeof(h1));
    OPENSSL_cleanse(h2, sizeof(h2));
    OPENSSL_cleanse(cat, sizeof(cat));
}

/* Parses a HandshakeV10 greeting: the 20-byte salt and the server's capabilities. */
static int parse_greeting(const struct packet *pk, uint8_t salt[SCRAMBLE_LEN], uint32_t *caps)
{
    struct reader r = {pk->p, pk->p + pk->len};
    uint8_t proto, charset, auth_len;
    uint16_t caps_lo, status, caps_hi;
    size_t vlen;
    if (pk->len >= 1 && pk->p[0] == 0xff)
        return fail_err_packet(pk, "greeting");
    if (!get_u8(&r, &proto) || proto != 10)
        return fail("greeting: not protocol 10");
    if (!get_cstr(&r, &vlen) || !skip(&r, 4)) /* server version, connection id */
        return fail("greeting: truncated");
    if ((size_t)(r.end - r.p) < 8)
        return fail("greeting: truncated salt");
    memcpy(salt, r.p, 8);
    r.p += 8;
    if (!skip(&r, 1) || !get_u16(&r, &caps_lo) || !get_u8(&r, &charset) || !get_u16(&r, &status) ||
        !get_u16(&r, &caps_hi) || !get_u8(&r, &auth_len) || !skip(&r, 10))
        return fail("greeting: truncated capabilities");
    *caps = (uint32_t)caps_lo | (uint32_t)caps_hi << 16;
    if (!(*caps & CLIENT_PROTOCOL_41) || !(*caps & CLIENT_SECURE_CONNECTION))
        return fail("greeting: server lacks PROTOCOL_41 / SECURE_CONNECTION");
    /* Part 2 of the salt: 12 bytes and a NUL. */
    if ((size_t)(r.end - r.p) < SCRAMBLE_LEN - 8)
        return fail("greeting: truncated salt part 2");
    memcpy(salt + 8, r.p, SCRAMBLE_LEN - 8);
    return 1;
}

/* Builds and sends the HandshakeResponse41 offering mysql_native_password. */
static int send_login(struct conn *c, const struct options *o, uint32_t server_caps,
                      const uint8_t salt[SCRAMBLE_LEN])
{
    uint32_t caps = CLIENT_LONG_PASSWORD | CLIENT_LONG_FLAG | CLIENT_PROTOCOL_41 |
                    CLIENT_TRANSACTIONS | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
    if (o->c.db)
        caps |= CLIENT_CONNECT_WITH_DB;
    caps &= server_caps | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION;
    size_t ulen = strlen(o->c.user), dlen = o->c.db ? strlen(o->c.db) : 0;
    if (ulen > 256 || dlen > 256)
        return fail("login: user or database name too long");
    uint8_t frame[4 + 32 + 257 + 1 + SHA_DIGEST_LENGTH + 257 + sizeof(NATIVE_PLUGIN)];
    uint8_t *p = frame + 4;
    p[0] = (uint8_t)caps;
    p[1] = (uint8_t)(caps >> 8);
    p[2] = (uint8_t)(caps >> 16);
    p[3] = (uint8_t)(caps >> 24);
    p[4] = 0, p[5] = 0, p[6] = 0, p[7] = 1; /* max packet 16 MiB */
    p[8] = 45;                              /* utf8mb4_general_ci */
    memset(p + 9, 0, 23);
    p += 32;
    memcpy(p, o->c.user, ulen + 1);
    p += ulen + 1;
    if (o->c.password[0]) {
        *p++ = SHA_DIGEST_LENGTH;
        native_scramble(o->c.password, salt, p);
        p += SHA_DIGEST_LENGTH;
    } else {
        *p++ = 0;
    }
    if (caps & CLIENT_CONNECT_WITH_DB) {
        memcpy(p, o->c.db, dlen + 1);
        p += dlen + 1;
    }
    if (caps & CLIENT_PLUGIN_AUTH) {
        memcpy(p, NATIVE_PLUGIN, sizeof(NATIVE_PLUGIN));
        p += sizeof(NATIVE_PLUGIN);
    }
    return send_packet(c, frame, (size_t)(p - frame - 4), "login");
}

/* Answers an AuthSwitchRequest (0xfe, plugin name, nonce); 1 when the answer was sent. */
static int auth_switch(struct conn *c, const struct options *o, const struct packet *pk, int *sha2)
{
    struct reader r = {pk->p + 1, pk->p + pk->len};
    size_t plen;
    const char *plugin = get_cstr(&r, &plen);
    if (!plugin)
        return fail("auth switch: no plugin name");
    if ((size_t)(r.end - r.p) < SCRAMBLE_LEN)
        return fail("auth switch to %.*s: nonce shorter than %d bytes", (int)plen, plugin,
                    SCRAMBLE_LEN);
    uint8_t frame[4 + SHA256_DIGEST_LENGTH];
    size_t n = 0;
    if (plen == strlen(NATIVE_PLUGIN) && memcmp(plugin, NATIVE_PLUGIN, plen) == 0) {
        if (o->c.password[0]) {
            native_scramble(o->c.password, r.p, frame + 4);
            n = SHA_DIGEST_LENGTH;
        }
    } else if (plen == strlen(SHA2_PLUGIN) && memcmp(plugin, SHA2_PLUGIN, plen) == 0) {
        if (o->c.password[0]) {
            sha2_scramble(o->c.password, r.p, frame + 4);
            n = SHA256_DIGEST_LENGTH;
        }
        *sha2 = 1;
    } else {
        return fail("auth switch to unsupported plugin %.*s", (int)plen, plugin);
    }
    return send_packet(c, frame, n, "auth switch");
}

/* Greeting to OK: 1 when the server accepted the login. */
static int login(struct conn *c, const struct options *o)
{
    struct packet pk;
    uint8_t salt[SCRAMBLE_LEN];
    uint32_t server_caps = 0;
    if (!read_packet(c, &pk, "greeting") || !parse_greeting(&pk, salt, &server_caps))
        return 0;
    if (!send_login(c, o, server_caps, salt))
        return 0;
    int switched = 0, sha2 = 0;
    for (;;) {
        if (!read_packet(c, &pk, "login reply"))
            return 0;
        if (pk.len == 0)
            return fail("login reply: empty packet");
        switch (pk.p[0]) {
        case 0x00:
            return 1;
        case 0xff:
            return fail_err_packet(&pk, "login");
        case 0xfe:
            if (switched++)
                return fail("login: second auth switch");
            if (!auth_switch(c, o, &pk, &sha2))
                return 0;
            break;
        case 0x01: /* AuthMoreData: caching_sha2's fast-auth result */
            if (!sha2 || pk.len != 2)
                return fail("login: unexpected AuthMoreData");
            if (pk.p[1] != 0x03)
                return fail("login: caching_sha2_password wants full authentication (needs "
                            "TLS or RSA, not supported here)");
            break; /* fast auth succeeded: the OK follows */
        default:
            return fail("login reply: unexpected packet 0x%02x", pk.p[0]);
        }
    }
}

/* ---- the query ------------------------------------------------------------------------- */

/* COM_QUERY "SELECT 1" and its result set: 1 column, rows until EOF, the value "1". */
static int select_one(struct conn *c)
{
    static const char q[] = "SELECT 1";
    uint8_t frame[4 + 1 + sizeof(q)];
    frame[4] = COM_QUERY;
    memcpy(frame + 5, q, sizeof(q) - 1);
    c->seq = 0;
    if (!send_packet(c, frame, 1 + sizeof(q) - 1, "query"))
        return 0;
    struct packet pk;
    if (!read_packet(c, &pk, "query reply"))
        return 0;
    if (pk.len >= 1 && pk.p[0] == 0xff)
        return fail_err_packet(&pk, "query");
    struct reader r = {pk.p, pk.p + pk.len};
    uint64_t ncols;
    if (pk.len == 0 || pk.p[0] == 0x00 || !get_lenenc(&r, &ncols) || r.p != r.end)
        return fail("query reply: not a result set header");
    if (ncols != 1)
        return fail("query reply: %llu columns, expected 1", (unsigned long long)ncols);
    if (!read_packet(c, &pk, "column definition"))
        return 0;
    if (pk.len < 1 || pk.p[0] != 3 || pk.len < 4 || memcmp(pk.p + 1, "def", 3) != 0)
        return fail("column definition: malformed");
    if (!read_packet(c, &pk, "column EOF"))
        return 0;
    if (!is_eof(&pk))
        return fail("column EOF: not an EOF packet");
    int rows = 0, value_ok = 0;
    for (;;) {
        if (!read_packet(c, &pk, "row"))
            return 0;
        if (is_eof(&pk))
            break;
        if (pk.len >= 1 && pk.p[0] == 0xff)
            return fail_err_packet(&pk, "row");
        rows++;
        value_ok = pk.len == 2 && pk.p[0] == 1 && pk.p[1] == '1';
    }
    if (rows != 1 || !value_ok)
        return fail("query: %d rows, value %s", rows, value_ok ? "1" : "not 1");
    return 1;
}

static int connect_socket(const struct options *o)
{
    int fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail("socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    while (connect(fd, (const struct sockaddr *)&o->addr, o->addrlen) != 0) {
        if (errno == EINTR)
            continue;
        fail("connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* One connect / login / SELECT 1 / COM_QUIT / close cycle; returns 1 on success. */
static int one_cycle(const struct options *o, struct conn *c)
{
    c->fd = connect_socket(o);
    if (c->fd < 0)
        return 0;
    c->seq = 0;
    c->start = c->end = 0;
    int ok = login(c, o) && select_one(c);
    if (ok) {
        uint8_t frame[5] = {[4] = COM_QUIT};
        c->seq = 0;
        ok = send_packet(c, frame, 1, "quit");
    }
    close(c->fd);
    return ok;
}

struct thread_state {
    const struct options *opt;
    struct conn conn;
};

static void *thread_start(void *ctx)
{
    struct thread_state *t = malloc(sizeof(*t));
    if (!t) {
        fail("out of memory");
        return NULL;
    }
    t->opt = ctx;
    return t;
}

static void thread_end(void *state)
{
    free(state);
}

static int cycle(void *state)
{
    struct thread_state *t = state;
    return one_cycle(t->opt, &t->conn);
}

/* Resolves host:port once, so the loop pays no getaddrinfo per connection. */
static int resolve(struct options *o)
{
    char port[16];
    snprintf(port, sizeof(port), "%u", o->c.port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(o->c.host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "bench_churn_proto: %s: %s\n", o->c.host, gai_strerror(rc));
        return 0;
    }
    memcpy(&o->addr, res->ai_addr, res->ai_addrlen);
    o->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 1;
}

int main(int argc, char **argv)
{
    struct options o;
    churn_parse_args(argc, argv, "bench_churn_proto", &o.c);
    if (!resolve(&o))
        return 1;
    struct churn_client client = {
        .name = "bench_churn_proto",
        .thread_start = thread_start,
        .thread_end = thread_end,
        .cycle = cycle,
        .ctx = &o,
    };
    return churn_run(&o.c, &client);
}
