/* brokerctl audit verify: recomputes the hash chain and checks every signature (format in
 * common/auditfmt.h). Reports the first bad seq and what is wrong with it: an edited record,
 * a deleted or reordered row, a forged checkpoint, a truncated tail, a moved anchor.
 *
 * Each record's hash and its link to the one before can be checked on its own, so the input
 * (a database's seq range, an export's bytes) is split into chunks verified in parallel; the
 * chunk boundaries and the signed statements (checkpoints, head, anchor) are checked
 * afterwards, in order. Records are read with SQLite's JSON functions in both modes, so a
 * database and its export cannot be read differently. */
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit_tool.h"
#include "auditfmt.h"
#include "exitcode.h"
#include "json-util.h"
#include "macro.h"
#include "timeutil.h"

#define KEYS_MAX 64
/* Inputs smaller than this are verified by one thread: starting more costs more. */
#define PARALLEL_RECORDS_MIN 20000
#define PARALLEL_BYTES_MIN   (8u << 20)

/* The first thing wrong, by seq: the lowest seq wins however the work was split. */
typedef struct Problem {
        bool set;
        uint64_t seq;
        char why[400];
} Problem;

_printf_(3, 4) static void problem_at(Problem *p, uint64_t seq, const char *fmt, ...)
{
        va_list ap;

        if (p->set && p->seq <= seq)
                return;
        p->set = true;
        p->seq = seq;
        va_start(ap, fmt);
        vsnprintf(p->why, sizeof(p->why), fmt, ap);
        va_end(ap);
}

/* A checkpoint or audit_key record, checked in order once the chain is known to hold. */
typedef struct Special {
        uint64_t seq;
        char prev[AUDIT_HASH_HEX]; /* the prev_hash the chain was linked with */
        char *body;
} Special;

typedef struct Chunk {
        const char *path;
        FILE *in;       /* file mode: a stream read to its end instead of path (stdin) */
        int64_t lo, hi; /* database: the seq range; file: the byte range [lo, hi) */
        int64_t log_lo; /* database: the first seq, as the snapshot the range was cut from says */
        /* results */
        uint64_t n, first_seq, last_seq;
        char first_prev[AUDIT_HASH_HEX], last_hash[AUDIT_HASH_HEX];
        Special *specials;
        size_t n_specials, cap_specials;
        Problem problem;
} Chunk;

typedef struct AuditKey {
        char kid[64];
        char pub[64];
} AuditKey;

typedef struct Verifier {
        const AuditToolArgs *args;
        AuditKey keys[KEYS_MAX];
        size_t n_keys;
        uint64_t n_records, n_checkpoints, last_checkpoint_seq;
        Problem problem;
} Verifier;

static bool pinned(const Verifier *v, const char *pub)
{
        if (v->args->n_pins == 0)
                return true;
        for (size_t i = 0; i < v->args->n_pins; i++)
                if (strcmp(v->args->pins[i], pub) == 0)
                        return true;
        return false;
}

static const char *key_public(const Verifier *v, const char *kid)
{
        for (size_t i = 0; i < v->n_keys; i++)
                if (strcmp(v->keys[i].kid, kid) == 0)
                        return v->keys[i].pub;
        return NULL;
}

/* Trusts an audit key (from an audit_key record or the anchor). */
static void key_add(Verifier *v, uint64_t seq, const char *kid, const char *pub)
{
        const char *known = key_public(v, kid);

        if (!kid || !pub || strlen(kid) >= sizeof(v->keys[0].kid) ||
            strlen(pub) >= sizeof(v->keys[0].pub)) {
                problem_at(&v->problem, seq, "malformed audit key");
                return;
        }
        if (known) {
                if (strcmp(known, pub) != 0)
                        problem_at(&v->problem, seq, "audit key %s appears with two public keys",
                                   kid);
                return;
        }
        if (!pinned(v, pub)) {
                problem_at(&v->problem, seq,
                           "audit key %s is not one of the keys given with --audit-key", kid);
                return;
        }
        /* Whoever can write the database can add an audit_key record of their own and re-sign
         * everything after it; only the log's first key, or keys the auditor pins, may sign. */
        if (v->args->n_pins == 0 && v->n_keys > 0) {
                problem_at(&v->problem, seq,
                           "the log switches to audit key %s here, which no key it trusted "
                           "before vouches for (a forged key, or brokerd's state was reset): "
                           "pass --audit-key for every key you trust",
                           kid);
                return;
        }
        if (v->n_keys < KEYS_MAX) {
                snprintf(v->keys[v->n_keys].kid, sizeof(v->keys[0].kid), "%s", kid);
                snprintf(v->keys[v->n_keys].pub, sizeof(v->keys[0].pub), "%s", pub);
                v->n_keys++;
        }
}

/* Checks a signed statement by a known key, or, for an export that starts after the log's
 * audit_key record, by one of the pinned keys. */
static bool statement_ok(Verifier *v, const char *type, uint64_t seq, const char *hash,
                         const char *time, const char *kid, const char *sig)
{
        const char *pub = kid ? key_public(v, kid) : NULL;
        _cleanup_free_ char *st = NULL;

        if (!kid || !hash || !time || !sig)
                return false;
        st = audit_statement(type, seq, hash, time, kid);
        if (!st)
                return false;
        if (pub)
                return audit_statement_verify(st, sig, pub) == 0;
        for (size_t i = 0; i < v->args->n_pins; i++)
                if (audit_statement_verify(st, sig, v->args->pins[i]) == 0)
                        return true;
        return false;
}

/* An audit_key, audit_pruned or checkpoint record whose hash and link are already verified;
 * `prev` is the prev_hash it was linked with. Read here with jansson, it must have no member
 * twice: two readers that pick different copies (SQLite the first, jansson the last) could
 * otherwise be shown different records under one hash. */
static void check_special(Verifier *v, uint64_t seq, const char *prev, const char *body)
{
        _cleanup_(json_decrefp) json_t *rec = json_loads(body, JSON_REJECT_DUPLICATES, NULL);
        const char *event = json_string_value(json_object_get(rec, "event"));

        if (!event) {
                problem_at(&v->problem, seq,
                           "record is not a JSON object with an event, or has "
                           "a member twice");
                return;
        }
        if (strcmp(event, "audit_key") == 0) {
                key_add(v, seq, json_string_value(json_object_get(rec, "key_id")),
                        json_string_value(json_object_get(rec, "public_key")));
                return;
        }
        if (strcmp(event, "audit_pruned") == 0) {
                /* the broker may only have pruned records older than its retention */
                int64_t when = 0, through = 0;
                json_t *ret = json_object_get(rec, "retention_s");
                if (time_parse_rfc3339(json_string_value(json_object_get(rec, "time")) ?: "",
                                       &when) < 0 ||
                    time_parse_rfc3339(json_string_value(json_object_get(rec, "through_time"))
                                           ?: "",
                                       &through) < 0 ||
                    !json_is_integer(ret) || through > when - json_integer_value(ret) * 1000)
                        problem_at(&v->problem, seq,
                                   "records younger than the retention were pruned");
                return;
        }
        if (strcmp(event, "checkpoint") != 0)
                return;
        json_t *cp = json_object_get(rec, "checkpoint");
        json_t *cseq = json_object_get(cp, "seq");
        const char *chash = json_string_value(json_object_get(cp, "hash"));
        const char *kid = json_string_value(json_object_get(cp, "key_id"));

        /* It signs the record right before it: the hash the chain links this record to. */
        if (!json_is_integer(cseq) || (uint64_t) json_integer_value(cseq) != seq - 1 || !chash ||
            strcmp(chash, prev) != 0) {
                problem_at(&v->problem, seq, "checkpoint does not sign the record before it");
                return;
        }
        if (!kid || (!key_public(v, kid) && v->args->n_pins == 0)) {
                problem_at(&v->problem, seq,
                           "checkpoint is signed by audit key %s, which this log does not "
                           "name (an export that starts later: pass --audit-key)",
                           strna(kid));
                return;
        }
        if (!statement_ok(v, "checkpoint", seq - 1, chash,
                          json_string_value(json_object_get(cp, "time")), kid,
                          json_string_value(json_object_get(cp, "signature")))) {
                problem_at(&v->problem, seq,
                           "checkpoint signature is invalid: a forged checkpoint, or records up "
                           "to seq %llu were rewritten",
                           (unsigned long long) (seq - 1));
                return;
        }
        v->n_checkpoints++;
        v->last_checkpoint_seq = seq;
}

static int chunk_add_special(Chunk *c, uint64_t seq, const char *prev, const char *body)
{
        if (c->n_specials == c->cap_specials) {
                size_t cap = c->cap_specials ? c->cap_specials * 2 : 64;
                Special *n = realloc(c->specials, cap * sizeof(Special));
                if (!n)
                        return -ENOMEM;
                c->specials = n;
                c->cap_specials = cap;
        }
        c->specials[c->n_specials].seq = seq;
        snprintf(c->specials[c->n_specials].prev, AUDIT_HASH_HEX, "%s", prev);
        c->specials[c->n_specials].body = strdup(body);
        if (!c->specials[c->n_specials].body)
                return -ENOMEM;
        c->n_specials++;
        return 0;
}

static bool is_special(const char *event)
{
        return strcmp(event, "checkpoint") == 0 || strcmp(event, "audit_key") == 0 ||
               strcmp(event, "audit_pruned") == 0;
}

/* Takes a record whose own hash holds: links it to the chunk's record before it and keeps what
 * the ordered pass needs. false: the chunk stops here. */
static bool chunk_take(Chunk *c, uint64_t seq, const char *event, const char *prev,
                       const char *hash, const char *body)
{
        if (c->n == 0) {
                c->first_seq = seq;
                memcpy(c->first_prev, prev, AUDIT_HASH_HEX);
        } else if (strcmp(prev, c->last_hash) != 0) {
                problem_at(&c->problem, seq,
                           "does not link to seq %llu (records reordered, replaced or "
                           "rewritten)",
                           (unsigned long long) (seq - 1));
                return false;
        }
        if (is_special(event) && chunk_add_special(c, seq, prev, body) < 0) {
                problem_at(&c->problem, seq, "out of memory");
                return false;
        }
        memcpy(c->last_hash, hash, AUDIT_HASH_HEX);
        c->last_seq = seq;
        c->n++;
        return true;
}

static int64_t first_seq(sqlite3 *db)
{
        sqlite3_stmt *st = NULL;
        int64_t seq = -1;

        if (sqlite3_prepare_v2(db, "SELECT MIN(seq) FROM records", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                seq = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return seq;
}

static void *db_chunk_main(void *userdata)
{
        Chunk *c = userdata;
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        char hash[AUDIT_HASH_HEX];
        uint64_t expect = (uint64_t) c->lo;
        int rc;

        /* A connection of its own per thread: no SQLite mutex needed. */
        if (sqlite3_open_v2(c->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
                SQLITE_OK ||
            sqlite3_prepare_v2(db,
                               "SELECT seq, event, hash, body, body ->> '$.seq', "
                               "body ->> '$.event', body ->> '$.prev_hash', time_ms, "
                               "body ->> '$.time' "
                               "FROM records WHERE seq >= ? ORDER BY seq",
                               -1, &st, NULL) != SQLITE_OK) {
                problem_at(&c->problem, (uint64_t) c->lo, "cannot read the database: %s",
                           sqlite3_errmsg(db));
                sqlite3_close(db);
                return NULL;
        }
        /* One snapshot for the chunk. The running daemon appends after the range and prunes
         * from the start: this snapshot holds the range as it was cut unless it pruned since. */
        if (sqlite3_exec(db, "BEGIN; SELECT 1 FROM records LIMIT 1", NULL, NULL, NULL) !=
                SQLITE_OK ||
            first_seq(db) != c->log_lo) {
                problem_at(&c->problem, (uint64_t) c->lo,
                           "the log was pruned while it was verified: verify it again");
                sqlite3_finalize(st);
                sqlite3_close(db);
                return NULL;
        }
        /* Unbounded above, so that rows missing at the end of the range are reported with the
         * seq that follows them, as a one-piece check reports them. */
        sqlite3_bind_int64(st, 1, c->lo);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                uint64_t seq = (uint64_t) sqlite3_column_int64(st, 0);
                const char *event = (const char *) sqlite3_column_text(st, 1);
                const char *stored = (const char *) sqlite3_column_text(st, 2);
                const char *body = (const char *) sqlite3_column_text(st, 3);
                const char *bevent = (const char *) sqlite3_column_text(st, 5);
                const char *bprev = (const char *) sqlite3_column_text(st, 6);
                const char *btime = (const char *) sqlite3_column_text(st, 8);
                int64_t ms;

                if (expect > (uint64_t) c->hi)
                        break;
                if (seq != expect) {
                        problem_at(&c->problem, expect,
                                   "missing: the next record is seq %llu (rows deleted)",
                                   (unsigned long long) seq);
                        break;
                }
                if (!body || !event || !stored) {
                        problem_at(&c->problem, seq, "row is incomplete");
                        break;
                }
                if (sqlite3_column_type(st, 4) != SQLITE_INTEGER ||
                    (uint64_t) sqlite3_column_int64(st, 4) != seq || !bevent ||
                    strcmp(bevent, event) != 0) {
                        problem_at(&c->problem, seq,
                                   "record does not belong in this row (rows reordered, or seq "
                                   "or event edited)");
                        break;
                }
                audit_hash_hex(body, (size_t) sqlite3_column_bytes(st, 3), hash);
                if (strcmp(hash, stored) != 0) {
                        problem_at(&c->problem, seq,
                                   "record was edited: its content does not "
                                   "match its hash");
                        break;
                }
                if (!bprev || strlen(bprev) != 64) {
                        problem_at(&c->problem, seq, "record has no prev_hash");
                        break;
                }
                /* time_ms is outside the hash but decides time windows and retention. */
                if (!btime || time_parse_rfc3339(btime, &ms) < 0 ||
                    sqlite3_column_int64(st, 7) != ms) {
                        problem_at(&c->problem, seq,
                                   "the row's time_ms does not match the record's time (edited: "
                                   "it moves the record in or out of --since/--until windows "
                                   "and retention)");
                        break;
                }
                if (!chunk_take(c, seq, event, bprev, hash, body))
                        break;
                expect++;
        }
        if (!c->problem.set && rc != SQLITE_DONE && rc != SQLITE_ROW)
                problem_at(&c->problem, expect, "reading failed: %s", sqlite3_errmsg(db));
        if (!c->problem.set && expect <= (uint64_t) c->hi)
                problem_at(&c->problem, expect, "missing: rows deleted");
        sqlite3_finalize(st);
        sqlite3_close(db);
        return NULL;
}

typedef struct SignedRow {
        bool present;
        uint64_t seq;
        char hash[AUDIT_HASH_HEX], time[40], kid[64], pub[64], sig[128];
} SignedRow;

static void read_signed(sqlite3 *db, const char *name, SignedRow *ret)
{
        sqlite3_stmt *st = NULL;

        *ret = (SignedRow){};
        if (sqlite3_prepare_v2(db,
                               "SELECT seq, hash, time, key_id, public_key, signature FROM signed "
                               "WHERE name = ?",
                               -1, &st, NULL) != SQLITE_OK)
                return;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
                ret->present = true;
                ret->seq = (uint64_t) sqlite3_column_int64(st, 0);
                snprintf(ret->hash, sizeof(ret->hash), "%s",
                         sqlite3_column_text(st, 1) ?: (const unsigned char *) "");
                snprintf(ret->time, sizeof(ret->time), "%s",
                         sqlite3_column_text(st, 2) ?: (const unsigned char *) "");
                snprintf(ret->kid, sizeof(ret->kid), "%s",
                         sqlite3_column_text(st, 3) ?: (const unsigned char *) "");
                snprintf(ret->pub, sizeof(ret->pub), "%s",
                         sqlite3_column_text(st, 4) ?: (const unsigned char *) "");
                snprintf(ret->sig, sizeof(ret->sig), "%s",
                         sqlite3_column_text(st, 5) ?: (const unsigned char *) "");
        }
        sqlite3_finalize(st);
}

/* The stored record at the head's seq has the head's hash. */
static bool head_covers(const char *path, const SignedRow *head)
{
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        bool same = false;

        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
            sqlite3_prepare_v2(db, "SELECT hash FROM records WHERE seq = ?", -1, &st, NULL) ==
                SQLITE_OK) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64) head->seq);
                same = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) &&
                       strcmp((const char *) sqlite3_column_text(st, 0), head->hash) == 0;
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
        return same;
}

static int cmp_special(const void *a, const void *b)
{
        uint64_t x = ((const Special *) a)->seq, y = ((const Special *) b)->seq;
        return x < y ? -1 : x > y;
}

static int report(const Verifier *v, const char *what)
{
        if (v->problem.set) {
                fprintf(stderr, "brokerctl: %s: seq %llu: %s\n", what,
                        (unsigned long long) v->problem.seq, v->problem.why);
                return EXIT_OTHER;
        }
        return EXIT_OK;
}

static void print_keys(const Verifier *v)
{
        for (size_t i = 0; i < v->n_keys; i++)
                printf("  signed by audit key %s (public key %s)%s\n", v->keys[i].kid,
                       v->keys[i].pub, v->args->n_pins ? ", pinned" : "");
        if (v->args->n_pins == 0 && v->n_keys > 0)
                printf("  compare these with the key brokerctl status shows, or pin them with "
                       "--audit-key\n");
}

static void run_chunks(Chunk *chunks, size_t n, void *(*fn)(void *) )
{
        pthread_t threads[AUDIT_THREADS_MAX];
        bool started[AUDIT_THREADS_MAX] = {};

        for (size_t i = 0; i < n; i++)
                started[i] = n > 1 && pthread_create(&threads[i], NULL, fn, &chunks[i]) == 0;
        for (size_t i = 0; i < n; i++) {
                if (started[i])
                        pthread_join(threads[i], NULL);
                else
                        fn(&chunks[i]);
        }
}

/* The first problem any chunk found, and the record count. */
static bool merge_chunks(Verifier *v, const Chunk *chunks, size_t n)
{
        bool clean = true;

        for (size_t i = 0; i < n; i++) {
                if (chunks[i].problem.set) {
                        problem_at(&v->problem, chunks[i].problem.seq, "%s", chunks[i].problem.why);
                        clean = false;
                }
                v->n_records += chunks[i].n;
        }
        return clean;
}

/* Signed statements, in order, over a chain now known to hold together up to the first
 * problem (statements after it cannot be trusted anyway). Frees the chunks' specials. */
static void check_specials(Verifier *v, Chunk *chunks, size_t n)
{
        size_t total = 0, k = 0;
        Special *all;

        for (size_t i = 0; i < n; i++)
                total += chunks[i].n_specials;
        all = calloc(total ? total : 1, sizeof(Special));
        if (!all)
                problem_at(&v->problem, 0, "out of memory");
        for (size_t i = 0; i < n; i++) {
                for (size_t j = 0; j < chunks[i].n_specials; j++) {
                        if (all)
                                all[k++] = chunks[i].specials[j];
                        else
                                free(chunks[i].specials[j].body);
                }
                free(chunks[i].specials);
                chunks[i].specials = NULL;
                chunks[i].n_specials = 0;
        }
        if (!all)
                return;
        qsort(all, k, sizeof(Special), cmp_special);
        for (size_t i = 0; i < k; i++) {
                if (!v->problem.set || all[i].seq < v->problem.seq)
                        check_special(v, all[i].seq, all[i].prev, all[i].body);
                free(all[i].body);
        }
        free(all);
}

static void free_chunks(Chunk *chunks, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                for (size_t j = 0; j < chunks[i].n_specials; j++)
                        free(chunks[i].specials[j].body);
                free(chunks[i].specials);
                chunks[i].specials = NULL;
                chunks[i].n_specials = 0;
        }
}

static int verify_database(const AuditToolArgs *a)
{
        Verifier v = {.args = a};
        Chunk chunks[AUDIT_THREADS_MAX] = {};
        SignedRow head, anchor;
        int64_t lo = 0, hi = 0;
        size_t n_threads;
        sqlite3 *db = audit_db_open(a->database);
        sqlite3_stmt *st = NULL;

        if (!db)
                return EXIT_USAGE;
        /* The range, the head and the anchor from one snapshot: the running daemon moves the
         * head with every commit and the anchor with every prune. */
        if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(db, "SELECT MIN(seq), MAX(seq) FROM records", -1, &st, NULL) !=
                SQLITE_OK) {
                fprintf(stderr, "brokerctl: %s: not an audit database: %s\n", a->database,
                        sqlite3_errmsg(db));
                sqlite3_close(db);
                return EXIT_OTHER;
        }
        if (sqlite3_step(st) == SQLITE_ROW) {
                lo = sqlite3_column_int64(st, 0);
                hi = sqlite3_column_int64(st, 1);
        }
        sqlite3_finalize(st);
        read_signed(db, "head", &head);
        read_signed(db, "anchor", &anchor);
        sqlite3_close(db);

        if (hi < lo || hi == 0) {
                if (head.present) {
                        fprintf(stderr,
                                "brokerctl: %s: seq %llu: truncated: no records, but a "
                                "signed head\n",
                                a->database, (unsigned long long) head.seq);
                        return EXIT_OTHER;
                }
                /* A broker's log is never empty: its first commit holds the audit_key record. */
                fprintf(stderr,
                        "brokerctl: %s: seq 1: no records and no signed head: not a log a "
                        "broker wrote, or every row was deleted\n",
                        a->database);
                return EXIT_OTHER;
        }

        /* The anchor's key proves the start of a pruned log; it may be the only record of
         * that key left. */
        if (anchor.present)
                key_add(&v, (uint64_t) lo, anchor.kid, anchor.pub);

        n_threads = audit_thread_count(a, (uint64_t) (hi - lo + 1), PARALLEL_RECORDS_MIN);
        n_threads = MIN(n_threads, (size_t) (hi - lo + 1));
        for (size_t i = 0; i < n_threads; i++) {
                int64_t span = (hi - lo + 1) / (int64_t) n_threads;
                chunks[i] =
                    (Chunk){.path = a->database,
                            .log_lo = lo,
                            .lo = lo + (int64_t) i * span,
                            .hi = i + 1 == n_threads ? hi : lo + (int64_t) (i + 1) * span - 1};
        }
        run_chunks(chunks, n_threads, db_chunk_main);
        (void) merge_chunks(&v, chunks, n_threads);

        /* Where the chain starts, and how the ranges join. */
        if (anchor.present) {
                if ((uint64_t) lo != anchor.seq + 1 ||
                    strcmp(chunks[0].first_prev, anchor.hash) != 0)
                        problem_at(&v.problem, (uint64_t) lo,
                                   "the log does not start where its pruning anchor says (seq "
                                   "%llu): records deleted from the start",
                                   (unsigned long long) (anchor.seq + 1));
                else if (!statement_ok(&v, "anchor", anchor.seq, anchor.hash, anchor.time,
                                       anchor.kid, anchor.sig))
                        problem_at(&v.problem, (uint64_t) lo,
                                   "the pruning anchor's signature is "
                                   "invalid (forged anchor)");
        } else if (lo != 1 || strcmp(chunks[0].first_prev, AUDIT_GENESIS) != 0)
                problem_at(&v.problem, (uint64_t) lo,
                           "the log does not start at seq 1 and has no pruning anchor: records "
                           "deleted from the start");
        for (size_t i = 1; i < n_threads; i++)
                if (chunks[i].n > 0 && chunks[i - 1].n > 0 &&
                    strcmp(chunks[i].first_prev, chunks[i - 1].last_hash) != 0)
                        problem_at(&v.problem, chunks[i].first_seq,
                                   "does not link to seq %llu (records reordered, replaced or "
                                   "rewritten)",
                                   (unsigned long long) (chunks[i].first_seq - 1));
        check_specials(&v, chunks, n_threads);

        /* The head signs the last record: a tail cut after the last checkpoint shows here. */
        uint64_t last = chunks[n_threads - 1].last_seq;
        const char *last_hash = chunks[n_threads - 1].last_hash;
        if (!v.problem.set) {
                if (!head.present)
                        problem_at(&v.problem, last, "the log has no signed head");
                else if (head.seq > last)
                        problem_at(&v.problem, last + 1,
                                   "truncated: the log ends at seq %llu but its signed head is "
                                   "at seq %llu (records after the last checkpoint removed)",
                                   (unsigned long long) last, (unsigned long long) head.seq);
                else if (head.seq < last && head_covers(a->database, &head))
                        problem_at(&v.problem, head.seq + 1,
                                   "records appended after the signed head (seq %llu): no "
                                   "signature covers them",
                                   (unsigned long long) head.seq);
                else if (head.seq != last || strcmp(head.hash, last_hash) != 0)
                        problem_at(&v.problem, head.seq,
                                   "the signed head does not match the last record (records "
                                   "appended or rewritten)");
                else if (!key_public(&v, head.kid) ||
                         strcmp(key_public(&v, head.kid), head.pub) != 0 ||
                         !statement_ok(&v, "head", head.seq, head.hash, head.time, head.kid,
                                       head.sig))
                        problem_at(&v.problem, head.seq,
                                   "the signed head's signature is invalid "
                                   "(forged head)");
        }

        int r = report(&v, a->database);
        if (r == EXIT_OK) {
                printf("%s: %llu records (seq %lld..%lld), %llu checkpoints, chain intact%s\n",
                       a->database, (unsigned long long) v.n_records, (long long) lo,
                       (long long) hi, (unsigned long long) v.n_checkpoints,
                       anchor.present ? " from its pruning anchor" : "");
                print_keys(&v);
        }
        return r;
}

/* ---- an exported file ------------------------------------------------------------------ */

/* An exported line is the canonical record with ,"hash":"<64 hex>"} at its end; cuts it into
 * the two (in place). */
static bool split_line(char *line, size_t len, char **ret_hash)
{
        static const char tag[] = ",\"hash\":\"";
        const size_t tail = sizeof(tag) - 1 + 64 + 2; /* tag, hex, '"', '}' */

        if (len < tail + 2 || line[len - 1] != '}' || line[len - 2] != '"' ||
            memcmp(line + len - tail, tag, sizeof(tag) - 1) != 0)
                return false;
        *ret_hash = line + len - 66;
        line[len - 2] = 0;      /* ends the hash */
        line[len - tail] = '}'; /* the canonical record ends here */
        line[len - tail + 1] = 0;
        return true;
}

/* One line of an export: false stops the chunk. */
static bool file_line(Chunk *c, sqlite3_stmt *st, char *line, size_t len, size_t lineno)
{
        uint64_t expect = c->n ? c->last_seq + 1 : 0;
        char hash[AUDIT_HASH_HEX], *stored;
        const char *bprev, *event;
        uint64_t seq;
        bool ok;

        /* The hash covers the line up to a NUL only: what follows one would go unchecked. */
        if (memchr(line, 0, len)) {
                problem_at(&c->problem, expect, "line %zu holds a NUL byte", lineno);
                return false;
        }
        if (!split_line(line, len, &stored)) {
                problem_at(&c->problem, expect,
                           "line %zu is not an exported record "
                           "(it must end with its \"hash\")",
                           lineno);
                return false;
        }
        sqlite3_bind_text(st, 1, line, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_type(st, 0) != SQLITE_INTEGER ||
            sqlite3_column_int64(st, 0) < 1 || !sqlite3_column_text(st, 1) ||
            !sqlite3_column_text(st, 2)) {
                sqlite3_reset(st);
                problem_at(&c->problem, expect, "line %zu is not a record", lineno);
                return false;
        }
        seq = (uint64_t) sqlite3_column_int64(st, 0);
        bprev = (const char *) sqlite3_column_text(st, 1);
        event = (const char *) sqlite3_column_text(st, 2);
        if (c->n == 0 && seq == 1 && strcmp(bprev, AUDIT_GENESIS) != 0)
                problem_at(&c->problem, seq,
                           "the first record does not start from the genesis "
                           "hash");
        else if (c->n > 0 && seq != expect)
                problem_at(&c->problem, expect,
                           "missing: the next line is seq %llu (records removed, reordered, "
                           "or the export was filtered by event)",
                           (unsigned long long) seq);
        else if (strlen(bprev) != 64)
                problem_at(&c->problem, seq, "record has no prev_hash");
        if (c->problem.set) {
                sqlite3_reset(st);
                return false;
        }
        audit_hash_hex(line, strlen(line), hash);
        if (strcmp(hash, stored) != 0) {
                sqlite3_reset(st);
                problem_at(&c->problem, seq,
                           "record was edited: its content does not match its "
                           "hash");
                return false;
        }
        ok = chunk_take(c, seq, event, bprev, hash, line);
        sqlite3_reset(st);
        return ok;
}

/* Reads the lines that start in [lo, hi) (chunks start at line starts), or c->in to its end. */
static void *file_chunk_main(void *userdata)
{
        Chunk *c = userdata;
        _cleanup_fclose_ FILE *owned = NULL;
        FILE *f = c->in;
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        char *line = NULL;
        size_t cap = 0, lineno = 0;
        int64_t pos = c->lo;
        ssize_t n;

        if (!f) {
                f = owned = fopen(c->path, "re");
                if (!f || fseeko(f, c->lo, SEEK_SET) < 0) {
                        problem_at(&c->problem, 0, "cannot read the file: %m");
                        return NULL;
                }
        }
        /* The same JSON functions read the database's records. */
        if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
                SQLITE_OK ||
            sqlite3_prepare_v2(db, "SELECT ?1 ->> '$.seq', ?1 ->> '$.prev_hash', ?1 ->> '$.event'",
                               -1, &st, NULL) != SQLITE_OK) {
                problem_at(&c->problem, 0, "cannot start SQLite: %s", sqlite3_errmsg(db));
                sqlite3_close(db);
                return NULL;
        }
        while ((c->in || pos < c->hi) && (n = getline(&line, &cap, f)) > 0) {
                pos += n;
                lineno++;
                if (line[n - 1] == '\n')
                        line[--n] = 0;
                if (!file_line(c, st, line, (size_t) n, lineno)) /* blank lines too */
                        break;
        }
        if (!c->problem.set && ferror(f))
                problem_at(&c->problem, c->n ? c->last_seq + 1 : 0, "reading failed");
        free(line);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return NULL;
}

/* Cuts a regular file of `size` bytes into n byte ranges that start at line starts (some may
 * be empty). */
static int split_file(FILE *f, const char *path, int64_t size, Chunk *chunks, size_t n)
{
        for (size_t i = 0; i < n; i++)
                chunks[i] =
                    (Chunk){.path = path, .lo = size / (int64_t) n * (int64_t) i, .hi = size};
        for (size_t i = 1; i < n; i++) {
                int64_t at;
                int ch;

                /* on to the first line that starts at lo or later */
                if (fseeko(f, chunks[i].lo - 1, SEEK_SET) < 0)
                        return -errno;
                while ((ch = getc(f)) != EOF && ch != '\n')
                        ;
                at = ftello(f);
                if (at < 0)
                        return -errno;
                chunks[i].lo = MAX(chunks[i - 1].lo, at);
                chunks[i - 1].hi = chunks[i].lo;
        }
        return 0;
}

static int verify_file(const AuditToolArgs *a)
{
        Verifier v = {.args = a};
        Chunk chunks[AUDIT_THREADS_MAX] = {};
        _cleanup_fclose_ FILE *f = NULL;
        size_t n_threads = 1;
        const Chunk *first = NULL, *last = NULL;
        struct stat st;

        if (strcmp(a->file, "-") == 0)
                chunks[0] = (Chunk){.path = "-", .in = stdin};
        else {
                f = fopen(a->file, "re");
                if (!f || fstat(fileno(f), &st) < 0) {
                        fprintf(stderr, "brokerctl: cannot read %s: %m\n", a->file);
                        return EXIT_USAGE;
                }
                if (!S_ISREG(st.st_mode)) /* a pipe: read once, in one piece */
                        chunks[0] = (Chunk){.path = a->file, .in = f};
                else {
                        n_threads =
                            audit_thread_count(a, (uint64_t) st.st_size, PARALLEL_BYTES_MIN);
                        n_threads = MIN(n_threads, (size_t) MAX(st.st_size, 1));
                        if (split_file(f, a->file, st.st_size, chunks, n_threads) < 0) {
                                fprintf(stderr, "brokerctl: cannot read %s: %m\n", a->file);
                                return EXIT_USAGE;
                        }
                }
        }
        run_chunks(chunks, n_threads, file_chunk_main);
        if (!merge_chunks(&v, chunks, n_threads) && n_threads > 1) {
                /* Where a chunk starts, the line number and the seq expected there are not
                 * known: the slow path reads it again in one piece for the exact report. */
                AuditToolArgs one = *a;
                free_chunks(chunks, n_threads);
                one.threads = 1;
                return verify_file(&one);
        }
        /* How the pieces join. */
        for (size_t i = 0; i < n_threads && !v.problem.set; i++) {
                if (chunks[i].n == 0)
                        continue;
                if (last && chunks[i].first_seq != last->last_seq + 1)
                        problem_at(&v.problem, last->last_seq + 1,
                                   "missing: the next line is seq %llu (records removed, "
                                   "reordered, or the export was filtered by event)",
                                   (unsigned long long) chunks[i].first_seq);
                else if (last && strcmp(chunks[i].first_prev, last->last_hash) != 0)
                        problem_at(&v.problem, chunks[i].first_seq,
                                   "does not link to seq %llu (records reordered, replaced or "
                                   "rewritten)",
                                   (unsigned long long) (chunks[i].first_seq - 1));
                first = first ?: &chunks[i];
                last = &chunks[i];
        }
        check_specials(&v, chunks, n_threads);

        int r = report(&v, a->file);
        if (r != EXIT_OK)
                return r;
        if (v.n_records == 0) {
                printf("%s: no records\n", a->file);
                return EXIT_OK;
        }
        printf("%s: %llu records (seq %llu..%llu), %llu checkpoints, chain intact\n", a->file,
               (unsigned long long) v.n_records, (unsigned long long) first->first_seq,
               (unsigned long long) last->last_seq, (unsigned long long) v.n_checkpoints);
        if (first->first_seq != 1)
                printf("  starts at seq %llu: the records before it are not in this file\n",
                       (unsigned long long) first->first_seq);
        if (v.last_checkpoint_seq < last->last_seq)
                printf("  the last %llu records come after the last checkpoint: no signature "
                       "covers them in this file\n",
                       (unsigned long long) (last->last_seq - v.last_checkpoint_seq));
        print_keys(&v);
        return EXIT_OK;
}

int audit_verify(const AuditToolArgs *a)
{
        if (!!a->database == !!a->file) {
                fprintf(stderr, "brokerctl: audit verify needs --database PATH or --file PATH\n");
                return EXIT_USAGE;
        }
        return a->file ? verify_file(a) : verify_database(a);
}
