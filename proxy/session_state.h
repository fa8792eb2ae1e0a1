/* What a client session changed on its connection, so it can be rebuilt on a new one. */
#ifndef CREDPROXY_PROXY_SESSION_STATE_H
#define CREDPROXY_PROXY_SESSION_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/wire.h"

struct sysvar;
struct stmt;
struct pending_prepare;

/*
 * What one session may hold for a replay: the bytes of its prepared statement
 * texts (open and pending) and of its changed variables, and how many
 * COM_STMT_PREPAREs may await their reply. Past either the session is
 * unrestorable and stops recording.
 */
#define SESSION_STATE_MAX_BYTES   (1024 * 1024)
#define SESSION_STATE_MAX_PENDING 64

/*
 * Filled from the server's session-state tracking (schema, system
 * variables, "something else changed") and from the client's prepared
 * statement commands. All NULL/0 is the empty state.
 *
 * Once recording stops (session_state_stop_recording, or a cap is reached)
 * it stays stopped for the session's life, resets included: no variable or
 * statement text is kept any more, only what maps statement ids after an
 * earlier reconnect, and the session cannot be restored.
 */
struct session_state {
    char *schema;                          /* current schema if it changed since login, else NULL */
    struct sysvar *vars;                   /* system variables the client changed, oldest first */
    struct stmt *stmts;                    /* open prepared statements, newest first */
    struct pending_prepare *prepares;      /* COM_STMT_PREPARE texts awaiting their reply, oldest
                                              first */
    struct pending_prepare *prepares_last; /* the newest of them (O(1) append), or NULL */
    size_t n_prepares;                     /* how many are pending */
    size_t held;                           /* bytes of statement texts and variables held */
    const char *unrestorable;              /* why the state cannot be rebuilt, or NULL */
    const char *stopped;                   /* why recording stopped (also unrestorable), or NULL */
    uint32_t max_client_id;                /* highest statement id the client knows */
    bool remapped;           /* some statement's server id differs from the client's */
    uint64_t last_insert_id; /* what LAST_INSERT_ID() returns, from the last OK that set it */
};

void session_state_free(struct session_state *st);

/*
 * COM_RESET_CONNECTION or COM_CHANGE_USER: back to the state of a fresh
 * login. Prepares still awaiting their reply are kept, and so is a stop.
 */
void session_state_reset(struct session_state *st);

/*
 * Stops recording for good and marks the session unrestorable with why (a
 * static string). For when the reply stream is no longer followed (the
 * response tracker lost track), so prepare replies will never be matched:
 * what was recorded is freed, and later prepare_sent, variables and
 * statement texts record nothing. Statement id mapping from an earlier
 * reconnect keeps working.
 */
void session_state_stop_recording(struct session_state *st, const char *why);

/*
 * The session-state block of an OK packet (struct ok_packet's state).
 * set_names_collation is the COLLATE of a SET NAMES this OK answers ("" for
 * none), or NULL when the statement was something else.
 */
void session_state_on_changes(struct session_state *st, const uint8_t *state, size_t len,
                              const char *set_names_collation);

/*
 * The client sent COM_STMT_PREPARE with this SQL. Every call must be matched
 * by one session_state_prepare_done when its reply completes, or followed by
 * session_state_stop_recording when the reply will never be seen; past
 * SESSION_STATE_MAX_PENDING unmatched calls recording stops by itself.
 */
void session_state_prepare_sent(struct session_state *st, const uint8_t *sql, size_t len);

/*
 * The reply to the oldest pending prepare completed: server_id on success,
 * or ok false. Returns the id the client will see (differs from server_id
 * only after a reconnect, when that id is taken). Harmless with nothing
 * pending (after a stop).
 */
uint32_t session_state_prepare_done(struct session_state *st, bool ok, uint32_t server_id);

/* The client closed a statement (COM_STMT_CLOSE). */
void session_state_stmt_closed(struct session_state *st, uint32_t client_id);

/*
 * The session's wait_timeout in milliseconds when the client set it (SET
 * wait_timeout, as the server reported it), else 0.
 */
uint64_t session_state_wait_timeout_ms(const struct session_state *st);

/* The server's id for a client's statement id (itself when not remapped or unknown). */
uint32_t session_state_server_id(const struct session_state *st, uint32_t client_id);

/*
 * Appends the commands that rebuild the state on a fresh connection: one
 * SET SESSION for the changed variables, then a COM_STMT_PREPARE per open
 * statement. *n_replies is how many replies they produce. Only meaningful
 * while st->unrestorable is NULL.
 */
void session_state_write_restore(const struct session_state *st, struct wire_writer *w,
                                 unsigned *n_replies);

/* The i-th restored statement (in write order) got server_id. */
void session_state_restored(struct session_state *st, size_t i, uint32_t server_id);

#endif
