/* Opening a grant log only to read it (contract in reader.h). */
#include "grantlog/reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "grantlog/schema.h"
#include "macro.h"

/* Whether the database holds no tables at all and has no PATH-wal with frames beside it: the file
 * alone of a running brokerd's log looks like that until its write-ahead log is first copied into
 * it. */
static bool wal_left_behind(sqlite3 *db, const char *path)
{
        _cleanup_free_ char *wal = NULL;
        sqlite3_stmt *st = NULL;
        struct stat w;
        bool empty = false;

        if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM sqlite_schema", -1, &st, NULL) ==
                SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                empty = sqlite3_column_int(st, 0) == 0;
        sqlite3_finalize(st);
        if (!empty || asprintf(&wal, "%s-wal", path) < 0)
                return false;
        /* an empty one may be SQLite's own, made as this reader opened the file */
        return stat(wal, &w) < 0 ? errno == ENOENT : w.st_size == 0;
}

/* Reads the version: the first read of a connection, where locking, a missing -shm and "not a
 * database" show. */
static int check_readable(sqlite3 *db, const char *path, char *err, size_t errlen)
{
        int version = 0, rc = grantlog_schema_version(db, &version);

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
        if (!grantlog_schema_has_tables(db)) {
                snprintf(err, errlen, "%s: not an audit database (no records and signed tables)%s",
                         path,
                         wal_left_behind(db, path)
                             ? "; it holds no tables at all, as the database file alone of a "
                               "running brokerd's log can while they are still in its -wal "
                               "file: copy the -wal file along with it, or copy it after "
                               "brokerd stopped"
                             : "");
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

/* Whether PATH-journal is a hot rollback journal: one that starts with the journal's magic
 * (a finished journal is deleted, truncated or has its header zeroed). 1 also when it exists
 * but cannot be read: nothing tells it is not. */
static int hot_journal(const char *path)
{
        static const unsigned char magic[8] = {0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};
        _cleanup_free_ char *journal = NULL;
        _cleanup_close_ int fd = -EBADF;
        unsigned char head[sizeof(magic)];
        ssize_t n;

        if (asprintf(&journal, "%s-journal", path) < 0)
                return -ENOMEM;
        fd = open(journal, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return errno == ENOENT ? 0 : 1;
        n = read(fd, head, sizeof(head));
        if (n < 0)
                return 1;
        /* empty or shorter than a header: nothing to roll back */
        return n == (ssize_t) sizeof(head) && memcmp(head, magic, sizeof(magic)) == 0;
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
                         "%s: cannot read it here: its write-ahead log %s may hold records "
                         "the file does not, and SQLite can read it only through %s-shm, which "
                         "it cannot create or use here (read-only storage, or a directory you "
                         "may not write); copy the database with its -wal file into a "
                         "directory you can write and verify the copy",
                         path, wal, path);
                return -EACCES;
        }
        /* Likewise a rollback journal that holds an unfinished transaction (a log copied
         * or converted by hand, its writer killed): the file alone would show that half-written
         * transaction, which verify would take for edited records. SQLite rolls it back only
         * with write access. */
        r = hot_journal(path);
        if (r < 0)
                return r;
        if (r > 0) {
                snprintf(err, errlen,
                         "%s: cannot read it: its rollback journal %s-journal holds an "
                         "unfinished transaction, which must be rolled back before the file "
                         "can be read, and brokerctl only reads; copy the database with its "
                         "-journal file into a directory you can write, open the copy once "
                         "with sqlite3 (which rolls the transaction back) and verify the copy",
                         path, path);
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

int grantlog_reader_snapshot(sqlite3 *db)
{
        /* A deferred transaction takes its snapshot at its first read: read at once, so that
         * everything read after sees the log as it was now. */
        return sqlite3_exec(db, "BEGIN; SELECT 1 FROM records LIMIT 1", NULL, NULL, NULL) ==
                       SQLITE_OK
                   ? 0
                   : -EIO;
}

size_t grantlog_thread_count(unsigned requested, uint64_t size, uint64_t per_thread_min)
{
        size_t n;

        if (requested > 0)
                return MIN((size_t) requested, (size_t) GRANTLOG_THREADS_MAX);
        n = MAX(1u, MIN((size_t) sysconf(_SC_NPROCESSORS_ONLN), (size_t) GRANTLOG_THREADS_MAX));
        return size < per_thread_min * n ? 1 : n;
}
