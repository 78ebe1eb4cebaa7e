/* The frame decoder (proto/frame.c): the input is a byte stream as a peer sends it.
 * frame_peek() walks it frame by frame the way the daemon's connection does; every prefix of a
 * frame must read as "more bytes needed" and a header be judged as soon as it is whole. Then
 * the blocking client side, frame_recv(), reads the same stream from a real socketpair and must
 * see the same frames and end the same way; frame_send() must carry each body back unchanged. */
#include <errno.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "fuzz.h"

#define FRAMES_MAX 64
/* Bigger inputs would not fit a socket buffer without a reader thread. */
#define SOCKET_INPUT_MAX (128u * 1024)

typedef struct Frame {
        const uint8_t *body;
        uint32_t len;
} Frame;

static uint32_t header_of(const uint8_t *p)
{
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

                FUZZ_ASSERT(k > 0 || errno == EINTR);
                if (k > 0) {
                        p += k;
                        n -= (size_t) k;
                }
        }
}

/* frame_recv() on the stream must give exactly the frames the walk found, then `end`. */
static void check_recv(const uint8_t *data, size_t size, const Frame *frames, size_t n_frames,
                       int end)
{
        int fds[2];

        FUZZ_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
        write_all(fds[0], data, size);
        FUZZ_ASSERT(shutdown(fds[0], SHUT_WR) == 0);

        for (size_t i = 0; i <= n_frames; i++) {
                char *body = NULL;
                size_t len = 0;
                int r = frame_recv(fds[1], &body, &len, 1000);

                if (i == n_frames) {
                        FUZZ_ASSERT(r == end);
                        FUZZ_ASSERT(!body);
                        break;
                }
                FUZZ_ASSERT(r == 0);
                FUZZ_ASSERT(len == frames[i].len);
                FUZZ_ASSERT(memcmp(body, frames[i].body, len) == 0);
                FUZZ_ASSERT(body[len] == '\0');

                /* and back (fds[0] can no longer write): frame_send() writes what
                 * frame_recv() reads */
                char *again = NULL;
                size_t again_len = 0;
                FUZZ_ASSERT(frame_send(fds[1], body, len, 1000) == 0);
                FUZZ_ASSERT(frame_recv(fds[0], &again, &again_len, 1000) == 0);
                FUZZ_ASSERT(again_len == len && memcmp(again, body, len) == 0);
                free(again);
                free(body);
        }
        close(fds[0]);
        close(fds[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        Frame frames[FRAMES_MAX];
        size_t n_frames = 0, off = 0;
        int end = -ECONNRESET; /* how frame_recv() must see the stream end */

        while (off < size && n_frames < FRAMES_MAX) {
                const uint8_t *p = data + off;
                size_t left = size - off;
                uint32_t n = UINT32_MAX;
                int r = frame_peek(p, left, &n);

                /* Too short for a header: nothing decided, nothing set. */
                for (size_t k = 0; k < FRAME_HEADER_SIZE && k <= left; k++) {
                        uint32_t untouched = 7;
                        FUZZ_ASSERT(frame_peek(p, k, &untouched) == 0 && untouched == 7);
                }
                if (left < FRAME_HEADER_SIZE) {
                        FUZZ_ASSERT(r == 0 && n == UINT32_MAX);
                        break;
                }
                /* The header alone decides whether the length is acceptable. */
                FUZZ_ASSERT(frame_peek(p, FRAME_HEADER_SIZE, NULL) ==
                            (frame_length_check(header_of(p)) < 0
                                 ? frame_length_check(header_of(p))
                                 : 0));
                if (r < 0) {
                        FUZZ_ASSERT(r == frame_length_check(header_of(p)));
                        FUZZ_ASSERT(r == -EBADMSG ? header_of(p) == 0 : header_of(p) > FRAME_MAX);
                        end = r;
                        break;
                }
                FUZZ_ASSERT(n == header_of(p) && n >= 1 && n <= FRAME_MAX);
                if (r == 0) {
                        FUZZ_ASSERT(left - FRAME_HEADER_SIZE < n);
                        break;
                }
                FUZZ_ASSERT(r == 1 && FRAME_HEADER_SIZE + (size_t) n <= left);
                /* One byte short of the body is not yet a frame. */
                FUZZ_ASSERT(frame_peek(p, FRAME_HEADER_SIZE + n - 1, NULL) == 0);

                uint8_t h[FRAME_HEADER_SIZE];
                frame_put_header(h, n);
                FUZZ_ASSERT(memcmp(h, p, sizeof(h)) == 0);

                frames[n_frames++] = (Frame){p + FRAME_HEADER_SIZE, n};
                off += FRAME_HEADER_SIZE + n;
        }

        if (n_frames < FRAMES_MAX && size <= SOCKET_INPUT_MAX)
                check_recv(data, size, frames, n_frames, end);
        return 0;
}
