/* The grant log's storage: its SQLite tables, their version, and how a database is opened for
 * writing (by brokerd) or only for reading (by brokerctl, an auditor, the daemon's checks).
 *
 * Opening a log only to read it is grantlog/reader.h's.
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
 * tables of a new log and migrates an older one. A file that is not a log (not SQLite, other
 * tables, part of ours: -EMEDIUMTYPE) or of a newer version (-EPROTO) is left as it is; -EIO;
 * err says which. */
int grantlog_schema_prepare_writer(sqlite3 *db, char *err, size_t errlen);

/* The version a database says it has (PRAGMA user_version); an SQLite result code. */
int grantlog_schema_version(sqlite3 *db, int *ret);

/* Whether it holds the log's two tables. */
bool grantlog_schema_has_tables(sqlite3 *db);

/* How long a reader waits for a lock a writer holds (WAL recovery, a checkpoint) before it
 * reports the database busy. */
#define GRANTLOG_BUSY_TIMEOUT_MS 10000
