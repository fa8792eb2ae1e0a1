/*
 * COM_CHANGE_USER with a new character set, then an escaped string: the
 * server must parse the query in the character set the client library
 * escaped it for. Logs in with latin1, changes user with gbk, escapes
 * "\xbf\x5c' OR 1=1 -- " with mysql_real_escape_string and counts the rows
 * it matches (0 when the server uses gbk too; every row when it still
 * parses latin1 — an injection).
 *
 * usage: change_user_charset HOST PORT USER PASSWORD DB
 * prints "rows=N charset=NAME" and exits 0, or prints the error and exits 1.
 */
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(MYSQL *m, const char *what)
{
    fprintf(stderr, "%s: %u %s\n", what, mysql_errno(m), mysql_error(m));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT USER PASSWORD DB\n", argv[0]);
        return 2;
    }
    MYSQL *m = mysql_init(NULL);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "latin1");
    if (!mysql_real_connect(m, argv[1], argv[3], argv[4], argv[5], (unsigned)atoi(argv[2]), NULL,
                            0))
        return fail(m, "connect");
    if (mysql_query(m, "CREATE TEMPORARY TABLE cu_t (a VARBINARY(20))") ||
        mysql_query(m, "INSERT INTO cu_t VALUES ('one'), ('two'), ('three')"))
        return fail(m, "setup");
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "gbk");
    if (mysql_change_user(m, argv[3], argv[4], argv[5]))
        return fail(m, "change_user");
    /* The change reset the session: the table is gone; make it again in gbk's world. */
    if (mysql_query(m, "CREATE TEMPORARY TABLE cu_t (a VARBINARY(20))") ||
        mysql_query(m, "INSERT INTO cu_t VALUES ('one'), ('two'), ('three')"))
        return fail(m, "setup after change_user");
    const char *evil = "\xbf\x5c' OR 1=1 -- ";
    char escaped[64];
    mysql_real_escape_string(m, escaped, evil, (unsigned long)strlen(evil));
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM cu_t WHERE a = '%s'", escaped);
    if (mysql_query(m, sql))
        return fail(m, "query");
    MYSQL_RES *res = mysql_store_result(m);
    MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
    if (!row)
        return fail(m, "result");
    printf("rows=%s", row[0]);
    mysql_free_result(res);
    if (mysql_query(m, "SELECT @@character_set_client") || !(res = mysql_store_result(m)) ||
        !(row = mysql_fetch_row(res)))
        return fail(m, "charset");
    printf(" charset=%s\n", row[0]);
    mysql_free_result(res);
    mysql_close(m);
    return 0;
}
