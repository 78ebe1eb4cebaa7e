/* Bytes from the kernel (paths, names) or from a config file may be invalid UTF-8 or hold
 * characters that rewrite what a terminal shows. JSON cannot carry the former and logs and
 * records should not carry the latter. */
#pragma once

/* A copy in which every such byte (invalid UTF-8, C0/C1 controls, DEL, bidirectional
 * controls) and every backslash is written as \xNN, so the result is unambiguous valid UTF-8.
 * NULL when out of memory. */
char *text_escape(const char *s);
