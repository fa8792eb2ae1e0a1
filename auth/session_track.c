/* Reading and stripping the session-state block of OK packets. */
#include "auth/session_track.h"

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
