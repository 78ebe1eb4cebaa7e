/* MUNGE-style path checks: each test builds a real tree under a fresh directory in /tmp, breaks
 * one thing, and shows the check refuses it with a message naming the path and the modes. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "macro.h"
#include "pathsafe.h"
#include "testutil.h"

static char root[PATH_MAX];
static char err[512];

/* Absolute path below the test root, in one of a few rotating buffers so that a call can take
 * several of them. */
static const char *P(const char *rel)
{
        return path_below(root, rel);
}

/* mkdir + chmod: the mode must not depend on the umask. */
static void make_dir(const char *rel, mode_t mode)
{
        assert_int_equal(mkdir(P(rel), 0700), 0);
        assert_int_equal(chmod(P(rel), mode), 0);
}

static void make_file(const char *rel, mode_t mode)
{
        int fd = open(P(rel), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, "secret\n", 7), 7);
        assert_int_equal(close(fd), 0);
        assert_int_equal(chmod(P(rel), mode), 0);
}

static void make_symlink(const char *target, const char *rel)
{
        assert_int_equal(symlink(target, P(rel)), 0);
}

static mode_t mode_of(const char *rel)
{
        struct stat st;

        assert_int_equal(lstat(P(rel), &st), 0);
        return st.st_mode & 07777;
}

/* err must contain the formatted text (paths below the root are given relative to it). */
static void assert_err_contains(const char *fmt, ...) _printf_(1, 2);
static void assert_err_contains(const char *fmt, ...)
{
        char want[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(want, sizeof(want), fmt, ap);
        va_end(ap);
        if (!strstr(err, want))
                fail_msg("error message \"%s\"\n  does not contain \"%s\"", err, want);
}

static int setup(void **state)
{
        if (tmpdir_make(root, sizeof(root), "pathsafe") < 0)
                return -1;
        /* mkdtemp makes 0700; the tests want a chain that is safe unless they break it. */
        if (chmod(root, 0755) < 0)
                return -1;
        err[0] = '\0';
        return 0;
}

static int teardown(void **state)
{
        umask(022);
        return tmpdir_remove(root);
}

static void test_safe_tree_accepted(void **state)
{
        make_dir("keys", 0755);
        make_dir("keys/sub", 0700);
        make_file("keys/master.key", 0600);
        make_file("keys/ro.key", 0400);

        assert_int_equal(path_check_dir_chain(P("keys"), true, err, sizeof(err)), 0);
        assert_int_equal(path_check_dir_chain(P("keys/sub"), false, err, sizeof(err)), 0);
        /* Trailing slashes, "." and ".." resolve to the same safe directory. */
        assert_int_equal(path_check_dir_chain(P("keys/sub/../sub/./"), false, err, sizeof(err)), 0);
        assert_int_equal(path_check_private_file(P("keys/master.key"), err, sizeof(err)), 0);
        /* 0600 is the usual mode, but read-only for the owner is no less private. */
        assert_int_equal(path_check_private_file(P("keys/ro.key"), err, sizeof(err)), 0);
        /* /tmp: world-writable but sticky. */
        assert_int_equal(path_check_dir_chain("/tmp", true, err, sizeof(err)), 0);
        assert_int_equal(path_check_dir_chain("/", true, err, sizeof(err)), 0);
}

static void test_group_writable_ancestor(void **state)
{
        make_dir("keys", 0775);
        make_dir("keys/sub", 0755);
        make_file("keys/sub/master.key", 0600);

        assert_int_equal(path_check_dir_chain(P("keys/sub"), false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0775), wanted no "
                            "group/other write (e.g. 0755) unless sticky",
                            P("keys"));

        err[0] = '\0';
        assert_int_equal(path_check_private_file(P("keys/sub/master.key"), err, sizeof(err)),
                         -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0775)", P("keys"));

        /* The last directory of the chain counts too. */
        assert_int_equal(path_check_dir_chain(P("keys"), false, err, sizeof(err)), -EPERM);
}

static void test_world_writable_ancestor(void **state)
{
        make_dir("open", 0777);
        make_dir("open/keys", 0755);
        make_file("open/keys/master.key", 0600);

        assert_int_equal(path_check_dir_chain(P("open/keys"), false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0777)", P("open"));
        assert_int_equal(path_check_private_file(P("open/keys/master.key"), err, sizeof(err)),
                         -EPERM);

        /* Writable by others only (not group) is just as bad. */
        assert_int_equal(chmod(P("open"), 0757), 0);
        assert_int_equal(path_check_dir_chain(P("open/keys"), false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0757)", P("open"));
}

static void test_sticky_world_writable_accepted(void **state)
{
        make_dir("shared", 01777);
        make_dir("shared/keys", 0755);
        make_file("shared/keys/master.key", 0600);

        assert_int_equal(mode_of("shared"), 01777);
        assert_int_equal(path_check_dir_chain(P("shared/keys"), true, err, sizeof(err)), 0);
        assert_int_equal(path_check_private_file(P("shared/keys/master.key"), err, sizeof(err)), 0);

        /* The same directory without the sticky bit is refused. */
        assert_int_equal(chmod(P("shared"), 0777), 0);
        assert_int_equal(path_check_dir_chain(P("shared/keys"), true, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0777)",
                            P("shared"));
}

static void test_symlinked_file_rejected(void **state)
{
        make_dir("keys", 0755);
        make_file("keys/real.key", 0600);
        make_symlink("real.key", "keys/master.key");

        assert_int_equal(path_check_private_file(P("keys/real.key"), err, sizeof(err)), 0);
        assert_int_equal(path_check_private_file(P("keys/master.key"), err, sizeof(err)), -EPERM);
        assert_err_contains("%s: is a symlink, wanted a regular file", P("keys/master.key"));
}

static void test_symlinked_ancestor_accepted(void **state)
{
        /* Like /var/run -> /run: the link is resolved and the target's chain checked. */
        make_dir("real", 0755);
        make_dir("real/keys", 0755);
        make_file("real/keys/master.key", 0600);
        make_symlink(P("real"), "abs-link");
        make_symlink("real/keys", "rel-link");

        assert_int_equal(path_check_dir_chain(P("abs-link/keys"), true, err, sizeof(err)), 0);
        assert_int_equal(path_check_dir_chain(P("rel-link"), true, err, sizeof(err)), 0);
        assert_int_equal(path_check_private_file(P("abs-link/keys/master.key"), err, sizeof(err)),
                         0);
        assert_int_equal(path_check_private_file(P("rel-link/master.key"), err, sizeof(err)), 0);
}

static void test_symlinked_ancestor_unsafe_target(void **state)
{
        /* The link sits in a safe place, but it leads into a world-writable directory. */
        make_dir("open", 0777);
        make_dir("open/keys", 0755);
        make_file("open/keys/master.key", 0600);
        make_symlink("open/keys", "link");

        assert_int_equal(path_check_dir_chain(P("link"), false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0777)", P("open"));
        assert_int_equal(path_check_private_file(P("link/master.key"), err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0777)", P("open"));
}

static void test_symlink_in_unsafe_directory(void **state)
{
        /* The target chain is safe, but the directory holding the link is group-writable: a
         * group member could repoint the link. realpath() alone would not see this. */
        make_dir("real", 0755);
        make_dir("real/keys", 0755);
        make_file("real/keys/master.key", 0600);
        make_dir("gw", 0775);
        make_symlink(P("real/keys"), "gw/link");

        assert_int_equal(path_check_dir_chain(P("real/keys"), false, err, sizeof(err)), 0);
        assert_int_equal(path_check_dir_chain(P("gw/link"), false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0775)", P("gw"));
        assert_int_equal(path_check_private_file(P("gw/link/master.key"), err, sizeof(err)),
                         -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0775)", P("gw"));

        /* Also when the link is reached through another link. */
        make_symlink("gw/link", "link2");
        assert_int_equal(path_check_dir_chain(P("link2"), false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0775)", P("gw"));
}

static void test_file_mode_rejected(void **state)
{
        make_dir("keys", 0755);
        make_file("keys/g.key", 0640);
        make_file("keys/o.key", 0604);
        make_file("keys/gw.key", 0620);

        assert_int_equal(path_check_private_file(P("keys/g.key"), err, sizeof(err)), -EPERM);
        assert_err_contains("%s: mode 0640, wanted 0600 (no group or other access)",
                            P("keys/g.key"));
        assert_int_equal(path_check_private_file(P("keys/o.key"), err, sizeof(err)), -EPERM);
        assert_err_contains("%s: mode 0604, wanted 0600 (no group or other access)",
                            P("keys/o.key"));
        assert_int_equal(path_check_private_file(P("keys/gw.key"), err, sizeof(err)), -EPERM);
        assert_err_contains("%s: mode 0620, wanted 0600", P("keys/gw.key"));
}

static void test_foreign_owner_rejected(void **state)
{
        struct stat st;

        if (geteuid() != 0)
                skip(); /* only root can give a file away */

        make_dir("keys", 0755);
        make_file("keys/master.key", 0600);
        assert_int_equal(chown(P("keys/master.key"), 1234, (gid_t) -1), 0);
        assert_int_equal(stat(P("keys/master.key"), &st), 0);
        assert_int_equal(st.st_uid, 1234);

        assert_int_equal(path_check_private_file(P("keys/master.key"), err, sizeof(err)), -EPERM);
        assert_err_contains("%s: owned by uid 1234, wanted uid 0", P("keys/master.key"));
}

static void test_foreign_owner_directory_rejected(void **state)
{
        struct stat st;

        if (geteuid() != 0)
                skip();

        make_dir("k", 0755);
        make_dir("k/inner", 0755);
        make_file("k/inner/master.key", 0600);
        assert_int_equal(chown(P("k"), 1000, (gid_t) -1), 0);
        assert_int_equal(stat(P("k"), &st), 0);
        assert_int_equal(st.st_uid, 1000);

        assert_int_equal(path_check_dir_chain(P("k/inner"), false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: owned by uid 1000, wanted root or uid 0", P("k"));
        assert_int_equal(path_check_private_file(P("k/inner/master.key"), err, sizeof(err)),
                         -EPERM);
        assert_err_contains("%s: owned by uid 1000, wanted root or uid 0", P("k"));
}

static void test_missing(void **state)
{
        make_dir("keys", 0755);

        assert_int_equal(path_check_private_file(P("keys/master.key"), err, sizeof(err)), -ENOENT);
        assert_err_contains("%s: does not exist", P("keys/master.key"));
        assert_int_equal(path_check_private_file(P("nodir/master.key"), err, sizeof(err)), -ENOENT);
        assert_err_contains("%s", P("nodir"));
        assert_int_equal(path_check_dir_chain(P("nodir"), false, err, sizeof(err)), -ENOENT);
        assert_err_contains("%s", P("nodir"));
        /* A dangling symlink is refused as a symlink, not reported as missing. */
        make_symlink("gone", "keys/dangling.key");
        assert_int_equal(path_check_private_file(P("keys/dangling.key"), err, sizeof(err)), -EPERM);
        assert_err_contains("is a symlink");
}

static void test_non_regular_rejected(void **state)
{
        make_dir("keys", 0755);
        make_dir("keys/master.key", 0700);
        assert_int_equal(mkfifo(P("keys/fifo.key"), 0600), 0);
        assert_int_equal(chmod(P("keys/fifo.key"), 0600), 0);

        assert_int_equal(path_check_private_file(P("keys/master.key"), err, sizeof(err)), -EPERM);
        assert_err_contains("%s: is a directory, wanted a regular file", P("keys/master.key"));
        assert_int_equal(path_check_private_file(P("keys/fifo.key"), err, sizeof(err)), -EPERM);
        assert_err_contains("%s: is a fifo, wanted a regular file", P("keys/fifo.key"));
        assert_int_equal(path_check_private_file("/dev/null", err, sizeof(err)), -EPERM);
        assert_err_contains("/dev/null: is a character device, wanted a regular file");
}

static void test_dir_chain_on_file(void **state)
{
        make_file("file", 0600);

        assert_int_equal(path_check_dir_chain(P("file"), false, err, sizeof(err)), -ENOTDIR);
        assert_err_contains("%s: is a regular file, wanted a directory", P("file"));
}

static void test_world_search(void **state)
{
        make_dir("priv", 0700);
        make_dir("priv/workload", 0755);
        make_dir("pub", 0755);
        make_dir("pub/workload", 0750);

        assert_int_equal(path_check_dir_chain(P("priv/workload"), false, err, sizeof(err)), 0);
        assert_int_equal(path_check_dir_chain(P("priv/workload"), true, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: not searchable by others (mode 0700), wanted o+x so callers can "
                            "reach the socket",
                            P("priv"));

        /* The socket's own directory must be searchable as well. */
        assert_int_equal(path_check_dir_chain(P("pub/workload"), false, err, sizeof(err)), 0);
        assert_int_equal(path_check_dir_chain(P("pub/workload"), true, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: not searchable by others (mode 0750)", P("pub/workload"));
}

static void test_make_dir_nested(void **state)
{
        /* A restrictive umask must not change the modes asked for. */
        umask(077);
        assert_int_equal(path_make_dir(P("a/b/c"), 0755, false, true, err, sizeof(err)), 0);
        assert_int_equal(mode_of("a"), 0755);
        assert_int_equal(mode_of("a/b"), 0755);
        assert_int_equal(mode_of("a/b/c"), 0755);

        /* And a permissive umask must not widen them. */
        umask(0);
        assert_int_equal(path_make_dir(P("s/t//u/"), 0700, true, false, err, sizeof(err)), 0);
        assert_int_equal(mode_of("s"), 0700);
        assert_int_equal(mode_of("s/t"), 0700);
        assert_int_equal(mode_of("s/t/u"), 0700);

        umask(022);
        assert_int_equal(path_make_dir(P("a/b/c/d"), 0750, false, false, err, sizeof(err)), 0);
        assert_int_equal(mode_of("a/b/c/d"), 0750);

        /* Existing directories are fine and left as they are. */
        assert_int_equal(path_make_dir(P("a/b/c"), 0700, false, true, err, sizeof(err)), 0);
        assert_int_equal(mode_of("a/b/c"), 0755);
        assert_int_equal(path_make_dir(P("s/t/u"), 0700, true, false, err, sizeof(err)), 0);
}

static void test_make_dir_existing_not_private(void **state)
{
        make_dir("state", 0755);

        assert_int_equal(path_make_dir(P("state"), 0700, true, false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: mode 0755, wanted no group or other access (e.g. 0700)",
                            P("state"));
        /* Refused, not silently repaired. */
        assert_int_equal(mode_of("state"), 0755);
        /* Without the private requirement the same directory is fine. */
        assert_int_equal(path_make_dir(P("state"), 0700, false, false, err, sizeof(err)), 0);
}

static void test_make_dir_checks_chain(void **state)
{
        make_dir("gw", 0775);

        assert_int_equal(path_make_dir(P("gw/state"), 0700, true, false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0775)", P("gw"));

        /* Socket directories: a private parent is not reachable by callers. */
        make_dir("priv", 0700);
        assert_int_equal(path_make_dir(P("priv/workload"), 0755, false, true, err, sizeof(err)),
                         -EPERM);
        assert_err_contains("%s: not searchable by others (mode 0700)", P("priv"));
}

static void test_make_dir_foreign_owner(void **state)
{
        if (geteuid() != 0)
                skip();

        make_dir("state", 0700);
        assert_int_equal(chown(P("state"), 1234, (gid_t) -1), 0);
        assert_int_equal(path_make_dir(P("state"), 0700, true, false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: owned by uid 1234, wanted uid 0", P("state"));
}

static void test_make_dir_over_file(void **state)
{
        make_file("file", 0600);

        assert_int_equal(path_make_dir(P("file"), 0700, true, false, err, sizeof(err)), -ENOTDIR);
        assert_err_contains("%s: is a regular file, wanted a directory", P("file"));
        assert_int_equal(path_make_dir(P("file/sub"), 0700, true, false, err, sizeof(err)),
                         -ENOTDIR);
        assert_err_contains("%s: cannot create directory", P("file/sub"));
}

static void test_err_buffer_handling(void **state)
{
        char small[16];

        make_dir("gw", 0775);
        /* No buffer at all, and a buffer too small for the message: same verdict, no overflow. */
        assert_int_equal(path_check_dir_chain(P("gw"), false, NULL, 0), -EPERM);
        assert_int_equal(path_check_dir_chain(P("gw"), false, small, sizeof(small)), -EPERM);
        assert_int_equal(strlen(small), sizeof(small) - 1);
        assert_int_equal(path_check_dir_chain("", false, err, sizeof(err)), -EINVAL);
        assert_int_equal(path_check_private_file("", err, sizeof(err)), -EINVAL);
        assert_int_equal(path_make_dir("", 0700, true, false, err, sizeof(err)), -EINVAL);
}

static void test_relative_paths(void **state)
{
        char cwd[PATH_MAX];

        make_dir("keys", 0755);
        make_file("keys/master.key", 0600);
        make_dir("gw", 0775);
        assert_non_null(getcwd(cwd, sizeof(cwd)));
        assert_int_equal(chdir(root), 0);

        assert_int_equal(path_check_dir_chain("keys", true, err, sizeof(err)), 0);
        assert_int_equal(path_check_private_file("keys/master.key", err, sizeof(err)), 0);
        assert_int_equal(path_check_dir_chain("gw", false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable", P("gw"));
        assert_int_equal(path_make_dir("new/dir", 0700, true, false, err, sizeof(err)), 0);
        assert_int_equal(mode_of("new/dir"), 0700);

        /* From inside a group-writable directory, even "." is unsafe. */
        assert_int_equal(chdir("gw"), 0);
        assert_int_equal(path_check_dir_chain(".", false, err, sizeof(err)), -EPERM);

        assert_int_equal(chdir(cwd), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
        const struct CMUnitTest tests[] = {
            T(test_safe_tree_accepted),
            T(test_group_writable_ancestor),
            T(test_world_writable_ancestor),
            T(test_sticky_world_writable_accepted),
            T(test_symlinked_file_rejected),
            T(test_symlinked_ancestor_accepted),
            T(test_symlinked_ancestor_unsafe_target),
            T(test_symlink_in_unsafe_directory),
            T(test_file_mode_rejected),
            T(test_foreign_owner_rejected),
            T(test_foreign_owner_directory_rejected),
            T(test_missing),
            T(test_non_regular_rejected),
            T(test_dir_chain_on_file),
            T(test_world_search),
            T(test_make_dir_nested),
            T(test_make_dir_existing_not_private),
            T(test_make_dir_checks_chain),
            T(test_make_dir_foreign_owner),
            T(test_make_dir_over_file),
            T(test_err_buffer_handling),
            T(test_relative_paths),
        };

        umask(022);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
