#include "jose.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "json-util.h"
#include "macro.h"

char *b64url_encode(const void *data, size_t len)
{
        const int v = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
        size_t n = sodium_base64_ENCODED_LEN(len, v);
        char *out = malloc(n);

        if (!out)
                return NULL;
        sodium_bin2base64(out, n, data, len, v);
        return out;
}

int b64url_decode(const char *s, unsigned char **ret, size_t *ret_len)
{
        size_t len = strlen(s), n;
        const char *end = NULL;
        _cleanup_free_ unsigned char *out = malloc(len * 3 / 4 + 1);

        if (!out)
                return -ENOMEM;
        if (sodium_base642bin(out, len * 3 / 4 + 1, s, len, NULL, &n, &end,
                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
            end != s + len)
                return -EINVAL;
        *ret = TAKE_PTR(out);
        *ret_len = n;
        return 0;
}

int jwk_thumbprint(const json_t *jwk, char **ret)
{
        static const char *const okp[] = {"crv", "kty", "x", NULL};
        static const char *const ec[] = {"crv", "kty", "x", "y", NULL};
        static const char *const rsa[] = {"e", "kty", "n", NULL};
        _cleanup_(json_decrefp) json_t *req = json_object();
        _cleanup_free_ char *canon = NULL;
        const char *const *members;
        unsigned char digest[crypto_hash_sha256_BYTES];
        const char *kty = json_string_value(json_object_get(jwk, "kty"));

        if (!req)
                return -ENOMEM;
        if (!kty)
                return -EINVAL;
        if (strcmp(kty, "OKP") == 0)
                members = okp;
        else if (strcmp(kty, "EC") == 0)
                members = ec;
        else if (strcmp(kty, "RSA") == 0)
                members = rsa;
        else
                return -EINVAL;

        for (const char *const *m = members; *m; m++) {
                json_t *v = json_object_get(jwk, *m);
                if (!json_is_string(v))
                        return -EINVAL;
                if (json_object_set(req, *m, v) < 0)
                        return -ENOMEM;
        }
        /* The members are all strings of base64url or fixed names, so jansson's compact,
         * key-sorted output is exactly RFC 7638's canonical form. */
        canon = json_dumps(req, JSON_COMPACT | JSON_SORT_KEYS);
        if (!canon)
                return -ENOMEM;
        crypto_hash_sha256(digest, (const unsigned char *) canon, strlen(canon));
        *ret = b64url_encode(digest, sizeof(digest));
        return *ret ? 0 : -ENOMEM;
}

void minted_token_done(MintedToken *t)
{
        if (t->token) {
                sodium_memzero(t->token, strlen(t->token));
                free(t->token);
        }
        *t = (MintedToken){};
}

static char *join_scopes(const char *const *scopes, size_t n)
{
        size_t len = 0;
        char *s, *p;

        for (size_t i = 0; i < n; i++)
                len += strlen(scopes[i]) + 1;
        s = p = malloc(len + 1);
        if (!s)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                if (i > 0)
                        *p++ = ' ';
                p = stpcpy(p, scopes[i]);
        }
        *p = 0;
        return s;
}

int jwt_mint(const SigningKey *k, const char *issuer, const char *subject, const char *audience,
             const char *const *scopes, size_t n_scopes, int64_t now, uint64_t ttl,
             MintedToken *ret)
{
        unsigned char rnd[JTI_BYTES], sig[SIGNATURE_MAX], digest[crypto_hash_sha256_BYTES];
        _cleanup_(json_decrefp) json_t *claims = NULL;
        _cleanup_free_ char *payload = NULL, *payload_b64 = NULL, *sig_b64 = NULL, *jti = NULL;
        _cleanup_free_ char *scope = NULL;
        MintedToken t = {};
        size_t siglen;
        int r;

        randombytes_buf(rnd, sizeof(rnd));
        jti = b64url_encode(rnd, sizeof(rnd));
        if (!jti)
                return -ENOMEM;

        t.iat = now;
        t.exp = now + (int64_t) ttl;
        claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "iss", issuer, "sub", subject,
                           "aud", audience, "iat", (json_int_t) t.iat, "nbf", (json_int_t) t.iat,
                           "exp", (json_int_t) t.exp, "jti", jti);
        if (!claims)
                return -ENOMEM;
        if (n_scopes > 0) {
                scope = join_scopes(scopes, n_scopes);
                if (!scope || json_object_set_new(claims, "scope", json_string(scope)) < 0)
                        return -ENOMEM;
        }
        payload = json_dumps(claims, JSON_COMPACT);
        if (!payload)
                return -ENOMEM;
        payload_b64 = b64url_encode(payload, strlen(payload));
        if (!payload_b64)
                return -ENOMEM;

        size_t hlen = strlen(k->header_b64), plen = strlen(payload_b64);
        size_t sig_b64_max =
            sodium_base64_ENCODED_LEN(SIGNATURE_MAX, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        t.token = malloc(hlen + 1 + plen + 1 + sig_b64_max);
        if (!t.token)
                return -ENOMEM;
        char *p = stpcpy(t.token, k->header_b64);
        *p++ = '.';
        p = stpcpy(p, payload_b64);

        r = signing_key_sign(k, t.token, (size_t) (p - t.token), sig, &siglen);
        if (r < 0) {
                minted_token_done(&t);
                return r;
        }
        *p++ = '.';
        sodium_bin2base64(p, sig_b64_max, sig, siglen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);

        crypto_hash_sha256(digest, (const unsigned char *) t.token, strlen(t.token));
        sodium_bin2hex(t.token_sha256, sizeof(t.token_sha256), digest, sizeof(digest));
        memcpy(t.jti, jti, strlen(jti) + 1);
        *ret = t;
        return 0;
}
