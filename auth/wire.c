/* Bounds-checked little-endian readers and growing writers for MySQL wire encodings. */
#include "auth/wire.h"

#include <stdlib.h>
#include <string.h>

#include "auth/proto.h"

void wire_reader_init(struct wire_reader *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->len = p ? len : 0;
    r->pos = 0;
    r->failed = false;
}

size_t wire_remaining(const struct wire_reader *r)
{
    return r->failed ? 0 : r->len - r->pos;
}

/* Claims n bytes, or marks the reader failed for good; the single place bounds are checked. */
static const uint8_t *take(struct wire_reader *r, size_t n)
{
    static const uint8_t empty[1];
    if (r->failed || n > r->len - r->pos) {
        r->failed = true;
        return NULL;
    }
    if (!r->p) /* an empty reader over NULL: avoid NULL + 0, which UBSan rejects */
        return empty;
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

/* Little-endian unsigned integer of n <= 8 bytes; 0 on failure. */
static uint64_t get_le(struct wire_reader *r, size_t n)
{
    const uint8_t *p = take(r, n);
    uint64_t v = 0;
    if (!p)
        return 0;
    for (size_t i = n; i-- > 0;)
        v = (v << 8) | p[i];
    return v;
}

uint8_t wire_get_u8(struct wire_reader *r)
{
    return (uint8_t)get_le(r, 1);
}

uint16_t wire_get_u16(struct wire_reader *r)
{
    return (uint16_t)get_le(r, 2);
}

uint32_t wire_get_u24(struct wire_reader *r)
{
    return (uint32_t)get_le(r, 3);
}

uint32_t wire_get_u32(struct wire_reader *r)
{
    return (uint32_t)get_le(r, 4);
}

uint64_t wire_get_u64(struct wire_reader *r)
{
    return get_le(r, 8);
}

uint64_t wire_get_lenenc(struct wire_reader *r, bool *is_null)
{
    if (is_null)
        *is_null = false;
    uint8_t first = wire_get_u8(r);
    if (r->failed)
        return 0;
    if (first < 0xfb)
        return first;
    switch (first) {
    case 0xfb: /* SQL NULL: only meaningful where the caller expects it */
        if (is_null) {
            *is_null = true;
            return 0;
        }
        break;
    case 0xfc:
        return get_le(r, 2);
    case 0xfd:
        return get_le(r, 3);
    case 0xfe:
        return get_le(r, 8);
    default: /* 0xff is an ERR marker, never a length */
        break;
    }
    r->failed = true;
    return 0;
}

const uint8_t *wire_get_bytes(struct wire_reader *r, size_t n)
{
    return take(r, n);
}

const char *wire_get_cstr(struct wire_reader *r, size_t *len)
{
    size_t left = wire_remaining(r);
    const uint8_t *start = left ? r->p + r->pos : NULL;
    const uint8_t *nul = start ? memchr(start, 0, left) : NULL;
    *len = 0;
    if (!nul) {
        r->failed = true;
        return NULL;
    }
    *len = (size_t)(nul - start);
    return (const char *)take(r, *len + 1);
}

const uint8_t *wire_get_lenenc_bytes(struct wire_reader *r, size_t *len)
{
    uint64_t n = wire_get_lenenc(r, NULL);
    *len = 0;
    /* Compare as uint64_t first: a huge length must not wrap when narrowed to size_t. */
    if (r->failed || n > wire_remaining(r)) {
        r->failed = true;
        return NULL;
    }
    *len = (size_t)n;
    return take(r, *len);
}

const uint8_t *wire_get_rest(struct wire_reader *r, size_t *len)
{
    *len = wire_remaining(r);
    return take(r, *len);
}

void wire_writer_init(struct wire_writer *w)
{
    memset(w, 0, sizeof(*w));
}

void wire_writer_reset(struct wire_writer *w)
{
    /* A reset starts a fresh message, so an earlier allocation failure is forgotten too. */
    w->len = 0;
    w->packet_start = 0;
    w->failed = false;
}

void wire_writer_free(struct wire_writer *w)
{
    free(w->buf);
    wire_writer_init(w);
}

/* Makes room for n more bytes and returns where they go, or NULL once failed. */
static uint8_t *reserve(struct wire_writer *w, size_t n)
{
    if (w->failed)
        return NULL;
    if (n > SIZE_MAX - w->len)
        goto fail;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n) {
            if (cap > SIZE_MAX / 2)
                goto fail;
            cap *= 2;
        }
        uint8_t *buf = realloc(w->buf, cap);
        if (!buf)
            goto fail;
        w->buf = buf;
        w->cap = cap;
    }
    uint8_t *p = w->buf + w->len;
    w->len += n;
    return p;
fail:
    w->failed = true;
    return NULL;
}

/* Appends the low n bytes of v, little-endian. */
static void put_le(struct wire_writer *w, uint64_t v, size_t n)
{
    uint8_t *p = reserve(w, n);
    if (!p)
        return;
    for (size_t i = 0; i < n; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

void wire_put_u8(struct wire_writer *w, uint8_t v)
{
    put_le(w, v, 1);
}

void wire_put_u16(struct wire_writer *w, uint16_t v)
{
    put_le(w, v, 2);
}

void wire_put_u24(struct wire_writer *w, uint32_t v)
{
    put_le(w, v, 3);
}

void wire_put_u32(struct wire_writer *w, uint32_t v)
{
    put_le(w, v, 4);
}

void wire_put_u64(struct wire_writer *w, uint64_t v)
{
    put_le(w, v, 8);
}

void wire_put_lenenc(struct wire_writer *w, uint64_t v)
{
    if (v < 0xfb) {
        put_le(w, v, 1);
    } else if (v <= 0xffff) {
        put_le(w, 0xfc, 1);
        put_le(w, v, 2);
    } else if (v <= 0xffffff) {
        put_le(w, 0xfd, 1);
        put_le(w, v, 3);
    } else {
        put_le(w, 0xfe, 1);
        put_le(w, v, 8);
    }
}

void wire_put_bytes(struct wire_writer *w, const void *p, size_t n)
{
    uint8_t *dst = reserve(w, n);
    if (dst && n)
        memcpy(dst, p, n);
}

void wire_put_zeros(struct wire_writer *w, size_t n)
{
    uint8_t *dst = reserve(w, n);
    if (dst && n)
        memset(dst, 0, n);
}

void wire_put_cstr(struct wire_writer *w, const char *s)
{
    wire_put_bytes(w, s, strlen(s) + 1);
}

void wire_put_lenenc_bytes(struct wire_writer *w, const void *p, size_t n)
{
    wire_put_lenenc(w, n);
    wire_put_bytes(w, p, n);
}

void wire_begin_packet(struct wire_writer *w, uint8_t seq)
{
    w->packet_start = w->len;
    put_le(w, 0, 3); /* length patched by wire_end_packet */
    put_le(w, seq, 1);
}

void wire_end_packet(struct wire_writer *w)
{
    if (w->failed)
        return;
    if (w->len < w->packet_start + PROTO_HEADER_LEN) { /* no open packet */
        w->failed = true;
        return;
    }
    size_t payload = w->len - w->packet_start - PROTO_HEADER_LEN;
    /* A payload of 0xffffff or more would need continuation packets, which we never build. */
    if (payload >= PROTO_MAX_PAYLOAD) {
        w->failed = true;
        return;
    }
    uint8_t *h = w->buf + w->packet_start;
    h[0] = (uint8_t)payload;
    h[1] = (uint8_t)(payload >> 8);
    h[2] = (uint8_t)(payload >> 16);
}
