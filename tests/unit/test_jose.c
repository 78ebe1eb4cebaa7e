/* JOSE: base64url, RFC 7638 thumbprints and the JWTs brokerd signs. Tokens are taken apart and
 * checked with libsodium and jansson directly, not with the code that made them. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "b64url.h"
#include "jwk.h"
#include "keys/jwt.h"
#include "macro.h"
#include "keys/signer.h"

/* Independent base64url decoding: libsodium, no padding, whole input. */
static unsigned char *unb64(const char *s, size_t len, size_t *ret_len)
{
        unsigned char *out = malloc(len + 1);
        const char *end = NULL;

        assert_non_null(out);
        if (sodium_base642bin(out, len + 1, s, len, NULL, ret_len, &end,
                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
            end != s + len)
                fail_msg("not base64url: %.*s", (int) len, s);
        out[*ret_len] = 0;
        return out;
}

static json_t *unb64_json(const char *s, size_t len)
{
        size_t n;
        _cleanup_free_ unsigned char *raw = unb64(s, len, &n);
        json_error_t e;
        json_t *j = json_loadb((const char *) raw, n, JSON_REJECT_DUPLICATES, &e);

        if (!j)
                fail_msg("not JSON (%s): %s", e.text, raw);
        assert_true(json_is_object(j));
        return j;
}

static char *sha256_b64url(const char *text)
{
        unsigned char d[crypto_hash_sha256_BYTES];
        char out[sodium_base64_ENCODED_LEN(sizeof(d), sodium_base64_VARIANT_URLSAFE_NO_PADDING)];

        crypto_hash_sha256(d, (const unsigned char *) text, strlen(text));
        sodium_bin2base64(out, sizeof(out), d, sizeof(d), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        return strdup(out);
}

/* ---- base64url ---------------------------------------------------------------------------- */

static void test_b64url_round_trip(void **state)
{
        unsigned char data[300];

        for (size_t i = 0; i < sizeof(data); i++)
                data[i] = (unsigned char) (i * 7 + 3);
        /* Every length modulo 3, and all byte values including 0xfb/0xff (which need - and _). */
        for (size_t len = 0; len <= sizeof(data); len++) {
                _cleanup_free_ char *s = b64url_encode(data, len);
                assert_non_null(s);
                assert_int_equal(strlen(s), (len * 4 + 2) / 3);
                assert_null(strpbrk(s, "=+/"));
                unsigned char *back = NULL;
                size_t n = 0;
                assert_int_equal(b64url_decode(s, &back, &n), 0);
                assert_int_equal(n, len);
                assert_memory_equal(back, data, len);
                free(back);
        }

        unsigned char ff[] = {0xfb, 0xff, 0xbf};
        _cleanup_free_ char *s = b64url_encode(ff, sizeof(ff));
        assert_string_equal(s, "-_-_");

        /* RFC 4648 §10 vectors, without padding. */
        static const struct {
                const char *in, *out;
        } v[] = {{"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
                 {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
        for (size_t i = 0; i < ELEMENTSOF(v); i++) {
                _cleanup_free_ char *e = b64url_encode(v[i].in, strlen(v[i].in));
                assert_string_equal(e, v[i].out);
        }
}

static void test_b64url_rejects(void **state)
{
        static const char *const bad[] = {
            "Zg==",      "Zm8=",  "Zg=",  /* padding */
            "-_+/",      "ab+c",  "ab/c", /* standard alphabet */
            "Zm9v YmFy", " Zm9v", "Zm9v\n", "Zm9v.",
            "Zm9v*",     "Z",     "Zm9vY", /* 5 chars: no whole byte in the last one */
            "Zh", /* non-zero trailing bits: not the canonical encoding of "f" */
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                unsigned char *out = (unsigned char *) 0x1;
                size_t n = 77;
                int r = b64url_decode(bad[i], &out, &n);
                if (r != -EINVAL)
                        fail_msg("\"%s\" decoded (r=%d)", bad[i], r);
                /* untouched on failure */
                assert_ptr_equal(out, (unsigned char *) 0x1);
                assert_int_equal(n, 77);
        }

        unsigned char *out = NULL;
        size_t n = 1;
        assert_int_equal(b64url_decode("", &out, &n), 0);
        assert_int_equal(n, 0);
        free(out);
}

/* ---- thumbprints -------------------------------------------------------------------------- */

/* RFC 7638 §3.1. */
static const char rfc7638_n[] =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJE"
    "CPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2"
    "QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh"
    "6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

static void test_thumbprint_rfc7638(void **state)
{
        _cleanup_(json_decrefp) json_t *jwk =
            json_pack("{s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "n", rfc7638_n, "e", "AQAB", "alg",
                      "RS256", "kid", "2011-04-29");
        _cleanup_free_ char *tp = NULL;

        assert_non_null(jwk);
        assert_int_equal(jwk_thumbprint(jwk, &tp), 0);
        assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");

        /* Without the optional members, in another order: the same thumbprint. */
        _cleanup_(json_decrefp) json_t *bare =
            json_pack("{s:s, s:s, s:s}", "n", rfc7638_n, "e", "AQAB", "kty", "RSA");
        _cleanup_free_ char *tp2 = NULL;
        assert_int_equal(jwk_thumbprint(bare, &tp2), 0);
        assert_string_equal(tp2, tp);
}

static void test_thumbprint_okp_independent(void **state)
{
        static const char x[] = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"; /* RFC 8037 A.2 */
        _cleanup_(json_decrefp) json_t *jwk =
            json_pack("{s:s, s:s, s:s, s:s, s:s}", "x", x, "use", "sig", "kty", "OKP", "crv",
                      "Ed25519", "kid", "ignored");
        _cleanup_free_ char *tp = NULL, *canon = NULL, *want = NULL;

        assert_int_equal(jwk_thumbprint(jwk, &tp), 0);
        assert_true(asprintf(&canon, "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", x) > 0);
        want = sha256_b64url(canon);
        assert_string_equal(tp, want);
        /* RFC 8037 A.3 gives this key's thumbprint. */
        assert_string_equal(tp, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");

        /* EC: crv, kty, x, y. */
        _cleanup_(json_decrefp) json_t *ec = json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv",
                                                       "P-256", "x", "AAAA", "y", "BBBB");
        _cleanup_free_ char *tpec = NULL, *want_ec = NULL;
        assert_int_equal(jwk_thumbprint(ec, &tpec), 0);
        want_ec = sha256_b64url("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"AAAA\",\"y\":\"BBBB\"}");
        assert_string_equal(tpec, want_ec);
}

static void test_thumbprint_rejects(void **state)
{
        static const char *const bad[] = {
            "{}",
            "{\"kty\": \"oct\", \"k\": \"AAAA\"}",
            "{\"kty\": 1, \"crv\": \"Ed25519\", \"x\": \"AAAA\"}",
            "{\"kty\": \"OKP\", \"crv\": \"Ed25519\"}",
            "{\"kty\": \"OKP\", \"x\": \"AAAA\"}",
            "{\"kty\": \"OKP\", \"crv\": \"Ed25519\", \"x\": 5}",
            "{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AAAA\"}",
            "{\"kty\": \"RSA\", \"n\": \"AAAA\"}",
            "{\"kty\": \"RSA\", \"n\": \"AAAA\", \"e\": null}",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(json_decrefp) json_t *j = json_loads(bad[i], 0, NULL);
                char *tp = (char *) 0x1;
                assert_non_null(j);
                if (jwk_thumbprint(j, &tp) != -EINVAL)
                        fail_msg("thumbprint of %s not refused", bad[i]);
                assert_ptr_equal(tp, (char *) 0x1);
        }
}

/* ---- keys --------------------------------------------------------------------------------- */

static void test_key_generate(void **state)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        _cleanup_free_ char *canon = NULL, *want = NULL;

        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k), 0);
        assert_int_equal(k->alg, ALG_EDDSA);
        assert_int_equal(strlen(k->kid), KID_LEN);

        /* Public JWK: kty OKP, crv Ed25519, a 32-byte x, and alg/use/kid for JWKS consumers. */
        const char *x = json_string_value(json_object_get(k->jwk, "x"));
        assert_non_null(x);
        size_t n;
        _cleanup_free_ unsigned char *pk = unb64(x, strlen(x), &n);
        assert_int_equal(n, crypto_sign_PUBLICKEYBYTES);
        assert_string_equal(json_string_value(json_object_get(k->jwk, "kty")), "OKP");
        assert_string_equal(json_string_value(json_object_get(k->jwk, "crv")), "Ed25519");
        assert_string_equal(json_string_value(json_object_get(k->jwk, "alg")), "EdDSA");
        assert_string_equal(json_string_value(json_object_get(k->jwk, "use")), "sig");
        assert_string_equal(json_string_value(json_object_get(k->jwk, "kid")), k->kid);
        /* No private member ("d") in what is published. */
        assert_null(json_object_get(k->jwk, "d"));
        assert_int_equal(json_object_size(k->jwk), 6);

        /* kid is the RFC 7638 thumbprint, recomputed here by hand. */
        assert_true(asprintf(&canon, "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", x) > 0);
        want = sha256_b64url(canon);
        assert_string_equal(k->kid, want);

        /* The secret matches the published key. */
        unsigned char derived[crypto_sign_PUBLICKEYBYTES];
        crypto_sign_ed25519_sk_to_pk(derived, k->secret);
        assert_memory_equal(derived, pk, sizeof(derived));

        /* Two keys differ. */
        _cleanup_(signing_key_unrefp) SigningKey *k2 = NULL;
        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k2), 0);
        assert_string_not_equal(k->kid, k2->kid);
}

static void test_key_from_seed(void **state)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL, *again = NULL;
        unsigned char *seed = NULL;
        size_t seed_len = 0;

        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k), 0);
        assert_int_equal(signing_key_export(k, &seed, &seed_len), 0);
        assert_int_equal(seed_len, crypto_sign_SEEDBYTES);
        assert_int_equal(signing_key_import(ALG_EDDSA, seed, seed_len, &again), 0);
        assert_string_equal(again->kid, k->kid);
        assert_string_equal(again->header_b64, k->header_b64);
        assert_true(json_equal(again->jwk, k->jwk));

        /* The same seed signs the same way (Ed25519 is deterministic). */
        unsigned char s1[SIGNATURE_MAX], s2[SIGNATURE_MAX];
        size_t l1, l2;
        assert_int_equal(signing_key_sign(k, "msg", 3, s1, &l1), 0);
        assert_int_equal(signing_key_sign(again, "msg", 3, s2, &l2), 0);
        assert_int_equal(l1, crypto_sign_BYTES);
        assert_int_equal(l2, l1);
        assert_memory_equal(s1, s2, l1);

        /* Wrong seed lengths are refused and nothing is returned. */
        SigningKey *none = (SigningKey *) 0x1;
        assert_int_equal(signing_key_import(ALG_EDDSA, seed, seed_len - 1, &none), -EINVAL);
        assert_int_equal(signing_key_import(ALG_EDDSA, seed, 0, &none), -EINVAL);
        unsigned char big[crypto_sign_SECRETKEYBYTES] = {};
        assert_int_equal(signing_key_import(ALG_EDDSA, big, sizeof(big), &none), -EINVAL);
        assert_ptr_equal(none, (SigningKey *) 0x1);
        sodium_free(seed);

        /* RFC 8032 §7.1 test 1: a known seed gives the known public key. */
        static const unsigned char seed1[32] = {0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60,
                                                0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
                                                0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19,
                                                0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60};
        _cleanup_(signing_key_unrefp) SigningKey *known = NULL;
        assert_int_equal(signing_key_import(ALG_EDDSA, seed1, sizeof(seed1), &known), 0);
        assert_string_equal(json_string_value(json_object_get(known->jwk, "x")),
                            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_string_equal(known->kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

static void test_key_wrong_material(void **state)
{
        SigningKey *k = (SigningKey *) 0x1;
        unsigned char seed[32] = {};

        /* an EdDSA seed is not an ES256 or RS256 key; RSA below 2048 bits is refused */
        assert_int_equal(signing_key_import(ALG_ES256, seed, sizeof(seed), &k), -EINVAL);
        assert_int_equal(signing_key_import(ALG_RS256, seed, sizeof(seed), &k), -EINVAL);
        assert_int_equal(signing_key_generate(ALG_RS256, 1024, &k), -EINVAL);
        assert_int_equal(signing_key_generate(_ALG_MAX, 0, &k), -EOPNOTSUPP);
        assert_ptr_equal(k, (SigningKey *) 0x1);
}

static void test_key_refcount(void **state)
{
        SigningKey *k = NULL;

        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k), 0);
        assert_ptr_equal(signing_key_ref(k), k);
        signing_key_unref(k);
        /* Still usable after one of two references is dropped (ASan would catch a free). */
        assert_int_equal(strlen(k->kid), KID_LEN);
        signing_key_unref(k);
}

/* ---- tokens ------------------------------------------------------------------------------- */

typedef struct Parts {
        const char *h, *p, *s;
        size_t hl, pl, sl;
} Parts;

static Parts split(const char *tok)
{
        Parts x = {.h = tok};
        const char *d1 = strchr(tok, '.');
        assert_non_null(d1);
        const char *d2 = strchr(d1 + 1, '.');
        assert_non_null(d2);
        assert_null(strchr(d2 + 1, '.'));
        x.hl = (size_t) (d1 - tok);
        x.p = d1 + 1;
        x.pl = (size_t) (d2 - x.p);
        x.s = d2 + 1;
        x.sl = strlen(x.s);
        assert_true(x.hl > 0 && x.pl > 0 && x.sl > 0);
        /* Only the base64url alphabet in each part. */
        for (const char *c = tok; *c; c++)
                if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.",
                            *c))
                        fail_msg("character '%c' in token", *c);
        return x;
}

static void verify_signature(const SigningKey *k, const char *tok, const Parts *x)
{
        /* The public key as a relying party gets it: from the JWK's "x". */
        const char *xs = json_string_value(json_object_get(k->jwk, "x"));
        size_t pkl, sigl;
        _cleanup_free_ unsigned char *pk = unb64(xs, strlen(xs), &pkl);
        _cleanup_free_ unsigned char *sig = unb64(x->s, x->sl, &sigl);

        assert_int_equal(pkl, crypto_sign_PUBLICKEYBYTES);
        assert_int_equal(sigl, crypto_sign_BYTES);
        assert_int_equal(
            crypto_sign_verify_detached(sig, (const unsigned char *) tok, x->hl + 1 + x->pl, pk),
            0);

        /* A changed payload no longer verifies. */
        _cleanup_free_ char *copy = strdup(tok);
        copy[x->hl + 1 + x->pl / 2] ^= 0x01;
        assert_int_not_equal(
            crypto_sign_verify_detached(sig, (const unsigned char *) copy, x->hl + 1 + x->pl, pk),
            0);
}

static void test_jwt_mint(void **state)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        MintedToken t = {};
        const char *const scopes[] = {"read", "write", "admin:x"};
        const int64_t now = 1795315867;

        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k), 0);
        assert_int_equal(jwt_mint(k, "https://broker.example", "spiffe://example.org/web",
                                  "https://api.example.com", scopes, 3, now, 900, 0, &t),
                         0);
        assert_non_null(t.token);
        Parts x = split(t.token);

        /* Header: exactly alg, typ, kid. */
        _cleanup_(json_decrefp) json_t *h = unb64_json(x.h, x.hl);
        assert_int_equal(json_object_size(h), 3);
        assert_string_equal(json_string_value(json_object_get(h, "alg")), "EdDSA");
        assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
        assert_string_equal(json_string_value(json_object_get(h, "kid")), k->kid);
        _cleanup_free_ char *canon = NULL, *want_kid = NULL;
        const char *xs = json_string_value(json_object_get(k->jwk, "x"));
        assert_true(asprintf(&canon, "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", xs) > 0);
        want_kid = sha256_b64url(canon);
        assert_string_equal(json_string_value(json_object_get(h, "kid")), want_kid);

        /* Claims. */
        _cleanup_(json_decrefp) json_t *c = unb64_json(x.p, x.pl);
        assert_int_equal(json_object_size(c), 8);
        assert_string_equal(json_string_value(json_object_get(c, "iss")), "https://broker.example");
        assert_string_equal(json_string_value(json_object_get(c, "sub")),
                            "spiffe://example.org/web");
        /* aud is one string, not an array. */
        assert_true(json_is_string(json_object_get(c, "aud")));
        assert_string_equal(json_string_value(json_object_get(c, "aud")),
                            "https://api.example.com");
        assert_true(json_is_integer(json_object_get(c, "iat")));
        assert_true(json_is_integer(json_object_get(c, "nbf")));
        assert_true(json_is_integer(json_object_get(c, "exp")));
        assert_int_equal(json_integer_value(json_object_get(c, "iat")), now);
        assert_int_equal(json_integer_value(json_object_get(c, "nbf")), now);
        assert_int_equal(json_integer_value(json_object_get(c, "exp")), now + 900);
        assert_string_equal(json_string_value(json_object_get(c, "scope")), "read write admin:x");

        const char *jti = json_string_value(json_object_get(c, "jti"));
        assert_non_null(jti);
        size_t jn;
        _cleanup_free_ unsigned char *jraw = unb64(jti, strlen(jti), &jn);
        assert_int_equal(jn, JTI_BYTES);
        assert_int_equal(jn, 16);

        /* What the caller and the audit record get. */
        assert_string_equal(t.jti, jti);
        assert_int_equal(t.iat, now);
        assert_int_equal(t.nbf, now);
        assert_int_equal(t.exp, now + 900);

        verify_signature(k, t.token, &x);

        /* token_sha256 is the hex SHA-256 of the whole compact token. */
        unsigned char d[crypto_hash_sha256_BYTES];
        char hex[sizeof(d) * 2 + 1];
        crypto_hash_sha256(d, (const unsigned char *) t.token, strlen(t.token));
        sodium_bin2hex(hex, sizeof(hex), d, sizeof(d));
        assert_string_equal(t.token_sha256, hex);
        assert_int_equal(strlen(t.token_sha256), 64);

        minted_token_done(&t);
        assert_null(t.token);
}

static void test_jwt_no_scopes(void **state)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        MintedToken t = {};

        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k), 0);
        assert_int_equal(jwt_mint(k, "https://b", "sub", "aud", NULL, 0, 1000, 1, 0, &t), 0);
        Parts x = split(t.token);
        _cleanup_(json_decrefp) json_t *c = unb64_json(x.p, x.pl);
        assert_null(json_object_get(c, "scope"));
        assert_int_equal(json_object_size(c), 7);
        assert_int_equal(json_integer_value(json_object_get(c, "exp")), 1001);
        verify_signature(k, t.token, &x);
        minted_token_done(&t);

        /* One scope: no separator. */
        assert_int_equal(
            jwt_mint(k, "https://b", "sub", "aud", (const char *const[]){"only"}, 1, 1000, 60, 0, &t),
            0);
        x = split(t.token);
        _cleanup_(json_decrefp) json_t *c1 = unb64_json(x.p, x.pl);
        assert_string_equal(json_string_value(json_object_get(c1, "scope")), "only");
        minted_token_done(&t);
}

static void test_jwt_claim_values_are_json_strings(void **state)
{
        /* Values with quotes, backslashes and non-ASCII come out as the same strings. */
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        MintedToken t = {};
        const char *sub = "spiffe://x/\"q\"\\b/caf\xc3\xa9";
        const char *aud = "https://api.example.com/\",\"admin\":true,\"x\":\"";

        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k), 0);
        assert_int_equal(jwt_mint(k, "https://b", sub, aud, NULL, 0, 1000, 60, 0, &t), 0);
        Parts x = split(t.token);
        _cleanup_(json_decrefp) json_t *c = unb64_json(x.p, x.pl);
        assert_string_equal(json_string_value(json_object_get(c, "sub")), sub);
        assert_string_equal(json_string_value(json_object_get(c, "aud")), aud);
        assert_null(json_object_get(c, "admin"));
        minted_token_done(&t);
}

/* nbf is backdated by the clock skew so that a relying party whose clock is behind ours accepts
 * a fresh token; iat and exp stay where they are. */
static void test_jwt_nbf_skew(void **state)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        const int64_t now = 1795315867;
        static const struct {
                int64_t now;
                uint64_t skew;
                int64_t nbf;
        } cases[] = {
            {now, 300, now - 300},
            {now, 1, now - 1},
            {now, 0, now},
            /* never before the epoch */
            {1000, 5000, 0},
            {1000, 1000, 0},
            {1000, UINT64_MAX, 0},
        };

        assert_int_equal(signing_key_generate(ALG_ES256, 0, &k), 0);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                MintedToken t = {};

                assert_int_equal(jwt_mint(k, "https://b", "sub", "aud", NULL, 0,
                                                 cases[i].now, 60, cases[i].skew, &t),
                                 0);
                Parts x = split(t.token);
                _cleanup_(json_decrefp) json_t *h = unb64_json(x.h, x.hl);
                _cleanup_(json_decrefp) json_t *c = unb64_json(x.p, x.pl);
                assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
                assert_int_equal(json_integer_value(json_object_get(c, "iat")), cases[i].now);
                assert_int_equal(json_integer_value(json_object_get(c, "nbf")), cases[i].nbf);
                assert_int_equal(json_integer_value(json_object_get(c, "exp")), cases[i].now + 60);
                assert_int_equal(t.iat, cases[i].now);
                assert_int_equal(t.nbf, cases[i].nbf);
                assert_int_equal(t.exp, cases[i].now + 60);
                assert_int_equal(json_object_size(c), 7);
                minted_token_done(&t);
        }
}

static void test_jwt_unique(void **state)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        MintedToken a = {}, b = {};

        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k), 0);
        assert_int_equal(jwt_mint(k, "https://b", "s", "a", NULL, 0, 1000, 60, 0, &a), 0);
        assert_int_equal(jwt_mint(k, "https://b", "s", "a", NULL, 0, 1000, 60, 0, &b), 0);
        /* Same inputs, same second: only the jti (and so the signature) tells them apart. */
        assert_string_not_equal(a.jti, b.jti);
        assert_string_not_equal(a.token, b.token);
        assert_string_not_equal(a.token_sha256, b.token_sha256);
        assert_int_equal(strlen(a.jti), 22);
        minted_token_done(&a);
        minted_token_done(&b);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_b64url_round_trip),
            cmocka_unit_test(test_b64url_rejects),
            cmocka_unit_test(test_thumbprint_rfc7638),
            cmocka_unit_test(test_thumbprint_okp_independent),
            cmocka_unit_test(test_thumbprint_rejects),
            cmocka_unit_test(test_key_generate),
            cmocka_unit_test(test_key_from_seed),
            cmocka_unit_test(test_key_wrong_material),
            cmocka_unit_test(test_key_refcount),
            cmocka_unit_test(test_jwt_mint),
            cmocka_unit_test(test_jwt_no_scopes),
            cmocka_unit_test(test_jwt_claim_values_are_json_strings),
            cmocka_unit_test(test_jwt_nbf_skew),
            cmocka_unit_test(test_jwt_unique),
        };

        if (sodium_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
