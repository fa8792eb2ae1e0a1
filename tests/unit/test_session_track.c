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

/* 1 when query_pin_reason pins the statement, 0 when not. */
static int pins(const char *q)
{
    struct query_marks marks = {0};
    return query_pin_reason(q, strlen(q), &marks) != NULL;
}

static void test_query_pin_reason(void)
{
    static const struct {
        const char *q;
        int want;
    } cases[] = {
        {"SELECT 1", 0},
        {"  /* hint */ select c from t where id=?", 0},
        {"-- note\nSHOW TABLES", 0},
        {"SELECT @@session.time_zone", 0},
        {"SELECT @a := 1", 1},
        {"SELECT c INTO @x FROM t", 1},
        {"SELECT GET_LOCK('l', 0)", 1},
        {"do get_lock('l', 0)", 1},
        {"SELECT Get_Lock('x',0)", 1},           /* mixed case: the server does not care */
        {"SELECT get_lock /* c */ ('x', 0)", 1}, /* blanks before the parenthesis */
        {"SELECT IS_USED_LOCK('x')", 1},
        {"SELECT LAST_INSERT_ID(5)", 1},
        {"SELECT Last_Insert_Id(4242)", 1},
        {"SELECT LAST_INSERT_ID()", 0}, /* reads it: credproxy replays the value */
        {"LOCK TABLES t READ", 1},
        {"lock table t write", 1},
        {"SELECT * FROM t FOR UPDATE", 0},
        {"SELECT * FROM t LOCK IN SHARE MODE", 0},
        {"HANDLER t OPEN", 1},
        {"XA START 'x'", 1},
        {"CALL p()", 1},
        {"CREATE TEMPORARY TABLE tt (a INT)", 1},
        {"PREPARE s FROM 'SELECT 1'", 1},
        {"SELECT SQL_CALC_FOUND_ROWS * FROM t", 1},
        {"SELECT FOUND_ROWS()", 1},
        {"SELECT 1; SELECT GET_LOCK('x', 0)", 1},
        {"/*!40101 SELECT @a := 1 */", 1}, /* executable comments are code */
        {"/* GET_LOCK('x', 0) */ SELECT 1", 0},
        {"SELECT 'GET_LOCK(1)', \"@a\", `@b`", 0},
        {"SELECT 'it\\'s @a'", 0},
        {"INSERT INTO t VALUES ('a@b.c')", 0},
        {"SET time_zone='+00:00'", 0},
        {"SELECT my_get_lock_count FROM t", 0},
        {"BEGIN", 0},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = pins(cases[i].q);
        if (got != cases[i].want)
            fprintf(stderr, "query_pin_reason(\"%s\") pins=%d, want %d\n", cases[i].q, got,
                    cases[i].want);
        CHECK(got == cases[i].want);
    }
    /*
     * Marks: CONNECTION_ID() keeps the connection but the session can still move when it is
     * lost; SET TRANSACTION (next-transaction characteristics, which no reply reports; Go's
     * BeginTx sends it) holds it until that transaction ends. Neither is a pin reason.
     */
    static const struct {
        const char *q;
        bool reads_id, next_tx, pins;
    } marked[] = {
        {"SELECT CONNECTION_ID()", true, false, false},
        {"select connection_id ()", true, false, false},
        {"SELECT CONNECTION_ID(), @v", true, false, true}, /* the scan goes on past it */
        {"SELECT my_connection_id FROM t", false, false, false},
        {"SELECT 'CONNECTION_ID()'", false, false, false},
        {"/* CONNECTION_ID() */ SELECT 1", false, false, false},
        {"SELECT connection_id", false, false, false},
        {"SET TRANSACTION ISOLATION LEVEL READ COMMITTED", false, true, false},
        {"set transaction read only", false, true, false},
        {"SET /* c */ TRANSACTION READ WRITE", false, true, false},
        {"SELECT 1; SET TRANSACTION READ ONLY", false, true, false},
        {"SET @@tx_isolation = 'SERIALIZABLE'", false, true, false},
        {"SET @@transaction_read_only:=1", false, true, false},
        {"SET TRANSACTION READ ONLY; SET @a = 1", false, true, true},
        {"SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE", false, false, false},
        {"SET GLOBAL TRANSACTION READ ONLY", false, false, false},
        {"SET @@session.tx_isolation = 'SERIALIZABLE'", false, false, false},
        {"SET tx_read_only = 1", false, false, false}, /* no @@: the session's */
        {"SELECT @@tx_isolation", false, false, false},
        {"START TRANSACTION", false, false, false},
        {"SELECT 'SET TRANSACTION READ ONLY'", false, false, false},
    };
    for (size_t i = 0; i < sizeof(marked) / sizeof(marked[0]); i++) {
        struct query_marks m = {0};
        bool pinned = query_pin_reason(marked[i].q, strlen(marked[i].q), &m) != NULL;
        bool ok = m.reads_connection_id == marked[i].reads_id &&
                  m.sets_next_transaction == marked[i].next_tx && pinned == marked[i].pins;
        if (!ok)
            fprintf(stderr, "query_pin_reason(\"%s\") reads_id=%d next_tx=%d pins=%d\n",
                    marked[i].q, m.reads_connection_id, m.sets_next_transaction, pinned);
        CHECK(ok);
    }
}

int main(void)
{
    test_state_blocks();
    test_untracked_rewrite();
    test_statements();
    test_query_pin_reason();
    test_set_names();
    return test_summary();
}
