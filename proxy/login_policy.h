/*
 * Which version of the secret a new upstream login tries, through a rotation:
 * AWSCURRENT (or a version that logged in while AWSCURRENT was refused), then
 * AWSPENDING, never one the server already refused for this login; which
 * errors are worth another try; and what the final error says.
 */
#ifndef CREDPROXY_PROXY_LOGIN_POLICY_H
#define CREDPROXY_PROXY_LOGIN_POLICY_H

#include <stdbool.h>
#include <stdint.h>

struct route;
struct creds;
struct upstream_error;

/* One login's candidates so far; all zero/NULL to start. */
struct login_attempt {
    struct creds *creds;           /* the version being tried (owned) */
    uint64_t refused_current;      /* generation of AWSCURRENT the server refused (0: none) */
    struct creds *refused_pending; /* pending version the server refused (owned) */
    int refusals;                  /* 1045s so far */
};

void login_attempt_clear(struct login_attempt *a);

/*
 * Picks the next version into a->creds. False when every candidate has been
 * refused for now; the source has then been asked to read the secret again.
 */
bool login_policy_next(struct route *r, struct login_attempt *a);

/* The server refused a->creds (1045): remember it, and ask the source for a fresh read. */
void login_policy_refused(struct route *r, struct login_attempt *a);

/* a->creds logged in: if it stands in for a refused AWSCURRENT, use it for new logins. */
void login_policy_succeeded(struct route *r, struct login_attempt *a);

/*
 * True when a refused login should not wait for another candidate: with upstream_auth=iam,
 * once a token made after the first refusal (from AWS credentials fetched again) is refused
 * too. A secret's rotation window, by contrast, is waited through until connect_timeout.
 */
bool login_policy_give_up(const struct route *r, const struct login_attempt *a);

/* Errors a login waits through until connect_timeout: rotation, restart, failover. */
bool login_policy_retryable(uint16_t code);

/* Rewrites the final error of a login every candidate of which was refused. */
void login_policy_final_error(const struct route *r, const struct login_attempt *a,
                              struct upstream_error *err);

/* The credentials new logins use now (caller unrefs); NULL before any secret. */
struct creds *login_policy_current(struct route *r);

#endif
