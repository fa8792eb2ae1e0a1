/* OK, ERR and EOF packets: building the proxy's own, reading the server's. */
#ifndef CREDPROXY_AUTH_REPLY_H
#define CREDPROXY_AUTH_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/wire.h"

/* Appends an ERR packet (protocol 41 form: '#' + 5-char SQLSTATE + message). */
void err_packet_write(struct wire_writer *w, uint8_t seq, uint16_t code, const char *sqlstate,
                      const char *message);

/* Appends an OK packet with no info string. */
void ok_packet_write(struct wire_writer *w, uint8_t seq, uint64_t affected_rows,
                     uint64_t last_insert_id, uint16_t status, uint16_t warnings);

enum reply_kind { REPLY_OK, REPLY_ERR, REPLY_EOF, REPLY_LOCAL_INFILE, REPLY_OTHER };

/* The parts of a server reply the proxy acts on. */
struct server_reply {
    enum reply_kind kind;
    uint16_t status;         /* OK / EOF */
    uint16_t warnings;       /* OK / EOF */
    uint64_t affected_rows;  /* OK */
    uint64_t last_insert_id; /* OK */
    uint16_t error_code;     /* ERR */
    char sqlstate[6];        /* ERR, NUL-terminated; "HY000" when absent */
    const char *message;     /* ERR: points into the payload */
    size_t message_len;
};

/*
 * Classifies a server packet payload: 0x00 with len >= 7 is OK, 0xff is ERR,
 * 0xfe with len < 9 is EOF, 0xfb is a LOCAL INFILE request, anything else
 * OTHER. Returns false only when an OK/ERR/EOF is truncated.
 */
bool server_reply_parse(const uint8_t *payload, size_t len, struct server_reply *out)
    __attribute__((warn_unused_result));

#endif
