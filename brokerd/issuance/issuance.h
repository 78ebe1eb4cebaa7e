/* Issuance: the token path as a service with no socket in it. One entry point takes the
 * caller's identity and the request; the service owns the rate limit, the liveness check, the
 * policy decision, the choice of key, the mint and the grant record, and reports the result
 * through a callback once the record is durably committed (fail closed: no token leaves before
 * its grant record is in the log; a record that cannot be written makes the answer
 * `unavailable` and the token is wiped unseen).
 *
 * Threads: issuance_token() on the event loop, where the rate limit is taken first, so a flood
 * never reaches a worker, the policy, the signer or the grant log. The rest runs on a worker;
 * the grant log's writer commits the record; the callback runs on the loop (through the
 * mailbox). A reload swaps the configuration; a request keeps the one it began with.
 * An upstream's token is the other kind of grant: the same job decides with the policy
 * (policy_decide_upstream), then asks the federation, whose answer comes at once (a cache hit)
 * or later on the loop (an exchange); either way the record is built, committed and only then
 * answered, like a local mint. The transport does not change.
 *
 * Denials are bounded (README §Audit): each uid has audit.deny_budget records of its own per
 * audit.deny_interval, and none while the grant log's filesystem has less free space than
 * audit.free_space_floor; the others are counted (issuance/denials.h) and leave as deny_summary
 * records once their interval ends and there is room. A denial gives nothing away, so a counted
 * one is answered at once; one with a record of its own is answered after its commit, like a
 * grant. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "federation/federation.h"
#include "grantlog/store.h"
#include "identity/caller.h"
#include "keys/signer.h"
#include "policy/config.h"
#include "runtime/mailbox.h"
#include "runtime/workers.h"

typedef enum IssueStatus {
        ISSUE_GRANTED,
        ISSUE_DENIED,
        ISSUE_UNAVAILABLE, /* the grant log could not record the decision */
        ISSUE_INTERNAL,
} IssueStatus;

typedef struct IssueResult {
        IssueStatus status;
        const char *message; /* for the caller, when not granted: names only what it asked for */
        /* when granted; the token is wiped once the callback returns */
        const char *token;
        int64_t expires_at;
        const char *kid, *jti;
        /* when granted for an upstream: its token (instead of token, kid and jti) */
        const char *access_token, *token_type, *scope, *issued_token_type;
        /* ... an aws_sts upstream's: the key pair beside the SessionToken (access_token) */
        const char *aws_access_key_id, *aws_secret_access_key, *aws_expiration;
        /* not granted for an upstream: the upstream's OAuth2 error code, or NULL */
        const char *upstream_error;
} IssueResult;

typedef void (*issue_done_t)(const IssueResult *r, void *userdata);

typedef struct TokenRequest {
        const char *upstream; /* set: a token of this upstream's (no audience, no ttl) */
        const char *audience;
        const char *const *scopes;
        size_t n_scopes;
        bool has_ttl;
        int64_t ttl;
        json_t *owner; /* owns the strings above (the parsed request): referenced, not copied */
} TokenRequest;

typedef struct IssuanceDeps {
        /* The loop whose timer writes the denials' summaries and whose exit writes the last of
         * them. NULL (tests): only issuance_flush_denials() does. */
        sd_event *event;
        Workers *workers;
        Mailbox *mailbox;
        KeySource keys;
        GrantSink sink;
        Federation *federation; /* NULL: upstream requests are unavailable (tests) */
} IssuanceDeps;

typedef struct Issuance Issuance;

/* `config` is referenced. */
int issuance_new(const IssuanceDeps *deps, Config *config, Issuance **ret);
void issuance_free(Issuance *s);

/* A reload: requests from now on are decided by `config` (referenced). */
void issuance_set_config(Issuance *s, Config *config);

/* Returns 0 when the request was taken (`done` runs later, on the loop, exactly once);
 * otherwise `done` is never called: -EAGAIN the caller is over its rate limit (slow down),
 * -ENOMEM, -ESHUTDOWN (the daemon is stopping). */
int issuance_token(Issuance *s, Caller *caller, const TokenRequest *req, issue_done_t done,
                   void *userdata);

typedef struct IssuanceStats {
        uint64_t grants, denials, rate_limited;
        uint64_t denials_counted; /* of the denials: counted toward a summary, no record */
        uint64_t in_flight;       /* taken, not yet answered */
} IssuanceStats;

void issuance_stats(const Issuance *s, IssuanceStats *ret);

/* On the loop: submits deny_summary records for the counts that are due (those of uids whose
 * interval has ended, unless free space is below the floor), or, with `close`, for every count
 * whatever the free space, after which every denial has a record of its own (the daemon is
 * stopping). A summary that cannot be written puts its counts back for the next one. */
void issuance_flush_denials(Issuance *s, bool close);
