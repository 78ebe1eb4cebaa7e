/* The cloud SDKs' formats (client/formats.c): AWS credential_process from the broker's answer
 * for an aws_sts upstream, every way that answer can be malformed, and Google's executable
 * responses, byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "formats.h"
#include "macro.h"

#define AWS_OK                                                                                     \
        "{\"ok\":true,\"aws\":{\"AccessKeyId\":\"ASIAKEY\",\"SecretAccessKey\":\"sec/ret+\","      \
        "\"SessionToken\":\"sess\",\"Expiration\":\"%s\"},\"access_token\":\"sess\","              \
        "\"token_type\":\"aws4_request\",\"expires_at\":%s}"

static char *aws(const char *expiration, const char *expires_at)
{
        char *s = NULL;
        assert_true(asprintf(&s, AWS_OK, expiration, expires_at) > 0);
        return s;
}

static void test_aws_shape(void **state)
{
        _cleanup_free_ char *in = aws("2031-05-01T12:00:00Z", "1935403200");
        _cleanup_(erase_and_freep) char *out = NULL;
        char err[128];

        assert_int_equal(format_aws_credential_process(in, &out, err, sizeof(err)), 0);
        assert_string_equal(out, "{\"Version\":1,\"AccessKeyId\":\"ASIAKEY\",\"SecretAccessKey\":"
                                 "\"sec/ret+\",\"SessionToken\":\"sess\",\"Expiration\":"
                                 "\"2031-05-01T12:00:00Z\"}\n");
}

static void test_aws_expiration(void **state)
{
        const struct {
                const char *expiration, *expires_at, *want;
        } cases[] = {
            /* written back in UTC, to the second */
            {"2031-05-01T14:00:00+02:00", "1935403200", "2031-05-01T12:00:00Z"},
            {"2031-05-01T12:00:00.999Z", "1935403200", "2031-05-01T12:00:00Z"},
            {"2031-05-01t12:00:00z", "1935403200", "2031-05-01T12:00:00Z"},
            /* the broker's expiry when it is earlier; AWS's otherwise */
            {"2031-05-01T12:00:00Z", "1935402600", "2031-05-01T11:50:00Z"},
            {"2031-05-01T12:00:00Z", "1999999999", "2031-05-01T12:00:00Z"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *in = aws(cases[i].expiration, cases[i].expires_at);
                _cleanup_(erase_and_freep) char *out = NULL;
                char err[128], want[64];

                assert_int_equal(format_aws_credential_process(in, &out, err, sizeof(err)), 0);
                snprintf(want, sizeof(want), "\"Expiration\":\"%s\"}\n", cases[i].want);
                assert_non_null(strstr(out, want));
        }
}

static void test_aws_not_an_aws_answer(void **state)
{
        char *out = NULL, err[128];

        assert_int_equal(
            format_aws_credential_process("{\"ok\":true,\"access_token\":\"x\","
                                          "\"token_type\":\"Bearer\",\"expires_at\":1}",
                                          &out, err, sizeof(err)),
            -ENOENT);
        assert_null(out);
}

static void test_aws_malformed(void **state)
{
        const struct {
                const char *json, *why;
        } cases[] = {
            {"", "not JSON"},
            {"[1]", "expected a JSON object"},
            {"{\"ok\":false,\"aws\":{}}", "ok: expected true"},
            {"{\"aws\":{}}", "ok: expected true"},
            {"{\"ok\":true,\"aws\":[],\"expires_at\":1}", "aws: expected object"},
            {"{\"ok\":true,\"aws\":{},\"expires_at\":1}", "aws.AccessKeyId: missing"},
            {"{\"ok\":true,\"ok\":true,\"aws\":{}}", "not JSON"}, /* duplicate key */
            {"{\"ok\":true,\"aws\":{\"AccessKeyId\":1},\"expires_at\":1}",
             "aws.AccessKeyId: expected string"},
            {"{\"ok\":true,\"aws\":{\"AccessKeyId\":\"\"},\"expires_at\":1}",
             "aws.AccessKeyId: expected a non-empty string"},
            /* a NUL inside a string: jansson refuses the text */
            {"{\"ok\":true,\"aws\":{\"AccessKeyId\":\"a\\u0000b\"},\"expires_at\":1}", "not JSON"},
            {"{\"ok\":true,\"aws\":{\"AccessKeyId\":\"a\"},\"expires_at\":1}",
             "aws.SecretAccessKey: missing"},
            {"{\"ok\":true,\"aws\":{\"AccessKeyId\":\"a\",\"SecretAccessKey\":\"s\"},"
             "\"expires_at\":1}",
             "aws.SessionToken: missing"},
            {"{\"ok\":true,\"aws\":{\"AccessKeyId\":\"a\",\"SecretAccessKey\":\"s\","
             "\"SessionToken\":\"t\"},\"expires_at\":1}",
             "aws.Expiration: missing"},
            {"{\"ok\":true,\"aws\":{\"AccessKeyId\":\"a\",\"SecretAccessKey\":\"s\","
             "\"SessionToken\":\"t\",\"Expiration\":\"2031-05-01T12:00:00Z\"}}",
             "expires_at: expected integer"},
            {"{\"ok\":true,\"aws\":{\"AccessKeyId\":\"a\",\"SecretAccessKey\":\"s\","
             "\"SessionToken\":\"t\",\"Expiration\":\"2031-05-01T12:00:00Z\"},\"expires_at\":"
             "\"1\"}",
             "expires_at: expected integer"},
        };
        const char *bad_dates[] = {"2031-05-01",           "soon",       "2031-02-30T12:00:00Z",
                                   "2031-05-01T24:00:00Z", "1935403200", "2031-05-01T12:00:00"};

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *out = NULL, err[128] = "x";
                int r = format_aws_credential_process(cases[i].json, &out, err, sizeof(err));
                if (r != -EBADMSG || !strstr(err, cases[i].why))
                        fail_msg("%s: got %d \"%s\", want \"%s\"", cases[i].json, r, err,
                                 cases[i].why);
                assert_null(out);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad_dates); i++) {
                _cleanup_free_ char *in = aws(bad_dates[i], "1935403200");
                char *out = NULL, err[128];
                assert_int_equal(format_aws_credential_process(in, &out, err, sizeof(err)),
                                 -EBADMSG);
                assert_non_null(strstr(err, "aws.Expiration"));
                assert_null(out);
        }
}

static void test_gcp_success(void **state)
{
        _cleanup_(erase_and_freep) char *out = NULL;

        assert_int_equal(format_gcp_executable_success("h.p.s", 1935403200, &out), 0);
        assert_string_equal(out, "{\"version\":1,\"success\":true,\"token_type\":"
                                 "\"urn:ietf:params:oauth:token-type:jwt\",\"id_token\":\"h.p.s\","
                                 "\"expiration_time\":1935403200}\n");
        assert_int_equal(format_gcp_executable_success("", 1, &out), -EINVAL);
        assert_int_equal(format_gcp_executable_success("\xff", 1, &out), -EINVAL);
}

static void test_gcp_failure(void **state)
{
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;

        assert_int_equal(format_gcp_executable_failure("denied", "audience \"x\" not allowed", &a),
                         0);
        assert_string_equal(a, "{\"version\":1,\"success\":false,\"code\":\"denied\",\"message\":"
                               "\"audience \\\"x\\\" not allowed\"}\n");
        /* the libraries want both fields non-empty */
        assert_int_equal(format_gcp_executable_failure("", NULL, &b), 0);
        assert_string_equal(b, "{\"version\":1,\"success\":false,\"code\":\"error\",\"message\":"
                               "\"error\"}\n");
        /* a message cut inside a character (snprintf into a fixed buffer) stays valid JSON */
        assert_int_equal(format_gcp_executable_failure("internal", "caf\xc3", &c), 0);
        assert_string_equal(c, "{\"version\":1,\"success\":false,\"code\":\"internal\","
                               "\"message\":\"caf\\\\xc3\"}\n");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_aws_shape),
            cmocka_unit_test(test_aws_expiration),
            cmocka_unit_test(test_aws_not_an_aws_answer),
            cmocka_unit_test(test_aws_malformed),
            cmocka_unit_test(test_gcp_success),
            cmocka_unit_test(test_gcp_failure),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
