/* One client connection: frames in, requests routed to the socket's handler, answers out,
 * timeouts (contract in transport.h and conn.h). */
#include "transport/conn.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <time.h>

#include "frame.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "messageid.h"
#include "timeutil.h"
#include "transport/conn-private.h"

#define INBUF_INITIAL 4096u
#define USEC_PER_SEC  1000000ULL
/* A ping proves the connection works; it does not keep it open (the idle clock runs on) and it
 * is limited on its own: PING_BURST at once, then PING_RATE a second. */
#define PING_RATE  2.0
#define PING_BURST 10.0

struct Conn {
        TransportShared *sh;
        unsigned refs;
        int fd;
        bool admin;
        Caller *caller;
        request_handler_t handler;
        void *userdata;

        sd_event_source *io, *timer;
        uint8_t *in;
        size_t in_len, in_cap;
        uint64_t deadline;    /* monotonic usec this connection times out, 0 while busy */
        uint64_t armed;       /* what the timer is set to, 0 when it is not */
        uint64_t in_deadline; /* monotonic usec by which the partial frame in `in` must be
                               * complete; 0 until we start waiting for its rest */
        char *out;
        size_t out_len, out_off;

        uint64_t active; /* monotonic usec of the last request that counts as use (not ping) */
        double pings;    /* the ping bucket, refilled at PING_RATE since pinged */
        uint64_t pinged;
        bool identity_counted;

        bool busy;     /* a request is being answered, or the caller identified */
        bool closing;  /* close once the pending output is written */
        bool read_eof; /* the peer will send no more: answer what it sent, then close */
        bool closed;   /* fd gone; the struct lives until the last reference drops */

        WorkerJob identify; /* on a worker: read the caller's identity */
        atomic_bool gone;   /* closed: the worker need not identify anybody */
        MailboxMsg identified;
        int identify_error;

        Conn *prev, *next;
};

static void conn_process(Conn *c);

static Conn *conn_ref(Conn *c)
{
        c->refs++;
        return c;
}

static void conn_unref(Conn *c)
{
        if (--c->refs > 0)
                return;
        caller_unref(c->caller);
        free(c->in);
        free(c->out);
        free(c);
}

Caller *conn_caller(Conn *c)
{
        return c->caller;
}

bool conn_is_admin(const Conn *c)
{
        return c->admin;
}

bool conn_identity_counted(const Conn *c)
{
        return c->identity_counted;
}

void conn_set_identity_counted(Conn *c)
{
        c->identity_counted = true;
}

static void conn_unlink(Conn *c)
{
        TransportShared *sh = c->sh;

        if (c->prev)
                c->prev->next = c->next;
        else
                sh->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        if (c->admin)
                sh->n_admin_conns--;
        else
                sh->n_conns--;
        sh->on_close(sh->transport, c);
}

void conn_close(Conn *c)
{
        if (c->closed)
                return;
        c->closed = true;
        atomic_store(&c->gone, true);
        c->io = sd_event_source_disable_unref(c->io);
        c->timer = sd_event_source_disable_unref(c->timer);
        close(c->fd);
        c->fd = -EBADF;
        conn_unlink(c);
        conn_unref(c); /* the transport's reference */
}

void conn_close_all(TransportShared *sh)
{
        while (sh->conns)
                conn_close(sh->conns);
}

void conn_shutdown_all(TransportShared *sh)
{
        for (Conn *c = sh->conns, *next; c; c = next) {
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
        const TransportLimits *l = &c->sh->limits;
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
                /* Idle since the last request that counts, whatever came since (pings, bad
                 * requests): a slot is not held for free. */
                deadline = c->active + usec_from_sec(l->idle_timeout);
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

/* Whether another ping may be answered now. */
static bool ping_allowed(Conn *c, uint64_t now)
{
        double refill = (double) (now - c->pinged) / USEC_PER_SEC * PING_RATE;

        c->pings = MIN(PING_BURST, c->pings + refill);
        c->pinged = now;
        if (c->pings < 1.0)
                return false;
        c->pings -= 1.0;
        return true;
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
        if (req.op == OP_PING && !c->admin && !ping_allowed(c, now_mono_usec()))
                conn_queue(c, response_new_error(BROKER_ERR_RATE_LIMITED,
                                                 "too many pings on this connection; slow down",
                                                 req.id));
        else {
                if (req.op != OP_PING)
                        c->active = now_mono_usec();
                c->handler(c, &req, c->userdata);
        }
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
                 * (and is recorded); its completion finds the connection closed. */
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

/* On the loop, once a worker has read the caller's identity. */
static void conn_identified(MailboxMsg *m)
{
        Conn *c = (Conn *) ((char *) m - offsetof(Conn, identified));

        c->busy = false;
        if (c->identify_error < 0) {
                static LogRatelimit rl = LOG_RATELIMIT_INIT(LOG_RATELIMIT_INTERVAL);

                log_struct_ratelimited(&rl, LOG_WARNING, c->identify_error,
                                       &(LogFields){.message_id = MESSAGE_ID_CALLER_UNIDENTIFIED,
                                                    .has_peer = true,
                                                    .peer_uid = c->caller->cred.uid,
                                                    .peer_pid = c->caller->cred.pid},
                                       "Cannot identify the caller (pid %d): %m",
                                       (int) c->caller->cred.pid);
                conn_queue(
                    c, response_new_error(BROKER_ERR_INTERNAL, "cannot identify the caller", NULL));
                c->closing = true;
        } else if (!c->closed) {
                BrokerErrorCode code;
                const char *why = c->sh->on_identified(c->sh->transport, c, &code);
                if (why) {
                        conn_queue(c, response_new_error(code, why, NULL));
                        c->closing = true;
                }
        }
        conn_process(c);
        conn_unref(c);
}

/* On a worker: /proc and the user database cost more than the rest of a connection's setup. */
static void conn_identify(WorkerJob *j)
{
        Conn *c = (Conn *) ((char *) j - offsetof(Conn, identify));

        /* A caller that connected and closed at once (churn) costs no /proc or NSS reads. */
        if (!atomic_load(&c->gone))
                c->identify_error = caller_identify(c->caller);
        mailbox_post(c->sh->mailbox, &c->identified);
}

int conn_new(TransportShared *sh, int fd, Caller *caller, bool admin, request_handler_t handler,
             void *userdata)
{
        Conn *c = calloc(1, sizeof(Conn));
        int r;

        if (!c)
                return -ENOMEM;
        *c = (Conn){.sh = sh,
                    .refs = 1,
                    .fd = fd,
                    .admin = admin,
                    .caller = caller,
                    .handler = handler,
                    .userdata = userdata,
                    .identify.run = conn_identify,
                    .identified.run = conn_identified,
                    .active = now_mono_usec(),
                    .pings = PING_BURST};
        c->pinged = c->active;

        r = sd_event_add_io(sh->event, &c->io, fd, EPOLLIN, conn_on_io, c);
        if (r >= 0)
                r = sd_event_add_time(sh->event, &c->timer, CLOCK_MONOTONIC, UINT64_MAX, 0,
                                      conn_on_timer, c);
        if (r < 0) {
                sd_event_source_disable_unref(c->io);
                free(c);
                return r;
        }
        if (!caller->identified) {
                /* Requests wait in the buffer until the caller is known. */
                c->busy = true;
                conn_ref(c);
                r = workers_submit(sh->workers, &c->identify);
                if (r < 0) {
                        sd_event_source_disable_unref(c->io);
                        sd_event_source_disable_unref(c->timer);
                        free(c);
                        return r;
                }
        }

        c->next = sh->conns;
        if (sh->conns)
                sh->conns->prev = c;
        sh->conns = c;
        if (c->admin)
                sh->n_admin_conns++;
        else
                sh->n_conns++;
        conn_arm_timer(c);
        return 0;
}
