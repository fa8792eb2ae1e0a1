/* The current credentials of one route: sources publish, workers take a reference. */
#ifndef CREDPROXY_SECRETS_SECRET_STORE_H
#define CREDPROXY_SECRETS_SECRET_STORE_H

#include "secrets/creds.h"

struct secret_store;

struct secret_store *secret_store_new(void);
void secret_store_free(struct secret_store *s);

/* A new reference to the current snapshot (caller unrefs), or NULL before the first. */
struct creds *secret_store_get(struct secret_store *s);

/*
 * The generation of the current snapshot (0 before the first), without taking
 * a reference: a cheap way to tell whether a connection's snapshot is stale.
 */
uint64_t secret_store_generation(struct secret_store *s);

/* Publishes c as current (takes the caller's reference) and sets its generation. */
void secret_store_publish(struct secret_store *s, struct creds *c);

/*
 * Calls fn(arg) after every secret_store_publish(), on the publishing thread, outside the
 * store's lock (a source's own loop: the main one). One listener; NULL removes it.
 */
void secret_store_on_publish(struct secret_store *s, void (*fn)(void *arg), void *arg);

/*
 * The AWSPENDING version while a rotation is under way (caller unrefs), or
 * NULL. Never trusted on its own: a login must prove it works first.
 */
struct creds *secret_store_get_pending(struct secret_store *s);

/* Replaces the pending snapshot (takes the caller's reference; NULL clears it). */
void secret_store_publish_pending(struct secret_store *s, struct creds *c);

#endif
