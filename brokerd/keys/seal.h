/* The master key and sealing: every private key (and, later, upstream secret) is stored only
 * as XChaCha20-Poly1305 ciphertext under a 256-bit master key, with its purpose and id as
 * associated data, so a sealed blob cannot be moved to another key's row undetected. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define MASTER_KEY_BYTES 32u

#define MAC_BYTES 32u

typedef struct MasterKey {
        unsigned char *key;     /* sodium_malloc'd, read-only */
        unsigned char *mac_key; /* derived from it, for master_mac() */
        char *source;           /* where it came from, for messages */
} MasterKey;

/* Loads the master key: the systemd credential "master.key" ($CREDENTIALS_DIRECTORY, set by
 * LoadCredential=/LoadCredentialEncrypted=) when there is one, else `file` (the config's
 * master_key_file, may be NULL). The file is checked like MUNGE checks its key: a regular
 * file, not a symlink, owned by us, no group or other access, safe ancestors; exactly
 * MASTER_KEY_BYTES long. Errors are logged with the path, what was found and what is wanted. */
int master_key_load(const char *file, MasterKey **ret);
void master_key_free(MasterKey *m);

/* master_key_load() in two steps that log nothing, for checks that must report every problem
 * at once (brokerd --check, a start before it creates anything). Failures fill `err` with what
 * is wrong: the path, what was found, what is wanted.
 * master_key_locate(): where the key comes from, the credential (*ret_credential true) or
 * `file`; *ret_path malloc'd. -ENOKEY when there is neither.
 * master_key_read(): the checks above on `path`; with `ret`, reads the key too. */
int master_key_locate(const char *file, char **ret_path, bool *ret_credential, char *err,
                      size_t errlen);
int master_key_read(const char *path, MasterKey **ret, char *err, size_t errlen);

/* A master key from its bytes (copied into secure memory; the caller wipes its own copy). */
int master_key_new(const unsigned char key[MASTER_KEY_BYTES], const char *source, MasterKey **ret);

/* Creates PATH (O_EXCL, mode 0600) holding a new random master key. */
int master_key_generate(const char *path);

/* Authenticates data kept in the clear (public keys, key states) for (purpose, id): keyed
 * BLAKE2b under a subkey derived from the master key. */
void master_mac(const MasterKey *m, const char *purpose, const char *id, const void *data,
                size_t len, unsigned char out[MAC_BYTES]);

/* Seals `plain` for (purpose, id). *ret is malloc'd: ciphertext needs no protection. */
int seal(const MasterKey *m, const char *purpose, const char *id, const unsigned char *plain,
         size_t len, unsigned char **ret, size_t *ret_len);

/* Opens a sealed blob. -EBADMSG when it was not sealed by this master key for (purpose, id).
 * *ret is sodium_malloc'd: release with sodium_free(). */
int unseal(const MasterKey *m, const char *purpose, const char *id, const unsigned char *blob,
           size_t len, unsigned char **ret, size_t *ret_len);
