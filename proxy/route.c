/* Route set-up and the shared server profile. */
#include "proxy/route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/bufferevent.h>

#include "auth/proto.h"
#include "auth/session_track.h"
#include "auth/tls.h"
#include "auth/users.h"
#include "conf/log.h"
#include "proxy/upstream.h"
#include "secrets/aws_source.h"
#include "secrets/iam_source.h"
#include "secrets/secret_file.h"

/* Until an upstream login shows the real ones: what any 5.7+ server offers. */
#define DEFAULT_PROFILE_CAPS                                                                       \
    (PROTO_CAP_LONG_PASSWORD | PROTO_CAP_FOUND_ROWS | PROTO_CAP_LONG_FLAG |                        \
     PROTO_CAP_CONNECT_WITH_DB | PROTO_CAP_NO_SCHEMA | PROTO_CAP_ODBC | PROTO_CAP_LOCAL_FILES |    \
     PROTO_CAP_IGNORE_SPACE | PROTO_CAP_PROTOCOL_41 | PROTO_CAP_INTERACTIVE |                      \
     PROTO_CAP_IGNORE_SIGPIPE | PROTO_CAP_TRANSACTIONS | PROTO_CAP_RESERVED |                      \
     PROTO_CAP_SECURE_CONNECTION | PROTO_CAP_MULTI_STATEMENTS | PROTO_CAP_MULTI_RESULTS |          \
     PROTO_CAP_PS_MULTI_RESULTS | PROTO_CAP_PLUGIN_AUTH | PROTO_CAP_CONNECT_ATTRS |                \
     PROTO_CAP_PLUGIN_AUTH_LENENC | PROTO_CAP_SESSION_TRACK)

/* The route's secret (file or Secrets Manager) publishing into store; NULL when it has none. */
static bool open_secret(const struct route_config *cfg, struct event_base *base,
                        struct secret_store *store, struct secret_source **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    if (cfg->secret_file) {
        struct secret_file *sf =
            secret_file_open(base, cfg->secret_file, store, cfg->secret_poll_ms, err, errlen);
        if (!sf)
            return false;
        *out = secret_file_source(sf);
    } else if (cfg->secret_id) {
        struct aws_source_config ac = {
            .secret_id = cfg->secret_id,
            .region = cfg->region,
            .endpoint = cfg->secrets_endpoint,
            .regions = cfg->secret_regions,
            .n_regions = cfg->n_secret_regions,
            .endpoints = cfg->secrets_endpoints,
            .n_endpoints = cfg->n_secrets_endpoints,
            .refresh_ms = cfg->secret_refresh_ms,
            .timeout_ms = cfg->aws_timeout_ms,
        };
        *out = aws_source_open(base, &ac, store, err, errlen);
        if (!*out)
            return false;
    }
    return true;
}

/*
 * The source of r->store: the secret itself, or with upstream_auth=iam the IAM token maker,
 * which reads the secret (if any) from a store of its own for the user, host and port.
 */
static bool open_source(struct route *r, const struct route_config *cfg, struct event_base *base,
                        char *err, size_t errlen)
{
    if (cfg->upstream_auth != UPSTREAM_AUTH_IAM)
        return open_secret(cfg, base, r->store, &r->source, err, errlen);
    struct secret_store *inner_store = NULL;
    struct secret_source *inner = NULL;
    if (cfg->secret_file || cfg->secret_id) {
        if (!(inner_store = secret_store_new())) {
            snprintf(err, errlen, "out of memory");
            return false;
        }
        if (!open_secret(cfg, base, inner_store, &inner, err, errlen)) {
            secret_store_free(inner_store);
            return false;
        }
    }
    struct iam_source_config ic = {
        .route = cfg->name,
        .region = cfg->region,
        .user = cfg->upstream_user,
        .host = cfg->upstream_host,
        .port = cfg->upstream_port,
        .secret_id = cfg->secret_id,
        .timeout_ms = cfg->aws_timeout_ms,
    };
    r->source = iam_source_open(base, &ic, inner, inner_store, r->store, err, errlen);
    return r->source != NULL;
}

/*
 * The ephemeral certificate's context, made by the first route that needs one
 * and shared by every such route (each holds a reference of its own); freed,
 * which wipes the key, when the last of them lets go. A later route_init (a
 * test harness starting over) makes a new one.
 */
static pthread_mutex_t ephemeral_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *ephemeral_ctx;
static int ephemeral_users;

/* A reference to the shared ephemeral context, made (and logged) on first use. */
static SSL_CTX *ephemeral_ctx_get(char *err, size_t errlen)
{
    pthread_mutex_lock(&ephemeral_lock);
    if (!ephemeral_ctx) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        ephemeral_ctx = tls_ephemeral_ctx_new(err, errlen);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        char fp[TLS_FINGERPRINT_LEN];
        if (ephemeral_ctx && tls_ctx_fingerprint(ephemeral_ctx, fp))
            log_info("TLS: no tls_cert configured: clients are offered an ephemeral self-signed "
                     "certificate made in memory (EC P-256, CN=credproxy, %.1f ms), "
                     "SHA-256 fingerprint %s; it changes at every start: give clients that "
                     "verify the server's certificate a tls_cert and tls_key",
                     (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                         (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
                     fp);
    }
    SSL_CTX *ctx = ephemeral_ctx;
    if (ctx) {
        SSL_CTX_up_ref(ctx);
        ephemeral_users++;
    }
    pthread_mutex_unlock(&ephemeral_lock);
    return ctx;
}

/* Gives back a route's reference; after the last one the context is freed (its key wiped). */
static void ephemeral_ctx_put(SSL_CTX *ctx)
{
    pthread_mutex_lock(&ephemeral_lock);
    SSL_CTX_free(ctx);
    if (--ephemeral_users == 0) {
        SSL_CTX_free(ephemeral_ctx); /* the reference made with it */
        ephemeral_ctx = NULL;
    }
    pthread_mutex_unlock(&ephemeral_lock);
}

bool route_frontend_tls_make(const struct route_config *cfg, struct frontend_tls *out, char *err,
                             size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (cfg->client_tls == CLIENT_TLS_OFF)
        return true;
    char why[512];
    if (cfg->tls_cert) {
        out->ctx = tls_server_ctx_new(cfg->tls_cert, cfg->tls_key, why, sizeof(why));
    } else {
        out->ctx = ephemeral_ctx_get(why, sizeof(why));
        out->ephemeral = out->ctx != NULL;
    }
    if (!out->ctx) {
        snprintf(err, errlen, "route %s: %s", cfg->name, why);
        return false;
    }
    if (!tls_ctx_fingerprint(out->ctx, out->fingerprint))
        out->fingerprint[0] = '\0';
    return true;
}

void frontend_tls_release(struct frontend_tls *ft)
{
    if (ft->ephemeral)
        ephemeral_ctx_put(ft->ctx);
    else
        SSL_CTX_free(ft->ctx);
    memset(ft, 0, sizeof(*ft));
}

void route_frontend_tls_swap(struct route *r, struct frontend_tls *ft)
{
    struct frontend_tls was = {.ctx = r->frontend_tls, .ephemeral = r->frontend_ephemeral};
    memcpy(was.fingerprint, r->frontend_fingerprint, sizeof(was.fingerprint));
    r->frontend_tls = ft->ctx; /* an atomic store: workers read it for each new TLS client */
    r->frontend_ephemeral = ft->ephemeral;
    memcpy(r->frontend_fingerprint, ft->fingerprint, sizeof(r->frontend_fingerprint));
    *ft = was;
}

/* The route's frontend TLS context: its tls_cert, the shared ephemeral one, or none. */
static bool frontend_tls_init(struct route *r, const struct route_config *cfg, char *err,
                              size_t errlen)
{
    struct frontend_tls ft;
    if (!route_frontend_tls_make(cfg, &ft, err, errlen))
        return false;
    route_frontend_tls_swap(r, &ft); /* r had none: ft is empty now */
    if (r->frontend_fingerprint[0] && cfg->tls_cert)
        log_info("route %s: TLS certificate %s, SHA-256 fingerprint %s", cfg->name, cfg->tls_cert,
                 r->frontend_fingerprint);
    return true;
}

const char *route_tls_fingerprint(const struct route *r, bool *ephemeral)
{
    if (ephemeral)
        *ephemeral = r->frontend_ephemeral;
    return r->frontend_tls && r->frontend_fingerprint[0] ? r->frontend_fingerprint : NULL;
}

bool route_init(struct route *r, const struct route_config *cfg, struct event_base *base, char *err,
                size_t errlen)
{
    size_t index = r->index;
    memset(r, 0, sizeof(*r));
    r->index = index;
    r->cfg = cfg;
    pthread_mutex_init(&r->lock, NULL);
    snprintf(r->profile.version, sizeof(r->profile.version), "%s", cfg->server_version);
    r->profile.caps = DEFAULT_PROFILE_CAPS;
    r->profile.charset = 45; /* utf8mb4_general_ci */
    r->store = secret_store_new();
    if (!r->store) {
        snprintf(err, errlen, "route %s: out of memory", cfg->name);
        return false;
    }
    char why[512];
    if (!open_source(r, cfg, base, why, sizeof(why))) {
        snprintf(err, errlen, "route %s: %s", cfg->name, why);
        return false;
    }
    if (cfg->client_auth == CLIENT_AUTH_PASSWORD) {
        r->users = local_users_load(cfg->users_file, why, sizeof(why));
        if (!r->users) {
            snprintf(err, errlen, "route %s: %s", cfg->name, why);
            return false;
        }
    }
    if (!frontend_tls_init(r, cfg, err, errlen))
        return false;
    if (cfg->upstream_tls != UPSTREAM_TLS_DISABLED) {
        r->upstream_tls = upstream_tls_ctx_new(cfg->upstream_ca, why, sizeof(why));
        if (!r->upstream_tls) {
            snprintf(err, errlen, "route %s: upstream TLS: %s", cfg->name, why);
            return false;
        }
    }
    return true;
}

void route_destroy(struct route *r)
{
    if (!r->source_retired) /* else whoever retired it frees it */
        secret_source_free(r->source);
    if (r->store)
        secret_store_free(r->store);
    if (r->users)
        local_users_free(r->users);
    struct frontend_tls ft = {0};
    route_frontend_tls_swap(r, &ft);
    frontend_tls_release(&ft);
    SSL_CTX_free(r->upstream_tls);
    creds_unref(r->preferred);
    free(r->track_view);
    free(r->stats);
    pthread_mutex_destroy(&r->lock);
}

const struct track_view *route_track_view(const struct route *r)
{
    return __atomic_load_n(&r->track_view, __ATOMIC_ACQUIRE);
}

void route_set_track_view(struct route *r, const struct track_view *v)
{
    if (route_track_view(r))
        return;
    struct track_view *copy = malloc(sizeof(*copy));
    if (!copy)
        return;
    *copy = *v;
    struct track_view *none = NULL;
    if (!__atomic_compare_exchange_n(&r->track_view, &none, copy, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        free(copy);
}

void route_profile(struct route *r, struct server_profile *out)
{
    pthread_mutex_lock(&r->lock);
    *out = r->profile;
    pthread_mutex_unlock(&r->lock);
}

void route_learn(struct route *r, const struct upstream_info *info)
{
    pthread_mutex_lock(&r->lock);
    bool changed = !r->profile.learned || strcmp(r->profile.version, info->server_version) != 0 ||
                   r->profile.caps != info->server_caps;
    snprintf(r->profile.version, sizeof(r->profile.version), "%s", info->server_version);
    r->profile.caps = info->server_caps;
    r->profile.charset = info->server_charset;
    r->profile.learned = true;
    pthread_mutex_unlock(&r->lock);
    if (changed)
        log_info("route %s: upstream server is %s", r->cfg->name, info->server_version);
}

const char *route_upstream_host(const struct route *r, const struct creds *c)
{
    return r->cfg->upstream_host ? r->cfg->upstream_host : c->host;
}

int route_upstream_port(const struct route *r, const struct creds *c)
{
    return r->cfg->upstream_port > 0 ? r->cfg->upstream_port : c->port;
}

enum upstream_tls_mode route_tls_mode(const struct route *r, const char *host)
{
    if (r->cfg->upstream_tls != UPSTREAM_TLS_AUTO)
        return r->cfg->upstream_tls;
    if (r->cfg->upstream_auth == UPSTREAM_AUTH_IAM)
        return UPSTREAM_TLS_VERIFY_IDENTITY; /* a token is a password: never without TLS */
    return config_host_is_loopback(host) ? UPSTREAM_TLS_PREFERRED : UPSTREAM_TLS_VERIFY_IDENTITY;
}

bool route_wants_writer(const struct route *r, const char *host)
{
    if (r->cfg->upstream_role != UPSTREAM_ROLE_AUTO)
        return r->cfg->upstream_role == UPSTREAM_ROLE_WRITER;
    return config_host_is_rds_writer_endpoint(host);
}

void route_saw_read_only(struct route *r)
{
    __atomic_add_fetch(&r->read_only_epoch, 1, __ATOMIC_RELAXED);
}

uint64_t route_read_only_epoch(const struct route *r)
{
    return __atomic_load_n(&r->read_only_epoch, __ATOMIC_RELAXED);
}

bool route_client_enter(struct route *r)
{
    int n = __atomic_add_fetch(&r->n_clients, 1, __ATOMIC_RELAXED);
    if (r->cfg->max_clients > 0 && n > r->cfg->max_clients) {
        __atomic_sub_fetch(&r->n_clients, 1, __ATOMIC_RELAXED);
        return false;
    }
    return true;
}

void route_client_leave(struct route *r)
{
    __atomic_sub_fetch(&r->n_clients, 1, __ATOMIC_RELAXED);
}

/* At most one line every this many seconds, however fast clients are refused. */
#define REFUSED_LOG_EVERY_S 10

void route_client_refused(struct route *r)
{
    __atomic_add_fetch(&r->n_refused, 1, __ATOMIC_RELAXED);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec + 1; /* never 0, which means "never logged" */
    int64_t last = __atomic_load_n(&r->refused_log_s, __ATOMIC_RELAXED);
    if (last && now - last < REFUSED_LOG_EVERY_S)
        return;
    if (!__atomic_compare_exchange_n(&r->refused_log_s, &last, now, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return; /* another worker is logging */
    uint64_t n = __atomic_exchange_n(&r->n_refused, 0, __ATOMIC_RELAXED);
    log_warn("route %s: max_client_connections (%d) reached: refused %llu client%s with 1040 "
             "Too many connections%s",
             r->cfg->name, r->cfg->max_clients, (unsigned long long)n, n == 1 ? "" : "s",
             last ? " since the last report" : "");
}

bool route_probing(const struct route *r)
{
    return __atomic_load_n(&r->probing, __ATOMIC_ACQUIRE) != 0;
}

static void set_probing(struct route *r, bool probing)
{
    __atomic_store_n(&r->probing, probing ? 1 : 0, __ATOMIC_RELEASE);
}

void route_refresh_secret(struct route *r)
{
    if (!__atomic_load_n(&r->source_retired, __ATOMIC_ACQUIRE))
        secret_source_refresh_now(r->source);
}

struct secret_source *route_retire_source(struct route *r)
{
    __atomic_store_n(&r->source_retired, 1, __ATOMIC_RELEASE);
    return r->source;
}

void route_source_freed(struct route *r)
{
    r->source = NULL; /* no worker reads it once it has seen source_retired */
}

void route_login_worked(struct route *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    __atomic_store_n(&r->last_login_mono_ms, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                     __ATOMIC_RELAXED);
}

static void probe_done(void *arg, struct bufferevent *bev, const struct upstream_info *info,
                       const struct upstream_error *err)
{
    struct route *r = arg;
    r->probe = NULL;
    if (info)
        route_learn(r, info); /* before the clients waiting for the profile are let in */
    set_probing(r, false);
    if (err) {
        log_warn("route %s: upstream not reachable (%s); greeting clients as '%s' "
                 "until it is",
                 r->cfg->name, err->message, r->cfg->server_version);
        return;
    }
    route_login_worked(r);
    bufferevent_free(bev);
}

void route_probe_start(struct route *r, struct event_base *base, struct evdns_base *dns)
{
    struct creds *c = secret_store_get(r->store);
    struct upstream_params p;
    if (!r->probe && c && route_login_params(r, c, NULL, &p)) {
        p.client_caps = UPSTREAM_RELAYABLE_CAPS;
        p.charset = 45; /* utf8mb4_general_ci */
        r->probe = upstream_login_start(base, dns, &p, probe_done, r);
        set_probing(r, r->probe != NULL);
    }
    creds_unref(c);
}

void route_probe_cancel(struct route *r)
{
    if (r->probe)
        upstream_login_cancel(r->probe);
    r->probe = NULL;
    set_probing(r, false);
}

bool route_login_params(const struct route *r, const struct creds *c, const char *db,
                        struct upstream_params *out)
{
    /* One configuration for the whole login, even when a reload swaps it meanwhile. */
    const struct route_config *cfg = r->cfg;
    const char *host = cfg->upstream_host ? cfg->upstream_host : c->host;
    if (!host)
        return false;
    if (!db)
        db = c->dbname;
    enum upstream_tls_mode tls = cfg->upstream_tls;
    if (tls == UPSTREAM_TLS_AUTO)
        tls = cfg->upstream_auth == UPSTREAM_AUTH_IAM ? UPSTREAM_TLS_VERIFY_IDENTITY
              : config_host_is_loopback(host)         ? UPSTREAM_TLS_PREFERRED
                                                      : UPSTREAM_TLS_VERIFY_IDENTITY;
    *out = (struct upstream_params){
        .host = host,
        .port = cfg->upstream_port > 0 ? cfg->upstream_port : c->port,
        .tls_mode = tls,
        .tls_ctx = r->upstream_tls,
        .user = cfg->upstream_user ? cfg->upstream_user : c->username,
        .password = c->password,
        .database = db,
        .database_len = db ? strlen(db) : 0,
        .timeout_ms = cfg->connect_timeout_ms,
    };
    return true;
}

void route_upstream_changed(struct route *r)
{
    __atomic_add_fetch(&r->upstream_gen, 1, __ATOMIC_RELEASE);
}

uint64_t route_upstream_gen(const struct route *r)
{
    return __atomic_load_n(&r->upstream_gen, __ATOMIC_ACQUIRE);
}
