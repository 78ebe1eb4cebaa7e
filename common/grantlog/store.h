/* The grant log as brokerd writes it: every decision and lifecycle event, hash-chained in
 * SQLite (WAL, synchronous=FULL). One writer thread owns the log. Records queued while it
 * commits go into its next transaction together (group commit), so throughput grows with
 * concurrency while every caller still waits for its own durable commit before it is answered.
 * A second thread checkpoints the WAL off the commit path.
 *
 * Threads: grantlog_store_submit() from any thread; `done` callbacks run on the writer thread,
 * in commit order, after the transaction holding their record is durable (or failed): they
 * must be short (hand the result on, e.g. to the event loop's mailbox). Errors: -errno. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "grantlog/format.h"
#include "grantlog/writer.h"

typedef struct GrantlogStore GrantlogStore;

/* Called once the record is durably committed (result 0) or could not be (-errno, and the
 * record is not in the log). On the writer thread. */
typedef void (*grantlog_done_t)(int result, void *userdata);

/* Where a part of the daemon sends its records: the store, or, in unit tests, a fake that
 * records what it is given and answers as the test says. `submit` has the contract of
 * grantlog_store_submit(). */
typedef struct GrantSink {
        int (*submit)(void *ctx, json_t *record, int64_t time_ms, bool announced,
                      grantlog_done_t done, void *userdata);
        void (*expect)(void *ctx, int delta); /* grantlog_store_expect(); may be NULL */
        void *ctx;
} GrantSink;

/* Opens or creates the log, checks it ends where its signed head says, and starts the threads.
 * `signer` signs checkpoints and heads (copied; its ctx must outlive the store). */
int grantlog_store_open(const char *path, const GrantlogOptions *opt, const GrantlogSigner *signer,
                        GrantlogStore **ret);

/* Queues a record: an object with "time", "event" and the event's fields (see
 * grantlog/record.h); the log adds "seq" and "prev_hash". Takes over the reference.
 * `announced`: it was announced with grantlog_store_expect() (settled on success). `done`
 * (may be NULL: a lifecycle record no caller waits for, kept and retried while the log cannot
 * be written) is never called from inside this function. Returns -ENOMEM, -EINVAL (not a
 * record) or -ESHUTDOWN only; write failures are reported through `done`. */
int grantlog_store_submit(GrantlogStore *a, json_t *record, int64_t time_ms, bool announced,
                          grantlog_done_t done, void *userdata);

/* Announces records that are on their way (+1 each), or no longer (-1, when one will not be
 * submitted after all; a record submitted with `announced` settles its announcement as it is
 * queued): while some are announced, a commit waits a little for them, so concurrent requests
 * share one commit (group commit with siblings). Thread-safe. */
void grantlog_store_expect(GrantlogStore *a, int delta);

/* The store as a sink. */
GrantSink grantlog_store_sink(GrantlogStore *a);

/* Commits everything queued so far, closes the chain with a checkpoint, runs the callbacks and
 * stops the threads. For shutdown. */
void grantlog_store_drain(GrantlogStore *a);

void grantlog_store_close(GrantlogStore *a);

/* For status: whether the last write succeeded, and the last committed sequence number. */
bool grantlog_store_healthy(GrantlogStore *a);
uint64_t grantlog_store_last_seq(GrantlogStore *a);
