/* cgroup and unit parsing (brokerd/identity/cgroup.c): the input is the text of
 * /proc/PID/cgroup (cgroup_info_parse), and each of its lines' paths, and the input itself, is a
 * cgroup path (cgroup_path_get_unit, cgroup_path_get_container). Whatever they derive must be
 * what the header promises: a unit named in the path, a container "RUNTIME:<64 hex>" whose id
 * is in the path. */
#include <errno.h>
#include <stdbool.h>

#include "fuzz.h"
#include "identity/cgroup.h"

static bool is_lower_hex(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

static bool ends_with(const char *s, const char *suffix)
{
        size_t a = strlen(s), b = strlen(suffix);

        return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* `name` is one whole '/'-separated component of `path`. */
static bool is_component(const char *path, const char *name)
{
        size_t n = strlen(name);

        for (const char *p = strstr(path, name); p; p = strstr(p + 1, name))
                if ((p == path || p[-1] == '/') && (p[n] == '/' || p[n] == '\0'))
                        return true;
        return false;
}

static void check_unit(const char *path, const char *unit)
{
        if (!unit)
                return;
        FUZZ_ASSERT(unit[0] && strlen(unit) <= 255);
        FUZZ_ASSERT(ends_with(unit, ".service") || ends_with(unit, ".scope"));
        FUZZ_ASSERT(!strchr(unit, '/'));
        FUZZ_ASSERT(is_component(path, unit));
}

static void check_container(const char *path, const char *container)
{
        static const char *const runtimes[] = {"docker", "podman", "containerd", "cri-o",
                                               "unknown"};
        const char *colon;
        bool known = false;

        if (!container)
                return;
        colon = strchr(container, ':');
        FUZZ_ASSERT(colon && strlen(colon + 1) == 64 && is_lower_hex(colon + 1, 64));
        for (size_t i = 0; i < sizeof(runtimes) / sizeof(runtimes[0]); i++)
                known = known || ((size_t) (colon - container) == strlen(runtimes[i]) &&
                                  strncmp(container, runtimes[i], strlen(runtimes[i])) == 0);
        FUZZ_ASSERT(known);
        FUZZ_ASSERT(strstr(path, colon + 1));
}

static void check_path(const char *path)
{
        char *unit = (char *) 1, *container = (char *) 1;
        bool delegated = true;

        FUZZ_ASSERT(cgroup_path_get_unit(path, &unit, &delegated) == 0);
        check_unit(path, unit);
        FUZZ_ASSERT(!delegated || strstr(path, "user@"));
        FUZZ_ASSERT(cgroup_path_get_container(path, &container) == 0);
        check_container(path, container);
        free(unit);
        free(container);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *text = fuzz_string(data, size);
        CgroupInfo info = {};
        int r;

        r = cgroup_info_parse(text, &info);
        FUZZ_ASSERT(r == 0 || r == -EBADMSG);
        if (r == 0) {
                FUZZ_ASSERT(info.path && info.path[0] == '/' && strstr(text, info.path));
                FUZZ_ASSERT(!strchr(info.path, '\n'));
                check_unit(info.path, info.unit);
                check_container(info.path, info.container);
                FUZZ_ASSERT(!info.user_delegated || info.unit);
                cgroup_info_done(&info);
        }

        /* Each line's path on its own, and the whole input as one path. */
        for (char *line = text, *next; line; line = next) {
                char *c1, *c2;

                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                c1 = strchr(line, ':');
                c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (c2)
                        check_path(c2 + 1);
        }
        free(text);
        text = fuzz_string(data, size);
        check_path(text);
        free(text);
        return 0;
}
