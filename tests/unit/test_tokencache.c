/* The upstream token cache (slots by key, LRU bound that spares running exchanges, clearing
 * that detaches them) and the circuit breaker's states. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "federation/breaker.h"
#include "federation/cache.h"
#include "macro.h"

static FedToken *token_new(const char *text)
{
        FedToken *t = calloc(1, sizeof(FedToken));

        assert_non_null(t);
        atomic_init(&t->refs, 1);
        t->access_token = sodium_malloc(strlen(text) + 1);
        assert_non_null(t->access_token);
        memcpy(t->access_token, text, strlen(text) + 1);
        t->token_type = strdup("Bearer");
        return t;
}

static void test_get_put_remove(void **state)
{
        TokenCache *c = NULL;
        CacheSlot *s;

        assert_int_equal(token_cache_new(8, &c), 0);
        assert_null(token_cache_get(c, "k1"));
        s = token_cache_put(c, "k1");
        assert_non_null(s);
        assert_null(s->token);
        assert_ptr_equal(token_cache_put(c, "k1"), s); /* the same slot, not a second one */
        assert_ptr_equal(token_cache_get(c, "k1"), s);
        assert_null(token_cache_get(c, "k2"));
        assert_null(token_cache_get(c, "k"));
        assert_int_equal(token_cache_size(c), 1);
        s->token = token_new("secret-token");
        token_cache_remove(c, s); /* drops its reference */
        assert_null(token_cache_get(c, "k1"));
        assert_int_equal(token_cache_size(c), 0);
        token_cache_free(c);
}

static void test_lru_bound(void **state)
{
        TokenCache *c = NULL;
        char key[16];

        assert_int_equal(token_cache_new(3, &c), 0);
        assert_non_null(token_cache_put(c, "a"));
        assert_non_null(token_cache_put(c, "b"));
        assert_non_null(token_cache_put(c, "c"));
        assert_non_null(token_cache_get(c, "a")); /* a is now the most recent: b goes first */
        assert_non_null(token_cache_put(c, "d"));
        assert_int_equal(token_cache_size(c), 3);
        assert_null(token_cache_get(c, "b"));
        assert_non_null(token_cache_get(c, "a"));
        assert_non_null(token_cache_get(c, "c"));
        assert_non_null(token_cache_get(c, "d"));

        /* many keys, few slots: the bound holds */
        for (int i = 0; i < 1000; i++) {
                snprintf(key, sizeof(key), "key-%d", i);
                assert_non_null(token_cache_put(c, key));
                assert_true(token_cache_size(c) <= 3);
        }
        assert_non_null(token_cache_get(c, "key-999"));
        token_cache_free(c);
}

static void detach(CacheSlot *s)
{
        (*(int *) s->flight)++;
        s->flight = NULL;
}

static void test_running_exchanges_spared(void **state)
{
        TokenCache *c = NULL;
        int detached = 0;
        CacheSlot *a, *b;

        assert_int_equal(token_cache_new(2, &c), 0);
        a = token_cache_put(c, "a");
        b = token_cache_put(c, "b");
        a->flight = (Flight *) &detached; /* an exchange runs for both */
        b->flight = (Flight *) &detached;
        /* no slot may go: the bound gives way rather than lose a running exchange's waiters */
        assert_non_null(token_cache_put(c, "c"));
        assert_ptr_equal(token_cache_get(c, "a"), a);
        assert_ptr_equal(token_cache_get(c, "b"), b);
        assert_int_equal(token_cache_size(c), 3);
        /* clearing detaches each running exchange before its slot goes */
        token_cache_clear(c, detach);
        assert_int_equal(detached, 2);
        assert_int_equal(token_cache_size(c), 0);
        assert_null(token_cache_get(c, "a"));
        token_cache_free(c);
}

static void test_token_refs(void **state)
{
        TokenCache *c = NULL;
        CacheSlot *s;
        FedToken *t = token_new("abc"), *held;

        assert_int_equal(token_cache_new(4, &c), 0);
        s = token_cache_put(c, "k");
        s->token = t;
        held = fed_token_ref(s->token); /* a caller answering with it */
        token_cache_clear(c, NULL);
        /* the caller's reference keeps it alive after the cache let go */
        assert_string_equal(held->access_token, "abc");
        fed_token_unref(held);
        token_cache_free(c);
}

static void test_breaker(void **state)
{
        Breaker b = {};
        bool probe;

        assert_string_equal(breaker_state_name(&b, 0), "ok");
        assert_true(breaker_allow(&b, 0, &probe));
        assert_false(probe);
        breaker_failure(&b, 0, 3, 1000);
        breaker_failure(&b, 0, 3, 1000);
        assert_string_equal(breaker_state_name(&b, 0), "failing");
        assert_true(breaker_allow(&b, 0, &probe));
        breaker_failure(&b, 100, 3, 1000); /* the third in a row: open until 1100 */
        assert_string_equal(breaker_state_name(&b, 100), "open");
        assert_false(breaker_allow(&b, 500, &probe));
        assert_false(breaker_allow(&b, 1099, &probe));

        /* half-open: one probe, and only one */
        assert_true(breaker_allow(&b, 1100, &probe));
        assert_true(probe);
        assert_false(breaker_allow(&b, 1101, &probe));
        /* the probe fails: open again at once */
        breaker_failure(&b, 1200, 3, 1000);
        assert_false(breaker_allow(&b, 1300, &probe));
        assert_true(breaker_allow(&b, 2200, &probe));
        assert_true(probe);
        /* an abandoned probe lets the next request probe */
        breaker_probe_abandoned(&b);
        assert_true(breaker_allow(&b, 2201, &probe));
        assert_true(probe);
        breaker_success(&b);
        assert_string_equal(breaker_state_name(&b, 2300), "ok");
        assert_true(breaker_allow(&b, 2300, &probe));
        assert_false(probe);
        /* a success resets the count: two more failures do not open it */
        breaker_failure(&b, 2400, 3, 1000);
        breaker_failure(&b, 2400, 3, 1000);
        assert_true(breaker_allow(&b, 2400, &probe));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_get_put_remove),
            cmocka_unit_test(test_lru_bound),
            cmocka_unit_test(test_running_exchanges_spared),
            cmocka_unit_test(test_token_refs),
            cmocka_unit_test(test_breaker),
        };

        if (sodium_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
