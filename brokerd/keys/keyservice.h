/* The key service: the key store, its schedule and the published files behind one interface,
 * so that every key change (scheduled, rotated, revoked) is audited and published by
 * construction; nothing outside can change a key without both.
 *
 * The schedule runs on the event loop: a CLOCK_REALTIME timer at the next transition, plus a
 * periodic CLOCK_BOOTTIME tick that catches wall-clock jumps the timer would not notice. Each
 * transition becomes a lifecycle record (key_created, key_rotated, key_removed, key_revoked)
 * in the grant log, and the published files (DIR/jwks.json, the per-algorithm JWKS beside it and
 * DIR/.well-known/openid-configuration; see publish.h) are rewritten.
 *
 * Threads: keyservice_active() from any thread (the workers mint with it); everything else on
 * the loop thread. Errors: -errno, logged where they happen. */
#pragma once

#include <jansson.h>
#include <systemd/sd-event.h>

#include "grantlog/record.h"
#include "grantlog/store.h"
#include "keys/keystore.h"

typedef struct KeyServiceSettings {
        KeyPolicy policy;
        const char *issuer;            /* copied */
        const char *publish_directory; /* copied; NULL: no files */
} KeyServiceSettings;

typedef struct KeyService KeyService;

/* Takes over `store`, applies what is due now, publishes, and starts the timers. Lifecycle
 * records go to `sink`. */
int keyservice_new(sd_event *event, KeyStore *store, const GrantSink *sink,
                   const KeyServiceSettings *s, KeyService **ret);
void keyservice_free(KeyService *ks);

/* New settings (a reload): the schedule runs again (rules may now need another algorithm), and
 * the files are published again at once (the issuer may have changed). Records of what changes
 * carry `origin` (who asked for the reload; may be NULL). */
int keyservice_update(KeyService *ks, const KeyServiceSettings *s, const GrantlogOrigin *origin);

/* The key signing for `alg` now, with a reference taken (signing_key_unref()), or NULL. */
SigningKey *keyservice_active(KeyService *ks, Alg alg);

/* {"keys":[...]}: the JWKS relying parties see. */
json_t *keyservice_jwks(KeyService *ks);
/* [{kid, alg, state, created_at, ...}] for the admin. */
json_t *keyservice_list(KeyService *ks);

/* {"directory", "last_success" (unix seconds or null), "last_error" (null, or what the last
 * publication that failed said, until one works again)} for status. */
json_t *keyservice_publish_status(KeyService *ks);

/* Every series now (alg < 0), or only `alg`'s: the new active key is the next key if one is
 * published already, else one made now. *ret_rotated: [{alg, kid, retired_kid}], the default
 * algorithm's series first. The records carry `origin` (the admin who asked).
 * -ENOENT when no series of that algorithm has an active key. */
int keyservice_rotate(KeyService *ks, int alg, const GrantlogOrigin *origin, json_t **ret_rotated);

/* Withdraws `kid` at once and forever; an active key is replaced at once (its replacement's kid
 * in ret_replacement, "" if none). The records carry `origin`. -ENOENT unknown, -EALREADY
 * revoked or removed already. */
int keyservice_revoke(KeyService *ks, const char *kid, const GrantlogOrigin *origin,
                      char ret_replacement[KID_LEN + 1]);
