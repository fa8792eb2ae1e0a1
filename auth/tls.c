/* Server-side TLS context for clients that upgrade with an SSLRequest. */
#include "auth/tls.h"

#include <stdio.h>

#include <openssl/err.h>

/* Refuses to decrypt a protected key: a daemon must never block on a passphrase prompt. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    return -1;
}

/*
 * Writes "FILE: what: reason" using the most specific error OpenSSL queued
 * (the earliest one, e.g. the system error behind a failed fopen), then
 * clears the queue so it does not leak into unrelated later calls.
 */
static void tls_error(char *err, size_t errlen, const char *file, const char *what)
{
    unsigned long e = ERR_peek_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    char buf[256];
    if (e && !reason) {
        ERR_error_string_n(e, buf, sizeof(buf));
        reason = buf;
    }
    if (errlen)
        snprintf(err, errlen, "%s: %s: %s", file, what, reason ? reason : "unknown error");
    ERR_clear_error();
}

/* TLS 1.2 and newer only; no renegotiation, which only ever served attacks on servers. */
static SSL_CTX *ctx_new_base(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    return ctx;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = ctx_new_base();
    if (!ctx) {
        tls_error(err, errlen, cert_file, "cannot create TLS context");
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tls_error(err, errlen, cert_file, "cannot load certificate chain");
        goto out_free;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        tls_error(err, errlen, key_file, "cannot load private key");
        goto out_free;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_error(err, errlen, key_file, "private key does not match the certificate");
        goto out_free;
    }
    return ctx;
out_free:
    SSL_CTX_free(ctx);
    return NULL;
}
