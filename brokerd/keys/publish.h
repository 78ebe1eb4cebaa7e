/* Files for relying parties: DIR/jwks.json and DIR/.well-known/openid-configuration, so a web
 * server or bucket serving DIR at the issuer URL makes the broker an OIDC issuer (AWS, Google
 * and Azure workload identity federation, Vault). Each file is replaced atomically: a reader
 * sees the old or the new document, never a mix. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "keys/alg.h"

/* Writes both documents. `jwks` is {"keys": [...]}; `algs` the algorithms it holds keys for. */
int publish_write(const char *dir, const char *issuer, json_t *jwks, const bool algs[_ALG_MAX]);

/* The discovery document (also what the files hold). */
json_t *publish_discovery(const char *issuer, const bool algs[_ALG_MAX]);
