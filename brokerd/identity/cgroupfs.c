#include "identity/cgroupfs.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"

/* Far more than any host's mount table; a longer one is refused rather than truncated. */
#define MOUNTINFO_MAX        (16u * 1024 * 1024)
#define MOUNTINFO_FIELDS_MAX 64

/* mountinfo writes ' ', '\t', '\n' and '\\' in paths as "\ooo". In place. */
static void unescape_octal(char *s)
{
        char *w = s;

        for (const char *r = s; *r;) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
                    r[3] >= '0' && r[3] <= '7') {
                        *w++ = (char) (((r[1] - '0') << 6) | ((r[2] - '0') << 3) | (r[3] - '0'));
                        r += 4;
                } else
                        *w++ = *r++;
        }
        *w = 0;
}

/* Whether the comma-separated `list` has the item `item` (of length n). */
static bool list_has(const char *list, const char *item, size_t n)
{
        for (const char *p = list; *p;) {
                size_t l = strcspn(p, ",");

                if (l == n && memcmp(p, item, n) == 0)
                        return true;
                p += l;
                if (*p == ',')
                        p++;
        }
        return false;
}

void cgroupfs_mounts_done(CgroupMounts *m)
{
        if (!m)
                return;
        for (size_t i = 0; i < m->n; i++) {
                free(m->mounts[i].path);
                free(m->mounts[i].controllers);
        }
        free(m->mounts);
        *m = (CgroupMounts){};
}

/* One line: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER". */
static int parse_line(char *line, CgroupMounts *m)
{
        char *f[MOUNTINFO_FIELDS_MAX], *save = NULL, *tok;
        size_t n = 0, sep = 0;
        bool v2;

        for (tok = strtok_r(line, " ", &save); tok && n < MOUNTINFO_FIELDS_MAX;
             tok = strtok_r(NULL, " ", &save))
                f[n++] = tok;
        for (size_t i = 6; i < n && !sep; i++)
                if (strcmp(f[i], "-") == 0)
                        sep = i;
        if (!sep || sep + 3 >= n) /* FSTYPE SOURCE SUPER after the "-" */
                return 0;
        v2 = strcmp(f[sep + 1], "cgroup2") == 0;
        if (!v2 && strcmp(f[sep + 1], "cgroup") != 0)
                return 0;
        /* Only a mount of the hierarchy's root shows every directory a path runs through. */
        if (strcmp(f[3], "/") != 0)
                return 0;

        CgroupMount *a = realloc(m->mounts, (m->n + 1) * sizeof(CgroupMount));
        if (!a)
                return -ENOMEM;
        m->mounts = a;
        unescape_octal(f[4]);
        a[m->n] = (CgroupMount){.path = strdup(f[4])};
        if (!a[m->n].path)
                return -ENOMEM;
        if (!v2) {
                a[m->n].controllers = strdup(f[sep + 3]);
                if (!a[m->n].controllers) {
                        free(a[m->n].path);
                        return -ENOMEM;
                }
        }
        m->n++;
        return 0;
}

int cgroupfs_mounts_parse(const char *mountinfo, CgroupMounts *ret)
{
        _cleanup_free_ char *copy = NULL;
        CgroupMounts m = {};
        char *line, *save = NULL;
        int r;

        if (!mountinfo || !ret)
                return -EINVAL;
        copy = strdup(mountinfo);
        if (!copy)
                return -ENOMEM;
        for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                r = parse_line(line, &m);
                if (r < 0) {
                        cgroupfs_mounts_done(&m);
                        return r;
                }
        }
        *ret = m;
        return 0;
}

const CgroupMount *cgroupfs_mounts_find(const CgroupMounts *m, const char *controllers)
{
        size_t first = controllers ? strcspn(controllers, ",") : 0;

        if (controllers && first == 0)
                return NULL;
        for (size_t i = 0; i < m->n; i++) {
                const CgroupMount *c = &m->mounts[i];

                if (!controllers ? !c->controllers
                                 : c->controllers && list_has(c->controllers, controllers, first))
                        return c;
        }
        return NULL;
}

int cgroupfs_path_delegated(int root_fd, const char *path, uid_t owner, bool *ret)
{
        _cleanup_close_ int fd = -EBADF;
        const char *p = path;
        int dir = root_fd;

        if (!path || !ret || path[0] != '/')
                return -EINVAL;
        for (;;) {
                char name[NAME_MAX + 1];
                struct stat st;
                size_t n;
                int next;

                p += strspn(p, "/");
                if (!*p)
                        break;
                n = strcspn(p, "/");
                if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
                        return -EXDEV;
                if (n > NAME_MAX)
                        return -ENAMETOOLONG;

                /* The next component was named by whoever may write this directory. */
                if (fstat(dir, &st) < 0)
                        return -errno;
                if (!S_ISDIR(st.st_mode))
                        return -ENOTDIR;
                if (st.st_uid != owner || (st.st_mode & (S_IWGRP | S_IWOTH))) {
                        *ret = true;
                        return 0;
                }

                memcpy(name, p, n);
                name[n] = 0;
                p += n;
                if (!p[strspn(p, "/")])
                        break; /* the caller's own cgroup: only its parent counts */
                next = openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0)
                        return -errno;
                if (fd >= 0)
                        close(fd);
                fd = dir = next;
        }
        *ret = false;
        return 0;
}

/* The daemon's view, found once: each usable mount with its root directory open. */
static struct {
        pthread_once_t once;
        int r;
        CgroupMounts mounts;
        int *fds; /* one per mount */
} view = {.once = PTHREAD_ONCE_INIT};

static int read_mountinfo(char **ret)
{
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, size = 64 * 1024;

        fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (;;) {
                if (len == size) {
                        if (size >= MOUNTINFO_MAX)
                                return -EFBIG;
                        size *= 2;
                }
                char *b = realloc(buf, size + 1);
                if (!b)
                        return -ENOMEM;
                buf = b;
                ssize_t n = read(fd, buf + len, size - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += n;
        }
        buf[len] = 0;
        *ret = TAKE_PTR(buf);
        return 0;
}

/* Opens a mount point and checks that it is the cgroup file system it claims to be (a mount
 * stacked over it later would hide it). */
static int open_mount(const CgroupMount *m)
{
        struct statfs sfs;
        int fd = open(m->path, O_PATH | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        if (fstatfs(fd, &sfs) < 0 ||
            sfs.f_type != (m->controllers ? CGROUP_SUPER_MAGIC : CGROUP2_SUPER_MAGIC)) {
                close(fd);
                return -ENOMEDIUM;
        }
        return fd;
}

static void view_init(void)
{
        _cleanup_free_ char *text = NULL;
        CgroupMounts *m = &view.mounts;
        size_t kept = 0;
        int r;

        r = read_mountinfo(&text);
        if (r >= 0)
                r = cgroupfs_mounts_parse(text, m);
        if (r < 0) {
                view.r = log_warning_errno(r, "Cannot read /proc/self/mountinfo (%m): no caller's "
                                              "cgroup can be checked for delegation, so every "
                                              "caller counts as user_delegated");
                return;
        }
        view.fds = calloc(m->n ? m->n : 1, sizeof(int));
        if (!view.fds) {
                cgroupfs_mounts_done(m);
                view.r = log_oom();
                return;
        }
        /* Keep only the mounts that can be opened and are what they claim. */
        for (size_t i = 0; i < m->n; i++) {
                int fd = open_mount(&m->mounts[i]);

                if (fd < 0) {
                        free(m->mounts[i].path);
                        free(m->mounts[i].controllers);
                        continue;
                }
                m->mounts[kept] = m->mounts[i];
                view.fds[kept++] = fd;
        }
        m->n = kept;
        if (kept == 0)
                view.r = log_warning_errno(ENOENT,
                                           "No cgroup hierarchy is mounted where brokerd can see "
                                           "it: every caller counts as user_delegated (unit and "
                                           "container rules hold only with uid or user)");
}

int cgroupfs_init(void)
{
        pthread_once(&view.once, view_init);
        return view.r;
}

bool cgroupfs_delegated(const char *controllers, const char *path)
{
        const CgroupMount *m;
        bool d;

        if (cgroupfs_init() < 0)
                return true;
        m = cgroupfs_mounts_find(&view.mounts, controllers);
        if (!m)
                return true;
        if (cgroupfs_path_delegated(view.fds[m - view.mounts.mounts], path, 0, &d) < 0)
                return true;
        return d;
}
