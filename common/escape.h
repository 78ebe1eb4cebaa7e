/* Bytes from the kernel (paths, names) or from a config file may be invalid UTF-8 or hold
 * characters that rewrite what a terminal shows. JSON cannot carry the former and logs and
 * records should not carry the latter. */
#pragma once

#include <stdbool.h>

/* A copy in which every such byte (invalid UTF-8, C0/C1 controls, DEL, bidirectional
 * controls) and every backslash is written as \xNN, so the result is unambiguous valid UTF-8.
 * NULL when out of memory. */
char *text_escape(const char *s);

/* Whether text_escape() would leave `s` unchanged apart from backslashes: valid UTF-8 without
 * C0/C1 controls, DEL, bidirectional controls or line/paragraph separators (U+2028/9). For
 * caller-supplied strings that are stored and shown as they are, such as an audience. */
bool text_display_safe(const char *s);
