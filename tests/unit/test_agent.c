/* Agent mode's schedule (client/agent.c): refresh at 80 % of the time left, never sooner than a
 * second, without overflow; backoff 1, 2, 4 ... s capped at 30 s. The loop itself, with a real
 * broker, signals and files, is tests/integration/test_agent.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <limits.h>

#include "agent.h"
#include "macro.h"

static void test_refresh_delay(void **state)
{
        const int64_t now = 1900000000LL * 1000;

        assert_int_equal(agent_refresh_delay_ms(now, 1900000000LL + 600), 480000);
        assert_int_equal(agent_refresh_delay_ms(now, 1900000000LL + 10), 8000);
        assert_int_equal(agent_refresh_delay_ms(now + 500, 1900000000LL + 10), 7600);
        assert_int_equal(agent_refresh_delay_ms(now, 1900000000LL + 3600), 2880000);
        /* at least a second: an expired or nearly expired token is not a busy loop */
        assert_int_equal(agent_refresh_delay_ms(now, 1900000000LL + 1), AGENT_MIN_DELAY_MS);
        assert_int_equal(agent_refresh_delay_ms(now, 1900000000LL), AGENT_MIN_DELAY_MS);
        assert_int_equal(agent_refresh_delay_ms(now, 0), AGENT_MIN_DELAY_MS);
        assert_int_equal(agent_refresh_delay_ms(now, -5), AGENT_MIN_DELAY_MS);
        /* far-future expiries do not overflow */
        assert_true(agent_refresh_delay_ms(now, INT64_MAX) > 0);
        assert_true(agent_refresh_delay_ms(0, INT64_MAX / 1000) > 0);
}

static void test_backoff(void **state)
{
        const int64_t want[] = {1000, 1000, 2000, 4000, 8000, 16000, 30000, 30000};

        for (unsigned i = 0; i < ELEMENTSOF(want); i++)
                assert_int_equal(agent_backoff_ms(i), want[i]);
        assert_int_equal(agent_backoff_ms(1000), AGENT_BACKOFF_MAX_MS);
        assert_int_equal(agent_backoff_ms(UINT_MAX), AGENT_BACKOFF_MAX_MS);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_refresh_delay),
            cmocka_unit_test(test_backoff),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
