/* Memory for secrets: left out of core dumps (MADV_DONTDUMP) and wiped when freed. */
#ifndef CREDPROXY_SECRETS_SECURE_MEM_H
#define CREDPROXY_SECRETS_SECURE_MEM_H

#include <stddef.h>

/*
 * n zeroed bytes in pages marked MADV_DONTDUMP, so a core dump (allowed with
 * allow_core_dumps) never holds them. Small blocks share pages (a mutex guards the free
 * list, so any thread may allocate and free); large ones get their own mapping. NULL when
 * out of memory.
 */
void *secure_alloc(size_t n);

/* Wipes the whole block with OPENSSL_cleanse and gives it back; NULL is fine. */
void secure_free(void *p);

/* A NUL-terminated copy of s (at most n bytes of it) in secure memory, or NULL. */
char *secure_strdup(const char *s);
char *secure_strndup(const char *s, size_t n);

#endif
