/* A circuit breaker per upstream: after `failures` failed attempts in a row it opens, and every
 * exchange fails fast (unavailable) for `open_for`; then one probe goes through (half-open):
 * success closes it, failure opens it again. OAuth2 refusals (invalid_client, ...) are answers,
 * not failures: they neither open nor close it.
 * Plain data: the caller serialises access (the federation's lock). Times are monotonic ms. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef enum BreakerState {
        BREAKER_CLOSED,
        BREAKER_OPEN,
        BREAKER_HALF_OPEN, /* open_for has passed: one probe may run */
} BreakerState;

typedef struct Breaker {
        BreakerState state;
        uint64_t failures; /* in a row */
        int64_t open_until_ms;
        bool probe_running;
} Breaker;

/* Whether an exchange may start now. In half-open state only one may (the probe; *ret_probe
 * says it is the one). */
bool breaker_allow(Breaker *b, int64_t now_ms, bool *ret_probe);
/* The probe ended without an answer either way (cancelled): the next request probes again. */
void breaker_probe_abandoned(Breaker *b);
void breaker_success(Breaker *b);
void breaker_failure(Breaker *b, int64_t now_ms, uint64_t threshold, int64_t open_for_ms);

/* "ok", "failing" (closed, with failures in a row) or "open" (open or half-open). */
const char *breaker_state_name(const Breaker *b, int64_t now_ms);
