/* Path safety checks in the manner of MUNGE: a file holding a secret, a configuration or a socket
 * must not be replaceable by anyone but root or the daemon's own user. Every failure fills `err`
 * with a sentence naming the path, the mode (or owner) found and the mode (or owner) wanted.
 *
 * Paths are walked from "/" one name at a time with openat(O_NOFOLLOW): every directory passed
 * through is checked before a name is looked up in it, and a symlink is followed only when it
 * belongs to root or the effective uid (one that another user could have planted, in /tmp say,
 * is refused, not followed). Relative paths start at the working directory's canonical path,
 * whose chain is checked too. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef enum PathDirFlags {
        /* Every directory of the chain searchable by others (o+x): callers of a world-reachable
         * socket pass through them. */
        PATH_WORLD_SEARCH = 1 << 0,
        /* The last directory is writable by no one but its owner, sticky bit or not: brokerd
         * creates or reads names there that must be its own (state, grant log, sockets,
         * published files, the configuration's directory). Its ancestors keep the usual rule. */
        PATH_STRICT = 1 << 1,
        /* The last directory gives group and others no access at all. */
        PATH_PRIVATE = 1 << 2,
        /* Missing directories are created with exactly `mode` (mkdir -p); the last one must then
         * be owned by the effective uid, not just by root. */
        PATH_CREATE = 1 << 3,
        /* With PATH_CREATE: create nothing. A missing directory is checked as it would be made
         * (owned by the effective uid, exactly `mode`), and so is its parent's file system
         * (read-only: -EROFS); the walk then returns 1 and no descriptor. What `brokerd
         * --check` and a start's checks before it creates anything use. */
        PATH_DRY_RUN = 1 << 4,
} PathDirFlags;

/* The user the daemon runs as, when that is not who it is yet (root, before it drops to the
 * configured `user`): from now on "the daemon's uid" in every check below is `uid`, not the
 * effective uid, and directories the walk creates are given to uid:gid. Unset, the effective
 * uid is the daemon's. Process-wide; call before any check, from one thread. */
void path_set_daemon_user(uid_t uid, gid_t gid);

/* Walks to `dir` as above. Every directory on the way: owned by root or the effective uid, not
 * writable by group or others unless the sticky bit is set; the last one also as `flags` ask.
 * On success, with `ret_fd`, returns an O_PATH descriptor of that directory, for openat() and
 * friends. Returns 0, 1 (PATH_DRY_RUN only: a directory is missing and would be made; *ret_fd
 * is then -EBADF), -EPERM (unsafe, err filled), or another -errno (err filled). */
int path_open_dir(const char *dir, PathDirFlags flags, mode_t mode, int *ret_fd, char *err,
                  size_t errlen);

/* path_open_dir() without the descriptor; sticky directories are fine all the way down. */
int path_check_dir_chain(const char *dir, bool world_search, char *err, size_t errlen);

/* A file holding a secret: not a symlink, a regular file, owned by the effective uid, no
 * group or other access (mode & 077 == 0), and its directory chain safe as above.
 * Returns 0, -ENOENT (missing, err filled), -EPERM (unsafe, err filled) or another -errno. */
int path_check_private_file(const char *path, char *err, size_t errlen);

/* A file that decides what the daemon does but holds no secret (the configuration): not a
 * symlink, a regular file, owned by root or the effective uid, not writable by group or
 * others (readable is fine); its own directory as PATH_STRICT asks (no sticky exception), its
 * ancestors as usual. Opens it read-only into `ret_fd` (checked again on the descriptor).
 * Returns 0, -ENOENT (missing, err filled), -EPERM (unsafe, err filled) or another -errno. */
int path_open_protected_file(const char *path, int *ret_fd, char *err, size_t errlen);

/* Creates missing directories of `dir` (like mkdir -p) with `mode`, then requires the final
 * directory to be owned by the effective uid and writable by no one else (PATH_STRICT), and,
 * when `private_dir`, to give group and others no access at all. */
int path_make_dir(const char *dir, mode_t mode, bool private_dir, bool world_search, char *err,
                  size_t errlen);

/* A file the daemon keeps in a directory of its own (a lock, the grant log, a published file),
 * `name` in the directory `dir_fd` (named `dir` in messages): a regular file owned by the
 * effective uid and not writable by group or others.
 * path_check_own_file() looks without opening: returns 1 (there and fine), 0 (missing),
 * -EPERM (err filled) or another -errno (err filled).
 * path_open_own_file() opens it with `open_flags` (O_CREAT with `mode` allowed; O_NOFOLLOW
 * always) and checks the descriptor: returns 0, -EPERM or another -errno (err filled). */
int path_check_own_file(int dir_fd, const char *dir, const char *name, char *err, size_t errlen);
int path_open_own_file(int dir_fd, const char *dir, const char *name, int open_flags, mode_t mode,
                       int *ret_fd, char *err, size_t errlen);

/* `path` made absolute: a relative one is joined to the working directory, and "." names and
 * repeated slashes are dropped (".." and symlinks are kept: the path still names what it named).
 * *ret malloc'd. 0, -ENOMEM or getcwd()'s -errno. */
int path_make_absolute(const char *path, char **ret);

/* Splits `path` into its directory (heap: ".", "/" or the part before the last slash) and its
 * last name (inside `path`, empty for "dir/"). Checks nothing. 0 or -ENOMEM. */
int path_split(const char *path, char **ret_dir, const char **ret_name);
