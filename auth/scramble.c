/* mysql_native_password challenge-response on OpenSSL; every intermediate hash is wiped. */
#include "auth/scramble.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define SHA1_LEN 20

/*
 * These functions cannot report failure, and carrying on with a predictable
 * challenge or a zero hash would be a silent security hole: a crypto library
 * that cannot hash or draw randomness ends the process.
 */
static void crypto_fatal(const char *what)
{
    fprintf(stderr, "credproxy: fatal: OpenSSL %s failed\n", what);
    abort();
}

/* out = SHA1(a || b); b may be NULL with blen 0. */
static void sha1_2(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[SHA1_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) || !EVP_DigestUpdate(ctx, a, alen) ||
        (blen && !EVP_DigestUpdate(ctx, b, blen)) || !EVP_DigestFinal_ex(ctx, out, NULL))
        crypto_fatal("SHA1");
    EVP_MD_CTX_free(ctx); /* also cleanses the digest state */
}

/*
 * Random bytes are drawn RAND_BYTES_BATCH at a time and handed out from a
 * per-thread reserve (a RAND_bytes call per login costs more than the rest of
 * the greeting). Each byte is wiped as it is taken. A forked child starts
 * with an empty reserve, so it never repeats its parent's challenges.
 */
#define RAND_BYTES_BATCH 512
static _Thread_local uint8_t reserve[RAND_BYTES_BATCH];
static _Thread_local size_t reserve_pos = RAND_BYTES_BATCH;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void reserve_drop(void)
{
    OPENSSL_cleanse(reserve, sizeof(reserve));
    reserve_pos = RAND_BYTES_BATCH;
}

static void register_atfork(void)
{
    if (pthread_atfork(NULL, NULL, reserve_drop) != 0)
        crypto_fatal("pthread_atfork for RAND_bytes");
}

static uint8_t random_byte(void)
{
    if (reserve_pos == RAND_BYTES_BATCH) {
        pthread_once(&atfork_once, register_atfork);
        if (RAND_bytes(reserve, sizeof(reserve)) != 1)
            crypto_fatal("RAND_bytes");
        reserve_pos = 0;
    }
    uint8_t b = reserve[reserve_pos];
    reserve[reserve_pos++] = 0;
    return b;
}

void scramble_generate(uint8_t out[PROTO_SCRAMBLE_LEN])
{
    /* Rejection sampling keeps each byte uniform over 1..127; a 0 would end the C string. */
    for (size_t n = 0; n < PROTO_SCRAMBLE_LEN;) {
        uint8_t b = random_byte() & 0x7f;
        if (b != 0)
            out[n++] = b;
    }
}

void native_password_stage2(const char *password, size_t len, uint8_t out[20])
{
    uint8_t stage1[SHA1_LEN];
    sha1_2(password, len, NULL, 0, stage1);
    sha1_2(stage1, SHA1_LEN, NULL, 0, out);
    OPENSSL_cleanse(stage1, sizeof(stage1));
}

/* Value of one hex digit, or -1. */
static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool native_password_parse_hash(const char *text, uint8_t out[20])
{
    if (!text || text[0] != '*' || strnlen(text, 2 * SHA1_LEN + 2) != 2 * SHA1_LEN + 1)
        return false;
    for (size_t i = 0; i < SHA1_LEN; i++) {
        int hi = hex_value(text[1 + 2 * i]);
        int lo = hex_value(text[2 + 2 * i]);
        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(out, SHA1_LEN);
            return false;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

void native_password_reply(const char *password, size_t len,
                           const uint8_t scramble[PROTO_SCRAMBLE_LEN], uint8_t out[20])
{
    uint8_t stage1[SHA1_LEN], stage2[SHA1_LEN], mask[SHA1_LEN];
    sha1_2(password, len, NULL, 0, stage1);
    sha1_2(stage1, SHA1_LEN, NULL, 0, stage2);
    sha1_2(scramble, PROTO_SCRAMBLE_LEN, stage2, SHA1_LEN, mask);
    for (size_t i = 0; i < SHA1_LEN; i++)
        out[i] = stage1[i] ^ mask[i];
    OPENSSL_cleanse(stage1, sizeof(stage1));
    OPENSSL_cleanse(stage2, sizeof(stage2));
    OPENSSL_cleanse(mask, sizeof(mask));
}

/*
 * The reply XOR SHA1(scramble || stage2) recovers the client's claimed
 * SHA1(password); hashing that once more must give the stored stage2.
 */
bool native_password_verify(const uint8_t stage2[20], const uint8_t scramble[PROTO_SCRAMBLE_LEN],
                            const uint8_t *reply, size_t reply_len)
{
    uint8_t mask[SHA1_LEN], stage1[SHA1_LEN], check[SHA1_LEN];
    if (!reply || reply_len != SHA1_LEN)
        return false;
    sha1_2(scramble, PROTO_SCRAMBLE_LEN, stage2, SHA1_LEN, mask);
    for (size_t i = 0; i < SHA1_LEN; i++)
        stage1[i] = reply[i] ^ mask[i];
    sha1_2(stage1, SHA1_LEN, NULL, 0, check);
    bool ok = CRYPTO_memcmp(check, stage2, SHA1_LEN) == 0;
    OPENSSL_cleanse(mask, sizeof(mask));
    OPENSSL_cleanse(stage1, sizeof(stage1));
    OPENSSL_cleanse(check, sizeof(check));
    return ok;
}
