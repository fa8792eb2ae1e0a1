/*
 * libFuzzer target for the reply tracker (auth/response.c): commands and server packets in any
 * order, with any of the capabilities that change what the server sends.
 *
 * Input: byte 0 picks capabilities (bit 0 DEPRECATE_EOF, 1 MARIADB_CACHE_META, 2
 * MARIADB_PROGRESS, 3 SESSION_TRACK, 4 OPTIONAL_METADATA, 5 PS_MULTI_RESULTS); then records:
 *   0x00..0x7f            the client sends command byte b (0x7f stands for 0xfa,
 *                         COM_STMT_BULK_EXECUTE), fed to response_begin
 *   0x80 | n              a server packet whose payload is the next n (0..63) bytes
 *   0xc0 | n, b[n], u24   the same, its payload u24 bytes longer than the n given
 * Each packet is fed as response_feed gets it: its first RESPONSE_PREFIX_MAX bytes in an
 * exact-size heap buffer, and its full length. The tracker's promises are checked as it goes.
 */
#include "auth/proto.h"
#include "auth/response.h"
#include "tests/fuzz/fuzz_common.h"

static const uint64_t cap_bits[6] = {
    PROTO_CAP_DEPRECATE_EOF, PROTO_CAP_MARIADB_CACHE_META, PROTO_CAP_MARIADB_PROGRESS,
    PROTO_CAP_SESSION_TRACK, PROTO_CAP_OPTIONAL_METADATA,  PROTO_CAP_PS_MULTI_RESULTS,
};

static bool gets_reply(uint8_t cmd)
{
    return cmd != PROTO_COM_QUIT && cmd != PROTO_COM_STMT_CLOSE &&
           cmd != PROTO_COM_STMT_SEND_LONG_DATA;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint64_t caps = PROTO_CAP_PROTOCOL_41 | PROTO_CAP_SECURE_CONNECTION | PROTO_CAP_TRANSACTIONS |
                    PROTO_CAP_MULTI_STATEMENTS | PROTO_CAP_MULTI_RESULTS | PROTO_CAP_PLUGIN_AUTH;
    for (int i = 0; i < 6; i++)
        if (data[0] & (1u << i))
            caps |= cap_bits[i];
    size_t pos = 1;

    struct response_tracker t;
    response_tracker_init(&t, caps);
    bool lost = (caps & PROTO_CAP_OPTIONAL_METADATA) != 0;
    /* Replies owed: commands begun that get one, minus replies completed. */
    size_t owed = 0;
    FUZZ_CHECK(response_idle(&t) == !lost);

    while (pos < size) {
        uint8_t tag = data[pos++];
        if (!(tag & 0x80)) {
            uint8_t cmd = tag == 0x7f ? PROTO_COM_STMT_BULK_EXECUTE : tag;
            bool expect = response_begin(&t, cmd);
            FUZZ_CHECK(expect == gets_reply(cmd));
            if (t.state == RESPONSE_S_LOST)
                lost = true;
            if (expect)
                owed++;
            FUZZ_CHECK(!response_idle(&t) || (!expect && owed == 0));
            continue;
        }
        size_t n = tag & 0x3f;
        if (n > size - pos)
            n = size - pos;
        const uint8_t *payload = data + pos;
        pos += n;
        size_t payload_len = n;
        if (tag & 0x40) {
            if (size - pos < 3)
                break;
            payload_len +=
                (size_t)data[pos] | (size_t)data[pos + 1] << 8 | (size_t)data[pos + 2] << 16;
            pos += 3;
        }
        size_t prefix_len = n < RESPONSE_PREFIX_MAX ? n : RESPONSE_PREFIX_MAX;
        uint8_t *prefix = fuzz_copy(payload, prefix_len);
        if (!prefix)
            return 0;
        bool idle_before = response_idle(&t);
        enum response_event ev = response_feed(&t, prefix, prefix_len, payload_len);
        free(prefix);

        /* Losing track is for good; a packet nobody asked for loses it. */
        if (lost)
            FUZZ_CHECK(ev == RESPONSE_UNTRACKABLE);
        if (idle_before)
            FUZZ_CHECK(ev == RESPONSE_UNTRACKABLE);
        if (ev == RESPONSE_UNTRACKABLE) {
            lost = true;
            FUZZ_CHECK(t.state == RESPONSE_S_LOST);
        }
        FUZZ_CHECK(t.queue_len <= RESPONSE_PIPELINE_MAX && t.queue_head < RESPONSE_PIPELINE_MAX);
        if (ev == RESPONSE_DONE) {
            FUZZ_CHECK(owed > 0);
            owed--;
            /* Idle exactly when nothing more is owed. */
            FUZZ_CHECK(response_idle(&t) == (owed == 0));
            FUZZ_CHECK(!t.last_was_error || !t.ok_packet);
        } else {
            FUZZ_CHECK(!response_idle(&t));
        }
        if (t.ok_packet)
            FUZZ_CHECK(prefix_len > 0 && (payload[0] == 0x00 || payload[0] == 0xfe));
        if (t.prepare_ok)
            FUZZ_CHECK(t.ok_packet || (prefix_len > 0 && payload[0] == 0x00));
        if (lost)
            FUZZ_CHECK(!response_idle(&t));
    }
    return 0;
}
