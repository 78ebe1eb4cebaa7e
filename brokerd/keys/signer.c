#include "keys/signer.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <sodium.h>
#include <stdlib.h>
#include <stdbool.h>

#include "b64url.h"
#include "jwk.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"

/* Room for every ES256/RS256 key the daemon holds at once (active, next and one being made
 * per algorithm); an RSA-4096 key's private numbers take about 2 KiB. */
#define SECURE_HEAP_SIZE (1u << 20)
#define ES256_COORD      32

int signer_init(void)
{
        if (CRYPTO_secure_malloc_initialized())
                return 0;
        switch (CRYPTO_secure_malloc_init(SECURE_HEAP_SIZE, 64)) {
        case 1:
                return 0;
        case 2: /* usable, but mlock() failed: pages may be swapped */
                log_warning("OpenSSL secure heap is not locked in memory (RLIMIT_MEMLOCK?)");
                return 0;
        default:
                return log_error_errno(ENOMEM, "Cannot set up OpenSSL's secure heap");
        }
}

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
        EVP_PKEY_free(k->pkey);         /* private numbers are in the secure heap: wiped */
        json_decref(k->jwk);
        free(k->header_b64);
        free(k);
}

/* Completes a key whose private half and public JWK members are set: kid, JWK metadata, the
 * JWS header. */
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

/* A big-endian number as base64url: padded to `pad` bytes (EC coordinates) or, with pad 0,
 * minimal (RSA n and e, as RFC 7518 §6.3.1 asks). */
static char *bn_b64url(EVP_PKEY *pkey, const char *param, int pad)
{
        BIGNUM *bn = NULL;
        unsigned char buf[1024];
        char *out = NULL;
        int n;

        if (!EVP_PKEY_get_bn_param(pkey, param, &bn))
                return NULL;
        n = pad ? (BN_num_bytes(bn) <= pad ? BN_bn2binpad(bn, buf, pad) : -1)
                : (BN_num_bytes(bn) <= (int) sizeof(buf) ? BN_bn2bin(bn, buf) : -1);
        if (n > 0)
                out = b64url_encode(buf, (size_t) n);
        BN_free(bn);
        return out;
}

static int evp_public_jwk(SigningKey *k)
{
        _cleanup_free_ char *a = NULL, *b = NULL;

        if (k->alg == ALG_ES256) {
                a = bn_b64url(k->pkey, OSSL_PKEY_PARAM_EC_PUB_X, ES256_COORD);
                b = bn_b64url(k->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, ES256_COORD);
                if (!a || !b)
                        return -EINVAL;
                k->jwk =
                    json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", a, "y", b);
        } else {
                a = bn_b64url(k->pkey, OSSL_PKEY_PARAM_RSA_N, 0);
                b = bn_b64url(k->pkey, OSSL_PKEY_PARAM_RSA_E, 0);
                if (!a || !b)
                        return -EINVAL;
                k->jwk = json_pack("{s:s, s:s, s:s}", "kty", "RSA", "n", a, "e", b);
        }
        return k->jwk ? 0 : -ENOMEM;
}

/* Whether an OpenSSL key is what `alg` needs. */
static bool evp_key_fits(Alg alg, EVP_PKEY *pkey)
{
        char group[64];

        if (alg == ALG_ES256)
                return EVP_PKEY_is_a(pkey, "EC") &&
                       EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                                      sizeof(group), NULL) &&
                       (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0);
        return EVP_PKEY_is_a(pkey, "RSA") && EVP_PKEY_get_bits(pkey) >= (int) RSA_BITS_MIN;
}

static SigningKey *key_new(Alg alg)
{
        SigningKey *k = calloc(1, sizeof(SigningKey));

        if (k) {
                atomic_init(&k->refs, 1);
                k->alg = alg;
        }
        return k;
}

/* Takes over `pkey`. */
static int evp_key_finish(Alg alg, EVP_PKEY *pkey, SigningKey **ret)
{
        SigningKey *k = key_new(alg);
        int r;

        if (!k) {
                EVP_PKEY_free(pkey);
                return -ENOMEM;
        }
        k->pkey = pkey;
        r = evp_key_fits(alg, pkey) ? evp_public_jwk(k) : -EINVAL;
        if (r >= 0)
                r = finish_key(k);
        if (r < 0) {
                signing_key_unref(k);
                return r;
        }
        *ret = k;
        return 0;
}

int signing_key_import(Alg alg, const unsigned char *priv, size_t len, SigningKey **ret)
{
        SigningKey *k;
        int r;

        if (alg == ALG_EDDSA) {
                k = key_new(alg);
                if (!k)
                        return -ENOMEM;
                r = eddsa_from_seed(priv, len, k);
                if (r >= 0)
                        r = finish_key(k);
                if (r < 0) {
                        signing_key_unref(k);
                        return r;
                }
                *ret = k;
                return 0;
        }
        if (alg != ALG_ES256 && alg != ALG_RS256)
                return -EOPNOTSUPP;
        const unsigned char *p = priv;
        EVP_PKEY *pkey =
            d2i_PrivateKey(alg == ALG_ES256 ? EVP_PKEY_EC : EVP_PKEY_RSA, NULL, &p, (long) len);
        if (!pkey || p != priv + len) {
                EVP_PKEY_free(pkey);
                return -EINVAL;
        }
        return evp_key_finish(alg, pkey, ret);
}

int signing_key_generate(Alg alg, unsigned rsa_bits, SigningKey **ret)
{
        unsigned char *seed;
        EVP_PKEY *pkey;
        int r;

        switch (alg) {
        case ALG_EDDSA:
                seed = sodium_malloc(crypto_sign_SEEDBYTES);
                if (!seed)
                        return -ENOMEM;
                randombytes_buf(seed, crypto_sign_SEEDBYTES);
                r = signing_key_import(alg, seed, crypto_sign_SEEDBYTES, ret);
                sodium_free(seed);
                return r;
        case ALG_ES256:
                pkey = EVP_EC_gen("P-256");
                break;
        case ALG_RS256:
                if (rsa_bits < RSA_BITS_MIN)
                        return -EINVAL;
                pkey = EVP_RSA_gen(rsa_bits);
                break;
        default:
                return -EOPNOTSUPP;
        }
        if (!pkey)
                return -EIO;
        return evp_key_finish(alg, pkey, ret);
}

int signing_key_export(const SigningKey *k, unsigned char **ret, size_t *ret_len)
{
        unsigned char *buf, *p;
        int n;

        if (k->alg == ALG_EDDSA) {
                buf = sodium_malloc(crypto_sign_SEEDBYTES);
                if (!buf)
                        return -ENOMEM;
                crypto_sign_ed25519_sk_to_seed(buf, k->secret);
                *ret = buf;
                *ret_len = crypto_sign_SEEDBYTES;
                return 0;
        }
        /* i2d writes straight into our buffer: the DER never sits in ordinary heap. */
        n = i2d_PrivateKey(k->pkey, NULL);
        if (n <= 0)
                return -EIO;
        buf = p = sodium_malloc((size_t) n);
        if (!buf)
                return -ENOMEM;
        if (i2d_PrivateKey(k->pkey, &p) != n) {
                sodium_free(buf);
                return -EIO;
        }
        *ret = buf;
        *ret_len = (size_t) n;
        return 0;
}

/* JWS ES256 wants r||s, 32 bytes each, where OpenSSL produces DER. */
static int ecdsa_der_to_jws(const unsigned char *der, size_t len, unsigned char *sig)
{
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long) len);
        const BIGNUM *r, *s;
        int ok;

        if (!es)
                return -EIO;
        ECDSA_SIG_get0(es, &r, &s);
        ok = BN_bn2binpad(r, sig, ES256_COORD) == ES256_COORD &&
             BN_bn2binpad(s, sig + ES256_COORD, ES256_COORD) == ES256_COORD;
        ECDSA_SIG_free(es);
        return ok ? 0 : -EIO;
}

int signing_key_sign(const SigningKey *k, const void *msg, size_t len, unsigned char *sig,
                     size_t *ret_siglen)
{
        unsigned long long n;
        unsigned char der[SIGNATURE_MAX];
        size_t dlen = sizeof(der);
        EVP_MD_CTX *ctx;
        int r = -EIO;

        if (k->alg == ALG_EDDSA) {
                if (crypto_sign_detached(sig, &n, msg, len, k->secret) != 0)
                        return -EIO;
                *ret_siglen = (size_t) n;
                return 0;
        }
        ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, k->pkey, NULL) == 1 &&
            EVP_DigestSign(ctx, k->alg == ALG_ES256 ? der : sig, &dlen, msg, len) == 1) {
                if (k->alg == ALG_ES256) {
                        r = ecdsa_der_to_jws(der, dlen, sig);
                        dlen = 2 * ES256_COORD;
                } else
                        r = 0;
        }
        EVP_MD_CTX_free(ctx);
        if (r >= 0)
                *ret_siglen = dlen;
        return r;
}
