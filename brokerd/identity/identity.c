#include "identity/identity.h"

#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "identity/cgroup.h"
#include "identity/cgroupfs.h"
#include "macro.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; older headers lack it */
#endif

/* /proc/PID/cgroup of a process in deeply nested cgroups on a hybrid host stays far below
 * this; a longer one is refused rather than truncated. */
#define PROC_CGROUP_MAX (64u * 1024)
#define PEER_GROUPS_MAX 65536u /* NGROUPS_MAX */

static int read_peer_groups(int fd, gid_t **ret, size_t *ret_n)
{
        socklen_t len = 64 * sizeof(gid_t);
        _cleanup_free_ gid_t *g = NULL;

        for (;;) {
                free(g);
                g = malloc(len ? len : sizeof(gid_t));
                if (!g)
                        return -ENOMEM;
                socklen_t l = len;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &l) == 0) {
                        *ret_n = l / sizeof(gid_t);
                        *ret = TAKE_PTR(g);
                        return 0;
                }
                /* The kernel reports the size it needs with ERANGE. */
                if (errno != ERANGE || l <= len || l > PEER_GROUPS_MAX * sizeof(gid_t))
                        return -errno;
                len = l;
        }
}

static char *lookup_user(uid_t uid)
{
        struct passwd pw, *res = NULL;
        char buf[4096];

        if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || !res)
                return NULL;
        return strdup(res->pw_name);
}

static char *lookup_group(gid_t gid)
{
        struct group gr, *res = NULL;
        char buf[16384];

        if (getgrgid_r(gid, &gr, buf, sizeof(buf), &res) != 0 || !res)
                return NULL;
        return strdup(res->gr_name);
}

/* The file the process runs and its path, from one open of the magic link: the path is where
 * the file lies in the caller's own mount namespace (any path it likes, with a bind mount in a
 * user namespace of its own), so only the device and inode identify it. One open keeps the
 * two consistent even if the process execs meanwhile. */
static int read_exe(Identity *id)
{
        char path[64], target[PATH_MAX];
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/%d/exe", (int) id->pid);
        fd = open(path, O_PATH | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        n = readlink(path, target, sizeof(target));
        if (n < 0)
                return -errno;
        if ((size_t) n >= sizeof(target))
                return -ENAMETOOLONG;
        target[n] = 0;
        id->exe = strdup(target);
        if (!id->exe)
                return -ENOMEM;
        id->has_exe_file = true;
        id->exe_dev = st.st_dev;
        id->exe_ino = st.st_ino;
        return 0;
}

static int read_cgroup(pid_t pid, CgroupInfo *ret)
{
        char path[64];
        _cleanup_free_ char *buf = NULL;
        _cleanup_close_ int fd = -EBADF;
        size_t len = 0;

        snprintf(path, sizeof(path), "/proc/%d/cgroup", (int) pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        buf = malloc(PROC_CGROUP_MAX + 1);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n = read(fd, buf + len, PROC_CGROUP_MAX + 1 - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += n;
                if (len > PROC_CGROUP_MAX)
                        return -EFBIG;
        }
        buf[len] = 0;
        return cgroup_info_parse(buf, ret);
}

int identity_check_alive(const Identity *id)
{
        /* A pidfd becomes readable when its process exits. */
        struct pollfd p = {.fd = id->pidfd, .events = POLLIN};
        int r = poll(&p, 1, 0);

        if (r < 0)
                return -errno;
        return r == 0 ? 0 : -ESRCH;
}

int identity_from_socket(int fd, Identity *ret)
{
        Identity id = {.pidfd = -EBADF};
        struct ucred uc;
        socklen_t len = sizeof(uc);
        int r;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
                return -errno;
        /* pid 0: the peer's PID namespace is not visible from ours. It is not us. */
        if (uc.pid == 0)
                return -EREMOTE;

        len = sizeof(id.pidfd);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &id.pidfd, &len) < 0)
                return errno == ENOPROTOOPT ? -EPROTONOSUPPORT : -errno;

        id.pid = uc.pid;
        id.uid = uc.uid;
        id.gid = uc.gid;

        r = read_peer_groups(fd, &id.groups, &id.n_groups);
        if (r < 0) {
                identity_done(&id);
                return r;
        }
        *ret = id;
        return 0;
}

int identity_read_process(Identity *id)
{
        CgroupInfo cg = {};
        int r;

        id->user = lookup_user(id->uid);
        id->group = lookup_group(id->gid);

        /* exe may be unreadable (a zombie, a kernel thread); the rule matcher treats a
         * missing exe as not matching any exe pattern. */
        (void) read_exe(id);

        r = read_cgroup(id->pid, &cg);
        if (r == -ENOENT || r == -ESRCH)
                return -ESRCH;
        if (r < 0)
                return r;
        /* The names say user@UID.service; the directories' owners say any other delegation. */
        id->user_delegated = cg.user_delegated || cgroupfs_delegated(cg.controllers, cg.path);
        id->cgroup = TAKE_PTR(cg.path);
        id->unit = TAKE_PTR(cg.unit);
        id->container = TAKE_PTR(cg.container);
        cgroup_info_done(&cg);

        /* pidfd check after the /proc reads: if the process exited meanwhile, its PID may have
         * been reused and what we read may describe another process. */
        return identity_check_alive(id);
}

bool identity_in_group(const Identity *id, gid_t gid)
{
        if (id->gid == gid)
                return true;
        for (size_t i = 0; i < id->n_groups; i++)
                if (id->groups[i] == gid)
                        return true;
        return false;
}

void identity_done(Identity *id)
{
        free(id->groups);
        free(id->user);
        free(id->group);
        free(id->exe);
        free(id->cgroup);
        free(id->unit);
        free(id->container);
        if (id->pidfd >= 0)
                close(id->pidfd);
        *id = (Identity){.pidfd = -EBADF};
}

int identity_probe_kernel(void)
{
        _cleanup_close_ int a = -EBADF, b = -EBADF;
        int sv[2], pidfd = -EBADF;
        socklen_t len = sizeof(pidfd);

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        a = sv[0];
        b = sv[1];
        if (getsockopt(a, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0)
                return errno == ENOPROTOOPT ? -EPROTONOSUPPORT : -errno;
        close(pidfd);
        /* Not fatal: without a view of the hierarchies every caller counts as delegated. */
        (void) cgroupfs_init();
        return 0;
}

void identity_peer(const Identity *id, GrantlogPeer *ret)
{
        *ret = (GrantlogPeer){
            .identified = true,
            .uid = id->uid,
            .gid = id->gid,
            .pid = id->pid,
            .groups = id->groups,
            .n_groups = id->n_groups,
            .user = id->user,
            .group = id->group,
            .exe = id->exe,
            .cgroup = id->cgroup,
            .unit = id->unit,
            .container = id->container,
            .user_delegated = id->user_delegated,
        };
}
