/* The config parser (brokerd/policy/config.c config_parse_text): the input is the file.
 * A valid config must hold what the daemon relies on without checking again; an invalid one
 * must come with at least one problem line, each a printable "PATH: message". */
#include <errno.h>
#include <stdbool.h>

#include "fuzz.h"
#include "macro.h"
#include "policy/config.h"

static bool printable(const char *s)
{
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

static void check_valid(const Config *c)
{
        FUZZ_ASSERT(c->issuer && strncmp(c->issuer, "https://", 8) == 0);
        FUZZ_ASSERT(c->workload_socket && c->workload_socket[0] == '/');
        FUZZ_ASSERT(c->admin_socket && c->admin_socket[0] == '/');
        FUZZ_ASSERT(strcmp(c->workload_socket, c->admin_socket) != 0);
        FUZZ_ASSERT(c->state_directory && c->state_directory[0] == '/');
        FUZZ_ASSERT(c->audit_database && c->audit_database[0] == '/');
        FUZZ_ASSERT(c->default_ttl >= 1 && c->default_ttl <= c->max_ttl);
        FUZZ_ASSERT(c->limits.max_connections_per_uid <= c->limits.max_connections);
        FUZZ_ASSERT(c->limits.rate == 0 || c->limits.burst >= 1);
        FUZZ_ASSERT(c->keys.publish_ahead < c->keys.rotation_period);
        FUZZ_ASSERT(c->keys.retention >= config_longest_ttl(c));
        FUZZ_ASSERT(c->n_rules == 0 || c->rules);
        for (size_t i = 0; i < c->n_rules; i++) {
                const Rule *r = &c->rules[i];

                FUZZ_ASSERT(r->name && r->name[0] && r->subject && r->subject[0]);
                FUZZ_ASSERT(r->n_audiences >= 1 && r->audiences);
                for (size_t j = 0; j < r->n_audiences; j++)
                        FUZZ_ASSERT(r->audiences[j] && r->audiences[j][0]);
                FUZZ_ASSERT(!r->audiences[r->n_audiences]);
                for (size_t j = 0; j < r->n_scopes; j++)
                        FUZZ_ASSERT(r->scopes[j] && r->scopes[j][0]);
                FUZZ_ASSERT(r->max_ttl >= 1 && r->max_ttl <= c->max_ttl);
                FUZZ_ASSERT(!r->match.exe || r->match.exe[0] == '/');
                FUZZ_ASSERT(!r->match.cgroup || r->match.cgroup[0] == '/');
                FUZZ_ASSERT(!r->match.container || strchr(r->match.container, ':'));
                for (size_t j = 0; j < i; j++)
                        FUZZ_ASSERT(strcmp(c->rules[j].name, r->name) != 0);
        }
        FUZZ_ASSERT(!config_restart_only_change(c, c));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        Config *c = NULL;
        char **errors = NULL;
        int r;

        r = config_parse_text((const char *) data, size, "/etc/brokerd/fuzz.json", &c, &errors);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                FUZZ_ASSERT(r == -EINVAL && !c);
                FUZZ_ASSERT(errors && errors[0]);
                for (char **e = errors; *e; e++)
                        FUZZ_ASSERT(strstr(*e, ": ") && printable(*e));
                strv_free(errors);
                return 0;
        }
        FUZZ_ASSERT(r == 0 && c && !errors);
        check_valid(c);
        config_unref(c);
        return 0;
}
