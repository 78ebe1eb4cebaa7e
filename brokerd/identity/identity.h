/* Who is on the other end of a socket, as the kernel says: SO_PEERCRED, SO_PEERGROUPS,
 * SO_PEERPIDFD, /proc/PID/exe and /proc/PID/cgroup. Never anything the caller says. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "grantlog/record.h"

typedef struct Identity {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        gid_t *groups; /* supplementary groups (SO_PEERGROUPS) */
        size_t n_groups;
        char *user;          /* passwd name of uid, NULL if none */
        char *group;         /* group name of gid, NULL if none */
        char *exe;           /* /proc/PID/exe target, NULL if unreadable: a path in the
                              * caller's mount namespace, for records and globs only */
        bool has_exe_file;   /* exe_dev and exe_ino are known (read with exe, from one open) */
        dev_t exe_dev;       /* the file the process runs, as the kernel has it: what an */
        ino_t exe_ino;       /* `exe` selector compares */
        char *cgroup;        /* path of the deciding /proc/PID/cgroup line */
        char *unit;          /* systemd unit or NULL */
        bool user_delegated; /* cgroup lies below a directory someone other than root may
                              * write (a user's own systemd, a Delegate= unit): unit and
                              * container names there are that someone's choice */
        char *container;     /* "RUNTIME:ID" or NULL */
        int pidfd;           /* pins the connecting process (SO_PEERPIDFD) */
} Identity;

/* The kernel's word on the peer of a connected AF_UNIX socket, read at accept on the event
 * loop: SO_PEERCRED, SO_PEERPIDFD (pins the process), SO_PEERGROUPS. Errors:
 *   -EREMOTE the peer pid is 0: it lives in a PID namespace the daemon cannot see
 *   -EPROTONOSUPPORT the kernel has no SO_PEERPIDFD (Linux < 6.5)
 *   other -errno from the syscalls. */
int identity_from_socket(int fd, Identity *ret);

/* The rest, from /proc and the user database, on a worker thread: user and group names, exe
 * (its path and the device and inode of the file), cgroup (unit, container, and whether its
 * directories are delegated, stat'ed where the daemon sees the hierarchy). The /proc reads are
 * confirmed through the pidfd afterwards: if the process has exited in between, its PID may
 * have been reused and what was read may describe another process, so this fails with -ESRCH. */
int identity_read_process(Identity *id);

/* 0 while the process that connected is alive; -ESRCH once it has exited. */
int identity_check_alive(const Identity *id);

bool identity_in_group(const Identity *id, gid_t gid);

/* The identity as the grant log records it (and whoami shows it): borrowed strings. */
void identity_peer(const Identity *id, GrantlogPeer *ret);

void identity_done(Identity *id);

/* Checks at start-up that this kernel offers SO_PEERPIDFD, and finds where the daemon sees
 * the cgroup hierarchies (cgroupfs_init(), which logs what it lacks). 0 or -EPROTONOSUPPORT. */
int identity_probe_kernel(void);
