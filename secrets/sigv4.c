/* AWS Signature Version 4: canonical request, string to sign, signing key and Authorization. */
#include "secrets/sigv4.h"
#include "secrets/wipe_buf.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

static void sb_encode(struct wipe_buf *b, const char *s, size_t len, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            wipe_buf_putc(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            wipe_buf_putn(b, e, 3);
        }
    }
}

char *sigv4_uri_encode(const char *s, size_t len, bool keep_slash)
{
    struct wipe_buf b = {0};
    sb_encode(&b, s, len, keep_slash);
    return wipe_buf_take(&b);
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void sigv4_sha256_hex(const void *data, size_t len, char *out)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data ? data : (const void *)"", len, md);
    hex_encode(md, sizeof(md), out);
}

void sigv4_format_date(time_t t, char *out)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, SIGV4_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm);
}

/* ---- Task 1: the canonical request ---------------------------------------------------- */

/*
 * Removes empty and "." segments and resolves ".." (never above the root);
 * a trailing slash stays. Then each byte is encoded, keeping '/'.
 */
static void canonical_path(struct wipe_buf *b, const char *path)
{
    size_t plen = strlen(path);
    const char **seg = malloc((plen / 2 + 2) * sizeof(*seg));
    size_t *seglen = malloc((plen / 2 + 2) * sizeof(*seglen));
    if (!seg || !seglen) {
        free(seg);
        free(seglen);
        b->oom = true;
        return;
    }
    size_t n = 0;
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t len = (size_t)(p - s);
        if (len == 0 || (len == 1 && s[0] == '.'))
            continue;
        if (len == 2 && s[0] == '.' && s[1] == '.') {
            if (n)
                n--;
            continue;
        }
        seg[n] = s;
        seglen[n++] = len;
    }
    wipe_buf_putc(b, '/');
    for (size_t i = 0; i < n; i++) {
        if (i)
            wipe_buf_putc(b, '/');
        sb_encode(b, seg[i], seglen[i], false);
    }
    if (n && plen && path[plen - 1] == '/')
        wipe_buf_putc(b, '/');
    free(seg);
    free(seglen);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s[0..len) into out (len + 1 bytes); returns the decoded length. */
static size_t pct_decode(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < len && (h = hexval(s[i + 1])) >= 0 &&
            (l = hexval(s[i + 2])) >= 0) {
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return o;
}

/* One query parameter, encoded canonically. */
struct qparam {
    char *key, *value;
};

static int qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->value, y->value);
}

static char *encode_component(const char *s, size_t len)
{
    char *dec = malloc(len + 1);
    if (!dec)
        return NULL;
    size_t n = pct_decode(s, len, dec);
    char *enc = sigv4_uri_encode(dec, n, false);
    OPENSSL_cleanse(dec, len + 1);
    free(dec);
    return enc;
}

/* Decodes, re-encodes and sorts the parameters by key, then value. */
static void canonical_query(struct wipe_buf *b, const char *query)
{
    if (!query || !*query)
        return;
    size_t cap = 1;
    for (const char *p = query; *p; p++)
        cap += *p == '&';
    struct qparam *q = calloc(cap, sizeof(*q));
    if (!q) {
        b->oom = true;
        return;
    }
    size_t n = 0;
    for (const char *p = query; *p;) {
        const char *s = p;
        while (*p && *p != '&')
            p++;
        const char *end = p;
        if (*p)
            p++;
        if (end == s)
            continue;
        const char *eq = memchr(s, '=', (size_t)(end - s));
        const char *kend = eq ? eq : end;
        q[n].key = encode_component(s, (size_t)(kend - s));
        q[n].value = eq ? encode_component(eq + 1, (size_t)(end - eq - 1)) : strdup("");
        if (!q[n].key || !q[n].value)
            b->oom = true;
        n++;
    }
    if (!b->oom) {
        qsort(q, n, sizeof(*q), qparam_cmp);
        for (size_t i = 0; i < n; i++) {
            if (i)
                wipe_buf_putc(b, '&');
            wipe_buf_puts(b, q[i].key);
            wipe_buf_putc(b, '=');
            wipe_buf_puts(b, q[i].value);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(q[i].key);
        free(q[i].value);
    }
    free(q);
}

/* A header after canonicalization: lower-case name, trimmed value, duplicates joined. */
struct cheader {
    char *name;
    struct wipe_buf value;
    size_t order; /* first appearance, so the sort is stable */
};

static int cheader_cmp(const void *a, const void *b)
{
    const struct cheader *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Appends v with folded lines joined, ends trimmed and runs of blanks collapsed to one space. */
static void put_trimmed(struct wipe_buf *b, const char *v)
{
    bool space = false, any = false;
    for (const char *p = v; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
            space = any;
            continue;
        }
        if (space)
            wipe_buf_putc(b, ' ');
        wipe_buf_putc(b, *p);
        space = false;
        any = true;
    }
}

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

static void canonical_headers(struct wipe_buf *b, struct wipe_buf *signed_list,
                              const struct sigv4_request *req)
{
    struct cheader *h = calloc(req->n_headers ? req->n_headers : 1, sizeof(*h));
    if (!h) {
        b->oom = true;
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        char *name = lower_dup(req->headers[i].name);
        if (!name || !*name) {
            free(name);
            b->oom = true;
            break;
        }
        size_t j = 0;
        while (j < n && strcmp(h[j].name, name) != 0)
            j++;
        if (j == n) {
            h[n].name = name;
            h[n].order = n;
            n++;
        } else {
            free(name);
            wipe_buf_putc(&h[j].value, ',');
        }
        put_trimmed(&h[j].value, req->headers[i].value ? req->headers[i].value : "");
        if (h[j].value.oom)
            b->oom = true;
    }
    qsort(h, n, sizeof(*h), cheader_cmp);
    for (size_t i = 0; i < n; i++) {
        wipe_buf_puts(b, h[i].name);
        wipe_buf_putc(b, ':');
        if (h[i].value.p)
            wipe_buf_puts(b, h[i].value.p);
        wipe_buf_putc(b, '\n');
        if (i)
            wipe_buf_putc(signed_list, ';');
        wipe_buf_puts(signed_list, h[i].name);
    }
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        wipe_buf_wipe(&h[i].value);
    }
    free(h);
}

char *sigv4_canonical_request(const struct sigv4_request *req, char **signed_headers)
{
    struct wipe_buf b = {0}, sh = {0};
    char hash[65];
    wipe_buf_puts(&b, req->method);
    wipe_buf_putc(&b, '\n');
    canonical_path(&b, req->path && *req->path ? req->path : "/");
    wipe_buf_putc(&b, '\n');
    canonical_query(&b, req->query);
    wipe_buf_putc(&b, '\n');
    canonical_headers(&b, &sh, req);
    wipe_buf_putc(&b, '\n');
    wipe_buf_puts(&b, sh.p ? sh.p : "");
    wipe_buf_putc(&b, '\n');
    sigv4_sha256_hex(req->payload, req->payload_len, hash);
    wipe_buf_puts(&b, hash);
    if (sh.oom)
        b.oom = true;
    char *out = wipe_buf_take(&b);
    char *list = wipe_buf_take(&sh);
    if (!out || !list || !signed_headers) {
        free(list);
        list = NULL;
    }
    if (signed_headers)
        *signed_headers = list;
    if (signed_headers && !list && out) {
        OPENSSL_cleanse(out, strlen(out));
        free(out);
        out = NULL;
    }
    return out;
}

/* ---- Task 2 and 3: string to sign, signing key, signature ------------------------------ */

static void credential_scope(struct wipe_buf *b, const struct sigv4_key *key)
{
    wipe_buf_putn(b, key->amz_date, 8);
    wipe_buf_putc(b, '/');
    wipe_buf_puts(b, key->region);
    wipe_buf_putc(b, '/');
    wipe_buf_puts(b, key->service);
    wipe_buf_puts(b, "/aws4_request");
}

char *sigv4_string_to_sign(const char *canonical_request, const struct sigv4_key *key)
{
    if (strlen(key->amz_date) != SIGV4_DATE_LEN)
        return NULL;
    struct wipe_buf b = {0};
    char hash[65];
    wipe_buf_puts(&b, "AWS4-HMAC-SHA256\n");
    wipe_buf_puts(&b, key->amz_date);
    wipe_buf_putc(&b, '\n');
    credential_scope(&b, key);
    wipe_buf_putc(&b, '\n');
    sigv4_sha256_hex(canonical_request, strlen(canonical_request), hash);
    wipe_buf_puts(&b, hash);
    return wipe_buf_take(&b);
}

static bool hmac(const unsigned char *k, size_t klen, const char *msg, size_t mlen,
                 unsigned char out[32])
{
    unsigned int olen = 32;
    return HMAC(EVP_sha256(), k, (int)klen, (const unsigned char *)msg, mlen, out, &olen) != NULL;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"). */
static bool signing_key(const struct sigv4_key *key, unsigned char out[32])
{
    size_t slen = strlen(key->secret_access_key);
    unsigned char *k0 = malloc(slen + 4);
    if (!k0)
        return false;
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, key->secret_access_key, slen);
    unsigned char a[32], c[32];
    bool ok = hmac(k0, slen + 4, key->amz_date, 8, a) &&
              hmac(a, 32, key->region, strlen(key->region), c) &&
              hmac(c, 32, key->service, strlen(key->service), a) &&
              hmac(a, 32, "aws4_request", 12, out);
    OPENSSL_cleanse(k0, slen + 4);
    OPENSSL_cleanse(a, sizeof(a));
    OPENSSL_cleanse(c, sizeof(c));
    free(k0);
    return ok;
}

bool sigv4_signature(const struct sigv4_request *req, const struct sigv4_key *key,
                     char out[SIGV4_SIGNATURE_HEX + 1], char **signed_headers)
{
    char *sh = NULL;
    char *creq = sigv4_canonical_request(req, &sh);
    char *sts = creq ? sigv4_string_to_sign(creq, key) : NULL;
    unsigned char k[32], sig[32];
    bool ok = sts && signing_key(key, k) && hmac(k, 32, sts, strlen(sts), sig);
    if (ok)
        hex_encode(sig, 32, out);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(sig, sizeof(sig));
    if (creq) {
        OPENSSL_cleanse(creq, strlen(creq));
        free(creq);
    }
    if (sts) {
        OPENSSL_cleanse(sts, strlen(sts));
        free(sts);
    }
    if (ok && signed_headers)
        *signed_headers = sh;
    else
        free(sh);
    return ok;
}

bool sigv4_authorization(const struct sigv4_request *req, const struct sigv4_key *key, char *out,
                         size_t outlen)
{
    char *signed_headers = NULL;
    char sighex[SIGV4_SIGNATURE_HEX + 1];
    bool ok = sigv4_signature(req, key, sighex, &signed_headers);
    if (ok) {
        struct wipe_buf b = {0};
        wipe_buf_puts(&b, "AWS4-HMAC-SHA256 Credential=");
        wipe_buf_puts(&b, key->access_key_id);
        wipe_buf_putc(&b, '/');
        credential_scope(&b, key);
        wipe_buf_puts(&b, ", SignedHeaders=");
        wipe_buf_puts(&b, signed_headers);
        wipe_buf_puts(&b, ", Signature=");
        wipe_buf_puts(&b, sighex);
        ok = !b.oom && b.len < outlen;
        if (ok)
            memcpy(out, b.p, b.len + 1);
        wipe_buf_wipe(&b);
    }
    free(signed_headers);
    return ok;
}

void sigv4_credential_scope(const struct sigv4_key *key, char *out, size_t outlen)
{
    snprintf(out, outlen, "%.8s/%s/%s/aws4_request", key->amz_date, key->region, key->service);
}
