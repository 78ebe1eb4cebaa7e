#include "federation/google.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "macro.h"
#include "timeutil.h"

int google_impersonation_body(const char *scope, uint64_t lifetime_s, char **ret)
{
        _cleanup_(json_decrefp) json_t *scopes = json_array(), *body = NULL;
        _cleanup_free_ char *copy = scope ? strdup(scope) : NULL;
        char lifetime[32], *save = NULL;

        if (!scopes || (scope && !copy))
                return -ENOMEM;
        for (char *t = copy ? strtok_r(copy, " ", &save) : NULL; t; t = strtok_r(NULL, " ", &save))
                if (json_array_append_new(scopes, json_string(t)) < 0)
                        return -ENOMEM;
        snprintf(lifetime, sizeof(lifetime), "%" PRIu64 "s", lifetime_s);
        body = json_pack("{s:O, s:s}", "scope", scopes, "lifetime", lifetime);
        if (!body)
                return -ENOMEM;
        *ret = json_dumps(body, JSON_COMPACT);
        return *ret ? 0 : -ENOMEM;
}

/* Google's error status: upper-case letters and '_' ("PERMISSION_DENIED"). */
static bool read_error(json_t *root, OAuthAnswer *a)
{
        json_t *e = json_object_get(root, "error"), *st, *msg;
        const char *s;

        if (!json_is_object(e) || !json_is_string(st = json_object_get(e, "status")))
                return false;
        s = json_string_value(st);
        if (json_string_length(st) == 0 || json_string_length(st) > OAUTH_ERROR_MAX ||
            strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != json_string_length(st))
                return false;
        snprintf(a->error, sizeof(a->error), "%s", s);
        msg = json_object_get(e, "message");
        if (json_is_string(msg) &&
            oauth_printable(json_string_value(msg), json_string_length(msg)) &&
            !strpbrk(json_string_value(msg), "\"\\"))
                snprintf(a->error_description, sizeof(a->error_description), "%s",
                         json_string_value(msg));
        return true;
}

static int read_token(json_t *root, size_t max_token_bytes, int64_t now_ms, OAuthAnswer *a)
{
        json_t *at = json_object_get(root, "accessToken"), *et = json_object_get(root, "expireTime");
        int64_t exp_ms;
        int r;

        if (!json_is_string(at) || json_string_length(at) == 0 ||
            json_string_length(at) > max_token_bytes ||
            !oauth_printable(json_string_value(at), json_string_length(at)))
                return oauth_answer_bad(
                    a, "accessToken is missing or not a string of printable ASCII");
        if (!json_is_string(et) || json_string_length(et) > 64 ||
            time_parse_rfc3339(json_string_value(et), &exp_ms) < 0)
                return oauth_answer_bad(a, "expireTime is missing or not an RFC 3339 time");
        if (exp_ms <= now_ms)
                return oauth_answer_bad(a, "the token has expired already");
        r = secure_copy(json_string_value(at), json_string_length(at), &a->access_token);
        if (r < 0)
                return r;
        a->access_token_len = json_string_length(at);
        snprintf(a->token_type, sizeof(a->token_type), "Bearer");
        a->expires_in = MIN((exp_ms - now_ms) / 1000, (int64_t) OAUTH_EXPIRES_IN_MAX);
        a->outcome = OAUTH_TOKEN;
        return 0;
}

int google_parse_access_token(long status, const char *body, size_t len, size_t max_token_bytes,
                              int64_t now_ms, OAuthAnswer *ret)
{
        _cleanup_(json_decrefp) json_t *root = NULL;
        OAuthAnswer a = {.expires_in = -1};
        int r = 0;

        root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
        if (status >= 200 && status < 300) {
                if (!json_is_object(root))
                        r = oauth_answer_bad(&a, "the body is not a JSON object");
                else
                        r = read_token(root, max_token_bytes, now_ms, &a);
        } else if (status == 429 || (status >= 500 && status < 600)) {
                a.outcome = OAUTH_RETRYABLE;
                (void) read_error(root, &a);
                snprintf(a.problem, sizeof(a.problem), "HTTP %ld", status);
        } else if (status >= 400 && status < 500 && read_error(root, &a)) {
                a.outcome = OAUTH_REFUSED;
                snprintf(a.problem, sizeof(a.problem), "HTTP %ld %s", status, a.error);
        } else
                r = oauth_answer_bad(&a, "an HTTP status without a Google error");
        if (json_is_object(root)) {
                json_t *at = json_object_get(root, "accessToken");
                if (json_is_string(at))
                        explicit_bzero((char *) json_string_value(at), json_string_length(at));
        }
        return oauth_answer_finish(&a, r, ret);
}
