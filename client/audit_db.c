/* Shared by brokerctl audit export and verify: opening a log read-only, and how many threads
 * to read it with. */
#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>

#include "audit_tool.h"
#include "macro.h"

sqlite3 *audit_db_open(const char *path)
{
        struct stat st;
        sqlite3 *db = NULL;

        if (!path) {
                fprintf(stderr, "brokerctl: --database PATH is required\n");
                return NULL;
        }
        /* SQLite would happily create an empty database for a mistyped path. */
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
                fprintf(stderr, "brokerctl: %s: no such audit database (check --database)\n", path);
                return NULL;
        }
        /* one thread per connection: SQLite's own locking is not needed */
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK) {
                fprintf(stderr, "brokerctl: cannot open %s: %s\n", path,
                        db ? sqlite3_errmsg(db) : "out of memory");
                sqlite3_close(db);
                return NULL;
        }
        sqlite3_busy_timeout(db, 5000);
        return db;
}

size_t audit_thread_count(const AuditToolArgs *a, uint64_t size, uint64_t per_thread_min)
{
        size_t n;

        if (a->threads > 0)
                return (size_t) MIN(a->threads, AUDIT_THREADS_MAX);
        n = MAX(1u, MIN((size_t) sysconf(_SC_NPROCESSORS_ONLN), (size_t) AUDIT_THREADS_MAX));
        return size < per_thread_min * n ? 1 : n;
}
