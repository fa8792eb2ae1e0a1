/* A growable string that leaves no unwiped copy of its contents in the heap. */
#ifndef CREDPROXY_SECRETS_WIPE_BUF_H
#define CREDPROXY_SECRETS_WIPE_BUF_H

#include <stdbool.h>
#include <stddef.h>

/* A growable string; oom is sticky so callers check once at the end. */
struct wipe_buf {
    char *p;
    size_t len, cap;
    bool oom;
};

/* Appends n bytes and keeps the string NUL-terminated; growing wipes the old block. */
void wipe_buf_putn(struct wipe_buf *b, const char *s, size_t n);
void wipe_buf_puts(struct wipe_buf *b, const char *s);
void wipe_buf_putc(struct wipe_buf *b, char c);
/* Wipes and frees the contents; the buffer is empty (and usable) again. */
void wipe_buf_wipe(struct wipe_buf *b);
/* The finished string (never NULL unless out of memory); the caller owns and wipes it. */
char *wipe_buf_take(struct wipe_buf *b);

#endif
