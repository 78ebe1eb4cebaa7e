/* JWS compact JWTs: the claims the broker signs, minted with a SigningKey. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "keys/signer.h"

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
