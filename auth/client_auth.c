/* Answers to the server's authentication challenges, computed with OpenSSL. */
#include "auth/client_auth.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <mysql.h>
#include <mysql/plugin_auth.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

static const struct {
    const char *name;
    enum client_auth_plugin plugin;
} plugin_names[] = {
    {"mysql_native_password", CLIENT_AUTH_NATIVE},
    {"caching_sha2_password", CLIENT_AUTH_CACHING_SHA2},
    {"sha256_password", CLIENT_AUTH_SHA256},
    {"mysql_clear_password", CLIENT_AUTH_CLEAR},
    {"client_ed25519", CLIENT_AUTH_ED25519},
};

enum client_auth_plugin client_auth_plugin_by_name(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(plugin_names) / sizeof(plugin_names[0]); i++)
        if (strlen(plugin_names[i].name) == len && memcmp(plugin_names[i].name, name, len) == 0)
            return plugin_names[i].plugin;
    return CLIENT_AUTH_UNKNOWN;
}

static void digest(const EVP_MD *md, const void *a, size_t alen, const void *b, size_t blen,
                   uint8_t *out)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, md, NULL);
    EVP_DigestUpdate(ctx, a, alen);
    if (b)
        EVP_DigestUpdate(ctx, b, blen);
    EVP_DigestFinal_ex(ctx, out, NULL);
    EVP_MD_CTX_free(ctx);
}

/* mysql_native_password: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))). */
static int native_reply(const char *pw, const uint8_t *nonce, size_t nonce_len, uint8_t *out)
{
    uint8_t h1[20], h2[20], h3[20];
    if (!pw[0])
        return 0;
    if (nonce_len > 20)
        nonce_len = 20;
    digest(EVP_sha1(), pw, strlen(pw), NULL, 0, h1);
    digest(EVP_sha1(), h1, 20, NULL, 0, h2);
    digest(EVP_sha1(), nonce, nonce_len, h2, 20, h3);
    for (int i = 0; i < 20; i++)
        out[i] = h1[i] ^ h3[i];
    OPENSSL_cleanse(h1, sizeof(h1));
    OPENSSL_cleanse(h2, sizeof(h2));
    return 20;
}

/* caching_sha2_password fast path: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce). */
static int sha2_reply(const char *pw, const uint8_t *nonce, size_t nonce_len, uint8_t *out)
{
    uint8_t h1[32], h2[32], h3[32];
    if (!pw[0])
        return 0;
    if (nonce_len > 20)
        nonce_len = 20;
    digest(EVP_sha256(), pw, strlen(pw), NULL, 0, h1);
    digest(EVP_sha256(), h1, 32, NULL, 0, h2);
    digest(EVP_sha256(), h2, 32, nonce, nonce_len, h3);
    for (int i = 0; i < 32; i++)
        out[i] = h1[i] ^ h3[i];
    OPENSSL_cleanse(h1, sizeof(h1));
    OPENSSL_cleanse(h2, sizeof(h2));
    return 32;
}

static int cleartext_reply(const char *pw, uint8_t *out, char *err, size_t errlen)
{
    size_t n = strlen(pw) + 1;
    if (n > CLIENT_AUTH_MAX_REPLY) {
        snprintf(err, errlen, "password too long for cleartext authentication");
        return -1;
    }
    memcpy(out, pw, n);
    return (int)n;
}

/*
 * The public ABI of a Connector/C authentication plugin. Its header
 * (mysql/client_plugin.h) includes one Debian does not ship, so the layout is
 * spelled out here.
 */
struct auth_plugin_abi {
    int type;
    unsigned int interface_version;
    const char *name;
    const char *author;
    const char *desc;
    unsigned int version[3];
    const char *license;
    void *mysql_api;
    int (*init)(char *, size_t, int, va_list);
    int (*deinit)(void);
    int (*options)(const char *option, const void *);
    int (*authenticate_user)(MYSQL_PLUGIN_VIO *vio, MYSQL *mysql);
};

#define AUTH_PLUGIN_TYPE 2 /* MYSQL_CLIENT_AUTHENTICATION_PLUGIN */

/* A synchronous plugin VIO: the nonce is already in memory and the answer is one packet. */
struct buffer_vio {
    MYSQL_PLUGIN_VIO vio; /* first member: the plugin sees only this */
    const uint8_t *nonce;
    size_t nonce_len;
    uint8_t *out;
    int out_len;
};

static int buffer_vio_read(MYSQL_PLUGIN_VIO *vio, unsigned char **buf)
{
    struct buffer_vio *b = (struct buffer_vio *)vio;
    *buf = (unsigned char *)b->nonce;
    return (int)b->nonce_len;
}

static int buffer_vio_write(MYSQL_PLUGIN_VIO *vio, const unsigned char *pkt, int len)
{
    struct buffer_vio *b = (struct buffer_vio *)vio;
    if (len < 0 || len > CLIENT_AUTH_MAX_REPLY)
        return 1;
    memcpy(b->out, pkt, (size_t)len);
    b->out_len = len;
    return 0;
}

static void buffer_vio_info(MYSQL_PLUGIN_VIO *vio, MYSQL_PLUGIN_VIO_INFO *info)
{
    (void)vio;
    memset(info, 0, sizeof(*info));
}

/*
 * MariaDB's ed25519 derives the key from SHA512 of a password of any length,
 * which OpenSSL's Ed25519 (32-byte seeds only) cannot express. Connector/C
 * ships the plugin, and its one read and one write fit a buffer VIO, so it
 * runs here synchronously without touching a socket.
 */
static int ed25519_reply(const char *pw, const uint8_t *nonce, size_t nonce_len, uint8_t *out,
                         char *err, size_t errlen)
{
    MYSQL *m = mysql_init(NULL);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct auth_plugin_abi *p =
        (struct auth_plugin_abi *)mysql_client_find_plugin(m, "client_ed25519", AUTH_PLUGIN_TYPE);
    if (!p) {
        snprintf(err, errlen, "the client_ed25519 plugin of MariaDB Connector/C is not installed");
        mysql_close(m);
        return -1;
    }
    struct buffer_vio b = {.nonce = nonce, .nonce_len = nonce_len, .out = out, .out_len = -1};
    b.vio.read_packet = buffer_vio_read;
    b.vio.write_packet = buffer_vio_write;
    b.vio.info = buffer_vio_info;
    m->passwd = (char *)pw; /* borrowed for the call only */
    int rc = p->authenticate_user(&b.vio, m);
    m->passwd = NULL;
    mysql_close(m);
    if (rc != CR_OK || b.out_len < 0) {
        snprintf(err, errlen, "client_ed25519 could not sign the server's nonce");
        return -1;
    }
    return b.out_len;
}

int client_auth_first_reply(enum client_auth_plugin plugin, const char *password,
                            const uint8_t *nonce, size_t nonce_len, bool tls,
                            uint8_t out[CLIENT_AUTH_MAX_REPLY], char *err, size_t errlen)
{
    switch (plugin) {
    case CLIENT_AUTH_NATIVE:
        return native_reply(password, nonce, nonce_len, out);
    case CLIENT_AUTH_CACHING_SHA2:
        return sha2_reply(password, nonce, nonce_len, out);
    case CLIENT_AUTH_SHA256:
        if (tls)
            return cleartext_reply(password, out, err, errlen);
        out[0] = 1; /* ask for the server's RSA public key */
        return 1;
    case CLIENT_AUTH_CLEAR:
        return cleartext_reply(password, out, err, errlen);
    case CLIENT_AUTH_ED25519:
        return ed25519_reply(password, nonce, nonce_len, out, err, errlen);
    case CLIENT_AUTH_UNKNOWN:
        break;
    }
    snprintf(err, errlen, "unsupported authentication plugin");
    return -1;
}

int client_auth_rsa_reply(const char *password, const uint8_t *nonce, size_t nonce_len,
                          const uint8_t *pem, size_t pem_len, uint8_t out[CLIENT_AUTH_MAX_REPLY],
                          char *err, size_t errlen)
{
    int ret = -1;
    size_t n = strlen(password) + 1;
    uint8_t plain[CLIENT_AUTH_MAX_REPLY];
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    EVP_PKEY_CTX *ctx = key ? EVP_PKEY_CTX_new(key, NULL) : NULL;
    if (!ctx) {
        snprintf(err, errlen, "the server sent an unreadable RSA public key");
        goto out;
    }
    if (n > sizeof(plain) || nonce_len == 0) {
        snprintf(err, errlen, "password too long for RSA authentication");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        plain[i] = (uint8_t)password[i] ^ nonce[i % nonce_len];
    size_t outlen = CLIENT_AUTH_MAX_REPLY;
    if (EVP_PKEY_encrypt_init(ctx) <= 0 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
        EVP_PKEY_encrypt(ctx, out, &outlen, plain, n) <= 0) {
        snprintf(err, errlen, "RSA encryption of the password failed");
        goto out;
    }
    ret = (int)outlen;
out:
    OPENSSL_cleanse(plain, sizeof(plain));
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(key);
    BIO_free(bio);
    return ret;
}
