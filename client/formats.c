/* The cloud SDKs' credential formats: see formats.h for the contract. */
#include "formats.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "escape.h"
#include "json-util.h"
#include "macro.h"
#include "timeutil.h"

_printf_(3, 4) static int bad(char *err, size_t errlen, const char *fmt, ...)
{
        va_list ap;

        if (err && errlen > 0) {
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return -EBADMSG;
}

/* The compact text of `j` followed by "\n"; the intermediate text is wiped. */
static int dump_line(const json_t *j, char **ret)
{
        _cleanup_(erase_and_freep) char *text = json_dumps(j, JSON_COMPACT);
        char *line;
        size_t n;

        if (!text)
                return -ENOMEM;
        n = strlen(text);
        line = malloc(n + 2);
        if (!line)
                return -ENOMEM;
        memcpy(line, text, n);
        line[n] = '\n';
        line[n + 1] = '\0';
        *ret = line;
        return 0;
}

static int aws_field(const json_t *aws, const char *key, const char **ret, char *err, size_t errlen)
{
        const json_t *v = json_object_get(aws, key);

        if (!v)
                return bad(err, errlen, "aws.%s: missing", key);
        if (!json_is_string(v))
                return bad(err, errlen, "aws.%s: expected string", key);
        if (json_string_length(v) == 0 || strlen(json_string_value(v)) != json_string_length(v))
                return bad(err, errlen, "aws.%s: expected a non-empty string without NUL", key);
        *ret = json_string_value(v);
        return 0;
}

int format_aws_credential_process(const char *response_json, char **ret, char *err, size_t errlen)
{
        _cleanup_(json_decrefp) json_t *root = NULL, *out = NULL;
        const char *key_id, *secret, *session, *expiration;
        const json_t *aws, *ok, *exp_at;
        json_error_t jerr;
        int64_t exp_ms, exp_s;
        char when[32];
        struct tm tm;
        time_t t;
        int r;

        if (err && errlen > 0)
                err[0] = '\0';
        if (!response_json || !ret)
                return -EINVAL;
        root = json_loads(response_json, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return bad(err, errlen, "not JSON: %s", jerr.text);
        if (!json_is_object(root))
                return bad(err, errlen, "expected a JSON object");
        ok = json_object_get(root, "ok");
        if (!json_is_true(ok))
                return bad(err, errlen, "ok: expected true");
        aws = json_object_get(root, "aws");
        if (!aws)
                return -ENOENT;
        if (!json_is_object(aws))
                return bad(err, errlen, "aws: expected object");
        r = aws_field(aws, "AccessKeyId", &key_id, err, errlen);
        if (r >= 0)
                r = aws_field(aws, "SecretAccessKey", &secret, err, errlen);
        if (r >= 0)
                r = aws_field(aws, "SessionToken", &session, err, errlen);
        if (r >= 0)
                r = aws_field(aws, "Expiration", &expiration, err, errlen);
        if (r < 0)
                return r;
        exp_at = json_object_get(root, "expires_at");
        if (!json_is_integer(exp_at))
                return bad(err, errlen, "expires_at: expected integer");

        /* A date alone ("2026-11-22") would be read as midnight: AWS always sends a time. */
        if (strlen(expiration) <= 10 || time_parse_rfc3339(expiration, &exp_ms) < 0)
                return bad(err, errlen, "aws.Expiration: expected an RFC 3339 date and time");
        exp_s = exp_ms / 1000;
        if (json_integer_value(exp_at) < exp_s)
                exp_s = json_integer_value(exp_at);
        t = (time_t) exp_s;
        if (exp_s < 0 || !gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999 ||
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                return bad(err, errlen, "expiry out of range");

        out = json_pack("{s:i, s:s, s:s, s:s, s:s}", "Version", 1, "AccessKeyId", key_id,
                        "SecretAccessKey", secret, "SessionToken", session, "Expiration", when);
        if (!out)
                return -ENOMEM;
        return dump_line(out, ret);
}

int format_gcp_executable_success(const char *id_token, int64_t expires_at, char **ret)
{
        _cleanup_(json_decrefp) json_t *out = NULL;

        if (!id_token || !*id_token || !ret)
                return -EINVAL;
        out = json_pack("{s:i, s:b, s:s, s:s, s:I}", "version", 1, "success", 1, "token_type",
                        GCP_TOKEN_TYPE_JWT, "id_token", id_token, "expiration_time",
                        (json_int_t) expires_at);
        if (!out)
                return -EINVAL; /* text that is not UTF-8 (or no memory left) */
        return dump_line(out, ret);
}

int format_gcp_executable_failure(const char *code, const char *message, char **ret)
{
        _cleanup_(json_decrefp) json_t *out = NULL;
        _cleanup_free_ char *c = NULL, *m = NULL;

        if (!ret)
                return -EINVAL;
        c = text_escape(code && *code ? code : "error");
        m = text_escape(message && *message ? message : "error");
        if (!c || !m)
                return -ENOMEM;
        out =
            json_pack("{s:i, s:b, s:s, s:s}", "version", 1, "success", 0, "code", c, "message", m);
        if (!out)
                return -ENOMEM;
        return dump_line(out, ret);
}
