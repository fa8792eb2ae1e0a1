/* The server side of the MySQL connection phase: greeting, login request, auth switch. */
#ifndef CREDPROXY_AUTH_HANDSHAKE_H
#define CREDPROXY_AUTH_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/proto.h"
#include "auth/wire.h"

/* What the proxy announces in its Initial Handshake Packet (protocol 10). */
struct greeting {
    const char *server_version; /* e.g. "5.5.5-10.11.6-MariaDB-credproxy" */
    uint32_t connection_id;
    uint8_t scramble[PROTO_SCRAMBLE_LEN]; /* 20 bytes, none of them NUL */
    uint64_t capabilities;                /* bits 32..63 go in MariaDB's extended field */
    uint8_t charset;                      /* server default collation id */
    uint16_t status;
    const char *auth_plugin; /* "mysql_native_password" or "caching_sha2_password" */
};

/* Appends the greeting as packet seq 0. */
void greeting_write(struct wire_writer *w, const struct greeting *g);

/* A server's greeting (Initial Handshake Packet v10), as an upstream login reads it. */
struct server_greeting {
    char version[64]; /* NUL-terminated, cut to fit */
    uint32_t thread_id;
    uint64_t capabilities; /* MariaDB's extended bits at 32..63 */
    uint8_t charset;
    uint16_t status;
    uint8_t scramble[21]; /* 8 + up to 13 bytes; a trailing NUL past 20 is dropped */
    size_t scramble_len;
    char auth_plugin[64]; /* "" when the server names none; cut to fit */
};

/*
 * Parses a greeting payload. False with why (a reason for logs) when it is
 * not protocol 10, is truncated, predates 4.1 or has no scramble.
 */
bool server_greeting_parse(const uint8_t *p, size_t len, struct server_greeting *out, char *why,
                           size_t whylen) __attribute__((warn_unused_result));

/*
 * A parsed HandshakeResponse41 (or the SSLRequest that precedes it). Strings
 * point into the payload that was parsed and are not NUL-terminated.
 */
struct handshake_response {
    uint64_t capabilities; /* low 32 bits from the packet; MariaDB ext bits when sent */
    uint32_t max_packet;
    uint8_t charset;
    const char *user;
    size_t user_len;
    const uint8_t *auth; /* auth response for auth_plugin */
    size_t auth_len;
    const char *database; /* NULL when CONNECT_WITH_DB is not set */
    size_t database_len;
    const char *auth_plugin; /* NULL when PLUGIN_AUTH is not set */
    size_t auth_plugin_len;
    const uint8_t *attrs; /* raw connect attributes block, NULL if none */
    size_t attrs_len;
};

enum handshake_parse_result {
    HANDSHAKE_PARSED,      /* a full login request */
    HANDSHAKE_SSL_REQUEST, /* a 32-byte SSLRequest: switch to TLS, then read the real one */
    HANDSHAKE_MALFORMED,   /* short, inconsistent or pre-4.1: reject the client */
};

/*
 * Parses a HandshakeResponse41 payload (without its 4-byte header).
 * server_caps is what the greeting offered: flags the client sets that were
 * not offered are cleared in out->capabilities.
 */
enum handshake_parse_result handshake_response_parse(const uint8_t *payload, size_t len,
                                                     uint64_t server_caps,
                                                     struct handshake_response *out);

/* Appends an AuthSwitchRequest (0xfe, plugin name, plugin data with trailing NUL). */
void auth_switch_request_write(struct wire_writer *w, uint8_t seq, const char *plugin,
                               const uint8_t *data, size_t len);

/* A parsed COM_CHANGE_USER; strings point into the payload. */
struct change_user_request {
    const char *user;
    size_t user_len;
    const uint8_t *auth;
    size_t auth_len;
    const char *database; /* may be empty (len 0) */
    size_t database_len;
    uint16_t charset;        /* 0 when absent */
    const char *auth_plugin; /* NULL when absent */
    size_t auth_plugin_len;
    const uint8_t *attrs; /* raw connect attributes block, NULL when absent */
    size_t attrs_len;
};

/* Parses a COM_CHANGE_USER payload (starting with the 0x11 byte). */
bool change_user_parse(const uint8_t *payload, size_t len, uint64_t client_caps,
                       struct change_user_request *out) __attribute__((warn_unused_result));

#endif
