/* A signing key: its algorithm, its public JWK and kid, and its private half in libsodium
 * secure memory (guard pages, mlock, wiped on release). Keys are reference-counted so a
 * rotation or revocation never frees a key another part still signs with. */
#pragma once

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define KID_LEN       43 /* base64url of a SHA-256 thumbprint */
#define SIGNATURE_MAX 512

typedef struct SigningKey {
        atomic_uint refs;
        Alg alg;
        char kid[KID_LEN + 1];
        json_t *jwk;           /* public JWK: kty, crv/x, alg, use, kid */
        char *header_b64;      /* base64url of the JWS header, fixed per key */
        unsigned char *secret; /* sodium_malloc'd; for EdDSA the 64-byte libsodium key */
        size_t secret_len;
} SigningKey;

/* Generates a new key of `alg`. */
int signing_key_generate(Alg alg, SigningKey **ret);

/* Rebuilds a key from its private seed (the form stored on disk). The seed is copied. */
int signing_key_from_seed(Alg alg, const unsigned char *seed, size_t seed_len, SigningKey **ret);

/* The private seed to store (in secure memory; release with sodium_free). */
int signing_key_export_seed(const SigningKey *k, unsigned char **ret, size_t *ret_len);

/* Signs `msg`; sig must hold SIGNATURE_MAX bytes. Thread-safe. */
int signing_key_sign(const SigningKey *k, const void *msg, size_t len, unsigned char *sig,
                     size_t *ret_siglen);

SigningKey *signing_key_ref(SigningKey *k);
void signing_key_unref(SigningKey *k);
static inline void signing_key_unrefp(SigningKey **k)
{
        if (*k)
                signing_key_unref(*k);
}
