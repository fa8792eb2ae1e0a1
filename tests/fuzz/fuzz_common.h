/* Helpers shared by the libFuzzer targets in this directory (see docs/testing.md). */
#ifndef CREDPROXY_TESTS_FUZZ_COMMON_H
#define CREDPROXY_TESTS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant the code under test must keep: a violation is a crash libFuzzer records. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Touches every byte a parser claims to have found, so ASan checks the span is in bounds. */
static inline size_t fuzz_touch(const void *p, size_t len)
{
    const volatile uint8_t *b = p;
    size_t sum = 0;
    for (size_t i = 0; p && i < len; i++)
        sum += b[i];
    return sum;
}

/* An exact-size heap copy: reading one byte past it is then an ASan error. */
static inline uint8_t *fuzz_copy(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (copy && size)
        memcpy(copy, data, size);
    return copy;
}

#endif
