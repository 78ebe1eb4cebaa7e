#include "runtime/ratelimit.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

/* Open addressing with linear probing, at most half full. Keys are keyed BLAKE2b hashes of
 * (uid, cgroup): a local user cannot aim collisions at someone else's bucket. */
#define SLOTS (RATE_IDENTITIES_MAX * 2)

typedef struct Bucket {
        uint64_t key; /* 0: empty slot */
        uint64_t last_usec;
        double tokens;
} Bucket;

struct RateLimiter {
        unsigned char hash_key[crypto_generichash_KEYBYTES];
        Bucket *slots;
        size_t n;
};

int ratelimit_new(RateLimiter **ret)
{
        RateLimiter *r = calloc(1, sizeof(RateLimiter));

        if (!r)
                return -ENOMEM;
        r->slots = calloc(SLOTS, sizeof(Bucket));
        if (!r->slots) {
                free(r);
                return -ENOMEM;
        }
        crypto_generichash_keygen(r->hash_key);
        *ret = r;
        return 0;
}

void ratelimit_free(RateLimiter *r)
{
        if (!r)
                return;
        free(r->slots);
        free(r);
}

static uint64_t identity_key(RateLimiter *r, uid_t uid, const char *cgroup)
{
        unsigned char h[crypto_generichash_BYTES_MIN];
        crypto_generichash_state st;
        uint64_t k;

        crypto_generichash_init(&st, r->hash_key, sizeof(r->hash_key), sizeof(h));
        crypto_generichash_update(&st, (const unsigned char *) &uid, sizeof(uid));
        if (cgroup)
                crypto_generichash_update(&st, (const unsigned char *) cgroup, strlen(cgroup));
        crypto_generichash_final(&st, h, sizeof(h));
        memcpy(&k, h, sizeof(k));
        return k ? k : 1; /* 0 marks an empty slot */
}

static Bucket *slot_find(RateLimiter *r, uint64_t key)
{
        for (size_t i = key % SLOTS;; i = (i + 1) % SLOTS)
                if (r->slots[i].key == key || r->slots[i].key == 0)
                        return &r->slots[i];
}

static bool bucket_full(const Bucket *b, uint64_t rate, uint64_t burst, uint64_t now)
{
        return b->tokens + (double) (now - b->last_usec) * (double) rate / 1e6 >= (double) burst;
}

static int cmp_newest_first(const void *a, const void *b)
{
        uint64_t x = ((const Bucket *) a)->last_usec, y = ((const Bucket *) b)->last_usec;
        return x > y ? -1 : x < y;
}

/* Makes room when the table is full: drops every bucket that has refilled completely (nothing
 * is lost, a new bucket starts full) and, if that is not enough, the idle-longest sixteenth,
 * so the rebuild happens once per many newcomers, not once per newcomer. */
static void evict(RateLimiter *r, uint64_t rate, uint64_t burst, uint64_t now)
{
        const size_t keep_max = RATE_IDENTITIES_MAX - RATE_IDENTITIES_MAX / 16;
        Bucket *live = malloc(RATE_IDENTITIES_MAX * sizeof(Bucket));
        size_t n = 0;

        if (live) {
                for (size_t i = 0; i < SLOTS && n < RATE_IDENTITIES_MAX; i++)
                        if (r->slots[i].key && !bucket_full(&r->slots[i], rate, burst, now))
                                live[n++] = r->slots[i];
                if (n > keep_max) {
                        qsort(live, n, sizeof(Bucket), cmp_newest_first);
                        n = keep_max;
                }
        }
        /* Without memory for the copy, forget everyone rather than fail the caller. */
        memset(r->slots, 0, SLOTS * sizeof(Bucket));
        r->n = 0;
        for (size_t i = 0; i < n; i++) {
                *slot_find(r, live[i].key) = live[i];
                r->n++;
        }
        free(live);
}

bool ratelimit_take(RateLimiter *r, uid_t uid, const char *cgroup, uint64_t rate, uint64_t burst,
                    uint64_t now_usec)
{
        uint64_t key;
        Bucket *b;

        if (rate == 0)
                return true;
        key = identity_key(r, uid, cgroup);
        b = slot_find(r, key);
        if (!b->key) {
                if (r->n >= RATE_IDENTITIES_MAX) {
                        evict(r, rate, burst, now_usec);
                        b = slot_find(r, key);
                }
                *b = (Bucket){.key = key, .last_usec = now_usec, .tokens = (double) burst};
                r->n++;
        }
        if (now_usec > b->last_usec) {
                b->tokens += (double) (now_usec - b->last_usec) * (double) rate / 1e6;
                if (b->tokens > (double) burst)
                        b->tokens = (double) burst;
                b->last_usec = now_usec;
        }
        if (b->tokens < 1.0)
                return false;
        b->tokens -= 1.0;
        return true;
}
