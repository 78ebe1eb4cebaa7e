/* brokerctl's advice after a failure (hints.h): the socket it names is the one the command
 * used, a refused admin caller is not sent for a policy rule, not_found names what was not
 * found, and nothing points at a log where the broker logs nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "broker.h"
#include "hints.h"

/* Each call's text stays valid for a few calls after it. */
static const char *hint(int status, const char *message, const CallContext *ctx)
{
        static char bufs[4][512];
        static unsigned n;
        char *buf = bufs[n++ % 4];
        broker_error err = {.status = status};

        snprintf(err.message, sizeof(err.message), "%s", message);
        failure_hint(&err, ctx, buf, sizeof(bufs[0]));
        return buf;
}

static void test_connect_names_the_socket_of_the_command(void **state)
{
        const char *w = hint(BROKER_E_UNAVAILABLE, "cannot reach the broker at /x: ENOENT",
                             &(CallContext){.command = "ping", .connecting = true});
        const char *a =
            hint(BROKER_E_UNAVAILABLE, "cannot reach the broker at /x: ENOENT",
                 &(CallContext){.command = "status", .admin = true, .connecting = true});

        assert_non_null(strstr(w, "--socket"));
        assert_non_null(strstr(w, "$BROKER_SOCKET"));
        assert_null(strstr(w, "ADMIN"));
        assert_non_null(strstr(a, "--admin-socket"));
        assert_non_null(strstr(a, "$BROKER_ADMIN_SOCKET"));
        assert_null(strstr(a, "--socket"));
        assert_null(strstr(a, "$BROKER_SOCKET"));
}

static void test_denied_advice_depends_on_the_socket(void **state)
{
        const char *w =
            hint(BROKER_E_DENIED, "no rule matches", &(CallContext){.command = "token"});
        const char *a = hint(BROKER_E_DENIED, "the admin socket is for root",
                             &(CallContext){.command = "keys", .admin = true});

        assert_non_null(strstr(w, "whoami"));
        assert_non_null(strstr(w, "rule"));
        assert_null(strstr(a, "rule"));
        assert_null(strstr(a, "whoami"));
        assert_non_null(strstr(a, "root"));
}

static void test_not_found_has_no_log_to_see(void **state)
{
        assert_string_equal(hint(BROKER_E_NOT_FOUND, "no key with this kid",
                                 &(CallContext){.command = "revoke", .admin = true}),
                            "");
        assert_string_equal(hint(BROKER_E_NOT_FOUND, "no key with this kid",
                                 &(CallContext){.command = "revoke",
                                                .admin = true,
                                                .if_not_found = "'brokerctl keys' lists them"}),
                            " ('brokerctl keys' lists them)");
}

static void test_rate_limited_says_retry(void **state)
{
        assert_non_null(
            strstr(hint(BROKER_E_RATE_LIMITED, "slow down", &(CallContext){.command = "token"}),
                   "retry later"));
}

static void test_bad_request_points_at_the_commands_help(void **state)
{
        assert_string_equal(
            hint(BROKER_E_BAD_REQUEST, "audience too long", &(CallContext){.command = "token"}),
            " (see 'brokerctl token --help')");
}

static void test_internal_mentions_the_log_once(void **state)
{
        assert_non_null(strstr(
            hint(BROKER_E_INTERNAL, "signing failed", &(CallContext){.command = "token"}), "log"));
        assert_string_equal(hint(BROKER_E_INTERNAL, "rotation failed; see the broker's log",
                                 &(CallContext){.command = "rotate", .admin = true}),
                            "");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_connect_names_the_socket_of_the_command),
            cmocka_unit_test(test_denied_advice_depends_on_the_socket),
            cmocka_unit_test(test_not_found_has_no_log_to_see),
            cmocka_unit_test(test_rate_limited_says_retry),
            cmocka_unit_test(test_bad_request_points_at_the_commands_help),
            cmocka_unit_test(test_internal_mentions_the_log_once),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
