/* Reading and stripping the session-state block of OK packets. */
#include "auth/session_track.h"

#include <string.h>
#include <strings.h>

#include "auth/proto.h"

bool ok_packet_parse(const uint8_t *payload, size_t len, struct ok_packet *out)
{
    struct wire_reader r;
    wire_reader_init(&r, payload, len);
    *out = (struct ok_packet){0};
    out->header = wire_get_u8(&r);
    out->affected_rows = wire_get_lenenc(&r, NULL);
    out->last_insert_id = wire_get_lenenc(&r, NULL);
    out->status = wire_get_u16(&r);
    out->warnings = wire_get_u16(&r);
    if (r.failed || (out->header != 0x00 && out->header != 0xfe))
        return false;
    if (wire_remaining(&r) > 0)
        out->info = wire_get_lenenc_bytes(&r, &out->info_len);
    if (out->status & PROTO_STATUS_STATE_CHANGED)
        out->state = wire_get_lenenc_bytes(&r, &out->state_len);
    return !r.failed;
}

bool session_change_next(struct wire_reader *r, struct session_change *out)
{
    if (r->failed || wire_remaining(r) == 0)
        return false;
    *out = (struct session_change){0};
    out->type = wire_get_u8(r);
    size_t data_len;
    const uint8_t *data = wire_get_lenenc_bytes(r, &data_len);
    if (r->failed)
        return false;
    struct wire_reader d;
    wire_reader_init(&d, data, data_len);
    if (out->type == SESSION_TRACK_SYSVARS) {
        out->a = wire_get_lenenc_bytes(&d, &out->a_len);
        out->b = wire_get_lenenc_bytes(&d, &out->b_len);
    } else if (out->type == SESSION_TRACK_SCHEMA) {
        out->a = wire_get_lenenc_bytes(&d, &out->a_len);
    } else if (out->type == SESSION_TRACK_STATE && data_len == 1) {
        /* MariaDB sends the flag bare; MySQL as a length-encoded string. */
        out->a = data;
        out->a_len = 1;
    } else if (out->type == SESSION_TRACK_STATE) {
        out->a = wire_get_lenenc_bytes(&d, &out->a_len);
    } else {
        out->a = data;
        out->a_len = data_len;
    }
    if (d.failed) {
        r->failed = true;
        return false;
    }
    return true;
}

void ok_packet_write_untracked(struct wire_writer *w, const struct ok_packet *ok)
{
    wire_put_u8(w, ok->header);
    wire_put_lenenc(w, ok->affected_rows);
    wire_put_lenenc(w, ok->last_insert_id);
    wire_put_u16(w, (uint16_t)(ok->status & ~PROTO_STATUS_STATE_CHANGED));
    wire_put_u16(w, ok->warnings);
    if (ok->info_len)
        wire_put_lenenc_bytes(w, ok->info, ok->info_len);
}

/* True when name is one of the comma-separated names in list (case-insensitive). */
static bool in_list(const char *list, const uint8_t *name, size_t len)
{
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && *p == ' ') {
            p++;
            n--;
        }
        if (n == len && strncasecmp(p, (const char *)name, len) == 0)
            return true;
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

static bool copy_text(char *dst, size_t cap, const uint8_t *src, size_t len)
{
    if (len >= cap)
        return false;
    memcpy(dst, src, len);
    dst[len] = 0;
    return true;
}

bool track_view_parse(struct track_view *v, const uint8_t *row, size_t len)
{
    struct wire_reader r;
    wire_reader_init(&r, row, len);
    size_t l[4];
    const uint8_t *f[4];
    for (int i = 0; i < 4; i++) {
        f[i] = wire_get_lenenc_bytes(&r, &l[i]);
        if (r.failed || !f[i])
            return false;
    }
    memset(v, 0, sizeof(*v));
    v->schema = l[0] == 1 && f[0][0] == '1';
    v->state_change = l[1] == 1 && f[1][0] == '1';
    if (!copy_text(v->sysvars, sizeof(v->sysvars), f[2], l[2]) ||
        !copy_text(v->transaction, sizeof(v->transaction), f[3], l[3]))
        return false;
    v->all_sysvars = strcmp(v->sysvars, "*") == 0;
    return true;
}

static bool view_allows(const struct track_view *v, uint8_t type, const uint8_t *data, size_t len)
{
    switch (type) {
    case SESSION_TRACK_SYSVARS: {
        if (v->all_sysvars)
            return true;
        struct wire_reader d;
        wire_reader_init(&d, data, len);
        size_t nlen;
        const uint8_t *name = wire_get_lenenc_bytes(&d, &nlen);
        return !d.failed && name && in_list(v->sysvars, name, nlen);
    }
    case SESSION_TRACK_SCHEMA:
        return v->schema;
    case SESSION_TRACK_STATE:
        return v->state_change;
    default:
        /* GTIDs and transaction records: credproxy never asks for them; they are the client's. */
        return true;
    }
}

void ok_packet_write_filtered(struct wire_writer *w, const struct ok_packet *ok,
                              const struct track_view *v)
{
    struct wire_writer kept;
    wire_writer_init(&kept);
    struct wire_reader r;
    wire_reader_init(&r, ok->state, ok->state_len);
    while (!r.failed && wire_remaining(&r) > 0) {
        uint8_t type = wire_get_u8(&r);
        size_t len;
        const uint8_t *data = wire_get_lenenc_bytes(&r, &len);
        if (r.failed)
            break;
        if (view_allows(v, type, data, len)) {
            wire_put_u8(&kept, type);
            wire_put_lenenc_bytes(&kept, data, len);
        }
    }
    bool any = kept.len > 0 && !kept.failed;
    wire_put_u8(w, ok->header);
    wire_put_lenenc(w, ok->affected_rows);
    wire_put_lenenc(w, ok->last_insert_id);
    uint16_t status = (uint16_t)(ok->status & ~PROTO_STATUS_STATE_CHANGED);
    wire_put_u16(w, any ? (uint16_t)(status | PROTO_STATUS_STATE_CHANGED) : status);
    wire_put_u16(w, ok->warnings);
    if (ok->info_len || any)
        wire_put_lenenc_bytes(w, ok->info ? ok->info : (const uint8_t *)"", ok->info_len);
    if (any)
        wire_put_lenenc_bytes(w, kept.buf, kept.len);
    if (kept.failed)
        w->failed = true;
    wire_writer_free(&kept);
}
