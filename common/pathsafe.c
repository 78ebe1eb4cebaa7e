#include "pathsafe.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "macro.h"

/* The kernel's own limit on symlinks followed in one lookup. */
#define MAX_SYMLINKS 40

/* Fills err (when the caller gave one) and returns r; "%m" prints strerror(-r). */
static int fail(char *err, size_t errlen, int r, const char *fmt, ...) _printf_(4, 5);
static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
        va_list ap;

        if (err && errlen > 0) {
                errno = -r;
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return r;
}

static const char *file_type_name(mode_t m)
{
        if (S_ISREG(m))
                return "regular file";
        if (S_ISDIR(m))
                return "directory";
        if (S_ISLNK(m))
                return "symlink";
        if (S_ISFIFO(m))
                return "fifo";
        if (S_ISSOCK(m))
                return "socket";
        if (S_ISCHR(m))
                return "character device";
        if (S_ISBLK(m))
                return "block device";
        return "special file";
}

static unsigned perm_bits(const struct stat *st)
{
        return (unsigned) (st->st_mode & 07777);
}

/* path_set_daemon_user(); unset: the effective uid is the daemon's. */
static bool daemon_user_set;
static uid_t daemon_user_uid;
static gid_t daemon_user_gid;

void path_set_daemon_user(uid_t uid, gid_t gid)
{
        daemon_user_set = true;
        daemon_user_uid = uid;
        daemon_user_gid = gid;
}

static uid_t daemon_uid(void)
{
        return daemon_user_set ? daemon_user_uid : geteuid();
}

/* Who daemon_uid() is, for messages. */
static const char *daemon_uid_name(void)
{
        return daemon_user_set ? "the user brokerd runs as" : "the daemon's effective uid";
}

static bool trusted_uid(uid_t uid)
{
        return uid == 0 || uid == daemon_uid();
}

/* One directory of a walk: who may rename or replace what lies below it. `last`: the directory
 * the caller asked for, to which `flags` add their rules. */
static int check_dir(const struct stat *st, const char *path, PathDirFlags flags, bool last,
                     char *err, size_t errlen)
{
        uid_t euid = daemon_uid();

        if (!S_ISDIR(st->st_mode))
                return fail(err, errlen, -ENOTDIR, "%s: is a %s, wanted a directory", path,
                            file_type_name(st->st_mode));
        if (last && (flags & PATH_CREATE)) {
                if (st->st_uid != euid)
                        return fail(err, errlen, -EPERM, "%s: owned by uid %u, wanted uid %u (%s)",
                                    path, (unsigned) st->st_uid, (unsigned) euid,
                                    daemon_uid_name());
        } else if (!trusted_uid(st->st_uid))
                return fail(err, errlen, -EPERM, "%s: owned by uid %u, wanted root or uid %u", path,
                            (unsigned) st->st_uid, (unsigned) euid);
        if (st->st_mode & (S_IWGRP | S_IWOTH)) {
                /* Sticky keeps others from renaming or deleting our names, not from creating
                 * theirs first (a database, a lock, a symlink) where we would create ours. */
                if (last && (flags & PATH_STRICT))
                        return fail(err, errlen, -EPERM,
                                    "%s: directory is writable by group or others (mode %04o), "
                                    "wanted no group/other write (e.g. %s); the sticky bit is no "
                                    "exception for this directory",
                                    path, perm_bits(st), flags & PATH_PRIVATE ? "0700" : "0755");
                /* Sticky: others may add entries but cannot rename or delete ours (so /tmp is
                 * fine on the way). */
                if (!(st->st_mode & S_ISVTX))
                        return fail(err, errlen, -EPERM,
                                    "%s: directory is writable by group or others (mode %04o), "
                                    "wanted no group/other write (e.g. 0755) unless sticky",
                                    path, perm_bits(st));
        }
        /* An existing directory is refused, not silently chmod'ed: its mode is the operator's. */
        if (last && (flags & PATH_PRIVATE) && (st->st_mode & 077))
                return fail(err, errlen, -EPERM,
                            "%s: mode %04o, wanted no group or other access (e.g. 0700)", path,
                            perm_bits(st));
        if ((flags & PATH_WORLD_SEARCH) && !(st->st_mode & S_IXOTH))
                return fail(err, errlen, -EPERM,
                            "%s: not searchable by others (mode %04o), wanted o+x so callers can "
                            "reach the socket",
                            path, perm_bits(st));
        return 0;
}

/* True when nothing but slashes and "." follows: the name just taken is the last. */
static bool rest_is_empty(const char *p)
{
        for (;;) {
                while (*p == '/')
                        p++;
                if (*p == '\0')
                        return true;
                if (p[0] == '.' && (p[1] == '/' || p[1] == '\0')) {
                        p++;
                        continue;
                }
                return false;
        }
}

static int open_root(int *ret_fd, char *err, size_t errlen)
{
        int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0) {
                int r = negative_errno();
                return fail(err, errlen, r, "/: cannot open: %m");
        }
        *ret_fd = fd;
        return 0;
}

/* Creates `name` in `dir_fd` with exactly `mode`: mkdirat() applies the umask, so the mode is
 * set again on the new directory, through a descriptor that cannot follow a swapped-in
 * symlink. An existing name is left alone; the walk checks what it is. */
static int make_one_dir(int dir_fd, const char *name, const char *path, mode_t mode, char *err,
                        size_t errlen)
{
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (mkdirat(dir_fd, name, mode) < 0) {
                if (errno == EEXIST)
                        return 0;
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot create directory: %m", path);
        }
        fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fchmod(fd, mode) < 0) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot set mode %04o: %m", path, (unsigned) mode);
        }
        /* Root making it for the user it will run as: the user's, as if it had made it. */
        if (daemon_user_set && geteuid() != daemon_user_uid &&
            fchown(fd, daemon_user_uid, daemon_user_gid) < 0) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot give it to uid %u: %m", path,
                            (unsigned) daemon_user_uid);
        }
        return 0;
}

/* PATH_DRY_RUN: `path`, a missing name in `parent_fd`, and whatever follows it (`rest`) would
 * be made: each as make_one_dir() would leave it, the last one (`dir`) with the last one's
 * rules. */
static int would_make(int parent_fd, const char *path, const char *rest, const char *dir,
                      PathDirFlags flags, mode_t mode, int *ret_fd, char *err, size_t errlen)
{
        struct stat st = {.st_mode = S_IFDIR | mode, .st_uid = daemon_uid()};
        struct statvfs sv;
        int r;

        if (fstatvfs(parent_fd, &sv) >= 0 && (sv.f_flag & ST_RDONLY))
                return fail(err, errlen, -EROFS, "%s: cannot create directory: %m", path);
        if (!rest_is_empty(rest)) {
                r = check_dir(&st, path, flags, false, err, errlen);
                if (r < 0)
                        return r;
        }
        r = check_dir(&st, dir, flags, true, err, errlen);
        if (r < 0)
                return r;
        if (ret_fd)
                *ret_fd = -EBADF;
        return 1;
}

int path_open_dir(const char *dir, PathDirFlags flags, mode_t mode, int *ret_fd, char *err,
                  size_t errlen)
{
        _cleanup_free_ char *todo = NULL;
        _cleanup_close_ int fd = -EBADF;
        char cur[PATH_MAX], next[PATH_MAX], target[PATH_MAX], name[NAME_MAX + 1];
        unsigned links = 0;
        bool last_checked;
        struct stat st;
        const char *p;
        int r;

        if (!dir || !*dir)
                return fail(err, errlen, -EINVAL, "empty directory path");
        mode &= 07777;

        if (dir[0] == '/') {
                todo = strdup(dir);
        } else {
                /* The working directory's own chain is part of the lookup. */
                if (!getcwd(cur, sizeof(cur))) {
                        r = negative_errno();
                        return fail(err, errlen, r, "%s: cannot get the working directory: %m",
                                    dir);
                }
                if (asprintf(&todo, "%s/%s", cur, dir) < 0)
                        todo = NULL;
        }
        if (!todo)
                return fail(err, errlen, -ENOMEM, "%s: out of memory", dir);

        r = open_root(&fd, err, errlen);
        if (r < 0)
                return r;
        strcpy(cur, "/");
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                return fail(err, errlen, r, "/: cannot stat: %m");
        }
        last_checked = rest_is_empty(todo);
        r = check_dir(&st, cur, flags, last_checked, err, errlen);
        if (r < 0)
                return r;

        /* `cur` names the directory `fd` holds, canonically: every directory on the way to it was
         * checked when it was entered, so ".." and relative link targets need no further check.
         * Each name is looked up in a checked directory, and a directory is entered through
         * the descriptor that was checked, never by its path again. */
        p = todo;
        for (;;) {
                size_t len, curlen = strlen(cur);
                int nfd;

                while (*p == '/')
                        p++;
                if (*p == '\0')
                        break;
                len = strcspn(p, "/");
                if (len > NAME_MAX)
                        return fail(err, errlen, -ENAMETOOLONG, "%s: name too long", dir);
                memcpy(name, p, len);
                name[len] = '\0';
                p += len;

                if (strcmp(name, ".") == 0)
                        continue;
                if (strcmp(name, "..") == 0) {
                        char *slash = strrchr(cur, '/');

                        nfd = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
                        if (nfd < 0) {
                                r = negative_errno();
                                return fail(err, errlen, r, "%s/..: cannot open: %m", cur);
                        }
                        close(fd);
                        fd = nfd;
                        if (slash == cur)
                                cur[1] = '\0';
                        else
                                *slash = '\0';
                        last_checked = false;
                        continue;
                }

                if (curlen + 1 + len >= sizeof(next))
                        return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", dir);
                memcpy(next, cur, curlen);
                if (curlen > 1)
                        next[curlen++] = '/';
                memcpy(next + curlen, name, len + 1);

                if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = negative_errno();
                        if (r != -ENOENT || !(flags & PATH_CREATE))
                                return fail(err, errlen, r, "%s: cannot stat: %m", next);
                        if (flags & PATH_DRY_RUN)
                                return would_make(fd, next, p, dir, flags, mode, ret_fd, err,
                                                  errlen);
                        r = make_one_dir(fd, name, next, mode, err, errlen);
                        if (r < 0)
                                return r;
                        if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                                r = negative_errno();
                                return fail(err, errlen, r, "%s: cannot stat: %m", next);
                        }
                }

                if (S_ISLNK(st.st_mode)) {
                        char *joined;
                        ssize_t tl;

                        /* In a sticky directory anyone may plant a link where we expect a
                         * directory; only root's and ours are followed (like the kernel's
                         * protected_symlinks, but for every directory). */
                        if (!trusted_uid(st.st_uid))
                                return fail(err, errlen, -EPERM,
                                            "%s: symlink owned by uid %u, wanted a directory, or "
                                            "a symlink owned by root or uid %u",
                                            next, (unsigned) st.st_uid, (unsigned) daemon_uid());
                        if (++links > MAX_SYMLINKS)
                                return fail(err, errlen, -ELOOP, "%s: too many symlinks", dir);
                        tl = readlinkat(fd, name, target, sizeof(target) - 1);
                        if (tl < 0) {
                                r = negative_errno();
                                return fail(err, errlen, r, "%s: cannot read symlink: %m", next);
                        }
                        if (tl == 0)
                                return fail(err, errlen, -ENOENT, "%s: empty symlink", next);
                        target[tl] = '\0';
                        if (asprintf(&joined, "%s/%s", target, p) < 0)
                                return fail(err, errlen, -ENOMEM, "%s: out of memory", dir);
                        free(todo);
                        todo = joined;
                        p = todo;
                        if (target[0] == '/') {
                                close(fd);
                                fd = -EBADF;
                                r = open_root(&fd, err, errlen);
                                if (r < 0)
                                        return r;
                                strcpy(cur, "/");
                        }
                        last_checked = false;
                        continue;
                }
                if (!S_ISDIR(st.st_mode))
                        return check_dir(&st, next, flags, false, err, errlen);

                nfd = openat(fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0) {
                        r = negative_errno();
                        return fail(err, errlen, r, "%s: cannot open: %m", next);
                }
                close(fd);
                fd = nfd;
                /* The descriptor is what counts: a name swapped meanwhile shows here. */
                if (fstat(fd, &st) < 0) {
                        r = negative_errno();
                        return fail(err, errlen, r, "%s: cannot stat: %m", next);
                }
                last_checked = rest_is_empty(p);
                r = check_dir(&st, next, flags, last_checked, err, errlen);
                if (r < 0)
                        return r;
                strcpy(cur, next);
        }

        /* A path ending in ".." or in a symlink's target reaches its last directory as an
         * ancestor; it still gets the last one's rules. */
        if (!last_checked) {
                if (fstat(fd, &st) < 0) {
                        r = negative_errno();
                        return fail(err, errlen, r, "%s: cannot stat: %m", cur);
                }
                r = check_dir(&st, cur, flags, true, err, errlen);
                if (r < 0)
                        return r;
        }
        if (ret_fd)
                *ret_fd = TAKE_FD(fd);
        return 0;
}

int path_check_dir_chain(const char *dir, bool world_search, char *err, size_t errlen)
{
        return path_open_dir(dir, world_search ? PATH_WORLD_SEARCH : 0, 0, NULL, err, errlen);
}

int path_make_dir(const char *dir, mode_t mode, bool private_dir, bool world_search, char *err,
                  size_t errlen)
{
        PathDirFlags flags = PATH_CREATE | PATH_STRICT;

        if (private_dir)
                flags |= PATH_PRIVATE;
        if (world_search)
                flags |= PATH_WORLD_SEARCH;
        return path_open_dir(dir, flags, mode, NULL, err, errlen);
}

int path_make_absolute(const char *path, char **ret)
{
        _cleanup_free_ char *joined = NULL;
        char cwd[PATH_MAX];
        char *out;
        size_t n = 0;

        if (path[0] == '/')
                joined = strdup(path);
        else if (!getcwd(cwd, sizeof(cwd)))
                return negative_errno();
        else if (asprintf(&joined, "%s/%s", cwd, path) < 0)
                joined = NULL;
        if (!joined)
                return -ENOMEM;
        out = malloc(strlen(joined) + 2);
        if (!out)
                return -ENOMEM;
        for (const char *p = joined; *p;) {
                size_t len;

                while (*p == '/')
                        p++;
                len = strcspn(p, "/");
                if (len == 0 || (len == 1 && p[0] == '.')) {
                        p += len;
                        continue;
                }
                out[n++] = '/';
                memcpy(out + n, p, len);
                n += len;
                p += len;
        }
        if (n == 0)
                out[n++] = '/';
        out[n] = '\0';
        *ret = out;
        return 0;
}

int path_split(const char *path, char **ret_dir, const char **ret_name)
{
        const char *slash = strrchr(path, '/');
        char *dir;

        if (!slash)
                dir = strdup(".");
        else if (slash == path)
                dir = strdup("/");
        else
                dir = strndup(path, (size_t) (slash - path));
        if (!dir)
                return -ENOMEM;
        *ret_dir = dir;
        *ret_name = slash ? slash + 1 : path;
        return 0;
}

/* Opens the directory of `path` as `flags` ask and stats its last name without following it;
 * `wanted` says what a missing file should have been. */
static int stat_in_dir(const char *path, PathDirFlags flags, const char *wanted, int *ret_dir_fd,
                       const char **ret_name, struct stat *ret_st, char *err, size_t errlen)
{
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int dir_fd = -EBADF;
        const char *name;
        int r;

        if (!path || !*path)
                return fail(err, errlen, -EINVAL, "empty file path");
        if (path_split(path, &dir, &name) < 0)
                return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
        /* Directories first: only once nobody else can rename entries in them does what is
         * found in them stay true. */
        r = path_open_dir(dir, flags, 0, &dir_fd, err, errlen);
        if (r < 0)
                return r;
        if (!*name)
                return fail(err, errlen, -EISDIR, "%s: is a directory, wanted a regular file",
                            path);
        if (fstatat(dir_fd, name, ret_st, AT_SYMLINK_NOFOLLOW) < 0) {
                r = negative_errno();
                if (r == -ENOENT)
                        return fail(err, errlen, r, "%s: does not exist, wanted %s", path, wanted);
                return fail(err, errlen, r, "%s: cannot stat: %m", path);
        }
        *ret_dir_fd = TAKE_FD(dir_fd);
        *ret_name = name;
        return 0;
}

static int check_regular(const struct stat *st, const char *path, char *err, size_t errlen)
{
        if (S_ISLNK(st->st_mode))
                return fail(err, errlen, -EPERM, "%s: is a symlink, wanted a regular file", path);
        if (!S_ISREG(st->st_mode))
                return fail(err, errlen, -EPERM, "%s: is a %s, wanted a regular file", path,
                            file_type_name(st->st_mode));
        return 0;
}

int path_check_private_file(const char *path, char *err, size_t errlen)
{
        _cleanup_close_ int dir_fd = -EBADF;
        uid_t euid = geteuid();
        const char *name;
        struct stat st;
        int r;

        r = stat_in_dir(path, 0, "a regular file with mode 0600", &dir_fd, &name, &st, err, errlen);
        if (r < 0)
                return r;
        r = check_regular(&st, path, err, errlen);
        if (r < 0)
                return r;
        /* Root reads it before it runs as its user: either may own it. */
        if (st.st_uid != euid && st.st_uid != daemon_uid())
                return fail(err, errlen, -EPERM, "%s: owned by uid %u, wanted uid %u (%s)", path,
                            (unsigned) st.st_uid, (unsigned) daemon_uid(), daemon_uid_name());
        if (st.st_mode & 077)
                return fail(err, errlen, -EPERM,
                            "%s: mode %04o, wanted 0600 (no group or other access)", path,
                            perm_bits(&st));
        return 0;
}

static int check_protected(const struct stat *st, const char *path, char *err, size_t errlen)
{
        int r = check_regular(st, path, err, errlen);

        if (r < 0)
                return r;
        if (!trusted_uid(st->st_uid))
                return fail(err, errlen, -EPERM, "%s: owned by uid %u, wanted root or uid %u", path,
                            (unsigned) st->st_uid, (unsigned) daemon_uid());
        if (st->st_mode & (S_IWGRP | S_IWOTH))
                return fail(err, errlen, -EPERM,
                            "%s: mode %04o, wanted no group or other write (e.g. 0644 or 0600)",
                            path, perm_bits(st));
        return 0;
}

int path_open_protected_file(const char *path, int *ret_fd, char *err, size_t errlen)
{
        _cleanup_close_ int dir_fd = -EBADF, fd = -EBADF;
        const char *name;
        struct stat st;
        int r;

        r = stat_in_dir(path, PATH_STRICT, "a regular file", &dir_fd, &name, &st, err, errlen);
        if (r < 0)
                return r;
        r = check_protected(&st, path, err, errlen);
        if (r < 0)
                return r;
        /* O_NONBLOCK: a fifo swapped in meanwhile must not hang the open; fstat() refuses it. */
        fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot open: %m", path);
        }
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot stat: %m", path);
        }
        r = check_protected(&st, path, err, errlen);
        if (r < 0)
                return r;
        r = fcntl(fd, F_GETFL);
        if (r < 0 || fcntl(fd, F_SETFL, r & ~O_NONBLOCK) < 0) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot set flags: %m", path);
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int check_own(const struct stat *st, const char *path, char *err, size_t errlen)
{
        uid_t euid = daemon_uid();
        int r = check_regular(st, path, err, errlen);

        if (r < 0)
                return r;
        if (st->st_uid != euid)
                return fail(err, errlen, -EPERM, "%s: owned by uid %u, wanted uid %u (%s)", path,
                            (unsigned) st->st_uid, (unsigned) euid, daemon_uid_name());
        if (st->st_mode & (S_IWGRP | S_IWOTH))
                return fail(err, errlen, -EPERM,
                            "%s: mode %04o, wanted no group or other write (e.g. 0600)", path,
                            perm_bits(st));
        return 0;
}

int path_check_own_file(int dir_fd, const char *dir, const char *name, char *err, size_t errlen)
{
        char path[PATH_MAX];
        struct stat st;
        int r;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                r = negative_errno();
                if (r == -ENOENT)
                        return 0;
                return fail(err, errlen, r, "%s: cannot stat: %m", path);
        }
        r = check_own(&st, path, err, errlen);
        return r < 0 ? r : 1;
}

int path_open_own_file(int dir_fd, const char *dir, const char *name, int open_flags, mode_t mode,
                       int *ret_fd, char *err, size_t errlen)
{
        _cleanup_close_ int fd = -EBADF;
        char path[PATH_MAX];
        struct stat st;
        int r;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        /* O_NONBLOCK: opening someone's fifo must not hang; fstat() refuses it. */
        fd =
            openat(dir_fd, name, open_flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, mode);
        if (fd < 0) {
                r = negative_errno();
                if (r == -ELOOP && fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        return check_own(&st, path, err, errlen);
                return fail(err, errlen, r, "%s: cannot open: %m", path);
        }
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot stat: %m", path);
        }
        r = check_own(&st, path, err, errlen);
        if (r < 0)
                return r;
        r = fcntl(fd, F_GETFL);
        if (r < 0 || fcntl(fd, F_SETFL, r & ~O_NONBLOCK) < 0) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot set flags: %m", path);
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}
