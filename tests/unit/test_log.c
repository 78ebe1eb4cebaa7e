/* The log: the journal fields of a structured entry, plain lines when stderr is not the
 * journal, and the flood guard (driven by an explicit clock, then through the real one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"
#include "macro.h"
#include "messageid.h"

#define SEC 1000000ULL

/* Field i of the entry as a string. */
static const char *field(const LogJournalEntry *e, size_t i)
{
        static char buf[sizeof(e->message)];

        memcpy(buf, e->iov[i].iov_base, e->iov[i].iov_len);
        buf[e->iov[i].iov_len] = 0;
        return buf;
}

static bool has_field(const LogJournalEntry *e, size_t n, const char *want)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(field(e, i), want) == 0)
                        return true;
        return false;
}

static bool has_name(const LogJournalEntry *e, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (strncmp(field(e, i), name, strlen(name)) == 0)
                        return true;
        return false;
}

static void test_plain_entry(void **state)
{
        LogJournalEntry e;
        size_t n;

        log_setup("brokerd");
        n = log_journal_entry(&e, LOG_WARNING, 0, NULL, "hello");
        assert_int_equal(n, 3);
        assert_string_equal(field(&e, 0), "MESSAGE=hello");
        assert_true(has_field(&e, n, "PRIORITY=4"));
        assert_true(has_field(&e, n, "SYSLOG_IDENTIFIER=brokerd"));
        assert_false(has_name(&e, n, "ERRNO="));
}

static void test_errno_is_positive(void **state)
{
        LogJournalEntry e;
        size_t n = log_journal_entry(&e, LOG_ERR, -ENOENT, NULL, "gone");

        assert_true(has_field(&e, n, "ERRNO=2"));
        n = log_journal_entry(&e, LOG_ERR, EACCES, NULL, "no");
        assert_true(has_field(&e, n, "ERRNO=13"));
}

static void test_all_fields(void **state)
{
        LogJournalEntry e;
        LogFields f = {.message_id = MESSAGE_ID_UPSTREAM_FAILURE,
                       .has_peer = true,
                       .peer_uid = 0, /* root is a uid like any other */
                       .peer_pid = 4242,
                       .peer_unit = "web.service",
                       .rule = "web",
                       .kid = "kid-1",
                       .upstream = "aws",
                       .suppressed = 7};
        size_t n = log_journal_entry(&e, LOG_ERR, EIO, &f, "line\nwith a newline");

        assert_int_equal(n, LOG_JOURNAL_FIELDS_MAX);
        /* a newline stays in the value: sd_journal_sendv() serialises such values in binary */
        assert_string_equal(field(&e, 0), "MESSAGE=line\nwith a newline");
        assert_true(has_field(&e, n, "MESSAGE_ID=" MESSAGE_ID_UPSTREAM_FAILURE));
        assert_true(has_field(&e, n, "PEER_UID=0"));
        assert_true(has_field(&e, n, "PEER_PID=4242"));
        assert_true(has_field(&e, n, "PEER_UNIT=web.service"));
        assert_true(has_field(&e, n, "RULE=web"));
        assert_true(has_field(&e, n, "KID=kid-1"));
        assert_true(has_field(&e, n, "UPSTREAM=aws"));
        assert_true(has_field(&e, n, "SUPPRESSED=7"));
        assert_true(has_field(&e, n, "ERRNO=5"));
}

static void test_unset_fields_left_out(void **state)
{
        LogJournalEntry e;
        size_t n = log_journal_entry(&e, LOG_INFO, 0,
                                     &(LogFields){.message_id = MESSAGE_ID_STARTED}, "serving");

        assert_int_equal(n, 4);
        assert_false(has_name(&e, n, "PEER_UID="));
        assert_false(has_name(&e, n, "PEER_PID="));
        assert_false(has_name(&e, n, "RULE="));
        assert_false(has_name(&e, n, "SUPPRESSED="));
        /* a peer without a pid */
        n = log_journal_entry(&e, LOG_INFO, 0, &(LogFields){.has_peer = true, .peer_uid = 33}, "x");
        assert_true(has_field(&e, n, "PEER_UID=33"));
        assert_false(has_name(&e, n, "PEER_PID="));
}

static void test_long_values_are_cut(void **state)
{
        LogJournalEntry e;
        char big[LOG_LINE_MAX * 2], name[1000];
        size_t n;

        memset(big, 'm', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        memset(name, 'r', sizeof(name) - 1);
        name[sizeof(name) - 1] = 0;
        n = log_journal_entry(&e, LOG_INFO, 0, &(LogFields){.rule = name}, big);
        assert_int_equal(e.iov[0].iov_len, sizeof(e.message) - 1);
        for (size_t i = 0; i < n; i++)
                if (strncmp(field(&e, i), "RULE=", 5) == 0)
                        assert_int_equal(e.iov[i].iov_len, sizeof(e.names[0]) - 1);
}

static void test_message_ids_are_128_bit_and_distinct(void **state)
{
        static const char *const ids[] = {
            MESSAGE_ID_STARTED,
            MESSAGE_ID_STOPPING,
            MESSAGE_ID_RELOADED,
            MESSAGE_ID_RELOAD_FAILED,
            MESSAGE_ID_DENY_SUMMARY,
            MESSAGE_ID_KEY_CREATED,
            MESSAGE_ID_KEY_ROTATED,
            MESSAGE_ID_KEY_RETIRED,
            MESSAGE_ID_KEY_REVOKED,
            MESSAGE_ID_KEY_REMOVED,
            MESSAGE_ID_UPSTREAM_FAILURE,
            MESSAGE_ID_AUDIT_FAILURE,
            MESSAGE_ID_AUDIT_RECOVERED,
            MESSAGE_ID_AUDIT_RECORD_LOST,
            MESSAGE_ID_CALLER_UNIDENTIFIED,
            MESSAGE_ID_CONNECTION_REFUSED,
            MESSAGE_ID_PRIVILEGES_DROPPED,
            MESSAGE_ID_PUBLISH_FAILURE,
            MESSAGE_ID_NO_SIGNING_KEY,
        };

        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                assert_int_equal(strlen(ids[i]), 32);
                assert_int_equal(strspn(ids[i], "0123456789abcdef"), 32);
                for (size_t j = 0; j < i; j++)
                        assert_string_not_equal(ids[i], ids[j]);
        }
        assert_string_equal(message_id_of_key_event("key_rotated"), MESSAGE_ID_KEY_ROTATED);
        assert_null(message_id_of_key_event("checkpoint"));
        assert_null(message_id_of_key_event(NULL));
}

static void test_ratelimit_one_per_interval(void **state)
{
        LogRatelimit rl = LOG_RATELIMIT_INIT(10);
        uint64_t held = 99, t0 = 1000 * SEC;

        assert_true(log_ratelimit_pass(&rl, t0, &held));
        assert_int_equal(held, 0);
        for (int i = 0; i < 500; i++)
                assert_false(log_ratelimit_pass(&rl, t0 + i * 10000, &held));
        assert_false(log_ratelimit_pass(&rl, t0 + 10 * SEC - 1, &held));
        /* the interval is over: one goes out and says how many did not */
        assert_true(log_ratelimit_pass(&rl, t0 + 10 * SEC, &held));
        assert_int_equal(held, 501);
        assert_false(log_ratelimit_pass(&rl, t0 + 11 * SEC, &held));
        /* a quiet spell: the next one goes out, with the one held back meanwhile */
        assert_true(log_ratelimit_pass(&rl, t0 + 100 * SEC, &held));
        assert_int_equal(held, 1);
        assert_true(log_ratelimit_pass(&rl, t0 + 200 * SEC, &held));
        assert_int_equal(held, 0);
}

static void test_ratelimit_at_clock_zero(void **state)
{
        LogRatelimit rl = LOG_RATELIMIT_INIT(1);
        uint64_t held;

        /* 0 means "never logged": a first message at time 0 still starts an interval */
        assert_true(log_ratelimit_pass(&rl, 0, &held));
        assert_false(log_ratelimit_pass(&rl, 1, &held));
}

/* Runs `fn` with stderr going to a file; returns what it wrote (malloc'd). */
static char *capture_stderr(void (*fn)(void))
{
        char path[] = "/tmp/test-log-XXXXXX";
        int fd = mkstemp(path), saved = dup(STDERR_FILENO);
        char *buf = calloc(1, 65536);
        ssize_t n;

        assert_true(fd >= 0 && saved >= 0 && buf);
        unlink(path);
        fflush(stderr);
        dup2(fd, STDERR_FILENO);
        fn();
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        n = pread(fd, buf, 65535, 0);
        assert_true(n >= 0);
        close(fd);
        return buf;
}

static void flood(void)
{
        static LogRatelimit rl = LOG_RATELIMIT_INIT(3600);

        for (int i = 0; i < 100; i++)
                log_struct_ratelimited(&rl, LOG_WARNING, 0,
                                       &(LogFields){.message_id = MESSAGE_ID_CONNECTION_REFUSED},
                                       "Out of file descriptors; refusing a connection (%d)", i);
        /* an interval later (the clock cannot be moved: start the interval again instead) */
        rl.begin_usec = 1;
        log_struct_ratelimited(&rl, LOG_WARNING, 0, NULL, "after %d", 100);
}

static void test_ratelimited_lines(void **state)
{
        _cleanup_free_ char *out = NULL;

        unsetenv("JOURNAL_STREAM");
        log_setup("brokerd");
        out = capture_stderr(flood);
        assert_string_equal(out, "brokerd: Out of file descriptors; refusing a connection (0)\n"
                                 "brokerd: after 100 (99 similar messages suppressed)\n");
}

static void plain_lines(void)
{
        log_error_errno(ENOENT, "Cannot open %s: %m", "/x");
        log_struct(LOG_NOTICE, 0, &(LogFields){.message_id = MESSAGE_ID_KEY_ROTATED, .kid = "k1"},
                   "key_rotated: EdDSA key %s", "k1");
        log_debug("not shown at the default level");
}

static void test_plain_lines_unchanged(void **state)
{
        _cleanup_free_ char *out = NULL;

        /* JOURNAL_STREAM naming another file is not the journal */
        setenv("JOURNAL_STREAM", "1:1", 1);
        log_setup("brokerd");
        assert_false(log_to_journal());
        out = capture_stderr(plain_lines);
        assert_string_equal(out, "brokerd: Cannot open /x: No such file or directory\n"
                                 "brokerd: key_rotated: EdDSA key k1\n");
        unsetenv("JOURNAL_STREAM");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_plain_entry),
            cmocka_unit_test(test_errno_is_positive),
            cmocka_unit_test(test_all_fields),
            cmocka_unit_test(test_unset_fields_left_out),
            cmocka_unit_test(test_long_values_are_cut),
            cmocka_unit_test(test_message_ids_are_128_bit_and_distinct),
            cmocka_unit_test(test_ratelimit_one_per_interval),
            cmocka_unit_test(test_ratelimit_at_clock_zero),
            cmocka_unit_test(test_ratelimited_lines),
            cmocka_unit_test(test_plain_lines_unchanged),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
