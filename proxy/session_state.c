/* Bookkeeping for transparent reconnects: variables, schema, prepared statements. */
#include "proxy/session_state.h"

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

static void free_vars(struct sysvar *v)
{
    while (v) {
        struct sysvar *next = v->next;
        free(v->name);
        free(v->value);
        free(v);
        v = next;
    }
}

static void free_stmts(struct stmt *s)
{
    while (s) {
        struct stmt *next = s->next;
        free(s->sql);
        free(s);
        s = next;
    }
}

void session_state_free(struct session_state *st)
{
    free(st->schema);
    free_vars(st->vars);
    free_stmts(st->stmts);
    while (st->prepares) {
        struct pending_prepare *next = st->prepares->next;
        free(st->prepares->sql);
        free(st->prepares);
        st->prepares = next;
    }
    memset(st, 0, sizeof(*st));
}

void session_state_reset(struct session_state *st)
{
    struct pending_prepare *keep = st->prepares; /* replies still on their way */
    uint32_t max_id = st->max_client_id;
    st->prepares = NULL;
    session_state_free(st);
    st->prepares = keep;
    st->max_client_id = max_id;
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
            free(old->name);
            free(old->value);
            free(old);
            continue;
        }
        pp = &(*pp)->next;
    }
    struct sysvar *v = calloc(1, sizeof(*v));
    if (!v || !(v->name = strndup((const char *)name, nlen)) ||
        !(v->value = strndup((const char *)value, vlen))) {
        if (v) {
            free(v->name);
            free(v);
        }
        st->unrestorable = "out of memory while tracking session state";
        return;
    }
    *pp = v;
}

static void drop_var(struct session_state *st, const char *name)
{
    for (struct sysvar **pp = &st->vars; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            struct sysvar *old = *pp;
            *pp = old->next;
            free(old->name);
            free(old->value);
            free(old);
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
    struct pending_prepare *p = calloc(1, sizeof(*p));
    if (!p || !(p->sql = malloc(len ? len : 1))) {
        free(p);
        st->unrestorable = "out of memory while tracking prepared statements";
        return;
    }
    memcpy(p->sql, sql, len);
    p->sql_len = len;
    struct pending_prepare **pp = &st->prepares;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
}

static bool client_id_taken(const struct session_state *st, uint32_t id)
{
    for (const struct stmt *s = st->stmts; s; s = s->next)
        if (s->client_id == id)
            return true;
    return false;
}

uint32_t session_state_prepare_done(struct session_state *st, bool ok, uint32_t server_id)
{
    struct pending_prepare *p = st->prepares;
    if (!p)
        return server_id;
    st->prepares = p->next;
    uint32_t client_id = server_id;
    if (ok) {
        struct stmt *s = calloc(1, sizeof(*s));
        if (!s) {
            st->unrestorable = "out of memory while tracking prepared statements";
        } else {
            if (st->remapped && client_id_taken(st, server_id))
                client_id = st->max_client_id + 1;
            s->client_id = client_id;
            s->server_id = server_id;
            s->sql = p->sql;
            s->sql_len = p->sql_len;
            p->sql = NULL;
            s->next = st->stmts;
            st->stmts = s;
            if (client_id > st->max_client_id)
                st->max_client_id = client_id;
        }
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

/* A value as SQL: numbers bare, anything else as a quoted string. */
static void put_value(struct wire_writer *w, const char *v)
{
    size_t n = strlen(v);
    bool numeric = n > 0 && strspn(v, "0123456789.-") == n;
    if (numeric) {
        wire_put_bytes(w, v, n);
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
