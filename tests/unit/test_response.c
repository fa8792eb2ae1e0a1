/* Reply tracker: scripted server replies, checking the event after every packet. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/proto.h"
#include "auth/response.h"
#include "tests/check.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define MORE         RESPONSE_MORE
#define DONE         RESPONSE_DONE
#define INFILE       RESPONSE_LOCAL_INFILE
#define UNTRACK      RESPONSE_UNTRACKABLE
#define COM_REFRESH  0x07
#define COM_SHUTDOWN 0x08

#define AC       PROTO_STATUS_AUTOCOMMIT
#define MORE_RES PROTO_STATUS_MORE_RESULTS
#define CURSOR   PROTO_STATUS_CURSOR_EXISTS
#define LAST_ROW PROTO_STATUS_LAST_ROW_SENT
#define IN_TRANS PROTO_STATUS_IN_TRANS

/* Capability sets: the classic EOF protocol, and the one with OK-with-0xFE terminators. */
#define CAPS_EOF   (PROTO_CAP_PROTOCOL_41 | PROTO_CAP_MULTI_RESULTS | PROTO_CAP_PS_MULTI_RESULTS)
#define CAPS_OK    (CAPS_EOF | PROTO_CAP_DEPRECATE_EOF)
#define CAPS_MARIA (CAPS_EOF | PROTO_CAP_MARIADB_PROGRESS | PROTO_CAP_MARIADB_CACHE_META)

/* Payload bytes of the server's packets. */
#define LE16(v)                   ((v)&0xff), (((v) >> 8) & 0xff)
#define LE32(v)                   LE16((v)&0xffff), LE16(((v) >> 16) & 0xffff)
#define OK_(st)                   0x00, 0x00, 0x00, LE16(st), 0x00, 0x00 /* affected 0, id 0, warnings 0 */
#define OK_INS(st)                0x00, 0xfc, 0x10, 0x27, 0x05, LE16(st), 0x01, 0x00 /* 10000 rows, id 5 */
#define EOF_(st)                  0xfe, 0x00, 0x00, LE16(st)
#define OKFE(st)                  0xfe, 0x00, 0x00, LE16(st), 0x00, 0x00
#define OKFE_INFO(st)             OKFE(st), 0x04, 'i', 'n', 'f', 'o' /* with an info string: 12 bytes */
#define ERR_(code)                0xff, LE16(code), '#', '4', '2', '0', '0', '0', 'b', 'a', 'd'
#define PROGRESS                  0xff, 0xff, 0xff, 0x01, 0x01, 0x02, 0x10, 0x27, 0x00, 0x05, 's', 't', 'a', 'g', 'e'
#define COLDEF(c)                 0x03, 'd', 'e', 'f', 0x00, 0x01, 't', 0x01, 't', 0x01, c, 0x01, c, 0x0c, 0x3f
#define TEXT_ROW(v)               0x01, v, 0x03, 'a', 'b', 'c'
#define NULL_ROW                  0xfb, 0xfb
#define BIN_ROW                   0x00, 0x00, 0x2a, 0x00, 0x00, 0x00
#define PREP_OK(id, cols, params) 0x00, LE32(id), LE16(cols), LE16(params), 0x00, 0x00, 0x00

enum step_kind { STEP_END, STEP_CMD, STEP_PKT };

/* One client command (and whether begin must expect a reply) or one server packet. */
struct step {
    enum step_kind kind;
    uint8_t cmd;
    bool reply;
    const uint8_t *bytes;
    size_t len;
    bool long_payload; /* the payload is payload_len bytes, of which bytes is the start */
    size_t payload_len;
    enum response_event expect;
};

#define BYTES(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})
#define CMD(c)                                                                                     \
    {                                                                                              \
        .kind = STEP_CMD, .cmd = (c), .reply = true                                                \
    }
#define NOREPLY(c)                                                                                 \
    {                                                                                              \
        .kind = STEP_CMD, .cmd = (c), .reply = false                                               \
    }
#define PKT(ev, ...)                                                                               \
    {                                                                                              \
        .kind = STEP_PKT, .expect = (ev), .bytes = BYTES(__VA_ARGS__)                              \
    }
/* A packet longer than the prefix shown: payload_len bytes, of which only these are fed. */
#define LONG(ev, plen, ...)                                                                        \
    {                                                                                              \
        .kind = STEP_PKT, .expect = (ev), .long_payload = true, .payload_len = (plen),             \
        .bytes = BYTES(__VA_ARGS__)                                                                \
    }
#define END                                                                                        \
    {                                                                                              \
        .kind = STEP_END                                                                           \
    }

struct response_case {
    const char *name;
    uint64_t caps;
    const struct step *steps; /* ends with END */
    bool lost;                /* ends untrackable instead of idle */
    bool check_status;        /* then status must equal: */
    uint16_t status;
    bool errored; /* the last reply ended with ERR error_code */
    uint16_t error_code;
    bool prepared; /* the last reply was a PREPARE OK with: */
    uint32_t stmt_id;
    uint16_t params, columns;
};

#define STEPS(...)                                                                                 \
    (const struct step[])                                                                          \
    {                                                                                              \
        __VA_ARGS__, END                                                                           \
    }

static const struct response_case cases[] = {
    {.name = "select 2 columns 3 rows, EOF protocol",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x02), PKT(MORE, COLDEF('a')),
                    PKT(MORE, COLDEF('b')), PKT(MORE, EOF_(AC)), PKT(MORE, TEXT_ROW('1')),
                    PKT(MORE, NULL_ROW), PKT(MORE, TEXT_ROW('3')), PKT(DONE, EOF_(AC | IN_TRANS))),
     .check_status = true,
     .status = AC | IN_TRANS},
    {.name = "select 2 columns 3 rows, DEPRECATE_EOF",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x02), PKT(MORE, COLDEF('a')),
                    PKT(MORE, COLDEF('b')), PKT(MORE, TEXT_ROW('1')), PKT(MORE, NULL_ROW),
                    PKT(MORE, TEXT_ROW('3')), PKT(DONE, OKFE(AC | IN_TRANS))),
     .check_status = true,
     .status = AC | IN_TRANS},
    {.name = "an OK with a long info string and big affected rows",
     .caps = CAPS_EOF,
     .steps =
         STEPS(CMD(PROTO_COM_QUERY), LONG(DONE, 120, OK_INS(AC | IN_TRANS), 0x30, 'R', 'e', 'c')),
     .check_status = true,
     .status = AC | IN_TRANS},
    {.name = "multi-statement: result set, OK, result set",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(MORE, EOF_(AC)), PKT(MORE, TEXT_ROW('1')), PKT(MORE, EOF_(AC | MORE_RES)),
                    PKT(MORE, OK_(AC | MORE_RES)), PKT(MORE, 0x01), PKT(MORE, COLDEF('b')),
                    PKT(MORE, EOF_(AC)), PKT(MORE, TEXT_ROW('2')), PKT(DONE, EOF_(AC))),
     .check_status = true,
     .status = AC},
    {.name = "multi-statement, DEPRECATE_EOF",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(MORE, TEXT_ROW('1')), PKT(MORE, OKFE(AC | MORE_RES)),
                    PKT(MORE, OK_(AC | MORE_RES)), PKT(MORE, 0x01), PKT(MORE, COLDEF('b')),
                    PKT(MORE, TEXT_ROW('2')), PKT(DONE, OKFE(AC))),
     .check_status = true,
     .status = AC},
    {.name = "CALL: result set with MORE_RESULTS, then the final OK",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(MORE, TEXT_ROW('1')), PKT(MORE, OKFE(AC | MORE_RES)), PKT(DONE, OK_(AC))),
     .check_status = true,
     .status = AC},
    {.name = "ERR in the middle of the rows",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(MORE, EOF_(AC)), PKT(MORE, TEXT_ROW('1')), PKT(DONE, ERR_(1317))),
     .errored = true,
     .error_code = 1317},
    {.name = "ERR ends a multi-statement reply",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, OK_(AC | MORE_RES)), PKT(DONE, ERR_(1064))),
     .errored = true,
     .error_code = 1064,
     .check_status = true,
     .status = AC | MORE_RES},
    {.name = "LOAD DATA LOCAL",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(INFILE, 0xfb, 'd', '.', 'c', 's', 'v'),
                    PKT(DONE, OK_INS(AC))),
     .check_status = true,
     .status = AC},
    {.name = "LOAD DATA LOCAL inside a multi-statement",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(INFILE, 0xfb, 'd', '.', 'c', 's', 'v'),
                    PKT(MORE, OK_(AC | MORE_RES)), PKT(INFILE, 0xfb, 'e', '.', 'c', 's', 'v'),
                    PKT(DONE, ERR_(1148))),
     .errored = true,
     .error_code = 1148},
    {.name = "PREPARE 2 params 1 column, EOF protocol",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_STMT_PREPARE), PKT(MORE, PREP_OK(0x01020304, 1, 2)),
                    PKT(MORE, COLDEF('?')), PKT(MORE, COLDEF('?')), PKT(MORE, EOF_(AC)),
                    PKT(MORE, COLDEF('a')), PKT(DONE, EOF_(AC))),
     .prepared = true,
     .stmt_id = 0x01020304,
     .params = 2,
     .columns = 1},
    {.name = "PREPARE 2 params 1 column, DEPRECATE_EOF",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_STMT_PREPARE), PKT(MORE, PREP_OK(9, 1, 2)),
                    PKT(MORE, COLDEF('?')), PKT(MORE, COLDEF('?')), PKT(DONE, COLDEF('a'))),
     .prepared = true,
     .stmt_id = 9,
     .params = 2,
     .columns = 1},
    {.name = "PREPARE 0 params 1 column, EOF protocol",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_STMT_PREPARE), PKT(MORE, PREP_OK(3, 1, 0)),
                    PKT(MORE, COLDEF('a')), PKT(DONE, EOF_(AC))),
     .prepared = true,
     .stmt_id = 3,
     .params = 0,
     .columns = 1},
    {.name = "PREPARE 2 params 0 columns, EOF protocol",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_STMT_PREPARE), PKT(MORE, PREP_OK(4, 0, 2)),
                    PKT(MORE, COLDEF('?')), PKT(MORE, COLDEF('?')), PKT(DONE, EOF_(AC))),
     .prepared = true,
     .stmt_id = 4,
     .params = 2,
     .columns = 0},
    {.name = "PREPARE of an INSERT: no params, no columns",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_STMT_PREPARE), PKT(DONE, PREP_OK(5, 0, 0))),
     .prepared = true,
     .stmt_id = 5},
    {.name = "PREPARE error",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_STMT_PREPARE), PKT(DONE, ERR_(1146))),
     .errored = true,
     .error_code = 1146},
    {.name = "EXECUTE with binary rows (0x00 header is a row, not an OK)",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_STMT_EXECUTE), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(MORE, BIN_ROW), PKT(MORE, BIN_ROW), PKT(DONE, OKFE(AC))),
     .check_status = true,
     .status = AC},
    {.name = "EXECUTE opens a cursor, then FETCH, EOF protocol",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_STMT_EXECUTE), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(DONE, EOF_(AC | CURSOR)), CMD(PROTO_COM_STMT_FETCH), PKT(MORE, BIN_ROW),
                    PKT(MORE, BIN_ROW), PKT(DONE, EOF_(AC | CURSOR)), CMD(PROTO_COM_STMT_FETCH),
                    PKT(MORE, BIN_ROW), PKT(DONE, EOF_(AC | CURSOR | LAST_ROW))),
     .check_status = true,
     .status = AC | CURSOR | LAST_ROW},
    {.name = "EXECUTE opens a cursor, then FETCH, DEPRECATE_EOF",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_STMT_EXECUTE), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(DONE, OKFE(AC | CURSOR)), CMD(PROTO_COM_STMT_FETCH), PKT(MORE, BIN_ROW),
                    PKT(DONE, OKFE(AC | CURSOR | LAST_ROW))),
     .check_status = true,
     .status = AC | CURSOR | LAST_ROW},
    {.name = "CURSOR_EXISTS after a text query's metadata does not end it",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(MORE, EOF_(AC | CURSOR)), PKT(DONE, EOF_(AC)))},
    {.name = "FETCH ends at its terminator whatever the flags",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_STMT_FETCH), PKT(MORE, BIN_ROW),
                    PKT(DONE, EOF_(AC | CURSOR | MORE_RES)))},
    {.name = "an OK-with-0xFE terminator longer than an EOF, with its status",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(MORE, TEXT_ROW('1')), PKT(MORE, OKFE_INFO(AC | MORE_RES)), PKT(MORE, 0x01),
                    PKT(MORE, COLDEF('a')),
                    PKT(DONE, 0xfe, 0x01, 0xfc, 0x10, 0x27, LE16(AC | IN_TRANS), 0x00, 0x00)),
     .check_status = true,
     .status = AC | IN_TRANS},
    {.name = "FETCH error",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_STMT_FETCH), PKT(DONE, ERR_(1243))),
     .errored = true,
     .error_code = 1243},
    {.name = "EXECUTE, cached metadata skipped, EOF protocol",
     .caps = CAPS_MARIA,
     .steps = STEPS(CMD(PROTO_COM_STMT_EXECUTE), PKT(MORE, 0x02, 0x00), PKT(MORE, EOF_(AC)),
                    PKT(MORE, BIN_ROW), PKT(DONE, EOF_(AC)))},
    {.name = "EXECUTE, cached metadata skipped, DEPRECATE_EOF",
     .caps = CAPS_MARIA | PROTO_CAP_DEPRECATE_EOF,
     .steps = STEPS(CMD(PROTO_COM_STMT_EXECUTE), PKT(MORE, 0x02, 0x00), PKT(MORE, BIN_ROW),
                    PKT(DONE, OKFE(AC)))},
    {.name = "EXECUTE, cached metadata sent",
     .caps = CAPS_MARIA | PROTO_CAP_DEPRECATE_EOF,
     .steps = STEPS(CMD(PROTO_COM_STMT_EXECUTE), PKT(MORE, 0x02, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(MORE, COLDEF('b')), PKT(MORE, BIN_ROW), PKT(DONE, OKFE(AC)))},
    {.name = "without CACHE_META a byte after the count is not a metadata flag",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_STMT_EXECUTE), PKT(MORE, 0x01, 0x00), PKT(MORE, COLDEF('a')),
                    PKT(MORE, BIN_ROW), PKT(DONE, OKFE(AC)))},
    {.name = "BULK_EXECUTE",
     .caps = CAPS_MARIA,
     .steps = STEPS(CMD(PROTO_COM_STMT_BULK_EXECUTE), PKT(DONE, OK_INS(AC))),
     .check_status = true,
     .status = AC},
    {.name = "FIELD_LIST",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_FIELD_LIST), PKT(MORE, COLDEF('a')), PKT(MORE, COLDEF('b')),
                    PKT(DONE, EOF_(AC))),
     .check_status = true,
     .status = AC},
    {.name = "FIELD_LIST, DEPRECATE_EOF",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_FIELD_LIST), PKT(MORE, COLDEF('a')), PKT(DONE, OKFE(AC)))},
    {.name = "FIELD_LIST error",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_FIELD_LIST), PKT(DONE, ERR_(1146))),
     .errored = true,
     .error_code = 1146},
    {.name = "STATISTICS",
     .caps = CAPS_EOF,
     .steps =
         STEPS(CMD(PROTO_COM_STATISTICS), PKT(DONE, 'U', 'p', 't', 'i', 'm', 'e', ':', ' ', '5'),
               CMD(PROTO_COM_STATISTICS), PKT(DONE, 0x00, 0xfe))},
    {.name = "progress reports are ignored when negotiated",
     .caps = CAPS_MARIA,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, PROGRESS), PKT(MORE, PROGRESS),
                    PKT(DONE, OK_INS(AC))),
     .check_status = true,
     .status = AC},
    {.name = "progress during LOAD DATA LOCAL",
     .caps = CAPS_MARIA,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(INFILE, 0xfb, 'f'), PKT(MORE, PROGRESS),
                    PKT(DONE, OK_(AC)))},
    {.name = "error 0xffff is an error without MARIADB_PROGRESS",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(DONE, PROGRESS)),
     .errored = true,
     .error_code = 0xffff},
    {.name = "BEGIN then COMMIT: IN_TRANS comes and goes",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(DONE, OK_(AC | IN_TRANS)), CMD(PROTO_COM_QUERY),
                    PKT(DONE, OK_(AC))),
     .check_status = true,
     .status = AC},
    {.name = "BEGIN leaves IN_TRANS",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(DONE, OK_(AC | IN_TRANS))),
     .check_status = true,
     .status = AC | IN_TRANS},
    {.name = "commands without a reply",
     .caps = CAPS_EOF,
     .steps = STEPS(NOREPLY(PROTO_COM_STMT_CLOSE), NOREPLY(PROTO_COM_STMT_SEND_LONG_DATA),
                    CMD(PROTO_COM_PING), PKT(DONE, OK_(AC)), NOREPLY(PROTO_COM_QUIT))},
    {.name = "a row starting with 0xfe in a 16 MiB packet is not a terminator",
     .caps = CAPS_EOF,
     .steps =
         STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')), PKT(MORE, EOF_(AC)),
               LONG(MORE, PROTO_MAX_PAYLOAD, 0xfe, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00),
               PKT(DONE, EOF_(AC)))},
    {.name = "the same with DEPRECATE_EOF",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    LONG(MORE, PROTO_MAX_PAYLOAD, OKFE(AC)), PKT(DONE, OKFE(AC)))},
    {.name = "pipelined commands are answered in order",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_STMT_PREPARE), CMD(PROTO_COM_STMT_EXECUTE), CMD(PROTO_COM_PING),
                    PKT(DONE, PREP_OK(7, 0, 0)), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(DONE, OKFE(AC)), PKT(DONE, OK_(AC | IN_TRANS))),
     .check_status = true,
     .status = AC | IN_TRANS},
    /* Untrackable commands and packets. */
    {.name = "BINLOG_DUMP is untrackable, and stays so",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_BINLOG_DUMP), PKT(UNTRACK, OK_(0)), CMD(PROTO_COM_PING),
                    PKT(UNTRACK, OK_(AC)), NOREPLY(PROTO_COM_STMT_CLOSE)),
     .lost = true},
    {.name = "CHANGE_USER answered by an auth switch",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_CHANGE_USER), LONG(UNTRACK, 44, 0xfe, 'm', 'y', 's', 'q', 'l',
                                                     '_', 'n', 'a', 't', 'i', 'v', 'e')),
     .lost = true},
    {.name = "CHANGE_USER answered by more auth data",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_CHANGE_USER), PKT(UNTRACK, 0x01, 0x03)),
     .lost = true},
    {.name = "a packet nobody asked for",
     .caps = CAPS_EOF,
     .steps = STEPS(PKT(UNTRACK, OK_(AC))),
     .lost = true},
    {.name = "a packet after the reply was complete",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_PING), PKT(DONE, OK_(AC)), PKT(UNTRACK, OK_(AC))),
     .lost = true},
    {.name = "a truncated OK",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_PING), PKT(UNTRACK, 0x00, 0x00, 0x00, 0x02)),
     .lost = true},
    {.name = "a truncated ERR",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(UNTRACK, 0xff, 0x01)),
     .lost = true},
    {.name = "an empty packet where a reply should start",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), LONG(UNTRACK, 0, 0x00)),
     .lost = true},
    {.name = "a long 0xfe packet among rows without DEPRECATE_EOF",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(MORE, EOF_(AC)), PKT(UNTRACK, OKFE(AC), 0x00, 0x00)),
     .lost = true},
    {.name = "a terminator among column definitions",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x02), PKT(MORE, COLDEF('a')),
                    PKT(UNTRACK, EOF_(AC))),
     .lost = true},
    {.name = "a row where the EOF after the definitions belongs",
     .caps = CAPS_EOF,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(MORE, 0x01), PKT(MORE, COLDEF('a')),
                    PKT(UNTRACK, TEXT_ROW('1'))),
     .lost = true},
    {.name = "a long 0xfe packet as a query's first reply",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(UNTRACK, OKFE_INFO(AC))),
     .lost = true},
    {.name = "a 0xfe packet as a query's first reply",
     .caps = CAPS_OK,
     .steps = STEPS(CMD(PROTO_COM_QUERY), PKT(UNTRACK, OKFE(AC))),
     .lost = true},
    {.name = "OPTIONAL_RESULTSET_METADATA is not supported",
     .caps = CAPS_OK | PROTO_CAP_OPTIONAL_METADATA,
     .steps = STEPS(CMD(PROTO_COM_PING), PKT(UNTRACK, OK_(AC))),
     .lost = true},
    {.name = "too many pipelined commands",
     .caps = CAPS_OK,
     .steps =
         STEPS(CMD(PROTO_COM_PING), CMD(PROTO_COM_PING), CMD(PROTO_COM_PING), CMD(PROTO_COM_PING),
               CMD(PROTO_COM_PING), CMD(PROTO_COM_PING), CMD(PROTO_COM_PING), CMD(PROTO_COM_PING),
               CMD(PROTO_COM_PING), CMD(PROTO_COM_PING), CMD(PROTO_COM_PING), CMD(PROTO_COM_PING),
               CMD(PROTO_COM_PING), CMD(PROTO_COM_PING), CMD(PROTO_COM_PING), CMD(PROTO_COM_PING),
               CMD(PROTO_COM_PING), PKT(UNTRACK, OK_(AC))),
     .lost = true},
};

static const char *event_name(enum response_event ev)
{
    switch (ev) {
    case RESPONSE_MORE:
        return "MORE";
    case RESPONSE_DONE:
        return "DONE";
    case RESPONSE_LOCAL_INFILE:
        return "LOCAL_INFILE";
    case RESPONSE_UNTRACKABLE:
        return "UNTRACKABLE";
    }
    return "?";
}

/* Feeds a packet as the relay would: the first RESPONSE_PREFIX_MAX bytes at most. */
static enum response_event feed(struct response_tracker *t, const uint8_t *bytes, size_t len)
{
    size_t prefix_len = len < RESPONSE_PREFIX_MAX ? len : RESPONSE_PREFIX_MAX;
    return response_feed(t, bytes, prefix_len, len);
}

/* Feeds a scripted packet. */
static enum response_event feed_step(struct response_tracker *t, const struct step *s)
{
    if (!s->long_payload)
        return feed(t, s->bytes, s->len);
    size_t prefix_len = s->len < s->payload_len ? s->len : s->payload_len;
    return response_feed(t, s->bytes, prefix_len, s->payload_len);
}

static void run_case(const struct response_case *c)
{
    struct response_tracker t;
    response_tracker_init(&t, c->caps);
    for (size_t i = 0; c->steps[i].kind != STEP_END; i++) {
        const struct step *s = &c->steps[i];
        if (s->kind == STEP_CMD) {
            bool reply = response_begin(&t, s->cmd);
            if (reply != s->reply)
                fprintf(stderr, "%s: step %zu: begin(0x%02x) = %d\n", c->name, i, s->cmd, reply);
            CHECK(reply == s->reply);
            continue;
        }
        enum response_event ev = feed_step(&t, s);
        if (ev != s->expect)
            fprintf(stderr, "%s: step %zu: %s, expected %s\n", c->name, i, event_name(ev),
                    event_name(s->expect));
        CHECK(ev == s->expect);
        /* Idle exactly when the last pending reply is done. */
        if (ev == RESPONSE_MORE || ev == RESPONSE_LOCAL_INFILE || ev == RESPONSE_UNTRACKABLE)
            CHECK(!response_idle(&t));
    }
    if (response_idle(&t) == c->lost)
        fprintf(stderr, "%s: idle %d at the end\n", c->name, response_idle(&t));
    CHECK(response_idle(&t) != c->lost);
    if (c->check_status) {
        if (t.status != c->status)
            fprintf(stderr, "%s: status 0x%04x, expected 0x%04x\n", c->name, t.status, c->status);
        CHECK(t.status == c->status);
    }
    if (c->lost)
        return;
    if (t.last_was_error != c->errored || t.last_error_code != c->error_code)
        fprintf(stderr, "%s: error %d/%u\n", c->name, t.last_was_error, t.last_error_code);
    CHECK(t.last_was_error == c->errored);
    CHECK(t.last_error_code == c->error_code);
    if (c->prepared) {
        if (t.prepared_stmt_id != c->stmt_id || t.prepared_params != c->params ||
            t.prepared_columns != c->columns)
            fprintf(stderr, "%s: prepared %u/%u/%u\n", c->name, t.prepared_stmt_id,
                    t.prepared_params, t.prepared_columns);
        CHECK(t.prepared_stmt_id == c->stmt_id);
        CHECK(t.prepared_params == c->params);
        CHECK(t.prepared_columns == c->columns);
    }
}

static void test_cases(void)
{
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        run_case(&cases[i]);
}

/* Every single-packet command: OK, ERR and the EOF of either protocol each end the reply. */
static void test_single_packet_commands(void)
{
    static const uint8_t commands[] = {
        PROTO_COM_PING,
        PROTO_COM_INIT_DB,
        PROTO_COM_SET_OPTION,
        PROTO_COM_RESET_CONNECTION,
        PROTO_COM_STMT_RESET,
        PROTO_COM_CHANGE_USER,
        PROTO_COM_PROCESS_KILL,
        PROTO_COM_DEBUG,
        COM_REFRESH,
        COM_SHUTDOWN,
    };
    static const uint8_t ok[] = {OK_(AC | IN_TRANS)};
    static const uint8_t err[] = {ERR_(1045)};
    static const uint8_t eof[] = {EOF_(AC | IN_TRANS)};
    static const uint8_t okfe[] = {OKFE(AC | IN_TRANS)};
    for (size_t i = 0; i < N_ELEMS(commands); i++) {
        bool change_user = commands[i] == PROTO_COM_CHANGE_USER;
        struct response_tracker t;

        response_tracker_init(&t, CAPS_EOF);
        CHECK(response_begin(&t, commands[i]));
        CHECK(!response_idle(&t));
        CHECK(feed(&t, ok, sizeof(ok)) == RESPONSE_DONE);
        CHECK(response_idle(&t) && !t.last_was_error && t.status == (AC | IN_TRANS));

        CHECK(response_begin(&t, commands[i]));
        CHECK(feed(&t, err, sizeof(err)) == RESPONSE_DONE);
        CHECK(response_idle(&t) && t.last_was_error && t.last_error_code == 1045);

        /* COM_SET_OPTION and COM_DEBUG answer with EOF; for COM_CHANGE_USER 0xfe is a switch. */
        response_tracker_init(&t, CAPS_EOF);
        CHECK(response_begin(&t, commands[i]));
        CHECK(feed(&t, eof, sizeof(eof)) == (change_user ? RESPONSE_UNTRACKABLE : RESPONSE_DONE));
        CHECK(change_user || t.status == (AC | IN_TRANS));

        response_tracker_init(&t, CAPS_OK);
        CHECK(response_begin(&t, commands[i]));
        CHECK(feed(&t, okfe, sizeof(okfe)) == (change_user ? RESPONSE_UNTRACKABLE : RESPONSE_DONE));
        CHECK(change_user || t.status == (AC | IN_TRANS));

        /* A row-like packet is never a single-packet reply. */
        response_tracker_init(&t, CAPS_OK);
        CHECK(response_begin(&t, commands[i]));
        CHECK(feed(&t, (const uint8_t[]){0x01, '1'}, 2) == RESPONSE_UNTRACKABLE);
    }
}

/* Every command byte: begin never crashes, and the unknown ones lose track. */
static void test_all_command_bytes(void)
{
    static const uint8_t ok[] = {OK_(AC)};
    for (unsigned cmd = 0; cmd <= 0xff; cmd++) {
        struct response_tracker t;
        response_tracker_init(&t, CAPS_OK);
        bool reply = response_begin(&t, (uint8_t)cmd);
        bool silent = cmd == PROTO_COM_QUIT || cmd == PROTO_COM_STMT_CLOSE ||
                      cmd == PROTO_COM_STMT_SEND_LONG_DATA;
        CHECK(reply == !silent);
        enum response_event ev = feed(&t, ok, sizeof(ok));
        /* A 7-byte OK is too short for COM_STMT_PREPARE's OK. */
        bool known = cmd == PROTO_COM_PING || cmd == PROTO_COM_INIT_DB ||
                     cmd == PROTO_COM_SET_OPTION || cmd == PROTO_COM_RESET_CONNECTION ||
                     cmd == PROTO_COM_STMT_RESET || cmd == PROTO_COM_CHANGE_USER ||
                     cmd == PROTO_COM_PROCESS_KILL || cmd == PROTO_COM_DEBUG ||
                     cmd == COM_REFRESH || cmd == COM_SHUTDOWN || cmd == PROTO_COM_QUERY ||
                     cmd == PROTO_COM_PROCESS_INFO || cmd == PROTO_COM_STMT_EXECUTE ||
                     cmd == PROTO_COM_STMT_BULK_EXECUTE || cmd == PROTO_COM_STATISTICS;
        /* An OK ends these; FETCH and FIELD_LIST take it for a row or definition. */
        if (known)
            CHECK(ev == RESPONSE_DONE);
        else if (cmd == PROTO_COM_STMT_FETCH || cmd == PROTO_COM_FIELD_LIST)
            CHECK(ev == RESPONSE_MORE);
        else
            CHECK(ev == RESPONSE_UNTRACKABLE);
    }
}

/*
 * Every packet shape in every state: truncated prefixes of the scripted
 * packets must never read past prefix_len (ASan) and must not end a reply
 * with a made-up status.
 */
static void test_truncated_prefixes(void)
{
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        const struct response_case *c = &cases[i];
        for (size_t cut_step = 0; c->steps[cut_step].kind != STEP_END; cut_step++) {
            const struct step *cs = &c->steps[cut_step];
            if (cs->kind != STEP_PKT)
                continue;
            for (size_t cut = 0; cut < cs->len && cut < RESPONSE_PREFIX_MAX; cut++) {
                struct response_tracker t;
                response_tracker_init(&t, c->caps);
                for (size_t j = 0; j <= cut_step; j++) {
                    const struct step *s = &c->steps[j];
                    if (s->kind == STEP_CMD) {
                        response_begin(&t, s->cmd);
                    } else if (j < cut_step) {
                        feed_step(&t, s);
                    } else {
                        /* An exact-length copy so ASan catches any read past it. */
                        uint8_t *copy = malloc(cut + 1);
                        CHECK(copy != NULL);
                        if (!copy)
                            return;
                        memcpy(copy, s->bytes, cut);
                        size_t plen = s->long_payload ? s->payload_len : s->len;
                        enum response_event ev = response_feed(&t, copy, cut, plen);
                        CHECK(ev == RESPONSE_MORE || ev == RESPONSE_DONE ||
                              ev == RESPONSE_LOCAL_INFILE || ev == RESPONSE_UNTRACKABLE);
                        free(copy);
                    }
                }
            }
        }
    }
}

int main(void)
{
    test_cases();
    test_single_packet_commands();
    test_all_command_bytes();
    test_truncated_prefixes();
    return test_summary();
}
