/* Unit tests for conf/config.c: precedence, value parsing, routes and every validation error. */
#include "conf/config.h"
#include "tests/check.h"

#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_ARGS 12

static char tmp_path[64];

/* Writes text to a fresh temporary file whose name is left in tmp_path. */
static void write_tmp(const char *text)
{
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/test_config_XXXXXX");
    int fd = mkstemp(tmp_path);
    CHECK(fd >= 0);
    size_t n = strlen(text);
    CHECK(write(fd, text, n) == (ssize_t)n);
    close(fd);
}

/*
 * Loads a configuration from file_text (no --config when NULL), the NULL-terminated env
 * array and the NULL-terminated flag array, as if run as "credproxy [--config F] args...".
 */
static bool load(const char *file_text, const char *const *env, const char *const *args,
                 struct config *cfg, struct config_errors *errs)
{
    char *argv[MAX_ARGS + 4];
    char *envp[MAX_ARGS + 1] = {NULL};
    int argc = 0;
    argv[argc++] = "credproxy";
    if (file_text) {
        write_tmp(file_text);
        argv[argc++] = "--config";
        argv[argc++] = tmp_path;
    }
    for (int i = 0; args && args[i] && i < MAX_ARGS; i++)
        argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    for (int i = 0; env && env[i] && i < MAX_ARGS; i++)
        envp[i] = (char *)env[i];
    bool ok = config_load(cfg, argc, argv, envp, errs);
    if (file_text)
        unlink(tmp_path);
    return ok;
}

/* True when one collected error starts with want; prints them all when none does. */
static bool has_error(const struct config_errors *errs, const char *want)
{
    for (size_t i = 0; i < errs->n; i++)
        if (strncmp(errs->lines[i], want, strlen(want)) == 0)
            return true;
    fprintf(stderr, "  wanted error: %s\n", want);
    for (size_t i = 0; i < errs->n; i++)
        fprintf(stderr, "  got:          %s\n", errs->lines[i]);
    return false;
}

/* Loads and expects success, printing the errors otherwise. */
static bool load_ok(const char *file_text, const char *const *env, const char *const *args,
                    struct config *cfg)
{
    struct config_errors errs = {0};
    bool ok = load(file_text, env, args, cfg, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  unexpected error: %s\n", errs.lines[i]);
    CHECK(ok);
    CHECK(errs.n == 0);
    config_errors_free(&errs);
    return ok;
}

static void test_defaults(void)
{
    struct config cfg;
    const char *args[] = {"--secret-file", "/run/secret.json", NULL};
    if (load_ok(NULL, NULL, args, &cfg)) {
        CHECK(cfg.n_routes == 1);
        struct route_config *r = &cfg.routes[0];
        CHECK_STR(r->name, "default");
        CHECK(r->n_listen == 1);
        CHECK_STR(r->listen[0], "127.0.0.1:3306");
        CHECK(r->socket_path == NULL);
        CHECK_STR(r->secret_file, "/run/secret.json");
        CHECK(r->secret_id == NULL);
        CHECK(r->upstream_port == 0);
        CHECK(r->upstream_tls == UPSTREAM_TLS_AUTO);
        CHECK(r->client_auth == CLIENT_AUTH_TRUST);
        CHECK_STR(r->server_version, "5.7.99-credproxy");
        CHECK(r->connect_timeout_ms == 10000);
        CHECK(r->handshake_timeout_ms == 10000);
        CHECK(r->secret_poll_ms == 1000);
        CHECK(r->region == NULL);
        CHECK(r->secrets_endpoint == NULL);
        CHECK(r->secret_refresh_ms == 300000);
        CHECK(r->aws_timeout_ms == 5000);
        CHECK(cfg.log_level == LOG_LEVEL_INFO);
        CHECK(cfg.log_format == LOG_FORMAT_TEXT);
        CHECK(cfg.log_file == NULL);
        CHECK(cfg.workers == 0);
        CHECK(cfg.config_file == NULL);
        CHECK(!cfg.check_only && !cfg.show_help && !cfg.show_version);
    }
    config_free(&cfg);
}

/* Each source in turn beats the one before: defaults < file < environment < flags. */
/* The Secrets Manager settings, from flags and the file, per route. */
static void test_aws_settings(void)
{
    struct config cfg;
    const char *args[] = {"--secret-id",
                          "prod/db",
                          "--region",
                          "cn-north-1",
                          "--secrets-endpoint",
                          "http://127.0.0.1:4566",
                          "--secret-refresh",
                          "90s",
                          "--aws-timeout",
                          "1500ms",
                          NULL};
    if (load_ok(NULL, NULL, args, &cfg)) {
        struct route_config *r = &cfg.routes[0];
        CHECK_STR(r->secret_id, "prod/db");
        CHECK_STR(r->region, "cn-north-1");
        CHECK_STR(r->secrets_endpoint, "http://127.0.0.1:4566");
        CHECK(r->secret_refresh_ms == 90000);
        CHECK(r->aws_timeout_ms == 1500);
        config_free(&cfg);
    }
    const char *https[] = {"--secret-id", "x", "--secrets-endpoint",
                           "https://vpce-1.secretsmanager.eu-west-1.vpce.amazonaws.com", NULL};
    if (load_ok(NULL, NULL, https, &cfg))
        config_free(&cfg);
    const char *v6[] = {"--secret-id", "x", "--secrets-endpoint", "http://[::1]:4566/", NULL};
    if (load_ok(NULL, NULL, v6, &cfg))
        config_free(&cfg);
    /* Replica regions: the primary first, region may repeat it, endpoints per region. */
    const char *file =
        "secret_id = arn:aws:secretsmanager:us-east-1:1:secret:db-AbCdEf\n"
        "region = us-east-1\n"
        "secret_regions = us-east-1, us-west-2\n"
        "secret_regions = eu-central-1\n"
        "secrets_endpoint = http://127.0.0.1:4566\n"
        "secrets_endpoints = us-west-2=http://127.0.0.1:4567,"
        " eu-central-1=https://vpce-2.secretsmanager.eu-central-1.vpce.amazonaws.com\n";
    if (load_ok(file, NULL, NULL, &cfg)) {
        struct route_config *r = &cfg.routes[0];
        CHECK(r->n_secret_regions == 3);
        CHECK_STR(r->secret_regions[0], "us-east-1");
        CHECK_STR(r->secret_regions[1], "us-west-2");
        CHECK_STR(r->secret_regions[2], "eu-central-1");
        CHECK(r->n_secrets_endpoints == 2);
        CHECK_STR(r->secrets_endpoints[0], "us-west-2=http://127.0.0.1:4567");
        config_free(&cfg);
    }
    /* A route inherits the top-level list; flags and the environment set it too. */
    const char *routes = "secret_regions = us-east-1,us-west-2\n"
                         "[route a]\nsecret_id = x\nlisten = 127.0.0.1:1\n"
                         "[route b]\nsecret_id = y\nlisten = 127.0.0.1:2\n"
                         "secret_regions = eu-west-1, eu-west-3\n";
    if (load_ok(routes, NULL, NULL, &cfg)) {
        CHECK(cfg.n_routes == 2 && cfg.routes[0].n_secret_regions == 2);
        CHECK_STR(cfg.routes[0].secret_regions[1], "us-west-2");
        CHECK_STR(cfg.routes[1].secret_regions[0], "eu-west-1");
        config_free(&cfg);
    }
    const char *env[] = {"CREDPROXY_SECRET_REGIONS=ap-south-1,ap-south-2", NULL};
    const char *flags[] = {"--secret-id", "x", "--secrets-endpoints", "ap-south-2=http://[::1]:9",
                           NULL};
    if (load_ok(NULL, env, flags, &cfg)) {
        CHECK(cfg.routes[0].n_secret_regions == 2);
        CHECK_STR(cfg.routes[0].secrets_endpoints[0], "ap-south-2=http://[::1]:9");
        config_free(&cfg);
    }
}

static void test_precedence(void)
{
    static const struct {
        const char *file, *env, *flag, *flag_value, *host;
        enum log_level level;
    } rows[] = {
        {NULL, NULL, NULL, NULL, NULL, LOG_LEVEL_INFO},
        {"upstream_host = f\nlog_level = warn\n", NULL, NULL, NULL, "f", LOG_LEVEL_WARN},
        {"upstream_host = f\n", "CREDPROXY_UPSTREAM_HOST=e", NULL, NULL, "e", LOG_LEVEL_INFO},
        {"upstream_host = f\n", "CREDPROXY_UPSTREAM_HOST=e", "--upstream-host=c", NULL, "c",
         LOG_LEVEL_INFO},
        {"upstream_host = f\n", "CREDPROXY_UPSTREAM_HOST=e", "--upstream-host", "c", "c",
         LOG_LEVEL_INFO},
        {NULL, "CREDPROXY_UPSTREAM_HOST=e", NULL, NULL, "e", LOG_LEVEL_INFO},
        {"upstream_host = f\n", "CREDPROXY_UPSTREAM_HOST=", NULL, NULL, "f", LOG_LEVEL_INFO},
        {"log_level = warn\n", "CREDPROXY_LOG_LEVEL=error", NULL, NULL, NULL, LOG_LEVEL_ERROR},
        {"log_level = warn\n", "CREDPROXY_LOG_LEVEL=error", "--log-level=debug", NULL, NULL,
         LOG_LEVEL_DEBUG},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char file[256];
        snprintf(file, sizeof(file), "secret_file = /s\n%s", rows[i].file ? rows[i].file : "");
        const char *env[] = {rows[i].env, NULL};
        const char *args[] = {"--secret-file", "/s", rows[i].flag, rows[i].flag_value, NULL};
        struct config cfg;
        if (load_ok(rows[i].file ? file : NULL, env, args, &cfg)) {
            const char *host = cfg.routes[0].upstream_host;
            CHECK(rows[i].host ? host && strcmp(host, rows[i].host) == 0 : host == NULL);
            CHECK(cfg.log_level == rows[i].level);
        }
        config_free(&cfg);
    }
}

/* The file comes from --config, else CREDPROXY_CONFIG; --config wins. */
static void test_config_file_source(void)
{
    struct config cfg;
    struct config_errors errs = {0};
    write_tmp("secret_id = from-env-file\n");
    char env_entry[128];
    snprintf(env_entry, sizeof(env_entry), "CREDPROXY_CONFIG=%s", tmp_path);
    const char *env[] = {env_entry, NULL};
    if (load_ok(NULL, env, NULL, &cfg)) {
        CHECK_STR(cfg.config_file, tmp_path);
        CHECK_STR(cfg.routes[0].secret_id, "from-env-file");
    }
    config_free(&cfg);
    const char *args[] = {"--config", "/nonexistent/credproxy.ini", NULL};
    CHECK(!load(NULL, env, args, &cfg, &errs));
    CHECK(has_error(&errs, "/nonexistent/credproxy.ini: cannot open config file: "));
    config_free(&cfg);
    config_errors_free(&errs);
    unlink(tmp_path);
}

static void test_durations(void)
{
    static const struct {
        const char *text;
        int ms; /* -1: refused */
    } rows[] = {
        {"250ms", 250},    {"10s", 10000}, {"2m", 120000}, {"1h", 3600000}, {"5", 5000}, {"1ms", 1},
        {"24h", 86400000}, {"0", -1},      {"0ms", -1},    {"25h", -1},     {"10x", -1}, {"-1", -1},
        {"ms", -1},        {"1.5s", -1},   {"10 s", -1},   {"", -1},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "--handshake-timeout=%s", rows[i].text);
        const char *args[] = {"--secret-file", "/s", flag, NULL};
        struct config cfg;
        struct config_errors errs = {0};
        bool ok = load(NULL, NULL, args, &cfg, &errs);
        CHECK(ok == (rows[i].ms >= 0));
        if (ok)
            CHECK(cfg.routes[0].handshake_timeout_ms == rows[i].ms);
        else if (*rows[i].text)
            CHECK(has_error(&errs, "--handshake-timeout: must be a duration"));
        else
            CHECK(has_error(&errs, "--handshake-timeout: missing value"));
        config_free(&cfg);
        config_errors_free(&errs);
    }
}

/* Integers, enums and id lists: value accepted (and its effect) or the error prefix. */
static void test_values(void)
{
    static const struct {
        const char *key, *value;
        const char *error; /* NULL when accepted */
    } rows[] = {
        {"upstream_port", "1", NULL},
        {"upstream_port", "65535", NULL},
        {"upstream_port", "0", "must be a whole number from 1 to 65535, got '0'"},
        {"upstream_port", "65536", "must be a whole number from 1 to 65535"},
        {"upstream_port", "-5", "must be a whole number from 1 to 65535"},
        {"upstream_port", "33o6", "must be a whole number from 1 to 65535"},
        {"workers", "0", NULL},
        {"workers", "8", NULL},
        {"workers", "-1", "must be a whole number from 0 to 1024, got '-1'"},
        {"upstream_tls", "disabled", NULL},
        {"upstream_tls", "preferred", NULL},
        {"upstream_tls", "required", NULL},
        {"upstream_tls", "verify-ca", NULL},
        {"upstream_tls", "VERIFY_IDENTITY", NULL},
        {"upstream_tls", "auto", NULL},
        {"upstream_tls", "on",
         "must be one of auto|disabled|preferred|required|verify-ca|"
         "verify-identity, got 'on'"},
        {"upstream_role", "writer", NULL},
        {"upstream_role", "ANY", NULL},
        {"upstream_role", "reader", "must be one of auto|any|writer, got 'reader'"},
        {"log_level", "debug", NULL},
        {"log_level", "trace", "must be one of error|warn|info|debug, got 'trace'"},
        {"log_format", "json", NULL},
        {"log_format", "JSON", NULL},
        {"log_format", "logfmt", "must be one of text|json, got 'logfmt'"},
        {"log_file", "/var/log/credproxy/credproxy.log", NULL},
        {"client_auth", "kerberos", "must be one of trust|peer|password, got 'kerberos'"},
        {"peer_gids", "0, 1000,65534", NULL},
        {"peer_gids", "1000,,1001", "empty item in list '1000,,1001'"},
        {"peer_gids", "wheel", "bad id 'wheel': expected a comma-separated list of numeric ids"},
        {"peer_gids", "4294967295", "bad id '4294967295'"},
        {"listen", "127.0.0.1:3307, [::1]:3307,localhost:1", NULL},
        {"listen", ":3306", "bad address ':3306'"},
        {"listen", "localhost", "bad address 'localhost'"},
        {"listen", "::1:3306", "bad address '::1:3306'"},
        {"listen", "[::1]:0", "bad address '[::1]:0'"},
        {"listen", "127.0.0.1:70000", "bad address '127.0.0.1:70000'"},
        {"listen", "127.0.0.1:3306,", "empty item in list"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char file[256], want[512];
        snprintf(file, sizeof(file), "secret_file = /s\n%s = %s\n", rows[i].key, rows[i].value);
        struct config cfg;
        struct config_errors errs = {0};
        bool ok = load(file, NULL, NULL, &cfg, &errs);
        CHECK(ok == (rows[i].error == NULL));
        snprintf(want, sizeof(want), "%s:2: key '%s': %s", tmp_path, rows[i].key,
                 rows[i].error ? rows[i].error : "");
        if (!ok)
            CHECK(has_error(&errs, want));
        config_free(&cfg);
        config_errors_free(&errs);
    }
}

/* Spot checks that accepted values land in the right fields. */
static void test_value_fields(void)
{
    const char *file = "secret_file = /s\n"
                       "socket = /tmp/credproxy-test.sock\n"
                       "client_auth = peer\n"
                       "peer_uids = 1000, 1001\n"
                       "peer_uids = 1002\n"
                       "peer_gids = 0\n"
                       "upstream_tls = VERIFY_CA\n"
                       "upstream_port = 3307\n"
                       "workers = 4\n";
    struct config cfg;
    if (load_ok(file, NULL, NULL, &cfg)) {
        struct route_config *r = &cfg.routes[0];
        CHECK(r->n_listen == 0); /* a socket-only route opens no TCP port */
        CHECK_STR(r->socket_path, "/tmp/credproxy-test.sock");
        CHECK(r->client_auth == CLIENT_AUTH_PEER);
        CHECK(r->n_peer_uids == 3 && r->peer_uids[0] == 1000 && r->peer_uids[2] == 1002);
        CHECK(r->n_peer_gids == 1 && r->peer_gids[0] == 0);
        CHECK(r->upstream_tls == UPSTREAM_TLS_VERIFY_CA);
        CHECK_STR(config_upstream_tls_name(r->upstream_tls), "verify-ca");
        CHECK_STR(config_client_auth_name(r->client_auth), "peer");
        CHECK(r->upstream_port == 3307);
        CHECK(cfg.workers == 4);
    }
    config_free(&cfg);
}

/* Lists: repeated flags accumulate; a later source replaces the earlier one. */
static void test_listen_sources(void)
{
    static const struct {
        const char *file, *env;
        const char *args[5];
        size_t n;
        const char *first, *last;
    } rows[] = {
        {"listen = 127.0.0.1:1, 127.0.0.1:2\n", NULL, {NULL}, 2, "127.0.0.1:1", "127.0.0.1:2"},
        {"listen = 127.0.0.1:1\nlisten = 127.0.0.1:2\n",
         NULL,
         {NULL},
         2,
         "127.0.0.1:1",
         "127.0.0.1:2"},
        {"listen = 127.0.0.1:1\n",
         "CREDPROXY_LISTEN=127.0.0.1:5",
         {NULL},
         1,
         "127.0.0.1:5",
         "127.0.0.1:5"},
        {"listen = 127.0.0.1:1\n",
         "CREDPROXY_LISTEN=127.0.0.1:5",
         {"--listen", "127.0.0.1:7", "--listen=[::1]:8", NULL},
         2,
         "127.0.0.1:7",
         "[::1]:8"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char file[256];
        snprintf(file, sizeof(file), "secret_file = /s\n%s", rows[i].file);
        const char *env[] = {rows[i].env, NULL};
        struct config cfg;
        if (load_ok(file, env, rows[i].args, &cfg)) {
            struct route_config *r = &cfg.routes[0];
            CHECK(r->n_listen == rows[i].n);
            CHECK_STR(r->listen[0], rows[i].first);
            CHECK_STR(r->listen[r->n_listen - 1], rows[i].last);
        }
        config_free(&cfg);
    }
}

/* Comments, blank lines, quoting, [credproxy], and dashes in file keys. */
static void test_file_syntax(void)
{
    const char *file = "# comment\n"
                       "   ; another comment\n"
                       "\n"
                       "[credproxy]\n"
                       "log_level = debug   # inline comment\n"
                       "secret_file = \"/path/with # hash; and semicolon\"  ; comment\n"
                       "server_version = \"8.0.36 \\\"quoted\\\" \\\\ \"\n"
                       "upstream-host=db.example.com;not-a-comment\n"
                       "\tconnect_timeout\t=\t3s\t\n";
    struct config cfg;
    if (load_ok(file, NULL, NULL, &cfg)) {
        struct route_config *r = &cfg.routes[0];
        CHECK(cfg.log_level == LOG_LEVEL_DEBUG);
        CHECK_STR(r->secret_file, "/path/with # hash; and semicolon");
        CHECK_STR(r->server_version, "8.0.36 \"quoted\" \\ ");
        CHECK_STR(r->upstream_host, "db.example.com;not-a-comment");
        CHECK(r->connect_timeout_ms == 3000);
        CHECK_STR(cfg.config_file, tmp_path);
    }
    config_free(&cfg);
}

/* Routes inherit top-level values (including env and flags) unless they set the key. */
static void test_routes(void)
{
    const char *file = "secret_file = /top.json\n"
                       "connect_timeout = 5s\n"
                       "tls_cert = /top.crt\n"
                       "tls_key = /top.key\n"
                       "\n"
                       "[route orders]\n"
                       "listen = 127.0.0.1:3307\n"
                       "secret_id = arn:aws:secretsmanager:eu-west-1:1:secret:orders\n"
                       "upstream_host = orders.db\n"
                       "\n"
                       "[route billing]\n"
                       "socket = /tmp/billing.sock\n"
                       "connect_timeout = 7s\n"
                       "tls_cert = /billing.crt\n"
                       "tls_key = /billing.key\n"
                       "[credproxy]\n"
                       "workers = 2\n";
    const char *env[] = {"CREDPROXY_HANDSHAKE_TIMEOUT=3s", NULL};
    const char *args[] = {"--upstream-host", "flag.db", NULL};
    struct config cfg;
    if (load_ok(file, env, args, &cfg)) {
        CHECK(cfg.n_routes == 2);
        CHECK(cfg.workers == 2);
        struct route_config *a = &cfg.routes[0], *b = &cfg.routes[1];
        CHECK_STR(a->name, "orders");
        CHECK(a->n_listen == 1 && a->socket_path == NULL);
        CHECK_STR(a->secret_id, "arn:aws:secretsmanager:eu-west-1:1:secret:orders");
        CHECK(a->secret_file == NULL); /* secret_id replaces the inherited secret_file */
        CHECK_STR(a->upstream_host, "orders.db");
        CHECK(a->connect_timeout_ms == 5000);
        CHECK(a->handshake_timeout_ms == 3000);
        CHECK_STR(a->tls_cert, "/top.crt");
        CHECK_STR(b->name, "billing");
        CHECK(b->n_listen == 0); /* socket replaces listen, so no default TCP port */
        CHECK_STR(b->socket_path, "/tmp/billing.sock");
        CHECK_STR(b->secret_file, "/top.json");
        CHECK_STR(b->upstream_host, "flag.db");
        CHECK(b->connect_timeout_ms == 7000);
        CHECK(b->handshake_timeout_ms == 3000);
        CHECK_STR(b->tls_cert, "/billing.crt");
        CHECK_STR(b->tls_key, "/billing.key");
    }
    config_free(&cfg);
}

/* Every error names its origin; "%s" in want is the temporary config file. */
struct error_row {
    const char *file;
    const char *env[3];
    const char *args[6];
    const char *want;
};

static const struct error_row error_rows[] = {
    /* upstream_auth=iam: TLS is required; without a secret the route names user and host. */
    {"upstream_auth = iam\nupstream_user = u\nupstream_host = db\nupstream_tls = disabled\n",
     {NULL},
     {NULL},
     "%s:4: key 'upstream_tls': upstream_auth=iam sends the IAM token as a cleartext password"},
    {"secret_file = /s\nupstream_tls = preferred\nupstream_auth = iam\n",
     {NULL},
     {NULL},
     "%s:2: key 'upstream_tls': upstream_auth=iam sends"},
    {"upstream_auth = iam\nupstream_host = db\n",
     {NULL},
     {NULL},
     "%s:1: key 'upstream_auth': upstream_auth=iam without a secret needs upstream_user"},
    {"upstream_auth = iam\nupstream_user = u\n",
     {NULL},
     {NULL},
     "%s:1: key 'upstream_auth': upstream_auth=iam without a secret needs upstream_host"},
    {"secret_file = /s\nupstream_auth = token\n",
     {NULL},
     {NULL},
     "%s:2: key 'upstream_auth': must be one of secret|iam, got 'token'"},
    /* secret_regions and secrets_endpoints: each problem names the line and the key. */
    {"secret_id = x\nsecret_regions = us-east-1, US-WEST-2\n",
     {NULL},
     {NULL},
     "%s:2: key 'secret_regions': 'US-WEST-2' is not an AWS region name"},
    {"secret_id = x\nsecret_regions = us-east-1,us-west-2,us-east-1\n",
     {NULL},
     {NULL},
     "%s:2: key 'secret_regions': region 'us-east-1' is listed twice"},
    {"secret_id = x\nsecret_regions = us-east-1, us west-2\n",
     {NULL},
     {NULL},
     "%s:2: key 'secret_regions': bad item 'us west-2': no spaces inside an item"},
    {"secret_id = x\nsecret_regions = a-1,a-2,a-3,a-4,a-5,a-6,a-7,a-8,a-9\n",
     {NULL},
     {NULL},
     "%s:2: key 'secret_regions': 9 regions; at most 8"},
    {"secret_id = x\nregion = us-west-2\nsecret_regions = us-east-1, us-west-2\n",
     {NULL},
     {NULL},
     "%s:2: key 'region': 'us-west-2' is not the first (primary) region of secret_regions"},
    {"secret_id = x\nsecret_regions = us-east-1, us-west-2\n"
     "secrets_endpoints = us-west-2 http://127.0.0.1:1\n",
     {NULL},
     {NULL},
     "%s:3: key 'secrets_endpoints': bad item"},
    {"secret_id = x\nsecret_regions = us-east-1, us-west-2\n"
     "secrets_endpoints = us-west-2:http://127.0.0.1:1\n",
     {NULL},
     {NULL},
     "%s:3: key 'secrets_endpoints': 'us-west-2:http://127.0.0.1:1' is not REGION=URL"},
    {"secret_id = x\nsecret_regions = us-east-1, us-west-2\n"
     "secrets_endpoints = eu-west-1=http://127.0.0.1:1\n",
     {NULL},
     {NULL},
     "%s:3: key 'secrets_endpoints': region 'eu-west-1' is not in secret_regions"},
    {"secret_id = x\nsecret_regions = us-east-1, us-west-2\n"
     "secrets_endpoints = us-west-2=http://10.0.0.1:1\n",
     {NULL},
     {NULL},
     "%s:3: key 'secrets_endpoints': 'http://10.0.0.1:1' must be an https:// URL, or http:// to "
     "a loopback address"},
    {"secret_id = x\nsecret_regions = us-east-1, us-west-2\nsecrets_endpoint = "
     "http://127.0.0.1:1\nsecrets_endpoints = us-east-1=http://127.0.0.1:2\n",
     {NULL},
     {NULL},
     "%s:4: key 'secrets_endpoints': region 'us-east-1' is the primary, whose endpoint "
     "secrets_endpoint also sets"},
    {"secret_id = x\nsecret_regions = us-east-1, us-west-2\nsecrets_endpoints = "
     "us-west-2=http://127.0.0.1:1, us-west-2=http://127.0.0.1:2\n",
     {NULL},
     {NULL},
     "%s:3: key 'secrets_endpoints': region 'us-west-2' is given twice"},
    /* File problems. */
    {"secret_file = /s\nbogus = 1\n", {NULL}, {NULL}, "%s:2: key 'bogus': unknown setting"},
    {"secret_file = /s\nthis is not valid\n",
     {NULL},
     {NULL},
     "%s:2: expected 'key = value', '[route NAME]' or a comment"},
    {"secret_file = /s\n= value\n", {NULL}, {NULL}, "%s:2: expected 'key = value'"},
    {"secret_file = \"/s\n", {NULL}, {NULL}, "%s:1: key 'secret_file': missing closing quote"},
    {"secret_file = \"/s\" x\n",
     {NULL},
     {NULL},
     "%s:1: key 'secret_file': text after the closing quote"},
    {"secret_file =\n", {NULL}, {NULL}, "%s:1: key 'secret_file': missing value"},
    {"secret_file = /s\nsecret_file = /t\n",
     {NULL},
     {NULL},
     "%s:2: key 'secret_file': already set at line 1"},
    {"secret_file = /s\nupstream_port = 0\n",
     {NULL},
     {NULL},
     "%s:2: key 'upstream_port': must be a whole number from 1 to 65535, got '0'"},
    {"[route a]\nsecret_file = /s\nworkers = 2\n",
     {NULL},
     {NULL},
     "%s:3: key 'workers': global setting in a route section"},
    {"[route a]\nsecret_file = /s\nlisten = 127.0.0.1:1\n[route a]\nsecret_file = /t\n",
     {NULL},
     {NULL},
     "%s:4: duplicate route 'a' (first defined at line 1)"},
    {"[foo]\nsecret_file = /s\n", {NULL}, {NULL}, "%s:1: unknown section '[foo]'"},
    {"[route a b]\n", {NULL}, {NULL}, "%s:1: bad route name 'a b'"},
    {"[route]\n", {NULL}, {NULL}, "%s:1: bad route name ''"},
    {"[route a\n", {NULL}, {NULL}, "%s:1: malformed section header"},
    /* Environment and flags. */
    {NULL,
     {"CREDPROXY_WORKERS=-1"},
     {"--secret-file", "/s"},
     "CREDPROXY_WORKERS: must be a whole number from 0 to 1024, got '-1'"},
    {NULL, {NULL}, {"--secret-file", "/s", "--nope"}, "--nope: unknown flag"},
    {NULL, {NULL}, {"--secret-file", "/s", "--nope=1"}, "--nope: unknown flag"},
    {NULL, {NULL}, {"--secret-file", "/s", "--listen"}, "--listen: missing value"},
    {NULL, {NULL}, {"--listen", "--secret-file", "/s"}, "--listen: missing value"},
    {NULL, {NULL}, {"--secret-file", "/s", "stray"}, "stray: unexpected argument"},
    {NULL,
     {NULL},
     {"--secret-file", "/s", "--upstream-port=99999"},
     "--upstream-port: must be a whole number from 1 to 65535"},
    /* Secret source. */
    {"secret_file = /s\nsecret_id = x\n",
     {NULL},
     {NULL},
     "%s:2: key 'secret_id': secret_file is also set; set exactly one of them"},
    {"listen = 127.0.0.1:1\n", {NULL}, {NULL}, "config: no secret: set secret_file or secret_id"},
    {"[route a]\nlisten = 127.0.0.1:1\n",
     {NULL},
     {NULL},
     "%s:1: route 'a': no secret: set secret_file or secret_id"},
    {NULL,
     {"CREDPROXY_SECRET_ID=x"},
     {"--secret-file", "/s"},
     "CREDPROXY_SECRET_ID: secret_file is also set"},
    /* AWS settings. */
    {"secret_id = x\nregion = EU_West\n",
     {NULL},
     {NULL},
     "%s:2: key 'region': 'EU_West' is not an AWS region name (like eu-west-1)"},
    {NULL,
     {NULL},
     {"--secret-id", "x", "--secrets-endpoint", "http://10.1.2.3:4566"},
     "--secrets-endpoint: 'http://10.1.2.3:4566' must be an https:// URL, or http:// to a "
     "loopback address"},
    {NULL,
     {"CREDPROXY_SECRETS_ENDPOINT=ftp://x"},
     {"--secret-id", "x"},
     "CREDPROXY_SECRETS_ENDPOINT: 'ftp://x' must be an https:// URL"},
    {NULL, {NULL}, {"--secret-id", "x", "--secret-refresh", "0"}, "--secret-refresh: "},
    /* Trust only where nobody else can connect. */
    {"secret_file = /s\nlisten = 0.0.0.0:3306\n",
     {NULL},
     {NULL},
     "%s:2: key 'listen': client_auth=trust refused on non-loopback address '0.0.0.0:3306': "
     "trust lets in anyone who can reach the port; use client_auth=peer (with socket) or "
     "client_auth=password (with users_file)"},
    {"secret_file = /s\nclient_auth = trust\nlisten = 127.0.0.1:1,10.0.0.5:3306\n",
     {NULL},
     {NULL},
     "%s:2: key 'client_auth': client_auth=trust refused on non-loopback address "
     "'10.0.0.5:3306'"},
    {NULL,
     {NULL},
     {"--secret-file", "/s", "--listen", "[::]:3306"},
     "--listen: client_auth=trust refused on non-loopback address '[::]:3306'"},
    /* Peer and password need their inputs. */
    {"secret_file = /s\nclient_auth = peer\npeer_uids = 1000\n",
     {NULL},
     {NULL},
     "%s:2: key 'client_auth': client_auth=peer requires socket"},
    {"secret_file = /s\nsocket = /tmp/x.sock\nlisten = 127.0.0.1:1\nclient_auth = peer\n"
     "peer_uids = 1\n",
     {NULL},
     {NULL},
     "%s:3: key 'listen': client_auth=peer cannot check TCP clients on '127.0.0.1:1'"},
    {"secret_file = /s\nsocket = /tmp/x.sock\nclient_auth = peer\n",
     {NULL},
     {NULL},
     "%s:3: key 'client_auth': client_auth=peer requires peer_uids or peer_gids"},
    {"secret_file = /s\nclient_auth = password\n",
     {NULL},
     {NULL},
     "%s:2: key 'client_auth': client_auth=password requires users_file"},
    /* Files. */
    {"secret_file = /s\ntls_cert = /c.pem\n",
     {NULL},
     {NULL},
     "%s:2: key 'tls_cert': tls_key must be set too"},
    {"secret_file = /s\ntls_key = /k.pem\n",
     {NULL},
     {NULL},
     "%s:2: key 'tls_key': tls_cert must be set too"},
    {"secret_file = /s\nupstream_ca = /nonexistent/ca.pem\n",
     {NULL},
     {NULL},
     "%s:2: key 'upstream_ca': cannot read '/nonexistent/ca.pem': No such file or directory"},
    {"secret_file = /s\nsocket = /tmp/"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaa.sock\n",
     {NULL},
     {NULL},
     "%s:2: key 'socket': path longer than 107 bytes"},
    /* Routes must not share listeners. */
    {"secret_file = /s\n[route a]\nlisten = 127.0.0.1:3307\n[route b]\nlisten = "
     "127.0.0.1:3307\n",
     {NULL},
     {NULL},
     "%s:5: key 'listen': route 'b': address '127.0.0.1:3307' conflicts with '127.0.0.1:3307' "
     "of route 'a'"},
    {"secret_file = /s\nclient_auth = password\nusers_file = /u\n[route a]\nlisten = "
     "0.0.0.0:3307\n[route b]\nlisten = 127.0.0.1:3307\n",
     {NULL},
     {NULL},
     "%s:7: key 'listen': route 'b': address '127.0.0.1:3307' conflicts with '0.0.0.0:3307'"},
    {"secret_file = /s\n[route a]\nlisten = 127.0.0.1:3306\n[route b]\nupstream_port = 1\n",
     {NULL},
     {NULL},
     "%s:4: route 'b': address '127.0.0.1:3306' conflicts with '127.0.0.1:3306' of route 'a'"},
    {"secret_file = /s\n[route a]\nsocket = /tmp/s.sock\n[route b]\nsocket = /tmp/s.sock\n",
     {NULL},
     {NULL},
     "%s:5: key 'socket': route 'b': socket '/tmp/s.sock' is also used by route 'a'"},
    {NULL,
     {NULL},
     {"--secret-file", "/s", "--listen", "127.0.0.1:1,localhost:1"},
     "--listen: address 'localhost:1' conflicts with '127.0.0.1:1'"},
};

static void test_errors(void)
{
    for (size_t i = 0; i < sizeof(error_rows) / sizeof(error_rows[0]); i++) {
        const struct error_row *row = &error_rows[i];
        struct config cfg;
        struct config_errors errs = {0};
        bool ok = load(row->file, row->env, row->args, &cfg, &errs);
        char want[512];
        snprintf(want, sizeof(want), row->want, tmp_path);
        CHECK(!ok);
        bool found = has_error(&errs, want);
        CHECK(found);
        if (!found)
            fprintf(stderr, "  (error row %zu)\n", i);
        config_free(&cfg);
        config_errors_free(&errs);
    }
}

/* upstream_auth=iam needs no secret when the route names the user and host. */
static void test_iam(void)
{
    struct config cfg;
    if (load_ok("upstream_auth = iam\nupstream_user = app\nupstream_host = db.example\n"
                "upstream_ca = /dev/null\nregion = eu-west-1\n",
                NULL, NULL, &cfg)) {
        CHECK(cfg.routes[0].upstream_auth == UPSTREAM_AUTH_IAM);
        CHECK_STR(cfg.routes[0].upstream_user, "app");
        CHECK(cfg.routes[0].upstream_tls == UPSTREAM_TLS_AUTO);
        CHECK(cfg.routes[0].secret_file == NULL && cfg.routes[0].secret_id == NULL);
        config_free(&cfg);
    }
    if (load_ok("secret_file = /s\n", NULL, NULL, &cfg)) {
        CHECK(cfg.routes[0].upstream_auth == UPSTREAM_AUTH_SECRET);
        CHECK(cfg.routes[0].upstream_user == NULL);
        config_free(&cfg);
    }
    CHECK_STR(config_upstream_auth_name(UPSTREAM_AUTH_IAM), "iam");
}

/* Loading reports every problem, not just the first. */
static void test_all_errors_collected(void)
{
    const char *file = "bogus = 1\n"
                       "upstream_port = 0\n"
                       "connect_timeout = soon\n"
                       "listen = 0.0.0.0:3306\n";
    const char *env[] = {"CREDPROXY_WORKERS=many", NULL};
    const char *args[] = {"--nope", NULL};
    struct config cfg;
    struct config_errors errs = {0};
    CHECK(!load(file, env, args, &cfg, &errs));
    CHECK(errs.n == 7);
    const char *want[] = {"--nope: unknown flag",
                          "%s:1: key 'bogus'",
                          "%s:2: key 'upstream_port'",
                          "%s:3: key 'connect_timeout'",
                          "CREDPROXY_WORKERS: must be a whole number",
                          "config: no secret",
                          "%s:4: key 'listen': client_auth=trust refused"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char w[256];
        snprintf(w, sizeof(w), want[i], tmp_path);
        CHECK(has_error(&errs, w));
    }
    config_free(&cfg);
    config_errors_free(&errs);
}

/* Switches: --help and --version stop before anything else; --check-config loads normally. */
static void test_switches(void)
{
    struct config cfg;
    struct config_errors errs = {0};
    const char *help[] = {"-h", NULL}, *version[] = {"--version", NULL};
    const char *check[] = {"--check-config", "--secret-id", "x", NULL};
    CHECK(load(NULL, NULL, help, &cfg, &errs) && cfg.show_help && cfg.n_routes == 0);
    config_free(&cfg);
    CHECK(load(NULL, NULL, version, &cfg, &errs) && cfg.show_version);
    config_free(&cfg);
    const char *man[] = {"--help-man", "--config", "/nonexistent/credproxy.conf", NULL};
    CHECK(load(NULL, NULL, man, &cfg, &errs) && cfg.show_man && cfg.n_routes == 0);
    config_free(&cfg);
    CHECK(load(NULL, NULL, check, &cfg, &errs) && cfg.check_only && cfg.n_routes == 1);
    config_free(&cfg);
    CHECK(errs.n == 0);
    config_errors_free(&errs);
}

/* --help is generated from the table, so every key, flag and variable must appear. */
static void test_help(void)
{
    static const char *const keys[] = {
        "listen",
        "socket",
        "secret_file",
        "secret_id",
        "upstream_host",
        "upstream_port",
        "upstream_tls",
        "upstream_ca",
        "client_auth",
        "peer_uids",
        "peer_gids",
        "users_file",
        "tls_cert",
        "tls_key",
        "server_version",
        "connect_timeout",
        "handshake_timeout",
        "secret_poll_interval",
        "region",
        "secrets_endpoint",
        "secret_refresh",
        "aws_timeout",
        "log_level",
        "workers",
    };
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    config_print_help(f, "credproxy");
    fclose(f);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char flag[64], env[64];
        snprintf(flag, sizeof(flag), "--%s ", keys[i]);
        snprintf(env, sizeof(env), "CREDPROXY_%s", keys[i]);
        for (char *p = flag; *p; p++)
            *p = *p == '_' ? '-' : *p;
        for (char *p = env; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
        CHECK(strstr(text, keys[i]) != NULL);
        CHECK(strstr(text, flag) != NULL);
        CHECK(strstr(text, env) != NULL);
    }
    CHECK(strstr(text, "--config FILE") != NULL);
    CHECK(strstr(text, "--check-config") != NULL);
    CHECK(strstr(text, "verify-identity") != NULL);
    CHECK(strstr(text, "default 5.7.99-credproxy") != NULL);
    free(text);
}

/*
 * The manual page comes from the same table and switch list as --help: every line of --help
 * that names a flag or a file key has its counterpart in the page (a '-' written as roff's
 * "\\-").
 */
static void test_man(void)
{
    char *help = NULL, *man = NULL;
    size_t hlen = 0, mlen = 0;
    FILE *f = open_memstream(&help, &hlen);
    config_print_help(f, "credproxy");
    fclose(f);
    f = open_memstream(&man, &mlen);
    config_print_man(f);
    fclose(f);
    CHECK(strncmp(man, ".\\\"", 3) == 0);
    CHECK(strstr(man, "\n.TH CREDPROXY 8 ") != NULL);
    size_t items = 0;
    for (char *line = help; line && *line;) {
        char *nl = strchr(line, '\n');
        char word[80] = "", roff[200] = "";
        /* "  --listen HOST:PORT[,...]": "\-\-listen"; "      [listen, CREDPROXY_LISTEN, ...":
         * the entry "\fBlisten\fR = " */
        int end = 0;
        bool flag = strncmp(line, "  --", 4) == 0 && sscanf(line + 4, "%60[a-z0-9-]", word) == 1;
        if (flag || (strncmp(line, "      [", 7) == 0 &&
                     sscanf(line + 7, "%60[a-z0-9_],%n", word, &end) == 1 && end > 0)) {
            size_t o = (size_t)snprintf(roff, sizeof(roff), "%s", flag ? "\\-\\-" : "\\fB");
            for (const char *p = word; *p && o + 3 < sizeof(roff); p++) {
                if (*p == '-')
                    roff[o++] = '\\';
                roff[o++] = *p;
            }
            snprintf(roff + o, sizeof(roff) - o, "%s", flag ? "" : "\\fR = ");
            CHECK(strstr(man, roff) != NULL);
            items++;
        }
        line = nl ? nl + 1 : NULL;
    }
    CHECK(items > 40); /* the switches and every setting twice (flag line, key line) */
    free(help);
    free(man);
}

static void test_loopback(void)
{
    static const struct {
        const char *host;
        bool loopback;
    } rows[] = {
        {"localhost", true},
        {"LOCALHOST", true},
        {"127.0.0.1", true},
        {"127.255.0.9", true},
        {"::1", true},
        {"[::1]", true},
        {"::ffff:127.0.0.1", true},
        {"0.0.0.0", false},
        {"::", false},
        {"[::]", false},
        {"10.0.0.1", false},
        {"128.0.0.1", false},
        {"localhost.example", false},
        {"db", false},
        {"", false},
        {"[::1", false},
        {"::2", false},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        if (config_host_is_loopback(rows[i].host) != rows[i].loopback) {
            fprintf(stderr, "  host '%s'\n", rows[i].host);
            CHECK(!"loopback mismatch");
        }
}

/* upstream_role=auto: which hosts are an RDS or Aurora writer endpoint. */
static void test_rds_writer_endpoint(void)
{
    static const struct {
        const char *host;
        bool writer;
    } rows[] = {
        {"app.cluster-c9abcdefgh12.us-east-1.rds.amazonaws.com", true},
        {"APP.CLUSTER-C9ABCDEFGH12.US-EAST-1.RDS.AMAZONAWS.COM", true},
        {"app.cluster-c9abcdefgh12.us-east-1.rds.amazonaws.com.", true},
        {"app.cluster-c9abcdefgh12.cn-north-1.rds.amazonaws.com.cn", true},
        {"app.cluster-ro-c9abcdefgh12.us-east-1.rds.amazonaws.com", false},
        {"app.cluster-custom-c9abcdefgh12.us-east-1.rds.amazonaws.com", false},
        {"app.proxy-c9abcdefgh12.us-east-1.rds.amazonaws.com", false},
        {"app-instance-1.c9abcdefgh12.us-east-1.rds.amazonaws.com", false},
        {"app.cluster-.us-east-1.rds.amazonaws.com", false},
        {"app.cluster-c9abcdefgh12.rds.amazonaws.com", false},
        {".cluster-c9abcdefgh12.us-east-1.rds.amazonaws.com", false},
        {"app.cluster-c9abcdefgh12.us-east-1.rds.amazonaws.com.example", false},
        {"rds.amazonaws.com", false},
        {"127.0.0.1", false},
        {"", false},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        if (config_host_is_rds_writer_endpoint(rows[i].host) != rows[i].writer) {
            fprintf(stderr, "  host '%s'\n", rows[i].host);
            CHECK(!"writer endpoint mismatch");
        }
    CHECK(!config_host_is_rds_writer_endpoint(NULL));
}

static void test_hostport(void)
{
    static const struct {
        const char *in, *host;
        int port; /* 0: malformed */
    } rows[] = {
        {"127.0.0.1:3306", "127.0.0.1", 3306},
        {"[::1]:3307", "::1", 3307},
        {"db.example.com:1", "db.example.com", 1},
        {"h:65535", "h", 65535},
        {":3306", NULL, 0},
        {"h", NULL, 0},
        {"h:", NULL, 0},
        {"h:0", NULL, 0},
        {"h:65536", NULL, 0},
        {"h:33a", NULL, 0},
        {"::1:3306", NULL, 0},
        {"[::1]3306", NULL, 0},
        {"[]:3306", NULL, 0},
        {"a b:1", NULL, 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char host[64];
        int port = 0;
        bool ok = config_parse_hostport(rows[i].in, host, sizeof(host), &port);
        CHECK(ok == (rows[i].port != 0));
        if (ok && rows[i].port) {
            CHECK_STR(host, rows[i].host);
            CHECK(port == rows[i].port);
        }
    }
}

int main(void)
{
    test_defaults();
    test_precedence();
    test_aws_settings();
    test_config_file_source();
    test_durations();
    test_values();
    test_value_fields();
    test_listen_sources();
    test_file_syntax();
    test_routes();
    test_errors();
    test_iam();
    test_all_errors_collected();
    test_switches();
    test_help();
    test_man();
    test_loopback();
    test_rds_writer_endpoint();
    test_hostport();
    return test_summary();
}
