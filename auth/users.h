/* Local users for client_auth=password: names with native-password hashes, not the upstream's. */
#ifndef CREDPROXY_AUTH_USERS_H
#define CREDPROXY_AUTH_USERS_H

#include <stddef.h>
#include <stdint.h>

struct local_users;

/*
 * Loads "name:*HEX40" lines ('#' comments and blank lines ignored). On error
 * returns NULL and writes "PATH:LINE: reason" into err (never the hash).
 */
struct local_users *local_users_load(const char *path, char *err, size_t errlen);

/* The stored SHA1(SHA1(password)) for name, or NULL when there is no such user. */
const uint8_t *local_users_find(const struct local_users *users, const char *name, size_t name_len);

/*
 * Writes the users-file form of password, "*" + 40 uppercase hex digits of
 * SHA1(SHA1(password)) and a NUL (the same text MySQL's PASSWORD() returns),
 * for credproxy --hash-password.
 */
void local_users_format_hash(const char *password, size_t len, char out[42]);

/* Frees and wipes the hashes. */
void local_users_free(struct local_users *users);

#endif
