/* Per-identity token buckets (driven by an explicit clock) and the per-uid connection counter. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "macro.h"
#include "runtime/ratelimit.h"

#define SEC 1000000ULL
#define T0  (1000 * SEC) /* an arbitrary monotonic start */

static int setup(void **state)
{
        RateLimiter *r = NULL;

        if (ratelimit_new(&r) < 0)
                return -1;
        *state = r;
        return 0;
}

static int teardown(void **state)
{
        ratelimit_free(*state);
        return 0;
}

/* Number of consecutive requests admitted at time `now` (stops at `limit`). */
static unsigned admitted(RateLimiter *r, uid_t uid, const char *cg, uint64_t rate, uint64_t burst,
                         uint64_t now, unsigned limit)
{
        unsigned n = 0;
        while (n < limit && ratelimit_take(r, uid, cg, rate, burst, now))
                n++;
        return n;
}

static void test_burst_then_refused(void **state)
{
        RateLimiter *r = *state;

        /* A new identity starts with a full bucket: exactly `burst` requests at one instant. */
        assert_int_equal(admitted(r, 1000, "/a", 10, 5, T0, 100), 5);
        assert_false(ratelimit_take(r, 1000, "/a", 10, 5, T0));
        /* Refusals do not consume anything or push the refill back. */
        for (int i = 0; i < 100; i++)
                assert_false(ratelimit_take(r, 1000, "/a", 10, 5, T0 + 50000));
        assert_true(ratelimit_take(r, 1000, "/a", 10, 5, T0 + 100000));
        assert_false(ratelimit_take(r, 1000, "/a", 10, 5, T0 + 100000));
}

static void test_refill_rate(void **state)
{
        RateLimiter *r = *state;
        const uint64_t rate = 10, burst = 20; /* one token every 100 ms */

        assert_int_equal(admitted(r, 1, "/x", rate, burst, T0, 1000), 20);

        /* 99 ms: not yet a whole token. */
        assert_false(ratelimit_take(r, 1, "/x", rate, burst, T0 + 99000));
        /* 100 ms after the bucket emptied: one. */
        assert_int_equal(admitted(r, 1, "/x", rate, burst, T0 + 100000, 1000), 1);
        /* One second more: ten. */
        assert_int_equal(admitted(r, 1, "/x", rate, burst, T0 + 1100000, 1000), 10);
        /* Half a token now and half later add up. */
        assert_false(ratelimit_take(r, 1, "/x", rate, burst, T0 + 1150000));
        assert_true(ratelimit_take(r, 1, "/x", rate, burst, T0 + 1200000));
        /* A long pause refills to burst, never beyond. */
        assert_int_equal(admitted(r, 1, "/x", rate, burst, T0 + 3600 * SEC, 1000), 20);

        /* Sustained: 10 per second over 10 seconds, in 1 ms steps, at most burst + 100. */
        unsigned n = 0;
        uint64_t start = T0 + 7200 * SEC;
        for (uint64_t t = start; t < start + 10 * SEC; t += 1000)
                n += ratelimit_take(r, 1, "/x", rate, burst, t);
        assert_true(n >= 20 + 99 && n <= 20 + 100);
}

static void test_high_rate(void **state)
{
        RateLimiter *r = *state;

        /* The defaults: 1000/s, burst 2000. */
        assert_int_equal(admitted(r, 5, "/d", 1000, 2000, T0, 5000), 2000);
        assert_int_equal(admitted(r, 5, "/d", 1000, 2000, T0 + SEC / 2, 5000), 500);
        assert_int_equal(admitted(r, 5, "/d", 1000, 2000, T0 + SEC / 2 + 1000, 5000), 1);
}

static void test_rate_zero_disables(void **state)
{
        RateLimiter *r = *state;

        assert_int_equal(admitted(r, 7, "/z", 0, 0, T0, 100000), 100000);
        assert_int_equal(admitted(r, 7, "/z", 0, 1, T0, 1000), 1000);
}

static void test_clock_going_backwards(void **state)
{
        RateLimiter *r = *state;

        assert_int_equal(admitted(r, 8, "/b", 1, 3, T0 + 10 * SEC, 10), 3);
        /* An earlier timestamp neither refills nor wraps around into a huge refill. */
        assert_false(ratelimit_take(r, 8, "/b", 1, 3, T0));
        assert_false(ratelimit_take(r, 8, "/b", 1, 3, 0));
        assert_true(ratelimit_take(r, 8, "/b", 1, 3, T0 + 11 * SEC));
}

static void test_identities_separate(void **state)
{
        RateLimiter *r = *state;

        assert_int_equal(admitted(r, 1000, "/system.slice/a.service", 1, 2, T0, 10), 2);
        /* Another uid in the same cgroup, and the same uid in another cgroup: own buckets. */
        assert_int_equal(admitted(r, 1001, "/system.slice/a.service", 1, 2, T0, 10), 2);
        assert_int_equal(admitted(r, 1000, "/system.slice/b.service", 1, 2, T0, 10), 2);
        assert_int_equal(admitted(r, 1000, NULL, 1, 2, T0, 10), 2);
        assert_int_equal(admitted(r, 0, "/system.slice/a.service", 1, 2, T0, 10), 2);
        /* A cgroup that only differs by a prefix or suffix is another identity. */
        assert_int_equal(admitted(r, 1000, "/system.slice/a.servic", 1, 2, T0, 10), 2);
        assert_int_equal(admitted(r, 1000, "/system.slice/a.service/x", 1, 2, T0, 10), 2);
        /* And the first is still empty. */
        assert_false(ratelimit_take(r, 1000, "/system.slice/a.service", 1, 2, T0));
        assert_false(ratelimit_take(r, 1001, "/system.slice/a.service", 1, 2, T0));
}

static void cgroup_name(char *buf, size_t n, unsigned i)
{
        snprintf(buf, n, "/user.slice/user-1000.slice/app-%u.scope", i);
}

/* More identities than the table holds: newcomers are still admitted. */
static void test_table_full_admits_newcomers(void **state)
{
        RateLimiter *r = *state;
        const unsigned total = RATE_IDENTITIES_MAX + 2000;
        char cg[128];

        /* Each identity drains its bucket (burst 2) at its own time; none refills in time. */
        for (unsigned i = 0; i < total; i++) {
                cgroup_name(cg, sizeof(cg), i);
                uint64_t now = T0 + i;
                if (admitted(r, 1000, cg, 1, 2, now, 10) != 2)
                        fail_msg("identity %u (of %u) not admitted", i, total);
        }
        /* The most recent identities are remembered: still drained. */
        for (unsigned i = total - 100; i < total; i++) {
                cgroup_name(cg, sizeof(cg), i);
                if (ratelimit_take(r, 1000, cg, 1, 2, T0 + total))
                        fail_msg("recent identity %u was reset", i);
        }
}

/* When the table is full, buckets that have refilled are dropped first: an identity that is
 * still drained keeps its state however many idle identities there are. */
static void test_table_full_keeps_drained(void **state)
{
        RateLimiter *r = *state;
        char cg[128];

        /* Fill the table with identities that used one token long ago (rate 1, burst 2: full
         * again after a second). */
        for (unsigned i = 0; i < RATE_IDENTITIES_MAX - 1; i++) {
                cgroup_name(cg, sizeof(cg), i);
                assert_true(ratelimit_take(r, 2000, cg, 1, 2, T0));
        }
        /* The busy identity drains its bucket later, when the others are full and idle. */
        const uint64_t later = T0 + 60 * SEC;
        assert_int_equal(admitted(r, 0, "/system.slice/busy.service", 1, 2, later, 10), 2);

        /* The table is now full: newcomers push others out. */
        for (unsigned i = 0; i < 3 * RATE_IDENTITIES_MAX; i += 997) {
                cgroup_name(cg, sizeof(cg), 100000 + i);
                assert_true(ratelimit_take(r, 3000, cg, 1, 2, later));
        }
        /* ... but not the drained one: it is not reset to a full bucket. */
        assert_false(ratelimit_take(r, 0, "/system.slice/busy.service", 1, 2, later));
        assert_false(ratelimit_take(r, 0, "/system.slice/busy.service", 1, 2, later + SEC / 2));
        assert_true(ratelimit_take(r, 0, "/system.slice/busy.service", 1, 2, later + SEC));
}

/* With every bucket drained, the one idle longest goes; recent ones stay. */
static void test_table_full_evicts_oldest(void **state)
{
        RateLimiter *r = *state;
        char cg[128];
        const uint64_t rate = 1, burst = 2; /* takes 2 s to refill */

        /* Identity i drains its bucket at T0 + i * 100 us: all within 0.82 s. */
        for (unsigned i = 0; i < RATE_IDENTITIES_MAX; i++) {
                cgroup_name(cg, sizeof(cg), i);
                assert_int_equal(admitted(r, 4000, cg, rate, burst, T0 + i * 100, 10), burst);
        }
        const uint64_t now = T0 + RATE_IDENTITIES_MAX * 100 + 1;
        /* One newcomer: identity 0, the longest idle, is forgotten. */
        assert_true(ratelimit_take(r, 4001, "/new", rate, burst, now));
        /* Identity 0 returns with a fresh, full bucket (had it been kept it would hold 0.82
         * tokens and be refused); that in turn evicts identity 1. */
        cgroup_name(cg, sizeof(cg), 0);
        assert_true(ratelimit_take(r, 4000, cg, rate, burst, now));
        /* The newest identities are still drained. */
        for (unsigned i = RATE_IDENTITIES_MAX - 10; i < RATE_IDENTITIES_MAX; i++) {
                cgroup_name(cg, sizeof(cg), i);
                assert_false(ratelimit_take(r, 4000, cg, rate, burst, now));
        }
        /* The newcomer too. */
        assert_int_equal(admitted(r, 4001, "/new", rate, burst, now, 10), burst - 1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_burst_then_refused, setup, teardown),
            cmocka_unit_test_setup_teardown(test_refill_rate, setup, teardown),
            cmocka_unit_test_setup_teardown(test_high_rate, setup, teardown),
            cmocka_unit_test_setup_teardown(test_rate_zero_disables, setup, teardown),
            cmocka_unit_test_setup_teardown(test_clock_going_backwards, setup, teardown),
            cmocka_unit_test_setup_teardown(test_identities_separate, setup, teardown),
            cmocka_unit_test_setup_teardown(test_table_full_admits_newcomers, setup, teardown),
            cmocka_unit_test_setup_teardown(test_table_full_keeps_drained, setup, teardown),
            cmocka_unit_test_setup_teardown(test_table_full_evicts_oldest, setup, teardown),
        };

        if (sodium_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
