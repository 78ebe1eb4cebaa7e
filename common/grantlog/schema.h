/* The grant log's storage: its SQLite tables, their version, and how a database is opened for
 * writing (by brokerd) or only for reading (by brokerctl, an auditor, the daemon's checks).
 *
 * Version 1 (PRAGMA user_version): tables `records` (seq, time_ms, event, body, hash) and
 * `signed` (the head and the anchor). Version 0 is the same tables as brokerd wrote them before
 * the version existed; opening such a log for writing stamps it 1 (nothing in the chain
 * changes). A version newer than this code is refused by both sides.
 *
 * Internal to common/grantlog/. Thread-safe: no shared state. */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#define GRANTLOG_SCHEMA_VERSION 1

/* Sets the writer's connection up (WAL, synchronous=FULL, no autocheckpoint), creates the
 * tables of a new log and migrates an older one. -EPROTO (a newer version), -EIO; err says
 * which. */
int grantlog_schema_prepare_writer(sqlite3 *db, char *err, size_t errlen);

/* Opens a log only to read it, on read-only media and for a caller who may read the file but
 * not write beside it too (a copy handed to an auditor): SQLite's read-only WAL mode needs a
 * -shm file it may not be able to create; when none can be made and no -wal holds records
 * outside the file, the file alone is read as it is. Then checks it is a grant log of a
 * version this code reads. Errors, with err filled:
 *   -ENOENT  no such file          -EACCES  the file (or its -wal) cannot be read
 *   -EBUSY   locked by a writer in a way that did not clear (not a verdict on the log)
 *   -EMEDIUMTYPE  not a grant log (not SQLite, or not its tables)
 *   -EPROTO  written by a newer brokerd */
int grantlog_db_open_readonly(const char *path, sqlite3 **ret, char *err, size_t errlen);

/* How long a reader waits for a lock a writer holds (WAL recovery, a checkpoint) before it
 * reports the database busy. */
#define GRANTLOG_BUSY_TIMEOUT_MS 10000
