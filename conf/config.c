/* Configuration: one settings table drives the config file, environment, flags and --help. */
#include "conf/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- The settings table ---------------------------------------------------------------- */

enum setting_type {
    T_STRING,   /* char *, NULL when unset */
    T_INT,      /* int within [min, max], decimal digits only */
    T_DURATION, /* int milliseconds within [min, max]: "250ms", "10s", "2m", "1h" or seconds */
    T_ENUM,     /* int index into names */
    T_LIST,     /* char ** + size_t count of HOST:PORT strings, comma separated */
    T_IDS,      /* unsigned * + size_t count of numeric ids, comma separated */
    T_WORDS,    /* char ** + size_t count of items without spaces, comma separated */
};

enum setting_scope {
    SCOPE_ROUTE,  /* per route; top-level values are the default of every route */
    SCOPE_GLOBAL, /* process-wide; allowed only at the top level */
};

/*
 * A route inherits the settings of one group from the top level all together or not at all:
 * a route that sets socket must not also pick up the top-level listen, nor one that sets
 * secret_id the top-level secret_file, or every such route would conflict with the very
 * top-level value it meant to replace.
 */
enum setting_group { G_NONE, G_LISTENER, G_SECRET, G_TLS_PAIR };

struct setting {
    const char *key;          /* file key; flag and environment names derive from it */
    enum setting_type type;   /* how the value is parsed and stored */
    enum setting_scope scope; /* route or global */
    enum setting_group group; /* inherited together with the other keys of its group */
    size_t offset;            /* into struct route_config (route) or struct config (global) */
    size_t count_offset;      /* T_LIST / T_IDS / T_WORDS: the element count beside the array */
    const char *def;          /* default, written as in the file; NULL for none */
    const char *const *names; /* T_ENUM: names indexed by enum value, NULL-terminated */
    int min, max;             /* T_INT and T_DURATION (ms) bounds */
    const char *metavar;      /* value placeholder shown in --help */
    const char *help;         /* one line for --help */
};

static const char *const tls_names[] = {"auto",      "disabled",        "preferred", "required",
                                        "verify-ca", "verify-identity", NULL};
static const char *const role_names[] = {"auto", "any", "writer", NULL};
static const char *const auth_names[] = {"trust", "peer", "password", NULL};
static const char *const upstream_auth_names[] = {"secret", "iam", NULL};
static const char *const client_tls_names[] = {"optional", "required", "off", NULL};
static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const bool_names[] = {"false", "true", NULL};

/* Enum settings are stored through an int lvalue. */
_Static_assert(sizeof(enum upstream_tls_mode) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum upstream_role) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum client_auth_mode) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum upstream_auth_mode) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum client_tls_mode) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enum stored as int");

#define RC(f)           offsetof(struct route_config, f)
#define CF(f)           offsetof(struct config, f)
#define DURATION_MAX_MS (24 * 3600 * 1000)
#define DURATION(f, d)                                                                             \
    .type = T_DURATION, .offset = RC(f), .def = d, .min = 1, .max = DURATION_MAX_MS,               \
    .metavar = "DURATION"

static const struct setting settings[] = {
    {.key = "listen",
     .type = T_LIST,
     .group = G_LISTENER,
     .offset = RC(listen),
     .count_offset = RC(n_listen),
     .def = "127.0.0.1:3306",
     .metavar = "HOST:PORT[,...]",
     .help = "TCP addresses for clients; repeatable; the default applies only without socket"},
    {.key = "socket",
     .type = T_STRING,
     .group = G_LISTENER,
     .offset = RC(socket_path),
     .metavar = "PATH",
     .help = "unix socket to accept clients on"},
    {.key = "secret_file",
     .type = T_STRING,
     .group = G_SECRET,
     .offset = RC(secret_file),
     .metavar = "PATH",
     .help = "RDS-format JSON secret file; exactly one of secret_file or secret_id"},
    {.key = "secret_id",
     .type = T_STRING,
     .group = G_SECRET,
     .offset = RC(secret_id),
     .metavar = "ID",
     .help = "AWS Secrets Manager secret id or ARN"},
    {.key = "upstream_host",
     .type = T_STRING,
     .offset = RC(upstream_host),
     .metavar = "HOST",
     .help = "database host; overrides the host in the secret"},
    {.key = "upstream_port",
     .type = T_INT,
     .offset = RC(upstream_port),
     .min = 1,
     .max = 65535,
     .metavar = "PORT",
     .help = "database port; overrides the port in the secret"},
    {.key = "upstream_user",
     .type = T_STRING,
     .offset = RC(upstream_user),
     .metavar = "USER",
     .help = "database user; overrides the username in the secret"},
    {.key = "upstream_auth",
     .type = T_ENUM,
     .offset = RC(upstream_auth),
     .def = "secret",
     .names = upstream_auth_names,
     .metavar = "MODE",
     .help = "secret (the secret's password), or iam (an RDS IAM auth token from the AWS "
             "credentials; needs TLS)"},
    {.key = "upstream_tls",
     .type = T_ENUM,
     .offset = RC(upstream_tls),
     .def = "auto",
     .names = tls_names,
     .metavar = "MODE",
     .help = "TLS to the database; auto is verify-identity, or preferred for a loopback host"},
    {.key = "upstream_role",
     .type = T_ENUM,
     .offset = RC(upstream_role),
     .def = "auto",
     .names = role_names,
     .metavar = "ROLE",
     .help = "any, or writer: never lend a read-only server's connection; auto is writer for an "
             "RDS/Aurora cluster endpoint"},
    {.key = "upstream_ca",
     .type = T_STRING,
     .offset = RC(upstream_ca),
     .metavar = "PATH",
     .help = "CA bundle (PEM) that signs the database's certificate"},
    {.key = "client_auth",
     .type = T_ENUM,
     .offset = RC(client_auth),
     .def = "trust",
     .names = auth_names,
     .metavar = "MODE",
     .help = "client login: trust (loopback/socket only), peer (socket uid/gid), password"},
    {.key = "peer_uids",
     .type = T_IDS,
     .offset = RC(peer_uids),
     .count_offset = RC(n_peer_uids),
     .metavar = "UID[,...]",
     .help = "numeric uids allowed to connect in peer mode"},
    {.key = "peer_gids",
     .type = T_IDS,
     .offset = RC(peer_gids),
     .count_offset = RC(n_peer_gids),
     .metavar = "GID[,...]",
     .help = "numeric gids allowed to connect in peer mode"},
    {.key = "users_file",
     .type = T_STRING,
     .offset = RC(users_file),
     .metavar = "PATH",
     .help = "\"name:*HEX\" lines checked in password mode"},
    {.key = "tls_cert",
     .type = T_STRING,
     .group = G_TLS_PAIR,
     .offset = RC(tls_cert),
     .metavar = "PATH",
     .help = "certificate (PEM) offered to clients; unset: an ephemeral self-signed one"},
    {.key = "tls_key",
     .type = T_STRING,
     .group = G_TLS_PAIR,
     .offset = RC(tls_key),
     .metavar = "PATH",
     .help = "private key (PEM) of tls_cert"},
    {.key = "client_tls",
     .type = T_ENUM,
     .offset = RC(client_tls),
     .def = "optional",
     .names = client_tls_names,
     .metavar = "MODE",
     .help = "optional; required: TCP clients must use TLS (unix sockets exempt); off: no TLS"},
    {.key = "server_version",
     .type = T_STRING,
     .offset = RC(server_version),
     .def = "5.7.99-credproxy",
     .metavar = "VERSION",
     .help = "version announced to clients until the database's own is known"},
    {.key = "connect_timeout",
     DURATION(connect_timeout_ms, "10s"),
     .help = "limit for connecting and logging in to the database"},
    {.key = "handshake_timeout",
     DURATION(handshake_timeout_ms, "10s"),
     .help = "a client must finish logging in within this"},
    {.key = "client_idle_timeout",
     .type = T_DURATION,
     .offset = RC(client_idle_timeout_ms),
     .def = "0",
     .min = 0,
     .max = DURATION_MAX_MS,
     .metavar = "DURATION",
     .help = "close a client that sends no command for this long (0: never)"},
    {.key = "secret_poll_interval",
     DURATION(secret_poll_ms, "1s"),
     .help = "how often secret_file is checked for changes"},
    {.key = "region",
     .type = T_STRING,
     .offset = RC(region),
     .metavar = "REGION",
     .help = "AWS region of secret_id; default AWS_REGION, the profile's, the ARN's, or IMDS"},
    {.key = "secrets_endpoint",
     .type = T_STRING,
     .offset = RC(secrets_endpoint),
     .metavar = "URL",
     .help = "Secrets Manager endpoint (https://, or http:// to loopback); default the region's"},
    {.key = "secret_regions",
     .type = T_WORDS,
     .offset = RC(secret_regions),
     .count_offset = RC(n_secret_regions),
     .metavar = "REGION[,...]",
     .help = "regions holding secret_id (a replicated secret), primary first; a replica is read "
             "only while the primary fails"},
    {.key = "secrets_endpoints",
     .type = T_WORDS,
     .offset = RC(secrets_endpoints),
     .count_offset = RC(n_secrets_endpoints),
     .metavar = "REGION=URL[,...]",
     .help = "Secrets Manager endpoint of each region of secret_regions; default secrets_endpoint "
             "(primary), AWS_ENDPOINT_URL_SECRETS_MANAGER, or the region's"},
    {.key = "secret_refresh",
     DURATION(secret_refresh_ms, "300s"),
     .help = "how often secret_id is checked for a new AWSCURRENT version (+-10 % jitter)"},
    {.key = "aws_timeout",
     DURATION(aws_timeout_ms, "5s"),
     .help = "limit of each request to AWS (Secrets Manager, STS, metadata endpoints)"},
    {.key = "pool_size",
     .type = T_INT,
     .offset = RC(pool_size),
     .def = "100",
     .min = 1,
     .max = 100000,
     .metavar = "N",
     .help = "most upstream connections of the route (shared out among workers)"},
    {.key = "pool_min_idle",
     .type = T_INT,
     .offset = RC(pool_min_idle),
     .def = "0",
     .min = 0,
     .max = 100000,
     .metavar = "N",
     .help = "idle upstream connections kept open and ready"},
    {.key = "pool_idle_timeout",
     DURATION(pool_idle_timeout_ms, "5m"),
     .help = "an idle upstream connection beyond pool_min_idle is closed after this"},
    {.key = "pool_max_lifetime",
     DURATION(pool_max_lifetime_ms, "1h"),
     .help = "an upstream connection is not reused once this old"},
    {.key = "pool_release_idle_after",
     .type = T_DURATION,
     .offset = RC(pool_release_idle_ms),
     .def = "0",
     .min = 0,
     .max = DURATION_MAX_MS,
     .metavar = "DURATION",
     .help = "give an idle client's connection back to the pool after this (0: keep it for the "
             "session); its state is replayed on its next command"},
    {.key = "pool_wait_timeout",
     DURATION(pool_wait_timeout_ms, "10s"),
     .help = "how long a client waits for a connection when the pool is full"},
    {.key = "max_client_connections",
     .type = T_INT,
     .offset = RC(max_clients),
     .def = "0",
     .min = 0,
     .max = 1000000,
     .metavar = "N",
     .help = "most clients of the route at once; more are told 1040 Too many connections "
             "(0: no limit but the open-files limit)"},
    {.key = "log_level",
     .type = T_ENUM,
     .scope = SCOPE_GLOBAL,
     .offset = CF(log_level),
     .def = "info",
     .names = level_names,
     .metavar = "LEVEL",
     .help = "least severe level logged"},
    {.key = "log_format",
     .type = T_ENUM,
     .scope = SCOPE_GLOBAL,
     .offset = CF(log_format),
     .def = "text",
     .names = log_format_names,
     .metavar = "FORMAT",
     .help = "text (one line per event), or json (one JSON object per line: time, level, msg, "
             "route, client, ...)"},
    {.key = "log_file",
     .type = T_STRING,
     .scope = SCOPE_GLOBAL,
     .offset = CF(log_file),
     .metavar = "PATH",
     .help = "append logs to this file instead of standard error; SIGUSR1 reopens it (after "
             "logrotate renamed it)"},
    {.key = "workers",
     .type = T_INT,
     .scope = SCOPE_GLOBAL,
     .offset = CF(workers),
     .def = "0",
     .min = 0,
     .max = 1024,
     .metavar = "N",
     .help = "event-loop threads; 0 means one per two CPUs the process may use (at least one)"},
    {.key = "allow_core_dumps",
     .type = T_ENUM,
     .scope = SCOPE_GLOBAL,
     .offset = CF(allow_core_dumps),
     .def = "false",
     .names = bool_names,
     .metavar = "BOOL",
     .help = "leave the process dumpable (core dumps hold the current password); for debugging"},
    {.key = "admin_listen",
     .type = T_STRING,
     .scope = SCOPE_GLOBAL,
     .offset = CF(admin_listen),
     .metavar = "HOST:PORT",
     .help = "HTTP admin endpoint: /metrics, /healthz, /readyz, /status, /status.json (off unless "
             "set; loopback only unless admin_listen_public)"},
    {.key = "admin_listen_public",
     .type = T_ENUM,
     .scope = SCOPE_GLOBAL,
     .offset = CF(admin_listen_public),
     .def = "false",
     .names = bool_names,
     .metavar = "BOOL",
     .help = "allow admin_listen on a non-loopback address (it has no authentication)"},
    {.key = "shutdown_timeout",
     .type = T_DURATION,
     .scope = SCOPE_GLOBAL,
     .offset = CF(shutdown_timeout_ms),
     .def = "30s",
     .min = 0,
     .max = DURATION_MAX_MS,
     .metavar = "DURATION",
     .help = "on SIGTERM, how long open clients may take to finish their transactions before "
             "they are cut (error 1053)"},
};

#define N_SETTINGS   (sizeof(settings) / sizeof(settings[0]))
#define MAX_SETTINGS 48
_Static_assert(N_SETTINGS <= MAX_SETTINGS, "raise MAX_SETTINGS");

/* ---- Loader state ---------------------------------------------------------------------- */

/* Where a value came from, so that every later complaint about it can point there. */
enum source { SRC_NONE, SRC_DEFAULT, SRC_FILE, SRC_ENV, SRC_FLAG };

struct origin {
    enum source src; /* SRC_NONE when the key was never set */
    int line;        /* config file line for SRC_FILE */
};

/* The top level or one [route NAME] section, before routes inherit from the top level. */
struct layer {
    char *name;                      /* route name; NULL for the top level */
    int line;                        /* line of the [route] header */
    struct route_config rc;          /* route-scope values set here */
    struct origin org[MAX_SETTINGS]; /* per setting, where it was set in this layer */
};

/* Where each value of a finished route came from, kept only while validating. */
struct built_route {
    struct origin org[MAX_SETTINGS]; /* per setting */
    int line;                        /* [route] header line, 0 for the default route */
};

/* A setting given as a flag, kept until the file and environment have been applied. */
struct flag_arg {
    const struct setting *s;
    const char *value; /* points into argv */
};

struct loader {
    struct config *cfg;         /* being built; global settings are stored here directly */
    struct config_errors *errs; /* problems are appended here */
    const char *file;           /* config file name for messages */
    struct layer top;           /* defaults, top-level file keys, environment, flags */
    struct layer *routes;       /* [route NAME] sections in file order */
    size_t n_routes;
    struct layer *section;     /* layer the file lines go to; NULL inside a bad section */
    struct built_route *built; /* parallel to cfg->routes */
};

/* ---- Small helpers --------------------------------------------------------------------- */

/* Loading runs once at startup, where running out of memory is fatal anyway. */
__attribute__((noreturn)) static void oom(void)
{
    fputs("credproxy: out of memory while loading the configuration\n", stderr);
    abort();
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        oom();
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

__attribute__((format(printf, 2, 3))) static void errs_add(struct config_errors *errs,
                                                           const char *fmt, ...)
{
    char *line;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom();
    errs->lines = xrealloc(errs->lines, (errs->n + 1) * sizeof(*errs->lines));
    errs->lines[errs->n++] = line;
}

/* Strips leading and trailing whitespace in place. */
static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static size_t setting_index(const struct setting *s)
{
    return (size_t)(s - settings);
}

/* Finds a setting by name (len bytes), treating '-' and '_' alike; NULL when unknown. */
static const struct setting *setting_find(const char *name, size_t len)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *k = settings[i].key;
        size_t j = 0;
        while (j < len && k[j] && (k[j] == name[j] || (k[j] == '_' && name[j] == '-')))
            j++;
        if (j == len && k[j] == '\0')
            return &settings[i];
    }
    return NULL;
}

static const struct setting *setting_by_key(const char *key)
{
    return setting_find(key, strlen(key));
}

/* "upstream_host" -> "--upstream-host". */
static void flag_name(const char *key, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "--%s", key);
    for (size_t i = 2; i < n && i < len; i++)
        if (buf[i] == '_')
            buf[i] = '-';
}

/* "upstream_host" -> "CREDPROXY_UPSTREAM_HOST". */
static void env_name(const char *key, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "CREDPROXY_%s", key);
    for (size_t i = 0; i < n && i < len; i++)
        buf[i] = (char)toupper((unsigned char)buf[i]);
}

/* Looks NAME up in an explicit environment array; NULL when absent. */
static const char *env_lookup(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (; *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

/* ---- Value slots ----------------------------------------------------------------------- */

static char **str_slot(const struct setting *s, void *base)
{
    return (char **)((char *)base + s->offset);
}

static int *int_slot(const struct setting *s, void *base)
{
    return (int *)((char *)base + s->offset);
}

static char ***list_slot(const struct setting *s, void *base)
{
    return (char ***)((char *)base + s->offset);
}

static unsigned **ids_slot(const struct setting *s, void *base)
{
    return (unsigned **)((char *)base + s->offset);
}

static size_t *count_slot(const struct setting *s, void *base)
{
    return (size_t *)((char *)base + s->count_offset);
}

/* Frees the value of s in base and leaves it unset. */
static void value_free(const struct setting *s, void *base)
{
    if (s->type == T_STRING) {
        free(*str_slot(s, base));
        *str_slot(s, base) = NULL;
    } else if (s->type == T_LIST || s->type == T_WORDS) {
        for (size_t i = 0; i < *count_slot(s, base); i++)
            free((*list_slot(s, base))[i]);
        free(*list_slot(s, base));
        *list_slot(s, base) = NULL;
        *count_slot(s, base) = 0;
    } else if (s->type == T_IDS) {
        free(*ids_slot(s, base));
        *ids_slot(s, base) = NULL;
        *count_slot(s, base) = 0;
    }
}

/* Deep-copies the value of s from src into dst, which holds no value of s yet. */
static void value_copy(const struct setting *s, void *dst, void *src)
{
    size_t n =
        s->type == T_LIST || s->type == T_IDS || s->type == T_WORDS ? *count_slot(s, src) : 0;
    if (s->type == T_STRING) {
        const char *v = *str_slot(s, src);
        *str_slot(s, dst) = v ? xstrdup(v) : NULL;
    } else if (s->type == T_LIST || s->type == T_WORDS) {
        char **v = n ? xrealloc(NULL, n * sizeof(*v)) : NULL;
        for (size_t i = 0; i < n; i++)
            v[i] = xstrdup((*list_slot(s, src))[i]);
        *list_slot(s, dst) = v;
        *count_slot(s, dst) = n;
    } else if (s->type == T_IDS) {
        unsigned *v = n ? xrealloc(NULL, n * sizeof(*v)) : NULL;
        if (n)
            memcpy(v, *ids_slot(s, src), n * sizeof(*v));
        *ids_slot(s, dst) = v;
        *count_slot(s, dst) = n;
    } else {
        *int_slot(s, dst) = *int_slot(s, src);
    }
}

/* ---- Value parsers: each returns false with msg filled in when text is unusable --------- */

/* Reads a run of decimal digits at *p, advancing it; false when none or above limit. */
static bool read_number(const char **p, unsigned long long limit, unsigned long long *out)
{
    const char *s = *p;
    unsigned long long v = 0;
    if (!isdigit((unsigned char)*s))
        return false;
    for (; isdigit((unsigned char)*s); s++) {
        v = v * 10 + (unsigned)(*s - '0');
        if (v > limit)
            return false;
    }
    *p = s;
    *out = v;
    return true;
}

static bool parse_int(const struct setting *s, void *base, const char *text, char *msg, size_t len)
{
    const char *p = text;
    unsigned long long v;
    if (!read_number(&p, (unsigned long long)s->max, &v) || *p || v < (unsigned long long)s->min) {
        snprintf(msg, len, "must be a whole number from %d to %d, got '%.64s'", s->min, s->max,
                 text);
        return false;
    }
    *int_slot(s, base) = (int)v;
    return true;
}

/* Durations: a number with ms, s, m or h, or a bare number of seconds; stored in ms. */
static bool parse_duration(const struct setting *s, void *base, const char *text, char *msg,
                           size_t len)
{
    static const struct {
        const char *suffix;
        unsigned long long ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"", 1000}, {"m", 60000}, {"h", 3600000}};
    const char *p = text;
    unsigned long long v;
    if (read_number(&p, (unsigned long long)s->max, &v)) {
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            unsigned long long ms = v * units[i].ms;
            if (strcmp(p, units[i].suffix) == 0 && ms >= (unsigned long long)s->min &&
                ms <= (unsigned long long)s->max) {
                *int_slot(s, base) = (int)ms;
                return true;
            }
        }
    }
    snprintf(msg, len,
             "must be a duration from 1ms to 24h such as 250ms, 10s or 2m (a bare number is "
             "seconds), got '%.64s'",
             text);
    return false;
}

/* True when text names name, ignoring case and treating '_' as '-' (VERIFY_CA = verify-ca). */
static bool enum_match(const char *name, const char *text)
{
    for (; *name && *text; name++, text++) {
        char c = *text == '_' ? '-' : (char)tolower((unsigned char)*text);
        if (c != *name)
            return false;
    }
    return *name == '\0' && *text == '\0';
}

static bool parse_enum(const struct setting *s, void *base, const char *text, char *msg, size_t len)
{
    for (int i = 0; s->names[i]; i++) {
        if (enum_match(s->names[i], text)) {
            *int_slot(s, base) = i;
            return true;
        }
    }
    size_t n = (size_t)snprintf(msg, len, "must be one of ");
    for (int i = 0; s->names[i] && n < len; i++)
        n += (size_t)snprintf(msg + n, len - n, "%s%s", i ? "|" : "", s->names[i]);
    if (n < len)
        snprintf(msg + n, len - n, ", got '%.64s'", text);
    return false;
}

static bool parse_string(const struct setting *s, void *base, const char *text)
{
    free(*str_slot(s, base));
    *str_slot(s, base) = xstrdup(text);
    return true;
}

/* Items parsed from one list value, committed only when all of them are good. */
struct items {
    char **strs;   /* T_LIST, T_WORDS */
    unsigned *ids; /* T_IDS */
    size_t n;
};

static bool add_address(struct items *acc, const char *item, char *msg, size_t len)
{
    char host[256];
    int port;
    if (!config_parse_hostport(item, host, sizeof(host), &port)) {
        snprintf(msg, len,
                 "bad address '%.64s': expected HOST:PORT or [IPV6]:PORT with a port from 1 to "
                 "65535",
                 item);
        return false;
    }
    acc->strs = xrealloc(acc->strs, (acc->n + 1) * sizeof(*acc->strs));
    acc->strs[acc->n++] = xstrdup(item);
    return true;
}

/* One item of a T_WORDS list: any text without spaces (what it means is checked later). */
static bool add_word(struct items *acc, const char *item, char *msg, size_t len)
{
    for (const char *p = item; *p; p++)
        if (isspace((unsigned char)*p)) {
            snprintf(msg, len, "bad item '%.64s': no spaces inside an item", item);
            return false;
        }
    acc->strs = xrealloc(acc->strs, (acc->n + 1) * sizeof(*acc->strs));
    acc->strs[acc->n++] = xstrdup(item);
    return true;
}

/* uid_t/gid_t are 32 bits; (uid_t)-1 means "no id" to the kernel, so it is refused. */
static bool add_id(struct items *acc, const char *item, char *msg, size_t len)
{
    const char *p = item;
    unsigned long long v;
    if (!read_number(&p, UINT32_MAX - 1, &v) || *p) {
        snprintf(msg, len, "bad id '%.64s': expected a comma-separated list of numeric ids", item);
        return false;
    }
    acc->ids = xrealloc(acc->ids, (acc->n + 1) * sizeof(*acc->ids));
    acc->ids[acc->n++] = (unsigned)v;
    return true;
}

/* Splits text at commas into trimmed items and adds each; false on an empty or bad item. */
static bool split_items(const struct setting *s, const char *text, struct items *acc, char *msg,
                        size_t len)
{
    char *copy = xstrdup(text);
    bool ok = true;
    for (char *p = copy, *comma; ok; p = comma + 1) {
        comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        char *item = trim(p);
        if (*item == '\0') {
            snprintf(msg, len, "empty item in list '%.64s'", text);
            ok = false;
        } else {
            ok = s->type == T_LIST    ? add_address(acc, item, msg, len)
                 : s->type == T_WORDS ? add_word(acc, item, msg, len)
                                      : add_id(acc, item, msg, len);
        }
        if (!comma)
            break;
    }
    free(copy);
    return ok;
}

/* Lists: the same source repeating a key appends; anything else replaces (see loader_set). */
static bool parse_list(const struct setting *s, void *base, const char *text, bool append,
                       char *msg, size_t len)
{
    struct items acc = {0};
    if (!split_items(s, text, &acc, msg, len)) {
        for (size_t i = 0; s->type != T_IDS && i < acc.n; i++)
            free(acc.strs[i]);
        free(acc.strs);
        free(acc.ids);
        return false;
    }
    if (!append)
        value_free(s, base);
    size_t *n = count_slot(s, base);
    if (s->type != T_IDS) {
        char ***v = list_slot(s, base);
        *v = xrealloc(*v, (*n + acc.n) * sizeof(**v));
        memcpy(*v + *n, acc.strs, acc.n * sizeof(**v));
        free(acc.strs);
    } else {
        unsigned **v = ids_slot(s, base);
        *v = xrealloc(*v, (*n + acc.n) * sizeof(**v));
        memcpy(*v + *n, acc.ids, acc.n * sizeof(**v));
        free(acc.ids);
    }
    *n += acc.n;
    return true;
}

/* Parses text into the slot of s in base; the old value stays when text is bad. */
static bool value_parse(const struct setting *s, void *base, const char *text, bool append,
                        char *msg, size_t len)
{
    if (*text == '\0') {
        snprintf(msg, len, "missing value");
        return false;
    }
    switch (s->type) {
    case T_STRING:
        return parse_string(s, base, text);
    case T_INT:
        return parse_int(s, base, text, msg, len);
    case T_DURATION:
        return parse_duration(s, base, text, msg, len);
    case T_ENUM:
        return parse_enum(s, base, text, msg, len);
    case T_LIST:
    case T_IDS:
    case T_WORDS:
        return parse_list(s, base, text, append, msg, len);
    }
    return false;
}

/* ---- Addresses ------------------------------------------------------------------------- */

bool config_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *h = s, *hend, *colon;
    if (*s == '[') {
        hend = strchr(s, ']');
        if (!hend || hend[1] != ':')
            return false;
        h = s + 1;
        colon = hend + 1;
    } else {
        colon = strrchr(s, ':');
        /* An IPv6 address without brackets cannot be told apart from its port. */
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return false;
        hend = colon;
    }
    size_t n = (size_t)(hend - h);
    const char *p = colon + 1;
    unsigned long long v;
    if (n == 0 || n >= hostlen || !read_number(&p, 65535, &v) || *p || v == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (isspace((unsigned char)h[i]) || h[i] == '[' || h[i] == ']' || h[i] == '/')
            return false;
    memcpy(host, h, n);
    host[n] = '\0';
    *port = (int)v;
    return true;
}

/* Copies host without the brackets of "[::1]" into buf; NULL when it does not fit. */
static const char *unbracket(const char *host, char *buf, size_t len)
{
    size_t n = strlen(host);
    if (n < 2 || host[0] != '[' || host[n - 1] != ']')
        return host;
    if (n - 2 >= len)
        return NULL;
    memcpy(buf, host + 1, n - 2);
    buf[n - 2] = '\0';
    return buf;
}

bool config_host_is_loopback(const char *host)
{
    char buf[INET6_ADDRSTRLEN + 1];
    struct in_addr a4;
    struct in6_addr a6;
    host = unbracket(host, buf, sizeof(buf));
    if (!host)
        return false;
    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

/* True for 0.0.0.0 and ::, which take the port on every address at once. */
static bool host_is_wildcard(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return a4.s_addr == htonl(INADDR_ANY);
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&a6);
}

/*
 * True when two listen addresses cannot both be bound: same port and the same host, a
 * wildcard host, or "localhost" beside another loopback address (it binds 127.0.0.1 and ::1).
 * Names are not resolved here; the listener reports any remaining clash when it binds.
 */
static bool listen_conflict(const char *a, const char *b)
{
    char ha[256], hb[256];
    int pa, pb;
    if (!config_parse_hostport(a, ha, sizeof(ha), &pa) ||
        !config_parse_hostport(b, hb, sizeof(hb), &pb) || pa != pb)
        return false;
    bool local_a = strcasecmp(ha, "localhost") == 0, local_b = strcasecmp(hb, "localhost") == 0;
    return strcasecmp(ha, hb) == 0 || host_is_wildcard(ha) || host_is_wildcard(hb) ||
           (local_a && config_host_is_loopback(hb)) || (local_b && config_host_is_loopback(ha));
}

const char *config_upstream_tls_name(enum upstream_tls_mode mode)
{
    return (unsigned)mode < sizeof(tls_names) / sizeof(tls_names[0]) - 1 ? tls_names[mode] : "?";
}

const char *config_upstream_auth_name(enum upstream_auth_mode mode)
{
    return (unsigned)mode < sizeof(upstream_auth_names) / sizeof(upstream_auth_names[0]) - 1
               ? upstream_auth_names[mode]
               : "?";
}

const char *config_upstream_role_name(enum upstream_role role)
{
    return (unsigned)role < sizeof(role_names) / sizeof(role_names[0]) - 1 ? role_names[role] : "?";
}

static bool ends_with_ci(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && strncasecmp(s + n - k, suffix, k) == 0;
}

bool config_host_is_rds_writer_endpoint(const char *host)
{
    if (!host)
        return false;
    size_t n = strlen(host);
    if (n && host[n - 1] == '.')
        n--; /* a fully qualified name */
    if (ends_with_ci(host, n, ".cn"))
        n -= 3;
    if (!ends_with_ci(host, n, ".rds.amazonaws.com"))
        return false;
    n -= strlen(".rds.amazonaws.com");
    /* NAME.cluster-ID.REGION: the label after the first one names the endpoint's kind. */
    const char *dot = memchr(host, '.', n);
    if (!dot || dot == host)
        return false;
    const char *kind = dot + 1;
    size_t left = n - (size_t)(kind - host);
    const char *end = memchr(kind, '.', left);
    if (!end || end + 1 >= host + n)
        return false; /* the region label is missing */
    size_t klen = (size_t)(end - kind);
    if (klen <= 8 || strncasecmp(kind, "cluster-", 8) != 0)
        return false;
    return !(klen > 11 && strncasecmp(kind, "cluster-ro-", 11) == 0) &&
           !(klen > 15 && strncasecmp(kind, "cluster-custom-", 15) == 0);
}

const char *config_client_auth_name(enum client_auth_mode mode)
{
    return (unsigned)mode < sizeof(auth_names) / sizeof(auth_names[0]) - 1 ? auth_names[mode] : "?";
}

/* ---- Recording values and errors ------------------------------------------------------- */

/* Writes the "where" of an origin: "FILE:LINE: key 'K'", "CREDPROXY_K", "--k" or "key 'k'". */
static void origin_prefix(const struct loader *ld, const struct setting *s, struct origin o,
                          char *buf, size_t len)
{
    if (o.src == SRC_FILE)
        snprintf(buf, len, "%s:%d: key '%s'", ld->file, o.line, s->key);
    else if (o.src == SRC_ENV)
        env_name(s->key, buf, len);
    else if (o.src == SRC_FLAG)
        flag_name(s->key, buf, len);
    else
        snprintf(buf, len, "key '%s'", s->key);
}

/* True when the user gave the value (file, environment or flag), not the built-in default. */
static bool origin_explicit(struct origin o)
{
    return o.src == SRC_FILE || o.src == SRC_ENV || o.src == SRC_FLAG;
}

/* Appends "WHERE: message" for a value of s that came from o. */
__attribute__((format(printf, 4, 5))) static void
origin_err(struct loader *ld, const struct setting *s, struct origin o, const char *fmt, ...)
{
    char where[512], msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    origin_prefix(ld, s, o, where, sizeof(where));
    errs_add(ld->errs, "%s: %s", where, msg);
}

/*
 * Parses text into setting s of layer L (global settings go straight to cfg) and records
 * where it came from. A list given again by the same source (a repeated --listen, or listen
 * twice in one section) accumulates; a later source replaces it, as for any other setting.
 */
static void loader_set(struct loader *ld, struct layer *L, const struct setting *s,
                       const char *text, struct origin o)
{
    size_t i = setting_index(s);
    void *base = s->scope == SCOPE_GLOBAL ? (void *)ld->cfg : (void *)&L->rc;
    char msg[512];
    if (!value_parse(s, base, text, L->org[i].src == o.src, msg, sizeof(msg))) {
        origin_err(ld, s, o, "%s", msg);
        return;
    }
    L->org[i] = o;
}

/* Applies the built-in defaults to the top level; listen's waits for the merge (see there). */
static void apply_defaults(struct loader *ld)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (settings[i].def && settings[i].group != G_LISTENER)
            loader_set(ld, &ld->top, &settings[i], settings[i].def,
                       (struct origin){SRC_DEFAULT, 0});
}

/* ---- The config file ------------------------------------------------------------------- */

/*
 * Extracts the value after '=' in place: either "double quoted" (with \" and \\ escapes) or
 * bare up to an inline comment, which starts at '#' or ';' after whitespace. Returns NULL
 * with msg filled in on a malformed value.
 */
static char *file_value(char *raw, char *msg, size_t len)
{
    char *p = raw;
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '"') {
        for (char *c = p; *c; c++)
            if ((*c == '#' || *c == ';') && c > p && isspace((unsigned char)c[-1]))
                *c = '\0';
        return trim(p);
    }
    char *out = p, *in = p + 1;
    for (; *in && *in != '"'; in++) {
        if (*in == '\\' && (in[1] == '"' || in[1] == '\\'))
            in++;
        *out++ = *in;
    }
    char *rest = *in == '"' ? trim(in + 1) : NULL;
    if (!rest || (*rest && *rest != '#' && *rest != ';')) {
        snprintf(msg, len, rest ? "text after the closing quote" : "missing closing quote");
        return NULL;
    }
    *out = '\0';
    return p;
}

/* Route names show up in logs and messages, so they are kept to plain words. */
static bool route_name_ok(const char *name)
{
    if (*name == '\0')
        return false;
    for (; *name; name++)
        if (!isalnum((unsigned char)*name) && !strchr("_-.", *name))
            return false;
    return true;
}

/* Starts a new [route NAME] section; a duplicate is reported and its lines skipped. */
static void file_route(struct loader *ld, const char *name, int lineno)
{
    ld->section = NULL;
    if (!route_name_ok(name)) {
        errs_add(ld->errs, "%s:%d: bad route name '%.64s': use letters, digits, '_', '-', '.'",
                 ld->file, lineno, name);
        return;
    }
    for (size_t i = 0; i < ld->n_routes; i++) {
        if (strcmp(ld->routes[i].name, name) == 0) {
            errs_add(ld->errs, "%s:%d: duplicate route '%s' (first defined at line %d)", ld->file,
                     lineno, name, ld->routes[i].line);
            return;
        }
    }
    ld->routes = xrealloc(ld->routes, (ld->n_routes + 1) * sizeof(*ld->routes));
    ld->section = &ld->routes[ld->n_routes++];
    *ld->section = (struct layer){.name = xstrdup(name), .line = lineno};
}

/* Handles a "[...]" line: [credproxy] is the top level again, [route NAME] a new route. */
static void file_section(struct loader *ld, char *p, int lineno)
{
    char *end = strchr(p, ']');
    char *rest = end ? trim(end + 1) : NULL;
    ld->section = NULL; /* lines of a bad section are skipped, not misattributed */
    if (!rest || (*rest && *rest != '#' && *rest != ';')) {
        errs_add(ld->errs, "%s:%d: malformed section header; expected [route NAME]", ld->file,
                 lineno);
        return;
    }
    *end = '\0';
    char *name = trim(p + 1);
    if (strcmp(name, "credproxy") == 0)
        ld->section = &ld->top;
    else if (strncmp(name, "route", 5) == 0 && (name[5] == '\0' || isspace((unsigned char)name[5])))
        file_route(ld, trim(name + 5), lineno);
    else
        errs_add(ld->errs, "%s:%d: unknown section '[%.64s]'; expected [credproxy] or [route NAME]",
                 ld->file, lineno, name);
}

/* Applies "key = value" to the current section after checking it belongs there. */
static void file_setting(struct loader *ld, const char *key, const char *value, int lineno)
{
    const struct setting *s = setting_by_key(key);
    struct origin o = {SRC_FILE, lineno};
    if (!s) {
        errs_add(ld->errs, "%s:%d: key '%.64s': unknown setting (see --help)", ld->file, lineno,
                 key);
        return;
    }
    if (s->scope == SCOPE_GLOBAL && ld->section != &ld->top) {
        origin_err(ld, s, o, "global setting in a route section; put it before the first [route]");
        return;
    }
    struct origin prev = ld->section->org[setting_index(s)];
    if (prev.src == SRC_FILE && s->type != T_LIST && s->type != T_IDS && s->type != T_WORDS) {
        origin_err(ld, s, o, "already set at line %d", prev.line);
        return;
    }
    loader_set(ld, ld->section, s, value, o);
}

/* Handles one line of the config file. */
static void file_line(struct loader *ld, char *line, int lineno)
{
    char msg[128];
    char *p = trim(line);
    if (*p == '\0' || *p == '#' || *p == ';')
        return;
    if (*p == '[') {
        file_section(ld, p, lineno);
        return;
    }
    char *eq = strchr(p, '=');
    if (eq)
        *eq = '\0';
    char *key = trim(p);
    if (!eq || *key == '\0') {
        errs_add(ld->errs, "%s:%d: expected 'key = value', '[route NAME]' or a comment", ld->file,
                 lineno);
        return;
    }
    char *value = file_value(eq + 1, msg, sizeof(msg));
    if (!value)
        errs_add(ld->errs, "%s:%d: key '%.64s': %s", ld->file, lineno, key, msg);
    else if (ld->section)
        file_setting(ld, key, value, lineno);
}

static void file_load(struct loader *ld, const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        errs_add(ld->errs, "%s: cannot open config file: %s", path, strerror(errno));
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    ld->section = &ld->top;
    while (getline(&line, &cap, f) >= 0)
        file_line(ld, line, ++lineno);
    if (ferror(f))
        errs_add(ld->errs, "%s: cannot read config file: %s", path, strerror(errno));
    free(line);
    fclose(f);
}

/* ---- Environment and flags ------------------------------------------------------------- */

/* CREDPROXY_<KEY> for every setting; empty values count as unset, as compose files write them. */
static void env_apply(struct loader *ld, char **envp)
{
    char name[64];
    for (size_t i = 0; i < N_SETTINGS; i++) {
        env_name(settings[i].key, name, sizeof(name));
        const char *v = env_lookup(envp, name);
        if (v && *v)
            loader_set(ld, &ld->top, &settings[i], v, (struct origin){SRC_ENV, 0});
    }
}

/* Handles the flags that take no value; true when arg was one of them. */
static bool flag_switch(struct config *cfg, const char *arg)
{
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
        cfg->show_help = true;
    else if (strcmp(arg, "--version") == 0)
        cfg->show_version = true;
    else if (strcmp(arg, "--check-config") == 0)
        cfg->check_only = true;
    else if (strcmp(arg, "--upgrade") == 0)
        cfg->upgrade = true;
    else if (strcmp(arg, "--help-man") == 0)
        cfg->show_man = true;
    else
        return false;
    return true;
}

/*
 * First pass over argv: handles the switches and --config, and queues the settings in q so
 * they can be applied after the file and the environment. Returns how many were queued.
 */
static size_t flags_scan(struct loader *ld, int argc, char **argv, struct flag_arg *q)
{
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (flag_switch(ld->cfg, arg))
            continue;
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            errs_add(ld->errs, "%.64s: unexpected argument; settings are flags like --listen", arg);
            continue;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        int len = eq ? (int)(eq - name) : (int)strlen(name);
        bool is_config = len == 6 && strncmp(name, "config", 6) == 0;
        const struct setting *s = is_config ? NULL : setting_find(name, (size_t)len);
        /* A value never starts with "--", so "--listen --socket x" is a missing value. */
        const char *value = eq                                                   ? eq + 1
                            : i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 ? argv[++i]
                                                                                 : NULL;
        if (!s && !is_config)
            errs_add(ld->errs, "--%.*s: unknown flag (see --help)", len, name);
        else if (!value || !*value)
            errs_add(ld->errs, "--%.*s: missing value", len, name);
        else if (is_config) {
            free(ld->cfg->config_file);
            ld->cfg->config_file = xstrdup(value);
        } else
            q[n++] = (struct flag_arg){s, value};
    }
    return n;
}

/* ---- Building and checking routes ------------------------------------------------------ */

/* True when layer L sets s or another key of its group, so the route does not inherit s. */
static bool layer_owns(const struct layer *L, const struct setting *s)
{
    if (s->group == G_NONE)
        return L->org[setting_index(s)].src != SRC_NONE;
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (settings[i].group == s->group && L->org[i].src != SRC_NONE)
            return true;
    return false;
}

/*
 * Fills route r from layer L (NULL for the default route) and the top level. The default
 * listen address applies only when neither listen nor socket was given anywhere, because a
 * socket-only route should not also open a TCP port.
 */
static void route_build(struct loader *ld, struct layer *L, size_t r)
{
    struct route_config *rc = &ld->cfg->routes[r];
    struct built_route *b = &ld->built[r];
    rc->name = xstrdup(L ? L->name : "default");
    b->line = L ? L->line : 0;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (settings[i].scope != SCOPE_ROUTE)
            continue;
        struct layer *from = L && layer_owns(L, &settings[i]) ? L : &ld->top;
        value_copy(&settings[i], rc, &from->rc);
        b->org[i] = from->org[i];
    }
    if (rc->n_listen == 0 && !rc->socket_path) {
        const struct setting *s = setting_by_key("listen");
        char msg[256];
        if (value_parse(s, rc, s->def, false, msg, sizeof(msg)))
            b->org[setting_index(s)] = (struct origin){SRC_DEFAULT, 0};
    }
}

static void routes_build(struct loader *ld)
{
    size_t n = ld->n_routes ? ld->n_routes : 1;
    ld->cfg->routes = xrealloc(NULL, n * sizeof(*ld->cfg->routes));
    ld->built = xrealloc(NULL, n * sizeof(*ld->built));
    memset(ld->cfg->routes, 0, n * sizeof(*ld->cfg->routes));
    memset(ld->built, 0, n * sizeof(*ld->built));
    ld->cfg->n_routes = n;
    for (size_t r = 0; r < n; r++)
        route_build(ld, ld->n_routes ? &ld->routes[r] : NULL, r);
}

/*
 * Reports a problem with route r. With key set, the message points where that key was set;
 * otherwise (or when the key kept its default) at the [route] header. Named routes are named
 * in the message, since a top-level value may be what broke them.
 */
__attribute__((format(printf, 4, 5))) static void route_err(struct loader *ld, size_t r,
                                                            const char *key, const char *fmt, ...)
{
    const struct setting *s = key ? setting_by_key(key) : NULL;
    struct origin o = s ? ld->built[r].org[setting_index(s)] : (struct origin){SRC_NONE, 0};
    const char *name = ld->cfg->routes[r].name;
    char where[512], msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (origin_explicit(o))
        origin_prefix(ld, s, o, where, sizeof(where));
    else if (ld->built[r].line)
        snprintf(where, sizeof(where), "%s:%d", ld->file, ld->built[r].line);
    else
        snprintf(where, sizeof(where), "%s%s%s", s ? "key '" : "config", s ? s->key : "",
                 s ? "'" : "");
    if (ld->built[r].line)
        errs_add(ld->errs, "%s: route '%s': %s", where, name, msg);
    else
        errs_add(ld->errs, "%s: %s", where, msg);
}

/* Lower-case letters, digits and dashes: us-east-1, cn-north-1, us-gov-west-1. */
static bool region_valid(const char *s)
{
    if (!*s || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '-')
            return false;
    return true;
}

/* https://HOST..., or http:// to loopback only: the secret must not cross a network in clear. */
static bool endpoint_valid(const char *url)
{
    if (strncasecmp(url, "https://", 8) == 0)
        return url[8] != '\0' && url[8] != '/';
    if (strncasecmp(url, "http://", 7) != 0)
        return false;
    const char *h = url + 7;
    char host[256];
    size_t n = *h == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":/?#");
    if (n == 0 || n >= sizeof(host))
        return false;
    memcpy(host, h, n);
    host[n] = '\0';
    return config_host_is_loopback(host);
}

static bool region_listed(const struct route_config *rc, const char *region, size_t before)
{
    for (size_t i = 0; i < before && i < rc->n_secret_regions; i++)
        if (strcmp(rc->secret_regions[i], region) == 0)
            return true;
    return false;
}

/*
 * secret_regions lists a replicated secret's regions, primary first; region, when also set,
 * must name the same primary (two different "first" regions would leave it unclear which one
 * signs). secrets_endpoints gives "REGION=URL" for regions of that list; secrets_endpoint
 * stays the primary's, so the two must not both name it.
 */
static void check_secret_regions(struct loader *ld, size_t r)
{
    const struct route_config *rc = &ld->cfg->routes[r];
    if (rc->n_secret_regions > CONFIG_MAX_SECRET_REGIONS)
        route_err(ld, r, "secret_regions", "%zu regions; at most %d", rc->n_secret_regions,
                  CONFIG_MAX_SECRET_REGIONS);
    for (size_t i = 0; i < rc->n_secret_regions; i++) {
        const char *reg = rc->secret_regions[i];
        if (!region_valid(reg))
            route_err(ld, r, "secret_regions", "'%.64s' is not an AWS region name (like eu-west-1)",
                      reg);
        else if (region_listed(rc, reg, i))
            route_err(ld, r, "secret_regions", "region '%.64s' is listed twice", reg);
    }
    if (rc->n_secret_regions && rc->region && strcmp(rc->region, rc->secret_regions[0]) != 0)
        route_err(ld, r, "region",
                  "'%.64s' is not the first (primary) region of secret_regions ('%.64s'); set "
                  "only secret_regions, or put the same region first",
                  rc->region, rc->secret_regions[0]);
    for (size_t i = 0; i < rc->n_secrets_endpoints; i++) {
        const char *item = rc->secrets_endpoints[i];
        const char *eq = strchr(item, '=');
        char reg[65];
        size_t n = eq ? (size_t)(eq - item) : 0;
        if (!eq || n == 0 || n >= sizeof(reg)) {
            route_err(ld, r, "secrets_endpoints", "'%.200s' is not REGION=URL", item);
            continue;
        }
        memcpy(reg, item, n);
        reg[n] = '\0';
        const char *primary = rc->n_secret_regions ? rc->secret_regions[0] : rc->region;
        bool listed = rc->n_secret_regions ? region_listed(rc, reg, rc->n_secret_regions)
                                           : primary && strcmp(primary, reg) == 0;
        if (!listed)
            route_err(ld, r, "secrets_endpoints",
                      "region '%.64s' is not in secret_regions (nor region); an endpoint for a "
                      "region never asked would be unused",
                      reg);
        else if (!endpoint_valid(eq + 1))
            route_err(ld, r, "secrets_endpoints",
                      "'%.200s' must be an https:// URL, or http:// to a loopback address", eq + 1);
        else if (rc->secrets_endpoint && primary && strcmp(reg, primary) == 0)
            route_err(ld, r, "secrets_endpoints",
                      "region '%.64s' is the primary, whose endpoint secrets_endpoint also sets; "
                      "set it in one place",
                      reg);
        for (size_t j = 0; j < i; j++)
            if (strncmp(rc->secrets_endpoints[j], item, n + 1) == 0)
                route_err(ld, r, "secrets_endpoints", "region '%.64s' is given twice", reg);
    }
}

/* The secret says which database to log in to and as whom; exactly one source of it. */
static void check_secret(struct loader *ld, size_t r)
{
    const struct route_config *rc = &ld->cfg->routes[r];
    if (rc->secret_file && rc->secret_id)
        route_err(ld, r, "secret_id", "secret_file is also set; set exactly one of them");
    else if (!rc->secret_file && !rc->secret_id && rc->upstream_auth != UPSTREAM_AUTH_IAM)
        route_err(ld, r, NULL, "no secret: set secret_file or secret_id");
    if (rc->region && !region_valid(rc->region))
        route_err(ld, r, "region", "'%.64s' is not an AWS region name (like eu-west-1)",
                  rc->region);
    if (rc->secrets_endpoint && !endpoint_valid(rc->secrets_endpoint))
        route_err(ld, r, "secrets_endpoint",
                  "'%.200s' must be an https:// URL, or http:// to a loopback address",
                  rc->secrets_endpoint);
    if (rc->secret_id)
        check_secret_regions(ld, r);
}

/* Returns the first listen address that is not loopback, or NULL. */
static const char *first_public_listen(const struct route_config *rc)
{
    char host[256];
    int port;
    for (size_t i = 0; i < rc->n_listen; i++)
        if (!config_parse_hostport(rc->listen[i], host, sizeof(host), &port) ||
            !config_host_is_loopback(host))
            return rc->listen[i];
    return NULL;
}

/* Trust means no check at all, so it is safe only where only this host can connect. */
static void check_trust(struct loader *ld, size_t r)
{
    const struct route_config *rc = &ld->cfg->routes[r];
    const char *pub = first_public_listen(rc);
    if (rc->client_auth != CLIENT_AUTH_TRUST || !pub)
        return;
    bool auth_set = origin_explicit(ld->built[r].org[setting_index(setting_by_key("client_auth"))]);
    route_err(ld, r, auth_set ? "client_auth" : "listen",
              "client_auth=trust refused on non-loopback address '%.64s': trust lets in anyone who "
              "can reach the port; use client_auth=peer (with socket) or client_auth=password "
              "(with users_file)",
              pub);
}

/* Peer credentials exist only on unix sockets, and an empty allow-list admits nobody. */
static void check_peer(struct loader *ld, size_t r)
{
    const struct route_config *rc = &ld->cfg->routes[r];
    if (!rc->socket_path)
        route_err(ld, r, "client_auth",
                  "client_auth=peer requires socket: peer credentials exist only on unix sockets");
    else if (rc->n_listen)
        route_err(ld, r, "listen",
                  "client_auth=peer cannot check TCP clients on '%.64s'; remove listen or use "
                  "client_auth=password",
                  rc->listen[0]);
    if (!rc->n_peer_uids && !rc->n_peer_gids)
        route_err(ld, r, "client_auth",
                  "client_auth=peer requires peer_uids or peer_gids, or nobody may connect");
}

static void check_client_auth(struct loader *ld, size_t r)
{
    const struct route_config *rc = &ld->cfg->routes[r];
    check_trust(ld, r);
    if (rc->client_auth == CLIENT_AUTH_PEER)
        check_peer(ld, r);
    if (rc->client_auth == CLIENT_AUTH_PASSWORD && !rc->users_file)
        route_err(ld, r, "client_auth", "client_auth=password requires users_file");
}

/* Files whose problems would otherwise surface only at the first connection. */
static void check_files(struct loader *ld, size_t r)
{
    const struct route_config *rc = &ld->cfg->routes[r];
    if (rc->tls_cert && !rc->tls_key)
        route_err(ld, r, "tls_cert", "tls_key must be set too");
    if (rc->tls_key && !rc->tls_cert)
        route_err(ld, r, "tls_key", "tls_cert must be set too");
    if (rc->client_tls == CLIENT_TLS_OFF && rc->tls_cert)
        route_err(ld, r, "client_tls", "off offers no TLS, but tls_cert is set: drop one of them");
    if (rc->upstream_ca && access(rc->upstream_ca, R_OK) != 0)
        route_err(ld, r, "upstream_ca", "cannot read '%.200s': %s", rc->upstream_ca,
                  strerror(errno));
}

/*
 * Every route needs somewhere to listen, and no two listeners may share an address: the
 * second bind would fail, or worse, clients would be split between two databases.
 */
static void check_listeners(struct loader *ld, size_t r)
{
    const struct route_config *rc = &ld->cfg->routes[r];
    size_t max_path = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    if (rc->n_listen == 0 && !rc->socket_path)
        route_err(ld, r, NULL, "no listener: set listen or socket");
    if (rc->socket_path && strlen(rc->socket_path) > max_path)
        route_err(ld, r, "socket", "path longer than %zu bytes", max_path);
    for (size_t q = 0; q <= r; q++) {
        const struct route_config *o = &ld->cfg->routes[q];
        if (q < r && rc->socket_path && o->socket_path &&
            strcmp(rc->socket_path, o->socket_path) == 0)
            route_err(ld, r, "socket", "socket '%.200s' is also used by route '%s'",
                      rc->socket_path, o->name);
        for (size_t i = 0; i < rc->n_listen; i++)
            for (size_t j = 0; j < (q == r ? i : o->n_listen); j++)
                if (listen_conflict(rc->listen[i], o->listen[j]))
                    route_err(ld, r, "listen",
                              "address '%.64s' conflicts with '%.64s' of route '%s'", rc->listen[i],
                              o->listen[j], o->name);
    }
}

/*
 * An IAM token is a password for 15 minutes, sent in the clear inside the connection: TLS is
 * required (auto means verify-identity here, even for a loopback host). Without a secret the
 * route itself says where and as whom.
 */
static void check_iam(struct loader *ld, size_t r)
{
    const struct route_config *rc = &ld->cfg->routes[r];
    if (rc->upstream_auth != UPSTREAM_AUTH_IAM)
        return;
    if (rc->upstream_tls == UPSTREAM_TLS_DISABLED || rc->upstream_tls == UPSTREAM_TLS_PREFERRED)
        route_err(ld, r, "upstream_tls",
                  "upstream_auth=iam sends the IAM token as a cleartext password, so upstream TLS "
                  "is required: use verify-identity (the default), verify-ca or required, not %s",
                  config_upstream_tls_name(rc->upstream_tls));
    if (!rc->secret_file && !rc->secret_id) {
        if (!rc->upstream_user)
            route_err(ld, r, "upstream_auth",
                      "upstream_auth=iam without a secret needs upstream_user (the database user "
                      "the token is for)");
        if (!rc->upstream_host)
            route_err(ld, r, "upstream_auth",
                      "upstream_auth=iam without a secret needs upstream_host");
    }
}

/* The admin endpoint has no authentication: loopback only, unless the operator says otherwise. */
static void check_admin(struct loader *ld)
{
    const struct setting *s = setting_by_key("admin_listen");
    const char *a = ld->cfg->admin_listen;
    struct origin o = ld->top.org[setting_index(s)];
    char host[256];
    int port;
    if (!a)
        return;
    if (!config_parse_hostport(a, host, sizeof(host), &port)) {
        origin_err(ld, s, o, "'%.64s' is not HOST:PORT (or [IPV6]:PORT)", a);
        return;
    }
    if (!config_host_is_loopback(host) && !ld->cfg->admin_listen_public)
        origin_err(ld, s, o,
                   "'%.64s' is not a loopback address: the admin endpoint has no authentication; "
                   "use 127.0.0.1 or [::1], or set admin_listen_public = true to expose it",
                   a);
    for (size_t r = 0; r < ld->cfg->n_routes; r++)
        for (size_t i = 0; i < ld->cfg->routes[r].n_listen; i++)
            if (listen_conflict(a, ld->cfg->routes[r].listen[i]))
                origin_err(ld, s, o, "'%.64s' conflicts with listen '%.64s' of route '%s'", a,
                           ld->cfg->routes[r].listen[i], ld->cfg->routes[r].name);
}

static void routes_check(struct loader *ld)
{
    for (size_t r = 0; r < ld->cfg->n_routes; r++) {
        check_secret(ld, r);
        check_iam(ld, r);
        check_client_auth(ld, r);
        check_files(ld, r);
        check_listeners(ld, r);
    }
}

/* ---- Entry points ---------------------------------------------------------------------- */

/* Frees the route-scope values of rc and its name. */
static void route_values_free(struct route_config *rc)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (settings[i].scope == SCOPE_ROUTE)
            value_free(&settings[i], rc);
    free(rc->name);
    rc->name = NULL;
}

static void loader_free(struct loader *ld)
{
    route_values_free(&ld->top.rc);
    for (size_t i = 0; i < ld->n_routes; i++) {
        route_values_free(&ld->routes[i].rc);
        free(ld->routes[i].name);
    }
    free(ld->routes);
    free(ld->built);
}

bool config_load(struct config *out, int argc, char **argv, char **envp, struct config_errors *errs)
{
    memset(out, 0, sizeof(*out));
    struct loader ld = {.cfg = out, .errs = errs};
    size_t errs_before = errs->n;
    if (!envp)
        envp = environ;
    struct flag_arg *flags = xrealloc(NULL, (size_t)(argc > 0 ? argc : 1) * sizeof(*flags));
    size_t n_flags = flags_scan(&ld, argc, argv, flags);
    if (out->show_help || out->show_man || out->show_version) {
        free(flags);
        return true;
    }
    const char *env_file = env_lookup(envp, "CREDPROXY_CONFIG");
    if (!out->config_file && env_file && *env_file)
        out->config_file = xstrdup(env_file);
    ld.file = out->config_file;
    apply_defaults(&ld);
    if (out->config_file)
        file_load(&ld, out->config_file);
    env_apply(&ld, envp);
    for (size_t i = 0; i < n_flags; i++)
        loader_set(&ld, &ld.top, flags[i].s, flags[i].value, (struct origin){SRC_FLAG, 0});
    free(flags);
    routes_build(&ld);
    routes_check(&ld);
    check_admin(&ld);
    loader_free(&ld);
    return errs->n == errs_before;
}

void config_free(struct config *cfg)
{
    for (size_t r = 0; r < cfg->n_routes; r++)
        route_values_free(&cfg->routes[r]);
    free(cfg->routes);
    free(cfg->config_file);
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (settings[i].scope == SCOPE_GLOBAL)
            value_free(&settings[i], cfg);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- Comparing two loaded configurations (a reload) ------------------------------------- */

static bool opt_str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* True when s has the same value in a and b. */
static bool value_eq(const struct setting *s, void *a, void *b)
{
    switch (s->type) {
    case T_STRING:
        return opt_str_eq(*str_slot(s, a), *str_slot(s, b));
    case T_LIST:
    case T_WORDS:
        if (*count_slot(s, a) != *count_slot(s, b))
            return false;
        for (size_t i = 0; i < *count_slot(s, a); i++)
            if (!opt_str_eq((*list_slot(s, a))[i], (*list_slot(s, b))[i]))
                return false;
        return true;
    case T_IDS:
        return *count_slot(s, a) == *count_slot(s, b) &&
               (*count_slot(s, a) == 0 || memcmp(*ids_slot(s, a), *ids_slot(s, b),
                                                 *count_slot(s, a) * sizeof(unsigned)) == 0);
    default:
        return *int_slot(s, a) == *int_slot(s, b);
    }
}

static size_t changes(enum setting_scope scope, void *a, void *b, const char **keys, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (settings[i].scope == scope && !value_eq(&settings[i], a, b)) {
            if (n < max)
                keys[n] = settings[i].key;
            n++;
        }
    return n;
}

size_t config_route_changes(const struct route_config *a, const struct route_config *b,
                            const char **keys, size_t max)
{
    return changes(SCOPE_ROUTE, (void *)a, (void *)b, keys, max);
}

size_t config_global_changes(const struct config *a, const struct config *b, const char **keys,
                             size_t max)
{
    return changes(SCOPE_GLOBAL, (void *)a, (void *)b, keys, max);
}

/* Replaces dst's value of key with a deep copy of src's; src is only read. */
static bool keep_value(enum setting_scope scope, void *dst, const void *src, const char *key)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        if (s->scope != scope || strcmp(s->key, key) != 0)
            continue;
        value_free(s, dst);
        value_copy(s, dst, (void *)src);
        return true;
    }
    return false;
}

bool config_route_keep(struct route_config *dst, const struct route_config *src, const char *key)
{
    return keep_value(SCOPE_ROUTE, dst, src, key);
}

bool config_global_keep(struct config *dst, const struct config *src, const char *key)
{
    return keep_value(SCOPE_GLOBAL, dst, src, key);
}

void config_errors_free(struct config_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        free(errs->lines[i]);
    free(errs->lines);
    errs->lines = NULL;
    errs->n = 0;
}

/* ---- --help ---------------------------------------------------------------------------- */

static void help_setting(FILE *f, const struct setting *s)
{
    char flag[64], env[64];
    flag_name(s->key, flag, sizeof(flag));
    env_name(s->key, env, sizeof(env));
    fprintf(f, "  %s %s\n      %s\n      [%s, %s, %s", flag, s->metavar, s->help, s->key, env,
            s->scope == SCOPE_GLOBAL ? "global" : "per route");
    for (int i = 0; s->names && s->names[i]; i++)
        fprintf(f, "%s%s", i ? "|" : "; one of ", s->names[i]);
    if (s->def)
        fprintf(f, "; default %s", s->def);
    fputs("]\n", f);
}

/* The switches (flags without a setting), shown by --help and the manual page alike. */
static const struct {
    const char *flag, *metavar, *help;
} switches[] = {
    {"--config", "FILE", "config file [CREDPROXY_CONFIG]"},
    {"--check-config", NULL, "validate the configuration and exit"},
    {"--upgrade", NULL,
     "share the listeners of a running credproxy, to replace it (binary swap: start the new "
     "one with --upgrade, then SIGTERM the old one)"},
    {"-h, --help", NULL, "show this help and exit"},
    {"--help-man", NULL, "print the manual page credproxy(8) (roff) and exit"},
    {"--version", NULL, "show the version and exit"},
};

static const char help_summary[] =
    "A MySQL proxy that logs in to the database with credentials from a secret.";
static const char help_sources[] =
    "Settings come from built-in defaults, then the config file, then CREDPROXY_<KEY>\n"
    "environment variables, then flags; later sources win. In the config file\n"
    "(\"key = value\" lines, # or ; comments), keys before any section or in\n"
    "[credproxy] are global and the defaults of every route; [route NAME] sections\n"
    "define routes. Durations: 250ms, 10s, 2m, 1h, or a bare number of seconds.";

void config_print_help(FILE *f, const char *argv0)
{
    fprintf(f,
            "Usage: %s [--config FILE] [--check-config] [--upgrade] [--SETTING VALUE]...\n\n%s\n\n"
            "%s\n\n",
            argv0, help_summary, help_sources);
    for (size_t i = 0; i < sizeof(switches) / sizeof(switches[0]); i++)
        fprintf(f, "  %s%s%s\n      %s\n", switches[i].flag, switches[i].metavar ? " " : "",
                switches[i].metavar ? switches[i].metavar : "", switches[i].help);
    fputs("\nSettings [file key, environment variable, scope]:\n", f);
    for (size_t i = 0; i < N_SETTINGS; i++)
        help_setting(f, &settings[i]);
}

/* ---- --help-man ------------------------------------------------------------------------ */

/*
 * Text as roff: backslashes escaped, '-' as \- (so a flag is not hyphenated or turned into a
 * dash), newlines joined, and a line never starting with '.' or '\'' (a request).
 */
static void man_text(FILE *f, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", f);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", f);
        else if (*s == '-')
            fputs("\\-", f);
        else if (*s == '\n')
            fputc(' ', f);
        else
            fputc(*s, f);
    }
}

static void man_setting(FILE *f, const struct setting *s)
{
    char flag[64], env[64];
    flag_name(s->key, flag, sizeof(flag));
    env_name(s->key, env, sizeof(env));
    fputs(".TP\n\\fB", f);
    man_text(f, s->key);
    fputs("\\fR = \\fI", f);
    man_text(f, s->metavar);
    fputs("\\fR\n", f);
    man_text(f, s->help);
    fputs(".\n.br\nFlag \\fB", f);
    man_text(f, flag);
    fputs("\\fR, environment \\fB", f);
    man_text(f, env);
    fprintf(f, "\\fR; %s", s->scope == SCOPE_GLOBAL ? "global" : "per route");
    for (int i = 0; s->names && s->names[i]; i++) {
        fputs(i ? "|" : "; one of ", f);
        man_text(f, s->names[i]);
    }
    if (s->def) {
        fputs("; default ", f);
        man_text(f, s->def);
    }
    fputs(".\n", f);
}

void config_print_man(FILE *f)
{
    fprintf(f,
            ".\\\" credproxy(8), generated by credproxy --help-man from the settings table.\n"
            ".TH CREDPROXY 8 \"\" \"credproxy %s\" \"System Administration\"\n"
            ".nh\n.ad l\n.SH NAME\ncredproxy \\- MySQL proxy that logs in with credentials from a "
            "secret\n"
            ".SH SYNOPSIS\n.B credproxy\n[\\fB\\-\\-config\\fR \\fIFILE\\fR] "
            "[\\fB\\-\\-check\\-config\\fR] [\\fB\\-\\-\\fISETTING\\fR \\fIVALUE\\fR]...\n"
            ".SH DESCRIPTION\n",
            CREDPROXY_VERSION);
    man_text(f, help_summary);
    fputs("\nApplications connect to it on loopback or a unix socket with no password; it logs in\n"
          "to MySQL or MariaDB with the credentials of a secret (AWS Secrets Manager or a file),\n"
          "pools the connections and keeps clients working across rotations and restarts.\n"
          ".PP\n",
          f);
    man_text(f, help_sources);
    fputs("\n.SH OPTIONS\n", f);
    for (size_t i = 0; i < sizeof(switches) / sizeof(switches[0]); i++) {
        fputs(".TP\n\\fB", f);
        man_text(f, switches[i].flag);
        fputs("\\fR", f);
        if (switches[i].metavar) {
            fputs(" \\fI", f);
            man_text(f, switches[i].metavar);
            fputs("\\fR", f);
        }
        fputc('\n', f);
        man_text(f, switches[i].help);
        fputs("\n", f);
    }
    fputs(".SH SETTINGS\n"
          "Each setting is a config file key, a flag and an environment variable.\n",
          f);
    for (size_t i = 0; i < N_SETTINGS; i++)
        man_setting(f, &settings[i]);
    fputs(".SH EXIT STATUS\n"
          ".TP\n0\nstopped cleanly, or \\fB\\-\\-check\\-config\\fR found the configuration valid\n"
          ".TP\n1\ncould not start (a listener, the secret, the event loop)\n"
          ".TP\n2\nthe configuration is invalid: every problem is printed as FILE:LINE: key 'K': "
          "...\n"
          ".SH FILES\n"
          ".TP\n.I /etc/credproxy/credproxy.conf\nthe configuration the systemd unit reads\n"
          ".TP\n.I /usr/share/doc/credproxy/examples/credproxy.conf\nan annotated example\n"
          ".SH SEE ALSO\n"
          ".BR systemd.service (5),\n"
          "the README and docs/kubernetes.md of the source tree.\n",
          f);
}
