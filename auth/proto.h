/* MySQL / MariaDB client-server protocol constants used by credproxy. */
#ifndef CREDPROXY_AUTH_PROTO_H
#define CREDPROXY_AUTH_PROTO_H

#include <stdint.h>

#define PROTO_HEADER_LEN   4
#define PROTO_MAX_PAYLOAD  0xffffffu /* a payload this long is continued in the next packet */
#define PROTO_SCRAMBLE_LEN 20

/* Capability flags; bits 32..63 are MariaDB's extended capabilities. */
#define PROTO_CAP_LONG_PASSWORD        (1ull << 0) /* CLIENT_MYSQL; clear on MariaDB servers */
#define PROTO_CAP_FOUND_ROWS           (1ull << 1)
#define PROTO_CAP_LONG_FLAG            (1ull << 2)
#define PROTO_CAP_CONNECT_WITH_DB      (1ull << 3)
#define PROTO_CAP_NO_SCHEMA            (1ull << 4)
#define PROTO_CAP_COMPRESS             (1ull << 5)
#define PROTO_CAP_ODBC                 (1ull << 6)
#define PROTO_CAP_LOCAL_FILES          (1ull << 7)
#define PROTO_CAP_IGNORE_SPACE         (1ull << 8)
#define PROTO_CAP_PROTOCOL_41          (1ull << 9)
#define PROTO_CAP_INTERACTIVE          (1ull << 10)
#define PROTO_CAP_SSL                  (1ull << 11)
#define PROTO_CAP_IGNORE_SIGPIPE       (1ull << 12)
#define PROTO_CAP_TRANSACTIONS         (1ull << 13)
#define PROTO_CAP_RESERVED             (1ull << 14)
#define PROTO_CAP_SECURE_CONNECTION    (1ull << 15)
#define PROTO_CAP_MULTI_STATEMENTS     (1ull << 16)
#define PROTO_CAP_MULTI_RESULTS        (1ull << 17)
#define PROTO_CAP_PS_MULTI_RESULTS     (1ull << 18)
#define PROTO_CAP_PLUGIN_AUTH          (1ull << 19)
#define PROTO_CAP_CONNECT_ATTRS        (1ull << 20)
#define PROTO_CAP_PLUGIN_AUTH_LENENC   (1ull << 21)
#define PROTO_CAP_EXPIRED_PASSWORDS    (1ull << 22)
#define PROTO_CAP_SESSION_TRACK        (1ull << 23)
#define PROTO_CAP_DEPRECATE_EOF        (1ull << 24)
#define PROTO_CAP_OPTIONAL_METADATA    (1ull << 25)
#define PROTO_CAP_ZSTD                 (1ull << 26)
#define PROTO_CAP_QUERY_ATTRIBUTES     (1ull << 27)
#define PROTO_CAP_PROGRESS_OBSOLETE    (1ull << 29)
#define PROTO_CAP_SSL_VERIFY_SERVER    (1ull << 30)
#define PROTO_CAP_REMEMBER_OPTIONS     (1ull << 31)
#define PROTO_CAP_MARIADB_PROGRESS     (1ull << 32)
#define PROTO_CAP_MARIADB_STMT_BULK    (1ull << 34)
#define PROTO_CAP_MARIADB_EXT_METADATA (1ull << 35)
#define PROTO_CAP_MARIADB_CACHE_META   (1ull << 36)

/* Server status flags (OK / EOF packets). */
#define PROTO_STATUS_IN_TRANS          0x0001
#define PROTO_STATUS_AUTOCOMMIT        0x0002
#define PROTO_STATUS_MORE_RESULTS      0x0008
#define PROTO_STATUS_CURSOR_EXISTS     0x0040
#define PROTO_STATUS_LAST_ROW_SENT     0x0080
#define PROTO_STATUS_IN_TRANS_READONLY 0x2000
#define PROTO_STATUS_STATE_CHANGED     0x4000

/* Command bytes. */
enum proto_command {
    PROTO_COM_SLEEP = 0x00,
    PROTO_COM_QUIT = 0x01,
    PROTO_COM_INIT_DB = 0x02,
    PROTO_COM_QUERY = 0x03,
    PROTO_COM_FIELD_LIST = 0x04,
    PROTO_COM_STATISTICS = 0x09,
    PROTO_COM_PROCESS_INFO = 0x0a,
    PROTO_COM_PROCESS_KILL = 0x0c,
    PROTO_COM_DEBUG = 0x0d,
    PROTO_COM_PING = 0x0e,
    PROTO_COM_CHANGE_USER = 0x11,
    PROTO_COM_BINLOG_DUMP = 0x12,
    PROTO_COM_STMT_PREPARE = 0x16,
    PROTO_COM_STMT_EXECUTE = 0x17,
    PROTO_COM_STMT_SEND_LONG_DATA = 0x18,
    PROTO_COM_STMT_CLOSE = 0x19,
    PROTO_COM_STMT_RESET = 0x1a,
    PROTO_COM_SET_OPTION = 0x1b,
    PROTO_COM_STMT_FETCH = 0x1c,
    PROTO_COM_RESET_CONNECTION = 0x1f,
    PROTO_COM_STMT_BULK_EXECUTE = 0xfa,
};

/* Error codes credproxy itself sends. */
#define PROTO_ER_ACCESS_DENIED             1045
#define PROTO_ER_HANDSHAKE                 1043
#define PROTO_ER_NET_PACKET_TOO_LARGE      1153
#define PROTO_ER_UNKNOWN_COM               1047
#define PROTO_ER_CONN_HOST_ERROR           2003 /* CR_CONN_HOST_ERROR: cannot reach the server */
#define PROTO_ER_SERVER_LOST               2013
#define PROTO_ER_OPTION_PREVENTS_STATEMENT 1290 /* e.g. "running with the --read-only option" */
/*
 * What the client gets instead of client-range codes (2000-2999), which
 * libmariadb turns into "2027 malformed packet" when they arrive in an ERR:
 * ER_CONNECT_TO_FOREIGN_DATA_SOURCE for "cannot reach / log in to the
 * database", ER_ABORTING_CONNECTION for "lost the connection".
 */
#define PROTO_ER_CANNOT_CONNECT 1429
#define PROTO_ER_ABORTING       1152

#endif
