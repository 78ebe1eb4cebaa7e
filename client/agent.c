/* Agent mode: keeps a token file fresh. See agent.h for the contract. */
#include "agent.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "exitcode.h"
#include "hints.h"
#include "log.h"
#include "macro.h"
#include "timeutil.h"
#include "tokenfile.h"

int64_t agent_refresh_delay_ms(int64_t now_ms, int64_t expires_at)
{
        int64_t left, delay;

        /* far-future expiries are clamped rather than overflowing */
        if (expires_at > INT64_MAX / 2000)
                expires_at = INT64_MAX / 2000;
        if (expires_at < 0)
                expires_at = 0;
        left = expires_at * 1000 - now_ms;
        delay = left / 100 * AGENT_REFRESH_PERCENT + left % 100 * AGENT_REFRESH_PERCENT / 100;
        return MAX(delay, (int64_t) AGENT_MIN_DELAY_MS);
}

int64_t agent_backoff_ms(unsigned failures)
{
        int64_t d = 1000;

        for (unsigned i = 1; i < failures && d < AGENT_BACKOFF_MAX_MS; i++)
                d *= 2;
        return MIN(d, (int64_t) AGENT_BACKOFF_MAX_MS);
}

/* Whether a failed request is worth another try later: everything but a request the broker
 * cannot take as it is (bad arguments, an unknown name) and our own lack of memory. */
static bool retryable(int status)
{
        return status == BROKER_E_UNAVAILABLE || status == BROKER_E_RATE_LIMITED ||
               status == BROKER_E_DENIED || status == BROKER_E_INTERNAL ||
               status == BROKER_E_PROTOCOL;
}

/* One request on a connection of its own (the broker closes idle ones long before a refresh is
 * due). The token is moved into *ret_token, to be wiped by the caller; *ret_connecting says
 * whether a failure was the connection's. */
static int fetch(const AgentOptions *o, char **ret_token, int64_t *ret_expires_at,
                 broker_error *err, bool *ret_connecting, char *upstream_error,
                 size_t upstream_error_len)
{
        broker *b = NULL;
        int r;

        r = broker_open(o->socket, 0, &b, err);
        *ret_connecting = r < 0;
        if (r < 0)
                return r;
        if (o->upstream) {
                broker_upstream_token t = {};
                r = broker_get_upstream_token(b,
                                              &(broker_upstream_request){.upstream = o->upstream,
                                                                         .scopes = o->scopes,
                                                                         .n_scopes = o->n_scopes},
                                              &t, err);
                if (r >= 0) {
                        *ret_token = TAKE_PTR(t.access_token);
                        *ret_expires_at = t.expires_at;
                } else
                        snprintf(upstream_error, upstream_error_len, "%s", t.upstream_error);
                broker_upstream_token_clear(&t);
        } else {
                broker_token t = {};
                r = broker_get_token(b,
                                     &(broker_token_request){.audience = o->audience,
                                                             .scopes = o->scopes,
                                                             .n_scopes = o->n_scopes,
                                                             .ttl = o->ttl},
                                     &t, err);
                if (r >= 0) {
                        *ret_token = TAKE_PTR(t.token);
                        *ret_expires_at = t.expires_at;
                }
                broker_token_clear(&t);
        }
        broker_close(b);
        return r;
}

/* Waits `ms` of CLOCK_BOOTTIME or until SIGTERM/SIGINT arrives on sfd. Returns 0 when the time
 * is up, the signal's number, or -errno. */
static int wait_or_signal(int sfd, int tfd, int64_t ms)
{
        struct itimerspec its = {
            .it_value = {.tv_sec = (time_t) (ms / 1000), .tv_nsec = (long) (ms % 1000) * 1000000L},
        };

        if (ms < 1)
                its.it_value.tv_nsec = 1000000L; /* an all-zero value would disarm the timer */
        if (timerfd_settime(tfd, 0, &its, NULL) < 0)
                return negative_errno();
        for (;;) {
                struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = tfd, .events = POLLIN}};
                struct signalfd_siginfo si;
                uint64_t expirations;

                if (poll(p, ELEMENTSOF(p), -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if ((p[0].revents & POLLIN) && read(sfd, &si, sizeof(si)) == (ssize_t) sizeof(si))
                        return (int) si.ssi_signo;
                if ((p[1].revents & POLLIN) &&
                    read(tfd, &expirations, sizeof(expirations)) == (ssize_t) sizeof(expirations))
                        return 0;
        }
}

static void format_seconds(int64_t ms, char buf[32])
{
        snprintf(buf, 32, "%" PRId64 " s", (ms + 999) / 1000);
}

/* One attempt: fetch, then write. Returns EXIT_OK with *ret_delay_ms set to the next refresh,
 * or the exit code of the failure with *ret_retry saying whether a refreshing run tries again;
 * the failure is logged with what happens next. */
static int attempt(const AgentOptions *o, unsigned failures, int64_t *ret_delay_ms, bool *ret_retry)
{
        _cleanup_(erase_and_freep) char *token = NULL;
        broker_error err = {};
        CallContext ctx = {.command = "token"};
        char upstream_error[129] = "", upstream[400] = "", when[TIME_RFC3339_MAX], next[32];
        int64_t expires_at = 0;
        int r;

        format_seconds(agent_backoff_ms(failures + 1), next);
        r = fetch(o, &token, &expires_at, &err, &ctx.connecting, upstream_error,
                  sizeof(upstream_error));
        if (r < 0) {
                const char *sep = err.code[0] ? ": " : "";

                *ret_retry = o->refresh && retryable(err.status);
                /* The upstream refused the broker: no rule of ours is missing, so the usual hint
                 * would send the reader the wrong way. */
                if (upstream_error[0])
                        snprintf(upstream, sizeof(upstream),
                                 " (the upstream refused the broker with %s; the operator can "
                                 "retry it with 'brokerctl upstream test %s')",
                                 upstream_error, o->upstream);
                else if (!(*ret_retry && (err.status == BROKER_E_RATE_LIMITED ||
                                          (err.status == BROKER_E_UNAVAILABLE && !ctx.connecting))))
                        /* (a retry says "retry later" itself) */
                        failure_hint(&err, &ctx, upstream, sizeof(upstream));
                if (*ret_retry)
                        log_warning("%s%s%s%s; %s left as it is, retrying in %s.", err.code, sep,
                                    err.message, upstream, o->path, next);
                else
                        log_error("%s%s%s%s%s", err.code, sep, err.message, upstream,
                                  o->refresh ? "; not retrying (the request itself is wrong)."
                                             : ".");
                return exit_code_for_status(err.status);
        }
        r = token_file_write(o->path, token, strlen(token), o->mode);
        if (r < 0) {
                *ret_retry = o->refresh;
                if (*ret_retry)
                        log_warning_errno(r, "Cannot write the token to %s: %m; retrying in %s.",
                                          o->path, next);
                else
                        log_error_errno(r, "Cannot write the token to %s: %m.", o->path);
                return EXIT_OTHER;
        }
        *ret_delay_ms = agent_refresh_delay_ms(now_unix_ms(), expires_at);
        if (o->refresh) {
                time_format_rfc3339_ms(expires_at * 1000, when);
                format_seconds(*ret_delay_ms, next);
                log_info("Wrote a new token to %s (expires %s); next refresh in %s.", o->path, when,
                         next);
        }
        return EXIT_OK;
}

/* SIGTERM and SIGINT, blocked from here on, are read from *ret_sfd only: one that arrives during
 * a request or a write ends the run right after it, never halfway. *ret_tfd: the timer for the
 * waits. Returns 0 or -errno, logged. */
static int setup_wakeups(int *ret_sfd, int *ret_tfd)
{
        _cleanup_close_ int sfd = -EBADF, tfd = -EBADF;
        sigset_t mask;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(negative_errno(), "sigprocmask(): %m");
        sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sfd < 0)
                return log_error_errno(negative_errno(), "signalfd(): %m");
        tfd = timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC | TFD_NONBLOCK);
        if (tfd < 0)
                return log_error_errno(negative_errno(), "timerfd_create(): %m");
        *ret_sfd = TAKE_FD(sfd);
        *ret_tfd = TAKE_FD(tfd);
        return 0;
}

int agent_run(const AgentOptions *o)
{
        _cleanup_close_ int sfd = -EBADF, tfd = -EBADF;
        unsigned failures = 0;
        bool retry = false;
        int64_t delay;
        int r;

        log_setup("brokerctl");
        r = token_file_check_dir(o->path);
        if (r < 0) {
                log_error_errno(r,
                                "Cannot keep a token file at %s: %m (its directory must exist "
                                "and the path must not be a directory).",
                                o->path);
                return EXIT_USAGE;
        }
        if (!o->refresh)
                return attempt(o, 0, &delay, &retry);

        if (setup_wakeups(&sfd, &tfd) < 0)
                return EXIT_OTHER;

        log_info("Keeping %s fresh (mode %04o) with a token %s %s.", o->path, (unsigned) o->mode,
                 o->upstream ? "of the upstream" : "for", o->upstream ? o->upstream : o->audience);
        for (;;) {
                r = attempt(o, failures, &delay, &retry);
                if (r == EXIT_OK)
                        failures = 0;
                else if (!retry)
                        return r;
                else
                        delay = agent_backoff_ms(++failures);

                r = wait_or_signal(sfd, tfd, delay);
                if (r < 0) {
                        log_error_errno(r, "Waiting failed: %m");
                        return EXIT_OTHER;
                }
                if (r > 0) {
                        log_info("Stopping on %s; %s keeps the last token written.",
                                 r == SIGTERM ? "SIGTERM" : "SIGINT", o->path);
                        return EXIT_OK;
                }
        }
}
