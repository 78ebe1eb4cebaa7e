/* Shared by the libFuzzer harnesses of tests/fuzz/: each <target>.c feeds one parser of the
 * daemon or its clients with hostile bytes and checks what the parser promises besides not
 * crashing. ASan, UBSan and LeakSanitizer (per input) report the rest. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A promise of the code under test that does not hold: a finding, like a crash. */
#define FUZZ_ASSERT(cond)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "%s:%d: does not hold: %s\n", __FILE__, __LINE__, #cond);  \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a C string (cut at its first NUL, as a C caller would see it). */
static inline char *fuzz_string(const uint8_t *data, size_t size)
{
        char *s = malloc(size + 1);

        FUZZ_ASSERT(s);
        memcpy(s, data, size);
        s[size] = '\0';
        return s;
}

/* Whether s[0..n) is printable ASCII (0x20-0x7e): what a harness checks of text that reaches a
 * log line or a caller. Written here, not taken from the code under test, so that the check
 * stays independent of it. */
static inline bool fuzz_printable(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e)
                        return false;
        return true;
}
