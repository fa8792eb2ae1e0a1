/*
 * libFuzzer target for every parser of untrusted connection-phase bytes: the client's login
 * request, COM_CHANGE_USER, and the server's OK/ERR. Built with -DCREDPROXY_FUZZ=ON (see
 * docs/testing.md); seeds in corpus/fuzz_handshake/ (made by make_corpus.py).
 *
 * Input: byte 0 picks which layout-changing capabilities are offered (bit i withdraws
 * layout_flags[i]), so every field encoding (and both the MySQL and MariaDB forms) gets
 * explored; the rest is one packet payload.
 */
#include "auth/handshake.h"
#include "auth/proto.h"
#include "auth/reply.h"
#include "tests/fuzz/fuzz_common.h"

/* The flags that change a packet's layout; bit i of the first input byte withdraws flag i. */
static const uint64_t layout_flags[8] = {
    PROTO_CAP_LONG_PASSWORD, /* CLIENT_MYSQL: MariaDB extended caps or not */
    PROTO_CAP_CONNECT_WITH_DB, PROTO_CAP_SECURE_CONNECTION,  PROTO_CAP_PLUGIN_AUTH,
    PROTO_CAP_CONNECT_ATTRS,   PROTO_CAP_PLUGIN_AUTH_LENENC, PROTO_CAP_SSL,
    PROTO_CAP_PROTOCOL_41,
};

static void fuzz_login(const uint8_t *data, size_t size, uint64_t server_caps)
{
    struct handshake_response hr;
    if (handshake_response_parse(data, size, server_caps, &hr) != HANDSHAKE_PARSED)
        return;
    fuzz_touch(hr.user, hr.user_len);
    fuzz_touch(hr.auth, hr.auth_len);
    fuzz_touch(hr.database, hr.database_len);
    fuzz_touch(hr.auth_plugin, hr.auth_plugin_len);
    fuzz_touch(hr.attrs, hr.attrs_len);
}

static void fuzz_change_user(const uint8_t *data, size_t size, uint64_t caps)
{
    struct change_user_request cu;
    if (!change_user_parse(data, size, caps, &cu))
        return;
    fuzz_touch(cu.user, cu.user_len);
    fuzz_touch(cu.auth, cu.auth_len);
    fuzz_touch(cu.database, cu.database_len);
    fuzz_touch(cu.auth_plugin, cu.auth_plugin_len);
    fuzz_touch(cu.attrs, cu.attrs_len);
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
    uint8_t *copy = fuzz_copy(data, size);
    if (!copy)
        return 0;
    fuzz_login(copy, size, caps);
    fuzz_change_user(copy, size, caps);
    struct server_reply rep;
    if (server_reply_parse(copy, size, &rep) && rep.kind == REPLY_ERR)
        fuzz_touch(rep.message, rep.message_len);
    free(copy);
    return 0;
}
