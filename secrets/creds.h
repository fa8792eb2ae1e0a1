/* Immutable, reference-counted snapshots of upstream credentials, and the RDS secret parser. */
#ifndef CREDPROXY_SECRETS_CREDS_H
#define CREDPROXY_SECRETS_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One version of the secret. Never changed after creation; shared between
 * threads by reference count. The last creds_unref() wipes every string with
 * OPENSSL_cleanse before freeing it.
 */
struct creds {
    int refs; /* atomic; starts at 1 */
    char *username;
    char *password;
    char *host;          /* may be NULL when the route overrides it */
    int port;            /* 3306 when the secret has none */
    char *dbname;        /* optional, NULL when absent */
    char *engine;        /* optional */
    char *cluster_id;    /* dbClusterIdentifier, optional */
    char *version;       /* where it came from: file mtime, or a Secrets Manager VersionId */
    uint64_t generation; /* increases by one for every snapshot a source publishes */
    bool iam;            /* password is an RDS IAM token: any token of the user logs in alike */
};

/*
 * Parses an RDS-format secret ({"username","password","host","port",...}).
 * username and password are required and non-empty; host, dbname, engine and
 * dbClusterIdentifier are optional (absent, null or "" all give NULL); port
 * may be a whole number or a numeric string, 3306 when absent or null;
 * unknown keys are ignored. cJSON's copies of the values are wiped. On
 * error returns NULL and writes a message naming the missing or bad key into
 * err; the message never contains a value from the secret.
 */
struct creds *creds_parse_rds_json(const char *json, size_t len, char *err, size_t errlen);

/*
 * A snapshot from parts, every string copied (password into secure memory);
 * host, dbname and version may be NULL. NULL when out of memory.
 */
struct creds *creds_new(const char *username, const char *password, const char *host, int port,
                        const char *dbname, const char *version);

struct creds *creds_ref(struct creds *c);
void creds_unref(struct creds *c);

/*
 * True when both name the same user with the same password, host and port; for two IAM
 * snapshots the password (a token that changes every few minutes) is not compared.
 */
bool creds_same_login(const struct creds *a, const struct creds *b);

#endif
