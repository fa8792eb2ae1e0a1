/* mysql_native_password hashes and the local users file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/scramble.h"
#include "auth/users.h"
#include "tests/check.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* SELECT PASSWORD('secret') on MySQL 5.x / MariaDB. */
#define SECRET_HASH "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"

static void test_known_vector(void)
{
    uint8_t stage2[20], parsed[20];
    char text[42];
    native_password_stage2("secret", 6, stage2);
    CHECK(native_password_parse_hash(SECRET_HASH, parsed));
    CHECK(memcmp(stage2, parsed, 20) == 0);
    local_users_format_hash("secret", 6, text);
    CHECK_STR(text, SECRET_HASH);
}

static void test_parse_hash(void)
{
    static const struct {
        const char *text;
        bool ok;
    } cases[] = {
        {SECRET_HASH, true},
        {"*14e65567abdb5135d0cfd9a70b3032c179a49ee7", true},
        {"14E65567ABDB5135D0CFD9A70B3032C179A49EE7", false},
        {"*14E65567ABDB5135D0CFD9A70B3032C179A49EE", false},
        {"*14E65567ABDB5135D0CFD9A70B3032C179A49EE77", false},
        {"*14E65567ABDB5135D0CFD9A70B3032C179A49EEG", false},
        {"*14E65567ABDB5135D0CFD9A70B3032C179A49EE ", false},
        {"*", false},
        {"", false},
        {NULL, false},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        uint8_t out[20];
        CHECK(native_password_parse_hash(cases[i].text, out) == cases[i].ok);
    }
}

static void test_scramble_generate(void)
{
    uint8_t a[PROTO_SCRAMBLE_LEN], b[PROTO_SCRAMBLE_LEN];
    scramble_generate(a);
    scramble_generate(b);
    for (size_t i = 0; i < PROTO_SCRAMBLE_LEN; i++)
        CHECK(a[i] >= 1 && a[i] <= 127 && b[i] >= 1 && b[i] <= 127);
    CHECK(memcmp(a, b, PROTO_SCRAMBLE_LEN) != 0);
}

/* A reply made from the right password verifies; anything else does not. */
static void test_reply_verify(void)
{
    uint8_t scramble[PROTO_SCRAMBLE_LEN], stage2[20], reply[21];
    scramble_generate(scramble);
    CHECK(native_password_parse_hash(SECRET_HASH, stage2));
    native_password_reply("secret", 6, scramble, reply);
    reply[20] = 0;
    CHECK(native_password_verify(stage2, scramble, reply, 20));
    CHECK(!native_password_verify(stage2, scramble, reply, 19));
    CHECK(!native_password_verify(stage2, scramble, reply, 21));
    CHECK(!native_password_verify(stage2, scramble, reply, 0));
    CHECK(!native_password_verify(stage2, scramble, NULL, 20));

    uint8_t other[PROTO_SCRAMBLE_LEN];
    memcpy(other, scramble, sizeof(other));
    other[0] = (uint8_t)(other[0] % 127 + 1);
    CHECK(!native_password_verify(stage2, other, reply, 20));

    reply[5] ^= 0x01;
    CHECK(!native_password_verify(stage2, scramble, reply, 20));

    native_password_reply("Secret", 6, scramble, reply);
    CHECK(!native_password_verify(stage2, scramble, reply, 20));
    native_password_reply("", 0, scramble, reply);
    CHECK(!native_password_verify(stage2, scramble, reply, 20));
}

/* Writes content to a fresh temporary file; the caller unlinks path. */
static void write_temp(char path[64], const char *content)
{
    snprintf(path, 64, "/tmp/credproxy-users-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    size_t len = strlen(content);
    CHECK(write(fd, content, len) == (ssize_t)len);
    close(fd);
}

#define OTHER_HASH "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19" /* PASSWORD('password') */

static void test_users_good(void)
{
    char path[64], err[256] = "";
    write_temp(path, "# credproxy users\n"
                     "\n"
                     "   \t\n"
                     "  # indented comment\n"
                     "alice:" SECRET_HASH "\n"
                     "bob:" OTHER_HASH "  \r\n"
                     "root:" SECRET_HASH); /* last line without newline */
    struct local_users *u = local_users_load(path, err, sizeof(err));
    CHECK(u != NULL);
    CHECK_STR(err, "");
    uint8_t secret[20], other[20];
    CHECK(native_password_parse_hash(SECRET_HASH, secret));
    CHECK(native_password_parse_hash(OTHER_HASH, other));
    const uint8_t *h = local_users_find(u, "alice", 5);
    CHECK(h && memcmp(h, secret, 20) == 0);
    h = local_users_find(u, "bob", 3);
    CHECK(h && memcmp(h, other, 20) == 0);
    CHECK(local_users_find(u, "rootx", 4) != NULL); /* name_len bounds the name, no NUL needed */
    CHECK(local_users_find(u, "roo", 3) == NULL);
    CHECK(local_users_find(u, "rooty", 5) == NULL);
    CHECK(local_users_find(u, "Alice", 5) == NULL);
    CHECK(local_users_find(u, "", 0) == NULL);
    CHECK(local_users_find(NULL, "alice", 5) == NULL);
    local_users_free(u);
    unlink(path);

    write_temp(path, "");
    u = local_users_load(path, err, sizeof(err));
    CHECK(u != NULL && local_users_find(u, "alice", 5) == NULL);
    local_users_free(u);
    unlink(path);
}

static void test_users_bad(void)
{
    static const struct {
        const char *content;
        const char *reason; /* expected after "PATH:" */
    } cases[] = {
        {"alice " SECRET_HASH "\n", "1: expected \"name:*HASH\""},
        {"# ok\n:" SECRET_HASH "\n", "2: user name is empty"},
        {"al ice:" SECRET_HASH "\n", "1: user name is empty or contains whitespace"},
        {"alice:hunter2\n", "1: hash for user 'alice' is not"},
        {"alice:*14E65567ABDB5135D0CFD9A70B3032C179A49EE\n", "1: hash for user 'alice'"},
        {"alice:" SECRET_HASH "x\n", "1: hash for user 'alice'"},
        {"alice:" SECRET_HASH "\nbob:" OTHER_HASH "\nalice:" OTHER_HASH "\n",
         "3: duplicate user 'alice' (first defined on line 1)"},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        char path[64], err[256] = "", expect[128];
        write_temp(path, cases[i].content);
        struct local_users *u = local_users_load(path, err, sizeof(err));
        CHECK(u == NULL);
        snprintf(expect, sizeof(expect), "%s:%s", path, cases[i].reason);
        CHECK(strncmp(err, expect, strlen(expect)) == 0);
        if (strncmp(err, expect, strlen(expect)) != 0)
            fprintf(stderr, "  got \"%s\"\n  want \"%s...\"\n", err, expect);
        /* Neither the hash nor the bad secret-looking text is ever echoed. */
        CHECK(strstr(err, "14E65567") == NULL && strstr(err, "2470C0C0") == NULL);
        CHECK(strstr(err, "hunter2") == NULL);
        local_users_free(u);
        unlink(path);
    }
}

static void test_users_file_mode(void)
{
    static const mode_t refused[] = {0640, 0604, 0620, 0602, 0644, 0666};
    char path[64], err[256], want[256];
    write_temp(path, "alice:" SECRET_HASH "\n");
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        CHECK(chmod(path, refused[i]) == 0);
        CHECK(local_users_load(path, err, sizeof(err)) == NULL);
        snprintf(want, sizeof(want),
                 "%s: readable or writable by group or others (mode %03o); chmod 600 it", path,
                 (unsigned)refused[i]);
        CHECK_STR(err, want);
    }
    static const mode_t accepted[] = {0600, 0400, 0700};
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        CHECK(chmod(path, accepted[i]) == 0);
        struct local_users *u = local_users_load(path, err, sizeof(err));
        CHECK(u != NULL);
        local_users_free(u);
    }
    unlink(path);
}

static void test_users_missing_file(void)
{
    char err[256] = "";
    struct local_users *u = local_users_load("/nonexistent/credproxy-users", err, sizeof(err));
    CHECK(u == NULL);
    CHECK_STR(err, "/nonexistent/credproxy-users: No such file or directory");
    CHECK(local_users_load("/nonexistent/x", NULL, 0) == NULL); /* no error buffer is fine */
}

int main(void)
{
    test_known_vector();
    test_parse_hash();
    test_scramble_generate();
    test_reply_verify();
    test_users_good();
    test_users_bad();
    test_users_missing_file();
    test_users_file_mode();
    return test_summary();
}
