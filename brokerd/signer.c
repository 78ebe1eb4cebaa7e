#include "signer.h"

#include <sodium.h>
#include <stdlib.h>

#include "jose.h"
#include "json-util.h"
#include "macro.h"

SigningKey *signing_key_ref(SigningKey *k)
{
        atomic_fetch_add(&k->refs, 1);
        return k;
}

void signing_key_unref(SigningKey *k)
{
        if (atomic_fetch_sub(&k->refs, 1) != 1)
                return;
        if (k->secret)
                sodium_free(k->secret); /* wipes */
        json_decref(k->jwk);
        free(k->header_b64);
        free(k);
}

/* Completes a key whose secret and public JWK members are set: kid, JWK metadata, header. */
static int finish_key(SigningKey *k)
{
        _cleanup_free_ char *kid = NULL, *hdr = NULL;
        _cleanup_(json_decrefp) json_t *h = NULL;
        int r;

        r = jwk_thumbprint(k->jwk, &kid);
        if (r < 0)
                return r;
        if (strlen(kid) != KID_LEN)
                return -EINVAL;
        memcpy(k->kid, kid, KID_LEN + 1);

        if (json_object_set_new(k->jwk, "alg", json_string(alg_to_string(k->alg))) < 0 ||
            json_object_set_new(k->jwk, "use", json_string("sig")) < 0 ||
            json_object_set_new(k->jwk, "kid", json_string(k->kid)) < 0)
                return -ENOMEM;

        h = json_pack("{s:s, s:s, s:s}", "alg", alg_to_string(k->alg), "typ", "JWT", "kid", k->kid);
        if (!h)
                return -ENOMEM;
        hdr = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!hdr)
                return -ENOMEM;
        k->header_b64 = b64url_encode(hdr, strlen(hdr));
        return k->header_b64 ? 0 : -ENOMEM;
}

static int eddsa_from_seed(const unsigned char *seed, size_t seed_len, SigningKey *k)
{
        unsigned char pk[crypto_sign_PUBLICKEYBYTES];
        _cleanup_free_ char *x = NULL;

        if (seed_len != crypto_sign_SEEDBYTES)
                return -EINVAL;
        k->secret = sodium_malloc(crypto_sign_SECRETKEYBYTES);
        if (!k->secret)
                return -ENOMEM;
        k->secret_len = crypto_sign_SECRETKEYBYTES;
        if (crypto_sign_seed_keypair(pk, k->secret, seed) != 0)
                return -EIO;
        /* The key never changes after creation: guard it against stray writes. */
        sodium_mprotect_readonly(k->secret);

        x = b64url_encode(pk, sizeof(pk));
        if (!x)
                return -ENOMEM;
        k->jwk = json_pack("{s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "x", x);
        return k->jwk ? 0 : -ENOMEM;
}

int signing_key_from_seed(Alg alg, const unsigned char *seed, size_t seed_len, SigningKey **ret)
{
        SigningKey *k;
        int r;

        if (alg != ALG_EDDSA)
                return -EOPNOTSUPP;
        k = calloc(1, sizeof(SigningKey));
        if (!k)
                return -ENOMEM;
        atomic_init(&k->refs, 1);
        k->alg = alg;

        r = eddsa_from_seed(seed, seed_len, k);
        if (r >= 0)
                r = finish_key(k);
        if (r < 0) {
                signing_key_unref(k);
                return r;
        }
        *ret = k;
        return 0;
}

int signing_key_generate(Alg alg, SigningKey **ret)
{
        unsigned char *seed;
        int r;

        if (alg != ALG_EDDSA)
                return -EOPNOTSUPP;
        seed = sodium_malloc(crypto_sign_SEEDBYTES);
        if (!seed)
                return -ENOMEM;
        randombytes_buf(seed, crypto_sign_SEEDBYTES);
        r = signing_key_from_seed(alg, seed, crypto_sign_SEEDBYTES, ret);
        sodium_free(seed);
        return r;
}

int signing_key_export_seed(const SigningKey *k, unsigned char **ret, size_t *ret_len)
{
        unsigned char *seed;

        if (k->alg != ALG_EDDSA)
                return -EOPNOTSUPP;
        seed = sodium_malloc(crypto_sign_SEEDBYTES);
        if (!seed)
                return -ENOMEM;
        crypto_sign_ed25519_sk_to_seed(seed, k->secret);
        *ret = seed;
        *ret_len = crypto_sign_SEEDBYTES;
        return 0;
}

int signing_key_sign(const SigningKey *k, const void *msg, size_t len, unsigned char *sig,
                     size_t *ret_siglen)
{
        unsigned long long n;

        if (k->alg != ALG_EDDSA)
                return -EOPNOTSUPP;
        if (crypto_sign_detached(sig, &n, msg, len, k->secret) != 0)
                return -EIO;
        *ret_siglen = (size_t) n;
        return 0;
}
