/* Files for relying parties: DIR/jwks.json and DIR/.well-known/openid-configuration, so a web
 * server or bucket serving DIR at the issuer URL makes the broker an OIDC issuer (AWS, Google
 * and Azure workload identity federation, Vault); beside them DIR/jwks-es256.json,
 * jwks-rs256.json and jwks-eddsa.json, each the JWKS's keys of that one algorithm, for relying
 * parties that take a JWKS inline and only some key types (Google: RSA and EC). Every file is
 * written each time, an algorithm without keys as {"keys": []}, so none keeps a key that left
 * jwks.json. Each file is replaced atomically: a reader sees the old or the new document, never
 * a mix; the files are not replaced together. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "keys/alg.h"

/* Writes every document, and tries each even when one fails (a revoked key leaves what can be
 * written); returns the first error, with `err` saying what failed (the path and why). Logs
 * nothing: the caller reports a failed publication once. `jwks` is {"keys": [...]}; `algs` the
 * algorithms it holds keys for. */
int publish_write(const char *dir, const char *issuer, json_t *jwks, const bool algs[_ALG_MAX],
                  char *err, size_t errlen);

/* The discovery document (also what the files hold). */
json_t *publish_discovery(const char *issuer, const bool algs[_ALG_MAX]);
