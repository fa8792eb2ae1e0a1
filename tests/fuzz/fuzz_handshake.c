/*
 * libFuzzer target for every parser of untrusted connection-phase bytes.
 * Not part of the default build. From the repository root:
 *
 *   clang -fsanitize=fuzzer,address -I/work/main tests/fuzz/fuzz_handshake.c auth/wire.c \
 *       auth/handshake.c auth/reply.c -o /tmp/fz && /tmp/fz -max_total_time=30
 *
 * The first input byte picks which layout-changing capabilities are offered,
 * so every field encoding (and both the MySQL and MariaDB forms) gets explored.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/handshake.h"
#include "auth/proto.h"
#include "auth/reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The flags that change a packet's layout; bit i of the first input byte withdraws flag i. */
static const uint64_t layout_flags[8] = {
    PROTO_CAP_LONG_PASSWORD, /* CLIENT_MYSQL: MariaDB extended caps or not */
    PROTO_CAP_CONNECT_WITH_DB, PROTO_CAP_SECURE_CONNECTION,  PROTO_CAP_PLUGIN_AUTH,
    PROTO_CAP_CONNECT_ATTRS,   PROTO_CAP_PLUGIN_AUTH_LENENC, PROTO_CAP_SSL,
    PROTO_CAP_PROTOCOL_41,
};

/* Touches every byte a parser claims to have found, so ASan checks the spans are in bounds. */
static size_t touch(const void *p, size_t len)
{
    const volatile uint8_t *b = p;
    size_t sum = 0;
    for (size_t i = 0; p && i < len; i++)
        sum += b[i];
    return sum;
}

static void fuzz_response(const uint8_t *data, size_t size, uint64_t server_caps)
{
    struct handshake_response hr;
    if (handshake_response_parse(data, size, server_caps, &hr) != HANDSHAKE_PARSED)
        return;
    touch(hr.user, hr.user_len);
    touch(hr.auth, hr.auth_len);
    touch(hr.database, hr.database_len);
    touch(hr.auth_plugin, hr.auth_plugin_len);
    touch(hr.attrs, hr.attrs_len);
}

static void fuzz_change_user(const uint8_t *data, size_t size, uint64_t caps)
{
    struct change_user_request cu;
    if (!change_user_parse(data, size, caps, &cu))
        return;
    touch(cu.user, cu.user_len);
    touch(cu.auth, cu.auth_len);
    touch(cu.database, cu.database_len);
    touch(cu.auth_plugin, cu.auth_plugin_len);
    touch(cu.attrs, cu.attrs_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint64_t caps = UINT64_MAX;
    for (int i = 0; i < 8; i++)
        if (data[0] & (1u << i))
            caps &= ~layout_flags[i];
    data++;
    size--;
    /* An exact-size heap copy: reading one byte past the payload is then an ASan error. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    fuzz_response(copy, size, caps);
    fuzz_change_user(copy, size, caps);
    struct server_reply rep;
    if (server_reply_parse(copy, size, &rep) && rep.kind == REPLY_ERR)
        touch(rep.message, rep.message_len);
    free(copy);
    return 0;
}
