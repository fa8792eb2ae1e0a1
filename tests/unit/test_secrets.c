/* Unit tests for secrets/: the RDS secret parser, the store and the file source. */
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../check.h"
#include "conf/log.h"
#include "secrets/creds.h"
#include "secrets/secret_file.h"
#include "secrets/secret_store.h"

/* Every bad input carries this password, so a leak into an error message is caught. */
#define SECRET "Sup3rS3cretValue"

/* ---- parser ---- */

struct parse_case {
    const char *name;
    const char *json;
    /* expected on success (err_has == NULL) */
    const char *username, *password, *host, *dbname, *engine, *cluster_id;
    int port;
    /* expected on failure: a substring of the message (the key it names) */
    const char *err_has;
};

static const struct parse_case parse_cases[] = {
    {"full RDS secret",
     "{\"username\":\"admin\",\"password\":\"p@ss\",\"engine\":\"mysql\","
     "\"host\":\"db.x.us-east-1.rds.amazonaws.com\",\"port\":3306,\"dbname\":\"app\","
     "\"dbClusterIdentifier\":\"c1\"}",
     "admin", "p@ss", "db.x.us-east-1.rds.amazonaws.com", "app", "mysql", "c1", 3306, NULL},
    {"port as string", "{\"username\":\"u\",\"password\":\"p\",\"host\":\"h\",\"port\":\"3307\"}",
     "u", "p", "h", NULL, NULL, NULL, 3307, NULL},
    {"missing port", "{\"username\":\"u\",\"password\":\"p\",\"host\":\"h\"}", "u", "p", "h", NULL,
     NULL, NULL, 3306, NULL},
    {"null port", "{\"username\":\"u\",\"password\":\"p\",\"port\":null}", "u", "p", NULL, NULL,
     NULL, NULL, 3306, NULL},
    {"port 65535", "{\"username\":\"u\",\"password\":\"p\",\"port\":65535}", "u", "p", NULL, NULL,
     NULL, NULL, 65535, NULL},
    {"unknown keys ignored",
     "{\"username\":\"u\",\"password\":\"p\",\"host\":\"h\",\"extra\":{\"a\":[1,\"x\"]},"
     "\"proxy\":true}",
     "u", "p", "h", NULL, NULL, NULL, 3306, NULL},
    {"no host", "{\"username\":\"u\",\"password\":\"p\"}", "u", "p", NULL, NULL, NULL, NULL, 3306,
     NULL},
    {"empty optional strings are absent",
     "{\"username\":\"u\",\"password\":\"p\",\"host\":\"\",\"dbname\":\"\"}", "u", "p", NULL, NULL,
     NULL, NULL, 3306, NULL},
    {"trailing whitespace", "{\"username\":\"u\",\"password\":\"p\"}\n\n", "u", "p", NULL, NULL,
     NULL, NULL, 3306, NULL},
    {"escaped password", "{\"username\":\"u\",\"password\":\"a\\\"b\\\\c\\u00e9\"}", "u",
     "a\"b\\c\xc3\xa9", NULL, NULL, NULL, NULL, 3306, NULL},

    {"missing username", "{\"password\":\"" SECRET "\",\"host\":\"h\"}", .err_has = "'username'"},
    {"empty username", "{\"username\":\"\",\"password\":\"" SECRET "\"}", .err_has = "'username'"},
    {"username not a string", "{\"username\":7,\"password\":\"" SECRET "\"}",
     .err_has = "'username'"},
    {"missing password", "{\"username\":\"u\",\"host\":\"" SECRET "\"}", .err_has = "'password'"},
    {"password not a string", "{\"username\":\"u\",\"password\":[\"" SECRET "\"]}",
     .err_has = "'password'"},
    {"password a number", "{\"username\":\"u\",\"password\":12345}", .err_has = "'password'"},
    {"empty password", "{\"username\":\"u\",\"password\":\"\"}", .err_has = "'password' is empty"},
    {"host not a string", "{\"username\":\"u\",\"password\":\"" SECRET "\",\"host\":1}",
     .err_has = "'host'"},
    {"dbname not a string", "{\"username\":\"u\",\"password\":\"" SECRET "\",\"dbname\":{}}",
     .err_has = "'dbname'"},
    {"port 0", "{\"username\":\"u\",\"password\":\"" SECRET "\",\"port\":0}",
     .err_has = "key 'port' must be a number 1-65535 or a numeric string"},
    {"port 70000", "{\"username\":\"u\",\"password\":\"" SECRET "\",\"port\":70000}",
     .err_has = "'port'"},
    {"port abc", "{\"username\":\"u\",\"password\":\"" SECRET "\",\"port\":\"abc\"}",
     .err_has = "'port'"},
    {"port 3306.5", "{\"username\":\"u\",\"password\":\"" SECRET "\",\"port\":3306.5}",
     .err_has = "'port'"},
    {"port -1", "{\"username\":\"u\",\"password\":\"" SECRET "\",\"port\":-1}",
     .err_has = "'port'"},
    {"port string 65536", "{\"username\":\"u\",\"password\":\"" SECRET "\",\"port\":\"65536\"}",
     .err_has = "'port'"},
    {"port string with space",
     "{\"username\":\"u\",\"password\":\"" SECRET "\",\"port\":\" 3306\"}", .err_has = "'port'"},
    {"port bool", "{\"username\":\"u\",\"password\":\"" SECRET "\",\"port\":true}",
     .err_has = "'port'"},
    {"not an object", "[\"" SECRET "\"]", .err_has = "not a JSON object"},
    {"string, not an object", "\"" SECRET "\"", .err_has = "not a JSON object"},
    {"truncated JSON", "{\"username\":\"u\",\"password\":\"" SECRET "\",\"port\":",
     .err_has = "invalid JSON near offset"},
    {"truncated inside password", "{\"username\":\"u\",\"password\":\"" SECRET,
     .err_has = "invalid JSON near offset"},
    {"trailing garbage", "{\"username\":\"u\",\"password\":\"" SECRET "\"} x",
     .err_has = "invalid JSON near offset"},
    {"empty input", "", .err_has = "empty input"},
};

static void check_optional(const char *got, const char *want)
{
    if (want)
        CHECK_STR(got, want);
    else
        CHECK(got == NULL);
}

static void check_parse_ok(const struct parse_case *tc, struct creds *c)
{
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_STR(c->username, tc->username);
    CHECK_STR(c->password, tc->password);
    check_optional(c->host, tc->host);
    check_optional(c->dbname, tc->dbname);
    check_optional(c->engine, tc->engine);
    check_optional(c->cluster_id, tc->cluster_id);
    CHECK(c->port == tc->port);
    CHECK(c->refs == 1);
}

static void check_parse_err(const struct parse_case *tc, struct creds *c, const char *err)
{
    CHECK(c == NULL);
    CHECK(strstr(err, tc->err_has) != NULL);
    CHECK(strstr(err, SECRET) == NULL);
    CHECK(strstr(err, "Sup3r") == NULL);
}

static void test_parser(void)
{
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const struct parse_case *tc = &parse_cases[i];
        char err[256] = "";
        struct creds *c = creds_parse_rds_json(tc->json, strlen(tc->json), err, sizeof(err));
        size_t failures_before = (size_t)check_failures;
        if (tc->err_has)
            check_parse_err(tc, c, err);
        else
            check_parse_ok(tc, c);
        if ((size_t)check_failures != failures_before)
            fprintf(stderr, "  in parser case \"%s\" (err: \"%s\")\n", tc->name, err);
        creds_unref(c);
    }
}

/* The length is honoured: bytes after len are never read, and no NUL is needed. */
static void test_parser_length(void)
{
    const char buf[] = "{\"username\":\"u\",\"password\":\"p\"}GARBAGE";
    char err[128] = "";
    struct creds *c = creds_parse_rds_json(buf, strlen(buf) - 7, err, sizeof(err));
    CHECK(c != NULL);
    creds_unref(c);
    CHECK(creds_parse_rds_json(NULL, 0, err, sizeof(err)) == NULL);
    CHECK(creds_parse_rds_json(buf, strlen(buf), NULL, 0) == NULL); /* no err buffer: no crash */
}

static struct creds *parse(const char *json)
{
    char err[256];
    struct creds *c = creds_parse_rds_json(json, strlen(json), err, sizeof(err));
    if (!c)
        fprintf(stderr, "parse failed: %s\n", err);
    return c;
}

static void test_same_login(void)
{
    struct creds *a = parse("{\"username\":\"u\",\"password\":\"p\",\"host\":\"h\"}");
    struct creds *b = parse("{\"password\":\"p\",\"host\":\"h\",\"username\":\"u\",\"x\":1}");
    struct creds *p = parse("{\"username\":\"u\",\"password\":\"q\",\"host\":\"h\"}");
    struct creds *h = parse("{\"username\":\"u\",\"password\":\"p\"}");
    struct creds *port = parse("{\"username\":\"u\",\"password\":\"p\",\"host\":\"h\",\"port\":1}");
    CHECK(creds_same_login(a, b));
    CHECK(!creds_same_login(a, p));
    CHECK(!creds_same_login(a, h));
    CHECK(!creds_same_login(h, a));
    CHECK(!creds_same_login(a, port));
    CHECK(creds_same_login(h, h));
    CHECK(!creds_same_login(a, NULL));
    CHECK(creds_ref(a) == a && a->refs == 2);
    creds_unref(a);
    CHECK(a->refs == 1);
    creds_unref(a);
    creds_unref(b);
    creds_unref(p);
    creds_unref(h);
    creds_unref(port);
}

/* ---- store ---- */

static void test_store(void)
{
    struct secret_store *s = secret_store_new();
    CHECK(s != NULL);
    CHECK(secret_store_get(s) == NULL);
    CHECK(secret_store_generation(s) == 0);

    struct creds *c1 = parse("{\"username\":\"u\",\"password\":\"one\"}");
    secret_store_publish(s, c1); /* the store now owns the only reference */
    CHECK(c1->generation == 1 && c1->refs == 1);
    struct creds *got = secret_store_get(s);
    CHECK(got == c1 && c1->refs == 2);

    struct creds *c2 = parse("{\"username\":\"u\",\"password\":\"two\"}");
    secret_store_publish(s, c2);
    CHECK(c2->generation == 2);
    CHECK(secret_store_generation(s) == 2);
    CHECK(got->refs == 1); /* the old snapshot lives on for its last user */
    CHECK_STR(got->password, "one");
    creds_unref(got);

    got = secret_store_get(s);
    CHECK(got == c2 && c2->refs == 2);
    CHECK_STR(got->password, "two");
    creds_unref(got);
    CHECK(c2->refs == 1);
    secret_store_publish(s, NULL); /* ignored */
    CHECK(secret_store_generation(s) == 2);
    secret_store_free(s);
}

struct reader_arg {
    struct secret_store *store;
    int stop; /* set with __atomic_store_n */
};

static void *reader(void *p)
{
    struct reader_arg *a = p;
    while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
        struct creds *c = secret_store_get(a->store);
        if (c && c->password[0] != 'p')
            abort(); /* a freed or wiped snapshot would show here (and in ASan) */
        creds_unref(c);
    }
    return NULL;
}

/* Readers on other threads never see a freed snapshot while publishes swap it. */
static void test_store_threads(void)
{
    struct reader_arg a = {.store = secret_store_new()};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, reader, &a);
    for (int i = 0; i < 2000; i++)
        secret_store_publish(a.store, parse("{\"username\":\"u\",\"password\":\"pw\"}"));
    __atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(secret_store_generation(a.store) == 2000);
    secret_store_free(a.store);
}

/* ---- file source ---- */

static char tmpdir[256];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const char *content, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    fchmod(fd, mode);
    size_t len = strlen(content);
    CHECK(write(fd, content, len) == (ssize_t)len);
    close(fd);
}

/* Writes a sibling temporary file and renames it over path, as careful writers do. */
static void replace_file(const char *path, const char *content)
{
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    write_file(tmp, content, 0600);
    CHECK(rename(tmp, path) == 0);
}

static void run_for(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void check_password(struct secret_store *s, const char *want)
{
    struct creds *c = secret_store_get(s);
    CHECK(c != NULL);
    if (c)
        CHECK_STR(c->password, want);
    creds_unref(c);
}

#define SECRET_JSON(pw) "{\"username\":\"app\",\"password\":\"" pw "\",\"host\":\"127.0.0.1\"}"

static void test_file_open_errors(void)
{
    char path[512], err[512];
    struct secret_store *s = secret_store_new();

    path_in(path, sizeof(path), "missing.json");
    CHECK(secret_file_open(NULL, path, s, 20, err, sizeof(err)) == NULL);
    CHECK(strncmp(err, path, strlen(path)) == 0 && strstr(err, "No such file") != NULL);

    path_in(path, sizeof(path), "bad.json");
    write_file(path, "{\"username\":\"app\",\"password\":\"" SECRET "\",\"port\":\"x\"}", 0600);
    CHECK(secret_file_open(NULL, path, s, 20, err, sizeof(err)) == NULL);
    CHECK(strncmp(err, path, strlen(path)) == 0 && strstr(err, ": key 'port'") != NULL);
    CHECK(strstr(err, SECRET) == NULL);

    char *big = malloc(70000);
    memset(big, ' ', 69999);
    big[69999] = '\0';
    big[0] = '{';
    big[69998] = '}';
    path_in(path, sizeof(path), "big.json");
    write_file(path, big, 0600);
    free(big);
    CHECK(secret_file_open(NULL, path, s, 20, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "larger than 65536 bytes") != NULL);

    CHECK(secret_file_open(NULL, tmpdir, s, 20, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "not a regular file") != NULL);
    CHECK(secret_store_get(s) == NULL);
    secret_store_free(s);
}

static void test_file_rotation(struct event_base *base)
{
    char path[512], err[512] = "";
    struct secret_store *s = secret_store_new();
    path_in(path, sizeof(path), "secret.json");
    write_file(path, SECRET_JSON("pass-one"), 0600);
    struct secret_file *sf = secret_file_open(base, path, s, 20, err, sizeof(err));
    CHECK(sf != NULL);
    if (!sf) {
        fprintf(stderr, "secret_file_open: %s\n", err);
        secret_store_free(s);
        return;
    }
    check_password(s, "pass-one");
    struct creds *c = secret_store_get(s);
    CHECK(c && c->version && strncmp(c->version, "mtime:", 6) == 0);
    creds_unref(c);

    /* Unchanged, or rewritten with the same login: nothing new is published. */
    run_for(base, 100);
    replace_file(path, "{\"host\":\"127.0.0.1\",\"password\":\"pass-one\",\"username\":\"app\"}");
    run_for(base, 100);
    CHECK(secret_store_generation(s) == 1);

    replace_file(path, SECRET_JSON("pass-two"));
    run_for(base, 100);
    check_password(s, "pass-two");
    CHECK(secret_store_generation(s) == 2);

    /* A broken version keeps the last good one, and is logged once however long it stays. */
    replace_file(path, "{\"username\":\"app\",\"password\":\"" SECRET "\"");
    run_for(base, 300);
    check_password(s, "pass-two");
    CHECK(secret_store_generation(s) == 2);

    replace_file(path, SECRET_JSON("pass-three"));
    run_for(base, 100);
    check_password(s, "pass-three");
    CHECK(secret_store_generation(s) == 3);

    /* check_now reads at once, without waiting for the (here: one minute) poll. */
    secret_file_free(sf);
    sf = secret_file_open(base, path, s, 60000, err, sizeof(err));
    CHECK(sf != NULL);
    replace_file(path, SECRET_JSON("pass-four"));
    secret_file_check_now(sf);
    run_for(base, 50);
    check_password(s, "pass-four");
    secret_file_free(sf);
    secret_store_free(s);
}

/* Kubernetes mounts: FILE -> ..data/FILE, ..data -> ..TIMESTAMP, and ..data is swapped by rename.
 */
static void k8s_write_version(const char *dir, const char *stamp, const char *content)
{
    char ts[512], file[600], link_tmp[512], data[512];
    snprintf(ts, sizeof(ts), "%s/..%s", dir, stamp);
    CHECK(mkdir(ts, 0755) == 0);
    snprintf(file, sizeof(file), "%s/secret.json", ts);
    write_file(file, content, 0644);
    snprintf(link_tmp, sizeof(link_tmp), "%s/..data_tmp", dir);
    snprintf(data, sizeof(data), "%s/..data", dir);
    CHECK(symlink(ts + strlen(dir) + 1, link_tmp) == 0);
    CHECK(rename(link_tmp, data) == 0);
}

static void test_file_k8s(struct event_base *base)
{
    char dir[512], path[600], err[512] = "";
    path_in(dir, sizeof(dir), "k8s");
    CHECK(mkdir(dir, 0755) == 0);
    k8s_write_version(dir, "2024_01_01_00_00_00.1", SECRET_JSON("k8s-one"));
    snprintf(path, sizeof(path), "%s/secret.json", dir);
    CHECK(symlink("..data/secret.json", path) == 0);

    struct secret_store *s = secret_store_new();
    struct secret_file *sf = secret_file_open(base, path, s, 20, err, sizeof(err));
    CHECK(sf != NULL);
    check_password(s, "k8s-one");
    k8s_write_version(dir, "2024_01_02_00_00_00.2", SECRET_JSON("k8s-two"));
    run_for(base, 100);
    check_password(s, "k8s-two");
    CHECK(secret_store_generation(s) == 2);
    secret_file_free(sf);
    secret_store_free(s);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strdup(buf);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* What the file source logged: errors once, recovery, the mode warning, and no values. */
static void check_log(const char *log)
{
    CHECK(count(log, "keeping the previous credentials") == 1);
    CHECK(count(log, "valid again") == 1);
    CHECK(count(log, "readable by group or others") == 1);
    CHECK(strstr(log, SECRET) == NULL);
    CHECK(strstr(log, "pass-") == NULL);
    CHECK(strstr(log, "k8s-one") == NULL && strstr(log, "k8s-two") == NULL);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void test_file_source(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "%s/credproxy-test-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(tmpdir) != NULL);
    char logpath[512];
    path_in(logpath, sizeof(logpath), "log.txt");

    /* Capture stderr, where the log goes, to check what was said and that no value leaked. */
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(logfd, STDERR_FILENO);
    close(logfd);

    struct event_base *base = event_base_new();
    test_file_open_errors();
    test_file_rotation(base);
    test_file_k8s(base);
    event_base_free(base);

    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char *log = slurp(logpath);
    check_log(log);
    fputs(log, stderr);
    free(log);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    log_set_level(LOG_LEVEL_DEBUG);
    test_parser();
    test_parser_length();
    test_same_login();
    test_store();
    test_store_threads();
    test_file_source();
    return test_summary();
}
