/*
 * Every live session by the connection id its client saw in the greeting,
 * across workers, so that KILL <id> reaches the session the client means:
 * credproxy's ids are translated to that session's current upstream thread,
 * and ids credproxy never gave get "Unknown thread id", as from the server.
 */
#ifndef CREDPROXY_PROXY_SESSION_REGISTRY_H
#define CREDPROXY_PROXY_SESSION_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

struct route;
struct worker;

/* What the registry knows of one session; embedded in it, written by its own worker. */
struct kill_target {
    struct kill_target *next; /* hash chain (under the registry's lock) */
    uint32_t id;
    const struct route *route;
    struct worker *worker; /* the session's owner */
    uint32_t thread;       /* atomic: the upstream thread it is on now, 0 when it has none */
    int killed;            /* atomic: a KILL CONNECTION named it */
};

void registry_add(struct kill_target *t);
void registry_remove(struct kill_target *t);

/* The session's upstream thread changed (0: it has none now). */
void registry_set_thread(struct kill_target *t, uint32_t thread);

/*
 * Looks up id among the sessions of route r. Returns false when there is
 * none; else *thread is its upstream thread (0 when it has none) and, for a
 * KILL CONNECTION, the session is marked killed first, so that it closes
 * rather than reconnects when the server ends its connection.
 */
bool registry_kill(uint32_t id, const struct route *r, bool connection, uint32_t *thread,
                   struct worker **owner);

/* The entry for id if it belongs to worker w (called on w's thread), else NULL. */
struct kill_target *registry_find_own(uint32_t id, const struct worker *w);

/* True once a KILL CONNECTION named t. */
bool registry_killed(const struct kill_target *t);

#endif
