/* Bounds-checked readers and writers for MySQL wire encodings; no I/O. */
#ifndef CREDPROXY_AUTH_WIRE_H
#define CREDPROXY_AUTH_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Reads from a borrowed buffer. Every getter checks bounds; on short or bad
 * data it sets failed, returns 0/NULL, and every later call fails too, so a
 * parser may check failed once at the end.
 */
struct wire_reader {
    const uint8_t *p; /* borrowed */
    size_t len;
    size_t pos;
    bool failed;
};

void wire_reader_init(struct wire_reader *r, const uint8_t *p, size_t len);
size_t wire_remaining(const struct wire_reader *r);
uint8_t wire_get_u8(struct wire_reader *r);
uint16_t wire_get_u16(struct wire_reader *r);
uint32_t wire_get_u24(struct wire_reader *r);
uint32_t wire_get_u32(struct wire_reader *r);
uint64_t wire_get_u64(struct wire_reader *r);
/* Length-encoded integer; 0xfb (NULL) sets *is_null when is_null is non-NULL, else fails. */
uint64_t wire_get_lenenc(struct wire_reader *r, bool *is_null);
/* n bytes in place; NULL (and failed) if fewer remain. */
const uint8_t *wire_get_bytes(struct wire_reader *r, size_t n);
/* NUL-terminated string in place, *len excludes the NUL; fails if no NUL before the end. */
const char *wire_get_cstr(struct wire_reader *r, size_t *len);
/* Length-encoded string in place. */
const uint8_t *wire_get_lenenc_bytes(struct wire_reader *r, size_t *len);
/* The rest of the buffer in place (possibly empty). */
const uint8_t *wire_get_rest(struct wire_reader *r, size_t *len);

/*
 * Appends to a heap buffer that grows as needed. An allocation failure sets
 * failed and turns later calls into no-ops; check failed once at the end.
 */
struct wire_writer {
    uint8_t *buf; /* owned; freed by wire_writer_free */
    size_t len;
    size_t cap;
    size_t packet_start; /* offset of the open packet's header */
    bool failed;
};

void wire_writer_init(struct wire_writer *w);
void wire_writer_reset(struct wire_writer *w); /* len = 0, keeps the buffer */
void wire_writer_free(struct wire_writer *w);
void wire_put_u8(struct wire_writer *w, uint8_t v);
void wire_put_u16(struct wire_writer *w, uint16_t v);
void wire_put_u24(struct wire_writer *w, uint32_t v);
void wire_put_u32(struct wire_writer *w, uint32_t v);
void wire_put_u64(struct wire_writer *w, uint64_t v);
void wire_put_lenenc(struct wire_writer *w, uint64_t v);
void wire_put_bytes(struct wire_writer *w, const void *p, size_t n);
void wire_put_zeros(struct wire_writer *w, size_t n);
void wire_put_cstr(struct wire_writer *w, const char *s); /* with its NUL */
void wire_put_lenenc_bytes(struct wire_writer *w, const void *p, size_t n);
/* Opens a packet: reserves the 4-byte header with sequence id seq. */
void wire_begin_packet(struct wire_writer *w, uint8_t seq);
/* Closes the open packet by writing its payload length (must be < 16 MiB). */
void wire_end_packet(struct wire_writer *w);

/* Header helpers for code that frames packets itself. */
static inline uint32_t wire_header_len(const uint8_t h[4])
{
    return (uint32_t)h[0] | ((uint32_t)h[1] << 8) | ((uint32_t)h[2] << 16);
}
static inline uint8_t wire_header_seq(const uint8_t h[4])
{
    return h[3];
}

#endif
