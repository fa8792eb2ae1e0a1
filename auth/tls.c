/* Server-side TLS contexts for clients that upgrade with an SSLRequest: configured or ephemeral. */
#include "auth/tls.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

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

/* A positive serial of 128 random bits (RFC 5280 allows up to 20 octets; never zero). */
static bool set_random_serial(X509 *x)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return false;
    raw[0] &= 0x7f;
    raw[0] |= 0x40; /* top bit clear, so DER needs no sign octet; next set, so never zero */
    BIGNUM *bn = BN_bin2bn(raw, sizeof(raw), NULL);
    ASN1_INTEGER *serial = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    bool ok = serial && X509_set_serialNumber(x, serial) == 1;
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    return ok;
}

/* Adds one v3 extension given in openssl.cnf syntax, issuer = subject = x. */
static bool add_extension(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    bool ok = ext && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

/* The self-signed leaf described at tls_ephemeral_ctx_new, signed with key. */
static X509 *ephemeral_cert_new(EVP_PKEY *key)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    X509_NAME *name = X509_get_subject_name(x);
    bool ok = X509_set_version(x, X509_VERSION_3) == 1 && set_random_serial(x) &&
              X509_gmtime_adj(X509_getm_notBefore(x), -3600) && /* clocks a little behind */
              X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600) && /* outlives any process */
              X509_set_pubkey(x, key) == 1 &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                         (const unsigned char *)"credproxy", -1, -1, 0) == 1 &&
              X509_set_issuer_name(x, name) == 1 &&
              add_extension(x, NID_basic_constraints, "critical,CA:FALSE") &&
              add_extension(x, NID_key_usage, "critical,digitalSignature") &&
              add_extension(x, NID_ext_key_usage, "serverAuth") &&
              add_extension(x, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1") &&
              add_extension(x, NID_subject_key_identifier, "hash") &&
              X509_sign(x, key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

SSL_CTX *tls_ephemeral_ctx_new(char *err, size_t errlen)
{
    static const char what[] = "ephemeral certificate";
    bool asked_passphrase = false;
    ERR_clear_error();
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = key ? ephemeral_cert_new(key) : NULL;
    SSL_CTX *ctx = cert ? ctx_new_base(&asked_passphrase) : NULL;
    bool ok = ctx && SSL_CTX_use_certificate(ctx, cert) == 1 &&
              SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    /* The context holds its own references: dropping ours leaves it the key's only holder. */
    X509_free(cert);
    EVP_PKEY_free(key);
    if (!ok) {
        tls_error(err, errlen, what,
                  !key    ? "cannot make an EC P-256 key"
                  : !cert ? "cannot make the certificate"
                          : "cannot create TLS context");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    SSL_CTX_set_default_passwd_cb(ctx, NULL);
    return ctx;
}

bool tls_ctx_fingerprint(SSL_CTX *ctx, char out[TLS_FINGERPRINT_LEN])
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    X509 *cert = ctx ? SSL_CTX_get0_certificate(ctx) : NULL;
    out[0] = 0;
    if (!cert || X509_digest(cert, EVP_sha256(), md, &n) != 1 || n != 32)
        return false;
    for (unsigned i = 0; i < n; i++) {
        out[3 * i] = hex[md[i] >> 4];
        out[3 * i + 1] = hex[md[i] & 15];
        out[3 * i + 2] = i + 1 < n ? ':' : 0;
    }
    return true;
}
