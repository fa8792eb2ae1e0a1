/* The churn harness (see churn_run.h). */
#include "churn_run.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SECONDS 3600

/* What one thread measured: per-iteration latencies in microseconds. */
struct thread_result {
    uint32_t *lat_us;
    size_t n, cap;
    uint64_t errors;
};

struct thread_arg {
    const struct churn_client *client;
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

int churn_fail(const char *fmt, ...)
{
    pthread_mutex_lock(&first_error_lock);
    if (!first_error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_error, sizeof(first_error), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&first_error_lock);
    return 0;
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

static void *worker(void *p)
{
    struct thread_arg *a = p;
    void *state = a->client->thread_start(a->client->ctx);
    if (!state)
        return NULL;
    for (;;) {
        double t0 = now_s();
        if (t0 >= deadline)
            break;
        int ok = a->client->cycle(state);
        record(&a->res, t0, now_s(), ok);
    }
    a->client->thread_end(state);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(const char *name)
{
    fprintf(stderr,
            "usage: %s --host H --port P --user U [--db D] [--threads N] "
            "[--seconds S]\n       (password from $BENCH_PASSWORD)\n",
            name);
    exit(2);
}

void churn_parse_args(int argc, char **argv, const char *name, struct churn_options *o)
{
    *o = (struct churn_options){.host = "127.0.0.1", .user = "app", .threads = 8, .seconds = 10};
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage(name);
        const char *k = argv[i], *v = argv[++i];
        if (strcmp(k, "--host") == 0)
            o->host = v;
        else if (strcmp(k, "--port") == 0)
            o->port = (unsigned)atoi(v);
        else if (strcmp(k, "--user") == 0)
            o->user = v;
        else if (strcmp(k, "--db") == 0)
            o->db = v;
        else if (strcmp(k, "--threads") == 0)
            o->threads = atoi(v);
        else if (strcmp(k, "--seconds") == 0)
            o->seconds = atof(v);
        else
            usage(name);
    }
    if (!o->port || o->port > 65535 || o->threads < 1 || o->threads > 1024 || !(o->seconds > 0) ||
        o->seconds > MAX_SECONDS)
        usage(name);
    o->password = getenv("BENCH_PASSWORD");
    if (!o->password)
        o->password = "";
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

int churn_run(const struct churn_options *o, const struct churn_client *client)
{
    struct thread_arg *args = calloc((size_t)o->threads, sizeof(*args));
    pthread_t *tids = calloc((size_t)o->threads, sizeof(*tids));
    if (!args || !tids)
        return 1;
    start_time = now_s();
    deadline = start_time + o->seconds;
    for (int i = 0; i < o->threads; i++) {
        args[i].client = client;
        int rc = pthread_create(&tids[i], NULL, worker, &args[i]);
        if (rc != 0) {
            fprintf(stderr, "%s: pthread_create: %s\n", client->name, strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < o->threads; i++)
        pthread_join(tids[i], NULL);
    double elapsed = now_s() - start_time;

    /* Merge the latencies of all threads for percentiles. */
    size_t total = 0;
    uint64_t errors = 0;
    for (int i = 0; i < o->threads; i++) {
        total += args[i].res.n;
        errors += args[i].res.errors;
    }
    uint32_t *all = malloc((total ? total : 1) * sizeof(*all));
    if (!all)
        return 1;
    size_t k = 0;
    for (int i = 0; i < o->threads; i++) {
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
           o->threads, elapsed, total, (unsigned long long)errors, (double)total / elapsed, p50,
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
    return 0;
}
