/* Tracks a server's reply to each client command, packet by packet, without copying it. */
#ifndef CREDPROXY_AUTH_RESPONSE_H
#define CREDPROXY_AUTH_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How many leading payload bytes response_feed needs to see (more are ignored). */
#define RESPONSE_PREFIX_MAX 32

/* Commands the client may send before the previous replies have arrived (pipelining). */
#define RESPONSE_PIPELINE_MAX 16

/* Where in a reply the tracker is; private to response.c, listed here for the struct. */
enum response_state {
    RESPONSE_S_IDLE,          /* no reply expected (a queued command starts on its first packet) */
    RESPONSE_S_LOST,          /* gave up: every later packet is RESPONSE_UNTRACKABLE */
    RESPONSE_S_SIMPLE,        /* one OK, ERR or EOF */
    RESPONSE_S_CHANGE_USER,   /* OK or ERR; an auth exchange is untrackable */
    RESPONSE_S_STRING,        /* COM_STATISTICS: one packet of any content */
    RESPONSE_S_RESULT,        /* OK, ERR, LOCAL INFILE request or a result set's column count */
    RESPONSE_S_INFILE,        /* the OK or ERR that ends a LOAD DATA LOCAL */
    RESPONSE_S_COLUMNS,       /* column definitions, `remaining` of them */
    RESPONSE_S_COLUMNS_EOF,   /* the EOF after the column definitions */
    RESPONSE_S_ROWS,          /* rows until EOF, OK-with-0xFE or ERR */
    RESPONSE_S_PREPARE,       /* COM_STMT_PREPARE's OK or ERR */
    RESPONSE_S_PARAMS,        /* parameter definitions, `remaining` of them */
    RESPONSE_S_PARAMS_EOF,    /* the EOF after the parameter definitions */
    RESPONSE_S_PREP_COLS,     /* a prepared statement's column definitions */
    RESPONSE_S_PREP_COLS_EOF, /* the EOF after them */
    RESPONSE_S_FIELD_LIST,    /* COM_FIELD_LIST: column definitions until EOF or ERR */
};

/*
 * One server connection's reply tracker. Embedded in the connection, no
 * allocation; the caller reads the public fields, the rest is private.
 */
struct response_tracker {
    uint64_t caps;                        /* negotiated capabilities (private) */
    enum response_state state;            /* private; see response_idle() */
    uint8_t cmd;                          /* command whose reply is being read (private) */
    uint64_t remaining;                   /* definitions left in the current block (private) */
    uint8_t queue[RESPONSE_PIPELINE_MAX]; /* commands awaiting their reply, oldest first */
    uint8_t queue_head;                   /* index of the oldest queued command (private) */
    uint8_t queue_len;                    /* number of queued commands (private) */

    uint16_t status;           /* last server status flags seen in an OK or EOF */
    uint16_t warnings;         /* warning count of the last OK or EOF */
    uint64_t affected_rows;    /* of the last OK (0 after an EOF) */
    uint64_t last_insert_id;   /* of the last OK (0 after an EOF) */
    bool last_was_error;       /* the reply that just completed ended with ERR */
    uint16_t last_error_code;  /* its error code */
    uint32_t prepared_stmt_id; /* after a COM_STMT_PREPARE reply completes without error */
    uint16_t prepared_params;  /* its number of parameters */
    uint16_t prepared_columns; /* its number of result columns */
    bool ok_packet;            /* the packet just fed was an OK (its status is in status) */
    bool prepare_ok;           /* the packet just fed was a COM_STMT_PREPARE OK */
};

/*
 * Starts tracking a connection that has just logged in. caps is the
 * capability set both sides agreed on; CLIENT_DEPRECATE_EOF,
 * MARIADB_CLIENT_CACHE_METADATA and MARIADB_CLIENT_PROGRESS change what the
 * server sends. CLIENT_OPTIONAL_RESULTSET_METADATA is not supported: with it
 * every packet is RESPONSE_UNTRACKABLE. status starts at 0; the caller may
 * set it from the server's greeting or login OK.
 */
void response_tracker_init(struct response_tracker *t, uint64_t caps);

/*
 * The client sent a command whose first frame (seq 0) begins with cmd.
 * Returns true when the server will answer it, false for the commands that
 * get no reply (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT). A command
 * sent while an earlier reply is still arriving is queued, and its reply is
 * tracked after the earlier ones. Commands the tracker does not understand
 * (replication, an auth exchange, a full queue) make it lose track: the
 * return value is still whether a reply is expected.
 */
bool response_begin(struct response_tracker *t, uint8_t cmd);

enum response_event {
    RESPONSE_MORE,         /* the reply continues */
    RESPONSE_DONE,         /* the reply to the oldest pending command is complete */
    RESPONSE_LOCAL_INFILE, /* LOAD DATA LOCAL: the client now sends the file, then an empty
                              packet; the server's next packet ends the statement */
    RESPONSE_UNTRACKABLE,  /* the tracker lost track of this connection for good */
};

/*
 * One server packet. payload_len is its full payload length; prefix holds
 * its first min(payload_len, RESPONSE_PREFIX_MAX) bytes (prefix_len of them).
 * Only the first frame of a packet is fed: the frames that continue a
 * payload of 0xffffff bytes are not. After RESPONSE_DONE the public fields
 * describe the completed reply until the next packet is fed.
 */
enum response_event response_feed(struct response_tracker *t, const uint8_t *prefix,
                                  size_t prefix_len, size_t payload_len);

/*
 * True when the server's next packet, beginning with the byte first, would
 * be read as an OK or EOF (which may carry session-state changes) rather
 * than a row, a definition or a prepare's reply. The caller also checks
 * that the packet is shorter than 0xffffff bytes (a longer 0xfe one is a row).
 */
bool response_next_may_be_ok(const struct response_tracker *t, uint8_t first);

/* True when RESPONSE_PIPELINE_MAX commands await their reply: send no more until one completes. */
bool response_queue_full(const struct response_tracker *t);

/* True while the rows of a result set are being read (the next packet may be a row). */
bool response_in_rows(const struct response_tracker *t);

/* True once the tracker has given up on this connection (every packet is untrackable). */
bool response_lost(const struct response_tracker *t);

/*
 * True when no reply is pending: every command sent has been fully answered.
 * Then status tells whether the server holds a transaction open
 * (PROTO_STATUS_IN_TRANS). An ERR carries no status, so after one status is
 * the last one reported; with autocommit off (PROTO_STATUS_AUTOCOMMIT clear)
 * a failed statement may have opened a transaction the status does not show.
 */
bool response_idle(const struct response_tracker *t);

#endif
