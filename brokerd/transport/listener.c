#include "transport/listener.h"

#include <fcntl.h>
#include <libgen.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "macro.h"
#include "pathsafe.h"

/* Sockets passed by systemd, by FileDescriptorName=; taken out as listeners claim them. */
static char **activation_names;
static int activation_first_fd;
static int activation_n;

int listener_collect_activation(void)
{
        int n = sd_listen_fds_with_names(true, &activation_names);

        if (n < 0)
                return log_error_errno(n, "Cannot read sockets passed by systemd: %m");
        activation_n = n;
        activation_first_fd = SD_LISTEN_FDS_START;
        return n;
}

static int take_activated(const char *name)
{
        for (int i = 0; i < activation_n; i++) {
                if (!activation_names || !activation_names[i] ||
                    strcmp(activation_names[i], name) != 0)
                        continue;
                int fd = activation_first_fd + i;
                free(activation_names[i]);
                activation_names[i] = NULL;
                return fd;
        }
        return -ENOENT;
}

static bool activated(const char *name)
{
        for (int i = 0; i < activation_n; i++)
                if (activation_names && activation_names[i] &&
                    strcmp(activation_names[i], name) == 0)
                        return true;
        return false;
}

/* The socket's directory: ours alone, sticky or not (in a directory others can write, another
 * user's lock file, held, or socket would be there first). */
static PathDirFlags dir_flags(bool world_search)
{
        return PATH_CREATE | PATH_STRICT | (world_search ? PATH_WORLD_SEARCH : 0);
}

int listener_make_dir(const char *path, const char *name, bool world_search)
{
        _cleanup_free_ char *dir = NULL;
        const char *base;
        char err[512];
        int r;

        if (activated(name))
                return 0;
        if (path_split(path, &dir, &base) < 0)
                return log_oom();
        r = path_open_dir(dir, dir_flags(world_search), 0755, NULL, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "Refusing socket %s: %s", path, err);
        return 0;
}

int listener_check(const char *path, const char *name, bool world_search, bool probe_lock,
                   char *err, size_t errlen)
{
        struct sockaddr_un sa;
        _cleanup_free_ char *dir = NULL, *lock_name = NULL;
        _cleanup_close_ int dir_fd = -EBADF, lock_fd = -EBADF;
        const char *base;
        struct stat st;
        int r;

        if (activated(name))
                return 0;
        if (strlen(path) >= sizeof(sa.sun_path)) {
                snprintf(err, errlen, "%s: socket path too long (%zu bytes, at most %zu)", path,
                         strlen(path), sizeof(sa.sun_path) - 1);
                return -ENAMETOOLONG;
        }
        if (path_split(path, &dir, &base) < 0 || asprintf(&lock_name, "%s.lock", base) < 0) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        r = path_open_dir(dir, dir_flags(world_search) | PATH_DRY_RUN, 0755, &dir_fd, err, errlen);
        if (r != 0)
                return r < 0 ? r : 0; /* 1: the directory would be made, empty */
        r = path_check_own_file(dir_fd, dir, lock_name, err, errlen);
        if (r < 0)
                return r;
        if (r > 0 && probe_lock) {
                r = path_open_own_file(dir_fd, dir, lock_name, O_RDWR, 0, &lock_fd, err, errlen);
                if (r < 0)
                        return r;
                if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK) {
                        snprintf(err, errlen,
                                 "another brokerd is already serving %s (lock %s.lock is held); "
                                 "stop it first",
                                 path, path);
                        return -EADDRINUSE;
                }
        }
        if (fstatat(dir_fd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISSOCK(st.st_mode)) {
                snprintf(err, errlen, "%s exists and is not a socket; refusing to replace it",
                         path);
                return -EEXIST;
        }
        return 0;
}

static int create_socket(Listener *l, mode_t mode, bool world_search)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        _cleanup_free_ char *dir_copy = strdup(l->path), *name_copy = strdup(l->path);
        _cleanup_free_ char *lock_name = NULL, *lock_path = NULL;
        _cleanup_close_ int fd = -EBADF, lock_fd = -EBADF, dir_fd = -EBADF;
        const char *dir, *name;
        char err[512];
        struct stat st;
        int r;

        if (!dir_copy || !name_copy)
                return -ENOMEM;
        if (strlen(l->path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "%s: socket path too long", l->path);
        dir = dirname(dir_copy);
        name = basename(name_copy);

        r = path_open_dir(dir, dir_flags(world_search), 0755, &dir_fd, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "Refusing socket %s: %s", l->path, err);

        /* One daemon per socket: a second one would unlink the first one's live socket. */
        if (asprintf(&lock_name, "%s.lock", name) < 0 ||
            asprintf(&lock_path, "%s.lock", l->path) < 0)
                return -ENOMEM;
        r = path_open_own_file(dir_fd, dir, lock_name, O_RDWR | O_CREAT, 0600, &lock_fd, err,
                               sizeof(err));
        if (r < 0)
                return log_error_errno(r, "Refusing lock for socket %s: %s", l->path, err);
        if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno == EWOULDBLOCK)
                        return log_error_errno(EADDRINUSE,
                                               "Another brokerd is already serving %s (lock %s "
                                               "is held); stop it first",
                                               l->path, lock_path);
                return log_error_errno(errno, "Cannot lock %s: %m", lock_path);
        }

        /* We hold the lock, so a socket still there is left over from a crash. */
        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return log_error_errno(EEXIST,
                                               "%s exists and is not a socket; refusing to "
                                               "replace it",
                                               l->path);
                if (unlinkat(dir_fd, name, 0) < 0)
                        return log_error_errno(errno, "Cannot remove stale socket %s: %m", l->path);
                log_info("Removed stale socket %s", l->path);
        } else if (errno != ENOENT)
                return log_error_errno(errno, "Cannot stat %s: %m", l->path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(errno, "socket(): %m");
        strcpy(sa.sun_path, l->path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return log_error_errno(errno, "Cannot bind %s: %m", l->path);
        l->created = true;
        /* bind() honoured our umask (077); now open it up exactly as far as intended. */
        if (chmod(l->path, mode) < 0)
                return log_error_errno(errno, "Cannot chmod %s: %m", l->path);
        if (listen(fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "Cannot listen on %s: %m", l->path);

        l->fd = TAKE_FD(fd);
        l->lock_fd = TAKE_FD(lock_fd);
        return 0;
}

int listener_open(Listener *l, const char *path, const char *name, mode_t mode, bool admin,
                  bool world_search)
{
        int fd, r;

        *l = (Listener){.fd = -EBADF, .lock_fd = -EBADF, .admin = admin};
        l->path = strdup(path);
        if (!l->path)
                return -ENOMEM;

        fd = take_activated(name);
        if (fd >= 0) {
                r = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0);
                if (r <= 0)
                        return log_error_errno(r < 0 ? r : EINVAL,
                                               "Socket passed as \"%s\" is not a listening "
                                               "AF_UNIX stream socket",
                                               name);
                r = fcntl(fd, F_GETFL);
                if (r < 0 || fcntl(fd, F_SETFL, r | O_NONBLOCK) < 0 ||
                    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                        return log_error_errno(errno, "fcntl(): %m");
                l->fd = fd;
                log_info("Using socket \"%s\" passed by systemd", name);
                return 0;
        }

        r = create_socket(l, mode, world_search);
        if (r < 0) {
                if (l->created)
                        (void) unlink(l->path);
                l->created = false;
                return r;
        }
        return 0;
}

void listener_close(Listener *l)
{
        l->source = sd_event_source_disable_unref(l->source);
        if (l->created)
                (void) unlink(l->path);
        if (l->fd >= 0)
                close(l->fd);
        if (l->lock_fd >= 0)
                close(l->lock_fd);
        free(l->path);
        *l = (Listener){.fd = -EBADF, .lock_fd = -EBADF};
}
