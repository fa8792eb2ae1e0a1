/* The shared AWS config and credentials files (~/.aws/config, ~/.aws/credentials) and profiles. */
#include "secrets/aws_profile.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "secrets/aws_metadata.h"
#include "secrets/aws_process.h"
#include "secrets/aws_sts.h"

#define MAX_CHAIN 8 /* role_arn -> source_profile hops */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Does this section header name the profile? [name] in credentials, [profile name] in config. */
static bool section_matches(const char *sect, const char *profile, bool config)
{
    if (!config)
        return strcmp(sect, profile) == 0;
    if (strcmp(profile, "default") == 0 && strcmp(sect, "default") == 0)
        return true;
    if (strncmp(sect, "profile", 7) != 0 || !isspace((unsigned char)sect[7]))
        return false;
    const char *n = sect + 8;
    while (isspace((unsigned char)*n))
        n++;
    return strcmp(n, profile) == 0;
}

/*
 * Scans an INI file for key in the profile's section; malloc'd value or NULL.
 * Indented lines belong to a nested block ("s3 =\n  x = y") and are skipped.
 */
static char *ini_get(const char *path, const char *profile, const char *key, bool config,
                     bool *found_section)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char line[4096];
    bool in = false;
    char *value = NULL;
    while (!value && fgets(line, sizeof(line), f)) {
        if (line[0] == ' ' || line[0] == '\t')
            continue;
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (e)
                *e = '\0';
            in = section_matches(trim(s + 1), profile, config);
            if (in && found_section)
                *found_section = true;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!in || !eq)
            continue;
        *eq = '\0';
        if (strcasecmp(trim(s), key) == 0) {
            char *v = trim(eq + 1);
            if (*v)
                value = strdup(v);
        }
    }
    OPENSSL_cleanse(line, sizeof(line));
    fclose(f);
    return value;
}

static bool profile_exists(const struct aws_ctx *ctx, const char *profile)
{
    bool found = false;
    free(ini_get(ctx->creds_file, profile, "-", false, &found));
    free(ini_get(ctx->config_file, profile, "-", true, &found));
    return found;
}

char *aws_profile_get(const struct aws_ctx *ctx, const char *profile, const char *key)
{
    char *v = ini_get(ctx->creds_file, profile, key, false, NULL);
    return v ? v : ini_get(ctx->config_file, profile, key, true, NULL);
}

char *aws_profile_region(struct aws_ctx *ctx)
{
    return aws_profile_get(ctx, ctx->profile, "region");
}

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* The values of one profile that matter for credentials. */
struct profile_keys {
    char *role_arn, *source_profile, *credential_source, *web_identity_token_file;
    char *role_session_name, *external_id, *duration_seconds, *mfa_serial;
    char *akid, *secret, *token, *process;
};

static void keys_load(const struct aws_ctx *ctx, const char *p, struct profile_keys *k)
{
    k->role_arn = aws_profile_get(ctx, p, "role_arn");
    k->source_profile = aws_profile_get(ctx, p, "source_profile");
    k->credential_source = aws_profile_get(ctx, p, "credential_source");
    k->web_identity_token_file = aws_profile_get(ctx, p, "web_identity_token_file");
    k->role_session_name = aws_profile_get(ctx, p, "role_session_name");
    k->external_id = aws_profile_get(ctx, p, "external_id");
    k->duration_seconds = aws_profile_get(ctx, p, "duration_seconds");
    k->mfa_serial = aws_profile_get(ctx, p, "mfa_serial");
    k->akid = aws_profile_get(ctx, p, "aws_access_key_id");
    k->secret = aws_profile_get(ctx, p, "aws_secret_access_key");
    k->token = aws_profile_get(ctx, p, "aws_session_token");
    k->process = aws_profile_get(ctx, p, "credential_process");
}

static void keys_free(struct profile_keys *k)
{
    char **all[] = {&k->role_arn,
                    &k->source_profile,
                    &k->credential_source,
                    &k->web_identity_token_file,
                    &k->role_session_name,
                    &k->external_id,
                    &k->duration_seconds,
                    &k->mfa_serial,
                    &k->akid,
                    &k->secret,
                    &k->token,
                    &k->process};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        wipe_free(*all[i]);
}

static struct aws_provider *resolve(struct aws_ctx *ctx, const char *profile, int depth,
                                    bool *configured, char *err, size_t errlen);

static struct aws_provider *static_keys(struct aws_ctx *ctx, const char *profile,
                                        const struct profile_keys *k, char *err, size_t errlen)
{
    char name[160];
    snprintf(name, sizeof(name), "profile '%.100s' (static keys)", profile);
    if (!k->akid || !k->secret) {
        snprintf(err, errlen, "profile '%.100s': aws_access_key_id needs aws_secret_access_key",
                 profile);
        return NULL;
    }
    struct aws_provider *p = aws_provider_static(ctx, name, k->akid, k->secret, k->token);
    if (!p)
        snprintf(err, errlen, "out of memory");
    return p;
}

/* Where role_arn's source credentials come from: credential_source names one of three. */
static struct aws_provider *named_source(struct aws_ctx *ctx, const char *profile,
                                         const char *source, char *err, size_t errlen)
{
    bool configured = false;
    struct aws_provider *p = NULL;
    if (strcmp(source, "Environment") == 0) {
        const char *a = getenv("AWS_ACCESS_KEY_ID"), *s = getenv("AWS_SECRET_ACCESS_KEY");
        if (!a || !*a || !s || !*s) {
            snprintf(err, errlen,
                     "profile '%.100s': credential_source Environment but AWS_ACCESS_KEY_ID / "
                     "AWS_SECRET_ACCESS_KEY are not set",
                     profile);
            return NULL;
        }
        p = aws_provider_static(ctx, "environment", a, s, getenv("AWS_SESSION_TOKEN"));
    } else if (strcmp(source, "Ec2InstanceMetadata") == 0) {
        p = aws_provider_imds(ctx);
    } else if (strcmp(source, "EcsContainer") == 0) {
        p = aws_provider_container(ctx, &configured, err, errlen);
        if (!p && !configured)
            snprintf(err, errlen,
                     "profile '%.100s': credential_source EcsContainer but "
                     "AWS_CONTAINER_CREDENTIALS_*_URI is not set",
                     profile);
        return p;
    } else {
        snprintf(err, errlen,
                 "profile '%.100s': credential_source must be Environment, Ec2InstanceMetadata or "
                 "EcsContainer",
                 profile);
        return NULL;
    }
    if (!p)
        snprintf(err, errlen, "out of memory");
    return p;
}

static struct aws_provider *role(struct aws_ctx *ctx, const char *profile,
                                 const struct profile_keys *k, int depth, char *err, size_t errlen)
{
    char name[200];
    snprintf(name, sizeof(name), "profile '%.60s' (role %.100s)", profile, k->role_arn);
    if (k->mfa_serial) {
        snprintf(err, errlen,
                 "profile '%.100s': mfa_serial needs an interactive MFA code, which credproxy "
                 "cannot ask for",
                 profile);
        return NULL;
    }
    if (k->web_identity_token_file)
        return aws_provider_web_identity(ctx, name, k->web_identity_token_file, k->role_arn,
                                         k->role_session_name, err, errlen);
    struct aws_provider *source = NULL;
    if (k->source_profile && k->credential_source) {
        snprintf(err, errlen, "profile '%.100s': set source_profile or credential_source, not both",
                 profile);
        return NULL;
    }
    if (k->credential_source) {
        source = named_source(ctx, profile, k->credential_source, err, errlen);
    } else if (k->source_profile && strcmp(k->source_profile, profile) == 0) {
        source = static_keys(ctx, profile, k, err, errlen); /* a profile may source itself */
    } else if (k->source_profile) {
        bool configured = false;
        source = resolve(ctx, k->source_profile, depth + 1, &configured, err, errlen);
        if (!source && !err[0])
            snprintf(err, errlen, "profile '%.100s': source_profile '%.100s' has no credentials",
                     profile, k->source_profile);
    } else {
        snprintf(err, errlen,
                 "profile '%.100s': role_arn needs source_profile, credential_source or "
                 "web_identity_token_file",
                 profile);
        return NULL;
    }
    if (!source)
        return NULL;
    int duration = k->duration_seconds ? atoi(k->duration_seconds) : 0;
    return aws_provider_assume_role(ctx, name, source, k->role_arn, k->role_session_name,
                                    k->external_id, duration, err, errlen);
}

static struct aws_provider *resolve(struct aws_ctx *ctx, const char *profile, int depth,
                                    bool *configured, char *err, size_t errlen)
{
    if (depth > MAX_CHAIN) {
        snprintf(err, errlen, "profile '%.100s': source_profile chain is circular or too long",
                 profile);
        return NULL;
    }
    struct profile_keys k = {0};
    keys_load(ctx, profile, &k);
    struct aws_provider *p = NULL;
    *configured = true;
    if (k.role_arn) {
        p = role(ctx, profile, &k, depth, err, errlen);
    } else if (k.akid || k.secret) {
        p = static_keys(ctx, profile, &k, err, errlen);
    } else if (k.process) {
        char name[160];
        snprintf(name, sizeof(name), "profile '%.100s' (credential_process)", profile);
        p = aws_provider_process(ctx, name, k.process, err, errlen);
    } else {
        *configured = false;
    }
    keys_free(&k);
    return p;
}

struct aws_provider *aws_profile_provider(struct aws_ctx *ctx, bool *configured, char *err,
                                          size_t errlen)
{
    const char *env = getenv("AWS_PROFILE");
    bool chosen =
        (env && *env) || (getenv("AWS_DEFAULT_PROFILE") && *getenv("AWS_DEFAULT_PROFILE"));
    if (!profile_exists(ctx, ctx->profile)) {
        *configured = chosen;
        if (chosen)
            snprintf(err, errlen, "AWS profile '%.100s' is in neither %.200s nor %.200s",
                     ctx->profile, ctx->creds_file, ctx->config_file);
        return NULL;
    }
    /* A profile with only settings (region) lets the chain go on, as in the SDKs. */
    return resolve(ctx, ctx->profile, 0, configured, err, errlen);
}
