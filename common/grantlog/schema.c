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

static int user_version(sqlite3 *db, int *ret)
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

static bool has_tables(sqlite3 *db)
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

int grantlog_schema_prepare_writer(sqlite3 *db, char *err, size_t errlen)
{
        int version = 0;
        char sql[64];

        if (sqlite3_exec(db, writer_settings, NULL, NULL, NULL) != SQLITE_OK ||
            user_version(db, &version) != SQLITE_OK) {
                snprintf(err, errlen, "cannot set the database up: %s", sqlite3_errmsg(db));
                return -EIO;
        }
        if (version > GRANTLOG_SCHEMA_VERSION) {
                snprintf(err, errlen,
                         "the log has schema version %d, newer than this brokerd's %d: it was "
                         "written by a newer brokerd",
                         version, GRANTLOG_SCHEMA_VERSION);
                return -EPROTO;
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

/* Reads the version: the first read of a connection, where locking, a missing -shm and "not a
 * database" show. */
static int check_readable(sqlite3 *db, const char *path, char *err, size_t errlen)
{
        int version = 0, rc = user_version(db, &version);

        switch (rc & 0xff) {
        case SQLITE_OK:
                break;
        case SQLITE_NOTADB:
                snprintf(err, errlen, "%s: not an audit database (not an SQLite file)", path);
                return -EMEDIUMTYPE;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                snprintf(err, errlen, "%s: the database stayed locked: %s", path,
                         sqlite3_errmsg(db));
                return -EBUSY;
        case SQLITE_CANTOPEN:
        case SQLITE_READONLY:
                return -EROFS; /* the caller tries the file alone */
        default:
                snprintf(err, errlen, "%s: cannot read the database: %s", path, sqlite3_errmsg(db));
                return -EIO;
        }
        if (version > GRANTLOG_SCHEMA_VERSION) {
                snprintf(err, errlen,
                         "%s: schema version %d is newer than this brokerctl's %d: use a newer "
                         "brokerctl",
                         path, version, GRANTLOG_SCHEMA_VERSION);
                return -EPROTO;
        }
        if (!has_tables(db)) {
                snprintf(err, errlen, "%s: not an audit database (no records and signed tables)",
                         path);
                return -EMEDIUMTYPE;
        }
        return 0;
}

static int open_uri(const char *path, const char *mode, sqlite3 **ret)
{
        _cleanup_free_ char *uri = malloc(strlen(path) * 3 + 64);
        char *p;
        int rc;

        if (!uri)
                return SQLITE_NOMEM;
        /* A URI so that the mode can be given; what a URI would read otherwise is escaped. */
        p = stpcpy(uri, "file:");
        for (const char *s = path; *s; s++) {
                if (*s == '?' || *s == '#' || *s == '%')
                        p += sprintf(p, "%%%02X", (unsigned char) *s);
                else
                        *p++ = *s;
        }
        sprintf(p, "?%s", mode);
        /* one connection per thread: SQLite's own mutexes are not needed */
        rc = sqlite3_open_v2(uri, ret, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                             NULL);
        if (rc == SQLITE_OK)
                sqlite3_busy_timeout(*ret, GRANTLOG_BUSY_TIMEOUT_MS);
        return rc;
}

int grantlog_db_open_readonly(const char *path, sqlite3 **ret, char *err, size_t errlen)
{
        _cleanup_free_ char *wal = NULL;
        sqlite3 *db = NULL;
        struct stat st;
        int r;

        /* SQLite would happily create an empty database for a mistyped path. */
        if (stat(path, &st) < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s", path,
                         r == -ENOENT ? "no such audit database" : strerror(-r));
                return r == -ENOENT ? -ENOENT : -EACCES;
        }
        if (!S_ISREG(st.st_mode)) {
                snprintf(err, errlen, "%s: not an audit database (not a regular file)", path);
                return -EMEDIUMTYPE;
        }
        if (access(path, R_OK) < 0) {
                snprintf(err, errlen, "%s: cannot read it: %s", path, strerror(errno));
                return -EACCES;
        }
        if (open_uri(path, "mode=ro", &db) != SQLITE_OK) {
                snprintf(err, errlen, "%s: cannot open: %s", path,
                         db ? sqlite3_errmsg(db) : "out of memory");
                sqlite3_close(db);
                return -EIO;
        }
        r = check_readable(db, path, err, errlen);
        if (r != -EROFS) {
                if (r < 0)
                        sqlite3_close(db);
                else
                        *ret = db;
                return r;
        }
        sqlite3_close(db);
        db = NULL;

        /* Read-only WAL mode needs PATH-shm, which cannot be created here (read-only media, a
         * directory the caller may not write). Without a -wal that holds records, the file is
         * the whole log and is read as it is, with no locking: nobody writes it. */
        if (asprintf(&wal, "%s-wal", path) < 0)
                return -ENOMEM;
        if (stat(wal, &st) == 0 && st.st_size > 0) {
                snprintf(err, errlen,
                         "%s: cannot read it here: its write-ahead log %s holds records, and "
                         "SQLite cannot create %s-shm to read it; copy the database with its "
                         "-wal file into a directory you can write, or read it as its owner",
                         path, wal, path);
                return -EACCES;
        }
        if (open_uri(path, "immutable=1", &db) != SQLITE_OK) {
                snprintf(err, errlen, "%s: cannot open: %s", path,
                         db ? sqlite3_errmsg(db) : "out of memory");
                sqlite3_close(db);
                return -EIO;
        }
        r = check_readable(db, path, err, errlen);
        if (r == -EROFS) {
                snprintf(err, errlen, "%s: cannot read it: %s", path, sqlite3_errmsg(db));
                r = -EACCES;
        }
        if (r < 0) {
                sqlite3_close(db);
                return r;
        }
        *ret = db;
        return 0;
}
