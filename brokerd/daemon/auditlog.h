/* The grant log on disk: a hash chain of records in SQLite (format in common/auditfmt.h),
 * signed checkpoint records in the chain, a signed head beside it (so a truncated tail is
 * caught), and a signed anchor after pruning (so what remains is still proven). Used by the
 * audit writer thread only. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "auditfmt.h"
#include "keys/signer.h"

typedef struct AuditLogOptions {
        uint64_t checkpoint_every;      /* records between checkpoints */
        int64_t checkpoint_interval_ms; /* and at most this long */
        int64_t retention_ms;           /* 0: keep everything */
} AuditLogOptions;

typedef struct AuditLog AuditLog;

/* A record in its canonical form but for "seq" and "prev_hash", which hold placeholders of
 * fixed place: made by the thread that submits it, so the writer, whose time is the commit's,
 * only patches in two values, hashes and inserts. */
typedef struct AuditEntry {
        char *text;
        size_t len;
        size_t prev_at;         /* offset of the 64 placeholder hex digits */
        size_t seq_at, seq_len; /* offset and length of the placeholder number */
        char event[32];
        int64_t time_ms;
} AuditEntry;

/* `rec`: an object with "time", "event" and the event's fields (no "seq"/"prev_hash"). */
int audit_entry_prepare(json_t *rec, int64_t time_ms, AuditEntry *ret);
void audit_entry_done(AuditEntry *e);

/* Opens the log (creating it only if `create`), checks that its records end where its signed
 * head says (else -EBADMSG: truncated or altered, logged), and appends an audit_key record if
 * `key` is not yet recorded. */
int auditlog_open(const char *path, bool create, const AuditLogOptions *opt, SigningKey *key,
                  AuditLog **ret);
void auditlog_close(AuditLog *l);

/* Where a log stands: its file and its last committed record. */
typedef struct AuditLogMark {
        dev_t dev;
        ino_t ino;
        uint64_t seq;
        char hash[AUDIT_HASH_HEX];
} AuditLogMark;

void auditlog_mark(AuditLog *l, AuditLogMark *ret);

/* Opens the log again after a failure closed it: only the file `mark` names, and only while it
 * still holds the record `mark` ends at (it may hold more: a commit reported as failed can
 * still have reached the disk). Both are checked before anything is written; -ESTALE when
 * either fails. */
int auditlog_reopen(const char *path, const AuditLogOptions *opt, SigningKey *key,
                    const AuditLogMark *mark, AuditLog **ret);

/* Appends records (each gets its "seq" and "prev_hash"), a checkpoint every checkpoint_every
 * records and whenever one is due (or `force`), and the new signed head, in one transaction:
 * all of it is durable or none. */
int auditlog_append(AuditLog *l, const AuditEntry *entries, size_t n, bool force_checkpoint,
                    int64_t now_ms);

/* Whether records wait for a checkpoint and when it is due (INT64_MAX: none waiting). */
int64_t auditlog_checkpoint_deadline(AuditLog *l);

/* Prunes one chunk of records older than the retention, moving the signed anchor and
 * recording an audit_pruned event. *ret_more says whether more is due. */
int auditlog_prune(AuditLog *l, int64_t now_ms, bool *ret_more);

/* True when the path no longer names the file we opened (deleted, or replaced). */
bool auditlog_file_replaced(AuditLog *l);

uint64_t auditlog_last_seq(AuditLog *l);
const char *auditlog_last_hash(AuditLog *l);
