#include "keys/secretstore.h"

#include <sodium.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "log.h"
#include "macro.h"

#define SEAL_PURPOSE "upstream-secret"

struct SecretStore {
        sqlite3 *db;
        char *path;
        const MasterKey *master;
};

/* secure_delete: a deleted or replaced value's sealed bytes are overwritten in the file, not
 * left in a free page. */
static const char schema[] = "PRAGMA secure_delete=ON;"
                             "PRAGMA synchronous=FULL;"
                             "CREATE TABLE IF NOT EXISTS secrets ("
                             " name TEXT PRIMARY KEY,"
                             " sealed BLOB NOT NULL,"
                             " created_at INTEGER NOT NULL,"
                             " updated_at INTEGER NOT NULL);";

static int db_error(SecretStore *ss, const char *what)
{
        return log_error_errno(EIO, "%s: %s: %s", ss->path, what, sqlite3_errmsg(ss->db));
}

int secretstore_open(const char *state_dir, const MasterKey *master, SecretStore **ret)
{
        SecretStore *ss = calloc(1, sizeof(SecretStore));
        char *msg = NULL;

        if (!ss)
                return log_oom();
        ss->master = master;
        if (asprintf(&ss->path, "%s/keys.db", state_dir) < 0) {
                free(ss);
                return log_oom();
        }
        /* No CREATE: the key store made the file and checked the master key against it. */
        if (sqlite3_open_v2(ss->path, &ss->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK) {
                int r = log_error_errno(EIO, "Cannot open %s: %s", ss->path,
                                        ss->db ? sqlite3_errmsg(ss->db) : "out of memory");
                secretstore_close(ss);
                return r;
        }
        sqlite3_busy_timeout(ss->db, 5000);
        if (sqlite3_exec(ss->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
                int r = log_error_errno(EIO, "%s: %s", ss->path, msg ? msg : "cannot create");
                sqlite3_free(msg);
                secretstore_close(ss);
                return r;
        }
        *ret = ss;
        return 0;
}

void secretstore_close(SecretStore *ss)
{
        if (!ss)
                return;
        sqlite3_close(ss->db);
        free(ss->path);
        free(ss);
}

int secretstore_set(SecretStore *ss, const char *name, const void *value, size_t len,
                    int64_t now)
{
        _cleanup_free_ unsigned char *blob = NULL;
        sqlite3_stmt *st = NULL;
        size_t blob_len;
        int r, rc, existed;

        r = seal(ss->master, SEAL_PURPOSE, name, value, len, &blob, &blob_len);
        if (r < 0)
                return log_error_errno(r, "Cannot seal secret: %m");
        if (sqlite3_prepare_v2(ss->db, "SELECT 1 FROM secrets WHERE name = ?", -1, &st, NULL) !=
            SQLITE_OK)
                return db_error(ss, "cannot read secrets");
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return db_error(ss, "cannot read secrets");
        existed = rc == SQLITE_ROW;

        if (sqlite3_prepare_v2(ss->db,
                               "INSERT INTO secrets (name, sealed, created_at, updated_at)"
                               " VALUES (?1, ?2, ?3, ?3) ON CONFLICT(name) DO UPDATE SET"
                               " sealed = excluded.sealed, updated_at = excluded.updated_at",
                               -1, &st, NULL) != SQLITE_OK)
                return db_error(ss, "cannot write secrets");
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, blob, (int) blob_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, now);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return db_error(ss, "cannot write secrets");
        return existed ? 0 : 1;
}

int secretstore_delete(SecretStore *ss, const char *name)
{
        sqlite3_stmt *st = NULL;
        int rc;

        if (sqlite3_prepare_v2(ss->db, "DELETE FROM secrets WHERE name = ?", -1, &st, NULL) !=
            SQLITE_OK)
                return db_error(ss, "cannot delete from secrets");
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return db_error(ss, "cannot delete from secrets");
        return sqlite3_changes(ss->db) > 0 ? 0 : -ENOENT;
}

json_t *secretstore_list(SecretStore *ss)
{
        _cleanup_(json_decrefp) json_t *list = json_array();
        sqlite3_stmt *st = NULL;
        int rc;

        if (!list)
                return NULL;
        if (sqlite3_prepare_v2(ss->db,
                               "SELECT name, created_at, updated_at FROM secrets ORDER BY name",
                               -1, &st, NULL) != SQLITE_OK) {
                (void) db_error(ss, "cannot read secrets");
                return NULL;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                if (json_array_append_new(
                        list, json_pack("{s:s, s:I, s:I}", "name",
                                        (const char *) sqlite3_column_text(st, 0), "created_at",
                                        (json_int_t) sqlite3_column_int64(st, 1), "updated_at",
                                        (json_int_t) sqlite3_column_int64(st, 2))) < 0) {
                        rc = SQLITE_NOMEM;
                        break;
                }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
                (void) db_error(ss, "cannot read secrets");
                return NULL;
        }
        return TAKE_PTR(list);
}

int secretstore_reveal(SecretStore *ss, const char *name, SecretValue *ret)
{
        sqlite3_stmt *st = NULL;
        unsigned char *plain = NULL;
        size_t len;
        int r, rc;

        if (sqlite3_prepare_v2(ss->db, "SELECT sealed FROM secrets WHERE name = ?", -1, &st,
                               NULL) != SQLITE_OK)
                return db_error(ss, "cannot read secrets");
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
                sqlite3_finalize(st);
                return -ENOENT;
        }
        if (rc != SQLITE_ROW) {
                sqlite3_finalize(st);
                return db_error(ss, "cannot read secrets");
        }
        r = unseal(ss->master, SEAL_PURPOSE, name, sqlite3_column_blob(st, 0),
                   (size_t) sqlite3_column_bytes(st, 0), &plain, &len);
        sqlite3_finalize(st);
        if (r == -EBADMSG)
                return log_error_errno(r,
                                       "%s: the secret \"%s\" does not open under the master key "
                                       "(moved from another row or another store?); set it again",
                                       ss->path, name);
        if (r < 0)
                return r;
        plain[len] = 0; /* unseal() leaves room for it */
        *ret = (SecretValue){.bytes = plain, .len = len};
        return 0;
}

void secret_value_free(SecretValue *v)
{
        if (v->bytes)
                sodium_free(v->bytes); /* zeroes it */
        *v = (SecretValue){};
}
