/* The key store: every signing key the daemon has made, per algorithm series, persisted in
 * STATE_DIRECTORY/keys.db with the private half sealed under the master key.
 *
 * Life of a key: next (published, not yet signing) -> active (signs) -> retired (no longer
 * signs, still published until every token it signed has expired) -> removed. A revoked key
 * leaves the JWKS at once and never signs again. The schedule is a function of the stored
 * times and the time passed in, never of how long the process has run: a restart never
 * creates or rotates a key early and never loses one, and a clock jump is just a new `now`.
 * Runs on the main thread only. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "keys/alg.h"
#include "keys/seal.h"
#include "keys/signer.h"

typedef enum KeyState {
        KEY_NEXT,
        KEY_ACTIVE,
        KEY_RETIRED,
        KEY_REVOKED,
        KEY_REMOVED,
        _KEY_STATE_MAX,
} KeyState;

const char *key_state_to_string(KeyState s);

typedef struct KeyPolicy {
        uint64_t rotation_period; /* an active key signs this long */
        uint64_t publish_ahead;   /* a next key is published this long before it signs */
        uint64_t retention;       /* a retired key stays published this long */
        unsigned rsa_bits;
        bool algs[_ALG_MAX]; /* series the configuration needs */
} KeyPolicy;

/* What a call changed, for the audit log and the published JWKS. */
typedef struct KeyEvent {
        const char *event; /* key_created, key_rotated, key_removed, key_revoked */
        Alg alg;
        char kid[KID_LEN + 1];
        char other_kid[KID_LEN + 1]; /* retired (key_rotated) or replacement (key_revoked) */
        const char *state;           /* key_created: "next" or "active" */
} KeyEvent;

#define KEY_EVENTS_MAX 32

typedef struct KeyEvents {
        KeyEvent e[KEY_EVENTS_MAX];
        size_t n;
} KeyEvents;

typedef struct KeyStore KeyStore;

/* Opens (creating if needed) STATE_DIR/keys.db. A master key other than the one that sealed
 * the store is refused (-EKEYREJECTED, logged): brokerd never re-keys on its own. */
int keystore_open(const char *state_dir, const MasterKey *master, KeyStore **ret);
void keystore_close(KeyStore *ks);

/* keystore_open()'s master key check without opening for writing: 0 when STATE_DIR/keys.db is
 * missing, new, in use (it cannot be read now) or sealed by `master`; -EKEYREJECTED or -EIO
 * with err filled. Creates nothing and logs nothing. */
int keystore_check_master(const char *state_dir, const MasterKey *master, char *err,
                          size_t errlen);

/* Applies every transition due at `now` and appends what changed to `ev`: creates the first active
 * key of a series the policy needs, the next key publish_ahead before rotation, rotates once the
 * next key has been published long enough, removes retired keys whose retention is over.
 * Idempotent. */
int keystore_advance(KeyStore *ks, const KeyPolicy *p, int64_t now, KeyEvents *ev);

/* When keystore_advance() next has something to do (wall-clock seconds), INT64_MAX if never. */
int64_t keystore_next_deadline(KeyStore *ks, const KeyPolicy *p);

/* Starts a new active key of `alg` now (the next key if there is one), retiring the old one
 * normally. */
int keystore_rotate(KeyStore *ks, const KeyPolicy *p, Alg alg, int64_t now, KeyEvents *ev);

/* Withdraws `kid` at once and forever; an active key is replaced at once. -ENOENT unknown,
 * -EALREADY revoked or removed already. */
int keystore_revoke(KeyStore *ks, const KeyPolicy *p, const char *kid, int64_t now, KeyEvents *ev);

/* The Ed25519 key that signs the grant log's checkpoints: made on first use, sealed like the
 * signing keys, never in the JWKS. *ret gets a new reference; *ret_created (may be NULL)
 * says whether it was made now. */
int keystore_audit_key(KeyStore *ks, int64_t now, SigningKey **ret, bool *ret_created);

/* The key signing for `alg` now, or NULL. Borrowed: take a ref to keep it. */
SigningKey *keystore_active(KeyStore *ks, Alg alg);

/* {"keys":[...]}: next, active and not yet expired retired keys. */
json_t *keystore_jwks(KeyStore *ks, int64_t now);

/* The algorithms that have a key in the JWKS. */
void keystore_published_algs(KeyStore *ks, int64_t now, bool ret[_ALG_MAX]);

/* [{kid, alg, state, created_at, activated_at, retired_at, expires_at}] for the admin. */
json_t *keystore_list(KeyStore *ks);
