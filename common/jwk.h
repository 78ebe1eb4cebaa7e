/* RFC 7638 JWK thumbprints: the kid of every signing key and of the audit key, which the grant
 * log's verifier recomputes to match a key id to a public key. */
#pragma once

#include <jansson.h>

/* SHA-256 over the JWK's required members in lexicographic order, no whitespace, base64url.
 * `jwk` must hold kty and that kty's required members (OKP, EC, RSA); -EINVAL otherwise. */
int jwk_thumbprint(const json_t *jwk, char **ret);
