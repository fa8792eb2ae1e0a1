/*
 * libFuzzer target for the statement-text scanners of proxy/query_scan.c: the pin reasons
 * (what multiplexing must not move), KILL statements (which session a KILL aims at) and
 * SET NAMES. Every COM_QUERY and COM_STMT_PREPARE a client sends goes through them.
 *
 * Input: one statement text. Beyond memory safety it checks that the scanners are
 * case-insensitive as documented (the text with a-z upper-cased gives the same answers), that
 * a KILL of a thread names an id whose digits are in the text, and that a SET NAMES collation
 * is a terminated string within its buffer.
 */
#include <ctype.h>
#include <event2/buffer.h>

#include "proxy/query_scan.h"
#include "tests/fuzz/fuzz_common.h"

static void check_kill(const char *text, size_t len, enum kill_kind kind, const struct kill_stmt *k)
{
    if (kind == KILL_UNSUPPORTED)
        FUZZ_CHECK(k->why != NULL);
    if (kind != KILL_THREAD)
        return;
    FUZZ_CHECK(k->hardness != NULL);
    FUZZ_CHECK(strcmp(k->hardness, "") == 0 || strcmp(k->hardness, "HARD ") == 0 ||
               strcmp(k->hardness, "SOFT ") == 0);
    char digits[32];
    int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)k->id);
    FUZZ_CHECK(n > 0 && memmem(text, len, digits, (size_t)n) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = (char *)fuzz_copy(data, size);
    char *upper = (char *)fuzz_copy(data, size);
    if (!text || !upper) {
        free(text);
        free(upper);
        return 0;
    }
    for (size_t i = 0; i < size; i++)
        if (upper[i] >= 'a' && upper[i] <= 'z')
            upper[i] = (char)(upper[i] - 'a' + 'A');

    struct query_marks m = {0}, mu = {0};
    const char *why = query_pin_reason(text, size, &m);
    const char *why_upper = query_pin_reason(upper, size, &mu);
    FUZZ_CHECK((why == NULL) == (why_upper == NULL));
    FUZZ_CHECK(m.reads_connection_id == mu.reads_connection_id);
    FUZZ_CHECK(m.sets_next_transaction == mu.sets_next_transaction);
    if (why)
        fuzz_touch(why, strlen(why));
    FUZZ_CHECK(query_names_session_tracking(text, size) ==
               query_names_session_tracking(upper, size));

    struct kill_stmt k = {0}, ku = {0};
    enum kill_kind kind = query_kill_parse(text, size, &k);
    enum kill_kind kind_upper = query_kill_parse(upper, size, &ku);
    FUZZ_CHECK(kind == kind_upper);
    check_kill(text, size, kind, &k);
    if (kind == KILL_THREAD)
        FUZZ_CHECK(k.id == ku.id && k.query == ku.query && strcmp(k.hardness, ku.hardness) == 0);

    struct evbuffer *buf = evbuffer_new();
    if (buf) {
        /* As the relay sees it: a packet header, then the command byte, then the text. */
        static const uint8_t header[5] = {0, 0, 0, 0, 0x03};
        evbuffer_add(buf, header, sizeof(header));
        evbuffer_add(buf, text, size);
        char collation[64];
        memset(collation, 0x55, sizeof(collation));
        if (query_set_names(buf, sizeof(header), size, collation, sizeof(collation)))
            FUZZ_CHECK(memchr(collation, '\0', sizeof(collation)) != NULL);
        evbuffer_free(buf);
    }
    free(text);
    free(upper);
    return 0;
}
