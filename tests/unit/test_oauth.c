/* The OAuth2 wire as brokerd speaks it to an upstream: the token request's form and Basic
 * header (RFC 6749 §2.3.1, §4.4; RFC 8693; RFC 7523), the token endpoint's answer (§5.1, §5.2)
 * sorted into token / refused / retryable / unusable, and the response headers it reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "federation/http.h"
#include "federation/oauth.h"
#include "macro.h"

static void test_form_encoding(void **state)
{
        SecureText f = {};

        assert_int_equal(secure_text_new(OAUTH_FORM_MAX, &f), 0);
        assert_int_equal(oauth_form_add(&f, "grant_type", "client_credentials"), 0);
        assert_int_equal(oauth_form_add(&f, "scope", "read write"), 0);
        assert_int_equal(oauth_form_add(&f, "audience", NULL), 0); /* absent: nothing */
        assert_int_equal(oauth_form_add(&f, "client_secret", "a&b=c+d/%é"), 0);
        assert_string_equal(f.data, "grant_type=client_credentials&scope=read%20write"
                                    "&client_secret=a%26b%3Dc%2Bd%2F%25%C3%A9");
        assert_int_equal(f.len, strlen(f.data));
        secure_text_free(&f);
        assert_null(f.data);
}

static void test_form_bounded(void **state)
{
        SecureText f = {};
        char big[200];

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        assert_int_equal(secure_text_new(64, &f), 0);
        assert_int_equal(oauth_form_add(&f, "a", "b"), 0);
        assert_int_equal(oauth_form_add(&f, "assertion", big), -E2BIG);
        /* what fitted stays as it was, terminated */
        assert_int_equal(strlen(f.data), f.len);
        assert_true(f.len <= 64);
        secure_text_free(&f);
}

static void test_basic_header(void **state)
{
        SecureText h = {};
        unsigned char dec[256];
        size_t n;
        const char *b64;

        /* RFC 6749 §2.3.1: the id and the secret are form-encoded before base64, so a ':' in
         * the id cannot move the split */
        assert_int_equal(oauth_basic_header("my:client", "p@ss word", &h), 0);
        assert_true(strncmp(h.data, "Authorization: Basic ", 21) == 0);
        b64 = h.data + 21;
        assert_int_equal(sodium_base642bin(dec, sizeof(dec) - 1, b64, strlen(b64), NULL, &n, NULL,
                                           sodium_base64_VARIANT_ORIGINAL),
                         0);
        dec[n] = 0;
        assert_string_equal((char *) dec, "my%3Aclient:p%40ss%20word");
        secure_text_free(&h);
}

static OAuthAnswer parse(long status, const char *body)
{
        OAuthAnswer a;

        assert_int_equal(oauth_parse_response(status, body, strlen(body), 4096, &a), 0);
        return a;
}

static void test_parse_token(void **state)
{
        OAuthAnswer a = parse(200, "{\"access_token\":\"tok-123\",\"token_type\":\"Bearer\","
                                   "\"expires_in\":3599,\"scope\":\"read\","
                                   "\"issued_token_type\":\"urn:ietf:params:oauth:token-type:"
                                   "access_token\",\"refresh_token\":\"ignored\"}");

        assert_int_equal(a.outcome, OAUTH_TOKEN);
        assert_string_equal(a.access_token, "tok-123");
        assert_int_equal(a.access_token_len, 7);
        assert_string_equal(a.token_type, "Bearer");
        assert_int_equal(a.expires_in, 3599);
        assert_string_equal(a.scope, "read");
        assert_string_equal(a.issued_token_type, "urn:ietf:params:oauth:token-type:access_token");
        oauth_answer_done(&a);
        assert_null(a.access_token);

        /* expires_in as a string of digits (Azure AD v1), token_type absent (Bearer) */
        a = parse(200, "{\"access_token\":\"t\",\"expires_in\":\"3600\"}");
        assert_int_equal(a.outcome, OAUTH_TOKEN);
        assert_string_equal(a.token_type, "Bearer");
        assert_int_equal(a.expires_in, 3600);
        assert_null(a.scope);
        oauth_answer_done(&a);

        /* no lifetime given */
        a = parse(201, "{\"access_token\":\"t\",\"token_type\":\"N_A\"}");
        assert_int_equal(a.outcome, OAUTH_TOKEN);
        assert_int_equal(a.expires_in, -1);
        oauth_answer_done(&a);
}

static void test_parse_unusable_success(void **state)
{
        static const struct {
                const char *body, *problem;
        } cases[] = {
            {"{\"access_token\": \"abc\", ", "the body is not JSON"},
            {"[\"access_token\"]", "the body is not a JSON object"},
            {"\"tok\"", "the body is not a JSON object"},
            {"{\"token_type\":\"Bearer\",\"expires_in\":3600}", "no access_token"},
            {"{\"error\":\"invalid_request\"}", "a success status with an OAuth2 error"},
            {"{\"access_token\":\"t\",\"error\":\"x\"}", "a success status with an OAuth2 error"},
            {"{\"access_token\":\"\"}", "access_token is not a string"},
            {"{\"access_token\":42}", "access_token is not a string"},
            {"{\"access_token\":\"a\\nb\"}", "access_token is not a string"},
            {"{\"access_token\":\"t\",\"expires_in\":-1}", "expires_in is not"},
            {"{\"access_token\":\"t\",\"expires_in\":1.5}", "expires_in is not"},
            {"{\"access_token\":\"t\",\"expires_in\":\"12x\"}", "expires_in is not"},
            {"{\"access_token\":\"t\",\"expires_in\":99999999999}", "expires_in is not"},
            {"{\"access_token\":\"t\",\"token_type\":7}", "token_type is not"},
            {"{\"access_token\":\"t\",\"scope\":[\"read\"]}", "scope is not"},
            {"{\"access_token\":\"t\",\"issued_token_type\":{}}", "issued_token_type is not"},
            {"{\"access_token\":\"a\",\"access_token\":\"b\"}", "the body is not JSON"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                OAuthAnswer a = parse(200, cases[i].body);

                if (a.outcome != OAUTH_BAD_RESPONSE ||
                    strncmp(a.problem, cases[i].problem, strlen(cases[i].problem)) != 0)
                        fail_msg("%s: outcome %d, problem \"%s\"", cases[i].body, a.outcome,
                                 a.problem);
                assert_null(a.access_token);
                oauth_answer_done(&a);
        }
}

static void test_parse_token_bound(void **state)
{
        char body[300];
        OAuthAnswer a;

        snprintf(body, sizeof(body), "{\"access_token\":\"%0200d\"}", 7);
        assert_int_equal(oauth_parse_response(200, body, strlen(body), 100, &a), 0);
        assert_int_equal(a.outcome, OAUTH_BAD_RESPONSE);
        oauth_answer_done(&a);
        assert_int_equal(oauth_parse_response(200, body, strlen(body), 200, &a), 0);
        assert_int_equal(a.outcome, OAUTH_TOKEN);
        oauth_answer_done(&a);
}

static void test_parse_errors(void **state)
{
        OAuthAnswer a = parse(401, "{\"error\":\"invalid_client\","
                                   "\"error_description\":\"client authentication failed\"}");

        assert_int_equal(a.outcome, OAUTH_REFUSED);
        assert_string_equal(a.error, "invalid_client");
        assert_string_equal(a.error_description, "client authentication failed");
        oauth_answer_done(&a);

        /* a description that breaks §5.2's syntax is dropped, the error kept */
        a = parse(400, "{\"error\":\"invalid_grant\",\"error_description\":\"bad\\u0007\"}");
        assert_int_equal(a.outcome, OAUTH_REFUSED);
        assert_string_equal(a.error, "invalid_grant");
        assert_string_equal(a.error_description, "");
        oauth_answer_done(&a);

        /* an error code outside §5.2's characters, or none: not an OAuth2 answer */
        a = parse(400, "{\"error\":\"bad\\\"quote\"}");
        assert_int_equal(a.outcome, OAUTH_BAD_RESPONSE);
        oauth_answer_done(&a);
        a = parse(403, "<html>Forbidden</html>");
        assert_int_equal(a.outcome, OAUTH_BAD_RESPONSE);
        assert_string_equal(a.problem, "HTTP 403 without an OAuth2 error");
        oauth_answer_done(&a);

        /* 5xx and 429 are worth retrying, with or without a body */
        a = parse(503, "");
        assert_int_equal(a.outcome, OAUTH_RETRYABLE);
        assert_string_equal(a.problem, "HTTP 503");
        oauth_answer_done(&a);
        a = parse(500, "{\"error\":\"server_error\"}");
        assert_int_equal(a.outcome, OAUTH_RETRYABLE);
        assert_string_equal(a.error, "server_error");
        oauth_answer_done(&a);
        a = parse(429, "{\"error\":\"slow_down\"}");
        assert_int_equal(a.outcome, OAUTH_RETRYABLE);
        oauth_answer_done(&a);

        /* redirects are not followed */
        a = parse(302, "");
        assert_int_equal(a.outcome, OAUTH_BAD_RESPONSE);
        assert_string_equal(a.problem, "unexpected HTTP status 302");
        oauth_answer_done(&a);
}

static void test_parse_long_description_cut(void **state)
{
        char body[1024];
        OAuthAnswer a;

        snprintf(body, sizeof(body), "{\"error\":\"invalid_scope\",\"error_description\":\"%0600d\"}",
                 1);
        a = parse(400, body);
        assert_int_equal(a.outcome, OAUTH_REFUSED);
        assert_int_equal(strlen(a.error_description), OAUTH_DESCRIPTION_MAX);
        oauth_answer_done(&a);
}

static void header(const char *line, HttpHeaders *h)
{
        http_header_parse(line, strlen(line), h);
}

static void test_headers(void **state)
{
        HttpHeaders h = {.retry_after_s = -1};

        header("HTTP/1.1 503 Service Unavailable\r\n", &h);
        header("content-TYPE:  application/json; charset=utf-8 \r\n", &h);
        header("Retry-After: 7\r\n", &h);
        assert_string_equal(h.content_type, "application/json; charset=utf-8");
        assert_int_equal(h.retry_after_s, 7);

        /* a date is not a delay; a new status line forgets the last response */
        header("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", &h);
        assert_int_equal(h.retry_after_s, 7);
        header("HTTP/1.1 200 OK\r\n", &h);
        assert_int_equal(h.retry_after_s, -1);
        assert_string_equal(h.content_type, "");
        header("Retry-After: 99999999999\r\n", &h); /* too long to be a delay */
        assert_int_equal(h.retry_after_s, -1);
        header("X-Other: 1\r\n", &h);
        header("\r\n", &h);
        header("Content-Type:", &h);
        assert_string_equal(h.content_type, "");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_form_encoding),
            cmocka_unit_test(test_form_bounded),
            cmocka_unit_test(test_basic_header),
            cmocka_unit_test(test_parse_token),
            cmocka_unit_test(test_parse_unusable_success),
            cmocka_unit_test(test_parse_token_bound),
            cmocka_unit_test(test_parse_errors),
            cmocka_unit_test(test_parse_long_description_cut),
            cmocka_unit_test(test_headers),
        };

        if (sodium_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
