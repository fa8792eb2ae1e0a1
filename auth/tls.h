/* The proxy's server-side TLS context, used when a client sends an SSLRequest. */
#ifndef CREDPROXY_AUTH_TLS_H
#define CREDPROXY_AUTH_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

/*
 * Builds a TLS 1.2+ server context from a PEM certificate chain (leaf first)
 * and a PEM private key, and checks that the key matches the certificate.
 * Encrypted keys are refused rather than prompting on the terminal. On error
 * returns NULL and writes "FILE: what failed: OpenSSL's reason" into err.
 * The caller owns the context (SSL_CTX_free).
 */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Builds a server context like tls_server_ctx_new's around a certificate made
 * here, in memory, for clients that want TLS but do not verify the server:
 * a fresh EC P-256 key, a random positive 128-bit serial, subject and issuer
 * CN=credproxy (self-signed), valid from an hour ago for a year, SAN
 * DNS:localhost, IP:127.0.0.1, IP:::1, CA:FALSE, digitalSignature, serverAuth.
 * Neither key nor certificate is ever written anywhere; the key lives only in
 * the context and is wiped by OpenSSL when the last reference to the context
 * is freed. On error returns NULL with OpenSSL's reason in err.
 */
SSL_CTX *tls_ephemeral_ctx_new(char *err, size_t errlen) __attribute__((warn_unused_result));

/* "AB:CD:...": 32 bytes as colon hex, as `openssl x509 -fingerprint -sha256` prints them. */
#define TLS_FINGERPRINT_LEN (32 * 3)

/*
 * Writes the SHA-256 fingerprint of the certificate ctx serves into out
 * (TLS_FINGERPRINT_LEN bytes, NUL included). Returns false (out empty) when
 * ctx has no certificate.
 */
bool tls_ctx_fingerprint(SSL_CTX *ctx, char out[TLS_FINGERPRINT_LEN]);

#endif
