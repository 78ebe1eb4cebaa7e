/* The secret store: the upstreams' client secrets, by name, sealed under the master key like
 * the signing keys (XChaCha20-Poly1305, purpose "upstream-secret", the name as associated
 * data, so a sealed value cannot be moved to another name undetected). Kept in the table
 * `secrets` of STATE_DIRECTORY/keys.db, whose master-key check keystore_open() has passed.
 *
 * A value is in the clear only in libsodium secure memory (locked, never in a core dump),
 * for as long as one exchange needs it: secretstore_reveal() unseals it, the caller wipes and
 * frees it with secret_value_free(). Names and dates are not secret; values never leave
 * through anything but reveal (not the list, not a log, not an error).
 *
 * Threads: the event loop only. Errors: -errno, logged with the database's path. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "keys/seal.h"

typedef struct SecretStore SecretStore;

typedef struct SecretValue {
        unsigned char *bytes; /* sodium_malloc'd, NUL-terminated */
        size_t len;
} SecretValue;

int secretstore_open(const char *state_dir, const MasterKey *master, SecretStore **ret);
void secretstore_close(SecretStore *ss);

/* Seals and stores `value` under `name` (durably: synchronous=FULL) at `now` (unix seconds).
 * Returns 1 when the name is new, 0 when its value was replaced. */
int secretstore_set(SecretStore *ss, const char *name, const void *value, size_t len,
                    int64_t now);
/* -ENOENT when there is no such secret. */
int secretstore_delete(SecretStore *ss, const char *name);

/* [{"name", "created_at", "updated_at"}] in name order: never a value. */
json_t *secretstore_list(SecretStore *ss);

/* The value of `name`, unsealed into secure memory. -ENOENT when not set, -EBADMSG when the
 * stored blob does not open under this master key (logged). */
int secretstore_reveal(SecretStore *ss, const char *name, SecretValue *ret);
void secret_value_free(SecretValue *v);
