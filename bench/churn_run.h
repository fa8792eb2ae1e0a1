/*
 * The connection-churn harness shared by bench_churn (Connector/C) and
 * bench_churn_proto (the protocol spoken directly): command line, threads
 * looping one client's connect / SELECT 1 / close cycle until the deadline,
 * per-second counts, latency percentiles and the JSON report:
 *
 *   {"threads":8,"seconds":10.00,"connections":N,"errors":E,"cps":X,
 *    "p50_ms":..,"p99_ms":..,"ok_per_s":[..],"err_per_s":[..],"first_error":".."}
 *
 * ok_per_s / err_per_s are per-second counts, so a caller (the rotation
 * workload) can see when errors happened. The password comes from the
 * environment (BENCH_PASSWORD), never argv, so it does not show up in ps; an
 * unset variable means an empty password (credproxy trusts loopback clients).
 */
#ifndef CREDPROXY_BENCH_CHURN_RUN_H
#define CREDPROXY_BENCH_CHURN_RUN_H

struct churn_options {
    const char *host;
    const char *user;
    const char *password;
    const char *db;
    unsigned port;
    int threads;
    double seconds;
};

/* What a client plugs in; ctx is the client's own (shared by every thread). */
struct churn_client {
    const char *name; /* for usage and messages */
    /* Per thread: its state for cycle (NULL means failure), and its teardown. */
    void *(*thread_start)(void *ctx);
    void (*thread_end)(void *state);
    /* One connect / SELECT 1 / close; 1 on success, else 0 after churn_fail. */
    int (*cycle)(void *state);
    void *ctx;
};

/* --host --port --user --db --threads --seconds, and BENCH_PASSWORD; exits 2 on bad usage. */
void churn_parse_args(int argc, char **argv, const char *name, struct churn_options *o);

/* Keeps the run's first error for the report; returns 0, so callers can `return churn_fail(..)`. */
__attribute__((format(printf, 1, 2))) int churn_fail(const char *fmt, ...);

/* Runs the threads until the deadline and prints the report; the process's exit status. */
int churn_run(const struct churn_options *o, const struct churn_client *client);

#endif
