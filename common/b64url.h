/* base64url without padding (RFC 4648 §5, as JOSE uses it, RFC 7515 §2), through libsodium.
 * The one encoder and decoder of the project: JWS parts, JWK members, the grant log's
 * signatures and public keys. Pure functions; thread-safe. */
#pragma once

#include <stddef.h>

/* A new NUL-terminated string, or NULL when out of memory. */
char *b64url_encode(const void *data, size_t len);

/* Decodes unpadded base64url into a new buffer. -EINVAL on any other character, on padding or
 * trailing bytes; -ENOMEM. */
int b64url_decode(const char *s, unsigned char **ret, size_t *ret_len);

/* Decodes into `out`, which must come out exactly `want` bytes long (keys, signatures).
 * -EINVAL otherwise. */
int b64url_decode_exact(const char *s, unsigned char *out, size_t want);
