#include "daemon/auditlog.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "b64url.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "timeutil.h"

/* Records deleted per pruning transaction: the writer goes back to serving between chunks. */
#define PRUNE_CHUNK 10000
/* WAL frames after which the writer closes the checkpointer's work itself (see
 * finish_wal_cycle()). */
#define WAL_CYCLE_FRAMES 1024

struct AuditLog {
        sqlite3 *db;
        char *path;
        dev_t dev;
        ino_t ino;
        AuditLogOptions opt;
        SigningKey *key;
        char *public_key; /* base64url */
        sqlite3_stmt *insert, *put_signed;

        /* committed state; the working copies live in a transaction */
        uint64_t last_seq;
        char last_hash[AUDIT_HASH_HEX];
        uint64_t uncovered;         /* records since the last checkpoint */
        int64_t first_uncovered_ms; /* when the oldest of them was written */
        int wal_frames;             /* in the WAL after the last commit */
        char last_error[256];       /* logged once, not once per failed batch */
};

/* A transaction's view: changes only become the log's state once it commits. */
typedef struct Txn {
        uint64_t seq;
        char hash[AUDIT_HASH_HEX];
        uint64_t uncovered;
        int64_t first_uncovered_ms;
} Txn;

static const char schema[] = "PRAGMA journal_mode=WAL;"
                             "PRAGMA synchronous=FULL;"
                             /* a separate connection checkpoints, off the commit path */
                             "PRAGMA wal_autocheckpoint=0;"
                             /* a WAL that grew in a burst is cut back when it restarts */
                             "PRAGMA journal_size_limit=16777216;"
                             "CREATE TABLE IF NOT EXISTS records ("
                             " seq INTEGER PRIMARY KEY,"
                             " time_ms INTEGER NOT NULL,"
                             " event TEXT NOT NULL,"
                             " body TEXT NOT NULL,"
                             " hash TEXT NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS signed ("
                             " name TEXT PRIMARY KEY," /* 'head' or 'anchor' */
                             " seq INTEGER NOT NULL,"
                             " hash TEXT NOT NULL,"
                             " time TEXT NOT NULL,"
                             " key_id TEXT NOT NULL,"
                             " public_key TEXT NOT NULL,"
                             /* one b-tree: a head update touches one page, not a table page and
                              * an index page */
                             " signature TEXT NOT NULL) WITHOUT ROWID;";

static int db_fail(AuditLog *l, int rc, const char *what)
{
        char msg[sizeof(l->last_error)];

        /* While a fault lasts every batch fails the same way, at whatever rate callers send:
         * say it once, and again only when it changes or after the log recovered. */
        snprintf(msg, sizeof(msg), "%s: %s", what, sqlite3_errmsg(l->db));
        if (strcmp(msg, l->last_error) != 0) {
                log_error("%s: %s", l->path, msg);
                memcpy(l->last_error, msg, sizeof(msg));
        }
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

static int exec(AuditLog *l, const char *sql)
{
        int rc = sqlite3_exec(l->db, sql, NULL, NULL, NULL);
        return rc == SQLITE_OK ? 0 : db_fail(l, rc, sql);
}

uint64_t auditlog_last_seq(AuditLog *l)
{
        return l->last_seq;
}

const char *auditlog_last_hash(AuditLog *l)
{
        return l->last_hash;
}

/* Signs a statement with the audit key; base64url in *ret. */
static int sign_statement(AuditLog *l, const char *type, uint64_t seq, const char *hash,
                          const char *time, char **ret)
{
        _cleanup_free_ char *st = audit_statement(type, seq, hash, time, l->key->kid);
        unsigned char sig[SIGNATURE_MAX];
        size_t len;
        int r;

        if (!st)
                return -ENOMEM;
        r = signing_key_sign(l->key, st, strlen(st), sig, &len);
        if (r < 0)
                return r;
        *ret = b64url_encode(sig, len);
        return *ret ? 0 : -ENOMEM;
}

static int put_signed(AuditLog *l, const char *name, uint64_t seq, const char *hash, int64_t now_ms)
{
        _cleanup_free_ char *sig = NULL;
        char t[TIME_RFC3339_MAX];
        int r, rc;

        time_format_rfc3339_ms(now_ms, t);
        r = sign_statement(l, name, seq, hash, t, &sig);
        if (r < 0)
                return r;
        sqlite3_bind_text(l->put_signed, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(l->put_signed, 2, (sqlite3_int64) seq);
        sqlite3_bind_text(l->put_signed, 3, hash, -1, SQLITE_STATIC);
        sqlite3_bind_text(l->put_signed, 4, t, -1, SQLITE_STATIC);
        sqlite3_bind_text(l->put_signed, 5, l->key->kid, -1, SQLITE_STATIC);
        sqlite3_bind_text(l->put_signed, 6, l->public_key, -1, SQLITE_STATIC);
        sqlite3_bind_text(l->put_signed, 7, sig, -1, SQLITE_STATIC);
        rc = sqlite3_step(l->put_signed);
        sqlite3_reset(l->put_signed);
        return rc == SQLITE_DONE ? 0 : db_fail(l, rc, "cannot write the signed head");
}

/* Placeholders that cannot be mistaken for anything else in a record: a "prev_hash" of 64
 * 'p' (not hex, so no real hash or id), and a "seq" larger than any log will reach. Keys are
 * sorted, and only the top level has these keys, so each appears exactly once. */
#define PREV_PLACEHOLDER "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"
#define SEQ_PLACEHOLDER  9007199254740993LL

int audit_entry_prepare(json_t *rec, int64_t time_ms, AuditEntry *ret)
{
        const char *event = json_string_value(json_object_get(rec, "event"));
        static const char prev_key[] = "\"prev_hash\":\"" PREV_PLACEHOLDER "\"";
        static const char seq_key[] = "\"seq\":9007199254740993";
        AuditEntry e = {.time_ms = time_ms};
        char *p, *q;

        if (!event || strlen(event) >= sizeof(e.event))
                return -EINVAL;
        if (json_object_set_new(rec, "prev_hash", json_string(PREV_PLACEHOLDER)) < 0 ||
            json_object_set_new(rec, "seq", json_integer(SEQ_PLACEHOLDER)) < 0)
                return -ENOMEM;
        e.text = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
        if (!e.text)
                return -ENOMEM;
        p = strstr(e.text, prev_key);
        q = strstr(e.text, seq_key);
        if (!p || !q || q < p) {
                free(e.text);
                return -EINVAL;
        }
        e.len = strlen(e.text);
        e.prev_at = (size_t) (p - e.text) + sizeof("\"prev_hash\":\"") - 1;
        e.seq_at = (size_t) (q - e.text) + sizeof("\"seq\":") - 1;
        e.seq_len = sizeof("9007199254740993") - 1;
        snprintf(e.event, sizeof(e.event), "%s", event);
        *ret = e;
        return 0;
}

void audit_entry_done(AuditEntry *e)
{
        free(e->text);
        e->text = NULL;
}

/* Patches "seq" and "prev_hash" into a prepared record, hashes the result and inserts it. */
static int add_entry(AuditLog *l, Txn *t, const AuditEntry *e)
{
        _cleanup_free_ char *body = malloc(e->len + 24);
        char hash[AUDIT_HASH_HEX], digits[24];
        int nd, rc;
        size_t len = 0;

        if (!body)
                return -ENOMEM;
        nd = snprintf(digits, sizeof(digits), "%llu", (unsigned long long) (t->seq + 1));
        memcpy(body, e->text, e->prev_at);
        memcpy(body + e->prev_at, t->hash, 64);
        memcpy(body + e->prev_at + 64, e->text + e->prev_at + 64, e->seq_at - e->prev_at - 64);
        len = e->seq_at;
        memcpy(body + len, digits, (size_t) nd);
        len += (size_t) nd;
        memcpy(body + len, e->text + e->seq_at + e->seq_len, e->len - e->seq_at - e->seq_len);
        len += e->len - e->seq_at - e->seq_len;
        audit_hash_hex(body, len, hash);

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
        memcpy(t->hash, hash, AUDIT_HASH_HEX);
        if (t->uncovered++ == 0)
                t->first_uncovered_ms = e->time_ms;
        return 0;
}

/* For the log's own records (checkpoints, keys, pruning), made on the writer thread. */
static int add_record(AuditLog *l, Txn *t, json_t *rec, int64_t time_ms)
{
        AuditEntry e;
        int r = audit_entry_prepare(rec, time_ms, &e);

        if (r < 0)
                return r;
        r = add_entry(l, t, &e);
        audit_entry_done(&e);
        return r;
}

/* A record with its own signed statement over the record before it. */
static int add_checkpoint(AuditLog *l, Txn *t, int64_t now_ms)
{
        _cleanup_free_ char *sig = NULL;
        _cleanup_(json_decrefp) json_t *rec = NULL;
        char ts[TIME_RFC3339_MAX];
        int r;

        time_format_rfc3339_ms(now_ms, ts);
        r = sign_statement(l, "checkpoint", t->seq, t->hash, ts, &sig);
        if (r < 0)
                return r;
        rec = json_pack("{s:s, s:s, s:{s:I, s:s, s:s, s:s, s:s}}", "event", "checkpoint", "time",
                        ts, "checkpoint", "seq", (json_int_t) t->seq, "hash", t->hash, "time", ts,
                        "key_id", l->key->kid, "signature", sig);
        if (!rec)
                return -ENOMEM;
        r = add_record(l, t, rec, now_ms);
        if (r >= 0)
                t->uncovered = 0;
        return r;
}

static bool checkpoint_due(AuditLog *l, const Txn *t, int64_t now_ms)
{
        return t->uncovered > 0 &&
               (t->uncovered >= l->opt.checkpoint_every ||
                now_ms - t->first_uncovered_ms >= l->opt.checkpoint_interval_ms);
}

int64_t auditlog_checkpoint_deadline(AuditLog *l)
{
        return l->uncovered > 0 ? l->first_uncovered_ms + l->opt.checkpoint_interval_ms : INT64_MAX;
}

static Txn txn_begin_view(AuditLog *l)
{
        Txn t = {.seq = l->last_seq,
                 .uncovered = l->uncovered,
                 .first_uncovered_ms = l->first_uncovered_ms};
        memcpy(t.hash, l->last_hash, AUDIT_HASH_HEX);
        return t;
}

static int on_wal_commit(void *userdata, sqlite3 *db, const char *name, int frames)
{
        ((AuditLog *) userdata)->wal_frames = frames;
        return SQLITE_OK;
}

/* The checkpointer thread copies the WAL into the database concurrently, but under constant
 * load some commit always lands while it works, so the WAL is never found fully copied when a
 * transaction starts, and it grows without end: every commit then extends the file, and each
 * fdatasync also has to commit the new size (three times the cost of an overwrite here).
 * Between two transactions the writer finishes the copy itself (only the frames written since
 * the thread's last pass), so the next transaction restarts the WAL from its beginning. */
static void finish_wal_cycle(AuditLog *l)
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
static int txn_finish(AuditLog *l, Txn *t, int r, int64_t now_ms)
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
        memcpy(l->last_hash, t->hash, AUDIT_HASH_HEX);
        l->uncovered = t->uncovered;
        l->first_uncovered_ms = t->first_uncovered_ms;
        l->last_error[0] = 0;
        finish_wal_cycle(l);
        return 0;
}

int auditlog_append(AuditLog *l, const AuditEntry *entries, size_t n, bool force_checkpoint,
                    int64_t now_ms)
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

static int query_int64(AuditLog *l, const char *sql, int64_t arg, bool *ret_null, int64_t *ret)
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

static char *named_key(AuditLog *l, const char *kid)
{
        static const char *const sql[] = {
            "SELECT json_extract(body, '$.public_key') FROM records WHERE event = "
            "'audit_key' AND json_extract(body, '$.key_id') = ? ORDER BY seq DESC LIMIT 1",
            "SELECT public_key FROM signed WHERE name = 'anchor' AND key_id = ?",
        };
        char *pub = NULL;

        if (strcmp(kid, l->key->kid) == 0)
                return strdup(l->public_key);
        for (size_t i = 0; i < ELEMENTSOF(sql) && !pub; i++) {
                sqlite3_stmt *st = NULL;
                if (sqlite3_prepare_v2(l->db, sql[i], -1, &st, NULL) != SQLITE_OK)
                        break;
                sqlite3_bind_text(st, 1, kid, -1, SQLITE_STATIC);
                if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                        pub = strdup((const char *) sqlite3_column_text(st, 0));
                sqlite3_finalize(st);
        }
        return pub;
}

/* Before records are deleted for good they are checked the way verify would: each hash
 * recomputed, each link followed from the anchor (or genesis) up to the first checkpoint
 * after them, whose signature must hold. Pruning a stretch that someone rewrote (say, with
 * backdated times so it falls out of the retention window) would sign a new anchor over the
 * forgery and erase its traces; a stretch that does not verify is not pruned. */
static int verify_stretch(AuditLog *l, int64_t first, int64_t upto, const char *start_hash)
{
        sqlite3_stmt *st = NULL;
        char prev[AUDIT_HASH_HEX], hash[AUDIT_HASH_HEX];
        int64_t expect = first;
        bool covered = false;
        int rc;

        memcpy(prev, start_hash, AUDIT_HASH_HEX);
        if (sqlite3_prepare_v2(l->db,
                               "SELECT seq, body, hash, json_extract(body, '$.prev_hash'), event, "
                               "json_extract(body, '$.checkpoint') FROM records WHERE seq >= ? "
                               "ORDER BY seq",
                               -1, &st, NULL) != SQLITE_OK)
                return db_fail(l, SQLITE_ERROR, "cannot read records to prune");
        sqlite3_bind_int64(st, 1, first);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                int64_t seq = sqlite3_column_int64(st, 0);
                const char *body = (const char *) sqlite3_column_text(st, 1);
                const char *stored = (const char *) sqlite3_column_text(st, 2);
                const char *bprev = (const char *) sqlite3_column_text(st, 3);
                const char *event = (const char *) sqlite3_column_text(st, 4);

                if (seq != expect || !body || !stored || !bprev || !event ||
                    strcmp(bprev, prev) != 0)
                        break;
                audit_hash_hex(body, (size_t) sqlite3_column_bytes(st, 1), hash);
                if (strcmp(hash, stored) != 0)
                        break;
                if (seq > upto && strcmp(event, "checkpoint") == 0) {
                        _cleanup_(json_decrefp) json_t *cp =
                            json_loads((const char *) sqlite3_column_text(st, 5) ?: "", 0, NULL);
                        const char *kid = json_string_value(json_object_get(cp, "key_id"));
                        _cleanup_free_ char *pub = kid ? named_key(l, kid) : NULL;
                        _cleanup_free_ char *stmt = audit_statement(
                            "checkpoint", (uint64_t) seq - 1, prev,
                            json_string_value(json_object_get(cp, "time")) ?: "", kid ?: "");
                        covered = pub && stmt &&
                                  audit_statement_verify(
                                      stmt, json_string_value(json_object_get(cp, "signature")),
                                      pub) == 0;
                        break;
                }
                memcpy(prev, hash, AUDIT_HASH_HEX);
                expect++;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) /* a read failed: not a verdict on the records */
                return db_fail(l, rc, "cannot read records to prune");
        /* no checkpoint yet after the stretch: the chain must reach what we committed ourselves */
        if (!covered && rc == SQLITE_DONE && (uint64_t) expect == l->last_seq + 1)
                covered = strcmp(prev, l->last_hash) == 0;
        if (!covered)
                return log_error_errno(EBADMSG,
                                       "%s: records from seq %lld do not verify; not pruning them. "
                                       "Run 'brokerctl audit verify'",
                                       l->path, (long long) first);
        return 0;
}

int auditlog_prune(AuditLog *l, int64_t now_ms, bool *ret_more)
{
        _cleanup_(json_decrefp) json_t *rec = NULL;
        char cutoff[TIME_RFC3339_MAX], start[AUDIT_HASH_HEX];
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

        /* where the remaining chain starts: the anchor's hash, or genesis */
        memcpy(start, AUDIT_GENESIS, AUDIT_HASH_HEX);
        if (sqlite3_prepare_v2(l->db, "SELECT hash FROM signed WHERE name = 'anchor'", -1, &q,
                               NULL) == SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW && sqlite3_column_bytes(q, 0) == 64)
                memcpy(start, sqlite3_column_text(q, 0), AUDIT_HASH_HEX);
        sqlite3_finalize(q);
        r = verify_stretch(l, first, upto, start);
        if (r < 0) {
                *ret_more = false;
                return r;
        }

        r = exec(l, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        t = txn_begin_view(l);

        /* The anchor proves where the remaining chain starts: the last pruned record's hash,
         * signed. Whoever deletes more, or edits the start, cannot sign a new anchor. */
        sqlite3_stmt *st = NULL;
        char hash[AUDIT_HASH_HEX] = "", through_time[TIME_RFC3339_MAX] = "";
        if (sqlite3_prepare_v2(l->db,
                               "SELECT hash, json_extract(body, '$.time') FROM records WHERE "
                               "seq = ?",
                               -1, &st, NULL) == SQLITE_OK) {
                sqlite3_bind_int64(st, 1, upto);
                if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 64) {
                        memcpy(hash, sqlite3_column_text(st, 0), AUDIT_HASH_HEX);
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

bool auditlog_file_replaced(AuditLog *l)
{
        struct stat st;

        return stat(l->path, &st) < 0 || st.st_dev != l->dev || st.st_ino != l->ino;
}

/* The public key the log names for audit key `kid`: ours, an audit_key record's, or the
 * anchor's (a pruned log may have lost the record). NULL if it names none. */
static int log_altered(AuditLog *l, const char *why)
{
        return log_error_errno(EBADMSG,
                               "%s: %s: the audit log was truncated or altered. Run 'brokerctl "
                               "audit verify'; move it aside to start a new log",
                               l->path, why);
}

/* Where the chain stands: the last record, else the anchor, else genesis. Checks the signed
 * head agrees and its signature holds: records ending before it, or a head rewritten to match
 * a cut tail, mean a truncated or altered log (which a new head must never cover up). */
static int read_tail(AuditLog *l)
{
        sqlite3_stmt *st = NULL;
        bool have_head = false, head_ok = false;
        char head_hash[AUDIT_HASH_HEX] = "";
        uint64_t head_seq = 0;
        char why[160];
        int rc;

        l->last_seq = 0;
        memcpy(l->last_hash, AUDIT_GENESIS, AUDIT_HASH_HEX);
        if (sqlite3_prepare_v2(l->db, "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1", -1,
                               &st, NULL) != SQLITE_OK)
                return db_fail(l, SQLITE_ERROR, "cannot read the audit log");
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 1) == 64) {
                l->last_seq = (uint64_t) sqlite3_column_int64(st, 0);
                memcpy(l->last_hash, sqlite3_column_text(st, 1), AUDIT_HASH_HEX);
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return db_fail(l, rc, "cannot read the audit log");

        if (sqlite3_prepare_v2(l->db, "SELECT name, seq, hash, time, key_id, signature FROM signed",
                               -1, &st, NULL) != SQLITE_OK)
                return db_fail(l, SQLITE_ERROR, "cannot read the audit log");
        while (sqlite3_step(st) == SQLITE_ROW) {
                const char *name = (const char *) sqlite3_column_text(st, 0);
                const char *hash = (const char *) sqlite3_column_text(st, 2);
                const char *time = (const char *) sqlite3_column_text(st, 3);
                const char *kid = (const char *) sqlite3_column_text(st, 4);
                const char *sig = (const char *) sqlite3_column_text(st, 5);
                if (!name || !hash || strlen(hash) != 64)
                        continue;
                if (strcmp(name, "head") == 0) {
                        have_head = true;
                        head_seq = (uint64_t) sqlite3_column_int64(st, 1);
                        memcpy(head_hash, hash, AUDIT_HASH_HEX);
                        _cleanup_free_ char *pub = kid ? named_key(l, kid) : NULL;
                        _cleanup_free_ char *stmt =
                            time && kid ? audit_statement("head", head_seq, hash, time, kid) : NULL;
                        head_ok = pub && stmt && sig && audit_statement_verify(stmt, sig, pub) == 0;
                } else if (strcmp(name, "anchor") == 0 && l->last_seq == 0) {
                        l->last_seq = (uint64_t) sqlite3_column_int64(st, 1);
                        memcpy(l->last_hash, hash, AUDIT_HASH_HEX);
                }
        }
        sqlite3_finalize(st);

        if (!have_head && l->last_seq == 0)
                return 0; /* a new log */
        if (!have_head || head_seq != l->last_seq || strcmp(head_hash, l->last_hash) != 0) {
                snprintf(why, sizeof(why), "it ends at seq %llu but its signed head is at seq %llu",
                         (unsigned long long) l->last_seq, (unsigned long long) head_seq);
                return log_altered(l, why);
        }
        if (!head_ok)
                return log_altered(l, "its signed head does not verify with an audit key the "
                                      "log names");
        return 0;
}

/* The log names the keys that sign it: an audit_key record whenever the key changes. */
static int record_key(AuditLog *l, int64_t now_ms)
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
                recorded = strcmp((const char *) sqlite3_column_text(st, 0), l->key->kid) == 0;
        sqlite3_finalize(st);
        if (recorded)
                return 0;
        time_format_rfc3339_ms(now_ms, ts);
        rec = json_pack("{s:s, s:s, s:s, s:s, s:s}", "event", "audit_key", "time", ts, "key_id",
                        l->key->kid, "alg", "EdDSA", "public_key", l->public_key);
        if (!rec)
                return -ENOMEM;
        AuditEntry e;
        int r = audit_entry_prepare(rec, now_ms, &e);
        if (r < 0)
                return r;
        r = auditlog_append(l, &e, 1, false, now_ms);
        audit_entry_done(&e);
        return r;
}

static bool same_file(const char *path, const AuditLogMark *mark)
{
        struct stat st;

        return stat(path, &st) >= 0 && st.st_dev == mark->dev && st.st_ino == mark->ino;
}

/* Whether the log still holds the record `mark` ends at. */
static bool holds(AuditLog *l, const AuditLogMark *mark)
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

void auditlog_mark(AuditLog *l, AuditLogMark *ret)
{
        *ret = (AuditLogMark){.dev = l->dev, .ino = l->ino, .seq = l->last_seq};
        memcpy(ret->hash, l->last_hash, AUDIT_HASH_HEX);
}

/* After a restart the next checkpoint is due as if the daemon had kept running: counted from
 * the last checkpoint record, not from zero. */
static void count_uncovered(AuditLog *l)
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

static int open_log(const char *path, bool create, const AuditLogOptions *opt, SigningKey *key,
                    const AuditLogMark *mark, AuditLog **ret)
{
        AuditLog *l;
        struct stat st;
        bool fresh;
        int r;

        fresh = stat(path, &st) < 0;
        if (fresh && !create)
                return -errno;
        if (mark && !same_file(path, mark))
                return -ESTALE;
        l = calloc(1, sizeof(AuditLog));
        if (!l || !(l->path = strdup(path))) {
                free(l);
                return -ENOMEM;
        }
        l->opt = *opt;
        l->key = signing_key_ref(key);
        l->public_key = strdup(json_string_value(json_object_get(key->jwk, "x")));
        if (!l->public_key) {
                auditlog_close(l);
                return -ENOMEM;
        }
        if (sqlite3_open_v2(path, &l->db,
                            SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) |
                                SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                r = log_error_errno(EIO, "Cannot open audit database %s: %s", path,
                                    l->db ? sqlite3_errmsg(l->db) : "out of memory");
                auditlog_close(l);
                return r;
        }
        sqlite3_busy_timeout(l->db, 5000);
        /* Now that SQLite holds the file: still the one we wrote? Nothing is written before. */
        r = mark && !same_file(path, mark) ? -ESTALE : 0;
        if (r >= 0)
                r = exec(l, schema);
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
                auditlog_close(l);
                return r;
        }
        /* An operator must be able to tell a new chain from one that goes on. */
        if (fresh)
                log_notice("%s: created a new audit log; its chain starts at seq 1", path);
        *ret = l;
        return 0;
}

int auditlog_open(const char *path, bool create, const AuditLogOptions *opt, SigningKey *key,
                  AuditLog **ret)
{
        return open_log(path, create, opt, key, NULL, ret);
}

int auditlog_reopen(const char *path, const AuditLogOptions *opt, SigningKey *key,
                    const AuditLogMark *mark, AuditLog **ret)
{
        return open_log(path, false, opt, key, mark, ret);
}

void auditlog_close(AuditLog *l)
{
        if (!l)
                return;
        sqlite3_finalize(l->insert);
        sqlite3_finalize(l->put_signed);
        sqlite3_close(l->db);
        if (l->key)
                signing_key_unref(l->key);
        free(l->public_key);
        free(l->path);
        free(l);
}
