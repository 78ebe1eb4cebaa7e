#include "policy/config.h"

#include <grp.h>
#include <limits.h>
#include <jansson.h>
#include <pwd.h>
#include <sodium.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "escape.h"
#include "json-util.h"
#include "macro.h"
#include "message.h"
#include "pathsafe.h"
#include "policy/confparse.h"
#include "policy/policy.h"
#include "policy/subject.h"
#include "timeutil.h"

#define CONFIG_FILE_MAX (4u * 1024 * 1024)
#define RULES_MAX       4096u
#define PATTERN_MAX     4096u

static void parse_listen(Problems *p, json_t *root, Config *c)
{
        bool ok;
        json_t *l = conf_member(p, root, "", "listen", true);

        if (!l)
                return;
        conf_check_object(p, l, "listen", &ok);
        if (!ok)
                return;
        conf_check_unknown_keys(p, l, "listen", (const char *const[]){"workload", "admin", NULL});

        const size_t max = sizeof(((struct sockaddr_un *) NULL)->sun_path) - 1;
        conf_get_path(p, l, "listen", "workload", max, &c->workload_socket);
        conf_get_path(p, l, "listen", "admin", max, &c->admin_socket);
        if (c->workload_socket && c->admin_socket &&
            strcmp(c->workload_socket, c->admin_socket) == 0)
                conf_problem(p, "listen.admin", "must differ from listen.workload");
}

uint64_t config_audit_floor_bytes(const AuditFloor *f, uint64_t fs_size)
{
        switch (f->kind) {
        case AUDIT_FLOOR_BYTES:
                return f->value;
        case AUDIT_FLOOR_PERCENT:
                return fs_size / 100 * f->value + fs_size % 100 * f->value / 100;
        default:
                return MIN(AUDIT_FLOOR_DEFAULT_BYTES, fs_size / 10);
        }
}

/* audit.free_space_floor: integer bytes, or a string: a number with K, M, G or T (powers of
 * 1024), or a percentage of the filesystem ("5%"). */
static void get_audit_floor(Problems *p, json_t *a, AuditFloor *ret)
{
        static const char units[] = "KMGT";
        json_t *v = json_object_get(a, "free_space_floor");
        const char *kp = "audit.free_space_floor", *s, *u;
        unsigned long long n;
        char *end;

        if (!v)
                return;
        if (json_is_integer(v)) {
                if (json_integer_value(v) < 0) {
                        conf_problem(p, kp, "must not be negative");
                        return;
                }
                *ret = (AuditFloor){AUDIT_FLOOR_BYTES, (uint64_t) json_integer_value(v)};
                return;
        }
        if (!json_is_string(v)) {
                conf_problem(p, kp,
                        "expected bytes (integer) or a string such as \"64M\" or \"5%%\", got %s",
                        conf_type_name(v));
                return;
        }
        s = json_string_value(v);
        errno = 0;
        n = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : (end = (char *) s, 0);
        if (end == s || errno == ERANGE) {
                conf_problem(p, kp,
                        "invalid size \"%s\": expected a number of bytes, with K, M, G or T, or a "
                        "percentage (e.g. \"64M\", \"5%%\")",
                        s);
                return;
        }
        if (strcmp(end, "%") == 0) {
                if (n > 100)
                        conf_problem(p, kp, "a percentage must be between 0 and 100, got \"%s\"", s);
                else
                        *ret = (AuditFloor){AUDIT_FLOOR_PERCENT, n};
                return;
        }
        if (!end[0]) {
                *ret = (AuditFloor){AUDIT_FLOOR_BYTES, n};
                return;
        }
        u = end[1] == 0 ? strchr(units, end[0]) : NULL;
        if (!u || !end[0]) {
                conf_problem(p, kp,
                        "invalid size \"%s\": expected a number of bytes, with K, M, G or T, or a "
                        "percentage (e.g. \"64M\", \"5%%\")",
                        s);
                return;
        }
        unsigned shift = 10 * (unsigned) (u - units + 1);
        if (n > (UINT64_MAX >> shift)) {
                conf_problem(p, kp, "size too large: \"%s\"", s);
                return;
        }
        *ret = (AuditFloor){AUDIT_FLOOR_BYTES, (uint64_t) n << shift};
}

static void parse_audit(Problems *p, json_t *root, Config *c)
{
        bool ok;
        json_t *a = conf_member(p, root, "", "audit", true);

        c->audit_checkpoint_every = 1000;
        c->audit_checkpoint_interval_ms = 60 * 1000;
        c->audit_deny_budget = 100;
        c->audit_deny_interval_ms = 60 * 1000;
        c->audit_free_space_floor = (AuditFloor){AUDIT_FLOOR_DEFAULT, 0};
        if (!a)
                return;
        conf_check_object(p, a, "audit", &ok);
        if (!ok)
                return;
        conf_check_unknown_keys(p, a, "audit",
                           (const char *const[]){"database", "retention", "checkpoint_every",
                                                 "checkpoint_interval", "deny_budget",
                                                 "deny_interval", "free_space_floor", NULL});
        conf_get_path(p, a, "audit", "database", PATH_MAX, &c->audit_database);

        uint64_t v;
        if (conf_get_duration(p, a, "audit", "retention", 0, &v))
                c->audit_retention_ms = (int64_t) v * 1000;
        if (conf_get_uint(p, a, "audit", "checkpoint_every", 1, 1000000, &v))
                c->audit_checkpoint_every = v;
        if (conf_get_duration(p, a, "audit", "checkpoint_interval", 1, &v))
                c->audit_checkpoint_interval_ms = (int64_t) v * 1000;
        /* 0: every denial goes into a summary. */
        if (conf_get_uint(p, a, "audit", "deny_budget", 0, 1000000, &v))
                c->audit_deny_budget = v;
        if (conf_get_duration(p, a, "audit", "deny_interval", 1, &v)) {
                if (v > 24 * 3600)
                        conf_problem(p, "audit.deny_interval", "must be at most 24h");
                else
                        c->audit_deny_interval_ms = (int64_t) v * 1000;
        }
        get_audit_floor(p, a, &c->audit_free_space_floor);
}

static void parse_tokens(Problems *p, json_t *root, Config *c)
{
        bool ok;
        json_t *t = json_object_get(root, "tokens");

        c->default_ttl = 5 * 60;
        c->max_ttl = 60 * 60;
        if (!t)
                return;
        /* Relations are checked only between values the file holds: a member already reported
         * as invalid must not come back through its default in a second, misleading problem
         * ("rules[0].max_ttl: 7200s is longer than tokens.max_ttl (3600s)" when the file says
         * "2h" in the wrong place). An unusable max_ttl therefore bounds nothing. */
        conf_check_object(p, t, "tokens", &ok);
        if (!ok) {
                c->max_ttl = DURATION_MAX_SEC;
                return;
        }
        conf_check_unknown_keys(p, t, "tokens", (const char *const[]){"default_ttl", "max_ttl", NULL});
        bool ok_default = !json_object_get(t, "default_ttl") ||
                          conf_get_duration(p, t, "tokens", "default_ttl", 1, &c->default_ttl);
        if (json_object_get(t, "max_ttl") &&
            !conf_get_duration(p, t, "tokens", "max_ttl", 1, &c->max_ttl)) {
                c->max_ttl = DURATION_MAX_SEC;
                return;
        }
        if (ok_default && c->default_ttl > c->max_ttl)
                conf_problem(p, "tokens.default_ttl", "%llus is longer than tokens.max_ttl (%llus)",
                        (unsigned long long) c->default_ttl, (unsigned long long) c->max_ttl);
}

static void parse_limits(Problems *p, json_t *root, Config *c)
{
        bool ok;
        json_t *l = json_object_get(root, "limits");
        Limits *m = &c->limits;

        *m = (Limits){
            .max_connections = 1024,
            .max_connections_per_uid = 256,
            .max_connections_per_identity = 64, /* a quarter of the per-uid limit */
            .connect_rate = 200,
            .connect_burst = 400,
            .rate = 1000,
            .burst = 2000,
            .idle_timeout = 60,
            .read_timeout = 5,
        };
        if (!l)
                return;
        conf_check_object(p, l, "limits", &ok);
        if (!ok)
                return;
        conf_check_unknown_keys(p, l, "limits",
                           (const char *const[]){"max_connections", "max_connections_per_uid",
                                                 "max_connections_per_identity", "connect_rate",
                                                 "connect_burst", "rate", "burst", "idle_timeout",
                                                 "read_timeout", NULL});
        /* As in parse_tokens(): no relation problem about a default standing in for a value
         * already reported as invalid. */
        bool ok_total = !json_object_get(l, "max_connections") ||
                        conf_get_uint(p, l, "limits", "max_connections", 1, 65536, &m->max_connections);
        bool ok_per_uid = !json_object_get(l, "max_connections_per_uid") ||
                          conf_get_uint(p, l, "limits", "max_connections_per_uid", 1, 65536,
                                   &m->max_connections_per_uid);
        bool ok_rate =
            !json_object_get(l, "rate") || conf_get_uint(p, l, "limits", "rate", 0, 10000000, &m->rate);
        conf_get_uint(p, l, "limits", "burst", 0, 100000000, &m->burst);
        bool ok_connect_rate =
            !json_object_get(l, "connect_rate") ||
            conf_get_uint(p, l, "limits", "connect_rate", 0, 10000000, &m->connect_rate);
        conf_get_uint(p, l, "limits", "connect_burst", 0, 100000000, &m->connect_burst);
        if (ok_connect_rate && m->connect_rate > 0 && m->connect_burst < 1)
                conf_problem(p, "limits.connect_burst",
                        "must be at least 1 when limits.connect_rate is not 0");
        conf_get_duration(p, l, "limits", "idle_timeout", 1, &m->idle_timeout);
        conf_get_duration(p, l, "limits", "read_timeout", 1, &m->read_timeout);
        bool has_per_id = json_object_get(l, "max_connections_per_identity");
        bool ok_per_id = !has_per_id || conf_get_uint(p, l, "limits", "max_connections_per_identity", 1,
                                                 65536, &m->max_connections_per_identity);
        if (!has_per_id)
                m->max_connections_per_identity = MAX(m->max_connections_per_uid / 4, 1);
        else if (ok_per_id && ok_per_uid &&
                 m->max_connections_per_identity > m->max_connections_per_uid)
                conf_problem(p, "limits.max_connections_per_identity",
                        "%llu is more than limits.max_connections_per_uid (%llu)",
                        (unsigned long long) m->max_connections_per_identity,
                        (unsigned long long) m->max_connections_per_uid);
        if (ok_total && ok_per_uid && m->max_connections_per_uid > m->max_connections)
                conf_problem(p, "limits.max_connections_per_uid",
                        "%llu is more than limits.max_connections (%llu)",
                        (unsigned long long) m->max_connections_per_uid,
                        (unsigned long long) m->max_connections);
        if (ok_rate && m->rate > 0 && m->burst < 1)
                conf_problem(p, "limits.burst", "must be at least 1 when limits.rate is not 0");
}

const UpstreamConfig *config_find_upstream(const Config *c, const char *name)
{
        for (size_t i = 0; i < c->n_upstreams; i++)
                if (strcmp(c->upstreams[i].name, name) == 0)
                        return &c->upstreams[i];
        return NULL;
}

bool rule_allows_upstream(const Rule *rule, const char *name)
{
        for (size_t i = 0; i < rule->n_upstreams; i++)
                if (strcmp(rule->upstreams[i], name) == 0)
                        return true;
        return false;
}

uint64_t config_longest_ttl(const Config *c)
{
        uint64_t m = c->max_ttl;

        for (size_t i = 0; i < c->n_rules; i++)
                m = MAX(m, c->rules[i].max_ttl);
        return m;
}

/* After the rules, whose max_ttl the retention must cover. */
static void parse_keys(Problems *p, json_t *root, Config *c)
{
        KeysConfig *k = &c->keys;
        bool ok, has_retention = false;
        uint64_t bits;
        json_t *o = json_object_get(root, "keys");

        *k = (KeysConfig){
            .rotation_period = 24 * 3600,
            .publish_ahead = 3600,
            .clock_skew = 300,
            .rsa_bits = 2048,
        };
        if (o) {
                conf_check_object(p, o, "keys", &ok);
                if (ok) {
                        conf_check_unknown_keys(p, o, "keys",
                                           (const char *const[]){"rotation_period", "publish_ahead",
                                                                 "clock_skew", "retention",
                                                                 "rsa_bits", NULL});
                        conf_get_duration(p, o, "keys", "rotation_period", 1, &k->rotation_period);
                        conf_get_duration(p, o, "keys", "publish_ahead", 0, &k->publish_ahead);
                        conf_get_duration(p, o, "keys", "clock_skew", 0, &k->clock_skew);
                        has_retention = conf_get_duration(p, o, "keys", "retention", 0, &k->retention);
                        if (conf_get_uint(p, o, "keys", "rsa_bits", 2048, 4096, &bits)) {
                                if (bits % 1024 != 0)
                                        conf_problem(p, "keys.rsa_bits", "must be 2048, 3072 or 4096");
                                k->rsa_bits = (unsigned) bits;
                        }
                }
        }
        if (k->publish_ahead >= k->rotation_period)
                conf_problem(p, "keys.publish_ahead",
                        "%llus must be shorter than keys.rotation_period (%llus)",
                        (unsigned long long) k->publish_ahead,
                        (unsigned long long) k->rotation_period);

        /* A retired key must outlive every token it signed, wherever the relying party's
         * clock stands. */
        uint64_t need = config_longest_ttl(c) + k->clock_skew;
        if (!has_retention)
                k->retention = need;
        else if (k->retention < need)
                conf_problem(p, "keys.retention",
                        "%llus is shorter than the longest token lifetime plus keys.clock_skew "
                        "(%llus): tokens would outlive the key that verifies them",
                        (unsigned long long) k->retention, (unsigned long long) need);
}

static void parse_match(Problems *p, json_t *m, const char *path, RuleMatch *ret)
{
        bool ok;
        uint64_t u;

        conf_check_object(p, m, path, &ok);
        if (!ok)
                return;
        conf_check_unknown_keys(p, m, path,
                           (const char *const[]){"uid", "gid", "user", "group", "exe", "unit",
                                                 "cgroup", "container", NULL});

        if (conf_get_uint(p, m, path, "uid", 0, 4294967294u, &u)) {
                ret->has_uid = true;
                ret->uid = (uid_t) u;
        }
        if (conf_get_uint(p, m, path, "gid", 0, 4294967294u, &u)) {
                ret->has_gid = true;
                ret->gid = (gid_t) u;
        }

        char kp[256];
        /* Names are resolved now: a rule naming a user that does not exist is a mistake the
         * operator should hear about at --check, not a rule that silently never matches. */
        if (conf_get_string(p, m, path, "user", false, 256, &ret->user)) {
                struct passwd pw, *res = NULL;
                char buf[4096];
                conf_join_path(kp, sizeof(kp), path, "user");
                if (getpwnam_r(ret->user, &pw, buf, sizeof(buf), &res) != 0 || !res)
                        conf_problem(p, kp, "no such user \"%s\"", ret->user);
                else {
                        ret->has_user = true;
                        ret->user_uid = res->pw_uid;
                }
        }
        if (conf_get_string(p, m, path, "group", false, 256, &ret->group)) {
                struct group gr, *res = NULL;
                char buf[16384];
                conf_join_path(kp, sizeof(kp), path, "group");
                if (getgrnam_r(ret->group, &gr, buf, sizeof(buf), &res) != 0 || !res)
                        conf_problem(p, kp, "no such group \"%s\"", ret->group);
                else {
                        ret->has_group = true;
                        ret->group_gid = res->gr_gid;
                }
        }
        if (conf_get_string(p, m, path, "exe", false, PATTERN_MAX, &ret->exe) && ret->exe[0] != '/') {
                conf_join_path(kp, sizeof(kp), path, "exe");
                conf_problem(p, kp, "must be an absolute path or glob, got \"%s\"", ret->exe);
        }
        /* Anyone may run the program at a path and make it run their own code (LD_PRELOAD,
         * ptrace of their own process): exe says which file runs, never who runs it. A pin
         * given but invalid has its own problem; this one is only about a missing pin. */
        if (ret->exe && !json_object_get(m, "uid") && !json_object_get(m, "user") &&
            !json_object_get(m, "gid") && !json_object_get(m, "group") &&
            !json_object_get(m, "unit")) {
                conf_join_path(kp, sizeof(kp), path, "exe");
                conf_problem(p, kp,
                        "needs uid, user, gid, group or unit in the same match: any user can run "
                        "the program at this path and make it run code of their own "
                        "(LD_PRELOAD, ptrace), so exe alone identifies no one");
        }
        conf_get_string(p, m, path, "unit", false, 256, &ret->unit);
        if (conf_get_string(p, m, path, "cgroup", false, PATTERN_MAX, &ret->cgroup) &&
            ret->cgroup[0] != '/') {
                conf_join_path(kp, sizeof(kp), path, "cgroup");
                conf_problem(p, kp, "must start with '/', got \"%s\"", ret->cgroup);
        }
        if (conf_get_string(p, m, path, "container", false, 256, &ret->container) &&
            !strchr(ret->container, ':')) {
                conf_join_path(kp, sizeof(kp), path, "container");
                conf_problem(p, kp, "expected RUNTIME:ID (glob allowed, e.g. \"docker:*\"), got \"%s\"",
                        ret->container);
        }
}

static void parse_rule(Problems *p, json_t *r, size_t idx, const Config *c, Rule *ret)
{
        char path[64], kp[128], err[256];
        bool ok;

        snprintf(path, sizeof(path), "rules[%zu]", idx);
        conf_check_object(p, r, path, &ok);
        if (!ok)
                return;
        conf_check_unknown_keys(p, r, path,
                           (const char *const[]){"name", "match", "subject", "audiences", "scopes",
                                                 "max_ttl", "alg", "upstreams", NULL});

        if (conf_get_string(p, r, path, "name", true, BROKER_NAME_MAX, &ret->name) &&
            !broker_name_valid(ret->name)) {
                conf_join_path(kp, sizeof(kp), path, "name");
                conf_problem(p, kp, "\"%s\" may only use letters, digits, '.', '_' and '-'", ret->name);
        }

        json_t *m = json_object_get(r, "match");
        if (m) {
                conf_join_path(kp, sizeof(kp), path, "match");
                parse_match(p, m, kp, &ret->match);
        }

        if (conf_get_string(p, r, path, "subject", true, SUBJECT_MAX, &ret->subject) &&
            subject_template_check(ret->subject, err, sizeof(err)) < 0) {
                conf_join_path(kp, sizeof(kp), path, "subject");
                conf_problem(p, kp, "%s", err);
        }

        /* A rule for upstreams only may list no audience of the broker's own. */
        conf_string_array(
            p, r, path, "audiences", true, !json_object_get(r, "upstreams"), AUDIENCE_MAX,
            audience_pattern_valid,
            "audience (a '*' must be a whole DNS label, as in https://*.example.com)",
            &ret->audiences, &ret->n_audiences);
        conf_string_array(p, r, path, "scopes", false, false, SCOPE_MAX, scope_token_valid,
                           "scope", &ret->scopes, &ret->n_scopes);
        conf_string_array(p, r, path, "upstreams", false, true, BROKER_NAME_MAX,
                          broker_name_valid, "upstream name", &ret->upstreams,
                          &ret->n_upstreams);
        for (size_t i = 0; i < ret->n_upstreams; i++)
                if (!config_find_upstream(c, ret->upstreams[i])) {
                        snprintf(kp, sizeof(kp), "%s.upstreams[%zu]", path, i);
                        conf_problem(p, kp, "no upstream named \"%s\" in upstreams",
                                     ret->upstreams[i]);
                }

        ret->max_ttl = c->max_ttl;
        if (conf_get_duration(p, r, path, "max_ttl", 1, &ret->max_ttl) && ret->max_ttl > c->max_ttl) {
                conf_join_path(kp, sizeof(kp), path, "max_ttl");
                conf_problem(p, kp, "%llus is longer than tokens.max_ttl (%llus)",
                        (unsigned long long) ret->max_ttl, (unsigned long long) c->max_ttl);
        }

        ret->alg = ALG_DEFAULT;
        json_t *a = json_object_get(r, "alg");
        if (a) {
                conf_join_path(kp, sizeof(kp), path, "alg");
                if (!json_is_string(a))
                        conf_problem(p, kp, "expected string, got %s", conf_type_name(a));
                else if (alg_from_string(json_string_value(a)) < 0)
                        conf_problem(p, kp,
                                "unsupported algorithm \"%s\" (supported: EdDSA, ES256, RS256)",
                                json_string_value(a));
                else
                        ret->alg = alg_from_string(json_string_value(a));
        }
}

static void parse_rules(Problems *p, json_t *root, Config *c)
{
        json_t *a = conf_member(p, root, "", "rules", true);
        size_t i;
        json_t *v;

        if (!a)
                return;
        if (!json_is_array(a)) {
                conf_problem(p, "rules", "expected array, got %s", conf_type_name(a));
                return;
        }
        if (json_array_size(a) > RULES_MAX) {
                conf_problem(p, "rules", "more than %u rules", RULES_MAX);
                return;
        }
        c->rules = calloc(json_array_size(a) + 1, sizeof(Rule));
        if (!c->rules) {
                p->oom = true;
                return;
        }
        c->n_rules = json_array_size(a);
        json_array_foreach (a, i, v)
                parse_rule(p, v, i, c, &c->rules[i]);

        for (size_t x = 0; x < c->n_rules; x++)
                for (size_t y = 0; y < x; y++)
                        if (c->rules[x].name && c->rules[y].name &&
                            strcmp(c->rules[x].name, c->rules[y].name) == 0) {
                                char kp[64];
                                snprintf(kp, sizeof(kp), "rules[%zu].name", x);
                                conf_problem(p, kp, "\"%s\" is already the name of rules[%zu]",
                                        c->rules[x].name, y);
                        }
}

/* `user`: resolved now, so that --check and a start say it when the account is missing. */
static void parse_user(Problems *p, json_t *root, Config *c)
{
        struct passwd pw, *res = NULL;
        char buf[4096];

        if (!conf_get_string(p, root, "", "user", false, 256, &c->user))
                return;
        if (getpwnam_r(c->user, &pw, buf, sizeof(buf), &res) != 0 || !res)
                conf_problem(p, "user", "no such user \"%s\"", c->user);
        else if (res->pw_uid == 0)
                conf_problem(p, "user", "\"%s\" is root; leave \"user\" out to run as root",
                             c->user);
        else {
                c->user_uid = res->pw_uid;
                c->user_gid = res->pw_gid;
        }
}

static void parse_issuer(Problems *p, json_t *root, Config *c)
{
        /* OIDC discovery needs an https URL without query or fragment; a trailing '/' would
         * make "<issuer>/.well-known/..." ambiguous for relying parties. */
        if (!conf_get_string(p, root, "", "issuer", true, 1024, &c->issuer))
                return;
        if (strncmp(c->issuer, "https://", 8) != 0 || strlen(c->issuer) <= 8)
                conf_problem(p, "issuer", "must be an https:// URL, got \"%s\"", c->issuer);
        else if (strpbrk(c->issuer, "?# "))
                conf_problem(p, "issuer", "must not contain a query, fragment or space");
        else if (c->issuer[strlen(c->issuer) - 1] == '/')
                conf_problem(p, "issuer", "must not end with '/'");
}

int config_parse_text(const char *text, size_t len, const char *origin, Config **ret,
                      char ***ret_errors)
{
        _cleanup_(json_decrefp) json_t *root = NULL;
        _cleanup_(config_unrefp) Config *c = NULL;
        Problems p = {};
        json_error_t jerr;

        c = calloc(1, sizeof(Config));
        if (!c)
                return -ENOMEM;
        atomic_init(&c->refs, 1);
        if (!(c->path = strdup(origin)))
                return -ENOMEM;

        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root) {
                char where[64];
                snprintf(where, sizeof(where), "line %d column %d", jerr.line, jerr.column);
                conf_problem(&p, where, "invalid JSON: %s", jerr.text);
        } else if (!json_is_object(root)) {
                conf_problem(&p, "(top level)", "expected object, got %s", conf_type_name(root));
        } else {
                conf_check_unknown_keys(&p, root, "",
                                   (const char *const[]){"issuer", "listen", "state_directory",
                                                         "audit", "tokens", "rules", "limits",
                                                         "keys", "master_key_file",
                                                         "publish_directory", "upstreams",
                                                         "user", NULL});
                parse_issuer(&p, root, c);
                parse_listen(&p, root, c);
                conf_get_path(&p, root, "", "state_directory", PATH_MAX, &c->state_directory);
                parse_audit(&p, root, c);
                parse_tokens(&p, root, c);
                parse_limits(&p, root, c);
                /* before the rules, which name upstreams */
                upstream_config_parse(&p, root, &c->upstreams, &c->n_upstreams);
                parse_rules(&p, root, c);
                parse_keys(&p, root, c);
                if (json_object_get(root, "master_key_file"))
                        conf_get_path(&p, root, "", "master_key_file", PATH_MAX, &c->master_key_file);
                if (json_object_get(root, "publish_directory"))
                        conf_get_path(&p, root, "", "publish_directory", PATH_MAX,
                                 &c->publish_directory);
                parse_user(&p, root, c);
        }

        if (p.oom) {
                strv_free(p.lines);
                return -ENOMEM;
        }
        if (p.n > 0) {
                *ret_errors = p.lines;
                return -EINVAL;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

/* One line for config_load()'s caller, who names the file before it. */
static int unsafe_file(const char *why, char ***ret_errors)
{
        char **lines = calloc(2, sizeof(char *));

        if (!lines ||
            asprintf(&lines[0], "refusing a configuration others could change: %s", why) < 0) {
                free(lines);
                return -ENOMEM;
        }
        *ret_errors = lines;
        return -EPERM;
}

int config_load(const char *path, Config **ret, char ***ret_errors)
{
        _cleanup_(config_unrefp) Config *c = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        Problems p = {};
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL, *abs = NULL;
        char err[512];
        size_t n;
        int r;

        /* Whoever can change the file grants any subject and picks the master key: it must be
         * root's or ours, and so must be its directory (start, --check and reload alike). */
        r = path_open_protected_file(path, &fd, err, sizeof(err));
        if (r == -EPERM)
                return unsafe_file(err, ret_errors);
        if (r < 0)
                return r;
        f = fdopen(fd, "r");
        if (!f)
                return -errno;
        fd = -EBADF; /* the FILE owns it now */
        buf = malloc(CONFIG_FILE_MAX + 1);
        if (!buf)
                return -ENOMEM;
        n = fread(buf, 1, CONFIG_FILE_MAX + 1, f);
        if (ferror(f))
                return -EIO;
        if (n > CONFIG_FILE_MAX)
                return -EFBIG;
        /* Absolute: a reload re-reads it from wherever the daemon's working directory is then,
         * and the audit record names it. */
        r = path_make_absolute(path, &abs);
        if (r < 0)
                return r;
        r = config_parse_text(buf, n, abs, &c, ret_errors);
        if (r < 0)
                return r;
        /* What was loaded, for config_reloaded records. */
        unsigned char digest[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(digest, (const unsigned char *) buf, n);
        sodium_bin2hex(c->sha256, sizeof(c->sha256), digest, sizeof(digest));
        /* The files the configuration names that decide whom the broker trusts. */
        upstream_config_check_files(&p, c->upstreams, c->n_upstreams);
        if (p.oom) {
                strv_free(p.lines);
                return -ENOMEM;
        }
        if (p.n > 0) {
                *ret_errors = p.lines;
                return -EINVAL;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

static void rule_done(Rule *r)
{
        free(r->name);
        free(r->match.user);
        free(r->match.group);
        free(r->match.exe);
        free(r->match.unit);
        free(r->match.cgroup);
        free(r->match.container);
        free(r->subject);
        strv_free(r->audiences);
        strv_free(r->scopes);
        strv_free(r->upstreams);
}

Config *config_ref(Config *c)
{
        atomic_fetch_add(&c->refs, 1);
        return c;
}

void config_unref(Config *c)
{
        if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
                return;
        for (size_t i = 0; i < c->n_rules; i++)
                rule_done(&c->rules[i]);
        free(c->rules);
        upstream_config_free(c->upstreams, c->n_upstreams);
        free(c->path);
        free(c->issuer);
        free(c->workload_socket);
        free(c->admin_socket);
        free(c->state_directory);
        free(c->audit_database);
        free(c->master_key_file);
        free(c->publish_directory);
        free(c->user);
        free(c);
}

static bool streq_ptr(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

const char *config_restart_only_change(const Config *old, const Config *new)
{
        if (!streq_ptr(old->workload_socket, new->workload_socket))
                return "listen.workload";
        if (!streq_ptr(old->admin_socket, new->admin_socket))
                return "listen.admin";
        if (!streq_ptr(old->state_directory, new->state_directory))
                return "state_directory";
        if (!streq_ptr(old->audit_database, new->audit_database))
                return "audit.database";
        if (old->audit_retention_ms != new->audit_retention_ms)
                return "audit.retention";
        if (old->audit_checkpoint_every != new->audit_checkpoint_every ||
            old->audit_checkpoint_interval_ms != new->audit_checkpoint_interval_ms)
                return "audit.checkpoint_every/checkpoint_interval";
        if (!streq_ptr(old->master_key_file, new->master_key_file))
                return "master_key_file";
        if (!streq_ptr(old->publish_directory, new->publish_directory))
                return "publish_directory";
        if (!streq_ptr(old->user, new->user))
                return "user";
        return NULL;
}
