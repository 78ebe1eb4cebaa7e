/* Token files (client/tokenfile.c): the exact mode whatever the umask, atomic replacement (a new
 * inode renamed over the old), a symlink at the path replaced rather than followed, a failed
 * write that leaves the old file and no temporary name behind, and the strict mode parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>

#include "macro.h"
#include "testutil.h"
#include "tokenfile.h"

static char dir[PATH_MAX];

static int setup(void **state)
{
        return tmpdir_make(dir, sizeof(dir), "tokenfile");
}

static int teardown(void **state)
{
        return tmpdir_remove(dir);
}

/* Names in dir, sorted, space-separated (no "." or ".."). */
static char *listing(const char *d)
{
        struct dirent **names;
        int n = scandir(d, &names, NULL, alphasort);
        char *out = calloc(1, 4096);

        assert_true(n >= 0);
        assert_non_null(out);
        for (int i = 0; i < n; i++) {
                if (strcmp(names[i]->d_name, ".") != 0 && strcmp(names[i]->d_name, "..") != 0) {
                        if (out[0])
                                strcat(out, " ");
                        strncat(out, names[i]->d_name, 4000 - strlen(out));
                }
                free(names[i]);
        }
        free(names);
        return out;
}

static void assert_content(const char *path, const char *want)
{
        Bytes b = slurp(path);
        assert_int_equal(b.n, strlen(want));
        assert_memory_equal(b.p, want, b.n);
        bytes_free(&b);
}

static void test_exact_mode_whatever_the_umask(void **state)
{
        const char *p = path_below(dir, "mode");
        mode_t old = umask(077);
        struct stat st;

        assert_int_equal(token_file_write(p, "abc", 3, 0640), 0);
        umask(old);
        assert_int_equal(lstat(p, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0640);
        assert_int_equal(st.st_uid, geteuid());
        assert_content(p, "abc"); /* the bytes alone: no newline added */
        assert_int_equal(unlink(p), 0);
}

static void test_replaced_by_a_new_inode(void **state)
{
        const char *p = path_below(dir, "replace");
        struct stat a, b;
        _cleanup_free_ char *names = NULL;

        assert_int_equal(token_file_write(p, "first", 5, 0600), 0);
        assert_int_equal(stat(p, &a), 0);
        assert_int_equal(token_file_write(p, "second!", 7, 0644), 0);
        assert_int_equal(stat(p, &b), 0);
        assert_true(a.st_ino != b.st_ino);
        assert_int_equal(b.st_mode & 07777, 0644);
        assert_content(p, "second!");
        names = listing(dir);
        assert_string_equal(names, "replace");
        assert_int_equal(unlink(p), 0);
}

static void test_symlink_is_replaced_not_followed(void **state)
{
        const char *target = path_below(dir, "target"), *link = path_below(dir, "link");
        struct stat st;

        spit(target, (Bytes){.p = (unsigned char *) "keep", .n = 4});
        assert_int_equal(symlink(target, link), 0);
        assert_int_equal(token_file_write(link, "token", 5, 0600), 0);
        assert_content(target, "keep");
        assert_int_equal(lstat(link, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_content(link, "token");
        assert_int_equal(unlink(link), 0);
        assert_int_equal(unlink(target), 0);
}

static void test_failed_write_leaves_the_old_file(void **state)
{
        const char *p = path_below(dir, "old");
        _cleanup_free_ char *log = NULL, *names = NULL;
        struct stat a, b;
        int r;

        assert_int_equal(token_file_write(p, "old", 3, 0600), 0);
        assert_int_equal(stat(p, &a), 0);
        writes_fail(); /* RLIMIT_FSIZE of one byte */
        r = token_file_write(p, "a much longer token", 19, 0600);
        log = writes_restore();
        assert_int_equal(r, -EFBIG);
        assert_string_equal(log, ""); /* logs nothing: the caller does */
        assert_int_equal(stat(p, &b), 0);
        assert_int_equal(a.st_ino, b.st_ino);
        assert_content(p, "old");
        names = listing(dir);
        assert_string_equal(names, "old"); /* no temporary file left */
        assert_int_equal(unlink(p), 0);
}

static void test_paths(void **state)
{
        _cleanup_free_ char *names = NULL;
        char cwd[PATH_MAX];
        const char *sub = path_below(dir, "sub");

        assert_int_equal(token_file_write(path_below(dir, "missing/x"), "t", 1, 0600), -ENOENT);
        assert_int_equal(token_file_write(path_below(dir, "x/"), "t", 1, 0600), -EISDIR);
        assert_int_equal(token_file_write(path_below(dir, ".."), "t", 1, 0600), -EISDIR);
        assert_int_equal(token_file_write("", "t", 1, 0600), -EINVAL);
        assert_int_equal(token_file_write(path_below(dir, "m"), "t", 1, 010600), -EINVAL);

        /* a directory at the path: refused up front, and the write fails without leftovers */
        assert_int_equal(mkdir(sub, 0700), 0);
        assert_int_equal(token_file_check_dir(sub), -EISDIR);
        assert_true(token_file_write(sub, "t", 1, 0600) < 0);
        names = listing(dir);
        assert_string_equal(names, "sub");
        assert_int_equal(rmdir(sub), 0);

        assert_int_equal(token_file_check_dir(path_below(dir, "missing/x")), -ENOENT);
        assert_int_equal(token_file_check_dir(path_below(dir, "fine")), 0);

        /* a bare name lives in the working directory */
        assert_non_null(getcwd(cwd, sizeof(cwd)));
        assert_int_equal(chdir(dir), 0);
        assert_int_equal(token_file_check_dir("here"), 0);
        assert_int_equal(token_file_write("here", "t", 1, 0600), 0);
        assert_int_equal(chdir(cwd), 0);
        assert_content(path_below(dir, "here"), "t");
        assert_int_equal(unlink(path_below(dir, "here")), 0);
}

static void test_mode_parse(void **state)
{
        const struct {
                const char *s;
                int r;
                mode_t mode;
        } cases[] = {
            {"0600", 0, 0600},     {"600", 0, 0600},      {"0640", 0, 0640},
            {"0644", 0, 0644},     {"0440", 0, 0440},     {"0400", 0, 0400},
            {"0004", 0, 0004},     {"0660", -EPERM, 0},   {"0666", -EPERM, 0},
            {"0602", -EPERM, 0},   {"0700", -EPERM, 0},   {"0610", -EPERM, 0},
            {"0601", -EPERM, 0},   {"4600", -EPERM, 0},   {"2600", -EPERM, 0},
            {"1600", -EPERM, 0},   {"0200", -EPERM, 0},   {"0", -EPERM, 0},
            {"", -EINVAL, 0},      {"00600", -EINVAL, 0}, {"0o600", -EINVAL, 0},
            {"0x180", -EINVAL, 0}, {"8", -EINVAL, 0},     {"600 ", -EINVAL, 0},
            {" 600", -EINVAL, 0},  {"+600", -EINVAL, 0},  {"-600", -EINVAL, 0},
            {"06a0", -EINVAL, 0},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                mode_t m = 01234;
                int r = token_file_mode_parse(cases[i].s, &m);
                if (r != cases[i].r)
                        fail_msg("\"%s\": got %d, want %d", cases[i].s, r, cases[i].r);
                assert_int_equal(m, cases[i].r == 0 ? cases[i].mode : 01234); /* untouched */
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_exact_mode_whatever_the_umask),
            cmocka_unit_test(test_replaced_by_a_new_inode),
            cmocka_unit_test(test_symlink_is_replaced_not_followed),
            cmocka_unit_test(test_failed_write_leaves_the_old_file),
            cmocka_unit_test(test_paths),
            cmocka_unit_test(test_mode_parse),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
