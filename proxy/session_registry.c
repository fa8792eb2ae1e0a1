/* The daemon-wide map from client-visible connection ids to sessions, for KILL. */
#include "proxy/session_registry.h"

#include <pthread.h>
#include <stddef.h>

#define REGISTRY_BUCKETS 16384 /* a power of two; chains stay short for 100,000s of sessions */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kill_target *buckets[REGISTRY_BUCKETS];

static struct kill_target **bucket(uint32_t id)
{
    return &buckets[(id * 2654435761u) & (REGISTRY_BUCKETS - 1)];
}

void registry_add(struct kill_target *t)
{
    pthread_mutex_lock(&registry_lock);
    struct kill_target **b = bucket(t->id);
    t->next = *b;
    *b = t;
    pthread_mutex_unlock(&registry_lock);
}

void registry_remove(struct kill_target *t)
{
    pthread_mutex_lock(&registry_lock);
    for (struct kill_target **pp = bucket(t->id); *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    t->next = NULL;
    pthread_mutex_unlock(&registry_lock);
}

void registry_set_thread(struct kill_target *t, uint32_t thread)
{
    __atomic_store_n(&t->thread, thread, __ATOMIC_RELEASE);
}

bool registry_kill(uint32_t id, const struct route *r, bool connection, uint32_t *thread,
                   struct worker **owner)
{
    bool found = false;
    pthread_mutex_lock(&registry_lock);
    for (struct kill_target *t = *bucket(id); t; t = t->next) {
        if (t->id != id || t->route != r)
            continue;
        if (connection)
            __atomic_store_n(&t->killed, 1, __ATOMIC_RELEASE);
        *thread = __atomic_load_n(&t->thread, __ATOMIC_ACQUIRE);
        *owner = t->worker;
        found = true;
        break;
    }
    pthread_mutex_unlock(&registry_lock);
    return found;
}

bool registry_killed(const struct kill_target *t)
{
    return __atomic_load_n(&t->killed, __ATOMIC_ACQUIRE) != 0;
}

struct kill_target *registry_find_own(uint32_t id, const struct worker *w)
{
    struct kill_target *found = NULL;
    pthread_mutex_lock(&registry_lock);
    for (struct kill_target *t = *bucket(id); t; t = t->next) {
        if (t->id == id && t->worker == w) {
            found = t;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    /* Only w frees its sessions, and it is the caller: the entry stays valid. */
    return found;
}
