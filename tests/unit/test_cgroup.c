/* /proc/PID/cgroup parsing: every row of tests/data/cgroup-paths.tsv, then the cases the table
 * does not cover (hybrid hosts, malformed text, "..", long paths, bad unit names); then where
 * the daemon sees the hierarchies (mountinfo) and who owns the directories of a path
 * (delegation), on real directories. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "identity/cgroup.h"
#include "identity/cgroupfs.h"
#include "macro.h"
#include "testutil.h"

#define TABLE          "../data/cgroup-paths.tsv"
#define MIN_TABLE_ROWS 15

#define ID_DOCKER "4e3c9f5b1a2d8c7e6f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e"
#define ID_OTHER  "7a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"

static bool str_eq_null(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* One row: column 0 is fed to the parser as a one-line /proc/PID/cgroup text. Returns the number
 * of mismatches, each reported with the row's line number. */
static int check_row(unsigned lineno, char **col)
{
        _cleanup_free_ char *want_container = NULL, *alt_container = NULL;
        const char *line = col[0], *runtime = col[1], *id = col[2], *note = col[4];
        const char *want_unit = strcmp(col[3], "-") == 0 ? NULL : col[3];
        const char *want_path;
        CgroupInfo info = {};
        int r, bad = 0;

        /* The path is everything after the second colon (it may contain colons itself). */
        want_path = strchr(line, ':');
        want_path = want_path ? strchr(want_path + 1, ':') : NULL;
        if (!want_path) {
                print_error("%s:%u: malformed cgroup line in the table\n", TABLE, lineno);
                return 1;
        }
        want_path++;

        if (strcmp(runtime, "-") == 0 && strcmp(id, "-") == 0) {
                /* no container */
        } else if (strcmp(id, "-") == 0) {
                print_error("%s:%u: runtime without an id\n", TABLE, lineno);
                return 1;
        } else if (strcmp(runtime, "-") == 0) {
                /* An id whose runtime the path does not name. */
                assert_true(asprintf(&want_container, "unknown:%s", id) > 0);
        } else {
                assert_true(asprintf(&want_container, "%s:%s", runtime, id) > 0);
                /* The row whose note says the runtime is not in the path: "unknown" is right. */
                if (strstr(note, "runtime is not named in the path"))
                        assert_true(asprintf(&alt_container, "unknown:%s", id) > 0);
        }

        r = cgroup_info_parse(line, &info);
        if (r < 0) {
                print_error("%s:%u: cgroup_info_parse(\"%s\") = %d\n", TABLE, lineno, line, r);
                return 1;
        }
        if (!str_eq_null(info.path, want_path)) {
                print_error("%s:%u: path \"%s\", wanted \"%s\"\n", TABLE, lineno, strna(info.path),
                            want_path);
                bad++;
        }
        if (!str_eq_null(info.unit, want_unit)) {
                print_error("%s:%u: unit %s, wanted %s (%s)\n", TABLE, lineno, strna(info.unit),
                            strna(want_unit), note);
                bad++;
        }
        if (!str_eq_null(info.container, want_container) &&
            !(alt_container && str_eq_null(info.container, alt_container))) {
                print_error("%s:%u: container %s, wanted %s%s%s (%s)\n", TABLE, lineno,
                            strna(info.container), strna(want_container),
                            alt_container ? " or " : "", alt_container ? alt_container : "", note);
                bad++;
        }

        /* The path-level function agrees with the parser on the same path. */
        {
                _cleanup_free_ char *c = NULL;

                assert_int_equal(cgroup_path_get_container(want_path, &c), 0);
                if (!str_eq_null(c, info.container)) {
                        print_error("%s:%u: cgroup_path_get_container gives %s, parser %s\n", TABLE,
                                    lineno, strna(c), strna(info.container));
                        bad++;
                }
        }

        cgroup_info_done(&info);
        return bad;
}

static void test_table(void **state)
{
        _cleanup_fclose_ FILE *f = fopen(TABLE, "re");
        _cleanup_free_ char *buf = NULL;
        size_t bufsize = 0;
        unsigned lineno = 0, rows = 0;
        int bad = 0;
        ssize_t n;

        if (!f)
                fail_msg("cannot open %s (tests run from tests/unit): %s", TABLE, strerror(errno));

        while ((n = getline(&buf, &bufsize, f)) >= 0) {
                char *col[5], *p = buf;
                size_t ncol = 0;

                lineno++;
                if (n > 0 && buf[n - 1] == '\n')
                        buf[--n] = '\0';
                if (buf[0] == '#' || buf[0] == '\0')
                        continue;

                while (ncol < ELEMENTSOF(col)) {
                        col[ncol++] = p;
                        p = strchr(p, '\t');
                        if (!p)
                                break;
                        *p++ = '\0';
                }
                if (ncol < 4) {
                        print_error("%s:%u: %zu columns, wanted 5\n", TABLE, lineno, ncol);
                        bad++;
                        continue;
                }
                if (ncol == 4)
                        col[4] = "";
                rows++;
                bad += check_row(lineno, col);
        }

        print_message("%u rows checked, %d mismatches\n", rows, bad);
        /* A missing or truncated table must not pass by checking nothing. */
        assert_true(rows >= MIN_TABLE_ROWS);
        assert_int_equal(bad, 0);
}

/* Parses `text` and compares all three fields. */
static void assert_parse(const char *text, const char *path, const char *unit,
                         const char *container)
{
        CgroupInfo info = {};
        int r = cgroup_info_parse(text, &info);

        if (r < 0)
                fail_msg("parse(\"%s\") = %d", text, r);
        if (!str_eq_null(info.path, path) || !str_eq_null(info.unit, unit) ||
            !str_eq_null(info.container, container))
                fail_msg("parse(\"%s\")\n  gave path=%s unit=%s container=%s\n  wanted path=%s "
                         "unit=%s container=%s",
                         text, strna(info.path), strna(info.unit), strna(info.container),
                         strna(path), strna(unit), strna(container));
        cgroup_info_done(&info);
}

static void assert_parse_fails(const char *text, int want)
{
        char sentinel;
        CgroupInfo info = {.path = &sentinel, .unit = &sentinel, .container = &sentinel};
        int r = cgroup_info_parse(text, &info);

        if (r != want)
                fail_msg("parse(\"%s\") = %d, wanted %d", strna(text), r, want);
        /* ret untouched on failure */
        assert_ptr_equal(info.path, &sentinel);
        assert_ptr_equal(info.unit, &sentinel);
        assert_ptr_equal(info.container, &sentinel);
}

static void assert_unit(const char *path, const char *want)
{
        _cleanup_free_ char *u = NULL;

        assert_int_equal(cgroup_path_get_unit(path, &u, NULL), 0);
        if (!str_eq_null(u, want))
                fail_msg("unit of \"%s\" is %s, wanted %s", path, strna(u), strna(want));
}

static void assert_container(const char *path, const char *want)
{
        _cleanup_free_ char *c = NULL;

        assert_int_equal(cgroup_path_get_container(path, &c), 0);
        if (!str_eq_null(c, want))
                fail_msg("container of \"%s\" is %s, wanted %s", path, strna(c), strna(want));
}

static void test_hybrid_cgroup2_wins(void **state)
{
        /* v1 lines first, as the kernel prints them; the 0:: line decides even when it is last
         * and has no trailing newline. */
        assert_parse("12:pids:/docker/" ID_DOCKER "\n"
                     "11:memory:/system.slice/other.service\n"
                     "1:name=systemd:/system.slice/other.service\n"
                     "0::/x.service",
                     "/x.service", "x.service", NULL);
        assert_parse("1:name=systemd:/system.slice/other.service\n"
                     "0::/system.slice/x.service\n",
                     "/system.slice/x.service", "x.service", NULL);
        /* Even "0::/" decides (no unit), whatever the name=systemd line says. */
        assert_parse("1:name=systemd:/system.slice/other.service\n0::/\n", "/", NULL, NULL);
        /* A 0:: line with controllers is not the cgroup2 line. */
        assert_parse("0:cpu:/a.service\n1:name=systemd:/b.service\n", "/b.service", "b.service",
                     NULL);
}

static void test_v1_name_systemd_wins(void **state)
{
        assert_parse("11:cpu,cpuacct:/system.slice/containerd.service\n"
                     "4:name=systemd:/system.slice/nginx.service\n"
                     "2:memory:/docker/" ID_DOCKER "\n",
                     "/system.slice/nginx.service", "nginx.service", NULL);
        /* name=systemd as one item of a controller list, not a prefix match. */
        assert_parse("3:cpu:/a.service\n2:cpu,name=systemd:/b.service\n", "/b.service", "b.service",
                     NULL);
        assert_parse("3:cpu:/a.service\n2:name=systemdx:/b.service\n", "/a.service", NULL, NULL);
}

static void test_v1_first_line_fallback(void **state)
{
        /* Without cgroup2 or name=systemd: the first line, and no unit from a v1 controller. */
        assert_parse("3:cpu,cpuacct:/system.slice/nginx.service\n2:memory:/other.service\n",
                     "/system.slice/nginx.service", NULL, NULL);
        /* A container id is still found on such a line. */
        assert_parse("12:pids:/docker/" ID_DOCKER "\n", "/docker/" ID_DOCKER, NULL,
                     "docker:" ID_DOCKER);
}

static void test_line_endings(void **state)
{
        assert_parse("0::/a.service", "/a.service", "a.service", NULL);
        assert_parse("0::/a.service\n", "/a.service", "a.service", NULL);
        assert_parse("\n\n0::/a.service\n\n", "/a.service", "a.service", NULL);
        assert_parse("2:cpu:/c\n\n0::/a.service\n", "/a.service", "a.service", NULL);
}

static void test_malformed(void **state)
{
        assert_parse_fails(NULL, -EINVAL);
        assert_parse_fails("", -EBADMSG);
        assert_parse_fails("\n\n", -EBADMSG);
        assert_parse_fails("garbage", -EBADMSG);
        assert_parse_fails("/system.slice/a.service", -EBADMSG);
        assert_parse_fails("0:/a.service", -EBADMSG); /* one colon */
        assert_parse_fails("0::", -EBADMSG);          /* empty path */
        assert_parse_fails("0::\n", -EBADMSG);
        assert_parse_fails("0::a.service", -EBADMSG); /* relative path */
        assert_parse_fails("0:: /a.service", -EBADMSG);
        assert_parse_fails("::/a.service", -EBADMSG); /* no hierarchy id */
        assert_parse_fails("x::/a.service", -EBADMSG);
        assert_parse_fails("garbage\n0:\n1:cpu\n", -EBADMSG);
        /* Two deciding lines cannot both be the kernel's: refuse instead of guessing. */
        assert_parse_fails("0::/a.service\n0::/b.service\n", -EBADMSG);
        assert_parse_fails("1:name=systemd:/a.service\n2:name=systemd:/b.service\n", -EBADMSG);

        /* Malformed lines are skipped when a usable one follows. */
        assert_parse("junk\n0:/x\n0::/a.service\n", "/a.service", "a.service", NULL);
        assert_parse("0::\n3:cpu:/c\n", "/c", NULL, NULL);
        /* Colons after the second belong to the path. */
        assert_parse("0::/a:b.service", "/a:b.service", "a:b.service", NULL);
}

static void test_dotdot(void **state)
{
        /* Paths relative to another cgroup namespace: ".." ends the unit search. */
        assert_parse("0::/../../system.slice/nginx.service", "/../../system.slice/nginx.service",
                     NULL, NULL);
        assert_unit("/system.slice/../nginx.service", NULL);
        assert_unit("/..", NULL);
        assert_unit("/system.slice/nginx.service/../x.service", "nginx.service");
        assert_container("/../" ID_OTHER, "unknown:" ID_OTHER);
        assert_container("/../../system.slice/docker-" ID_DOCKER ".scope", "docker:" ID_DOCKER);
}

static void test_long_paths(void **state)
{
        _cleanup_free_ char *text = NULL, *name = NULL, *path = NULL;
        size_t len = 0;
        FILE *f;

        /* Past PATH_MAX, through many slices, to a unit. */
        f = open_memstream(&text, &len);
        assert_non_null(f);
        fputs("0::", f);
        for (int i = 0; i < 400; i++)
                fprintf(f, "/s%03d.slice", i);
        fputs("/deep.service/" ID_OTHER, f);
        assert_int_equal(fclose(f), 0);
        assert_true(len > 4096);
        assert_parse(text, text + 3, "deep.service", "unknown:" ID_OTHER);

        /* Unit names: 255 bytes is the most systemd allows. */
        name = malloc(300);
        assert_non_null(name);
        memset(name, 'a', 255 - strlen(".service"));
        strcpy(name + 255 - strlen(".service"), ".service");
        assert_int_equal(strlen(name), 255);
        assert_true(asprintf(&path, "/system.slice/%s", name) > 0);
        assert_unit(path, name);
        free(path);
        path = NULL;

        memmove(name + 1, name, strlen(name) + 1);
        assert_int_equal(strlen(name), 256);
        assert_true(asprintf(&path, "/system.slice/%s", name) > 0);
        assert_unit(path, NULL);

        /* A 64-hex id inside a very long component is not a container id. */
        free(path);
        path = NULL;
        assert_true(asprintf(&path, "/docker-%s%s.scope", ID_DOCKER, ID_DOCKER) > 0);
        assert_container(path, NULL);
}

static void test_unit_names(void **state)
{
        assert_unit("/", NULL);
        assert_unit("", NULL);
        assert_unit("/init.scope", "init.scope");
        assert_unit("/system.slice", NULL);
        assert_unit("//system.slice//nginx.service//", "nginx.service");
        assert_unit("/system.slice/getty@tty1.service", "getty@tty1.service");
        assert_unit("/system.slice/system-foo\\x2dbar.slice/foo\\x2dbar.service",
                    "foo\\x2dbar.service");
        assert_unit("/system.slice/a:b_c.d-e.scope", "a:b_c.d-e.scope");
        /* Invalid characters, empty names, templates without instance: not units. */
        assert_unit("/system.slice/ngi nx.service", NULL);
        assert_unit("/system.slice/nginx$.service", NULL);
        assert_unit("/system.slice/ngïnx.service", NULL);
        assert_unit("/system.slice/\x01.service", NULL);
        assert_unit("/system.slice/.service", NULL);
        assert_unit("/system.slice/@.service", NULL);
        assert_unit("/system.slice/@x.service", NULL);
        assert_unit("/system.slice/foo@.service", NULL);
        assert_unit("/system.slice/nginx.socket", NULL);
        assert_unit("/system.slice/nginx.Service", NULL);
        /* A bad slice name is not skipped as a slice. */
        assert_unit("/bad slice.slice/nginx.service", NULL);
        /* Runtime trees end the search. */
        assert_unit("/docker/" ID_DOCKER, NULL);
        assert_unit("/kubepods/besteffort/pod1/x.service", NULL);
        assert_unit("/libpod_parent/libpod-" ID_DOCKER, NULL);
        /* Only the first unit counts. */
        assert_unit("/system.slice/docker-" ID_DOCKER ".scope/init.scope",
                    "docker-" ID_DOCKER ".scope");
        assert_unit("/system.slice/a.service/b.service", "a.service");
        assert_unit("/system.slice/a.service/sub.slice/b.service", "a.service");
        assert_parse("0::/system.slice/ngi nx.service", "/system.slice/ngi nx.service", NULL, NULL);
}

static void test_user_manager(void **state)
{
        const char *um = "/user.slice/user-1000.slice/user@1000.service";
        char p[256];

        assert_unit(um, "user@1000.service");
        snprintf(p, sizeof(p), "%s/app.slice", um);
        assert_unit(p, "user@1000.service");
        snprintf(p, sizeof(p), "%s/app.slice/app-x.scope", um);
        assert_unit(p, "app-x.scope");
        snprintf(p, sizeof(p), "%s/init.scope", um);
        assert_unit(p, "init.scope");
        snprintf(p, sizeof(p), "%s/session.slice/dbus.service/sub", um);
        assert_unit(p, "dbus.service");
        /* Below the manager, anything else ends the search at the manager. */
        snprintf(p, sizeof(p), "%s/app.slice/b@d!.scope", um);
        assert_unit(p, "user@1000.service");
        snprintf(p, sizeof(p), "%s/../x.service", um);
        assert_unit(p, "user@1000.service");
        /* A second user manager below the first is just a unit. */
        snprintf(p, sizeof(p), "%s/user@2000.service/a.service", um);
        assert_unit(p, "user@2000.service");
        /* "user@<not digits>" is an ordinary template instance, not a manager. */
        assert_unit("/user.slice/user@abc.service/a.service", "user@abc.service");
        assert_unit("/user.slice/user@.service/a.service", NULL);
}

/* A unit below a user manager was named by that user: it is flagged so the policy never lets
 * its name alone stand for a system service of the same name. */
static void assert_user_delegated(const char *path, const char *want, bool want_user)
{
        _cleanup_free_ char *u = NULL;
        bool user = !want_user;

        assert_int_equal(cgroup_path_get_unit(path, &u, &user), 0);
        if (!str_eq_null(u, want) || user != want_user)
                fail_msg("unit of \"%s\" is %s (user %d), wanted %s (user %d)", path, strna(u),
                         user, strna(want), want_user);
}

static void test_user_delegated_flag(void **state)
{
        const char *um = "/user.slice/user-1000.slice/user@1000.service";
        char p[256];
        CgroupInfo info;

        assert_user_delegated("/system.slice/nginx.service", "nginx.service", false);
        assert_user_delegated(um, "user@1000.service", false);
        snprintf(p, sizeof(p), "%s/app.slice/nginx.service", um);
        assert_user_delegated(p, "nginx.service", true);
        snprintf(p, sizeof(p), "%s/init.scope", um);
        assert_user_delegated(p, "init.scope", true);
        assert_user_delegated("/init.scope", "init.scope", false);
        assert_user_delegated("/user.slice/user-1000.slice/session-3.scope", "session-3.scope",
                              false);
        assert_user_delegated("/", NULL, false);
        /* no unit below the manager, but still the user's own subtree */
        snprintf(p, sizeof(p), "%s/app.slice", um);
        assert_user_delegated(p, "user@1000.service", true);
        snprintf(p, sizeof(p), "%s/app.slice/x/docker-%064d.scope", um, 0);
        assert_user_delegated(p, "user@1000.service", true);
        snprintf(p, sizeof(p), "%s/", um);
        assert_user_delegated(p, "user@1000.service", false);

        snprintf(p, sizeof(p), "0::%s/app.slice/nginx.service\n", um);
        assert_int_equal(cgroup_info_parse(p, &info), 0);
        assert_true(info.user_delegated);
        cgroup_info_done(&info);
        assert_int_equal(cgroup_info_parse("0::/system.slice/nginx.service\n", &info), 0);
        assert_false(info.user_delegated);
        cgroup_info_done(&info);
}

static void test_containers(void **state)
{
        assert_container("/", NULL);
        assert_container("/system.slice/docker-" ID_DOCKER ".scope", "docker:" ID_DOCKER);
        assert_container("/machine.slice/libpod-" ID_DOCKER ".scope", "podman:" ID_DOCKER);
        assert_container("/libpod_parent/libpod-" ID_DOCKER, "podman:" ID_DOCKER);
        assert_container("/k.slice/cri-containerd-" ID_DOCKER ".scope", "containerd:" ID_DOCKER);
        assert_container("/k.slice/crio-" ID_DOCKER ".scope", "cri-o:" ID_DOCKER);
        assert_container("/docker/" ID_DOCKER, "docker:" ID_DOCKER);
        assert_container("/other/" ID_DOCKER, "unknown:" ID_DOCKER);
        assert_container("/" ID_DOCKER, "unknown:" ID_DOCKER);
        /* Monitors are not containers. */
        assert_container("/k.slice/crio-conmon-" ID_DOCKER ".scope", NULL);
        assert_container("/machine.slice/libpod-conmon-" ID_DOCKER ".scope", NULL);
        /* Exactly 64 lowercase hex digits. */
        assert_container("/system.slice/docker-4e3c9f5b.scope", NULL);
        assert_container("/docker/" ID_DOCKER "0", NULL);
        assert_container("/docker/4E3C9F5B1A2D8C7E6F0A9B8C7D6E5F4A3B2C1D0E9F8A7B6C5D4E3F2A1B0C9D8E",
                         NULL);
        assert_container("/docker/ge3c9f5b1a2d8c7e6f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e",
                         NULL);
        assert_container("/docker/ e3c9f5b1a2d8c7e6f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e",
                         NULL);
        assert_container("/system.slice/docker-"
                         "4e3c9f5b1a2d8c7e6f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8z.scope",
                         NULL);
        /* Forms outside the known list. */
        assert_container("/system.slice/docker-" ID_DOCKER, NULL);
        assert_container("/system.slice/crio-" ID_DOCKER, NULL);
        assert_container("/system.slice/rkt-" ID_DOCKER ".scope", NULL);
        /* The kubelet's v1 systemd-driver colon form. */
        assert_container("/k-pod1.slice:cri-containerd:" ID_DOCKER, "containerd:" ID_DOCKER);
        assert_container("/k-pod1.slice:crio:" ID_DOCKER, "cri-o:" ID_DOCKER);
        assert_container("/k-pod1.slice:docker:" ID_DOCKER, "docker:" ID_DOCKER);
        assert_container("/k-pod1.slice:rkt:" ID_DOCKER, NULL);
        assert_container("/cri-containerd:" ID_DOCKER, NULL);
        assert_container("/:cri-containerd:" ID_DOCKER, NULL);
        assert_container("/k-pod1:cri-containerd:" ID_DOCKER, NULL);
        /* The innermost id wins; nested cgroups without an id do not clear it. */
        assert_container("/docker/" ID_DOCKER "/kubepods/pod1/" ID_OTHER, "unknown:" ID_OTHER);
        assert_container("/system.slice/docker-" ID_DOCKER ".scope/init.scope",
                         "docker:" ID_DOCKER);
        assert_container("/system.slice/docker-" ID_DOCKER ".scope/system.slice/crio-" ID_OTHER
                         ".scope/x",
                         "cri-o:" ID_OTHER);
}

/* Which hierarchy decided: what cgroupfs.c needs to find the directories. */
static void assert_controllers(const char *text, const char *want)
{
        CgroupInfo info = {};

        assert_int_equal(cgroup_info_parse(text, &info), 0);
        if (!str_eq_null(info.controllers, want))
                fail_msg("controllers of \"%s\" are %s, wanted %s", text, strna(info.controllers),
                         strna(want));
        cgroup_info_done(&info);
        assert_null(info.controllers);
}

static void test_deciding_hierarchy(void **state)
{
        assert_controllers("1:name=systemd:/a.service\n0::/b.service\n", NULL);
        assert_controllers("0::/\n", NULL);
        assert_controllers("3:cpu:/a.service\n2:name=systemd:/b.service\n", "name=systemd");
        assert_controllers("3:cpu:/a.service\n2:cpu,name=systemd:/b.service\n", "cpu,name=systemd");
        assert_controllers("3:cpu,cpuacct:/a.service\n2:memory:/b.service\n", "cpu,cpuacct");
}

/* This host's layout (hybrid: v1 controllers, name=systemd, cgroup2 at .../unified) with
 * mounts that must not count around it. */
static const char mountinfo_hybrid[] =
    "22 1 259:1 / / rw,relatime - ext4 /dev/root rw\n"
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:5 master:1 - cgroup cgroup "
    "rw,xattr,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    /* a container's view without a cgroup namespace: part of the tree, left out */
    "50 22 0:38 /system.slice/docker-x.scope /mnt/part rw - cgroup2 cgroup2 rw\n"
    /* a later cgroup2 mount of the root: the first one counts */
    "51 22 0:38 / /mnt/second\\040copy rw - cgroup2 cgroup2 rw\n"
    "60 22 0:40 / /proc rw - proc proc rw\n"
    "garbage line\n"
    "61 22 0:41 / /x rw - \n";

static void test_mounts_parse(void **state)
{
        CgroupMounts m = {};
        const CgroupMount *c;

        assert_int_equal(cgroupfs_mounts_parse(mountinfo_hybrid, &m), 0);
        assert_int_equal(m.n, 5);
        assert_string_equal(m.mounts[4].path, "/mnt/second copy"); /* \040 unescaped */
        assert_null(m.mounts[4].controllers);

        c = cgroupfs_mounts_find(&m, NULL);
        assert_non_null(c);
        assert_string_equal(c->path, "/sys/fs/cgroup/unified");
        c = cgroupfs_mounts_find(&m, "name=systemd");
        assert_non_null(c);
        assert_string_equal(c->path, "/sys/fs/cgroup/systemd");
        c = cgroupfs_mounts_find(&m, "cpu,cpuacct");
        assert_non_null(c);
        assert_string_equal(c->path, "/sys/fs/cgroup/cpu,cpuacct");
        c = cgroupfs_mounts_find(&m, "cpuacct");
        assert_non_null(c);
        assert_string_equal(c->path, "/sys/fs/cgroup/cpu,cpuacct");
        /* An item of the super options, not a part of one; no mount, no empty name. */
        assert_null(cgroupfs_mounts_find(&m, "systemd"));
        assert_null(cgroupfs_mounts_find(&m, "pids"));
        assert_null(cgroupfs_mounts_find(&m, ""));
        assert_null(cgroupfs_mounts_find(&m, ",cpu"));
        cgroupfs_mounts_done(&m);
        assert_int_equal(m.n, 0);
        cgroupfs_mounts_done(&m);

        /* A unified host; a v1-only host has no cgroup2 mount to find. */
        assert_int_equal(cgroupfs_mounts_parse("30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 "
                                               "cgroup2 rw,nsdelegate,memory_recursiveprot\n",
                                               &m),
                         0);
        c = cgroupfs_mounts_find(&m, NULL);
        assert_non_null(c);
        assert_string_equal(c->path, "/sys/fs/cgroup");
        assert_null(cgroupfs_mounts_find(&m, "name=systemd"));
        cgroupfs_mounts_done(&m);
        assert_int_equal(cgroupfs_mounts_parse("40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup "
                                               "cgroup rw,name=systemd\n",
                                               &m),
                         0);
        assert_null(cgroupfs_mounts_find(&m, NULL));
        assert_non_null(cgroupfs_mounts_find(&m, "name=systemd"));
        cgroupfs_mounts_done(&m);

        assert_int_equal(cgroupfs_mounts_parse("", &m), 0);
        assert_int_equal(m.n, 0);
        assert_int_equal(cgroupfs_mounts_parse(NULL, &m), -EINVAL);
}

/* Walks `path` below dir with the directories' owner expected to be `owner`. */
static int delegated(const char *dir, const char *path, uid_t owner, bool *ret)
{
        _cleanup_close_ int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);

        assert_true(fd >= 0);
        return cgroupfs_path_delegated(fd, path, owner, ret);
}

static void assert_delegated(const char *dir, const char *path, uid_t owner, bool want)
{
        bool d = !want;
        int r = delegated(dir, path, owner, &d);

        if (r < 0)
                fail_msg("cgroupfs_path_delegated(\"%s\") = %d", path, r);
        if (d != want)
                fail_msg("\"%s\" is %sdelegated, wanted %s", path, d ? "" : "not ",
                         want ? "delegated" : "not");
}

static void assert_delegated_fails(const char *dir, const char *path, int want)
{
        bool d = true;
        int r = delegated(dir, path, getuid(), &d);

        if (want ? r != want : r >= 0)
                fail_msg("cgroupfs_path_delegated(\"%s\") = %d, wanted %d", path, r, want);
        assert_true(d); /* untouched */
}

/* A tree shaped like a cgroup hierarchy, in a temporary directory: who may write each directory
 * is what makes a path delegated. Without root, "another owner" is the walk expecting another
 * uid than ours, and group or other write is chmod's. */
static void test_path_delegated(void **state)
{
        char dir[64];
        const char *scope = "/a.slice/d.service/docker-" ID_DOCKER ".scope";
        const char *svc, *top;
        uid_t me = getuid();

        assert_int_equal(tmpdir_make(dir, sizeof(dir), "cgroupfs"), 0);
        assert_int_equal(chmod(dir, 0755), 0);
        assert_int_equal(mkdir(path_below(dir, "a.slice"), 0755), 0);
        assert_int_equal(mkdir(path_below(dir, "a.slice/d.service"), 0755), 0);
        assert_int_equal(mkdir(path_below(dir, scope + 1), 0755), 0);
        assert_int_equal(chmod(path_below(dir, "a.slice"), 0755), 0); /* whatever the umask */
        assert_int_equal(chmod(path_below(dir, "a.slice/d.service"), 0755), 0);
        svc = path_below(dir, "a.slice/d.service");
        top = path_below(dir, "a.slice");

        /* All ours and closed to others: nothing is delegated. */
        assert_delegated(dir, scope, me, false);
        assert_delegated(dir, "/a.slice/d.service", me, false);
        assert_delegated(dir, "/", me, false);
        assert_delegated(dir, "//a.slice//d.service/", me, false);
        /* A path whose directories are another's: delegated below the first of them. */
        assert_delegated(dir, scope, me + 1, true);
        assert_delegated(dir, "/a.slice", me + 1, true);
        assert_delegated(dir, "/", me + 1, false); /* the root cgroup has no parent */

        /* Writable by group or others is as good as owned. */
        assert_int_equal(chmod(svc, 0775), 0);
        assert_delegated(dir, scope, me, true);
        assert_int_equal(chmod(svc, 0757), 0);
        assert_delegated(dir, scope, me, true);
        /* The service's own cgroup was named by whoever could write a.slice: not delegated. */
        assert_delegated(dir, "/a.slice/d.service", me, false);
        assert_int_equal(chmod(svc, 0755), 0);
        /* Higher up counts as much; the cgroup's own directory never does. */
        assert_int_equal(chmod(top, 0777), 0);
        assert_delegated(dir, scope, me, true);
        assert_int_equal(chmod(top, 0755), 0);
        assert_int_equal(chmod(path_below(dir, scope + 1), 0777), 0);
        assert_delegated(dir, scope, me, false);
        assert_int_equal(chmod(dir, 0777), 0);
        assert_delegated(dir, "/a.slice", me, true);
        assert_int_equal(chmod(dir, 0755), 0);

        /* Owned by another uid, as Delegate= with User= does (root only). */
        if (me == 0) {
                assert_int_equal(chown(svc, 4001, 4001), 0);
                assert_delegated(dir, scope, 0, true);
                assert_delegated(dir, "/a.slice/d.service", 0, false);
                assert_int_equal(chown(svc, 0, 0), 0);
        }

        /* What cannot be checked is an error, never "not delegated". */
        assert_delegated_fails(dir, "/a.slice/../a.slice/x", -EXDEV);
        assert_delegated_fails(dir, "/../../" ID_DOCKER, -EXDEV);
        assert_delegated_fails(dir, "/./a.slice/x", -EXDEV);
        assert_delegated_fails(dir, "/missing/x", -ENOENT);
        assert_delegated_fails(dir, "a.slice/x", -EINVAL);
        assert_int_equal(symlink("a.slice", path_below(dir, "link.slice")), 0);
        assert_delegated_fails(dir, "/link.slice/d.service/x", 0); /* no symlink is followed */

        assert_int_equal(tmpdir_remove(dir), 0);
}

/* The daemon's own view of this host: what cannot be checked counts as delegated. */
static void test_delegated_on_this_host(void **state)
{
        CgroupMounts m = {};
        Bytes b = slurp("/proc/self/mountinfo");

        assert_true(cgroupfs_delegated("no-such-controller", "/x.service"));
        assert_true(cgroupfs_delegated(NULL, "/../../x.service"));
        assert_true(cgroupfs_delegated(NULL, "/no-such-cgroup-brokerd-test/x.scope"));
        assert_true(cgroupfs_delegated(NULL, "x.service"));

        /* Where this host's cgroup2 root is mounted, the root cgroup (no parent) is not. */
        assert_int_equal(cgroupfs_mounts_parse((const char *) b.p, &m), 0);
        if (cgroupfs_mounts_find(&m, NULL)) {
                assert_int_equal(cgroupfs_init(), 0);
                assert_false(cgroupfs_delegated(NULL, "/"));
        } else
                print_message("no cgroup2 mount here: skipped\n");
        cgroupfs_mounts_done(&m);
        bytes_free(&b);
}

static void test_done_and_args(void **state)
{
        CgroupInfo info = {};
        char *s = (char *) 1;

        cgroup_info_done(&info);
        cgroup_info_done(NULL);
        assert_int_equal(cgroup_info_parse("0::/a.service", NULL), -EINVAL);
        assert_int_equal(cgroup_path_get_unit(NULL, &s, NULL), -EINVAL);
        assert_int_equal(cgroup_path_get_container(NULL, &s), -EINVAL);
        assert_ptr_equal(s, (char *) 1);

        assert_int_equal(cgroup_info_parse("0::/a.service", &info), 0);
        cgroup_info_done(&info);
        assert_null(info.path);
        assert_null(info.unit);
        assert_null(info.container);
        cgroup_info_done(&info); /* twice is harmless */
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_table),
            cmocka_unit_test(test_hybrid_cgroup2_wins),
            cmocka_unit_test(test_v1_name_systemd_wins),
            cmocka_unit_test(test_v1_first_line_fallback),
            cmocka_unit_test(test_line_endings),
            cmocka_unit_test(test_malformed),
            cmocka_unit_test(test_dotdot),
            cmocka_unit_test(test_long_paths),
            cmocka_unit_test(test_unit_names),
            cmocka_unit_test(test_user_manager),
            cmocka_unit_test(test_user_delegated_flag),
            cmocka_unit_test(test_containers),
            cmocka_unit_test(test_deciding_hierarchy),
            cmocka_unit_test(test_mounts_parse),
            cmocka_unit_test(test_path_delegated),
            cmocka_unit_test(test_delegated_on_this_host),
            cmocka_unit_test(test_done_and_args),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
