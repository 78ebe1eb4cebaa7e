#include "tables.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "json-util.h"
#include "macro.h"

void time_text(int64_t unix_sec, char buf[TIME_TEXT_MAX])
{
        time_t t = (time_t) unix_sec;
        struct tm tm;

        if (unix_sec == 0 || !gmtime_r(&t, &tm) ||
            strftime(buf, TIME_TEXT_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                snprintf(buf, TIME_TEXT_MAX, "-");
}

void reply_strip_envelope(json_t *reply)
{
        (void) json_object_del(reply, "ok");
        (void) json_object_del(reply, "id");
}

int print_jwks(json_t *reply, FILE *f)
{
        json_t *keys = json_object_get(reply, "keys");
        _cleanup_(json_decrefp) json_t *jwks = NULL;
        _cleanup_free_ char *text = NULL;

        if (!json_is_array(keys))
                return -EBADMSG;
        /* A JWKS has "keys" and nothing else a relying party would not expect. */
        jwks = json_pack("{s:O}", "keys", keys);
        if (!jwks || !(text = json_dumps(jwks, JSON_COMPACT)))
                return -ENOMEM;
        fprintf(f, "%s\n", text);
        return 0;
}

static bool is_time_field(const char *name)
{
        size_t n = strlen(name);

        return (n > 3 && strcmp(name + n - 3, "_at") == 0) || strcmp(name, "last_success") == 0;
}

/* One value as the tables show it. */
static void value_text(const char *name, json_t *v, char *buf, size_t size)
{
        if (json_is_integer(v) && is_time_field(name)) {
                char t[TIME_TEXT_MAX];
                time_text((int64_t) json_integer_value(v), t);
                snprintf(buf, size, "%s", t);
        } else if (json_is_string(v))
                snprintf(buf, size, "%s", json_string_value(v));
        else if (json_is_integer(v))
                snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (json_is_real(v))
                snprintf(buf, size, "%.2f", json_real_value(v));
        else if (json_is_boolean(v))
                snprintf(buf, size, "%s", json_is_true(v) ? "yes" : "no");
        else if (json_is_null(v))
                snprintf(buf, size, "-");
        else {
                /* arrays and whatever the broker adds later: its JSON, on one line */
                _cleanup_free_ char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                snprintf(buf, size, "%s", text ? text : "?");
        }
}

/* "name: value" lines, values aligned; an object's members indented under its name. */
static void print_members(json_t *obj, int indent, FILE *f)
{
        const char *name;
        json_t *v;
        int width = 0;

        json_object_foreach (obj, name, v)
                width = MAX(width, (int) strlen(name) + 1);
        json_object_foreach (obj, name, v) {
                char text[1024];

                if (json_is_object(v) && json_object_size(v) > 0) {
                        fprintf(f, "%*s%s:\n", indent, "", name);
                        print_members(v, indent + 2, f);
                        continue;
                }
                if (json_is_object(v))
                        snprintf(text, sizeof(text), "-");
                else
                        value_text(name, v, text, sizeof(text));
                fprintf(f, "%*s%s:%*s %s\n", indent, "", name, width - (int) strlen(name) - 1, "",
                        text);
        }
}

int print_status_table(json_t *reply, FILE *f)
{
        if (!json_is_object(reply))
                return -EBADMSG;
        reply_strip_envelope(reply);
        print_members(reply, 0, f);
        return 0;
}

static const struct {
        const char *field, *heading;
} key_columns[] = {
    {"kid", "KID"},
    {"alg", "ALG"},
    {"state", "STATE"},
    {"created_at", "CREATED"},
    {"activated_at", "ACTIVATED"},
    {"retired_at", "RETIRED"},
    {"expires_at", "EXPIRES"},
};

int print_keys_table(json_t *reply, FILE *f)
{
        json_t *keys = json_object_get(reply, "keys"), *k;
        int width[ELEMENTSOF(key_columns)];
        char text[256];
        size_t i;

        if (!json_is_array(keys))
                return -EBADMSG;
        if (json_array_size(keys) == 0) {
                fprintf(f, "no keys\n");
                return 0;
        }
        for (size_t c = 0; c < ELEMENTSOF(key_columns); c++)
                width[c] = (int) strlen(key_columns[c].heading);
        json_array_foreach (keys, i, k)
                for (size_t c = 0; c < ELEMENTSOF(key_columns); c++) {
                        value_text(key_columns[c].field,
                                   json_object_get(k, key_columns[c].field) ?: json_null(), text,
                                   sizeof(text));
                        width[c] = MAX(width[c], (int) strlen(text));
                }
        for (size_t c = 0; c < ELEMENTSOF(key_columns); c++)
                fprintf(f, "%-*s%s", c + 1 < ELEMENTSOF(key_columns) ? width[c] : 0,
                        key_columns[c].heading, c + 1 < ELEMENTSOF(key_columns) ? "  " : "\n");
        json_array_foreach (keys, i, k)
                for (size_t c = 0; c < ELEMENTSOF(key_columns); c++) {
                        value_text(key_columns[c].field,
                                   json_object_get(k, key_columns[c].field) ?: json_null(), text,
                                   sizeof(text));
                        fprintf(f, "%-*s%s", c + 1 < ELEMENTSOF(key_columns) ? width[c] : 0, text,
                                c + 1 < ELEMENTSOF(key_columns) ? "  " : "\n");
                }
        return 0;
}
