/* The audit store: every decision and lifecycle event, in SQLite (WAL, synchronous=FULL).
 * One writer thread owns the database. Records queued while it commits are committed together
 * in the next transaction (group commit), so throughput grows with concurrency while every
 * caller still waits for its own durable commit before it is answered. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

typedef struct AuditStore AuditStore;

/* Runs on the event loop once the record is durably committed (result 0) or could not be
 * (-errno, and the record is not in the store). */
typedef void (*audit_done_t)(int result, void *userdata);

/* Opens or creates the database, checks its schema, starts the writer thread and hooks its
 * completions into `event`. */
int audit_open(const char *path, sd_event *event, AuditStore **ret);

/* Queues a record: an object with "time", "event" and the event's fields; the store adds
 * "seq". Takes over the reference. `done` (may be NULL) is never called from inside this
 * function. Returns -ENOMEM only; write failures are reported through `done`. */
int audit_submit(AuditStore *a, json_t *record, int64_t time_ms, audit_done_t done, void *userdata);

/* Waits until everything queued so far has been committed or failed and runs the callbacks.
 * For shutdown. */
void audit_drain(AuditStore *a);

void audit_close(AuditStore *a);

/* For status: whether the last commit succeeded, and the last committed sequence number. */
bool audit_healthy(AuditStore *a);
uint64_t audit_last_seq(AuditStore *a);

/* Builds the common part of a record: {"time": RFC 3339 ms, "event": event}. */
json_t *audit_record_new(const char *event, int64_t time_ms);
