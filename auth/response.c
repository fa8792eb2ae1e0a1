/* Reply tracking: a state machine over server packet prefixes, one transition function. */
#include "auth/response.h"

#include <string.h>

#include "auth/proto.h"
#include "auth/wire.h"

/* Commands proto.h does not name: both answer with one OK, ERR or EOF. */
#define COM_REFRESH  0x07
#define COM_SHUTDOWN 0x08

/* A MariaDB progress report is an ERR packet with this code. */
#define PROGRESS_ERROR_CODE 0xffff

/* Without CLIENT_DEPRECATE_EOF an EOF packet is shorter than this. */
#define EOF_MAX_LEN 9

/* The one place the state changes. */
static void set_state(struct response_tracker *t, enum response_state s)
{
    t->state = s;
}

/* Gives up on the connection; sticky until response_tracker_init. */
static enum response_event lose(struct response_tracker *t)
{
    set_state(t, RESPONSE_S_LOST);
    t->queue_len = 0;
    return RESPONSE_UNTRACKABLE;
}

void response_tracker_init(struct response_tracker *t, uint64_t caps)
{
    memset(t, 0, sizeof(*t));
    t->caps = caps;
    set_state(t, (caps & PROTO_CAP_OPTIONAL_METADATA) ? RESPONSE_S_LOST : RESPONSE_S_IDLE);
}

/* The state a command's reply starts in; LOST for commands we cannot follow. */
static enum response_state first_state(uint8_t cmd)
{
    switch (cmd) {
    case PROTO_COM_PING:
    case PROTO_COM_INIT_DB:
    case PROTO_COM_SET_OPTION:
    case PROTO_COM_RESET_CONNECTION:
    case PROTO_COM_STMT_RESET:
    case PROTO_COM_PROCESS_KILL:
    case PROTO_COM_DEBUG:
    case COM_REFRESH:
    case COM_SHUTDOWN:
        return RESPONSE_S_SIMPLE;
    case PROTO_COM_CHANGE_USER:
        return RESPONSE_S_CHANGE_USER;
    case PROTO_COM_STATISTICS:
        return RESPONSE_S_STRING;
    case PROTO_COM_QUERY:
    case PROTO_COM_PROCESS_INFO: /* answered like SHOW PROCESSLIST */
    case PROTO_COM_STMT_EXECUTE:
    case PROTO_COM_STMT_BULK_EXECUTE:
        return RESPONSE_S_RESULT;
    case PROTO_COM_STMT_FETCH:
        return RESPONSE_S_ROWS;
    case PROTO_COM_STMT_PREPARE:
        return RESPONSE_S_PREPARE;
    case PROTO_COM_FIELD_LIST:
        return RESPONSE_S_FIELD_LIST;
    default: /* replication and obsolete commands */
        return RESPONSE_S_LOST;
    }
}

bool response_begin(struct response_tracker *t, uint8_t cmd)
{
    if (cmd == PROTO_COM_QUIT || cmd == PROTO_COM_STMT_CLOSE ||
        cmd == PROTO_COM_STMT_SEND_LONG_DATA)
        return false;
    if (t->state == RESPONSE_S_LOST)
        return true;
    if (first_state(cmd) == RESPONSE_S_LOST || t->queue_len == RESPONSE_PIPELINE_MAX) {
        lose(t);
        return true;
    }
    t->queue[(t->queue_head + t->queue_len) % RESPONSE_PIPELINE_MAX] = cmd;
    t->queue_len++;
    return true;
}

bool response_idle(const struct response_tracker *t)
{
    return t->state == RESPONSE_S_IDLE && t->queue_len == 0;
}

/* Takes the oldest queued command as the one being answered; false when none is queued. */
static bool start_next(struct response_tracker *t)
{
    if (t->queue_len == 0)
        return false;
    t->cmd = t->queue[t->queue_head];
    t->queue_head = (uint8_t)((t->queue_head + 1) % RESPONSE_PIPELINE_MAX);
    t->queue_len--;
    t->last_was_error = false;
    t->last_error_code = 0;
    t->prepared_stmt_id = 0;
    t->prepared_params = 0;
    t->prepared_columns = 0;
    t->remaining = 0;
    set_state(t, first_state(t->cmd));
    return true;
}

static enum response_event done(struct response_tracker *t)
{
    set_state(t, RESPONSE_S_IDLE);
    return RESPONSE_DONE;
}

/* An ERR ends any reply, multi-result ones included. */
static enum response_event done_error(struct response_tracker *t, uint16_t code)
{
    t->last_was_error = true;
    t->last_error_code = code;
    return done(t);
}

/* The error code of an ERR packet; false when the prefix is too short to hold it. */
static bool err_code(const uint8_t *p, size_t n, uint16_t *code)
{
    struct wire_reader r;
    wire_reader_init(&r, p, n);
    wire_get_u8(&r);
    *code = wire_get_u16(&r);
    return !r.failed;
}

/* Status of an OK packet (0x00 or 0xfe header): skips affected rows and last insert id. */
static bool ok_status(struct response_tracker *t, const uint8_t *p, size_t n)
{
    struct wire_reader r;
    wire_reader_init(&r, p, n);
    wire_get_u8(&r);
    uint64_t affected = wire_get_lenenc(&r, NULL);
    uint64_t insert_id = wire_get_lenenc(&r, NULL);
    uint16_t status = wire_get_u16(&r);
    if (r.failed)
        return false;
    uint16_t warnings = wire_remaining(&r) >= 2 ? wire_get_u16(&r) : 0;
    t->status = status;
    t->warnings = warnings;
    t->affected_rows = affected;
    t->last_insert_id = insert_id;
    t->ok_packet = true;
    return true;
}

/*
 * A 0xfe packet shorter than 0xffffff ends a block: a text row cannot start
 * with 0xfe unless its first value is at least 2^24 bytes long, and binary
 * rows and definitions never do.
 */
static bool is_terminator(const uint8_t *p, size_t n, size_t payload_len)
{
    return n > 0 && p[0] == 0xfe && payload_len < PROTO_MAX_PAYLOAD;
}

/*
 * Status of a terminator: an EOF (warnings u16, status u16) without
 * CLIENT_DEPRECATE_EOF, else an OK with a 0xfe header. False when malformed.
 */
static bool terminator_status(struct response_tracker *t, const uint8_t *p, size_t n,
                              size_t payload_len)
{
    if (t->caps & PROTO_CAP_DEPRECATE_EOF)
        return ok_status(t, p, n);
    if (payload_len >= EOF_MAX_LEN)
        return false;
    struct wire_reader r;
    wire_reader_init(&r, p, n);
    wire_get_u8(&r);
    uint16_t warnings = wire_get_u16(&r);
    uint16_t status = wire_get_u16(&r);
    if (r.failed)
        return false;
    t->status = status;
    t->warnings = warnings;
    t->affected_rows = 0;
    t->last_insert_id = 0;
    return true;
}

/* The EOF that closes a block of definitions; only sent without CLIENT_DEPRECATE_EOF. */
static bool block_eof(struct response_tracker *t, const uint8_t *p, size_t n, size_t payload_len)
{
    return is_terminator(p, n, payload_len) && terminator_status(t, p, n, payload_len);
}

/* After a result set's column definitions (and their EOF, if any): rows follow. */
static enum response_event columns_done(struct response_tracker *t)
{
    bool deprecate_eof = t->caps & PROTO_CAP_DEPRECATE_EOF;
    set_state(t, deprecate_eof ? RESPONSE_S_ROWS : RESPONSE_S_COLUMNS_EOF);
    return RESPONSE_MORE;
}

/* A result set's column count; MariaDB's cached metadata may skip the definitions. */
static enum response_event column_count(struct response_tracker *t, const uint8_t *p, size_t n)
{
    struct wire_reader r;
    wire_reader_init(&r, p, n);
    uint64_t columns = wire_get_lenenc(&r, NULL);
    if (r.failed || columns == 0)
        return lose(t);
    bool metadata_follows = true;
    if ((t->caps & PROTO_CAP_MARIADB_CACHE_META) && wire_remaining(&r) > 0)
        metadata_follows = wire_get_u8(&r) != 0;
    if (!metadata_follows)
        return columns_done(t);
    t->remaining = columns;
    set_state(t, RESPONSE_S_COLUMNS);
    return RESPONSE_MORE;
}

/* An OK that ends one statement; another result follows when MORE_RESULTS is set. */
static enum response_event statement_ok(struct response_tracker *t, const uint8_t *p, size_t n)
{
    if (!ok_status(t, p, n))
        return lose(t);
    if (t->status & PROTO_STATUS_MORE_RESULTS) {
        set_state(t, RESPONSE_S_RESULT);
        return RESPONSE_MORE;
    }
    return done(t);
}

/* The end of a result set's rows (or of a cursor's metadata). */
static enum response_event rows_end(struct response_tracker *t)
{
    if (t->cmd != PROTO_COM_STMT_FETCH && (t->status & PROTO_STATUS_MORE_RESULTS)) {
        set_state(t, RESPONSE_S_RESULT);
        return RESPONSE_MORE;
    }
    return done(t);
}

/* COM_STMT_PREPARE's OK: id u32, columns u16, params u16, reserved u8, warnings u16. */
static enum response_event prepare_ok(struct response_tracker *t, const uint8_t *p, size_t n)
{
    struct wire_reader r;
    wire_reader_init(&r, p, n);
    wire_get_u8(&r);
    uint32_t id = wire_get_u32(&r);
    uint16_t columns = wire_get_u16(&r);
    uint16_t params = wire_get_u16(&r);
    if (r.failed)
        return lose(t);
    t->prepared_stmt_id = id;
    t->prepare_ok = true;
    t->prepared_columns = columns;
    t->prepared_params = params;
    if (params > 0) {
        t->remaining = params;
        set_state(t, RESPONSE_S_PARAMS);
        return RESPONSE_MORE;
    }
    if (columns > 0) {
        t->remaining = columns;
        set_state(t, RESPONSE_S_PREP_COLS);
        return RESPONSE_MORE;
    }
    return done(t);
}

/* Counts one definition of a block; true when it was the block's last. */
static bool definition_last(struct response_tracker *t)
{
    return --t->remaining == 0;
}

/* After a prepared statement's parameter definitions (and their EOF, if any). */
static enum response_event params_done(struct response_tracker *t)
{
    if (t->prepared_columns == 0)
        return done(t);
    t->remaining = t->prepared_columns;
    set_state(t, RESPONSE_S_PREP_COLS);
    return RESPONSE_MORE;
}

/* The transition function: one packet (not an ERR) in the current state. */
static enum response_event step(struct response_tracker *t, const uint8_t *p, size_t n,
                                size_t payload_len)
{
    bool deprecate_eof = t->caps & PROTO_CAP_DEPRECATE_EOF;

    switch (t->state) {
    case RESPONSE_S_SIMPLE:
        if (n > 0 && p[0] == 0x00)
            return ok_status(t, p, n) ? done(t) : lose(t);
        if (is_terminator(p, n, payload_len))
            return terminator_status(t, p, n, payload_len) ? done(t) : lose(t);
        return lose(t);
    case RESPONSE_S_CHANGE_USER:
        /* 0xfe is an auth switch and 0x01 more auth data: a login we cannot follow. */
        if (n > 0 && p[0] == 0x00)
            return ok_status(t, p, n) ? done(t) : lose(t);
        return lose(t);
    case RESPONSE_S_STRING:
        return done(t);
    case RESPONSE_S_RESULT:
        if (n == 0)
            return lose(t);
        if (p[0] == 0x00)
            return statement_ok(t, p, n);
        if (p[0] == 0xfb) {
            set_state(t, RESPONSE_S_INFILE);
            return RESPONSE_LOCAL_INFILE;
        }
        if (p[0] == 0xfe)
            return lose(t); /* neither a count nor an OK */
        return column_count(t, p, n);
    case RESPONSE_S_INFILE:
        if (n > 0 && p[0] == 0x00)
            return statement_ok(t, p, n);
        return lose(t);
    case RESPONSE_S_COLUMNS:
        if (n == 0 || is_terminator(p, n, payload_len))
            return lose(t);
        return definition_last(t) ? columns_done(t) : RESPONSE_MORE;
    case RESPONSE_S_COLUMNS_EOF:
        if (!block_eof(t, p, n, payload_len))
            return lose(t);
        /* An execute that opened a cursor ends here; COM_STMT_FETCH reads the rows. */
        if (t->cmd == PROTO_COM_STMT_EXECUTE && (t->status & PROTO_STATUS_CURSOR_EXISTS))
            return done(t);
        set_state(t, RESPONSE_S_ROWS);
        return RESPONSE_MORE;
    case RESPONSE_S_ROWS:
        if (n == 0)
            return lose(t);
        if (!is_terminator(p, n, payload_len))
            return RESPONSE_MORE;
        return terminator_status(t, p, n, payload_len) ? rows_end(t) : lose(t);
    case RESPONSE_S_PREPARE:
        if (n > 0 && p[0] == 0x00)
            return prepare_ok(t, p, n);
        return lose(t);
    case RESPONSE_S_PARAMS:
        if (n == 0 || is_terminator(p, n, payload_len))
            return lose(t);
        if (!definition_last(t))
            return RESPONSE_MORE;
        if (deprecate_eof)
            return params_done(t);
        set_state(t, RESPONSE_S_PARAMS_EOF);
        return RESPONSE_MORE;
    case RESPONSE_S_PARAMS_EOF:
        return block_eof(t, p, n, payload_len) ? params_done(t) : lose(t);
    case RESPONSE_S_PREP_COLS:
        if (n == 0 || is_terminator(p, n, payload_len))
            return lose(t);
        if (!definition_last(t))
            return RESPONSE_MORE;
        if (deprecate_eof)
            return done(t);
        set_state(t, RESPONSE_S_PREP_COLS_EOF);
        return RESPONSE_MORE;
    case RESPONSE_S_PREP_COLS_EOF:
        return block_eof(t, p, n, payload_len) ? done(t) : lose(t);
    case RESPONSE_S_FIELD_LIST:
        if (n == 0)
            return lose(t);
        if (!is_terminator(p, n, payload_len))
            return RESPONSE_MORE;
        return terminator_status(t, p, n, payload_len) ? done(t) : lose(t);
    case RESPONSE_S_IDLE:
    case RESPONSE_S_LOST:
        break;
    }
    return lose(t);
}

bool response_queue_full(const struct response_tracker *t)
{
    return t->queue_len >= RESPONSE_PIPELINE_MAX;
}

bool response_in_rows(const struct response_tracker *t)
{
    return t->state == RESPONSE_S_ROWS;
}

bool response_lost(const struct response_tracker *t)
{
    return t->state == RESPONSE_S_LOST;
}

bool response_next_may_be_ok(const struct response_tracker *t, uint8_t first)
{
    enum response_state st = t->state;
    if (st == RESPONSE_S_IDLE) {
        if (t->queue_len == 0)
            return false;
        st = first_state(t->queue[t->queue_head]);
    }
    switch (st) {
    case RESPONSE_S_SIMPLE:
        return first == 0x00 || first == 0xfe;
    case RESPONSE_S_CHANGE_USER:
    case RESPONSE_S_RESULT:
    case RESPONSE_S_INFILE:
        return first == 0x00;
    case RESPONSE_S_COLUMNS_EOF:
    case RESPONSE_S_ROWS:
    case RESPONSE_S_PARAMS_EOF:
    case RESPONSE_S_PREP_COLS_EOF:
    case RESPONSE_S_FIELD_LIST:
        return first == 0xfe;
    default:
        return false;
    }
}

enum response_event response_feed(struct response_tracker *t, const uint8_t *prefix,
                                  size_t prefix_len, size_t payload_len)
{
    size_t n = prefix_len < payload_len ? prefix_len : payload_len;

    t->ok_packet = false;
    t->prepare_ok = false;
    if (t->state == RESPONSE_S_LOST)
        return RESPONSE_UNTRACKABLE;
    if (t->state == RESPONSE_S_IDLE && !start_next(t))
        return lose(t); /* nothing was asked */
    if (t->state == RESPONSE_S_LOST)
        return RESPONSE_UNTRACKABLE;

    /* 0xff never begins a row or a definition, so it is an ERR in every state. */
    if (n > 0 && prefix[0] == 0xff) {
        uint16_t code;
        if (!err_code(prefix, n, &code))
            return lose(t);
        if (code == PROGRESS_ERROR_CODE && (t->caps & PROTO_CAP_MARIADB_PROGRESS))
            return RESPONSE_MORE;
        return done_error(t, code);
    }
    return step(t, prefix, n, payload_len);
}
