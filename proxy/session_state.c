/* Bookkeeping for transparent reconnects: variables, schema, prepared statements. */
#include "proxy/session_state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/proto.h"
#include "auth/session_track.h"

struct sysvar {
    struct sysvar *next;
    char *name;
    char *value;
};

struct stmt {
    struct stmt *next;
    uint32_t client_id; /* the id the client uses */
    uint32_t server_id; /* the id on the current connection */
    uint8_t *sql;
    size_t sql_len;
};

struct pending_prepare {
    struct pending_prepare *next;
    uint8_t *sql;
    size_t sql_len;
};

static void free_var(struct session_state *st, struct sysvar *v)
{
    st->held -= strlen(v->name) + (v->value ? strlen(v->value) : 0);
    free(v->name);
    free(v->value);
    free(v);
}

static void free_vars(struct session_state *st)
{
    while (st->vars) {
        struct sysvar *next = st->vars->next;
        free_var(st, st->vars);
        st->vars = next;
    }
}

static void free_stmts(struct session_state *st)
{
    while (st->stmts) {
        struct stmt *next = st->stmts->next;
        st->held -= st->stmts->sql_len;
        free(st->stmts->sql);
        free(st->stmts);
        st->stmts = next;
    }
}

static void free_prepares(struct session_state *st)
{
    while (st->prepares) {
        struct pending_prepare *next = st->prepares->next;
        st->held -= st->prepares->sql_len;
        free(st->prepares->sql);
        free(st->prepares);
        st->prepares = next;
    }
    st->prepares_last = NULL;
    st->n_prepares = 0;
}

void session_state_free(struct session_state *st)
{
    free(st->schema);
    free_vars(st);
    free_stmts(st);
    free_prepares(st);
    memset(st, 0, sizeof(*st));
}

void session_state_reset(struct session_state *st)
{
    free(st->schema);
    st->schema = NULL;
    free_vars(st);
    free_stmts(st);
    /* Prepares still awaiting their reply stay: their replies are on their way. */
    st->remapped = false;
    st->last_insert_id = 0;
    st->unrestorable = st->stopped;
}

void session_state_stop_recording(struct session_state *st, const char *why)
{
    if (!st->stopped)
        st->stopped = why;
    st->unrestorable = st->stopped;
    free_vars(st);
    free_prepares(st);
    if (!st->remapped) {
        free_stmts(st); /* client and server ids agree: nothing left to map */
        return;
    }
    /* Ids still need mapping, but no text will ever be replayed. */
    for (struct stmt *s = st->stmts; s; s = s->next) {
        st->held -= s->sql_len;
        free(s->sql);
        s->sql = NULL;
        s->sql_len = 0;
    }
}

/* Makes room for n more bytes, or stops recording when the session would pass its cap. */
static bool may_hold(struct session_state *st, size_t n)
{
    if (st->stopped)
        return false;
    if (n <= SESSION_STATE_MAX_BYTES && st->held <= SESSION_STATE_MAX_BYTES - n)
        return true;
    session_state_stop_recording(st, "the session's prepared statements and settings exceed "
                                     "the 1 MiB credproxy keeps to replay them");
    return false;
}

/*
 * Variables whose value may be NULL. MariaDB's tracker reports a NULL as an
 * empty string, and each of these refuses '' (MariaDB 10.11, every session
 * variable tried with SET SESSION x = NULL and = ''): so an empty value of
 * one of them is a NULL. Connector/J sends SET character_set_results = NULL.
 */
static const char *const nullable_vars[] = {
    "character_set_results",  "default_tmp_storage_engine",
    "enforce_storage_engine", "innodb_ft_user_stopword_table",
    "innodb_tmpdir",
};

static bool nullable(const uint8_t *name, size_t nlen)
{
    for (size_t i = 0; i < sizeof(nullable_vars) / sizeof(nullable_vars[0]); i++)
        if (strlen(nullable_vars[i]) == nlen && memcmp(nullable_vars[i], name, nlen) == 0)
            return true;
    return false;
}

static void set_var(struct session_state *st, const uint8_t *name, size_t nlen,
                    const uint8_t *value, size_t vlen)
{
    /* credproxy's own tracking settings are put back by the pool, not replayed. */
    if (nlen >= 14 && memcmp(name, "session_track_", 14) == 0)
        return;
    /* Replay follows the order of change: an updated variable moves to the end. */
    struct sysvar **pp = &st->vars;
    while (*pp) {
        if (strlen((*pp)->name) == nlen && memcmp((*pp)->name, name, nlen) == 0) {
            struct sysvar *old = *pp;
            *pp = old->next;
            free_var(st, old);
            continue;
        }
        pp = &(*pp)->next;
    }
    if (!may_hold(st, nlen + vlen))
        return;
    bool is_null = vlen == 0 && nullable(name, nlen);
    struct sysvar *v = calloc(1, sizeof(*v));
    if (!v || !(v->name = strndup((const char *)name, nlen)) ||
        (!is_null && !(v->value = strndup((const char *)value, vlen)))) {
        if (v) {
            free(v->name);
            free(v);
        }
        session_state_stop_recording(st, "out of memory while tracking session state");
        return;
    }
    st->held += nlen + vlen;
    *pp = v;
}

static void drop_var(struct session_state *st, const char *name)
{
    for (struct sysvar **pp = &st->vars; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            struct sysvar *old = *pp;
            *pp = old->next;
            free_var(st, old);
            return;
        }
    }
}

static bool named(const struct session_change *ch, const char *name)
{
    return ch->a_len == strlen(name) && memcmp(ch->a, name, ch->a_len) == 0;
}

void session_state_on_changes(struct session_state *st, const uint8_t *state, size_t len,
                              const char *set_names_collation)
{
    struct wire_reader r;
    wire_reader_init(&r, state, len);
    struct session_change ch;
    bool explained = false, other = false, charset = false, collation = false;
    while (session_change_next(&r, &ch)) {
        switch (ch.type) {
        case SESSION_TRACK_SYSVARS:
            set_var(st, ch.a, ch.a_len, ch.b, ch.b_len);
            explained = true;
            charset |= named(&ch, "character_set_connection");
            collation |= named(&ch, "collation_connection");
            break;
        case SESSION_TRACK_SCHEMA:
            free(st->schema);
            st->schema = strndup((const char *)ch.a, ch.a_len);
            explained = true;
            break;
        case SESSION_TRACK_STATE:
            other = ch.a_len == 1 && ch.a[0] == '1';
            break;
        default:
            break;
        }
    }
    /*
     * Setting character_set_connection resets the collation, and MariaDB does
     * not report the one SET NAMES ... COLLATE picks: take it from the text.
     */
    if (charset && !collation) {
        if (set_names_collation && *set_names_collation) {
            const char *name = "collation_connection";
            set_var(st, (const uint8_t *)name, strlen(name), (const uint8_t *)set_names_collation,
                    strlen(set_names_collation));
        } else {
            drop_var(st, "collation_connection");
        }
    }
    /*
     * "Something changed" with no variable or schema to show for it is state
     * the server does not describe: user variables, temporary tables, SQL
     * PREPARE. credproxy cannot rebuild that, so the session is pinned.
     */
    if (other && !explained && !st->unrestorable)
        st->unrestorable = "the session holds state credproxy cannot rebuild (user variables, "
                           "temporary tables or SQL prepared statements)";
    if (r.failed && !st->unrestorable)
        st->unrestorable = "the server sent a session-state block credproxy could not read";
}

void session_state_prepare_sent(struct session_state *st, const uint8_t *sql, size_t len)
{
    if (st->stopped)
        return;
    if (st->n_prepares >= SESSION_STATE_MAX_PENDING) {
        session_state_stop_recording(st, "the client pipelined more prepared statements than "
                                         "credproxy follows for a replay");
        return;
    }
    if (!may_hold(st, len))
        return;
    struct pending_prepare *p = calloc(1, sizeof(*p));
    if (!p || !(p->sql = malloc(len ? len : 1))) {
        free(p);
        session_state_stop_recording(st, "out of memory while tracking prepared statements");
        return;
    }
    memcpy(p->sql, sql, len);
    p->sql_len = len;
    st->held += len;
    if (st->prepares_last)
        st->prepares_last->next = p;
    else
        st->prepares = p;
    st->prepares_last = p;
    st->n_prepares++;
}

static bool client_id_taken(const struct session_state *st, uint32_t id)
{
    for (const struct stmt *s = st->stmts; s; s = s->next)
        if (s->client_id == id)
            return true;
    return false;
}

/* Records an open statement (sql may be NULL once recording stopped); false without memory. */
static bool add_stmt(struct session_state *st, uint32_t client_id, uint32_t server_id, uint8_t *sql,
                     size_t sql_len)
{
    struct stmt *s = calloc(1, sizeof(*s));
    if (!s)
        return false;
    s->client_id = client_id;
    s->server_id = server_id;
    s->sql = sql;
    s->sql_len = sql_len;
    s->next = st->stmts;
    st->stmts = s;
    if (client_id > st->max_client_id)
        st->max_client_id = client_id;
    return true;
}

uint32_t session_state_prepare_done(struct session_state *st, bool ok, uint32_t server_id)
{
    struct pending_prepare *p = st->prepares;
    uint32_t client_id = server_id;
    if (!p) {
        /* After a stop only the ids matter, and only when they were remapped. */
        if (ok && st->stopped && st->remapped) {
            if (client_id_taken(st, server_id))
                client_id = st->max_client_id + 1;
            if (!add_stmt(st, client_id, server_id, NULL, 0))
                return server_id; /* out of memory: an unknown id maps to itself */
        }
        return client_id;
    }
    st->prepares = p->next;
    if (!st->prepares)
        st->prepares_last = NULL;
    st->n_prepares--;
    if (ok) {
        if (st->remapped && client_id_taken(st, server_id))
            client_id = st->max_client_id + 1;
        if (add_stmt(st, client_id, server_id, p->sql, p->sql_len)) {
            p->sql = NULL; /* the statement holds it now, and its bytes */
        } else {
            st->held -= p->sql_len;
            free(p->sql);
            free(p);
            session_state_stop_recording(st, "out of memory while tracking prepared statements");
            return client_id;
        }
    } else {
        st->held -= p->sql_len;
    }
    free(p->sql);
    free(p);
    return client_id;
}

void session_state_stmt_closed(struct session_state *st, uint32_t client_id)
{
    for (struct stmt **pp = &st->stmts; *pp; pp = &(*pp)->next) {
        if ((*pp)->client_id == client_id) {
            struct stmt *s = *pp;
            *pp = s->next;
            st->held -= s->sql_len;
            free(s->sql);
            free(s);
            return;
        }
    }
}

uint32_t session_state_server_id(const struct session_state *st, uint32_t client_id)
{
    for (const struct stmt *s = st->stmts; s; s = s->next)
        if (s->client_id == client_id)
            return s->server_id;
    return client_id;
}

uint64_t session_state_wait_timeout_ms(const struct session_state *st)
{
    for (const struct sysvar *v = st->vars; v; v = v->next) {
        if (strcmp(v->name, "wait_timeout") != 0)
            continue;
        if (!v->value || v->value[0] < '0' || v->value[0] > '9')
            return 0;
        char *end;
        errno = 0;
        unsigned long long secs = strtoull(v->value, &end, 10);
        if (errno || end == v->value || *end || secs > UINT64_MAX / 1000u)
            return 0;
        return (uint64_t)secs * 1000u;
    }
    return 0;
}

/* A plain decimal number: written bare, since numeric variables refuse a quoted value. */
static bool is_number(const char *v)
{
    if (*v == '-')
        v++;
    size_t digits = strspn(v, "0123456789");
    if (digits == 0)
        return false;
    v += digits;
    if (*v == '.') {
        v++;
        digits = strspn(v, "0123456789");
        if (digits == 0)
            return false;
        v += digits;
    }
    return *v == '\0';
}

/* A value as SQL: NULL, numbers bare, anything else as a quoted string. */
static void put_value(struct wire_writer *w, const char *v)
{
    if (!v) {
        wire_put_bytes(w, "NULL", 4);
        return;
    }
    if (is_number(v)) {
        wire_put_bytes(w, v, strlen(v));
        return;
    }
    wire_put_u8(w, '\'');
    for (const char *c = v; *c; c++) {
        if (*c == '\'' || *c == '\\')
            wire_put_u8(w, '\\');
        wire_put_u8(w, (uint8_t)*c);
    }
    wire_put_u8(w, '\'');
}

void session_state_write_restore(const struct session_state *st, struct wire_writer *w,
                                 unsigned *n_replies)
{
    *n_replies = 0;
    if (st->vars) {
        wire_begin_packet(w, 0);
        wire_put_u8(w, PROTO_COM_QUERY);
        const char *sep = "SET SESSION ";
        for (const struct sysvar *v = st->vars; v; v = v->next) {
            wire_put_bytes(w, sep, strlen(sep));
            wire_put_u8(w, '`');
            wire_put_bytes(w, v->name, strlen(v->name));
            wire_put_bytes(w, "`=", 2);
            put_value(w, v->value);
            sep = ", ";
        }
        wire_end_packet(w);
        (*n_replies)++;
    }
    if (st->last_insert_id) {
        /* LAST_INSERT_ID(n) sets what LAST_INSERT_ID() returns, as the insert did. */
        char sql[48];
        int n = snprintf(sql, sizeof(sql), "DO LAST_INSERT_ID(%llu)",
                         (unsigned long long)st->last_insert_id);
        wire_begin_packet(w, 0);
        wire_put_u8(w, PROTO_COM_QUERY);
        wire_put_bytes(w, sql, (size_t)n);
        wire_end_packet(w);
        (*n_replies)++;
    }
    for (const struct stmt *s = st->stmts; s; s = s->next) {
        wire_begin_packet(w, 0);
        wire_put_u8(w, PROTO_COM_STMT_PREPARE);
        wire_put_bytes(w, s->sql, s->sql_len);
        wire_end_packet(w);
        (*n_replies)++;
    }
}

void session_state_restored(struct session_state *st, size_t i, uint32_t server_id)
{
    struct stmt *s = st->stmts;
    while (s && i--)
        s = s->next;
    if (!s)
        return;
    s->server_id = server_id;
    if (server_id != s->client_id)
        st->remapped = true;
}
