/* The cloud presets' wire: AWS STS's AssumeRoleWithWebIdentity answer and ErrorResponse (XML,
 * libxml2), the RoleSessionName made from a subject, and Google IAM Credentials'
 * generateAccessToken request body and answer. The documents are AWS's and Google's own
 * examples from their API references, with the values changed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <libxml/parser.h>
#include <sodium.h>

#include "federation/aws.h"
#include "federation/google.h"
#include "federation/oauth.h"
#include "macro.h"

/* 2026-12-05T12:00:00Z */
#define NOW_MS 1796472000000LL

static const char aws_ok[] =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleWithWebIdentityResult>\n"
    "    <SubjectFromWebIdentityToken>spiffe://example.org/web</SubjectFromWebIdentityToken>\n"
    "    <Audience>sts.amazonaws.com</Audience>\n"
    "    <AssumedRoleUser>\n"
    "      <Arn>arn:aws:sts::123456789012:assumed-role/web/spiffe---example.org-web</Arn>\n"
    "      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:web</AssumedRoleId>\n"
    "    </AssumedRoleUser>\n"
    "    <Credentials>\n"
    "      <SessionToken>AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE</SessionToken>\n"
    "      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\n"
    "      <Expiration>2026-12-05T13:00:00Z</Expiration>\n"
    "      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>\n"
    "    </Credentials>\n"
    "    <Provider>https://broker.example</Provider>\n"
    "  </AssumeRoleWithWebIdentityResult>\n"
    "  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>"
    "</ResponseMetadata>\n"
    "</AssumeRoleWithWebIdentityResponse>\n";

static void parse_aws(long status, const char *body, OAuthAnswer *a)
{
        assert_int_equal(aws_parse_response(status, body, strlen(body), 4096, NOW_MS, a), 0);
}

static void test_aws_credentials(void **state)
{
        OAuthAnswer a;

        parse_aws(200, aws_ok, &a);
        assert_int_equal(a.outcome, OAUTH_TOKEN);
        assert_string_equal(a.access_token, "AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE");
        assert_int_equal(a.access_token_len, strlen(a.access_token));
        assert_string_equal(a.aws_access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_string_equal(a.aws_secret_access_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
        assert_string_equal(a.aws_expiration, "2026-12-05T13:00:00Z");
        assert_int_equal(a.expires_in, 3600);
        oauth_answer_done(&a);
        assert_null(a.aws_secret_access_key);
        assert_null(a.access_token);
}

static void test_aws_unusable(void **state)
{
        static const char *const bodies[] = {
            "not xml",
            "<Other/>",
            "<AssumeRoleWithWebIdentityResponse/>",
            /* expired */
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
            "<SessionToken>t</SessionToken><SecretAccessKey>s</SecretAccessKey>"
            "<Expiration>2026-12-05T11:00:00Z</Expiration><AccessKeyId>ASIAIOSFODNN7EXAMPLE"
            "</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult>"
            "</AssumeRoleWithWebIdentityResponse>",
            /* a key id that is not one */
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
            "<SessionToken>t</SessionToken><SecretAccessKey>s</SecretAccessKey>"
            "<Expiration>2026-12-05T13:00:00Z</Expiration><AccessKeyId>asia&lt;x&gt;"
            "</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult>"
            "</AssumeRoleWithWebIdentityResponse>",
            /* a DTD, entities: refused whatever they say */
            "<!DOCTYPE r [<!ENTITY a \"ASIAIOSFODNN7EXAMPLE\">]><AssumeRoleWithWebIdentityResponse>"
            "<AssumeRoleWithWebIdentityResult><Credentials><SessionToken>t</SessionToken>"
            "<SecretAccessKey>s</SecretAccessKey><Expiration>2026-12-05T13:00:00Z</Expiration>"
            "<AccessKeyId>&a;</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult>"
            "</AssumeRoleWithWebIdentityResponse>",
            /* an external entity */
            "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>",
        };
        OAuthAnswer a;

        for (size_t i = 0; i < ELEMENTSOF(bodies); i++) {
                parse_aws(200, bodies[i], &a);
                assert_int_equal(a.outcome, OAUTH_BAD_RESPONSE);
                assert_null(a.access_token);
                assert_true(a.problem[0]);
                oauth_answer_done(&a);
        }
}

static void test_aws_errors(void **state)
{
        static const char denied[] =
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>"
            "<Type>Sender</Type><Code>InvalidIdentityToken</Code>"
            "<Message>No OpenIDConnect provider found in your account for https://broker.example"
            "</Message></Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>"
            "</ErrorResponse>";
        static const char idp[] =
            "<ErrorResponse><Error><Type>Sender</Type><Code>IDPCommunicationError</Code>"
            "<Message>Couldn't retrieve verification key from your identity provider</Message>"
            "</Error><RequestId>x</RequestId></ErrorResponse>";
        OAuthAnswer a;

        parse_aws(400, denied, &a);
        assert_int_equal(a.outcome, OAUTH_REFUSED);
        assert_string_equal(a.error, "InvalidIdentityToken");
        assert_non_null(strstr(a.error_description, "No OpenIDConnect provider"));
        oauth_answer_done(&a);

        parse_aws(400, idp, &a); /* AWS documents it as worth retrying */
        assert_int_equal(a.outcome, OAUTH_RETRYABLE);
        assert_string_equal(a.error, "IDPCommunicationError");
        oauth_answer_done(&a);

        parse_aws(503, "", &a);
        assert_int_equal(a.outcome, OAUTH_RETRYABLE);
        oauth_answer_done(&a);

        parse_aws(403, "<html>forbidden</html>", &a);
        assert_int_equal(a.outcome, OAUTH_BAD_RESPONSE);
        oauth_answer_done(&a);
}

static void test_aws_session_name(void **state)
{
        char n[AWS_SESSION_NAME_MAX + 1], m[AWS_SESSION_NAME_MAX + 1];
        char long_subject[200];

        aws_session_name("spiffe://example.org/unit/web.service", n);
        assert_string_equal(n, "spiffe---example.org-unit-web.service");
        aws_session_name("a", n);
        assert_string_equal(n, "a-");
        aws_session_name("", n);
        assert_string_equal(n, "--");
        aws_session_name("user@example.com+x=1,y", n);
        assert_string_equal(n, "user@example.com+x=1,y");

        memset(long_subject, 'a', sizeof(long_subject) - 1);
        long_subject[sizeof(long_subject) - 1] = 0;
        aws_session_name(long_subject, n);
        assert_int_equal(strlen(n), AWS_SESSION_NAME_MAX);
        long_subject[150] = 'b'; /* differs past the cut: the digest tells them apart */
        aws_session_name(long_subject, m);
        assert_int_equal(strlen(m), AWS_SESSION_NAME_MAX);
        assert_string_not_equal(n, m);
        assert_memory_equal(n, m, AWS_SESSION_NAME_MAX - 9);
}

static void test_google_body(void **state)
{
        char *b = NULL;

        assert_int_equal(google_impersonation_body("https://www.googleapis.com/auth/cloud-platform "
                                                   "https://www.googleapis.com/auth/userinfo.email",
                                                   600, &b),
                         0);
        assert_string_equal(b, "{\"scope\":[\"https://www.googleapis.com/auth/cloud-platform\","
                               "\"https://www.googleapis.com/auth/userinfo.email\"],"
                               "\"lifetime\":\"600s\"}");
        free(b);
}

static void parse_google(long status, const char *body, OAuthAnswer *a)
{
        assert_int_equal(
            google_parse_access_token(status, body, strlen(body), 4096, NOW_MS, a), 0);
}

static void test_google_answer(void **state)
{
        OAuthAnswer a;

        parse_google(200, "{\"accessToken\":\"ya29.c.ElqBBv\",\"expireTime\":"
                          "\"2026-12-05T12:30:00.123456789Z\"}",
                     &a);
        assert_int_equal(a.outcome, OAUTH_TOKEN);
        assert_string_equal(a.access_token, "ya29.c.ElqBBv");
        assert_string_equal(a.token_type, "Bearer");
        assert_int_equal(a.expires_in, 1800);
        oauth_answer_done(&a);

        parse_google(403, "{\"error\":{\"code\":403,\"message\":\"Permission "
                          "'iam.serviceAccounts.getAccessToken' denied\",\"status\":"
                          "\"PERMISSION_DENIED\"}}",
                     &a);
        assert_int_equal(a.outcome, OAUTH_REFUSED);
        assert_string_equal(a.error, "PERMISSION_DENIED");
        oauth_answer_done(&a);

        parse_google(200, "{\"accessToken\":\"x\"}", &a);
        assert_int_equal(a.outcome, OAUTH_BAD_RESPONSE);
        oauth_answer_done(&a);
        parse_google(200, "{\"accessToken\":\"x\",\"expireTime\":\"2020-01-01T00:00:00Z\"}", &a);
        assert_int_equal(a.outcome, OAUTH_BAD_RESPONSE);
        oauth_answer_done(&a);
        parse_google(400, "{\"error\":{\"status\":\"bad status\"}}", &a);
        assert_int_equal(a.outcome, OAUTH_BAD_RESPONSE);
        oauth_answer_done(&a);
        parse_google(500, "{}", &a);
        assert_int_equal(a.outcome, OAUTH_RETRYABLE);
        oauth_answer_done(&a);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_aws_credentials),  cmocka_unit_test(test_aws_unusable),
            cmocka_unit_test(test_aws_errors),       cmocka_unit_test(test_aws_session_name),
            cmocka_unit_test(test_google_body),      cmocka_unit_test(test_google_answer),
        };

        if (sodium_init() < 0)
                return 1;
        xmlInitParser();
        return cmocka_run_group_tests(tests, NULL, NULL);
}
