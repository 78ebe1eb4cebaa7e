/* Listening sockets: created by the daemon (safe directory, stale socket removed, one daemon
 * per socket through a lock file) or passed by systemd socket activation. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

typedef struct Listener {
        char *path;
        int fd;
        int lock_fd;  /* flock()ed PATH.lock; -EBADF for activated sockets */
        bool created; /* we bound it, so we unlink it on exit */
        bool admin;
        sd_event_source *source;
} Listener;

/* Takes the socket systemd passed under `name` (FileDescriptorName=) or creates one at `path`:
 * the directory is created if missing (0755) and checked (every ancestor owned by root or us,
 * not writable by others; for the workload socket, searchable by all), a lock next to the
 * socket keeps a second daemon out, and a stale socket from a crash is removed. The socket is
 * chmod'ed to `mode`. */
int listener_open(Listener *l, const char *path, const char *name, mode_t mode, bool admin,
                  bool world_search);
void listener_close(Listener *l);

/* What listener_open() would refuse, found without creating or changing anything: a path too
 * long for a socket, an unsafe directory chain, a lock file that is not ours, something other
 * than a socket at `path`, and with `probe_lock` a lock another brokerd holds. A socket systemd
 * passed under `name` is not checked. 0, or -errno with err filled (the path, what was found,
 * what is wanted); logs nothing. */
int listener_check(const char *path, const char *name, bool world_search, bool probe_lock,
                   char *err, size_t errlen);

/* Makes the directory listener_open() would make for `path` (unless systemd passed the socket
 * `name`), and checks it as listener_open() does: for a daemon that makes its directories while
 * it is root and binds its sockets once it runs as its user. Logs what it refuses. */
int listener_make_dir(const char *path, const char *name, bool world_search);

/* Collects the sockets systemd passed (LISTEN_FDS), by name. Call once before listener_open(). */
int listener_collect_activation(void);
