/* Shared by the libFuzzer harnesses of tests/fuzz/: each <target>.c feeds one parser of the
 * daemon or its clients with hostile bytes and checks what the parser promises besides not
 * crashing. ASan, UBSan and LeakSanitizer (per input) report the rest. */
#pragma once

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
