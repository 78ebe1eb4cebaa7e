#include "keys/keystore.h"

#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "log.h"
#include "macro.h"

/* Bounds the transitions one series makes in one call: a clock that jumped far ahead rotates
 * once (and schedules the next key), it does not replay every missed period. */
#define STEPS_PER_SERIES 4

static const char master_check_plain[] = "brokerd master key check v1";

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
        int64_t created_at, activated_at, retired_at, expires_at; /* 0: not (yet) */
        json_t *jwk;                                              /* public */
        char *jwk_text;  /* as stored, covered by the row's MAC */
        SigningKey *key; /* unsealed, for next and active keys only */
} KeyEntry;

struct KeyStore {
        sqlite3 *db;
        char *path;
        const MasterKey *master;
        KeyEntry **entries;
        size_t n, cap;
        bool in_txn;
};

static const char schema[] = "PRAGMA secure_delete=ON;"
                             "PRAGMA synchronous=FULL;"
                             "CREATE TABLE IF NOT EXISTS meta ("
                             " name TEXT PRIMARY KEY,"
                             " value BLOB NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS keys ("
                             " kid TEXT PRIMARY KEY,"
                             " alg TEXT NOT NULL,"
                             " state TEXT NOT NULL,"
                             " created_at INTEGER NOT NULL,"
                             " activated_at INTEGER NOT NULL DEFAULT 0,"
                             " retired_at INTEGER NOT NULL DEFAULT 0,"
                             " expires_at INTEGER NOT NULL DEFAULT 0,"
                             " public_jwk TEXT NOT NULL,"
                             " sealed_secret BLOB,"
                             " row_mac BLOB NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS audit_keys ("
                             " kid TEXT PRIMARY KEY,"
                             " created_at INTEGER NOT NULL,"
                             " sealed_secret BLOB NOT NULL,"
                             " row_mac BLOB NOT NULL);";

static int db_error(KeyStore *ks, const char *what)
{
        return log_error_errno(EIO, "%s: %s: %s", ks->path, what, sqlite3_errmsg(ks->db));
}

static int db_exec(KeyStore *ks, const char *sql)
{
        char *msg = NULL;

        if (sqlite3_exec(ks->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
                log_error("%s: %s", ks->path, msg ? msg : sqlite3_errmsg(ks->db));
                sqlite3_free(msg);
                return -EIO;
        }
        return 0;
}

static const char *seal_purpose(Alg alg)
{
        switch (alg) {
        case ALG_EDDSA:
                return "signing-key/EdDSA";
        case ALG_ES256:
                return "signing-key/ES256";
        default:
                return "signing-key/RS256";
        }
}

static void entry_free(KeyEntry *e)
{
        if (!e)
                return;
        json_decref(e->jwk);
        free(e->jwk_text);
        if (e->key)
                signing_key_unref(e->key);
        free(e);
}

static void entries_clear(KeyStore *ks)
{
        for (size_t i = 0; i < ks->n; i++)
                entry_free(ks->entries[i]);
        ks->n = 0;
}

static int entries_append(KeyStore *ks, KeyEntry *e)
{
        if (ks->n == ks->cap) {
                size_t cap = ks->cap ? ks->cap * 2 : 16;
                KeyEntry **n = realloc(ks->entries, cap * sizeof(KeyEntry *));
                if (!n)
                        return -ENOMEM;
                ks->entries = n;
                ks->cap = cap;
        }
        ks->entries[ks->n++] = e;
        return 0;
}

static KeyEntry *find_kid(KeyStore *ks, const char *kid)
{
        for (size_t i = 0; i < ks->n; i++)
                if (strcmp(ks->entries[i]->kid, kid) == 0)
                        return ks->entries[i];
        return NULL;
}

static KeyEntry *find_state(KeyStore *ks, Alg alg, KeyState state)
{
        for (size_t i = 0; i < ks->n; i++)
                if (ks->entries[i]->alg == alg && ks->entries[i]->state == state)
                        return ks->entries[i];
        return NULL;
}

/* Public keys, states and times are stored in the clear, so each row carries a MAC under the
 * master key: an edited row (a revoked key made "retired" again, a public key swapped for
 * someone else's) is refused at start rather than published. */
static int row_mac(KeyStore *ks, const KeyEntry *e, unsigned char out[MAC_BYTES])
{
        _cleanup_free_ char *data = NULL;
        int n = asprintf(&data, "%s\n%s\n%lld\n%lld\n%lld\n%lld\n%s", alg_to_string(e->alg),
                         key_state_to_string(e->state), (long long) e->created_at,
                         (long long) e->activated_at, (long long) e->retired_at,
                         (long long) e->expires_at, e->jwk_text);

        if (n < 0)
                return -ENOMEM;
        master_mac(ks->master, "key-row", e->kid, data, (size_t) n, out);
        return 0;
}

/* Unseals and rebuilds a key, checking it is the key its row says it is. */
static int entry_unseal(KeyStore *ks, KeyEntry *e, const void *blob, size_t len)
{
        unsigned char *priv = NULL;
        size_t priv_len;
        int r;

        r = unseal(ks->master, seal_purpose(e->alg), e->kid, blob, len, &priv, &priv_len);
        if (r < 0)
                return r;
        r = signing_key_import(e->alg, priv, priv_len, &e->key);
        sodium_free(priv);
        if (r < 0)
                return r;
        if (strcmp(e->key->kid, e->kid) != 0 || !json_equal(e->key->jwk, e->jwk))
                return -EBADMSG;
        return 0;
}

static int load_rows(KeyStore *ks)
{
        sqlite3_stmt *st = NULL;
        int r = 0, rc;

        entries_clear(ks);
        /* In the order they were made, as they are held in memory: a restart lists and
         * publishes them exactly as before, even for keys made in the same second or after the
         * clock went back. */
        if (sqlite3_prepare_v2(ks->db,
                               "SELECT kid, alg, state, created_at, activated_at, retired_at, "
                               "expires_at, public_jwk, sealed_secret, row_mac FROM keys "
                               "ORDER BY rowid",
                               -1, &st, NULL) != SQLITE_OK)
                return db_error(ks, "cannot read keys");

        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *kid = (const char *) sqlite3_column_text(st, 0);
                const char *alg = (const char *) sqlite3_column_text(st, 1);
                const char *state = (const char *) sqlite3_column_text(st, 2);
                const char *jwk = (const char *) sqlite3_column_text(st, 7);
                KeyEntry *e;
                int a, s;

                if (!kid || strlen(kid) != KID_LEN || !alg || (a = alg_from_string(alg)) < 0 ||
                    !state || (s = key_state_from_string(state)) < 0 || !jwk) {
                        r = log_error_errno(EBADMSG, "%s: malformed row for key %s", ks->path,
                                            strna(kid));
                        break;
                }
                e = calloc(1, sizeof(KeyEntry));
                if (!e) {
                        r = log_oom();
                        break;
                }
                memcpy(e->kid, kid, KID_LEN + 1);
                e->alg = a;
                e->state = s;
                e->created_at = sqlite3_column_int64(st, 3);
                e->activated_at = sqlite3_column_int64(st, 4);
                e->retired_at = sqlite3_column_int64(st, 5);
                e->expires_at = sqlite3_column_int64(st, 6);
                e->jwk = json_loads(jwk, 0, NULL);
                e->jwk_text = strdup(jwk);
                r = e->jwk && e->jwk_text ? 0 : -EBADMSG;
                if (r >= 0) {
                        unsigned char mac[MAC_BYTES];
                        r = row_mac(ks, e, mac);
                        if (r >= 0 &&
                            (sqlite3_column_bytes(st, 9) != MAC_BYTES ||
                             sodium_memcmp(mac, sqlite3_column_blob(st, 9), MAC_BYTES) != 0))
                                r = -EBADMSG;
                }
                if (r >= 0 && (e->state == KEY_NEXT || e->state == KEY_ACTIVE))
                        r = entry_unseal(ks, e, sqlite3_column_blob(st, 8),
                                         (size_t) sqlite3_column_bytes(st, 8));
                if (r >= 0)
                        r = entries_append(ks, e);
                if (r < 0) {
                        entry_free(e);
                        if (r == -EBADMSG)
                                r = log_error_errno(
                                    EKEYREJECTED,
                                    "%s: the row of key %s was altered, or cannot be "
                                    "unsealed with this master key; refusing to start",
                                    ks->path, kid);
                        break;
                }
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = db_error(ks, "cannot read keys");
        sqlite3_finalize(st);
        return r;
}

/* A known value sealed when the store was made: a different master key fails to open it, so
 * brokerd refuses to start rather than make new keys that bury the old ones. Returns 0 when
 * `master` sealed the store open in `db`, 1 when the store has no check yet and no keys (it is
 * new), -EKEYREJECTED or another -errno with err filled. Reads only. */
static int master_matches(sqlite3 *db, const char *path, const MasterKey *master, char *err,
                          size_t errlen)
{
        sqlite3_stmt *st = NULL;
        unsigned char *plain = NULL;
        size_t plain_len;
        int r, rc, n_keys = 0;

        if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE name = 'master_check'", -1, &st,
                               NULL) != SQLITE_OK) {
                snprintf(err, errlen, "%s: cannot read meta: %s", path, sqlite3_errmsg(db));
                return -EIO;
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                r = unseal(master, "master-check", "keys.db", sqlite3_column_blob(st, 0),
                           (size_t) sqlite3_column_bytes(st, 0), &plain, &plain_len);
                sqlite3_finalize(st);
                if (r == -EBADMSG) {
                        snprintf(err, errlen,
                                 "the master key from %s is not the one that sealed %s; refusing "
                                 "to start. Restore the right master key: brokerd never re-keys "
                                 "on its own",
                                 master->source, path);
                        return -EKEYREJECTED;
                }
                if (r < 0) {
                        snprintf(err, errlen, "%s: cannot check the master key: %s", path,
                                 strerror(-r));
                        return r;
                }
                sodium_free(plain);
                return 0;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
                snprintf(err, errlen, "%s: cannot read meta: %s", path, sqlite3_errmsg(db));
                return -EIO;
        }
        if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM keys", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                n_keys = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        if (n_keys > 0) {
                snprintf(err, errlen, "%s holds keys but no master key check; refusing to use it",
                         path);
                return -EKEYREJECTED;
        }
        return 1;
}

/* master_matches(), and a new store gets its check. */
static int check_master(KeyStore *ks)
{
        sqlite3_stmt *st = NULL;
        unsigned char *blob = NULL;
        size_t blob_len;
        char err[1024];
        int r, rc;

        r = master_matches(ks->db, ks->path, ks->master, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "%s", err);
        if (r == 0)
                return 0;
        r = seal(ks->master, "master-check", "keys.db", (const unsigned char *) master_check_plain,
                 sizeof(master_check_plain), &blob, &blob_len);
        if (r < 0)
                return r;
        if (sqlite3_prepare_v2(ks->db, "INSERT INTO meta (name, value) VALUES ('master_check', ?)",
                               -1, &st, NULL) != SQLITE_OK) {
                free(blob);
                return db_error(ks, "cannot write meta");
        }
        sqlite3_bind_blob(st, 1, blob, (int) blob_len, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        free(blob);
        return rc == SQLITE_DONE ? 0 : db_error(ks, "cannot write meta");
}

int keystore_check_master(const char *state_dir, const MasterKey *master, char *err, size_t errlen)
{
        _cleanup_free_ char *path = NULL;
        sqlite3 *db = NULL;
        struct stat st;
        int r, rc;

        if (asprintf(&path, "%s/keys.db", state_dir) < 0) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        if (lstat(path, &st) < 0)
                return 0; /* none yet (or no way to look): the start makes or checks it */
        /* Read-only: nothing is created, no journal rolled back. */
        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_busy_timeout(db, 1000);
                rc = sqlite3_exec(db, "SELECT 1 FROM meta LIMIT 0", NULL, NULL, NULL);
        }
        if (rc != SQLITE_OK) {
                int ext = db ? sqlite3_extended_errcode(db) : rc;

                /* In use or being written, or new (no tables yet): the start decides. */
                r = (ext & 0xff) == SQLITE_BUSY || (ext & 0xff) == SQLITE_LOCKED ||
                            (db && strstr(sqlite3_errmsg(db), "no such table"))
                        ? 0
                        : -EIO;
                if (r < 0)
                        snprintf(err, errlen, "%s: cannot read: %s", path,
                                 db ? sqlite3_errmsg(db) : "out of memory");
                sqlite3_close(db);
                return r;
        }
        r = master_matches(db, path, master, err, errlen);
        sqlite3_close(db);
        return r < 0 ? r : 0;
}

int keystore_open(const char *state_dir, const MasterKey *master, KeyStore **ret)
{
        KeyStore *ks;
        int r;

        ks = calloc(1, sizeof(KeyStore));
        if (!ks)
                return log_oom();
        ks->master = master;
        if (asprintf(&ks->path, "%s/keys.db", state_dir) < 0) {
                free(ks);
                return log_oom();
        }
        if (sqlite3_open_v2(ks->path, &ks->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                r = log_error_errno(EIO, "Cannot open %s: %s", ks->path,
                                    ks->db ? sqlite3_errmsg(ks->db) : "out of memory");
                keystore_close(ks);
                return r;
        }
        sqlite3_busy_timeout(ks->db, 5000);
        r = db_exec(ks, schema);
        if (r >= 0)
                r = check_master(ks);
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
        entries_clear(ks);
        free(ks->entries);
        sqlite3_close(ks->db);
        free(ks->path);
        free(ks);
}

/* Transactions start lazily at the first write; txn_end() commits, or rolls back and reloads
 * the entries from disk so memory never shows what the disk does not hold. */
static int txn_write(KeyStore *ks)
{
        if (ks->in_txn)
                return 0;
        int r = db_exec(ks, "BEGIN IMMEDIATE");
        if (r >= 0)
                ks->in_txn = true;
        return r;
}

static int txn_end(KeyStore *ks, int r, KeyEvents *ev, size_t ev_start)
{
        if (!ks->in_txn)
                return r;
        ks->in_txn = false;
        if (r >= 0)
                r = db_exec(ks, "COMMIT");
        if (r < 0) {
                /* SQLite may have rolled back already (an I/O error does). */
                if (!sqlite3_get_autocommit(ks->db))
                        (void) db_exec(ks, "ROLLBACK");
                ev->n = ev_start;
                if (load_rows(ks) < 0)
                        log_error("%s: cannot reload keys after a failed update", ks->path);
        }
        return r;
}

static int row_update(KeyStore *ks, const KeyEntry *e)
{
        unsigned char mac[MAC_BYTES];
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = txn_write(ks);
        if (r >= 0)
                r = row_mac(ks, e, mac);
        if (r < 0)
                return r;
        if (sqlite3_prepare_v2(ks->db,
                               "UPDATE keys SET state=?, activated_at=?, retired_at=?, "
                               "expires_at=?, sealed_secret=CASE WHEN ? THEN sealed_secret "
                               "ELSE NULL END, row_mac=? WHERE kid=?",
                               -1, &st, NULL) != SQLITE_OK)
                return db_error(ks, "cannot update key");
        sqlite3_bind_text(st, 1, key_state_to_string(e->state), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, e->activated_at);
        sqlite3_bind_int64(st, 3, e->retired_at);
        sqlite3_bind_int64(st, 4, e->expires_at);
        /* Only keys that may still sign keep their (sealed) private half. */
        sqlite3_bind_int(st, 5, e->state == KEY_NEXT || e->state == KEY_ACTIVE);
        sqlite3_bind_blob(st, 6, mac, MAC_BYTES, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, e->kid, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        return rc == SQLITE_DONE ? 0 : db_error(ks, "cannot update key");
}

static void add_event(KeyEvents *ev, const char *event, Alg alg, const char *kid, const char *other,
                      const char *state)
{
        if (ev->n >= KEY_EVENTS_MAX)
                return;
        KeyEvent *e = &ev->e[ev->n++];
        *e = (KeyEvent){.event = event, .alg = alg, .state = state};
        snprintf(e->kid, sizeof(e->kid), "%s", kid);
        snprintf(e->other_kid, sizeof(e->other_kid), "%s", other ? other : "");
}

/* Makes a key, seals its private half and stores it in `state`. */
static int create_key(KeyStore *ks, const KeyPolicy *p, Alg alg, KeyState state, int64_t now,
                      KeyEvents *ev, KeyEntry **ret)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        _cleanup_free_ unsigned char *sealed = NULL;
        unsigned char *priv = NULL, mac[MAC_BYTES];
        size_t priv_len, sealed_len;
        sqlite3_stmt *st = NULL;
        KeyEntry *e;
        int r, rc;

        r = signing_key_generate(alg, p->rsa_bits, &k);
        if (r < 0)
                return log_error_errno(r, "Cannot generate %s key: %m", alg_to_string(alg));
        r = signing_key_export(k, &priv, &priv_len);
        if (r < 0)
                return r;
        r = seal(ks->master, seal_purpose(alg), k->kid, priv, priv_len, &sealed, &sealed_len);
        sodium_free(priv);
        if (r < 0)
                return r;

        e = calloc(1, sizeof(KeyEntry));
        if (!e)
                return -ENOMEM;
        *e = (KeyEntry){
            .alg = alg,
            .state = state,
            .created_at = now,
            .activated_at = state == KEY_ACTIVE ? now : 0,
            .jwk = json_incref(k->jwk),
            .jwk_text = json_dumps(k->jwk, JSON_COMPACT | JSON_SORT_KEYS),
            .key = TAKE_PTR(k),
        };
        memcpy(e->kid, e->key->kid, KID_LEN + 1);
        r = e->jwk_text ? row_mac(ks, e, mac) : -ENOMEM;
        if (r >= 0)
                r = txn_write(ks);
        if (r < 0) {
                entry_free(e);
                return r;
        }
        if (sqlite3_prepare_v2(
                ks->db,
                "INSERT INTO keys (kid, alg, state, created_at, activated_at, "
                "public_jwk, sealed_secret, row_mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                -1, &st, NULL) != SQLITE_OK) {
                entry_free(e);
                return db_error(ks, "cannot store new key");
        }
        sqlite3_bind_text(st, 1, e->kid, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, alg_to_string(alg), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, key_state_to_string(state), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, e->created_at);
        sqlite3_bind_int64(st, 5, e->activated_at);
        sqlite3_bind_text(st, 6, e->jwk_text, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 7, sealed, (int) sealed_len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 8, mac, MAC_BYTES, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
                entry_free(e);
                return db_error(ks, "cannot store new key");
        }
        r = entries_append(ks, e);
        if (r < 0) {
                entry_free(e);
                return r;
        }
        add_event(ev, "key_created", alg, e->kid, NULL, key_state_to_string(state));
        if (ret)
                *ret = e;
        return 0;
}

/* Moves a key to a state in which it no longer signs; its private half is dropped from
 * memory and disk. */
static int stop_signing(KeyStore *ks, KeyEntry *e, KeyState state, int64_t now, int64_t expires_at)
{
        e->state = state;
        /* When it stopped signing: revoking a retired key does not move that. */
        if (state != KEY_REMOVED && e->retired_at == 0)
                e->retired_at = now;
        e->expires_at = expires_at;
        if (e->key) {
                signing_key_unref(e->key);
                e->key = NULL;
        }
        return row_update(ks, e);
}

static int activate(KeyStore *ks, KeyEntry *e, int64_t now)
{
        e->state = KEY_ACTIVE;
        e->activated_at = now;
        return row_update(ks, e);
}

/* The active key retires and `next` (made now if there is none) takes over. */
static int rotate_series(KeyStore *ks, const KeyPolicy *p, Alg alg, int64_t now, KeyEvents *ev)
{
        KeyEntry *old = find_state(ks, alg, KEY_ACTIVE), *next = find_state(ks, alg, KEY_NEXT);
        int r = 0;

        if (old)
                r = stop_signing(ks, old, KEY_RETIRED, now, now + (int64_t) p->retention);
        if (r >= 0 && next)
                r = activate(ks, next, now);
        else if (r >= 0)
                r = create_key(ks, p, alg, KEY_ACTIVE, now, ev, &next);
        if (r >= 0)
                add_event(ev, "key_rotated", alg, next->kid, old ? old->kid : NULL, NULL);
        return r;
}

static int advance_series(KeyStore *ks, const KeyPolicy *p, Alg alg, int64_t now, KeyEvents *ev)
{
        for (int step = 0; step < STEPS_PER_SERIES; step++) {
                KeyEntry *active = find_state(ks, alg, KEY_ACTIVE);
                KeyEntry *next = find_state(ks, alg, KEY_NEXT);
                int r;

                if (!p->algs[alg]) {
                        /* No rule asks for this algorithm any more: its keys retire normally
                         * and a key that never signed goes at once. */
                        if (next && (r = stop_signing(ks, next, KEY_REMOVED, now, now)) < 0)
                                return r;
                        if (next)
                                add_event(ev, "key_removed", alg, next->kid, NULL, NULL);
                        if (active) {
                                r = stop_signing(ks, active, KEY_RETIRED, now,
                                                 now + (int64_t) p->retention);
                                if (r < 0)
                                        return r;
                                add_event(ev, "key_retired", alg, active->kid, NULL, NULL);
                        }
                        return 0;
                }
                if (!active) {
                        /* A series' first key signs at once: nothing could publish it ahead. */
                        if (next) {
                                r = activate(ks, next, now);
                                if (r >= 0)
                                        add_event(ev, "key_rotated", alg, next->kid, NULL, NULL);
                        } else
                                r = create_key(ks, p, alg, KEY_ACTIVE, now, ev, NULL);
                        if (r < 0)
                                return r;
                        continue;
                }

                int64_t rotate_at = active->activated_at + (int64_t) p->rotation_period;
                if (!next) {
                        if (now < rotate_at - (int64_t) p->publish_ahead)
                                return 0;
                        r = create_key(ks, p, alg, KEY_NEXT, now, ev, NULL);
                        if (r < 0)
                                return r;
                        continue;
                }
                /* Never sign with a key relying parties may not have fetched yet. */
                if (now < rotate_at || now < next->created_at + (int64_t) p->publish_ahead)
                        return 0;
                r = rotate_series(ks, p, alg, now, ev);
                if (r < 0)
                        return r;
        }
        return 0;
}

int keystore_advance(KeyStore *ks, const KeyPolicy *p, int64_t now, KeyEvents *ev)
{
        size_t ev_start = ev->n;
        int r = 0;

        for (int a = 0; a < _ALG_MAX && r >= 0; a++)
                if (p->algs[a] || find_state(ks, a, KEY_ACTIVE) || find_state(ks, a, KEY_NEXT))
                        r = advance_series(ks, p, a, now, ev);

        /* Every transition is reported: removals that do not fit in `ev` wait for the next call,
         * which the deadline (already passed) makes immediate. */
        for (size_t i = 0; i < ks->n && r >= 0 && ev->n < KEY_EVENTS_MAX; i++) {
                KeyEntry *e = ks->entries[i];
                if (e->state == KEY_RETIRED && now >= e->expires_at) {
                        r = stop_signing(ks, e, KEY_REMOVED, now, e->expires_at);
                        if (r >= 0)
                                add_event(ev, "key_removed", e->alg, e->kid, NULL, NULL);
                }
        }
        return txn_end(ks, r, ev, ev_start);
}

int64_t keystore_next_deadline(KeyStore *ks, const KeyPolicy *p)
{
        int64_t d = INT64_MAX;

        for (int a = 0; a < _ALG_MAX; a++) {
                KeyEntry *active = find_state(ks, a, KEY_ACTIVE);
                KeyEntry *next = find_state(ks, a, KEY_NEXT);

                if (!p->algs[a]) {
                        if (active || next)
                                d = INT64_MIN; /* due now */
                        continue;
                }
                if (!active) {
                        d = INT64_MIN;
                        continue;
                }
                int64_t rotate_at = active->activated_at + (int64_t) p->rotation_period;
                if (!next)
                        d = MIN(d, rotate_at - (int64_t) p->publish_ahead);
                else
                        d = MIN(d, MAX(rotate_at, next->created_at + (int64_t) p->publish_ahead));
        }
        for (size_t i = 0; i < ks->n; i++)
                if (ks->entries[i]->state == KEY_RETIRED)
                        d = MIN(d, ks->entries[i]->expires_at);
        return d;
}

int keystore_rotate(KeyStore *ks, const KeyPolicy *p, Alg alg, int64_t now, KeyEvents *ev)
{
        size_t ev_start = ev->n;

        if (!find_state(ks, alg, KEY_ACTIVE))
                return -ENOENT;
        return txn_end(ks, rotate_series(ks, p, alg, now, ev), ev, ev_start);
}

int keystore_revoke(KeyStore *ks, const KeyPolicy *p, const char *kid, int64_t now, KeyEvents *ev)
{
        KeyEntry *e = find_kid(ks, kid), *repl = NULL;
        size_t ev_start = ev->n;
        bool was_active;
        Alg alg;
        int r;

        if (!e)
                return -ENOENT;
        if (e->state == KEY_REVOKED || e->state == KEY_REMOVED)
                return -EALREADY;
        was_active = e->state == KEY_ACTIVE;
        alg = e->alg;

        r = stop_signing(ks, e, KEY_REVOKED, now, now);
        if (r >= 0 && was_active && p->algs[alg]) {
                /* The next key, already published, takes over; else a new one, at once. */
                repl = find_state(ks, alg, KEY_NEXT);
                if (repl)
                        r = activate(ks, repl, now);
                else
                        r = create_key(ks, p, alg, KEY_ACTIVE, now, ev, &repl);
        }
        if (r >= 0)
                add_event(ev, "key_revoked", alg, kid, repl ? repl->kid : NULL, NULL);
        return txn_end(ks, r, ev, ev_start);
}

static int audit_key_mac(KeyStore *ks, const char *kid, int64_t created_at,
                         unsigned char out[MAC_BYTES])
{
        char data[32];
        int n = snprintf(data, sizeof(data), "%lld", (long long) created_at);

        master_mac(ks->master, "audit-key-row", kid, data, (size_t) n, out);
        return 0;
}

static int audit_key_load(KeyStore *ks, SigningKey **ret)
{
        sqlite3_stmt *st = NULL;
        unsigned char *priv = NULL, mac[MAC_BYTES];
        size_t priv_len;
        int r, rc;

        if (sqlite3_prepare_v2(ks->db,
                               "SELECT kid, created_at, sealed_secret, row_mac FROM audit_keys "
                               "ORDER BY rowid DESC LIMIT 1",
                               -1, &st, NULL) != SQLITE_OK)
                return db_error(ks, "cannot read the audit key");
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                sqlite3_finalize(st);
                return rc == SQLITE_DONE ? -ENOENT : db_error(ks, "cannot read the audit key");
        }
        const char *kid = (const char *) sqlite3_column_text(st, 0);
        r = kid ? audit_key_mac(ks, kid, sqlite3_column_int64(st, 1), mac) : -EBADMSG;
        if (r >= 0 && (sqlite3_column_bytes(st, 3) != MAC_BYTES ||
                       sodium_memcmp(mac, sqlite3_column_blob(st, 3), MAC_BYTES) != 0))
                r = -EBADMSG;
        if (r >= 0)
                r = unseal(ks->master, "audit-key", kid, sqlite3_column_blob(st, 2),
                           (size_t) sqlite3_column_bytes(st, 2), &priv, &priv_len);
        if (r >= 0) {
                r = signing_key_import(ALG_EDDSA, priv, priv_len, ret);
                sodium_free(priv);
                if (r >= 0 && strcmp((*ret)->kid, kid) != 0) {
                        signing_key_unref(*ret);
                        r = -EBADMSG;
                }
        }
        sqlite3_finalize(st);
        if (r == -EBADMSG)
                return log_error_errno(EKEYREJECTED,
                                       "%s: the audit key was altered or cannot be unsealed with "
                                       "this master key; refusing to start",
                                       ks->path);
        return r;
}

int keystore_audit_key(KeyStore *ks, int64_t now, SigningKey **ret, bool *ret_created)
{
        _cleanup_(signing_key_unrefp) SigningKey *k = NULL;
        _cleanup_free_ unsigned char *sealed = NULL;
        unsigned char *priv = NULL, mac[MAC_BYTES];
        size_t priv_len, sealed_len;
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = audit_key_load(ks, ret);
        if (r != -ENOENT) {
                if (r >= 0 && ret_created)
                        *ret_created = false;
                return r;
        }
        r = signing_key_generate(ALG_EDDSA, 0, &k);
        if (r < 0)
                return log_error_errno(r, "Cannot generate the audit key: %m");
        r = signing_key_export(k, &priv, &priv_len);
        if (r < 0)
                return r;
        r = seal(ks->master, "audit-key", k->kid, priv, priv_len, &sealed, &sealed_len);
        sodium_free(priv);
        if (r < 0)
                return r;
        audit_key_mac(ks, k->kid, now, mac);
        if (sqlite3_prepare_v2(ks->db,
                               "INSERT INTO audit_keys (kid, created_at, sealed_secret, row_mac) "
                               "VALUES (?, ?, ?, ?)",
                               -1, &st, NULL) != SQLITE_OK)
                return db_error(ks, "cannot store the audit key");
        sqlite3_bind_text(st, 1, k->kid, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_blob(st, 3, sealed, (int) sealed_len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, mac, MAC_BYTES, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return db_error(ks, "cannot store the audit key");
        *ret = TAKE_PTR(k);
        if (ret_created)
                *ret_created = true;
        return 0;
}

SigningKey *keystore_active(KeyStore *ks, Alg alg)
{
        KeyEntry *e = find_state(ks, alg, KEY_ACTIVE);
        return e ? e->key : NULL;
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
                if (entry_published(ks->entries[i], now) &&
                    json_array_append(keys, ks->entries[i]->jwk) < 0) {
                        json_decref(keys);
                        return NULL;
                }
        return json_pack("{s:o}", "keys", keys);
}

void keystore_published_algs(KeyStore *ks, int64_t now, bool ret[_ALG_MAX])
{
        for (int a = 0; a < _ALG_MAX; a++)
                ret[a] = false;
        for (size_t i = 0; i < ks->n; i++)
                if (entry_published(ks->entries[i], now))
                        ret[ks->entries[i]->alg] = true;
}

json_t *keystore_list(KeyStore *ks)
{
        json_t *a = json_array();

        for (size_t i = 0; a && i < ks->n; i++) {
                const KeyEntry *e = ks->entries[i];
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
