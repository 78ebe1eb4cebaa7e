/* Framing: a 4-byte big-endian length, then the body. The length is always checked before a
 * single body byte is buffered, so a peer cannot make us allocate or read more than FRAME_MAX.
 *
 * This file is linked into libbroker as well as the daemon: it must not log and must not use
 * anything from common/ beyond header-only helpers. */
#include "frame.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "macro.h"

#define NO_DEADLINE UINT64_MAX

int frame_length_check(uint32_t n)
{
        if (n == 0)
                return -EBADMSG;
        if (n > FRAME_MAX)
                return -EMSGSIZE;
        return 0;
}

static uint32_t frame_get_header(const uint8_t in[FRAME_HEADER_SIZE])
{
        return (uint32_t) in[0] << 24 | (uint32_t) in[1] << 16 | (uint32_t) in[2] << 8 |
               (uint32_t) in[3];
}

void frame_put_header(uint8_t out[FRAME_HEADER_SIZE], uint32_t body_len)
{
        out[0] = (uint8_t) (body_len >> 24);
        out[1] = (uint8_t) (body_len >> 16);
        out[2] = (uint8_t) (body_len >> 8);
        out[3] = (uint8_t) body_len;
}

int frame_peek(const uint8_t *buf, size_t len, uint32_t *ret_body_len)
{
        uint32_t n;
        int r;

        if (len < FRAME_HEADER_SIZE)
                return 0;

        n = frame_get_header(buf);
        r = frame_length_check(n);
        if (r < 0)
                return r;

        if (ret_body_len)
                *ret_body_len = n;
        return len - FRAME_HEADER_SIZE >= n;
}

static uint64_t mono_ms(void)
{
        struct timespec ts;

        /* CLOCK_MONOTONIC cannot fail on Linux with a valid pointer. */
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static uint64_t deadline_from_timeout(int timeout_ms)
{
        if (timeout_ms < 0)
                return NO_DEADLINE;
        return mono_ms() + (uint64_t) timeout_ms;
}

/* Waits until fd is ready for `events` or the deadline passes. The deadline is absolute, so
 * signals (EINTR) and spurious wake-ups do not extend the caller's timeout. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
        for (;;) {
                struct pollfd p = {.fd = fd, .events = events};
                int timeout = -1, r;

                if (deadline != NO_DEADLINE) {
                        uint64_t now = mono_ms();

                        if (now >= deadline)
                                return -ETIMEDOUT;
                        timeout = (int) MIN(deadline - now, (uint64_t) INT_MAX);
                }

                r = poll(&p, 1, timeout);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (r == 0)
                        continue; /* re-checks the deadline above */
                if (p.revents & POLLNVAL)
                        return -EBADF;
                /* POLLHUP/POLLERR: let the following send()/recv() report what happened. */
                return 0;
        }
}

int frame_send(int fd, const void *body, size_t len, int timeout_ms)
{
        uint8_t header[FRAME_HEADER_SIZE];
        struct iovec iov[2];
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = ELEMENTSOF(iov)};
        uint64_t deadline;
        int r;

        /* Checked as size_t first: a length above UINT32_MAX must not wrap into a valid one. */
        if (len > FRAME_MAX)
                return -EMSGSIZE;
        r = frame_length_check((uint32_t) len);
        if (r < 0)
                return r;
        if (!body)
                return -EINVAL;

        deadline = deadline_from_timeout(timeout_ms);
        frame_put_header(header, (uint32_t) len);
        iov[0] = (struct iovec){.iov_base = header, .iov_len = sizeof(header)};
        iov[1] = (struct iovec){.iov_base = (void *) body, .iov_len = len};

        while (mh.msg_iovlen > 0) {
                ssize_t k;

                /* MSG_DONTWAIT: the fd may be blocking, and a blocking send of a large frame
                 * into a full socket buffer would ignore our deadline. MSG_NOSIGNAL: a client
                 * must get an error, not SIGPIPE, when the broker has gone away. */
                k = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK) {
                                r = wait_fd(fd, POLLOUT, deadline);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        /* The peer closing is one condition for the caller, whichever way the
                         * kernel reports it. */
                        if (errno == EPIPE)
                                return -ECONNRESET;
                        return -errno;
                }

                /* Short write: drop what went out and resend the rest. */
                while (mh.msg_iovlen > 0 && (size_t) k >= mh.msg_iov->iov_len) {
                        k -= (ssize_t) mh.msg_iov->iov_len;
                        mh.msg_iov++;
                        mh.msg_iovlen--;
                }
                if (mh.msg_iovlen > 0) {
                        mh.msg_iov->iov_base = (uint8_t *) mh.msg_iov->iov_base + k;
                        mh.msg_iov->iov_len -= (size_t) k;
                }
        }

        return 0;
}

/* Reads exactly n bytes. A peer closing before the last byte is -ECONNRESET. */
static int recv_exact(int fd, void *buf, size_t n, uint64_t deadline)
{
        size_t done = 0;

        while (done < n) {
                ssize_t k = recv(fd, (uint8_t *) buf + done, n - done, MSG_DONTWAIT);

                if (k > 0) {
                        done += (size_t) k;
                        continue;
                }
                if (k == 0)
                        return -ECONNRESET;
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                        int r = wait_fd(fd, POLLIN, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                return -errno;
        }

        return 0;
}

int frame_recv(int fd, char **ret_body, size_t *ret_len, int timeout_ms)
{
        uint64_t deadline = deadline_from_timeout(timeout_ms);
        uint8_t header[FRAME_HEADER_SIZE];
        _cleanup_free_ char *body = NULL;
        uint32_t n;
        int r;

        if (!ret_body)
                return -EINVAL;

        r = recv_exact(fd, header, sizeof(header), deadline);
        if (r < 0)
                return r;

        /* Before anything is allocated or read: a bad length from the peer must cost us nothing
         * and leave its body unread. */
        n = frame_get_header(header);
        r = frame_length_check(n);
        if (r < 0)
                return r;

        /* +1 so callers may treat the body as a C string; n <= FRAME_MAX, no overflow. */
        body = malloc((size_t) n + 1);
        if (!body)
                return -ENOMEM;

        r = recv_exact(fd, body, n, deadline);
        if (r < 0) {
                /* A partial body may be part of a token response. */
                explicit_bzero(body, n);
                return r;
        }
        body[n] = '\0';

        *ret_body = TAKE_PTR(body);
        if (ret_len)
                *ret_len = n;
        return 0;
}
