/* The audit store: every decision and lifecycle event, hash-chained in SQLite (WAL,
 * synchronous=FULL; format in common/auditfmt.h). One writer thread owns the log. Records
 * queued while it commits go into its next transaction together (group commit), so
 * throughput grows with concurrency while every caller still waits for its own durable
 * commit before it is answered. A second thread checkpoints the WAL off the commit path. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "daemon/auditlog.h"
#include "keys/signer.h"

typedef struct AuditStore AuditStore;

/* Runs on the event loop once the record is durably committed (result 0) or could not be
 * (-errno, and the record is not in the log). */
typedef void (*audit_done_t)(int result, void *userdata);

/* Opens or creates the log, checks it ends where its signed head says, starts the threads and
 * hooks completions into `event`. `key` signs checkpoints (a reference is taken). */
int audit_open(const char *path, const AuditLogOptions *opt, SigningKey *key, sd_event *event,
               AuditStore **ret);

/* Queues a record: an object with "time", "event" and the event's fields; the log adds "seq"
 * and "prev_hash". Takes over the reference. `done` (may be NULL) is never called from inside
 * this function. Thread-safe. Returns -ENOMEM or -ESHUTDOWN only; write failures are reported
 * through `done`. */
int audit_submit(AuditStore *a, json_t *record, int64_t time_ms, audit_done_t done, void *userdata);

/* Calls `done` on the event loop with `result`, writing nothing: for a request that failed
 * before it had a record to write, so it is answered the same way as the others. Thread-safe;
 * aborts when out of memory rather than leave a caller waiting forever. */
void audit_complete(AuditStore *a, int result, audit_done_t done, void *userdata);

/* Commits everything queued so far, closes the chain with a checkpoint, and runs the
 * callbacks. For shutdown. */
void audit_drain(AuditStore *a);

void audit_close(AuditStore *a);

/* For status: whether the last write succeeded, and the last committed sequence number. */
bool audit_healthy(AuditStore *a);
uint64_t audit_last_seq(AuditStore *a);
/* The key that signs the log's checkpoints (borrowed). */
const SigningKey *audit_signing_key(AuditStore *a);

/* Builds the common part of a record: {"time": RFC 3339 ms, "event": event}. */
json_t *audit_record_new(const char *event, int64_t time_ms);
