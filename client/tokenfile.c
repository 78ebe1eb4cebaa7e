/* Token files, replaced atomically: see tokenfile.h for the contract. */
#include "tokenfile.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "pathsafe.h"

/* Attempts at a fresh temporary name: each one is 64 random bits, so only a name planted on
 * purpose collides, and an attacker cannot guess the next one. */
#define TMP_ATTEMPTS 16

/* Opens PATH's directory into *ret_dfd; *ret_base is PATH's last name (inside PATH). A PATH
 * ending in '/', "." or ".." names a directory: -EISDIR. */
static int open_parent(const char *path, int *ret_dfd, const char **ret_base)
{
        _cleanup_free_ char *dir = NULL;
        const char *base;
        int r, fd;

        r = path_split(path, &dir, &base);
        if (r < 0)
                return r;
        if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
                return -EISDIR;
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        *ret_dfd = fd;
        *ret_base = base;
        return 0;
}

int token_file_check_dir(const char *path)
{
        _cleanup_close_ int dfd = -EBADF;
        const char *base;
        struct stat st;
        int r;

        if (!path || !*path)
                return -EINVAL;
        r = open_parent(path, &dfd, &base);
        if (r < 0)
                return r;
        if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
                return -EISDIR;
        return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
        while (len > 0) {
                ssize_t k = write(fd, p, len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += k;
                len -= (size_t) k;
        }
        return 0;
}

/* Creates a new temporary file in dfd, its name in tmp. Returns the descriptor or -errno. */
static int create_temp(int dfd, mode_t mode, char tmp[64])
{
        for (int i = 0; i < TMP_ATTEMPTS; i++) {
                uint64_t rnd;
                int fd;

                if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd))
                        return errno > 0 ? -errno : -EIO;
                snprintf(tmp, 64, ".brokerctl-%016" PRIx64 ".tmp", rnd);
                fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
                if (fd >= 0)
                        return fd;
                if (errno != EEXIST)
                        return negative_errno();
        }
        return -EEXIST;
}

int token_file_write(const char *path, const void *data, size_t len, mode_t mode)
{
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;
        const char *base;
        char tmp[64];
        int r;

        if (!path || !*path || (!data && len > 0) || (mode & ~(mode_t) 07777))
                return -EINVAL;
        r = open_parent(path, &dfd, &base);
        if (r < 0)
                return r;
        fd = create_temp(dfd, mode, tmp);
        if (fd < 0)
                return fd;

        /* Created with mode & ~umask, which only takes bits away: now exactly the mode asked
         * for, before a byte of the token is in it. */
        if (fchmod(fd, mode) < 0)
                r = negative_errno();
        if (r >= 0)
                r = write_all(fd, data, len);
        if (r >= 0 && fsync(fd) < 0)
                r = negative_errno();
        if (r >= 0 && close(TAKE_FD(fd)) < 0)
                r = negative_errno();
        if (r >= 0 && renameat(dfd, tmp, dfd, base) < 0)
                r = negative_errno();
        if (r < 0) {
                (void) unlinkat(dfd, tmp, 0);
                return r;
        }
        /* Best effort: PATH already holds the new content, so a failure here (some file systems
         * cannot sync a directory) only weakens durability across a crash; reporting it would
         * break "on failure PATH is as it was". */
        (void) fsync(dfd);
        return 0;
}

int token_file_mode_parse(const char *s, mode_t *ret)
{
        mode_t m = 0;
        size_t n;

        if (!s || !ret)
                return -EINVAL;
        n = strlen(s);
        if (n < 1 || n > 4)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '7')
                        return -EINVAL;
                m = (m << 3) | (mode_t) (s[i] - '0');
        }
        if ((m & TOKEN_FILE_MODE_REFUSED) || !(m & 0444))
                return -EPERM;
        *ret = m;
        return 0;
}
