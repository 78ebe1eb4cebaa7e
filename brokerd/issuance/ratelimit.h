/* Bounds on what one local caller can consume: token requests per second per identity (a
 * token bucket) and open connections per uid. Both tables have a fixed maximum size. */
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

/* Open connections per uid. Entries exist only while a uid has connections, so the table never
 * holds more entries than there are connections. */
typedef struct UidCount {
        uid_t uid;
        uint32_t count;
} UidCount;

typedef struct UidCounter {
        UidCount *entries;
        size_t n, cap;
} UidCounter;

/* Adds one connection for uid unless it already has `max`. -EUSERS when at the limit. */
int uid_counter_add(UidCounter *c, uid_t uid, uint64_t max);
void uid_counter_remove(UidCounter *c, uid_t uid);
void uid_counter_done(UidCounter *c);
