/* Per-worker counters summed at scrape time, and the ring of recent events (stats.h). */
#include "proxy/stats.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void stats_wait(struct route_stats *st, uint64_t us)
{
    static const double bounds[STATS_N_WAIT] = STATS_WAIT_BOUNDS;
    size_t b = 0;
    while (b < STATS_N_WAIT && (double)us > bounds[b] * 1e6)
        b++;
    stats_inc(st, ST_WAITS);
    stats_add(st, ST_WAIT_SUM_US, us);
    stats_inc(st, (enum stat_key)(ST_WAIT_BUCKET + b));
}

struct route_stats *stats_new(int n_workers)
{
    size_t n = n_workers > 0 ? (size_t)n_workers : 1;
    struct route_stats *b = aligned_alloc(64, n * sizeof(*b));
    if (b)
        memset(b, 0, n * sizeof(*b));
    return b;
}

void stats_sum(const struct route_stats *blocks, int n, uint64_t out[ST_N])
{
    memset(out, 0, ST_N * sizeof(out[0]));
    for (int w = 0; blocks && w < n; w++) {
        for (int k = 0; k < ST_N; k++) {
            uint64_t v = atomic_load_explicit(&blocks[w].v[k], memory_order_relaxed);
            if (k == ST_G_MAX_WAIT_US)
                out[k] = v > out[k] ? v : out[k];
            else
                out[k] += v;
        }
    }
}

static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stats_event events[STATS_EVENTS]; /* ring: the next write goes to n_events % N */
static size_t n_events;                         /* recorded so far, all time */

void stats_event(const char *route, const char *what)
{
    pthread_mutex_lock(&events_lock);
    struct stats_event *e = &events[n_events++ % STATS_EVENTS];
    e->at_unix = (int64_t)time(NULL);
    snprintf(e->route, sizeof(e->route), "%s", route);
    snprintf(e->what, sizeof(e->what), "%s", what);
    pthread_mutex_unlock(&events_lock);
}

size_t stats_events(struct stats_event *out, size_t max)
{
    pthread_mutex_lock(&events_lock);
    size_t have = n_events < STATS_EVENTS ? n_events : STATS_EVENTS;
    size_t n = have < max ? have : max;
    for (size_t i = 0; i < n; i++)
        out[i] = events[(n_events - n + i) % STATS_EVENTS];
    pthread_mutex_unlock(&events_lock);
    return n;
}
