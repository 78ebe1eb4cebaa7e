#include "escape.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are not one
 * (overlong forms, surrogates and code points above U+10FFFF are invalid). The code point goes
 * to *ret_cp. */
static size_t utf8_sequence_len(const unsigned char *s, unsigned *ret_cp)
{
        unsigned c = s[0];
        size_t n;
        unsigned cp;

        if (c < 0x80) {
                *ret_cp = c;
                return 1;
        }
        if (c >= 0xc2 && c <= 0xdf) {
                n = 2;
                cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                n = 3;
                cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                n = 4;
                cp = c & 0x07;
        } else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        *ret_cp = cp;
        return n;
}

/* Valid, but able to forge or rewrite what a log reader or terminal shows: C0 and C1
 * controls, DEL, bidirectional marks and overrides, line and paragraph separators (which break
 * lines for some readers); and, for text_escape(), the backslash, our escape character. */
static bool control_code_point(unsigned cp)
{
        return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x061c || cp == 0x200e ||
               cp == 0x200f || cp == 0x2028 || cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) ||
               (cp >= 0x2066 && cp <= 0x2069);
}

static bool unsafe_code_point(unsigned cp)
{
        return control_code_point(cp) || cp == '\\';
}

bool text_display_safe(const char *s)
{
        const unsigned char *p = (const unsigned char *) s;

        while (*p) {
                unsigned cp = 0;
                size_t n = utf8_sequence_len(p, &cp);
                if (n == 0 || control_code_point(cp))
                        return false;
                p += n;
        }
        return true;
}

char *text_escape(const char *s)
{
        const unsigned char *p = (const unsigned char *) s;
        size_t len = strlen(s);
        char *out = malloc(len * 4 + 1), *o = out;

        if (!out)
                return NULL;
        while (*p) {
                unsigned cp = 0;
                size_t n = utf8_sequence_len(p, &cp);
                if (n == 0 || unsafe_code_point(cp)) {
                        o += sprintf(o, "\\x%02x", *p);
                        p++;
                        continue;
                }
                memcpy(o, p, n);
                o += n;
                p += n;
        }
        *o = 0;
        return out;
}
