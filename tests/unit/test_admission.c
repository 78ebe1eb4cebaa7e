/* Connections per uid: the table the listener admits connections by. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "transport/admission.h"

/* ---- connections per uid ------------------------------------------------------------------ */

static void test_uid_counter(void **state)
{
        UidCounter c = {};

        for (int i = 0; i < 3; i++)
                assert_int_equal(uid_counter_add(&c, 1000, 3), 0);
        assert_int_equal(uid_counter_add(&c, 1000, 3), -EUSERS);
        assert_int_equal(uid_counter_add(&c, 1000, 3), -EUSERS);
        /* Another uid is counted separately. */
        assert_int_equal(uid_counter_add(&c, 1001, 3), 0);
        assert_int_equal(c.n, 2);

        /* Freeing one slot admits exactly one more. */
        uid_counter_remove(&c, 1000);
        assert_int_equal(uid_counter_add(&c, 1000, 3), 0);
        assert_int_equal(uid_counter_add(&c, 1000, 3), -EUSERS);

        /* An entry goes away when its count reaches zero. */
        uid_counter_remove(&c, 1001);
        assert_int_equal(c.n, 1);
        assert_int_equal(c.entries[0].uid, 1000);
        assert_int_equal(c.entries[0].count, 3);
        for (int i = 0; i < 3; i++)
                uid_counter_remove(&c, 1000);
        assert_int_equal(c.n, 0);
        /* Removing what is not there changes nothing. */
        uid_counter_remove(&c, 1000);
        uid_counter_remove(&c, 5);
        assert_int_equal(c.n, 0);
        /* And the uid starts again from zero. */
        for (int i = 0; i < 3; i++)
                assert_int_equal(uid_counter_add(&c, 1000, 3), 0);
        assert_int_equal(uid_counter_add(&c, 1000, 3), -EUSERS);

        /* A limit of zero admits nobody; a lower limit applies at once to existing entries. */
        assert_int_equal(uid_counter_add(&c, 7, 0), -EUSERS);
        assert_int_equal(uid_counter_add(&c, 1000, 2), -EUSERS);
        assert_int_equal(c.n, 1);
        uid_counter_done(&c);
        assert_null(c.entries);
        assert_int_equal(c.n, 0);
}

static void test_uid_counter_many(void **state)
{
        UidCounter c = {};

        /* Beyond the initial capacity; then remove in an order that exercises the swap. */
        for (uid_t u = 0; u < 1000; u++) {
                assert_int_equal(uid_counter_add(&c, u, 2), 0);
                assert_int_equal(uid_counter_add(&c, u, 2), 0);
                assert_int_equal(uid_counter_add(&c, u, 2), -EUSERS);
        }
        assert_int_equal(c.n, 1000);
        for (uid_t u = 0; u < 1000; u += 2) {
                uid_counter_remove(&c, u);
                uid_counter_remove(&c, u);
        }
        assert_int_equal(c.n, 500);
        for (size_t i = 0; i < c.n; i++) {
                assert_int_equal(c.entries[i].uid % 2, 1);
                assert_int_equal(c.entries[i].count, 2);
        }
        for (uid_t u = 1; u < 1000; u += 2)
                assert_int_equal(uid_counter_add(&c, u, 2), -EUSERS);
        for (uid_t u = 0; u < 1000; u += 2)
                assert_int_equal(uid_counter_add(&c, u, 2), 0);
        assert_int_equal(c.n, 1000);
        uid_counter_done(&c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_uid_counter),
            cmocka_unit_test(test_uid_counter_many),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
