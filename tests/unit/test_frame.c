/* Framing: length checks, frame_peek on partial buffers, and the blocking helpers over a real
 * AF_UNIX socketpair — round trips, peers that close mid-frame, bad headers (rejected before a
 * body byte is read), silent and trickling peers (the timeout covers the whole call), EINTR. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "macro.h"

static int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static void make_pair(int fds[2])
{
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
}

static void close_pair(int fds[2])
{
        if (fds[0] >= 0)
                close(fds[0]);
        if (fds[1] >= 0)
                close(fds[1]);
}

static void write_all(int fd, const void *p, size_t n)
{
        const uint8_t *b = p;

        while (n > 0) {
                ssize_t k = send(fd, b, n, MSG_NOSIGNAL);

                if (k < 0 && errno == EINTR)
                        continue;
                assert_true(k > 0);
                b += k;
                n -= (size_t) k;
        }
}

static void write_header(int fd, uint32_t n)
{
        uint8_t h[FRAME_HEADER_SIZE];

        frame_put_header(h, n);
        write_all(fd, h, sizeof(h));
}

/* True when nothing is waiting to be read on fd. */
static bool nothing_pending(int fd)
{
        uint8_t c;

        return recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK) < 0 && errno == EAGAIN;
}

/* ---- frame_length_check ---- */

static void test_length_zero(void **state)
{
        assert_int_equal(frame_length_check(0), -EBADMSG);
}

static void test_length_one(void **state)
{
        assert_int_equal(frame_length_check(1), 0);
}

static void test_length_max(void **state)
{
        assert_int_equal(frame_length_check(65536), 0);
        assert_int_equal(frame_length_check(FRAME_MAX), 0);
}

static void test_length_max_plus_one(void **state)
{
        assert_int_equal(frame_length_check(65537), -EMSGSIZE);
}

static void test_length_all_ones(void **state)
{
        assert_int_equal(frame_length_check(0xFFFFFFFFu), -EMSGSIZE);
}

/* ---- frame_put_header / frame_peek ---- */

static void test_put_header_big_endian(void **state)
{
        uint8_t h[FRAME_HEADER_SIZE];

        frame_put_header(h, 0x01020304u);
        assert_memory_equal(h, "\x01\x02\x03\x04", 4);
        frame_put_header(h, 65536);
        assert_memory_equal(h, "\x00\x01\x00\x00", 4);
        frame_put_header(h, 17);
        assert_memory_equal(h, "\x00\x00\x00\x11", 4);
}

static void test_peek_empty_and_truncated_header(void **state)
{
        const uint8_t buf[] = {0x00, 0x00, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o'};
        uint32_t n = 4242;

        for (size_t len = 0; len < FRAME_HEADER_SIZE; len++) {
                assert_int_equal(frame_peek(buf, len, &n), 0);
                assert_int_equal(n, 4242); /* not known yet: untouched */
        }
}

static void test_peek_partial_body(void **state)
{
        const uint8_t buf[] = {0x00, 0x00, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o'};
        uint32_t n = 0;

        for (size_t len = FRAME_HEADER_SIZE; len < sizeof(buf); len++) {
                n = 0;
                assert_int_equal(frame_peek(buf, len, &n), 0);
                assert_int_equal(n, 5); /* known once the header is complete */
        }
}

static void test_peek_complete(void **state)
{
        const uint8_t buf[] = {0x00, 0x00, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o', 0x00, 0x00};
        uint32_t n = 0;

        assert_int_equal(frame_peek(buf, 9, &n), 1);
        assert_int_equal(n, 5);
        /* Bytes of the next frame after it do not matter. */
        n = 0;
        assert_int_equal(frame_peek(buf, sizeof(buf), &n), 1);
        assert_int_equal(n, 5);
}

static void test_peek_zero_length(void **state)
{
        const uint8_t buf[] = {0x00, 0x00, 0x00, 0x00, '{', '}'};
        uint32_t n = 4242;

        assert_int_equal(frame_peek(buf, sizeof(buf), &n), -EBADMSG);
        assert_int_equal(n, 4242);
}

static void test_peek_too_long(void **state)
{
        const uint8_t over[] = {0x00, 0x01, 0x00, 0x01}; /* 65537 */
        const uint8_t ones[] = {0xff, 0xff, 0xff, 0xff};
        uint32_t n = 4242;

        assert_int_equal(frame_peek(over, sizeof(over), &n), -EMSGSIZE);
        assert_int_equal(frame_peek(ones, sizeof(ones), &n), -EMSGSIZE);
        assert_int_equal(n, 4242);
}

static void test_peek_max_header_only(void **state)
{
        const uint8_t max[] = {0x00, 0x01, 0x00, 0x00}; /* 65536 */
        uint32_t n = 0;

        assert_int_equal(frame_peek(max, sizeof(max), &n), 0);
        assert_int_equal(n, 65536);
}

/* ---- frame_send / frame_recv ---- */

static void test_roundtrip(void **state)
{
        int fds[2];
        char *body = NULL;
        size_t len = 0;

        make_pair(fds);
        assert_int_equal(frame_send(fds[0], "{\"op\":\"ping\"}", 13, 1000), 0);
        assert_int_equal(frame_recv(fds[1], &body, &len, 1000), 0);
        assert_int_equal(len, 13);
        assert_memory_equal(body, "{\"op\":\"ping\"}", 13);
        assert_int_equal(body[len], '\0'); /* NUL-terminated, one byte past the body */
        free(body);
        close_pair(fds);
}

static void test_send_wire_format(void **state)
{
        int fds[2];
        uint8_t got[7];

        make_pair(fds);
        assert_int_equal(frame_send(fds[0], "{}\n", 3, 1000), 0);
        assert_int_equal(recv(fds[1], got, sizeof(got), MSG_DONTWAIT), 7);
        assert_memory_equal(got, "\x00\x00\x00\x03{}\n", 7);
        assert_true(nothing_pending(fds[1]));
        close_pair(fds);
}

static void test_frames_in_sequence(void **state)
{
        const char *msgs[] = {"a", "{\"op\":\"ping\",\"id\":1}", "{\"op\":\"ping\",\"id\":2}"};
        int fds[2];

        make_pair(fds);
        /* All three in one write: frame_recv must not read past the frame it returns. */
        for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
                write_header(fds[0], (uint32_t) strlen(msgs[i]));
                write_all(fds[0], msgs[i], strlen(msgs[i]));
        }
        for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
                char *body = NULL;
                size_t len = 0;

                assert_int_equal(frame_recv(fds[1], &body, &len, 1000), 0);
                assert_int_equal(len, strlen(msgs[i]));
                assert_string_equal(body, msgs[i]);
                free(body);
        }
        assert_true(nothing_pending(fds[1]));
        close_pair(fds);
}

static void test_recv_len_optional(void **state)
{
        int fds[2];
        char *body = NULL;

        make_pair(fds);
        assert_int_equal(frame_send(fds[0], "xyz", 3, 1000), 0);
        assert_int_equal(frame_recv(fds[1], &body, NULL, 1000), 0);
        assert_string_equal(body, "xyz");
        free(body);
        close_pair(fds);
}

typedef struct Writer {
        int fd;
        const void *data;
        size_t len;
        int delay_ms;       /* before the first byte */
        size_t chunk;       /* bytes per write, 0 = all at once */
        int chunk_delay_ms; /* between chunks */
        bool use_frame_send;
        int result;
} Writer;

static void *writer_main(void *p)
{
        Writer *w = p;
        const uint8_t *b = w->data;
        size_t left = w->len;

        sleep_ms(w->delay_ms);
        if (w->use_frame_send) {
                w->result = frame_send(w->fd, w->data, w->len, 5000);
                return NULL;
        }
        while (left > 0) {
                size_t n = w->chunk ? MIN(w->chunk, left) : left;
                ssize_t k = send(w->fd, b, n, MSG_NOSIGNAL);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        w->result = -errno; /* the reader gave up and closed: fine */
                        return NULL;
                }
                b += k;
                left -= (size_t) k;
                if (left > 0)
                        sleep_ms(w->chunk_delay_ms);
        }
        w->result = 0;
        return NULL;
}

static void start_writer(pthread_t *t, Writer *w)
{
        assert_int_equal(pthread_create(t, NULL, writer_main, w), 0);
}

static void test_roundtrip_max_size(void **state)
{
        int fds[2];
        char *big = malloc(FRAME_MAX), *body = NULL;
        size_t len = 0;
        pthread_t t;
        Writer w;

        assert_non_null(big);
        /* No short period, so resending or skipping any part shows. */
        for (size_t i = 0; i < FRAME_MAX; i++)
                big[i] = (char) (i * 31 + (i >> 8));
        make_pair(fds);
        /* A send buffer much smaller than the frame: the sender must wait for the reader and
         * go on after short writes, in the middle of the header or the body. */
        assert_int_equal(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &(int){4096}, sizeof(int)), 0);
        w = (Writer){.fd = fds[0], .data = big, .len = FRAME_MAX, .use_frame_send = true};
        start_writer(&t, &w);
        assert_int_equal(frame_recv(fds[1], &body, &len, 5000), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(w.result, 0);
        assert_int_equal(len, FRAME_MAX);
        assert_memory_equal(body, big, FRAME_MAX);
        assert_int_equal(body[FRAME_MAX], '\0');
        free(body);
        free(big);
        close_pair(fds);
}

static void test_recv_short_reads(void **state)
{
        /* A frame arriving a few bytes at a time, the header split across reads. */
        static const uint8_t wire[] = "\x00\x00\x00\x0b{\"ok\":true}";
        int fds[2];
        char *body = NULL;
        size_t len = 0;
        pthread_t t;
        Writer w;

        make_pair(fds);
        w = (Writer){
            .fd = fds[0], .data = wire, .len = sizeof(wire) - 1, .chunk = 3, .chunk_delay_ms = 5};
        start_writer(&t, &w);
        assert_int_equal(frame_recv(fds[1], &body, &len, 5000), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(len, 11);
        assert_string_equal(body, "{\"ok\":true}");
        free(body);
        close_pair(fds);
}

static void test_send_too_long_sends_nothing(void **state)
{
        int fds[2];
        char *big = calloc(1, FRAME_MAX + 1);

        assert_non_null(big);
        make_pair(fds);
        assert_int_equal(frame_send(fds[0], big, FRAME_MAX + 1, 1000), -EMSGSIZE);
        /* A size_t length must not be truncated to 32 bits into a small valid length. */
        assert_int_equal(frame_send(fds[0], big, (size_t) UINT32_MAX + 2, 1000), -EMSGSIZE);
        assert_int_equal(frame_send(fds[0], big, SIZE_MAX, 1000), -EMSGSIZE);
        assert_true(nothing_pending(fds[1]));
        free(big);
        close_pair(fds);
}

static void test_send_empty_sends_nothing(void **state)
{
        int fds[2];

        make_pair(fds);
        assert_int_equal(frame_send(fds[0], "", 0, 1000), -EBADMSG);
        assert_true(nothing_pending(fds[1]));
        close_pair(fds);
}

static void test_send_to_closed_peer(void **state)
{
        int fds[2];

        make_pair(fds);
        close(fds[1]);
        fds[1] = -1;
        /* Would kill the test with SIGPIPE without MSG_NOSIGNAL. */
        assert_int_equal(frame_send(fds[0], "{}", 2, 1000), -ECONNRESET);
        close_pair(fds);
}

static void test_send_timeout_full_buffer(void **state)
{
        int fds[2], sndbuf = 4096, r = 0;
        char *big = calloc(1, FRAME_MAX);
        int64_t t0 = 0;

        assert_non_null(big);
        make_pair(fds);
        assert_int_equal(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
        /* Nobody reads fds[1]: the buffer fills and a send must give up after its timeout. */
        for (int i = 0; i < 64 && r == 0; i++) {
                t0 = now_ms();
                r = frame_send(fds[0], big, FRAME_MAX, 100);
        }
        assert_int_equal(r, -ETIMEDOUT);
        assert_true(now_ms() - t0 >= 100);
        assert_true(now_ms() - t0 < 2000);
        free(big);
        close_pair(fds);
}

static void test_recv_peer_closed_before_frame(void **state)
{
        int fds[2];
        char *body = (char *) 0x1;
        size_t len = 4242;

        make_pair(fds);
        close(fds[0]);
        fds[0] = -1;
        assert_int_equal(frame_recv(fds[1], &body, &len, 1000), -ECONNRESET);
        assert_ptr_equal(body, (char *) 0x1); /* untouched on failure */
        assert_int_equal(len, 4242);
        close_pair(fds);
}

static void test_recv_peer_closed_mid_header(void **state)
{
        int fds[2];
        char *body = NULL;

        make_pair(fds);
        write_all(fds[0], "\x00\x00", 2);
        close(fds[0]);
        fds[0] = -1;
        assert_int_equal(frame_recv(fds[1], &body, NULL, 1000), -ECONNRESET);
        assert_null(body);
        close_pair(fds);
}

static void test_recv_peer_closed_mid_body(void **state)
{
        int fds[2];
        char *body = NULL;

        make_pair(fds);
        write_header(fds[0], 10);
        write_all(fds[0], "{\"op\"", 5);
        close(fds[0]);
        fds[0] = -1;
        assert_int_equal(frame_recv(fds[1], &body, NULL, 1000), -ECONNRESET);
        assert_null(body);
        close_pair(fds);
}

/* A bad header is refused with the body still unread in the socket: whatever follows it is
 * exactly what the peer sent after the header. */
static void check_bad_header(uint32_t n, int expected)
{
        int fds[2];
        char *body = NULL, rest[16] = {};
        int64_t t0;

        make_pair(fds);
        write_header(fds[0], n);
        write_all(fds[0], "BODYBYTES", 9);
        assert_int_equal(frame_recv(fds[1], &body, NULL, 1000), expected);
        assert_null(body);
        assert_int_equal(recv(fds[1], rest, sizeof(rest), MSG_DONTWAIT), 9);
        assert_string_equal(rest, "BODYBYTES");

        /* And without any body sent at all, it fails at once instead of waiting for one. */
        write_header(fds[0], n);
        t0 = now_ms();
        assert_int_equal(frame_recv(fds[1], &body, NULL, 3000), expected);
        assert_true(now_ms() - t0 < 1000);
        assert_null(body);
        close_pair(fds);
}

static void test_recv_bad_header_zero(void **state)
{
        check_bad_header(0, -EBADMSG);
}

static void test_recv_bad_header_65537(void **state)
{
        check_bad_header(65537, -EMSGSIZE);
}

static void test_recv_bad_header_all_ones(void **state)
{
        check_bad_header(0xFFFFFFFFu, -EMSGSIZE);
}

static void test_recv_timeout_silent_peer(void **state)
{
        int fds[2];
        char *body = NULL;
        int64_t t0, dt;

        make_pair(fds);
        t0 = now_ms();
        assert_int_equal(frame_recv(fds[1], &body, NULL, 100), -ETIMEDOUT);
        dt = now_ms() - t0;
        assert_true(dt >= 100);
        assert_true(dt < 2000);
        assert_null(body);
        close_pair(fds);
}

static void test_recv_timeout_zero(void **state)
{
        int fds[2];
        char *body = NULL;

        make_pair(fds);
        assert_int_equal(frame_recv(fds[1], &body, NULL, 0), -ETIMEDOUT);
        /* ... but a frame already there is returned even with no time to wait. */
        write_header(fds[0], 2);
        write_all(fds[0], "{}", 2);
        assert_int_equal(frame_recv(fds[1], &body, NULL, 0), 0);
        assert_string_equal(body, "{}");
        free(body);
        close_pair(fds);
}

static void test_recv_timeout_partial_body(void **state)
{
        int fds[2];
        char *body = NULL;

        make_pair(fds);
        write_header(fds[0], 10);
        write_all(fds[0], "{\"o", 3);
        assert_int_equal(frame_recv(fds[1], &body, NULL, 100), -ETIMEDOUT);
        assert_null(body);
        close_pair(fds);
}

/* A peer sending one byte every 50 ms never leaves a single read waiting 100 ms; only a
 * deadline over the whole call stops it. */
static void test_recv_timeout_covers_whole_call(void **state)
{
        static const uint8_t wire[] = "\x00\x00\x00\x0a{\"op\":\"x\"}";
        int fds[2];
        char *body = NULL;
        pthread_t t;
        Writer w;
        int64_t t0, dt;

        make_pair(fds);
        w = (Writer){
            .fd = fds[0], .data = wire, .len = sizeof(wire) - 1, .chunk = 1, .chunk_delay_ms = 50};
        start_writer(&t, &w);
        t0 = now_ms();
        assert_int_equal(frame_recv(fds[1], &body, NULL, 100), -ETIMEDOUT);
        dt = now_ms() - t0;
        assert_true(dt >= 100);
        assert_true(dt < 500); /* the whole frame takes ~650 ms */
        assert_null(body);
        assert_int_equal(pthread_join(t, NULL), 0);
        close_pair(fds);
}

static volatile sig_atomic_t n_alarms;

static void on_alarm(int sig)
{
        n_alarms++;
}

/* SIGALRM every 10 ms without SA_RESTART, so poll() keeps failing with EINTR. */
static void start_alarms(struct sigaction *old)
{
        struct sigaction sa = {.sa_handler = on_alarm};
        struct itimerval it = {.it_interval = {0, 10000}, .it_value = {0, 10000}};

        n_alarms = 0;
        sigemptyset(&sa.sa_mask);
        assert_int_equal(sigaction(SIGALRM, &sa, old), 0);
        assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
}

static void stop_alarms(const struct sigaction *old)
{
        struct itimerval off = {};

        assert_int_equal(setitimer(ITIMER_REAL, &off, NULL), 0);
        assert_int_equal(sigaction(SIGALRM, old, NULL), 0);
}

static void test_recv_eintr_keeps_waiting(void **state)
{
        static const uint8_t wire[] = "\x00\x00\x00\x02{}";
        struct sigaction old;
        sigset_t block, saved;
        int fds[2];
        char *body = NULL;
        pthread_t t;
        Writer w;

        make_pair(fds);
        /* The writer thread inherits SIGALRM blocked, so the signals interrupt our poll(). */
        sigemptyset(&block);
        sigaddset(&block, SIGALRM);
        assert_int_equal(pthread_sigmask(SIG_BLOCK, &block, &saved), 0);
        w = (Writer){.fd = fds[0], .data = wire, .len = sizeof(wire) - 1, .delay_ms = 100};
        start_writer(&t, &w);
        assert_int_equal(pthread_sigmask(SIG_SETMASK, &saved, NULL), 0);

        start_alarms(&old);
        assert_int_equal(frame_recv(fds[1], &body, NULL, 2000), 0);
        stop_alarms(&old);
        assert_true(n_alarms > 0);
        assert_string_equal(body, "{}");
        free(body);
        assert_int_equal(pthread_join(t, NULL), 0);
        close_pair(fds);
}

static void test_recv_eintr_does_not_extend_timeout(void **state)
{
        struct sigaction old;
        int fds[2];
        char *body = NULL;
        int64_t t0, dt;

        make_pair(fds);
        start_alarms(&old);
        t0 = now_ms();
        assert_int_equal(frame_recv(fds[1], &body, NULL, 100), -ETIMEDOUT);
        dt = now_ms() - t0;
        stop_alarms(&old);
        assert_true(n_alarms > 0);
        assert_true(dt >= 100);
        assert_true(dt < 1000);
        close_pair(fds);
}

static void test_bad_fd(void **state)
{
        char *body = NULL;

        assert_int_equal(frame_recv(-1, &body, NULL, 100), -EBADF);
        assert_int_equal(frame_send(-1, "{}", 2, 100), -EBADF);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_length_zero),
            cmocka_unit_test(test_length_one),
            cmocka_unit_test(test_length_max),
            cmocka_unit_test(test_length_max_plus_one),
            cmocka_unit_test(test_length_all_ones),
            cmocka_unit_test(test_put_header_big_endian),
            cmocka_unit_test(test_peek_empty_and_truncated_header),
            cmocka_unit_test(test_peek_partial_body),
            cmocka_unit_test(test_peek_complete),
            cmocka_unit_test(test_peek_zero_length),
            cmocka_unit_test(test_peek_too_long),
            cmocka_unit_test(test_peek_max_header_only),
            cmocka_unit_test(test_roundtrip),
            cmocka_unit_test(test_send_wire_format),
            cmocka_unit_test(test_frames_in_sequence),
            cmocka_unit_test(test_recv_len_optional),
            cmocka_unit_test(test_roundtrip_max_size),
            cmocka_unit_test(test_recv_short_reads),
            cmocka_unit_test(test_send_too_long_sends_nothing),
            cmocka_unit_test(test_send_empty_sends_nothing),
            cmocka_unit_test(test_send_to_closed_peer),
            cmocka_unit_test(test_send_timeout_full_buffer),
            cmocka_unit_test(test_recv_peer_closed_before_frame),
            cmocka_unit_test(test_recv_peer_closed_mid_header),
            cmocka_unit_test(test_recv_peer_closed_mid_body),
            cmocka_unit_test(test_recv_bad_header_zero),
            cmocka_unit_test(test_recv_bad_header_65537),
            cmocka_unit_test(test_recv_bad_header_all_ones),
            cmocka_unit_test(test_recv_timeout_silent_peer),
            cmocka_unit_test(test_recv_timeout_zero),
            cmocka_unit_test(test_recv_timeout_partial_body),
            cmocka_unit_test(test_recv_timeout_covers_whole_call),
            cmocka_unit_test(test_recv_eintr_keeps_waiting),
            cmocka_unit_test(test_recv_eintr_does_not_extend_timeout),
            cmocka_unit_test(test_bad_fd),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
