/* Admission of connections: how many each uid holds open, so one local user cannot take every
 * connection slot. Entries exist only while a uid has connections, so the table never holds
 * more entries than there are connections. Event loop only. */
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
