/* The current snapshot of one route, swapped under a mutex held only for a pointer copy. */
#include "secrets/secret_store.h"

#include <pthread.h>
#include <stdlib.h>

struct secret_store {
    pthread_mutex_t lock;
    struct creds *current;
    struct creds *pending;         /* AWSPENDING during a rotation, or NULL */
    uint64_t generation;           /* of the last snapshot published here */
    void (*on_publish)(void *arg); /* set before sources run; called on their thread */
    void *on_publish_arg;
};

struct secret_store *secret_store_new(void)
{
    struct secret_store *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

void secret_store_free(struct secret_store *s)
{
    if (!s)
        return;
    creds_unref(s->current);
    creds_unref(s->pending);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

struct creds *secret_store_get(struct secret_store *s)
{
    pthread_mutex_lock(&s->lock);
    /* Taking the reference under the lock keeps publish from freeing it in between. */
    struct creds *c = creds_ref(s->current);
    pthread_mutex_unlock(&s->lock);
    return c;
}

uint64_t secret_store_generation(struct secret_store *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t g = s->generation;
    pthread_mutex_unlock(&s->lock);
    return g;
}

void secret_store_publish(struct secret_store *s, struct creds *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&s->lock);
    struct creds *old = s->current;
    /* Set before anyone else can see c, so the snapshot stays immutable once shared. */
    c->generation = ++s->generation;
    s->current = c;
    pthread_mutex_unlock(&s->lock);
    /* Dropped outside the lock: the last unref wipes and frees, which need not block readers. */
    creds_unref(old);
    if (s->on_publish)
        s->on_publish(s->on_publish_arg);
}

void secret_store_on_publish(struct secret_store *s, void (*fn)(void *arg), void *arg)
{
    s->on_publish = fn;
    s->on_publish_arg = arg;
}

struct creds *secret_store_get_pending(struct secret_store *s)
{
    pthread_mutex_lock(&s->lock);
    struct creds *c = creds_ref(s->pending);
    pthread_mutex_unlock(&s->lock);
    return c;
}

void secret_store_publish_pending(struct secret_store *s, struct creds *c)
{
    pthread_mutex_lock(&s->lock);
    struct creds *old = s->pending;
    s->pending = c;
    pthread_mutex_unlock(&s->lock);
    creds_unref(old);
}
