/* Session-state tracking in OK packets: reading what changed, and hiding it from clients that did
 * not ask. */
#ifndef CREDPROXY_AUTH_SESSION_TRACK_H
#define CREDPROXY_AUTH_SESSION_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/wire.h"

enum session_track_type {
    SESSION_TRACK_SYSVARS = 0, /* name, value */
    SESSION_TRACK_SCHEMA = 1,  /* schema */
    SESSION_TRACK_STATE = 2,   /* "1": something else changed (user variables, temp tables...) */
    SESSION_TRACK_GTIDS = 3,
    SESSION_TRACK_TRX_CHARACTERISTICS = 4,
    SESSION_TRACK_TRX_STATE = 5,
};

/* An OK packet read in full, from a connection that negotiated CLIENT_SESSION_TRACK. */
struct ok_packet {
    uint8_t header; /* 0x00, or 0xfe for an OK that ends rows (DEPRECATE_EOF) */
    uint64_t affected_rows;
    uint64_t last_insert_id;
    uint16_t status;
    uint16_t warnings;
    const uint8_t *info; /* human-readable info, in the payload */
    size_t info_len;
    const uint8_t *state; /* session state changes, in the payload (status has 0x4000) */
    size_t state_len;
};

/* Parses an OK payload sent with CLIENT_SESSION_TRACK. */
bool ok_packet_parse(const uint8_t *payload, size_t len, struct ok_packet *out)
    __attribute__((warn_unused_result));

/* One entry of the session state block. Strings point into the payload. */
struct session_change {
    uint8_t type;
    const uint8_t *a; /* sysvar name, schema, or state flag */
    size_t a_len;
    const uint8_t *b; /* sysvar value; NULL for other types */
    size_t b_len;
};

/*
 * Iterates the state block: call with a reader over ok.state; returns false
 * at the end, or on malformed data (then r->failed is set).
 */
bool session_change_next(struct wire_reader *r, struct session_change *out);

/*
 * Writes ok as a client without CLIENT_SESSION_TRACK expects it: the state
 * block and its status flag removed, the info string kept. Payload only.
 */
void ok_packet_write_untracked(struct wire_writer *w, const struct ok_packet *ok);

/*
 * What a client's own session-tracking settings (session_track_schema,
 * _state_change, _system_variables, _transaction_info) ask the server to
 * report: the server's defaults, which credproxy widens for itself.
 */
struct track_view {
    bool schema;
    bool state_change;
    bool all_sysvars;     /* session_track_system_variables = '*' */
    char sysvars[1024];   /* its value as the server reports it: "autocommit,time_zone,..." */
    char transaction[32]; /* session_track_transaction_info: OFF, STATE, CHARACTERISTICS */
};

/* Fills v from the four values (text) in that order; false when one is malformed. */
bool track_view_parse(struct track_view *v, const uint8_t *row, size_t len);

/*
 * Writes ok (which has a state block) as the client would have got it with
 * view v: only the records v asks for, and the status flag only when any
 * remain. Payload only.
 */
void ok_packet_write_filtered(struct wire_writer *w, const struct ok_packet *ok,
                              const struct track_view *v);

#endif
