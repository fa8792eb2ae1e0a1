/* OK and ERR packets the proxy sends, and classification of what the server sends back. */
#include "auth/reply.h"

#include <string.h>

#define SQLSTATE_LEN     5
#define SQLSTATE_DEFAULT "HY000"

void err_packet_write(struct wire_writer *w, uint8_t seq, uint16_t code, const char *sqlstate,
                      const char *message)
{
    /* A malformed SQLSTATE would shift the message; fall back to the generic one. */
    if (!sqlstate || strlen(sqlstate) != SQLSTATE_LEN)
        sqlstate = SQLSTATE_DEFAULT;
    wire_begin_packet(w, seq);
    wire_put_u8(w, 0xff);
    wire_put_u16(w, code);
    wire_put_u8(w, '#');
    wire_put_bytes(w, sqlstate, SQLSTATE_LEN);
    wire_put_bytes(w, message, strlen(message)); /* runs to the end of the packet, no NUL */
    wire_end_packet(w);
}

void ok_packet_write(struct wire_writer *w, uint8_t seq, uint64_t affected_rows,
                     uint64_t last_insert_id, uint16_t status, uint16_t warnings)
{
    wire_begin_packet(w, seq);
    wire_put_u8(w, 0x00);
    wire_put_lenenc(w, affected_rows);
    wire_put_lenenc(w, last_insert_id);
    wire_put_u16(w, status);
    wire_put_u16(w, warnings);
    wire_end_packet(w);
}

/* OK body after the 0x00; the info string and session-state changes are not needed. */
static void parse_ok(struct wire_reader *r, struct server_reply *out)
{
    out->affected_rows = wire_get_lenenc(r, NULL);
    out->last_insert_id = wire_get_lenenc(r, NULL);
    out->status = wire_get_u16(r);
    out->warnings = wire_get_u16(r);
}

/* ERR body after the 0xff; the '#'+SQLSTATE marker is absent in pre-4.1 and early handshake errors.
 */
static void parse_err(struct wire_reader *r, struct server_reply *out)
{
    out->error_code = wire_get_u16(r);
    memcpy(out->sqlstate, SQLSTATE_DEFAULT, sizeof(out->sqlstate));
    if (wire_remaining(r) >= 1 + SQLSTATE_LEN && r->p[r->pos] == '#') {
        wire_get_u8(r);
        memcpy(out->sqlstate, wire_get_bytes(r, SQLSTATE_LEN), SQLSTATE_LEN);
    }
    out->message = (const char *)wire_get_rest(r, &out->message_len);
}

bool server_reply_parse(const uint8_t *payload, size_t len, struct server_reply *out)
{
    struct wire_reader r;
    memset(out, 0, sizeof(*out));
    out->kind = REPLY_OTHER;
    if (len == 0)
        return true;
    wire_reader_init(&r, payload, len);
    uint8_t first = wire_get_u8(&r);
    if (first == 0x00 && len >= 7) {
        out->kind = REPLY_OK;
        parse_ok(&r, out);
    } else if (first == 0xff) {
        out->kind = REPLY_ERR;
        parse_err(&r, out);
    } else if (first == 0xfe && len < 9) {
        out->kind = REPLY_EOF;
        out->warnings = wire_get_u16(&r);
        out->status = wire_get_u16(&r);
    } else if (first == 0xfb) {
        out->kind = REPLY_LOCAL_INFILE;
    }
    return !r.failed;
}
