#include "b64url.h"

#include <sodium.h>
#include <string.h>

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

int b64url_decode_exact(const char *s, unsigned char *out, size_t want)
{
        size_t len = strlen(s), n;
        const char *end = NULL;

        if (sodium_base642bin(out, want, s, len, NULL, &n, &end,
                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
            end != s + len || n != want)
                return -EINVAL;
        return 0;
}
