/* The key store: every signing key the daemon has made, its state and times, persisted in
 * STATE_DIRECTORY/keys.db. States: active (signs), retired (no longer signs, still published
 * until every token it signed has expired), revoked (withdrawn at once, never used again).
 * Runs on the main thread only. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "signer.h"

typedef enum KeyState {
        KEY_NEXT,
        KEY_ACTIVE,
        KEY_RETIRED,
        KEY_REVOKED,
        KEY_REMOVED,
        _KEY_STATE_MAX,
} KeyState;

const char *key_state_to_string(KeyState s);

typedef struct KeyStore KeyStore;

/* Opens (creating if needed) STATE_DIR/keys.db; the directory must already be safe. */
int keystore_open(const char *state_dir, KeyStore **ret);
void keystore_close(KeyStore *ks);

/* Makes sure `alg` has an active key, creating one if not. *ret_created_kid (may be NULL)
 * receives the new kid when one was made (caller frees). */
int keystore_ensure_active(KeyStore *ks, Alg alg, int64_t now, char **ret_created_kid);

/* The key currently signing for `alg`, or NULL. Borrowed: take a ref to keep it. */
SigningKey *keystore_active(KeyStore *ks, Alg alg);

/* Retires the active key of `alg` (published until now + retention) and activates a new one.
 * *ret_kid gets the new active kid, *ret_retired_kid the old one (or NULL). */
int keystore_rotate(KeyStore *ks, Alg alg, int64_t now, uint64_t retention, char **ret_kid,
                    char **ret_retired_kid);

/* Withdraws `kid` from the JWKS at once and forever. If it was active, a new key takes its
 * place (*ret_replacement_kid). -ENOENT for an unknown kid, -EALREADY if already revoked. */
int keystore_revoke(KeyStore *ks, const char *kid, int64_t now, char **ret_replacement_kid);

/* {"keys":[...]} of every key a relying party should accept at `now`. */
json_t *keystore_jwks(KeyStore *ks, int64_t now);

/* [{kid, alg, state, created_at, activated_at, retired_at, expires_at}] for the admin. */
json_t *keystore_list(KeyStore *ks);
