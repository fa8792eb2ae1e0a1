/*
 * libFuzzer target for the server's OK, ERR and EOF packets (auth/reply.c) and the rewrite of an
 * OK for clients without CLIENT_SESSION_TRACK (ok_packet_write_untracked), which must read back
 * as the same OK minus its session state.
 *
 * Input: one packet payload, as the server sent it.
 */
#include "auth/proto.h"
#include "auth/reply.h"
#include "auth/session_track.h"
#include "auth/wire.h"
#include "tests/fuzz/fuzz_common.h"

static bool same_bytes(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
    return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

static void check_untracked(const struct ok_packet *ok)
{
    struct wire_writer w;
    wire_writer_init(&w);
    ok_packet_write_untracked(&w, ok);
    FUZZ_CHECK(!w.failed);
    uint8_t *out = fuzz_copy(w.buf, w.len);
    size_t out_len = w.len;
    wire_writer_free(&w);
    if (!out)
        return;

    struct ok_packet back;
    FUZZ_CHECK(ok_packet_parse(out, out_len, &back));
    FUZZ_CHECK(back.header == ok->header);
    FUZZ_CHECK(back.affected_rows == ok->affected_rows);
    FUZZ_CHECK(back.last_insert_id == ok->last_insert_id);
    FUZZ_CHECK(back.status == (ok->status & ~PROTO_STATUS_STATE_CHANGED));
    FUZZ_CHECK(back.warnings == ok->warnings);
    FUZZ_CHECK(same_bytes(back.info, back.info_len, ok->info, ok->info_len));
    FUZZ_CHECK(back.state == NULL && back.state_len == 0);

    /* What a client without session tracking reads must agree too. */
    struct server_reply rep;
    if (ok->header == 0x00) {
        FUZZ_CHECK(server_reply_parse(out, out_len, &rep));
        FUZZ_CHECK(rep.kind == REPLY_OK);
        FUZZ_CHECK(rep.affected_rows == ok->affected_rows);
        FUZZ_CHECK(rep.last_insert_id == ok->last_insert_id);
        FUZZ_CHECK(rep.status == back.status && rep.warnings == ok->warnings);
    }
    free(out);
}

/* The OK a client with its own (narrower) tracking settings gets must read back consistently. */
static void check_filtered(const struct ok_packet *ok, bool every_variable)
{
    struct track_view v = {.schema = true};
    if (every_variable) {
        v.all_sysvars = true;
        strcpy(v.sysvars, "*");
    } else {
        strcpy(v.sysvars, "autocommit,character_set_client,time_zone");
    }
    struct wire_writer w;
    wire_writer_init(&w);
    ok_packet_write_filtered(&w, ok, &v);
    FUZZ_CHECK(!w.failed);
    struct ok_packet back;
    FUZZ_CHECK(ok_packet_parse(w.buf, w.len, &back));
    FUZZ_CHECK(back.header == ok->header && back.warnings == ok->warnings);
    FUZZ_CHECK(back.affected_rows == ok->affected_rows);
    FUZZ_CHECK(back.last_insert_id == ok->last_insert_id);
    /* The flag is set exactly when records remain, and they come from the original block. */
    FUZZ_CHECK(((back.status & PROTO_STATUS_STATE_CHANGED) != 0) == (back.state_len > 0));
    FUZZ_CHECK(back.state_len <= ok->state_len);
    if (back.state_len) {
        struct wire_reader r;
        wire_reader_init(&r, back.state, back.state_len);
        struct session_change ch;
        while (session_change_next(&r, &ch))
            FUZZ_CHECK(ch.type != SESSION_TRACK_STATE); /* the view does not track it */
    }
    wire_writer_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = fuzz_copy(data, size);
    if (!copy)
        return 0;

    struct server_reply rep;
    bool parsed = server_reply_parse(copy, size, &rep);
    if (parsed && rep.kind == REPLY_ERR) {
        fuzz_touch(rep.message, rep.message_len);
        FUZZ_CHECK(rep.sqlstate[5] == '\0');
    }

    struct ok_packet ok;
    if (ok_packet_parse(copy, size, &ok)) {
        fuzz_touch(ok.info, ok.info_len);
        fuzz_touch(ok.state, ok.state_len);
        /* Both readers see the same fixed fields of an OK. */
        if (ok.header == 0x00 && size >= 7) {
            FUZZ_CHECK(parsed && rep.kind == REPLY_OK);
            FUZZ_CHECK(rep.affected_rows == ok.affected_rows);
            FUZZ_CHECK(rep.last_insert_id == ok.last_insert_id);
            FUZZ_CHECK(rep.status == ok.status && rep.warnings == ok.warnings);
        }
        check_untracked(&ok);
        if (ok.status & PROTO_STATUS_STATE_CHANGED) {
            check_filtered(&ok, false);
            check_filtered(&ok, true);
        }
    }
    free(copy);
    return 0;
}
