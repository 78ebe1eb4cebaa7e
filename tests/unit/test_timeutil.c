/* Durations and RFC 3339 timestamps: what configs and `audit export --since/--until` accept. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "timeutil.h"

static void assert_duration(const char *s, uint64_t want)
{
        uint64_t v = 12345;
        int r = duration_parse(s, &v);

        if (r != 0 || v != want)
                fail_msg("duration \"%s\": r=%d value=%llu, wanted %llu", s, r,
                         (unsigned long long) v, (unsigned long long) want);
}

static void assert_duration_fails(const char *s, int want_r)
{
        uint64_t v = 12345;
        int r = duration_parse(s, &v);

        /* ret_sec must be untouched on failure. */
        if (r != want_r || v != 12345)
                fail_msg("duration \"%s\": r=%d value=%llu, wanted r=%d and no value",
                         s ? s : "(null)", r, (unsigned long long) v, want_r);
}

static void test_duration_valid(void **state)
{
        assert_duration("0", 0);
        assert_duration("0s", 0);
        assert_duration("90", 90);
        assert_duration("90s", 90);
        assert_duration("15m", 15 * 60);
        assert_duration("24h", 24 * 3600);
        assert_duration("400d", 400ULL * 86400);
        assert_duration("007s", 7);
        assert_duration("36600d", DURATION_MAX_SEC);
        assert_duration("3162240000", DURATION_MAX_SEC);
}

static void test_duration_syntax(void **state)
{
        static const char *const bad[] = {
            "",     "s",  "m",   "-5",  "+5", " 5",  "5 ", "5 s",  "1.5h",
            "1,5h", "5x", "5ss", "5sm", "5S", "5M",  "5H", "0x10", "5w",
            "5ms",  "5y", "5\n", "5s ", "h5", "1e3", "٣",  "5s\t",
        };

        assert_duration_fails(NULL, -EINVAL);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                assert_duration_fails(bad[i], -EINVAL);
        /* Syntax is judged before range: a huge number with junk is a syntax error. */
        assert_duration_fails("99999999999999999999999x", -EINVAL);
}

static void test_duration_range(void **state)
{
        assert_duration_fails("3162240001", -ERANGE);
        assert_duration_fails("36601d", -ERANGE);
        assert_duration_fails("878401h", -ERANGE); /* 878400h is exactly 100 * 366 days */
        assert_duration_fails("52704001m", -ERANGE);
        assert_duration_fails("18446744073709551615", -ERANGE);
        assert_duration_fails("18446744073709551616", -ERANGE);
        assert_duration_fails("999999999999999999999999999999d", -ERANGE);
        /* 5124095576030432 * 3600 wraps around 2^64 to 3584: a parser that lets the digits or
         * the product wrap accepts it as an hour. */
        assert_duration_fails("5124095576030432h", -ERANGE);
        /* 213503982334602 * 86400 wraps to 61184 (mod 2^64). */
        assert_duration_fails("213503982334602d", -ERANGE);
}

static void assert_format(int64_t ms, const char *want)
{
        char buf[TIME_RFC3339_MAX];

        time_format_rfc3339_ms(ms, buf);
        if (strcmp(buf, want) != 0)
                fail_msg("%lld formatted as %s, wanted %s", (long long) ms, buf, want);
}

static void test_format(void **state)
{
        assert_format(0, "1970-01-01T00:00:00.000Z");
        assert_format(1795315867123LL, "2026-11-22T02:51:07.123Z");
        assert_format(951825600000LL, "2000-02-29T12:00:00.000Z");
        assert_format(1000, "1970-01-01T00:00:01.000Z");
        assert_format(999, "1970-01-01T00:00:00.999Z");
        /* Negative times floor: -1 ms is the last millisecond of 1969, not "-0.001". */
        assert_format(-1, "1969-12-31T23:59:59.999Z");
        assert_format(-1000, "1969-12-31T23:59:59.000Z");
        assert_format(-1001, "1969-12-31T23:59:58.999Z");
        assert_format(-14182940000LL, "1969-07-20T20:17:40.000Z");
        assert_format(253402300799999LL, "9999-12-31T23:59:59.999Z");
        assert_format(-62167219200000LL, "0000-01-01T00:00:00.000Z");
        /* Outside years 0000..9999 the output is clamped, never a non-RFC-3339 string. */
        assert_format(253402300800000LL, "9999-12-31T23:59:59.999Z");
        assert_format(INT64_MAX, "9999-12-31T23:59:59.999Z");
        assert_format(-62167219200001LL, "0000-01-01T00:00:00.000Z");
        assert_format(INT64_MIN, "0000-01-01T00:00:00.000Z");
}

static void assert_parse(const char *s, int64_t want)
{
        int64_t v = 42;
        int r = time_parse_rfc3339(s, &v);

        if (r != 0 || v != want)
                fail_msg("parse \"%s\": r=%d value=%lld, wanted %lld", s, r, (long long) v,
                         (long long) want);
}

static void test_parse_valid(void **state)
{
        assert_parse("1970-01-01", 0);
        assert_parse("2026-11-22", 1795305600000LL);
        assert_parse("2026-11-22T02:51:07Z", 1795315867000LL);
        assert_parse("2026-11-22T02:51:07.123Z", 1795315867123LL);
        assert_parse("2026-11-22t02:51:07.123z", 1795315867123LL);
        assert_parse("2026-11-22 02:51:07.123Z", 1795315867123LL);
        /* Fractions: 1..9 digits, truncated (not rounded) to milliseconds. */
        assert_parse("2026-11-22T02:51:07.1Z", 1795315867100LL);
        assert_parse("2026-11-22T02:51:07.12Z", 1795315867120LL);
        assert_parse("2026-11-22T02:51:07.1239Z", 1795315867123LL);
        assert_parse("2026-11-22T02:51:07.999999999Z", 1795315867999LL);
        /* Offsets: local = UTC + offset. */
        assert_parse("2026-11-22T03:51:07.123+01:00", 1795315867123LL);
        assert_parse("2026-11-21T21:21:07.123-05:30", 1795315867123LL);
        assert_parse("2026-11-22T02:51:07-00:00", 1795315867000LL);
        assert_parse("2026-11-22T02:51:07+23:59", 1795315867000LL - (23 * 60 + 59) * 60000LL);
        /* Leap years, including the century rules. */
        assert_parse("2000-02-29", 951782400000LL);
        assert_parse("2024-02-29T00:00:00Z", 1709164800000LL);
        /* Before 1970 the fraction still adds: .5 after 23:59:59 is 500 ms before midnight. */
        assert_parse("1969-12-31T23:59:59.5Z", -500);
        assert_parse("0000-01-01T00:00:00Z", -62167219200000LL);
        assert_parse("9999-12-31T23:59:59.999Z", 253402300799999LL);
        assert_parse("2026-12-31T23:59:59Z", 1798761599000LL);
}

static void test_parse_invalid(void **state)
{
        static const char *const bad[] = {
            "",
            "2026",
            "2026-11",
            "2026-1-22",
            "26-11-22",
            "+2026-11-22",
            "2026/11/22",
            "2026-11-22T",
            "2026-11-22Z",
            "2026-11-22 ",
            " 2026-11-22",
            "2026-11-22x",
            "2026-11-22T02:51Z",
            "2026-11-22T02:51:07", /* no offset */
            "2026-11-22T2:51:07Z",
            "2026-11-22T02:51:07.Z",           /* empty fraction */
            "2026-11-22T02:51:07.1234567891Z", /* 10 fraction digits */
            "2026-11-22T02:51:07,123Z",
            "2026-11-22T02:51:07+0100",
            "2026-11-22T02:51:07+01",
            "2026-11-22T02:51:07+24:00",
            "2026-11-22T02:51:07+01:60",
            "2026-11-22T02:51:07ZZ",
            "2026-11-22T02:51:07Z ",
            "2026-11-22_02:51:07Z",
            "2026-00-10",
            "2026-13-10",
            "2026-11-00",
            "2026-11-31",
            "2026-04-31",
            "2026-02-29", /* not a leap year */
            "1900-02-29", /* divisible by 100, not by 400 */
            "2026-02-30",
            "2026-01-32",
            "2026-11-22T24:00:00Z",
            "2026-11-22T23:60:00Z",
            "2026-11-22T23:59:60Z", /* leap seconds are not representable */
            "2026-11-22T-1:00:00Z",
            "2026-11-22T02:51:07.12a3Z",
        };
        int64_t v = 42;

        assert_int_equal(time_parse_rfc3339(NULL, &v), -EINVAL);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int r = time_parse_rfc3339(bad[i], &v);

                if (r != -EINVAL || v != 42)
                        fail_msg("parse \"%s\": r=%d value=%lld, wanted -EINVAL", bad[i], r,
                                 (long long) v);
        }
}

/* Whatever we print, we read back exactly. */
static void test_roundtrip(void **state)
{
        uint64_t x = 0x9e3779b97f4a7c15ULL;

        for (int i = 0; i < 20000; i++) {
                char buf[TIME_RFC3339_MAX];
                int64_t ms, back = 0;

                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                /* Spread over years 0000..9999. */
                ms = (int64_t) (x % 315537897600000ULL) - 62167219200000LL;
                time_format_rfc3339_ms(ms, buf);
                assert_int_equal(strlen(buf), 24);
                assert_int_equal(time_parse_rfc3339(buf, &back), 0);
                if (back != ms)
                        fail_msg("%lld -> %s -> %lld", (long long) ms, buf, (long long) back);
        }
}

static void test_clocks(void **state)
{
        struct timespec ts;
        int64_t ms, sec;
        uint64_t a, b;

        /* Each reading is taken after a reference reading of the same clock, so it is not
         * smaller (down to its unit: sub-second digits must not be dropped) and not far ahead. */
        clock_gettime(CLOCK_REALTIME, &ts);
        ms = now_unix_ms();
        sec = now_unix_sec();
        assert_true(ms >= (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        assert_true(ms < ((int64_t) ts.tv_sec + 5) * 1000);
        assert_true(sec >= ts.tv_sec && sec < ts.tv_sec + 5);

        clock_gettime(CLOCK_MONOTONIC, &ts);
        a = now_mono_usec();
        assert_true(a >= (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000);
        assert_true(a < ((uint64_t) ts.tv_sec + 5) * 1000000);
        ts = (struct timespec){.tv_nsec = 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        b = now_mono_usec();
        assert_true(b >= a + 2000);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_duration_valid), cmocka_unit_test(test_duration_syntax),
            cmocka_unit_test(test_duration_range), cmocka_unit_test(test_format),
            cmocka_unit_test(test_parse_valid),    cmocka_unit_test(test_parse_invalid),
            cmocka_unit_test(test_roundtrip),      cmocka_unit_test(test_clocks),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
