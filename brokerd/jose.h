/* JOSE encodings: base64url (libsodium), RFC 7638 JWK thumbprints, JWS compact JWTs. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "signer.h"

/* base64url without padding (RFC 7515 §2). Returns a new string or NULL. */
char *b64url_encode(const void *data, size_t len);
/* Decodes unpadded base64url; -EINVAL on any other character or padding. */
int b64url_decode(const char *s, unsigned char **ret, size_t *ret_len);

/* RFC 7638: SHA-256 over the JWK's required members in lexicographic order, no whitespace,
 * base64url. `jwk` must hold kty and that kty's required members. */
int jwk_thumbprint(const json_t *jwk, char **ret);

#define JTI_BYTES 16 /* 128 random bits */

typedef struct MintedToken {
        char *token; /* compact JWS; wipe before freeing */
        char jti[32];
        int64_t iat, exp;
        char token_sha256[65]; /* hex; what the audit record keeps instead of the token */
} MintedToken;

/* Builds and signs {iss, sub, aud, iat, nbf, exp, jti, scope} with key `k`. scope is the
 * space-separated scopes, omitted when there are none. */
int jwt_mint(const SigningKey *k, const char *issuer, const char *subject, const char *audience,
             const char *const *scopes, size_t n_scopes, int64_t now, uint64_t ttl,
             MintedToken *ret);
void minted_token_done(MintedToken *t);
