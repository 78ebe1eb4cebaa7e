/* brokerctl audit export: options, output file, progress line; the export itself is the
 * grant-log library's (grantlog/export.h). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "audit_tool.h"
#include "exitcode.h"
#include "grantlog/record.h"
#include "macro.h"
#include "timeutil.h"

int audit_args_add_events(AuditToolArgs *a, char *value)
{
        for (char *e; (e = strsep(&value, ",")) != NULL;) {
                if (!grantlog_event_known(e)) {
                        fprintf(stderr,
                                "brokerctl: --event: \"%s\" is not an event the grant log "
                                "records (%s)\n",
                                e, GRANTLOG_EVENT_NAMES);
                        return EXIT_USAGE;
                }
                if (a->n_events >= GRANTLOG_EVENTS_MAX) {
                        fprintf(stderr, "brokerctl: at most %u events with --event\n",
                                GRANTLOG_EVENTS_MAX);
                        return EXIT_USAGE;
                }
                a->events[a->n_events++] = e;
        }
        return EXIT_OK;
}

static int parse_time_option(const char *name, const char *value, int64_t *ret)
{
        if (value && time_parse_rfc3339(value, ret) < 0) {
                fprintf(stderr,
                        "brokerctl: --%s: \"%s\" is not RFC 3339 (2026-11-22T10:00:00Z) or a date "
                        "(2026-11-22)\n",
                        name, value);
                return -EINVAL;
        }
        return 0;
}

/* A line on the terminal for an export long enough to wait for. */
#define PROGRESS_MIN 100000

static void progress_line(uint64_t done, uint64_t total, bool last, void *userdata)
{
        if (total < PROGRESS_MIN)
                return;
        fprintf(stderr, "\rbrokerctl: exported %llu of %llu records%s", (unsigned long long) done,
                (unsigned long long) total, last ? "\n" : "");
}

int audit_export(const AuditToolArgs *a)
{
        _cleanup_fclose_ FILE *file = NULL;
        GrantlogExportOptions o = {
            .database = a->database,
            .since_ms = INT64_MIN,
            .until_ms = INT64_MAX,
            .events = a->events,
            .n_events = a->n_events,
            .threads = a->threads > 0 ? (unsigned) a->threads : 0,
            .out = stdout,
        };
        char err[1024];
        int r;

        if (a->file || a->n_pins > 0 || a->allow_empty) {
                fprintf(stderr, "brokerctl: %s applies to audit verify, not export%s\n",
                        a->file         ? "--file"
                        : a->n_pins > 0 ? "--audit-key"
                                        : "--allow-empty",
                        a->file ? " (write the export to a file with --output FILE)" : "");
                return EXIT_USAGE;
        }
        if (!a->database) {
                fprintf(stderr, "brokerctl: audit export needs --database PATH\n");
                return EXIT_USAGE;
        }
        r = grantlog_format_from_string(a->format ?: "jsonl");
        if (r < 0) {
                fprintf(stderr, "brokerctl: --format must be jsonl, csv or ocsf, got \"%s\"\n",
                        a->format);
                return EXIT_USAGE;
        }
        o.format = r;
        if (parse_time_option("since", a->since, &o.since_ms) < 0 ||
            parse_time_option("until", a->until, &o.until_ms) < 0)
                return EXIT_USAGE;
        if (a->since && a->until && o.since_ms > o.until_ms) {
                fprintf(stderr, "brokerctl: --since %s is later than --until %s\n", a->since,
                        a->until);
                return EXIT_USAGE;
        }
        if (a->output) {
                file = fopen(a->output, "we");
                if (!file) {
                        fprintf(stderr, "brokerctl: cannot write %s: %m\n", a->output);
                        return EXIT_USAGE;
                }
                o.out = file;
        }
        setvbuf(o.out, NULL, _IOFBF, 1u << 20);
        if (isatty(STDERR_FILENO))
                o.progress = progress_line;

        r = grantlog_export(&o, err, sizeof(err));
        switch (r) {
        case 0:
                return EXIT_OK;
        case -ENOENT:
        case -EACCES:
        case -EBUSY:
                fprintf(stderr, "brokerctl: %s (check --database)\n", err);
                return EXIT_USAGE;
        case -EBADMSG:
                fprintf(stderr, "brokerctl: %s; run 'brokerctl audit verify'\n", err);
                return EXIT_OTHER;
        default:
                fprintf(stderr, "brokerctl: %s\n", err);
                return EXIT_OTHER;
        }
}
