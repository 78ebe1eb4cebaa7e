/* First-match policy: which rule decides, what each selector accepts and refuses, audiences,
 * scopes, lifetimes, subjects, and that a denial never describes rules the caller did not hit.
 * Policies are real configs parsed by config_parse_text(); identities are built by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy/config.h"
#include "identity/identity.h"
#include "macro.h"
#include "policy/policy.h"
#include "testutil.h"

/* JSON text with ' for " (none of the tests needs a literal '). */
static char *unquote(const char *s)
{
        char *t = strdup(s);

        assert_non_null(t);
        for (char *p = t; *p; p++)
                if (*p == '\'')
                        *p = '"';
        return t;
}

/* A config around the given "rules" array; `tokens` is an object or NULL. Both are JSON written
 * with single quotes. */
static Config *load(const char *tokens_sq, const char *rules_sq)
{
        _cleanup_free_ char *text = NULL;
        _cleanup_free_ char *tokens = tokens_sq ? unquote(tokens_sq) : NULL;
        _cleanup_free_ char *rules = unquote(rules_sq);
        Config *c = NULL;
        char **errs = NULL;

        assert_true(
            asprintf(&text,
                     "{\"issuer\": \"https://broker.example\","
                     " \"listen\": {\"workload\": \"/run/w.sock\", \"admin\": \"/run/a.sock\"},"
                     " \"state_directory\": \"/var/lib/brokerd\","
                     " \"audit\": {\"database\": \"/var/lib/brokerd/audit.db\"},"
                     " %s%s%s \"rules\": %s}",
                     tokens ? "\"tokens\": " : "", tokens ? tokens : "", tokens ? "," : "",
                     rules) > 0);
        int r = config_parse_text(text, strlen(text), "policy.json", &c, &errs);
        if (r != 0) {
                for (char **e = errs; e && *e; e++)
                        print_error("  %s\n", *e);
                strv_free(errs);
                fail_msg("config rejected (%d): %s", r, text);
        }
        return c;
}

/* A caller with nothing but credentials; tests add what they need, overriding the defaults
 * (hence -Woverride-init off for this file). */
#pragma GCC diagnostic ignored "-Woverride-init"
#define CALLER(...) ((Identity){.pid = 4242, .uid = 1000, .gid = 1000, .pidfd = -1, __VA_ARGS__})

/* A caller that runs the file `file`, its /proc/PID/exe reading `exe`: the same path, unless
 * the caller bind-mounted `file` over `exe` in a mount namespace of its own. */
static Identity running(const char *exe, const char *file)
{
        struct stat st;

        if (stat(file, &st) < 0)
                fail_msg("stat %s: %s", file, strerror(errno));
        return CALLER(.exe = (char *) exe, .has_exe_file = true, .exe_dev = st.st_dev,
                      .exe_ino = st.st_ino);
}

static const char *decide_rule(const Config *c, const Identity *id)
{
        const Rule *r = policy_find_rule(c, id);
        return r ? r->name : NULL;
}

static void assert_rule(const Config *c, const Identity *id, const char *want)
{
        const char *got = decide_rule(c, id);

        if (!want && got)
                fail_msg("expected no rule, got \"%s\"", got);
        if (want && (!got || strcmp(got, want) != 0))
                fail_msg("expected rule \"%s\", got %s", want, got ? got : "none");
}

/* Decides a request for `aud` with the given scopes and optional ttl (< 0: none). */
static Decision decide(const Config *c, const Identity *id, const char *aud,
                       const char *const *scopes, size_t n_scopes, int64_t ttl)
{
        Decision d;

        memset(&d, 0xAA, sizeof(d)); /* policy_decide must fill every field it promises */
        assert_int_equal(policy_decide(c, id, aud, scopes, n_scopes, ttl >= 0, ttl, &d), 0);
        return d;
}

static Decision grant(const Config *c, const Identity *id, const char *aud,
                      const char *const *scopes, size_t n_scopes, int64_t ttl)
{
        Decision d = decide(c, id, aud, scopes, n_scopes, ttl);

        if (d.reason != DENY_NONE)
                fail_msg("expected a grant for \"%s\", got %s: %s", aud,
                         deny_reason_to_string(d.reason), d.message);
        assert_non_null(d.rule);
        assert_non_null(d.subject);
        return d;
}

static Decision denial(const Config *c, const Identity *id, const char *aud,
                       const char *const *scopes, size_t n_scopes, DenyReason want)
{
        Decision d = decide(c, id, aud, scopes, n_scopes, -1);

        if (d.reason != want)
                fail_msg("expected %s for \"%s\", got %s (%s)", deny_reason_to_string(want), aud,
                         deny_reason_to_string(d.reason), d.reason ? d.message : "granted");
        assert_null(d.subject);
        assert_true(strlen(d.message) > 0 && strlen(d.message) < sizeof(d.message));
        return d;
}

/* ---- which rule decides ------------------------------------------------------------------- */

static void test_first_match_order(void **state)
{
        /* A broad rule listed first wins over a narrower, later one. */
        Config *c = load(NULL, "[{'name': 'broad', 'match': {'gid': 1000},"
                               "  'subject': 'b', 'audiences': ['https://broad']},"
                               " {'name': 'narrow', 'match': {'uid': 1000, 'gid': 1000},"
                               "  'subject': 'n', 'audiences': ['https://narrow']}]");
        Identity id = CALLER();

        assert_rule(c, &id, "broad");
        /* ...and the later rule's audiences do not help: the first match decides alone. */
        Decision d = denial(c, &id, "https://narrow", NULL, 0, DENY_AUDIENCE);
        assert_string_equal(d.rule->name, "broad");
        d = grant(c, &id, "https://broad", NULL, 0, -1);
        assert_string_equal(d.subject, "b");
        decision_done(&d);
        config_unref(c);

        /* Reversed order: the narrow rule now decides for uid 1000, the broad one for others. */
        c = load(NULL, "[{'name': 'narrow', 'match': {'uid': 1000, 'gid': 1000},"
                       "  'subject': 'n', 'audiences': ['https://narrow']},"
                       " {'name': 'broad', 'match': {'gid': 1000},"
                       "  'subject': 'b', 'audiences': ['https://broad']}]");
        assert_rule(c, &id, "narrow");
        id.uid = 1001;
        assert_rule(c, &id, "broad");
        id.gid = 1001;
        assert_rule(c, &id, NULL);
        config_unref(c);
}

static void test_default_deny(void **state)
{
        Config *c = load(NULL, "[{'name': 'root-only', 'match': {'uid': 0},"
                               "  'subject': 's', 'audiences': ['*']}]");
        Identity id = CALLER();

        Decision d = denial(c, &id, "anything", NULL, 0, DENY_NO_RULE);
        assert_null(d.rule);
        assert_string_equal(deny_reason_to_string(d.reason), "no_matching_rule");
        config_unref(c);

        /* No rules at all: everyone is denied. */
        c = load(NULL, "[]");
        id = CALLER(.uid = 0, .gid = 0);
        d = denial(c, &id, "anything", NULL, 0, DENY_NO_RULE);
        assert_null(d.rule);
        assert_null(policy_find_rule(c, &id));
        config_unref(c);
}

static void test_empty_match_matches_everyone(void **state)
{
        Config *c = load(NULL, "[{'name': 'all', 'match': {}, 'subject': 's',"
                               "  'audiences': ['a']},"
                               " {'name': 'never', 'subject': 's', 'audiences': ['a']}]");
        Identity bare = CALLER(.uid = 65534, .gid = 65534); /* no user, exe, unit, cgroup... */
        Identity full = CALLER(.uid = 0, .gid = 0, .user = (char *) "root",
                               .exe = (char *) "/usr/bin/x", .cgroup = (char *) "/init.scope",
                               .unit = (char *) "init.scope", .container = (char *) "docker:ab");

        assert_rule(c, &bare, "all");
        assert_rule(c, &full, "all");
        /* A rule without "match" is the same as an empty one. */
        assert_true(rule_matches(&c->rules[1], &bare));
        assert_true(rule_matches(&c->rules[1], &full));
        config_unref(c);
}

/* ---- selectors ---------------------------------------------------------------------------- */

enum { R_UID, R_GID, R_USER, R_GROUP, R_EXE, R_UNIT, R_CGROUP, R_CONTAINER, R_ALL, N_RULES };

static Config *selector_config(void)
{
        Config *c = load(
            NULL,
            "[{'name': 'uid', 'match': {'uid': 33}, 'subject': 's', 'audiences': ['a']},"
            " {'name': 'gid', 'match': {'gid': 100}, 'subject': 's', 'audiences': ['a']},"
            " {'name': 'user', 'match': {'user': 'daemon'}, 'subject': 's', 'audiences': ['a']},"
            " {'name': 'group', 'match': {'group': 'nogroup'}, 'subject': 's', 'audiences': ['a']},"
            " {'name': 'exe', 'match': {'exe': '/usr/bin/*', 'uid': 1000},"
            "  'subject': 's', 'audiences': ['a']},"
            " {'name': 'unit', 'match': {'unit': 'web-*.service'},"
            "  'subject': 's', 'audiences': ['a']},"
            " {'name': 'cgroup', 'match': {'cgroup': '/system.slice/*.service'},"
            "  'subject': 's', 'audiences': ['a']},"
            " {'name': 'container', 'match': {'container': 'docker:*'},"
            "  'subject': 's', 'audiences': ['a']},"
            " {'name': 'all', 'match': {'uid': 33, 'group': 'www-data', 'exe': '/usr/bin/*',"
            "   'unit': '*.service', 'cgroup': '/system.slice/*', 'container': 'podman:*'},"
            "  'subject': 's', 'audiences': ['a']}]");
        assert_int_equal(c->n_rules, N_RULES);
        return c;
}

static void assert_matches(const Config *c, int rule, const Identity *id, bool want)
{
        bool got = rule_matches(&c->rules[rule], id);
        if (got != want)
                fail_msg("rule \"%s\" %s the caller (uid %u gid %u exe %s unit %s cgroup %s "
                         "container %s)",
                         c->rules[rule].name, got ? "matches" : "does not match",
                         (unsigned) id->uid, (unsigned) id->gid, strna(id->exe), strna(id->unit),
                         strna(id->cgroup), strna(id->container));
}

/* assert_matches() for a caller that runs `file` with /proc/PID/exe reading `exe`. */
static void assert_running(const Config *c, int rule, const char *exe, const char *file, bool want)
{
        Identity id = running(exe, file);

        assert_matches(c, rule, &id, want);
}

static void test_selector_uid(void **state)
{
        Config *c = selector_config();

        assert_matches(c, R_UID, &CALLER(.uid = 33), true);
        assert_matches(c, R_UID, &CALLER(.uid = 34), false);
        assert_matches(c, R_UID, &CALLER(.uid = 0), false);
        /* The gid being 33 is not the uid being 33. */
        assert_matches(c, R_UID, &CALLER(.uid = 1000, .gid = 33), false);
        config_unref(c);
}

static void test_selector_gid(void **state)
{
        Config *c = selector_config();
        gid_t with_100[] = {4, 100, 200};
        gid_t without_100[] = {4, 101, 200};

        assert_matches(c, R_GID, &CALLER(.gid = 100), true); /* primary */
        assert_matches(c, R_GID, &CALLER(.gid = 1000, .groups = with_100, .n_groups = 3),
                       true); /* supplementary */
        assert_matches(c, R_GID, &CALLER(.gid = 1000, .groups = without_100, .n_groups = 3), false);
        assert_matches(c, R_GID, &CALLER(.gid = 1000), false);
        /* A uid of 100 is not membership in group 100. */
        assert_matches(c, R_GID, &CALLER(.uid = 100, .gid = 1000), false);
        /* n_groups bounds the array: an entry past it does not count. */
        assert_matches(c, R_GID, &CALLER(.gid = 1000, .groups = with_100, .n_groups = 1), false);
        config_unref(c);
}

static void test_selector_user(void **state)
{
        Config *c = selector_config();

        /* "daemon" is uid 1; the decision uses the uid, not the caller's name string. */
        assert_matches(c, R_USER, &CALLER(.uid = 1, .user = (char *) "daemon"), true);
        assert_matches(c, R_USER, &CALLER(.uid = 1), true);
        assert_matches(c, R_USER, &CALLER(.uid = 2, .user = (char *) "daemon"), false);
        assert_matches(c, R_USER, &CALLER(.uid = 1000, .gid = 1), false);
        config_unref(c);
}

static void test_selector_group(void **state)
{
        Config *c = selector_config();
        gid_t sup[] = {27, 65534};
        gid_t other[] = {27, 65533};

        /* "nogroup" is gid 65534: as primary group or as a supplementary one. */
        assert_matches(c, R_GROUP, &CALLER(.gid = 65534), true);
        assert_matches(c, R_GROUP, &CALLER(.groups = sup, .n_groups = 2), true);
        assert_matches(c, R_GROUP, &CALLER(.groups = other, .n_groups = 2), false);
        assert_matches(c, R_GROUP, &CALLER(.uid = 65534), false);
        assert_matches(c, R_GROUP, &CALLER(.group = (char *) "nogroup"), false);
        config_unref(c);
}

static void test_selector_exe(void **state)
{
        Config *c = selector_config();

        /* /usr/bin/env is in coreutils, on every Debian system. */
        assert_running(c, R_EXE, "/usr/bin/env", "/usr/bin/env", true);
        assert_running(c, R_EXE, "/usr/local/bin/env", "/usr/bin/env", false);
        assert_running(c, R_EXE, "/usr/bin", "/usr/bin", false);
        /* '*' stays inside /usr/bin. */
        assert_running(c, R_EXE, "/usr/bin/sub/tool", "/usr/bin/env", false);
        assert_running(c, R_EXE, "/tmp/usr/bin/x", "/usr/bin/env", false);
        /* The path matches but names another file as the daemon sees it: a bind mount in the
         * caller's own mount namespace, or no such file here at all. */
        assert_running(c, R_EXE, "/usr/bin/env", "/usr/bin/test", false);
        assert_running(c, R_EXE, "/usr/bin/no-such-program-brokerd-test", "/usr/bin/env", false);
        /* A path without the file is no value: the string alone never matches. */
        assert_matches(c, R_EXE, &CALLER(.exe = (char *) "/usr/bin/env"), false);
        config_unref(c);
}

static void make_program(const char *path)
{
        spit(path, (Bytes){(unsigned char *) "#!/bin/sh\n", 10});
        assert_int_equal(chmod(path, 0755), 0);
}

/* exe names a file: its device and inode, as the daemon sees the configured path now, against
 * the file the caller runs. Real files in a temporary directory. */
static void test_selector_exe_is_a_file(void **state)
{
        char dir[64];
        _cleanup_free_ char *rules = NULL, *tool = NULL, *copy = NULL, *link = NULL,
                            *upgraded = NULL;

        assert_int_equal(tmpdir_make(dir, sizeof(dir), "policy-exe"), 0);
        assert_int_equal(mkdir(path_below(dir, "bin"), 0755), 0);
        assert_int_equal(mkdir(path_below(dir, "own"), 0755), 0);
        tool = strdup(path_below(dir, "bin/tool"));
        copy = strdup(path_below(dir, "own/tool"));
        link = strdup(path_below(dir, "link"));
        upgraded = strdup(path_below(dir, "bin/tool.new"));
        assert_true(tool && copy && link && upgraded);
        make_program(tool);
        make_program(copy); /* byte for byte the same, another file */
        assert_int_equal(symlink(tool, link), 0);

        assert_true(asprintf(&rules,
                             "[{'name': 'exact', 'match': {'exe': '%s', 'uid': 1000},"
                             "  'subject': 's', 'audiences': ['a']},"
                             " {'name': 'glob', 'match': {'exe': '%s/bin/*', 'uid': 1000},"
                             "  'subject': 's', 'audiences': ['a']},"
                             " {'name': 'link', 'match': {'exe': '%s', 'uid': 1000},"
                             "  'subject': 's', 'audiences': ['a']},"
                             " {'name': 'dir', 'match': {'exe': '%s/bin', 'uid': 1000},"
                             "  'subject': 's', 'audiences': ['a']}]",
                             tool, dir, link, dir) > 0);
        Config *c = load(NULL, rules);
        enum { EXACT, GLOB, LINK, DIR };

        /* The genuine caller, by exact path, glob, and a symlink the rule names. */
        Identity genuine = running(tool, tool);
        assert_matches(c, EXACT, &genuine, true);
        assert_matches(c, GLOB, &genuine, true);
        assert_matches(c, LINK, &genuine, true);
        /* Its own copy bind-mounted over the path: /proc/PID/exe says the path, the file is
         * the copy. */
        Identity mounted = running(tool, copy);
        assert_matches(c, EXACT, &mounted, false);
        assert_matches(c, GLOB, &mounted, false);
        assert_matches(c, LINK, &mounted, false);
        /* The copy where it lies. */
        Identity copied = running(copy, copy);
        assert_matches(c, EXACT, &copied, false);
        assert_matches(c, GLOB, &copied, false);
        /* A path matching the glob only in the caller's mount namespace: no file here. */
        _cleanup_free_ char *mine = NULL;
        assert_true(asprintf(&mine, "%s/bin/mine", dir) > 0);
        assert_running(c, GLOB, mine, copy, false);
        /* A directory is not a program, whatever its inode. */
        assert_running(c, DIR, path_below(dir, "bin"), path_below(dir, "bin"), false);
        /* The pin still holds. */
        genuine.uid = 1001;
        assert_matches(c, EXACT, &genuine, false);
        genuine.uid = 1000;

        /* An upgrade replaces the file: a process still running the old one (its exe now
         * "PATH (deleted)") is another file until it restarts, by exact path and by glob. */
        Identity old = running(tool, tool);
        make_program(upgraded);
        assert_int_equal(rename(upgraded, tool), 0);
        assert_matches(c, EXACT, &old, false);
        _cleanup_free_ char *deleted = NULL;
        assert_true(asprintf(&deleted, "%s (deleted)", tool) > 0);
        old.exe = deleted;
        assert_matches(c, GLOB, &old, false);
        assert_running(c, EXACT, tool, tool, true);

        /* Gone altogether: nothing matches. */
        assert_int_equal(unlink(tool), 0);
        assert_matches(c, EXACT, &genuine, false);
        assert_matches(c, LINK, &genuine, false);

        config_unref(c);
        assert_int_equal(tmpdir_remove(dir), 0);
}

/* The whole way: this process identified through a real socket, as the daemon identifies a
 * caller, against rules naming its own binary and another. */
static void test_exe_of_a_real_caller(void **state)
{
        _cleanup_free_ char *rules = NULL;
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        struct stat st;
        Identity id;
        int sv[2];

        assert_true(n > 0);
        self[n] = 0;
        assert_int_equal(stat(self, &st), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(identity_from_socket(sv[0], &id), 0);
        assert_int_equal(identity_read_process(&id), 0);
        assert_string_equal(id.exe, self);
        assert_true(id.has_exe_file);
        assert_true(id.exe_dev == st.st_dev && id.exe_ino == st.st_ino);

        assert_true(asprintf(&rules,
                             "[{'name': 'other', 'match': {'exe': '/usr/bin/env', 'uid': %u},"
                             "  'subject': 's', 'audiences': ['a']},"
                             " {'name': 'self', 'match': {'exe': '%s', 'uid': %u},"
                             "  'subject': 's', 'audiences': ['a']}]",
                             (unsigned) getuid(), self, (unsigned) getuid()) > 0);
        Config *c = load(NULL, rules);
        assert_rule(c, &id, "self");
        config_unref(c);
        identity_done(&id);
        close(sv[0]);
        close(sv[1]);
}

static void test_selector_unit(void **state)
{
        Config *c = selector_config();

        assert_matches(c, R_UNIT, &CALLER(.unit = (char *) "web-1.service"), true);
        assert_matches(c, R_UNIT, &CALLER(.unit = (char *) "web-.service"), true);
        assert_matches(c, R_UNIT, &CALLER(.unit = (char *) "web.service"), false);
        assert_matches(c, R_UNIT, &CALLER(.unit = (char *) "web-1.scope"), false);
        assert_matches(c, R_UNIT, &CALLER(.unit = (char *) "xweb-1.service"), false);
        config_unref(c);
}

/* Any user can start "web-1.service" under their own systemd: the name alone identifies nothing
 * there, only together with a uid or user selector. */
static void test_selector_user_delegated(void **state)
{
        Config *c = load(
            NULL, "[{'name': 'unit-only', 'match': {'unit': 'web-*.service'},"
                  "  'subject': 's', 'audiences': ['a']},"
                  " {'name': 'unit-uid', 'match': {'unit': 'web-*.service', 'uid': 1000},"
                  "  'subject': 's', 'audiences': ['a']},"
                  " {'name': 'unit-user', 'match': {'unit': 'web-*.service', 'user': 'daemon'},"
                  "  'subject': 's', 'audiences': ['a']},"
                  " {'name': 'unit-gid', 'match': {'unit': 'web-*.service', 'gid': 1000},"
                  "  'subject': 's', 'audiences': ['a']}]");
        Identity sys = CALLER(.unit = (char *) "web-1.service");
        Identity usr = CALLER(.unit = (char *) "web-1.service", .user_delegated = true);
        Identity usr_daemon =
            CALLER(.uid = 1, .unit = (char *) "web-1.service", .user_delegated = true);

        assert_matches(c, 0, &sys, true);
        assert_matches(c, 0, &usr, false);
        assert_matches(c, 1, &usr, true);
        assert_matches(c, 2, &usr_daemon, true);
        /* A group is shared by many users: it does not pin the unit's owner. */
        assert_matches(c, 3, &usr, false);
        assert_rule(c, &usr, "unit-uid");
        assert_rule(c, &sys, "unit-only");
        config_unref(c);
}

static void test_selector_cgroup(void **state)
{
        Config *c = selector_config();

        assert_matches(c, R_CGROUP, &CALLER(.cgroup = (char *) "/system.slice/nginx.service"),
                       true);
        assert_matches(c, R_CGROUP, &CALLER(.cgroup = (char *) "/user.slice/nginx.service"), false);
        /* A sub-cgroup of a service is a different path: '*' does not cross '/'. */
        assert_matches(c, R_CGROUP,
                       &CALLER(.cgroup = (char *) "/system.slice/nginx.service/payload"), false);
        assert_matches(c, R_CGROUP, &CALLER(.cgroup = (char *) "/system.slice/a/b.service"), false);
        config_unref(c);
}

static void test_selector_container(void **state)
{
        Config *c = selector_config();
        static const char id64[] =
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        char docker[80], podman[80];

        snprintf(docker, sizeof(docker), "docker:%s", id64);
        snprintf(podman, sizeof(podman), "podman:%s", id64);
        assert_matches(c, R_CONTAINER, &CALLER(.container = docker), true);
        assert_matches(c, R_CONTAINER, &CALLER(.container = podman), false);
        assert_matches(c, R_CONTAINER, &CALLER(.container = (char *) "unknown:docker"), false);
        assert_matches(c, R_CONTAINER, &CALLER(.container = (char *) "dockerd:abc"), false);
        config_unref(c);
}

static void test_selectors_all_must_hold(void **state)
{
        Config *c = selector_config();
        gid_t g[] = {33};
        Identity ok = running("/usr/bin/env", "/usr/bin/env");

        ok.uid = 33;
        ok.gid = 1000;
        ok.groups = g;
        ok.n_groups = 1;
        ok.unit = (char *) "nginx.service";
        ok.cgroup = (char *) "/system.slice/nginx.service";
        ok.container = (char *) "podman:abc";

        assert_matches(c, R_ALL, &ok, true);

        /* Break one selector at a time. */
        Identity id = ok;
        id.uid = 34;
        assert_matches(c, R_ALL, &id, false);
        id = ok;
        id.n_groups = 0;
        assert_matches(c, R_ALL, &id, false);
        id = ok;
        id.exe = (char *) "/usr/sbin/env";
        assert_matches(c, R_ALL, &id, false);
        id = ok;
        id.exe_ino++; /* the same path, another file */
        assert_matches(c, R_ALL, &id, false);
        id = ok;
        id.unit = (char *) "nginx.scope";
        assert_matches(c, R_ALL, &id, false);
        id = ok;
        id.cgroup = (char *) "/user.slice/nginx.service";
        assert_matches(c, R_ALL, &id, false);
        id = ok;
        id.container = (char *) "docker:abc";
        assert_matches(c, R_ALL, &id, false);
        config_unref(c);
}

static void test_missing_value_never_matches(void **state)
{
        /* Patterns that match the values `with` has still refuse a caller that has none. */
        Config *c = load(
            NULL,
            "[{'name': 'exe', 'match': {'exe': '/usr/*/*', 'uid': 1000}, 'subject': 's',"
            "  'audiences': ['a']},"
            " {'name': 'unit', 'match': {'unit': '*'}, 'subject': 's', 'audiences': ['a']},"
            " {'name': 'cgroup', 'match': {'cgroup': '/*'}, 'subject': 's', 'audiences': ['a']},"
            " {'name': 'container', 'match': {'container': '*:*'}, 'subject': 's', 'audiences': "
            "['a']}]");
        Identity none = CALLER();
        Identity with = running("/usr/bin/env", "/usr/bin/env");

        with.unit = (char *) "x.service";
        with.cgroup = (char *) "/x";
        with.container = (char *) "docker:x";

        for (size_t i = 0; i < c->n_rules; i++) {
                assert_matches(c, (int) i, &with, true);
                assert_matches(c, (int) i, &none, false);
        }
        assert_rule(c, &none, NULL);
        denial(c, &none, "a", NULL, 0, DENY_NO_RULE);

        /* An empty string is a value, a NULL is not: the unit "*" matches "". */
        Identity empty = CALLER(.unit = (char *) "");
        assert_matches(c, 1, &empty, true);
        config_unref(c);
}

/* ---- audiences and scopes ----------------------------------------------------------------- */

static void test_audience(void **state)
{
        Config *c = load(NULL, "[{'name': 'r', 'subject': 's',"
                               "  'audiences': ['https://api.example.com', 'https://*.example.com',"
                               "                  'urn:exact:[x]', 'sts.amazonaws.com']}]");
        Identity id = CALLER();
        Decision d;

        static const char *const ok[] = {
            "https://api.example.com", "https://a.example.com", "https://a-1.example.com",
            "urn:exact:[x]",           "sts.amazonaws.com",
        };
        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                d = grant(c, &id, ok[i], NULL, 0, -1);
                decision_done(&d);
        }

        static const char *const bad[] = {
            "https://evil.test/x.example.com", /* '*' must not cross '/' */
            "https://evil.test/.example.com",
            "https://example.com",
            "https://api.example.com/",
            "https://api.example.com.evil",
            "http://a.example.com",
            "https://a.example.com/path",
            "HTTPS://api.example.com",
            "https://api.example.co",
            "sts.amazonaws.com ",
            "",
            /* '*' is one DNS label: not two, not empty, not other characters */
            "https://a.b.example.com",
            "https://.example.com",
            "https://evil.com?.example.com",
            "https://evil.com#.example.com",
            "https://user@evil.example.com",
            "https://a_b.example.com",
            /* nothing but '*' is special: brackets are literal */
            "urn:exact:x",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                print_message("  \"%s\"\n", bad[i]);
                d = denial(c, &id, bad[i], NULL, 0, DENY_AUDIENCE);
                assert_string_equal(d.rule->name, "r");
                assert_string_equal(deny_reason_to_string(d.reason), "audience_not_allowed");
        }
        config_unref(c);
}

static void test_audience_patterns(void **state)
{
        assert_true(audience_pattern_valid("https://*.example.com"));
        assert_true(audience_pattern_valid("https://api.*.example.com"));
        assert_true(audience_pattern_valid("urn:*"));
        assert_true(audience_pattern_valid("https://api.example.com"));
        assert_false(audience_pattern_valid("https://api-*.example.com"));
        assert_false(audience_pattern_valid("https://*api.example.com"));
        assert_false(audience_pattern_valid("https://**.example.com"));
        /* a label is at most 63 characters */
        char long_label[128];
        snprintf(long_label, sizeof(long_label), "https://%064d.example.com", 0);
        assert_false(audience_match("https://*.example.com", long_label));
        snprintf(long_label, sizeof(long_label), "https://%063d.example.com", 0);
        assert_true(audience_match("https://*.example.com", long_label));
}

static void test_scopes(void **state)
{
        Config *c = load(NULL, "[{'name': 'none', 'match': {'uid': 0}, 'subject': 's',"
                               "  'audiences': ['a']},"
                               " {'name': 'r', 'subject': 's', 'audiences': ['a'],"
                               "  'scopes': ['read', 'write', 'admin:*']}]");
        Identity id = CALLER();
        Decision d;

        d = grant(c, &id, "a", NULL, 0, -1);
        decision_done(&d);
        d = grant(c, &id, "a", (const char *const[]){"read"}, 1, -1);
        decision_done(&d);
        d = grant(c, &id, "a", (const char *const[]){"write", "read"}, 2, -1);
        decision_done(&d);
        d = grant(c, &id, "a", (const char *const[]){"read", "read"}, 2, -1);
        decision_done(&d);
        /* Scopes are exact: "admin:*" is the literal scope, not a glob. */
        d = grant(c, &id, "a", (const char *const[]){"admin:*"}, 1, -1);
        decision_done(&d);

        d = denial(c, &id, "a", (const char *const[]){"read", "write", "delete"}, 3, DENY_SCOPE);
        assert_non_null(strstr(d.message, "\"delete\""));
        assert_string_equal(deny_reason_to_string(d.reason), "scope_not_allowed");
        denial(c, &id, "a", (const char *const[]){"delete", "read"}, 2, DENY_SCOPE);
        denial(c, &id, "a", (const char *const[]){"admin:users"}, 1, DENY_SCOPE);
        denial(c, &id, "a", (const char *const[]){"Read"}, 1, DENY_SCOPE);
        denial(c, &id, "a", (const char *const[]){"rea"}, 1, DENY_SCOPE);

        /* A rule with no scopes allows none (but a request without scopes is fine). */
        Identity root = CALLER(.uid = 0);
        d = grant(c, &root, "a", NULL, 0, -1);
        decision_done(&d);
        denial(c, &root, "a", (const char *const[]){"read"}, 1, DENY_SCOPE);

        /* The audience is checked before scopes. */
        d = denial(c, &id, "b", (const char *const[]){"delete"}, 1, DENY_AUDIENCE);
        config_unref(c);
}

/* ---- lifetimes ---------------------------------------------------------------------------- */

static void test_ttl(void **state)
{
        Config *c = load("{'default_ttl': '10m', 'max_ttl': '1h'}",
                         "[{'name': 'short', 'match': {'uid': 1}, 'subject': 's',"
                         "  'audiences': ['a'], 'max_ttl': '2m'},"
                         " {'name': 'long', 'subject': 's', 'audiences': ['a']}]");
        Identity user = CALLER();
        Identity daemon_ = CALLER(.uid = 1);
        Decision d;

        /* No ttl asked: the global default. */
        d = grant(c, &user, "a", NULL, 0, -1);
        assert_string_equal(d.rule->name, "long");
        assert_int_equal(d.ttl, 600);
        decision_done(&d);
        /* Asked below the maximum: as asked. */
        d = grant(c, &user, "a", NULL, 0, 30);
        assert_int_equal(d.ttl, 30);
        decision_done(&d);
        d = grant(c, &user, "a", NULL, 0, 3600);
        assert_int_equal(d.ttl, 3600);
        decision_done(&d);
        /* Above the (global) maximum: clamped, not refused. */
        d = grant(c, &user, "a", NULL, 0, 3601);
        assert_int_equal(d.ttl, 3600);
        decision_done(&d);
        d = grant(c, &user, "a", NULL, 0, 2147483647);
        assert_int_equal(d.ttl, 3600);
        decision_done(&d);

        /* The rule's own maximum, for an explicit ttl and for the global default above it. */
        d = grant(c, &daemon_, "a", NULL, 0, 3600);
        assert_string_equal(d.rule->name, "short");
        assert_int_equal(d.ttl, 120);
        decision_done(&d);
        d = grant(c, &daemon_, "a", NULL, 0, -1);
        assert_int_equal(d.ttl, 120);
        decision_done(&d);
        d = grant(c, &daemon_, "a", NULL, 0, 119);
        assert_int_equal(d.ttl, 119);
        decision_done(&d);
        config_unref(c);

        /* Built-in defaults: 5m default, 1h max. */
        c = load(NULL, "[{'name': 'r', 'subject': 's', 'audiences': ['a']}]");
        d = grant(c, &user, "a", NULL, 0, -1);
        assert_int_equal(d.ttl, 300);
        decision_done(&d);
        d = grant(c, &user, "a", NULL, 0, 86400);
        assert_int_equal(d.ttl, 3600);
        decision_done(&d);
        config_unref(c);
}

/* ---- subjects ----------------------------------------------------------------------------- */

static void test_subject_every_placeholder(void **state)
{
        Config *c = load(
            NULL, "[{'name': 'web-1', 'subject':"
                  "  'spiffe://example.org/{uid}/{gid}/{user}/{unit}/{container}/{rule}/{uid}',"
                  "  'audiences': ['a']}]");
        Identity id =
            CALLER(.uid = 33, .gid = 44, .user = (char *) "www-data", .group = (char *) "grp",
                   .unit = (char *) "web.service", .container = (char *) "docker:abc",
                   .exe = (char *) "/usr/bin/x", .cgroup = (char *) "/system.slice/web.service");
        Decision d = grant(c, &id, "a", NULL, 0, -1);

        assert_string_equal(d.subject,
                            "spiffe://example.org/33/44/www-data/web.service/docker:abc/web-1/33");
        decision_done(&d);
        assert_null(d.subject);

        /* Large ids print unsigned. */
        id.uid = 4294967294u;
        id.gid = 4000000000u;
        d = grant(c, &id, "a", NULL, 0, -1);
        assert_string_equal(d.subject, "spiffe://example.org/4294967294/4000000000/www-data/"
                                       "web.service/docker:abc/web-1/4294967294");
        decision_done(&d);
        config_unref(c);
}

static void test_subject_escapes_values(void **state)
{
        Config *c = load(NULL, "[{'name': 'r', 'subject': 'u/{user}/{unit}',"
                               "  'audiences': ['a']}]");
        /* systemd escapes '-' in unit names as \x2d; the backslash is escaped in turn, and
         * bytes that are not UTF-8 never reach the token. */
        Identity id = CALLER(.user = (char *) "a\xff"
                                              "b",
                             .unit = (char *) "foo\\x2dbar.service");
        Decision d = grant(c, &id, "a", NULL, 0, -1);

        assert_string_equal(d.subject, "u/a\\xffb/foo\\x5cx2dbar.service");
        decision_done(&d);
        config_unref(c);
}

static void test_subject_missing_value(void **state)
{
        static const struct {
                const char *tmpl, *missing;
        } cases[] = {
            {"spiffe://x/unit/{unit}", "{unit}"},
            {"spiffe://x/c/{container}", "{container}"},
            {"spiffe://x/u/{user}", "{user}"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *rules = NULL;
                assert_true(asprintf(&rules, "[{'name': 'r', 'subject': '%s', 'audiences': ['a']}]",
                                     cases[i].tmpl) > 0);
                Config *c = load(NULL, rules);
                Identity id = CALLER(); /* no user name, no unit, no container */

                Decision d = denial(c, &id, "a", NULL, 0, DENY_SUBJECT);
                assert_string_equal(d.rule->name, "r");
                assert_string_equal(deny_reason_to_string(d.reason), "subject_unavailable");
                if (!strstr(d.message, cases[i].missing))
                        fail_msg("message \"%s\" does not name %s", d.message, cases[i].missing);

                /* With the value present the same rule grants. */
                id = CALLER(.user = (char *) "u", .unit = (char *) "x.service",
                            .container = (char *) "docker:1");
                d = grant(c, &id, "a", NULL, 0, -1);
                decision_done(&d);
                config_unref(c);
        }
}

static void test_subject_too_long(void **state)
{
        /* 1000 bytes of template plus a long unit name exceed SUBJECT_MAX (1024). */
        char tmpl[1001];
        memset(tmpl, 's', 994);
        memcpy(tmpl + 994, "{unit}", 7);
        _cleanup_free_ char *rules = NULL;
        assert_true(asprintf(&rules, "[{'name': 'r', 'subject': '%s', 'audiences': ['a']}]", tmpl) >
                    0);
        Config *c = load(NULL, rules);

        Identity id = CALLER(.unit = (char *) "short.service");
        Decision d = grant(c, &id, "a", NULL, 0, -1);
        assert_int_equal(strlen(d.subject), 994 + 13);
        decision_done(&d);

        char unit[64];
        memset(unit, 'u', 55);
        memcpy(unit + 55, ".service", 9);
        id.unit = unit;
        denial(c, &id, "a", NULL, 0, DENY_SUBJECT);
        config_unref(c);
}

/* ---- what a denial says ------------------------------------------------------------------- */

static void assert_no_leak(const Decision *d)
{
        static const char *const secrets[] = {
            "ZZsecret-rule", "ZZsecret-aud", "ZZsecret-scope", "ZZsecret",
            "https://mine",  "mine-scope",   "spiffe",         "/usr/sbin",
        };

        for (size_t i = 0; i < ELEMENTSOF(secrets); i++)
                if (strstr(d->message, secrets[i]))
                        fail_msg("denial message \"%s\" reveals \"%s\"", d->message, secrets[i]);
}

static void test_denials_do_not_leak(void **state)
{
        /* Another rule with distinctive values, before and after the caller's own. */
        Config *c = load(
            NULL, "[{'name': 'ZZsecret-rule-1', 'match': {'uid': 0, 'exe': '/usr/sbin/ZZsecret'},"
                  "  'subject': 'spiffe://ZZsecret/{uid}',"
                  "  'audiences': ['https://ZZsecret-aud.internal', 'https://*.ZZsecret-aud'],"
                  "  'scopes': ['ZZsecret-scope']},"
                  " {'name': 'mine', 'match': {'uid': 1000},"
                  "  'subject': 'spiffe://example.org/{unit}',"
                  "  'audiences': ['https://mine.example'], 'scopes': ['mine-scope']},"
                  " {'name': 'ZZsecret-rule-2', 'match': {'uid': 2000},"
                  "  'subject': 'spiffe://ZZsecret/{uid}',"
                  "  'audiences': ['https://ZZsecret-aud.internal'],"
                  "  'scopes': ['ZZsecret-scope']}]");
        Identity mine = CALLER(.uid = 1000);
        Identity nobody = CALLER(.uid = 3000);
        Decision d;

        d = denial(c, &nobody, "https://x.example", NULL, 0, DENY_NO_RULE);
        assert_no_leak(&d);
        d = denial(c, &mine, "https://other.example", NULL, 0, DENY_AUDIENCE);
        assert_no_leak(&d);
        assert_non_null(strstr(d.message, "https://other.example")); /* what it asked for */
        d = denial(c, &mine, "https://mine.example", (const char *const[]){"mine-scope", "other"},
                   2, DENY_SCOPE);
        assert_no_leak(&d);
        assert_non_null(strstr(d.message, "\"other\""));
        d = denial(c, &mine, "https://mine.example", NULL, 0, DENY_SUBJECT);
        assert_no_leak(&d);

        /* Asking for the other rule's audience or scope is refused, and the message says no
         * more than the caller already knew. */
        d = denial(c, &mine, "https://ZZsecret-aud.internal", NULL, 0, DENY_AUDIENCE);
        assert_string_equal(d.rule->name, "mine");
        assert_null(strstr(d.message, "mine"));
        assert_null(strstr(d.message, "ZZsecret-rule"));
        assert_null(strstr(d.message, "ZZsecret-scope"));
        d = denial(c, &mine, "https://mine.example", (const char *const[]){"ZZsecret-scope"}, 1,
                   DENY_SCOPE);
        assert_null(strstr(d.message, "ZZsecret-rule"));
        assert_null(strstr(d.message, "ZZsecret-aud"));
        assert_null(strstr(d.message, "mine"));
        config_unref(c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_first_match_order),
            cmocka_unit_test(test_default_deny),
            cmocka_unit_test(test_empty_match_matches_everyone),
            cmocka_unit_test(test_selector_uid),
            cmocka_unit_test(test_selector_gid),
            cmocka_unit_test(test_selector_user),
            cmocka_unit_test(test_selector_group),
            cmocka_unit_test(test_selector_exe),
            cmocka_unit_test(test_selector_exe_is_a_file),
            cmocka_unit_test(test_exe_of_a_real_caller),
            cmocka_unit_test(test_selector_unit),
            cmocka_unit_test(test_selector_user_delegated),
            cmocka_unit_test(test_selector_cgroup),
            cmocka_unit_test(test_selector_container),
            cmocka_unit_test(test_selectors_all_must_hold),
            cmocka_unit_test(test_missing_value_never_matches),
            cmocka_unit_test(test_audience),
            cmocka_unit_test(test_audience_patterns),
            cmocka_unit_test(test_scopes),
            cmocka_unit_test(test_ttl),
            cmocka_unit_test(test_subject_every_placeholder),
            cmocka_unit_test(test_subject_escapes_values),
            cmocka_unit_test(test_subject_missing_value),
            cmocka_unit_test(test_subject_too_long),
            cmocka_unit_test(test_denials_do_not_leak),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
