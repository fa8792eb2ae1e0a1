/*
 * Memory for secrets. Passwords and keys live in pages marked MADV_DONTDUMP: with core dumps
 * allowed for debugging (allow_core_dumps), the dump still leaves them out. Blocks up to
 * SLOT_SIZE come from shared 64 KiB chunks; bigger ones get a mapping each. Every block is
 * wiped when freed, slots before they go back to the free list.
 */
#include "secrets/secure_mem.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define SLOT_SIZE  256         /* header included */
#define CHUNK_SIZE (64 * 1024) /* SLOT_SIZE slots mapped at a time */
#define HEADER     16          /* keeps blocks 16-byte aligned */

/* The header before every block: how much was mapped for it (0 for a slot). */
struct block_header {
    size_t mapped;
};

/* A free slot, linked through its own (wiped) bytes. */
struct free_slot {
    struct free_slot *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct free_slot *free_slots; /* under mu */

/* Maps len bytes of private memory and keeps them out of core dumps. */
static void *map_secret(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, len, MADV_DONTDUMP);
    return p;
}

/* Takes a slot from the free list, mapping a new chunk when it is empty. */
static void *take_slot(void)
{
    pthread_mutex_lock(&mu);
    if (!free_slots) {
        char *chunk = map_secret(CHUNK_SIZE);
        for (size_t off = 0; chunk && off < CHUNK_SIZE; off += SLOT_SIZE) {
            struct free_slot *s = (struct free_slot *)(chunk + off);
            s->next = free_slots;
            free_slots = s;
        }
    }
    struct free_slot *s = free_slots;
    if (s)
        free_slots = s->next;
    pthread_mutex_unlock(&mu);
    if (s)
        memset(s, 0, SLOT_SIZE);
    return s;
}

void *secure_alloc(size_t n)
{
    char *p;
    size_t mapped = 0;
    if (n <= SLOT_SIZE - HEADER) {
        p = take_slot();
    } else {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        if (n > SIZE_MAX - HEADER - page)
            return NULL;
        mapped = (n + HEADER + page - 1) / page * page;
        p = map_secret(mapped);
    }
    if (!p)
        return NULL;
    ((struct block_header *)p)->mapped = mapped;
    return p + HEADER;
}

void secure_free(void *ptr)
{
    if (!ptr)
        return;
    char *p = (char *)ptr - HEADER;
    size_t mapped = ((struct block_header *)p)->mapped;
    if (mapped) {
        OPENSSL_cleanse(p, mapped);
        munmap(p, mapped);
        return;
    }
    OPENSSL_cleanse(p, SLOT_SIZE);
    struct free_slot *s = (struct free_slot *)p;
    pthread_mutex_lock(&mu);
    s->next = free_slots;
    free_slots = s;
    pthread_mutex_unlock(&mu);
}

char *secure_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = secure_alloc(len + 1);
    if (p)
        memcpy(p, s, len); /* the NUL is there: blocks come zeroed */
    return p;
}

char *secure_strdup(const char *s)
{
    return secure_strndup(s, SIZE_MAX);
}
