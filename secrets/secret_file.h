/* The file source: an RDS-format JSON secret on disk, re-read when it changes. */
#ifndef CREDPROXY_SECRETS_SECRET_FILE_H
#define CREDPROXY_SECRETS_SECRET_FILE_H

#include <stddef.h>

#include "secrets/secret_source.h"
#include "secrets/secret_store.h"

struct event_base;
struct secret_file;

/*
 * Reads and parses path once, publishing it to store; on failure returns NULL
 * with a message naming the file and the bad key in err. Then checks the
 * file every poll_ms on base (inode, size, mtime, so atomic renames and
 * Kubernetes' symlink swaps are seen) and publishes each new valid version.
 * A bad version after start-up is logged once and the last good one stays.
 * poll_ms <= 0 means the default, 1000 ms.
 */
struct secret_file *secret_file_open(struct event_base *base, const char *path,
                                     struct secret_store *store, int poll_ms, char *err,
                                     size_t errlen);

/*
 * Checks the file now rather than at the next poll (e.g. after an access-denied
 * login), re-reading it even if stat() shows no change. The check runs on the
 * base given to secret_file_open at its next loop iteration; calling this from
 * another thread is safe once libevent's pthreads support is enabled.
 */
void secret_file_check_now(struct secret_file *sf);

void secret_file_free(struct secret_file *sf);

/* The file source as a generic secret_source (freeing it frees sf). */
struct secret_source *secret_file_source(struct secret_file *sf);

#endif
