#include "transport/admission.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

static uint64_t key_hash(const char *key)
{
        uint64_t h = 1469598103934665603ULL; /* FNV-1a: spreads the comparisons, nothing more */

        for (const unsigned char *p = (const unsigned char *) key; *p; p++)
                h = (h ^ *p) * 1099511628211ULL;
        return h;
}

static KeyCount *key_find(KeyCounter *c, const char *key, uint64_t h)
{
        for (size_t i = 0; i < c->n; i++)
                if (c->entries[i].hash == h && strcmp(c->entries[i].key, key) == 0)
                        return &c->entries[i];
        return NULL;
}

int key_counter_add(KeyCounter *c, const char *key, uint64_t max)
{
        uint64_t h = key_hash(key);
        KeyCount *e = key_find(c, key, h);
        char *copy;

        if (e) {
                if (e->count >= max)
                        return -EUSERS;
                e->count++;
                return 0;
        }
        if (max == 0)
                return -EUSERS;
        if (c->n == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 16;
                KeyCount *n = realloc(c->entries, cap * sizeof(KeyCount));
                if (!n)
                        return -ENOMEM;
                c->entries = n;
                c->cap = cap;
        }
        copy = strdup(key);
        if (!copy)
                return -ENOMEM;
        c->entries[c->n++] = (KeyCount){.key = copy, .hash = h, .count = 1};
        return 0;
}

void key_counter_remove(KeyCounter *c, const char *key)
{
        KeyCount *e = key_find(c, key, key_hash(key));

        if (!e || --e->count > 0)
                return;
        free(e->key);
        *e = c->entries[--c->n];
}

void key_counter_done(KeyCounter *c)
{
        for (size_t i = 0; i < c->n; i++)
                free(c->entries[i].key);
        free(c->entries);
        *c = (KeyCounter){};
}
