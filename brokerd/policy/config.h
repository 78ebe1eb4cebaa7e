/* The daemon's configuration: one JSON file, validated as a whole. Every problem is reported
 * with its JSON path ("rules[2].match.uid: expected integer"), not just the first.
 * A Config is immutable once parsed and reference-counted (atomically): the workers keep the
 * one a request began with while a reload installs the next. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "keys/alg.h"
#include "policy/upstream_config.h"

typedef struct RuleMatch {
        bool has_uid, has_gid, has_user, has_group;
        uid_t uid;
        gid_t gid;
        uid_t user_uid;  /* `user`, resolved when the config is loaded */
        gid_t group_gid; /* `group`, likewise */
        char *user, *group;
        char *exe, *unit, *cgroup, *container; /* globs, NULL when absent */
} RuleMatch;

typedef struct Rule {
        char *name;
        RuleMatch match;
        char *subject; /* template: {uid} {gid} {user} {unit} {container} {rule} */
        char **audiences;
        size_t n_audiences;
        char **scopes;
        size_t n_scopes;
        uint64_t max_ttl; /* seconds; the rule's own or the global one */
        Alg alg;          /* ALG_DEFAULT (ES256) unless the rule names one */
        char **upstreams; /* names of the upstreams this rule's callers may use */
        size_t n_upstreams;
} Rule;

typedef struct Limits {
        uint64_t max_connections;
        uint64_t max_connections_per_uid;
        uint64_t max_connections_per_identity; /* per uid + unit + container (a quarter of
                                                * the per-uid limit unless set) */
        uint64_t connect_rate;                 /* new connections per second per uid; 0 disables */
        uint64_t connect_burst;                /* bucket size */
        uint64_t rate;         /* token requests per second per identity; 0 disables */
        uint64_t burst;        /* bucket size */
        uint64_t idle_timeout; /* seconds without a request before a connection is closed */
        uint64_t read_timeout; /* seconds for a started frame to arrive completely */
} Limits;

typedef struct KeysConfig {
        uint64_t rotation_period; /* an active key signs this long (24h) */
        uint64_t publish_ahead;   /* a next key is published this long before it signs (1h) */
        uint64_t clock_skew;      /* how far relying parties' clocks may lag (5m); tokens'
                                   * nbf is this much before their iat */
        uint64_t retention;       /* a retired key stays published: at least the longest
                                   * max_ttl plus clock_skew, which is also the default */
        unsigned rsa_bits;        /* RS256 key size (2048) */
} KeysConfig;

/* audit.free_space_floor: bytes, or a share of the filesystem's size. */
typedef struct AuditFloor {
        enum { AUDIT_FLOOR_DEFAULT, AUDIT_FLOOR_BYTES, AUDIT_FLOOR_PERCENT } kind;
        uint64_t value; /* bytes, or percent (0 to 100); 0 disables the floor */
} AuditFloor;

#define AUDIT_FLOOR_DEFAULT_BYTES (64ull << 20)

/* The floor in bytes on a filesystem of `fs_size` bytes. */
uint64_t config_audit_floor_bytes(const AuditFloor *f, uint64_t fs_size);

typedef struct Config {
        atomic_uint
            refs; /* a reload swaps the daemon's config; jobs keep the one they began with */
        char *path;         /* absolute (config_load()), as reload re-reads it */
        char sha256[65];    /* hex SHA-256 of the file's content (config_load()); "" otherwise */
        char *issuer;
        char *workload_socket;
        char *admin_socket;
        char *state_directory;
        char *audit_database;
        int64_t audit_retention_ms;           /* 0: keep everything */
        uint64_t audit_checkpoint_every;      /* records (1000) */
        int64_t audit_checkpoint_interval_ms; /* (60s) */
        /* Denials (README §Audit): each uid gets audit_deny_budget records of its own per
         * audit_deny_interval; beyond that, and while the log's filesystem has less free space
         * than the floor, its denials are counted into deny_summary records. */
        uint64_t audit_deny_budget;        /* (100) */
        int64_t audit_deny_interval_ms;    /* (60s) */
        AuditFloor audit_free_space_floor; /* (64 MiB, at most a tenth of the filesystem) */
        uint64_t default_ttl, max_ttl;
        Limits limits;
        KeysConfig keys;
        char *master_key_file;   /* NULL: only the systemd credential master.key */
        char *publish_directory; /* NULL: JWKS and discovery are not written to files */
        /* `user`: the account brokerd, started as root, runs as once it has opened what needs
         * root (resolved when the config is loaded; never root). NULL: it stays who it is. */
        char *user;
        uid_t user_uid;
        gid_t user_gid; /* the user's primary group */
        Rule *rules;
        size_t n_rules;
        UpstreamConfig *upstreams;
        size_t n_upstreams;
} Config;

/* Parses JSON text. On failure returns -EINVAL and *ret_errors holds one line per problem
 * ("PATH: message"), NULL-terminated; free with strv_free(). `origin` names the file in
 * messages. */
int config_parse_text(const char *text, size_t len, const char *origin, Config **ret,
                      char ***ret_errors);
int config_load(const char *path, Config **ret, char ***ret_errors);
Config *config_ref(Config *c);
void config_unref(Config *c);
static inline void config_unrefp(Config **c)
{
        if (*c)
                config_unref(*c);
}

/* The upstream of that name, or NULL. */
const UpstreamConfig *config_find_upstream(const Config *c, const char *name);
/* Whether `rule` lets its callers use the upstream `name`. */
bool rule_allows_upstream(const Rule *rule, const char *name);

/* The longest token lifetime any rule allows. */
uint64_t config_longest_ttl(const Config *c);

/* Settings that cannot change without a restart (sockets, directories, databases). Returns
 * the first such JSON path that differs, or NULL. */
const char *config_restart_only_change(const Config *old, const Config *new);
