#include "federation/cache.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

struct TokenCache {
        CacheSlot **buckets;
        size_t n_buckets, n, max;
        CacheSlot *lru_first, *lru_last; /* most recently used first */
        /* SipHash key: callers choose subjects and scopes, so bucket collisions must not be
         * theirs to arrange */
        unsigned char hash_key[crypto_shorthash_KEYBYTES];
};

FedToken *fed_token_ref(FedToken *t)
{
        atomic_fetch_add(&t->refs, 1);
        return t;
}

void fed_token_unref(FedToken *t)
{
        if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
                return;
        if (t->access_token)
                sodium_free(t->access_token);
        free(t->token_type);
        free(t->scope);
        free(t->issued_token_type);
        free(t->aws_access_key_id);
        if (t->aws_secret_access_key)
                sodium_free(t->aws_secret_access_key);
        free(t->aws_expiration);
        free(t);
}

int token_cache_new(size_t max, TokenCache **ret)
{
        TokenCache *c = calloc(1, sizeof(TokenCache));
        size_t nb = 16;

        if (!c)
                return -ENOMEM;
        while (nb < max && nb < (1u << 20))
                nb <<= 1;
        c->buckets = calloc(nb, sizeof(CacheSlot *));
        if (!c->buckets) {
                free(c);
                return -ENOMEM;
        }
        c->n_buckets = nb;
        c->max = max;
        crypto_shorthash_keygen(c->hash_key);
        *ret = c;
        return 0;
}

static uint64_t hash_key(const TokenCache *c, const char *key)
{
        unsigned char h[crypto_shorthash_BYTES];
        uint64_t v;

        crypto_shorthash(h, (const unsigned char *) key, strlen(key), c->hash_key);
        memcpy(&v, h, sizeof(v));
        return v;
}

static void lru_unlink(TokenCache *c, CacheSlot *s)
{
        if (s->lru_prev)
                s->lru_prev->lru_next = s->lru_next;
        else
                c->lru_first = s->lru_next;
        if (s->lru_next)
                s->lru_next->lru_prev = s->lru_prev;
        else
                c->lru_last = s->lru_prev;
        s->lru_prev = s->lru_next = NULL;
}

static void lru_push_front(TokenCache *c, CacheSlot *s)
{
        s->lru_prev = NULL;
        s->lru_next = c->lru_first;
        if (c->lru_first)
                c->lru_first->lru_prev = s;
        c->lru_first = s;
        if (!c->lru_last)
                c->lru_last = s;
}

CacheSlot *token_cache_get(TokenCache *c, const char *key)
{
        uint64_t h = hash_key(c, key);

        for (CacheSlot *s = c->buckets[h & (c->n_buckets - 1)]; s; s = s->bucket_next)
                if (s->hash == h && strcmp(s->key, key) == 0) {
                        lru_unlink(c, s);
                        lru_push_front(c, s);
                        return s;
                }
        return NULL;
}

void token_cache_remove(TokenCache *c, CacheSlot *s)
{
        CacheSlot **p = &c->buckets[s->hash & (c->n_buckets - 1)];

        while (*p && *p != s)
                p = &(*p)->bucket_next;
        if (*p)
                *p = s->bucket_next;
        lru_unlink(c, s);
        c->n--;
        fed_token_unref(s->token);
        free(s->key);
        free(s);
}

/* The least recently used slots with no exchange running go until there is room for one. */
static void evict(TokenCache *c)
{
        CacheSlot *s = c->lru_last;

        while (c->n >= c->max && s) {
                CacheSlot *prev = s->lru_prev;
                if (!s->flight)
                        token_cache_remove(c, s);
                s = prev;
        }
}

CacheSlot *token_cache_put(TokenCache *c, const char *key)
{
        CacheSlot *s = token_cache_get(c, key);
        size_t b;

        if (s)
                return s;
        evict(c);
        s = calloc(1, sizeof(CacheSlot));
        if (!s || !(s->key = strdup(key))) {
                free(s);
                return NULL;
        }
        s->hash = hash_key(c, key);
        b = s->hash & (c->n_buckets - 1);
        s->bucket_next = c->buckets[b];
        c->buckets[b] = s;
        lru_push_front(c, s);
        c->n++;
        return s;
}

void token_cache_clear(TokenCache *c, void (*detach)(CacheSlot *s))
{
        while (c->lru_first) {
                CacheSlot *s = c->lru_first;
                if (s->flight && detach)
                        detach(s);
                token_cache_remove(c, s);
        }
}

void token_cache_free(TokenCache *c)
{
        if (!c)
                return;
        token_cache_clear(c, NULL);
        free(c->buckets);
        free(c);
}

size_t token_cache_size(const TokenCache *c)
{
        return c->n;
}
