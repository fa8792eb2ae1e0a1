/* Session-state blocks of OK packets, query classification and reconnect bookkeeping. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "auth/session_track.h"
#include "proxy/query_scan.h"
#include "proxy/session_state.h"
#include "tests/check.h"

/* OK packets as MariaDB 10.11 sent them (captured with session tracking on). */
static const char *const OK_SET_VARS =
    "00000002c00000002d00110974696d655f7a6f6e65062b30353a303000150873716c5f6d6f64650b414e53495f"
    "51554f544553020131";
static const char *const OK_USER_VAR = "00000002c000000003020131";
static const char *const OK_USE_DB = "00000002c000000009010403617070020131";
/* The same with MySQL's length-encoded state flag ("02 02 01 31"). */
static const char *const OK_USER_VAR_MYSQL = "00000002c00000000402020131";

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

static void feed_ok(struct session_state *st, const char *hex)
{
    uint8_t buf[256];
    size_t n = unhex(hex, buf);
    struct ok_packet ok;
    CHECK(ok_packet_parse(buf, n, &ok));
    CHECK(ok.status & 0x4000);
    session_state_on_changes(st, ok.state, ok.state_len, NULL);
}

static void test_state_blocks(void)
{
    struct session_state st = {0};
    feed_ok(&st, OK_SET_VARS);
    CHECK(st.unrestorable == NULL);
    feed_ok(&st, OK_USE_DB);
    CHECK_STR(st.schema, "app");
    CHECK(st.unrestorable == NULL);

    struct wire_writer w;
    wire_writer_init(&w);
    unsigned n = 0;
    session_state_write_restore(&st, &w, &n);
    CHECK(n == 1);
    const char *want = "SET SESSION `time_zone`='+05:00', `sql_mode`='ANSI_QUOTES'";
    CHECK(w.len == 5 + strlen(want) && memcmp(w.buf + 5, want, strlen(want)) == 0);
    wire_writer_free(&w);

    feed_ok(&st, OK_USER_VAR);
    CHECK(st.unrestorable != NULL);
    session_state_reset(&st);
    CHECK(st.unrestorable == NULL && st.vars == NULL && st.schema == NULL);
    feed_ok(&st, OK_USER_VAR_MYSQL);
    CHECK(st.unrestorable != NULL);
    session_state_free(&st);
}

static bool scan_set_names(const char *q, char *coll)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "xxxxx", 5);
    evbuffer_add(b, q, strlen(q));
    bool r = query_set_names(b, 5, strlen(q), coll, 65);
    evbuffer_free(b);
    return r;
}

/* SET NAMES ... COLLATE: MariaDB reports the charsets but not the collation. */
static void test_set_names(void)
{
    char coll[65];
    CHECK(scan_set_names("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci", coll));
    CHECK_STR(coll, "utf8mb4_unicode_ci");
    CHECK(scan_set_names("set names 'latin1' collate 'latin1_bin'", coll));
    CHECK_STR(coll, "latin1_bin");
    CHECK(scan_set_names("SET CHARACTER SET utf8", coll));
    CHECK_STR(coll, "");
    CHECK(!scan_set_names("SET time_zone='+00:00'", coll));
    CHECK(!scan_set_names("SELECT 'SET NAMES x'", coll));

    struct session_state st = {0};
    static const char *const cs = "character_set_connection";
    uint8_t block[128];
    size_t n = 0;
    block[n++] = 0; /* SYSVARS */
    block[n++] = (uint8_t)(1 + strlen(cs) + 1 + 7);
    block[n++] = (uint8_t)strlen(cs);
    memcpy(block + n, cs, strlen(cs));
    n += strlen(cs);
    block[n++] = 7;
    memcpy(block + n, "utf8mb4", 7);
    n += 7;
    session_state_on_changes(&st, block, n, "utf8mb4_unicode_ci");
    struct wire_writer w;
    wire_writer_init(&w);
    unsigned replies;
    session_state_write_restore(&st, &w, &replies);
    const char *want = "SET SESSION `character_set_connection`='utf8mb4', "
                       "`collation_connection`='utf8mb4_unicode_ci'";
    CHECK(w.len == 5 + strlen(want) && memcmp(w.buf + 5, want, strlen(want)) == 0);
    wire_writer_reset(&w);
    /* a later SET NAMES without COLLATE goes back to the charset's default */
    session_state_on_changes(&st, block, n, "");
    session_state_write_restore(&st, &w, &replies);
    want = "SET SESSION `character_set_connection`='utf8mb4'";
    CHECK(w.len == 5 + strlen(want) && memcmp(w.buf + 5, want, strlen(want)) == 0);
    wire_writer_free(&w);
    session_state_free(&st);
}

static void test_untracked_rewrite(void)
{
    uint8_t buf[256];
    size_t n = unhex(OK_USE_DB, buf);
    struct ok_packet ok;
    CHECK(ok_packet_parse(buf, n, &ok));
    struct wire_writer w;
    wire_writer_init(&w);
    ok_packet_write_untracked(&w, &ok);
    /* header, 0 affected, 0 insert id, status without 0x4000, no warnings, no info */
    static const uint8_t want[] = {0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0x00};
    CHECK(w.len == sizeof(want) && memcmp(w.buf, want, sizeof(want)) == 0);
    wire_writer_free(&w);
    /* a truncated block is rejected, not read past its end */
    for (size_t cut = 0; cut < n; cut++)
        CHECK(!ok_packet_parse(buf, cut, &ok) || cut >= 7);
}

static void test_statements(void)
{
    struct session_state st = {0};
    session_state_prepare_sent(&st, (const uint8_t *)"SELECT ?", 8);
    session_state_prepare_sent(&st, (const uint8_t *)"SELECT 2", 8);
    CHECK(session_state_prepare_done(&st, true, 1) == 1);
    CHECK(session_state_prepare_done(&st, true, 2) == 2);
    /* after a reconnect the server hands out 7 and 8 */
    session_state_restored(&st, 0, 8); /* list is newest first: statement 2 */
    session_state_restored(&st, 1, 7);
    CHECK(st.remapped);
    CHECK(session_state_server_id(&st, 1) == 7);
    CHECK(session_state_server_id(&st, 2) == 8);
    /* a new statement whose server id collides with a client id gets a fresh one */
    session_state_prepare_sent(&st, (const uint8_t *)"SELECT 3", 8);
    uint32_t id = session_state_prepare_done(&st, true, 2);
    CHECK(id == 3);
    CHECK(session_state_server_id(&st, 3) == 2);
    session_state_stmt_closed(&st, 1);
    CHECK(session_state_server_id(&st, 1) == 1); /* unknown: unchanged */
    session_state_free(&st);
}

static enum query_kind scan(const char *q)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "xxxxx", 5); /* the packet header and command byte */
    evbuffer_add(b, q, strlen(q));
    enum query_kind k = query_scan(b, 5, strlen(q));
    evbuffer_free(b);
    return k;
}

static void test_query_scan(void)
{
    static const struct {
        const char *q;
        enum query_kind want;
    } cases[] = {
        {"SELECT 1", QUERY_READ},
        {"  /* hint */ select c from t where id=?", QUERY_READ},
        {"-- note\nSHOW TABLES", QUERY_READ},
        {"SELECT @@session.time_zone", QUERY_READ},
        {"SELECT @a := 1", QUERY_PINNED},
        {"SELECT c INTO @x FROM t", QUERY_PINNED},
        {"SELECT GET_LOCK('l', 0)", QUERY_PINNED},
        {"do get_lock('l', 0)", QUERY_PINNED},
        {"SELECT LAST_INSERT_ID(5)", QUERY_PINNED},
        {"INSERT INTO t VALUES ('a@b.c')", QUERY_WRITE},
        {"SET time_zone='+00:00'", QUERY_WRITE},
        {"SELECTX", QUERY_WRITE},
        {"BEGIN", QUERY_WRITE},
        {"", QUERY_WRITE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum query_kind k = scan(cases[i].q);
        if (k != cases[i].want)
            fprintf(stderr, "query_scan(\"%s\") = %d, want %d\n", cases[i].q, k, cases[i].want);
        CHECK(k == cases[i].want);
    }
}

int main(void)
{
    test_state_blocks();
    test_untracked_rewrite();
    test_statements();
    test_query_scan();
    test_set_names();
    return test_summary();
}
