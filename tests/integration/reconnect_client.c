/*
 * A Connector/C session driven line by line from stdin, so a test can give
 * it state (schema, session variables, prepared statements), break the
 * upstream connection under it, and see what the session still has.
 *
 *   reconnect_client HOST PORT [DB]
 *   reconnect_client --socket PATH [DB]
 *
 * Environment (optional): RECONNECT_CLIENT_USER, RECONNECT_CLIENT_PASSWORD
 * (defaults "credproxy_reconnect" and none: credproxy ignores them).
 *
 * Prints "CONNECTED <connection id>" (or "ERR ..." and exits 1), then reads
 * one command per line and answers each with exactly one line:
 *
 *   query SQL                 ROW<TAB>v1<TAB>v2...  first row of a result set
 *                             ROW                   a result set without rows
 *                             OK <affected rows>    no result set
 *   prepare NAME SQL          OK <statement id as libmariadb knows it>
 *   execute NAME [ARG...]     like query; ARGs (space separated) bind as strings
 *   close NAME                OK
 *   quit                      exits 0 (also at end of input)
 *
 * Any failure answers "ERR <errno> <sqlstate> <message>". NULL prints as NULL.
 * Automatic reconnection (MYSQL_OPT_RECONNECT) stays off: a reconnect the
 * test sees is credproxy's.
 */
#include <mysql.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STMTS  16
#define MAX_PARAMS 8
#define MAX_COLS   16
#define VALUE_LEN  512

static MYSQL *conn;

static struct {
    char name[64];
    MYSQL_STMT *stmt;
} stmts[MAX_STMTS];

static void print_err(unsigned no, const char *state, const char *msg)
{
    /* One line: a message with a newline in it would desynchronise the driver. */
    printf("ERR %u %s ", no, state);
    for (const char *p = msg; *p; p++)
        putchar(*p == '\n' || *p == '\r' ? ' ' : *p);
    putchar('\n');
}

static void conn_err(void)
{
    print_err(mysql_errno(conn), mysql_sqlstate(conn), mysql_error(conn));
}

static void stmt_err(MYSQL_STMT *stmt)
{
    print_err(mysql_stmt_errno(stmt), mysql_stmt_sqlstate(stmt), mysql_stmt_error(stmt));
}

static void cmd_query(const char *sql)
{
    if (mysql_query(conn, sql) != 0) {
        conn_err();
        return;
    }
    MYSQL_RES *res = mysql_store_result(conn);
    if (!res) {
        if (mysql_field_count(conn) != 0)
            conn_err();
        else
            printf("OK %llu\n", (unsigned long long)mysql_affected_rows(conn));
        return;
    }
    MYSQL_ROW row = mysql_fetch_row(res);
    printf("ROW");
    if (row) {
        unsigned n = mysql_num_fields(res);
        for (unsigned i = 0; i < n; i++)
            printf("\t%s", row[i] ? row[i] : "NULL");
    }
    printf("\n");
    mysql_free_result(res);
    while (mysql_more_results(conn) && mysql_next_result(conn) == 0)
        mysql_free_result(mysql_store_result(conn));
}

static int find_stmt(const char *name)
{
    for (int i = 0; i < MAX_STMTS; i++)
        if (stmts[i].stmt && strcmp(stmts[i].name, name) == 0)
            return i;
    return -1;
}

static void cmd_prepare(char *args)
{
    char *sql = strchr(args, ' ');
    if (!sql) {
        print_err(0, "HY000", "usage: prepare NAME SQL");
        return;
    }
    *sql++ = '\0';
    if (find_stmt(args) >= 0) {
        print_err(0, "HY000", "statement name in use");
        return;
    }
    int slot = -1;
    for (int i = 0; i < MAX_STMTS && slot < 0; i++)
        if (!stmts[i].stmt)
            slot = i;
    if (slot < 0 || strlen(args) >= sizeof(stmts[0].name)) {
        print_err(0, "HY000", "too many statements or name too long");
        return;
    }
    MYSQL_STMT *stmt = mysql_stmt_init(conn);
    if (!stmt) {
        conn_err();
        return;
    }
    if (mysql_stmt_prepare(stmt, sql, strlen(sql)) != 0) {
        stmt_err(stmt);
        mysql_stmt_close(stmt);
        return;
    }
    snprintf(stmts[slot].name, sizeof(stmts[slot].name), "%s", args);
    stmts[slot].stmt = stmt;
    printf("OK %lu\n", stmt->stmt_id);
}

static void cmd_execute(char *args)
{
    char *save = NULL;
    char *name = strtok_r(args, " ", &save);
    int slot = name ? find_stmt(name) : -1;
    if (slot < 0) {
        print_err(0, "HY000", "no such statement");
        return;
    }
    MYSQL_STMT *stmt = stmts[slot].stmt;

    MYSQL_BIND params[MAX_PARAMS];
    unsigned long lens[MAX_PARAMS];
    memset(params, 0, sizeof(params));
    unsigned n_params = 0;
    for (char *a; n_params < MAX_PARAMS && (a = strtok_r(NULL, " ", &save)); n_params++) {
        lens[n_params] = strlen(a);
        params[n_params].buffer_type = MYSQL_TYPE_STRING;
        params[n_params].buffer = a;
        params[n_params].buffer_length = lens[n_params];
        params[n_params].length = &lens[n_params];
    }
    if (n_params != mysql_stmt_param_count(stmt)) {
        print_err(0, "HY000", "wrong number of arguments");
        return;
    }
    if (n_params && mysql_stmt_bind_param(stmt, params) != 0) {
        stmt_err(stmt);
        return;
    }
    if (mysql_stmt_execute(stmt) != 0) {
        stmt_err(stmt);
        return;
    }
    MYSQL_RES *meta = mysql_stmt_result_metadata(stmt);
    if (!meta) {
        printf("OK %llu\n", (unsigned long long)mysql_stmt_affected_rows(stmt));
        return;
    }
    unsigned n_cols = mysql_num_fields(meta);
    mysql_free_result(meta);
    if (n_cols > MAX_COLS)
        n_cols = MAX_COLS;
    MYSQL_BIND cols[MAX_COLS];
    char values[MAX_COLS][VALUE_LEN];
    unsigned long vlens[MAX_COLS];
    my_bool nulls[MAX_COLS];
    memset(cols, 0, sizeof(cols));
    for (unsigned i = 0; i < n_cols; i++) {
        cols[i].buffer_type = MYSQL_TYPE_STRING;
        cols[i].buffer = values[i];
        cols[i].buffer_length = VALUE_LEN;
        cols[i].length = &vlens[i];
        cols[i].is_null = &nulls[i];
    }
    if (mysql_stmt_bind_result(stmt, cols) != 0 || mysql_stmt_store_result(stmt) != 0) {
        stmt_err(stmt);
        return;
    }
    int rc = mysql_stmt_fetch(stmt);
    if (rc == 1) {
        stmt_err(stmt);
        mysql_stmt_free_result(stmt);
        return;
    }
    printf("ROW");
    if (rc != MYSQL_NO_DATA)
        for (unsigned i = 0; i < n_cols; i++) {
            size_t len = vlens[i] < VALUE_LEN ? vlens[i] : VALUE_LEN - 1;
            values[i][len] = '\0';
            printf("\t%s", nulls[i] ? "NULL" : values[i]);
        }
    printf("\n");
    mysql_stmt_free_result(stmt);
}

static void cmd_close(const char *name)
{
    int slot = find_stmt(name);
    if (slot < 0) {
        print_err(0, "HY000", "no such statement");
        return;
    }
    mysql_stmt_close(stmts[slot].stmt);
    stmts[slot].stmt = NULL;
    printf("OK 0\n");
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s HOST PORT [DB] | --socket PATH [DB]\n", argv[0]);
        return 2;
    }
    const char *host = NULL, *sock = NULL, *db = argc == 4 ? argv[3] : NULL;
    unsigned port = 0;
    if (strcmp(argv[1], "--socket") == 0) {
        sock = argv[2];
    } else {
        host = argv[1];
        port = (unsigned)strtoul(argv[2], NULL, 10);
    }
    const char *user = getenv("RECONNECT_CLIENT_USER");
    const char *pass = getenv("RECONNECT_CLIENT_PASSWORD");

    conn = mysql_init(NULL);
    unsigned int timeout = 60;
    my_bool reconnect = 0;
    mysql_options(conn, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(conn, MYSQL_OPT_READ_TIMEOUT, &timeout);
    mysql_options(conn, MYSQL_OPT_WRITE_TIMEOUT, &timeout);
    mysql_options(conn, MYSQL_OPT_RECONNECT, &reconnect);
    mysql_options(conn, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!mysql_real_connect(conn, host, user ? user : "credproxy_reconnect", pass ? pass : "", db,
                            port, sock, 0)) {
        conn_err();
        mysql_close(conn);
        return 1;
    }
    printf("CONNECTED %lu\n", mysql_thread_id(conn));
    fflush(stdout);

    char line[4096];
    while (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *arg = strchr(line, ' ');
        if (arg)
            *arg++ = '\0';
        else
            arg = line + strlen(line);
        if (strcmp(line, "query") == 0)
            cmd_query(arg);
        else if (strcmp(line, "prepare") == 0)
            cmd_prepare(arg);
        else if (strcmp(line, "execute") == 0)
            cmd_execute(arg);
        else if (strcmp(line, "close") == 0)
            cmd_close(arg);
        else if (strcmp(line, "quit") == 0)
            break;
        else
            print_err(0, "HY000", "unknown command");
        fflush(stdout);
    }
    for (int i = 0; i < MAX_STMTS; i++)
        if (stmts[i].stmt)
            mysql_stmt_close(stmts[i].stmt);
    mysql_close(conn);
    return 0;
}
