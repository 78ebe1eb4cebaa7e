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
        int64_t iat, nbf, exp;
        char token_sha256[65]; /* hex; what the audit record keeps instead of the token */
} MintedToken;

/* Builds and signs {iss, sub, aud, iat, nbf, exp, jti, scope} with key `k`: iat = now,
 * exp = now + ttl, and nbf = now - nbf_skew (never below 0), so that a relying party whose clock
 * lags ours by up to nbf_skew accepts a fresh token; iat and exp do not move, the lifetime is
 * not stretched. scope is the space-separated scopes, omitted when there are none. */
int jwt_mint(const SigningKey *k, const char *issuer, const char *subject, const char *audience,
             const char *const *scopes, size_t n_scopes, int64_t now, uint64_t ttl,
             uint64_t nbf_skew, MintedToken *ret);
void minted_token_done(MintedToken *t);
