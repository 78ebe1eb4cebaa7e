/* Reading a grant log without writing it: the one way brokerctl's verify and export (and the
 * daemon's full verification of a log it continues) open a database, and how they read it over
 * one snapshot, so a running daemon appending and pruning meanwhile never shows them a log that
 * was never on disk. Internal to common/grantlog/. Thread-safe: one connection per thread. */
#pragma once

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* Opens a log only to read it, on read-only media and for a caller who may read the file but
 * not write beside it too (a copy handed to an auditor): SQLite's read-only WAL mode needs a
 * -shm file it may not be able to create; when none can be made and no -wal holds records
 * outside the file (nor a rollback -journal an unfinished transaction), the file alone is read
 * as it is. Never writes, and never rolls anything back. Then checks it is a grant log of a
 * version this code reads. Errors, with err filled:
 *   -ENOENT  no such file          -EACCES  the file (or its -wal or -journal) cannot be read
 *   -EBUSY   locked by a writer in a way that did not clear (not a verdict on the log)
 *   -EMEDIUMTYPE  not a grant log (not SQLite, or not its tables)
 *   -EPROTO  written by a newer brokerd */
int grantlog_db_open_readonly(const char *path, sqlite3 **ret, char *err, size_t errlen);

/* Starts a read transaction and fixes its snapshot: every read on `db` until it ends sees the
 * log as it was at this call. 0 or -EIO. */
int grantlog_reader_snapshot(sqlite3 *db);

/* Verify and export read large inputs with several threads, each on a connection of its own. */
#define GRANTLOG_THREADS_MAX 16

/* How many: `requested` (at most GRANTLOG_THREADS_MAX), or for 0 one per online CPU once the
 * input (`size` units) gives each at least per_thread_min, else one. */
size_t grantlog_thread_count(unsigned requested, uint64_t size, uint64_t per_thread_min);
