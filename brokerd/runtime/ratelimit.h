/* Events per second per identity (token buckets), so one local caller cannot take the broker's
 * time from the others: token requests per identity (issuance), new connections per uid
 * (transport). The table has a fixed maximum size. One thread at a time (the event loop). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Identities tracked at once. When full, the entry idle longest is dropped: an identity idle
 * for burst/rate seconds has a full bucket anyway, so dropping it loses nothing. */
#define RATE_IDENTITIES_MAX 8192u

typedef struct RateLimiter RateLimiter;

int ratelimit_new(RateLimiter **ret);
void ratelimit_free(RateLimiter *r);

/* Takes one token from the bucket of (uid, cgroup) at monotonic time now_usec. true when the
 * request may proceed. rate == 0 disables the limit. */
bool ratelimit_take(RateLimiter *r, uid_t uid, const char *cgroup, uint64_t rate, uint64_t burst,
                    uint64_t now_usec);
