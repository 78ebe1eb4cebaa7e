/* For unit tests: what the code under test writes to stderr between capture_begin() and
 * capture_end(), through a pipe (a file would be subject to a test's RLIMIT_FSIZE too). At most
 * 64 KiB; include after <cmocka.h>. */
#pragma once

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int capture_pipe[2] = {-1, -1}, capture_saved = -1;

static void capture_begin(void)
{
        assert_int_equal(pipe2(capture_pipe, O_CLOEXEC | O_NONBLOCK), 0);
        fflush(stderr);
        capture_saved = dup(STDERR_FILENO);
        assert_true(capture_saved >= 0);
        assert_true(dup2(capture_pipe[1], STDERR_FILENO) >= 0);
        close(capture_pipe[1]);
}

/* The captured text (malloc'd). */
static char *capture_end(void)
{
        char *buf = malloc(65536);
        ssize_t n;

        fflush(stderr);
        assert_true(dup2(capture_saved, STDERR_FILENO) >= 0);
        close(capture_saved);
        assert_non_null(buf);
        n = read(capture_pipe[0], buf, 65535);
        close(capture_pipe[0]);
        buf[n > 0 ? n : 0] = '\0';
        return buf;
}

static void assert_logged(const char *log, const char *want)
{
        if (!strstr(log, want))
                fail_msg("log \"%s\" does not contain \"%s\"", log, want);
}
