/* Messages: every rejection path of request_parse() on its own (with the exact error text a
 * caller sees), the boundary values on both sides, the order in which problems are reported,
 * id echoing, the response builders and their framing, and the client-side response parsers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "frame.h"
#include "json-util.h"
#include "macro.h"
#include "message.h"

#define W OPSET_WORKLOAD
#define A OPSET_ADMIN

/* ---- helpers ---- */

static char *xstrdup_printf(const char *fmt, ...) _printf_(1, 2);
static char *xstrdup_printf(const char *fmt, ...)
{
        va_list ap;
        char *s = NULL;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        assert_true(r >= 0);
        return s;
}

static char *repeat(char c, size_t n)
{
        char *s = malloc(n + 1);

        assert_non_null(s);
        memset(s, c, n);
        s[n] = '\0';
        return s;
}

/* Parses and expects rejection with exactly `msg` (or a message starting with it when
 * `prefix`), *ret untouched, and *ret_id equal to `id_json` (NULL: no id echoed). */
static void check_reject(const void *body, size_t len, unsigned opset, const char *msg, bool prefix,
                         const char *id_json)
{
        Request req = {.op = (Op) 77, .n_scopes = 99};
        json_t *id = (json_t *) 0x1;
        char err[1024] = "untouched";
        int r;

        r = request_parse(body, len, opset, &req, &id, err, sizeof(err));
        if (r != -EBADMSG || (prefix ? strncmp(err, msg, strlen(msg)) != 0 : strcmp(err, msg) != 0))
                print_error("body: %.*s\nwant: %s\ngot:  %d %s\n", (int) MIN(len, 200u),
                            (const char *) body, msg, r, err);
        assert_int_equal(r, -EBADMSG);
        if (prefix)
                assert_true(strncmp(err, msg, strlen(msg)) == 0);
        else
                assert_string_equal(err, msg);
        assert_int_equal(req.op, 77);
        assert_int_equal(req.n_scopes, 99);
        assert_null(req.root);

        if (!id_json)
                assert_null(id);
        else {
                json_t *want = json_loads(id_json, JSON_DECODE_ANY, NULL);

                assert_non_null(want);
                assert_non_null(id);
                assert_true(json_equal(id, want));
                json_decref(want);
                json_decref(id);
        }
}

#define REJECT_SET(body, set, msg)        check_reject(body, strlen(body), set, msg, false, NULL)
#define REJECT(body, msg)                 REJECT_SET(body, W, msg)
#define REJECT_ID(body, msg, id)          check_reject(body, strlen(body), W, msg, false, id)
#define REJECT_PREFIX_SET(body, set, msg) check_reject(body, strlen(body), set, msg, true, NULL)
#define REJECT_PREFIX(body, msg)          REJECT_PREFIX_SET(body, W, msg)
#define REJECT_JSON_LEN(body, len)        check_reject(body, len, W, "invalid JSON: ", true, NULL)
#define REJECT_JSON(body)                 REJECT_JSON_LEN(body, strlen(body))

/* Parses a request that must be accepted; the caller calls request_done(). */
static void accept_len(const void *body, size_t len, unsigned opset, Request *req)
{
        json_t *id = (json_t *) 0x1;
        char err[1024] = "";
        int r;

        r = request_parse(body, len, opset, req, &id, err, sizeof(err));
        if (r != 0)
                print_error("body: %.*s\nunexpected error: %d %s\n", (int) MIN(len, 200u),
                            (const char *) body, r, err);
        assert_int_equal(r, 0);
        assert_null(id);
        assert_non_null(req->root);
}

static void accept(const char *body, unsigned opset, Request *req)
{
        accept_len(body, strlen(body), opset, req);
}

static void accept_free(const char *body, unsigned opset)
{
        Request req = {};

        accept(body, opset, &req);
        request_done(&req);
}

/* ---- JSON layer ---- */

static void test_reject_invalid_json(void **state)
{
        REJECT("{", "invalid JSON: string or '}' expected near end of file at position 1");
        REJECT_JSON("{\"op\":\"ping\"");
        REJECT_JSON("{\"op\":ping}");
        REJECT_JSON("{'op':'ping'}");
        REJECT_JSON("{\"op\":\"ping\",}");
}

static void test_reject_empty_body(void **state)
{
        REJECT_JSON_LEN("", 0);
        REJECT_JSON("   ");
}

static void test_reject_trailing_data(void **state)
{
        REJECT_JSON("{\"op\":\"ping\"} x");
        REJECT_JSON("{\"op\":\"ping\"}{\"op\":\"ping\"}");
        /* A NUL after the object is trailing data too, not a terminator. */
        REJECT_JSON_LEN("{\"op\":\"ping\"}\0", 14);
}

static void test_reject_invalid_utf8(void **state)
{
        REJECT_JSON("{\"op\":\"ping\",\"x\":\"\xff\"}");
        REJECT_JSON("{\"op\":\"ping\",\"x\":\"\xc0\xaf\"}");         /* overlong '/' */
        REJECT_JSON("{\"op\":\"ping\",\"x\":\"\xed\xa0\x80\"}");     /* encoded surrogate */
        REJECT_JSON("{\"op\":\"ping\",\"x\":\"\xe2\x82\"}");         /* truncated sequence */
        REJECT_JSON("{\"op\":\"ping\",\"x\":\"\xf4\x90\x80\x80\"}"); /* above U+10FFFF */
        REJECT_JSON("{\"op\":\"ping\",\"\xfe\":1}");                 /* in a key */
        REJECT_JSON("{\"op\":\"token\",\"audience\":\"a\x80\"}");
}

static void test_reject_lone_surrogate_escape(void **state)
{
        REJECT_JSON("{\"op\":\"token\",\"audience\":\"\\ud800\"}");
        REJECT_JSON("{\"op\":\"token\",\"audience\":\"\\udc00x\"}");
}

static void test_reject_nul_escape_in_string(void **state)
{
        /* Would otherwise cut "https://a.example\0.evil" short in C. */
        REJECT_JSON("{\"op\":\"token\",\"audience\":\"https://a.example\\u0000.evil\"}");
        REJECT_JSON("{\"op\":\"ping\\u0000\"}");
        REJECT_JSON("{\"op\":\"ping\",\"id\":\"a\\u0000b\"}");
}

static void test_reject_nul_escape_in_key(void **state)
{
        REJECT_JSON("{\"op\":\"ping\",\"op\\u0000x\":1}");
}

static void test_reject_raw_nul_byte(void **state)
{
        static const char body[] = "{\"op\":\"pi\0ng\"}";

        REJECT_JSON_LEN(body, sizeof(body) - 1);
}

static void test_reject_raw_control_char(void **state)
{
        REJECT_JSON("{\"op\":\"token\",\"audience\":\"a\nb\"}");
}

static void test_reject_duplicate_keys(void **state)
{
        /* Which of two "audience" values would the policy check and which would be signed? */
        REJECT_JSON("{\"op\":\"token\",\"audience\":\"a\",\"audience\":\"b\"}");
        REJECT_JSON("{\"op\":\"ping\",\"op\":\"ping\"}");
        REJECT_JSON("{\"op\":\"ping\",\"id\":1,\"id\":2}");
        REJECT_JSON("{\"op\":\"ping\",\"x\":{\"a\":1,\"a\":2}}"); /* nested */
}

static void test_reject_not_object(void **state)
{
        const char *bodies[] = {"[]", "[{\"op\":\"ping\"}]", "42", "\"ping\"", "null", "true",
                                "1.5"};

        for (size_t i = 0; i < ELEMENTSOF(bodies); i++)
                REJECT(bodies[i], "request must be a JSON object");
}

static void test_reject_deep_nesting(void **state)
{
        _cleanup_free_ char *arrays = NULL, *in_field = NULL, *objects = NULL;
        char *p;

        arrays = malloc(10001);
        assert_non_null(arrays);
        memset(arrays, '[', 5000);
        memset(arrays + 5000, ']', 5000);
        arrays[10000] = '\0';
        REJECT_PREFIX(arrays, "invalid JSON: maximum parsing depth reached");

        in_field = xstrdup_printf("{\"op\":\"ping\",\"x\":%s}", arrays);
        REJECT_PREFIX(in_field, "invalid JSON: maximum parsing depth reached");

        /* Objects too: {"a":{"a":...1...}} */
        objects = malloc(5000 * 5 + 1 + 5000 + 1);
        assert_non_null(objects);
        p = objects;
        for (int i = 0; i < 5000; i++)
                p = stpcpy(p, "{\"a\":");
        *p++ = '1';
        memset(p, '}', 5000);
        p[5000] = '\0';
        REJECT_PREFIX(objects, "invalid JSON: maximum parsing depth reached");
}

static void test_json_error_escaped(void **state)
{
        static const char esc[] = "{\"op\":\"ab\"\x1b[2J}", bad[] = "{\"op\":1\xff}";
        char err[256];
        Request req = {};

        /* jansson quotes the input near the error; an escape sequence or a byte that is not
         * UTF-8 there must reach neither a log line nor an error response raw. */
        assert_int_equal(request_parse(esc, strlen(esc), W, &req, NULL, err, sizeof(err)),
                         -EBADMSG);
        assert_string_equal(err, "invalid JSON: '}' expected near '\\x1b' at position 11");

        assert_int_equal(request_parse(bad, strlen(bad), W, &req, NULL, err, sizeof(err)),
                         -EBADMSG);
        assert_null(strchr(err, '\xff'));
        for (const char *c = err; *c; c++)
                assert_true(*c >= 0x20 && *c < 0x7f);
}

/* ---- op ---- */

static void test_reject_op_missing(void **state)
{
        REJECT("{}", "op: missing");
        REJECT("{\"audience\":\"a\"}", "op: missing");
        REJECT("{\"OP\":\"ping\"}", "op: missing");
}

static void test_reject_op_wrong_type(void **state)
{
        const char *bodies[] = {"{\"op\":1}",  "{\"op\":null}", "{\"op\":true}",
                                "{\"op\":[]}", "{\"op\":{}}",   "{\"op\":[\"ping\"]}",
                                "{\"op\":1.5}"};

        for (size_t i = 0; i < ELEMENTSOF(bodies); i++)
                REJECT(bodies[i], "op: expected string");
}

static void test_reject_op_unknown(void **state)
{
        REJECT("{\"op\":\"foo\"}", "op: unknown op \"foo\"");
        REJECT("{\"op\":\"\"}", "op: unknown op \"\"");
        REJECT("{\"op\":\"PING\"}", "op: unknown op \"PING\"");
        REJECT("{\"op\":\"ping \"}", "op: unknown op \"ping \"");
        REJECT("{\"op\":\"token\\/\"}", "op: unknown op \"token/\"");
}

static void test_reject_admin_op_on_workload(void **state)
{
        const char *ops[] = {"status", "reload", "keys", "rotate", "revoke"};

        for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
                _cleanup_free_ char *body = xstrdup_printf("{\"op\":\"%s\"}", ops[i]);
                _cleanup_free_ char *msg = xstrdup_printf("op: unknown op \"%s\"", ops[i]);

                REJECT_SET(body, W, msg);
        }
        /* Even with the fields the op would take. */
        REJECT_SET("{\"op\":\"revoke\",\"kid\":\"abc\"}", W, "op: unknown op \"revoke\"");
}

static void test_reject_workload_op_on_admin(void **state)
{
        const char *ops[] = {"token", "jwks", "whoami"};

        for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
                _cleanup_free_ char *body = xstrdup_printf("{\"op\":\"%s\"}", ops[i]);
                _cleanup_free_ char *msg = xstrdup_printf("op: unknown op \"%s\"", ops[i]);

                REJECT_SET(body, A, msg);
        }
        REJECT_SET("{\"op\":\"token\",\"audience\":\"a\"}", A, "op: unknown op \"token\"");
}

static void test_reject_op_empty_opset(void **state)
{
        REJECT_SET("{\"op\":\"ping\"}", 0, "op: unknown op \"ping\"");
}

static void test_op_echo_escaped_and_bounded(void **state)
{
        _cleanup_free_ char *x = repeat('x', 1000), *body = NULL, *msg = NULL, *x64 = NULL;

        REJECT("{\"op\":\"a\\\"b\\\\c\\n\\u00e9\\u001b[2J\"}",
               "op: unknown op \"a\\\"b\\\\c\\x0a\\xc3\\xa9\\x1b[2J\"");

        body = xstrdup_printf("{\"op\":\"%s\"}", x);
        x64 = repeat('x', 64);
        msg = xstrdup_printf("op: unknown op \"%s...\"", x64);
        REJECT(body, msg);
}

/* ---- id ---- */

static void test_reject_id_wrong_type(void **state)
{
        const char *bodies[] = {
            "{\"op\":\"ping\",\"id\":null}",  "{\"op\":\"ping\",\"id\":1.5}",
            "{\"op\":\"ping\",\"id\":1e3}",   "{\"op\":\"ping\",\"id\":true}",
            "{\"op\":\"ping\",\"id\":false}", "{\"op\":\"ping\",\"id\":[]}",
            "{\"op\":\"ping\",\"id\":{}}",    "{\"op\":\"ping\",\"id\":[1]}",
        };

        for (size_t i = 0; i < ELEMENTSOF(bodies); i++)
                REJECT(bodies[i], "id: expected string or integer"); /* and not echoed */
}

static void test_reject_id_too_long(void **state)
{
        _cleanup_free_ char *s = repeat('i', REQUEST_ID_MAX + 1), *body = NULL;

        body = xstrdup_printf("{\"op\":\"ping\",\"id\":\"%s\"}", s);
        REJECT(body, "id: longer than 256 bytes");
}

static void test_id_accepted(void **state)
{
        _cleanup_free_ char *s = repeat('i', REQUEST_ID_MAX), *body = NULL;
        const char *ids[] = {
            "\"\"",          "\"req-1\"", "0", "-1", "9223372036854775807", "-9223372036854775808",
            "\"\\u00e9\\n\""};
        Request req = {};

        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                _cleanup_free_ char *b = xstrdup_printf("{\"op\":\"ping\",\"id\":%s}", ids[i]);
                json_t *want = json_loads(ids[i], JSON_DECODE_ANY, NULL);

                accept(b, W, &req);
                assert_non_null(req.id);
                assert_ptr_equal(req.id, json_object_get(req.root, "id"));
                assert_true(json_equal(req.id, want));
                json_decref(want);
                request_done(&req);
        }

        body = xstrdup_printf("{\"op\":\"ping\",\"id\":\"%s\"}", s);
        accept(body, W, &req);
        assert_int_equal(json_string_length(req.id), REQUEST_ID_MAX);
        request_done(&req);
}

static void test_id_echoed_on_later_errors(void **state)
{
        REJECT_ID("{\"op\":\"token\",\"id\":\"req-1\"}", "audience: missing", "\"req-1\"");
        REJECT_ID("{\"op\":\"token\",\"id\":42,\"audience\":\"a\",\"ttl\":0}",
                  "ttl: must be between 1 and 2147483647", "42");
        REJECT_ID("{\"id\":-7,\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"a\",\"a\"]}",
                  "scopes[1]: duplicate of scopes[0]", "-7");
        REJECT_ID("{\"op\":\"ping\",\"id\":\"x\",\"frobnicate\":1}", "frobnicate: unknown field",
                  "\"x\"");
        check_reject("{\"op\":\"revoke\",\"id\":\"r\",\"kid\":\"a+b\"}",
                     strlen("{\"op\":\"revoke\",\"id\":\"r\",\"kid\":\"a+b\"}"), A,
                     "kid: invalid character at byte 1 (expected base64url)", false, "\"r\"");
}

static void test_id_echoed_on_op_errors(void **state)
{
        /* The id is valid, so even an op error can be matched to its request. */
        REJECT_ID("{\"id\":5}", "op: missing", "5");
        REJECT_ID("{\"op\":\"status\",\"id\":\"s\"}", "op: unknown op \"status\"", "\"s\"");
        REJECT_ID("{\"op\":7,\"id\":\"s\"}", "op: expected string", "\"s\"");
}

static void test_id_not_echoed_when_invalid(void **state)
{
        _cleanup_free_ char *s = repeat('i', REQUEST_ID_MAX + 1), *body = NULL;

        /* An invalid id is never echoed, whichever error is reported. */
        REJECT("{\"op\":\"token\",\"id\":true,\"audience\":1}", "id: expected string or integer");
        REJECT("{\"op\":\"nope\",\"id\":true}", "op: unknown op \"nope\"");
        body = xstrdup_printf("{\"op\":\"token\",\"id\":\"%s\"}", s);
        REJECT(body, "id: longer than 256 bytes");
        /* Nothing to echo from something that is not an object. */
        REJECT("[{\"id\":1}]", "request must be a JSON object");
        REJECT_JSON("{\"id\":1,");
}

static void test_ret_id_optional(void **state)
{
        Request req = {};
        char err[64];

        assert_int_equal(request_parse("{\"id\":1,\"op\":2}", 15, W, &req, NULL, err, sizeof(err)),
                         -EBADMSG);
        assert_string_equal(err, "op: expected string");
}

/* ---- token: audience ---- */

static void test_reject_audience_missing(void **state)
{
        REJECT("{\"op\":\"token\"}", "audience: missing");
        REJECT("{\"op\":\"token\",\"scopes\":[\"a\"],\"ttl\":5}", "audience: missing");
}

static void test_reject_audience_wrong_type(void **state)
{
        const char *vals[] = {"1", "null", "true", "[]", "[\"a\"]", "{}", "1.5"};

        for (size_t i = 0; i < ELEMENTSOF(vals); i++) {
                _cleanup_free_ char *b =
                    xstrdup_printf("{\"op\":\"token\",\"audience\":%s}", vals[i]);
                REJECT(b, "audience: expected string");
        }
}

static void test_reject_audience_empty(void **state)
{
        REJECT("{\"op\":\"token\",\"audience\":\"\"}", "audience: must not be empty");
}

static void test_audience_length_boundary(void **state)
{
        _cleanup_free_ char *ok = repeat('a', AUDIENCE_MAX), *long1 = repeat('a', AUDIENCE_MAX + 1);
        _cleanup_free_ char *b_ok = NULL, *b_long = NULL;
        Request req = {};

        b_ok = xstrdup_printf("{\"op\":\"token\",\"audience\":\"%s\"}", ok);
        accept(b_ok, W, &req);
        assert_int_equal(strlen(req.audience), AUDIENCE_MAX);
        request_done(&req);

        b_long = xstrdup_printf("{\"op\":\"token\",\"audience\":\"%s\"}", long1);
        REJECT(b_long, "audience: longer than 1024 bytes");
}

static void test_audience_length_counts_bytes(void **state)
{
        /* 512 "é" are 512 characters but 1024 bytes: the bound is on bytes. */
        char ok[2 * 512 + 1], over[2 * 513 + 1];
        _cleanup_free_ char *b_ok = NULL, *b_over = NULL;

        for (int i = 0; i < 513; i++)
                memcpy(over + 2 * i, "\xc3\xa9", 2);
        over[2 * 513] = '\0';
        memcpy(ok, over, 2 * 512);
        ok[2 * 512] = '\0';

        b_ok = xstrdup_printf("{\"op\":\"token\",\"audience\":\"%s\"}", ok);
        accept_free(b_ok, W);
        b_over = xstrdup_printf("{\"op\":\"token\",\"audience\":\"%s\"}", over);
        REJECT(b_over, "audience: longer than 1024 bytes");
}

static void test_reject_audience_control_char(void **state)
{
        REJECT("{\"op\":\"token\",\"audience\":\"https\\u0001\"}",
               "audience: control character at byte 5");
        REJECT("{\"op\":\"token\",\"audience\":\"a\\nb\"}",
               "audience: control character at byte 1");
        REJECT("{\"op\":\"token\",\"audience\":\"\\t\"}", "audience: control character at byte 0");
        REJECT("{\"op\":\"token\",\"audience\":\"ab\\u001f\"}",
               "audience: control character at byte 2");
        REJECT("{\"op\":\"token\",\"audience\":\"ab\\u007f\"}",
               "audience: control character at byte 2");
        REJECT("{\"op\":\"token\",\"audience\":\"a\\r\\nX-Injected: 1\"}",
               "audience: control character at byte 1");
        /* Unicode that rewrites what a reader sees: C1, bidi overrides, line separators. */
        static const char *const unicode[] = {"\\u0085", "\\u009b", "\\u202e", "\\u2066",
                                              "\\u200f", "\\u061c", "\\u2028", "\\u2029"};
        for (size_t i = 0; i < ELEMENTSOF(unicode); i++) {
                _cleanup_free_ char *b = xstrdup_printf(
                    "{\"op\":\"token\",\"audience\":\"https://x%s.test\"}", unicode[i]);
                REJECT(b, "audience: C1, bidirectional or line-separator character");
        }
}

static void test_audience_accepted_chars(void **state)
{
        Request req = {};

        /* Space (0x20), '~' (0x7e) and non-ASCII are not control characters. */
        accept("{\"op\":\"token\",\"audience\":\" ~https://\\u00fc.example/x?y=\\\"z\\\"\"}", W,
               &req);
        assert_string_equal(req.audience, " ~https://\xc3\xbc.example/x?y=\"z\"");
        request_done(&req);
}

/* ---- token: scopes ---- */

static void test_reject_scopes_wrong_type(void **state)
{
        const char *vals[] = {"\"read\"", "\"read write\"", "{}", "1", "null", "true"};

        for (size_t i = 0; i < ELEMENTSOF(vals); i++) {
                _cleanup_free_ char *b =
                    xstrdup_printf("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":%s}", vals[i]);
                REJECT(b, "scopes: expected array");
        }
}

static void test_reject_scope_element_wrong_type(void **state)
{
        REJECT("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[1]}",
               "scopes[0]: expected string");
        REJECT("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"x\",\"y\",null]}",
               "scopes[2]: expected string");
        REJECT("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"x\",[\"y\"]]}",
               "scopes[1]: expected string");
        REJECT("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[{}]}",
               "scopes[0]: expected string");
}

static char *token_with_scopes(size_t n)
{
        _cleanup_(json_decrefp) json_t *req = NULL, *scopes = json_array();
        char *s;

        assert_non_null(scopes);
        for (size_t i = 0; i < n; i++) {
                char name[32];

                snprintf(name, sizeof(name), "s%zu", i);
                assert_int_equal(json_array_append_new(scopes, json_string(name)), 0);
        }
        req = json_pack("{s:s, s:s, s:O}", "op", "token", "audience", "a", "scopes", scopes);
        assert_non_null(req);
        s = json_dumps(req, JSON_COMPACT);
        assert_non_null(s);
        return s;
}

static void test_scopes_count_boundary(void **state)
{
        _cleanup_free_ char *ok = token_with_scopes(SCOPES_MAX);
        _cleanup_free_ char *over = token_with_scopes(SCOPES_MAX + 1);
        Request req = {};

        accept(ok, W, &req);
        assert_int_equal(req.n_scopes, SCOPES_MAX);
        assert_string_equal(req.scopes[0], "s0");
        assert_string_equal(req.scopes[SCOPES_MAX - 1], "s63");
        request_done(&req);

        REJECT(over, "scopes: more than 64 scopes");
}

static void test_reject_scope_empty(void **state)
{
        REJECT("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"\"]}",
               "scopes[0]: must not be empty");
        REJECT("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"a\",\"\"]}",
               "scopes[1]: must not be empty");
}

static void test_scope_length_boundary(void **state)
{
        _cleanup_free_ char *ok = repeat('s', SCOPE_MAX), *over = repeat('s', SCOPE_MAX + 1);
        _cleanup_free_ char *b_ok = NULL, *b_over = NULL;
        Request req = {};

        b_ok = xstrdup_printf("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"%s\"]}", ok);
        accept(b_ok, W, &req);
        assert_int_equal(strlen(req.scopes[0]), SCOPE_MAX);
        request_done(&req);

        b_over =
            xstrdup_printf("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"x\",\"%s\"]}", over);
        REJECT(b_over, "scopes[1]: longer than 256 bytes");
}

static void test_reject_scope_bad_chars(void **state)
{
        const struct {
                const char *json; /* the scope as a JSON string body */
                size_t at;
        } cases[] = {
            {"read write", 4}, {"a\\\"b", 1}, {"a\\\\b", 1},     {"ab\\u007f", 2},
            {"\\u0001", 0},    {"x\\ty", 1},  {"caf\\u00e9", 3}, {"\\u00a0", 0},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *b = xstrdup_printf(
                    "{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"ok\",\"%s\"]}",
                    cases[i].json);
                _cleanup_free_ char *msg = xstrdup_printf(
                    "scopes[1]: invalid character at byte %zu (allowed: printable ASCII "
                    "except space, '\"' and '\\')",
                    cases[i].at);
                REJECT(b, msg);
        }
}

static void test_reject_scope_duplicate(void **state)
{
        REJECT("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"read\",\"write\",\"read\"]}",
               "scopes[2]: duplicate of scopes[0]");
        REJECT("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"x\",\"x\"]}",
               "scopes[1]: duplicate of scopes[0]");
}

static void test_scopes_accepted(void **state)
{
        Request req = {};

        /* The edges of the allowed ranges: '!' 0x21, '#' 0x23, '[' 0x5b, ']' 0x5d, '~' 0x7e.
         * Case matters, so "read" and "READ" are different scopes. */
        accept("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[\"!#[]~\",\"read\",\"READ\","
               "\"api:write/x\"]}",
               W, &req);
        assert_int_equal(req.n_scopes, 4);
        assert_string_equal(req.scopes[0], "!#[]~");
        assert_string_equal(req.scopes[1], "read");
        assert_string_equal(req.scopes[2], "READ");
        assert_string_equal(req.scopes[3], "api:write/x");
        request_done(&req);

        accept("{\"op\":\"token\",\"audience\":\"a\",\"scopes\":[]}", W, &req);
        assert_int_equal(req.n_scopes, 0);
        request_done(&req);
}

/* ---- token: ttl ---- */

static void test_reject_ttl_out_of_range(void **state)
{
        const char *vals[] = {
            "0", "-1", "-0", "2147483648", "9223372036854775807", "-9223372036854775808"};

        for (size_t i = 0; i < ELEMENTSOF(vals); i++) {
                _cleanup_free_ char *b =
                    xstrdup_printf("{\"op\":\"token\",\"audience\":\"a\",\"ttl\":%s}", vals[i]);
                REJECT(b, "ttl: must be between 1 and 2147483647");
        }
}

static void test_reject_ttl_wrong_type(void **state)
{
        const char *vals[] = {"1.5", "1.0", "1e3", "\"5\"", "true", "false", "null", "[5]", "{}"};

        for (size_t i = 0; i < ELEMENTSOF(vals); i++) {
                _cleanup_free_ char *b =
                    xstrdup_printf("{\"op\":\"token\",\"audience\":\"a\",\"ttl\":%s}", vals[i]);
                REJECT(b, "ttl: expected integer");
        }
}

static void test_reject_ttl_beyond_int64(void **state)
{
        REJECT_PREFIX("{\"op\":\"token\",\"audience\":\"a\",\"ttl\":99999999999999999999}",
                      "invalid JSON: too big integer");
}

static void test_ttl_boundary_accepted(void **state)
{
        Request req = {};

        accept("{\"op\":\"token\",\"audience\":\"a\",\"ttl\":1}", W, &req);
        assert_true(req.has_ttl);
        assert_int_equal(req.ttl, 1);
        request_done(&req);

        accept("{\"op\":\"token\",\"audience\":\"a\",\"ttl\":2147483647}", W, &req);
        assert_true(req.has_ttl);
        assert_int_equal(req.ttl, TTL_MAX);
        request_done(&req);
}

/* ---- revoke: kid ---- */

static void test_reject_kid(void **state)
{
        _cleanup_free_ char *k_ok = repeat('k', KID_MAX), *k_long = repeat('k', KID_MAX + 1);
        _cleanup_free_ char *b_ok = NULL, *b_long = NULL;
        Request req = {};

        REJECT_SET("{\"op\":\"revoke\"}", A, "kid: missing");
        REJECT_SET("{\"op\":\"revoke\",\"kid\":1}", A, "kid: expected string");
        REJECT_SET("{\"op\":\"revoke\",\"kid\":null}", A, "kid: expected string");
        REJECT_SET("{\"op\":\"revoke\",\"kid\":[\"a\"]}", A, "kid: expected string");
        REJECT_SET("{\"op\":\"revoke\",\"kid\":\"\"}", A, "kid: must not be empty");

        b_long = xstrdup_printf("{\"op\":\"revoke\",\"kid\":\"%s\"}", k_long);
        REJECT_SET(b_long, A, "kid: longer than 128 bytes");
        b_ok = xstrdup_printf("{\"op\":\"revoke\",\"kid\":\"%s\"}", k_ok);
        accept(b_ok, A, &req);
        assert_int_equal(strlen(req.kid), KID_MAX);
        request_done(&req);
}

static void test_reject_kid_bad_chars(void **state)
{
        const char *bad[] = {"ab+c", "ab/c", "abc=", "ab.c", "ab c", "ab\\u00e9", "../x", "*"};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *b =
                    xstrdup_printf("{\"op\":\"revoke\",\"kid\":\"%s\"}", bad[i]);
                REJECT_PREFIX_SET(b, A, "kid: invalid character at byte ");
        }
        REJECT_SET("{\"op\":\"revoke\",\"kid\":\"abc=\"}", A,
                   "kid: invalid character at byte 3 (expected base64url)");
}

/* ---- unknown fields ---- */

static void test_reject_unknown_field(void **state)
{
        REJECT("{\"op\":\"ping\",\"frobnicate\":1}", "frobnicate: unknown field");
        REJECT("{\"op\":\"ping\",\"audience\":\"a\"}", "audience: unknown field");
        REJECT("{\"op\":\"whoami\",\"ttl\":5}", "ttl: unknown field");
        REJECT("{\"op\":\"jwks\",\"kid\":\"a\"}", "kid: unknown field");
        /* A misspelt field must not silently mean "not given". */
        REJECT("{\"op\":\"token\",\"audience\":\"a\",\"scope\":[\"x\"]}", "scope: unknown field");
        REJECT("{\"op\":\"token\",\"audience\":\"a\",\"kid\":\"x\"}", "kid: unknown field");
        REJECT_SET("{\"op\":\"revoke\",\"kid\":\"a\",\"audience\":\"x\"}", A,
                   "audience: unknown field");
        REJECT_SET("{\"op\":\"status\",\"verbose\":true}", A, "verbose: unknown field");
        REJECT("{\"op\":\"ping\",\"a\\\"b\\n\":1}", "a\\\"b\\x0a: unknown field");
}

static void test_unknown_field_first_in_order(void **state)
{
        REJECT("{\"op\":\"ping\",\"zeta\":1,\"alpha\":2}", "zeta: unknown field");
}

/* ---- order of checks ---- */

static void test_order(void **state)
{
        /* object before op */
        REJECT("[1]", "request must be a JSON object");
        /* op before id */
        REJECT("{\"id\":null,\"op\":1}", "op: expected string");
        /* id before the op's fields */
        REJECT("{\"op\":\"token\",\"audience\":1,\"id\":null}", "id: expected string or integer");
        /* fields in order audience, scopes, ttl */
        REJECT("{\"ttl\":0,\"scopes\":1,\"audience\":1,\"op\":\"token\"}",
               "audience: expected string");
        REJECT("{\"ttl\":0,\"scopes\":1,\"audience\":\"a\",\"op\":\"token\"}",
               "scopes: expected array");
        /* the op's fields before unknown fields */
        REJECT("{\"op\":\"token\",\"zzz\":1,\"audience\":5}", "audience: expected string");
        REJECT("{\"op\":\"token\",\"zzz\":1,\"audience\":\"a\",\"ttl\":0}",
               "ttl: must be between 1 and 2147483647");
}

/* ---- accepted requests ---- */

static void test_accept_each_op(void **state)
{
        const struct {
                const char *body;
                unsigned opset;
                Op op;
        } cases[] = {
            {"{\"op\":\"ping\"}", W, OP_PING},
            {"{\"op\":\"ping\"}", A, OP_PING},
            {"{\"op\":\"token\",\"audience\":\"a\"}", W, OP_TOKEN},
            {"{\"op\":\"jwks\"}", W, OP_JWKS},
            {"{\"op\":\"whoami\"}", W, OP_WHOAMI},
            {"{\"op\":\"status\"}", A, OP_STATUS},
            {"{\"op\":\"reload\"}", A, OP_RELOAD},
            {"{\"op\":\"keys\"}", A, OP_KEYS},
            {"{\"op\":\"rotate\"}", A, OP_ROTATE},
            {"{\"op\":\"revoke\",\"kid\":\"abc-_XYZ019\"}", A, OP_REVOKE},
            {"{\"op\":\"ping\"}", W | A, OP_PING},
            {"{\"op\":\"status\"}", W | A, OP_STATUS},
            {"{\"op\":\"token\",\"upstream\":\"vertex\"}", W, OP_TOKEN},
            {"{\"op\":\"secret_set\",\"name\":\"s\",\"value\":\"v\"}", A, OP_SECRET_SET},
            {"{\"op\":\"secret_list\"}", A, OP_SECRET_LIST},
            {"{\"op\":\"secret_delete\",\"name\":\"s\"}", A, OP_SECRET_DELETE},
            {"{\"op\":\"upstream_test\",\"upstream\":\"u\"}", A, OP_UPSTREAM_TEST},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Request req = {};

                accept(cases[i].body, cases[i].opset, &req);
                assert_int_equal(req.op, cases[i].op);
                assert_null(req.id);
                request_done(&req);
        }
}

static void test_accept_token_full(void **state)
{
        Request req = {};

        accept("{\"scopes\":[\"read\",\"write\"],\"ttl\":300,\"id\":\"t-1\","
               "\"audience\":\"https://api.example.com\",\"op\":\"token\"}",
               W, &req);
        assert_int_equal(req.op, OP_TOKEN);
        assert_string_equal(req.audience, "https://api.example.com");
        assert_int_equal(req.n_scopes, 2);
        assert_string_equal(req.scopes[0], "read");
        assert_string_equal(req.scopes[1], "write");
        assert_true(req.has_ttl);
        assert_int_equal(req.ttl, 300);
        assert_string_equal(json_string_value(req.id), "t-1");
        assert_null(req.kid);
        request_done(&req);
        /* done resets everything and may be called again */
        assert_null(req.root);
        assert_null(req.audience);
        assert_int_equal(req.n_scopes, 0);
        request_done(&req);
        request_done(NULL);
}

static void test_accept_token_minimal(void **state)
{
        Request req = {};

        accept("{\"op\":\"token\",\"audience\":\"a\"}", W, &req);
        assert_string_equal(req.audience, "a");
        assert_int_equal(req.n_scopes, 0);
        assert_false(req.has_ttl);
        request_done(&req);
}

static void test_accept_whitespace_and_exact_len(void **state)
{
        static const char body[] = "{\"op\":\"ping\"}GARBAGE";
        Request req = {};

        accept(" \r\n\t{ \"op\" : \"ping\" }\n", W, &req);
        request_done(&req);
        /* Only `len` bytes are read; the body need not be NUL-terminated. */
        accept_len(body, 13, W, &req);
        request_done(&req);
}

static void test_err_buffer_handling(void **state)
{
        Request req = {};
        char err[6] = "xxxxx";

        /* No error buffer at all, or a tiny one: still -EBADMSG, never an overflow. */
        assert_int_equal(request_parse("{}", 2, W, &req, NULL, NULL, 0), -EBADMSG);
        assert_int_equal(request_parse("{}", 2, W, &req, NULL, err, 0), -EBADMSG);
        assert_string_equal(err, "xxxxx");
        assert_int_equal(request_parse("{}", 2, W, &req, NULL, err, sizeof(err)), -EBADMSG);
        assert_string_equal(err, "op: m");
        assert_int_equal(request_parse("{\"op\":\"ping\"}", 13, W, NULL, NULL, err, sizeof(err)),
                         -EINVAL);
}

/* ---- scope_token_valid, op_to_string, error codes ---- */

static void test_scope_token_valid_every_byte(void **state)
{
        for (int c = 1; c < 256; c++) {
                char s[4] = {'a', (char) c, 'b', '\0'};
                bool want = c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);

                if (scope_token_valid(s) != want)
                        print_error("byte 0x%02x\n", c);
                assert_int_equal(scope_token_valid(s), want);
        }
        assert_false(scope_token_valid(""));
        assert_false(scope_token_valid(NULL));
        assert_true(scope_token_valid("x"));
}

/* ---- upstream tokens and secrets ---- */

static void test_accept_upstream_token(void **state)
{
        Request req = {};

        accept("{\"op\":\"token\",\"upstream\":\"vertex.ai-prod_2\",\"scopes\":[\"b\",\"a\"]}", W,
               &req);
        assert_string_equal(req.upstream, "vertex.ai-prod_2");
        assert_null(req.audience);
        assert_false(req.has_ttl);
        assert_int_equal(req.n_scopes, 2);
        assert_string_equal(req.scopes[0], "b");
        request_done(&req);
}

static void test_reject_upstream_token(void **state)
{
        _cleanup_free_ char *long_name = repeat('u', BROKER_NAME_MAX + 1);
        _cleanup_free_ char *body = NULL;

        REJECT("{\"op\":\"token\",\"upstream\":3}", "upstream: expected string");
        REJECT("{\"op\":\"token\",\"upstream\":\"\"}", "upstream: must not be empty");
        REJECT("{\"op\":\"token\",\"upstream\":\"a b\"}",
               "upstream: may only use letters, digits, '.', '_' and '-'");
        REJECT("{\"op\":\"token\",\"upstream\":\"../x\"}",
               "upstream: may only use letters, digits, '.', '_' and '-'");
        body = xstrdup_printf("{\"op\":\"token\",\"upstream\":\"%s\"}", long_name);
        REJECT(body, "upstream: longer than 64 bytes");
        REJECT_PREFIX("{\"op\":\"token\",\"upstream\":\"u\",\"audience\":\"a\"}",
                      "audience: not used with upstream");
        REJECT_PREFIX("{\"op\":\"token\",\"upstream\":\"u\",\"ttl\":60}",
                      "ttl: not used with upstream");
        REJECT("{\"op\":\"token\",\"upstream\":\"u\",\"scopes\":[\"a\",\"a\"]}",
               "scopes[1]: duplicate of scopes[0]");
        REJECT("{\"op\":\"token\",\"upstream\":\"u\",\"scope\":\"a\"}", "scope: unknown field");
        /* admin ops are unknown on the workload socket, and the reverse */
        REJECT("{\"op\":\"secret_list\"}", "op: unknown op \"secret_list\"");
        REJECT_SET("{\"op\":\"token\",\"upstream\":\"u\"}", A, "op: unknown op \"token\"");
}

static void test_secret_ops(void **state)
{
        _cleanup_free_ char *big = repeat('v', SECRET_VALUE_MAX);
        _cleanup_free_ char *too_big = repeat('v', SECRET_VALUE_MAX + 1);
        _cleanup_free_ char *ok_body = NULL, *big_body = NULL;
        Request req = {};

        accept("{\"op\":\"secret_set\",\"name\":\"vertex-client\",\"value\":\"p@ss w0rd\"}", A,
               &req);
        assert_string_equal(req.name, "vertex-client");
        assert_string_equal(req.value, "p@ss w0rd");
        request_done(&req);
        ok_body = xstrdup_printf("{\"op\":\"secret_set\",\"name\":\"n\",\"value\":\"%s\"}", big);
        accept_free(ok_body, A);
        big_body = xstrdup_printf("{\"op\":\"secret_set\",\"name\":\"n\",\"value\":\"%s\"}",
                                  too_big);
        check_reject(big_body, strlen(big_body), A, "value: longer than 8192 bytes", false, NULL);

        REJECT_SET("{\"op\":\"secret_set\",\"name\":\"n\"}", A, "value: missing");
        REJECT_SET("{\"op\":\"secret_set\",\"name\":\"n\",\"value\":\"\"}", A,
                   "value: must not be empty");
        /* where, never what: the value is not echoed */
        REJECT_SET("{\"op\":\"secret_set\",\"name\":\"n\",\"value\":\"ab\\ncd\"}", A,
                   "value: control character at byte 2");
        REJECT_SET("{\"op\":\"secret_set\",\"name\":\"a/b\",\"value\":\"v\"}", A,
                   "name: may only use letters, digits, '.', '_' and '-'");
        REJECT_SET("{\"op\":\"secret_delete\"}", A, "name: missing");
        REJECT_SET("{\"op\":\"secret_delete\",\"name\":\"n\",\"value\":\"v\"}", A,
                   "value: unknown field");
        REJECT_SET("{\"op\":\"secret_list\",\"name\":\"n\"}", A, "name: unknown field");
        REJECT_SET("{\"op\":\"upstream_test\"}", A, "upstream: missing");
}

static void test_broker_name_valid(void **state)
{
        _cleanup_free_ char *max = repeat('a', BROKER_NAME_MAX);
        _cleanup_free_ char *over = repeat('a', BROKER_NAME_MAX + 1);

        assert_true(broker_name_valid("a"));
        assert_true(broker_name_valid("Az09._-"));
        assert_true(broker_name_valid(max));
        assert_false(broker_name_valid(over));
        assert_false(broker_name_valid(""));
        assert_false(broker_name_valid(NULL));
        assert_false(broker_name_valid("a b"));
        assert_false(broker_name_valid("a/b"));
        assert_false(broker_name_valid("\xc3\xa9"));
}

static void test_upstream_token_response(void **state)
{
        static const char ok[] = "{\"ok\":true,\"access_token\":\"at\",\"token_type\":\"Bearer\","
                                 "\"expires_at\":1700000000,\"scope\":\"read\"}";
        static const char err_body[] =
            "{\"ok\":false,\"error\":{\"code\":\"denied\",\"message\":\"m\","
            "\"upstream_error\":\"invalid_client\"}}";
        UpstreamTokenResponse t;
        Response r = {};
        char err[256];

        assert_int_equal(response_parse(ok, strlen(ok), &r, err, sizeof(err)), 0);
        assert_int_equal(response_get_upstream_token(&r, &t, err, sizeof(err)), 0);
        assert_string_equal(t.access_token, "at");
        assert_string_equal(t.token_type, "Bearer");
        assert_int_equal(t.expires_at, 1700000000);
        assert_string_equal(t.scope, "read");
        assert_null(t.issued_token_type);
        assert_null(r.upstream_error);
        response_done(&r);

        assert_int_equal(response_parse(err_body, strlen(err_body), &r, err, sizeof(err)), 0);
        assert_false(r.ok);
        assert_int_equal(r.code, BROKER_ERR_DENIED);
        assert_string_equal(r.upstream_error, "invalid_client");
        assert_int_equal(response_get_upstream_token(&r, &t, err, sizeof(err)), -EINVAL);
        response_done(&r);

        static const char bad[] = "{\"ok\":true,\"access_token\":\"at\",\"expires_at\":1}";
        assert_int_equal(response_parse(bad, strlen(bad), &r, err, sizeof(err)), 0);
        assert_int_equal(response_get_upstream_token(&r, &t, err, sizeof(err)), -EBADMSG);
        assert_string_equal(err, "token_type: missing");
        response_done(&r);

        static const char bad_ue[] = "{\"ok\":false,\"error\":{\"code\":\"denied\",\"message\":"
                                     "\"m\",\"upstream_error\":3}}";
        assert_int_equal(response_parse(bad_ue, strlen(bad_ue), &r, err, sizeof(err)), -EBADMSG);
        assert_string_equal(err, "error.upstream_error: expected string");

        /* built by the daemon */
        json_t *resp = response_new_error(BROKER_ERR_DENIED, "no", NULL);
        assert_int_equal(response_error_set_upstream(resp, "invalid_grant"), 0);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(resp, "error"), "upstream_error")),
            "invalid_grant");
        json_decref(resp);
        resp = response_new_ok(NULL);
        assert_int_equal(response_error_set_upstream(resp, "x"), -EINVAL);
        json_decref(resp);
}

static void test_op_to_string(void **state)
{
        const char *names[] = {"ping",       "token",       "jwks",          "whoami",
                               "status",     "reload",      "keys",          "rotate",
                               "revoke",     "secret_set",  "secret_list",   "secret_delete",
                               "upstream_test"};

        assert_int_equal(ELEMENTSOF(names), _OP_MAX);
        for (int i = 0; i < _OP_MAX; i++)
                assert_string_equal(op_to_string((Op) i), names[i]);
        assert_null(op_to_string(_OP_MAX));
        assert_null(op_to_string((Op) -1));
}

static void test_error_codes(void **state)
{
        const struct {
                BrokerErrorCode code;
                const char *name;
        } cases[] = {
            {BROKER_ERR_BAD_REQUEST, "bad_request"},   {BROKER_ERR_DENIED, "denied"},
            {BROKER_ERR_RATE_LIMITED, "rate_limited"}, {BROKER_ERR_UNAVAILABLE, "unavailable"},
            {BROKER_ERR_NOT_FOUND, "not_found"},       {BROKER_ERR_INTERNAL, "internal"},
        };

        assert_int_equal(ELEMENTSOF(cases), _BROKER_ERR_MAX);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                assert_string_equal(broker_error_code_to_string(cases[i].code), cases[i].name);
                assert_int_equal(broker_error_code_from_string(cases[i].name), cases[i].code);
        }
}

static void test_error_codes_unknown(void **state)
{
        assert_null(broker_error_code_to_string(_BROKER_ERR_MAX));
        assert_null(broker_error_code_to_string((BrokerErrorCode) -1));
        assert_int_equal(broker_error_code_from_string("Denied"), -EINVAL);
        assert_int_equal(broker_error_code_from_string("denied "), -EINVAL);
        assert_int_equal(broker_error_code_from_string(""), -EINVAL);
        assert_int_equal(broker_error_code_from_string(NULL), -EINVAL);
}

/* ---- response builders and framing ---- */

/* Encodes msg as a frame, checks the header, and returns the body as a string. */
static char *encode_body(json_t *msg)
{
        char *frame = NULL, *body;
        size_t len = 0;
        uint32_t n = 0;

        assert_int_equal(message_encode_frame(msg, &frame, &len), 0);
        assert_true(len > FRAME_HEADER_SIZE);
        assert_int_equal(frame_peek((const uint8_t *) frame, len, &n), 1);
        assert_int_equal(n, len - FRAME_HEADER_SIZE);
        body = strndup(frame + FRAME_HEADER_SIZE, n);
        assert_non_null(body);
        free(frame);
        return body;
}

static void test_response_ok(void **state)
{
        _cleanup_(json_decrefp) json_t *m = response_new_ok(NULL), *sid = json_string("a-1");
        _cleanup_(json_decrefp) json_t *m2 = NULL, *m3 = NULL, *iid = json_integer(-42);
        _cleanup_free_ char *b = NULL, *b2 = NULL, *b3 = NULL;

        assert_non_null(m);
        b = encode_body(m);
        assert_string_equal(b, "{\"ok\":true}");

        m2 = response_new_ok(sid);
        b2 = encode_body(m2);
        assert_string_equal(b2, "{\"ok\":true,\"id\":\"a-1\"}");

        m3 = response_new_ok(iid);
        b3 = encode_body(m3);
        assert_string_equal(b3, "{\"ok\":true,\"id\":-42}");
}

static void test_response_error(void **state)
{
        _cleanup_(json_decrefp) json_t *id = json_string("r7");

        for (int c = 0; c < _BROKER_ERR_MAX; c++) {
                _cleanup_(json_decrefp) json_t *m = response_new_error(c, "why", NULL);
                _cleanup_(json_decrefp) json_t *mi = response_new_error(c, "why", id);
                _cleanup_free_ char *b = NULL, *bi = NULL, *want = NULL, *want_i = NULL;

                want = xstrdup_printf("{\"ok\":false,\"error\":{\"code\":\"%s\",\"message\":"
                                      "\"why\"}}",
                                      broker_error_code_to_string(c));
                want_i = xstrdup_printf("{\"ok\":false,\"error\":{\"code\":\"%s\",\"message\":"
                                        "\"why\"},\"id\":\"r7\"}",
                                        broker_error_code_to_string(c));
                b = encode_body(m);
                bi = encode_body(mi);
                assert_string_equal(b, want);
                assert_string_equal(bi, want_i);
        }
}

static void test_response_error_odd_inputs(void **state)
{
        _cleanup_(json_decrefp) json_t *m = NULL, *m2 = NULL;
        _cleanup_free_ char *b = NULL, *b2 = NULL;

        assert_null(response_new_error(_BROKER_ERR_MAX, "x", NULL));
        assert_null(response_new_error((BrokerErrorCode) -1, "x", NULL));

        m = response_new_error(BROKER_ERR_INTERNAL, NULL, NULL);
        b = encode_body(m);
        assert_string_equal(b, "{\"ok\":false,\"error\":{\"code\":\"internal\",\"message\":"
                               "\"internal\"}}");

        /* A message that is not UTF-8 (a path from /proc, say) still makes a response. */
        m2 = response_new_error(BROKER_ERR_DENIED, "exe /tmp/\xff\xfe is \xc3\xa9 x", NULL);
        assert_non_null(m2);
        b2 = encode_body(m2);
        assert_string_equal(b2, "{\"ok\":false,\"error\":{\"code\":\"denied\",\"message\":"
                                "\"exe /tmp/?? is ?? x\"}}");
}

static void test_encode_frame_boundary(void **state)
{
        /* {"ok":true,"x":""} is 18 bytes; pad the string to reach exactly FRAME_MAX. */
        const size_t overhead = strlen("{\"ok\":true,\"x\":\"\"}");
        _cleanup_free_ char *pad = repeat('p', FRAME_MAX - overhead), *pad1 = NULL;
        _cleanup_(json_decrefp) json_t *ok = NULL, *over = NULL;
        char *frame = NULL, *untouched = (char *) 0x1;
        size_t len = 0, len_untouched = 4242;

        ok = json_pack("{s:b, s:s}", "ok", 1, "x", pad);
        assert_non_null(ok);
        assert_int_equal(message_encode_frame(ok, &frame, &len), 0);
        assert_int_equal(len, FRAME_HEADER_SIZE + FRAME_MAX);
        assert_memory_equal(frame, "\x00\x01\x00\x00{\"ok\":true,\"x\":\"ppp", 20);
        assert_int_equal(frame[len - 1], '}');
        free(frame);

        pad1 = repeat('p', FRAME_MAX - overhead + 1);
        over = json_pack("{s:b, s:s}", "ok", 1, "x", pad1);
        assert_non_null(over);
        assert_int_equal(message_encode_frame(over, &untouched, &len_untouched), -EMSGSIZE);
        assert_ptr_equal(untouched, (char *) 0x1);
        assert_int_equal(len_untouched, 4242);
}

static void test_encode_frame_not_object(void **state)
{
        _cleanup_(json_decrefp) json_t *a = json_array(), *s = json_string("x");
        char *frame = NULL;
        size_t len = 0;

        assert_int_equal(message_encode_frame(a, &frame, &len), -EINVAL);
        assert_int_equal(message_encode_frame(s, &frame, &len), -EINVAL);
        assert_int_equal(message_encode_frame(NULL, &frame, &len), -EINVAL);
        assert_null(frame);
}

/* ---- response parsing (clients) ---- */

static void check_response_reject(const char *body, const char *msg, bool prefix)
{
        Response resp = {.ok = true, .code = (BrokerErrorCode) 77};
        char err[512] = "";
        int r;

        r = response_parse(body, strlen(body), &resp, err, sizeof(err));
        if (r != -EBADMSG || (prefix ? strncmp(err, msg, strlen(msg)) != 0 : strcmp(err, msg) != 0))
                print_error("body: %s\nwant: %s\ngot:  %d %s\n", body, msg, r, err);
        assert_int_equal(r, -EBADMSG);
        if (prefix)
                assert_true(strncmp(err, msg, strlen(msg)) == 0);
        else
                assert_string_equal(err, msg);
        assert_null(resp.root);
        assert_int_equal(resp.code, 77);
}

static void test_response_parse_ok(void **state)
{
        Response resp = {};
        char err[128];

        assert_int_equal(response_parse("{\"ok\":true}", 11, &resp, err, sizeof(err)), 0);
        assert_true(resp.ok);
        assert_null(resp.message);
        response_done(&resp);
        assert_null(resp.root);
        response_done(&resp);
        response_done(NULL);
}

static void test_response_parse_error_each_code(void **state)
{
        for (int c = 0; c < _BROKER_ERR_MAX; c++) {
                _cleanup_(json_decrefp) json_t *m = response_new_error(c, "because", NULL);
                _cleanup_free_ char *b = encode_body(m);
                Response resp = {};
                char err[128];

                assert_int_equal(response_parse(b, strlen(b), &resp, err, sizeof(err)), 0);
                assert_false(resp.ok);
                assert_int_equal(resp.code, c);
                assert_string_equal(resp.message, "because");
                response_done(&resp);
        }
}

static void test_response_parse_ignores_unknown_fields(void **state)
{
        Response resp = {};
        const char *b = "{\"future\":[1,{\"x\":null}],\"ok\":false,\"error\":{\"code\":"
                        "\"not_found\",\"message\":\"no such key\",\"hint\":\"x\"},\"id\":3}";

        assert_int_equal(response_parse(b, strlen(b), &resp, NULL, 0), 0);
        assert_false(resp.ok);
        assert_int_equal(resp.code, BROKER_ERR_NOT_FOUND);
        assert_string_equal(resp.message, "no such key");
        response_done(&resp);
}

static void test_response_parse_rejects(void **state)
{
        check_response_reject("{\"ok\":true", "invalid JSON: ", true);
        check_response_reject("{\"ok\":\"\xff\"}", "invalid JSON: ", true);
        check_response_reject("{\"ok\":true,\"ok\":false}", "invalid JSON: duplicate", true);
        check_response_reject("[]", "response must be a JSON object", false);
        check_response_reject("true", "response must be a JSON object", false);
        check_response_reject("{}", "ok: missing", false);
        check_response_reject("{\"ok\":1}", "ok: expected boolean", false);
        check_response_reject("{\"ok\":\"true\"}", "ok: expected boolean", false);
        check_response_reject("{\"ok\":null}", "ok: expected boolean", false);
        check_response_reject("{\"ok\":false}", "error: missing", false);
        check_response_reject("{\"ok\":false,\"error\":\"denied\"}", "error: expected object",
                              false);
        check_response_reject("{\"ok\":false,\"error\":[]}", "error: expected object", false);
        check_response_reject("{\"ok\":false,\"error\":{\"message\":\"m\"}}", "error.code: missing",
                              false);
        check_response_reject("{\"ok\":false,\"error\":{\"code\":3,\"message\":\"m\"}}",
                              "error.code: expected string", false);
        check_response_reject("{\"ok\":false,\"error\":{\"code\":\"teapot\",\"message\":\"m\"}}",
                              "error.code: unknown code \"teapot\"", false);
        check_response_reject("{\"ok\":false,\"error\":{\"code\":\"DENIED\",\"message\":\"m\"}}",
                              "error.code: unknown code \"DENIED\"", false);
        check_response_reject("{\"ok\":false,\"error\":{\"code\":\"denied\"}}",
                              "error.message: missing", false);
        check_response_reject("{\"ok\":false,\"error\":{\"code\":\"denied\",\"message\":null}}",
                              "error.message: expected string", false);
}

static void test_response_parse_roundtrip_via_frame(void **state)
{
        _cleanup_(json_decrefp) json_t *id = json_integer(9), *m = NULL;
        char *frame = NULL;
        size_t len = 0;
        uint32_t n = 0;
        Response resp = {};

        m = response_new_error(BROKER_ERR_RATE_LIMITED, "slow down", id);
        assert_int_equal(message_encode_frame(m, &frame, &len), 0);
        assert_int_equal(frame_peek((const uint8_t *) frame, len, &n), 1);
        assert_int_equal(response_parse(frame + FRAME_HEADER_SIZE, n, &resp, NULL, 0), 0);
        assert_int_equal(resp.code, BROKER_ERR_RATE_LIMITED);
        assert_string_equal(resp.message, "slow down");
        assert_int_equal(json_integer_value(json_object_get(resp.root, "id")), 9);
        response_done(&resp);
        free(frame);
}

static void parse_response(const char *body, Response *resp)
{
        char err[256] = "";

        if (response_parse(body, strlen(body), resp, err, sizeof(err)) != 0)
                print_error("%s\n", err);
        assert_non_null(resp->root);
}

static void test_response_get_token(void **state)
{
        Response resp = {};
        TokenResponse t = {};

        parse_response("{\"ok\":true,\"token\":\"h.p.s\",\"expires_at\":1700000300,\"kid\":\"k1\","
                       "\"jti\":\"j1\",\"extra\":1}",
                       &resp);
        assert_int_equal(response_get_token(&resp, &t, NULL, 0), 0);
        assert_string_equal(t.token, "h.p.s");
        assert_int_equal(t.expires_at, 1700000300);
        assert_string_equal(t.kid, "k1");
        assert_string_equal(t.jti, "j1");
        response_done(&resp);
}

static void check_token_reject(const char *body, const char *msg)
{
        Response resp = {};
        TokenResponse t = {.expires_at = 4242};
        char err[256] = "";

        parse_response(body, &resp);
        assert_int_equal(response_get_token(&resp, &t, err, sizeof(err)), -EBADMSG);
        assert_string_equal(err, msg);
        assert_int_equal(t.expires_at, 4242); /* untouched */
        assert_null(t.token);
        response_done(&resp);
}

static void test_response_get_token_rejects(void **state)
{
        Response resp = {};
        TokenResponse t = {};
        char err[128] = "";

        check_token_reject("{\"ok\":true,\"expires_at\":1,\"kid\":\"k\",\"jti\":\"j\"}",
                           "token: missing");
        check_token_reject("{\"ok\":true,\"token\":1,\"expires_at\":1,\"kid\":\"k\",\"jti\":\"j\"}",
                           "token: expected string");
        check_token_reject(
            "{\"ok\":true,\"token\":\"\",\"expires_at\":1,\"kid\":\"k\",\"jti\":\"j\"}",
            "token: must not be empty");
        check_token_reject("{\"ok\":true,\"token\":\"t\",\"kid\":\"k\",\"jti\":\"j\"}",
                           "expires_at: missing");
        check_token_reject(
            "{\"ok\":true,\"token\":\"t\",\"expires_at\":\"1\",\"kid\":\"k\",\"jti\":\"j\"}",
            "expires_at: expected integer");
        check_token_reject(
            "{\"ok\":true,\"token\":\"t\",\"expires_at\":1.5,\"kid\":\"k\",\"jti\":\"j\"}",
            "expires_at: expected integer");
        check_token_reject("{\"ok\":true,\"token\":\"t\",\"expires_at\":1,\"jti\":\"j\"}",
                           "kid: missing");
        check_token_reject(
            "{\"ok\":true,\"token\":\"t\",\"expires_at\":1,\"kid\":null,\"jti\":\"j\"}",
            "kid: expected string");
        check_token_reject("{\"ok\":true,\"token\":\"t\",\"expires_at\":1,\"kid\":\"k\"}",
                           "jti: missing");
        check_token_reject(
            "{\"ok\":true,\"token\":\"t\",\"expires_at\":1,\"kid\":\"k\",\"jti\":[]}",
            "jti: expected string");

        /* An error response has no token to get. */
        parse_response("{\"ok\":false,\"error\":{\"code\":\"denied\",\"message\":\"m\"}}", &resp);
        assert_int_equal(response_get_token(&resp, &t, err, sizeof(err)), -EINVAL);
        assert_null(t.token);
        response_done(&resp);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_reject_invalid_json),
            cmocka_unit_test(test_reject_empty_body),
            cmocka_unit_test(test_reject_trailing_data),
            cmocka_unit_test(test_reject_invalid_utf8),
            cmocka_unit_test(test_reject_lone_surrogate_escape),
            cmocka_unit_test(test_reject_nul_escape_in_string),
            cmocka_unit_test(test_reject_nul_escape_in_key),
            cmocka_unit_test(test_reject_raw_nul_byte),
            cmocka_unit_test(test_reject_raw_control_char),
            cmocka_unit_test(test_reject_duplicate_keys),
            cmocka_unit_test(test_reject_not_object),
            cmocka_unit_test(test_reject_deep_nesting),
            cmocka_unit_test(test_json_error_escaped),
            cmocka_unit_test(test_reject_op_missing),
            cmocka_unit_test(test_reject_op_wrong_type),
            cmocka_unit_test(test_reject_op_unknown),
            cmocka_unit_test(test_reject_admin_op_on_workload),
            cmocka_unit_test(test_reject_workload_op_on_admin),
            cmocka_unit_test(test_reject_op_empty_opset),
            cmocka_unit_test(test_op_echo_escaped_and_bounded),
            cmocka_unit_test(test_reject_id_wrong_type),
            cmocka_unit_test(test_reject_id_too_long),
            cmocka_unit_test(test_id_accepted),
            cmocka_unit_test(test_id_echoed_on_later_errors),
            cmocka_unit_test(test_id_echoed_on_op_errors),
            cmocka_unit_test(test_id_not_echoed_when_invalid),
            cmocka_unit_test(test_ret_id_optional),
            cmocka_unit_test(test_reject_audience_missing),
            cmocka_unit_test(test_reject_audience_wrong_type),
            cmocka_unit_test(test_reject_audience_empty),
            cmocka_unit_test(test_audience_length_boundary),
            cmocka_unit_test(test_audience_length_counts_bytes),
            cmocka_unit_test(test_reject_audience_control_char),
            cmocka_unit_test(test_audience_accepted_chars),
            cmocka_unit_test(test_reject_scopes_wrong_type),
            cmocka_unit_test(test_reject_scope_element_wrong_type),
            cmocka_unit_test(test_scopes_count_boundary),
            cmocka_unit_test(test_reject_scope_empty),
            cmocka_unit_test(test_scope_length_boundary),
            cmocka_unit_test(test_reject_scope_bad_chars),
            cmocka_unit_test(test_reject_scope_duplicate),
            cmocka_unit_test(test_scopes_accepted),
            cmocka_unit_test(test_reject_ttl_out_of_range),
            cmocka_unit_test(test_reject_ttl_wrong_type),
            cmocka_unit_test(test_reject_ttl_beyond_int64),
            cmocka_unit_test(test_ttl_boundary_accepted),
            cmocka_unit_test(test_reject_kid),
            cmocka_unit_test(test_reject_kid_bad_chars),
            cmocka_unit_test(test_reject_unknown_field),
            cmocka_unit_test(test_unknown_field_first_in_order),
            cmocka_unit_test(test_order),
            cmocka_unit_test(test_accept_each_op),
            cmocka_unit_test(test_accept_token_full),
            cmocka_unit_test(test_accept_token_minimal),
            cmocka_unit_test(test_accept_whitespace_and_exact_len),
            cmocka_unit_test(test_err_buffer_handling),
            cmocka_unit_test(test_scope_token_valid_every_byte),
            cmocka_unit_test(test_op_to_string),
            cmocka_unit_test(test_accept_upstream_token),
            cmocka_unit_test(test_reject_upstream_token),
            cmocka_unit_test(test_secret_ops),
            cmocka_unit_test(test_broker_name_valid),
            cmocka_unit_test(test_upstream_token_response),
            cmocka_unit_test(test_error_codes),
            cmocka_unit_test(test_error_codes_unknown),
            cmocka_unit_test(test_response_ok),
            cmocka_unit_test(test_response_error),
            cmocka_unit_test(test_response_error_odd_inputs),
            cmocka_unit_test(test_encode_frame_boundary),
            cmocka_unit_test(test_encode_frame_not_object),
            cmocka_unit_test(test_response_parse_ok),
            cmocka_unit_test(test_response_parse_error_each_code),
            cmocka_unit_test(test_response_parse_ignores_unknown_fields),
            cmocka_unit_test(test_response_parse_rejects),
            cmocka_unit_test(test_response_parse_roundtrip_via_frame),
            cmocka_unit_test(test_response_get_token),
            cmocka_unit_test(test_response_get_token_rejects),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
