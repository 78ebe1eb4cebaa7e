/* Agent mode, `brokerctl token --write FILE [--refresh]`: keeps FILE holding a fresh token, as
 * Vault Agent's file sinks and spiffe-helper do, for SDKs that read their token from a file
 * (AWS_WEB_IDENTITY_TOKEN_FILE, AZURE_FEDERATED_TOKEN_FILE, Google file-sourced credentials,
 * Kubernetes-style projected token volumes).
 *
 * Contract:
 * - FILE holds the token alone with no trailing newline (the SDKs send the file's bytes as they
 *   are), replaced atomically with `mode` (tokenfile.h). The token is a broker JWT (`audience`,
 *   `scopes`, `ttl`) or an upstream's access token (`upstream`, `scopes`).
 * - Without `refresh`: one request, one write, nothing logged on success; returns the exit code
 *   of the result (exitcode.h), FILE untouched on failure.
 * - With `refresh`: FILE is rewritten at 80 % of each token's lifetime as measured when it
 *   arrived (agent_refresh_delay_ms), until SIGTERM or SIGINT, which end it with EXIT_OK at once,
 *   also in the middle of a wait (signalfd, timerfd on CLOCK_BOOTTIME so that time asleep in
 *   suspend counts; no busy loop). FILE stays: the token in it is good until it expires.
 *   When the broker is unreachable or answers unavailable, rate_limited, denied (the policy may
 *   be fixed), internal or something malformed, or the file cannot be written, FILE is left as it
 *   is and the request is retried after agent_backoff_ms(failures so far): 1 s, 2 s, 4 s, ...
 *   capped at 30 s, back to the token's schedule after a success. bad_request and not_found are
 *   not retried (the arguments are wrong): the exit code of the result. A directory that cannot
 *   be opened is refused before the first request (EXIT_USAGE).
 * - One log line per event on stderr (log.h, "brokerctl: ..."), never the token. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_REFRESH_PERCENT 80
#define AGENT_MIN_DELAY_MS    1000
#define AGENT_BACKOFF_MAX_MS  30000

typedef struct AgentOptions {
        const char *socket; /* NULL: $BROKER_SOCKET or the default */
        const char *path;
        mode_t mode;
        bool refresh;
        const char *audience; /* a broker token, or */
        const char *upstream; /* an upstream's access token */
        const char *const *scopes;
        size_t n_scopes;
        int64_t ttl; /* broker tokens only; 0: the broker's default */
} AgentOptions;

/* Runs the agent as above; returns the process's exit code. */
int agent_run(const AgentOptions *o);

/* Milliseconds from `now_ms` (unix ms, when the token arrived) to its refresh: 80 % of the time
 * left before `expires_at` (unix seconds), at least AGENT_MIN_DELAY_MS. */
int64_t agent_refresh_delay_ms(int64_t now_ms, int64_t expires_at);

/* The wait after `failures` failed attempts in a row (1 or more): 1 s doubled each time, at most
 * AGENT_BACKOFF_MAX_MS. */
int64_t agent_backoff_ms(unsigned failures);
