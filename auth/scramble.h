/* Challenge-response hashes of mysql_native_password and caching_sha2_password. */
#ifndef CREDPROXY_AUTH_SCRAMBLE_H
#define CREDPROXY_AUTH_SCRAMBLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/proto.h"

/* Fills out with random bytes in 1..127 (no NUL, so it survives as a C string). */
void scramble_generate(uint8_t out[PROTO_SCRAMBLE_LEN]);

/* SHA1(SHA1(password)): what mysql.user stores for mysql_native_password. */
void native_password_stage2(const char *password, size_t len, uint8_t out[20]);

/* Parses "*" + 40 hex digits (the PASSWORD() form) into stage2. */
bool native_password_parse_hash(const char *text, uint8_t out[20])
    __attribute__((warn_unused_result));

/* The client's answer: SHA1(password) XOR SHA1(scramble + stage2). */
void native_password_reply(const char *password, size_t len,
                           const uint8_t scramble[PROTO_SCRAMBLE_LEN], uint8_t out[20]);

/* Checks a client's 20-byte answer against stage2 in constant time. */
bool native_password_verify(const uint8_t stage2[20], const uint8_t scramble[PROTO_SCRAMBLE_LEN],
                            const uint8_t *reply, size_t reply_len)
    __attribute__((warn_unused_result));

#endif
