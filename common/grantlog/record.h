/* The records of the grant log, built in one place: the peer object (who asked, as the kernel
 * said), decisions (grant, deny) and lifecycle events. What a record holds is the contract of
 * README §Audit; never a token or a secret (a grant keeps the token's SHA-256).
 *
 * Every string that came from the kernel or a caller is made display-safe here (text_escape),
 * so a record is valid UTF-8 without control characters, as the canonical form needs.
 * Functions return a new object, or NULL when out of memory. Thread-safe. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Who a request came from. Strings may be NULL (unknown); with `identified` false only uid,
 * gid and pid are known (an admin caller, or a workload the kernel could not confirm) and the
 * rest is recorded as null. */
typedef struct GrantlogPeer {
        bool identified;
        uid_t uid;
        gid_t gid;
        pid_t pid;
        const gid_t *groups; /* with_groups only */
        size_t n_groups;
        const char *user, *group, *exe, *cgroup, *unit, *container;
        bool user_delegated;
} GrantlogPeer;

/* The object records hold under "peer"; with_groups adds "groups" (whoami shows them). */
json_t *grantlog_peer_new(const GrantlogPeer *p, bool with_groups);

/* {"time": RFC 3339 ms, "event": event}, and `fields` merged in (reference taken over; may be
 * NULL): a lifecycle record (started, stopped, config_reloaded, key_*). */
json_t *grantlog_record_new(const char *event, int64_t time_ms, json_t *fields);

/* Who asked for a lifecycle event, as the kernel said: the peer credentials of an admin
 * connection, or the sender of a signal (signalfd's ssi_uid, ssi_pid). */
typedef struct GrantlogOrigin {
        const char *signal; /* NULL: the admin socket; else the signal's name ("SIGHUP") */
        uid_t uid;
        pid_t pid;
} GrantlogOrigin;

/* grantlog_record_new() for what someone asked for: with `origin`, the record also holds
 * "admin": {"uid", "pid"} (an admin request) or "signal": {"name", "uid", "pid"}; NULL: the
 * broker's own doing (its key schedule), recorded as grantlog_record_new() does. */
json_t *grantlog_record_lifecycle(const char *event, int64_t time_ms, const GrantlogOrigin *origin,
                                  json_t *fields);

/* config_reloaded: the absolute `path` of the file, the hex SHA-256 of the content that was
 * loaded and its number of rules. */
json_t *grantlog_record_config_reloaded(int64_t time_ms, const GrantlogOrigin *origin,
                                        const char *path, const char *config_sha256,
                                        size_t n_rules);

/* config_reload_failed: the file and the first problem that kept the running configuration
 * (the log line names all of them). */
json_t *grantlog_record_config_reload_failed(int64_t time_ms, const GrantlogOrigin *origin,
                                             const char *path, const char *error);

/* What a decision about an upstream's token records under "upstream" (README §Federation):
 * never the token, never a secret. NULL strings, a 0 status and a 0 expiry are left out (a
 * policy denial knows only the name). */
typedef struct GrantlogUpstream {
        const char *name;
        const char *kind;       /* client_credentials, token_exchange, jwt_bearer */
        const char *cache;      /* "hit" or "miss" */
        long http_status;       /* of the exchange that obtained the token (or failed) */
        const char *request_id; /* the request id header it carried */
        int64_t expires_at;     /* the upstream token's expiry, unix seconds */
        const char *scope;      /* the scope asked of the upstream */
        const char *error;      /* the upstream's OAuth2 error code */
} GrantlogUpstream;

json_t *grantlog_upstream_new(const GrantlogUpstream *u);

/* A token decision. `peer` is borrowed (it is shared by every record of a connection). */
typedef struct GrantlogDecision {
        bool granted;
        json_t *peer;
        const char *audience;
        const char *const *scopes;
        size_t n_scopes;
        const char *rule;   /* NULL: no rule matched */
        const char *reason; /* deny: why, a machine name ("no_matching_rule", ...) */
        /* grant (alg, kid and jti only for the broker's own tokens) */
        const char *subject, *alg, *kid, *jti, *token_sha256;
        int64_t expires_at;
        json_t *upstream; /* borrowed: grantlog_upstream_new(); NULL for the broker's own */
} GrantlogDecision;

/* A grant holds the request and the peer as they are (a rule allowed them). A denial is bounded
 * whatever the caller sent: a string longer than GRANTLOG_DENY_TEXT_MAX bytes (the audience,
 * a member of the peer) becomes
 *     {"truncated": true, "length": N, "sha256": H, "prefix": P}
 * where N and H are the byte length and hex SHA-256 of the text a full record would hold, and P
 * its first GRANTLOG_DENY_PREFIX bytes at most (cut before a partial character or \xNN escape).
 * Scopes longer than GRANTLOG_DENY_SCOPES_TEXT_MAX bytes joined, or more than
 * GRANTLOG_DENY_SCOPES_MAX of them, become the same object, with "count", over the scopes
 * joined by single spaces (the form of a token's "scope" claim). */
#define GRANTLOG_DENY_TEXT_MAX        128
#define GRANTLOG_DENY_PREFIX          64
#define GRANTLOG_DENY_SCOPES_MAX      16
#define GRANTLOG_DENY_SCOPES_TEXT_MAX 256

json_t *grantlog_record_decision(const GrantlogDecision *d, int64_t time_ms);

/* Denials of one uid for one reason that got no record of their own (over the uid's budget, or
 * while the log's filesystem was below its free-space floor): a deny_summary record. */
typedef struct GrantlogDenySummary {
        bool uid_known; /* false: uids the broker could not keep apart (its table was full) */
        uid_t uid;
        const char *reason;
        uint64_t count;       /* denials summarized */
        uint64_t below_floor; /* how many of them came while free space was below the floor */
        int64_t first_ms, last_ms;
        uint64_t budget; /* the configuration they were counted under */
        int64_t interval_s;
} GrantlogDenySummary;

json_t *grantlog_record_deny_summary(const GrantlogDenySummary *s, int64_t time_ms);

/* The events a log records, as --event takes them. */
#define GRANTLOG_EVENT_NAMES                                                                       \
        "grant, deny, deny_summary, started, stopped, config_reloaded, config_reload_failed, "     \
        "key_created, key_rotated, key_retired, key_removed, key_revoked, audit_key, checkpoint, " \
        "audit_pruned, secret_set, secret_deleted, upstream_tested"
bool grantlog_event_known(const char *event);
