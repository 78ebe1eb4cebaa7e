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
        /* The walk stops at the file on the way, and names it. */
        assert_int_equal(path_make_dir(P("file/sub"), 0700, true, false, err, sizeof(err)),
                         -ENOTDIR);
        assert_err_contains("%s: is a regular file, wanted a directory", P("file"));
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

/* --- directories brokerd creates names in: no sticky exception for the last one ----------- */

static void test_make_dir_sticky_last_refused(void **state)
{
        struct stat st, st2;
        int fd = -EBADF;

        make_dir("shared", 01777);

        /* The state, grant log, socket and publish directories: another user could create the
         * database, the lock or a symlink in them first. */
        assert_int_equal(path_make_dir(P("shared"), 0700, false, false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 1777), wanted no "
                            "group/other write (e.g. 0755); the sticky bit is no exception",
                            P("shared"));
        assert_int_equal(path_make_dir(P("shared"), 0700, true, false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 1777), wanted no "
                            "group/other write (e.g. 0700)",
                            P("shared"));
        /* Left as it was. */
        assert_int_equal(mode_of("shared"), 01777);

        /* Group-writable without the sticky bit says the same. */
        make_dir("gw", 0775);
        assert_int_equal(path_make_dir(P("gw"), 0755, false, false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0775)", P("gw"));

        /* A directory of its own below a sticky one is fine: the ancestor keeps the rule. */
        assert_int_equal(path_make_dir(P("shared/state"), 0700, true, false, err, sizeof(err)), 0);
        assert_int_equal(mode_of("shared/state"), 0700);
        /* ... and the same walk, asked for the directory, hands out a descriptor of it. */
        assert_int_equal(
            path_open_dir(P("shared/state"), PATH_STRICT | PATH_PRIVATE, 0, &fd, err, sizeof(err)),
            0);
        assert_int_equal(fstat(fd, &st), 0);
        assert_int_equal(stat(P("shared/state"), &st2), 0);
        assert_true(st.st_ino == st2.st_ino && st.st_dev == st2.st_dev);
        close(fd);

        /* path_check_dir_chain() (the master key's directory) keeps the sticky exception. */
        assert_int_equal(path_check_dir_chain(P("shared"), false, err, sizeof(err)), 0);
}

static void test_open_dir_last_reached_by_dotdot(void **state)
{
        make_dir("shared", 01777);
        make_dir("shared/sub", 0755);

        /* "shared/sub/.." is "shared": the last directory's rule applies to it too. */
        assert_int_equal(path_open_dir(P("shared/sub/.."), PATH_STRICT, 0, NULL, err, sizeof(err)),
                         -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 1777)",
                            P("shared"));
        assert_int_equal(path_open_dir(P("shared/sub/."), PATH_STRICT, 0, NULL, err, sizeof(err)),
                         0);
}

static void test_own_symlink_in_sticky_dir_followed(void **state)
{
        /* A link of our own (or root's) in a sticky directory cannot be replaced by others. */
        make_dir("shared", 01777);
        make_dir("real", 0755);
        make_symlink(P("real"), "shared/link");

        assert_int_equal(path_make_dir(P("shared/link/state"), 0700, true, false, err, sizeof(err)),
                         0);
        assert_int_equal(mode_of("real/state"), 0700);
}

/* Root only: a symlink owned by another uid, planted where a directory was to be created. */
static void test_planted_symlink_not_followed(void **state)
{
        struct stat before, after;

        if (geteuid() != 0)
                skip(); /* only root can give a symlink away */

        make_dir("shared", 01777);
        make_dir("target", 0755);
        make_symlink(P("target"), "shared/pub");
        assert_int_equal(lchown(P("shared/pub"), 1234, 1234), 0);
        assert_int_equal(stat(P("target"), &before), 0);

        assert_int_equal(path_make_dir(P("shared/pub"), 0755, false, false, err, sizeof(err)),
                         -EPERM);
        assert_err_contains("%s: symlink owned by uid 1234, wanted a directory, or a symlink "
                            "owned by root or uid 0",
                            P("shared/pub"));
        assert_int_equal(
            path_make_dir(P("shared/pub/.well-known"), 0755, false, false, err, sizeof(err)),
            -EPERM);
        assert_err_contains("%s: symlink owned by uid 1234", P("shared/pub"));
        assert_int_equal(path_check_dir_chain(P("shared/pub"), false, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: symlink owned by uid 1234", P("shared/pub"));
        /* The target is untouched: nothing was created in it. */
        assert_int_equal(stat(P("target"), &after), 0);
        assert_int_equal(after.st_nlink, before.st_nlink);
        assert_int_equal(after.st_mtime, before.st_mtime);
        assert_int_equal(access(P("target/.well-known"), F_OK), -1);

        /* A dangling one is refused the same way; its target is not created. */
        make_symlink(P("gone"), "shared/state");
        assert_int_equal(lchown(P("shared/state"), 1234, 1234), 0);
        assert_int_equal(path_make_dir(P("shared/state"), 0700, true, false, err, sizeof(err)),
                         -EPERM);
        assert_err_contains("%s: symlink owned by uid 1234", P("shared/state"));
        assert_int_equal(access(P("gone"), F_OK), -1);
}

/* Root only: a directory another uid made first in a sticky directory. */
static void test_make_dir_planted_directory(void **state)
{
        if (geteuid() != 0)
                skip();

        make_dir("shared", 01777);
        make_dir("shared/run", 0755);
        assert_int_equal(chown(P("shared/run"), 1234, 1234), 0);
        assert_int_equal(path_make_dir(P("shared/run"), 0755, false, true, err, sizeof(err)),
                         -EPERM);
        assert_err_contains("%s: owned by uid 1234, wanted uid 0", P("shared/run"));
        assert_int_equal(
            path_make_dir(P("shared/run/workload"), 0755, false, true, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: owned by uid 1234, wanted root or uid 0", P("shared/run"));
        assert_int_equal(access(P("shared/run/workload"), F_OK), -1);
}

/* --- the configuration: root's or ours, and so is its directory ---------------------------- */

static int open_protected(const char *rel)
{
        int fd = -EBADF;
        int r = path_open_protected_file(P(rel), &fd, err, sizeof(err));

        if (r < 0) {
                assert_int_equal(fd, -EBADF);
                return r;
        }
        assert_true(fd >= 0);
        close(fd);
        return 0;
}

static void test_protected_file_accepted(void **state)
{
        char buf[16] = "";
        int fd = -EBADF;

        make_dir("etc", 0755);
        make_file("etc/brokerd.json", 0644);
        make_file("etc/private.json", 0600);
        make_file("etc/group.json", 0640);
        make_file("etc/ro.json", 0444);

        /* Readable by others is fine: it holds no secret. */
        assert_int_equal(path_open_protected_file(P("etc/brokerd.json"), &fd, err, sizeof(err)), 0);
        assert_int_equal(read(fd, buf, sizeof(buf) - 1), 7);
        assert_string_equal(buf, "secret\n");
        /* A blocking descriptor, as a FILE expects. */
        assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
        close(fd);
        assert_int_equal(open_protected("etc/private.json"), 0);
        assert_int_equal(open_protected("etc/group.json"), 0);
        assert_int_equal(open_protected("etc/ro.json"), 0);

        /* Below a sticky ancestor (like /tmp) in a directory of its own: fine. */
        make_dir("shared", 01777);
        make_dir("shared/etc", 0755);
        make_file("shared/etc/brokerd.json", 0644);
        assert_int_equal(open_protected("shared/etc/brokerd.json"), 0);
}

static void test_protected_file_writable_by_others(void **state)
{
        make_dir("etc", 0755);
        make_file("etc/world.json", 0666);
        make_file("etc/group.json", 0664);
        make_file("etc/other.json", 0602);

        assert_int_equal(open_protected("etc/world.json"), -EPERM);
        assert_err_contains("%s: mode 0666, wanted no group or other write (e.g. 0644 or 0600)",
                            P("etc/world.json"));
        assert_int_equal(open_protected("etc/group.json"), -EPERM);
        assert_err_contains("%s: mode 0664", P("etc/group.json"));
        assert_int_equal(open_protected("etc/other.json"), -EPERM);
        assert_err_contains("%s: mode 0602", P("etc/other.json"));
}

static void test_protected_file_open_directory(void **state)
{
        make_dir("open", 0777);
        make_file("open/brokerd.json", 0644);
        make_dir("shared", 01777);
        make_file("shared/brokerd.json", 0644);
        make_dir("gw", 0775);
        make_file("gw/brokerd.json", 0644);

        /* Whoever can write the directory can replace the file, however safe the file is. */
        assert_int_equal(open_protected("open/brokerd.json"), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0777), wanted no "
                            "group/other write (e.g. 0755); the sticky bit is no exception",
                            P("open"));
        /* Its own directory gets no sticky exception: another user's file could stand there. */
        assert_int_equal(open_protected("shared/brokerd.json"), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 1777)",
                            P("shared"));
        assert_int_equal(open_protected("gw/brokerd.json"), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0775)", P("gw"));

        /* An unsafe ancestor counts as well. */
        make_dir("open/etc", 0755);
        make_file("open/etc/brokerd.json", 0644);
        assert_int_equal(open_protected("open/etc/brokerd.json"), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0777), wanted no "
                            "group/other write (e.g. 0755) unless sticky",
                            P("open"));
}

static void test_protected_file_not_regular(void **state)
{
        make_dir("etc", 0755);
        make_file("etc/real.json", 0644);
        make_symlink("real.json", "etc/link.json");
        assert_int_equal(mkfifo(P("etc/fifo.json"), 0644), 0);
        make_dir("etc/dir.json", 0755);

        assert_int_equal(open_protected("etc/link.json"), -EPERM);
        assert_err_contains("%s: is a symlink, wanted a regular file", P("etc/link.json"));
        /* Refused without blocking on the open. */
        assert_int_equal(open_protected("etc/fifo.json"), -EPERM);
        assert_err_contains("%s: is a fifo, wanted a regular file", P("etc/fifo.json"));
        assert_int_equal(open_protected("etc/dir.json"), -EPERM);
        assert_err_contains("%s: is a directory, wanted a regular file", P("etc/dir.json"));
        assert_int_equal(open_protected("etc/missing.json"), -ENOENT);
        assert_err_contains("%s: does not exist", P("etc/missing.json"));
        assert_int_equal(open_protected("nodir/brokerd.json"), -ENOENT);
        assert_err_contains("%s", P("nodir"));
}

static void test_protected_file_foreign_owner(void **state)
{
        if (geteuid() != 0)
                skip();

        make_dir("etc", 0755);
        make_file("etc/brokerd.json", 0644);
        assert_int_equal(chown(P("etc/brokerd.json"), 1234, 1234), 0);
        assert_int_equal(open_protected("etc/brokerd.json"), -EPERM);
        assert_err_contains("%s: owned by uid 1234, wanted root or uid 0", P("etc/brokerd.json"));

        make_dir("theirs", 0755);
        make_file("theirs/brokerd.json", 0644);
        assert_int_equal(chown(P("theirs"), 1234, 1234), 0);
        assert_int_equal(open_protected("theirs/brokerd.json"), -EPERM);
        assert_err_contains("%s: owned by uid 1234, wanted root or uid 0", P("theirs"));
}

/* --- files the daemon opens or creates in its own directories ------------------------------ */

static int open_own(const char *dir_rel, const char *name, int flags)
{
        _cleanup_close_ int dir_fd = -EBADF;
        int fd = -EBADF, r;

        assert_int_equal(path_open_dir(P(dir_rel), PATH_STRICT, 0, &dir_fd, err, sizeof(err)), 0);
        r = path_open_own_file(dir_fd, P(dir_rel), name, flags, 0600, &fd, err, sizeof(err));
        if (r >= 0) {
                assert_true(fd >= 0);
                close(fd);
        }
        return r;
}

static int check_own(const char *dir_rel, const char *name)
{
        _cleanup_close_ int dir_fd = -EBADF;

        assert_int_equal(path_open_dir(P(dir_rel), PATH_STRICT, 0, &dir_fd, err, sizeof(err)), 0);
        return path_check_own_file(dir_fd, P(dir_rel), name, err, sizeof(err));
}

static void test_own_file_created_and_checked(void **state)
{
        make_dir("run", 0755);

        umask(0);
        assert_int_equal(open_own("run", "broker.sock.lock", O_RDWR | O_CREAT), 0);
        assert_int_equal(mode_of("run/broker.sock.lock"), 0600);
        assert_int_equal(open_own("run", "broker.sock.lock", O_RDWR | O_CREAT), 0);
        umask(022);

        assert_int_equal(check_own("run", "missing.db"), 0);
        assert_int_equal(check_own("run", "broker.sock.lock"), 1);
        make_file("run/published.json", 0644);
        assert_int_equal(check_own("run", "published.json"), 1);
}

static void test_own_file_unsafe(void **state)
{
        make_dir("run", 0755);
        make_file("run/world.lock", 0666);
        make_file("run/target", 0600);
        make_symlink("target", "run/link.lock");
        assert_int_equal(mkfifo(P("run/fifo.lock"), 0600), 0);
        make_dir("run/dir.lock", 0700);

        assert_int_equal(open_own("run", "world.lock", O_RDWR | O_CREAT), -EPERM);
        assert_err_contains("%s: mode 0666, wanted no group or other write (e.g. 0600)",
                            P("run/world.lock"));
        assert_int_equal(check_own("run", "world.lock"), -EPERM);
        assert_err_contains("%s: mode 0666", P("run/world.lock"));

        assert_int_equal(open_own("run", "link.lock", O_RDWR | O_CREAT), -EPERM);
        assert_err_contains("%s: is a symlink, wanted a regular file", P("run/link.lock"));
        assert_int_equal(check_own("run", "link.lock"), -EPERM);
        assert_err_contains("%s: is a symlink", P("run/link.lock"));

        /* Not a hang on someone's fifo. */
        assert_int_equal(open_own("run", "fifo.lock", O_RDWR | O_CREAT), -EPERM);
        assert_err_contains("%s: is a fifo, wanted a regular file", P("run/fifo.lock"));
        assert_int_equal(open_own("run", "dir.lock", O_RDONLY), -EPERM);
        assert_err_contains("%s: is a directory", P("run/dir.lock"));
}

static void test_own_file_foreign_owner(void **state)
{
        if (geteuid() != 0)
                skip();

        make_dir("state", 0700);
        make_file("state/audit.db", 0600);
        assert_int_equal(chown(P("state/audit.db"), 1234, 1234), 0);
        assert_int_equal(check_own("state", "audit.db"), -EPERM);
        assert_err_contains("%s: owned by uid 1234, wanted uid 0 (the daemon's effective uid)",
                            P("state/audit.db"));
        assert_int_equal(open_own("state", "audit.db", O_RDWR), -EPERM);
        assert_err_contains("%s: owned by uid 1234", P("state/audit.db"));
}

/* PATH_DRY_RUN: what a create would make is checked as it would be made, and nothing is. */
static void test_dry_run_creates_nothing(void **state)
{
        const PathDirFlags mk = PATH_CREATE | PATH_STRICT | PATH_DRY_RUN;
        int fd = 77;

        /* Missing: fine, 1, no descriptor, and still missing. */
        assert_int_equal(path_open_dir(P("a/b/c"), mk, 0755, &fd, err, sizeof(err)), 1);
        assert_int_equal(fd, -EBADF);
        assert_int_equal(access(P("a"), F_OK), -1);

        /* What would be made must pass too: 0755 is not private, 0700 not searchable. */
        assert_int_equal(path_open_dir(P("s"), mk | PATH_PRIVATE, 0755, NULL, err, sizeof(err)),
                         -EPERM);
        assert_err_contains("%s: mode 0755, wanted no group or other access", P("s"));
        assert_int_equal(
            path_open_dir(P("w/x"), mk | PATH_WORLD_SEARCH, 0700, NULL, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: not searchable by others (mode 0700)", P("w"));
        assert_int_equal(access(P("s"), F_OK), -1);
        assert_int_equal(access(P("w"), F_OK), -1);

        /* Existing: checked like a create checks it, and a descriptor comes back. */
        make_dir("d", 0700);
        assert_int_equal(path_open_dir(P("d"), mk | PATH_PRIVATE, 0700, &fd, err, sizeof(err)), 0);
        assert_true(fd >= 0);
        close(fd);
        make_dir("gw", 0775);
        assert_int_equal(path_open_dir(P("gw/state"), mk, 0700, NULL, err, sizeof(err)), -EPERM);
        assert_err_contains("%s: directory is writable by group or others (mode 0775)", P("gw"));
        assert_int_equal(access(P("gw/state"), F_OK), -1);
        make_dir("pub", 01777);
        assert_int_equal(path_open_dir(P("pub"), mk, 0755, NULL, err, sizeof(err)), -EPERM);
        assert_err_contains("the sticky bit is no exception");
}

static void test_make_absolute(void **state)
{
        char cwd[PATH_MAX], want[PATH_MAX + 64];
        char *abs = NULL;

        assert_int_equal(path_make_absolute("/etc//brokerd/./brokerd.json", &abs), 0);
        assert_string_equal(abs, "/etc/brokerd/brokerd.json");
        free(abs);
        assert_non_null(getcwd(cwd, sizeof(cwd)));
        assert_int_equal(path_make_absolute("./conf/../b.json", &abs), 0);
        snprintf(want, sizeof(want), "%s/conf/../b.json", strcmp(cwd, "/") == 0 ? "" : cwd);
        assert_string_equal(abs, want);
        free(abs);
        assert_int_equal(path_make_absolute("/", &abs), 0);
        assert_string_equal(abs, "/");
        free(abs);
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
            T(test_make_dir_sticky_last_refused),
            T(test_open_dir_last_reached_by_dotdot),
            T(test_own_symlink_in_sticky_dir_followed),
            T(test_planted_symlink_not_followed),
            T(test_make_dir_planted_directory),
            T(test_protected_file_accepted),
            T(test_protected_file_writable_by_others),
            T(test_protected_file_open_directory),
            T(test_protected_file_not_regular),
            T(test_protected_file_foreign_owner),
            T(test_own_file_created_and_checked),
            T(test_own_file_unsafe),
            T(test_own_file_foreign_owner),
            T(test_dry_run_creates_nothing),
            T(test_make_absolute),
        };

        umask(022);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
