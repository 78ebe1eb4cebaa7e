#include "identity/cgroup.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

#define CONTAINER_ID_LEN 64
/* systemd's UNIT_NAME_MAX is 256 with the terminating NUL. */
#define UNIT_NAME_MAX 255

/* A piece of a longer string; paths are walked in place, without copies. */
typedef struct Span {
        const char *p;
        size_t n;
} Span;

static bool span_eq(Span s, const char *lit)
{
        return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

static bool span_startswith(Span s, const char *prefix)
{
        size_t l = strlen(prefix);

        return s.n >= l && memcmp(s.p, prefix, l) == 0;
}

static bool span_endswith(Span s, const char *suffix)
{
        size_t l = strlen(suffix);

        return s.n >= l && memcmp(s.p + s.n - l, suffix, l) == 0;
}

/* The next '/'-separated component at or after *pos; empty components ("//", the leading
 * slash) are skipped. */
static bool next_component(const char **pos, Span *ret)
{
        const char *p = *pos;

        while (*p == '/')
                p++;
        if (*p == '\0')
                return false;
        ret->p = p;
        ret->n = strcspn(p, "/");
        *pos = p + ret->n;
        return true;
}

static bool is_container_id(const char *p, size_t n)
{
        if (n != CONTAINER_ID_LEN)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
                        return false;
        return true;
}

static bool unit_char_ok(char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               strchr(":_.\\@-", c);
}

/* A systemd unit name with the given suffix: allowed characters, at most UNIT_NAME_MAX bytes,
 * a non-empty name before the suffix, and for "name@instance" both parts non-empty. */
static bool is_unit_name(Span s, const char *suffix)
{
        size_t sl = strlen(suffix);
        const char *at;

        if (s.n > UNIT_NAME_MAX || s.n <= sl || !span_endswith(s, suffix))
                return false;
        for (size_t i = 0; i < s.n; i++)
                if (s.p[i] == '\0' || !unit_char_ok(s.p[i]))
                        return false;
        at = memchr(s.p, '@', s.n - sl);
        if (at && (at == s.p || at + 1 == s.p + s.n - sl))
                return false;
        return true;
}

static bool is_slice(Span s)
{
        return is_unit_name(s, ".slice");
}

static bool is_workload_unit(Span s)
{
        return is_unit_name(s, ".service") || is_unit_name(s, ".scope");
}

/* "user@1000.service": a user's systemd instance, which runs that user's own units below it. */
static bool is_user_manager(Span s)
{
        Span uid;

        if (!span_startswith(s, "user@") || !span_endswith(s, ".service"))
                return false;
        uid = (Span){s.p + 5, s.n - 5 - strlen(".service")};
        if (uid.n == 0)
                return false;
        for (size_t i = 0; i < uid.n; i++)
                if (uid.p[i] < '0' || uid.p[i] > '9')
                        return false;
        return true;
}

int cgroup_path_get_unit(const char *path, char **ret, bool *ret_user_delegated)
{
        Span c, unit = {}, manager = {};
        const char *pos = path;
        char *u = NULL;

        if (!path || !ret)
                return -EINVAL;

        /* Slices only group units; the first non-slice component is either the unit or ends the
         * search (a runtime's own tree such as /docker/... or /kubepods/..., or ".." when the
         * path is relative to another cgroup namespace). Anything below the unit (a container's
         * own init.scope, a delegated subtree) is the unit's business and does not replace it. */
        while (next_component(&pos, &c)) {
                if (is_slice(c))
                        continue;
                if (!is_workload_unit(c))
                        break;
                if (!manager.p && is_user_manager(c)) {
                        manager = c;
                        continue;
                }
                unit = c;
                break;
        }
        /* Anything below a user manager, unit or not, lives in that user's own subtree. */
        const char *below =
            manager.p ? manager.p + manager.n + strspn(manager.p + manager.n, "/") : NULL;
        bool delegated = below && *below;
        if (!unit.p)
                unit = manager;

        if (unit.p) {
                u = strndup(unit.p, unit.n);
                if (!u)
                        return -ENOMEM;
        }
        *ret = u;
        if (ret_user_delegated)
                *ret_user_delegated = delegated;
        return 0;
}

/* The runtime named by one path component, with *ret_id pointing at its 64-hex id; NULL when
 * the component carries no container id. `prev` is the component above it. */
static const char *component_container(Span c, Span prev, const char **ret_id)
{
        static const struct {
                const char *prefix;
                const char *runtime;
                bool scope; /* only as "<prefix><id>.scope" */
        } forms[] = {
            {"docker-", "docker", true},
            {"libpod-", "podman", true},
            {"libpod-", "podman", false}, /* podman's cgroupfs manager */
            {"cri-containerd-", "containerd", true},
            /* "crio-conmon-<id>.scope" is cri-o's monitor, not the container: it fails the
             * id check below because "conmon-<id>" is not 64 hex digits. */
            {"crio-", "cri-o", true},
        };
        static const struct {
                const char *tag;
                const char *runtime;
        } colon_forms[] = {
            {"cri-containerd", "containerd"},
            {"crio", "cri-o"},
            {"docker", "docker"},
        };

        /* A bare id: cgroupfs drivers. Only "docker/<id>" names its runtime. */
        if (is_container_id(c.p, c.n)) {
                *ret_id = c.p;
                return span_eq(prev, "docker") ? "docker" : "unknown";
        }

        for (size_t i = 0; i < ELEMENTSOF(forms); i++) {
                Span body = c;

                if (forms[i].scope) {
                        if (!span_endswith(body, ".scope"))
                                continue;
                        body.n -= strlen(".scope");
                }
                if (!span_startswith(body, forms[i].prefix))
                        continue;
                body.p += strlen(forms[i].prefix);
                body.n -= strlen(forms[i].prefix);
                if (is_container_id(body.p, body.n)) {
                        *ret_id = body.p;
                        return forms[i].runtime;
                }
        }

        /* The kubelet's systemd-driver form on cgroup v1: "<name>.slice:<tag>:<id>". */
        if (c.n > CONTAINER_ID_LEN + 1 && c.p[c.n - CONTAINER_ID_LEN - 1] == ':' &&
            is_container_id(c.p + c.n - CONTAINER_ID_LEN, CONTAINER_ID_LEN)) {
                Span head = {c.p, c.n - CONTAINER_ID_LEN - 1}, slice, tag;
                const char *colon = memrchr(head.p, ':', head.n);

                if (!colon)
                        return NULL;
                slice = (Span){head.p, (size_t) (colon - head.p)};
                tag = (Span){colon + 1, head.n - slice.n - 1};
                if (!is_slice(slice))
                        return NULL;
                for (size_t i = 0; i < ELEMENTSOF(colon_forms); i++)
                        if (span_eq(tag, colon_forms[i].tag)) {
                                *ret_id = c.p + c.n - CONTAINER_ID_LEN;
                                return colon_forms[i].runtime;
                        }
        }
        return NULL;
}

int cgroup_path_get_container(const char *path, char **ret)
{
        const char *pos = path, *runtime = NULL, *id = NULL;
        Span c, prev = {"", 0};
        char *s = NULL;

        if (!path || !ret)
                return -EINVAL;

        /* The innermost id wins: in kind, or any nested setup, the outer ids are the hosts'. */
        while (next_component(&pos, &c)) {
                const char *cid;
                const char *r = component_container(c, prev, &cid);

                if (r) {
                        runtime = r;
                        id = cid;
                }
                prev = c;
        }

        if (runtime && asprintf(&s, "%s:%.*s", runtime, CONTAINER_ID_LEN, id) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

typedef struct CgroupLine {
        Span hierarchy, controllers, path;
} CgroupLine;

/* "hierarchy-id:controllers:path". The path may itself contain ':' (the kubelet's
 * "...slice:cri-containerd:<id>"), so only the first two colons separate fields. */
static bool parse_line(Span line, CgroupLine *ret)
{
        const char *c1, *c2, *end = line.p + line.n;

        c1 = memchr(line.p, ':', line.n);
        if (!c1)
                return false;
        c2 = memchr(c1 + 1, ':', (size_t) (end - c1 - 1));
        if (!c2)
                return false;

        ret->hierarchy = (Span){line.p, (size_t) (c1 - line.p)};
        ret->controllers = (Span){c1 + 1, (size_t) (c2 - c1 - 1)};
        ret->path = (Span){c2 + 1, (size_t) (end - c2 - 1)};

        if (ret->hierarchy.n == 0 || ret->path.n == 0 || ret->path.p[0] != '/')
                return false;
        for (size_t i = 0; i < ret->hierarchy.n; i++)
                if (ret->hierarchy.p[i] < '0' || ret->hierarchy.p[i] > '9')
                        return false;
        return true;
}

static bool is_cgroup2_line(const CgroupLine *l)
{
        return span_eq(l->hierarchy, "0") && l->controllers.n == 0;
}

static bool is_systemd_v1_line(const CgroupLine *l)
{
        Span rest = l->controllers;

        /* The controllers field is a comma-separated list. */
        while (rest.n > 0) {
                const char *comma = memchr(rest.p, ',', rest.n);
                Span item = {rest.p, comma ? (size_t) (comma - rest.p) : rest.n};

                if (span_eq(item, "name=systemd"))
                        return true;
                if (!comma)
                        break;
                rest = (Span){comma + 1, rest.n - item.n - 1};
        }
        return false;
}

void cgroup_info_done(CgroupInfo *c)
{
        if (!c)
                return;
        free(c->path);
        free(c->unit);
        free(c->container);
        free(c->controllers);
        *c = (CgroupInfo){};
}

int cgroup_info_parse(const char *text, CgroupInfo *ret)
{
        CgroupLine l, cg2 = {}, sd = {}, first = {}, *chosen;
        unsigned n_cg2 = 0, n_sd = 0;
        _cleanup_free_ char *path = NULL, *unit = NULL, *container = NULL, *controllers = NULL;
        bool user_delegated = false;
        const char *p;
        int r;

        if (!text || !ret)
                return -EINVAL;

        for (p = text; *p;) {
                Span line = {p, strcspn(p, "\n")};

                p += line.n;
                if (*p == '\n')
                        p++;
                if (!parse_line(line, &l))
                        continue;

                if (is_cgroup2_line(&l)) {
                        if (n_cg2++ == 0)
                                cg2 = l;
                } else if (is_systemd_v1_line(&l)) {
                        if (n_sd++ == 0)
                                sd = l;
                }
                if (!first.path.p)
                        first = l;
        }

        /* The kernel prints each hierarchy once. Two deciding lines mean the text is not what
         * the kernel wrote (it refuses '\n' in cgroup names, so no path can forge a line), and
         * picking either could pick the forged one. */
        if (n_cg2 > 1 || n_sd > 1)
                return -EBADMSG;

        chosen = cg2.path.p ? &cg2 : sd.path.p ? &sd : first.path.p ? &first : NULL;
        if (!chosen)
                return -EBADMSG;

        path = strndup(chosen->path.p, chosen->path.n);
        if (!path)
                return -ENOMEM;
        if (chosen != &cg2) {
                controllers = strndup(chosen->controllers.p, chosen->controllers.n);
                if (!controllers)
                        return -ENOMEM;
        }
        /* Only the trees systemd manages name units; other v1 hierarchies are often flat or
         * grouped differently (a v1 "cpu" line may still say containerd.service for a pod). */
        if (chosen != &first) {
                r = cgroup_path_get_unit(path, &unit, &user_delegated);
                if (r < 0)
                        return r;
        }
        r = cgroup_path_get_container(path, &container);
        if (r < 0)
                return r;

        *ret = (CgroupInfo){
            .path = TAKE_PTR(path),
            .unit = TAKE_PTR(unit),
            .user_delegated = user_delegated,
            .container = TAKE_PTR(container),
            .controllers = TAKE_PTR(controllers),
        };
        return 0;
}
