/* Wire codec: integer and lenenc round trips, sticky reader failure, packet framing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/proto.h"
#include "auth/wire.h"
#include "tests/check.h"

/* Every lenenc boundary: the encoded size and marker byte must switch exactly there. */
static void test_lenenc_round_trip(void)
{
    static const struct {
        uint64_t value;
        size_t encoded_len;
        uint8_t first;
    } cases[] = {
        {0, 1, 0x00},          {1, 1, 0x01},
        {250, 1, 0xfa},        {251, 3, 0xfc},
        {252, 3, 0xfc},        {0xffff, 3, 0xfc},
        {0x10000, 4, 0xfd},    {0xffffff, 4, 0xfd},
        {0x1000000, 9, 0xfe},  {0xffffffffull, 9, 0xfe},
        {UINT64_MAX, 9, 0xfe},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wire_writer w;
        struct wire_reader r;
        bool is_null = true;
        wire_writer_init(&w);
        wire_put_lenenc(&w, cases[i].value);
        CHECK(!w.failed);
        CHECK(w.len == cases[i].encoded_len);
        CHECK(w.buf[0] == cases[i].first);
        wire_reader_init(&r, w.buf, w.len);
        CHECK(wire_get_lenenc(&r, &is_null) == cases[i].value);
        CHECK(!is_null);
        CHECK(!r.failed && wire_remaining(&r) == 0);
        /* Every strict prefix is short and must fail. */
        for (size_t cut = 0; cut < w.len; cut++) {
            wire_reader_init(&r, w.buf, cut);
            CHECK(wire_get_lenenc(&r, NULL) == 0);
            CHECK(r.failed);
        }
        wire_writer_free(&w);
    }
}

/* 0xfb is NULL only where the caller allows it; 0xff is never a length. */
static void test_lenenc_markers(void)
{
    static const uint8_t null_marker[] = {0xfb, 0x07};
    static const uint8_t err_marker[] = {0xff, 0x00, 0x00};
    struct wire_reader r;
    bool is_null = false;

    wire_reader_init(&r, null_marker, sizeof(null_marker));
    CHECK(wire_get_lenenc(&r, &is_null) == 0);
    CHECK(is_null && !r.failed);
    CHECK(wire_get_u8(&r) == 0x07);

    wire_reader_init(&r, null_marker, sizeof(null_marker));
    CHECK(wire_get_lenenc(&r, NULL) == 0);
    CHECK(r.failed);

    wire_reader_init(&r, err_marker, sizeof(err_marker));
    CHECK(wire_get_lenenc(&r, &is_null) == 0);
    CHECK(r.failed);
}

static void test_integers(void)
{
    struct wire_writer w;
    struct wire_reader r;
    static const uint8_t expect[] = {0xab, 0x34, 0x12, 0x56, 0x34, 0x12, 0x78, 0x56, 0x34,
                                     0x12, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01};
    wire_writer_init(&w);
    wire_put_u8(&w, 0xab);
    wire_put_u16(&w, 0x1234);
    wire_put_u24(&w, 0x123456);
    wire_put_u32(&w, 0x12345678);
    wire_put_u64(&w, 0x0123456789abcdefull);
    CHECK(!w.failed && w.len == sizeof(expect) && memcmp(w.buf, expect, sizeof(expect)) == 0);
    wire_reader_init(&r, w.buf, w.len);
    CHECK(wire_get_u8(&r) == 0xab);
    CHECK(wire_get_u16(&r) == 0x1234);
    CHECK(wire_get_u24(&r) == 0x123456);
    CHECK(wire_get_u32(&r) == 0x12345678);
    CHECK(wire_get_u64(&r) == 0x0123456789abcdefull);
    CHECK(!r.failed && wire_remaining(&r) == 0);
    wire_writer_free(&w);
}

/* After one short read nothing succeeds, even reads that would fit. */
static void test_sticky_failure(void)
{
    static const uint8_t data[] = {1, 2, 3};
    struct wire_reader r;
    size_t len = 99;
    wire_reader_init(&r, data, sizeof(data));
    CHECK(wire_get_u32(&r) == 0);
    CHECK(r.failed);
    CHECK(wire_remaining(&r) == 0);
    CHECK(wire_get_u8(&r) == 0);
    CHECK(wire_get_bytes(&r, 0) == NULL);
    CHECK(wire_get_rest(&r, &len) == NULL && len == 0);
    CHECK(r.failed);
}

/* Strings: a missing NUL and a length beyond the buffer (even a 64-bit one) must fail. */
static void test_strings(void)
{
    static const uint8_t cstr[] = {'a', 'b', 0, 'c'};
    static const uint8_t no_nul[] = {'a', 'b'};
    static const uint8_t lenenc_ok[] = {3, 'x', 'y', 'z', 9};
    static const uint8_t lenenc_short[] = {4, 'x', 'y', 'z'};
    static const uint8_t lenenc_huge[] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1};
    struct wire_reader r;
    size_t len;
    const char *s;
    const uint8_t *p;

    wire_reader_init(&r, cstr, sizeof(cstr));
    s = wire_get_cstr(&r, &len);
    CHECK(s && len == 2 && memcmp(s, "ab", 2) == 0);
    p = wire_get_rest(&r, &len);
    CHECK(p && len == 1 && p[0] == 'c' && !r.failed);
    p = wire_get_rest(&r, &len);
    CHECK(p && len == 0 && !r.failed);

    wire_reader_init(&r, no_nul, sizeof(no_nul));
    CHECK(wire_get_cstr(&r, &len) == NULL && len == 0 && r.failed);

    wire_reader_init(&r, lenenc_ok, sizeof(lenenc_ok));
    p = wire_get_lenenc_bytes(&r, &len);
    CHECK(p && len == 3 && memcmp(p, "xyz", 3) == 0);
    CHECK(wire_get_u8(&r) == 9 && !r.failed);

    wire_reader_init(&r, lenenc_short, sizeof(lenenc_short));
    CHECK(wire_get_lenenc_bytes(&r, &len) == NULL && len == 0 && r.failed);

    wire_reader_init(&r, lenenc_huge, sizeof(lenenc_huge));
    CHECK(wire_get_lenenc_bytes(&r, &len) == NULL && len == 0 && r.failed);

    /* An empty reader over NULL behaves like any empty buffer. */
    wire_reader_init(&r, NULL, 0);
    CHECK(wire_remaining(&r) == 0);
    p = wire_get_rest(&r, &len);
    CHECK(p != NULL && len == 0 && !r.failed);
    CHECK(wire_get_cstr(&r, &len) == NULL && r.failed);
}

static void test_writer_strings(void)
{
    static const uint8_t expect[] = {'h', 'i', 0, 2, 'o', 'k', 0, 0, 0};
    struct wire_writer w;
    wire_writer_init(&w);
    wire_put_cstr(&w, "hi");
    wire_put_lenenc_bytes(&w, "ok", 2);
    wire_put_zeros(&w, 3);
    wire_put_bytes(&w, NULL, 0);
    CHECK(!w.failed && w.len == sizeof(expect) && memcmp(w.buf, expect, sizeof(expect)) == 0);
    wire_writer_reset(&w);
    CHECK(w.len == 0 && w.buf != NULL && !w.failed);
    wire_writer_free(&w);
    CHECK(w.buf == NULL && w.len == 0 && w.cap == 0);
}

/* Framing: the header carries payload length and sequence id; packets may follow each other. */
static void test_packets(void)
{
    struct wire_writer w;
    wire_writer_init(&w);
    wire_begin_packet(&w, 7);
    wire_put_bytes(&w, "abc", 3);
    wire_end_packet(&w);
    wire_begin_packet(&w, 8);
    wire_put_zeros(&w, 300);
    wire_end_packet(&w);
    CHECK(!w.failed && w.len == 4 + 3 + 4 + 300);
    CHECK(wire_header_len(w.buf) == 3 && wire_header_seq(w.buf) == 7);
    CHECK(memcmp(w.buf + 4, "abc", 3) == 0);
    CHECK(wire_header_len(w.buf + 7) == 300 && wire_header_seq(w.buf + 7) == 8);
    wire_writer_free(&w);
}

/* A payload that would need a continuation packet is refused, and the failure sticks. */
static void test_packet_too_large(void)
{
    struct wire_writer w;
    wire_writer_init(&w);
    wire_begin_packet(&w, 0);
    wire_put_zeros(&w, PROTO_MAX_PAYLOAD - 1);
    wire_end_packet(&w);
    CHECK(!w.failed && wire_header_len(w.buf) == PROTO_MAX_PAYLOAD - 1);
    wire_writer_reset(&w);
    wire_begin_packet(&w, 0);
    wire_put_zeros(&w, PROTO_MAX_PAYLOAD);
    wire_end_packet(&w);
    CHECK(w.failed);
    size_t len = w.len;
    wire_put_u8(&w, 1);
    CHECK(w.failed && w.len == len);
    wire_writer_free(&w);
}

int main(void)
{
    test_lenenc_round_trip();
    test_lenenc_markers();
    test_integers();
    test_sticky_failure();
    test_strings();
    test_writer_strings();
    test_packets();
    test_packet_too_large();
    return test_summary();
}
