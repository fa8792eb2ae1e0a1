/* RDS IAM auth tokens: the AWS SDKs' generate_db_auth_token, on the project's SigV4 code. */
#include "secrets/rds_token.h"

#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "secrets/secure_mem.h"
#include "secrets/sigv4.h"
#include "secrets/wipe_buf.h"

/* Appends "&KEY=VALUE" (no '&' when first) with VALUE percent-encoded as SigV4 wants. */
static void put_param(struct wipe_buf *b, const char *key, const char *value, bool first)
{
    if (!first)
        wipe_buf_putc(b, '&');
    wipe_buf_puts(b, key);
    wipe_buf_putc(b, '=');
    char *enc = sigv4_uri_encode(value, strlen(value), false);
    if (!enc) {
        b->oom = true;
        return;
    }
    wipe_buf_puts(b, enc);
    OPENSSL_cleanse(enc, strlen(enc));
    free(enc);
}

/*
 * The query of the presigned request without the signature, in the order the SDKs write it:
 * the operation's parameters, then the X-Amz-* ones (the signature covers them sorted).
 */
static void put_query(struct wipe_buf *b, const struct rds_token_signer *s, const char *user,
                      const char *amz_date, const char *scope)
{
    char expires[16];
    snprintf(expires, sizeof(expires), "%d", RDS_TOKEN_EXPIRES_SEC);
    char credential[512];
    snprintf(credential, sizeof(credential), "%s/%s", s->access_key_id, scope);
    put_param(b, "Action", "connect", true);
    put_param(b, "DBUser", user, false);
    put_param(b, "X-Amz-Algorithm", "AWS4-HMAC-SHA256", false);
    put_param(b, "X-Amz-Credential", credential, false);
    put_param(b, "X-Amz-Date", amz_date, false);
    put_param(b, "X-Amz-Expires", expires, false);
    put_param(b, "X-Amz-SignedHeaders", "host", false);
    if (s->session_token && *s->session_token)
        put_param(b, "X-Amz-Security-Token", s->session_token, false);
}

char *rds_token_make(const struct rds_token_signer *s, const char *host, int port, const char *user,
                     time_t now)
{
    if (!s || !s->access_key_id || !*s->access_key_id || !s->secret_access_key ||
        !*s->secret_access_key || !s->region || !*s->region || !host || !*host || !user || !*user ||
        port <= 0 || port > 65535 || strlen(s->access_key_id) > 256)
        return NULL;
    char amz_date[SIGV4_DATE_LEN + 1];
    sigv4_format_date(now, amz_date);
    struct sigv4_key key = {
        .access_key_id = s->access_key_id,
        .secret_access_key = s->secret_access_key,
        .region = s->region,
        .service = "rds-db",
        .amz_date = amz_date,
    };
    char scope[256];
    sigv4_credential_scope(&key, scope, sizeof(scope));

    struct wipe_buf hostport = {0}, query = {0}, out = {0};
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    wipe_buf_puts(&hostport, host);
    wipe_buf_putc(&hostport, ':');
    wipe_buf_puts(&hostport, portstr);
    put_query(&query, s, user, amz_date, scope);

    char sig[SIGV4_SIGNATURE_HEX + 1];
    bool ok = !hostport.oom && !query.oom;
    if (ok) {
        struct sigv4_header headers[] = {{"host", hostport.p}};
        struct sigv4_request req = {
            .method = "GET",
            .path = "/",
            .query = query.p,
            .headers = headers,
            .n_headers = 1,
        };
        ok = sigv4_signature(&req, &key, sig, NULL);
    }
    char *token = NULL;
    if (ok) {
        wipe_buf_puts(&out, hostport.p);
        wipe_buf_puts(&out, "/?");
        wipe_buf_puts(&out, query.p);
        wipe_buf_puts(&out, "&X-Amz-Signature=");
        wipe_buf_puts(&out, sig);
        if (!out.oom)
            token = secure_strdup(out.p);
    }
    OPENSSL_cleanse(sig, sizeof(sig));
    wipe_buf_wipe(&hostport);
    wipe_buf_wipe(&query);
    wipe_buf_wipe(&out);
    return token;
}
