/* The grant log's storage versions (common/grantlog/schema.h), on real SQLite files: a log of
 * version 0 (the same tables, PRAGMA user_version 0, as brokerd wrote them before the version
 * existed) is read as it is and migrated in place by the writer, its chain going on; a log of a
 * newer version is refused by the writer and by every reader without a byte changed; a file that
 * is no grant log is said to be none. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>

#include "grantlog/export.h"
#include "grantlog/format.h"
#include "grantlog/reader.h"
#include "grantlog/schema.h"
#include "grantlog/verify.h"
#include "grantlog/writer.h"
#include "keys/signer.h"
#include "macro.h"
#include "timeutil.h"
#define TESTUTIL_GRANTLOG
#include "testutil.h"

#define YEAR_MS (INT64_C(365) * 86400 * 1000)

static char dir[64], path[128];
static SigningKey *key;
static GrantlogFaults faults;

static int setup(void **state)
{
        if (tmpdir_make(dir, sizeof(dir), "schema") < 0)
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

/* A log the writer made: seq 1 audit_key, 24 records, checkpoints at 11 and 22; closed, so the
 * file alone holds it. */
static void write_log(void)
{
        GrantlogOptions opt = options(10, YEAR_MS, 0);
        GrantlogWriter *l = NULL;
        int64_t t = now_unix_ms();

        capture_begin();
        int r = grantlog_writer_open(path, true, &opt, signer(key), &faults, &l);
        free(capture_end());
        assert_int_equal(r, 0);
        for (int i = 0; i < 4; i++)
                assert_int_equal(append(l, 6, "grant", t + i, false, t + i), 0);
        assert_int_equal(grantlog_writer_last_seq(l), 27);
        grantlog_writer_close(l);
}

static int64_t user_version(void)
{
        return sql_int(path, "PRAGMA user_version");
}

/* Everything in the file a migration must leave as it is: the tables' definitions, every
 * record's hash and the signed statements. */
static char *fingerprint(void)
{
        sqlite3 *db = sql_open(path);
        sqlite3_stmt *st = NULL;
        char *text = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&text, &len);
        static const char *const sql[] = {
            "SELECT name || ':' || sql FROM sqlite_schema ORDER BY name",
            "SELECT seq || ':' || hash || ':' || body FROM records ORDER BY seq",
            "SELECT name || ':' || seq || ':' || hash || ':' || signature FROM signed ORDER BY "
            "name",
        };

        assert_non_null(m);
        for (size_t i = 0; i < ELEMENTSOF(sql); i++) {
                assert_int_equal(sqlite3_prepare_v2(db, sql[i], -1, &st, NULL), SQLITE_OK);
                while (sqlite3_step(st) == SQLITE_ROW)
                        fprintf(m, "%s\n", sqlite3_column_text(st, 0));
                sqlite3_finalize(st);
        }
        sqlite3_close(db);
        assert_int_equal(fclose(m), 0);
        return text;
}

static GrantlogReport verify(void)
{
        const char *pins[] = {public_key(key)};
        GrantlogVerifyOptions o = {.trust = {.pins = pins, .n_pins = 1}, .threads = 1};
        GrantlogReport r;

        grantlog_verify_database(path, &o, &r);
        return r;
}

static void assert_intact(uint64_t records)
{
        GrantlogReport r = verify();

        if (r.verdict != GRANTLOG_INTACT)
                fail_msg("verdict %d at seq %llu: %s", r.verdict,
                         (unsigned long long) r.problem_seq, r.why);
        assert_int_equal(r.n_records, records);
        assert_int_equal(r.last_seq, records);
}

/* grantlog_db_open_readonly() refuses path with `want`, err saying `says`; ret untouched. */
static void assert_reader_refuses(const char *p, int want, const char *says)
{
        sqlite3 *db = (sqlite3 *) 0x1;
        char err[512] = "";
        int r = grantlog_db_open_readonly(p, &db, err, sizeof(err));

        if (r != want)
                fail_msg("grantlog_db_open_readonly(%s) = %d, wanted %d (%s)", p, r, want, err);
        assert_ptr_equal(db, (sqlite3 *) 0x1);
        if (!strstr(err, says))
                fail_msg("\"%s\" does not say \"%s\"", err, says);
}

static int export_result(const char *p, char *err, size_t errlen)
{
        _cleanup_free_ char *out = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&out, &len);
        GrantlogExportOptions o = {.database = p,
                                   .format = GRANTLOG_FORMAT_JSONL,
                                   .since_ms = INT64_MIN,
                                   .until_ms = INT64_MAX,
                                   .out = m};
        int r;

        assert_non_null(m);
        r = grantlog_export(&o, err, errlen);
        assert_int_equal(fclose(m), 0);
        if (r < 0)
                assert_int_equal(len, 0); /* nothing written for a log it cannot read */
        return r;
}

/* ---- version 0 ------------------------------------------------------------------------------ */

static void test_version_0_is_migrated_in_place(void **state)
{
        GrantlogOptions opt = options(10, YEAR_MS, 0);
        GrantlogWriter *l = NULL;
        char last_hash[GRANTLOG_HASH_HEX];
        sqlite3 *db = NULL;
        char err[512];

        write_log();
        assert_int_equal(user_version(), GRANTLOG_SCHEMA_VERSION);
        assert_intact(27);
        sql_exec(path, "PRAGMA user_version = 0");
        assert_int_equal(user_version(), 0);
        _cleanup_free_ char *before = fingerprint();

        /* read as it is: the reader, the verifier and the export do not need it migrated, and
         * do not migrate it */
        assert_int_equal(grantlog_db_open_readonly(path, &db, err, sizeof(err)), 0);
        sqlite3_close(db);
        assert_intact(27);
        assert_int_equal(export_result(path, err, sizeof(err)), 0);
        assert_int_equal(user_version(), 0);

        /* the writer stamps it 1, changes nothing else, and goes on from where it ended */
        assert_int_equal(grantlog_writer_open(path, false, &opt, signer(key), &faults, &l), 0);
        assert_int_equal(grantlog_writer_last_seq(l), 27);
        snprintf(last_hash, sizeof(last_hash), "%s", grantlog_writer_last_hash(l));
        assert_int_equal(user_version(), GRANTLOG_SCHEMA_VERSION);
        _cleanup_free_ char *migrated = fingerprint();
        assert_string_equal(migrated, before);

        int64_t t = now_unix_ms();
        assert_int_equal(append(l, 5, "grant", t, false, t), 0);
        assert_int_equal(grantlog_writer_last_seq(l), 33); /* 28..32, a checkpoint at 33 */
        grantlog_writer_close(l);
        assert_int_equal(sql_int(path,
                                 "SELECT COUNT(*) FROM records WHERE seq = 28 AND "
                                 "body ->> '$.prev_hash' = %Q",
                                 last_hash),
                         1);
        /* the same key: not named again */
        assert_int_equal(sql_int(path, "SELECT COUNT(*) FROM records WHERE event = 'audit_key'"),
                         1);
        assert_intact(33);

        /* and opened again, it is what it is: nothing more to do */
        _cleanup_free_ char *now = fingerprint();
        assert_int_equal(grantlog_writer_open(path, false, &opt, signer(key), &faults, &l), 0);
        grantlog_writer_close(l);
        _cleanup_free_ char *again = fingerprint();
        assert_string_equal(again, now);
        assert_int_equal(user_version(), GRANTLOG_SCHEMA_VERSION);
}

/* ---- a newer version ------------------------------------------------------------------------ */

static void assert_newer_refused(GrantlogOptions *opt)
{
        GrantlogReport r;
        char err[512] = "";

        assert_writer_refuses(path, opt, key, &faults, -EPROTO, "newer");
        assert_reader_refuses(path, -EPROTO, "newer");
        r = verify();
        assert_int_equal(r.verdict, GRANTLOG_NOT_A_LOG);
        assert_non_null(strstr(r.why, "newer"));
        assert_int_equal(export_result(path, err, sizeof(err)), -EPROTO);
        assert_non_null(strstr(err, "newer"));
}

static void test_newer_version_is_refused(void **state)
{
        GrantlogOptions opt = options(10, YEAR_MS, 0);

        write_log();
        sql_exec(path, "PRAGMA user_version = %d", GRANTLOG_SCHEMA_VERSION + 1);
        assert_newer_refused(&opt);
        assert_int_equal(user_version(), GRANTLOG_SCHEMA_VERSION + 1);

        sql_exec(path, "PRAGMA user_version = 1000");
        assert_newer_refused(&opt);

        /* back at this version, it is the log it was */
        sql_exec(path, "PRAGMA user_version = %d", GRANTLOG_SCHEMA_VERSION);
        assert_intact(27);
}

/* What the newer brokerd chose for its file (here: a rollback journal instead of WAL) is not
 * this one's to change either: the refusal comes before any setting is written. */
static void test_newer_version_in_another_journal_mode_is_left_alone(void **state)
{
        GrantlogOptions opt = options(10, YEAR_MS, 0);

        write_log();
        sql_exec(path, "PRAGMA journal_mode = DELETE");
        sql_exec(path, "PRAGMA user_version = %d", GRANTLOG_SCHEMA_VERSION + 1);
        assert_int_equal(sql_int(path, "SELECT journal_mode = 'delete' FROM "
                                       "pragma_journal_mode"),
                         1);
        assert_newer_refused(&opt);
}

/* ---- not a grant log ------------------------------------------------------------------------ */

static void write_text(const char *p, const char *text)
{
        spit(p, (Bytes){.p = (unsigned char *) text, .n = strlen(text)});
}

static void assert_not_a_log(const char *p, const char *says)
{
        GrantlogVerifyOptions o = {.threads = 1, .trust = {.first_named = true}};
        GrantlogReport r;
        char err[512] = "";

        assert_reader_refuses(p, -EMEDIUMTYPE, says);
        grantlog_verify_database(p, &o, &r);
        if (r.verdict != GRANTLOG_NOT_A_LOG)
                fail_msg("%s: verdict %d: %s", p, r.verdict, r.why);
        assert_non_null(strstr(r.why, says));
        assert_int_equal(export_result(p, err, sizeof(err)), -EMEDIUMTYPE);
}

static void test_not_a_grant_log(void **state)
{
        char other[160];
        GrantlogVerifyOptions o = {.threads = 1, .trust = {.first_named = true}};
        GrantlogReport r;

        /* not SQLite at all */
        write_text(path, "{\"seq\":1}\nthis is no database, just some text long enough\n");
        assert_not_a_log(path, "not an SQLite file");
        /* an empty file */
        write_text(path, "");
        assert_not_a_log(path, "no records and signed tables");
        /* SQLite, without the tables: another application's database, or half of ours */
        unlink(path);
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "CREATE TABLE keys (kid TEXT PRIMARY KEY, blob BLOB)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
        assert_not_a_log(path, "no records and signed tables");
        sql_exec(path, "CREATE TABLE records (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, "
                       "event TEXT NOT NULL, body TEXT NOT NULL, hash TEXT NOT NULL)");
        assert_not_a_log(path, "no records and signed tables");
        /* a directory */
        snprintf(other, sizeof(other), "%s/dir.db", dir);
        assert_int_equal(mkdir(other, 0700), 0);
        assert_not_a_log(other, "not a regular file");
        /* nothing there: not a verdict on any log */
        snprintf(other, sizeof(other), "%s/none.db", dir);
        assert_reader_refuses(other, -ENOENT, "no such audit database");
        grantlog_verify_database(other, &o, &r);
        assert_int_equal(r.verdict, GRANTLOG_UNREADABLE);
        assert_int_equal(access(other, F_OK), -1); /* and not created */
}

/* The writer refuses a file that is no grant log without writing a byte of it. (An empty file
 * is a new log.) */
static void test_writer_leaves_a_file_that_is_no_log_alone(void **state)
{
        GrantlogOptions opt = options(10, YEAR_MS, 0);
        GrantlogWriter *l = NULL;

        write_text(path, "{\"seq\":1}\nthis is no database, just some text long enough\n");
        Bytes text = slurp(path);
        capture_begin();
        int r = grantlog_writer_open(path, false, &opt, signer(key), &faults, &l);
        char *log = capture_end();
        bool said = strstr(log, "not a database");
        free(log);
        assert_true(r < 0);
        assert_true(said);
        Bytes after = slurp(path);
        assert_int_equal(after.n, text.n);
        assert_memory_equal(after.p, text.p, text.n);
        bytes_free(&after);
        bytes_free(&text);

        /* an empty file becomes a new log */
        write_text(path, "");
        capture_begin();
        r = grantlog_writer_open(path, false, &opt, signer(key), &faults, &l);
        free(capture_end());
        assert_int_equal(r, 0);
        assert_int_equal(grantlog_writer_last_seq(l), 1);
        grantlog_writer_close(l);
        assert_intact(1);

        /* another application's SQLite database is not adopted as a new log */
        unlink(path);
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db,
                                      "CREATE TABLE keys (kid TEXT PRIMARY KEY, blob BLOB);"
                                      "INSERT INTO keys VALUES ('k', x'00');"
                                      "PRAGMA user_version = 0",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
        assert_writer_refuses(path, &opt, key, &faults, -EMEDIUMTYPE, NULL);
        assert_int_equal(sql_int(path, "SELECT COUNT(*) FROM sqlite_schema WHERE name IN "
                                       "('records', 'signed')"),
                         0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_version_0_is_migrated_in_place, setup, teardown),
            cmocka_unit_test_setup_teardown(test_newer_version_is_refused, setup, teardown),
            cmocka_unit_test_setup_teardown(
                test_newer_version_in_another_journal_mode_is_left_alone, setup, teardown),
            cmocka_unit_test_setup_teardown(test_not_a_grant_log, setup, teardown),
            cmocka_unit_test_setup_teardown(test_writer_leaves_a_file_that_is_no_log_alone, setup,
                                            teardown),
        };

        if (sodium_init() < 0 || signer_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
