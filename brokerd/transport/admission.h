/* Admission of connections: how many each uid, and each identity within it, holds open, so one
 * local user cannot take every connection slot, nor one workload its uid's. Entries exist only
 * while they count connections, so a table never holds more entries than there are
 * connections. Event loop only. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

/* Open connections per identity (uid, unit, container as one key): a uid's connections are
 * shared out among its workloads, so one container of a uid (Docker's root is host uid 0)
 * cannot take the slots of another. Same shape as UidCounter: entries only while they count. */
typedef struct KeyCount {
        char *key;
        uint64_t hash;
        uint32_t count;
} KeyCount;

typedef struct KeyCounter {
        KeyCount *entries;
        size_t n, cap;
} KeyCounter;

/* Adds one connection for `key` unless it already has `max`. -EUSERS at the limit, -ENOMEM. */
int key_counter_add(KeyCounter *c, const char *key, uint64_t max);
void key_counter_remove(KeyCounter *c, const char *key);
void key_counter_done(KeyCounter *c);
