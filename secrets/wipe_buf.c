/* Growable strings for secrets: grown by copy-and-wipe, never realloc, so no stale copy stays. */
#include "secrets/wipe_buf.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

void wipe_buf_putn(struct wipe_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = malloc(cap);
        if (!p) {
            b->oom = true;
            return;
        }
        if (b->p) {
            memcpy(p, b->p, b->len);
            OPENSSL_cleanse(b->p, b->cap);
            free(b->p);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void wipe_buf_puts(struct wipe_buf *b, const char *s)
{
    wipe_buf_putn(b, s, strlen(s));
}

void wipe_buf_putc(struct wipe_buf *b, char c)
{
    wipe_buf_putn(b, &c, 1);
}

void wipe_buf_wipe(struct wipe_buf *b)
{
    if (b->p) {
        OPENSSL_cleanse(b->p, b->cap);
        free(b->p);
    }
    memset(b, 0, sizeof(*b));
}

/* The finished string (never NULL unless out of memory); the buffer is handed over. */
char *wipe_buf_take(struct wipe_buf *b)
{
    if (!b->oom && !b->p)
        wipe_buf_putn(b, "", 0);
    if (b->oom) {
        wipe_buf_wipe(b);
        return NULL;
    }
    char *p = b->p;
    memset(b, 0, sizeof(*b));
    return p;
}
