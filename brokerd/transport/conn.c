#include "transport/conn.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <time.h>

#include "frame.h"
#include "daemon/handlers.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "timeutil.h"

#define INBUF_INITIAL         4096u
#define ADMIN_CONNECTIONS_MAX 16
#define ACCEPTS_PER_WAKEUP    64 /* fairness between the two listeners and the connections */
#define USEC_PER_SEC          1000000ULL

static void conn_process(Conn *c);

Conn *conn_ref(Conn *c)
{
        c->refs++;
        return c;
}

void conn_unref(Conn *c)
{
        if (--c->refs > 0)
                return;
        identity_done(&c->id);
        json_decref(c->peer);
        free(c->in);
        free(c->out);
        free(c);
}

static void conn_unlink(Conn *c)
{
        Server *s = c->server;

        if (c->prev)
                c->prev->next = c->next;
        else
                s->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        if (c->admin)
                s->n_admin_conns--;
        else {
                s->n_conns--;
                uid_counter_remove(&s->uids, c->cred.uid);
        }
}

void conn_close(Conn *c)
{
        if (c->closed)
                return;
        c->closed = true;
        c->io = sd_event_source_disable_unref(c->io);
        c->timer = sd_event_source_disable_unref(c->timer);
        close(c->fd);
        c->fd = -EBADF;
        conn_unlink(c);
        conn_unref(c); /* the server's reference */
}

void conn_close_all(Server *s)
{
        while (s->conns)
                conn_close(s->conns);
}

void conn_shutdown_all(Server *s)
{
        for (Conn *c = s->conns, *next; c; c = next) {
                next = c->next;
                c->closing = true;
                conn_process(c);
        }
}

static uint64_t usec_from_sec(uint64_t sec)
{
        return sec > UINT64_MAX / USEC_PER_SEC ? UINT64_MAX : sec * USEC_PER_SEC;
}

/* One timer per connection, for whatever the connection is waiting for: the rest of a
 * started frame or its output to drain (read_timeout), the next request (idle_timeout), or
 * nothing while the daemon itself is working on its request. The deadline is kept in the
 * connection and the timer moved only when the deadline gets earlier; a timer that fires
 * before the deadline is re-armed. So an ordinary request costs no timer syscall. */
static void conn_arm_timer(Conn *c)
{
        const Limits *l = &c->server->config->limits;
        uint64_t now = now_mono_usec(), deadline;

        if (c->busy) {
                c->deadline = 0;
                return;
        }
        if (c->out_len > c->out_off)
                deadline = now + usec_from_sec(l->read_timeout);
        else if (c->in_len > 0) {
                /* Fixed when we start waiting for the rest of a frame, not moved by each byte
                 * that arrives: otherwise one byte per read_timeout holds a connection (and its
                 * buffer) open forever. */
                if (c->in_deadline == 0)
                        c->in_deadline = now + usec_from_sec(l->read_timeout);
                deadline = c->in_deadline;
        } else
                deadline = now + usec_from_sec(l->idle_timeout);
        c->deadline = deadline;
        if (c->armed == 0 || deadline < c->armed) {
                (void) sd_event_source_set_time(c->timer, deadline);
                (void) sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
                c->armed = deadline;
        }
}

static void conn_update_events(Conn *c)
{
        uint32_t ev = 0;

        if (c->closed)
                return;
        /* Reading goes on while a request is in flight (its bytes wait in the buffer): switching
         * EPOLLIN off and on around every request would cost two syscalls. Only a full buffer,
         * from a client sending ahead, stops it. */
        if (c->out_len > c->out_off)
                ev = EPOLLOUT;
        else if (!c->closing && !c->read_eof && (!c->in || c->in_len < c->in_cap))
                ev = EPOLLIN;
        (void) sd_event_source_set_io_events(c->io, ev);
        conn_arm_timer(c);
}

/* Writes as much pending output as the socket takes. 0 when all is written, -EAGAIN when some
 * remains, other -errno when the peer is gone. */
static int conn_flush(Conn *c)
{
        while (c->out_off < c->out_len) {
                ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? -EAGAIN : -errno;
                }
                c->out_off += n;
        }
        /* Responses may carry a token: wipe it once it has been handed to the kernel. */
        explicit_bzero(c->out, c->out_len);
        free(c->out);
        c->out = NULL;
        c->out_len = c->out_off = 0;
        return 0;
}

static void conn_queue(Conn *c, json_t *msg)
{
        _cleanup_(json_decrefp) json_t *m = msg;
        char *frame;
        size_t len;
        int r;

        if (c->closed)
                return;
        if (!m) {
                log_oom();
                conn_close(c);
                return;
        }
        r = message_encode_frame(m, &frame, &len);
        /* jansson keeps its own copy of a token string and frees it without wiping; wipe it
         * here, once it has been encoded into the frame (which conn_flush() wipes in turn). */
        json_t *token = json_object_get(m, "token");
        if (json_is_string(token))
                explicit_bzero((char *) json_string_value(token), json_string_length(token));
        if (r < 0) {
                log_error_errno(r, "Cannot encode response: %m");
                conn_close(c);
                return;
        }
        /* One request at a time means at most one response is ever pending. */
        free(c->out);
        c->out = frame;
        c->out_len = len;
        c->out_off = 0;
        r = conn_flush(c);
        if (r < 0 && r != -EAGAIN)
                conn_close(c);
}

void conn_reply(Conn *c, json_t *msg)
{
        conn_queue(c, msg);
}

void conn_begin_async(Conn *c)
{
        c->busy = true;
        conn_ref(c);
}

void conn_reply_async(Conn *c, json_t *msg)
{
        c->busy = false;
        conn_queue(c, msg);
        if (!c->closed)
                conn_process(c);
        conn_unref(c);
}

static void reply_frame_error(Conn *c, const char *message)
{
        conn_queue(c, response_new_error(BROKER_ERR_BAD_REQUEST, message, NULL));
        c->closing = true;
}

static void conn_handle_frame(Conn *c, const uint8_t *body, uint32_t len)
{
        _cleanup_(json_decrefp) json_t *id = NULL;
        Request req;
        char err[256];
        int r;

        r = request_parse(body, len, c->admin ? OPSET_ADMIN : OPSET_WORKLOAD, &req, &id, err,
                          sizeof(err));
        if (r < 0) {
                /* The frame itself was well formed, so the stream is still in step: answer and
                 * keep the connection. */
                conn_queue(c, response_new_error(BROKER_ERR_BAD_REQUEST, err, id));
                return;
        }
        if (c->admin)
                admin_handle(c, &req);
        else
                workload_handle(c, &req);
        request_done(&req);
}

/* Handles buffered frames until one goes asynchronous, output backs up, or more input is
 * needed; then decides what to wait for. */
static void conn_process(Conn *c)
{
        if (c->closed)
                return;
        while (!c->busy && !c->closing && c->out_len == 0 && !c->closed) {
                uint32_t body_len;
                int r = frame_peek(c->in, c->in_len, &body_len);

                if (r < 0) {
                        char msg[128];
                        snprintf(msg, sizeof(msg),
                                 "bad frame: length must be 1 to %u bytes; closing connection",
                                 FRAME_MAX);
                        reply_frame_error(c, msg);
                        break;
                }
                if (r == 0) {
                        /* Grow only once the header has announced a valid length. */
                        if (c->in_len >= FRAME_HEADER_SIZE &&
                            FRAME_HEADER_SIZE + body_len > c->in_cap) {
                                uint8_t *n = realloc(c->in, FRAME_HEADER_SIZE + body_len);
                                if (!n) {
                                        log_oom();
                                        conn_close(c);
                                        return;
                                }
                                c->in = n;
                                c->in_cap = FRAME_HEADER_SIZE + body_len;
                        }
                        break;
                }
                size_t used = FRAME_HEADER_SIZE + body_len;
                conn_handle_frame(c, c->in + FRAME_HEADER_SIZE, body_len);
                if (c->closed)
                        return;
                memmove(c->in, c->in + used, c->in_len - used);
                c->in_len -= used;
                /* The next frame gets its own read_timeout, counted from when we wait for it:
                 * bytes of it may have come in while we were not reading. */
                c->in_deadline = 0;
        }
        if ((c->closing || c->read_eof) && !c->busy && c->out_len == 0) {
                conn_close(c); /* after a half-close, a partial frame left over is dropped */
                return;
        }
        conn_update_events(c);
}

static void conn_on_readable(Conn *c)
{
        if (!c->in) {
                c->in = malloc(INBUF_INITIAL);
                if (!c->in) {
                        log_oom();
                        conn_close(c);
                        return;
                }
                c->in_cap = INBUF_INITIAL;
        }
        if (c->in_len == c->in_cap) { /* whole frames are consumed before reading more */
                conn_process(c);
                if (!c->closed)
                        conn_update_events(c); /* full while busy: stop reading for now */
                return;
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return;
                conn_close(c);
                return;
        }
        if (n == 0) { /* peer shut its sending side: requests already sent still get answers */
                c->read_eof = true;
                conn_process(c);
                return;
        }
        c->in_len += n;
        conn_process(c);
}

static int conn_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Conn *c = userdata;

        conn_ref(c);
        if (revents & (EPOLLERR | EPOLLHUP)) {
                /* The peer is gone; nothing can be delivered. A busy request still completes
                 * (and is audited); its completion finds the connection closed. */
                conn_close(c);
        } else if (revents & EPOLLOUT) {
                int r = conn_flush(c);
                if (r == 0)
                        conn_process(c);
                else if (r != -EAGAIN)
                        conn_close(c);
                else
                        conn_arm_timer(c);
        } else if (revents & EPOLLIN)
                conn_on_readable(c);
        conn_unref(c);
        return 0;
}

static int conn_on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Conn *c = userdata;

        c->armed = 0;
        if (c->deadline == 0) /* busy: nothing to time out */
                return 0;
        if (now_mono_usec() < c->deadline) { /* the deadline moved on since it was armed */
                (void) sd_event_source_set_time(c->timer, c->deadline);
                (void) sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
                c->armed = c->deadline;
                return 0;
        }
        conn_ref(c);
        if (c->in_len > 0 && c->out_len == 0 && !c->busy) {
                reply_frame_error(c, "incomplete frame: read timeout; closing connection");
                conn_process(c);
        } else
                conn_close(c);
        conn_unref(c);
        return 0;
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

static json_t *peer_from_cred(const struct ucred *cred)
{
        return json_pack("{s:I, s:I, s:I, s:n, s:n, s:n, s:n, s:n, s:b, s:n}", "uid",
                         (json_int_t) cred->uid, "gid", (json_int_t) cred->gid, "pid",
                         (json_int_t) cred->pid, "user", "group", "exe", "cgroup", "unit",
                         "user_delegated", 0, "container");
}

static int conn_new(Server *s, Listener *l, int fd, const struct ucred *cred)
{
        Conn *c = calloc(1, sizeof(Conn));
        int r;

        if (!c)
                return -ENOMEM;
        c->server = s;
        c->refs = 1;
        c->fd = fd;
        c->admin = l->admin;
        c->cred = *cred;
        c->id.pidfd = -EBADF;

        if (!c->admin) {
                r = identity_from_socket(fd, &c->id);
                if (r == -ESRCH || r == -EREMOTE) {
                        /* Kept open: its requests are answered "denied" (and audited). */
                        c->id_error = r;
                        c->peer = peer_from_cred(cred);
                } else if (r < 0) {
                        free(c);
                        return r;
                } else
                        c->peer = identity_to_json(&c->id, false);
        } else
                c->peer = peer_from_cred(cred);
        if (!c->peer) {
                identity_done(&c->id);
                free(c);
                return -ENOMEM;
        }

        r = sd_event_add_io(s->event, &c->io, fd, EPOLLIN, conn_on_io, c);
        if (r >= 0)
                r = sd_event_add_time(s->event, &c->timer, CLOCK_MONOTONIC, UINT64_MAX, 0,
                                      conn_on_timer, c);
        if (r < 0) {
                sd_event_source_disable_unref(c->io);
                identity_done(&c->id);
                json_decref(c->peer);
                free(c);
                return r;
        }

        c->next = s->conns;
        if (s->conns)
                s->conns->prev = c;
        s->conns = c;
        if (c->admin)
                s->n_admin_conns++;
        else
                s->n_conns++;
        conn_arm_timer(c);
        return 0;
}

/* Accepts one connection when the process is out of file descriptors, only to close it:
 * otherwise the pending connection would wake us forever. */
static void accept_and_drop(Server *s, int lfd)
{
        if (s->reserve_fd >= 0) {
                close(s->reserve_fd);
                s->reserve_fd = -EBADF;
        }
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
                refuse(fd, BROKER_ERR_UNAVAILABLE, "broker is out of file descriptors");
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        s->refused_connections++;
}

/* Whether a new connection may stay; if not, why (and with which code). Admin connections
 * have their own small allowance, so workloads filling the broker never lock the operator
 * out. For a workload connection that may stay, its uid's count has been taken. */
static const char *admit(Server *s, bool admin, const struct ucred *cred, BrokerErrorCode *ret_code)
{
        const Limits *l = &s->config->limits;

        if (admin) {
                *ret_code = BROKER_ERR_DENIED;
                if (cred->uid != 0 && cred->uid != geteuid())
                        return "the admin socket is for root and the broker's own user";
                *ret_code = BROKER_ERR_UNAVAILABLE;
                if (s->n_admin_conns >= ADMIN_CONNECTIONS_MAX)
                        return "too many admin connections; close some and retry";
                return NULL;
        }
        *ret_code = BROKER_ERR_UNAVAILABLE;
        if (s->n_conns >= l->max_connections)
                return "broker has too many connections; retry later";
        int r = uid_counter_add(&s->uids, cred->uid, l->max_connections_per_uid);
        *ret_code = r == -EUSERS ? BROKER_ERR_RATE_LIMITED : BROKER_ERR_INTERNAL;
        if (r == -EUSERS)
                return "too many connections from this uid; close some and retry";
        if (r < 0)
                return "out of memory";
        return NULL;
}

int conn_on_listener(sd_event_source *src, int lfd, uint32_t revents, void *userdata)
{
        Listener *l = userdata;
        Server *s = l->userdata;

        for (int i = 0; i < ACCEPTS_PER_WAKEUP && !s->stopping; i++) {
                struct ucred cred;
                socklen_t len = sizeof(cred);
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EAGAIN)
                                break;
                        if (errno == EMFILE || errno == ENFILE) {
                                log_warning("Out of file descriptors; refusing a connection");
                                accept_and_drop(s, lfd);
                                continue;
                        }
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        log_warning_errno(errno, "accept(): %m");
                        break;
                }
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                        close(fd);
                        continue;
                }
                BrokerErrorCode code;
                const char *why = admit(s, l->admin, &cred, &code);
                if (why) {
                        s->refused_connections++;
                        refuse(fd, code, why);
                        continue;
                }
                int r = conn_new(s, l, fd, &cred);
                if (r < 0) {
                        if (!l->admin)
                                uid_counter_remove(&s->uids, cred.uid);
                        log_warning_errno(r, "Cannot set up connection: %m");
                        refuse(fd, BROKER_ERR_INTERNAL, "cannot set up connection");
                }
        }
        return 0;
}
