/* The proxy's server-side TLS context, used when a client sends an SSLRequest. */
#ifndef CREDPROXY_AUTH_TLS_H
#define CREDPROXY_AUTH_TLS_H

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

#endif
