#include "grantlog/writer.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "grantlog/schema.h"
#include "grantlog/verify.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "messageid.h"
#include "timeutil.h"

/* Records deleted per pruning transaction: the writer goes back to serving between chunks. */
#define PRUNE_CHUNK 10000
/* WAL frames after which the writer closes the checkpointer's work itself (see
 * finish_wal_cycle()). */
#define WAL_CYCLE_FRAMES 1024

struct GrantlogWriter {
        sqlite3 *db;
        char *path;
        dev_t dev;
        ino_t ino;
        GrantlogOptions opt;
        GrantlogSigner signer;
        GrantlogFaults *faults;
        /* The audit keys this writer vouches for: its own, and those a full verification of the
         * log accepted when the log was signed by a key it does not hold (see vouch()). */
        GrantlogKey keys[GRANTLOG_REPORT_KEYS_MAX + 1];
        size_t n_keys;
        bool verified_in_full;
        sqlite3_stmt *insert, *put_signed;

        /* committed state; the working copies live in a transaction */
        uint64_t last_seq;
        char last_hash[GRANTLOG_HASH_HEX];
        uint64_t uncovered;         /* records since the last checkpoint */
        int64_t first_uncovered_ms; /* when the oldest of them was written */
        int wal_frames;             /* in the WAL after the last commit */
};

/* A transaction's view: changes only become the log's state once it commits. */
typedef struct Txn {
        uint64_t seq;
        char hash[GRANTLOG_HASH_HEX];
        uint64_t uncovered;
        int64_t first_uncovered_ms;
} Txn;

/* While a fault lasts every batch fails the same way, at whatever rate callers send, and the
 * writer is reopened for each: say it once, and again only when it changes or after the log
 * recovered. */
static void fault(GrantlogFaults *f, const char *path, const char *what, const char *detail)
{
        char msg[sizeof(f->last)];

        /* truncated alike each time, so a long message still compares equal */
        if (snprintf(msg, sizeof(msg), "%s: %s", what, detail) < 0 || strcmp(msg, f->last) == 0)
                return;
        log_struct(LOG_ERR, 0, &(LogFields){.message_id = MESSAGE_ID_AUDIT_FAILURE}, "%s: %s",
                   path, msg);
        memcpy(f->last, msg, sizeof(msg));
}

static int db_fail(GrantlogWriter *l, int rc, const char *what)
{
        fault(l->faults, l->path, what, sqlite3_errmsg(l->db));
        switch (rc & 0xff) {
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        default:
                return -EIO;
        }
}

static int exec(GrantlogWriter *l, const char *sql)
{
        int rc = sqlite3_exec(l->db, sql, NULL, NULL, NULL);
        return rc == SQLITE_OK ? 0 : db_fail(l, rc, sql);
}

uint64_t grantlog_writer_last_seq(GrantlogWriter *l)
{
        return l->last_seq;
}

const char *grantlog_writer_last_hash(GrantlogWriter *l)
{
        return l->last_hash;
}

static int put_signed(GrantlogWriter *l, const char *name, uint64_t seq, const char *hash,
                      int64_t now_ms)
{
        char t[TIME_RFC3339_MAX], sig[GRANTLOG_SIG_B64];
        int r, rc;

        time_format_rfc3339_ms(now_ms, t);
        r = grantlog_sign_statement(&l->signer, name, seq, hash, t, sig);
        if (r < 0)
                return r;
        sqlite3_bind_text(l->put_signed, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(l->put_signed, 2, (sqlite3_int64) seq);
        sqlite3_bind_text(l->put_signed, 3, hash, -1, SQLITE_STATIC);
        sqlite3_bind_text(l->put_signed, 4, t, -1, SQLITE_STATIC);
        sqlite3_bind_text(l->put_signed, 5, l->signer.key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(l->put_signed, 6, l->signer.public_key, -1, SQLITE_STATIC);
        sqlite3_bind_text(l->put_signed, 7, sig, -1, SQLITE_STATIC);
        rc = sqlite3_step(l->put_signed);
        sqlite3_reset(l->put_signed);
        return rc == SQLITE_DONE ? 0 : db_fail(l, rc, "cannot write the signed head");
}

/* Patches "seq" and "prev_hash" into a prepared record, hashes the result and inserts it. */
static int add_entry(GrantlogWriter *l, Txn *t, const GrantlogEntry *e)
{
        _cleanup_free_ char *body = NULL;
        char hash[GRANTLOG_HASH_HEX];
        size_t len;
        int r, rc;

        r = grantlog_entry_render(e, t->seq + 1, t->hash, &body, &len, hash);
        if (r < 0)
                return r;
        sqlite3_bind_int64(l->insert, 1, (sqlite3_int64) (t->seq + 1));
        sqlite3_bind_int64(l->insert, 2, e->time_ms);
        sqlite3_bind_text(l->insert, 3, e->event, -1, SQLITE_STATIC);
        sqlite3_bind_text(l->insert, 4, body, (int) len, SQLITE_STATIC);
        sqlite3_bind_text(l->insert, 5, hash, -1, SQLITE_STATIC);
        rc = sqlite3_step(l->insert);
        sqlite3_reset(l->insert);
        if (rc != SQLITE_DONE)
                return db_fail(l, rc, "cannot write an audit record");

        t->seq++;
        memcpy(t->hash, hash, GRANTLOG_HASH_HEX);
        if (t->uncovered++ == 0)
                t->first_uncovered_ms = e->time_ms;
        return 0;
}

/* For the log's own records (checkpoints, keys, pruning), made on the writer thread. */
static int add_record(GrantlogWriter *l, Txn *t, json_t *rec, int64_t time_ms)
{
        GrantlogEntry e;
        int r = grantlog_entry_prepare(rec, time_ms, &e);

        if (r < 0)
                return r;
        r = add_entry(l, t, &e);
        grantlog_entry_done(&e);
        return r;
}

/* A record with its own signed statement over the record before it. */
static int add_checkpoint(GrantlogWriter *l, Txn *t, int64_t now_ms)
{
        _cleanup_(json_decrefp) json_t *rec = NULL;
        char ts[TIME_RFC3339_MAX], sig[GRANTLOG_SIG_B64];
        int r;

        time_format_rfc3339_ms(now_ms, ts);
        r = grantlog_sign_statement(&l->signer, "checkpoint", t->seq, t->hash, ts, sig);
        if (r < 0)
                return r;
        rec = json_pack("{s:s, s:s, s:{s:I, s:s, s:s, s:s, s:s}}", "event", "checkpoint", "time",
                        ts, "checkpoint", "seq", (json_int_t) t->seq, "hash", t->hash, "time", ts,
                        "key_id", l->signer.key_id, "signature", sig);
        if (!rec)
                return -ENOMEM;
        r = add_record(l, t, rec, now_ms);
        if (r >= 0)
                t->uncovered = 0;
        return r;
}

static bool checkpoint_due(GrantlogWriter *l, const Txn *t, int64_t now_ms)
{
        return t->uncovered > 0 &&
               (t->uncovered >= l->opt.checkpoint_every ||
                now_ms - t->first_uncovered_ms >= l->opt.checkpoint_interval_ms);
}

int64_t grantlog_writer_checkpoint_deadline(GrantlogWriter *l)
{
        return l->uncovered > 0 ? l->first_uncovered_ms + l->opt.checkpoint_interval_ms : INT64_MAX;
}

static Txn txn_begin_view(GrantlogWriter *l)
{
        Txn t = {.seq = l->last_seq,
                 .uncovered = l->uncovered,
                 .first_uncovered_ms = l->first_uncovered_ms};
        memcpy(t.hash, l->last_hash, GRANTLOG_HASH_HEX);
        return t;
}

static int on_wal_commit(void *userdata, sqlite3 *db, const char *name, int frames)
{
        ((GrantlogWriter *) userdata)->wal_frames = frames;
        return SQLITE_OK;
}

/* The checkpointer thread copies the WAL into the database concurrently, but under constant
 * load some commit always lands while it works, so the WAL is never found fully copied when a
 * transaction starts, and it grows without end: every commit then extends the file, and each
 * fdatasync also has to commit the new size (three times the cost of an overwrite here).
 * Between two transactions the writer finishes the copy itself (only the frames written since
 * the thread's last pass), so the next transaction restarts the WAL from its beginning. */
static void finish_wal_cycle(GrantlogWriter *l)
{
        int nlog = 0, ncopied = 0;

        if (l->wal_frames < WAL_CYCLE_FRAMES)
                return;
        /* Busy while the thread is at it: tried again after the next commit. */
        if (sqlite3_wal_checkpoint_v2(l->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &ncopied) ==
                SQLITE_OK &&
            nlog == ncopied)
                l->wal_frames = 0;
}

/* Signs the new head and commits; the log's state moves only when the commit succeeded. */
static int txn_finish(GrantlogWriter *l, Txn *t, int r, int64_t now_ms)
{
        if (r >= 0 && t->seq != l->last_seq)
                r = put_signed(l, "head", t->seq, t->hash, now_ms);
        if (r >= 0) {
                int rc = sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL);
                if (rc != SQLITE_OK)
                        r = db_fail(l, rc, "cannot commit audit records");
        }
        if (r < 0) {
                /* a failed COMMIT may already have ended the transaction */
                if (!sqlite3_get_autocommit(l->db))
                        (void) sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
                return r;
        }
        l->last_seq = t->seq;
        memcpy(l->last_hash, t->hash, GRANTLOG_HASH_HEX);
        l->uncovered = t->uncovered;
        l->first_uncovered_ms = t->first_uncovered_ms;
        l->faults->last[0] = 0;
        finish_wal_cycle(l);
        return 0;
}

int grantlog_writer_append(GrantlogWriter *l, const GrantlogEntry *entries, size_t n,
                           bool force_checkpoint, int64_t now_ms)
{
        Txn t = txn_begin_view(l);
        int r;

        if (n == 0 && !(l->uncovered > 0 && (force_checkpoint || checkpoint_due(l, &t, now_ms))))
                return 0;
        r = exec(l, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++) {
                r = add_entry(l, &t, &entries[i]);
                /* Every N records even inside one group commit: a batch may hold hundreds. */
                if (r >= 0 && t.uncovered >= l->opt.checkpoint_every)
                        r = add_checkpoint(l, &t, now_ms);
        }
        if (r >= 0 && (checkpoint_due(l, &t, now_ms) || (force_checkpoint && t.uncovered > 0)))
                r = add_checkpoint(l, &t, now_ms);
        return txn_finish(l, &t, r, now_ms);
}

static int query_int64(GrantlogWriter *l, const char *sql, int64_t arg, bool *ret_null,
                       int64_t *ret)
{
        sqlite3_stmt *st = NULL;
        int rc;

        if (sqlite3_prepare_v2(l->db, sql, -1, &st, NULL) != SQLITE_OK)
                return db_fail(l, SQLITE_ERROR, sql);
        if (sqlite3_bind_parameter_count(st) > 0)
                sqlite3_bind_int64(st, 1, arg);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret_null = sqlite3_column_type(st, 0) == SQLITE_NULL;
                *ret = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
        return rc == SQLITE_ROW ? 0 : db_fail(l, rc, sql);
}

/* A log signed by an audit key this broker does not hold, when its own key was made at this
 * start (its key store was reset, and the log goes on under a new key): the one verifier decides,
 * over the whole log, under the one trust policy with the broker's own key pinned and the first key
 * the log names trusted, and the keys it accepted are vouched for from then on. Once per writer:
 * the log is verified in full at most once per open. -EBADMSG with why filled when it does not
 * vouch. */
static int vouch(GrantlogWriter *l, char *why, size_t whylen)
{
        const char *pins[] = {l->signer.public_key};
        GrantlogVerifyOptions o = {.trust = {.pins = pins, .n_pins = 1, .first_named = true}};
        GrantlogReport rep;

        if (!l->opt.new_audit_key) {
                /* This broker's key signed the log before: nobody else's signature counts.
                 * (Trusting the first key the log names would let whoever can write the
                 * database name a key of theirs in a forged anchor and sign a cut tail.) */
                size_t n = strlen(why);
                snprintf(why + n, whylen - n,
                         "; this broker has signed the log before, so no "
                         "other key's signature counts");
                return -EBADMSG;
        }
        if (l->verified_in_full)
                return -EBADMSG; /* it was, and did not vouch for this key: why says which */
        l->verified_in_full = true;
        log_notice("%s: %s: verifying the whole log once", l->path, why);
        grantlog_verify_database(l->path, &o, &rep);
        if (rep.verdict != GRANTLOG_INTACT) {
                if (snprintf(why, whylen,
                             "it does not verify with this broker's audit key and the first key "
                             "it names (seq %llu: %s)",
                             (unsigned long long) rep.problem_seq, rep.why) < 0)
                        why[0] = 0;
                return -EBADMSG;
        }
        for (size_t i = 0; i < rep.n_keys && l->n_keys < ELEMENTSOF(l->keys); i++)
                if (strcmp(rep.keys[i].kid, l->signer.key_id) != 0) {
                        snprintf(l->keys[l->n_keys].kid, sizeof(l->keys[0].kid), "%s",
                                 rep.keys[i].kid);
                        snprintf(l->keys[l->n_keys].pub, sizeof(l->keys[0].pub), "%s",
                                 rep.keys[i].pub);
                        l->n_keys++;
                }
        log_notice("%s: %llu records verified; going on under this broker's audit key %s. Pin "
                   "every audit key it names when you verify it",
                   l->path, (unsigned long long) rep.n_records, l->signer.key_id);
        return 0;
}

int grantlog_writer_prune(GrantlogWriter *l, int64_t now_ms, bool *ret_more)
{
        _cleanup_(json_decrefp) json_t *rec = NULL;
        char cutoff[TIME_RFC3339_MAX], start[GRANTLOG_HASH_HEX];
        int64_t first_kept, first = 0, upto;
        bool none = true;
        Txn t;
        int r;

        *ret_more = false;
        if (l->opt.retention_ms <= 0)
                return 0;
        /* By the time inside each record (hash-protected and verified below), not by the
         * time_ms column, which nothing signs. Same format throughout, so text order is time
         * order. Only the records before the first one still inside the retention go: after a
         * wall-clock jump back (a boot before NTP), a record stamped in the past may follow
         * recent ones, which must not go with it. */
        time_format_rfc3339_ms(now_ms - l->opt.retention_ms, cutoff);
        r = query_int64(l, "SELECT MIN(seq) FROM records", 0, &none, &first);
        if (r < 0 || none)
                return r;
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(l->db,
                               "SELECT seq FROM records WHERE json_extract(body, '$.time') >= ? "
                               "ORDER BY seq LIMIT 1",
                               -1, &q, NULL) != SQLITE_OK)
                return db_fail(l, SQLITE_ERROR, "cannot select records to prune");
        sqlite3_bind_text(q, 1, cutoff, -1, SQLITE_STATIC);
        first_kept = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : INT64_MAX;
        sqlite3_finalize(q);
        /* The newest record always stays: the chain goes on from it. */
        upto = MIN(first_kept - 1, (int64_t) l->last_seq - 1);
        if (upto < first)
                return 0;
        *ret_more = upto > first + PRUNE_CHUNK - 1;
        upto = MIN(upto, first + PRUNE_CHUNK - 1);

        /* Before records are deleted for good they are checked the way verify would: where the
         * remaining chain starts (the anchor, or genesis) and the stretch up to the first
         * checkpoint after it. A stretch someone rewrote (say, with backdated times so it falls
         * out of the retention window) would otherwise be covered by a new anchor and its traces
         * erased. */
        char why[1024];
        r = grantlog_verify_start(l->db, l->keys, l->n_keys, start, why, sizeof(why));
        if (r == -ENOKEY && (r = vouch(l, why, sizeof(why))) >= 0)
                r = grantlog_verify_start(l->db, l->keys, l->n_keys, start, why, sizeof(why));
        if (r >= 0) {
                r = grantlog_verify_stretch(l->db, l->keys, l->n_keys, (uint64_t) first,
                                            (uint64_t) upto, start, l->last_seq, l->last_hash, why,
                                            sizeof(why));
                if (r == -ENOKEY && (r = vouch(l, why, sizeof(why))) >= 0)
                        r = grantlog_verify_stretch(l->db, l->keys, l->n_keys, (uint64_t) first,
                                                    (uint64_t) upto, start, l->last_seq,
                                                    l->last_hash, why, sizeof(why));
        }
        if (r == -EBADMSG || r == -ENOKEY) {
                *ret_more = false;
                return log_error_errno(EBADMSG,
                                       "%s: records from seq %lld do not verify; not pruning "
                                       "them (%s). Run 'brokerctl audit verify'",
                                       l->path, (long long) first, why);
        }
        if (r < 0) {
                *ret_more = false;
                return db_fail(l, SQLITE_ERROR, why);
        }

        r = exec(l, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        t = txn_begin_view(l);

        /* The anchor proves where the remaining chain starts: the last pruned record's hash,
         * signed. Whoever deletes more, or edits the start, cannot sign a new anchor. */
        sqlite3_stmt *st = NULL;
        char hash[GRANTLOG_HASH_HEX] = "", through_time[TIME_RFC3339_MAX] = "";
        if (sqlite3_prepare_v2(l->db,
                               "SELECT hash, json_extract(body, '$.time') FROM records WHERE "
                               "seq = ?",
                               -1, &st, NULL) == SQLITE_OK) {
                sqlite3_bind_int64(st, 1, upto);
                if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 64) {
                        memcpy(hash, sqlite3_column_text(st, 0), GRANTLOG_HASH_HEX);
                        snprintf(through_time, sizeof(through_time), "%s",
                                 sqlite3_column_text(st, 1) ?: (const unsigned char *) "");
                }
        }
        sqlite3_finalize(st);
        if (!hash[0])
                r = db_fail(l, SQLITE_ERROR, "cannot read the last pruned record");

        int64_t count = 0;
        if (r >= 0 && sqlite3_prepare_v2(l->db, "DELETE FROM records WHERE seq <= ?", -1, &st,
                                         NULL) == SQLITE_OK) {
                sqlite3_bind_int64(st, 1, upto);
                int rc = sqlite3_step(st);
                count = sqlite3_changes(l->db);
                sqlite3_finalize(st);
                if (rc != SQLITE_DONE)
                        r = db_fail(l, rc, "cannot prune audit records");
        }
        if (r >= 0)
                r = put_signed(l, "anchor", (uint64_t) upto, hash, now_ms);
        if (r >= 0) {
                char ts[TIME_RFC3339_MAX];
                time_format_rfc3339_ms(now_ms, ts);
                /* through_time lets an auditor check the pruned records really were older
                 * than the retention when they went */
                rec = json_pack("{s:s, s:s, s:I, s:s, s:s, s:I, s:I}", "event", "audit_pruned",
                                "time", ts, "through_seq", (json_int_t) upto, "through_hash", hash,
                                "through_time", through_time, "records", (json_int_t) count,
                                "retention_s", (json_int_t) (l->opt.retention_ms / 1000));
                r = rec ? add_record(l, &t, rec, now_ms) : -ENOMEM;
        }
        r = txn_finish(l, &t, r, now_ms);
        if (r >= 0)
                log_info("%s: pruned %lld audit records through seq %lld (retention %llds)",
                         l->path, (long long) count, (long long) upto,
                         (long long) (l->opt.retention_ms / 1000));
        return r;
}

bool grantlog_writer_file_replaced(GrantlogWriter *l)
{
        struct stat st;

        return stat(l->path, &st) < 0 || st.st_dev != l->dev || st.st_ino != l->ino;
}

static int log_altered(GrantlogWriter *l, const char *why)
{
        return log_error_errno(EBADMSG,
                               "%s: %s: the audit log was truncated or altered. Run 'brokerctl "
                               "audit verify'; move it aside to start a new log",
                               l->path, why);
}

/* Where the chain stands: the last record, else the anchor, else genesis. The verifier checks
 * the signed head agrees and its signature holds: records ending before it, or a head rewritten
 * to match a cut tail, mean a truncated or altered log (which a new head must never cover
 * up). */
static int read_tail(GrantlogWriter *l)
{
        static const char *const sql[] = {
            "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1",
            "SELECT seq, hash FROM signed WHERE name = 'anchor'",
        };
        char why[1024];
        int r;

        l->last_seq = 0;
        memcpy(l->last_hash, GRANTLOG_GENESIS, GRANTLOG_HASH_HEX);
        for (size_t i = 0; i < ELEMENTSOF(sql) && l->last_seq == 0; i++) {
                sqlite3_stmt *st = NULL;
                int rc;

                if (sqlite3_prepare_v2(l->db, sql[i], -1, &st, NULL) != SQLITE_OK)
                        return db_fail(l, SQLITE_ERROR, "cannot read the audit log");
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 1) == 64) {
                        l->last_seq = (uint64_t) sqlite3_column_int64(st, 0);
                        memcpy(l->last_hash, sqlite3_column_text(st, 1), GRANTLOG_HASH_HEX);
                }
                sqlite3_finalize(st);
                if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                        return db_fail(l, rc, "cannot read the audit log");
        }
        r = grantlog_verify_head(l->db, l->keys, l->n_keys, l->last_seq, l->last_hash, why,
                                 sizeof(why));
        if (r == -ENOKEY && (r = vouch(l, why, sizeof(why))) >= 0)
                r = grantlog_verify_head(l->db, l->keys, l->n_keys, l->last_seq, l->last_hash, why,
                                         sizeof(why));
        if (r >= 0) {
                /* and where it starts: rows deleted from the start, or a forged anchor */
                char start[GRANTLOG_HASH_HEX];
                r = grantlog_verify_start(l->db, l->keys, l->n_keys, start, why, sizeof(why));
                if (r == -ENOKEY && (r = vouch(l, why, sizeof(why))) >= 0)
                        r = grantlog_verify_start(l->db, l->keys, l->n_keys, start, why,
                                                  sizeof(why));
        }
        if (r == -EBADMSG || r == -ENOKEY)
                return log_altered(l, why);
        if (r < 0)
                return db_fail(l, SQLITE_ERROR, why);
        return 0;
}

/* The log names the keys that sign it: an audit_key record whenever the key changes. */
static int record_key(GrantlogWriter *l, int64_t now_ms)
{
        _cleanup_(json_decrefp) json_t *rec = NULL;
        sqlite3_stmt *st = NULL;
        bool recorded = false;
        char ts[TIME_RFC3339_MAX];

        if (sqlite3_prepare_v2(l->db,
                               "SELECT json_extract(body, '$.key_id') FROM records WHERE "
                               "event = 'audit_key' ORDER BY seq DESC LIMIT 1",
                               -1, &st, NULL) != SQLITE_OK)
                return db_fail(l, SQLITE_ERROR, "cannot read the audit log");
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                recorded = strcmp((const char *) sqlite3_column_text(st, 0), l->signer.key_id) == 0;
        sqlite3_finalize(st);
        if (recorded)
                return 0;
        time_format_rfc3339_ms(now_ms, ts);
        rec = json_pack("{s:s, s:s, s:s, s:s, s:s}", "event", "audit_key", "time", ts, "key_id",
                        l->signer.key_id, "alg", "EdDSA", "public_key", l->signer.public_key);
        if (!rec)
                return -ENOMEM;
        GrantlogEntry e;
        int r = grantlog_entry_prepare(rec, now_ms, &e);
        if (r < 0)
                return r;
        r = grantlog_writer_append(l, &e, 1, false, now_ms);
        grantlog_entry_done(&e);
        return r;
}

static bool same_file(const char *path, const GrantlogMark *mark)
{
        struct stat st;

        return stat(path, &st) >= 0 && st.st_dev == mark->dev && st.st_ino == mark->ino;
}

/* Whether the log still holds the record `mark` ends at. */
static bool holds(GrantlogWriter *l, const GrantlogMark *mark)
{
        sqlite3_stmt *st = NULL;
        bool found;

        if (l->last_seq <= mark->seq)
                return l->last_seq == mark->seq && strcmp(l->last_hash, mark->hash) == 0;
        if (sqlite3_prepare_v2(l->db, "SELECT hash FROM records WHERE seq = ?", -1, &st, NULL) !=
            SQLITE_OK)
                return false;
        sqlite3_bind_int64(st, 1, (sqlite3_int64) mark->seq);
        found = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) &&
                strcmp((const char *) sqlite3_column_text(st, 0), mark->hash) == 0;
        sqlite3_finalize(st);
        return found;
}

void grantlog_writer_mark(GrantlogWriter *l, GrantlogMark *ret)
{
        *ret = (GrantlogMark){.dev = l->dev, .ino = l->ino, .seq = l->last_seq};
        memcpy(ret->hash, l->last_hash, GRANTLOG_HASH_HEX);
}

/* After a restart the next checkpoint is due as if the daemon had kept running: counted from
 * the last checkpoint record, not from zero. */
static void count_uncovered(GrantlogWriter *l)
{
        sqlite3_stmt *st = NULL;

        if (sqlite3_prepare_v2(l->db,
                               "SELECT COUNT(*), MIN(time_ms) FROM records WHERE seq > "
                               "COALESCE((SELECT MAX(seq) FROM records WHERE event = "
                               "'checkpoint'), 0)",
                               -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
                l->uncovered = (uint64_t) sqlite3_column_int64(st, 0);
                l->first_uncovered_ms = sqlite3_column_int64(st, 1);
        }
        sqlite3_finalize(st);
}

static int open_log(const char *path, bool create, const GrantlogOptions *opt,
                    const GrantlogSigner *signer, GrantlogFaults *faults, const GrantlogMark *mark,
                    GrantlogWriter **ret)
{
        GrantlogWriter *l;
        struct stat st;
        bool fresh;
        int r;

        fresh = stat(path, &st) < 0;
        if (fresh && !create)
                return -errno;
        if (mark && !same_file(path, mark))
                return -ESTALE;
        l = calloc(1, sizeof(GrantlogWriter));
        if (!l || !(l->path = strdup(path))) {
                free(l);
                return -ENOMEM;
        }
        l->opt = *opt;
        l->signer = *signer;
        l->faults = faults;
        /* Its own key, the one it can vouch for without looking at the log. */
        snprintf(l->keys[0].kid, sizeof(l->keys[0].kid), "%s", signer->key_id);
        snprintf(l->keys[0].pub, sizeof(l->keys[0].pub), "%s", signer->public_key);
        l->n_keys = 1;
        if (sqlite3_open_v2(path, &l->db,
                            SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) |
                                SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                fault(faults, path, "cannot open the audit database",
                      l->db ? sqlite3_errmsg(l->db) : "out of memory");
                grantlog_writer_close(l);
                return -EIO;
        }
        sqlite3_busy_timeout(l->db, 5000);
        /* Now that SQLite holds the file: still the one we wrote? Nothing is written before. */
        r = mark && !same_file(path, mark) ? -ESTALE : 0;
        if (r >= 0) {
                char err[256];
                r = grantlog_schema_prepare_writer(l->db, err, sizeof(err));
                if (r == -EPROTO || r == -EMEDIUMTYPE)
                        r = log_error_errno(r, "%s: %s", path, err);
                else if (r < 0)
                        fault(faults, path, "cannot set the audit database up", err);
        }
        /* After the schema: PRAGMA wal_autocheckpoint replaces the connection's WAL hook. */
        sqlite3_wal_hook(l->db, on_wal_commit, l);
        if (r >= 0 && stat(path, &st) < 0)
                r = -errno;
        if (r >= 0) {
                l->dev = st.st_dev;
                l->ino = st.st_ino;
                r = read_tail(l);
        }
        if (r >= 0 && mark && !holds(l, mark))
                r = -ESTALE;
        if (r >= 0)
                count_uncovered(l);
        if (r >= 0 &&
            (sqlite3_prepare_v3(l->db,
                                "INSERT INTO records (seq, time_ms, event, body, hash) "
                                "VALUES (?,?,?,?,?)",
                                -1, SQLITE_PREPARE_PERSISTENT, &l->insert, NULL) != SQLITE_OK ||
             sqlite3_prepare_v3(l->db,
                                "INSERT OR REPLACE INTO signed (name, seq, hash, time, "
                                "key_id, public_key, signature) VALUES (?,?,?,?,?,?,?)",
                                -1, SQLITE_PREPARE_PERSISTENT, &l->put_signed, NULL) != SQLITE_OK))
                r = db_fail(l, SQLITE_ERROR, "cannot prepare statements");
        if (r >= 0)
                r = record_key(l, now_unix_ms());
        if (r < 0) {
                grantlog_writer_close(l);
                return r;
        }
        /* An operator must be able to tell a new chain from one that goes on. */
        if (fresh)
                log_notice("%s: created a new audit log; its chain starts at seq 1", path);
        *ret = l;
        return 0;
}

int grantlog_writer_open(const char *path, bool create, const GrantlogOptions *opt,
                         const GrantlogSigner *signer, GrantlogFaults *faults, GrantlogWriter **ret)
{
        return open_log(path, create, opt, signer, faults, NULL, ret);
}

int grantlog_writer_reopen(const char *path, const GrantlogOptions *opt,
                           const GrantlogSigner *signer, GrantlogFaults *faults,
                           const GrantlogMark *mark, GrantlogWriter **ret)
{
        return open_log(path, false, opt, signer, faults, mark, ret);
}

void grantlog_writer_close(GrantlogWriter *l)
{
        if (!l)
                return;
        sqlite3_finalize(l->insert);
        sqlite3_finalize(l->put_signed);
        sqlite3_close(l->db);
        free(l->path);
        free(l);
}
