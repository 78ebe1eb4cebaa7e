#include "keys/alg.h"

#include <errno.h>
#include <string.h>

static const char *const alg_names[_ALG_MAX] = {
    [ALG_EDDSA] = "EdDSA",
    [ALG_ES256] = "ES256",
    [ALG_RS256] = "RS256",
};

const char *alg_to_string(Alg a)
{
        return a >= 0 && a < _ALG_MAX ? alg_names[a] : NULL;
}

int alg_from_string(const char *s)
{
        for (int a = 0; a < _ALG_MAX; a++)
                if (strcmp(s, alg_names[a]) == 0)
                        return a;
        return -EINVAL;
}
