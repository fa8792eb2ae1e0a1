/* Connection phase codec: greeting layout, login request parsing, COM_CHANGE_USER, OK/ERR. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/handshake.h"
#include "auth/proto.h"
#include "auth/reply.h"
#include "auth/wire.h"
#include "tests/check.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* What a MySQL-compatible server typically offers; CLIENT_MYSQL set. */
#define SERVER_CAPS                                                                                \
    (PROTO_CAP_LONG_PASSWORD | PROTO_CAP_FOUND_ROWS | PROTO_CAP_LONG_FLAG |                        \
     PROTO_CAP_CONNECT_WITH_DB | PROTO_CAP_PROTOCOL_41 | PROTO_CAP_INTERACTIVE | PROTO_CAP_SSL |   \
     PROTO_CAP_TRANSACTIONS | PROTO_CAP_SECURE_CONNECTION | PROTO_CAP_MULTI_STATEMENTS |           \
     PROTO_CAP_MULTI_RESULTS | PROTO_CAP_PS_MULTI_RESULTS | PROTO_CAP_PLUGIN_AUTH |                \
     PROTO_CAP_CONNECT_ATTRS | PROTO_CAP_PLUGIN_AUTH_LENENC | PROTO_CAP_SESSION_TRACK |            \
     PROTO_CAP_DEPRECATE_EOF)

/* The same as a MariaDB server announces it: CLIENT_MYSQL clear, extended caps in bits 32+. */
#define MARIADB_CAPS                                                                               \
    ((SERVER_CAPS & ~PROTO_CAP_LONG_PASSWORD) | PROTO_CAP_MARIADB_STMT_BULK |                      \
     PROTO_CAP_MARIADB_CACHE_META)

#define AUTH20                                                                                     \
    "\x8f\x1a\x27\x33\x9c\x41\x5e\x60\x7b\x88"                                                     \
    "\x91\xa2\xb3\xc4\xd5\xe6\xf7\x08\x19\x2a"
#define ATTRS                                                                                      \
    "\x04_pid\x04"                                                                                 \
    "1234"                                                                                         \
    "\x0c_client_name\x08libmysql"

/*
 * A HandshakeResponse41 laid out as libmysqlclient sends it: CLIENT_MYSQL,
 * CONNECT_WITH_DB, PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH, CONNECT_ATTRS
 * and PLUGIN_AUTH_LENENC set (caps 0x003aa20d), user "root", a 20-byte
 * native-password answer, database "test", and two connect attributes.
 */
static const uint8_t captured[] = "\x0d\xa2\x3a\x00"                       /* capabilities */
                                  "\x00\x00\x00\x01"                       /* max packet 16 MiB */
                                  "\x21"                                   /* utf8_general_ci */
                                  "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0" /* filler */
                                  "\0\0\0\0"                               /* MariaDB ext caps */
                                  "root\0"
                                  "\x14" AUTH20 "test\0"
                                  "mysql_native_password\0"
                                  "\x20" ATTRS;
#define CAPTURED_LEN (sizeof(captured) - 1)
/* Where the packet may legitimately end early: after the database, after the plugin. */
#define CAPTURED_DB_END     (32 + 5 + 21 + 5)
#define CAPTURED_PLUGIN_END (CAPTURED_DB_END + 22)

/* Parses a heap copy of exactly len bytes, so ASan catches any read past the end. */
static enum handshake_parse_result parse_copy(const uint8_t *p, size_t len, uint64_t server_caps,
                                              struct handshake_response *out, uint8_t **copy)
{
    *copy = malloc(len ? len : 1);
    memcpy(*copy, p, len);
    return handshake_response_parse(*copy, len, server_caps, out);
}

static int mem_is(const void *p, size_t len, const char *s, size_t slen)
{
    return p && len == slen && memcmp(p, s, slen) == 0;
}

static void test_captured_response(void)
{
    struct handshake_response hr;
    uint8_t *copy;
    CHECK(CAPTURED_LEN == CAPTURED_PLUGIN_END + 33);
    CHECK(parse_copy(captured, CAPTURED_LEN, SERVER_CAPS, &hr, &copy) == HANDSHAKE_PARSED);
    CHECK(hr.capabilities == 0x003aa20d);
    CHECK(hr.max_packet == 0x01000000);
    CHECK(hr.charset == 0x21);
    CHECK(mem_is(hr.user, hr.user_len, "root", 4));
    CHECK(mem_is(hr.auth, hr.auth_len, AUTH20, 20));
    CHECK(mem_is(hr.database, hr.database_len, "test", 4));
    CHECK(mem_is(hr.auth_plugin, hr.auth_plugin_len, "mysql_native_password", 21));
    CHECK(mem_is(hr.attrs, hr.attrs_len, ATTRS, sizeof(ATTRS) - 1));
    free(copy);
}

/*
 * Every prefix of the captured packet is malformed, except the two places a
 * client may stop early (the plugin and the attributes are optional at the end).
 */
static void test_captured_truncated(void)
{
    for (size_t cut = 0; cut < CAPTURED_LEN; cut++) {
        struct handshake_response hr;
        uint8_t *copy;
        enum handshake_parse_result res = parse_copy(captured, cut, SERVER_CAPS, &hr, &copy);
        if (cut == CAPTURED_DB_END) {
            CHECK(res == HANDSHAKE_PARSED && hr.database && !hr.auth_plugin && !hr.attrs);
        } else if (cut == CAPTURED_PLUGIN_END) {
            CHECK(res == HANDSHAKE_PARSED && hr.auth_plugin && !hr.attrs);
        } else {
            CHECK(res == HANDSHAKE_MALFORMED);
            if (res != HANDSHAKE_MALFORMED)
                fprintf(stderr, "  cut at %zu parsed\n", cut);
        }
        free(copy);
    }
}

/* One login request to build: the fields are written as caps says. */
struct response_case {
    const char *name;
    uint64_t caps; /* what the client sends */
    const char *user;
    const char *auth; /* NUL-free so it also works NUL-terminated */
    const char *db;
    const char *plugin;
    const char *attrs; /* raw pairs block */
    size_t attrs_len;
};

/* Writes the HandshakeResponse41 payload for c. */
static void build_response(struct wire_writer *w, const struct response_case *c)
{
    wire_put_u32(w, (uint32_t)c->caps);
    wire_put_u32(w, 1 << 24);
    wire_put_u8(w, 45);
    wire_put_zeros(w, 19);
    wire_put_u32(w, (uint32_t)(c->caps >> 32));
    wire_put_cstr(w, c->user);
    if (c->caps & PROTO_CAP_PLUGIN_AUTH_LENENC)
        wire_put_lenenc_bytes(w, c->auth, strlen(c->auth));
    else if (c->caps & PROTO_CAP_SECURE_CONNECTION) {
        wire_put_u8(w, (uint8_t)strlen(c->auth));
        wire_put_bytes(w, c->auth, strlen(c->auth));
    } else
        wire_put_cstr(w, c->auth);
    if (c->caps & PROTO_CAP_CONNECT_WITH_DB)
        wire_put_cstr(w, c->db);
    if (c->caps & PROTO_CAP_PLUGIN_AUTH)
        wire_put_cstr(w, c->plugin);
    if (c->caps & PROTO_CAP_CONNECT_ATTRS)
        wire_put_lenenc_bytes(w, c->attrs, c->attrs_len);
}

#define BASE_CAPS (PROTO_CAP_PROTOCOL_41 | PROTO_CAP_LONG_PASSWORD | PROTO_CAP_TRANSACTIONS)
#define SECURE    PROTO_CAP_SECURE_CONNECTION
#define LENENC    (PROTO_CAP_SECURE_CONNECTION | PROTO_CAP_PLUGIN_AUTH_LENENC)

static const struct response_case response_cases[] = {
    {"bare, NUL-terminated auth", BASE_CAPS, "app", "pw", NULL, NULL, NULL, 0},
    {"1-byte auth length", BASE_CAPS | SECURE, "app", AUTH20, NULL, NULL, NULL, 0},
    {"lenenc auth", BASE_CAPS | LENENC, "app", AUTH20, NULL, NULL, NULL, 0},
    {"empty auth", BASE_CAPS | LENENC, "app", "", NULL, NULL, NULL, 0},
    {"with db", BASE_CAPS | LENENC | PROTO_CAP_CONNECT_WITH_DB, "app", AUTH20, "shop", NULL, NULL,
     0},
    {"with plugin", BASE_CAPS | SECURE | PROTO_CAP_PLUGIN_AUTH, "app", AUTH20, NULL,
     "caching_sha2_password", NULL, 0},
    {"with attrs", BASE_CAPS | LENENC | PROTO_CAP_CONNECT_ATTRS, "app", AUTH20, NULL, NULL, ATTRS,
     sizeof(ATTRS) - 1},
    {"empty attrs", BASE_CAPS | LENENC | PROTO_CAP_CONNECT_ATTRS, "app", AUTH20, NULL, NULL, "", 0},
    {"db, plugin and attrs",
     BASE_CAPS | LENENC | PROTO_CAP_CONNECT_WITH_DB | PROTO_CAP_PLUGIN_AUTH |
         PROTO_CAP_CONNECT_ATTRS,
     "", AUTH20, "", "mysql_native_password", ATTRS, sizeof(ATTRS) - 1},
};

static void check_response(const struct response_case *c, const struct handshake_response *hr)
{
    CHECK(hr->capabilities == c->caps);
    CHECK(hr->max_packet == 1u << 24 && hr->charset == 45);
    CHECK(mem_is(hr->user, hr->user_len, c->user, strlen(c->user)));
    CHECK(mem_is(hr->auth, hr->auth_len, c->auth, strlen(c->auth)));
    if (c->db)
        CHECK(mem_is(hr->database, hr->database_len, c->db, strlen(c->db)));
    else
        CHECK(hr->database == NULL);
    if (c->plugin)
        CHECK(mem_is(hr->auth_plugin, hr->auth_plugin_len, c->plugin, strlen(c->plugin)));
    else
        CHECK(hr->auth_plugin == NULL);
    if (c->attrs)
        CHECK(mem_is(hr->attrs, hr->attrs_len, c->attrs, c->attrs_len));
    else
        CHECK(hr->attrs == NULL);
}

static void test_response_variants(void)
{
    for (size_t i = 0; i < N_ELEMS(response_cases); i++) {
        const struct response_case *c = &response_cases[i];
        struct wire_writer w;
        struct handshake_response hr;
        uint8_t *copy;
        wire_writer_init(&w);
        build_response(&w, c);
        CHECK(!w.failed);
        enum handshake_parse_result res = parse_copy(w.buf, w.len, SERVER_CAPS, &hr, &copy);
        CHECK(res == HANDSHAKE_PARSED);
        if (res != HANDSHAKE_PARSED)
            fprintf(stderr, "  case \"%s\" did not parse\n", c->name);
        else
            check_response(c, &hr);
        free(copy);
        wire_writer_free(&w);
    }
}

/* Payloads that are well-framed but inconsistent inside. */
static void test_response_malformed(void)
{
    static const struct {
        const char *name;
        const char *tail; /* after the 32 fixed bytes */
        size_t tail_len;
        uint32_t caps;
    } cases[] = {
        {"pre-4.1 client", "app\0\0", 5, BASE_CAPS & ~PROTO_CAP_PROTOCOL_41},
        {"user without NUL", "app", 3, BASE_CAPS},
        {"1-byte auth length past end",
         "app\0\x14"
         "abc",
         8, BASE_CAPS | SECURE},
        {"lenenc auth 0xff",
         "app\0\xff"
         "abc",
         8, BASE_CAPS | LENENC},
        {"lenenc auth 0xfb",
         "app\0\xfb"
         "abc",
         8, BASE_CAPS | LENENC},
        {"lenenc auth 2^64-1",
         "app\0\xfe\xff\xff\xff\xff\xff\xff\xff\xff"
         "a",
         14, BASE_CAPS | LENENC},
        {"db without NUL", "app\0\0db", 7, BASE_CAPS | LENENC | PROTO_CAP_CONNECT_WITH_DB},
        {"plugin without NUL", "app\0\0plug", 9, BASE_CAPS | LENENC | PROTO_CAP_PLUGIN_AUTH},
        {"attrs longer than packet", "app\0\0\x09\x01k\x01v", 10,
         BASE_CAPS | LENENC | PROTO_CAP_CONNECT_ATTRS},
        {"attrs value past block", "app\0\0\x04\x01k\x05v", 10,
         BASE_CAPS | LENENC | PROTO_CAP_CONNECT_ATTRS},
        {"attrs key without value", "app\0\0\x02\x01k", 8,
         BASE_CAPS | LENENC | PROTO_CAP_CONNECT_ATTRS},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct wire_writer w;
        struct handshake_response hr;
        uint8_t *copy;
        wire_writer_init(&w);
        wire_put_u32(&w, cases[i].caps);
        wire_put_zeros(&w, 28);
        wire_put_bytes(&w, cases[i].tail, cases[i].tail_len);
        enum handshake_parse_result res = parse_copy(w.buf, w.len, SERVER_CAPS, &hr, &copy);
        CHECK(res == HANDSHAKE_MALFORMED);
        if (res != HANDSHAKE_MALFORMED)
            fprintf(stderr, "  case \"%s\" was accepted\n", cases[i].name);
        free(copy);
        wire_writer_free(&w);
    }
}

/* The SSLRequest is the 32 fixed bytes alone with CLIENT_SSL, and only if SSL was offered. */
static void test_ssl_request(void)
{
    static const struct {
        uint64_t client_caps;
        uint64_t server_caps;
        size_t len;
        enum handshake_parse_result expect;
    } cases[] = {
        {BASE_CAPS | LENENC | PROTO_CAP_SSL, SERVER_CAPS, 32, HANDSHAKE_SSL_REQUEST},
        {BASE_CAPS | LENENC, SERVER_CAPS, 32, HANDSHAKE_MALFORMED},
        {BASE_CAPS | LENENC | PROTO_CAP_SSL, SERVER_CAPS & ~PROTO_CAP_SSL, 32, HANDSHAKE_MALFORMED},
        {(BASE_CAPS | PROTO_CAP_SSL) & ~PROTO_CAP_PROTOCOL_41, SERVER_CAPS, 32,
         HANDSHAKE_MALFORMED},
        {BASE_CAPS | LENENC | PROTO_CAP_SSL, SERVER_CAPS, 31, HANDSHAKE_MALFORMED},
        {BASE_CAPS | LENENC | PROTO_CAP_SSL, SERVER_CAPS, 33, HANDSHAKE_MALFORMED},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct wire_writer w;
        struct handshake_response hr;
        uint8_t *copy;
        wire_writer_init(&w);
        wire_put_u32(&w, (uint32_t)cases[i].client_caps);
        wire_put_u32(&w, 1 << 24);
        wire_put_u8(&w, 8);
        wire_put_zeros(&w, 23 + 1);
        enum handshake_parse_result res =
            parse_copy(w.buf, cases[i].len, cases[i].server_caps, &hr, &copy);
        CHECK(res == cases[i].expect);
        if (res == HANDSHAKE_SSL_REQUEST)
            CHECK(hr.charset == 8 && (hr.capabilities & PROTO_CAP_SSL) && hr.user == NULL);
        free(copy);
        wire_writer_free(&w);
    }
}

/* Unoffered flags are dropped; MariaDB's extended flags count only when both cleared CLIENT_MYSQL.
 */
static void test_capability_negotiation(void)
{
    static const struct {
        uint64_t client_caps;
        uint64_t server_caps;
        uint64_t expect;
    } cases[] = {
        {BASE_CAPS | PROTO_CAP_COMPRESS | PROTO_CAP_LOCAL_FILES, SERVER_CAPS, BASE_CAPS},
        {(BASE_CAPS & ~PROTO_CAP_LONG_PASSWORD) | PROTO_CAP_MARIADB_STMT_BULK |
             PROTO_CAP_MARIADB_PROGRESS,
         MARIADB_CAPS, (BASE_CAPS & ~PROTO_CAP_LONG_PASSWORD) | PROTO_CAP_MARIADB_STMT_BULK},
        /* A MySQL client (CLIENT_MYSQL set) on a MariaDB greeting: the filler is not caps. */
        {BASE_CAPS | PROTO_CAP_MARIADB_STMT_BULK, MARIADB_CAPS,
         BASE_CAPS & ~PROTO_CAP_LONG_PASSWORD},
        /* A MySQL-style greeting: extended bytes are ignored whatever the client says. */
        {(BASE_CAPS & ~PROTO_CAP_LONG_PASSWORD) | PROTO_CAP_MARIADB_STMT_BULK,
         SERVER_CAPS | PROTO_CAP_MARIADB_STMT_BULK, BASE_CAPS & ~PROTO_CAP_LONG_PASSWORD},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct response_case c = {"caps", cases[i].client_caps, "u", "pw", NULL, NULL, NULL, 0};
        struct wire_writer w;
        struct handshake_response hr;
        uint8_t *copy;
        wire_writer_init(&w);
        build_response(&w, &c);
        CHECK(parse_copy(w.buf, w.len, cases[i].server_caps, &hr, &copy) == HANDSHAKE_PARSED);
        CHECK(hr.capabilities == cases[i].expect);
        if (hr.capabilities != cases[i].expect)
            fprintf(stderr, "  case %zu: caps %#llx\n", i, (unsigned long long)hr.capabilities);
        free(copy);
        wire_writer_free(&w);
    }
}

/* Reads the greeting back field by field, as a client would. */
static void check_greeting(const struct wire_writer *w, const struct greeting *g)
{
    struct wire_reader r;
    size_t len;
    uint8_t scramble[PROTO_SCRAMBLE_LEN];
    CHECK(!w->failed && w->len > 4);
    CHECK(wire_header_len(w->buf) == w->len - 4 && wire_header_seq(w->buf) == 0);
    wire_reader_init(&r, w->buf + 4, w->len - 4);
    CHECK(wire_get_u8(&r) == 10);
    const char *version = wire_get_cstr(&r, &len);
    CHECK(mem_is(version, len, g->server_version, strlen(g->server_version)));
    CHECK(wire_get_u32(&r) == g->connection_id);
    const uint8_t *part1 = wire_get_bytes(&r, 8);
    if (part1)
        memcpy(scramble, part1, 8);
    CHECK(wire_get_u8(&r) == 0);
    uint64_t caps = wire_get_u16(&r);
    CHECK(wire_get_u8(&r) == g->charset);
    CHECK(wire_get_u16(&r) == g->status);
    caps |= (uint64_t)wire_get_u16(&r) << 16;
    CHECK(wire_get_u8(&r) == 21);
    const uint8_t *reserved = wire_get_bytes(&r, 6);
    CHECK(reserved && memcmp(reserved, "\0\0\0\0\0\0", 6) == 0);
    uint64_t ext = wire_get_u32(&r);
    if (g->capabilities & PROTO_CAP_LONG_PASSWORD)
        CHECK(ext == 0);
    else
        caps |= ext << 32;
    CHECK(caps == g->capabilities);
    const uint8_t *part2 = wire_get_bytes(&r, 12);
    if (part2)
        memcpy(scramble + 8, part2, 12);
    CHECK(memcmp(scramble, g->scramble, PROTO_SCRAMBLE_LEN) == 0);
    CHECK(wire_get_u8(&r) == 0);
    const char *plugin = wire_get_cstr(&r, &len);
    CHECK(mem_is(plugin, len, g->auth_plugin, strlen(g->auth_plugin)));
    CHECK(!r.failed && wire_remaining(&r) == 0);
}

static void test_greeting(void)
{
    static const struct {
        const char *version;
        uint64_t caps;
        const char *plugin;
    } cases[] = {
        {"5.5.5-10.11.6-MariaDB-credproxy", MARIADB_CAPS, "mysql_native_password"},
        {"8.0.36-credproxy", SERVER_CAPS | PROTO_CAP_MARIADB_STMT_BULK, "caching_sha2_password"},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct greeting g = {.server_version = cases[i].version,
                             .connection_id = 0x01020304u + (uint32_t)i,
                             .capabilities = cases[i].caps,
                             .charset = 45,
                             .status = PROTO_STATUS_AUTOCOMMIT,
                             .auth_plugin = cases[i].plugin};
        struct wire_writer w;
        for (size_t k = 0; k < PROTO_SCRAMBLE_LEN; k++)
            g.scramble[k] = (uint8_t)(k + 1);
        wire_writer_init(&w);
        greeting_write(&w, &g);
        if (g.capabilities & PROTO_CAP_LONG_PASSWORD) /* MySQL form: ext caps are not sent */
            g.capabilities &= 0xffffffffu;
        check_greeting(&w, &g);
        wire_writer_free(&w);
    }
}

static void test_auth_switch(void)
{
    static const uint8_t expect[] = "\x2c\x00\x00\x03"
                                    "\xfe"
                                    "mysql_native_password\0" AUTH20 "\0";
    struct wire_writer w;
    wire_writer_init(&w);
    auth_switch_request_write(&w, 3, "mysql_native_password", (const uint8_t *)AUTH20, 20);
    CHECK(!w.failed && w.len == sizeof(expect) - 1 && memcmp(w.buf, expect, w.len) == 0);
    wire_writer_free(&w);
}

/* COM_CHANGE_USER with every optional part; it may stop after db, charset or plugin. */
static const uint8_t change_user[] = "\x11"
                                     "bob\0"
                                     "\x14" AUTH20 "shop\0"
                                     "\x21\x00"
                                     "mysql_native_password\0"
                                     "\x20" ATTRS;
#define CU_LEN         (sizeof(change_user) - 1)
#define CU_DB_END      (1 + 4 + 21 + 5)
#define CU_CHARSET_END (CU_DB_END + 2)
#define CU_PLUGIN_END  (CU_CHARSET_END + 22)
#define CU_CAPS        (BASE_CAPS | SECURE | PROTO_CAP_PLUGIN_AUTH | PROTO_CAP_CONNECT_ATTRS)

static void test_change_user(void)
{
    struct change_user_request cu;
    CHECK(change_user_parse(change_user, CU_LEN, CU_CAPS, &cu));
    CHECK(mem_is(cu.user, cu.user_len, "bob", 3));
    CHECK(mem_is(cu.auth, cu.auth_len, AUTH20, 20));
    CHECK(mem_is(cu.database, cu.database_len, "shop", 4));
    CHECK(cu.charset == 0x21);
    CHECK(mem_is(cu.auth_plugin, cu.auth_plugin_len, "mysql_native_password", 21));
    CHECK(mem_is(cu.attrs, cu.attrs_len, ATTRS, sizeof(ATTRS) - 1));

    for (size_t cut = 0; cut < CU_LEN; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, change_user, cut);
        bool ok = change_user_parse(copy, cut, CU_CAPS, &cu);
        bool expect = cut == CU_DB_END || cut == CU_CHARSET_END || cut == CU_PLUGIN_END;
        CHECK(ok == expect);
        if (ok != expect)
            fprintf(stderr, "  change_user cut at %zu: %d\n", cut, ok);
        if (ok && cut == CU_DB_END)
            CHECK(cu.charset == 0 && cu.auth_plugin == NULL);
        free(copy);
    }
}

static void test_change_user_variants(void)
{
    static const struct {
        const char *payload;
        size_t len;
        uint64_t caps;
        bool ok;
        const char *auth;
    } cases[] = {
        {"\x11"
         "bob\0"
         "pw\0"
         "\0",
         9, BASE_CAPS, true, "pw"},
        {"\x11"
         "bob\0"
         "\x02pw"
         "\0",
         9, BASE_CAPS | SECURE, true, "pw"},
        {"\x11"
         "bob\0"
         "\x00"
         "\0",
         7, BASE_CAPS | SECURE, true, ""},
        {"\x03"
         "bob\0"
         "\x00"
         "\0",
         7, BASE_CAPS | SECURE, false, NULL},
        {"\x11"
         "bob\0"
         "\x09pw"
         "\0",
         9, BASE_CAPS | SECURE, false, NULL},
        {"\x11"
         "bob\0"
         "\x00"
         "\0"
         "\x21",
         8, BASE_CAPS | SECURE, false, NULL},
        {"\x11"
         "bob\0"
         "\x00"
         "\0"
         "\x21\0"
         "x",
         10, CU_CAPS, false, NULL},
        {"", 0, CU_CAPS, false, NULL},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct change_user_request cu;
        bool ok =
            change_user_parse((const uint8_t *)cases[i].payload, cases[i].len, cases[i].caps, &cu);
        CHECK(ok == cases[i].ok);
        if (ok && cases[i].ok)
            CHECK(mem_is(cu.auth, cu.auth_len, cases[i].auth, strlen(cases[i].auth)));
    }
}

static void test_err_round_trip(void)
{
    static const struct {
        uint16_t code;
        const char *sqlstate;
        const char *message;
        const char *expect_state;
    } cases[] = {
        {PROTO_ER_ACCESS_DENIED, "28000", "Access denied for user 'bob'", "28000"},
        {PROTO_ER_HANDSHAKE, NULL, "Bad handshake", "HY000"},
        {PROTO_ER_UNKNOWN_COM, "08S0", "bad sqlstate length", "HY000"},
        {PROTO_ER_SERVER_LOST, "HY000", "", "HY000"},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct wire_writer w;
        struct server_reply rep;
        wire_writer_init(&w);
        err_packet_write(&w, 2, cases[i].code, cases[i].sqlstate, cases[i].message);
        CHECK(!w.failed && wire_header_seq(w.buf) == 2 && wire_header_len(w.buf) == w.len - 4);
        CHECK(w.buf[4] == 0xff && w.buf[7] == '#');
        CHECK(server_reply_parse(w.buf + 4, w.len - 4, &rep));
        CHECK(rep.kind == REPLY_ERR && rep.error_code == cases[i].code);
        CHECK_STR(rep.sqlstate, cases[i].expect_state);
        CHECK(mem_is(rep.message, rep.message_len, cases[i].message, strlen(cases[i].message)));
        wire_writer_free(&w);
    }
}

/* OK round trip at lenenc boundaries; every cut of a 7+ byte OK must be refused. */
static void test_ok_round_trip(void)
{
    static const struct {
        uint64_t affected, insert_id;
        uint16_t status, warnings;
    } cases[] = {
        {0, 0, PROTO_STATUS_AUTOCOMMIT, 0},
        {250, 251, PROTO_STATUS_IN_TRANS, 1},
        {0x10000, 0xffffff, 0xffff, 0xffff},
        {1ull << 40, UINT64_MAX, 0, 3},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct wire_writer w;
        struct server_reply rep;
        wire_writer_init(&w);
        ok_packet_write(&w, 1, cases[i].affected, cases[i].insert_id, cases[i].status,
                        cases[i].warnings);
        CHECK(!w.failed && wire_header_seq(w.buf) == 1 && wire_header_len(w.buf) == w.len - 4);
        CHECK(server_reply_parse(w.buf + 4, w.len - 4, &rep));
        CHECK(rep.kind == REPLY_OK && rep.affected_rows == cases[i].affected);
        CHECK(rep.last_insert_id == cases[i].insert_id);
        CHECK(rep.status == cases[i].status && rep.warnings == cases[i].warnings);
        for (size_t cut = 7; cut < w.len - 4; cut++) {
            uint8_t *copy = malloc(cut);
            memcpy(copy, w.buf + 4, cut);
            CHECK(!server_reply_parse(copy, cut, &rep));
            free(copy);
        }
        wire_writer_free(&w);
    }
}

static void test_reply_classify(void)
{
    static const struct {
        const char *payload;
        size_t len;
        bool ok;
        enum reply_kind kind;
    } cases[] = {
        {"", 0, true, REPLY_OTHER},
        {"\xff", 1, false, REPLY_ERR},
        {"\xff\x15", 2, false, REPLY_ERR},
        {"\xff\x15\x04", 3, true, REPLY_ERR},
        {"\xff\x15\x04"
         "old-style",
         12, true, REPLY_ERR},
        {"\xfe", 1, false, REPLY_EOF},
        {"\xfe\x00\x00\x02\x00", 5, true, REPLY_EOF},
        {"\xfe\x00\x00\x02\x00\x00\x00\x00\x00", 9, true, REPLY_OTHER},
        {"\xfb"
         "file.csv",
         9, true, REPLY_LOCAL_INFILE},
        {"\x00\x00\x00", 3, true, REPLY_OTHER},
        {"\x00\xfe\x00\x00\x00\x00\x00", 7, false, REPLY_OK},
        {"\x03", 1, true, REPLY_OTHER},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct server_reply rep;
        CHECK(server_reply_parse((const uint8_t *)cases[i].payload, cases[i].len, &rep) ==
              cases[i].ok);
        CHECK(rep.kind == cases[i].kind);
        if (rep.kind == REPLY_ERR && cases[i].ok)
            CHECK(rep.error_code == 0x0415 && strcmp(rep.sqlstate, "HY000") == 0);
        if (rep.kind == REPLY_EOF && cases[i].ok)
            CHECK(rep.status == PROTO_STATUS_AUTOCOMMIT);
    }
}

int main(void)
{
    test_captured_response();
    test_captured_truncated();
    test_response_variants();
    test_response_malformed();
    test_ssl_request();
    test_capability_negotiation();
    test_greeting();
    test_auth_switch();
    test_change_user();
    test_change_user_variants();
    test_err_round_trip();
    test_ok_round_trip();
    test_reply_classify();
    return test_summary();
}
