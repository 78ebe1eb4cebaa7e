/* The one verifier (contract in verify.h). Each record's hash and its link to the one before can
 * be checked on its own, so the input (a database's seq range, an export's bytes) is split into
 * chunks verified in parallel; the chunk boundaries and the signed statements (checkpoints,
 * head, anchor) are checked afterwards, in order. Records are read with SQLite's JSON functions
 * in both modes, so a database and its export cannot be read differently. */
#include "grantlog/verify.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "grantlog/format.h"
#include "grantlog/reader.h"
#include "grantlog/schema.h"
#include "json-util.h"
#include "jwk.h"
#include "macro.h"
#include "timeutil.h"

#define KEYS_MAX 64
/* Inputs smaller than this are verified by one thread: starting more costs more. */
#define PARALLEL_RECORDS_MIN 20000
#define PARALLEL_BYTES_MIN   (8u << 20)

/* ---- key trust ------------------------------------------------------------------------- */

/* Whether `kid` is the RFC 7638 thumbprint of the Ed25519 public key `pub`. */
static bool kid_of(const char *kid, const char *pub)
{
        _cleanup_(json_decrefp) json_t *jwk =
            json_pack("{s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "x", pub);
        _cleanup_free_ char *tp = NULL;

        return jwk && jwk_thumbprint(jwk, &tp) >= 0 && strcmp(tp, kid) == 0;
}

bool grantlog_trust_accepts(const GrantlogTrust *t, const char *first_named_pub, const char *kid,
                            const char *pub)
{
        if (!pub)
                return false;
        for (size_t i = 0; i < t->n_pins; i++)
                if (strcmp(t->pins[i], pub) == 0 ||
                    (kid && strcmp(t->pins[i], kid) == 0 && kid_of(kid, pub)))
                        return true;
        return t->first_named && first_named_pub && strcmp(first_named_pub, pub) == 0;
}

/* ---- problems ------------------------------------------------------------------------- */

/* The first thing wrong, by seq: the lowest seq wins however the work was split. */
typedef struct Problem {
        bool set;
        GrantlogVerdict kind;
        uint64_t seq;
        char why[400];
} Problem;

_printf_(4, 5) static void problem_at(Problem *p, uint64_t seq, GrantlogVerdict kind,
                                      const char *fmt, ...)
{
        va_list ap;

        if (p->set && p->seq <= seq)
                return;
        p->set = true;
        p->kind = kind;
        p->seq = seq;
        va_start(ap, fmt);
        vsnprintf(p->why, sizeof(p->why), fmt, ap);
        va_end(ap);
}

#define tampered(p, seq, ...) problem_at((p), (seq), GRANTLOG_TAMPERED, __VA_ARGS__)

/* What a damaged database most often is, and what to do. */
#define DAMAGED_HINT                                                                               \
        ". A copy made with cp while brokerd was writing the log looks like this: verify the "     \
        "live database (verify reads a consistent snapshot), or copy it with sqlite3 DB "          \
        "'.backup COPY', or from a stopped brokerd"

/* ---- the ordered pass: keys and signed statements ---------------------------------------- */

typedef struct AuditKey {
        char kid[64];
        char pub[64];
} AuditKey;

typedef struct Verifier {
        const GrantlogTrust *trust;
        char first_named[64]; /* the first key the log names, "" until it names one */
        AuditKey keys[KEYS_MAX];
        size_t n_keys;
        uint64_t n_records, n_checkpoints, last_checkpoint_seq;
        Problem problem;
} Verifier;

static const char *key_public(const Verifier *v, const char *kid)
{
        for (size_t i = 0; i < v->n_keys; i++)
                if (strcmp(v->keys[i].kid, kid) == 0)
                        return v->keys[i].pub;
        return NULL;
}

/* Whether a pin names `kid`: the key id itself, or a public key whose thumbprint it is. */
static bool pinned_id(const GrantlogTrust *t, const char *kid)
{
        for (size_t i = 0; i < t->n_pins; i++)
                if (strcmp(t->pins[i], kid) == 0 || kid_of(kid, t->pins[i]))
                        return true;
        return false;
}

static void key_keep(Verifier *v, const char *kid, const char *pub)
{
        if (v->n_keys < KEYS_MAX) {
                snprintf(v->keys[v->n_keys].kid, sizeof(v->keys[0].kid), "%s", kid);
                snprintf(v->keys[v->n_keys].pub, sizeof(v->keys[0].pub), "%s", pub);
                v->n_keys++;
        }
}

/* A key the log names (an audit_key record, or the anchor): trusted from here on if the
 * policy accepts it. */
static void key_add(Verifier *v, uint64_t seq, const char *kid, const char *pub)
{
        const char *known;

        if (!kid || !pub || strlen(kid) >= sizeof(v->keys[0].kid) ||
            strlen(pub) >= sizeof(v->keys[0].pub)) {
                tampered(&v->problem, seq, "malformed audit key");
                return;
        }
        known = key_public(v, kid);
        if (known) {
                if (strcmp(known, pub) != 0)
                        tampered(&v->problem, seq, "audit key %s appears with two public keys",
                                 kid);
                return;
        }
        if (!v->first_named[0])
                snprintf(v->first_named, sizeof(v->first_named), "%s", pub);
        if (!grantlog_trust_accepts(v->trust, v->first_named, kid, pub)) {
                if (pinned_id(v->trust, kid))
                        /* The key given is this key id's; the public half the log names with
                         * it is not: no key mismatch, an edited or forged record. */
                        tampered(&v->problem, seq,
                                 "the log names audit key %s with public key %s, which is not "
                                 "that key's (its key id is another key's thumbprint): an "
                                 "edited or forged key record",
                                 kid, pub);
                else if (v->trust->n_pins > 0)
                        problem_at(&v->problem, seq, GRANTLOG_KEY_MISMATCH,
                                   "audit key %s is not one of the keys given with --audit-key "
                                   "(a key mismatch: check the key 'brokerctl status' prints as "
                                   "audit.public_key)",
                                   kid);
                else
                        /* Whoever can write the database can add an audit_key record of their
                         * own and re-sign everything after it. */
                        tampered(&v->problem, seq,
                                 "the log switches to audit key %s here, which no key it trusted "
                                 "before vouches for (a forged key, or brokerd's state was "
                                 "reset): pass --audit-key for every key you trust",
                                 kid);
                return;
        }
        key_keep(v, kid, pub);
}

/* The public key to check a statement by `kid` with: a key the input named and the policy
 * accepted, or, for an input that does not name it (an export of a later window), a pinned
 * public key whose thumbprint is kid. NULL with a key-mismatch problem otherwise. */
static const char *statement_key(Verifier *v, uint64_t seq, const char *what, const char *kid)
{
        const char *pub = key_public(v, kid);
        bool by_id = false;

        if (pub)
                return pub;
        for (size_t i = 0; i < v->trust->n_pins; i++) {
                if (strcmp(v->trust->pins[i], kid) == 0)
                        by_id = true;
                else if (strlen(kid) < sizeof(v->keys[0].kid) &&
                         strlen(v->trust->pins[i]) < sizeof(v->keys[0].pub) &&
                         kid_of(kid, v->trust->pins[i])) {
                        /* kept, so that the report names the key the input was checked with */
                        key_keep(v, kid, v->trust->pins[i]);
                        return v->trust->pins[i];
                }
        }
        if (by_id)
                problem_at(&v->problem, seq, GRANTLOG_KEY_MISMATCH,
                           "%s is signed by audit key %s, given by its key id; this input does "
                           "not name the key's public half: pass --audit-key with the public "
                           "key 'brokerctl status' prints as audit.public_key",
                           what, kid);
        else if (v->trust->n_pins > 0)
                problem_at(&v->problem, seq, GRANTLOG_KEY_MISMATCH,
                           "%s is signed by audit key %s, which is not one of the keys given "
                           "with --audit-key (a key mismatch: check the key 'brokerctl status' "
                           "prints as audit.public_key)",
                           what, kid);
        else
                problem_at(&v->problem, seq, GRANTLOG_KEY_MISMATCH,
                           "%s is signed by audit key %s, which this log does not name (an "
                           "export that starts later: pass --audit-key with the public key "
                           "'brokerctl status' prints as audit.public_key)",
                           what, kid);
        return NULL;
}

static bool statement_valid(const char *type, uint64_t seq, const char *hash, const char *time,
                            const char *kid, const char *sig, const char *pub)
{
        _cleanup_free_ char *st = NULL;

        if (!hash || !time || !kid || !sig || !pub)
                return false;
        st = grantlog_statement(type, seq, hash, time, kid);
        return st && grantlog_statement_verify(st, sig, pub) == 0;
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
                tampered(&v->problem, seq,
                         "record is not a JSON object with an event, or has a member twice");
                return;
        }
        if (strcmp(event, "audit_key") == 0) {
                key_add(v, seq, json_string_value(json_object_get(rec, "key_id")),
                        json_string_value(json_object_get(rec, "public_key")));
                return;
        }
        if (strcmp(event, "audit_pruned") == 0) {
                /* the broker may only have pruned records older than its retention (the
                 * record is the writer's: a retention_s too large for the arithmetic is none
                 * the broker wrote, and must not overflow it) */
                int64_t when = 0, through = 0, retention_ms, oldest;
                json_t *ret = json_object_get(rec, "retention_s");
                if (time_parse_rfc3339(json_string_value(json_object_get(rec, "time")) ?: "",
                                       &when) < 0 ||
                    time_parse_rfc3339(json_string_value(json_object_get(rec, "through_time"))
                                           ?: "",
                                       &through) < 0 ||
                    !json_is_integer(ret) ||
                    __builtin_mul_overflow(json_integer_value(ret), 1000, &retention_ms) ||
                    __builtin_sub_overflow(when, retention_ms, &oldest) || through > oldest)
                        tampered(&v->problem, seq,
                                 "records younger than the retention were pruned");
                return;
        }
        if (strcmp(event, "checkpoint") != 0)
                return;
        json_t *cp = json_object_get(rec, "checkpoint");
        json_t *cseq = json_object_get(cp, "seq");
        const char *chash = json_string_value(json_object_get(cp, "hash"));
        const char *kid = json_string_value(json_object_get(cp, "key_id"));
        const char *pub;

        /* It signs the record right before it: the hash the chain links this record to. */
        if (!json_is_integer(cseq) || (uint64_t) json_integer_value(cseq) != seq - 1 || !chash ||
            strcmp(chash, prev) != 0) {
                tampered(&v->problem, seq, "checkpoint does not sign the record before it");
                return;
        }
        if (!kid) {
                tampered(&v->problem, seq, "checkpoint names no audit key");
                return;
        }
        pub = statement_key(v, seq, "the checkpoint", kid);
        if (!pub)
                return;
        if (!statement_valid("checkpoint", seq - 1, chash,
                             json_string_value(json_object_get(cp, "time")), kid,
                             json_string_value(json_object_get(cp, "signature")), pub)) {
                tampered(&v->problem, seq,
                         "checkpoint signature is invalid: a forged checkpoint, or records up "
                         "to seq %llu were rewritten",
                         (unsigned long long) (seq - 1));
                return;
        }
        v->n_checkpoints++;
        v->last_checkpoint_seq = seq;
}

/* ---- chunks: hashes and links, in parallel --------------------------------------------- */

/* A checkpoint, audit_key or audit_pruned record, checked in order once the chain is known to
 * hold. */
typedef struct Special {
        uint64_t seq;
        char prev[GRANTLOG_HASH_HEX]; /* the prev_hash the chain was linked with */
        char *body;
} Special;

typedef struct Chunk {
        const char *path;
        FILE *in;       /* file mode: a stream read to its end instead of path (stdin) */
        int64_t lo, hi; /* database: the seq range; file: the byte range [lo, hi) */
        int64_t log_lo; /* database: the first seq, as the snapshot the range was cut from says */
        /* results */
        uint64_t n, first_seq, last_seq;
        char first_prev[GRANTLOG_HASH_HEX], last_hash[GRANTLOG_HASH_HEX];
        Special *specials;
        size_t n_specials, cap_specials;
        Problem problem;
} Chunk;

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
        snprintf(c->specials[c->n_specials].prev, GRANTLOG_HASH_HEX, "%s", prev);
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
                memcpy(c->first_prev, prev, GRANTLOG_HASH_HEX);
        } else if (strcmp(prev, c->last_hash) != 0) {
                tampered(&c->problem, seq,
                         "does not link to seq %llu (records reordered, replaced or rewritten)",
                         (unsigned long long) (seq - 1));
                return false;
        }
        if (is_special(event) && chunk_add_special(c, seq, prev, body) < 0) {
                problem_at(&c->problem, seq, GRANTLOG_UNREADABLE, "out of memory");
                return false;
        }
        memcpy(c->last_hash, hash, GRANTLOG_HASH_HEX);
        c->last_seq = seq;
        c->n++;
        return true;
}

/* The columns every database row is read with: its own and the record's view of them. */
#define ROW_SQL                                                                                    \
        "SELECT seq, event, hash, body, body ->> '$.seq', body ->> '$.event', "                    \
        "body ->> '$.prev_hash', time_ms, body ->> '$.time' FROM records WHERE seq >= ? "          \
        "ORDER BY seq"

/* Checks one database row (the statement is on it): that it is the record `expect`, that its
 * columns agree with its body, and that its hash holds. On success, hash and *ret_prev/event
 * describe it. */
static bool row_check(sqlite3_stmt *st, uint64_t expect, char hash[GRANTLOG_HASH_HEX], Problem *p)
{
        uint64_t seq = (uint64_t) sqlite3_column_int64(st, 0);
        const char *event = (const char *) sqlite3_column_text(st, 1);
        const char *stored = (const char *) sqlite3_column_text(st, 2);
        const char *body = (const char *) sqlite3_column_text(st, 3);
        const char *bevent = (const char *) sqlite3_column_text(st, 5);
        const char *bprev = (const char *) sqlite3_column_text(st, 6);
        const char *btime = (const char *) sqlite3_column_text(st, 8);
        int64_t ms;

        if (seq != expect) {
                tampered(p, expect, "missing: the next record is seq %llu (rows deleted)",
                         (unsigned long long) seq);
                return false;
        }
        if (!body || !event || !stored) {
                tampered(p, seq, "row is incomplete");
                return false;
        }
        if (sqlite3_column_type(st, 4) != SQLITE_INTEGER ||
            (uint64_t) sqlite3_column_int64(st, 4) != seq || !bevent ||
            strcmp(bevent, event) != 0) {
                tampered(p, seq,
                         "record does not belong in this row (rows reordered, or seq or event "
                         "edited)");
                return false;
        }
        grantlog_hash_hex(body, (size_t) sqlite3_column_bytes(st, 3), hash);
        if (strcmp(hash, stored) != 0) {
                tampered(p, seq, "record was edited: its content does not match its hash");
                return false;
        }
        if (!bprev || strlen(bprev) != 64) {
                tampered(p, seq, "record has no prev_hash");
                return false;
        }
        /* time_ms is outside the hash but decides time windows and retention. */
        if (!btime || time_parse_rfc3339(btime, &ms) < 0 || sqlite3_column_int64(st, 7) != ms) {
                tampered(p, seq,
                         "the row's time_ms does not match the record's time (edited: it moves "
                         "the record in or out of --since/--until windows and retention)");
                return false;
        }
        return true;
}

/* A read that failed is not a verdict on the records: the log may be intact. A file SQLite
 * finds damaged cannot be read either, but that is no passing condition (a lock, memory)
 * that trying again may clear. */
static GrantlogVerdict read_failure_kind(sqlite3 *db)
{
        int rc = db ? sqlite3_errcode(db) & 0xff : SQLITE_NOMEM;
        return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB ? GRANTLOG_DAMAGED : GRANTLOG_UNREADABLE;
}

static void read_failed(Problem *p, uint64_t seq, sqlite3 *db)
{
        if (read_failure_kind(db) == GRANTLOG_DAMAGED)
                problem_at(p, seq, GRANTLOG_DAMAGED,
                           "the database file is damaged (SQLite: %s); its records cannot be "
                           "checked" DAMAGED_HINT,
                           sqlite3_errmsg(db));
        else
                problem_at(p, seq, GRANTLOG_UNREADABLE, "cannot read the database: %s",
                           db ? sqlite3_errmsg(db) : "out of memory");
}

/* -EIO when it cannot be read (any seq is possible in a tampered log, -1 too). */
static int first_seq(sqlite3 *db, int64_t *ret)
{
        sqlite3_stmt *st = NULL;
        int r = -EIO;

        if (sqlite3_prepare_v2(db, "SELECT MIN(seq) FROM records", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
                *ret = sqlite3_column_int64(st, 0);
                r = 0;
        }
        sqlite3_finalize(st);
        return r;
}

static void *db_chunk_main(void *userdata)
{
        Chunk *c = userdata;
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        char hash[GRANTLOG_HASH_HEX], err[512];
        uint64_t expect = (uint64_t) c->lo;
        int rc;

        /* A connection of its own per thread: no SQLite mutex needed. */
        if (grantlog_db_open_readonly(c->path, &db, err, sizeof(err)) < 0) {
                problem_at(&c->problem, expect, GRANTLOG_UNREADABLE, "%s", err);
                return NULL;
        }
        if (sqlite3_prepare_v2(db, ROW_SQL, -1, &st, NULL) != SQLITE_OK ||
            grantlog_reader_snapshot(db) < 0) {
                read_failed(&c->problem, expect, db);
                goto out;
        }
        /* One snapshot for the chunk. The running daemon appends after the range and prunes
         * from the start: this snapshot holds the range as it was cut unless it pruned since. */
        int64_t lo = 0;
        if (first_seq(db, &lo) < 0) {
                read_failed(&c->problem, expect, db);
                goto out;
        }
        if (lo != c->log_lo) {
                problem_at(&c->problem, expect, GRANTLOG_UNREADABLE,
                           "the log was pruned while it was verified: verify it again");
                goto out;
        }
        /* Unbounded above, so that rows missing at the end of the range are reported with the
         * seq that follows them, as a one-piece check reports them. */
        sqlite3_bind_int64(st, 1, c->lo);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (expect > (uint64_t) c->hi)
                        break;
                if (!row_check(st, expect, hash, &c->problem) ||
                    !chunk_take(c, expect, (const char *) sqlite3_column_text(st, 1),
                                (const char *) sqlite3_column_text(st, 6), hash,
                                (const char *) sqlite3_column_text(st, 3)))
                        break;
                expect++;
        }
        if (!c->problem.set && rc != SQLITE_DONE && rc != SQLITE_ROW)
                read_failed(&c->problem, expect, db);
        if (!c->problem.set && expect <= (uint64_t) c->hi)
                tampered(&c->problem, expect, "missing: rows deleted");
out:
        sqlite3_finalize(st);
        sqlite3_close(db);
        return NULL;
}

static void run_chunks(Chunk *chunks, size_t n, void *(*fn)(void *) )
{
        pthread_t threads[GRANTLOG_THREADS_MAX];
        bool started[GRANTLOG_THREADS_MAX] = {};

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
                        problem_at(&v->problem, chunks[i].problem.seq, chunks[i].problem.kind, "%s",
                                   chunks[i].problem.why);
                        clean = false;
                }
                v->n_records += chunks[i].n;
        }
        return clean;
}

static int cmp_special(const void *a, const void *b)
{
        uint64_t x = ((const Special *) a)->seq, y = ((const Special *) b)->seq;
        return x < y ? -1 : x > y;
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

/* Signed statements, in order, over a chain now known to hold together up to the first
 * problem (statements after it cannot be trusted anyway). Frees the chunks' specials. */
static void check_specials(Verifier *v, Chunk *chunks, size_t n)
{
        size_t total = 0, k = 0;
        Special *all;

        for (size_t i = 0; i < n; i++)
                total += chunks[i].n_specials;
        all = calloc(total ? total : 1, sizeof(Special));
        if (!all) {
                problem_at(&v->problem, 0, GRANTLOG_UNREADABLE, "out of memory");
                free_chunks(chunks, n);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                for (size_t j = 0; j < chunks[i].n_specials; j++)
                        all[k++] = chunks[i].specials[j];
                free(chunks[i].specials);
                chunks[i].specials = NULL;
                chunks[i].n_specials = 0;
        }
        qsort(all, k, sizeof(Special), cmp_special);
        for (size_t i = 0; i < k; i++) {
                if (!v->problem.set || all[i].seq < v->problem.seq)
                        check_special(v, all[i].seq, all[i].prev, all[i].body);
                free(all[i].body);
        }
        free(all);
}

static void report_from(const Verifier *v, GrantlogReport *ret)
{
        ret->n_records = v->n_records;
        ret->n_checkpoints = v->n_checkpoints;
        ret->last_checkpoint_seq = v->last_checkpoint_seq;
        ret->n_keys = MIN(v->n_keys, (size_t) GRANTLOG_REPORT_KEYS_MAX);
        for (size_t i = 0; i < ret->n_keys; i++) {
                memcpy(ret->keys[i].kid, v->keys[i].kid, sizeof(ret->keys[i].kid));
                memcpy(ret->keys[i].pub, v->keys[i].pub, sizeof(ret->keys[i].pub));
        }
        if (v->problem.set) {
                ret->verdict = v->problem.kind;
                ret->problem_seq = v->problem.seq;
                snprintf(ret->why, sizeof(ret->why), "%s", v->problem.why);
        } else
                ret->verdict = GRANTLOG_INTACT;
}

static void report_problem(GrantlogReport *ret, GrantlogVerdict kind, uint64_t seq, const char *why)
{
        ret->verdict = kind;
        ret->problem_seq = seq;
        snprintf(ret->why, sizeof(ret->why), "%s", why);
}

/* ---- a database ------------------------------------------------------------------------ */

typedef struct SignedRow {
        bool present;
        uint64_t seq;
        char hash[GRANTLOG_HASH_HEX], time[40], kid[64], pub[64], sig[128];
} SignedRow;

static int read_signed(sqlite3 *db, const char *name, SignedRow *ret)
{
        sqlite3_stmt *st = NULL;
        int rc;

        *ret = (SignedRow){};
        if (sqlite3_prepare_v2(db,
                               "SELECT seq, hash, time, key_id, public_key, signature FROM signed "
                               "WHERE name = ?",
                               -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
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
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -EIO;
}

/* The stored record at the head's seq has the head's hash. */
static bool head_covers(sqlite3 *db, const SignedRow *head)
{
        sqlite3_stmt *st = NULL;
        bool same = false;

        if (sqlite3_prepare_v2(db, "SELECT hash FROM records WHERE seq = ?", -1, &st, NULL) ==
            SQLITE_OK) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64) head->seq);
                same = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) &&
                       strcmp((const char *) sqlite3_column_text(st, 0), head->hash) == 0;
        }
        sqlite3_finalize(st);
        return same;
}

/* A file that SQLite itself finds damaged shows what looks like tampering (rows out of order,
 * a head from another moment than the records): a tampering verdict on one is turned into
 * DAMAGED, which says both. Pages that do not hold together are no proof the log is intact
 * either, so it is no pass: the records cannot be checked. */
static void check_damage(sqlite3 *db, GrantlogReport *ret)
{
        sqlite3_stmt *st = NULL;
        /* sized so that the message below fits ret->why whole */
        char damage[96] = "", why[sizeof(ret->why)];
        int rc;

        if (ret->verdict != GRANTLOG_TAMPERED)
                return;
        /* the B-trees and their pages, not every index entry: one pass over the file */
        if (sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL) != SQLITE_OK) {
                if (read_failure_kind(db) == GRANTLOG_DAMAGED)
                        snprintf(damage, sizeof(damage), "%s", sqlite3_errmsg(db));
        } else {
                const char *found = NULL;

                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW)
                        found = (const char *) sqlite3_column_text(st, 0);
                if (found && strcmp(found, "ok") != 0) {
                        /* "*** in database main ***\n" first: no news */
                        if (strncmp(found, "*** ", 4) == 0 && strchr(found, '\n'))
                                found = strchr(found, '\n') + 1;
                        snprintf(damage, sizeof(damage), "%s", found);
                } else if (rc != SQLITE_ROW && read_failure_kind(db) == GRANTLOG_DAMAGED)
                        snprintf(damage, sizeof(damage), "%s", sqlite3_errmsg(db));
        }
        sqlite3_finalize(st);
        if (!damage[0])
                return;
        memcpy(why, ret->why, sizeof(why));
        ret->verdict = GRANTLOG_DAMAGED;
        snprintf(ret->why, sizeof(ret->why),
                 "the database file is damaged (SQLite's check: %s), so what verify saw at seq "
                 "%llu (%.100s) says nothing about the records" DAMAGED_HINT,
                 damage, (unsigned long long) ret->problem_seq, why);
}

void grantlog_verify_database(const char *path, const GrantlogVerifyOptions *o, GrantlogReport *ret)
{
        Verifier v = {.trust = &o->trust};
        Chunk chunks[GRANTLOG_THREADS_MAX] = {};
        SignedRow head, anchor;
        int64_t lo = 0, hi = 0;
        size_t n_threads;
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        char err[512];
        int r;

        *ret = (GrantlogReport){};
        r = grantlog_db_open_readonly(path, &db, err, sizeof(err));
        if (r < 0) {
                report_problem(ret,
                               r == -EMEDIUMTYPE || r == -EPROTO ? GRANTLOG_NOT_A_LOG
                                                                 : GRANTLOG_UNREADABLE,
                               0, err);
                return;
        }
        /* The range, the head and the anchor from one snapshot: the running daemon moves the
         * head with every commit and the anchor with every prune. */
        if (grantlog_reader_snapshot(db) < 0 ||
            sqlite3_prepare_v2(db, "SELECT MIN(seq), MAX(seq) FROM records", -1, &st, NULL) !=
                SQLITE_OK ||
            sqlite3_step(st) != SQLITE_ROW) {
                Problem p = {};
                read_failed(&p, 0, db);
                report_problem(ret, p.kind, 0, p.why);
                sqlite3_finalize(st);
                sqlite3_close(db);
                return;
        }
        lo = sqlite3_column_int64(st, 0);
        hi = sqlite3_column_int64(st, 1);
        sqlite3_finalize(st);
        r = read_signed(db, "head", &head);
        if (r >= 0)
                r = read_signed(db, "anchor", &anchor);
        if (r < 0) {
                Problem p = {};
                read_failed(&p, 0, db);
                report_problem(ret, p.kind, 0, p.why);
                sqlite3_close(db);
                return;
        }

        if (lo < 1 && hi >= 1) {
                /* Rows numbered below the first record are no record the chain has: inserted.
                 * Reported before the chunks are cut, at the same place whatever their number. */
                char why[160];
                snprintf(why, sizeof(why),
                         "a row numbered %lld lies before the first record (rows inserted)",
                         (long long) lo);
                report_problem(ret, GRANTLOG_TAMPERED, 0, why);
                sqlite3_close(db);
                return;
        }
        if (hi < lo || hi < 1) {
                if (head.present)
                        report_problem(ret, GRANTLOG_TAMPERED, head.seq,
                                       "truncated: no records, but a signed head");
                else
                        /* A broker's log is never empty: its first commit holds the audit_key
                         * record. */
                        report_problem(ret, GRANTLOG_TAMPERED, 1,
                                       "no records and no signed head: not a log a broker "
                                       "wrote, or every row was deleted");
                check_damage(db, ret);
                sqlite3_close(db);
                return;
        }

        /* The anchor's key proves the start of a pruned log; it may be the only record of
         * that key left, and counts as the first key the log names. */
        if (anchor.present)
                key_add(&v, (uint64_t) lo, anchor.kid, anchor.pub);

        n_threads =
            grantlog_thread_count(o->threads, (uint64_t) (hi - lo + 1), PARALLEL_RECORDS_MIN);
        n_threads = MIN(n_threads, (size_t) (hi - lo + 1));
        for (size_t i = 0; i < n_threads; i++) {
                int64_t span = (hi - lo + 1) / (int64_t) n_threads;
                chunks[i] =
                    (Chunk){.path = path,
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
                        tampered(&v.problem, (uint64_t) lo,
                                 "the log does not start where its pruning anchor says (seq "
                                 "%llu): records deleted from the start",
                                 (unsigned long long) (anchor.seq + 1));
                else if (!statement_valid("anchor", anchor.seq, anchor.hash, anchor.time,
                                          anchor.kid, anchor.sig, key_public(&v, anchor.kid)))
                        tampered(&v.problem, (uint64_t) lo,
                                 "the pruning anchor's signature is invalid (forged anchor)");
        } else if (lo != 1 || strcmp(chunks[0].first_prev, GRANTLOG_GENESIS) != 0)
                tampered(&v.problem, (uint64_t) lo,
                         "the log does not start at seq 1 and has no pruning anchor: records "
                         "deleted from the start");
        for (size_t i = 1; i < n_threads; i++)
                if (chunks[i].n > 0 && chunks[i - 1].n > 0 &&
                    strcmp(chunks[i].first_prev, chunks[i - 1].last_hash) != 0)
                        tampered(&v.problem, chunks[i].first_seq,
                                 "does not link to seq %llu (records reordered, replaced or "
                                 "rewritten)",
                                 (unsigned long long) (chunks[i].first_seq - 1));
        check_specials(&v, chunks, n_threads);

        /* The head signs the last record: a tail cut after the last checkpoint shows here. */
        uint64_t last = chunks[n_threads - 1].last_seq;
        const char *last_hash = chunks[n_threads - 1].last_hash;
        if (!v.problem.set) {
                const char *pub = key_public(&v, head.kid);
                if (!head.present)
                        tampered(&v.problem, last, "the log has no signed head");
                else if (head.seq > last)
                        tampered(&v.problem, last + 1,
                                 "truncated: the log ends at seq %llu but its signed head is at "
                                 "seq %llu (records after the last checkpoint removed)",
                                 (unsigned long long) last, (unsigned long long) head.seq);
                else if (head.seq < last && head_covers(db, &head))
                        tampered(&v.problem, head.seq + 1,
                                 "records appended after the signed head (seq %llu): no "
                                 "signature covers them",
                                 (unsigned long long) head.seq);
                else if (head.seq != last || strcmp(head.hash, last_hash) != 0)
                        tampered(&v.problem, head.seq,
                                 "the signed head does not match the last record (records "
                                 "appended or rewritten)");
                else if (!pub)
                        problem_at(&v.problem, head.seq, GRANTLOG_KEY_MISMATCH,
                                   "the signed head is signed by audit key %s, which the log "
                                   "does not name as a key it trusts",
                                   head.kid);
                else if (strcmp(pub, head.pub) != 0)
                        tampered(&v.problem, head.seq,
                                 "the signed head names audit key %s with a public key that is "
                                 "not the one the log names for it (edited head)",
                                 head.kid);
                else if (!statement_valid("head", head.seq, head.hash, head.time, head.kid,
                                          head.sig, pub))
                        tampered(&v.problem, head.seq,
                                 "the signed head's signature is invalid (forged head)");
        }

        report_from(&v, ret);
        ret->first_seq = (uint64_t) lo;
        ret->last_seq = (uint64_t) hi;
        ret->from_anchor = anchor.present;
        check_damage(db, ret);
        sqlite3_close(db);
}

/* ---- an exported file ------------------------------------------------------------------ */

/* A line that is no exported record at all. As the input's first line, it is not an export
 * of the log (random bytes, a CSV or OCSF export) rather than one with its first record
 * edited: said so, as the database side says "not an audit database". */
static void not_a_record(Chunk *c, uint64_t expect, size_t lineno, const char *what)
{
        if (lineno == 1 && (c->in || c->lo == 0))
                problem_at(&c->problem, 0, GRANTLOG_NOT_A_LOG,
                           "%s: not an export of the grant log: line 1 %s (verify reads what "
                           "'brokerctl audit export' writes in its default format, jsonl)",
                           c->path, what);
        else
                tampered(&c->problem, expect, "line %zu %s", lineno, what);
}

/* One line of an export: false stops the chunk. */
static bool file_line(Chunk *c, sqlite3_stmt *st, char *line, size_t len, size_t lineno)
{
        uint64_t expect = c->n ? c->last_seq + 1 : 0;
        char hash[GRANTLOG_HASH_HEX], *stored;
        const char *bprev, *event;
        uint64_t seq;
        bool ok;

        /* The hash covers the line up to a NUL only: what follows one would go unchecked. */
        if (memchr(line, 0, len)) {
                not_a_record(c, expect, lineno, "holds a NUL byte");
                return false;
        }
        if (!grantlog_line_split(line, len, &stored)) {
                not_a_record(c, expect, lineno,
                             "is not an exported record (it must end with its \"hash\")");
                return false;
        }
        sqlite3_bind_text(st, 1, line, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_type(st, 0) != SQLITE_INTEGER ||
            sqlite3_column_int64(st, 0) < 1 || !sqlite3_column_text(st, 1) ||
            !sqlite3_column_text(st, 2)) {
                sqlite3_reset(st);
                not_a_record(c, expect, lineno, "is not a record");
                return false;
        }
        seq = (uint64_t) sqlite3_column_int64(st, 0);
        bprev = (const char *) sqlite3_column_text(st, 1);
        event = (const char *) sqlite3_column_text(st, 2);
        if (c->n == 0 && seq == 1 && strcmp(bprev, GRANTLOG_GENESIS) != 0)
                tampered(&c->problem, seq, "the first record does not start from the genesis hash");
        else if (c->n > 0 && seq != expect)
                tampered(&c->problem, expect,
                         "missing: the next line is seq %llu (records removed, reordered, or "
                         "the export was filtered by event)",
                         (unsigned long long) seq);
        else if (strlen(bprev) != 64)
                tampered(&c->problem, seq, "record has no prev_hash");
        if (c->problem.set) {
                sqlite3_reset(st);
                return false;
        }
        grantlog_hash_hex(line, strlen(line), hash);
        if (strcmp(hash, stored) != 0) {
                sqlite3_reset(st);
                tampered(&c->problem, seq,
                         "record was edited: its content does not match its hash");
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
        int read_errno = 0;

        if (!f) {
                f = owned = fopen(c->path, "re");
                if (!f || fseeko(f, c->lo, SEEK_SET) < 0) {
                        problem_at(&c->problem, 0, GRANTLOG_UNREADABLE, "cannot read %s: %m",
                                   c->path);
                        return NULL;
                }
        }
        /* The same JSON functions read the database's records. */
        if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
                SQLITE_OK ||
            sqlite3_prepare_v2(db, "SELECT ?1 ->> '$.seq', ?1 ->> '$.prev_hash', ?1 ->> '$.event'",
                               -1, &st, NULL) != SQLITE_OK) {
                problem_at(&c->problem, 0, GRANTLOG_UNREADABLE, "cannot start SQLite: %s",
                           db ? sqlite3_errmsg(db) : "out of memory");
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
                errno = 0; /* so that a failing getline() is what errno tells of below */
        }
        read_errno = errno;
        if (!c->problem.set && ferror(f))
                problem_at(&c->problem, c->n ? c->last_seq + 1 : 0, GRANTLOG_UNREADABLE,
                           "reading %s failed: %s", c->path,
                           read_errno ? strerror(read_errno) : "input error");
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

void grantlog_verify_file(const char *path, const GrantlogVerifyOptions *o, GrantlogReport *ret)
{
        Verifier v = {.trust = &o->trust};
        Chunk chunks[GRANTLOG_THREADS_MAX] = {};
        _cleanup_fclose_ FILE *f = NULL;
        size_t n_threads = 1;
        const Chunk *first = NULL, *last = NULL;
        struct stat st;
        char err[512];

        *ret = (GrantlogReport){};
        if (strcmp(path, "-") == 0)
                chunks[0] = (Chunk){.path = "-", .in = stdin};
        else {
                f = fopen(path, "re");
                if (!f || fstat(fileno(f), &st) < 0) {
                        snprintf(err, sizeof(err), "cannot read %s: %m", path);
                        report_problem(ret, GRANTLOG_UNREADABLE, 0, err);
                        return;
                }
                if (S_ISDIR(st.st_mode)) {
                        snprintf(err, sizeof(err), "cannot read %s: %s", path, strerror(EISDIR));
                        report_problem(ret, GRANTLOG_UNREADABLE, 0, err);
                        return;
                }
                if (!S_ISREG(st.st_mode)) /* a pipe: read once, in one piece */
                        chunks[0] = (Chunk){.path = path, .in = f};
                else {
                        n_threads = grantlog_thread_count(o->threads, (uint64_t) st.st_size,
                                                          PARALLEL_BYTES_MIN);
                        n_threads = MIN(n_threads, (size_t) MAX(st.st_size, 1));
                        if (split_file(f, path, st.st_size, chunks, n_threads) < 0) {
                                snprintf(err, sizeof(err), "cannot read %s: %m", path);
                                report_problem(ret, GRANTLOG_UNREADABLE, 0, err);
                                return;
                        }
                }
        }
        run_chunks(chunks, n_threads, file_chunk_main);
        (void) merge_chunks(&v, chunks, n_threads);
        /* How the pieces join. */
        for (size_t i = 0; i < n_threads && !v.problem.set; i++) {
                if (chunks[i].n == 0)
                        continue;
                if (last && chunks[i].first_seq != last->last_seq + 1)
                        tampered(&v.problem, last->last_seq + 1,
                                 "missing: the next line is seq %llu (records removed, "
                                 "reordered, or the export was filtered by event)",
                                 (unsigned long long) chunks[i].first_seq);
                else if (last && strcmp(chunks[i].first_prev, last->last_hash) != 0)
                        tampered(&v.problem, chunks[i].first_seq,
                                 "does not link to seq %llu (records reordered, replaced or "
                                 "rewritten)",
                                 (unsigned long long) (chunks[i].first_seq - 1));
                first = first ?: &chunks[i];
                last = &chunks[i];
        }
        if (v.problem.set && n_threads > 1) {
                /* Where a chunk starts, the line number and the seq expected there are not
                 * known, nor, where two chunks do not join, how far one piece would have read:
                 * the slow path reads it again in one piece for the exact report. */
                GrantlogVerifyOptions one = *o;
                free_chunks(chunks, n_threads);
                one.threads = 1;
                grantlog_verify_file(path, &one, ret);
                return;
        }
        check_specials(&v, chunks, n_threads);
        report_from(&v, ret);
        if (ret->verdict == GRANTLOG_INTACT && v.n_records == 0)
                report_problem(ret, GRANTLOG_EMPTY, 0, "the file holds no records");
        if (first) {
                ret->first_seq = first->first_seq;
                ret->last_seq = last->last_seq;
        }
}

/* ---- brokerd's own checks ------------------------------------------------------------------ */

static const char *key_for(const GrantlogKey *keys, size_t n, const char *kid)
{
        for (size_t i = 0; kid && i < n; i++)
                if (strcmp(keys[i].kid, kid) == 0)
                        return keys[i].pub;
        return NULL;
}

int grantlog_verify_head(sqlite3 *db, const GrantlogKey *keys, size_t n_keys, uint64_t last_seq,
                         const char *last_hash, char *why, size_t whylen)
{
        SignedRow head;
        const char *pub;

        if (read_signed(db, "head", &head) < 0) {
                snprintf(why, whylen, "cannot read the signed head: %s", sqlite3_errmsg(db));
                return -EIO;
        }
        if (!head.present && last_seq == 0)
                return 0; /* a new log */
        if (!head.present || head.seq != last_seq || strcmp(head.hash, last_hash) != 0) {
                snprintf(why, whylen, "it ends at seq %llu but its signed head is at seq %llu",
                         (unsigned long long) last_seq, (unsigned long long) head.seq);
                return -EBADMSG;
        }
        pub = key_for(keys, n_keys, head.kid);
        if (!pub) {
                snprintf(why, whylen,
                         "its signed head does not verify with an audit key this broker holds "
                         "(it is by audit key %s)",
                         head.kid);
                return -ENOKEY;
        }
        if (strcmp(pub, head.pub) != 0 ||
            !statement_valid("head", head.seq, head.hash, head.time, head.kid, head.sig, pub)) {
                snprintf(why, whylen,
                         "its signed head does not verify with an audit key the log names and "
                         "this broker trusts");
                return -EBADMSG;
        }
        return 0;
}

int grantlog_verify_start(sqlite3 *db, const GrantlogKey *keys, size_t n_keys,
                          char start_hash[GRANTLOG_HASH_HEX], char *why, size_t whylen)
{
        sqlite3_stmt *st = NULL;
        SignedRow anchor;
        int64_t first = 0;
        char prev[GRANTLOG_HASH_HEX] = "";
        const char *pub;
        int rc;

        if (read_signed(db, "anchor", &anchor) < 0 ||
            sqlite3_prepare_v2(db,
                               "SELECT seq, body ->> '$.prev_hash' FROM records ORDER BY seq "
                               "LIMIT 1",
                               -1, &st, NULL) != SQLITE_OK) {
                snprintf(why, whylen, "cannot read the log's start: %s", sqlite3_errmsg(db));
                return -EIO;
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                first = sqlite3_column_int64(st, 0);
                snprintf(prev, sizeof(prev), "%s",
                         sqlite3_column_text(st, 1) ?: (const unsigned char *) "");
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
                snprintf(why, whylen, "cannot read the log's start: %s", sqlite3_errmsg(db));
                return -EIO;
        }
        if (!anchor.present) {
                if (rc == SQLITE_ROW && (first != 1 || strcmp(prev, GRANTLOG_GENESIS) != 0)) {
                        snprintf(why, whylen,
                                 "the log starts at seq %lld without a pruning anchor: records "
                                 "deleted from the start",
                                 (long long) first);
                        return -EBADMSG;
                }
                memcpy(start_hash, GRANTLOG_GENESIS, GRANTLOG_HASH_HEX);
                return 0;
        }
        pub = key_for(keys, n_keys, anchor.kid);
        if (!pub) {
                snprintf(why, whylen,
                         "its pruning anchor does not verify with an audit key this broker holds "
                         "(it is by audit key %s)",
                         anchor.kid);
                return -ENOKEY;
        }
        if (strcmp(pub, anchor.pub) != 0 ||
            !statement_valid("anchor", anchor.seq, anchor.hash, anchor.time, anchor.kid, anchor.sig,
                             pub)) {
                snprintf(why, whylen, "its pruning anchor's signature is invalid (forged anchor)");
                return -EBADMSG;
        }
        if (rc == SQLITE_ROW &&
            ((uint64_t) first != anchor.seq + 1 || strcmp(prev, anchor.hash) != 0)) {
                snprintf(why, whylen,
                         "the log does not start where its pruning anchor says (seq %llu): "
                         "records deleted from the start",
                         (unsigned long long) (anchor.seq + 1));
                return -EBADMSG;
        }
        memcpy(start_hash, anchor.hash, GRANTLOG_HASH_HEX);
        return 0;
}

int grantlog_verify_stretch(sqlite3 *db, const GrantlogKey *keys, size_t n_keys, uint64_t first,
                            uint64_t upto, const char *start_hash, uint64_t committed_seq,
                            const char *committed_hash, char *why, size_t whylen)
{
        sqlite3_stmt *st = NULL;
        char prev[GRANTLOG_HASH_HEX], hash[GRANTLOG_HASH_HEX];
        uint64_t expect = first;
        bool covered = false;
        Problem p = {};
        int rc;

        memcpy(prev, start_hash, GRANTLOG_HASH_HEX);
        if (sqlite3_prepare_v2(db, ROW_SQL, -1, &st, NULL) != SQLITE_OK) {
                snprintf(why, whylen, "cannot read records: %s", sqlite3_errmsg(db));
                return -EIO;
        }
        sqlite3_bind_int64(st, 1, (sqlite3_int64) first);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *bprev = (const char *) sqlite3_column_text(st, 6);
                const char *event = (const char *) sqlite3_column_text(st, 1);

                if (!row_check(st, expect, hash, &p))
                        break;
                if (strcmp(bprev, prev) != 0) {
                        tampered(&p, expect, "does not link to seq %llu",
                                 (unsigned long long) (expect - 1));
                        break;
                }
                if (expect > upto && strcmp(event, "checkpoint") == 0) {
                        _cleanup_(json_decrefp) json_t *rec =
                            json_loads((const char *) sqlite3_column_text(st, 3),
                                       JSON_REJECT_DUPLICATES, NULL);
                        json_t *cp = json_object_get(rec, "checkpoint");
                        const char *kid = json_string_value(json_object_get(cp, "key_id"));
                        const char *chash = json_string_value(json_object_get(cp, "hash"));
                        const char *pub = key_for(keys, n_keys, kid);

                        if (kid && !pub) {
                                sqlite3_finalize(st);
                                snprintf(why, whylen,
                                         "the checkpoint at seq %llu does not verify with an "
                                         "audit key this broker holds (it is by audit key %s)",
                                         (unsigned long long) expect, kid);
                                return -ENOKEY;
                        }
                        covered = json_integer_value(json_object_get(cp, "seq")) ==
                                      (json_int_t) (expect - 1) &&
                                  chash && strcmp(chash, prev) == 0 &&
                                  statement_valid(
                                      "checkpoint", expect - 1, chash,
                                      json_string_value(json_object_get(cp, "time")), kid,
                                      json_string_value(json_object_get(cp, "signature")), pub);
                        if (!covered)
                                tampered(&p, expect, "checkpoint signature is invalid");
                        break;
                }
                memcpy(prev, hash, GRANTLOG_HASH_HEX);
                expect++;
        }
        sqlite3_finalize(st);
        if (!p.set && rc != SQLITE_ROW && rc != SQLITE_DONE) {
                /* a read failed: not a verdict on the records */
                snprintf(why, whylen, "cannot read records: %s", sqlite3_errmsg(db));
                return -EIO;
        }
        /* no checkpoint yet after the stretch: the chain must reach what the writer committed */
        if (!p.set && !covered && rc == SQLITE_DONE && expect == committed_seq + 1)
                covered = strcmp(prev, committed_hash) == 0;
        if (!covered) {
                snprintf(why, whylen, "%s",
                         p.set ? p.why : "no signature by a trusted audit key covers them");
                return -EBADMSG;
        }
        return 0;
}
