/* The grant log on disk, as its one writer sees it: a hash chain of records in SQLite (format
 * in grantlog/format.h, schema in grantlog/schema.h), signed checkpoint records in the chain,
 * a signed head beside it (so a truncated tail is caught), and a signed anchor after pruning
 * (so what remains is still proven).
 *
 * Threads: one thread at a time (the store's writer thread). Errors: -errno; a database that
 * fails is reported once per distinct fault through GrantlogFaults, not once per call. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "grantlog/format.h"

/* The last fault logged, kept across writers: while a fault lasts (a full disk) every retry
 * fails the same way, and it is said once, again only when it changes or after a success. */
typedef struct GrantlogFaults {
        char last[256];
} GrantlogFaults;

typedef struct GrantlogOptions {
        uint64_t checkpoint_every;      /* records between checkpoints */
        int64_t checkpoint_interval_ms; /* and at most this long */
        int64_t retention_ms;           /* 0: keep everything */
        /* The signer's key was made at this start (a new key store): a log signed by another
         * key may then be continued once the one verifier, trusting the first key the log
         * names, finds it intact. Otherwise only the broker's own signatures count. */
        bool new_audit_key;
} GrantlogOptions;

typedef struct GrantlogWriter GrantlogWriter;

/* Opens the log (creating it only if `create`), migrates an older schema, checks that its
 * records end where its signed head says and that the head is signed by the signer's key (or,
 * with new_audit_key, that the whole log verifies with the first key it names; else -EBADMSG:
 * truncated or altered, logged), and appends an audit_key record if the signer's key is not
 * the one the log last named. The signer is copied. */
int grantlog_writer_open(const char *path, bool create, const GrantlogOptions *opt,
                         const GrantlogSigner *signer, GrantlogFaults *faults,
                         GrantlogWriter **ret);
void grantlog_writer_close(GrantlogWriter *l);

/* Where a log stands: its file and its last committed record. */
typedef struct GrantlogMark {
        dev_t dev;
        ino_t ino;
        uint64_t seq;
        char hash[GRANTLOG_HASH_HEX];
} GrantlogMark;

void grantlog_writer_mark(GrantlogWriter *l, GrantlogMark *ret);

/* Opens the log again after a failure closed it: only the file `mark` names, and only while it
 * still holds the record `mark` ends at (it may hold more: a commit reported as failed can
 * still have reached the disk). Both are checked before anything is written; -ESTALE when
 * either fails. */
int grantlog_writer_reopen(const char *path, const GrantlogOptions *opt,
                           const GrantlogSigner *signer, GrantlogFaults *faults,
                           const GrantlogMark *mark, GrantlogWriter **ret);

/* Appends records (each gets its "seq" and "prev_hash"), a checkpoint every checkpoint_every
 * records and whenever one is due (or `force`), and the new signed head, in one transaction:
 * all of it is durable or none. */
int grantlog_writer_append(GrantlogWriter *l, const GrantlogEntry *entries, size_t n,
                           bool force_checkpoint, int64_t now_ms);

/* Whether records wait for a checkpoint and when it is due (INT64_MAX: none waiting). */
int64_t grantlog_writer_checkpoint_deadline(GrantlogWriter *l);

/* Prunes one chunk of records older than the retention, moving the signed anchor and
 * recording an audit_pruned event. *ret_more says whether more is due. A stretch that does not
 * verify (by the one verifier, grantlog/verify.h) is not pruned: -EBADMSG, logged. */
int grantlog_writer_prune(GrantlogWriter *l, int64_t now_ms, bool *ret_more);

/* True when the path no longer names the file we opened (deleted, or replaced). */
bool grantlog_writer_file_replaced(GrantlogWriter *l);

uint64_t grantlog_writer_last_seq(GrantlogWriter *l);
const char *grantlog_writer_last_hash(GrantlogWriter *l);
