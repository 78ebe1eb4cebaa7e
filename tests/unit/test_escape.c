/* text_escape(): kernel-supplied bytes (paths, names) made safe for JSON, logs and terminals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "escape.h"
#include "macro.h"

static void assert_escape(const char *in, const char *want)
{
        _cleanup_free_ char *got = text_escape(in);

        assert_non_null(got);
        if (strcmp(got, want) != 0)
                fail_msg("text_escape: got \"%s\", wanted \"%s\"", got, want);
}

static void test_text_escape_keeps_valid(void **state)
{
        assert_escape("", "");
        assert_escape("/usr/bin/python3", "/usr/bin/python3");
        assert_escape("web.service", "web.service");
        assert_escape("~!@#$%^&*()_+{}|:\"<>?`-=[];',./", "~!@#$%^&*()_+{}|:\"<>?`-=[];',./");
        assert_escape("caf\xc3\xa9", "caf\xc3\xa9");           /* U+00E9 */
        assert_escape("\xe2\x82\xac", "\xe2\x82\xac");         /* U+20AC */
        assert_escape("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"); /* U+1F600 */
        assert_escape("\xc2\xa0", "\xc2\xa0");                 /* U+00A0, after the C1 block */
        assert_escape("\xe0\xa0\x80", "\xe0\xa0\x80");         /* U+0800, smallest 3-byte */
        assert_escape("\xf0\x90\x80\x80", "\xf0\x90\x80\x80"); /* U+10000 */
        assert_escape("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"); /* U+10FFFF */
        assert_escape("\xed\x9f\xbf", "\xed\x9f\xbf");         /* U+D7FF */
        assert_escape("\xee\x80\x80", "\xee\x80\x80");         /* U+E000 */
        assert_escape("\xef\xbf\xbd", "\xef\xbf\xbd");         /* U+FFFD */
}

static void test_text_escape_escapes(void **state)
{
        /* Control characters, DEL and the backslash itself. */
        assert_escape("a\nb", "a\\x0ab");
        assert_escape("\t\r\x1b[31m", "\\x09\\x0d\\x1b[31m");
        assert_escape("\x01\x1f\x7f", "\\x01\\x1f\\x7f");
        assert_escape("a\\b", "a\\x5cb");
        assert_escape("\\x41", "\\x5cx41"); /* an escape in the input cannot pose as one */

        /* Invalid bytes, one by one. */
        assert_escape("\xff", "\\xff");
        assert_escape("\xfe\xff", "\\xfe\\xff");
        assert_escape("\x80", "\\x80");
        assert_escape("a\xbf"
                      "b",
                      "a\\xbfb");
        assert_escape("\xc3", "\\xc3"); /* truncated at the end */
        assert_escape("\xc3"
                      "a",
                      "\\xc3a");                 /* truncated before ASCII */
        assert_escape("\xe2\x82", "\\xe2\\x82"); /* truncated 3-byte */
        assert_escape("\xf0\x9f\x98", "\\xf0\\x9f\\x98");
        assert_escape("\xf5\x80\x80\x80", "\\xf5\\x80\\x80\\x80");          /* lead byte above F4 */
        assert_escape("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80");          /* above U+10FFFF */
        assert_escape("\xf8\x88\x80\x80\x80", "\\xf8\\x88\\x80\\x80\\x80"); /* 5-byte form */

        /* Overlong forms: '/' as 2, 3 and 4 bytes, NUL as 2 bytes. */
        assert_escape("\xc0\xaf", "\\xc0\\xaf");
        assert_escape("\xc1\xbf", "\\xc1\\xbf");
        assert_escape("\xe0\x80\xaf", "\\xe0\\x80\\xaf");
        assert_escape("\xe0\x9f\xbf", "\\xe0\\x9f\\xbf"); /* U+07FF as 3 bytes */
        assert_escape("\xf0\x80\x80\xaf", "\\xf0\\x80\\x80\\xaf");
        assert_escape("\xf0\x8f\xbf\xbf", "\\xf0\\x8f\\xbf\\xbf"); /* U+FFFF as 4 bytes */
        assert_escape("\xc0\x80", "\\xc0\\x80");

        /* UTF-16 surrogates encoded as UTF-8 (CESU-8). */
        assert_escape("\xed\xa0\x80", "\\xed\\xa0\\x80");
        assert_escape("\xed\xbf\xbf", "\\xed\\xbf\\xbf");
        assert_escape("\xed\xa0\xbd\xed\xb8\x80", "\\xed\\xa0\\xbd\\xed\\xb8\\x80");

        /* C1 controls and bidirectional overrides are valid UTF-8 but can rewrite what a
         * terminal shows: escaped byte by byte. */
        assert_escape("\xc2\x80", "\\xc2\\x80");       /* U+0080 */
        assert_escape("\xc2\x9b[2J", "\\xc2\\x9b[2J"); /* U+009B CSI */
        assert_escape("a\xe2\x80\xae"
                      "b",
                      "a\\xe2\\x80\\xae"
                      "b");                               /* U+202E RLO */
        assert_escape("\xe2\x81\xa6", "\\xe2\\x81\\xa6"); /* U+2066 LRI */
        assert_escape("\xe2\x80\x8f", "\\xe2\\x80\\x8f"); /* U+200F RLM */
        assert_escape("\xd8\x9c", "\\xd8\\x9c");          /* U+061C ALM */
        assert_escape("\xe2\x80\x8e", "\\xe2\\x80\\x8e"); /* U+200E LRM */
        assert_escape("\xe2\x80\x90", "\xe2\x80\x90");    /* U+2010 hyphen stays */

        /* Valid characters next to invalid bytes survive. */
        assert_escape("\xc3\xa9\xff\xc3\xa9", "\xc3\xa9\\xff\xc3\xa9");
        assert_escape("\xe2\x82\xac\xe2\x82", "\xe2\x82\xac\\xe2\\x82");
}

static void test_text_escape_worst_case(void **state)
{
        /* Every byte escaped: the output is exactly four times the input. */
        char in[1025];
        memset(in, 0xff, 1024);
        in[1024] = 0;
        _cleanup_free_ char *out = text_escape(in);
        assert_non_null(out);
        assert_int_equal(strlen(out), 4096);
        for (size_t i = 0; i < 4096; i += 4)
                assert_memory_equal(out + i, "\\xff", 4);

        /* Every byte from 1 to 255: the result is valid UTF-8 without controls. */
        char all[256];
        for (int i = 1; i < 256; i++)
                all[i - 1] = (char) i;
        all[255] = 0;
        _cleanup_free_ char *e = text_escape(all);
        assert_non_null(e);
        for (const unsigned char *p = (const unsigned char *) e; *p; p++)
                assert_true(*p >= 0x20 && *p < 0x7f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_text_escape_keeps_valid),
            cmocka_unit_test(test_text_escape_escapes),
            cmocka_unit_test(test_text_escape_worst_case),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
