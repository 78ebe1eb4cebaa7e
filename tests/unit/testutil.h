/* Fixtures shared by the unit tests (tests/unit/test_*.c).
 *
 * Contract:
 * - Include it after <cmocka.h>: a helper that cannot do its job fails the calling test with
 *   cmocka's assert_* / fail_msg, except those meant for a group or test setup (tmpdir_make,
 *   tmpdir_remove), which return 0 or -1 as a cmocka setup or teardown does.
 * - Everything is static inline: a test pays for, and is warned about, nothing it does not call.
 *   State kept between two calls (the captured stderr, the saved file size limit) exists once
 *   per test binary; the helpers are for the test's own thread, not for threads it starts.
 * - Always there: a temporary directory and paths below it, files as bytes, stderr captured
 *   through a pipe, writes that fail on demand.
 * - Defined TESTUTIL_GRANTLOG before the include: the grant log's harness too (an audit key as
 *   a GrantlogSigner, records appended with the clock passed in, raw SQL on a log's file as any
 *   process with write access to it could run, a head re-signed by a key of one's choice).
 * - Defined TESTUTIL_MASTER_KEY before the include: a random master key and its cleanup. */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a temporary directory ---------------------------------------------------------------- */

/* Makes a new directory /tmp/test-NAME-XXXXXX (mode 0700) and writes its path into dir. 0, or
 * -1 with errno set. */
static inline int tmpdir_make(char *dir, size_t size, const char *name)
{
        int n = snprintf(dir, size, "/tmp/test-%s-XXXXXX", name);

        if (n < 0 || (size_t) n >= size) {
                errno = ENAMETOOLONG;
                return -1;
        }
        return mkdtemp(dir) ? 0 : -1;
}

static inline int tmpdir_remove_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
        return remove(p);
}

/* Removes dir and everything below it, depth first, following no symbolic link. 0, or -1. */
static inline int tmpdir_remove(const char *dir)
{
        return nftw(dir, tmpdir_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* dir/rel, in one of 16 rotating buffers so that one call can take several such paths. A path
 * longer than PATH_MAX fails the test. */
static inline const char *path_below(const char *dir, const char *rel)
{
        static char bufs[16][PATH_MAX];
        static unsigned i;
        char *b = bufs[i++ % 16];

        if (snprintf(b, PATH_MAX, "%s/%s", dir, rel) >= PATH_MAX)
                fail_msg("path too long: %s/%s", dir, rel);
        return b;
}

/* ---- files as bytes ----------------------------------------------------------------------- */

typedef struct Bytes {
        unsigned char *p; /* malloc'd, with a NUL after the n bytes; NULL: no file */
        size_t n;
} Bytes;

static inline Bytes slurp_fd(int fd, const char *path)
{
        Bytes b = {};
        struct stat st;
        size_t got = 0;

        assert_int_equal(fstat(fd, &st), 0);
        b.n = (size_t) st.st_size;
        b.p = malloc(b.n + 1);
        assert_non_null(b.p);
        while (got < b.n) {
                ssize_t r = read(fd, b.p + got, b.n - got);
                if (r <= 0)
                        fail_msg("cannot read %s: %s", path, r < 0 ? strerror(errno) : "short");
                got += (size_t) r;
        }
        b.p[b.n] = 0;
        close(fd);
        return b;
}

/* The whole file; it must exist and be readable. */
static inline Bytes slurp(const char *path)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                fail_msg("cannot open %s: %s", path, strerror(errno));
        return slurp_fd(fd, path);
}

/* The whole file, or {NULL, 0} when there is none. */
static inline Bytes slurp_optional(const char *path)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0 && errno == ENOENT)
                return (Bytes){};
        if (fd < 0)
                fail_msg("cannot open %s: %s", path, strerror(errno));
        return slurp_fd(fd, path);
}

/* Replaces the file's content (the same inode, if it exists) with b. */
static inline void spit(const char *path, Bytes b)
{
        FILE *f = fopen(path, "wb");

        if (!f)
                fail_msg("cannot write %s: %s", path, strerror(errno));
        assert_int_equal(fwrite(b.p, 1, b.n, f), b.n);
        assert_int_equal(fclose(f), 0);
}

static inline void bytes_free(Bytes *b)
{
        free(b->p);
        *b = (Bytes){};
}

/* ---- stderr, captured ----------------------------------------------------------------------- */

/* What the code under test writes to stderr between capture_begin() and capture_end(), through
 * a pipe (a file would be subject to a test's RLIMIT_FSIZE too). At most 64 KiB is kept. */
typedef struct CaptureState {
        int read_fd, saved_fd;
} CaptureState;

static inline CaptureState *capture_state(void)
{
        static CaptureState s = {-1, -1};
        return &s;
}

static inline void capture_begin(void)
{
        CaptureState *s = capture_state();
        int p[2];

        assert_int_equal(s->saved_fd, -1); /* not nested */
        assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
        fflush(stderr);
        s->saved_fd = dup(STDERR_FILENO);
        assert_true(s->saved_fd >= 0);
        assert_true(dup2(p[1], STDERR_FILENO) >= 0);
        close(p[1]);
        s->read_fd = p[0];
}

/* The captured text (malloc'd). */
static inline char *capture_end(void)
{
        CaptureState *s = capture_state();
        char *buf = malloc(65536);
        ssize_t n;

        assert_true(s->saved_fd >= 0);
        fflush(stderr);
        assert_true(dup2(s->saved_fd, STDERR_FILENO) >= 0);
        close(s->saved_fd);
        s->saved_fd = -1;
        assert_non_null(buf);
        n = read(s->read_fd, buf, 65535);
        close(s->read_fd);
        s->read_fd = -1;
        buf[n > 0 ? n : 0] = '\0';
        return buf;
}

static inline void assert_logged(const char *log, const char *want)
{
        if (!strstr(log, want))
                fail_msg("log \"%s\"\n  does not contain \"%s\"", log, want);
}

/* ---- writes that fail --------------------------------------------------------------------- */

/* RLIMIT_FSIZE fails every file write past the limit with EFBIG, for root too, so SQLite can
 * write neither its journal nor its database: a disk that refuses writes, on demand. SIGXFSZ is
 * ignored meanwhile, so that the write returns the error instead of killing the test. */
typedef struct WritesState {
        struct rlimit saved;
        struct sigaction saved_sigxfsz;
        bool failing;
} WritesState;

static inline WritesState *writes_state(void)
{
        static WritesState s;
        return &s;
}

/* From here on every file write fails; stderr is captured. */
static inline void writes_fail(void)
{
        WritesState *s = writes_state();
        struct sigaction ign = {.sa_handler = SIG_IGN};
        struct rlimit rl;

        assert_false(s->failing);
        capture_begin();
        assert_int_equal(sigaction(SIGXFSZ, &ign, &s->saved_sigxfsz), 0);
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &s->saved), 0);
        rl = s->saved;
        rl.rlim_cur = 1;
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
        s->failing = true;
}

/* Writes work again; returns what was logged meanwhile (malloc'd). */
static inline char *writes_restore(void)
{
        WritesState *s = writes_state();

        assert_true(s->failing);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &s->saved), 0);
        assert_int_equal(sigaction(SIGXFSZ, &s->saved_sigxfsz, NULL), 0);
        s->failing = false;
        return capture_end();
}

/* ---- the grant log's harness (TESTUTIL_GRANTLOG) ------------------------------------------- */

#ifdef TESTUTIL_GRANTLOG
#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>

#include "grantlog/format.h"
#include "grantlog/writer.h"
#include "keys/signer.h"
#include "macro.h"
#include "timeutil.h"

static inline int audit_sign_with(void *ctx, const void *msg, size_t len, unsigned char sig[64])
{
        unsigned char buf[SIGNATURE_MAX];
        size_t n;
        int r = signing_key_sign(ctx, msg, len, buf, &n);

        if (r >= 0)
                memcpy(sig, buf, 64);
        return r;
}

/* An EdDSA key's public half, base64url, as the log's audit_key records hold it. */
static inline const char *public_key(const SigningKey *k)
{
        return json_string_value(json_object_get(k->jwk, "x"));
}

/* The grant log's view of an audit key: its id, its public half, and a way to sign with it.
 * One at a time (the writer copies it). */
static inline const GrantlogSigner *signer(SigningKey *k)
{
        static GrantlogSigner s;

        s = (GrantlogSigner){.sign = audit_sign_with, .ctx = k};
        snprintf(s.key_id, sizeof(s.key_id), "%s", k->kid);
        snprintf(s.public_key, sizeof(s.public_key), "%s", public_key(k));
        return &s;
}

/* A base64url signature by k over msg, as whoever holds k could make it. */
static inline void sign_b64(SigningKey *k, const char *msg, char out[GRANTLOG_SIG_B64])
{
        unsigned char sig[SIGNATURE_MAX];
        size_t len;

        assert_int_equal(signing_key_sign(k, msg, strlen(msg), sig, &len), 0);
        assert_int_equal(len, 64);
        sodium_bin2base64(out, GRANTLOG_SIG_B64, sig, len,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static inline GrantlogOptions options(uint64_t every, int64_t interval_ms, int64_t retention_ms)
{
        return (GrantlogOptions){.checkpoint_every = every,
                                 .checkpoint_interval_ms = interval_ms,
                                 .retention_ms = retention_ms};
}

/* Appends n records of `event` written at time t ({"time", "event", "n": 0..n-1}), with `now`
 * as the writer's clock (n may be 0: only a due or forced checkpoint). */
static inline int append(GrantlogWriter *l, size_t n, const char *event, int64_t t, bool force,
                         int64_t now)
{
        GrantlogEntry *entries = calloc(n + 1, sizeof(GrantlogEntry));
        char ts[TIME_RFC3339_MAX];
        int r;

        assert_non_null(entries);
        time_format_rfc3339_ms(t, ts);
        for (size_t i = 0; i < n; i++) {
                json_t *rec =
                    json_pack("{s:s, s:s, s:I}", "time", ts, "event", event, "n", (json_int_t) i);

                assert_non_null(rec);
                assert_int_equal(grantlog_entry_prepare(rec, t, &entries[i]), 0);
                json_decref(rec);
        }
        r = grantlog_writer_append(l, entries, n, force, now);
        for (size_t i = 0; i < n; i++)
                grantlog_entry_done(&entries[i]);
        free(entries);
        return r;
}

/* A read-write connection of our own to the log at path: what any process that may write the
 * file can do to it. */
static inline sqlite3 *sql_open(const char *path)
{
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        return db;
}

/* Runs SQL (sqlite3_mprintf's format: %q, %Q, %lld...) on its own connection. */
static inline void sql_exec(const char *path, const char *fmt, ...)
{
        sqlite3 *db = sql_open(path);
        char *sql, *err = NULL;
        va_list ap;

        va_start(ap, fmt);
        sql = sqlite3_vmprintf(fmt, ap);
        va_end(ap);
        assert_non_null(sql);
        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
                fail_msg("%s: %s", sql, err);
        sqlite3_free(sql);
        sqlite3_close(db);
}

/* The first column of the first row of a query (sqlite3_mprintf's format); there must be one. */
static inline int64_t sql_int(const char *path, const char *fmt, ...)
{
        sqlite3 *db = sql_open(path);
        sqlite3_stmt *st = NULL;
        char *sql;
        int64_t v;
        va_list ap;

        va_start(ap, fmt);
        sql = sqlite3_vmprintf(fmt, ap);
        va_end(ap);
        assert_non_null(sql);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
                fail_msg("%s: %s", sql, sqlite3_errmsg(db));
        if (sqlite3_step(st) != SQLITE_ROW)
                fail_msg("%s: no row", sql);
        v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_free(sql);
        sqlite3_close(db);
        return v;
}

/* Rewrites the signed head to sign the log's last record with k, as whoever holds k could. */
static inline void resign_head(const char *path, SigningKey *k)
{
        sqlite3 *db = sql_open(path);
        sqlite3_stmt *st = NULL;
        const char *time = "2026-01-01T00:00:00.000Z";
        char hash[GRANTLOG_HASH_HEX], sig[GRANTLOG_SIG_B64];
        int64_t seq;

        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT seq, hash FROM records ORDER BY seq DESC "
                                            "LIMIT 1",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        seq = sqlite3_column_int64(st, 0);
        snprintf(hash, sizeof(hash), "%s", sqlite3_column_text(st, 1));
        sqlite3_finalize(st);
        sqlite3_close(db);

        char *statement = grantlog_statement("head", (uint64_t) seq, hash, time, k->kid);
        assert_non_null(statement);
        sign_b64(k, statement, sig);
        free(statement);
        sql_exec(path,
                 "UPDATE signed SET seq = %lld, hash = %Q, time = %Q, key_id = %Q, "
                 "public_key = %Q, signature = %Q WHERE name = 'head'",
                 (long long) seq, hash, time, k->kid, public_key(k), sig);
        assert_int_equal(sql_int(path, "SELECT COUNT(*) FROM signed WHERE name = 'head'"), 1);
}

/* grantlog_writer_open() (not creating) refuses the log at path with `want`, leaves *ret as it
 * was, logs `logged` (unless NULL) and does not change a byte of the file. (What it allocated is
 * released before a failure is reported: a test that fails on purpose leaks nothing.) */
static inline void assert_writer_refuses(const char *path, const GrantlogOptions *opt,
                                         SigningKey *k, GrantlogFaults *faults, int want,
                                         const char *logged)
{
        GrantlogWriter *l = (GrantlogWriter *) 0x1;
        Bytes before = slurp(path), after;
        char *log, said[1024];
        bool same, said_it;
        int r;

        capture_begin();
        r = grantlog_writer_open(path, false, opt, signer(k), faults, &l);
        log = capture_end();
        if (r >= 0 && l != (GrantlogWriter *) 0x1)
                grantlog_writer_close(l);
        after = slurp(path);
        same = after.n == before.n && memcmp(after.p, before.p, before.n) == 0;
        said_it = !logged || strstr(log, logged);
        snprintf(said, sizeof(said), "%s", log);
        free(log);
        bytes_free(&before);
        bytes_free(&after);
        if (r != want)
                fail_msg("grantlog_writer_open(%s) = %d (%s), wanted %d; log: %s", path, r,
                         strerror(r < 0 ? -r : r), want, said);
        assert_ptr_equal(l, (GrantlogWriter *) 0x1);
        if (!said_it)
                fail_msg("log \"%s\"\n  does not contain \"%s\"", said, logged);
        if (!same)
                fail_msg("%s changed, though the writer refused it", path);
}
#endif /* TESTUTIL_GRANTLOG */

/* ---- a master key (TESTUTIL_MASTER_KEY) --------------------------------------------------- */

#ifdef TESTUTIL_MASTER_KEY
#include <sodium.h>

#include "keys/seal.h"

/* A master key of random bytes, as if loaded from `source`. */
static inline MasterKey *master_key_random(const char *source)
{
        unsigned char raw[MASTER_KEY_BYTES];
        MasterKey *m = NULL;

        randombytes_buf(raw, sizeof(raw));
        assert_int_equal(master_key_new(raw, source, &m), 0);
        sodium_memzero(raw, sizeof(raw));
        return m;
}

static inline void master_key_freep(MasterKey **m)
{
        master_key_free(*m);
}
#endif /* TESTUTIL_MASTER_KEY */
