#include "daemon/preflight.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/statvfs.h>

#include "identity/identity.h"
#include "keys/keystore.h"
#include "keys/seal.h"
#include "log.h"
#include "macro.h"
#include "pathsafe.h"
#include "policy/confparse.h"
#include "transport/listener.h"

#define ERR_MAX 1024

/* The directories brokerd creates names in are its own (no sticky exception): otherwise another
 * user could create the audit database, a lock or a symlink there first. */
typedef struct OwnDir {
        const char *key; /* the configuration key, for messages */
        const char *path;
        mode_t mode;
        PathDirFlags flags;
} OwnDir;

enum { DIR_STATE, DIR_AUDIT, DIR_PUBLISH, _DIR_MAX };

static OwnDir state_dir(const Config *c)
{
        return (OwnDir){"state_directory", c->state_directory, 0700,
                        PATH_CREATE | PATH_STRICT | PATH_PRIVATE};
}

/* The table; `audit_dir` is the audit database's directory (the caller's). Returns how many. */
static size_t own_dirs(const Config *c, const char *audit_dir, OwnDir ret[_DIR_MAX])
{
        ret[DIR_STATE] = state_dir(c);
        ret[DIR_AUDIT] = (OwnDir){"audit.database", audit_dir, 0700, PATH_CREATE | PATH_STRICT};
        /* Readable by the web server that serves it. Checked before any key is made: relying
         * parties trust what lies there. */
        ret[DIR_PUBLISH] =
            (OwnDir){"publish_directory", c->publish_directory, 0755, PATH_CREATE | PATH_STRICT};
        return c->publish_directory ? 3 : 2;
}

/* SQLite opens the database and its companions by name: each that exists must be ours before
 * anything is read from it or written to it. */
static int check_db_files(int dir_fd, const char *dir, const char *name, Problems *p)
{
        static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
        int ret = 0;

        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                _cleanup_free_ char *file = NULL;
                char err[ERR_MAX];
                int r;

                if (asprintf(&file, "%s%s", name, suffixes[i]) < 0)
                        return -ENOMEM;
                r = path_check_own_file(dir_fd, dir, file, err, sizeof(err));
                if (r < 0) {
                        if (!p)
                                return log_error_errno(r, "audit.database: %s", err);
                        conf_problem(p, "audit.database", "%s", err);
                        ret = r;
                }
        }
        return ret;
}

/* What publishing will trip over once the daemon runs (a start does not wait for it): a
 * read-only file system, an unsafe .well-known, published files that are not ours. */
static void check_publish(const char *dir, int dir_fd, Problems *w)
{
        static const char *const files[] = {"jwks.json", "jwks-eddsa.json", "jwks-es256.json",
                                            "jwks-rs256.json"};
        _cleanup_free_ char *wk = NULL;
        _cleanup_close_ int wk_fd = -EBADF;
        struct statvfs sv;
        char err[ERR_MAX];
        int r;

        if (fstatvfs(dir_fd, &sv) >= 0 && (sv.f_flag & ST_RDONLY)) {
                conf_problem(w, "publish_directory",
                             "%s: on a read-only file system: brokerd starts, but cannot publish "
                             "its keys there (under systemd's ProtectSystem=strict, list it in "
                             "ReadWritePaths=)",
                             dir);
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(files); i++)
                if (path_check_own_file(dir_fd, dir, files[i], err, sizeof(err)) < 0)
                        conf_problem(w, "publish_directory", "%s; brokerd will not replace it",
                                     err);
        if (asprintf(&wk, "%s/.well-known", dir) < 0) {
                w->oom = true;
                return;
        }
        r = path_open_dir(wk, PATH_CREATE | PATH_STRICT | PATH_DRY_RUN, 0755, &wk_fd, err,
                          sizeof(err));
        if (r < 0)
                conf_problem(w, "publish_directory", "%s", err);
        else if (r == 0 &&
                 path_check_own_file(wk_fd, wk, "openid-configuration", err, sizeof(err)) < 0)
                conf_problem(w, "publish_directory", "%s; brokerd will not replace it", err);
}

/* The directories of the table, as a start would make them. `p` NULL: make them, log the first
 * problem and stop there; else create nothing and add every problem to `p` (and what publishing
 * would trip over to `w`, when given). */
static int walk_dirs(const Config *c, Problems *p, Problems *w)
{
        _cleanup_free_ char *audit_dir = NULL;
        const char *audit_name;
        OwnDir dirs[_DIR_MAX];
        size_t n;
        int ret = 0;

        if (path_split(c->audit_database, &audit_dir, &audit_name) < 0)
                return -ENOMEM;
        n = own_dirs(c, audit_dir, dirs);
        for (size_t i = 0; i < n; i++) {
                _cleanup_close_ int fd = -EBADF;
                char err[ERR_MAX];
                int r;

                r = path_open_dir(dirs[i].path, dirs[i].flags | (p ? PATH_DRY_RUN : 0),
                                  dirs[i].mode, &fd, err, sizeof(err));
                if (r < 0) {
                        if (!p)
                                return log_error_errno(r, "%s: %s", dirs[i].key, err);
                        conf_problem(p, dirs[i].key, "%s", err);
                        ret = r;
                        continue;
                }
                if (r > 0) /* would be made: nothing in it yet */
                        continue;
                if (i == DIR_AUDIT) {
                        r = check_db_files(fd, dirs[i].path, audit_name, p);
                        if (r < 0 && !p)
                                return r;
                        if (r < 0)
                                ret = r;
                }
                if (i == DIR_PUBLISH && w)
                        check_publish(dirs[i].path, fd, w);
        }
        return ret;
}

int preflight_make_dirs(const Config *c)
{
        return walk_dirs(c, NULL, NULL);
}

/* The master key, and that it is the one the key store was sealed with. */
static void check_master_key(const Config *c, Problems *p)
{
        _cleanup_free_ char *path = NULL;
        MasterKey *m = NULL;
        bool credential = false;
        char err[ERR_MAX];
        int r;

        r = master_key_locate(c->master_key_file, &path, &credential, err, sizeof(err));
        if (r >= 0)
                r = master_key_read(path, &m, err, sizeof(err));
        if (r < 0) {
                conf_problem(p, credential ? "credential master.key" : "master_key_file", "%s",
                             err);
                return;
        }
        /* keys.db is looked at only in a state directory that passes (one that is missing
         * holds none). */
        OwnDir sd = state_dir(c);
        r = path_open_dir(sd.path, sd.flags | PATH_DRY_RUN, sd.mode, NULL, err, sizeof(err));
        if (r == 0)
                r = keystore_check_master(c->state_directory, m, err, sizeof(err));
        else
                r = 0;
        if (r < 0)
                conf_problem(p, credential ? "credential master.key" : "master_key_file", "%s",
                             err);
        master_key_free(m);
}

static void check_sockets(const Config *c, PreflightMode mode, Problems *p)
{
        static const struct {
                const char *key, *name;
                bool world_search; /* the workload socket: callers must reach it */
        } sockets[] = {
            {"listen.workload", "workload", true},
            {"listen.admin", "admin", false},
        };

        for (size_t i = 0; i < ELEMENTSOF(sockets); i++) {
                const char *path = i == 0 ? c->workload_socket : c->admin_socket;
                char err[ERR_MAX];
                int r;

                r = listener_check(path, sockets[i].name, sockets[i].world_search,
                                   mode == PREFLIGHT_START, err, sizeof(err));
                if (r < 0)
                        conf_problem(p, sockets[i].key, "%s", err);
        }
}

int preflight_run(const Config *c, PreflightMode mode, char ***ret_problems, char ***ret_warnings)
{
        Problems p = {}, w = {};
        bool warn = mode == PREFLIGHT_CHECK && ret_warnings;
        int r;

        if (sodium_init() < 0)
                return -ENOMEM;
        if (mode == PREFLIGHT_CHECK) {
                r = identity_probe_kernel();
                if (r == -EPROTONOSUPPORT)
                        conf_problem(&p, "(kernel)",
                                     "no SO_PEERPIDFD: brokerd needs Linux 6.5 or later to "
                                     "identify callers without a PID-reuse race");
                else if (r < 0)
                        conf_problem(&p, "(kernel)", "cannot probe for SO_PEERPIDFD: %s",
                                     strerror(-r));
        }
        r = walk_dirs(c, &p, warn ? &w : NULL);
        if (r == -ENOMEM)
                p.oom = true;
        check_master_key(c, &p);
        check_sockets(c, mode, &p);

        if (p.oom || w.oom) {
                strv_free(p.lines);
                strv_free(w.lines);
                return -ENOMEM;
        }
        if (warn)
                *ret_warnings = w.lines;
        else
                strv_free(w.lines);
        if (p.n > 0) {
                *ret_problems = p.lines;
                return -EINVAL;
        }
        return 0;
}
