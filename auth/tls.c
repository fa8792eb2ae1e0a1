/* Server-side TLS context for clients that upgrade with an SSLRequest. */
#include "auth/tls.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

/*
 * Refuses to decrypt a protected key: a daemon must never block on a
 * passphrase prompt. Records the attempt so the error can say why.
 */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(bool *)userdata = true;
    return -1;
}

/* OpenSSL's reason for its earliest queued error, with any detail text it attached. */
static void describe_error(char *out, size_t outlen)
{
    const char *data = NULL;
    int flags = 0;
    unsigned long e = ERR_peek_error_data(&data, &flags);
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    if (!e) {
        snprintf(out, outlen, "unknown error");
    } else if (ERR_SYSTEM_ERROR(e)) { /* a failed fopen: the detail is only "calling fopen" */
        snprintf(out, outlen, "%s", strerror(ERR_GET_REASON(e)));
    } else if (!reason) {
        ERR_error_string_n(e, out, outlen);
    } else if ((flags & ERR_TXT_STRING) && data && *data) {
        snprintf(out, outlen, "%s (%s)", reason, data);
    } else {
        snprintf(out, outlen, "%s", reason);
    }
}

/* Writes "FILE: what: reason" and clears the queue so it cannot leak into later calls. */
static void tls_error(char *err, size_t errlen, const char *file, const char *what)
{
    char reason[256];
    describe_error(reason, sizeof(reason));
    if (errlen)
        snprintf(err, errlen, "%s: %s: %s", file, what, reason);
    ERR_clear_error();
}

/* TLS 1.2 and newer only; no renegotiation, which only ever served attacks on servers. */
static SSL_CTX *ctx_new_base(bool *asked_passphrase)
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
    SSL_CTX_set_default_passwd_cb_userdata(ctx, asked_passphrase);
    return ctx;
}

/* Why the key did not load, in the operator's terms where OpenSSL's are obscure. */
static const char *key_failure(bool asked_passphrase)
{
    unsigned long e = ERR_peek_error();
    if (asked_passphrase)
        return "cannot load private key: it is encrypted and credproxy never prompts for a "
               "passphrase";
    if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
        return "private key does not match the certificate";
    return "cannot load private key";
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    bool asked_passphrase = false;
    ERR_clear_error();
    SSL_CTX *ctx = ctx_new_base(&asked_passphrase);
    if (!ctx) {
        tls_error(err, errlen, cert_file, "cannot create TLS context");
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tls_error(err, errlen, cert_file, "cannot load certificate chain");
        goto out_free;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        tls_error(err, errlen, key_file, key_failure(asked_passphrase));
        goto out_free;
    }
    /* use_PrivateKey already compares with the leaf; this also catches a key loaded first. */
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_error(err, errlen, key_file, "private key does not match the certificate");
        goto out_free;
    }
    /* The passphrase callback's userdata points at our stack; never let it outlive us. */
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    SSL_CTX_set_default_passwd_cb(ctx, NULL);
    return ctx;
out_free:
    SSL_CTX_free(ctx);
    return NULL;
}
