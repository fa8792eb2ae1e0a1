/*
 * libFuzzer target for the config file reader (conf/config.c). The input becomes the file named
 * by --config, read through config_load exactly as credproxy reads it (then validated); the
 * file is a memfd, so nothing touches the disk.
 *
 * Input: the config file's bytes. Checked: loading never crashes or leaks; a config that loads
 * has at least one route, each with a secret source and somewhere to listen; one that does not
 * load says why.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "conf/config.h"
#include "tests/fuzz/fuzz_common.h"

static int memfd = -1;
static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memfd < 0) {
        memfd = memfd_create("fuzz_config", MFD_CLOEXEC);
        FUZZ_CHECK(memfd >= 0);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
    }
    FUZZ_CHECK(ftruncate(memfd, 0) == 0);
    FUZZ_CHECK(size == 0 || pwrite(memfd, data, size, 0) == (ssize_t)size);

    char arg0[] = "credproxy", arg1[] = "--config";
    char *argv[] = {arg0, arg1, path, NULL};
    char *envp[] = {NULL}; /* the process environment must not leak in */
    struct config cfg;
    struct config_errors errs = {0};
    bool ok = config_load(&cfg, 3, argv, envp, &errs);
    if (ok) {
        FUZZ_CHECK(errs.n == 0);
        FUZZ_CHECK(cfg.n_routes >= 1);
        for (size_t r = 0; r < cfg.n_routes; r++) {
            const struct route_config *rc = &cfg.routes[r];
            FUZZ_CHECK(rc->name && (!rc->secret_file != !rc->secret_id));
            FUZZ_CHECK(rc->n_listen > 0 || rc->socket_path);
            for (size_t i = 0; i < rc->n_listen; i++) {
                char host[256];
                int port;
                FUZZ_CHECK(config_parse_hostport(rc->listen[i], host, sizeof(host), &port));
                FUZZ_CHECK(port >= 1 && port <= 65535);
            }
        }
    } else {
        FUZZ_CHECK(errs.n > 0);
    }
    for (size_t i = 0; i < errs.n; i++)
        fuzz_touch(errs.lines[i], strlen(errs.lines[i]));
    config_free(&cfg);
    config_errors_free(&errs);
    return 0;
}
