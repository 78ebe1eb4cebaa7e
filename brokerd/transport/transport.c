/* The transport: listeners, accept and admission (contract in transport.h). */
#include "transport/transport.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "messageid.h"
#include "transport/admission.h"
#include "transport/conn-private.h"
#include "runtime/ratelimit.h"
#include "timeutil.h"
#include "transport/listener.h"

/* Each accept failure can repeat for every connection attempt: logged once per interval. */
static LogRatelimit out_of_fds_logged = LOG_RATELIMIT_INIT(LOG_RATELIMIT_INTERVAL);
static LogRatelimit accept_logged = LOG_RATELIMIT_INIT(LOG_RATELIMIT_INTERVAL);
static LogRatelimit setup_failed_logged = LOG_RATELIMIT_INIT(LOG_RATELIMIT_INTERVAL);

#define ADMIN_CONNECTIONS_MAX 16
/* Enough that a backlog filled by one uid's connect/close churn drains quickly (each is refused
 * at a few syscalls' cost), few enough that the connections still get their turn. */
#define ACCEPTS_PER_WAKEUP 256
#define LISTENERS_MAX      2
/* File descriptors beyond the connection limit: listeners, databases, pidfds, the reserve. */
#define FD_HEADROOM 64u

typedef struct Served {
        Transport *t;
        Listener l;
        request_handler_t handler;
        void *userdata;
} Served;

struct Transport {
        TransportShared sh;
        Served listeners[LISTENERS_MAX];
        size_t n_listeners;
        UidCounter uids;
        KeyCounter identities;
        RateLimiter *connects; /* new workload connections per uid */
        int reserve_fd;        /* closed to accept-and-refuse when out of file descriptors */
        uint64_t refused;
        bool stopping;
};

/* Each connection holds a socket and a pidfd. */
static void raise_fd_limit(uint64_t max_connections)
{
        struct rlimit rl;
        rlim_t want = (rlim_t) (max_connections * 2 + FD_HEADROOM);

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
                return;
        rl.rlim_cur = MIN(want, rl.rlim_max);
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
                log_warning("File descriptor limit %llu is below the %llu that %llu connections "
                            "need; connections beyond it are refused",
                            (unsigned long long) rl.rlim_cur, (unsigned long long) want,
                            (unsigned long long) max_connections);
}

/* The identity a connection counts against: uid, unit and container; below a delegated cgroup
 * (whose names its owner chooses) or unidentified, the uid alone. */
static int identity_key(const Caller *c, char **ret)
{
        bool named = c->error == 0 && !c->id.user_delegated;

        return asprintf(ret, "%u\n%s\n%s", (unsigned) c->cred.uid,
                        named && c->id.unit ? c->id.unit : "",
                        named && c->id.container ? c->id.container : "") < 0
                   ? -ENOMEM
                   : 0;
}

static void on_conn_close(Transport *t, Conn *c)
{
        _cleanup_free_ char *key = NULL;

        if (conn_is_admin(c))
                return;
        uid_counter_remove(&t->uids, conn_caller(c)->cred.uid);
        if (conn_identity_counted(c) && identity_key(conn_caller(c), &key) >= 0)
                key_counter_remove(&t->identities, key);
}

static const char *on_identified(Transport *t, Conn *c, BrokerErrorCode *ret_code)
{
        _cleanup_free_ char *key = NULL;
        int r = identity_key(conn_caller(c), &key);

        if (r >= 0)
                r = key_counter_add(&t->identities, key, t->sh.limits.max_connections_per_identity);
        if (r == -EUSERS) {
                t->refused++;
                *ret_code = BROKER_ERR_RATE_LIMITED;
                return "too many connections from this workload (its uid, unit and container); "
                       "close some and retry";
        }
        if (r < 0) {
                *ret_code = BROKER_ERR_INTERNAL;
                return "out of memory";
        }
        conn_set_identity_counted(c);
        return NULL;
}

int transport_new(sd_event *event, Workers *workers, Mailbox *mailbox,
                  const TransportLimits *limits, Transport **ret)
{
        Transport *t = calloc(1, sizeof(Transport));
        int r;

        if (!t)
                return -ENOMEM;
        t->sh = (TransportShared){.event = sd_event_ref(event),
                                  .workers = workers,
                                  .mailbox = mailbox,
                                  .limits = *limits,
                                  .on_close = on_conn_close,
                                  .on_identified = on_identified,
                                  .transport = t};
        raise_fd_limit(limits->max_connections);
        t->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        r = ratelimit_new(&t->connects);
        if (r < 0) {
                transport_free(t);
                return r;
        }
        *ret = t;
        return 0;
}

void transport_free(Transport *t)
{
        if (!t)
                return;
        conn_close_all(&t->sh);
        for (size_t i = 0; i < t->n_listeners; i++)
                listener_close(&t->listeners[i].l);
        uid_counter_done(&t->uids);
        key_counter_done(&t->identities);
        ratelimit_free(t->connects);
        if (t->reserve_fd >= 0)
                close(t->reserve_fd);
        sd_event_unref(t->sh.event);
        free(t);
}

void transport_set_limits(Transport *t, const TransportLimits *limits)
{
        t->sh.limits = *limits;
}

/* Answers a connection we will not serve with one error frame, without blocking. */
static void refuse(int fd, BrokerErrorCode code, const char *message)
{
        _cleanup_(json_decrefp) json_t *m = response_new_error(code, message, NULL);
        char *frame = NULL;
        size_t len;

        if (m && message_encode_frame(m, &frame, &len) >= 0)
                (void) send(fd, frame, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        free(frame);
        /* Closing with unread input would make the kernel reset the peer, which then may not
         * get to read our explanation; discard what it already sent (bounded) first. */
        (void) shutdown(fd, SHUT_WR);
        char sink[4096];
        for (int i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
                ;
        close(fd);
}

/* Accepts one connection when the process is out of file descriptors, only to close it:
 * otherwise the pending connection would wake us forever. */
static void accept_and_drop(Transport *t, int lfd)
{
        if (t->reserve_fd >= 0) {
                close(t->reserve_fd);
                t->reserve_fd = -EBADF;
        }
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
                refuse(fd, BROKER_ERR_UNAVAILABLE, "broker is out of file descriptors");
        t->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        t->refused++;
}

static uint64_t reserved(const TransportLimits *l)
{
        return MAX(l->max_connections / 16, (uint64_t) 1);
}

/* Whether a new connection may stay; if not, why (and with which code). Admin connections
 * have their own small allowance, so workloads filling the broker never lock the operator
 * out. For a workload connection that may stay, its uid's count has been taken. */
static const char *admit(Transport *t, bool admin, const struct ucred *cred,
                         BrokerErrorCode *ret_code)
{
        const TransportLimits *l = &t->sh.limits;

        if (admin) {
                *ret_code = BROKER_ERR_DENIED;
                if (cred->uid != 0 && cred->uid != geteuid())
                        return "the admin socket is for root and the broker's own user";
                *ret_code = BROKER_ERR_UNAVAILABLE;
                if (t->sh.n_admin_conns >= ADMIN_CONNECTIONS_MAX)
                        return "too many admin connections; close some and retry";
                return NULL;
        }
        /* Checked first and cheaply: a uid churning connections (connect, close, again) must
         * not fill the backlog other callers wait in, nor keep the workers identifying. */
        *ret_code = BROKER_ERR_RATE_LIMITED;
        if (!ratelimit_take(t->connects, cred->uid, NULL, l->connect_rate, l->connect_burst,
                            now_mono_usec()))
                return "too many new connections from this uid; slow down and retry";
        *ret_code = BROKER_ERR_UNAVAILABLE;
        /* The last sixteenth is root's: other uids together cannot lock it out. */
        if (t->sh.n_conns >= l->max_connections ||
            (cred->uid != 0 && t->sh.n_conns >= l->max_connections - reserved(l)))
                return "broker has too many connections; retry later";
        int r = uid_counter_add(&t->uids, cred->uid, l->max_connections_per_uid);
        *ret_code = r == -EUSERS ? BROKER_ERR_RATE_LIMITED : BROKER_ERR_INTERNAL;
        if (r == -EUSERS)
                return "too many connections from this uid; close some and retry";
        if (r < 0)
                return "out of memory";
        return NULL;
}

/* The caller as the kernel gives it at accept; the rest is read on a worker. */
static int caller_at_accept(int fd, bool admin, const struct ucred *cred, Caller **ret)
{
        return admin ? caller_from_cred(cred, ret) : caller_from_socket(fd, ret);
}

static int on_listener(sd_event_source *src, int lfd, uint32_t revents, void *userdata)
{
        Served *sv = userdata;
        Transport *t = sv->t;
        bool admin = sv->l.admin;

        for (int i = 0; i < ACCEPTS_PER_WAKEUP && !t->stopping; i++) {
                struct ucred cred;
                socklen_t len = sizeof(cred);
                Caller *caller = NULL;
                BrokerErrorCode code;
                const char *why;
                int fd, r;

                fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EAGAIN)
                                break;
                        if (errno == EMFILE || errno == ENFILE) {
                                log_struct_ratelimited(
                                    &out_of_fds_logged, LOG_WARNING, 0,
                                    &(LogFields){.message_id = MESSAGE_ID_CONNECTION_REFUSED},
                                    "Out of file descriptors; refusing a connection");
                                accept_and_drop(t, lfd);
                                continue;
                        }
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        log_struct_ratelimited(&accept_logged, LOG_WARNING, errno, NULL,
                                               "accept(): %m");
                        break;
                }
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                        close(fd);
                        continue;
                }
                why = admit(t, admin, &cred, &code);
                if (why) {
                        t->refused++;
                        refuse(fd, code, why);
                        continue;
                }
                r = caller_at_accept(fd, admin, &cred, &caller);
                if (r >= 0)
                        r = conn_new(&t->sh, fd, caller, admin, sv->handler, sv->userdata);
                if (r < 0) {
                        if (caller)
                                caller_unref(caller);
                        if (!admin)
                                uid_counter_remove(&t->uids, cred.uid);
                        log_struct_ratelimited(&setup_failed_logged, LOG_WARNING, r,
                                               &(LogFields){.has_peer = true,
                                                            .peer_uid = cred.uid,
                                                            .peer_pid = cred.pid},
                                               "Cannot set up connection: %m");
                        refuse(fd, BROKER_ERR_INTERNAL, "cannot set up connection");
                }
        }
        return 0;
}

int transport_listen(Transport *t, const char *path, const char *name, bool admin,
                     request_handler_t handler, void *userdata)
{
        Served *sv;
        int r;

        if (t->n_listeners >= LISTENERS_MAX)
                return -E2BIG;
        sv = &t->listeners[t->n_listeners];
        *sv = (Served){.t = t, .handler = handler, .userdata = userdata};
        /* The workload socket is for everyone (authorization is identity and policy); callers
         * must be able to reach it, so its directories must be searchable by all. */
        r = listener_open(&sv->l, path, name, admin ? 0600 : 0666, admin, !admin);
        if (r < 0) {
                listener_close(&sv->l);
                return r;
        }
        t->n_listeners++;
        r = sd_event_add_io(t->sh.event, &sv->l.source, sv->l.fd, EPOLLIN, on_listener, sv);
        if (r < 0)
                return log_error_errno(r, "Cannot watch listening socket %s: %m", path);
        return 0;
}

void transport_stop_accepting(Transport *t)
{
        t->stopping = true;
        for (size_t i = 0; i < t->n_listeners; i++)
                t->listeners[i].l.source = sd_event_source_disable_unref(t->listeners[i].l.source);
}

void transport_shutdown(Transport *t)
{
        conn_shutdown_all(&t->sh);
}

void transport_close_all(Transport *t)
{
        conn_close_all(&t->sh);
}

void transport_stats(const Transport *t, TransportStats *ret)
{
        *ret = (TransportStats){.connections = t->sh.n_conns,
                                .admin_connections = t->sh.n_admin_conns,
                                .refused_connections = t->refused};
}
