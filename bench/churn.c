/*
 * bench_churn: connection churn through Connector/C.
 *
 * N threads each loop as fast as they can: connect, SELECT 1, disconnect.
 * This is what a PHP-style or serverless client does on every request, and it
 * is where a proxy that keeps warm upstream connections can beat a direct
 * login. Command line, threads and the JSON report: churn_run.h.
 */
#include <stdio.h>
#include <string.h>

#include <mysql.h>

#include "churn_run.h"

static int note_error(const char *what, MYSQL *m)
{
    return churn_fail("%s: %u %s", what, mysql_errno(m), mysql_error(m));
}

/* One connect / SELECT 1 / close cycle; returns 1 on success. */
static int one_cycle(void *state)
{
    const struct churn_options *o = state;
    MYSQL *m = mysql_init(NULL);
    if (!m)
        return churn_fail("mysql_init: out of memory");
    unsigned timeout = 10;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &timeout);
    int ok = 0;
    if (!mysql_real_connect(m, o->host, o->user, o->password, o->db, o->port, NULL, 0)) {
        note_error("connect", m);
    } else if (mysql_query(m, "SELECT 1") != 0) {
        note_error("query", m);
    } else {
        MYSQL_RES *res = mysql_store_result(m);
        MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
        if (row && row[0] && strcmp(row[0], "1") == 0)
            ok = 1;
        else
            note_error("result", m);
        if (res)
            mysql_free_result(res);
    }
    mysql_close(m);
    return ok;
}

static void *thread_start(void *ctx)
{
    mysql_thread_init();
    return ctx;
}

static void thread_end(void *state)
{
    (void)state;
    mysql_thread_end();
}

int main(int argc, char **argv)
{
    struct churn_options o;
    churn_parse_args(argc, argv, "bench_churn", &o);
    if (mysql_library_init(0, NULL, NULL) != 0) {
        fprintf(stderr, "bench_churn: mysql_library_init failed\n");
        return 1;
    }
    struct churn_client client = {
        .name = "bench_churn",
        .thread_start = thread_start,
        .thread_end = thread_end,
        .cycle = one_cycle,
        .ctx = &o,
    };
    int rc = churn_run(&o, &client);
    mysql_library_end();
    return rc;
}
