/*
 * bench_churn: connection churn through Connector/C.
 *
 * N threads each loop as fast as they can: connect, SELECT 1, disconnect.
 * This is what a PHP-style or serverless client does on every request, and it
 * is where a proxy that keeps warm upstream connections can beat a direct
 * login. Prints one JSON object on stdout:
 *
 *   {"threads":8,"seconds":10.00,"connections":N,"errors":E,"cps":X,
 *    "p50_ms":..,"p99_ms":..,"ok_per_s":[..],"err_per_s":[..],"first_error":".."}
 *
 * ok_per_s / err_per_s are per-second counts, so a caller (the rotation
 * workload) can see when errors happened.
 *
 * The password comes from the environment (BENCH_PASSWORD), never argv, so it
 * does not show up in ps; an unset variable means an empty password (credproxy
 * trusts loopback clients).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mysql.h>

#define MAX_SECONDS 3600

struct options {
    const char *host;
    const char *user;
    const char *password;
    const char *db;
    unsigned port;
    int threads;
    double seconds;
};

/* What one thread measured: per-iteration latencies in microseconds. */
struct thread_result {
    uint32_t *lat_us;
    size_t n, cap;
    uint64_t errors;
};

struct thread_arg {
    const struct options *opt;
    struct thread_result res;
};

static double start_time;
static double deadline;
/* Per-second outcome counts, indexed by whole seconds since start_time. */
static atomic_uint_fast64_t ok_per_s[MAX_SECONDS + 2];
static atomic_uint_fast64_t err_per_s[MAX_SECONDS + 2];
static pthread_mutex_t first_error_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[256];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void note_error(const char *what, MYSQL *m)
{
    pthread_mutex_lock(&first_error_lock);
    if (!first_error[0])
        snprintf(first_error, sizeof(first_error), "%s: %u %s", what, mysql_errno(m),
                 mysql_error(m));
    pthread_mutex_unlock(&first_error_lock);
}

static void record(struct thread_result *r, double t0, double t1, int ok)
{
    size_t sec = (size_t)(t1 - start_time);
    if (sec > MAX_SECONDS + 1)
        sec = MAX_SECONDS + 1;
    if (!ok) {
        r->errors++;
        atomic_fetch_add(&err_per_s[sec], 1);
        return;
    }
    atomic_fetch_add(&ok_per_s[sec], 1);
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4096;
        uint32_t *p = realloc(r->lat_us, cap * sizeof(*p));
        if (!p)
            return; /* keep counting; lose only this latency sample */
        r->lat_us = p;
        r->cap = cap;
    }
    double us = (t1 - t0) * 1e6;
    r->lat_us[r->n++] = us > 4e9 ? UINT32_MAX : (uint32_t)us;
}

/* One connect / SELECT 1 / close cycle; returns 1 on success. */
static int one_cycle(const struct options *o)
{
    MYSQL *m = mysql_init(NULL);
    if (!m)
        return 0;
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

static void *worker(void *p)
{
    struct thread_arg *a = p;
    mysql_thread_init();
    for (;;) {
        double t0 = now_s();
        if (t0 >= deadline)
            break;
        int ok = one_cycle(a->opt);
        record(&a->res, t0, now_s(), ok);
    }
    mysql_thread_end();
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_churn --host H --port P --user U [--db D] [--threads N] "
                    "[--seconds S]\n       (password from $BENCH_PASSWORD)\n");
    exit(2);
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

int main(int argc, char **argv)
{
    struct options o = {.host = "127.0.0.1", .user = "app", .threads = 8, .seconds = 10};
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        const char *k = argv[i], *v = argv[++i];
        if (strcmp(k, "--host") == 0)
            o.host = v;
        else if (strcmp(k, "--port") == 0)
            o.port = (unsigned)atoi(v);
        else if (strcmp(k, "--user") == 0)
            o.user = v;
        else if (strcmp(k, "--db") == 0)
            o.db = v;
        else if (strcmp(k, "--threads") == 0)
            o.threads = atoi(v);
        else if (strcmp(k, "--seconds") == 0)
            o.seconds = atof(v);
        else
            usage();
    }
    if (!o.port || o.threads < 1 || o.threads > 1024 || !(o.seconds > 0) || o.seconds > MAX_SECONDS)
        usage();
    o.password = getenv("BENCH_PASSWORD");
    if (!o.password)
        o.password = "";

    if (mysql_library_init(0, NULL, NULL) != 0) {
        fprintf(stderr, "bench_churn: mysql_library_init failed\n");
        return 1;
    }
    struct thread_arg *args = calloc((size_t)o.threads, sizeof(*args));
    pthread_t *tids = calloc((size_t)o.threads, sizeof(*tids));
    if (!args || !tids)
        return 1;
    start_time = now_s();
    deadline = start_time + o.seconds;
    for (int i = 0; i < o.threads; i++) {
        args[i].opt = &o;
        int rc = pthread_create(&tids[i], NULL, worker, &args[i]);
        if (rc != 0) {
            fprintf(stderr, "bench_churn: pthread_create: %s\n", strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < o.threads; i++)
        pthread_join(tids[i], NULL);
    double elapsed = now_s() - start_time;

    /* Merge the latencies of all threads for percentiles. */
    size_t total = 0;
    uint64_t errors = 0;
    for (int i = 0; i < o.threads; i++) {
        total += args[i].res.n;
        errors += args[i].res.errors;
    }
    uint32_t *all = malloc((total ? total : 1) * sizeof(*all));
    if (!all)
        return 1;
    size_t k = 0;
    for (int i = 0; i < o.threads; i++) {
        if (args[i].res.n)
            memcpy(all + k, args[i].res.lat_us, args[i].res.n * sizeof(*all));
        k += args[i].res.n;
        free(args[i].res.lat_us);
    }
    qsort(all, total, sizeof(*all), cmp_u32);
    double p50 = total ? all[total / 2] / 1000.0 : 0;
    double p99 = total ? all[(size_t)((double)(total - 1) * 0.99)] / 1000.0 : 0;

    printf("{\"threads\":%d,\"seconds\":%.3f,\"connections\":%zu,\"errors\":%llu,"
           "\"cps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,",
           o.threads, elapsed, total, (unsigned long long)errors, (double)total / elapsed, p50,
           p99);
    size_t secs = (size_t)elapsed + 1;
    if (secs > MAX_SECONDS + 2)
        secs = MAX_SECONDS + 2;
    printf("\"ok_per_s\":[");
    for (size_t i = 0; i < secs; i++)
        printf("%s%llu", i ? "," : "", (unsigned long long)atomic_load(&ok_per_s[i]));
    printf("],\"err_per_s\":[");
    for (size_t i = 0; i < secs; i++)
        printf("%s%llu", i ? "," : "", (unsigned long long)atomic_load(&err_per_s[i]));
    printf("],\"first_error\":");
    json_string(first_error);
    printf("}\n");
    free(all);
    free(args);
    free(tids);
    mysql_library_end();
    return 0;
}
