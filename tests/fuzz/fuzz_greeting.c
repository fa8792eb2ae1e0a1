/*
 * libFuzzer target for the server greeting an upstream login reads (server_greeting_parse in
 * auth/handshake.c): whatever a lying server sends, the parse stays in bounds, the strings are
 * terminated and the scramble fits; and a greeting credproxy writes itself parses back to the
 * same fields.
 *
 * Input: one greeting payload, as the server sent it.
 */
#include "auth/handshake.h"
#include "auth/proto.h"
#include "auth/wire.h"
#include "tests/fuzz/fuzz_common.h"

/* credproxy's own greeting, built from the parsed fields, must read back the same. */
static void check_round_trip(const struct server_greeting *g)
{
    if (!g->version[0] || g->scramble_len != 20 || memchr(g->scramble, 0, 20))
        return; /* greeting_write takes a 20-byte scramble without NULs */
    struct greeting out = {
        .server_version = g->version,
        .connection_id = g->thread_id,
        .capabilities = g->capabilities | PROTO_CAP_PROTOCOL_41 | PROTO_CAP_SECURE_CONNECTION |
                        PROTO_CAP_PLUGIN_AUTH,
        .charset = g->charset,
        .status = g->status,
        .auth_plugin = "mysql_native_password",
    };
    memcpy(out.scramble, g->scramble, 20);
    struct wire_writer w;
    wire_writer_init(&w);
    greeting_write(&w, &out);
    FUZZ_CHECK(!w.failed && w.len > 4);
    struct server_greeting back;
    char why[128];
    FUZZ_CHECK(server_greeting_parse(w.buf + 4, w.len - 4, &back, why, sizeof(why)));
    FUZZ_CHECK(strcmp(back.version, g->version) == 0);
    FUZZ_CHECK(back.thread_id == g->thread_id && back.charset == g->charset);
    FUZZ_CHECK(back.status == g->status);
    FUZZ_CHECK(back.scramble_len == 20 && memcmp(back.scramble, g->scramble, 20) == 0);
    FUZZ_CHECK(strcmp(back.auth_plugin, "mysql_native_password") == 0);
    wire_writer_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = fuzz_copy(data, size);
    if (!copy)
        return 0;
    struct server_greeting g;
    char why[128];
    if (server_greeting_parse(copy, size, &g, why, sizeof(why))) {
        FUZZ_CHECK(memchr(g.version, 0, sizeof(g.version)) != NULL);
        FUZZ_CHECK(memchr(g.auth_plugin, 0, sizeof(g.auth_plugin)) != NULL);
        FUZZ_CHECK(g.scramble_len >= 8 && g.scramble_len <= sizeof(g.scramble));
        FUZZ_CHECK(g.capabilities & PROTO_CAP_PROTOCOL_41);
        check_round_trip(&g);
    } else {
        FUZZ_CHECK(memchr(why, 0, sizeof(why)) != NULL && why[0]);
    }
    free(copy);
    return 0;
}
