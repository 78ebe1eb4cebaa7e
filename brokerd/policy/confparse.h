/* The config file's parsing steps, shared by the parts of the configuration (config.c: the
 * daemon's settings and rules; upstream_config.c: the upstreams). Each step checks one member's
 * type and bounds, reports a problem with its JSON path ("rules[2].match.uid: expected
 * integer") and lets validation go on, so the user sees every problem at once.
 * Steps that copy a value return true only when it was present and valid. Single-threaded
 * (one parse at a time owns its Problems). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct Problems {
        char **lines; /* "PATH: message", display-safe, NULL-terminated */
        size_t n;
        bool oom;
} Problems;

_printf_(3, 4) void conf_problem(Problems *p, const char *path, const char *fmt, ...);

const char *conf_type_name(const json_t *v);
/* "parent.key", or "key" at the top level. */
void conf_join_path(char *buf, size_t n, const char *parent, const char *key);
bool conf_has_control_chars(const char *s);

void conf_check_object(Problems *p, json_t *v, const char *path, bool *ok);
/* Unknown keys are errors: `allowed` is NULL-terminated. */
void conf_check_unknown_keys(Problems *p, json_t *obj, const char *path,
                             const char *const *allowed);
/* The member, or NULL (reported when required). */
json_t *conf_member(Problems *p, json_t *obj, const char *parent, const char *key, bool required);

/* A non-empty string without control characters, at most `max` bytes, copied into *ret. */
bool conf_get_string(Problems *p, json_t *obj, const char *parent, const char *key, bool required,
                     size_t max, char **ret);
/* A required absolute path. */
bool conf_get_path(Problems *p, json_t *obj, const char *parent, const char *key, size_t max,
                   char **ret);
/* Integer seconds or a string like "90s", "15m", "24h", "400d"; at least `min`. */
bool conf_get_duration(Problems *p, json_t *obj, const char *parent, const char *key,
                       uint64_t min, uint64_t *ret);
bool conf_get_uint(Problems *p, json_t *obj, const char *parent, const char *key, uint64_t min,
                   uint64_t max, uint64_t *ret);
/* An array of strings, each checked by `valid` (NULL: any non-empty string); *ret is
 * NULL-terminated (strv_free). */
void conf_string_array(Problems *p, json_t *obj, const char *parent, const char *key,
                       bool required, bool nonempty, size_t max_len, bool (*valid)(const char *),
                       const char *what, char ***ret, size_t *ret_n);
