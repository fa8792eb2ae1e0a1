/* Configuration: one table of settings feeds the config file, environment, flags and --help. */
#ifndef CREDPROXY_CONF_CONFIG_H
#define CREDPROXY_CONF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* How a client proves who it is to credproxy (never to the upstream). */
enum client_auth_mode {
    CLIENT_AUTH_TRUST,    /* anyone who can reach the listener; loopback / unix socket only */
    CLIENT_AUTH_PEER,     /* unix socket peer uid/gid checked against allow-lists */
    CLIENT_AUTH_PASSWORD, /* local users file, independent of the upstream secret */
};

/* TLS towards the upstream server, named as the MySQL clients name them. */
enum upstream_tls_mode {
    UPSTREAM_TLS_AUTO, /* verify-identity, or preferred when the host is loopback */
    UPSTREAM_TLS_DISABLED,
    UPSTREAM_TLS_PREFERRED,
    UPSTREAM_TLS_REQUIRED,
    UPSTREAM_TLS_VERIFY_CA,
    UPSTREAM_TLS_VERIFY_IDENTITY,
};

/* How credproxy proves itself to the upstream server. */
enum upstream_auth_mode {
    UPSTREAM_AUTH_SECRET, /* the secret's username and password */
    UPSTREAM_AUTH_IAM,    /* an RDS IAM auth token made from the AWS credentials, over TLS */
};

/* Which servers a route's new and reused upstream connections may be on. */
enum upstream_role {
    UPSTREAM_ROLE_AUTO,   /* writer for an RDS/Aurora cluster (writer) endpoint, else any */
    UPSTREAM_ROLE_ANY,    /* any server that logs in */
    UPSTREAM_ROLE_WRITER, /* only a writable one: read-only servers are waited through */
};

/* TLS towards clients (the frontend). */
enum client_tls_mode {
    CLIENT_TLS_OPTIONAL, /* offered (tls_cert, else an ephemeral certificate); not required */
    CLIENT_TLS_REQUIRED, /* TCP clients must log in over TLS; unix sockets are exempt */
    CLIENT_TLS_OFF,      /* never offered: no tls_cert, no ephemeral certificate */
};

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* secret_regions: the primary and at most this many - 1 replica regions. */
#define CONFIG_MAX_SECRET_REGIONS 8

/* One database fronted by credproxy: its listeners, its secret, its upstream. */
struct route_config {
    char *name;    /* "default" for the route built from top-level settings */
    char **listen; /* "HOST:PORT" strings; may be empty when socket is set */
    size_t n_listen;
    char *socket_path;   /* unix socket to listen on, or NULL */
    char *secret_file;   /* RDS-format JSON secret on disk, or NULL */
    char *secret_id;     /* AWS Secrets Manager secret id or ARN, or NULL */
    char *upstream_host; /* overrides the secret's host when set */
    int upstream_port;   /* overrides the secret's port when > 0 */
    char *upstream_user; /* overrides the secret's username when set */
    enum upstream_auth_mode upstream_auth;
    enum upstream_tls_mode upstream_tls;
    enum upstream_role upstream_role;
    char *upstream_ca; /* CA bundle for verify-ca / verify-identity */
    enum client_auth_mode client_auth;
    unsigned *peer_uids; /* allow-list for peer mode */
    size_t n_peer_uids;
    unsigned *peer_gids;
    size_t n_peer_gids;
    char *users_file;           /* "name:*HEX" lines for password mode */
    char *tls_cert;             /* frontend TLS certificate (PEM); else an ephemeral one */
    char *tls_key;              /* frontend TLS private key (PEM) */
    char *server_version;       /* greeting version until the upstream's is learned */
    int connect_timeout_ms;     /* upstream connect + login */
    int handshake_timeout_ms;   /* client must finish its login within this */
    int secret_poll_ms;         /* how often the secret file is checked for changes */
    char *region;               /* AWS region for secret_id, or NULL for the SDKs' resolution */
    char *secrets_endpoint;     /* Secrets Manager endpoint URL, or NULL for the region's */
    int secret_refresh_ms;      /* how often Secrets Manager is asked for a new AWSCURRENT */
    int aws_timeout_ms;         /* limit of each AWS HTTP request */
    int pool_size;              /* most upstream connections, all workers together */
    int pool_min_idle;          /* idle connections kept warm */
    int pool_idle_timeout_ms;   /* idle connections beyond min_idle close after this */
    int pool_max_lifetime_ms;   /* connections older than this are not reused */
    int pool_wait_timeout_ms;   /* how long a client waits when the pool is full */
    int pool_release_idle_ms;   /* multiplexing: release an idle client's connection (0: never) */
    int client_tls;             /* enum client_tls_mode: offered, required, or off */
    int client_idle_timeout_ms; /* close a client silent this long between commands (0: never) */
    int max_clients;            /* max_client_connections, all workers together (0: no limit) */

    /* secret_id's regions, primary first; replicas are read while the regions before fail. */
    char **secret_regions;
    size_t n_secret_regions; /* 0: one region, from region or the SDKs' resolution */
    /* "REGION=URL": per-region Secrets Manager endpoints (secrets_endpoints). */
    char **secrets_endpoints;
    size_t n_secrets_endpoints;
};

/* The whole validated configuration. */
struct config {
    char *config_file; /* path given with --config, or NULL */
    enum log_level log_level;
    enum log_format log_format; /* text, or one JSON object per line */
    char *log_file;             /* log here instead of stderr; NULL: stderr */
    int workers;                /* event-loop threads; 0 means one per CPU */
    int allow_core_dumps;       /* 1: stay dumpable (PR_SET_DUMPABLE left on); an enum false|true */
    char *admin_listen;         /* "HOST:PORT" of the HTTP admin endpoint, or NULL (off) */
    int admin_listen_public;    /* 1: admin_listen may be a non-loopback address; false|true */
    int shutdown_timeout_ms;    /* SIGTERM: longest wait for open clients to finish (drain) */
    struct route_config *routes;
    size_t n_routes;
    bool check_only;   /* --check-config: validate and exit */
    bool show_help;    /* --help */
    bool show_version; /* --version */
    bool show_man;     /* --help-man */
    bool upgrade;      /* --upgrade: share listeners another credproxy serves (binary swap) */
};

/* Errors collected while loading: every problem, each naming where it came from. */
struct config_errors {
    char **lines; /* "FILE:LINE: key 'K': message", "--flag: message", "CREDPROXY_X: ..." */
    size_t n;
};

/*
 * Builds *out from the built-in defaults, then the config file (--config or
 * CREDPROXY_CONFIG), then CREDPROXY_<KEY> environment variables, then flags,
 * and validates the result. Returns true when the configuration is usable;
 * otherwise false with every problem appended to errs. envp may be NULL
 * (then the process environment is used). The caller frees with
 * config_free() and config_errors_free() in both cases.
 *
 * With --help, --help-man or --version nothing but the flags is read: the result is true
 * with show_help / show_man / show_version set and no routes, so check those first.
 */
bool config_load(struct config *out, int argc, char **argv, char **envp, struct config_errors *errs)
    __attribute__((warn_unused_result));

void config_free(struct config *cfg);

/*
 * For a reload: the keys of the per-route (route_changes) or process-wide (global_changes)
 * settings whose values differ between a and b, at most max of them in keys (settings-table
 * order); returns how many differ.
 */
size_t config_route_changes(const struct route_config *a, const struct route_config *b,
                            const char **keys, size_t max);
size_t config_global_changes(const struct config *a, const struct config *b, const char **keys,
                             size_t max);

/*
 * Replaces dst's value of setting key with a copy of src's (src is only read, so it may be
 * a configuration in use): a reload keeps the running value of a setting it cannot apply.
 * False when key is no such setting.
 */
bool config_route_keep(struct route_config *dst, const struct route_config *src, const char *key);
bool config_global_keep(struct config *dst, const struct config *src, const char *key);
void config_errors_free(struct config_errors *errs);

/* Prints --help, generated from the settings table. */
void config_print_help(FILE *f, const char *argv0);

/*
 * Prints the manual page credproxy(8) in roff (--help-man), from the same settings table and
 * switch list as --help, so the two never drift; the build writes it to credproxy.8.
 */
void config_print_man(FILE *f);

/* True when host is a loopback address or name ("localhost", 127.0.0.0/8, ::1). */
bool config_host_is_loopback(const char *host);

const char *config_upstream_tls_name(enum upstream_tls_mode mode);
const char *config_client_auth_name(enum client_auth_mode mode);
const char *config_upstream_auth_name(enum upstream_auth_mode mode);
const char *config_upstream_role_name(enum upstream_role role);

/*
 * True when host is an RDS or Aurora cluster (writer) endpoint,
 * NAME.cluster-ID.REGION.rds.amazonaws.com[.cn]; false for reader
 * (cluster-ro-), custom (cluster-custom-), proxy and instance endpoints.
 */
bool config_host_is_rds_writer_endpoint(const char *host);

/*
 * Splits a listen address, "HOST:PORT" or "[IPV6]:PORT", into host (without brackets, at
 * most hostlen - 1 bytes) and port (1..65535). False when malformed; an IPv6 address without
 * brackets is malformed, since its last group could not be told from the port.
 */
bool config_parse_hostport(const char *s, char *host, size_t hostlen, int *port);

#endif
