/* A minimal table-driven test helper: CHECK records failures, test_summary() sets the exit code. */
#ifndef CREDPROXY_TESTS_CHECK_H
#define CREDPROXY_TESTS_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_total;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        check_total++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *check_a_ = (a), *check_b_ = (b);                                               \
        check_total++;                                                                             \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                           \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK_STR failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__,     \
                    check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)");               \
        }                                                                                          \
    } while (0)

/* Prints "N passed, M failed" and returns the process exit code. */
static inline int test_summary(void)
{
    printf("%d passed, %d failed\n", check_total - check_failures, check_failures);
    return check_failures ? 1 : 0;
}

#endif
