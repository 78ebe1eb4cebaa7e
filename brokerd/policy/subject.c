#include "policy/subject.h"

#include <stdio.h>
#include <string.h>

#include "escape.h"
#include "macro.h"

static const char *const placeholders[] = {"uid", "gid", "user", "unit", "container", "rule"};

/* Length of the placeholder name starting right after '{', or -1 when there is no '}'. */
static int placeholder_len(const char *p)
{
        const char *end = strchr(p, '}');
        return end ? (int) (end - p) : -1;
}

static bool placeholder_known(const char *name, int len)
{
        for (size_t i = 0; i < ELEMENTSOF(placeholders); i++)
                if ((size_t) len == strlen(placeholders[i]) &&
                    strncmp(name, placeholders[i], len) == 0)
                        return true;
        return false;
}

int subject_template_check(const char *tmpl, char *err, size_t errlen)
{
        if (strlen(tmpl) == 0 || strlen(tmpl) > SUBJECT_MAX) {
                snprintf(err, errlen, "must be 1 to %u bytes", SUBJECT_MAX);
                return -EINVAL;
        }
        for (const char *p = tmpl; *p; p++) {
                if ((unsigned char) *p < 0x20 || *p == 0x7f) {
                        snprintf(err, errlen, "control character at offset %zu",
                                 (size_t) (p - tmpl));
                        return -EINVAL;
                }
                if (*p == '}') {
                        snprintf(err, errlen, "unbalanced '}' at offset %zu", (size_t) (p - tmpl));
                        return -EINVAL;
                }
                if (*p != '{')
                        continue;
                int n = placeholder_len(p + 1);
                if (n < 0) {
                        snprintf(err, errlen, "unbalanced '{' at offset %zu", (size_t) (p - tmpl));
                        return -EINVAL;
                }
                if (!placeholder_known(p + 1, n)) {
                        snprintf(err, errlen,
                                 "unknown placeholder {%.*s} (known: {uid} {gid} {user} {unit} "
                                 "{container} {rule})",
                                 n, p + 1);
                        return -EINVAL;
                }
                p += n + 1;
        }
        return 0;
}

/* The value of one placeholder for this caller, escaped for display; NULL when it has none. */
static char *placeholder_value(const char *name, int len, const Identity *id, const char *rule)
{
        char buf[32];

        if (len == 3 && strncmp(name, "uid", 3) == 0) {
                snprintf(buf, sizeof(buf), "%u", (unsigned) id->uid);
                return strdup(buf);
        }
        if (len == 3 && strncmp(name, "gid", 3) == 0) {
                snprintf(buf, sizeof(buf), "%u", (unsigned) id->gid);
                return strdup(buf);
        }
        if (len == 4 && strncmp(name, "user", 4) == 0)
                return id->user ? text_escape(id->user) : NULL;
        if (len == 4 && strncmp(name, "unit", 4) == 0)
                return id->unit ? text_escape(id->unit) : NULL;
        if (len == 9 && strncmp(name, "container", 9) == 0)
                return id->container ? text_escape(id->container) : NULL;
        if (len == 4 && strncmp(name, "rule", 4) == 0)
                return strdup(rule);
        return NULL;
}

int subject_render(const char *tmpl, const Identity *id, const char *rule, char **ret,
                   const char **ret_missing)
{
        _cleanup_free_ char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);

        if (!f)
                return -ENOMEM;

        for (const char *p = tmpl; *p; p++) {
                if (*p != '{') {
                        fputc(*p, f);
                        continue;
                }
                int n = placeholder_len(p + 1);
                if (n < 0) { /* templates are checked at load; be safe anyway */
                        fclose(f);
                        return -EINVAL;
                }
                _cleanup_free_ char *v = placeholder_value(p + 1, n, id, rule);
                if (!v) {
                        fclose(f);
                        for (size_t i = 0; i < ELEMENTSOF(placeholders); i++)
                                if ((size_t) n == strlen(placeholders[i]) &&
                                    strncmp(p + 1, placeholders[i], n) == 0 && ret_missing)
                                        *ret_missing = placeholders[i];
                        return -ENODATA;
                }
                fputs(v, f);
                p += n + 1;
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        if (len > SUBJECT_MAX)
                return -E2BIG;
        *ret = TAKE_PTR(out);
        return 0;
}
