/* Durations ("90s", "15m", "24h", "400d") and RFC 3339 timestamps. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Largest duration accepted anywhere: 100 years. */
#define DURATION_MAX_SEC (100ULL * 366 * 24 * 3600)

/* Parses decimal digits followed by an optional unit s|m|h|d (no unit: seconds). No sign, no
 * spaces, no fractions, nothing after the unit. 0 is allowed (callers decide whether it means
 * "disabled" or is an error). Returns 0, -EINVAL (syntax) or -ERANGE (> DURATION_MAX_SEC). */
int duration_parse(const char *s, uint64_t *ret_sec);

/* "2026-11-22T02:51:07.123Z". buf must hold TIME_RFC3339_MAX bytes. */
#define TIME_RFC3339_MAX 32
void time_format_rfc3339_ms(int64_t unix_ms, char buf[TIME_RFC3339_MAX]);

/* Accepts "YYYY-MM-DD" (midnight UTC), "YYYY-MM-DDTHH:MM:SS[.fff]Z" and the same with a
 * numeric offset "+HH:MM"/"-HH:MM" (also with a space or lowercase 't'/'z' as RFC 3339 allows).
 * Returns unix milliseconds in *ret_ms; -EINVAL on anything else (including invalid dates such
 * as Feb 30 or hour 24). */
int time_parse_rfc3339(const char *s, int64_t *ret_ms);

/* CLOCK_REALTIME in milliseconds / seconds, CLOCK_MONOTONIC in microseconds. */
int64_t now_unix_ms(void);
int64_t now_unix_sec(void);
uint64_t now_mono_usec(void);
