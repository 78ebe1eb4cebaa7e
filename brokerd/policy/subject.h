/* Subject templates: "spiffe://example.org/unit/{unit}" with {uid} {gid} {user} {unit}
 * {container} {rule}. */
#pragma once

#include <stddef.h>

#include "identity/identity.h"

#define SUBJECT_MAX 1024u

/* 0 when the template only uses known placeholders and its braces balance; otherwise -EINVAL
 * with a message in err. */
int subject_template_check(const char *tmpl, char *err, size_t errlen);

/* Renders the template for a caller. -ENODATA (with the placeholder's name in *ret_missing)
 * when a placeholder has no value for this caller (e.g. {unit} for a process outside any
 * unit): such a caller gets no subject rather than an ambiguous one. -E2BIG beyond
 * SUBJECT_MAX. */
int subject_render(const char *tmpl, const Identity *id, const char *rule, char **ret,
                   const char **ret_missing);
