#include "daemon/privileges.h"

#include <grp.h>
#include <sys/capability.h>
#include <sys/prctl.h>

#include "log.h"
#include "macro.h"
#include "messageid.h"
#include "transport/listener.h"

static void cap_freep(cap_t *c)
{
        if (*c)
                cap_free(*c);
}

/* Threads made before the drop would keep root's capabilities (they are per thread). */
static int count_threads(void)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        int n;

        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "Threads: %d", &n) == 1)
                        return n;
        return -EIO;
}

static int drop_bounding_set(cap_t keep)
{
        for (int v = 0; v < (int) cap_max_bits(); v++) {
                cap_flag_value_t kept = CAP_CLEAR;

                if (cap_get_flag(keep, (cap_value_t) v, CAP_PERMITTED, &kept) < 0)
                        return -errno;
                if (kept == CAP_SET)
                        continue;
                if (cap_drop_bound((cap_value_t) v) < 0 && errno != EINVAL)
                        return -errno;
        }
        return 0;
}

/* A uid change leaves the process as dumpable as fs.suid_dumpable says: say it again. */
static int set_dumpable(void)
{
#ifdef BROKERD_SANITIZER_BUILD
        int dumpable = 1; /* LeakSanitizer ptraces the process at exit */
#else
        int dumpable = 0;
#endif
        return prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0) < 0 ? -errno : 0;
}

int privileges_drop(const Config *c)
{
        _cleanup_(cap_freep) cap_t keep = NULL;
        uid_t uid = c->user_uid;
        gid_t gid = c->user_gid;
        int r;

        if (!c->user)
                return 0;
        if (getuid() == uid && geteuid() == uid)
                return 0; /* systemd's User= did it */
        if (geteuid() != 0)
                return log_error_errno(EPERM,
                                       "user: brokerd runs as uid %u, not root: it cannot become "
                                       "\"%s\" (start it as root, or as that user)",
                                       (unsigned) geteuid(), c->user);
        r = count_threads();
        if (r != 1)
                return log_error_errno(r < 0 ? r : EBUSY,
                                       "Cannot drop privileges with %d threads running", r);
        /* The user binds the sockets: it must own their directories (made now, while root may). */
        r = listener_make_dir(c->workload_socket, "workload", true);
        if (r >= 0)
                r = listener_make_dir(c->admin_socket, "admin", false);
        if (r < 0)
                return r;

        keep = cap_from_text(PRIVILEGES_KEPT "=pe");
        if (!keep)
                return log_error_errno(errno, "Cannot parse the capabilities to keep: %m");
        /* Root's capabilities outlive setuid() only with keep-caps; the effective set empties
         * anyway and is set again from the permitted one below. */
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
                return log_error_errno(errno, "PR_SET_KEEPCAPS: %m");
        /* Needs CAP_SETPCAP: while still root. */
        r = drop_bounding_set(keep);
        if (r < 0)
                return log_error_errno(r, "Cannot clear the capability bounding set: %m");
        if (setgroups(1, &gid) < 0)
                return log_error_errno(errno, "setgroups(%u): %m", (unsigned) gid);
        if (setresgid(gid, gid, gid) < 0)
                return log_error_errno(errno, "setresgid(%u): %m", (unsigned) gid);
        if (setresuid(uid, uid, uid) < 0)
                return log_error_errno(errno, "setresuid(%u): %m", (unsigned) uid);
        if (cap_set_proc(keep) < 0)
                return log_error_errno(errno, "Cannot keep " PRIVILEGES_KEPT ": %m");
        if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0 || cap_reset_ambient() < 0)
                return log_error_errno(errno,
                                       "Cannot clear keep-caps and ambient capabilities: %m");
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return log_error_errno(errno, "PR_SET_NO_NEW_PRIVS: %m");
        r = set_dumpable();
        if (r < 0)
                return log_error_errno(r, "PR_SET_DUMPABLE: %m");
        /* Root must be out of reach for good. */
        if (setuid(0) == 0 || setgid(0) == 0)
                return log_error_errno(EPERM, "Could become root again after dropping privileges");

        log_struct(LOG_INFO, 0, &(LogFields){.message_id = MESSAGE_ID_PRIVILEGES_DROPPED},
                   "Running as user %s (uid %u, gid %u), keeping only " PRIVILEGES_KEPT, c->user,
                   (unsigned) uid, (unsigned) gid);
        return 0;
}
