/*
 * A MySQL 8-style login: Connector/C told to answer the greeting with another auth plugin
 * first (MYSQL_DEFAULT_AUTH, as mysql --default-auth does), e.g. caching_sha2_password, the
 * default of MySQL 8 clients. The server (or credproxy) must switch it to the plugin it wants.
 *
 *   sha2_first HOST PORT PLUGIN [USER [DATABASE]]     (password from SHA2_FIRST_PASSWORD)
 *
 * Logs in, runs a prepared SELECT ? + 1 and SELECT CURRENT_USER(), prints "OK <user>" and
 * exits 0; prints "ERROR <errno> <message>" and exits 1 on any failure.
 */
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(MYSQL *db, const char *what)
{
    printf("ERROR %u %s: %s\n", mysql_errno(db), what, mysql_error(db));
    mysql_close(db);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT PLUGIN [USER [DATABASE]]\n", argv[0]);
        return 2;
    }
    const char *user = argc > 4 ? argv[4] : "x";
    const char *database = argc > 5 ? argv[5] : NULL;
    const char *password = getenv("SHA2_FIRST_PASSWORD");
    unsigned int timeout = 20;
    unsigned int port = (unsigned int)strtoul(argv[2], NULL, 10);

    MYSQL *db = mysql_init(NULL);
    if (!db) {
        printf("ERROR 0 mysql_init\n");
        return 1;
    }
    mysql_optionsv(db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_optionsv(db, MYSQL_OPT_READ_TIMEOUT, &timeout);
    if (mysql_optionsv(db, MYSQL_DEFAULT_AUTH, argv[3]))
        return fail(db, "MYSQL_DEFAULT_AUTH");
    if (!mysql_real_connect(db, argv[1], user, password ? password : "", database, port, NULL, 0))
        return fail(db, "connect");

    MYSQL_STMT *stmt = mysql_stmt_init(db);
    const char *sql = "SELECT ? + 1";
    long long in = 41, out = 0;
    MYSQL_BIND param, result;
    memset(&param, 0, sizeof(param));
    memset(&result, 0, sizeof(result));
    param.buffer_type = MYSQL_TYPE_LONGLONG;
    param.buffer = &in;
    result.buffer_type = MYSQL_TYPE_LONGLONG;
    result.buffer = &out;
    if (!stmt || mysql_stmt_prepare(stmt, sql, strlen(sql)) ||
        mysql_stmt_bind_param(stmt, &param) || mysql_stmt_execute(stmt) ||
        mysql_stmt_bind_result(stmt, &result) || mysql_stmt_fetch(stmt)) {
        printf("ERROR %u prepared SELECT: %s\n", stmt ? mysql_stmt_errno(stmt) : 0,
               stmt ? mysql_stmt_error(stmt) : "mysql_stmt_init");
        return 1;
    }
    mysql_stmt_close(stmt);
    if (out != 42) {
        printf("ERROR 0 SELECT ? + 1 gave %lld\n", out);
        return 1;
    }
    if (mysql_query(db, "SELECT CURRENT_USER()"))
        return fail(db, "SELECT CURRENT_USER()");
    MYSQL_RES *res = mysql_store_result(db);
    MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
    if (!row || !row[0])
        return fail(db, "no CURRENT_USER() row");
    printf("OK %s\n", row[0]);
    mysql_free_result(res);
    mysql_close(db);
    return 0;
}
