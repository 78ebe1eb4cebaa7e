/* The grant log on disk (common/grantlog/writer.c), driven directly on real SQLite files with
 * the clock passed in. Every check reads the file back on its own connection and recomputes what
 * the format (common/grantlog/format.h) promises with libsodium: each record's hash is the SHA-256
 * of exactly its stored body, each prev_hash is the hash before it, and every signed statement
 * (checkpoint, head, anchor) verifies with the audit key's public half. */
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
#include "grantlog/record.h"
#include "grantlog/verify.h"
#include "grantlog/writer.h"
#include "macro.h"
#include "keys/signer.h"
#include "timeutil.h"
#define TESTUTIL_GRANTLOG
#include "testutil.h"

#define YEAR_MS (INT64_C(365) * 86400 * 1000)
#define DAY_MS  (INT64_C(86400) * 1000)

static char dir[64], path[128];
static SigningKey *key;
static GrantlogFaults faults;

/* ---- fixtures ----------------------------------------------------------------------------- */

static int setup(void **state)
{
        if (tmpdir_make(dir, sizeof(dir), "auditlog") < 0)
                return -1;
        snprintf(path, sizeof(path), "%s/audit.db", dir);
        return signing_key_generate(ALG_EDDSA, 0, &key);
}

static int teardown(void **state)
{
        signing_key_unref(key);
        key = NULL;
        return tmpdir_remove(dir);
}

static GrantlogWriter *open_log(const GrantlogOptions *opt, SigningKey *k)
{
        GrantlogWriter *l = NULL;

        assert_int_equal(grantlog_writer_open(path, true, opt, signer(k), &faults, &l), 0);
        assert_non_null(l);
        return l;
}

/* ---- reading the file back, on a connection of our own ----------------------------------- */

static sqlite3 *db_open(void)
{
        return sql_open(path);
}

static int64_t query(const char *sql)
{
        sqlite3 *db = db_open();
        sqlite3_stmt *st = NULL;
        int64_t v;

        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

static void exec_sql(const char *sql)
{
        sqlite3 *db = db_open();

        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

static int64_t n_rows(void)
{
        return query("SELECT COUNT(*) FROM records");
}

typedef struct Row {
        int64_t seq, time_ms;
        char event[32];
        char hash[GRANTLOG_HASH_HEX];
        json_t *body; /* parsed */
        char *text;   /* as stored */
} Row;

static void row_done(Row *r)
{
        json_decref(r->body);
        free(r->text);
}

/* The record `seq`; it must exist. */
static Row row(int64_t seq)
{
        sqlite3 *db = db_open();
        sqlite3_stmt *st = NULL;
        Row r = {};

        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT seq, time_ms, event, body, hash FROM records "
                                            "WHERE seq = ?",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(st, 1, seq);
        if (sqlite3_step(st) != SQLITE_ROW)
                fail_msg("no record with seq %lld", (long long) seq);
        r.seq = sqlite3_column_int64(st, 0);
        r.time_ms = sqlite3_column_int64(st, 1);
        snprintf(r.event, sizeof(r.event), "%s", sqlite3_column_text(st, 2));
        r.text = strdup((const char *) sqlite3_column_text(st, 3));
        snprintf(r.hash, sizeof(r.hash), "%s", sqlite3_column_text(st, 4));
        sqlite3_finalize(st);
        sqlite3_close(db);
        assert_non_null(r.text);
        r.body = json_loads(r.text, 0, NULL);
        assert_non_null(r.body);
        return r;
}

static const char *str(json_t *o, const char *k)
{
        const char *s = json_string_value(json_object_get(o, k));

        if (!s)
                fail_msg("no string \"%s\"", k);
        return s;
}

static int64_t num(json_t *o, const char *k)
{
        json_t *v = json_object_get(o, k);

        if (!json_is_integer(v))
                fail_msg("no integer \"%s\"", k);
        return (int64_t) json_integer_value(v);
}

typedef struct Signed {
        bool present;
        int64_t seq;
        char hash[GRANTLOG_HASH_HEX], time[TIME_RFC3339_MAX], key_id[64], pub[64], sig[128];
} Signed;

static Signed signed_row(const char *name)
{
        sqlite3 *db = db_open();
        sqlite3_stmt *st = NULL;
        Signed s = {};

        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT seq, hash, time, key_id, public_key, signature "
                                            "FROM signed WHERE name = ?",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
                s.present = true;
                s.seq = sqlite3_column_int64(st, 0);
                snprintf(s.hash, sizeof(s.hash), "%s", sqlite3_column_text(st, 1));
                snprintf(s.time, sizeof(s.time), "%s", sqlite3_column_text(st, 2));
                snprintf(s.key_id, sizeof(s.key_id), "%s", sqlite3_column_text(st, 3));
                snprintf(s.pub, sizeof(s.pub), "%s", sqlite3_column_text(st, 4));
                snprintf(s.sig, sizeof(s.sig), "%s", sqlite3_column_text(st, 5));
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
        return s;
}

/* ---- what the format promises ------------------------------------------------------------- */

static void sha256_hex(const char *s, char out[GRANTLOG_HASH_HEX])
{
        unsigned char d[crypto_hash_sha256_BYTES];

        crypto_hash_sha256(d, (const unsigned char *) s, strlen(s));
        sodium_bin2hex(out, GRANTLOG_HASH_HEX, d, sizeof(d));
}

/* A signed statement verifies with `pub`, and would not over another hash. */
static void assert_statement(const char *type, int64_t seq, const char *hash, const char *time,
                             const char *kid, const char *sig, const char *pub)
{
        _cleanup_free_ char *st = grantlog_statement(type, (uint64_t) seq, hash, time, kid);
        _cleanup_free_ char *other =
            grantlog_statement(type, (uint64_t) seq, GRANTLOG_GENESIS, time, kid);

        assert_non_null(st);
        if (grantlog_statement_verify(st, sig, pub) != 0)
                fail_msg("%s statement over seq %lld does not verify", type, (long long) seq);
        assert_int_equal(grantlog_statement_verify(other, sig, pub), -EBADMSG);
}

/* Record `seq`: its hash is SHA-256 of exactly the stored body, the body is canonical (members
 * sorted, compact), names its own seq and links to prev. */
static Row assert_record(int64_t seq, const char *prev)
{
        Row r = row(seq);
        char h[GRANTLOG_HASH_HEX];
        _cleanup_free_ char *canon = json_dumps(r.body, JSON_COMPACT | JSON_SORT_KEYS);

        sha256_hex(r.text, h);
        assert_string_equal(r.hash, h);
        assert_string_equal(r.text, canon);
        assert_int_equal(num(r.body, "seq"), seq);
        assert_string_equal(str(r.body, "prev_hash"), prev);
        assert_string_equal(str(r.body, "event"), r.event);
        assert_null(json_object_get(r.body, "hash"));
        return r;
}

/* Walks the whole log: consecutive seqs from the anchor (or genesis), each linked to the one
 * before, every checkpoint signing the record before it, the head signing the last record.
 * Returns the last seq. */
static int64_t assert_log(const char *pub)
{
        Signed anchor = signed_row("anchor"), head = signed_row("head");
        int64_t first = query("SELECT MIN(seq) FROM records"),
                last = query("SELECT MAX(seq) FROM records");
        char prev[GRANTLOG_HASH_HEX];

        assert_int_equal(n_rows(), last - first + 1);
        if (anchor.present) {
                assert_int_equal(first, anchor.seq + 1);
                memcpy(prev, anchor.hash, sizeof(prev));
                assert_statement("anchor", anchor.seq, anchor.hash, anchor.time, anchor.key_id,
                                 anchor.sig, anchor.pub);
        } else {
                assert_int_equal(first, 1);
                memcpy(prev, GRANTLOG_GENESIS, sizeof(prev));
        }
        for (int64_t s = first; s <= last; s++) {
                Row r = assert_record(s, prev);
                if (strcmp(r.event, "checkpoint") == 0) {
                        json_t *cp = json_object_get(r.body, "checkpoint");
                        assert_int_equal(num(cp, "seq"), s - 1);
                        assert_string_equal(str(cp, "hash"), prev);
                        assert_string_equal(str(cp, "time"), str(r.body, "time"));
                        assert_statement("checkpoint", s - 1, prev, str(cp, "time"),
                                         str(cp, "key_id"), str(cp, "signature"),
                                         pub ? pub : head.pub);
                }
                memcpy(prev, r.hash, sizeof(prev));
                row_done(&r);
        }
        assert_true(head.present);
        assert_int_equal(head.seq, last);
        assert_string_equal(head.hash, prev);
        assert_statement("head", head.seq, head.hash, head.time, head.key_id, head.sig, head.pub);
        return last;
}

static void assert_state(GrantlogWriter *l, int64_t seq)
{
        Row r = row(seq);

        assert_int_equal(grantlog_writer_last_seq(l), seq);
        assert_string_equal(grantlog_writer_last_hash(l), r.hash);
        assert_int_equal(query("SELECT MAX(seq) FROM records"), seq);
        row_done(&r);
}

static bool is_checkpoint(int64_t seq)
{
        Row r = row(seq);
        bool cp = strcmp(r.event, "checkpoint") == 0;

        row_done(&r);
        return cp;
}

/* ---- a new log and its chain -------------------------------------------------------------- */

static void test_new_log_starts_with_audit_key(void **state)
{
        GrantlogOptions opt = options(1000, YEAR_MS, 0);
        int64_t before = now_unix_ms();
        GrantlogWriter *l = open_log(&opt, key);

        assert_int_equal(n_rows(), 1);
        Row r = assert_record(1, GRANTLOG_GENESIS);
        assert_string_equal(r.event, "audit_key");
        assert_string_equal(str(r.body, "key_id"), key->kid);
        assert_string_equal(str(r.body, "public_key"), public_key(key));
        assert_string_equal(str(r.body, "alg"), "EdDSA");
        assert_true(r.time_ms >= before && r.time_ms <= now_unix_ms());
        assert_state(l, 1);

        Signed head = signed_row("head");
        assert_true(head.present);
        assert_int_equal(head.seq, 1);
        assert_string_equal(head.hash, r.hash);
        assert_string_equal(head.key_id, key->kid);
        assert_string_equal(head.pub, public_key(key));
        assert_false(signed_row("anchor").present);
        assert_int_equal(assert_log(public_key(key)), 1);
        row_done(&r);
        grantlog_writer_close(l);
}

static void test_appends_are_chained_over_the_stored_body(void **state)
{
        GrantlogOptions opt = options(1000, YEAR_MS, 0);
        GrantlogWriter *l = open_log(&opt, key);
        int64_t t = now_unix_ms();
        char prev[GRANTLOG_HASH_HEX];

        /* a batch of three, then two alone: one seq after the other */
        assert_int_equal(append(l, 3, "grant", t, false, t), 0);
        assert_int_equal(append(l, 1, "deny", t + 1, false, t + 1), 0);
        assert_int_equal(append(l, 1, "grant", t + 2, false, t + 2), 0);
        assert_int_equal(n_rows(), 6);
        snprintf(prev, sizeof(prev), "%s", signed_row("head").hash);
        for (int64_t s = 1; s <= 6; s++) {
                Row r = row(s);
                if (s > 1) {
                        Row before = row(s - 1);
                        assert_string_equal(str(r.body, "prev_hash"), before.hash);
                        row_done(&before);
                }
                row_done(&r);
        }
        Row r = row(5);
        assert_string_equal(r.event, "deny");
        assert_int_equal(r.time_ms, t + 1);
        assert_int_equal(num(r.body, "n"), 0); /* the record's own fields are kept */
        row_done(&r);
        assert_state(l, 6);
        assert_string_equal(grantlog_writer_last_hash(l), prev);
        assert_int_equal(assert_log(public_key(key)), 6);
        /* nothing is due: no checkpoint yet */
        assert_int_equal(query("SELECT COUNT(*) FROM records WHERE event = 'checkpoint'"), 0);
        grantlog_writer_close(l);
}

/* ---- checkpoints -------------------------------------------------------------------------- */

static void test_checkpoint_every_n_records(void **state)
{
        GrantlogOptions opt = options(5, YEAR_MS, 0);
        GrantlogWriter *l = open_log(&opt, key);
        int64_t t = now_unix_ms();

        /* audit_key + 4 records: 5 uncovered, so the 4th append closes with a checkpoint */
        for (int i = 0; i < 4; i++) {
                assert_int_equal(n_rows(), 1 + i);
                assert_int_equal(append(l, 1, "grant", t, false, t), 0);
        }
        assert_int_equal(n_rows(), 6);
        assert_true(is_checkpoint(6));
        assert_state(l, 6);
        assert_int_equal(grantlog_writer_checkpoint_deadline(l), INT64_MAX);

        /* five more, then the next one */
        for (int i = 0; i < 5; i++)
                assert_int_equal(append(l, 1, "grant", t, false, t), 0);
        assert_int_equal(n_rows(), 12);
        for (int64_t s = 7; s <= 11; s++)
                assert_false(is_checkpoint(s));
        assert_true(is_checkpoint(12));

        /* every N records even inside one batch (a group commit may hold hundreds); the
         * remainder waits for the next */
        assert_int_equal(append(l, 12, "grant", t, false, t), 0);
        assert_int_equal(n_rows(), 26);
        for (int64_t s = 13; s <= 26; s++)
                assert_int_equal(is_checkpoint(s), s == 18 || s == 24);
        assert_int_equal(grantlog_writer_checkpoint_deadline(l), t + YEAR_MS);
        assert_int_equal(assert_log(public_key(key)), 26);
        grantlog_writer_close(l);
}

static void test_checkpoint_after_interval(void **state)
{
        GrantlogOptions opt = options(1000, 10000, 0);
        GrantlogWriter *l = open_log(&opt, key);
        Row first = row(1);
        int64_t t0 = first.time_ms; /* the audit_key record waits for a checkpoint from here */

        row_done(&first);
        assert_int_equal(grantlog_writer_checkpoint_deadline(l), t0 + 10000);
        assert_int_equal(append(l, 1, "grant", t0 + 5000, false, t0 + 5000), 0);
        assert_int_equal(grantlog_writer_checkpoint_deadline(l), t0 + 10000);
        assert_int_equal(append(l, 0, NULL, 0, false, t0 + 9999), 0); /* not yet */
        assert_int_equal(n_rows(), 2);

        /* due: the writer's idle call adds it without any record */
        assert_int_equal(append(l, 0, NULL, 0, false, t0 + 10000), 0);
        assert_int_equal(n_rows(), 3);
        assert_true(is_checkpoint(3));
        Row cp = row(3);
        assert_int_equal(cp.time_ms, t0 + 10000);
        row_done(&cp);
        assert_int_equal(grantlog_writer_checkpoint_deadline(l), INT64_MAX);

        /* the interval counts from the oldest uncovered record, and a batch that arrives
         * when it is due closes with the checkpoint */
        assert_int_equal(append(l, 1, "grant", t0 + 20000, false, t0 + 20000), 0);
        assert_int_equal(grantlog_writer_checkpoint_deadline(l), t0 + 30000);
        assert_int_equal(append(l, 1, "grant", t0 + 29000, false, t0 + 29000), 0);
        assert_int_equal(grantlog_writer_checkpoint_deadline(l), t0 + 30000);
        assert_int_equal(append(l, 1, "grant", t0 + 30000, false, t0 + 30000), 0);
        assert_int_equal(n_rows(), 7);
        assert_false(is_checkpoint(6));
        assert_true(is_checkpoint(7));
        assert_int_equal(grantlog_writer_checkpoint_deadline(l), INT64_MAX);
        assert_int_equal(assert_log(public_key(key)), 7);
        grantlog_writer_close(l);
}

static void test_force_checkpoint_only_when_records_are_uncovered(void **state)
{
        GrantlogOptions opt = options(1000, YEAR_MS, 0);
        GrantlogWriter *l = open_log(&opt, key);
        int64_t t = now_unix_ms();

        assert_int_equal(append(l, 0, NULL, 0, true, t), 0); /* covers the audit_key record */
        assert_int_equal(n_rows(), 2);
        assert_true(is_checkpoint(2));
        Signed head = signed_row("head");

        /* nothing uncovered: no checkpoint, not even a new head */
        assert_int_equal(append(l, 0, NULL, 0, true, t + 1), 0);
        assert_int_equal(n_rows(), 2);
        assert_state(l, 2);
        Signed again = signed_row("head");
        assert_string_equal(again.time, head.time);
        assert_string_equal(again.sig, head.sig);

        /* records and a forced checkpoint in one transaction */
        assert_int_equal(append(l, 2, "stopped", t + 2, true, t + 2), 0);
        assert_int_equal(n_rows(), 5);
        assert_true(is_checkpoint(5));
        assert_int_equal(append(l, 0, NULL, 0, true, t + 3), 0);
        assert_int_equal(n_rows(), 5);
        assert_int_equal(assert_log(public_key(key)), 5);
        grantlog_writer_close(l);
}

/* ---- reopening ---------------------------------------------------------------------------- */

static void test_reopen_continues_the_chain(void **state)
{
        GrantlogOptions opt = options(1000, YEAR_MS, 0);
        GrantlogWriter *l = open_log(&opt, key);
        SigningKey *key2 = NULL;
        char hash[GRANTLOG_HASH_HEX];
        int64_t t = now_unix_ms();

        assert_int_equal(append(l, 3, "grant", t, false, t), 0);
        snprintf(hash, sizeof(hash), "%s", grantlog_writer_last_hash(l));
        grantlog_writer_close(l);

        /* the same key: nothing is added, the chain goes on where it stopped */
        l = open_log(&opt, key);
        assert_int_equal(n_rows(), 4);
        assert_int_equal(grantlog_writer_last_seq(l), 4);
        assert_string_equal(grantlog_writer_last_hash(l), hash);
        assert_int_equal(append(l, 1, "started", t + 1, false, t + 1), 0);
        Row r = assert_record(5, hash);
        row_done(&r);
        grantlog_writer_close(l);
        assert_int_equal(query("SELECT COUNT(*) FROM records WHERE event = 'audit_key'"), 1);

        /* a new audit key (a reset key store) is named in the chain before it signs anything */
        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &key2), 0);
        GrantlogOptions reset = opt;
        reset.new_audit_key = true;
        l = open_log(&reset, key2);
        assert_int_equal(n_rows(), 6);
        r = row(6);
        assert_string_equal(r.event, "audit_key");
        assert_string_equal(str(r.body, "key_id"), key2->kid);
        assert_string_equal(str(r.body, "public_key"), public_key(key2));
        row_done(&r);
        Signed head = signed_row("head");
        assert_string_equal(head.key_id, key2->kid);
        assert_string_equal(head.pub, public_key(key2));
        assert_int_equal(append(l, 1, "grant", t + 2, true, t + 2), 0);
        assert_true(is_checkpoint(8));
        r = row(8);
        assert_string_equal(str(json_object_get(r.body, "checkpoint"), "key_id"), key2->kid);
        row_done(&r);
        assert_int_equal(assert_log(public_key(key2)), 8);
        grantlog_writer_close(l);

        l = open_log(&opt, key2);
        assert_int_equal(n_rows(), 8);
        grantlog_writer_close(l);
        assert_int_equal(query("SELECT COUNT(*) FROM records WHERE event = 'audit_key'"), 2);
        signing_key_unref(key2);
}

/* Opening must fail without writing a byte; ret stays untouched. */
static void assert_open_refused(const GrantlogOptions *opt, int want, const char *logged)
{
        assert_writer_refuses(path, opt, key, &faults, want, logged);
}

static void test_reopen_refuses_a_truncated_or_altered_log(void **state)
{
        GrantlogOptions opt = options(3, YEAR_MS, 0);
        GrantlogWriter *l = open_log(&opt, key);
        int64_t t = now_unix_ms();
        Bytes pristine;

        for (int i = 0; i < 6; i++)
                assert_int_equal(append(l, 1, "grant", t, false, t), 0);
        grantlog_writer_close(l); /* the last connection: the WAL is folded into the file */
        pristine = slurp(path);

        /* the last rows deleted (after the last checkpoint: no checkpoint misses them) */
        exec_sql("DELETE FROM records WHERE seq > (SELECT MAX(seq) - 2 FROM records)");
        assert_open_refused(&opt, -EBADMSG, "truncated or altered");

        /* the last record rewritten */
        spit(path, pristine);
        exec_sql("UPDATE records SET hash = '" GRANTLOG_GENESIS "' WHERE seq = (SELECT MAX(seq) "
                 "FROM records)");
        assert_open_refused(&opt, -EBADMSG, "truncated or altered");

        /* every record deleted, the head kept */
        spit(path, pristine);
        exec_sql("DELETE FROM records");
        assert_open_refused(&opt, -EBADMSG, "truncated or altered");

        /* the last rows deleted and the head rewritten to match: its signature fails, so the
         * cut is not covered up by a new head */
        spit(path, pristine);
        exec_sql("DELETE FROM records WHERE seq > (SELECT MAX(seq) - 2 FROM records)");
        exec_sql("UPDATE signed SET seq = (SELECT MAX(seq) FROM records), hash = (SELECT hash "
                 "FROM records ORDER BY seq DESC LIMIT 1) WHERE name = 'head'");
        assert_open_refused(&opt, -EBADMSG, "does not verify");

        /* a head properly signed over the cut tail, by a key the log never names */
        SigningKey *stranger = NULL;
        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &stranger), 0);
        spit(path, pristine);
        exec_sql("DELETE FROM records WHERE seq > (SELECT MAX(seq) - 2 FROM records)");
        resign_head(path, stranger);
        assert_open_refused(&opt, -EBADMSG, "does not verify");
        signing_key_unref(stranger);

        /* the same with the real audit key is a valid head (the key is what the check is
         * about): whoever holds the key can sign anything */
        spit(path, pristine);
        exec_sql("DELETE FROM records WHERE seq > (SELECT MAX(seq) - 2 FROM records)");
        resign_head(path, key);
        assert_int_equal(grantlog_writer_open(path, false, &opt, signer(key), &faults, &l), 0);
        grantlog_writer_close(l);

        /* the head deleted */
        spit(path, pristine);
        exec_sql("DELETE FROM signed WHERE name = 'head'");
        assert_open_refused(&opt, -EBADMSG, "truncated or altered");

        /* the intact file opens; a missing one is not created unless asked */
        spit(path, pristine);
        assert_int_equal(grantlog_writer_open(path, false, &opt, signer(key), &faults, &l), 0);
        assert_int_equal(assert_log(public_key(key)), grantlog_writer_last_seq(l));
        grantlog_writer_close(l);
        char missing[160];
        snprintf(missing, sizeof(missing), "%s/none.db", dir);
        l = (GrantlogWriter *) 0x1;
        assert_int_equal(grantlog_writer_open(missing, false, &opt, signer(key), &faults, &l),
                         -ENOENT);
        assert_ptr_equal(l, (GrantlogWriter *) 0x1);
        assert_int_equal(access(missing, F_OK), -1);
        free(pristine.p);
}

/* The writer's recovery after a failure closed the log: only the same file, and only while it
 * holds the chain the broker wrote. */
static void test_reopen_after_a_failure(void **state)
{
        GrantlogOptions opt = options(1000, YEAR_MS, 0);
        GrantlogWriter *l = open_log(&opt, key);
        GrantlogMark mark, old;
        char other[160], aside[160], older[160];
        int64_t t = now_unix_ms();
        Bytes b;

        snprintf(other, sizeof(other), "%s/other.db", dir);
        snprintf(aside, sizeof(aside), "%s/aside.db", dir);
        snprintf(older, sizeof(older), "%s/older.db", dir);
        assert_int_equal(append(l, 2, "grant", t, false, t), 0);
        grantlog_writer_mark(l, &old);
        grantlog_writer_close(l);
        b = slurp(path);
        spit(older, b); /* a backup: ours, but behind */
        free(b.p);
        l = open_log(&opt, key);
        assert_int_equal(append(l, 2, "grant", t, false, t), 0);
        grantlog_writer_mark(l, &mark);
        assert_int_equal(mark.seq, 5);
        assert_string_equal(mark.hash, grantlog_writer_last_hash(l));
        grantlog_writer_close(l);

        /* the same file, where we left it */
        assert_int_equal(grantlog_writer_reopen(path, &opt, signer(key), &faults, &mark, &l), 0);
        assert_int_equal(grantlog_writer_last_seq(l), 5);
        grantlog_writer_close(l);

        /* moved away: not there, and not created; moved back: the same file again */
        assert_int_equal(rename(path, aside), 0);
        l = (GrantlogWriter *) 0x1;
        assert_int_equal(grantlog_writer_reopen(path, &opt, signer(key), &faults, &mark, &l),
                         -ENOENT);
        assert_int_equal(access(path, F_OK), -1);
        assert_int_equal(rename(aside, path), 0);
        assert_int_equal(grantlog_writer_reopen(path, &opt, signer(key), &faults, &mark, &l), 0);
        grantlog_writer_close(l);

        /* a commit reported as failed may still have reached the disk: records after the mark
         * continue our chain */
        assert_int_equal(grantlog_writer_reopen(path, &opt, signer(key), &faults, &old, &l), 0);
        assert_int_equal(grantlog_writer_last_seq(l), 5);
        grantlog_writer_close(l);

        /* another file in its place, even a copy of ours, an older one, or another broker's
         * log with more records: refused before a byte is written */
        SigningKey *theirs = NULL;
        assert_int_equal(signing_key_generate(ALG_EDDSA, 0, &theirs), 0);
        char keep[160];
        snprintf(keep, sizeof(keep), "%s/keep.db", dir);
        assert_int_equal(rename(path, keep), 0);
        l = open_log(&opt, theirs); /* a log of another broker at the path */
        assert_int_equal(append(l, 20, "grant", t, false, t), 0);
        grantlog_writer_close(l);
        assert_int_equal(rename(path, other), 0);
        assert_int_equal(rename(keep, path), 0);
        signing_key_unref(theirs);

        const char *impostors[] = {other, older};
        for (size_t i = 0; i < ELEMENTSOF(impostors); i++) {
                Bytes ours = slurp(path), before;
                spit(keep, ours);
                assert_int_equal(rename(impostors[i], path), 0);
                before = slurp(path);
                l = (GrantlogWriter *) 0x1;
                assert_int_equal(
                    grantlog_writer_reopen(path, &opt, signer(key), &faults, &mark, &l), -ESTALE);
                assert_ptr_equal(l, (GrantlogWriter *) 0x1);
                Bytes after = slurp(path);
                assert_int_equal(after.n, before.n);
                assert_memory_equal(after.p, before.p, before.n);

                /* the same bytes as ours under another inode: still not the file we wrote */
                spit(path, ours);
                assert_int_equal(
                    grantlog_writer_reopen(path, &opt, signer(key), &faults, &mark, &l), -ESTALE);
                free(ours.p);
                free(before.p);
                free(after.p);
        }

        /* the same file, cut behind the mark */
        GrantlogMark now_mark;
        l = open_log(&opt, key); /* a new file at the path: take its mark */
        assert_int_equal(append(l, 3, "grant", t, false, t), 0);
        grantlog_writer_mark(l, &now_mark);
        grantlog_writer_close(l);
        exec_sql("DELETE FROM records WHERE seq = (SELECT MAX(seq) FROM records)");
        capture_begin();
        l = (GrantlogWriter *) 0x1;
        int r = grantlog_writer_reopen(path, &opt, signer(key), &faults, &now_mark, &l);
        free(capture_end());
        assert_int_equal(r, -EBADMSG);
}

static void test_file_replaced(void **state)
{
        GrantlogOptions opt = options(1000, YEAR_MS, 0);
        GrantlogWriter *l = open_log(&opt, key);
        char moved[160], copy[160];

        snprintf(moved, sizeof(moved), "%s/moved.db", dir);
        snprintf(copy, sizeof(copy), "%s/copy.db", dir);
        assert_false(grantlog_writer_file_replaced(l));
        assert_int_equal(rename(path, moved), 0);
        assert_true(grantlog_writer_file_replaced(l)); /* gone */
        assert_int_equal(rename(moved, path), 0);
        assert_false(grantlog_writer_file_replaced(l)); /* back: the same inode */

        Bytes b = slurp(path);
        spit(copy, b);
        free(b.p);
        assert_int_equal(rename(copy, path), 0);
        assert_true(grantlog_writer_file_replaced(l)); /* the same bytes, another file */
        grantlog_writer_close(l);
}

/* ---- retention ---------------------------------------------------------------------------- */

static void test_prune_in_chunks_with_a_signed_anchor(void **state)
{
        GrantlogOptions opt = options(1000000, YEAR_MS, DAY_MS);
        GrantlogWriter *l = open_log(&opt, key);
        Row first = row(1);
        int64_t t0 = first.time_ms, old = t0 + 1000, young = t0 + 2 * DAY_MS, now = young + 1;
        char hash[4][GRANTLOG_HASH_HEX], prev[GRANTLOG_HASH_HEX];
        const int64_t through[4] = {0, 10000, 20000, 25001};
        bool more = true;

        row_done(&first);
        /* seq 1 audit_key, 2..25001 old, 25002..25004 within the retention */
        for (int i = 0; i < 25; i++)
                assert_int_equal(append(l, 1000, "grant", old, false, old), 0);
        assert_int_equal(append(l, 3, "grant", young, false, young), 0);
        assert_int_equal(grantlog_writer_last_seq(l), 25004);
        for (int i = 1; i < 4; i++) {
                Row r = row(through[i]);
                memcpy(hash[i], r.hash, GRANTLOG_HASH_HEX);
                row_done(&r);
        }

        for (int i = 1; i < 4; i++) {
                snprintf(prev, sizeof(prev), "%s", grantlog_writer_last_hash(l));
                int64_t pruned_seq = 25004 + i;

                assert_int_equal(grantlog_writer_prune(l, now, &more), 0);
                assert_int_equal(more, i < 3); /* at most 10000 per call */
                assert_int_equal(query("SELECT MIN(seq) FROM records"), through[i] + 1);

                Signed anchor = signed_row("anchor");
                assert_true(anchor.present);
                assert_int_equal(anchor.seq, through[i]);
                assert_string_equal(anchor.hash, hash[i]);
                assert_string_equal(anchor.key_id, key->kid);
                assert_string_equal(anchor.pub, public_key(key));

                Row r = assert_record(pruned_seq, prev);
                assert_string_equal(r.event, "audit_pruned");
                assert_int_equal(num(r.body, "through_seq"), through[i]);
                assert_string_equal(str(r.body, "through_hash"), hash[i]);
                assert_int_equal(num(r.body, "records"), through[i] - through[i - 1]);
                assert_int_equal(num(r.body, "retention_s"), 86400);
                assert_int_equal(r.time_ms, now);
                row_done(&r);
                assert_state(l, pruned_seq);
                assert_int_equal(assert_log(public_key(key)), pruned_seq);
        }

        /* nothing more is old enough: no change, no record */
        assert_int_equal(grantlog_writer_prune(l, now, &more), 0);
        assert_false(more);
        assert_int_equal(grantlog_writer_last_seq(l), 25007);
        assert_int_equal(n_rows(), 3 + 3);
        grantlog_writer_close(l);

        /* The pruned log reopens and goes on. Its audit_key record was pruned (the anchor
         * names the key), so the reopen names the key in the chain again, once. */
        l = open_log(&opt, key);
        assert_int_equal(grantlog_writer_last_seq(l), 25008);
        Row named = row(25008);
        assert_string_equal(named.event, "audit_key");
        assert_string_equal(str(named.body, "key_id"), key->kid);
        row_done(&named);
        assert_int_equal(append(l, 1, "grant", now, false, now), 0);
        assert_int_equal(assert_log(public_key(key)), 25009);
        grantlog_writer_close(l);
        l = open_log(&opt, key);
        assert_int_equal(grantlog_writer_last_seq(l), 25009);
        grantlog_writer_close(l);

        /* no retention: never pruned */
        GrantlogOptions keep = options(1000000, YEAR_MS, 0);
        l = open_log(&keep, key);
        assert_int_equal(grantlog_writer_prune(l, now + 100 * YEAR_MS, &more), 0);
        assert_false(more);
        assert_int_equal(n_rows(), 8);
        grantlog_writer_close(l);
}

static void test_prune_keeps_the_newest_record(void **state)
{
        GrantlogOptions opt = options(1000000, YEAR_MS, DAY_MS);
        GrantlogWriter *l = open_log(&opt, key);
        int64_t t = now_unix_ms() + 1000, later = t + 10 * DAY_MS;
        bool more = true;

        assert_int_equal(append(l, 5, "grant", t, false, t), 0); /* seq 2..6, all old later */
        Row newest = row(6);
        assert_int_equal(grantlog_writer_prune(l, later, &more), 0);
        assert_false(more);
        assert_int_equal(signed_row("anchor").seq, 5);
        Row kept = row(6);
        assert_string_equal(kept.hash, newest.hash);
        assert_string_equal(kept.text, newest.text);
        Row pruned = row(7);
        assert_string_equal(pruned.event, "audit_pruned");
        assert_int_equal(n_rows(), 2);
        assert_int_equal(assert_log(public_key(key)), 7);
        row_done(&newest);
        row_done(&kept);
        row_done(&pruned);
        grantlog_writer_close(l);
}

/* After the wall clock jumped back (a boot before NTP), a record stamped in the past follows
 * recent ones. Only the records before the first one inside the retention go: the recent ones
 * stay, and so does the back-dated record after them. */
static void test_prune_stops_at_the_first_record_inside_the_retention(void **state)
{
        GrantlogOptions opt = options(1000000, YEAR_MS, DAY_MS);
        GrantlogWriter *l = open_log(&opt, key);
        int64_t t = now_unix_ms() + 1000, later = t + 5 * DAY_MS + 3600 * 1000;
        bool more = true;

        assert_int_equal(append(l, 3, "grant", t, false, t), 0);                     /* 2..4 */
        assert_int_equal(append(l, 2, "grant", t + 5 * DAY_MS, false, t), 0);        /* 5..6 */
        assert_int_equal(append(l, 1, "started", t - 100 * DAY_MS, false, t), 0);    /* 7 */
        assert_int_equal(append(l, 1, "grant", t + 5 * DAY_MS + 1000, false, t), 0); /* 8 */
        assert_int_equal(grantlog_writer_prune(l, later, &more), 0);
        assert_false(more);
        assert_int_equal(signed_row("anchor").seq, 4);
        for (int64_t seq = 5; seq <= 8; seq++) {
                Row kept = row(seq);
                assert_int_equal(num(kept.body, "seq"), seq);
                row_done(&kept);
        }
        Row pruned = row(9);
        assert_string_equal(pruned.event, "audit_pruned");
        assert_int_equal(num(pruned.body, "through_seq"), 4);
        row_done(&pruned);
        assert_int_equal(n_rows(), 5);
        /* nothing more goes until seq 5 is older than the retention */
        assert_int_equal(grantlog_writer_prune(l, later + 1000, &more), 0);
        assert_int_equal(n_rows(), 5);
        grantlog_writer_close(l);
}

/* A stretch someone rewrote (here: one record edited and re-hashed, as an attacker backdating
 * records to get them pruned would) is not pruned: pruning would sign an anchor over the
 * forgery and erase its traces. */
static void test_prune_refuses_a_stretch_that_does_not_verify(void **state)
{
        GrantlogOptions opt = options(1000000, YEAR_MS, DAY_MS);
        GrantlogWriter *l = open_log(&opt, key);
        int64_t t = now_unix_ms() + 1000, later = t + 10 * DAY_MS;
        bool more = true;
        sqlite3 *db = NULL;

        assert_int_equal(append(l, 5, "grant", t, false, t), 0); /* seq 2..6 */
        Row before = row(3);
        /* edit seq 3 and fix its stored hash, so only the link from seq 4 betrays it */
        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db,
                                      "UPDATE records SET body = replace(body, '\"grant\"', "
                                      "'\"deny\"') WHERE seq = 3",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        Row edited = row(3);
        char h[GRANTLOG_HASH_HEX];
        grantlog_hash_hex(edited.text, strlen(edited.text), h);
        char *sql = sqlite3_mprintf("UPDATE records SET hash = %Q WHERE seq = 3", h);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_free(sql);
        sqlite3_close(db);

        capture_begin();
        int r = grantlog_writer_prune(l, later, &more);
        _cleanup_free_ char *log = capture_end();
        assert_int_equal(r, -EBADMSG);
        assert_false(more);
        assert_logged(log, "do not verify; not pruning");
        assert_int_equal(n_rows(), 6); /* nothing deleted, no anchor */
        assert_false(signed_row("anchor").present);
        row_done(&before);
        row_done(&edited);
        grantlog_writer_close(l);
}

/* ---- a write that fails ------------------------------------------------------------------- */

typedef struct Snapshot {
        uint64_t seq;
        char hash[GRANTLOG_HASH_HEX];
        int64_t rows, deadline;
        Signed head, anchor;
} Snapshot;

static Snapshot snapshot(GrantlogWriter *l)
{
        Snapshot s = {.seq = grantlog_writer_last_seq(l),
                      .rows = n_rows(),
                      .deadline = grantlog_writer_checkpoint_deadline(l),
                      .head = signed_row("head"),
                      .anchor = signed_row("anchor")};

        snprintf(s.hash, sizeof(s.hash), "%s", grantlog_writer_last_hash(l));
        return s;
}

static void assert_same_signed(const Signed *a, const Signed *b)
{
        assert_int_equal(a->present, b->present);
        assert_int_equal(a->seq, b->seq);
        assert_string_equal(a->hash, b->hash);
        assert_string_equal(a->time, b->time);
        assert_string_equal(a->sig, b->sig);
}

static void assert_unchanged(GrantlogWriter *l, const Snapshot *s)
{
        Snapshot now = snapshot(l);

        assert_int_equal(now.seq, s->seq);
        assert_string_equal(now.hash, s->hash);
        assert_int_equal(now.rows, s->rows); /* no partial rows */
        assert_int_equal(now.deadline, s->deadline);
        assert_int_equal(query("SELECT MAX(seq) FROM records"), (int64_t) s->seq);
        assert_same_signed(&now.head, &s->head);
        assert_same_signed(&now.anchor, &s->anchor);
}

static void test_failed_writes_change_nothing(void **state)
{
        GrantlogOptions opt = options(1000, 10000, DAY_MS);
        GrantlogWriter *l = open_log(&opt, key);
        int64_t t = now_unix_ms() + 1000;
        bool more = false;
        Snapshot s;
        int r;

        assert_int_equal(append(l, 300, "grant", t, false, t), 0);
        s = snapshot(l);

        /* a batch large enough to need new pages; the failure names the database */
        writes_fail();
        r = append(l, 300, "grant", t + 1, false, t + 1);
        _cleanup_free_ char *log1 = writes_restore();
        assert_true(r < 0);
        assert_unchanged(l, &s);
        assert_logged(log1, path);

        /* the same failure again is not logged again: a fault must not flood the log at
         * whatever rate callers send */
        writes_fail();
        r = append(l, 300, "grant", t + 1, false, t + 1);
        _cleanup_free_ char *log2 = writes_restore();
        assert_true(r < 0);
        assert_unchanged(l, &s);
        assert_string_equal(log2, "");

        /* a due checkpoint, alone */
        writes_fail();
        r = append(l, 0, NULL, 0, true, t + 20000);
        free(writes_restore());
        assert_true(r < 0);
        assert_unchanged(l, &s);

        /* pruning: the anchor does not move, nothing is deleted */
        writes_fail();
        r = grantlog_writer_prune(l, t + 2 * DAY_MS, &more);
        free(writes_restore());
        assert_true(r < 0);
        assert_unchanged(l, &s);

        /* the same log works again, from where it stood */
        assert_int_equal(append(l, 2, "grant", t + 2, false, t + 2), 0);
        Row next = assert_record((int64_t) s.seq + 1, s.hash);
        row_done(&next);
        assert_int_equal(assert_log(public_key(key)), (int64_t) s.seq + 2);
        grantlog_writer_close(l);

        /* and what is on disk is exactly what committed */
        l = open_log(&opt, key);
        assert_int_equal(grantlog_writer_last_seq(l), s.seq + 2);
        assert_int_equal(n_rows(), s.rows + 2);
        grantlog_writer_close(l);
}

/* ---- the records of denials: bounded, and summaries ---------------------------------------- */

/* A truncated value (record.h): its length and hash are those of `full`, its prefix is the start
 * of `full`, at most GRANTLOG_DENY_PREFIX bytes, valid UTF-8 and not cut inside an escape. */
static void assert_truncated(const json_t *v, const char *full)
{
        const char *prefix = json_string_value(json_object_get(v, "prefix"));
        char hex[GRANTLOG_HASH_HEX];
        size_t n;

        assert_true(json_is_true(json_object_get(v, "truncated")));
        assert_int_equal(json_integer_value(json_object_get(v, "length")), strlen(full));
        sha256_hex(full, hex);
        assert_string_equal(json_string_value(json_object_get(v, "sha256")), hex);
        assert_non_null(prefix);
        n = strlen(prefix);
        assert_true(n > GRANTLOG_DENY_PREFIX - 4 && n <= GRANTLOG_DENY_PREFIX);
        assert_memory_equal(prefix, full, n);
        /* cut where a character or a \xNN escape begins */
        assert_true(((unsigned char) full[n] & 0xc0) != 0x80);
        for (size_t back = 1; back <= 3 && back <= n; back++)
                assert_int_not_equal(prefix[n - back], '\\');
}

/* The worst request a caller can send (64 scopes of 256 bytes, a 1 KiB audience) from a binary
 * at a long path of bytes that are not UTF-8: its denial is bounded, its grant is not. The
 * summary of counted denials goes into the chain like any record; both verify, in the database
 * and exported, and each export format shows them. */
static void test_deny_records_bounded_and_summaries_verify(void **state)
{
        GrantlogOptions opt = options(1000, 60000, 0);
        GrantlogWriter *l = open_log(&opt, key);
        static char scope_buf[64][257], audience[1025], exe[4000];
        const char *scopes[64];
        char *joined = NULL, *escaped_exe, *text = NULL;
        size_t jlen = 0;
        FILE *m = open_memstream(&joined, &jlen);
        int64_t t = now_unix_ms();

        assert_non_null(m);
        for (size_t i = 0; i < 64; i++) {
                memset(scope_buf[i], 'a' + (char) (i % 26), 256);
                scope_buf[i][256] = 0;
                scopes[i] = scope_buf[i];
                fprintf(m, "%s%s", i ? " " : "", scopes[i]);
        }
        assert_int_equal(fclose(m), 0);
        memcpy(audience, "https://", 8);
        memset(audience + 8, 'x', 1016);
        audience[1024] = 0;
        for (size_t i = 0; i < sizeof(exe) - 1; i++)
                exe[i] = i % 200 == 0 ? '/' : (char) (0x80 + i % 64); /* \xNN each */
        exe[sizeof(exe) - 1] = 0;
        GrantlogPeer p = {.identified = true,
                          .uid = 4242,
                          .gid = 4242,
                          .pid = 77,
                          .exe = exe,
                          .cgroup = "/user.slice",
                          .user = "mallory"};
        json_t *peer = grantlog_peer_new(&p, false);
        assert_non_null(peer);
        escaped_exe = strdup(json_string_value(json_object_get(peer, "exe")));
        assert_non_null(escaped_exe);
        assert_true(strlen(escaped_exe) > 4 * 3000);

        GrantlogDecision d = {.peer = peer,
                              .audience = audience,
                              .scopes = scopes,
                              .n_scopes = 64,
                              .reason = "no_matching_rule"};
        json_t *deny = grantlog_record_decision(&d, t);
        d.granted = true;
        d.reason = NULL;
        d.rule = "r";
        d.subject = "s";
        d.alg = "EdDSA";
        d.kid = "k";
        d.jti = "j";
        d.token_sha256 = "0";
        json_t *grant = grantlog_record_decision(&d, t);
        json_t *summary =
            grantlog_record_deny_summary(&(GrantlogDenySummary){.uid_known = true,
                                                                .uid = 4242,
                                                                .reason = "no_matching_rule",
                                                                .count = 123456,
                                                                .below_floor = 6,
                                                                .first_ms = t - 59000,
                                                                .last_ms = t - 1000,
                                                                .budget = 100,
                                                                .interval_s = 60},
                                         t);
        json_t *overflow =
            grantlog_record_deny_summary(&(GrantlogDenySummary){.reason = "scope_not_allowed",
                                                                .count = 1,
                                                                .first_ms = t,
                                                                .last_ms = t,
                                                                .budget = 100,
                                                                .interval_s = 60},
                                         t);
        assert_non_null(deny);
        assert_non_null(grant);
        assert_non_null(summary);
        assert_non_null(overflow);

        /* the denial: every long value is its length, its hash and a prefix */
        assert_truncated(json_object_get(deny, "audience"), audience);
        assert_truncated(json_object_get(deny, "scopes"), joined);
        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(deny, "scopes"), "count")), 64);
        assert_truncated(json_object_get(json_object_get(deny, "peer"), "exe"), escaped_exe);
        /* short ones are as they were; the connection's peer is not changed */
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(deny, "peer"), "cgroup")),
            "/user.slice");
        assert_string_equal(json_string_value(json_object_get(peer, "exe")), escaped_exe);
        /* the grant is the request as it was */
        assert_string_equal(json_string_value(json_object_get(grant, "audience")), audience);
        assert_int_equal(json_array_size(json_object_get(grant, "scopes")), 64);
        /* a short denial is as it was */
        d = (GrantlogDecision){.peer = peer,
                               .audience = "https://a.test",
                               .scopes = scopes,
                               .n_scopes = 0,
                               .reason = "no_matching_rule"};
        json_t *small = grantlog_record_decision(&d, t);
        assert_string_equal(json_string_value(json_object_get(small, "audience")),
                            "https://a.test");
        assert_true(json_is_array(json_object_get(small, "scopes")));
        json_decref(small);

        GrantlogEntry e[4];
        json_t *recs[4] = {deny, summary, grant, overflow};
        for (size_t i = 0; i < 4; i++) {
                assert_int_equal(grantlog_entry_prepare(recs[i], t, &e[i]), 0);
                json_decref(recs[i]);
        }
        /* the bound: the canonical form of the worst denial, and of a summary */
        assert_true(e[0].len <= 2048);
        assert_true(e[1].len <= 512);
        assert_true(e[2].len > 16 * 1024);
        assert_int_equal(grantlog_writer_append(l, e, 4, true, t), 0);
        for (size_t i = 0; i < 4; i++)
                grantlog_entry_done(&e[i]);
        grantlog_writer_close(l);
        assert_true(grantlog_event_known("deny_summary"));
        assert_true(grantlog_event_known("deny"));

        /* the verifier takes them, in the database and in an export */
        GrantlogVerifyOptions vo = {.trust = {.first_named = true}, .threads = 1};
        GrantlogReport rep;
        grantlog_verify_database(path, &vo, &rep);
        assert_int_equal(rep.verdict, GRANTLOG_INTACT);
        assert_int_equal(rep.n_records, 6); /* audit_key, 4, checkpoint */

        char out_path[160];
        snprintf(out_path, sizeof(out_path), "%s/export", dir);
        for (GrantlogFormat f = GRANTLOG_FORMAT_JSONL; f <= GRANTLOG_FORMAT_OCSF; f++) {
                FILE *out = fopen(out_path, "we");
                char err[512] = "";
                GrantlogExportOptions o = {.database = path,
                                           .format = f,
                                           .since_ms = INT64_MIN,
                                           .until_ms = INT64_MAX,
                                           .out = out};
                assert_non_null(out);
                if (grantlog_export(&o, err, sizeof(err)) != 0)
                        fail_msg("export: %s", err);
                assert_int_equal(fclose(out), 0);
                Bytes b = slurp(out_path);
                free(text);
                text = strndup((const char *) b.p, b.n);
                bytes_free(&b);
                assert_non_null(text);
                if (f == GRANTLOG_FORMAT_JSONL) {
                        grantlog_verify_file(out_path, &vo, &rep);
                        assert_int_equal(rep.verdict, GRANTLOG_INTACT);
                        assert_non_null(strstr(text, "\"event\":\"deny_summary\""));
                } else if (f == GRANTLOG_FORMAT_CSV) {
                        /* the counts have columns; a truncated value is its JSON object */
                        assert_non_null(strstr(
                            text, ",count,below_floor,first_time,last_time,prev_hash,hash\r\n"));
                        assert_non_null(strstr(text, "\"deny_summary\""));
                        assert_non_null(strstr(text, ",\"123456\",\"6\",\""));
                        assert_non_null(strstr(text, "{\"\"count\"\":64,\"\"length\"\":16447,"));
                } else {
                        /* deny, summary, grant, overflow summary: one event each */
                        char *line = text, *nl;
                        json_t *ev[4];
                        size_t n = 0;
                        while ((nl = strchr(line, '\n'))) {
                                assert_true(n < 4);
                                ev[n] = json_loadb(line, (size_t) (nl - line), 0, NULL);
                                assert_non_null(ev[n]);
                                n++;
                                line = nl + 1;
                        }
                        assert_int_equal(n, 4);
                        json_t *dst = json_object_get(ev[0], "dst_endpoint");
                        assert_int_equal(
                            strlen(json_string_value(json_object_get(dst, "svc_name"))),
                            GRANTLOG_DENY_PREFIX);
                        json_t *tr =
                            json_object_get(json_object_get(ev[0], "unmapped"), "truncated");
                        assert_int_equal(json_object_size(tr), 3);
                        assert_truncated(json_object_get(tr, "audience"), audience);
                        assert_truncated(json_object_get(tr, "peer.exe"), escaped_exe);
                        assert_non_null(json_object_get(tr, "scopes"));
                        assert_int_equal(json_integer_value(json_object_get(ev[1], "count")),
                                         123456);
                        assert_int_equal(json_integer_value(json_object_get(ev[1], "start_time")),
                                         t - 59000);
                        assert_int_equal(json_integer_value(json_object_get(ev[1], "end_time")),
                                         t - 1000);
                        assert_int_equal(json_integer_value(json_object_get(ev[1], "status_id")),
                                         2);
                        assert_string_equal(
                            json_string_value(json_object_get(ev[1], "status_detail")),
                            "no_matching_rule");
                        assert_string_equal(
                            json_string_value(json_object_get(
                                json_object_get(json_object_get(ev[1], "actor"), "user"), "uid")),
                            "4242");
                        assert_null(json_object_get(ev[2], "count"));
                        assert_null(
                            json_object_get(json_object_get(ev[2], "unmapped"), "truncated"));
                        assert_int_equal(json_integer_value(json_object_get(ev[2], "status_id")),
                                         1);
                        assert_true(json_is_null(json_object_get(
                            json_object_get(json_object_get(ev[3], "actor"), "user"), "uid")));
                        for (size_t i = 0; i < n; i++)
                                json_decref(ev[i]);
                }
        }

        /* a count edited is caught, at its seq */
        sql_exec(path, "UPDATE records SET body = json_set(body, '$.count', 1) WHERE event = "
                       "'deny_summary' AND seq = 3");
        grantlog_verify_database(path, &vo, &rep);
        assert_int_equal(rep.verdict, GRANTLOG_TAMPERED);
        assert_int_equal(rep.problem_seq, 3);

        json_decref(peer);
        free(escaped_exe);
        free(joined);
        free(text);
}

/* Lifecycle records of what someone asked for say who: the admin connection's peer or the
 * signal's sender, as the kernel gave them. */
static void test_lifecycle_records_name_who_asked(void **state)
{
        const GrantlogOrigin admin = {.uid = 0, .pid = 4242};
        const GrantlogOrigin hup = {.signal = "SIGHUP", .uid = 7, .pid = 99};
        _cleanup_(json_decrefp) json_t *rot =
            grantlog_record_lifecycle("key_rotated", 0, &admin, json_pack("{s:s}", "kid", "k"));
        _cleanup_(json_decrefp) json_t *sched =
            grantlog_record_lifecycle("key_created", 0, NULL, json_pack("{s:s}", "kid", "k"));
        _cleanup_(json_decrefp) json_t *ok =
            grantlog_record_config_reloaded(0, &hup, "/etc/brokerd/brokerd.json", "ab12", 3);
        _cleanup_(json_decrefp) json_t *bad = grantlog_record_config_reload_failed(
            0, &admin, "/etc/brokerd/brokerd.json", "rules[0].name: expected string\x1b");

        assert_non_null(rot);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(rot, "admin"), "pid")),
                         4242);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(rot, "admin"), "uid")),
                         0);
        assert_string_equal(json_string_value(json_object_get(rot, "kid")), "k");
        assert_null(json_object_get(sched, "admin"));
        assert_null(json_object_get(sched, "signal"));

        assert_string_equal(json_string_value(json_object_get(ok, "event")), "config_reloaded");
        assert_string_equal(json_string_value(json_object_get(ok, "path")),
                            "/etc/brokerd/brokerd.json");
        assert_string_equal(json_string_value(json_object_get(ok, "config_sha256")), "ab12");
        assert_int_equal(json_integer_value(json_object_get(ok, "rules")), 3);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(ok, "signal"), "name")), "SIGHUP");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(ok, "signal"), "pid")),
                         99);
        assert_null(json_object_get(ok, "admin"));

        assert_string_equal(json_string_value(json_object_get(bad, "event")),
                            "config_reload_failed");
        /* display-safe, as the canonical form needs */
        assert_string_equal(json_string_value(json_object_get(bad, "error")),
                            "rules[0].name: expected string\\x1b");
        assert_true(grantlog_event_known("config_reload_failed"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_new_log_starts_with_audit_key, setup, teardown),
            cmocka_unit_test_setup_teardown(test_appends_are_chained_over_the_stored_body, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_checkpoint_every_n_records, setup, teardown),
            cmocka_unit_test_setup_teardown(test_checkpoint_after_interval, setup, teardown),
            cmocka_unit_test_setup_teardown(test_force_checkpoint_only_when_records_are_uncovered,
                                            setup, teardown),
            cmocka_unit_test_setup_teardown(test_reopen_continues_the_chain, setup, teardown),
            cmocka_unit_test_setup_teardown(test_reopen_refuses_a_truncated_or_altered_log, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_reopen_after_a_failure, setup, teardown),
            cmocka_unit_test_setup_teardown(test_file_replaced, setup, teardown),
            cmocka_unit_test_setup_teardown(test_prune_in_chunks_with_a_signed_anchor, setup,
                                            teardown),
            cmocka_unit_test_setup_teardown(test_prune_keeps_the_newest_record, setup, teardown),
            cmocka_unit_test_setup_teardown(
                test_prune_stops_at_the_first_record_inside_the_retention, setup, teardown),
            cmocka_unit_test_setup_teardown(test_prune_refuses_a_stretch_that_does_not_verify,
                                            setup, teardown),
            cmocka_unit_test_setup_teardown(test_failed_writes_change_nothing, setup, teardown),
            cmocka_unit_test_setup_teardown(test_deny_records_bounded_and_summaries_verify, setup,
                                            teardown),
            cmocka_unit_test(test_lifecycle_records_name_who_asked),
        };

        if (sodium_init() < 0 || signer_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
