/* First-match policy: rules are tried in file order; the first whose `match` holds decides;
 * no match means denied. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/config.h"
#include "identity/identity.h"

typedef enum DenyReason {
        DENY_NONE,
        DENY_NO_RULE,
        DENY_AUDIENCE,
        DENY_SCOPE,
        DENY_SUBJECT,  /* the rule's subject needs a value this caller lacks */
        DENY_IDENTITY, /* the caller could not be identified (exited, PID namespace) */
        DENY_UPSTREAM, /* the rule does not let the caller use this upstream */
        DENY_UPSTREAM_REFUSED,     /* the upstream said no (an OAuth2 error) */
        DENY_UPSTREAM_UNAVAILABLE, /* the upstream gave no usable answer */
        _DENY_MAX,
} DenyReason;

/* Short machine name stored in audit records ("no_matching_rule", ...). */
const char *deny_reason_to_string(DenyReason r);

typedef struct Decision {
        const Rule *rule;  /* deciding rule (NULL when none matched) */
        DenyReason reason; /* DENY_NONE on grant */
        char message[512]; /* for the caller; names only what it asked for */
        char *subject;     /* on grant */
        uint64_t ttl;      /* on grant: effective lifetime in seconds */
} Decision;

/* Whether every selector of the rule holds for the caller. An `exe` selector stats the file it
 * names (for a glob: the caller's exe path that matches it) as the daemon sees it now, and
 * holds only when that is the very file the caller runs (device and inode). */
bool rule_matches(const Rule *r, const Identity *id);

/* Audience patterns are exact strings in which an asterisk may stand for one whole DNS label
 * (1 to 63 letters, digits or '-'), as in https://STAR.example.com. Nothing else is special.
 * The asterisk must be a label of its own (bounded by non-label characters), which keeps
 * matching linear. */
bool audience_pattern_valid(const char *pattern);
bool audience_match(const char *pattern, const char *audience);

/* The deciding rule for this caller, or NULL. */
const Rule *policy_find_rule(const Config *c, const Identity *id);

/* Decides a token request. Returns 0 with ret filled (granted or denied), -ENOMEM. */
int policy_decide(const Config *c, const Identity *id, const char *audience,
                  const char *const *scopes, size_t n_scopes, bool has_ttl, int64_t ttl,
                  Decision *ret);

/* Decides a request for an upstream's token: the deciding rule must list the upstream (an
 * unknown name is refused alike, so callers learn nothing about other rules' upstreams) and
 * allow every scope asked for. ret->ttl is not used. */
int policy_decide_upstream(const Config *c, const Identity *id, const char *upstream,
                           const char *const *scopes, size_t n_scopes, Decision *ret);

void decision_done(Decision *d);
