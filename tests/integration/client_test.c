/*
 * A Connector/C client that walks the MySQL protocol end to end: prepared
 * statements, cursors, long data, multi-results, the administrative commands,
 * LOAD DATA LOCAL and packets over 16 MiB. Runs through credproxy, or
 * directly against the server to check the program itself.
 *
 *   client_test HOST PORT
 *   client_test --socket PATH
 *
 * Environment (all optional):
 *   CLIENT_TEST_USER         login name (default "credproxy_client"; credproxy ignores it)
 *   CLIENT_TEST_PASSWORD     password (default none; set it for direct runs)
 *   CLIENT_TEST_DB           schema to connect to (default none: the proxy's default)
 *   CLIENT_TEST_CHANGE_USER  user for mysql_change_user (default "credproxy_other")
 *   CLIENT_TEST_EXPECT_USER  when set, CURRENT_USER() must be this user at any host
 *
 * Prints "name: OK", "name: SKIP (why)" or "name: FAIL" per step, the reason
 * above a failure, and exits 1 when any step failed.
 */
#include <mysql.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BIG_BLOB_SIZE  (20u * 1024u * 1024u)
#define LONG_DATA_SIZE (1024u * 1024u)
#define INFILE_ROWS    100000
#define STMT_ROWS      10

static MYSQL *conn;
static int failures;
static const char *step_name;
static char tbl[64];       /* main table, unique per run */
static char tbl_load[64];  /* LOAD DATA / bulk target */
static char proc[64];      /* stored procedure */
static char identity[256]; /* CURRENT_USER() at connect */
static char schema[256];   /* DATABASE() at connect */
static bool skipped;       /* set by a step that could not run */
static char skip_reason[256];

/* Prints why the current step fails; always returns false so steps can `return fail(...)`. */
__attribute__((format(printf, 1, 2))) static bool fail(const char *fmt, ...)
{
    va_list ap;
    printf("  %s: ", step_name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    return false;
}

static bool fail_mysql(const char *what)
{
    return fail("%s: error %u (%s): %s", what, mysql_errno(conn), mysql_sqlstate(conn),
                mysql_error(conn));
}

static bool fail_stmt(MYSQL_STMT *stmt, const char *what)
{
    bool r = fail("%s: error %u (%s): %s", what, mysql_stmt_errno(stmt), mysql_stmt_sqlstate(stmt),
                  mysql_stmt_error(stmt));
    mysql_stmt_close(stmt);
    return r;
}

static bool skip(const char *why)
{
    skipped = true;
    snprintf(skip_reason, sizeof(skip_reason), "%s", why);
    return true;
}

static void run_step(const char *name, bool (*fn)(void))
{
    step_name = name;
    skipped = false;
    bool ok = fn();
    if (ok && skipped)
        printf("%s: SKIP (%s)\n", name, skip_reason);
    else
        printf("%s: %s\n", name, ok ? "OK" : "FAIL");
    if (!ok)
        failures++;
    fflush(stdout);
}

/* Runs a statement that returns no rows, formatted like printf. */
__attribute__((format(printf, 1, 2))) static bool exec_sql(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    if (mysql_query(conn, sql) != 0)
        return fail("%s: error %u: %s", sql, mysql_errno(conn), mysql_error(conn));
    MYSQL_RES *res = mysql_store_result(conn);
    mysql_free_result(res);
    return true;
}

/* Runs a query whose first row's first column is copied into out (NULL becomes "NULL"). */
static bool query_value(const char *sql, char *out, size_t outlen)
{
    if (mysql_query(conn, sql) != 0)
        return fail("%s: error %u: %s", sql, mysql_errno(conn), mysql_error(conn));
    MYSQL_RES *res = mysql_store_result(conn);
    if (!res)
        return fail("%s: no result set", sql);
    MYSQL_ROW row = mysql_fetch_row(res);
    bool ok = row != NULL;
    if (ok)
        snprintf(out, outlen, "%s", row[0] ? row[0] : "NULL");
    else
        fail("%s: no row", sql);
    mysql_free_result(res);
    return ok;
}

static bool query_long(const char *sql, long long *out)
{
    char buf[64];
    if (!query_value(sql, buf, sizeof(buf)))
        return false;
    *out = strtoll(buf, NULL, 10);
    return true;
}

/* Deterministic bytes, so both sides of a round trip can be compared. */
static void fill_pattern(unsigned char *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed | 1u;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (unsigned char)x;
    }
}

static bool step_identity(void)
{
    if (!query_value("SELECT CURRENT_USER()", identity, sizeof(identity)))
        return false;
    if (!query_value("SELECT DATABASE()", schema, sizeof(schema)))
        return false;
    printf("  CURRENT_USER()=%s DATABASE()=%s server=%s\n", identity, schema,
           mysql_get_server_info(conn));
    const char *expect = getenv("CLIENT_TEST_EXPECT_USER");
    if (expect && *expect) {
        size_t n = strlen(expect);
        if (strncmp(identity, expect, n) != 0 || identity[n] != '@')
            return fail("CURRENT_USER() is %s, expected %s@...", identity, expect);
    }
    if (strcmp(schema, "NULL") == 0)
        return fail("no default schema");
    return true;
}

static bool step_create(void)
{
    return exec_sql("DROP TABLE IF EXISTS %s, %s", tbl, tbl_load) &&
           exec_sql("CREATE TABLE %s (id INT PRIMARY KEY, i INT, d DOUBLE, s VARCHAR(200), n INT "
                    "NULL, dt DATE, b LONGBLOB) CHARACTER SET utf8mb4",
                    tbl) &&
           exec_sql("CREATE TABLE %s (id INT PRIMARY KEY, name VARCHAR(64) NULL)", tbl_load);
}

/* The values row id gets in the prepared-statement steps. */
static void row_values(int id, int *i, double *d, char *s, size_t slen, MYSQL_TIME *dt)
{
    *i = id * 7 - 3;
    *d = id * 1.5 + 0.25;
    snprintf(s, slen, "row-%d-\xc3\xa9\xe6\x97\xa5", id); /* "row-N-é日" in UTF-8 */
    memset(dt, 0, sizeof(*dt));
    dt->year = 2024;
    dt->month = 2;
    dt->day = (unsigned)id;
    dt->time_type = MYSQL_TIMESTAMP_DATE;
}

static bool step_prepared_insert(void)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "INSERT INTO %s (id, i, d, s, n, dt) VALUES (?, ?, ?, ?, ?, ?)",
             tbl);
    MYSQL_STMT *stmt = mysql_stmt_init(conn);
    if (mysql_stmt_prepare(stmt, sql, strlen(sql)) != 0)
        return fail_stmt(stmt, "prepare");
    if (mysql_stmt_param_count(stmt) != 6)
        return fail("param count %lu", mysql_stmt_param_count(stmt));

    int id, iv, nv;
    double dv;
    char sv[64];
    unsigned long slen;
    my_bool n_null;
    MYSQL_TIME dt;
    MYSQL_BIND b[6];
    memset(b, 0, sizeof(b));
    b[0].buffer_type = MYSQL_TYPE_LONG;
    b[0].buffer = &id;
    b[1].buffer_type = MYSQL_TYPE_LONG;
    b[1].buffer = &iv;
    b[2].buffer_type = MYSQL_TYPE_DOUBLE;
    b[2].buffer = &dv;
    b[3].buffer_type = MYSQL_TYPE_STRING;
    b[3].buffer = sv;
    b[3].length = &slen;
    b[4].buffer_type = MYSQL_TYPE_LONG;
    b[4].buffer = &nv;
    b[4].is_null = &n_null;
    b[5].buffer_type = MYSQL_TYPE_DATE;
    b[5].buffer = &dt;
    if (mysql_stmt_bind_param(stmt, b) != 0)
        return fail_stmt(stmt, "bind_param");
    for (id = 1; id <= STMT_ROWS; id++) {
        row_values(id, &iv, &dv, sv, sizeof(sv), &dt);
        slen = strlen(sv);
        n_null = id % 2 == 0; /* even rows store NULL in n */
        nv = id * 100;
        if (mysql_stmt_execute(stmt) != 0)
            return fail_stmt(stmt, "execute");
        if (mysql_stmt_affected_rows(stmt) != 1)
            return fail("affected rows %llu", (unsigned long long)mysql_stmt_affected_rows(stmt));
    }
    mysql_stmt_close(stmt);
    return true;
}

/* Executes SELECT id, i, d, s, n, dt ... WHERE id >= 1, optionally with a read-only cursor. */
static bool select_rows(bool cursor)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT id, i, d, s, n, dt FROM %s WHERE id >= ? ORDER BY id", tbl);
    MYSQL_STMT *stmt = mysql_stmt_init(conn);
    if (cursor) {
        unsigned long type = CURSOR_TYPE_READ_ONLY, prefetch = 2;
        if (mysql_stmt_attr_set(stmt, STMT_ATTR_CURSOR_TYPE, &type) ||
            mysql_stmt_attr_set(stmt, STMT_ATTR_PREFETCH_ROWS, &prefetch))
            return fail_stmt(stmt, "attr_set");
    }
    if (mysql_stmt_prepare(stmt, sql, strlen(sql)) != 0)
        return fail_stmt(stmt, "prepare");
    int from = 1;
    MYSQL_BIND p;
    memset(&p, 0, sizeof(p));
    p.buffer_type = MYSQL_TYPE_LONG;
    p.buffer = &from;
    if (mysql_stmt_bind_param(stmt, &p) != 0)
        return fail_stmt(stmt, "bind_param");
    if (mysql_stmt_execute(stmt) != 0)
        return fail_stmt(stmt, "execute");

    int id, iv, nv;
    double dv;
    char sv[64];
    unsigned long slen;
    my_bool n_null;
    MYSQL_TIME dt;
    MYSQL_BIND r[6];
    memset(r, 0, sizeof(r));
    r[0].buffer_type = MYSQL_TYPE_LONG;
    r[0].buffer = &id;
    r[1].buffer_type = MYSQL_TYPE_LONG;
    r[1].buffer = &iv;
    r[2].buffer_type = MYSQL_TYPE_DOUBLE;
    r[2].buffer = &dv;
    r[3].buffer_type = MYSQL_TYPE_STRING;
    r[3].buffer = sv;
    r[3].buffer_length = sizeof(sv);
    r[3].length = &slen;
    r[4].buffer_type = MYSQL_TYPE_LONG;
    r[4].buffer = &nv;
    r[4].is_null = &n_null;
    r[5].buffer_type = MYSQL_TYPE_DATE;
    r[5].buffer = &dt;
    if (mysql_stmt_bind_result(stmt, r) != 0)
        return fail_stmt(stmt, "bind_result");
    if (!cursor && mysql_stmt_store_result(stmt) != 0)
        return fail_stmt(stmt, "store_result");

    int count = 0, rc;
    while ((rc = mysql_stmt_fetch(stmt)) == 0) {
        count++;
        int want_i;
        double want_d;
        char want_s[64];
        MYSQL_TIME want_dt;
        row_values(count, &want_i, &want_d, want_s, sizeof(want_s), &want_dt);
        sv[slen < sizeof(sv) ? slen : sizeof(sv) - 1] = '\0';
        bool want_null = count % 2 == 0;
        if (id != count || iv != want_i || dv != want_d || strcmp(sv, want_s) != 0 ||
            (bool)n_null != want_null || (!want_null && nv != count * 100) ||
            dt.year != want_dt.year || dt.month != want_dt.month || dt.day != want_dt.day) {
            mysql_stmt_close(stmt);
            return fail("row %d differs: id=%d i=%d d=%g s='%s' n=%s dt=%04u-%02u-%02u", count, id,
                        iv, dv, sv, n_null ? "NULL" : "set", dt.year, dt.month, dt.day);
        }
    }
    if (rc != MYSQL_NO_DATA)
        return fail_stmt(stmt, "fetch");
    mysql_stmt_close(stmt);
    if (count != STMT_ROWS)
        return fail("fetched %d rows, expected %d", count, STMT_ROWS);
    return true;
}

static bool step_prepared_select(void)
{
    return select_rows(false);
}

static bool step_cursor(void)
{
    return select_rows(true);
}

/* Reads back column b of row id with the text protocol and compares it with want. */
static bool check_blob(int id, const unsigned char *want, size_t len)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT b FROM %s WHERE id = %d", tbl, id);
    if (mysql_query(conn, sql) != 0)
        return fail_mysql("select blob");
    MYSQL_RES *res = mysql_use_result(conn);
    if (!res)
        return fail_mysql("use_result");
    MYSQL_ROW row = mysql_fetch_row(res);
    unsigned long *lengths = row ? mysql_fetch_lengths(res) : NULL;
    bool ok = true;
    if (!row || !row[0])
        ok = fail("row %d: no blob", id);
    else if (lengths[0] != len)
        ok = fail("row %d: blob of %lu bytes, expected %zu", id, lengths[0], len);
    else if (memcmp(row[0], want, len) != 0)
        ok = fail("row %d: blob bytes differ", id);
    while (mysql_fetch_row(res))
        ;
    mysql_free_result(res);
    return ok;
}

static bool step_send_long_data(void)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE %s SET b = ? WHERE id = 1", tbl);
    MYSQL_STMT *stmt = mysql_stmt_init(conn);
    if (mysql_stmt_prepare(stmt, sql, strlen(sql)) != 0)
        return fail_stmt(stmt, "prepare");
    MYSQL_BIND p;
    memset(&p, 0, sizeof(p));
    p.buffer_type = MYSQL_TYPE_LONG_BLOB;
    if (mysql_stmt_bind_param(stmt, &p) != 0)
        return fail_stmt(stmt, "bind_param");
    unsigned char *data = malloc(LONG_DATA_SIZE);
    if (!data)
        return fail("out of memory");
    fill_pattern(data, LONG_DATA_SIZE, 7);
    const size_t chunk = 16 * 1024;
    for (size_t off = 0; off < LONG_DATA_SIZE; off += chunk) {
        if (mysql_stmt_send_long_data(stmt, 0, (const char *)data + off, chunk) != 0) {
            free(data);
            return fail_stmt(stmt, "send_long_data");
        }
    }
    if (mysql_stmt_execute(stmt) != 0) {
        free(data);
        return fail_stmt(stmt, "execute");
    }
    mysql_stmt_close(stmt);
    bool ok = check_blob(1, data, LONG_DATA_SIZE);
    free(data);
    return ok;
}

static bool step_stmt_reset(void)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE %s SET s = ? WHERE id = 2", tbl);
    MYSQL_STMT *stmt = mysql_stmt_init(conn);
    if (mysql_stmt_prepare(stmt, sql, strlen(sql)) != 0)
        return fail_stmt(stmt, "prepare");
    char value[] = "after-reset";
    unsigned long len = strlen(value);
    MYSQL_BIND p;
    memset(&p, 0, sizeof(p));
    p.buffer_type = MYSQL_TYPE_STRING;
    p.buffer = value;
    p.length = &len;
    if (mysql_stmt_bind_param(stmt, &p) != 0)
        return fail_stmt(stmt, "bind_param");
    /* Long data sent before the reset must be discarded by COM_STMT_RESET. */
    if (mysql_stmt_send_long_data(stmt, 0, "discarded", 9) != 0)
        return fail_stmt(stmt, "send_long_data");
    if (mysql_stmt_reset(stmt) != 0)
        return fail_stmt(stmt, "reset");
    if (mysql_stmt_execute(stmt) != 0)
        return fail_stmt(stmt, "execute after reset");
    mysql_stmt_close(stmt);
    char got[64];
    snprintf(sql, sizeof(sql), "SELECT s FROM %s WHERE id = 2", tbl);
    if (!query_value(sql, got, sizeof(got)))
        return false;
    if (strcmp(got, value) != 0)
        return fail("s is '%s', expected '%s'", got, value);
    return true;
}

/*
 * Drains the results of the last mysql_query into counts: result sets and OK-only results,
 * checking each result set's first value against want (may be NULL).
 */
static bool drain_results(int *sets, int *oks, const char *const *want, int nwant)
{
    *sets = *oks = 0;
    int status;
    do {
        MYSQL_RES *res = mysql_store_result(conn);
        if (res) {
            MYSQL_ROW row = mysql_fetch_row(res);
            if (want && *sets < nwant && (!row || !row[0] || strcmp(row[0], want[*sets]) != 0)) {
                bool r = fail("result set %d: got '%s', expected '%s'", *sets + 1,
                              row && row[0] ? row[0] : "(none)", want[*sets]);
                mysql_free_result(res);
                return r;
            }
            (*sets)++;
            mysql_free_result(res);
        } else if (mysql_field_count(conn) == 0) {
            (*oks)++;
        } else {
            return fail_mysql("store_result");
        }
        status = mysql_next_result(conn);
        if (status > 0)
            return fail_mysql("next_result");
    } while (status == 0);
    return true;
}

static bool step_multi_results(void)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT 1; SELECT 2, 'two'; UPDATE %s SET i = i + 0 WHERE id = 1; SELECT COUNT(*) "
             "FROM %s",
             tbl, tbl);
    if (mysql_query(conn, sql) != 0)
        return fail_mysql("multi query");
    static const char *const want[] = {"1", "2", "10"};
    int sets, oks;
    if (!drain_results(&sets, &oks, want, 3))
        return false;
    if (sets != 3 || oks != 1)
        return fail("%d result sets and %d OK results, expected 3 and 1", sets, oks);
    return true;
}

static bool step_procedure(void)
{
    if (!exec_sql("DROP PROCEDURE IF EXISTS %s", proc) ||
        !exec_sql("CREATE PROCEDURE %s() BEGIN SELECT 'p1'; SELECT 'p2'; END", proc))
        return false;
    char sql[128];
    snprintf(sql, sizeof(sql), "CALL %s()", proc);
    if (mysql_query(conn, sql) != 0)
        return fail_mysql("call");
    static const char *const want[] = {"p1", "p2"};
    int sets, oks;
    if (!drain_results(&sets, &oks, want, 2))
        return false;
    if (sets != 2 || oks != 1)
        return fail("%d result sets and %d OK results, expected 2 and 1", sets, oks);
    return true;
}

static bool step_field_list(void)
{
    MYSQL_RES *res = mysql_list_fields(conn, tbl, NULL);
    if (!res) {
        if (mysql_errno(conn) == 1047) /* ER_UNKNOWN_COM_ERROR */
            return skip("COM_FIELD_LIST not supported by the server");
        return fail_mysql("list_fields");
    }
    unsigned n = mysql_num_fields(res);
    MYSQL_FIELD *f = mysql_fetch_fields(res);
    bool ok = n == 7 && strcmp(f[0].name, "id") == 0 && strcmp(f[6].name, "b") == 0;
    mysql_free_result(res);
    if (!ok)
        return fail("%u fields", n);
    return true;
}

static bool step_statistics(void)
{
    const char *s = mysql_stat(conn);
    if (!s)
        return fail_mysql("stat");
    if (!strstr(s, "Uptime"))
        return fail("unexpected statistics '%s'", s);
    return true;
}

static bool step_set_option(void)
{
    if (mysql_set_server_option(conn, MYSQL_OPTION_MULTI_STATEMENTS_OFF) != 0)
        return fail_mysql("MULTI_STATEMENTS_OFF");
    if (mysql_query(conn, "SELECT 1; SELECT 2") == 0)
        return fail("multi-statement accepted with MULTI_STATEMENTS_OFF");
    if (mysql_errno(conn) != 1064) /* ER_PARSE_ERROR */
        return fail_mysql("multi-statement with MULTI_STATEMENTS_OFF");
    if (mysql_set_server_option(conn, MYSQL_OPTION_MULTI_STATEMENTS_ON) != 0)
        return fail_mysql("MULTI_STATEMENTS_ON");
    if (mysql_query(conn, "SELECT 1; SELECT 2") != 0)
        return fail_mysql("multi-statement with MULTI_STATEMENTS_ON");
    int sets, oks;
    if (!drain_results(&sets, &oks, NULL, 0))
        return false;
    if (sets != 2)
        return fail("%d result sets, expected 2", sets);
    return true;
}

/* True when session variable @credproxy_v is NULL and the temporary table is gone. */
static bool session_is_fresh(void)
{
    char v[64];
    if (!query_value("SELECT @credproxy_v", v, sizeof(v)))
        return false;
    if (strcmp(v, "NULL") != 0)
        return fail("@credproxy_v is still %s", v);
    if (mysql_query(conn, "SELECT * FROM credproxy_tmp") == 0) {
        mysql_free_result(mysql_store_result(conn));
        return fail("temporary table survived");
    }
    if (mysql_errno(conn) != 1146) /* ER_NO_SUCH_TABLE */
        return fail_mysql("select from dropped temporary table");
    return true;
}

static bool dirty_session(void)
{
    return exec_sql("SET @credproxy_v = 42") &&
           exec_sql("CREATE TEMPORARY TABLE credproxy_tmp (a INT)");
}

static bool step_reset_connection(void)
{
    if (!dirty_session())
        return false;
    if (mysql_reset_connection(conn) != 0)
        return fail_mysql("reset_connection");
    if (!session_is_fresh())
        return false;
    char db[256];
    if (!query_value("SELECT DATABASE()", db, sizeof(db)))
        return false;
    if (strcmp(db, schema) != 0)
        return fail("DATABASE() is %s after reset, expected %s", db, schema);
    return true;
}

static bool step_change_user(void)
{
    if (!dirty_session())
        return false;
    const char *user = getenv("CLIENT_TEST_CHANGE_USER");
    const char *pass = getenv("CLIENT_TEST_PASSWORD");
    if (mysql_change_user(conn, user ? user : "credproxy_other", pass ? pass : "", schema) != 0)
        return fail_mysql("change_user");
    if (!session_is_fresh())
        return false;
    char who[256], db[256];
    if (!query_value("SELECT CURRENT_USER()", who, sizeof(who)) ||
        !query_value("SELECT DATABASE()", db, sizeof(db)))
        return false;
    if (strcmp(who, identity) != 0)
        return fail("CURRENT_USER() is %s after change_user, expected %s", who, identity);
    if (strcmp(db, schema) != 0)
        return fail("DATABASE() is %s after change_user, expected %s", db, schema);
    return true;
}

static bool step_local_infile(void)
{
    char path[] = "/tmp/credproxy-infile-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return fail("mkstemp failed");
    FILE *f = fdopen(fd, "w");
    for (int i = 1; i <= INFILE_ROWS; i++)
        fprintf(f, "%d\tname-%d\n", i, i);
    fclose(f);
    char sql[256];
    snprintf(sql, sizeof(sql), "LOAD DATA LOCAL INFILE '%s' INTO TABLE %s (id, name)", path,
             tbl_load);
    int rc = mysql_query(conn, sql);
    unlink(path);
    if (rc != 0)
        return fail_mysql("load data local infile");
    if (mysql_affected_rows(conn) != INFILE_ROWS)
        return fail("affected rows %llu", (unsigned long long)mysql_affected_rows(conn));
    long long count, sum;
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s", tbl_load);
    if (!query_long(sql, &count))
        return false;
    snprintf(sql, sizeof(sql), "SELECT SUM(id) FROM %s WHERE name = CONCAT('name-', id)", tbl_load);
    if (!query_long(sql, &sum))
        return false;
    long long want_sum = (long long)INFILE_ROWS * (INFILE_ROWS + 1) / 2;
    if (count != INFILE_ROWS || sum != want_sum)
        return fail("count %lld sum %lld, expected %d and %lld", count, sum, INFILE_ROWS, want_sum);
    return true;
}

static bool step_bulk_insert(void)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "INSERT INTO %s (id) VALUES (?)", tbl_load);
    MYSQL_STMT *stmt = mysql_stmt_init(conn);
    if (mysql_stmt_prepare(stmt, sql, strlen(sql)) != 0)
        return fail_stmt(stmt, "prepare");
    enum { N = 100 };
    int ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = INFILE_ROWS + 1 + i;
    unsigned int size = N;
    if (mysql_stmt_attr_set(stmt, STMT_ATTR_ARRAY_SIZE, &size) != 0)
        return fail_stmt(stmt, "attr_set ARRAY_SIZE");
    MYSQL_BIND p;
    memset(&p, 0, sizeof(p));
    p.buffer_type = MYSQL_TYPE_LONG;
    p.buffer = ids;
    if (mysql_stmt_bind_param(stmt, &p) != 0)
        return fail_stmt(stmt, "bind_param");
    if (mysql_stmt_execute(stmt) != 0)
        return fail_stmt(stmt, "execute");
    mysql_stmt_close(stmt);
    long long count;
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s WHERE id > %d", tbl_load, INFILE_ROWS);
    if (!query_long(sql, &count))
        return false;
    if (count != N)
        return fail("%lld rows, expected %d", count, N);
    return true;
}

static bool step_big_blob(void)
{
    unsigned char *data = malloc(BIG_BLOB_SIZE), *back = malloc(BIG_BLOB_SIZE);
    if (!data || !back) {
        free(data);
        free(back);
        return fail("out of memory");
    }
    fill_pattern(data, BIG_BLOB_SIZE, 20);
    bool ok = false;
    char sql[128];
    snprintf(sql, sizeof(sql), "INSERT INTO %s (id, b) VALUES (100, ?)", tbl);
    MYSQL_STMT *stmt = mysql_stmt_init(conn);
    unsigned long len = BIG_BLOB_SIZE;
    MYSQL_BIND p;
    memset(&p, 0, sizeof(p));
    p.buffer_type = MYSQL_TYPE_LONG_BLOB;
    p.buffer = data;
    p.length = &len;
    if (mysql_stmt_prepare(stmt, sql, strlen(sql)) != 0) {
        fail_stmt(stmt, "prepare insert");
        goto out;
    }
    if (mysql_stmt_bind_param(stmt, &p) != 0 || mysql_stmt_execute(stmt) != 0) {
        fail_stmt(stmt, "execute insert (one packet over 16 MiB)");
        goto out;
    }
    mysql_stmt_close(stmt);

    /* Text protocol: a result row over 16 MiB. */
    if (!check_blob(100, data, BIG_BLOB_SIZE))
        goto out;

    /* Binary protocol, into a caller buffer. */
    snprintf(sql, sizeof(sql), "SELECT b FROM %s WHERE id = 100", tbl);
    stmt = mysql_stmt_init(conn);
    if (mysql_stmt_prepare(stmt, sql, strlen(sql)) != 0 || mysql_stmt_execute(stmt) != 0) {
        fail_stmt(stmt, "prepared select");
        goto out;
    }
    unsigned long got = 0;
    MYSQL_BIND r;
    memset(&r, 0, sizeof(r));
    r.buffer_type = MYSQL_TYPE_LONG_BLOB;
    r.buffer = back;
    r.buffer_length = BIG_BLOB_SIZE;
    r.length = &got;
    if (mysql_stmt_bind_result(stmt, &r) != 0 || mysql_stmt_fetch(stmt) != 0) {
        fail_stmt(stmt, "fetch");
        goto out;
    }
    mysql_stmt_close(stmt);
    if (got != BIG_BLOB_SIZE)
        fail("prepared select returned %lu bytes, expected %u", got, BIG_BLOB_SIZE);
    else if (memcmp(back, data, BIG_BLOB_SIZE) != 0)
        fail("prepared select returned different bytes");
    else
        ok = true;
out:
    free(data);
    free(back);
    return ok;
}

static bool step_ping(void)
{
    if (mysql_ping(conn) != 0)
        return fail_mysql("ping");
    return true;
}

static bool step_cleanup(void)
{
    return exec_sql("DROP TABLE %s, %s", tbl, tbl_load) && exec_sql("DROP PROCEDURE %s", proc);
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s HOST PORT | %s --socket PATH\n", argv0, argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = NULL, *sock = NULL;
    unsigned port = 0;
    if (argc != 3)
        usage(argv[0]);
    if (strcmp(argv[1], "--socket") == 0) {
        sock = argv[2];
    } else {
        host = argv[1];
        port = (unsigned)strtoul(argv[2], NULL, 10);
    }
    const char *user = getenv("CLIENT_TEST_USER");
    const char *pass = getenv("CLIENT_TEST_PASSWORD");
    const char *db = getenv("CLIENT_TEST_DB");

    conn = mysql_init(NULL);
    unsigned int timeout = 30, local_infile = 1;
    unsigned long max_packet = 64ul * 1024 * 1024;
    mysql_options(conn, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(conn, MYSQL_OPT_READ_TIMEOUT, &timeout);
    mysql_options(conn, MYSQL_OPT_WRITE_TIMEOUT, &timeout);
    mysql_options(conn, MYSQL_OPT_LOCAL_INFILE, &local_infile);
    mysql_options(conn, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_optionsv(conn, MYSQL_OPT_MAX_ALLOWED_PACKET, &max_packet);
    if (!mysql_real_connect(conn, host, user ? user : "credproxy_client", pass ? pass : "",
                            db && *db ? db : NULL, port, sock,
                            CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS)) {
        printf("connect: FAIL\n  error %u (%s): %s\n", mysql_errno(conn), mysql_sqlstate(conn),
               mysql_error(conn));
        mysql_close(conn);
        return 1;
    }
    printf("connect: OK\n");
    snprintf(tbl, sizeof(tbl), "ct_%d", (int)getpid());
    snprintf(tbl_load, sizeof(tbl_load), "ct_%d_load", (int)getpid());
    snprintf(proc, sizeof(proc), "ct_%d_proc", (int)getpid());

    run_step("identity", step_identity);
    run_step("create_tables", step_create);
    run_step("prepared_insert", step_prepared_insert);
    run_step("prepared_select", step_prepared_select);
    run_step("cursor_fetch", step_cursor);
    run_step("send_long_data", step_send_long_data);
    run_step("stmt_reset", step_stmt_reset);
    run_step("multi_results", step_multi_results);
    run_step("procedure_results", step_procedure);
    run_step("field_list", step_field_list);
    run_step("statistics", step_statistics);
    run_step("set_server_option", step_set_option);
    run_step("reset_connection", step_reset_connection);
    run_step("change_user", step_change_user);
    run_step("local_infile", step_local_infile);
    run_step("bulk_insert", step_bulk_insert);
    run_step("big_blob_20MiB", step_big_blob);
    run_step("ping", step_ping);
    run_step("cleanup", step_cleanup);
    mysql_close(conn);
    printf("%s: %d step(s) failed\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
