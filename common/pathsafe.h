/* Path safety checks in the manner of MUNGE: a file holding a secret or a socket must not be
 * replaceable by anyone but root or the daemon's own user. Every failure fills `err` with a
 * sentence naming the path, the mode (or owner) found and the mode (or owner) wanted. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Every directory from "/" down to and including `dir` (after resolving symlinks with
 * realpath, so /var/run -> /run is fine): owned by root or the effective uid, not writable by
 * group or others unless the sticky bit is set. With `world_search`, each must also be
 * searchable by others (o+x), as callers of a world-reachable socket must pass through them.
 * Returns 0, -EPERM (unsafe, err filled) or another -errno (err filled). */
int path_check_dir_chain(const char *dir, bool world_search, char *err, size_t errlen);

/* A file holding a secret: not a symlink, a regular file, owned by the effective uid, no
 * group or other access (mode & 077 == 0), and its directory chain safe as above.
 * Returns 0, -ENOENT (missing, err filled), -EPERM (unsafe, err filled) or another -errno. */
int path_check_private_file(const char *path, char *err, size_t errlen);

/* Creates missing directories of `dir` (like mkdir -p) with `mode`, then requires the final
 * directory to be owned by the effective uid, and, when `private_dir`, to give group and
 * others no access at all. The chain is then checked with path_check_dir_chain(). */
int path_make_dir(const char *dir, mode_t mode, bool private_dir, bool world_search, char *err,
                  size_t errlen);
