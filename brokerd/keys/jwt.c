#include "keys/jwt.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "b64url.h"
#include "json-util.h"
#include "macro.h"

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

int jwt_mint(const SigningKey *k, const char *issuer, const char *subject,
                    const char *audience, const char *const *scopes, size_t n_scopes, int64_t now,
                    uint64_t ttl, uint64_t nbf_skew, MintedToken *ret)
{
        unsigned char rnd[JTI_BYTES], sig[SIGNATURE_MAX], digest[crypto_hash_sha256_BYTES];
        _cleanup_(json_decrefp) json_t *claims = NULL;
        _cleanup_free_ char *payload = NULL, *payload_b64 = NULL, *jti = NULL;
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
        t.nbf = now - (int64_t) MIN(nbf_skew, (uint64_t) MAX(now, (int64_t) 0));
        claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "iss", issuer, "sub", subject,
                           "aud", audience, "iat", (json_int_t) t.iat, "nbf", (json_int_t) t.nbf,
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
