/*
 * libFuzzer target for OK packets' session-state blocks (auth/session_track.c): ok_packet_parse,
 * then every entry through session_change_next, each span checked to lie inside the payload.
 *
 * Input: one OK payload as a server with CLIENT_SESSION_TRACK sends it.
 */
#include "auth/session_track.h"
#include "auth/wire.h"
#include "tests/fuzz/fuzz_common.h"

static bool inside(const uint8_t *p, size_t len, const uint8_t *base, size_t base_len)
{
    if (!p)
        return len == 0;
    return p >= base && len <= base_len && (size_t)(p - base) <= base_len - len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = fuzz_copy(data, size);
    if (!copy)
        return 0;
    struct ok_packet ok;
    if (!ok_packet_parse(copy, size, &ok)) {
        free(copy);
        return 0;
    }
    FUZZ_CHECK(inside(ok.info, ok.info_len, copy, size));
    FUZZ_CHECK(inside(ok.state, ok.state_len, copy, size));

    struct wire_reader r;
    wire_reader_init(&r, ok.state, ok.state_len);
    struct session_change ch;
    size_t entries = 0;
    while (session_change_next(&r, &ch)) {
        FUZZ_CHECK(inside(ch.a, ch.a_len, ok.state, ok.state_len));
        FUZZ_CHECK(inside(ch.b, ch.b_len, ok.state, ok.state_len));
        fuzz_touch(ch.a, ch.a_len);
        fuzz_touch(ch.b, ch.b_len);
        if (ch.type != SESSION_TRACK_SYSVARS)
            FUZZ_CHECK(ch.b == NULL);
        /* Every entry takes at least its type byte and a length byte. */
        FUZZ_CHECK(++entries <= ok.state_len / 2);
    }
    FUZZ_CHECK(r.failed || wire_remaining(&r) == 0);
    free(copy);
    return 0;
}
