/* brokerctl's one exit-code map: every libbroker result, and the contract's numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "broker.h"
#include "exitcode.h"
#include "macro.h"

static void test_every_status_has_its_exit_code(void **state)
{
        const struct {
                int status, exit;
        } cases[] = {
            {BROKER_OK, 0},
            {BROKER_E_BAD_REQUEST, 1},
            {BROKER_E_UNAVAILABLE, 2},
            {BROKER_E_DENIED, 3},
            {BROKER_E_RATE_LIMITED, 5}, /* retry later; 3 (denied) is final */
            {BROKER_E_NOT_FOUND, 4},
            {BROKER_E_INTERNAL, 4},
            {BROKER_E_PROTOCOL, 4},
            {BROKER_E_NOMEM, 4},
            {-1000, 4}, /* a result this map does not know is "anything else" */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_int_equal(exit_code_for_status(cases[i].status), cases[i].exit);
}

static void test_contract_numbers(void **state)
{
        assert_int_equal(EXIT_OK, 0);
        assert_int_equal(EXIT_USAGE, 1);
        assert_int_equal(EXIT_UNAVAILABLE, 2);
        assert_int_equal(EXIT_DENIED, 3);
        assert_int_equal(EXIT_OTHER, 4);
        assert_int_equal(EXIT_RATE_LIMITED, 5);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_every_status_has_its_exit_code),
            cmocka_unit_test(test_contract_numbers),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
