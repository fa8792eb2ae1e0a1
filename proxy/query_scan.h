/* A quick look at a statement's text: does it leave state the server will not report? */
#ifndef CREDPROXY_PROXY_QUERY_SCAN_H
#define CREDPROXY_PROXY_QUERY_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/*
 * Why the statement text [p, p + n) leaves session state that no reply
 * reports and credproxy cannot rebuild on another connection, or NULL.
 * Case-insensitive, outside quotes and comments: user variables, GET_LOCK
 * and the other user-lock functions, LAST_INSERT_ID(expr), LOCK TABLES,
 * HANDLER, XA, CALL (a procedure may do any of these), temporary tables,
 * SQL-level PREPARE/EXECUTE, SQL_CALC_FOUND_ROWS/FOUND_ROWS(). When unsure
 * it names a reason: a pinned session only loses multiplexing. The scan goes
 * on past what only marks sets (it never clears them).
 */
struct query_marks {
    /*
     * It calls CONNECTION_ID(): the server gives a session one id for its life, so
     * multiplexing keeps the session on its connection, which can still be replaced
     * when lost.
     */
    bool reads_connection_id;
    /*
     * SET TRANSACTION, or SET @@tx_isolation-style assignments with no scope: the
     * next transaction's characteristics, which no reply reports; the session keeps
     * its connection, and cannot move, until that transaction is over.
     */
    bool sets_next_transaction;
};
const char *query_pin_reason(const char *p, size_t n, struct query_marks *marks);

/* True when the text names a session_track_* variable (outside quotes is not checked). */
bool query_names_session_tracking(const char *p, size_t n);

enum kill_kind {
    KILL_NONE,        /* not a KILL statement */
    KILL_THREAD,      /* KILL [HARD|SOFT] [CONNECTION|QUERY] <number>, alone */
    KILL_UNSUPPORTED, /* a KILL credproxy cannot aim (USER, QUERY ID, an expression, batched) */
};

struct kill_stmt {
    bool query;           /* KILL QUERY (else the connection) */
    const char *hardness; /* "HARD ", "SOFT " or "" */
    uint64_t id;
    const char *why; /* KILL_UNSUPPORTED: what is not supported */
};

/* Reads a KILL statement (case-insensitive; comments and a trailing ';' allowed). */
enum kill_kind query_kill_parse(const char *p, size_t n, struct kill_stmt *out);

/*
 * True when the query is SET NAMES / SET CHARACTER SET / SET CHARSET; then
 * collation holds its COLLATE name, or "" for the charset's default. MariaDB
 * does not report the collation such a statement sets, so credproxy reads it
 * from the text to restore it after a reconnect.
 */
bool query_set_names(struct evbuffer *buf, size_t start, size_t len, char *collation, size_t cap);

#endif
