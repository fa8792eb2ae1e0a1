/* A quick look at a COM_QUERY's text: does it leave state the server will not report? */
#ifndef CREDPROXY_PROXY_QUERY_SCAN_H
#define CREDPROXY_PROXY_QUERY_SCAN_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

enum query_kind {
    QUERY_READ,   /* SELECT / SHOW / EXPLAIN ... with no side effect credproxy must know of */
    QUERY_WRITE,  /* anything else: its OK reports session-state changes, if any */
    QUERY_PINNED, /* leaves state that no OK reports: user variables set by a SELECT, GET_LOCK */
};

/*
 * Classifies the query text at [start, start + len) of buf without copying
 * it. Conservative: when unsure, a SELECT is QUERY_PINNED rather than READ.
 */
enum query_kind query_scan(struct evbuffer *buf, size_t start, size_t len);

/*
 * True when the query is SET NAMES / SET CHARACTER SET / SET CHARSET; then
 * collation holds its COLLATE name, or "" for the charset's default. MariaDB
 * does not report the collation such a statement sets, so credproxy reads it
 * from the text to restore it after a reconnect.
 */
bool query_set_names(struct evbuffer *buf, size_t start, size_t len, char *collation, size_t cap);

#endif
