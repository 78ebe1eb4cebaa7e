/* Signing keys of all three algorithms: the published JWK is exactly what RFC 7517/7518/8037
 * ask for, the kid is its RFC 7638 thumbprint, and every signature verifies the way a relying
 * party checks it: with a public key rebuilt from the JWK alone (libsodium for EdDSA, OpenSSL
 * from x/y or n/e for ES256/RS256), never with the signer's own key object. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <sodium.h>

#include "keys/jwt.h"
#include "macro.h"
#include "keys/signer.h"

static void evp_pkey_freep(EVP_PKEY **p)
{
        EVP_PKEY_free(*p);
}

/* Independent base64url decoding: libsodium, no padding, whole input. */
static unsigned char *unb64(const char *s, size_t *ret_len)
{
        size_t len = strlen(s);
        unsigned char *out = malloc(len + 1);
        const char *end = NULL;

        assert_non_null(out);
        if (sodium_base642bin(out, len + 1, s, len, NULL, ret_len, &end,
                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
            end != s + len)
                fail_msg("not base64url: %s", s);
        return out;
}

static char *sha256_b64url(const char *text)
{
        unsigned char d[crypto_hash_sha256_BYTES];
        char out[sodium_base64_ENCODED_LEN(sizeof(d), sodium_base64_VARIANT_URLSAFE_NO_PADDING)];

        crypto_hash_sha256(d, (const unsigned char *) text, strlen(text));
        sodium_bin2base64(out, sizeof(out), d, sizeof(d), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        return strdup(out);
}

static const char *member(const json_t *jwk, const char *name)
{
        const char *v = json_string_value(json_object_get(jwk, name));

        if (!v)
                fail_msg("JWK has no string member \"%s\"", name);
        return v;
}

static const char *alg_name(Alg a)
{
        return a == ALG_EDDSA ? "EdDSA" : a == ALG_ES256 ? "ES256" : "RS256";
}

/* The JWK holds exactly `names` (plus alg, use and kid), all strings, and nothing private. */
static void assert_jwk_exactly(const SigningKey *k, const char *const *names)
{
        static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
        size_t n = 0;

        for (const char *const *m = names; *m; m++, n++)
                (void) member(k->jwk, *m);
        assert_string_equal(member(k->jwk, "alg"), alg_name(k->alg));
        assert_string_equal(member(k->jwk, "use"), "sig");
        assert_string_equal(member(k->jwk, "kid"), k->kid);
        if (json_object_size(k->jwk) != n + 3) {
                _cleanup_free_ char *dump = json_dumps(k->jwk, JSON_COMPACT);
                fail_msg("JWK has members beyond the required ones: %s", dump);
        }
        for (size_t i = 0; i < ELEMENTSOF(private_members); i++)
                assert_null(json_object_get(k->jwk, private_members[i]));
}

/* RFC 7638 §3.2: the required members, lexicographic order, no whitespace. By hand. */
static void assert_kid_is_thumbprint(const SigningKey *k)
{
        _cleanup_free_ char *canon = NULL, *want = NULL;
        const json_t *j = k->jwk;
        int r;

        switch (k->alg) {
        case ALG_EDDSA:
                r = asprintf(&canon, "{\"crv\":\"%s\",\"kty\":\"%s\",\"x\":\"%s\"}",
                             member(j, "crv"), member(j, "kty"), member(j, "x"));
                break;
        case ALG_ES256:
                r = asprintf(&canon, "{\"crv\":\"%s\",\"kty\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}",
                             member(j, "crv"), member(j, "kty"), member(j, "x"), member(j, "y"));
                break;
        default:
                r = asprintf(&canon, "{\"e\":\"%s\",\"kty\":\"%s\",\"n\":\"%s\"}", member(j, "e"),
                             member(j, "kty"), member(j, "n"));
                break;
        }
        assert_true(r > 0);
        want = sha256_b64url(canon);
        assert_string_equal(k->kid, want);
        assert_int_equal(strlen(k->kid), KID_LEN);
}

/* The JWS header is fixed per key: exactly {alg, typ, kid}. */
static void assert_header(const SigningKey *k)
{
        size_t n;
        _cleanup_free_ unsigned char *raw = unb64(k->header_b64, &n);
        _cleanup_(json_decrefp) json_t *h = json_loadb((const char *) raw, n, 0, NULL);

        assert_non_null(h);
        assert_int_equal(json_object_size(h), 3);
        assert_string_equal(member(h, "alg"), alg_name(k->alg));
        assert_string_equal(member(h, "typ"), "JWT");
        assert_string_equal(member(h, "kid"), k->kid);
}

/* ---- independent verifiers: the public key comes from the JWK only ------------------------ */

static bool verify_eddsa(const json_t *jwk, const void *msg, size_t len, const unsigned char *sig,
                         size_t siglen)
{
        size_t n;
        _cleanup_free_ unsigned char *pk = unb64(member(jwk, "x"), &n);

        assert_int_equal(n, crypto_sign_PUBLICKEYBYTES);
        return siglen == crypto_sign_BYTES && crypto_sign_verify_detached(sig, msg, len, pk) == 0;
}

/* A DER INTEGER from a big-endian unsigned number: minimal, with a 0x00 when the top bit is
 * set (X.690 §8.3). */
static size_t der_integer(const unsigned char *v, size_t n, unsigned char *out)
{
        size_t i = 0;

        while (n > 1 && v[0] == 0) {
                v++;
                n--;
        }
        bool pad = v[0] & 0x80;
        out[i++] = 0x02;
        out[i++] = (unsigned char) (n + pad);
        if (pad)
                out[i++] = 0x00;
        memcpy(out + i, v, n);
        return i + n;
}

/* JWS r||s to the ECDSA-Sig-Value SEQUENCE OpenSSL verifies (RFC 3279 §2.2.3). */
static size_t ecdsa_jws_to_der(const unsigned char *sig, unsigned char *out)
{
        unsigned char body[2 * 35];
        size_t n = der_integer(sig, 32, body);

        n += der_integer(sig + 32, 32, body + n);
        assert_true(n < 128);
        out[0] = 0x30;
        out[1] = (unsigned char) n;
        memcpy(out + 2, body, n);
        return n + 2;
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
        OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
        EVP_PKEY *pkey = NULL;

        assert_non_null(params);
        assert_non_null(ctx);
        assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
        assert_int_equal(EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params), 1);
        EVP_PKEY_CTX_free(ctx);
        OSSL_PARAM_free(params);
        return pkey;
}

static EVP_PKEY *ec_public_from_jwk(const json_t *jwk)
{
        size_t xl, yl;
        _cleanup_free_ unsigned char *x = unb64(member(jwk, "x"), &xl);
        _cleanup_free_ unsigned char *y = unb64(member(jwk, "y"), &yl);
        unsigned char point[65];
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        EVP_PKEY *pkey;

        assert_int_equal(xl, 32);
        assert_int_equal(yl, 32);
        point[0] = 0x04; /* uncompressed (SEC 1 §2.3.3) */
        memcpy(point + 1, x, 32);
        memcpy(point + 33, y, 32);
        assert_non_null(bld);
        assert_int_equal(
            OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0), 1);
        assert_int_equal(
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)),
            1);
        pkey = pkey_from_params("EC", bld);
        OSSL_PARAM_BLD_free(bld);
        return pkey;
}

static EVP_PKEY *rsa_public_from_jwk(const json_t *jwk)
{
        size_t nl, el;
        _cleanup_free_ unsigned char *n = unb64(member(jwk, "n"), &nl);
        _cleanup_free_ unsigned char *e = unb64(member(jwk, "e"), &el);
        BIGNUM *bn = BN_bin2bn(n, (int) nl, NULL), *be = BN_bin2bn(e, (int) el, NULL);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        EVP_PKEY *pkey;

        assert_non_null(bn);
        assert_non_null(be);
        assert_non_null(bld);
        assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn), 1);
        assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be), 1);
        pkey = pkey_from_params("RSA", bld);
        OSSL_PARAM_BLD_free(bld);
        BN_free(bn);
        BN_free(be);
        return pkey;
}

static bool evp_verify(EVP_PKEY *pkey, const void *msg, size_t len, const unsigned char *sig,
                       size_t siglen)
{
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        int ok;

        assert_non_null(ctx);
        assert_int_equal(EVP_DigestVerifyInit_ex(ctx, NULL, "SHA256", NULL, NULL, pkey, NULL), 1);
        if (EVP_PKEY_is_a(pkey, "RSA")) {
                /* RS256 is RSASSA-PKCS1-v1_5 (RFC 7518 §3.3), not PSS: say so, not rely on the
                 * default. */
                EVP_PKEY_CTX *pctx = EVP_MD_CTX_get_pkey_ctx(ctx);
                assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING), 1);
        }
        ok = EVP_DigestVerify(ctx, sig, siglen, msg, len);
        EVP_MD_CTX_free(ctx);
        return ok == 1;
}

static bool verify_es256(const json_t *jwk, const void *msg, size_t len, const unsigned char *sig,
                         size_t siglen)
{
        _cleanup_(evp_pkey_freep) EVP_PKEY *pkey = ec_public_from_jwk(jwk);
        unsigned char der[80];

        if (siglen != 64)
                return false;
        return evp_verify(pkey, msg, len, der, ecdsa_jws_to_der(sig, der));
}

static bool verify_rs256(const json_t *jwk, const void *msg, size_t len, const unsigned char *sig,
                         size_t siglen)
{
        _cleanup_(evp_pkey_freep) EVP_PKEY *pkey = rsa_public_from_jwk(jwk);

        return evp_verify(pkey, msg, len, sig, siglen);
}

/* Verifies as a relying party holding only `jwk` would. */
static bool verify_jwk(Alg alg, const json_t *jwk, const void *msg, size_t len,
                       const unsigned char *sig, size_t siglen)
{
        switch (alg) {
        case ALG_EDDSA:
                return verify_eddsa(jwk, msg, len, sig, siglen);
        case ALG_ES256:
                return verify_es256(jwk, msg, len, sig, siglen);
        default:
                return verify_rs256(jwk, msg, len, sig, siglen);
        }
}

/* Signs a JWS signing input with `k`, checks the length, verifies it against `jwk`, and checks
 * that a changed message or signature does not verify. */
static void sign_and_verify(const SigningKey *k, const json_t *jwk, size_t want_len)
{
        char msg[] = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0";
        unsigned char sig[SIGNATURE_MAX];
        size_t siglen = 0;

        memset(sig, 0xa5, sizeof(sig));
        assert_int_equal(signing_key_sign(k, msg, strlen(msg), sig, &siglen), 0);
        assert_int_equal(siglen, want_len);
        assert_true(verify_jwk(k->alg, jwk, msg, strlen(msg), sig, siglen));

        msg[5] ^= 0x01;
        assert_false(verify_jwk(k->alg, jwk, msg, strlen(msg), sig, siglen));
        msg[5] ^= 0x01;
        sig[siglen / 2] ^= 0x80;
        assert_false(verify_jwk(k->alg, jwk, msg, strlen(msg), sig, siglen));
        sig[siglen / 2] ^= 0x80;
        assert_true(verify_jwk(k->alg, jwk, msg, strlen(msg), sig, siglen));
}

/* Export, import: the same key (kid, JWK, header), and its signatures verify against the JWK
 * published for the original. */
static void assert_export_import(const SigningKey *k, size_t siglen)
{
        _cleanup_(signing_key_unrefp) SigningKey *again = NULL;
        unsigned char *priv = NULL;
        size_t len = 0;

        assert_int_equal(signing_key_export(k, &priv, &len), 0);
        assert_true(len > 0);
        assert_int_equal(signing_key_import(k->alg, priv, len, &again), 0);
        sodium_free(priv);
        assert_int_equal(again->alg, k->alg);
        assert_string_equal(again->kid, k->kid);
        assert_true(json_equal(again->jwk, k->jwk));
        assert_string_equal(again->header_b64, k->header_b64);
        sign_and_verify(again, k->jwk, siglen);
}

/* ---- per algorithm ------------------------------------------------------------------------ */

static void test_eddsa(void **state)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        size_t n;

        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k), 0);
        assert_int_equal(k->alg, ALG_EDDSA);
        /* RFC 8037 §2: kty OKP, crv Ed25519, x the 32-byte public key. */
        assert_jwk_exactly(k, (const char *const[]){"kty", "crv", "x", NULL});
        assert_string_equal(member(k->jwk, "kty"), "OKP");
        assert_string_equal(member(k->jwk, "crv"), "Ed25519");
        free(unb64(member(k->jwk, "x"), &n));
        assert_int_equal(n, 32);
        assert_kid_is_thumbprint(k);
        assert_header(k);
        sign_and_verify(k, k->jwk, crypto_sign_BYTES);
        assert_export_import(k, crypto_sign_BYTES);

        /* The export is the 32-byte seed. */
        unsigned char *seed = NULL;
        assert_int_equal(signing_key_export(k, &seed, &n), 0);
        assert_int_equal(n, crypto_sign_SEEDBYTES);
        sodium_free(seed);
}

static void test_es256(void **state)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        size_t n;

        assert_int_equal(signing_key_generate(ALG_ES256, 0, &k), 0);
        assert_int_equal(k->alg, ALG_ES256);
        /* RFC 7518 §6.2.1: kty EC, crv P-256, x and y each the full 32 bytes. */
        assert_jwk_exactly(k, (const char *const[]){"kty", "crv", "x", "y", NULL});
        assert_string_equal(member(k->jwk, "kty"), "EC");
        assert_string_equal(member(k->jwk, "crv"), "P-256");
        free(unb64(member(k->jwk, "x"), &n));
        assert_int_equal(n, 32);
        free(unb64(member(k->jwk, "y"), &n));
        assert_int_equal(n, 32);
        assert_kid_is_thumbprint(k);
        assert_header(k);
        /* RFC 7518 §3.4: R||S, 64 bytes, not DER. */
        sign_and_verify(k, k->jwk, 64);
        assert_export_import(k, 64);
}

static void test_rs256(void **state)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        size_t n, e_len;

        assert_int_equal(signing_key_generate(ALG_RS256, 2048, &k), 0);
        assert_int_equal(k->alg, ALG_RS256);
        /* RFC 7518 §6.3.1: kty RSA, n and e as minimal big-endian (no leading zero octet). */
        assert_jwk_exactly(k, (const char *const[]){"kty", "n", "e", NULL});
        assert_string_equal(member(k->jwk, "kty"), "RSA");
        _cleanup_free_ unsigned char *nb = unb64(member(k->jwk, "n"), &n);
        _cleanup_free_ unsigned char *eb = unb64(member(k->jwk, "e"), &e_len);
        assert_int_equal(n, 256);
        assert_int_not_equal(nb[0], 0);
        assert_true(nb[0] & 0x80); /* a 2048-bit modulus, not 2047 */
        assert_true(e_len > 0);
        assert_int_not_equal(eb[0], 0);
        assert_true(eb[e_len - 1] & 1); /* odd */
        assert_kid_is_thumbprint(k);
        assert_header(k);
        /* RFC 7518 §3.3: the signature is as long as the modulus. */
        sign_and_verify(k, k->jwk, n);
        assert_export_import(k, n);

        /* RSASSA-PKCS1-v1_5 is deterministic: the same input signs the same. */
        unsigned char s1[SIGNATURE_MAX], s2[SIGNATURE_MAX];
        size_t l1, l2;
        assert_int_equal(signing_key_sign(k, "m", 1, s1, &l1), 0);
        assert_int_equal(signing_key_sign(k, "m", 1, s2, &l2), 0);
        assert_int_equal(l1, l2);
        assert_memory_equal(s1, s2, l1);

        /* Below the minimum is refused at generation. */
        SigningKey *none = (SigningKey *) 0x1;
        assert_int_equal(signing_key_generate(ALG_RS256, 1024, &none), -EINVAL);
        assert_int_equal(signing_key_generate(ALG_RS256, 2047, &none), -EINVAL);
        assert_ptr_equal(none, (SigningKey *) 0x1);
}

/* ECDSA's r and s are below 2^248 once in 256 signatures: the JWS form must still be 64 bytes
 * (left-padded), and the verifier's DER must then be shorter. */
static void test_es256_short_r_s(void **state)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        _cleanup_(evp_pkey_freep) EVP_PKEY *pub = NULL;
        unsigned char sig[SIGNATURE_MAX], der[80];
        unsigned short_seen = 0, i;

        assert_int_equal(signing_key_generate(ALG_ES256, 0, &k), 0);
        pub = ec_public_from_jwk(k->jwk);
        for (i = 0; i < 6000 && short_seen < 2; i++) {
                size_t siglen = 0;
                char msg[32];
                int len = snprintf(msg, sizeof(msg), "message %u", i);

                assert_int_equal(signing_key_sign(k, msg, (size_t) len, sig, &siglen), 0);
                assert_int_equal(siglen, 64);
                if (sig[0] == 0 || sig[32] == 0) {
                        short_seen++;
                        /* The signer's own view agrees with the independent one. */
                        assert_true(
                            evp_verify(pub, msg, (size_t) len, der, ecdsa_jws_to_der(sig, der)));
                } else if (i % 64 == 0)
                        assert_true(
                            evp_verify(pub, msg, (size_t) len, der, ecdsa_jws_to_der(sig, der)));
        }
        if (short_seen == 0)
                fail_msg("no signature with a short r or s in %u tries", i);
}

/* A coordinate with a leading zero octet is still encoded as 32 bytes (RFC 7518 §6.2.1.2). */
static void test_es256_short_coordinates(void **state)
{
        for (int i = 0; i < 4000; i++) {
                _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
                size_t xl, yl;

                assert_int_equal(signing_key_generate(ALG_ES256, 0, &k), 0);
                _cleanup_free_ unsigned char *x = unb64(member(k->jwk, "x"), &xl);
                _cleanup_free_ unsigned char *y = unb64(member(k->jwk, "y"), &yl);
                assert_int_equal(xl, 32);
                assert_int_equal(yl, 32);
                if (x[0] == 0 || y[0] == 0) {
                        assert_kid_is_thumbprint(k);
                        sign_and_verify(k, k->jwk, 64);
                        assert_export_import(k, 64);
                        return;
                }
        }
        fail_msg("no P-256 key with a short coordinate in 4000 tries");
}

/* ---- import refuses what is not a key of the algorithm ------------------------------------ */

static void assert_import_refused(Alg alg, const unsigned char *der, size_t len)
{
        SigningKey *k = (SigningKey *) 0x1;

        assert_int_equal(signing_key_import(alg, der, len, &k), -EINVAL);
        assert_ptr_equal(k, (SigningKey *) 0x1);
}

static unsigned char *der_of(EVP_PKEY *pkey, size_t *ret_len)
{
        unsigned char *der = NULL;
        int n = i2d_PrivateKey(pkey, &der);

        assert_true(n > 0);
        *ret_len = (size_t) n;
        return der;
}

static void openssl_freep(unsigned char **p)
{
        OPENSSL_free(*p);
}

static void test_import_refuses_wrong_keys(void **state)
{
        _cleanup_(evp_pkey_freep) EVP_PKEY *p384 = EVP_EC_gen("P-384");
        _cleanup_(evp_pkey_freep) EVP_PKEY *rsa1024 = EVP_RSA_gen(1024);
        _cleanup_(evp_pkey_freep) EVP_PKEY *p256 = EVP_EC_gen("P-256");
        _cleanup_(evp_pkey_freep) EVP_PKEY *rsa2048 = EVP_RSA_gen(2048);
        _cleanup_(openssl_freep) unsigned char *d384 = NULL, *d1024 = NULL, *d256 = NULL,
                                               *d2048 = NULL;
        size_t l384, l1024, l256, l2048;

        assert_non_null(p384);
        assert_non_null(rsa1024);
        assert_non_null(p256);
        assert_non_null(rsa2048);
        d384 = der_of(p384, &l384);
        d1024 = der_of(rsa1024, &l1024);
        d256 = der_of(p256, &l256);
        d2048 = der_of(rsa2048, &l2048);

        /* The controls: the right kinds are accepted, so the refusals below are about kind. */
        SigningKey *ok = NULL;
        assert_int_equal(signing_key_import(ALG_ES256, d256, l256, &ok), 0);
        sign_and_verify(ok, ok->jwk, 64);
        signing_key_unref(ok);
        assert_int_equal(signing_key_import(ALG_RS256, d2048, l2048, &ok), 0);
        sign_and_verify(ok, ok->jwk, 256);
        signing_key_unref(ok);

        assert_import_refused(ALG_ES256, d384, l384);   /* P-384 is ES384's */
        assert_import_refused(ALG_RS256, d1024, l1024); /* below 2048 bits */
        assert_import_refused(ALG_ES256, d2048, l2048);
        assert_import_refused(ALG_RS256, d256, l256);
        assert_import_refused(ALG_RS256, d384, l384);

        /* Truncated DER, DER with trailing bytes, nothing at all. */
        assert_import_refused(ALG_ES256, d256, l256 - 1);
        assert_import_refused(ALG_RS256, d2048, l2048 / 2);
        assert_import_refused(ALG_ES256, d256, 0);
        _cleanup_free_ unsigned char *longer = malloc(l256 + 1);
        assert_non_null(longer);
        memcpy(longer, d256, l256);
        longer[l256] = 0;
        assert_import_refused(ALG_ES256, longer, l256 + 1);

        /* DER is not an EdDSA seed. */
        assert_import_refused(ALG_EDDSA, d256, l256);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_eddsa),
            cmocka_unit_test(test_es256),
            cmocka_unit_test(test_rs256),
            cmocka_unit_test(test_es256_short_r_s),
            cmocka_unit_test(test_es256_short_coordinates),
            cmocka_unit_test(test_import_refuses_wrong_keys),
        };

        if (sodium_init() < 0 || signer_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
