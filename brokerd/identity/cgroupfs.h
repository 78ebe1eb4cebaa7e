/* Who may name the cgroups a caller's path runs through. A cgroup directory that someone other
 * than root may write (systemd's Delegate= chowns a unit's cgroup to its User=, and a user's
 * own systemd, user@UID.service, is one such unit) lets that someone create cgroups below it
 * with any name, "docker-<any id>.scope" included: a caller below it is user_delegated.
 *
 * The names come from /proc/PID/cgroup (never from mountinfo); the daemon's own
 * /proc/self/mountinfo only says where the daemon sees each hierarchy, and the directories are
 * stat'ed there, as the daemon sees them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct CgroupMount {
        char *path;        /* mount point, unescaped */
        char *controllers; /* NULL for cgroup2; v1: the super options ("rw,cpu,cpuacct") */
} CgroupMount;

typedef struct CgroupMounts {
        CgroupMount *mounts; /* in mountinfo order; only mounts of a hierarchy's root ("/") */
        size_t n;
} CgroupMounts;

/* Parses the text of /proc/self/mountinfo: the cgroup2 and cgroup (v1) mounts of a hierarchy's
 * root. A mount of a cgroup below the root (a container's view without a cgroup namespace)
 * shows only part of the tree and is left out. Returns 0, -ENOMEM. */
int cgroupfs_mounts_parse(const char *mountinfo, CgroupMounts *ret);
void cgroupfs_mounts_done(CgroupMounts *m);

/* The first mount of the hierarchy a /proc/PID/cgroup line names: `controllers` NULL for the
 * cgroup2 line, else the v1 line's controllers field (its first controller must be among the
 * mount's super options). NULL when there is none. */
const CgroupMount *cgroupfs_mounts_find(const CgroupMounts *m, const char *controllers);

/* Whether the cgroup at `path` (absolute within the hierarchy whose root directory is open as
 * root_fd) lies below a directory that someone other than `owner` may create entries in: one
 * owned by another uid, or writable by group or others. Every directory from the root down to
 * the cgroup's parent is looked at; the cgroup's own directory is not (its name was chosen by
 * whoever could write its parent). Returns 0 with *ret set; -EXDEV for a path with "." or ".."
 * components (a cgroup outside the daemon's cgroup namespace), -EINVAL for a relative path,
 * other -errno when a directory cannot be opened (ret untouched). */
int cgroupfs_path_delegated(int root_fd, const char *path, uid_t owner, bool *ret);

/* Finds, once, where the daemon sees the cgroup hierarchies (/proc/self/mountinfo) and opens
 * them; logs a warning for a host where it sees none. Called at start; later calls return the
 * first result. 0, or -errno when none was found (callers then count as delegated). */
int cgroupfs_init(void);

/* Whether a caller in `path` of the hierarchy `controllers` (as in CgroupInfo) is below a
 * directory someone other than root may write. Fails closed: a path that cannot be checked
 * (no such hierarchy mounted where the daemon sees it, "..", a directory gone) counts as
 * delegated. */
bool cgroupfs_delegated(const char *controllers, const char *path);
