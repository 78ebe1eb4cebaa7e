/* The one verifier (common/grantlog/verify.c) against whoever can write the grant log but cannot
 * read its audit key. Every test starts from a copy of one intact log that the writer made,
 * shows that the copy verifies, breaks one thing through an SQLite connection of its own
 * (exactly what such an attacker can do: edit, delete, insert, reorder rows, recompute every
 * hash, sign with a key of their own) and checks the report: the verdict, the exact seq and a
 * reason an auditor recognises. Every report is made with one thread and with four, and the two
 * must agree (with four, the chunks of a database start at seq 1, 72, 143 and 214).
 *
 * Then the same for an export (grantlog_export(), grantlog_verify_file()), the trust policy and
 * the daemon's own checks (grantlog_verify_head(), grantlog_verify_stretch(), the writer's open
 * and prune), and the parallel path on a log large enough to be split by default. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>

#include "grantlog/export.h"
#include "grantlog/format.h"
#include "grantlog/verify.h"
#include "grantlog/writer.h"
#include "jwk.h"
#include "keys/signer.h"
#include "macro.h"
#include "timeutil.h"
#define TESTUTIL_GRANTLOG
#include "testutil.h"

#define DAY_MS  (INT64_C(86400) * 1000)
#define YEAR_MS (365 * DAY_MS)

/* The intact log: seq 1 audit_key, then 280 grant/deny records, a checkpoint after every 50
 * records (at seq 51, 102, 153, 204, 255), 31 records after the last one. Seq 2..123 were
 * written three days before the rest (so that a retention of a day prunes them). */
#define EVERY    50
#define LAST     286
#define LAST_CP  255
#define N_CP     5
#define OLD_LAST 123

static char dir[64], base_path[128], path[128], export_path[128];
static SigningKey *key;     /* the broker's audit key */
static SigningKey *mallory; /* the attacker's own key */
static Bytes base;          /* the intact log's file */
static int64_t t0;          /* when its old records were written */
static GrantlogFaults faults;

/* ---- the intact log ------------------------------------------------------------------------ */

/* n records written at t, as the broker writes decisions: every 7th a denial. */
static void append_decisions(GrantlogWriter *l, size_t n, int64_t t)
{
        GrantlogEntry e[16];
        char ts[TIME_RFC3339_MAX];

        assert_true(n <= ELEMENTSOF(e));
        time_format_rfc3339_ms(t, ts);
        for (size_t i = 0; i < n; i++) {
                bool deny = (t + (int64_t) i) % 7 == 0;
                json_t *rec =
                    json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:i, s:i, s:I, s:s}, s:I}", "time", ts,
                              "event", deny ? "deny" : "grant", "rule", "web", "subject",
                              "spiffe://example.org/unit/web.service", "audience",
                              "https://api.example.com", "peer", "uid", 33, "gid", 33, "pid",
                              (json_int_t) (1000 + i), "unit", "web.service", "n", (json_int_t) i);

                assert_non_null(rec);
                if (deny)
                        assert_int_equal(
                            json_object_set_new(rec, "reason", json_string("audience not allowed")),
                            0);
                assert_int_equal(grantlog_entry_prepare(rec, t, &e[i]), 0);
                json_decref(rec);
        }
        assert_int_equal(grantlog_writer_append(l, e, n, false, t), 0);
        for (size_t i = 0; i < n; i++)
                grantlog_entry_done(&e[i]);
}

static int group_setup(void **state)
{
        GrantlogOptions opt = options(EVERY, YEAR_MS, 0);
        GrantlogWriter *l = NULL;

        if (tmpdir_make(dir, sizeof(dir), "verify") < 0)
                return -1;
        snprintf(base_path, sizeof(base_path), "%s/base.db", dir);
        snprintf(path, sizeof(path), "%s/audit.db", dir);
        snprintf(export_path, sizeof(export_path), "%s/export.jsonl", dir);
        if (signing_key_generate(ALG_EDDSA, 0, &key) < 0 ||
            signing_key_generate(ALG_EDDSA, 0, &mallory) < 0)
                return -1;
        t0 = now_unix_ms() + 1000;
        capture_begin(); /* "created a new audit log" */
        int r = grantlog_writer_open(base_path, true, &opt, signer(key), &faults, &l);
        free(capture_end());
        if (r < 0)
                return -1;
        for (int i = 0; i < 12; i++)
                append_decisions(l, 10, t0 + i);
        for (int i = 0; i < 16; i++)
                append_decisions(l, 10, t0 + 3 * DAY_MS + i);
        grantlog_writer_close(l); /* the last connection: the WAL is folded into the file */
        base = slurp(base_path);
        return 0;
}

static int group_teardown(void **state)
{
        bytes_free(&base);
        signing_key_unref(key);
        signing_key_unref(mallory);
        return tmpdir_remove(dir);
}

static void remove_log(const char *p)
{
        char side[160];

        unlink(p);
        snprintf(side, sizeof(side), "%s-wal", p);
        unlink(side);
        snprintf(side, sizeof(side), "%s-shm", p);
        unlink(side);
}

/* A log's file at `path`, nothing left beside it from the one before. */
static void copy_in(Bytes b)
{
        remove_log(path);
        spit(path, b);
}

/* Each test gets its own copy of the intact log at `path`. */
static int setup(void **state)
{
        unlink(export_path);
        copy_in(base);
        return 0;
}

static int teardown(void **state)
{
        remove_log(path);
        unlink(export_path);
        return 0;
}

/* ---- running the verifier ------------------------------------------------------------------ */

typedef struct Pins {
        size_t n;
        const char *v[4];
} Pins;

#define PINS(...)                                                                                  \
        ((Pins){.n = sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *),                 \
                .v = {__VA_ARGS__}})
#define NO_PINS ((Pins){.n = 0})

static const char *verdict_name(GrantlogVerdict v)
{
        static const char *const names[] = {"INTACT",       "UNREADABLE", "NOT_A_LOG", "TAMPERED",
                                            "KEY_MISMATCH", "EMPTY",      "DAMAGED"};
        return (size_t) v < ELEMENTSOF(names) ? names[v] : "?";
}

/* brokerctl's policy: the pins the auditor passes, the first named key only without any. */
static GrantlogReport run_verify(bool file, const char *p, Pins pins, unsigned threads)
{
        GrantlogVerifyOptions o = {
            .trust = {.pins = pins.v, .n_pins = pins.n, .first_named = pins.n == 0},
            .threads = threads,
        };
        GrantlogReport r;

        memset(&r, 0xa5, sizeof(r)); /* whatever was there before is overwritten */
        if (file)
                grantlog_verify_file(p, &o, &r);
        else
                grantlog_verify_database(p, &o, &r);
        return r;
}

/* For a problem whose seq is not one the log could hold (a row at a negative seq). */
#define ANY_SEQ UINT64_MAX

static void assert_report(const GrantlogReport *r, GrantlogVerdict verdict, uint64_t seq,
                          const char *why, unsigned threads)
{
        if (r->verdict != verdict ||
            (verdict != GRANTLOG_INTACT && seq != ANY_SEQ && r->problem_seq != seq) ||
            (why && !strstr(r->why, why)))
                fail_msg("with %u thread(s): %s at seq %llu (%s)\n  wanted %s at seq %llu with "
                         "\"%s\"",
                         threads, verdict_name(r->verdict), (unsigned long long) r->problem_seq,
                         r->why, verdict_name(verdict), (unsigned long long) seq, why ?: "");
}

/* Two reports of one input agree: the same verdict at the same seq for the same reason, and,
 * for an intact input, the same account of it. (Of a broken one, how many records the threads
 * read before they stopped may differ.) */
static void assert_same_report(const GrantlogReport *a, const GrantlogReport *b)
{
        assert_string_equal(verdict_name(a->verdict), verdict_name(b->verdict));
        assert_int_equal(a->problem_seq, b->problem_seq);
        assert_string_equal(a->why, b->why);
        assert_int_equal(a->first_seq, b->first_seq);
        assert_int_equal(a->last_seq, b->last_seq);
        assert_int_equal(a->from_anchor, b->from_anchor);
        if (a->verdict != GRANTLOG_INTACT)
                return;
        assert_int_equal(a->n_records, b->n_records);
        assert_int_equal(a->n_checkpoints, b->n_checkpoints);
        assert_int_equal(a->last_checkpoint_seq, b->last_checkpoint_seq);
        assert_int_equal(a->n_keys, b->n_keys);
        for (size_t i = 0; i < a->n_keys; i++) {
                assert_string_equal(a->keys[i].kid, b->keys[i].kid);
                assert_string_equal(a->keys[i].pub, b->keys[i].pub);
        }
}

/* Verifies with one thread and with four: both say `verdict` at `seq` (any seq for INTACT), with
 * `why` (unless NULL) in the reason. */
static GrantlogReport expect_verdict(bool file, const char *p, Pins pins, GrantlogVerdict verdict,
                                     uint64_t seq, const char *why)
{
        GrantlogReport one = run_verify(file, p, pins, 1), four = run_verify(file, p, pins, 4);

        assert_report(&one, verdict, seq, why, 1);
        assert_report(&four, verdict, seq, why, 4);
        assert_same_report(&one, &four);
        return one;
}

static GrantlogReport expect_db(Pins pins, GrantlogVerdict verdict, uint64_t seq, const char *why)
{
        return expect_verdict(false, path, pins, verdict, seq, why);
}

static GrantlogReport expect_file(Pins pins, GrantlogVerdict verdict, uint64_t seq, const char *why)
{
        return expect_verdict(true, export_path, pins, verdict, seq, why);
}

/* The copy at `path` is the intact log, every record accounted for. */
static void assert_intact(void)
{
        GrantlogReport r = expect_db(NO_PINS, GRANTLOG_INTACT, 0, NULL);

        assert_int_equal(r.n_records, LAST);
        assert_int_equal(r.first_seq, 1);
        assert_int_equal(r.last_seq, LAST);
        assert_int_equal(r.n_checkpoints, N_CP);
        assert_int_equal(r.last_checkpoint_seq, LAST_CP);
        assert_false(r.from_anchor);
        assert_int_equal(r.n_keys, 1);
        assert_string_equal(r.keys[0].kid, key->kid);
        assert_string_equal(r.keys[0].pub, public_key(key));
        assert_string_equal(r.why, "");
}

/* ---- the attacker's tools: SQL on the file, hashes anyone can compute, their own key ------- */

/* The canonical form (RFC 8785: members sorted, compact) and its hash. */
static char *canonical(json_t *body, char hash[GRANTLOG_HASH_HEX])
{
        char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);

        assert_non_null(text);
        grantlog_hash_hex(text, strlen(text), hash);
        return text;
}

static json_t *row_body(sqlite3 *db, int64_t seq)
{
        sqlite3_stmt *st = NULL;
        json_t *body;

        assert_int_equal(
            sqlite3_prepare_v2(db, "SELECT body FROM records WHERE seq = ?", -1, &st, NULL),
            SQLITE_OK);
        sqlite3_bind_int64(st, 1, seq);
        if (sqlite3_step(st) != SQLITE_ROW)
                fail_msg("no record with seq %lld", (long long) seq);
        body = json_loads((const char *) sqlite3_column_text(st, 0), JSON_REJECT_DUPLICATES, NULL);
        sqlite3_finalize(st);
        assert_non_null(body);
        return body;
}

static void row_hash(sqlite3 *db, int64_t seq, char hash[GRANTLOG_HASH_HEX])
{
        sqlite3_stmt *st = NULL;

        assert_int_equal(
            sqlite3_prepare_v2(db, "SELECT hash FROM records WHERE seq = ?", -1, &st, NULL),
            SQLITE_OK);
        sqlite3_bind_int64(st, 1, seq);
        if (sqlite3_step(st) != SQLITE_ROW)
                fail_msg("no record with seq %lld", (long long) seq);
        snprintf(hash, GRANTLOG_HASH_HEX, "%s", sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
}

/* Writes `body` as the row `seq` (its columns as the writer would fill them from it). */
static void row_put(sqlite3 *db, int64_t seq, json_t *body)
{
        char hash[GRANTLOG_HASH_HEX];
        _cleanup_free_ char *text = canonical(body, hash);
        const char *event = json_string_value(json_object_get(body, "event"));
        sqlite3_stmt *st = NULL;
        int64_t ms;

        assert_non_null(event);
        assert_int_equal(time_parse_rfc3339(json_string_value(json_object_get(body, "time")), &ms),
                         0);
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "INSERT OR REPLACE INTO records (seq, time_ms, event, "
                                            "body, hash) VALUES (?,?,?,?,?)",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(st, 1, seq);
        sqlite3_bind_int64(st, 2, ms);
        sqlite3_bind_text(st, 3, event, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, text, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, hash, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_finalize(st);
}

/* Rebuilds a stretch of the chain as the attacker can: record i gets seq first + i and the
 * previous record's hash as its prev_hash; a checkpoint is pointed at the record before it and,
 * with `resign`, signed by that key (else it keeps its old signature, which no longer holds
 * over what it now signs). Returns the last hash. */
static void relink(json_t **bodies, size_t n, uint64_t first, const char *prev_hash,
                   SigningKey *resign, char last_hash[GRANTLOG_HASH_HEX])
{
        char prev[GRANTLOG_HASH_HEX];

        snprintf(prev, sizeof(prev), "%s", prev_hash);
        for (size_t i = 0; i < n; i++) {
                uint64_t seq = first + i;
                json_t *cp = json_object_get(bodies[i], "checkpoint");

                assert_int_equal(
                    json_object_set_new(bodies[i], "seq", json_integer((json_int_t) seq)), 0);
                assert_int_equal(json_object_set_new(bodies[i], "prev_hash", json_string(prev)), 0);
                if (cp) {
                        json_object_set_new(cp, "seq", json_integer((json_int_t) (seq - 1)));
                        json_object_set_new(cp, "hash", json_string(prev));
                }
                if (cp && resign) {
                        char sig[GRANTLOG_SIG_B64];
                        _cleanup_free_ char *st = grantlog_statement(
                            "checkpoint", seq - 1, prev,
                            json_string_value(json_object_get(cp, "time")), resign->kid);
                        assert_non_null(st);
                        sign_b64(resign, st, sig);
                        json_object_set_new(cp, "key_id", json_string(resign->kid));
                        json_object_set_new(cp, "signature", json_string(sig));
                }
                free(canonical(bodies[i], prev));
        }
        snprintf(last_hash, GRANTLOG_HASH_HEX, "%s", prev);
}

/* The records from seq `from` on, parsed. */
typedef struct Tail {
        json_t *b[LAST + 64];
        size_t n;
} Tail;

static Tail tail_take(sqlite3 *db, int64_t from)
{
        Tail t = {};
        sqlite3_stmt *st = NULL;

        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT body FROM records WHERE seq >= ? ORDER BY seq",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(st, 1, from);
        while (sqlite3_step(st) == SQLITE_ROW) {
                assert_true(t.n < ELEMENTSOF(t.b));
                t.b[t.n] = json_loads((const char *) sqlite3_column_text(st, 0), 0, NULL);
                assert_non_null(t.b[t.n]);
                t.n++;
        }
        sqlite3_finalize(st);
        return t;
}

static void tail_insert(Tail *t, size_t at, json_t *body)
{
        assert_true(t->n < ELEMENTSOF(t->b) && at <= t->n);
        memmove(&t->b[at + 1], &t->b[at], (t->n - at) * sizeof(json_t *));
        t->b[at] = body;
        t->n++;
}

static void tail_remove(Tail *t, size_t at)
{
        assert_true(at < t->n);
        json_decref(t->b[at]);
        memmove(&t->b[at], &t->b[at + 1], (t->n - at - 1) * sizeof(json_t *));
        t->n--;
}

/* Replaces every record from `from` on by the tail, relinked from the record before `from`. */
static void tail_put(sqlite3 *db, int64_t from, Tail *t, SigningKey *resign)
{
        char prev[GRANTLOG_HASH_HEX], last[GRANTLOG_HASH_HEX];

        if (from == 1)
                snprintf(prev, sizeof(prev), "%s", GRANTLOG_GENESIS);
        else
                row_hash(db, from - 1, prev);
        relink(t->b, t->n, (uint64_t) from, prev, resign, last);
        assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
        char *sql = sqlite3_mprintf("DELETE FROM records WHERE seq >= %lld", (long long) from);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_free(sql);
        for (size_t i = 0; i < t->n; i++) {
                row_put(db, from + (int64_t) i, t->b[i]);
                json_decref(t->b[i]);
        }
        assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        t->n = 0;
}

/* The chain from `from` on recomputed, every hash and link (an edit at `from` made to hold
 * together); checkpoints re-signed only with `resign`. */
static void rebuild_from(int64_t from, SigningKey *resign)
{
        sqlite3 *db = sql_open(path);
        Tail t = tail_take(db, from);

        tail_put(db, from, &t, resign);
        sqlite3_close(db);
}

/* Replaces the first `from` in record seq's body with `to` (the stored hash stays). */
static void edit_body(int64_t seq, const char *from, const char *to)
{
        int64_t changed = sql_int(path,
                                  "SELECT COUNT(*) FROM records WHERE seq = %lld AND "
                                  "instr(body, %Q) > 0",
                                  (long long) seq, from);

        assert_int_equal(changed, 1);
        sql_exec(path, "UPDATE records SET body = replace(body, %Q, %Q) WHERE seq = %lld", from, to,
                 (long long) seq);
}

/* Stores the hash of record seq's body as it now is: an edit no longer shows in the record. */
static void fix_hash(int64_t seq)
{
        sqlite3 *db = sql_open(path);
        json_t *body = row_body(db, seq);

        row_put(db, seq, body); /* the body was canonical: it is written back byte for byte */
        json_decref(body);
        sqlite3_close(db);
}

/* Sets a member of record seq's body and stores the record with its hash recomputed: the record
 * holds together, its place in the chain does not. Takes value. */
static void row_edit(int64_t seq, const char *member, json_t *value)
{
        sqlite3 *db = sql_open(path);
        json_t *body = row_body(db, seq);

        assert_int_equal(json_object_set_new(body, member, value), 0);
        row_put(db, seq, body);
        json_decref(body);
        sqlite3_close(db);
}

/* An audit_key record naming k, as the writer writes one. */
static json_t *audit_key_record(SigningKey *k, const char *key_id, int64_t time_ms)
{
        char ts[TIME_RFC3339_MAX];
        json_t *rec;

        time_format_rfc3339_ms(time_ms, ts);
        rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "event", "audit_key", "time", ts,
                        "key_id", key_id, "alg", "EdDSA", "public_key", public_key(k), "seq",
                        (json_int_t) 0, "prev_hash", GRANTLOG_GENESIS);
        assert_non_null(rec);
        return rec;
}

/* The anchor row: the statement (seq, hash) signed by `k` (NULL: another statement's genuine
 * signature, copied from the head), naming key_id/pub. */
static void put_anchor(int64_t seq, const char *hash, const char *key_id, const char *pub,
                       SigningKey *k)
{
        const char *time = "2026-01-01T00:00:00.000Z";
        char sig[GRANTLOG_SIG_B64] = "";

        if (k) {
                _cleanup_free_ char *st =
                    grantlog_statement("anchor", (uint64_t) seq, hash, time, key_id);
                assert_non_null(st);
                sign_b64(k, st, sig);
                sql_exec(path,
                         "INSERT OR REPLACE INTO signed (name, seq, hash, time, key_id, "
                         "public_key, signature) VALUES ('anchor', %lld, %Q, %Q, %Q, %Q, %Q)",
                         (long long) seq, hash, time, key_id, pub, sig);
        } else
                sql_exec(path,
                         "INSERT OR REPLACE INTO signed (name, seq, hash, time, key_id, "
                         "public_key, signature) SELECT 'anchor', %lld, %Q, %Q, %Q, %Q, "
                         "signature FROM signed WHERE name = 'head'",
                         (long long) seq, hash, time, key_id, pub);
}

static void hash_of(int64_t seq, char hash[GRANTLOG_HASH_HEX])
{
        sqlite3 *db = sql_open(path);

        row_hash(db, seq, hash);
        sqlite3_close(db);
}

/* ---- the intact log ------------------------------------------------------------------------ */

static void test_intact_log_verifies(void **state)
{
        GrantlogReport r;

        assert_intact();
        /* with the key pinned, by its public half or by its id (the log names the public half) */
        r = expect_db(PINS(public_key(key)), GRANTLOG_INTACT, 0, NULL);
        assert_int_equal(r.n_records, LAST);
        r = expect_db(PINS(key->kid), GRANTLOG_INTACT, 0, NULL);
        assert_int_equal(r.n_checkpoints, N_CP);
        /* another key pinned, or another key's id: the log's key is not vouched for */
        expect_db(PINS(public_key(mallory)), GRANTLOG_KEY_MISMATCH, 1,
                  "is not one of the keys given with --audit-key");
        expect_db(PINS(mallory->kid), GRANTLOG_KEY_MISMATCH, 1, key->kid);

        /* every thread count tells the same story */
        GrantlogReport one = run_verify(false, path, NO_PINS, 1);
        for (unsigned th = 0; th <= GRANTLOG_THREADS_MAX; th++) {
                GrantlogReport other = run_verify(false, path, NO_PINS, th);
                assert_same_report(&one, &other);
        }
        /* reading is all it does */
        Bytes now = slurp(path);
        assert_int_equal(now.n, base.n);
        assert_memory_equal(now.p, base.p, base.n);
        bytes_free(&now);
}

/* ---- one record changed ------------------------------------------------------------------ */

static void test_edited_record_body(void **state)
{
        assert_intact();
        edit_body(100, "web.service", "db0.service");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 100,
                  "record was edited: its content does not match its hash");
        /* pinned or not, the same */
        expect_db(PINS(public_key(key)), GRANTLOG_TAMPERED, 100, "record was edited");

        /* with its stored hash recomputed, the next record's link shows it */
        fix_hash(100);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 101, "does not link to seq 100");

        /* a checkpoint's own content */
        copy_in(base);
        edit_body(153, "\"checkpoint\":{", "\"checkpoint\":{\"x\":1,");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 153, "record was edited");

        /* the first record, the audit key itself */
        copy_in(base);
        edit_body(1, "\"alg\":\"EdDSA\"", "\"alg\":\"ES256\"");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 1, "record was edited");
}

static void test_edited_columns(void **state)
{
        assert_intact();
        /* time_ms is outside the hash, but windows and retention go by it */
        sql_exec(path, "UPDATE records SET time_ms = time_ms + 86400000 WHERE seq = 77");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 77, "time_ms does not match the record's time");
        copy_in(base);
        sql_exec(path, "UPDATE records SET time_ms = time_ms - 1 WHERE seq = %d", LAST);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST, "time_ms");

        /* the event column of a checkpoint: export --event and the writer go by it */
        copy_in(base);
        sql_exec(path, "UPDATE records SET event = 'grant' WHERE seq = 102");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 102, "seq or event edited");

        /* the stored hash alone */
        copy_in(base);
        sql_exec(path, "UPDATE records SET hash = %Q WHERE seq = 60", GRANTLOG_GENESIS);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 60, "record was edited");
}

/* ---- rows deleted, inserted, reordered ----------------------------------------------------- */

static void test_deleted_row(void **state)
{
        assert_intact();
        sql_exec(path, "DELETE FROM records WHERE seq = 100");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 100, "missing: the next record is seq 101");

        /* a checkpoint */
        copy_in(base);
        sql_exec(path, "DELETE FROM records WHERE seq = 102");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 102, "missing: the next record is seq 103");

        /* several, and the rest renumbered: the chain no longer links */
        copy_in(base);
        sql_exec(path, "DELETE FROM records WHERE seq BETWEEN 100 AND 104");
        sql_exec(path, "UPDATE records SET seq = -seq WHERE seq > 104");
        sql_exec(path, "UPDATE records SET seq = -seq - 5 WHERE seq < 0");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 100, "does not belong in this row");
}

static void test_swapped_rows(void **state)
{
        assert_intact();
        /* the rows' content exchanged, seq kept: each record names its own seq */
        sql_exec(path, "UPDATE records SET seq = -1 WHERE seq = 100");
        sql_exec(path, "UPDATE records SET seq = 100 WHERE seq = 101");
        sql_exec(path, "UPDATE records SET seq = 101 WHERE seq = -1");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 100, "does not belong in this row (rows reordered");

        /* renumbered too (each record's seq edited and its hash recomputed): the links break */
        copy_in(base);
        sqlite3 *db = sql_open(path);
        json_t *a = row_body(db, 100), *b = row_body(db, 101);
        json_object_set_new(a, "seq", json_integer(101));
        json_object_set_new(b, "seq", json_integer(100));
        row_put(db, 100, b);
        row_put(db, 101, a);
        json_decref(a);
        json_decref(b);
        sqlite3_close(db);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 100, "does not link to seq 99");

        /* and relinked all the way: the next checkpoint no longer signs what precedes it */
        copy_in(base);
        db = sql_open(path);
        Tail t = tail_take(db, 100);
        json_t *x = t.b[0];
        t.b[0] = t.b[1];
        t.b[1] = x;
        tail_put(db, 100, &t, NULL);
        sqlite3_close(db);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 102,
                  "checkpoint signature is invalid: a forged checkpoint, or records up to seq "
                  "101 were rewritten");

        /* a checkpoint moved one place up (before the record it signs) */
        copy_in(base);
        sql_exec(path, "UPDATE records SET seq = -1 WHERE seq = 153");
        sql_exec(path, "UPDATE records SET seq = 153 WHERE seq = 152");
        sql_exec(path, "UPDATE records SET seq = 152 WHERE seq = -1");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 152, "does not belong in this row");
}

/* ---- a chain rebuilt: every hash recomputed, no key to sign with ---------------------------- */

static void test_rebuilt_chain(void **state)
{
        sqlite3 *db;
        Tail t;

        assert_intact();
        /* an edit, and every hash and link after it recomputed: caught at the next checkpoint */
        edit_body(100, "web.service", "db0.service");
        rebuild_from(100, NULL);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 102, "checkpoint signature is invalid");
        expect_db(PINS(key->kid), GRANTLOG_TAMPERED, 102, "records up to seq 101 were rewritten");

        /* the same just after a checkpoint: the one after it catches it, 50 records on */
        copy_in(base);
        edit_body(103, "web.service", "db0.service");
        rebuild_from(103, NULL);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 153, "checkpoint signature is invalid");

        /* a record inserted, the rest renumbered and relinked */
        copy_in(base);
        db = sql_open(path);
        t = tail_take(db, 130);
        tail_insert(&t, 0, json_deep_copy(t.b[1]));
        tail_put(db, 130, &t, NULL);
        sqlite3_close(db);
        assert_int_equal(sql_int(path, "SELECT MAX(seq) FROM records"), LAST + 1);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 154, "checkpoint signature is invalid");

        /* a record deleted, the rest renumbered and relinked */
        copy_in(base);
        db = sql_open(path);
        t = tail_take(db, 130);
        tail_remove(&t, 0);
        tail_put(db, 130, &t, NULL);
        sqlite3_close(db);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 152, "checkpoint signature is invalid");

        /* a whole checkpoint deleted and the rest relinked: the one after it */
        copy_in(base);
        db = sql_open(path);
        t = tail_take(db, 153);
        tail_remove(&t, 0);
        tail_put(db, 153, &t, NULL);
        sqlite3_close(db);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 203, "checkpoint signature is invalid");

        /* rebuilt from the first record, under the broker's key id: no checkpoint holds */
        copy_in(base);
        edit_body(2, "web.service", "db0.service");
        rebuild_from(2, NULL);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 51, "checkpoint signature is invalid");
}

/* After the last checkpoint only the head covers the records. */
static void test_tail_rebuilt_after_the_last_checkpoint(void **state)
{
        char hash[GRANTLOG_HASH_HEX];

        assert_intact();
        edit_body(270, "web.service", "db0.service");
        rebuild_from(270, NULL);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST,
                  "the signed head does not match the last record");

        /* the head pointed at the new last record: its signature fails */
        hash_of(LAST, hash);
        sql_exec(path, "UPDATE signed SET hash = %Q WHERE name = 'head'", hash);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST,
                  "the signed head's signature is invalid (forged head)");

        /* signed again by the attacker's own key, which the log never names */
        resign_head(path, mallory);
        expect_db(NO_PINS, GRANTLOG_KEY_MISMATCH, LAST, mallory->kid);
        expect_db(PINS(public_key(key)), GRANTLOG_KEY_MISMATCH, LAST,
                  "which the log does not name as a key it trusts");
        /* the broker's own check says no as well */
        GrantlogOptions opt = options(EVERY, YEAR_MS, 0);
        assert_writer_refuses(path, &opt, key, &faults, -EBADMSG, "truncated or altered");

        /* records appended after the head, linked and hashed as the writer would */
        copy_in(base);
        sqlite3 *db = sql_open(path);
        Tail t = tail_take(db, LAST - 1);
        tail_insert(&t, 2, json_deep_copy(t.b[0]));
        tail_put(db, LAST - 1, &t, NULL);
        sqlite3_close(db);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST + 1,
                  "records appended after the signed head (seq 286)");
}

/* ---- signatures -------------------------------------------------------------------------- */

static void test_forged_checkpoint_signature(void **state)
{
        sqlite3 *db;

        assert_intact();
        /* a genuine signature of the broker's key, over another checkpoint (replayed) */
        db = sql_open(path);
        json_t *donor = row_body(db, 102), *cp = row_body(db, 153);
        json_object_set(json_object_get(cp, "checkpoint"), "signature",
                        json_object_get(json_object_get(donor, "checkpoint"), "signature"));
        row_put(db, 153, cp);
        json_decref(donor);
        json_decref(cp);
        sqlite3_close(db);
        rebuild_from(154, NULL); /* the links after it made to hold */
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 153,
                  "checkpoint signature is invalid: a forged checkpoint");

        /* signed by the attacker's key under the broker's key id */
        copy_in(base);
        db = sql_open(path);
        cp = row_body(db, 153);
        json_t *inner = json_object_get(cp, "checkpoint");
        char sig[GRANTLOG_SIG_B64];
        _cleanup_free_ char *st =
            grantlog_statement("checkpoint", 152, json_string_value(json_object_get(inner, "hash")),
                               json_string_value(json_object_get(inner, "time")), key->kid);
        sign_b64(mallory, st, sig);
        json_object_set_new(inner, "signature", json_string(sig));
        row_put(db, 153, cp);
        json_decref(cp);
        sqlite3_close(db);
        rebuild_from(154, NULL);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 153, "checkpoint signature is invalid");

        /* signed by the attacker's key under its own id, which the log never names */
        copy_in(base);
        db = sql_open(path);
        Tail t = tail_take(db, 153);
        tail_put(db, 153, &t, mallory);
        sqlite3_close(db);
        expect_db(NO_PINS, GRANTLOG_KEY_MISMATCH, 153, "the checkpoint is signed by audit key");
        expect_db(NO_PINS, GRANTLOG_KEY_MISMATCH, 153, "which this log does not name");
        expect_db(PINS(public_key(key)), GRANTLOG_KEY_MISMATCH, 153,
                  "which is not one of the keys given with --audit-key");
        /* an auditor who pins that key vouches for it: then it is the head that gives it away,
         * and once that is re-signed too, the log is what the auditor vouched for */
        expect_db(PINS(public_key(key), public_key(mallory)), GRANTLOG_TAMPERED, LAST,
                  "the signed head does not match the last record");
        resign_head(path, mallory);
        expect_db(PINS(public_key(key), public_key(mallory)), GRANTLOG_INTACT, 0, NULL);
}

/* Whoever can write the log names a key of their own in it and signs everything after that
 * with it: a key switch no key trusted before vouches for. */
static void test_foreign_audit_key(void **state)
{
        sqlite3 *db;
        GrantlogReport r;

        assert_intact();
        db = sql_open(path);
        Tail t = tail_take(db, 151);
        tail_insert(&t, 0, audit_key_record(mallory, mallory->kid, t0 + 10));
        tail_put(db, 151, &t, mallory);
        sqlite3_close(db);
        resign_head(path, mallory);

        expect_db(NO_PINS, GRANTLOG_TAMPERED, 151, "the log switches to audit key");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 151, mallory->kid);
        expect_db(PINS(public_key(key)), GRANTLOG_KEY_MISMATCH, 151,
                  "is not one of the keys given with --audit-key");
        expect_db(PINS(key->kid), GRANTLOG_KEY_MISMATCH, 151, mallory->kid);
        /* an auditor who vouches for both keys, by public half or by id, sees a sound log */
        r = expect_db(PINS(public_key(key), public_key(mallory)), GRANTLOG_INTACT, 0, NULL);
        assert_int_equal(r.n_keys, 2);
        assert_string_equal(r.keys[1].kid, mallory->kid);
        assert_int_equal(r.n_records, LAST + 1);
        expect_db(PINS(mallory->kid, key->kid), GRANTLOG_INTACT, 0, NULL);

        /* the broker does not continue it: its head is signed by a key the log merely names */
        GrantlogOptions opt = options(EVERY, YEAR_MS, 0);
        assert_writer_refuses(path, &opt, key, &faults, -EBADMSG, "does not verify");

        /* the broker's key id with another public half */
        copy_in(base);
        db = sql_open(path);
        t = tail_take(db, 151);
        tail_insert(&t, 0, audit_key_record(mallory, key->kid, t0 + 10));
        tail_put(db, 151, &t, NULL);
        sqlite3_close(db);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 151, "appears with two public keys");

        /* the attacker's public half under the broker's key id, as the log's first key: a pin of
         * the broker's key, by id or by public half, does not vouch for it (the id is no
         * thumbprint of that half) */
        copy_in(base);
        db = sql_open(path);
        t = tail_take(db, 1);
        json_decref(t.b[0]);
        t.b[0] = audit_key_record(mallory, key->kid, t0);
        tail_put(db, 1, &t, NULL);
        sqlite3_close(db);
        expect_db(PINS(key->kid), GRANTLOG_TAMPERED, 1, key->kid);
        expect_db(PINS(public_key(key)), GRANTLOG_TAMPERED, 1, key->kid);
}

/* ---- the end and the start of the log --------------------------------------------------- */

static void test_truncated_tail(void **state)
{
        assert_intact();
        sql_exec(path, "DELETE FROM records WHERE seq > 280");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 281,
                  "truncated: the log ends at seq 280 but its signed head is at seq 286");

        /* back to the last checkpoint, and before it */
        copy_in(base);
        sql_exec(path, "DELETE FROM records WHERE seq > %d", LAST_CP);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST_CP + 1, "truncated");
        copy_in(base);
        sql_exec(path, "DELETE FROM records WHERE seq >= %d", LAST_CP);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST_CP, "truncated");

        /* every row */
        copy_in(base);
        sql_exec(path, "DELETE FROM records");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST, "truncated: no records, but a signed head");
}

static void test_head_removed(void **state)
{
        assert_intact();
        sql_exec(path, "DELETE FROM signed WHERE name = 'head'");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST, "the log has no signed head");

        /* and the tail cut too */
        sql_exec(path, "DELETE FROM records WHERE seq > 280");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 280, "the log has no signed head");

        /* everything */
        sql_exec(path, "DELETE FROM records");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 1, "every row was deleted");
}

static void test_rows_deleted_from_the_start(void **state)
{
        char hash[GRANTLOG_HASH_HEX];

        assert_intact();
        hash_of(20, hash);
        sql_exec(path, "DELETE FROM records WHERE seq <= 20");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 21,
                  "the log does not start at seq 1 and has no pruning anchor");
        expect_db(PINS(public_key(key)), GRANTLOG_TAMPERED, 21, "records deleted from the start");

        /* with an anchor moved there: it cannot be signed */
        put_anchor(20, hash, key->kid, public_key(key), NULL);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 21,
                  "the pruning anchor's signature is invalid (forged anchor)");
        expect_db(PINS(public_key(key)), GRANTLOG_TAMPERED, 21, "forged anchor");

        /* an anchor the attacker signs with a key of their own */
        put_anchor(20, hash, mallory->kid, public_key(mallory), mallory);
        expect_db(PINS(public_key(key)), GRANTLOG_KEY_MISMATCH, 21,
                  "is not one of the keys given with --audit-key");
        /* unpinned, their key is the first the log names; the broker's checkpoints then are by
         * a key it does not name */
        expect_db(NO_PINS, GRANTLOG_KEY_MISMATCH, 51, key->kid);

        /* the first record deleted, or moved to seq 0 */
        copy_in(base);
        sql_exec(path, "DELETE FROM records WHERE seq = 1");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 2, "does not start at seq 1");
        copy_in(base);
        sql_exec(path, "UPDATE records SET seq = 0 WHERE seq = 1");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 0, NULL);
}

/* A row below seq 1 is a row no broker wrote: tampering, whatever seq it is reported at, and
 * the same report from every thread count (not "unreadable", which says the log may be intact,
 * nor a key problem found only by the threads that read past it). */
static void test_rows_before_the_first_record(void **state)
{
        sqlite3 *db;
        json_t *body;

        assert_intact();
        db = sql_open(path);
        body = row_body(db, 2);
        row_put(db, -1, body);
        json_decref(body);
        sqlite3_close(db);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, ANY_SEQ, NULL);

        /* the first record moved below zero */
        copy_in(base);
        sql_exec(path, "UPDATE records SET seq = -1 WHERE seq = 1");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, ANY_SEQ, NULL);
}

/* A log the writer pruned: it starts at its signed anchor. */
static void prune_copy(void)
{
        GrantlogOptions opt = options(EVERY, YEAR_MS, DAY_MS);
        GrantlogWriter *l = NULL;
        bool more = true;

        assert_int_equal(grantlog_writer_open(path, false, &opt, signer(key), &faults, &l), 0);
        capture_begin();
        int r = grantlog_writer_prune(l, t0 + 3 * DAY_MS + 60000, &more);
        free(capture_end());
        assert_int_equal(r, 0);
        assert_false(more);
        grantlog_writer_close(l);
        assert_int_equal(sql_int(path, "SELECT seq FROM signed WHERE name = 'anchor'"), OLD_LAST);
        assert_int_equal(sql_int(path, "SELECT MIN(seq) FROM records"), OLD_LAST + 1);
}

static void test_pruned_log(void **state)
{
        char hash[GRANTLOG_HASH_HEX];
        GrantlogReport r;

        assert_intact();
        prune_copy();
        r = expect_db(NO_PINS, GRANTLOG_INTACT, 0, NULL);
        assert_true(r.from_anchor);
        assert_int_equal(r.first_seq, OLD_LAST + 1);
        assert_int_equal(r.last_seq, LAST + 1); /* the audit_pruned record */
        assert_int_equal(r.n_records, LAST + 1 - OLD_LAST);
        assert_int_equal(r.n_keys, 1);
        expect_db(PINS(public_key(key)), GRANTLOG_INTACT, 0, NULL);
        expect_db(PINS(key->kid), GRANTLOG_INTACT, 0, NULL); /* the anchor names the public half */
        Bytes pruned = slurp(path);

        /* more rows deleted from its start, the anchor left */
        hash_of(130, hash);
        sql_exec(path, "DELETE FROM records WHERE seq <= 130");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 131,
                  "the log does not start where its pruning anchor says (seq 124)");

        /* and the anchor moved after them: its signature does not hold */
        sql_exec(path, "UPDATE signed SET seq = 130, hash = %Q WHERE name = 'anchor'", hash);
        expect_db(NO_PINS, GRANTLOG_TAMPERED, 131, "forged anchor");

        /* the anchor removed */
        copy_in(pruned);
        sql_exec(path, "DELETE FROM signed WHERE name = 'anchor'");
        expect_db(NO_PINS, GRANTLOG_TAMPERED, OLD_LAST + 1, "has no pruning anchor");

        /* the first record after the anchor linked elsewhere (its hash recomputed) */
        copy_in(pruned);
        row_edit(OLD_LAST + 1, "prev_hash",
                 json_string("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"));
        expect_db(NO_PINS, GRANTLOG_TAMPERED, OLD_LAST + 1,
                  "does not start where its pruning anchor says");

        /* an audit_pruned record whose retention_s (or time) is too large for the arithmetic,
         * its hash recomputed: a forged record, not an overflow (the same in an export:
         * tests/fuzz/grantlog_verify/regress-retention-overflow*) */
        copy_in(pruned);
        row_edit(LAST + 1, "retention_s", json_integer(INT64_MAX));
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST + 1,
                  "records younger than the retention were pruned");
        copy_in(pruned);
        row_edit(LAST + 1, "retention_s", json_integer(INT64_MIN / 1000));
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST + 1,
                  "records younger than the retention were pruned");
        bytes_free(&pruned);
}

/* ---- the file form ------------------------------------------------------------------------- */

static void export_log(int64_t since_ms, GrantlogFormat format)
{
        FILE *out = fopen(export_path, "we");
        GrantlogExportOptions o = {.database = path,
                                   .format = format,
                                   .since_ms = since_ms,
                                   .until_ms = INT64_MAX,
                                   .out = out};
        char err[512] = "";

        assert_non_null(out);
        if (grantlog_export(&o, err, sizeof(err)) != 0)
                fail_msg("export: %s", err);
        assert_int_equal(fclose(out), 0);
}

typedef struct Lines {
        char *l[LAST + 64];
        size_t n;
        uint64_t first_seq;
} Lines;

static Lines lines_read(void)
{
        Lines ls = {};
        FILE *f = fopen(export_path, "re");
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;

        assert_non_null(f);
        while ((n = getline(&line, &cap, f)) > 0) {
                assert_true(ls.n < ELEMENTSOF(ls.l));
                assert_int_equal(line[n - 1], '\n');
                line[n - 1] = 0;
                ls.l[ls.n] = strdup(line);
                assert_non_null(ls.l[ls.n]);
                ls.n++;
        }
        free(line);
        fclose(f);
        return ls;
}

static void lines_write(Lines *ls)
{
        FILE *f = fopen(export_path, "we");

        assert_non_null(f);
        for (size_t i = 0; i < ls->n; i++) {
                fprintf(f, "%s\n", ls->l[i]);
                free(ls->l[i]);
        }
        assert_int_equal(fclose(f), 0);
        ls->n = 0;
}

/* The record a line holds (without its hash). */
static json_t *line_body(const char *line)
{
        _cleanup_free_ char *copy = strdup(line);
        char *hash;
        json_t *body;

        assert_non_null(copy);
        assert_true(grantlog_line_split(copy, strlen(copy), &hash));
        body = json_loads(copy, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(body);
        return body;
}

/* A line for a record, with its hash recomputed, as anyone can. */
static char *line_of(json_t *body)
{
        char hash[GRANTLOG_HASH_HEX], *line = NULL;
        _cleanup_free_ char *text = canonical(body, hash);
        size_t len = 0;
        FILE *m = open_memstream(&line, &len);

        assert_non_null(m);
        grantlog_line_write(m, text, strlen(text), hash);
        assert_int_equal(fclose(m), 0);
        line[len - 1] = 0; /* the newline */
        return line;
}

/* The lines from index `from` on relinked and rehashed (checkpoints re-signed only with
 * `resign`), their seqs running on from the line before. */
static void lines_relink(Lines *ls, size_t from, SigningKey *resign)
{
        json_t *bodies[ELEMENTSOF(ls->l)];
        char prev[GRANTLOG_HASH_HEX], last[GRANTLOG_HASH_HEX];
        json_t *before;

        assert_true(from > 0);
        before = line_body(ls->l[from - 1]);
        _cleanup_free_ char *t = canonical(before, prev);
        uint64_t first = (uint64_t) json_integer_value(json_object_get(before, "seq")) + 1;
        json_decref(before);
        for (size_t i = from; i < ls->n; i++)
                bodies[i - from] = line_body(ls->l[i]);
        relink(bodies, ls->n - from, first, prev, resign, last);
        for (size_t i = from; i < ls->n; i++) {
                free(ls->l[i]);
                ls->l[i] = line_of(bodies[i - from]);
                json_decref(bodies[i - from]);
        }
}

static size_t at(const Lines *ls, uint64_t seq)
{
        return (size_t) (seq - ls->first_seq);
}

static Lines export_lines(void)
{
        Lines ls;

        export_log(INT64_MIN, GRANTLOG_FORMAT_JSONL);
        ls = lines_read();
        ls.first_seq = 1;
        assert_int_equal(ls.n, LAST);
        return ls;
}

static void test_export_verifies(void **state)
{
        GrantlogReport r;

        assert_intact();
        export_log(INT64_MIN, GRANTLOG_FORMAT_JSONL);
        r = expect_file(NO_PINS, GRANTLOG_INTACT, 0, NULL);
        assert_int_equal(r.n_records, LAST);
        assert_int_equal(r.first_seq, 1);
        assert_int_equal(r.last_seq, LAST);
        assert_int_equal(r.n_checkpoints, N_CP);
        assert_int_equal(r.last_checkpoint_seq, LAST_CP);
        assert_int_equal(r.n_keys, 1);
        assert_string_equal(r.keys[0].pub, public_key(key));
        expect_file(PINS(public_key(key)), GRANTLOG_INTACT, 0, NULL);
        expect_file(PINS(key->kid), GRANTLOG_INTACT, 0, NULL); /* it names the public half */
        expect_file(PINS(public_key(mallory)), GRANTLOG_KEY_MISMATCH, 1,
                    "is not one of the keys given with --audit-key");
        GrantlogReport one = run_verify(true, export_path, NO_PINS, 1);
        for (unsigned th = 0; th <= GRANTLOG_THREADS_MAX; th++) {
                GrantlogReport other = run_verify(true, export_path, NO_PINS, th);
                assert_same_report(&one, &other);
        }

        /* no line at all, and something else than an export */
        FILE *f = fopen(export_path, "we");
        assert_non_null(f);
        assert_int_equal(fclose(f), 0);
        expect_file(NO_PINS, GRANTLOG_EMPTY, 0, "no records");
        export_log(INT64_MIN, GRANTLOG_FORMAT_CSV);
        r = run_verify(true, export_path, NO_PINS, 1);
        assert_true(r.verdict != GRANTLOG_INTACT);
        assert_non_null(strstr(r.why, "line 1 is not an exported record"));
}

/* A window exported from the log names no key when it starts after the audit_key record: the
 * auditor's pin gives the public half. A pin by key id cannot: the id is a hash of it. */
static void test_export_window_and_pins(void **state)
{
        GrantlogReport r;

        assert_intact();
        export_log(t0 + 3 * DAY_MS, GRANTLOG_FORMAT_JSONL);
        r = expect_file(PINS(public_key(key)), GRANTLOG_INTACT, 0, NULL);
        assert_int_equal(r.first_seq, OLD_LAST + 1);
        assert_int_equal(r.last_seq, LAST);
        assert_int_equal(r.n_checkpoints, 3);
        assert_int_equal(r.n_records, LAST - OLD_LAST);
        expect_file(NO_PINS, GRANTLOG_KEY_MISMATCH, 153, "which this log does not name");
        expect_file(PINS(key->kid), GRANTLOG_KEY_MISMATCH, 153,
                    "given by its key id; this input does not name the key's public half");
        expect_file(PINS(public_key(mallory)), GRANTLOG_KEY_MISMATCH, 153,
                    "not one of the keys given with --audit-key");

        /* the window edited before its first checkpoint: that checkpoint covers it */
        Lines ls = lines_read();
        ls.first_seq = OLD_LAST + 1;
        json_t *b = line_body(ls.l[at(&ls, 130)]);
        json_object_set_new(b, "subject", json_string("spiffe://example.org/unit/db0.service"));
        free(ls.l[at(&ls, 130)]);
        ls.l[at(&ls, 130)] = line_of(b);
        json_decref(b);
        lines_relink(&ls, at(&ls, 131), NULL);
        lines_write(&ls);
        expect_file(PINS(public_key(key)), GRANTLOG_TAMPERED, 153,
                    "checkpoint signature is invalid");
}

static void test_export_edited_line(void **state)
{
        assert_intact();
        Lines ls = export_lines();
        char *p = strstr(ls.l[at(&ls, 100)], "web.service");
        assert_non_null(p);
        memcpy(p, "db0", 3);
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 100,
                    "record was edited: its content does not match its hash");

        /* with the line's hash recomputed: the next line's link */
        ls = export_lines();
        json_t *b = line_body(ls.l[at(&ls, 100)]);
        json_object_set_new(b, "subject", json_string("spiffe://example.org/unit/db0.service"));
        free(ls.l[at(&ls, 100)]);
        ls.l[at(&ls, 100)] = line_of(b);
        json_decref(b);
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 101, "does not link to seq 100");

        /* and every line after it relinked: the next checkpoint */
        ls = export_lines();
        b = line_body(ls.l[at(&ls, 100)]);
        json_object_set_new(b, "subject", json_string("spiffe://example.org/unit/db0.service"));
        free(ls.l[at(&ls, 100)]);
        ls.l[at(&ls, 100)] = line_of(b);
        json_decref(b);
        lines_relink(&ls, at(&ls, 101), NULL);
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 102, "checkpoint signature is invalid");

        /* its hash cut off, or not the exported bytes */
        ls = export_lines();
        *strstr(ls.l[at(&ls, 60)], ",\"hash\":") = 0;
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 60, "line 60 is not an exported record");
        ls = export_lines();
        char *line = ls.l[at(&ls, 61)], *spaced = NULL;
        p = strstr(line, "\"event\":");
        assert_non_null(p);
        assert_true(asprintf(&spaced, "%.*s %s", (int) (p + 8 - line), line, p + 8) > 0);
        free(line);
        ls.l[at(&ls, 61)] = spaced;
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 61, "record was edited");
}

static void test_export_deleted_and_swapped_lines(void **state)
{
        assert_intact();
        Lines ls = export_lines();
        free(ls.l[at(&ls, 100)]);
        memmove(&ls.l[at(&ls, 100)], &ls.l[at(&ls, 101)], (ls.n - 100) * sizeof(char *));
        ls.n--;
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 100,
                    "missing: the next line is seq 101 (records removed, reordered");

        /* a checkpoint line */
        ls = export_lines();
        free(ls.l[at(&ls, 153)]);
        memmove(&ls.l[at(&ls, 153)], &ls.l[at(&ls, 154)], (ls.n - 153) * sizeof(char *));
        ls.n--;
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 153, "missing: the next line is seq 154");

        /* a line twice */
        ls = export_lines();
        free(ls.l[at(&ls, 101)]);
        ls.l[at(&ls, 101)] = strdup(ls.l[at(&ls, 100)]);
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 101, "the next line is seq 100");

        /* two lines swapped */
        ls = export_lines();
        char *x = ls.l[at(&ls, 100)];
        ls.l[at(&ls, 100)] = ls.l[at(&ls, 101)];
        ls.l[at(&ls, 101)] = x;
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 100, "missing: the next line is seq 101");

        /* swapped and renumbered, each line's hash recomputed: the links break */
        ls = export_lines();
        json_t *a = line_body(ls.l[at(&ls, 100)]), *b = line_body(ls.l[at(&ls, 101)]);
        json_object_set_new(a, "seq", json_integer(101));
        json_object_set_new(b, "seq", json_integer(100));
        free(ls.l[at(&ls, 100)]);
        free(ls.l[at(&ls, 101)]);
        ls.l[at(&ls, 100)] = line_of(b);
        ls.l[at(&ls, 101)] = line_of(a);
        json_decref(a);
        json_decref(b);
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 100, "does not link to seq 99");

        /* and relinked: the checkpoint after them */
        ls = export_lines();
        x = ls.l[at(&ls, 100)];
        ls.l[at(&ls, 100)] = ls.l[at(&ls, 101)];
        ls.l[at(&ls, 101)] = x;
        lines_relink(&ls, at(&ls, 100), NULL);
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 102, "checkpoint signature is invalid");

        /* the first line, from genesis */
        ls = export_lines();
        json_t *first = line_body(ls.l[0]);
        json_object_set_new(
            first, "prev_hash",
            json_string("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"));
        free(ls.l[0]);
        ls.l[0] = line_of(first);
        json_decref(first);
        lines_write(&ls);
        expect_file(NO_PINS, GRANTLOG_TAMPERED, 1, "does not start from the genesis hash");
}

/* Any one line removed, also the one where a thread's chunk starts, so that the gap shows only
 * where two chunks join: one thread and four give the same report (found by tests/fuzz/
 * grantlog_verify, whose regression input regress-gap-between-chunks is one such file). */
static void test_export_any_line_removed(void **state)
{
        for (uint64_t seq = 2; seq < LAST; seq++) {
                char why[128];
                Lines ls = export_lines();

                free(ls.l[at(&ls, seq)]);
                memmove(&ls.l[at(&ls, seq)], &ls.l[at(&ls, seq + 1)],
                        (ls.n - at(&ls, seq) - 1) * sizeof(char *));
                ls.n--;
                lines_write(&ls);
                snprintf(why, sizeof(why), "missing: the next line is seq %llu",
                         (unsigned long long) (seq + 1));
                expect_file(NO_PINS, GRANTLOG_TAMPERED, seq, why);
        }
}

/* An export has no head: the lines after its last checkpoint are covered by no signature, and
 * the report says where that checkpoint is, so brokerctl can say how many are not. */
static void test_export_tail_after_the_last_checkpoint(void **state)
{
        GrantlogReport r;

        assert_intact();
        Lines ls = export_lines();
        json_t *b = line_body(ls.l[at(&ls, 270)]);
        json_object_set_new(b, "subject", json_string("spiffe://example.org/unit/db0.service"));
        free(ls.l[at(&ls, 270)]);
        ls.l[at(&ls, 270)] = line_of(b);
        json_decref(b);
        lines_relink(&ls, at(&ls, 271), NULL);
        lines_write(&ls);
        r = expect_file(PINS(public_key(key)), GRANTLOG_INTACT, 0, NULL);
        assert_int_equal(r.last_checkpoint_seq, LAST_CP);
        assert_int_equal(r.last_seq, LAST);
}

/* ---- the trust policy ---------------------------------------------------------------------- */

static char *kid_of(SigningKey *k)
{
        _cleanup_(json_decrefp) json_t *jwk =
            json_pack("{s:s, s:s, s:s}", "crv", "Ed25519", "kty", "OKP", "x", public_key(k));
        char *tp = NULL;

        assert_non_null(jwk);
        assert_int_equal(jwk_thumbprint(jwk, &tp), 0);
        return tp;
}

static void test_trust_accepts(void **state)
{
        SigningKey *k2 = NULL;
        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k2), 0);
        const char *pub1 = public_key(key), *pub2 = public_key(k2), *pub3 = public_key(mallory);
        _cleanup_free_ char *kid1 = kid_of(key);

        /* a key id is the RFC 7638 thumbprint of the public half */
        assert_string_equal(kid1, key->kid);

        /* the writer's policy after a key change: its own key pinned, the first named trusted */
        const char *own[] = {pub2};
        GrantlogTrust writer = {.pins = own, .n_pins = 1, .first_named = true};
        assert_true(grantlog_trust_accepts(&writer, pub1, key->kid, pub1));
        assert_true(grantlog_trust_accepts(&writer, pub1, k2->kid, pub2));
        assert_false(grantlog_trust_accepts(&writer, pub1, mallory->kid, pub3));
        assert_true(grantlog_trust_accepts(&writer, "", k2->kid, pub2));
        assert_true(grantlog_trust_accepts(&writer, NULL, k2->kid, pub2));
        assert_false(grantlog_trust_accepts(&writer, "", key->kid, pub1));
        assert_false(grantlog_trust_accepts(&writer, NULL, key->kid, pub1));
        assert_false(grantlog_trust_accepts(&writer, pub1, key->kid, NULL));

        /* nothing pinned, first named not trusted: nothing is */
        GrantlogTrust none = {.first_named = false};
        assert_false(grantlog_trust_accepts(&none, pub1, key->kid, pub1));
        GrantlogTrust tofu = {.first_named = true};
        assert_true(grantlog_trust_accepts(&tofu, pub1, key->kid, pub1));
        assert_false(grantlog_trust_accepts(&tofu, pub1, k2->kid, pub2));

        /* pins by key id: accepted where the public half is known and hashes to the id */
        const char *ids[] = {key->kid, k2->kid};
        GrantlogTrust by_id = {.pins = ids, .n_pins = 2, .first_named = false};
        assert_true(grantlog_trust_accepts(&by_id, "", key->kid, pub1));
        assert_true(grantlog_trust_accepts(&by_id, "", k2->kid, pub2));
        assert_false(grantlog_trust_accepts(&by_id, "", key->kid, pub3)); /* another half */
        assert_false(grantlog_trust_accepts(&by_id, "", mallory->kid, pub3));
        assert_false(grantlog_trust_accepts(&by_id, "", key->kid, NULL)); /* no half known */
        /* a pin by public half is that half, whatever id comes with it */
        const char *halves[] = {pub1};
        GrantlogTrust by_pub = {.pins = halves, .n_pins = 1};
        assert_true(grantlog_trust_accepts(&by_pub, "", key->kid, pub1));
        assert_true(grantlog_trust_accepts(&by_pub, "", NULL, pub1));
        assert_false(grantlog_trust_accepts(&by_pub, "", key->kid, pub2));
        signing_key_unref(k2);
}

/* ---- the daemon's checks --------------------------------------------------------------------- */

typedef struct Tip {
        uint64_t seq;
        char hash[GRANTLOG_HASH_HEX];
} Tip;

static Tip tip(sqlite3 *db)
{
        sqlite3_stmt *st = NULL;
        Tip t = {};

        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT seq, hash FROM records ORDER BY seq DESC "
                                            "LIMIT 1",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        t.seq = (uint64_t) sqlite3_column_int64(st, 0);
        snprintf(t.hash, sizeof(t.hash), "%s", sqlite3_column_text(st, 1));
        sqlite3_finalize(st);
        return t;
}

/* An audit key as the broker vouches for it: its id and its public half. */
static GrantlogKey vouched(const SigningKey *k)
{
        GrantlogKey g = {};

        snprintf(g.kid, sizeof(g.kid), "%s", k->kid);
        snprintf(g.pub, sizeof(g.pub), "%s", public_key(k));
        return g;
}

typedef struct Keys {
        GrantlogKey v[4];
        size_t n;
} Keys;

static Keys keys_of(const SigningKey *a, const SigningKey *b)
{
        Keys k = {};

        if (a)
                k.v[k.n++] = vouched(a);
        if (b)
                k.v[k.n++] = vouched(b);
        return k;
}

static int head_check(const Keys *k, char *why, size_t whylen)
{
        sqlite3 *db = sql_open(path);
        Tip last = tip(db);
        int r = grantlog_verify_head(db, k->v, k->n, last.seq, last.hash, why, whylen);

        sqlite3_close(db);
        return r;
}

static int stretch_check(const Keys *k, uint64_t first, uint64_t upto, char *why, size_t whylen)
{
        sqlite3 *db = sql_open(path);
        Tip last = tip(db);
        char start[GRANTLOG_HASH_HEX];
        int r;

        if (first == 1)
                snprintf(start, sizeof(start), "%s", GRANTLOG_GENESIS);
        else
                row_hash(db, (int64_t) first - 1, start);
        r = grantlog_verify_stretch(db, k->v, k->n, first, upto, start, last.seq, last.hash, why,
                                    whylen);
        sqlite3_close(db);
        return r;
}

/* The writer continues its log after its key changed (a reset key store: a new audit key), and
 * it stays acceptable to the writer under its new key: the old one is the first it names. A
 * writer whose key is not new takes no other key's signature (the tests after this one). */
static void test_log_continued_after_a_key_change(void **state)
{
        GrantlogOptions opt = options(EVERY, YEAR_MS, 0);
        GrantlogOptions old_key = opt;
        opt.new_audit_key = true;
        GrantlogWriter *l = NULL;
        SigningKey *k2 = NULL;
        char why[512];
        int64_t t = t0 + 3 * DAY_MS + 1000;

        assert_intact();
        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k2), 0);
        assert_int_equal(grantlog_writer_open(path, false, &opt, signer(k2), &faults, &l), 0);
        assert_int_equal(grantlog_writer_last_seq(l), LAST + 1); /* k2 named */
        append_decisions(l, 10, t);
        append_decisions(l, 10, t + 1);
        append_decisions(l, 10, t + 2);
        append_decisions(l, 10, t + 3);
        append_decisions(l, 10, t + 4);
        uint64_t last = grantlog_writer_last_seq(l);
        grantlog_writer_close(l);
        /* 31 records after the last checkpoint, the audit_key record, 18 more: a checkpoint by
         * k2 */
        assert_int_equal(sql_int(path,
                                 "SELECT seq FROM records WHERE event = 'checkpoint' AND "
                                 "body ->> '$.checkpoint.key_id' = %Q",
                                 k2->kid),
                         306);

        /* the broker's quick checks take only the keys it vouches for: under k2 alone, the head
         * (k2's) holds and a stretch covered by k2's checkpoint too; one covered by k1's needs
         * k1 vouched for, which a full verification of the log does (the writer's open and
         * prune run it then, see the tests below) */
        Keys own = keys_of(k2, NULL), both = keys_of(k2, key), none = {};
        assert_int_equal(head_check(&own, why, sizeof(why)), 0);
        assert_int_equal(stretch_check(&own, 260, 300, why, sizeof(why)), 0);      /* 306: k2 */
        assert_int_equal(stretch_check(&own, 307, last - 1, why, sizeof(why)), 0); /* none */
        assert_int_equal(stretch_check(&own, 1, 100, why, sizeof(why)), -ENOKEY);  /* 102: k1 */
        assert_non_null(strstr(why, "does not verify with an audit key this broker holds"));
        assert_int_equal(stretch_check(&both, 1, 100, why, sizeof(why)), 0);
        /* vouching for nothing, nothing is covered */
        assert_int_equal(stretch_check(&none, 1, 100, why, sizeof(why)), -ENOKEY);
        assert_int_equal(head_check(&none, why, sizeof(why)), -ENOKEY);

        /* the writer goes on under k2, now no longer new: its own head is all it checks */
        assert_int_equal(grantlog_writer_open(path, false, &old_key, signer(k2), &faults, &l), 0);
        assert_int_equal(grantlog_writer_last_seq(l), last);
        grantlog_writer_close(l);

        /* brokerctl: a key switch needs the new key pinned (the log alone cannot vouch for it) */
        expect_db(NO_PINS, GRANTLOG_TAMPERED, LAST + 1, "the log switches to audit key");
        GrantlogReport r =
            expect_db(PINS(public_key(key), public_key(k2)), GRANTLOG_INTACT, 0, NULL);
        assert_int_equal(r.n_keys, 2);
        assert_int_equal(r.n_records, last);
        assert_int_equal(r.n_checkpoints, N_CP + 1);
        expect_db(PINS(key->kid, k2->kid), GRANTLOG_INTACT, 0, NULL);
        expect_db(PINS(public_key(key)), GRANTLOG_KEY_MISMATCH, LAST + 1, k2->kid);
        signing_key_unref(k2);
}

/* A head re-signed by a third key that the log merely names (an audit_key record the attacker
 * inserted at the end or in the middle of the chain): refused by the writer's policy. Before the
 * first record: the two tests after this one. */
static void test_head_by_a_key_the_log_merely_names(void **state)
{
        GrantlogOptions opt = options(EVERY, YEAR_MS, 0);
        GrantlogOptions reset = opt;
        GrantlogWriter *l = NULL;
        SigningKey *k2 = NULL;
        char why[512];

        assert_intact();
        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &k2), 0);
        reset.new_audit_key = true; /* k2 continues k1's log */
        assert_int_equal(grantlog_writer_open(path, false, &reset, signer(k2), &faults, &l), 0);
        append_decisions(l, 5, t0 + 3 * DAY_MS + 1000);
        grantlog_writer_close(l);
        Bytes continued = slurp(path);

        /* named at the end (the tail cut first, so that a new head would cover up the cut) */
        sql_exec(path, "DELETE FROM records WHERE seq > %d", LAST + 3);
        sqlite3 *db = sql_open(path);
        Tail t = {};
        tail_insert(&t, 0, audit_key_record(mallory, mallory->kid, t0 + 3 * DAY_MS + 2000));
        tail_put(db, LAST + 4, &t, NULL);
        sqlite3_close(db);
        resign_head(path, mallory);
        Keys own = keys_of(k2, NULL);
        assert_int_equal(head_check(&own, why, sizeof(why)), -ENOKEY);
        assert_non_null(strstr(why, "does not verify with an audit key this broker holds"));
        assert_writer_refuses(path, &opt, k2, &faults, -EBADMSG, "truncated or altered");
        assert_writer_refuses(path, &opt, key, &faults, -EBADMSG, "truncated or altered");
        expect_db(PINS(public_key(key), public_key(k2)), GRANTLOG_KEY_MISMATCH, LAST + 4,
                  mallory->kid);

        /* named in the middle, everything after it re-signed */
        copy_in(continued);
        db = sql_open(path);
        t = tail_take(db, 200);
        tail_insert(&t, 0, audit_key_record(mallory, mallory->kid, t0 + 3 * DAY_MS));
        tail_put(db, 200, &t, mallory);
        sqlite3_close(db);
        resign_head(path, mallory);
        assert_int_equal(head_check(&own, why, sizeof(why)), -ENOKEY);
        assert_writer_refuses(path, &opt, k2, &faults, -EBADMSG, "truncated or altered");
        /* a stretch covered by its checkpoints is not covered for the writer either */
        assert_int_equal(stretch_check(&own, 1, 220, why, sizeof(why)), -ENOKEY);
        bytes_free(&continued);
        signing_key_unref(k2);
}

/* The same attack with the attacker's key named before the log's first record: the writer takes
 * the first key a log names from rows it does not verify (the lowest-seq audit_key row, or the
 * anchor row), so the attacker's key becomes "the first named key" and their head over a cut
 * tail is accepted. */
static void test_head_by_a_key_named_before_the_first_record(void **state)
{
        GrantlogOptions opt = options(EVERY, YEAR_MS, 0);
        char why[512];

        assert_intact();
        sql_exec(path, "DELETE FROM records WHERE seq > 280"); /* after the last checkpoint */
        sqlite3 *db = sql_open(path);
        json_t *named = audit_key_record(mallory, mallory->kid, t0);
        row_put(db, 0, named);
        json_decref(named);
        sqlite3_close(db);
        resign_head(path, mallory);
        expect_db(PINS(public_key(key)), GRANTLOG_TAMPERED, 0, NULL); /* the auditor sees it */

        /* the quick check takes no key from the log: it cannot decide, and the full verification
         * the writer then runs refuses the log */
        Keys own = keys_of(key, NULL);
        int r = head_check(&own, why, sizeof(why));
        if (r != -ENOKEY)
                fail_msg("grantlog_verify_head() = %d: a head over a cut tail, signed by a key "
                         "named in a row before seq 1, passes for the broker",
                         r);
        assert_writer_refuses(path, &opt, key, &faults, -EBADMSG, "truncated or altered");
}

static void test_head_by_the_key_of_a_forged_anchor(void **state)
{
        GrantlogOptions opt = options(EVERY, YEAR_MS, 0);
        char why[512];

        assert_intact();
        sql_exec(path, "DELETE FROM records WHERE seq > 280");
        put_anchor(0, GRANTLOG_GENESIS, mallory->kid, public_key(mallory), mallory);
        resign_head(path, mallory);
        expect_db(PINS(public_key(key)), GRANTLOG_KEY_MISMATCH, 1, mallory->kid);

        Keys own = keys_of(key, NULL);
        int r = head_check(&own, why, sizeof(why));
        if (r != -ENOKEY)
                fail_msg("grantlog_verify_head() = %d: a head over a cut tail, signed by the key "
                         "of an anchor row nothing verified, passes for the broker",
                         r);
        assert_writer_refuses(path, &opt, key, &faults, -EBADMSG, "truncated or altered");
}

/* grantlog_verify_stretch() on its own: what pruning relies on. */
static void test_verify_stretch(void **state)
{
        Keys writer = keys_of(key, NULL);
        char why[512];

        assert_intact();
        assert_int_equal(stretch_check(&writer, 1, OLD_LAST, why, sizeof(why)), 0);
        assert_int_equal(stretch_check(&writer, 103, 152, why, sizeof(why)), 0);
        /* after the last checkpoint: up to what the writer committed */
        assert_int_equal(stretch_check(&writer, 256, 280, why, sizeof(why)), 0);
        sqlite3 *db = sql_open(path);
        char h255[GRANTLOG_HASH_HEX], h200[GRANTLOG_HASH_HEX];
        row_hash(db, 255, h255);
        row_hash(db, 200, h200);
        assert_int_equal(grantlog_verify_stretch(db, writer.v, writer.n, 256, 280, h255, LAST, h200,
                                                 why, sizeof(why)),
                         -EBADMSG);
        assert_non_null(strstr(why, "no signature by a trusted audit key covers them"));
        /* linked from another hash than the record before it */
        assert_int_equal(grantlog_verify_stretch(db, writer.v, writer.n, 103, 152, h200, 0, "", why,
                                                 sizeof(why)),
                         -EBADMSG);
        assert_non_null(strstr(why, "does not link"));
        sqlite3_close(db);

        /* an edit, then the same edit with the chain rebuilt */
        edit_body(50, "web.service", "db0.service");
        assert_int_equal(stretch_check(&writer, 1, 60, why, sizeof(why)), -EBADMSG);
        assert_non_null(strstr(why, "record was edited"));
        rebuild_from(50, NULL);
        assert_int_equal(stretch_check(&writer, 1, 60, why, sizeof(why)), -EBADMSG);
        assert_non_null(strstr(why, "checkpoint signature is invalid"));
        /* a row deleted */
        copy_in(base);
        sql_exec(path, "DELETE FROM records WHERE seq = 40");
        assert_int_equal(stretch_check(&writer, 1, 60, why, sizeof(why)), -EBADMSG);
        assert_non_null(strstr(why, "missing"));
}

/* Pruning checks the stretch it deletes; a stretch linked from an anchor nothing verified is not
 * proven either: pruning it would replace the forged anchor with a genuine one. The writer
 * checks the anchor already when it opens the log. */
static void test_prune_refuses_a_stretch_from_a_forged_anchor(void **state)
{
        GrantlogOptions opt = options(EVERY, YEAR_MS, DAY_MS);
        GrantlogWriter *l = NULL;
        char hash[GRANTLOG_HASH_HEX];
        bool more = true;
        int r;

        assert_intact();
        /* rows deleted from the start with the audit_key record: the broker does not even
         * open the log, nothing names its head's key any more */
        sql_exec(path, "DELETE FROM records WHERE seq <= 60");
        assert_writer_refuses(path, &opt, key, &faults, -EBADMSG, "truncated or altered");

        /* rows deleted after it: the chain has a gap, pruning refuses the stretch */
        copy_in(base);
        sql_exec(path, "DELETE FROM records WHERE seq BETWEEN 2 AND 60");
        assert_int_equal(grantlog_writer_open(path, false, &opt, signer(key), &faults, &l), 0);
        capture_begin();
        r = grantlog_writer_prune(l, t0 + 3 * DAY_MS + 60000, &more);
        char *log = capture_end();
        grantlog_writer_close(l);
        bool said = strstr(log, "not pruning");
        free(log);
        assert_int_equal(r, -EBADMSG);
        assert_true(said);
        assert_int_equal(sql_int(path, "SELECT COUNT(*) FROM records WHERE seq < 61"), 1);
        assert_int_equal(sql_int(path, "SELECT COUNT(*) FROM signed WHERE name = 'anchor'"), 0);

        /* the same with an anchor moved there (a signature copied from the head) */
        copy_in(base);
        hash_of(60, hash);
        sql_exec(path, "DELETE FROM records WHERE seq <= 60");
        put_anchor(60, hash, key->kid, public_key(key), NULL);
        expect_db(PINS(public_key(key)), GRANTLOG_TAMPERED, 61, "forged anchor");
        /* the writer checks where the log starts when it opens it: it does not even get to
         * prune, and nothing is written */
        assert_writer_refuses(path, &opt, key, &faults, -EBADMSG, "forged anchor");
        assert_int_equal(sql_int(path, "SELECT MIN(seq) FROM records"), 61);
        assert_int_equal(sql_int(path, "SELECT seq FROM signed WHERE name = 'anchor'"), 60);
        expect_db(PINS(public_key(key)), GRANTLOG_TAMPERED, 61, "forged anchor");
}

/* ---- the parallel path ------------------------------------------------------------------- */

#define BIG       40000 /* records: 20000 a thread, what verify splits by default, on 2 CPUs */
#define BIG_EVERY 1000

static int big_setup(void **state)
{
        GrantlogOptions opt = options(BIG_EVERY, YEAR_MS, 0);
        GrantlogWriter *l = NULL;
        int r;

        remove_log(path);
        unlink(export_path);
        capture_begin();
        r = grantlog_writer_open(path, true, &opt, signer(key), &faults, &l);
        free(capture_end());
        if (r < 0)
                return -1;
        for (int i = 0; i < 40; i++)
                assert_int_equal(append(l, 1000, "grant", t0 + i, false, t0 + i), 0);
        assert_int_equal(append(l, 0, NULL, 0, true, t0 + 41), 0);
        grantlog_writer_close(l);
        return 0;
}

/* Every thread count, the default included, gives one report. */
static void assert_thread_counts_agree(bool file, const char *p)
{
        GrantlogReport one = run_verify(file, p, NO_PINS, 1);
        static const unsigned counts[] = {0, 3, 4, 16};

        for (size_t i = 0; i < ELEMENTSOF(counts); i++) {
                GrantlogReport other = run_verify(file, p, NO_PINS, counts[i]);
                if (one.verdict != other.verdict || one.problem_seq != other.problem_seq)
                        fail_msg("%s: 1 thread: %s at %llu (%s); %u: %s at %llu (%s)",
                                 file ? "file" : "database", verdict_name(one.verdict),
                                 (unsigned long long) one.problem_seq, one.why, counts[i],
                                 verdict_name(other.verdict),
                                 (unsigned long long) other.problem_seq, other.why);
                assert_same_report(&one, &other);
        }
}

static void test_threads_agree_on_a_large_log(void **state)
{
        const uint64_t last = (uint64_t) sql_int(path, "SELECT MAX(seq) FROM records");
        const uint64_t span = last / 4; /* with four threads chunk 2 starts at span + 1 */
        GrantlogReport r = run_verify(false, path, NO_PINS, 0);
        Bytes big = slurp(path);

        assert_report(&r, GRANTLOG_INTACT, 0, NULL, 0);
        assert_int_equal(r.n_records, last);
        assert_int_equal(r.n_checkpoints, BIG / BIG_EVERY + 1);
        assert_thread_counts_agree(false, path);

        /* broken at the seam of the first two of four chunks (S: the second one's first seq),
         * and inside one */
        static const struct {
                const char *sql;
                int at; /* the seq reported, from S */
                const char *why;
        } damage[] = {
            {"DELETE FROM records WHERE seq = %lld", 0, "missing: the next record is seq"},
            {"DELETE FROM records WHERE seq = %lld - 1", -1, "missing: the next record is seq"},
            {"UPDATE records SET hash = '" GRANTLOG_GENESIS "' WHERE seq = %lld - 1", -1,
             "record was edited"},
            {"UPDATE records SET seq = seq + 1000000 WHERE seq = %lld", 0, "missing"},
            {"UPDATE records SET time_ms = 0 WHERE seq = %lld + 7", 7, "time_ms"},
        };
        for (size_t i = 0; i < ELEMENTSOF(damage); i++) {
                copy_in(big);
                sql_exec(path, damage[i].sql, (long long) (span + 1));
                expect_db(NO_PINS, GRANTLOG_TAMPERED, span + 1 + (uint64_t) damage[i].at,
                          damage[i].why);
                assert_thread_counts_agree(false, path);
        }
        /* an edit at the end of the first chunk, its hash fixed: only the seam shows it */
        copy_in(big);
        row_edit((int64_t) span, "n", json_integer(12345));
        r = expect_db(NO_PINS, GRANTLOG_TAMPERED, span + 1, "does not link to seq");
        assert_thread_counts_agree(false, path);

        /* the export of it, whole and damaged */
        copy_in(big);
        export_log(INT64_MIN, GRANTLOG_FORMAT_JSONL);
        r = run_verify(true, export_path, NO_PINS, 0);
        assert_report(&r, GRANTLOG_INTACT, 0, NULL, 0);
        assert_int_equal(r.n_records, last);
        assert_thread_counts_agree(true, export_path);
        /* the first line of the second half removed */
        Bytes file = slurp(export_path);
        char *text = (char *) file.p, *eol = strchr(text + file.n / 2, '\n'), *next;
        assert_non_null(eol);
        next = strchr(eol + 1, '\n');
        assert_non_null(next);
        memmove(eol + 1, next + 1, file.n - (size_t) (next + 1 - text));
        file.n -= (size_t) (next - eol);
        spit(export_path, file);
        r = run_verify(true, export_path, NO_PINS, 1);
        assert_string_equal(verdict_name(r.verdict), "TAMPERED");
        assert_non_null(strstr(r.why, "missing: the next line is seq"));
        assert_thread_counts_agree(true, export_path);
        bytes_free(&file);
        bytes_free(&big);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_intact_log_verifies, setup, teardown),
            cmocka_unit_test_setup_teardown(test_edited_record_body, setup, teardown),
            cmocka_unit_test_setup_teardown(test_edited_columns, setup, teardown),
            cmocka_unit_test_setup_teardown(test_deleted_row, setup, teardown),
            cmocka_unit_test_setup_teardown(test_swapped_rows, setup, teardown),
            cmocka_unit_test_setup_teardown(test_rebuilt_chain, setup, teardown),
            cmocka_unit_test_setup_teardown(test_tail_rebuilt_after_the_last_checkpoint, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_forged_checkpoint_signature, setup, teardown),
            cmocka_unit_test_setup_teardown(test_foreign_audit_key, setup, teardown),
            cmocka_unit_test_setup_teardown(test_truncated_tail, setup, teardown),
            cmocka_unit_test_setup_teardown(test_head_removed, setup, teardown),
            cmocka_unit_test_setup_teardown(test_rows_deleted_from_the_start, setup, teardown),
            cmocka_unit_test_setup_teardown(test_rows_before_the_first_record, setup, teardown),
            cmocka_unit_test_setup_teardown(test_pruned_log, setup, teardown),
            cmocka_unit_test_setup_teardown(test_export_verifies, setup, teardown),
            cmocka_unit_test_setup_teardown(test_export_window_and_pins, setup, teardown),
            cmocka_unit_test_setup_teardown(test_export_edited_line, setup, teardown),
            cmocka_unit_test_setup_teardown(test_export_deleted_and_swapped_lines, setup, teardown),
            cmocka_unit_test_setup_teardown(test_export_any_line_removed, setup, teardown),
            cmocka_unit_test_setup_teardown(test_export_tail_after_the_last_checkpoint, setup,
                                            teardown),
            cmocka_unit_test(test_trust_accepts),
            cmocka_unit_test_setup_teardown(test_log_continued_after_a_key_change, setup, teardown),
            cmocka_unit_test_setup_teardown(test_head_by_a_key_the_log_merely_names, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_head_by_a_key_named_before_the_first_record, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_head_by_the_key_of_a_forged_anchor, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_verify_stretch, setup, teardown),
            cmocka_unit_test_setup_teardown(test_prune_refuses_a_stretch_from_a_forged_anchor,
                                            setup, teardown),
            cmocka_unit_test_setup_teardown(test_threads_agree_on_a_large_log, big_setup, teardown),
        };

        if (sodium_init() < 0 || signer_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
