/* Credential choice for upstream logins during a secret rotation. */
#include "proxy/login_policy.h"

#include <pthread.h>
#include <stdio.h>

#include "auth/proto.h"
#include "conf/log.h"
#include "proxy/route.h"
#include "proxy/upstream.h"

void login_attempt_clear(struct login_attempt *a)
{
    creds_unref(a->creds);
    creds_unref(a->refused_pending);
    a->creds = NULL;
    a->refused_pending = NULL;
    a->refused_current = 0;
    a->refusals = 0;
}

struct creds *login_policy_current(struct route *r)
{
    struct creds *cur = secret_store_get(r->store);
    struct creds *stale = NULL;
    pthread_mutex_lock(&r->lock);
    if (r->preferred && cur && cur->generation == r->preferred_over) {
        creds_unref(cur);
        cur = creds_ref(r->preferred);
    } else if (r->preferred) {
        stale = r->preferred; /* AWSCURRENT moved on: it is the one to use now */
        r->preferred = NULL;
    }
    pthread_mutex_unlock(&r->lock);
    creds_unref(stale);
    return cur;
}

/* True when the server already refused c during this login. */
static bool was_refused(const struct login_attempt *a, const struct creds *c)
{
    if (c->generation != 0 && c->generation == a->refused_current)
        return true;
    return a->refused_pending && creds_same_login(c, a->refused_pending);
}

static struct creds *next_candidate(struct route *r, const struct login_attempt *a)
{
    struct creds *cur = login_policy_current(r);
    if (cur && !was_refused(a, cur))
        return cur;
    creds_unref(cur);
    struct creds *pend = secret_store_get_pending(r->store);
    if (pend && !was_refused(a, pend))
        return pend;
    creds_unref(pend);
    return NULL;
}

bool login_policy_next(struct route *r, struct login_attempt *a)
{
    struct creds *c = next_candidate(r, a);
    if (!c) {
        /* Nothing new to try yet: look again (IAM: the refusal already asked for a token). */
        if (r->cfg->upstream_auth != UPSTREAM_AUTH_IAM)
            route_refresh_secret(r);
        return false;
    }
    creds_unref(a->creds);
    a->creds = c;
    return true;
}

void login_policy_refused(struct route *r, struct login_attempt *a)
{
    a->refusals++;
    if (r->cfg->upstream_auth == UPSTREAM_AUTH_IAM) {
        a->refused_current = a->creds->generation;
        route_refresh_secret(r); /* a new token, from fresh AWS credentials */
        log_info("route %s: login as '%s' with an IAM auth token refused%s", r->cfg->name,
                 a->creds->username,
                 a->refusals == 1 ? "; making a new token with refreshed AWS credentials" : "");
        return;
    }
    /* Published versions have a generation; AWSPENDING and its stand-in do not. */
    if (a->creds->generation != 0) {
        a->refused_current = a->creds->generation;
    } else {
        creds_unref(a->refused_pending);
        a->refused_pending = creds_ref(a->creds);
    }
    route_refresh_secret(r); /* perhaps the secret was rotated */
    log_info("route %s: login as '%s' (version %s) refused; trying the secret's other versions",
             r->cfg->name, a->creds->username, a->creds->version ? a->creds->version : "?");
}

void login_policy_succeeded(struct route *r, struct login_attempt *a)
{
    uint64_t gen = secret_store_generation(r->store);
    if (a->creds->generation == gen || a->refused_current != gen)
        return;
    pthread_mutex_lock(&r->lock);
    struct creds *old = r->preferred;
    r->preferred = creds_ref(a->creds);
    r->preferred_over = gen;
    pthread_mutex_unlock(&r->lock);
    creds_unref(old);
    log_info("route %s: AWSCURRENT (generation %llu) is refused but version %s logs in; using it "
             "for new connections until AWSCURRENT changes",
             r->cfg->name, (unsigned long long)gen, a->creds->version ? a->creds->version : "?");
}

bool login_policy_give_up(const struct route *r, const struct login_attempt *a)
{
    return r->cfg->upstream_auth == UPSTREAM_AUTH_IAM && a->refusals >= 2;
}

bool login_policy_retryable(uint16_t code)
{
    return code == PROTO_ER_ACCESS_DENIED || code == 2003 || code == 2013 || code == 1040 ||
           code == 1129 || code == 2026 || code == 1053;
}

void login_policy_final_error(const struct route *r, const struct login_attempt *a,
                              struct upstream_error *err)
{
    if (err->code != PROTO_ER_ACCESS_DENIED)
        return;
    char last[320];
    snprintf(last, sizeof(last), "%.300s", err->message);
    if (r->cfg->upstream_auth == UPSTREAM_AUTH_IAM) {
        snprintf(err->message, sizeof(err->message),
                 "credproxy: route %.40s: the server refused the IAM auth token for '%.40s'%s; "
                 "check the IAM policy (rds-db:connect for this user) and that the user is set "
                 "up for IAM authentication: %.150s",
                 r->cfg->name, a->creds ? a->creds->username : "?",
                 a->refusals >= 2 ? " (also a new one made with refreshed AWS credentials)" : "",
                 last);
        return;
    }
    snprintf(err->message, sizeof(err->message),
             "credproxy: every version of the secret for route %s was refused by the server "
             "(tried AWSCURRENT%s): %s",
             r->cfg->name, a->refused_pending ? " and AWSPENDING" : "", last);
}
