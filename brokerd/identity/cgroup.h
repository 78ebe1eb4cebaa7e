/* What a process's /proc/PID/cgroup says about it: its cgroup path, its systemd unit and the
 * container it runs in. Pure string parsing, so every runtime's format is unit-tested. */
#pragma once

#include <stdbool.h>

typedef struct CgroupInfo {
        char *path;          /* the deciding line's path, e.g. "/system.slice/nginx.service" */
        char *unit;          /* systemd unit or NULL */
        bool user_delegated; /* the path lies below a user's own systemd (user@UID.service):
                              * unit and container names there were chosen by that user */
        char *container;     /* "RUNTIME:ID" or NULL; RUNTIME is "unknown" when the path has an id
                              * but does not name its runtime */
        char *controllers;   /* the hierarchy the path is in: NULL for the cgroup2 line, else the
                              * v1 line's controllers ("name=systemd", "cpu,cpuacct") */
} CgroupInfo;

/* Parses the whole text of /proc/PID/cgroup. The cgroup2 line ("0::") decides when present;
 * otherwise the "name=systemd" v1 line; otherwise the first v1 line. The unit is derived only
 * from the cgroup2 or name=systemd line (other v1 hierarchies do not mirror units reliably).
 * user_delegated says only what the path's names show (a user manager); who owns the
 * directories is cgroupfs.c's to find out. Returns 0, -EBADMSG for text with no usable line,
 * -ENOMEM. */
int cgroup_info_parse(const char *text, CgroupInfo *ret);
void cgroup_info_done(CgroupInfo *c);

/* The unit of a cgroup path: the first component below the slices that names a unit
 * (".service" or ".scope"); below a user manager ("user@UID.service"), the user's own unit
 * if there is one. NULL in *ret when there is none. *ret_user_delegated (may be NULL) says
 * whether the path continues below a user manager. */
int cgroup_path_get_unit(const char *path, char **ret, bool *ret_user_delegated);

/* The innermost container in a cgroup path as "RUNTIME:ID" (ID: 64 lowercase hex digits).
 * NULL in *ret when there is none. Runtimes: docker, podman, containerd, cri-o, unknown. */
int cgroup_path_get_container(const char *path, char **ret);
