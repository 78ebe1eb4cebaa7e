/* RFC 7638 JWK thumbprints: the kid of every signing key. */
#pragma once

#include <jansson.h>

/* SHA-256 over the JWK's required members in lexicographic order, no whitespace, base64url.
 * `jwk` must hold kty and that kty's required members (OKP, EC, RSA); -EINVAL otherwise. */
int jwk_thumbprint(const json_t *jwk, char **ret);
