/* The master key and sealing: a blob opens only under the master key, purpose and id it was
 * sealed for, and the master key file is refused whenever someone else could have read or
 * replaced it. Real files in a fresh directory; messages are read from the daemon's stderr. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "macro.h"
#include "keys/seal.h"
#define TESTUTIL_MASTER_KEY
#include "testutil.h"

#define OTHER_UID 4001

static char root[64];

static const char *P(const char *rel)
{
        return path_below(root, rel);
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len), (ssize_t) len);
        assert_int_equal(fchmod(fd, mode), 0);
        close(fd);
}

static size_t read_file(const char *path, unsigned char *buf, size_t max)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        assert_true(fd >= 0);
        n = read(fd, buf, max);
        assert_true(n >= 0);
        close(fd);
        return (size_t) n;
}

/* master_key_load() refuses `path` with `want_r`, returns nothing and logs each of `want`. */
static void assert_load_refused(const char *path, int want_r, const char *const *want)
{
        MasterKey *m = (MasterKey *) 0x1;
        _cleanup_free_ char *log = NULL;
        int r;

        capture_begin();
        r = master_key_load(path, &m);
        log = capture_end();
        if (r != want_r)
                fail_msg("master_key_load(%s) = %d, wanted %d; log: %s", path, r, want_r, log);
        assert_ptr_equal(m, (MasterKey *) 0x1);
        for (; want && *want; want++)
                assert_logged(log, *want);
}

static int setup(void **state)
{
        if (tmpdir_make(root, sizeof(root), "seal") < 0)
                return -1;
        unsetenv("CREDENTIALS_DIRECTORY");
        return 0;
}

static int teardown(void **state)
{
        unsetenv("CREDENTIALS_DIRECTORY");
        return tmpdir_remove(root);
}

/* ---- sealing ------------------------------------------------------------------------------ */

static void test_round_trip(void **state)
{
        _cleanup_(master_key_freep) MasterKey *m = master_key_random("test");
        static const unsigned char plain[] = "a 32-byte seed, or a DER key ...";
        unsigned char *blob = NULL, *out = NULL;
        size_t blob_len = 0, out_len = 0;

        assert_int_equal(
            seal(m, "signing-key/EdDSA", "kid1", plain, sizeof(plain), &blob, &blob_len), 0);
        /* version, 24-byte nonce, ciphertext, 16-byte tag */
        assert_int_equal(blob_len, 1 + 24 + sizeof(plain) + 16);
        assert_null(memmem(blob, blob_len, plain, 8));
        assert_int_equal(unseal(m, "signing-key/EdDSA", "kid1", blob, blob_len, &out, &out_len), 0);
        assert_int_equal(out_len, sizeof(plain));
        assert_memory_equal(out, plain, sizeof(plain));
        sodium_free(out);
        free(blob);

        /* Empty plaintext still carries a tag that must verify. */
        assert_int_equal(seal(m, "p", "i", (const unsigned char *) "", 0, &blob, &blob_len), 0);
        assert_int_equal(blob_len, 1 + 24 + 16);
        assert_int_equal(unseal(m, "p", "i", blob, blob_len, &out, &out_len), 0);
        assert_int_equal(out_len, 0);
        sodium_free(out);
        free(blob);
}

/* unseal() fails with -EBADMSG and leaves the outputs alone. */
static void assert_unseal_refused(const MasterKey *m, const char *purpose, const char *id,
                                  const unsigned char *blob, size_t len)
{
        unsigned char *out = (unsigned char *) 0x1;
        size_t out_len = 77;

        assert_int_equal(unseal(m, purpose, id, blob, len, &out, &out_len), -EBADMSG);
        assert_ptr_equal(out, (unsigned char *) 0x1);
        assert_int_equal(out_len, 77);
}

static void test_unseal_refuses_other_context(void **state)
{
        _cleanup_(master_key_freep) MasterKey *m = master_key_random("test");
        _cleanup_(master_key_freep) MasterKey *other = master_key_random("test");
        static const unsigned char plain[] = "secret";
        _cleanup_free_ unsigned char *blob = NULL;
        size_t len;

        assert_int_equal(seal(m, "signing-key/EdDSA", "kid1", plain, sizeof(plain), &blob, &len),
                         0);
        assert_unseal_refused(m, "signing-key/ES256", "kid1", blob, len);
        assert_unseal_refused(m, "signing-key/EdDSA", "kid2", blob, len);
        assert_unseal_refused(m, "signing-key/EdDSA", "kid", blob, len);
        assert_unseal_refused(m, "signing-key/EdDSA", "", blob, len);
        assert_unseal_refused(other, "signing-key/EdDSA", "kid1", blob, len);
        /* The boundary between purpose and id is part of what is bound. */
        assert_unseal_refused(m, "signing-key/EdDSAk", "id1", blob, len);
        assert_unseal_refused(m, "signing-key/EdDS", "Akid1", blob, len);

        /* A master key differing in a single bit is another key. */
        unsigned char raw[MASTER_KEY_BYTES];
        _cleanup_(master_key_freep) MasterKey *near = NULL;
        memcpy(raw, m->key, MASTER_KEY_BYTES);
        raw[MASTER_KEY_BYTES - 1] ^= 0x01;
        assert_int_equal(master_key_new(raw, "near", &near), 0);
        assert_unseal_refused(near, "signing-key/EdDSA", "kid1", blob, len);
}

static void test_unseal_refuses_tampering(void **state)
{
        _cleanup_(master_key_freep) MasterKey *m = master_key_random("test");
        static const unsigned char plain[] = "a private key, 40 bytes long, give or ta";
        _cleanup_free_ unsigned char *blob = NULL, *copy = NULL;
        size_t len;

        assert_int_equal(seal(m, "p", "id", plain, sizeof(plain), &blob, &len), 0);
        copy = malloc(len + 1);
        assert_non_null(copy);

        /* Every bit of every byte: version, nonce, ciphertext, tag. */
        for (size_t i = 0; i < len; i++)
                for (int bit = 0; bit < 8; bit++) {
                        memcpy(copy, blob, len);
                        copy[i] ^= (unsigned char) (1u << bit);
                        assert_unseal_refused(m, "p", "id", copy, len);
                }
        /* Every truncation, including the empty blob and a blob of only version + nonce. */
        for (size_t n = 0; n < len; n++)
                assert_unseal_refused(m, "p", "id", blob, n);
        /* A byte appended. */
        memcpy(copy, blob, len);
        copy[len] = 0;
        assert_unseal_refused(m, "p", "id", copy, len + 1);

        /* And the untouched blob still opens (the loops above did not test a broken key). */
        unsigned char *out = NULL;
        size_t out_len;
        assert_int_equal(unseal(m, "p", "id", blob, len, &out, &out_len), 0);
        assert_memory_equal(out, plain, sizeof(plain));
        sodium_free(out);
}

static void test_seal_nonce_random(void **state)
{
        _cleanup_(master_key_freep) MasterKey *m = master_key_random("test");
        static const unsigned char plain[32] = {0};
        _cleanup_free_ unsigned char *a = NULL, *b = NULL;
        size_t la, lb;

        assert_int_equal(seal(m, "p", "id", plain, sizeof(plain), &a, &la), 0);
        assert_int_equal(seal(m, "p", "id", plain, sizeof(plain), &b, &lb), 0);
        assert_int_equal(la, lb);
        /* Different nonces, so different ciphertexts and tags. */
        assert_memory_not_equal(a + 1, b + 1, 24);
        assert_memory_not_equal(a + 25, b + 25, la - 25);
}

/* ---- generating the master key ------------------------------------------------------------ */

static void test_generate(void **state)
{
        char path[512];
        unsigned char first[64], again[64];
        struct stat st;
        size_t n;

        snprintf(path, sizeof(path), "%s", P("master.key"));
        umask(022);
        assert_int_equal(master_key_generate(path), 0);
        assert_int_equal(lstat(path, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_int_equal(st.st_uid, geteuid());
        n = read_file(path, first, sizeof(first));
        assert_int_equal(n, MASTER_KEY_BYTES);

        /* O_EXCL: never overwritten, the file stays as it was. */
        capture_begin();
        int r = master_key_generate(path);
        _cleanup_free_ char *log = capture_end();
        assert_int_equal(r, -EEXIST);
        assert_logged(log, path);
        assert_int_equal(read_file(path, again, sizeof(again)), MASTER_KEY_BYTES);
        assert_memory_equal(first, again, MASTER_KEY_BYTES);
        assert_int_equal(lstat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);

        /* Nor is a symlink followed to create a file elsewhere. */
        assert_int_equal(symlink(P("elsewhere.key"), P("link.key")), 0);
        capture_begin();
        r = master_key_generate(P("link.key"));
        free(capture_end());
        assert_true(r < 0);
        assert_int_equal(access(P("elsewhere.key"), F_OK), -1);

        /* What it made loads, and holds what was written. */
        _cleanup_(master_key_freep) MasterKey *m = NULL;
        assert_int_equal(master_key_load(path, &m), 0);
        assert_memory_equal(m->key, first, MASTER_KEY_BYTES);
        assert_non_null(strstr(m->source, "master.key"));

        /* Two keys differ. */
        assert_int_equal(master_key_generate(P("second.key")), 0);
        assert_int_equal(read_file(P("second.key"), again, sizeof(again)), MASTER_KEY_BYTES);
        assert_memory_not_equal(first, again, MASTER_KEY_BYTES);

        /* With a permissive umask the file is still 0600. */
        umask(0);
        assert_int_equal(master_key_generate(P("third.key")), 0);
        assert_int_equal(lstat(P("third.key"), &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        umask(022);
}

static void test_generate_unsafe_dir(void **state)
{
        assert_int_equal(mkdir(P("gw"), 0700), 0);
        assert_int_equal(chmod(P("gw"), 0770), 0);

        capture_begin();
        int r = master_key_generate(P("gw/master.key"));
        _cleanup_free_ char *log = capture_end();
        assert_int_equal(r, -EPERM);
        assert_logged(log, P("gw"));
        assert_logged(log, "0770");
        assert_int_equal(access(P("gw/master.key"), F_OK), -1);
}

/* ---- loading the master key: one broken setup each ---------------------------------------- */

static void test_load_good(void **state)
{
        unsigned char k[MASTER_KEY_BYTES];
        _cleanup_(master_key_freep) MasterKey *m = NULL;

        randombytes_buf(k, sizeof(k));
        write_file(P("master.key"), k, sizeof(k), 0600);
        assert_int_equal(master_key_load(P("master.key"), &m), 0);
        assert_memory_equal(m->key, k, sizeof(k));
        assert_string_equal(m->source, P("master.key"));

        /* Read-only for the owner is no less private. */
        _cleanup_(master_key_freep) MasterKey *ro = NULL;
        write_file(P("ro.key"), k, sizeof(k), 0400);
        assert_int_equal(master_key_load(P("ro.key"), &ro), 0);
        assert_memory_equal(ro->key, k, sizeof(k));
}

static void test_load_missing(void **state)
{
        assert_load_refused(P("none.key"), -ENOENT,
                            (const char *const[]){P("none.key"), "--generate-master-key", NULL});

        /* No file and no credential: a message saying how to provide one. */
        assert_load_refused(NULL, -ENOKEY,
                            (const char *const[]){"master.key", "master_key_file", NULL});
}

static void test_load_bad_mode(void **state)
{
        unsigned char k[MASTER_KEY_BYTES] = {1};

        write_file(P("g.key"), k, sizeof(k), 0640);
        assert_load_refused(P("g.key"), -EPERM,
                            (const char *const[]){P("g.key"), "0640", "0600", NULL});
        write_file(P("o.key"), k, sizeof(k), 0604);
        assert_load_refused(P("o.key"), -EPERM,
                            (const char *const[]){P("o.key"), "0604", "0600", NULL});
        write_file(P("gr.key"), k, sizeof(k), 0620);
        assert_load_refused(P("gr.key"), -EPERM, (const char *const[]){"0620", NULL});
        write_file(P("x.key"), k, sizeof(k), 0601);
        assert_load_refused(P("x.key"), -EPERM, (const char *const[]){"0601", NULL});
}

static void test_load_symlink(void **state)
{
        unsigned char k[MASTER_KEY_BYTES] = {2};

        write_file(P("real.key"), k, sizeof(k), 0600);
        assert_int_equal(symlink(P("real.key"), P("link.key")), 0);
        assert_load_refused(P("link.key"), -EPERM,
                            (const char *const[]){P("link.key"), "symlink", NULL});
        /* A relative link too. */
        assert_int_equal(symlink("real.key", P("rel.key")), 0);
        assert_load_refused(P("rel.key"), -EPERM, (const char *const[]){"symlink", NULL});
}

static void test_load_not_regular(void **state)
{
        assert_int_equal(mkdir(P("dir.key"), 0700), 0);
        assert_load_refused(P("dir.key"), -EPERM, (const char *const[]){P("dir.key"), NULL});
        assert_int_equal(mkfifo(P("fifo.key"), 0600), 0);
        /* Refused before it is opened: a fifo would block the daemon. */
        assert_load_refused(P("fifo.key"), -EPERM, (const char *const[]){"fifo", NULL});
}

static void test_load_wrong_size(void **state)
{
        unsigned char k[MASTER_KEY_BYTES + 1];

        randombytes_buf(k, sizeof(k));
        write_file(P("short.key"), k, MASTER_KEY_BYTES - 1, 0600);
        assert_load_refused(P("short.key"), -EINVAL,
                            (const char *const[]){P("short.key"), "31 bytes", "32", NULL});
        write_file(P("long.key"), k, MASTER_KEY_BYTES + 1, 0600);
        assert_load_refused(P("long.key"), -EINVAL,
                            (const char *const[]){P("long.key"), "33 bytes", "32", NULL});
        write_file(P("empty.key"), k, 0, 0600);
        assert_load_refused(P("empty.key"), -EINVAL, (const char *const[]){"0 bytes", NULL});
}

static void test_load_other_owner(void **state)
{
        unsigned char k[MASTER_KEY_BYTES] = {3};

        if (geteuid() != 0)
                skip();
        write_file(P("theirs.key"), k, sizeof(k), 0600);
        assert_int_equal(chown(P("theirs.key"), OTHER_UID, OTHER_UID), 0);
        assert_load_refused(P("theirs.key"), -EPERM,
                            (const char *const[]){P("theirs.key"), "uid 4001", "uid 0", NULL});
}

static void test_load_unsafe_parent(void **state)
{
        unsigned char k[MASTER_KEY_BYTES] = {4};

        assert_int_equal(mkdir(P("gw"), 0700), 0);
        write_file(P("gw/master.key"), k, sizeof(k), 0600);
        assert_int_equal(chmod(P("gw"), 0770), 0);
        assert_load_refused(P("gw/master.key"), -EPERM,
                            (const char *const[]){P("gw"), "0770", NULL});

        /* An ancestor further up counts too. */
        assert_int_equal(chmod(P("gw"), 0700), 0);
        assert_int_equal(mkdir(P("gw/sub"), 0700), 0);
        write_file(P("gw/sub/master.key"), k, sizeof(k), 0600);
        assert_int_equal(chmod(P("gw"), 0702), 0);
        assert_load_refused(P("gw/sub/master.key"), -EPERM,
                            (const char *const[]){P("gw"), "0702", NULL});

        /* Sticky makes a world-writable directory safe, as for /tmp. */
        assert_int_equal(chmod(P("gw"), 01777), 0);
        _cleanup_(master_key_freep) MasterKey *m = NULL;
        assert_int_equal(master_key_load(P("gw/sub/master.key"), &m), 0);

        if (geteuid() == 0) {
                /* A parent owned by another user could have the file swapped. */
                assert_int_equal(chmod(P("gw"), 0755), 0);
                assert_int_equal(chown(P("gw"), OTHER_UID, OTHER_UID), 0);
                assert_load_refused(P("gw/sub/master.key"), -EPERM,
                                    (const char *const[]){P("gw"), "uid 4001", NULL});
        }
}

static void test_credentials_directory(void **state)
{
        unsigned char cred[MASTER_KEY_BYTES], file[MASTER_KEY_BYTES];
        MasterKey *m = NULL;

        randombytes_buf(cred, sizeof(cred));
        randombytes_buf(file, sizeof(file));
        assert_int_equal(mkdir(P("creds"), 0700), 0);
        write_file(P("creds/master.key"), cred, sizeof(cred), 0600);
        write_file(P("file.key"), file, sizeof(file), 0600);
        assert_int_equal(setenv("CREDENTIALS_DIRECTORY", P("creds"), 1), 0);

        /* The credential wins over master_key_file. */
        assert_int_equal(master_key_load(P("file.key"), &m), 0);
        assert_memory_equal(m->key, cred, sizeof(cred));
        assert_string_equal(m->source, P("creds/master.key"));
        master_key_free(m);
        m = NULL;
        /* And is enough on its own. */
        assert_int_equal(master_key_load(NULL, &m), 0);
        assert_memory_equal(m->key, cred, sizeof(cred));
        master_key_free(m);
        m = NULL;

        /* The credential is checked like any key file: an unsafe one is refused, never passed
         * over for the file. */
        assert_int_equal(chmod(P("creds/master.key"), 0640), 0);
        assert_load_refused(P("file.key"), -EPERM,
                            (const char *const[]){P("creds/master.key"), "0640", NULL});
        assert_int_equal(chmod(P("creds/master.key"), 0600), 0);
        assert_int_equal(chmod(P("creds"), 0770), 0);
        assert_load_refused(P("file.key"), -EPERM, (const char *const[]){P("creds"), NULL});
        assert_int_equal(chmod(P("creds"), 0700), 0);

        /* A credentials directory without master.key: the file is used. */
        assert_int_equal(unlink(P("creds/master.key")), 0);
        assert_int_equal(master_key_load(P("file.key"), &m), 0);
        assert_memory_equal(m->key, file, sizeof(file));
        master_key_free(m);
        m = NULL;
        assert_load_refused(NULL, -ENOKEY, NULL);

        /* Empty: as if unset. */
        assert_int_equal(setenv("CREDENTIALS_DIRECTORY", "", 1), 0);
        assert_int_equal(master_key_load(P("file.key"), &m), 0);
        assert_memory_equal(m->key, file, sizeof(file));
        master_key_free(m);
}

static void test_loaded_key_same_as_bytes(void **state)
{
        unsigned char k[MASTER_KEY_BYTES];
        _cleanup_(master_key_freep) MasterKey *m = NULL;
        _cleanup_free_ unsigned char *blob = NULL;
        unsigned char *out = NULL;
        size_t len, out_len;

        /* A key loaded from a file seals and unseals like the same bytes built by hand. */
        randombytes_buf(k, sizeof(k));
        write_file(P("master.key"), k, sizeof(k), 0600);
        assert_int_equal(master_key_load(P("master.key"), &m), 0);
        _cleanup_(master_key_freep) MasterKey *byhand = NULL;
        assert_int_equal(master_key_new(k, "by hand", &byhand), 0);
        assert_int_equal(seal(m, "p", "i", (const unsigned char *) "x", 1, &blob, &len), 0);
        assert_int_equal(unseal(byhand, "p", "i", blob, len, &out, &out_len), 0);
        assert_int_equal(out_len, 1);
        assert_int_equal(out[0], 'x');
        sodium_free(out);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
            cmocka_unit_test_setup_teardown(test_unseal_refuses_other_context, setup, teardown),
            cmocka_unit_test_setup_teardown(test_unseal_refuses_tampering, setup, teardown),
            cmocka_unit_test_setup_teardown(test_seal_nonce_random, setup, teardown),
            cmocka_unit_test_setup_teardown(test_generate, setup, teardown),
            cmocka_unit_test_setup_teardown(test_generate_unsafe_dir, setup, teardown),
            cmocka_unit_test_setup_teardown(test_load_good, setup, teardown),
            cmocka_unit_test_setup_teardown(test_load_missing, setup, teardown),
            cmocka_unit_test_setup_teardown(test_load_bad_mode, setup, teardown),
            cmocka_unit_test_setup_teardown(test_load_symlink, setup, teardown),
            cmocka_unit_test_setup_teardown(test_load_not_regular, setup, teardown),
            cmocka_unit_test_setup_teardown(test_load_wrong_size, setup, teardown),
            cmocka_unit_test_setup_teardown(test_load_other_owner, setup, teardown),
            cmocka_unit_test_setup_teardown(test_load_unsafe_parent, setup, teardown),
            cmocka_unit_test_setup_teardown(test_credentials_directory, setup, teardown),
            cmocka_unit_test_setup_teardown(test_loaded_key_same_as_bytes, setup, teardown),
        };

        if (sodium_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
