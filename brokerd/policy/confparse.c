#include "policy/confparse.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "timeutil.h"


void conf_problem(Problems *p, const char *path, const char *fmt, ...)
{
        char msg[1024];
        _cleanup_free_ char *raw = NULL;
        va_list ap;
        char *line;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        /* Lines echo keys and values from the file, which may hold terminal escapes. */
        char **n = realloc(p->lines, (p->n + 2) * sizeof(char *));
        if (n)
                p->lines = n;
        if (!n || asprintf(&raw, "%s: %s", path, msg) < 0 || !(line = text_escape(raw))) {
                p->oom = true;
                return;
        }
        p->lines = n;
        p->lines[p->n++] = line;
        p->lines[p->n] = NULL;
}

const char *conf_type_name(const json_t *v)
{
        switch (json_typeof(v)) {
        case JSON_OBJECT:
                return "object";
        case JSON_ARRAY:
                return "array";
        case JSON_STRING:
                return "string";
        case JSON_INTEGER:
                return "integer";
        case JSON_REAL:
                return "number";
        case JSON_TRUE:
        case JSON_FALSE:
                return "boolean";
        default:
                return "null";
        }
}

/* "parent.key" or "key" at the top level. */
void conf_join_path(char *buf, size_t n, const char *parent, const char *key)
{
        if (parent && *parent)
                snprintf(buf, n, "%s.%s", parent, key);
        else
                snprintf(buf, n, "%s", key);
}

void conf_check_unknown_keys(Problems *p, json_t *obj, const char *path,
                               const char *const *allowed)
{
        const char *key;
        json_t *v;

        json_object_foreach (obj, key, v) {
                bool ok = false;
                for (const char *const *a = allowed; *a; a++)
                        if (strcmp(key, *a) == 0)
                                ok = true;
                if (!ok) {
                        char kp[256];
                        conf_join_path(kp, sizeof(kp), path, key);
                        conf_problem(p, kp, "unknown key");
                }
        }
}

/* Returns the member or NULL; reports it when required and missing. */
json_t *conf_member(Problems *p, json_t *obj, const char *parent, const char *key, bool required)
{
        json_t *v = json_object_get(obj, key);
        if (!v && required) {
                char kp[256];
                conf_join_path(kp, sizeof(kp), parent, key);
                conf_problem(p, kp, "missing (required)");
        }
        return v;
}

bool conf_has_control_chars(const char *s)
{
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        return true;
        return false;
}

/* A string member, copied; false (after reporting) when of the wrong type or empty. */
bool conf_get_string(Problems *p, json_t *obj, const char *parent, const char *key, bool required,
                       size_t max, char **ret)
{
        char kp[256];
        json_t *v = conf_member(p, obj, parent, key, required);

        if (!v)
                return false;
        conf_join_path(kp, sizeof(kp), parent, key);
        if (!json_is_string(v)) {
                conf_problem(p, kp, "expected string, got %s", conf_type_name(v));
                return false;
        }
        const char *s = json_string_value(v);
        if (json_string_length(v) == 0) {
                conf_problem(p, kp, "must not be empty");
                return false;
        }
        if (json_string_length(v) > max) {
                conf_problem(p, kp, "longer than %zu bytes", max);
                return false;
        }
        if (strlen(s) != json_string_length(v) || conf_has_control_chars(s)) {
                conf_problem(p, kp, "must not contain control characters");
                return false;
        }
        *ret = strdup(s);
        if (!*ret)
                p->oom = true;
        return *ret != NULL;
}

bool conf_get_path(Problems *p, json_t *obj, const char *parent, const char *key, size_t max,
                     char **ret)
{
        _cleanup_free_ char *s = NULL;
        char kp[256];

        if (!conf_get_string(p, obj, parent, key, true, max, &s))
                return false;
        conf_join_path(kp, sizeof(kp), parent, key);
        if (s[0] != '/') {
                conf_problem(p, kp, "must be an absolute path, got \"%s\"", s);
                return false;
        }
        *ret = TAKE_PTR(s);
        return true;
}

/* Integer seconds or a string like "90s", "15m", "24h", "400d". */
bool conf_get_duration(Problems *p, json_t *obj, const char *parent, const char *key,
                         uint64_t min, uint64_t *ret)
{
        char kp[256];
        json_t *v = json_object_get(obj, key);
        uint64_t sec;

        if (!v)
                return false;
        conf_join_path(kp, sizeof(kp), parent, key);
        if (json_is_integer(v)) {
                json_int_t i = json_integer_value(v);
                if (i < 0 || (uint64_t) i > DURATION_MAX_SEC) {
                        conf_problem(p, kp, "duration out of range (0 to %llu seconds)",
                                (unsigned long long) DURATION_MAX_SEC);
                        return false;
                }
                sec = (uint64_t) i;
        } else if (json_is_string(v)) {
                int r = duration_parse(json_string_value(v), &sec);
                if (r == -ERANGE) {
                        conf_problem(p, kp, "duration too large (at most 100 years)");
                        return false;
                }
                if (r < 0) {
                        conf_problem(p, kp,
                                "invalid duration \"%s\": expected seconds or a number with "
                                "s, m, h or d (e.g. \"90s\", \"15m\", \"24h\", \"400d\")",
                                json_string_value(v));
                        return false;
                }
        } else {
                conf_problem(p, kp, "expected duration (integer seconds or string), got %s",
                        conf_type_name(v));
                return false;
        }
        if (sec < min) {
                conf_problem(p, kp, "must be at least %llu seconds", (unsigned long long) min);
                return false;
        }
        *ret = sec;
        return true;
}

bool conf_get_uint(Problems *p, json_t *obj, const char *parent, const char *key, uint64_t min,
                     uint64_t max, uint64_t *ret)
{
        char kp[256];
        json_t *v = json_object_get(obj, key);

        if (!v)
                return false;
        conf_join_path(kp, sizeof(kp), parent, key);
        if (!json_is_integer(v)) {
                conf_problem(p, kp, "expected integer, got %s", conf_type_name(v));
                return false;
        }
        json_int_t i = json_integer_value(v);
        if (i < 0 || (uint64_t) i < min || (uint64_t) i > max) {
                conf_problem(p, kp, "must be between %llu and %llu", (unsigned long long) min,
                        (unsigned long long) max);
                return false;
        }
        *ret = (uint64_t) i;
        return true;
}

void conf_check_object(Problems *p, json_t *v, const char *path, bool *ok)
{
        *ok = json_is_object(v);
        if (!*ok)
                conf_problem(p, path, "expected object, got %s", conf_type_name(v));
}

/* An array of strings, each checked by `valid` (NULL: any non-empty string). */
void conf_string_array(Problems *p, json_t *obj, const char *parent, const char *key,
                               bool required, bool nonempty, size_t max_len,
                               bool (*valid)(const char *), const char *what, char ***ret,
                               size_t *ret_n)
{
        char kp[256];
        json_t *a = conf_member(p, obj, parent, key, required);
        size_t i;
        json_t *v;

        if (!a)
                return;
        conf_join_path(kp, sizeof(kp), parent, key);
        if (!json_is_array(a)) {
                conf_problem(p, kp, "expected array, got %s", conf_type_name(a));
                return;
        }
        if (nonempty && json_array_size(a) == 0) {
                conf_problem(p, kp, "must list at least one %s", what);
                return;
        }
        *ret = calloc(json_array_size(a) + 1, sizeof(char *));
        if (!*ret) {
                p->oom = true;
                return;
        }
        json_array_foreach (a, i, v) {
                char ip[300];
                snprintf(ip, sizeof(ip), "%s[%zu]", kp, i);
                if (!json_is_string(v)) {
                        conf_problem(p, ip, "expected string, got %s", conf_type_name(v));
                        continue;
                }
                const char *s = json_string_value(v);
                if (json_string_length(v) == 0 || json_string_length(v) > max_len ||
                    strlen(s) != json_string_length(v) || conf_has_control_chars(s)) {
                        conf_problem(p, ip, "must be 1 to %zu bytes without control characters",
                                max_len);
                        continue;
                }
                if (valid && !valid(s)) {
                        conf_problem(p, ip, "\"%s\" is not a valid %s", s, what);
                        continue;
                }
                (*ret)[(*ret_n)] = strdup(s);
                if (!(*ret)[*ret_n]) {
                        p->oom = true;
                        return;
                }
                (*ret_n)++;
        }
}

