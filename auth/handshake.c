/* The connection phase as the server sees it: greeting out, login request and COM_CHANGE_USER in.
 */
#include "auth/handshake.h"

#include <stdio.h>

#include <string.h>

/* The fixed part of a HandshakeResponse41; an SSLRequest is exactly this long. */
#define RESPONSE_FIXED_LEN  32
#define RESPONSE_FILLER_LEN 19
/* Scramble split of protocol 10: 8 bytes, a filler, then 12 bytes and a NUL. */
#define SCRAMBLE_PART1 8
#define SCRAMBLE_PART2 (PROTO_SCRAMBLE_LEN - SCRAMBLE_PART1)

void greeting_write(struct wire_writer *w, const struct greeting *g)
{
    uint64_t caps = g->capabilities;
    wire_begin_packet(w, 0);
    wire_put_u8(w, 10); /* protocol version */
    wire_put_cstr(w, g->server_version);
    wire_put_u32(w, g->connection_id);
    wire_put_bytes(w, g->scramble, SCRAMBLE_PART1);
    wire_put_u8(w, 0);
    wire_put_u16(w, (uint16_t)caps);
    wire_put_u8(w, g->charset);
    wire_put_u16(w, g->status);
    wire_put_u16(w, (uint16_t)(caps >> 16));
    wire_put_u8(w, PROTO_SCRAMBLE_LEN + 1); /* auth data length, counting the NUL */
    wire_put_zeros(w, 6);
    /* MariaDB reads its extended capabilities here only when CLIENT_MYSQL is clear. */
    wire_put_u32(w, (caps & PROTO_CAP_LONG_PASSWORD) ? 0 : (uint32_t)(caps >> 32));
    wire_put_bytes(w, g->scramble + SCRAMBLE_PART1, SCRAMBLE_PART2);
    wire_put_u8(w, 0);
    /* Clients read the plugin name only when PLUGIN_AUTH is offered. */
    if (caps & PROTO_CAP_PLUGIN_AUTH)
        wire_put_cstr(w, g->auth_plugin ? g->auth_plugin : "");
    wire_end_packet(w);
}

/*
 * Reads the 32 fixed bytes. MariaDB's extended capabilities sit in the last
 * 4 filler bytes and count only when both sides cleared CLIENT_MYSQL, which is
 * how a MariaDB client says it wrote them. Flags the server did not offer are
 * dropped so later parsing follows what was actually negotiated.
 */
static void parse_fixed(struct wire_reader *r, uint64_t server_caps, struct handshake_response *out)
{
    uint64_t caps = wire_get_u32(r);
    out->max_packet = wire_get_u32(r);
    out->charset = wire_get_u8(r);
    wire_get_bytes(r, RESPONSE_FILLER_LEN);
    uint32_t ext = wire_get_u32(r);
    if (!(server_caps & PROTO_CAP_LONG_PASSWORD) && !(caps & PROTO_CAP_LONG_PASSWORD))
        caps |= (uint64_t)ext << 32;
    out->capabilities = caps & server_caps;
}

/* The auth response: lenenc, 1-byte length, or NUL-terminated, by capability. */
static void parse_auth(struct wire_reader *r, uint64_t caps, const uint8_t **auth, size_t *len)
{
    if (caps & PROTO_CAP_PLUGIN_AUTH_LENENC) {
        *auth = wire_get_lenenc_bytes(r, len);
    } else if (caps & PROTO_CAP_SECURE_CONNECTION) {
        *len = wire_get_u8(r);
        *auth = wire_get_bytes(r, *len);
    } else {
        *auth = (const uint8_t *)wire_get_cstr(r, len);
    }
}

/* True when block is a whole sequence of lenenc key/value string pairs. */
static bool attrs_valid(const uint8_t *block, size_t len)
{
    struct wire_reader r;
    size_t n;
    wire_reader_init(&r, block, len);
    while (!r.failed && wire_remaining(&r) > 0) {
        wire_get_lenenc_bytes(&r, &n);
        wire_get_lenenc_bytes(&r, &n);
    }
    return !r.failed;
}

/* The connect-attributes block: a lenenc total length, then pairs that must fill it exactly. */
static void parse_attrs(struct wire_reader *r, const uint8_t **attrs, size_t *len)
{
    *attrs = wire_get_lenenc_bytes(r, len);
    if (*attrs && !attrs_valid(*attrs, *len))
        r->failed = true;
}

/*
 * Database, plugin name and attributes. Clients that stop right after the
 * database (or plugin) are tolerated: the missing fields read as absent.
 * Bytes after the attributes (MySQL 8's zstd level) are ignored.
 */
static void parse_tail(struct wire_reader *r, struct handshake_response *out)
{
    uint64_t caps = out->capabilities;
    if (caps & PROTO_CAP_CONNECT_WITH_DB)
        out->database = wire_get_cstr(r, &out->database_len);
    if ((caps & PROTO_CAP_PLUGIN_AUTH) && wire_remaining(r) > 0)
        out->auth_plugin = wire_get_cstr(r, &out->auth_plugin_len);
    if ((caps & PROTO_CAP_CONNECT_ATTRS) && wire_remaining(r) > 0)
        parse_attrs(r, &out->attrs, &out->attrs_len);
}

enum handshake_parse_result handshake_response_parse(const uint8_t *payload, size_t len,
                                                     uint64_t server_caps,
                                                     struct handshake_response *out)
{
    struct wire_reader r;
    memset(out, 0, sizeof(*out));
    wire_reader_init(&r, payload, len);
    parse_fixed(&r, server_caps, out);
    if (r.failed || !(out->capabilities & PROTO_CAP_PROTOCOL_41))
        return HANDSHAKE_MALFORMED;
    if (len == RESPONSE_FIXED_LEN && (out->capabilities & PROTO_CAP_SSL))
        return HANDSHAKE_SSL_REQUEST;
    out->user = wire_get_cstr(&r, &out->user_len);
    parse_auth(&r, out->capabilities, &out->auth, &out->auth_len);
    parse_tail(&r, out);
    return r.failed ? HANDSHAKE_MALFORMED : HANDSHAKE_PARSED;
}

void auth_switch_request_write(struct wire_writer *w, uint8_t seq, const char *plugin,
                               const uint8_t *data, size_t len)
{
    wire_begin_packet(w, seq);
    wire_put_u8(w, 0xfe);
    wire_put_cstr(w, plugin);
    wire_put_bytes(w, data, len);
    wire_put_u8(w, 0);
    wire_end_packet(w);
}

/* Charset, plugin and attributes: each optional, each present only if the previous one is. */
static void parse_change_user_tail(struct wire_reader *r, uint64_t caps,
                                   struct change_user_request *out)
{
    if (wire_remaining(r) == 0)
        return;
    out->charset = wire_get_u16(r);
    if ((caps & PROTO_CAP_PLUGIN_AUTH) && wire_remaining(r) > 0)
        out->auth_plugin = wire_get_cstr(r, &out->auth_plugin_len);
    if ((caps & PROTO_CAP_CONNECT_ATTRS) && wire_remaining(r) > 0)
        parse_attrs(r, &out->attrs, &out->attrs_len);
}

bool change_user_parse(const uint8_t *payload, size_t len, uint64_t client_caps,
                       struct change_user_request *out)
{
    struct wire_reader r;
    memset(out, 0, sizeof(*out));
    wire_reader_init(&r, payload, len);
    if (wire_get_u8(&r) != PROTO_COM_CHANGE_USER)
        return false;
    out->user = wire_get_cstr(&r, &out->user_len);
    if (client_caps & PROTO_CAP_SECURE_CONNECTION) {
        out->auth_len = wire_get_u8(&r);
        out->auth = wire_get_bytes(&r, out->auth_len);
    } else {
        out->auth = (const uint8_t *)wire_get_cstr(&r, &out->auth_len);
    }
    out->database = wire_get_cstr(&r, &out->database_len);
    parse_change_user_tail(&r, client_caps, out);
    return !r.failed;
}

bool server_greeting_parse(const uint8_t *p, size_t len, struct server_greeting *out, char *why,
                           size_t whylen)
{
    struct wire_reader r;
    wire_reader_init(&r, p, len);
    memset(out, 0, sizeof(*out));
    uint8_t proto = wire_get_u8(&r);
    if (r.failed || proto != 10) {
        snprintf(why, whylen, "unsupported protocol version %u", proto);
        return false;
    }
    size_t vlen;
    const char *version = wire_get_cstr(&r, &vlen);
    out->thread_id = wire_get_u32(&r);
    const uint8_t *s1 = wire_get_bytes(&r, 8);
    wire_get_u8(&r);
    uint64_t caps = wire_get_u16(&r);
    out->charset = wire_get_u8(&r);
    out->status = wire_get_u16(&r);
    caps |= (uint64_t)wire_get_u16(&r) << 16;
    uint8_t auth_len = wire_get_u8(&r);
    wire_get_bytes(&r, 6);
    uint32_t ext = wire_get_u32(&r);
    if (r.failed || !version || !(caps & PROTO_CAP_PROTOCOL_41) ||
        !(caps & PROTO_CAP_SECURE_CONNECTION)) {
        snprintf(why, whylen, "the server's greeting is malformed or pre-4.1");
        return false;
    }
    if (!(caps & PROTO_CAP_LONG_PASSWORD))
        caps |= (uint64_t)ext << 32; /* MariaDB: extended capabilities */
    size_t s2len = auth_len > 8 ? (size_t)auth_len - 8 : 13;
    if (s2len > 13)
        s2len = 13;
    const uint8_t *s2 = wire_get_bytes(&r, s2len);
    if (!s1 || !s2) {
        snprintf(why, whylen, "the server's greeting has no scramble");
        return false;
    }
    memcpy(out->scramble, s1, 8);
    memcpy(out->scramble + 8, s2, s2len);
    out->scramble_len = 8 + s2len;
    if (out->scramble_len > 20 && out->scramble[out->scramble_len - 1] == 0)
        out->scramble_len--; /* the trailing NUL is not part of the scramble */
    if (caps & PROTO_CAP_PLUGIN_AUTH) {
        size_t plen;
        const char *pname = wire_get_cstr(&r, &plen);
        if (pname)
            snprintf(out->auth_plugin, sizeof(out->auth_plugin), "%.*s", (int)plen, pname);
    }
    snprintf(out->version, sizeof(out->version), "%.*s", (int)vlen, version);
    out->capabilities = caps;
    return true;
}
