#include "jwk.h"

#include <sodium.h>

#include "b64url.h"
#include "macro.h"

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
