/*
 * What a transparent reconnect replays: the SET SESSION written for the settings common drivers
 * send at connect, NULL values, and the caps on what one session may hold.
 */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "auth/session_track.h"
#include "proxy/session_state.h"
#include "tests/check.h"

/*
 * OK packets MariaDB 10.11 sent for these statements (session_track_system_variables='*',
 * session_track_state_change=1), captured with PyMySQL over the unix socket.
 */
#define OK_SET_NAMES_UTF8MB4                                                                       \
    "000000004000000065001d146368617261637465725f7365745f636c69656e7407757466386d6234002118636861" \
    "7261637465725f7365745f636f6e6e656374696f6e07757466386d6234001e156368617261637465725f7365745f" \
    "726573756c747307757466386d6234020131"
#define OK_SET_NAMES_UTF8MB4_GENERAL_CI /* SET NAMES utf8mb4 COLLATE utf8mb4_general_ci */         \
    "000000004000000065001e156368617261637465725f7365745f726573756c747307757466386d6234001d146368" \
    "617261637465725f7365745f636c69656e7407757466386d62340021186368617261637465725f7365745f636f6e" \
    "6e656374696f6e07757466386d6234020131"
#define OK_RESULTS_NULL /* SET character_set_results = NULL: the value comes as "" */              \
    "00000000400000001c0017156368617261637465725f7365745f726573756c747300020131"
#define OK_TMP_ENGINE_NULL /* SET SESSION default_tmp_storage_engine = NULL */                     \
    "000000004000000021001c1a64656661756c745f746d705f73746f726167655f656e67696e6500020131"
#define OK_AUTOCOMMIT_1 "000000024000000013000e0a6175746f636f6d6d6974024f4e020131"
#define OK_AUTOCOMMIT_0 "000000004000000014000f0a6175746f636f6d6d6974034f4646020131"
#define OK_SQL_MODE_CJ  /* SET sql_mode='STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION' */            \
    "00000000400000003900340873716c5f6d6f64652a5354524943545f5452414e535f5441424c45532c4e4f5f454e" \
    "47494e455f535542535449545554494f4e020131"
#define OK_SQL_MODE_STRICT                                                                         \
    "000000004000000022001d0873716c5f6d6f6465135354524943545f5452414e535f5441424c4553020131"
#define OK_SQL_MODE_EMPTY "00000000400000000f000a0873716c5f6d6f646500020131"
#define OK_NET_WRITE_TIMEOUT_600                                                                   \
    "00000000400000001b0016116e65745f77726974655f74696d656f757403363030020131"
#define OK_SESSION_READ_COMMITTED /* SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED */     \
    "000000004000000021001c0c74785f69736f6c6174696f6e0e524541442d434f4d4d4954544544020131"
#define OK_TX_ISOLATION_RU /* SET SESSION tx_isolation='READ-UNCOMMITTED' */                       \
    "000000004000000023001e0c74785f69736f6c6174696f6e10524541442d554e434f4d4d4954544544020131"
#define OK_READ_ONLY /* SET SESSION TRANSACTION READ ONLY */                                       \
    "00000000400000001500100c74785f726561645f6f6e6c79024f4e020131"
#define OK_AUTO_INC_2 /* SET @@session.auto_increment_increment=2 */                               \
    "000000004000000020001b186175746f5f696e6372656d656e745f696e6372656d656e740132020131"
#define OK_SELECT_LIMIT_DEFAULT /* SET SESSION sql_select_limit=DEFAULT */                         \
    "00000000400000002b00261073716c5f73656c6563745f6c696d6974143138343436373434303733373039353531" \
    "363135020131"
#define OK_TIME_ZONE_UTC "00000000400000001600110974696d655f7a6f6e65062b30303a3030020131"
#define OK_TIME_ZONE_NEG "00000000400000001600110974696d655f7a6f6e65062d30373a3330020131"
/*
 * Rails' mysql2 adapter: SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci, @@SESSION.sql_mode =
 * CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), ',NO_AUTO_VALUE_ON_ZERO'),
 * @@SESSION.sql_auto_is_null = 0, @@SESSION.wait_timeout = 2147483
 */
#define OK_RAILS                                                                                   \
    "0000000040000000f1001d146368617261637465725f7365745f636c69656e7407757466386d6234001e15636861" \
    "7261637465725f7365745f726573756c747307757466386d62340021186368617261637465725f7365745f636f6e" \
    "6e656374696f6e07757466386d6234005c0873716c5f6d6f6465524e4f5f4155544f5f56414c55455f4f4e5f5a45" \
    "524f2c5354524943545f5452414e535f5441424c45532c5354524943545f414c4c5f5441424c45532c4e4f5f454e" \
    "47494e455f535542535449545554494f4e00150c776169745f74696d656f7574073231343734383300151073716c" \
    "5f6175746f5f69735f6e756c6c034f4646020131"
#define OK_MAX_STATEMENT_TIME /* SET SESSION max_statement_time=1.5 */                             \
    "000000004000000021001c126d61785f73746174656d656e745f74696d6508312e353030303030020131"
#define OK_INNODB_STRICT "00000000400000001b001612696e6e6f64625f7374726963745f6d6f6465024f4e020131"
#define OK_SQL_AUTO_IS_NULL_0                                                                      \
    "00000000400000001a00151073716c5f6175746f5f69735f6e756c6c034f4646020131"
#define OK_GROUP_CONCAT /* SET SESSION group_concat_max_len = 1000000 */                           \
    "000000004000000022001d1467726f75705f636f6e6361745f6d61785f6c656e0731303030303030020131"
#define OK_LC_TIME_NAMES "00000000400000001900140d6c635f74696d655f6e616d65730564655f4445020131"

/* One statement's OK, and the COLLATE of its SET NAMES ("" none, NULL not a SET NAMES). */
struct step {
    const char *ok_hex;
    const char *collation;
};

struct replay_case {
    const char *who;
    struct step steps[10];
    const char *want; /* the SET the replay sends */
};

static const struct replay_case cases[] = {
    {"Connector/J",
     {{OK_SET_NAMES_UTF8MB4, ""},
      {OK_RESULTS_NULL, NULL},
      {OK_AUTOCOMMIT_1, NULL},
      {OK_SQL_MODE_CJ, NULL},
      {OK_NET_WRITE_TIMEOUT_600, NULL},
      {OK_SESSION_READ_COMMITTED, NULL},
      {OK_SELECT_LIMIT_DEFAULT, NULL},
      {OK_AUTO_INC_2, NULL},
      {OK_READ_ONLY, NULL}},
     "SET SESSION `character_set_client`='utf8mb4', `character_set_connection`='utf8mb4', "
     "`character_set_results`=NULL, `autocommit`='ON', "
     "`sql_mode`='STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION', `net_write_timeout`=600, "
     "`tx_isolation`='READ-COMMITTED', `sql_select_limit`=18446744073709551615, "
     "`auto_increment_increment`=2, `tx_read_only`='ON'"},
    {"PyMySQL, mysqlclient, SQLAlchemy",
     {{OK_SET_NAMES_UTF8MB4, ""},
      {OK_AUTOCOMMIT_0, NULL},
      {OK_SQL_MODE_STRICT, NULL},
      {OK_TX_ISOLATION_RU, NULL}},
     "SET SESSION `character_set_client`='utf8mb4', `character_set_connection`='utf8mb4', "
     "`character_set_results`='utf8mb4', `autocommit`='OFF', `sql_mode`='STRICT_TRANS_TABLES', "
     "`tx_isolation`='READ-UNCOMMITTED'"},
    {"Go (DSN parameters)",
     {{OK_SET_NAMES_UTF8MB4_GENERAL_CI, "utf8mb4_general_ci"},
      {OK_TIME_ZONE_UTC, NULL},
      {OK_SQL_MODE_EMPTY, NULL}},
     "SET SESSION `character_set_results`='utf8mb4', `character_set_client`='utf8mb4', "
     "`character_set_connection`='utf8mb4', `collation_connection`='utf8mb4_general_ci', "
     "`time_zone`='+00:00', `sql_mode`=''"},
    {"Rails (mysql2)",
     {{OK_RAILS, "utf8mb4_unicode_ci"}, {OK_MAX_STATEMENT_TIME, NULL}},
     "SET SESSION `character_set_client`='utf8mb4', `character_set_results`='utf8mb4', "
     "`character_set_connection`='utf8mb4', "
     "`sql_mode`='NO_AUTO_VALUE_ON_ZERO,STRICT_TRANS_TABLES,STRICT_ALL_TABLES,NO_ENGINE_"
     "SUBSTITUTION', `wait_timeout`=2147483, `sql_auto_is_null`='OFF', "
     "`collation_connection`='utf8mb4_unicode_ci', `max_statement_time`=1.500000"},
    {"Django",
     {{OK_SESSION_READ_COMMITTED, NULL},
      {OK_SQL_MODE_STRICT, NULL},
      {OK_INNODB_STRICT, NULL},
      {OK_SQL_AUTO_IS_NULL_0, NULL}},
     "SET SESSION `tx_isolation`='READ-COMMITTED', `sql_mode`='STRICT_TRANS_TABLES', "
     "`innodb_strict_mode`='ON', `sql_auto_is_null`='OFF'"},
    {"application settings",
     {{OK_GROUP_CONCAT, NULL},
      {OK_LC_TIME_NAMES, NULL},
      {OK_TIME_ZONE_NEG, NULL},
      {OK_TMP_ENGINE_NULL, NULL}},
     "SET SESSION `group_concat_max_len`=1000000, `lc_time_names`='de_DE', "
     "`time_zone`='-07:30', `default_tmp_storage_engine`=NULL"},
};

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    CHECK(n <= cap);
    for (size_t i = 0; i < n && i < cap; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n < cap ? n : cap;
}

static void feed(struct session_state *st, const struct step *s)
{
    uint8_t buf[512];
    size_t n = unhex(s->ok_hex, buf, sizeof(buf));
    struct ok_packet ok;
    CHECK(ok_packet_parse(buf, n, &ok));
    CHECK(ok.status & 0x4000);
    session_state_on_changes(st, ok.state, ok.state_len, s->collation);
}

/* The SQL of the first packet session_state_write_restore writes, or "" for none. */
static char *restore_sql(const struct session_state *st, unsigned *n_replies)
{
    struct wire_writer w;
    wire_writer_init(&w);
    session_state_write_restore(st, &w, n_replies);
    CHECK(!w.failed);
    char *sql = strdup("");
    if (w.len >= 5 && w.buf[4] == 0x03) {
        size_t len = (size_t)w.buf[0] | (size_t)w.buf[1] << 8 | (size_t)w.buf[2] << 16;
        free(sql);
        sql = strndup((const char *)w.buf + 5, len - 1);
    }
    wire_writer_free(&w);
    return sql;
}

static void test_driver_settings(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct session_state st = {0};
        for (const struct step *s = cases[i].steps; s->ok_hex; s++)
            feed(&st, s);
        CHECK(st.unrestorable == NULL);
        unsigned n = 0;
        char *sql = restore_sql(&st, &n);
        if (strcmp(sql, cases[i].want) != 0)
            fprintf(stderr, "%s:\n  got  %s\n  want %s\n", cases[i].who, sql, cases[i].want);
        CHECK_STR(sql, cases[i].want);
        CHECK(n == 1);
        free(sql);
        session_state_free(&st);
    }
}

/* NULL only where the variable takes NULL; a later value replaces it; '' stays ''. */
static void test_null_values(void)
{
    struct session_state st = {0};
    struct step null_results = {OK_RESULTS_NULL, NULL};
    struct step empty_mode = {OK_SQL_MODE_EMPTY, NULL};
    feed(&st, &null_results);
    feed(&st, &empty_mode);
    unsigned n;
    char *sql = restore_sql(&st, &n);
    CHECK_STR(sql, "SET SESSION `character_set_results`=NULL, `sql_mode`=''");
    free(sql);
    struct step names = {OK_SET_NAMES_UTF8MB4, ""};
    feed(&st, &names);
    sql = restore_sql(&st, &n);
    CHECK_STR(sql, "SET SESSION `sql_mode`='', `character_set_client`='utf8mb4', "
                   "`character_set_connection`='utf8mb4', `character_set_results`='utf8mb4'");
    free(sql);
    session_state_free(&st);
}

/* The statement texts write_restore would re-prepare, newest first, joined by '|'. */
static void check_prepares(const struct session_state *st, const char *want)
{
    struct wire_writer w;
    wire_writer_init(&w);
    unsigned n;
    session_state_write_restore(st, &w, &n);
    char got[256] = "";
    size_t off = 0;
    while (off + 5 <= w.len) {
        size_t len =
            (size_t)w.buf[off] | (size_t)w.buf[off + 1] << 8 | (size_t)w.buf[off + 2] << 16;
        if (w.buf[off + 4] == 0x16)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%.*s", *got ? "|" : "",
                     (int)(len - 1), (const char *)w.buf + off + 5);
        off += 4 + len;
    }
    CHECK_STR(got, want);
    wire_writer_free(&w);
}

static size_t heap_in_use(void)
{
    return mallinfo2().uordblks;
}

#if defined(__SANITIZE_ADDRESS__)
#define HEAP_MEASURED 0 /* the sanitizer's allocator is not glibc's */
#else
#define HEAP_MEASURED 1
#endif

/* The case: 2,000 prepares of 60 KiB whose replies are never matched. */
static void test_unmatched_prepares_are_capped(void)
{
    enum { N = 2000, LEN = 60 * 1024 };
    uint8_t *sql = malloc(LEN);
    memset(sql, 'x', LEN);
    memcpy(sql, "SELECT ", 7);
    size_t before = heap_in_use();
    struct session_state st = {0};
    size_t peak = 0;
    for (int i = 0; i < N; i++) {
        session_state_prepare_sent(&st, sql, LEN);
        CHECK(st.held <= SESSION_STATE_MAX_BYTES);
        size_t used = heap_in_use();
        if (used > peak)
            peak = used;
    }
    if (HEAP_MEASURED)
        CHECK(peak - before < SESSION_STATE_MAX_BYTES + 64 * 1024);
    CHECK(st.unrestorable != NULL && st.stopped == st.unrestorable);
    CHECK(st.prepares == NULL && st.n_prepares == 0 && st.held == 0);
    /* late replies are harmless: the ids go through unchanged */
    CHECK(session_state_prepare_done(&st, true, 5) == 5);
    CHECK(session_state_prepare_done(&st, false, 0) == 0);
    CHECK(st.stmts == NULL);
    session_state_free(&st);
    free(sql);
}

/* Statements the client keeps open count as well: past the cap they are dropped. */
static void test_open_statements_are_capped(void)
{
    enum { LEN = 100 * 1024 };
    uint8_t *sql = malloc(LEN);
    memset(sql, 'y', LEN);
    struct session_state st = {0};
    uint32_t id = 1;
    for (; id <= 20 && !st.unrestorable; id++) {
        session_state_prepare_sent(&st, sql, LEN);
        CHECK(session_state_prepare_done(&st, true, id) == id);
    }
    CHECK(id == 12); /* 10 fit; the 11th would pass 1 MiB */
    CHECK(st.unrestorable && strstr(st.unrestorable, "1 MiB"));
    CHECK(st.stmts == NULL && st.held == 0);
    CHECK(session_state_server_id(&st, 3) == 3);
    /* a reset does not bring recording back: prepares pending across it were lost */
    session_state_reset(&st);
    CHECK(st.unrestorable != NULL);
    session_state_prepare_sent(&st, (const uint8_t *)"SELECT 1", 8);
    CHECK(st.prepares == NULL && st.held == 0);
    session_state_free(&st);
    free(sql);

    /* a single variable past the cap */
    size_t vlen = SESSION_STATE_MAX_BYTES + 1;
    uint8_t *block = malloc(vlen + 64);
    size_t n = 0;
    block[n++] = 0; /* SYSVARS, then lenenc lengths with the 0xfd (3-byte) prefix */
    size_t entry = 1 + 8 + 4 + vlen;
    block[n++] = 0xfd;
    block[n++] = (uint8_t)entry;
    block[n++] = (uint8_t)(entry >> 8);
    block[n++] = (uint8_t)(entry >> 16);
    block[n++] = 8;
    memcpy(block + n, "sql_mode", 8);
    n += 8;
    block[n++] = 0xfd;
    block[n++] = (uint8_t)vlen;
    block[n++] = (uint8_t)(vlen >> 8);
    block[n++] = (uint8_t)(vlen >> 16);
    memset(block + n, 'z', vlen);
    n += vlen;
    struct session_state st2 = {0};
    struct step tz = {OK_TIME_ZONE_UTC, NULL};
    feed(&st2, &tz);
    CHECK(st2.held > 0);
    session_state_on_changes(&st2, block, n, NULL);
    CHECK(st2.unrestorable != NULL && st2.vars == NULL && st2.held == 0);
    free(block);
    session_state_free(&st2);
}

/* More pipelined prepares than the cap: recording stops, nothing is kept. */
static void test_pipelined_prepares_are_capped(void)
{
    struct session_state st = {0};
    for (int i = 0; i < SESSION_STATE_MAX_PENDING; i++)
        session_state_prepare_sent(&st, (const uint8_t *)"SELECT ?", 8);
    CHECK(st.unrestorable == NULL && st.n_prepares == SESSION_STATE_MAX_PENDING);
    session_state_prepare_sent(&st, (const uint8_t *)"SELECT ?", 8);
    CHECK(st.unrestorable != NULL && st.n_prepares == 0 && st.held == 0);
    session_state_free(&st);
}

/* The pending list is a queue: replies complete the oldest prepare first. */
static void test_pending_order(void)
{
    struct session_state st = {0};
    session_state_prepare_sent(&st, (const uint8_t *)"A", 1);
    session_state_prepare_sent(&st, (const uint8_t *)"B", 1);
    CHECK(session_state_prepare_done(&st, true, 1) == 1);
    session_state_prepare_sent(&st, (const uint8_t *)"C", 1);
    session_state_prepare_sent(&st, (const uint8_t *)"D", 1);
    CHECK(session_state_prepare_done(&st, true, 2) == 2);
    CHECK(session_state_prepare_done(&st, false, 0) == 0); /* C failed */
    CHECK(session_state_prepare_done(&st, true, 3) == 3);
    CHECK(st.prepares == NULL && st.prepares_last == NULL && st.n_prepares == 0);
    check_prepares(&st, "D|B|A");
    CHECK(st.held == 3);
    session_state_prepare_sent(&st, (const uint8_t *)"E", 1); /* appends to an emptied queue */
    CHECK(session_state_prepare_done(&st, true, 4) == 4);
    check_prepares(&st, "E|D|B|A");
    session_state_stmt_closed(&st, 2);
    check_prepares(&st, "E|D|A");
    CHECK(st.held == 3);
    session_state_free(&st);
}

/* The session lost track of replies: everything is dropped, ids keep their mapping. */
static void test_stop_recording(void)
{
    struct session_state st = {0};
    struct step tz = {OK_TIME_ZONE_UTC, NULL};
    feed(&st, &tz);
    session_state_prepare_sent(&st, (const uint8_t *)"SELECT 1", 8);
    CHECK(session_state_prepare_done(&st, true, 1) == 1);
    session_state_prepare_sent(&st, (const uint8_t *)"SELECT 2", 8);
    session_state_stop_recording(&st, "lost track");
    CHECK_STR(st.unrestorable, "lost track");
    CHECK(st.vars == NULL && st.stmts == NULL && st.prepares == NULL && st.held == 0);
    feed(&st, &tz);
    CHECK(st.vars == NULL);
    session_state_free(&st);

    /* after a reconnect (ids remapped) the mapping must survive the stop */
    struct session_state m = {0};
    session_state_prepare_sent(&m, (const uint8_t *)"SELECT 1", 8);
    CHECK(session_state_prepare_done(&m, true, 1) == 1);
    session_state_restored(&m, 0, 5); /* the new connection calls it 5 */
    CHECK(m.remapped && session_state_server_id(&m, 1) == 5);
    session_state_prepare_sent(&m, (const uint8_t *)"SELECT 2", 8);
    session_state_stop_recording(&m, "lost track");
    CHECK(m.held == 0 && m.prepares == NULL);
    CHECK(session_state_server_id(&m, 1) == 5);
    /* the pending prepare's reply: server id 1 is the client's statement 1, so it gets 2 */
    CHECK(session_state_prepare_done(&m, true, 1) == 2);
    CHECK(session_state_server_id(&m, 2) == 1);
    session_state_stmt_closed(&m, 1);
    CHECK(session_state_server_id(&m, 1) == 1);
    CHECK(m.held == 0);
    session_state_free(&m);
}

int main(void)
{
    test_driver_settings();
    test_null_values();
    test_unmatched_prepares_are_capped();
    test_open_statements_are_capped();
    test_pipelined_prepares_are_capped();
    test_pending_order();
    test_stop_recording();
    return test_summary();
}
