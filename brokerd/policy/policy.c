#include "policy/policy.h"

#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "macro.h"
#include "policy/subject.h"

static const char *const deny_reasons[_DENY_MAX] = {
    [DENY_NONE] = "none",
    [DENY_NO_RULE] = "no_matching_rule",
    [DENY_AUDIENCE] = "audience_not_allowed",
    [DENY_SCOPE] = "scope_not_allowed",
    [DENY_SUBJECT] = "subject_unavailable",
    [DENY_IDENTITY] = "identity_unconfirmed",
    [DENY_UPSTREAM] = "upstream_not_allowed",
    [DENY_UPSTREAM_REFUSED] = "upstream_denied",
    [DENY_UPSTREAM_UNAVAILABLE] = "upstream_unavailable",
};

const char *deny_reason_to_string(DenyReason r)
{
        return r >= 0 && r < _DENY_MAX ? deny_reasons[r] : "unknown";
}

/* Selector globs use fnmatch(3) with FNM_PATHNAME: a '*' never crosses a '/', so /usr/bin/STAR
 * stays inside /usr/bin (STAR standing for the asterisk). */
static bool glob_match(const char *pattern, const char *s)
{
        return s && fnmatch(pattern, s, FNM_PATHNAME) == 0;
}

/* Whether the caller runs the file `pattern` names, as the daemon sees it now: a path string
 * proves nothing, since the caller's /proc/PID/exe is a path in its own mount namespace (a bind
 * mount in a user namespace of its own puts any program at any path). An exact path is
 * stat'ed as configured (a symlink is followed, so "/bin/sleep" is the file at
 * /usr/bin/sleep); for a glob, the caller's exe string must match it and the file at that path,
 * as the daemon sees it, must be the one the caller runs. A binary replaced since the caller
 * started ("/usr/bin/x (deleted)") is another file: no match until it restarts. */
static bool exe_matches(const char *pattern, const Identity *id)
{
        const char *path = pattern;
        struct stat st;

        if (!id->exe || !id->has_exe_file)
                return false;
        if (strpbrk(pattern, "*?[\\")) {
                if (!glob_match(pattern, id->exe))
                        return false;
                path = id->exe;
        }
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
                return false;
        return st.st_dev == id->exe_dev && st.st_ino == id->exe_ino;
}

bool rule_matches(const Rule *r, const Identity *id)
{
        const RuleMatch *m = &r->match;

        if (m->has_uid && id->uid != m->uid)
                return false;
        if (m->has_gid && !identity_in_group(id, m->gid))
                return false;
        if (m->has_user && id->uid != m->user_uid)
                return false;
        if (m->has_group && !identity_in_group(id, m->group_gid))
                return false;
        /* A selector the caller has no value for (no exe, no unit, not in a container) does
         * not hold: default deny. */
        if (m->unit && !glob_match(m->unit, id->unit))
                return false;
        /* Below a cgroup directory someone other than root may write (their own systemd,
         * user@UID.service, or a unit with Delegate=) that someone names units and cgroups as
         * they like, "docker-<id>.scope" included: there a unit or container name identifies
         * a workload only together with the user it runs as. */
        if ((m->unit || m->container) && id->user_delegated && !m->has_uid && !m->has_user)
                return false;
        if (m->cgroup && !glob_match(m->cgroup, id->cgroup))
                return false;
        if (m->container && !glob_match(m->container, id->container))
                return false;
        /* Last: the only selector that touches the file system. */
        if (m->exe && !exe_matches(m->exe, id))
                return false;
        return true;
}

const Rule *policy_find_rule(const Config *c, const Identity *id)
{
        for (size_t i = 0; i < c->n_rules; i++)
                if (rule_matches(&c->rules[i], id))
                        return &c->rules[i];
        return NULL;
}

static bool label_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-';
}

bool audience_pattern_valid(const char *p)
{
        for (size_t i = 0; p[i]; i++)
                if (p[i] == '*' &&
                    ((i > 0 && label_char(p[i - 1])) || label_char(p[i + 1]) || p[i + 1] == '*'))
                        return false;
        return true;
}

bool audience_match(const char *p, const char *s)
{
        while (*p) {
                if (*p == '*') {
                        /* the label ends at the first non-label character, and the pattern's
                         * next character is one: no backtracking */
                        size_t n = 0;
                        while (label_char(s[n]))
                                n++;
                        if (n < 1 || n > 63)
                                return false;
                        s += n;
                        p++;
                        continue;
                }
                if (*p++ != *s++)
                        return false;
        }
        return *s == 0;
}

static bool audience_allowed(const Rule *r, const char *aud)
{
        for (size_t i = 0; i < r->n_audiences; i++)
                if (audience_match(r->audiences[i], aud))
                        return true;
        return false;
}

static bool scope_allowed(const Rule *r, const char *scope)
{
        for (size_t i = 0; i < r->n_scopes; i++)
                if (strcmp(r->scopes[i], scope) == 0)
                        return true;
        return false;
}

_printf_(3, 4) static void deny(Decision *d, DenyReason reason, const char *fmt, ...)
{
        va_list ap;

        d->reason = reason;
        va_start(ap, fmt);
        vsnprintf(d->message, sizeof(d->message), fmt, ap);
        va_end(ap);
}

/* What every grant needs once the rule and the target agree: each scope asked for allowed by
 * the rule, and the rule's subject rendered for this caller. Denies into *d, or fills
 * d->subject; -ENOMEM. */
static int decide_scopes_and_subject(const Identity *id, const char *const *scopes,
                                     size_t n_scopes, Decision *d)
{
        const char *missing = NULL;
        int r;

        for (size_t i = 0; i < n_scopes; i++)
                if (!scope_allowed(d->rule, scopes[i])) {
                        deny(d, DENY_SCOPE, "scope \"%s\" is not allowed for this caller",
                             scopes[i]);
                        return 0;
                }
        r = subject_render(d->rule->subject, id, d->rule->name, &d->subject, &missing);
        if (r == -E2BIG) {
                deny(d, DENY_SUBJECT, "the subject for this caller would be longer than %u bytes",
                     SUBJECT_MAX);
                return 0;
        }
        if (r == -ENODATA) {
                deny(d, DENY_SUBJECT, "the subject for this caller needs a {%s} it does not have",
                     missing);
                return 0;
        }
        return r;
}

int policy_decide(const Config *c, const Identity *id, const char *audience,
                  const char *const *scopes, size_t n_scopes, bool has_ttl, int64_t ttl,
                  Decision *ret)
{
        Decision d = {};
        int r;

        /* Messages name only what the caller asked for and which check failed, never another
         * rule's selectors, audiences or scopes. */
        d.rule = policy_find_rule(c, id);
        if (!d.rule)
                deny(&d, DENY_NO_RULE, "no rule matches this caller");
        else if (!audience_allowed(d.rule, audience))
                deny(&d, DENY_AUDIENCE, "audience \"%s\" is not allowed for this caller", audience);
        else {
                r = decide_scopes_and_subject(id, scopes, n_scopes, &d);
                if (r < 0)
                        return r;
        }
        /* Clamp, never refuse: the response's expires_at tells the caller the real lifetime. */
        if (d.reason == DENY_NONE) {
                d.ttl = has_ttl ? (uint64_t) ttl : c->default_ttl;
                if (d.ttl > d.rule->max_ttl)
                        d.ttl = d.rule->max_ttl;
        }
        *ret = d;
        return 0;
}

int policy_decide_upstream(const Config *c, const Identity *id, const char *upstream,
                           const char *const *scopes, size_t n_scopes, Decision *ret)
{
        Decision d = {};
        int r;

        d.rule = policy_find_rule(c, id);
        if (!d.rule)
                deny(&d, DENY_NO_RULE, "no rule matches this caller");
        else if (!rule_allows_upstream(d.rule, upstream) || !config_find_upstream(c, upstream))
                deny(&d, DENY_UPSTREAM, "upstream \"%s\" is not allowed for this caller",
                     upstream);
        else {
                r = decide_scopes_and_subject(id, scopes, n_scopes, &d);
                if (r < 0)
                        return r;
        }
        *ret = d;
        return 0;
}

void decision_done(Decision *d)
{
        free(d->subject);
        d->subject = NULL;
}
