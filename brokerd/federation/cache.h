/* The upstream token cache: slots keyed by (upstream, rule, subject, scopes), each holding the
 * token last obtained for that key and the exchange running for it, if any (so concurrent
 * misses of one key make one exchange: single flight). Bounded: past `max` slots the least
 * recently used one without a running exchange goes. Never on disk; tokens are in secure
 * memory (FedToken).
 *
 * A FedToken is immutable once made and reference-counted (atomically): a cache hit hands out
 * a reference without copying the token, and the caller drops it after answering.
 *
 * Threads: the cache itself is not locked; its owner (federation.c) holds its lock around
 * every call. fed_token_ref/unref are safe anywhere. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct FedToken {
        atomic_uint refs;
        char *access_token; /* secure memory, NUL-terminated */
        size_t access_token_len;
        char *token_type, *scope, *issued_token_type; /* scope, issued_token_type may be NULL */
        int64_t obtained_ms, expires_ms; /* wall clock */
        bool cacheable;                  /* false: the endpoint gave no lifetime */
        long http_status;
        char request_id[33];
        char token_sha256[65]; /* hex of the access token: what the grant log keeps */
        /* aws_sts: the key pair beside the SessionToken (the access token) */
        char *aws_access_key_id;     /* an id, not a secret */
        char *aws_secret_access_key; /* secure memory */
        char *aws_expiration;        /* as AWS wrote it (ISO 8601) */
} FedToken;

FedToken *fed_token_ref(FedToken *t);
void fed_token_unref(FedToken *t);

typedef struct Flight Flight; /* federation.c's: the exchange running for a slot */

typedef struct CacheSlot {
        char *key;
        uint64_t hash;
        FedToken *token; /* NULL until one is obtained */
        Flight *flight;  /* NULL when no exchange runs */
        struct CacheSlot *bucket_next, *lru_prev, *lru_next;
} CacheSlot;

typedef struct TokenCache TokenCache;

int token_cache_new(size_t max, TokenCache **ret);
/* Frees every slot; a slot's flight must have been detached (slot->flight == NULL) by the
 * owner first, see token_cache_clear(). */
void token_cache_free(TokenCache *c);

/* The slot for `key`, now the most recently used, or NULL. */
CacheSlot *token_cache_get(TokenCache *c, const char *key);
/* The slot for `key`, made if missing (evicting as above). NULL when out of memory. */
CacheSlot *token_cache_put(TokenCache *c, const char *key);
void token_cache_remove(TokenCache *c, CacheSlot *s);
/* Removes every slot; `detach` is called first for each slot with a flight. */
void token_cache_clear(TokenCache *c, void (*detach)(CacheSlot *s));
size_t token_cache_size(const TokenCache *c);
