#include "keys.h"

#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "macro.h"

#define KEYS_MAX 4096u /* rows the store will ever load; far beyond any real rotation history */

static const char *const key_states[_KEY_STATE_MAX] = {
    [KEY_NEXT] = "next",       [KEY_ACTIVE] = "active",   [KEY_RETIRED] = "retired",
    [KEY_REVOKED] = "revoked", [KEY_REMOVED] = "removed",
};

const char *key_state_to_string(KeyState s)
{
        return s >= 0 && s < _KEY_STATE_MAX ? key_states[s] : NULL;
}

static int key_state_from_string(const char *s)
{
        for (int i = 0; i < _KEY_STATE_MAX; i++)
                if (strcmp(s, key_states[i]) == 0)
                        return i;
        return -EINVAL;
}

typedef struct KeyEntry {
        char kid[KID_LEN + 1];
        Alg alg;
        KeyState state;
        int64_t created_at, activated_at, retired_at, expires_at; /* 0: not yet */
        json_t *jwk;                                              /* public */
        SigningKey *key; /* loaded for next and active keys only */
} KeyEntry;

struct KeyStore {
        sqlite3 *db;
        KeyEntry *entries;
        size_t n;
};

static const char schema[] = "PRAGMA secure_delete=ON;"
                             "PRAGMA synchronous=FULL;"
                             "CREATE TABLE IF NOT EXISTS keys ("
                             " kid TEXT PRIMARY KEY,"
                             " alg TEXT NOT NULL,"
                             " state TEXT NOT NULL,"
                             " created_at INTEGER NOT NULL,"
                             " activated_at INTEGER NOT NULL DEFAULT 0,"
                             " retired_at INTEGER NOT NULL DEFAULT 0,"
                             " expires_at INTEGER NOT NULL DEFAULT 0,"
                             " public_jwk TEXT NOT NULL,"
                             " secret BLOB);";

static int db_exec(sqlite3 *db, const char *sql)
{
        char *msg = NULL;

        if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
                log_error("keys.db: %s", msg ? msg : sqlite3_errmsg(db));
                sqlite3_free(msg);
                return -EIO;
        }
        return 0;
}

static void entry_done(KeyEntry *e)
{
        json_decref(e->jwk);
        if (e->key)
                signing_key_unref(e->key);
        *e = (KeyEntry){};
}

static KeyEntry *find_entry(KeyStore *ks, const char *kid)
{
        for (size_t i = 0; i < ks->n; i++)
                if (strcmp(ks->entries[i].kid, kid) == 0)
                        return &ks->entries[i];
        return NULL;
}

static KeyEntry *find_state(KeyStore *ks, Alg alg, KeyState state)
{
        for (size_t i = 0; i < ks->n; i++)
                if (ks->entries[i].alg == alg && ks->entries[i].state == state)
                        return &ks->entries[i];
        return NULL;
}

static int load_rows(KeyStore *ks)
{
        sqlite3_stmt *st = NULL;
        int r = 0, rc;

        if (sqlite3_prepare_v2(ks->db,
                               "SELECT kid, alg, state, created_at, activated_at, retired_at, "
                               "expires_at, public_jwk, secret FROM keys ORDER BY created_at, kid",
                               -1, &st, NULL) != SQLITE_OK)
                return log_error_errno(EIO, "keys.db: %s", sqlite3_errmsg(ks->db));

        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                KeyEntry e = {};
                const char *kid = (const char *) sqlite3_column_text(st, 0);
                const char *alg = (const char *) sqlite3_column_text(st, 1);
                const char *state = (const char *) sqlite3_column_text(st, 2);
                const char *jwk = (const char *) sqlite3_column_text(st, 7);
                int a, s;

                if (ks->n >= KEYS_MAX) {
                        r = log_error_errno(EFBIG, "keys.db: more than %u keys", KEYS_MAX);
                        break;
                }
                if (!kid || strlen(kid) != KID_LEN || !alg || (a = alg_from_string(alg)) < 0 ||
                    !state || (s = key_state_from_string(state)) < 0 || !jwk) {
                        r = log_error_errno(EBADMSG, "keys.db: malformed row for key %s",
                                            strna(kid));
                        break;
                }
                memcpy(e.kid, kid, KID_LEN + 1);
                e.alg = a;
                e.state = s;
                e.created_at = sqlite3_column_int64(st, 3);
                e.activated_at = sqlite3_column_int64(st, 4);
                e.retired_at = sqlite3_column_int64(st, 5);
                e.expires_at = sqlite3_column_int64(st, 6);
                e.jwk = json_loads(jwk, 0, NULL);
                if (!e.jwk) {
                        r = log_error_errno(EBADMSG, "keys.db: bad public key for %s", kid);
                        break;
                }
                if (e.state == KEY_NEXT || e.state == KEY_ACTIVE) {
                        const void *seed = sqlite3_column_blob(st, 8);
                        int len = sqlite3_column_bytes(st, 8);
                        r = seed ? signing_key_from_seed(e.alg, seed, len, &e.key) : -EBADMSG;
                        if (r >= 0 && strcmp(e.key->kid, e.kid) != 0)
                                r = -EBADMSG;
                        if (r < 0) {
                                entry_done(&e);
                                log_error_errno(r, "keys.db: cannot load key %s: %m", kid);
                                break;
                        }
                }
                ks->entries[ks->n++] = e;
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = log_error_errno(EIO, "keys.db: %s", sqlite3_errmsg(ks->db));
        sqlite3_finalize(st);
        return r;
}

int keystore_open(const char *state_dir, KeyStore **ret)
{
        _cleanup_free_ char *path = NULL;
        KeyStore *ks;
        int r;

        if (asprintf(&path, "%s/keys.db", state_dir) < 0)
                return -ENOMEM;
        ks = calloc(1, sizeof(KeyStore));
        if (!ks)
                return -ENOMEM;
        ks->entries = calloc(KEYS_MAX, sizeof(KeyEntry));
        if (!ks->entries) {
                free(ks);
                return -ENOMEM;
        }
        if (sqlite3_open_v2(path, &ks->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                r = log_error_errno(EIO, "Cannot open %s: %s", path,
                                    ks->db ? sqlite3_errmsg(ks->db) : "out of memory");
                keystore_close(ks);
                return r;
        }
        r = db_exec(ks->db, schema);
        if (r >= 0)
                r = load_rows(ks);
        if (r < 0) {
                keystore_close(ks);
                return r;
        }
        *ret = ks;
        return 0;
}

void keystore_close(KeyStore *ks)
{
        if (!ks)
                return;
        for (size_t i = 0; i < ks->n; i++)
                entry_done(&ks->entries[i]);
        free(ks->entries);
        sqlite3_close(ks->db);
        free(ks);
}

static int store_update_times(KeyStore *ks, const KeyEntry *e)
{
        sqlite3_stmt *st = NULL;
        int rc;

        if (sqlite3_prepare_v2(ks->db,
                               "UPDATE keys SET state=?, activated_at=?, retired_at=?, "
                               "expires_at=?, secret=CASE WHEN ? THEN secret ELSE NULL END "
                               "WHERE kid=?",
                               -1, &st, NULL) != SQLITE_OK)
                return log_error_errno(EIO, "keys.db: %s", sqlite3_errmsg(ks->db));
        sqlite3_bind_text(st, 1, key_state_to_string(e->state), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, e->activated_at);
        sqlite3_bind_int64(st, 3, e->retired_at);
        sqlite3_bind_int64(st, 4, e->expires_at);
        /* Only keys that may still sign keep their private half on disk. */
        sqlite3_bind_int(st, 5, e->state == KEY_NEXT || e->state == KEY_ACTIVE);
        sqlite3_bind_text(st, 6, e->kid, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return log_error_errno(EIO, "keys.db: cannot update key %s: %s", e->kid,
                                       sqlite3_errmsg(ks->db));
        return 0;
}

/* Makes a key and stores it with `state`; the entry is added only once the row is durable. */
static int create_key(KeyStore *ks, Alg alg, KeyState state, int64_t now, KeyEntry **ret)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        _cleanup_free_ char *jwk = NULL;
        unsigned char *seed = NULL;
        size_t seed_len;
        sqlite3_stmt *st = NULL;
        int r, rc;

        if (ks->n >= KEYS_MAX)
                return log_error_errno(EFBIG, "keys.db: more than %u keys", KEYS_MAX);
        r = signing_key_generate(alg, &k);
        if (r < 0)
                return log_error_errno(r, "Cannot generate %s key: %m", alg_to_string(alg));
        jwk = json_dumps(k->jwk, JSON_COMPACT | JSON_SORT_KEYS);
        if (!jwk)
                return -ENOMEM;
        r = signing_key_export_seed(k, &seed, &seed_len);
        if (r < 0)
                return r;

        if (sqlite3_prepare_v2(ks->db,
                               "INSERT INTO keys (kid, alg, state, created_at, activated_at, "
                               "public_jwk, secret) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               -1, &st, NULL) != SQLITE_OK) {
                sodium_free(seed);
                return log_error_errno(EIO, "keys.db: %s", sqlite3_errmsg(ks->db));
        }
        sqlite3_bind_text(st, 1, k->kid, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, alg_to_string(alg), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, key_state_to_string(state), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, now);
        sqlite3_bind_int64(st, 5, state == KEY_ACTIVE ? now : 0);
        sqlite3_bind_text(st, 6, jwk, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 7, seed, (int) seed_len, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        sodium_free(seed);
        if (rc != SQLITE_DONE)
                return log_error_errno(EIO, "keys.db: cannot store new key: %s",
                                       sqlite3_errmsg(ks->db));

        KeyEntry *e = &ks->entries[ks->n++];
        *e = (KeyEntry){
            .alg = alg,
            .state = state,
            .created_at = now,
            .activated_at = state == KEY_ACTIVE ? now : 0,
            .jwk = json_incref(k->jwk),
            .key = TAKE_PTR(k),
        };
        memcpy(e->kid, e->key->kid, KID_LEN + 1);
        *ret = e;
        return 0;
}

int keystore_ensure_active(KeyStore *ks, Alg alg, int64_t now, char **ret_created_kid)
{
        KeyEntry *e;
        int r;

        if (find_state(ks, alg, KEY_ACTIVE))
                return 0;
        r = create_key(ks, alg, KEY_ACTIVE, now, &e);
        if (r < 0)
                return r;
        if (ret_created_kid && !(*ret_created_kid = strdup(e->kid)))
                return -ENOMEM;
        return 0;
}

SigningKey *keystore_active(KeyStore *ks, Alg alg)
{
        KeyEntry *e = find_state(ks, alg, KEY_ACTIVE);
        return e ? e->key : NULL;
}

/* Moves `e` to a state where it no longer signs and drops its private half from memory. */
static void entry_stop_signing(KeyEntry *e, KeyState state, int64_t now, int64_t expires_at)
{
        e->state = state;
        e->retired_at = now;
        e->expires_at = expires_at;
        if (e->key) {
                signing_key_unref(e->key);
                e->key = NULL;
        }
}

static int db_begin(KeyStore *ks)
{
        return db_exec(ks->db, "BEGIN IMMEDIATE");
}

static int db_end(KeyStore *ks, int r)
{
        if (r < 0) {
                (void) db_exec(ks->db, "ROLLBACK");
                return r;
        }
        return db_exec(ks->db, "COMMIT");
}

int keystore_rotate(KeyStore *ks, Alg alg, int64_t now, uint64_t retention, char **ret_kid,
                    char **ret_retired_kid)
{
        _cleanup_free_ char *retired_kid = NULL, *kid = NULL;
        KeyEntry *old = find_state(ks, alg, KEY_ACTIVE), *e = NULL;
        KeyEntry saved = {};
        int r;

        if (old) {
                retired_kid = strdup(old->kid);
                if (!retired_kid)
                        return -ENOMEM;
        }

        /* One transaction: a crash leaves either the old or the new active key, never both or
         * none. Memory changes only after COMMIT succeeds. */
        r = db_begin(ks);
        if (r < 0)
                return r;
        if (old) {
                saved = *old;
                KeyEntry tmp = *old;
                tmp.state = KEY_RETIRED;
                tmp.retired_at = now;
                tmp.expires_at = now + (int64_t) retention;
                r = store_update_times(ks, &tmp);
        }
        if (r >= 0)
                r = create_key(ks, alg, KEY_ACTIVE, now, &e);
        r = db_end(ks, r);
        if (r < 0) {
                if (e) { /* added in memory, but the transaction is gone */
                        entry_done(e);
                        ks->n--;
                }
                return r;
        }
        /* create_key may have moved nothing (entries is a fixed array), so old is valid. */
        if (old) {
                old = find_entry(ks, saved.kid);
                entry_stop_signing(old, KEY_RETIRED, now, now + (int64_t) retention);
        }
        kid = strdup(e->kid);
        if (!kid)
                return -ENOMEM;
        *ret_kid = TAKE_PTR(kid);
        if (ret_retired_kid)
                *ret_retired_kid = TAKE_PTR(retired_kid);
        return 0;
}

int keystore_revoke(KeyStore *ks, const char *kid, int64_t now, char **ret_replacement_kid)
{
        KeyEntry *e = find_entry(ks, kid), *repl = NULL;
        bool was_active;
        int r;

        if (!e)
                return -ENOENT;
        if (e->state == KEY_REVOKED)
                return -EALREADY;
        was_active = e->state == KEY_ACTIVE;

        r = db_begin(ks);
        if (r < 0)
                return r;
        KeyEntry tmp = *e;
        tmp.state = KEY_REVOKED;
        tmp.retired_at = now;
        tmp.expires_at = now;
        r = store_update_times(ks, &tmp);
        if (r >= 0 && was_active)
                r = create_key(ks, e->alg, KEY_ACTIVE, now, &repl);
        r = db_end(ks, r);
        if (r < 0) {
                if (repl) {
                        entry_done(repl);
                        ks->n--;
                }
                return r;
        }
        e = find_entry(ks, kid);
        entry_stop_signing(e, KEY_REVOKED, now, now);
        if (ret_replacement_kid)
                *ret_replacement_kid = repl ? strdup(repl->kid) : NULL;
        return 0;
}

static bool entry_published(const KeyEntry *e, int64_t now)
{
        switch (e->state) {
        case KEY_NEXT:
        case KEY_ACTIVE:
                return true;
        case KEY_RETIRED:
                return e->expires_at > now;
        default:
                return false;
        }
}

json_t *keystore_jwks(KeyStore *ks, int64_t now)
{
        json_t *keys = json_array();

        if (!keys)
                return NULL;
        for (size_t i = 0; i < ks->n; i++)
                if (entry_published(&ks->entries[i], now) &&
                    json_array_append(keys, ks->entries[i].jwk) < 0) {
                        json_decref(keys);
                        return NULL;
                }
        return json_pack("{s:o}", "keys", keys);
}

json_t *keystore_list(KeyStore *ks)
{
        json_t *a = json_array();

        for (size_t i = 0; a && i < ks->n; i++) {
                const KeyEntry *e = &ks->entries[i];
                json_t *o =
                    json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "kid", e->kid, "alg",
                              alg_to_string(e->alg), "state", key_state_to_string(e->state),
                              "created_at", (json_int_t) e->created_at, "activated_at",
                              (json_int_t) e->activated_at, "retired_at",
                              (json_int_t) e->retired_at, "expires_at", (json_int_t) e->expires_at);
                if (!o || json_array_append_new(a, o) < 0) {
                        json_decref(a);
                        return NULL;
                }
        }
        return a;
}
