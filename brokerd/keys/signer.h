/* A signing key: its algorithm, its public JWK and kid, and its private half. EdDSA keys are
 * libsodium's, in sodium_malloc memory (guard pages, mlock, read-only, wiped on release);
 * ES256 and RS256 keys are OpenSSL EVP_PKEYs whose private numbers live in OpenSSL's secure
 * heap (signer_init()). Keys are reference-counted so a rotation or revocation never frees a
 * key another thread still signs with. */
#pragma once

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "keys/alg.h"

#define KID_LEN       43  /* base64url of a SHA-256 thumbprint */
#define SIGNATURE_MAX 512 /* RS256 with a 4096-bit key */
#define RSA_BITS_MIN  2048u

typedef struct evp_pkey_st EVP_PKEY;

typedef struct SigningKey {
        atomic_uint refs;
        Alg alg;
        char kid[KID_LEN + 1];
        json_t *jwk;           /* public JWK: kty, crv/x/y or n/e, alg, use, kid */
        char *header_b64;      /* base64url of the JWS header, fixed per key */
        unsigned char *secret; /* EdDSA: the 64-byte libsodium key, sodium_malloc'd */
        EVP_PKEY *pkey;        /* ES256, RS256 */
} SigningKey;

/* Sets up OpenSSL's secure heap, so ES256/RS256 private numbers are mlock'ed and wiped like
 * libsodium's. Call once at start, before any key exists. */
int signer_init(void);

/* Generates a new key of `alg`; rsa_bits is used for RS256 only (>= RSA_BITS_MIN). */
int signing_key_generate(Alg alg, unsigned rsa_bits, SigningKey **ret);

/* The private key in the form stored (sealed) on disk: the 32-byte seed for EdDSA, DER for
 * ES256/RS256. In sodium_malloc memory; release with sodium_free(). */
int signing_key_export(const SigningKey *k, unsigned char **ret, size_t *ret_len);

/* Rebuilds a key from that form. -EINVAL if the bytes are not a key of `alg` (a P-256 key for
 * ES256, an RSA key of at least RSA_BITS_MIN bits for RS256). */
int signing_key_import(Alg alg, const unsigned char *priv, size_t len, SigningKey **ret);

/* Signs `msg` as JWS `alg` wants it (ES256: raw r||s); sig must hold SIGNATURE_MAX bytes.
 * Thread-safe. */
int signing_key_sign(const SigningKey *k, const void *msg, size_t len, unsigned char *sig,
                     size_t *ret_siglen);

SigningKey *signing_key_ref(SigningKey *k);
void signing_key_unref(SigningKey *k);
static inline void signing_key_unrefp(SigningKey **k)
{
        if (*k)
                signing_key_unref(*k);
}

/* Where the signing keys come from: the key service, or a test's own keys. `active` returns a
 * new reference (or NULL) and is called from any thread. */
typedef struct KeySource {
        SigningKey *(*active)(void *ctx, Alg alg);
        void *ctx;
} KeySource;
