/* Running as the configured `user` when started as root outside systemd (under systemd, User=
 * does this and `user`, if set, names that same user: nothing is left to do here).
 *
 * What needs root happens before: the configuration is read; the state, audit and publish
 * directories are made (given to the user) or must be the user's already; the master key is
 * read (root's or the user's). privileges_drop() then makes the socket directories (the user's,
 * so that it can bind its sockets and remove them at exit) and becomes the user for good:
 * setgroups (the primary group only), setgid, setuid; of the capabilities only
 * PRIVILEGES_KEPT stay, permitted and effective, and the bounding set holds nothing else;
 * no_new_privs. Everything made after it (keys.db, the grant log, rotated keys, published
 * files, sockets and their locks) is the user's.
 *
 * Capabilities are per thread: this runs before the daemon starts any. */
#pragma once

#include "policy/config.h"

/* CAP_SYS_PTRACE: /proc/PID/exe of callers of other uids (the kernel's ptrace access check).
 * CAP_DAC_READ_SEARCH: an `exe` rule's path is looked at as the daemon sees it, also below
 * directories only their owners may search; the configuration is read again on reload. */
#define PRIVILEGES_KEPT "cap_sys_ptrace,cap_dac_read_search"

/* 0: done, or nothing to do (no `user`, or already that user). -errno, logged: the daemon
 * must not start. */
int privileges_drop(const Config *c);
