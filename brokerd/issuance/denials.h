/* The denial ledger: how many denials of each uid get a grant-log record of their own, and the
 * counts of those that do not. A caller can be denied as fast as the rate limit lets it ask,
 * and a denial gives nothing away, so a uid gets `budget` records of its own per `interval`;
 * beyond that (and while the log's filesystem is below its free-space floor) its denials are
 * only counted, per reason, and the counts leave as deny_summary records.
 *
 * Keyed by uid alone, not by the rate limiter's identity (uid and cgroup): a uid can be in as
 * many cgroups as it has sessions, and its budget must not grow with them.
 *
 * Threads: any; one mutex. Bounded: DENY_UIDS_MAX uids at once; the denials of any uid beyond
 * that are counted together, under no uid. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "policy/policy.h"

#define DENY_UIDS_MAX 4096u

typedef struct DenyLedger DenyLedger;

int deny_ledger_new(DenyLedger **ret);
/* Logs every count still held (they never reached the log) and frees the ledger. */
void deny_ledger_free(DenyLedger *l);

typedef enum DenyVerdict {
        DENY_COUNTED,       /* the budget is spent: counted toward a summary */
        DENY_RECORD,        /* one of the uid's records, if free space allows */
        DENY_RECORD_CLOSED, /* the ledger is closed (the daemon is stopping): a record */
} DenyVerdict;

/* A denial of `uid` at monotonic mono_ms (wall_ms for the record): whether it takes one of
 * the uid's records for the interval that began with its first denial, or was counted. */
DenyVerdict deny_ledger_take(DenyLedger *l, uid_t uid, DenyReason reason, int64_t mono_ms,
                             int64_t wall_ms, uint64_t budget, int64_t interval_ms);

/* A denial that took a record but may not have one (free space is below the floor): its
 * record is given back and it is counted as below the floor. false when the ledger was closed
 * meanwhile: it must have its record. */
bool deny_ledger_count_below_floor(DenyLedger *l, uid_t uid, DenyReason reason, int64_t wall_ms);

/* What one deny_summary record holds. */
typedef struct DenyTally {
        bool uid_known;
        uid_t uid;
        DenyReason reason;
        uint64_t count, below_floor;
        int64_t first_ms, last_ms;
} DenyTally;

/* Takes out the counts that are due: those of uids whose interval has ended (all of them with
 * `all`), and forgets uids with nothing left. With `hold` (free space is below the floor) and
 * not `all`, counts stay where they are, to be taken once there is room. Returns how many
 * (*ret: malloc'd, NULL when none) or -ENOMEM. */
int deny_ledger_collect(DenyLedger *l, int64_t mono_ms, bool all, bool hold, DenyTally **ret);

/* Takes out every count and closes the ledger: from now on every denial has a record (the
 * daemon is stopping, and nothing would write a later summary). Returns as collect. */
int deny_ledger_close(DenyLedger *l, DenyTally **ret);

/* Puts counts back (their summary could not be written): they go out with the next one. */
void deny_ledger_restore(DenyLedger *l, const DenyTally *t);

/* Whether the ledger tracks anything (a uid's interval, or counts). */
bool deny_ledger_busy(DenyLedger *l);
