/* The client side of MySQL authentication plugins, as credproxy logs in upstream. */
#ifndef CREDPROXY_AUTH_CLIENT_AUTH_H
#define CREDPROXY_AUTH_CLIENT_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Largest answer any plugin gives: mysql_clear_password's, for an RDS IAM auth token with a
 * session token (well under 4 KiB in practice); RSA-4096 ciphertext is 512.
 */
#define CLIENT_AUTH_MAX_REPLY 8192

/* Plugins credproxy can answer for. */
enum client_auth_plugin {
    CLIENT_AUTH_UNKNOWN,
    CLIENT_AUTH_NATIVE,       /* mysql_native_password */
    CLIENT_AUTH_CACHING_SHA2, /* caching_sha2_password */
    CLIENT_AUTH_SHA256,       /* sha256_password */
    CLIENT_AUTH_CLEAR,        /* mysql_clear_password (IAM tokens) */
    CLIENT_AUTH_ED25519,      /* client_ed25519 (MariaDB) */
};

enum client_auth_plugin client_auth_plugin_by_name(const char *name, size_t len);

/*
 * The first answer of a plugin to the server's nonce (scramble): the
 * SHA1 / SHA256 scrambles, the cleartext password plus NUL for clear (and for
 * sha256 over TLS), the ed25519 signature. For sha256 without TLS it is the
 * one-byte public key request. Returns the length written to out, or -1 on
 * failure (err says why, never with the password).
 */
int client_auth_first_reply(enum client_auth_plugin plugin, const char *password,
                            const uint8_t *nonce, size_t nonce_len, bool tls,
                            uint8_t out[CLIENT_AUTH_MAX_REPLY], char *err, size_t errlen);

/*
 * RSA-OAEP encryption of (password + NUL) XOR nonce with the server's PEM
 * public key: caching_sha2 full auth and sha256_password without TLS.
 */
int client_auth_rsa_reply(const char *password, const uint8_t *nonce, size_t nonce_len,
                          const uint8_t *pem, size_t pem_len, uint8_t out[CLIENT_AUTH_MAX_REPLY],
                          char *err, size_t errlen);

#endif
