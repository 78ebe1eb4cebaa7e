#include "pathsafe.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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

/* One directory of a chain: who may rename or replace what lies below it. */
static int check_dir(const char *path, bool world_search, char *err, size_t errlen)
{
        uid_t euid = geteuid();
        struct stat st;

        if (lstat(path, &st) < 0) {
                int r = negative_errno();
                return fail(err, errlen, r, "%s: cannot stat: %m", path);
        }
        /* Paths reaching here are canonical, so a symlink means it was swapped in meanwhile. */
        if (S_ISLNK(st.st_mode))
                return fail(err, errlen, -EPERM, "%s: is a symlink, wanted a directory", path);
        if (!S_ISDIR(st.st_mode))
                return fail(err, errlen, -ENOTDIR, "%s: is a %s, wanted a directory", path,
                            file_type_name(st.st_mode));
        if (st.st_uid != 0 && st.st_uid != euid)
                return fail(err, errlen, -EPERM, "%s: owned by uid %u, wanted root or uid %u", path,
                            (unsigned) st.st_uid, (unsigned) euid);
        /* Sticky: others may add entries but cannot rename or delete ours (so /tmp is fine). */
        if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
                return fail(err, errlen, -EPERM,
                            "%s: directory is writable by group or others (mode %04o), wanted no "
                            "group/other write (e.g. 0755) unless sticky",
                            path, perm_bits(&st));
        if (world_search && !(st.st_mode & S_IXOTH))
                return fail(err, errlen, -EPERM,
                            "%s: not searchable by others (mode %04o), wanted o+x so callers can "
                            "reach the socket",
                            path, perm_bits(&st));
        return 0;
}

/* Resolves `dir` the way the kernel does, from "/" down, and checks every directory in which a
 * name is looked up: each directory of the canonical path, and also each one holding a symlink
 * that is followed. realpath() alone says where a path leads, not which directories the lookup
 * passed through: for /a/link/x with link -> /b, whoever can write /a can repoint the link, yet
 * /a is not on the canonical path /b/x. `cur` is always canonical and every prefix of it was
 * checked when it was entered, so ".." and relative link targets need no further check. */
static int check_lookup_route(const char *dir, bool world_search, const char *canon, char *err,
                              size_t errlen)
{
        _cleanup_free_ char *todo = NULL;
        char cur[PATH_MAX], next[PATH_MAX], target[PATH_MAX];
        unsigned links = 0;
        const char *p;
        int r;

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

        strcpy(cur, "/");
        r = check_dir(cur, world_search, err, errlen);
        if (r < 0)
                return r;

        p = todo;
        for (;;) {
                size_t len, curlen = strlen(cur);
                struct stat st;
                ssize_t tl;

                while (*p == '/')
                        p++;
                if (*p == '\0')
                        break;
                len = strcspn(p, "/");

                if (len == 1 && p[0] == '.') {
                        p += len;
                        continue;
                }
                if (len == 2 && p[0] == '.' && p[1] == '.') {
                        char *slash = strrchr(cur, '/');

                        if (slash == cur)
                                cur[1] = '\0';
                        else
                                *slash = '\0';
                        p += len;
                        continue;
                }

                if (curlen + 1 + len >= sizeof(next))
                        return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", dir);
                memcpy(next, cur, curlen);
                if (curlen > 1)
                        next[curlen++] = '/';
                memcpy(next + curlen, p, len);
                next[curlen + len] = '\0';
                p += len;

                if (lstat(next, &st) < 0) {
                        r = negative_errno();
                        return fail(err, errlen, r, "%s: cannot stat: %m", next);
                }

                if (S_ISLNK(st.st_mode)) {
                        char *joined;

                        /* `cur`, which holds the link, was checked when it was entered. */
                        if (++links > MAX_SYMLINKS)
                                return fail(err, errlen, -ELOOP, "%s: too many symlinks: %m", dir);
                        tl = readlink(next, target, sizeof(target) - 1);
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
                        if (target[0] == '/')
                                strcpy(cur, "/");
                        continue;
                }

                r = check_dir(next, world_search, err, errlen);
                if (r < 0)
                        return r;
                strcpy(cur, next);
        }

        /* Both resolutions name the same directory unless something moved meanwhile. */
        if (strcmp(cur, canon) != 0)
                return fail(err, errlen, -EAGAIN, "%s: resolved to %s, then to %s while checking",
                            dir, canon, cur);
        return 0;
}

int path_check_dir_chain(const char *dir, bool world_search, char *err, size_t errlen)
{
        _cleanup_free_ char *canon = NULL;
        int r;

        if (!dir || !*dir)
                return fail(err, errlen, -EINVAL, "empty directory path");

        /* realpath() gives the plain answers first (missing, not a directory, a loop). */
        canon = realpath(dir, NULL);
        if (!canon) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot resolve: %m", dir);
        }
        return check_lookup_route(dir, world_search, canon, err, errlen);
}

int path_check_private_file(const char *path, char *err, size_t errlen)
{
        _cleanup_free_ char *dir = NULL;
        const char *slash;
        uid_t euid = geteuid();
        struct stat st;
        int r;

        if (!path || !*path)
                return fail(err, errlen, -EINVAL, "empty file path");

        /* Directories first: only once nobody else can rename entries in them does what lstat()
         * says about the file stay true. */
        slash = strrchr(path, '/');
        if (!slash)
                dir = strdup(".");
        else if (slash == path)
                dir = strdup("/");
        else
                dir = strndup(path, (size_t) (slash - path));
        if (!dir)
                return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
        r = path_check_dir_chain(dir, false, err, errlen);
        if (r < 0)
                return r;

        if (lstat(path, &st) < 0) {
                r = negative_errno();
                if (r == -ENOENT)
                        return fail(err, errlen, r,
                                    "%s: does not exist, wanted a regular file with mode 0600",
                                    path);
                return fail(err, errlen, r, "%s: cannot stat: %m", path);
        }
        if (S_ISLNK(st.st_mode))
                return fail(err, errlen, -EPERM, "%s: is a symlink, wanted a regular file", path);
        if (!S_ISREG(st.st_mode))
                return fail(err, errlen, -EPERM, "%s: is a %s, wanted a regular file", path,
                            file_type_name(st.st_mode));
        if (st.st_uid != euid)
                return fail(err, errlen, -EPERM,
                            "%s: owned by uid %u, wanted uid %u (the daemon's effective uid)", path,
                            (unsigned) st.st_uid, (unsigned) euid);
        if (st.st_mode & 077)
                return fail(err, errlen, -EPERM,
                            "%s: mode %04o, wanted 0600 (no group or other access)", path,
                            perm_bits(&st));
        return 0;
}

/* Creates one missing directory with exactly `mode`: mkdir() applies the umask, so the mode is
 * set again explicitly on the new directory (through an fd that cannot follow a swapped-in
 * symlink). Returns 0 also when it already exists; what it is gets checked afterwards. */
static int make_one_dir(const char *path, mode_t mode, char *err, size_t errlen)
{
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (mkdir(path, mode) < 0) {
                if (errno == EEXIST)
                        return 0;
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot create directory: %m", path);
        }
        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fchmod(fd, mode) < 0) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot set mode %04o: %m", path, (unsigned) mode);
        }
        return 0;
}

int path_make_dir(const char *dir, mode_t mode, bool private_dir, bool world_search, char *err,
                  size_t errlen)
{
        _cleanup_free_ char *buf = NULL, *canon = NULL;
        uid_t euid = geteuid();
        struct stat st;
        int r;

        if (!dir || !*dir)
                return fail(err, errlen, -EINVAL, "empty directory path");
        mode &= 07777;

        buf = strdup(dir);
        if (!buf)
                return fail(err, errlen, -ENOMEM, "%s: out of memory", dir);
        for (char *p = buf + 1;; p++) {
                char c = *p;

                if (c != '/' && c != '\0')
                        continue;
                if (p[-1] != '/') {
                        *p = '\0';
                        r = make_one_dir(buf, mode, err, errlen);
                        *p = c;
                        if (r < 0)
                                return r;
                }
                if (c == '\0')
                        break;
        }

        canon = realpath(dir, NULL);
        if (!canon) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot resolve: %m", dir);
        }
        if (lstat(canon, &st) < 0) {
                r = negative_errno();
                return fail(err, errlen, r, "%s: cannot stat: %m", canon);
        }
        if (!S_ISDIR(st.st_mode))
                return fail(err, errlen, -ENOTDIR, "%s: is a %s, wanted a directory", canon,
                            file_type_name(st.st_mode));
        if (st.st_uid != euid)
                return fail(err, errlen, -EPERM,
                            "%s: owned by uid %u, wanted uid %u (the daemon's effective uid)",
                            canon, (unsigned) st.st_uid, (unsigned) euid);
        /* An existing directory is refused, not silently chmod'ed: its mode is the operator's. */
        if (private_dir && (st.st_mode & 077))
                return fail(err, errlen, -EPERM,
                            "%s: mode %04o, wanted no group or other access (e.g. 0700)", canon,
                            perm_bits(&st));

        return path_check_dir_chain(dir, world_search, err, errlen);
}
