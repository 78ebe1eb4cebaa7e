/* The upstreams' secrets: sealed under the master key in keys.db, bound to their names,
 * listed without values, revealed into secure memory, and never in the file as plain text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define TESTUTIL_GRANTLOG
#define TESTUTIL_MASTER_KEY
#include "keys/keystore.h"
#include "keys/secretstore.h"
#include "testutil.h"

typedef struct Fixture {
        char dir[PATH_MAX];
        MasterKey *master;
        KeyStore *keys;
        SecretStore *secrets;
} Fixture;

static int setup(void **state)
{
        Fixture *f = calloc(1, sizeof(Fixture));

        if (!f || tmpdir_make(f->dir, sizeof(f->dir), "secrets") < 0)
                return -1;
        f->master = master_key_random("test");
        if (keystore_open(f->dir, f->master, &f->keys) < 0 ||
            secretstore_open(f->dir, f->master, &f->secrets) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        Fixture *f = *state;

        secretstore_close(f->secrets);
        keystore_close(f->keys);
        master_key_free(f->master);
        tmpdir_remove(f->dir);
        free(f);
        return 0;
}

static void test_set_reveal_list_delete(void **state)
{
        Fixture *f = *state;
        SecretValue v = {};
        json_t *list;

        assert_int_equal(secretstore_reveal(f->secrets, "vertex", &v), -ENOENT);
        assert_int_equal(secretstore_set(f->secrets, "vertex", "s3cret-value", 12, 1000), 1);
        assert_int_equal(secretstore_set(f->secrets, "azure", "other", 5, 1001), 1);
        assert_int_equal(secretstore_reveal(f->secrets, "vertex", &v), 0);
        assert_int_equal(v.len, 12);
        assert_string_equal((char *) v.bytes, "s3cret-value");
        secret_value_free(&v);
        assert_null(v.bytes);

        /* replaced: created_at stays, updated_at moves */
        assert_int_equal(secretstore_set(f->secrets, "vertex", "new", 3, 2000), 0);
        assert_int_equal(secretstore_reveal(f->secrets, "vertex", &v), 0);
        assert_string_equal((char *) v.bytes, "new");
        secret_value_free(&v);

        list = secretstore_list(f->secrets);
        assert_non_null(list);
        assert_int_equal(json_array_size(list), 2);
        json_t *first = json_array_get(list, 0), *second = json_array_get(list, 1);
        assert_string_equal(json_string_value(json_object_get(first, "name")), "azure");
        assert_string_equal(json_string_value(json_object_get(second, "name")), "vertex");
        assert_int_equal(json_integer_value(json_object_get(second, "created_at")), 1000);
        assert_int_equal(json_integer_value(json_object_get(second, "updated_at")), 2000);
        /* names and dates only */
        assert_int_equal(json_object_size(second), 3);
        json_decref(list);

        assert_int_equal(secretstore_delete(f->secrets, "vertex"), 0);
        assert_int_equal(secretstore_delete(f->secrets, "vertex"), -ENOENT);
        assert_int_equal(secretstore_reveal(f->secrets, "vertex", &v), -ENOENT);
}

static void test_not_in_the_file(void **state)
{
        Fixture *f = *state;
        static const char value[] = "plain-text-marker-7f3a9c";
        Bytes db;

        assert_int_equal(secretstore_set(f->secrets, "n", value, strlen(value), 1), 1);
        secretstore_close(f->secrets);
        f->secrets = NULL;
        db = slurp(path_below(f->dir, "keys.db"));
        assert_null(memmem(db.p, db.n, value, strlen(value)));
        assert_null(memmem(db.p, db.n, "7f3a9c", 6));
        bytes_free(&db);
        assert_int_equal(secretstore_open(f->dir, f->master, &f->secrets), 0);

        /* deleted: the row goes (secure_delete overwrites its page) */
        assert_int_equal(secretstore_delete(f->secrets, "n"), 0);
        assert_int_equal(sql_int(path_below(f->dir, "keys.db"), "SELECT COUNT(*) FROM secrets"),
                         0);
}

/* A sealed value moved to another name's row does not open: the name is associated data. */
static void test_bound_to_its_name(void **state)
{
        Fixture *f = *state;
        SecretValue v = {};

        assert_int_equal(secretstore_set(f->secrets, "a", "value-of-a", 10, 1), 1);
        assert_int_equal(secretstore_set(f->secrets, "b", "value-of-b", 10, 1), 1);
        sql_exec(path_below(f->dir, "keys.db"),
                 "UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE name = 'a')"
                 " WHERE name = 'b'");
        capture_begin();
        assert_int_equal(secretstore_reveal(f->secrets, "b", &v), -EBADMSG);
        _cleanup_free_ char *log = capture_end();
        assert_logged(log, "the secret \"b\" does not open under the master key");
        /* never the value in the message */
        assert_null(strstr(log, "value-of"));
        assert_null(v.bytes);
        assert_int_equal(secretstore_reveal(f->secrets, "a", &v), 0);
        secret_value_free(&v);
}

/* Another master key (a stolen keys.db elsewhere) opens nothing. */
static void test_other_master_key(void **state)
{
        Fixture *f = *state;
        _cleanup_(master_key_freep) MasterKey *other = master_key_random("other");
        SecretStore *ss = NULL;
        SecretValue v = {};

        assert_int_equal(secretstore_set(f->secrets, "a", "value", 5, 1), 1);
        assert_int_equal(secretstore_open(f->dir, other, &ss), 0);
        capture_begin();
        assert_int_equal(secretstore_reveal(ss, "a", &v), -EBADMSG);
        free(capture_end());
        secretstore_close(ss);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_set_reveal_list_delete, setup, teardown),
            cmocka_unit_test_setup_teardown(test_not_in_the_file, setup, teardown),
            cmocka_unit_test_setup_teardown(test_bound_to_its_name, setup, teardown),
            cmocka_unit_test_setup_teardown(test_other_master_key, setup, teardown),
        };

        if (sodium_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
