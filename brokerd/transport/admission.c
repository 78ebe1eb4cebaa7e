#include "transport/admission.h"

#include <errno.h>
#include <stdlib.h>

int uid_counter_add(UidCounter *c, uid_t uid, uint64_t max)
{
        for (size_t i = 0; i < c->n; i++)
                if (c->entries[i].uid == uid) {
                        if (c->entries[i].count >= max)
                                return -EUSERS;
                        c->entries[i].count++;
                        return 0;
                }
        if (max == 0)
                return -EUSERS;
        if (c->n == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 16;
                UidCount *e = realloc(c->entries, cap * sizeof(UidCount));
                if (!e)
                        return -ENOMEM;
                c->entries = e;
                c->cap = cap;
        }
        c->entries[c->n++] = (UidCount){.uid = uid, .count = 1};
        return 0;
}

void uid_counter_remove(UidCounter *c, uid_t uid)
{
        for (size_t i = 0; i < c->n; i++)
                if (c->entries[i].uid == uid) {
                        if (--c->entries[i].count == 0)
                                c->entries[i] = c->entries[--c->n];
                        return;
                }
}

void uid_counter_done(UidCounter *c)
{
        free(c->entries);
        *c = (UidCounter){};
}
