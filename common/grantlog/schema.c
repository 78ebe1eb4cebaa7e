#include "grantlog/schema.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

static const char tables[] = "CREATE TABLE IF NOT EXISTS records ("
                             " seq INTEGER PRIMARY KEY,"
                             " time_ms INTEGER NOT NULL,"
                             " event TEXT NOT NULL,"
                             " body TEXT NOT NULL,"
                             " hash TEXT NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS signed ("
                             " name TEXT PRIMARY KEY," /* 'head' or 'anchor' */
                             " seq INTEGER NOT NULL,"
                             " hash TEXT NOT NULL,"
                             " time TEXT NOT NULL,"
                             " key_id TEXT NOT NULL,"
                             " public_key TEXT NOT NULL,"
                             /* one b-tree: a head update touches one page, not a table page
                              * and an index page */
                             " signature TEXT NOT NULL) WITHOUT ROWID;";

static const char writer_settings[] = "PRAGMA journal_mode=WAL;"
                                      "PRAGMA synchronous=FULL;"
                                      /* a separate connection checkpoints, off the commit
                                       * path */
                                      "PRAGMA wal_autocheckpoint=0;"
                                      /* a WAL that grew in a burst is cut back when it
                                       * restarts */
                                      "PRAGMA journal_size_limit=16777216;";

int grantlog_schema_version(sqlite3 *db, int *ret)
{
        sqlite3_stmt *st = NULL;
        int rc;

        if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
                return sqlite3_errcode(db);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

bool grantlog_schema_has_tables(sqlite3 *db)
{
        sqlite3_stmt *st = NULL;
        bool ok = false;

        if (sqlite3_prepare_v2(db,
                               "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND "
                               "name IN ('records', 'signed')",
                               -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                ok = sqlite3_column_int(st, 0) == 2;
        sqlite3_finalize(st);
        return ok;
}

/* Tables in the database: its log tables (0 to 2) and any other. */
static int count_tables(sqlite3 *db, int *ret_log, int *ret_other)
{
        sqlite3_stmt *st = NULL;
        int rc;

        if (sqlite3_prepare_v2(db,
                               "SELECT COALESCE(SUM(name IN ('records', 'signed')), 0), "
                               "COALESCE(SUM(name NOT IN ('records', 'signed')), 0) "
                               "FROM sqlite_schema WHERE type = 'table'",
                               -1, &st, NULL) != SQLITE_OK)
                return sqlite3_errcode(db);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret_log = sqlite3_column_int(st, 0);
                *ret_other = sqlite3_column_int(st, 1);
        }
        sqlite3_finalize(st);
        return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

int grantlog_schema_prepare_writer(sqlite3 *db, char *err, size_t errlen)
{
        int version = 0, n_log = 0, n_other = 0, rc;
        char sql[64];

        /* Read before anything is set or written: a file that is not a log of ours, or of a
         * version this code does not know, is left exactly as it is. */
        rc = grantlog_schema_version(db, &version);
        if (rc == SQLITE_OK)
                rc = count_tables(db, &n_log, &n_other);
        if ((rc & 0xff) == SQLITE_NOTADB) {
                snprintf(err, errlen, "not an audit database (SQLite: %s)", sqlite3_errmsg(db));
                return -EMEDIUMTYPE;
        }
        if (rc != SQLITE_OK) {
                snprintf(err, errlen, "cannot read the database: %s", sqlite3_errmsg(db));
                return -EIO;
        }
        if (version > GRANTLOG_SCHEMA_VERSION) {
                snprintf(err, errlen,
                         "the log has schema version %d, newer than this brokerd's %d: it was "
                         "written by a newer brokerd",
                         version, GRANTLOG_SCHEMA_VERSION);
                return -EPROTO;
        }
        if (n_other > 0 || (n_log > 0 && n_log < 2)) {
                snprintf(err, errlen,
                         "not an audit database (it holds %s): refusing to write into it",
                         n_other > 0 ? "tables of something else" : "only part of the tables");
                return -EMEDIUMTYPE;
        }
        if (sqlite3_exec(db, writer_settings, NULL, NULL, NULL) != SQLITE_OK) {
                snprintf(err, errlen, "cannot set the database up: %s", sqlite3_errmsg(db));
                return -EIO;
        }
        if (version == GRANTLOG_SCHEMA_VERSION)
                return 0;
        /* A new log, or one of version 0 (the same tables): one transaction makes it current. */
        snprintf(sql, sizeof(sql), "PRAGMA user_version=%d;", GRANTLOG_SCHEMA_VERSION);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, tables, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
                snprintf(err, errlen, "cannot create or migrate the tables: %s",
                         sqlite3_errmsg(db));
                if (!sqlite3_get_autocommit(db))
                        (void) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
                return -EIO;
        }
        return 0;
}
