/* brokerctl audit verify: runs the grant log's one verifier (grantlog/verify.h) and reports
 * what it found: the first bad seq and what is wrong with it, or what it checked. */
#include <stdio.h>
#include <string.h>

#include "audit_tool.h"
#include "exitcode.h"
#include "grantlog/verify.h"
#include "macro.h"

static void print_keys(const GrantlogReport *r, bool pinned)
{
        for (size_t i = 0; i < r->n_keys; i++)
                printf("  signed by audit key %s (public key %s)%s\n", r->keys[i].kid,
                       r->keys[i].pub, pinned ? ", pinned" : "");
        if (!pinned && r->n_keys > 0)
                printf("  compare these with the key brokerctl status shows, or pin them with "
                       "--audit-key\n");
}

int audit_verify(const AuditToolArgs *a)
{
        GrantlogVerifyOptions o = {
            .trust = {.pins = a->pins, .n_pins = a->n_pins, .first_named = a->n_pins == 0},
            .threads = a->threads > 0 ? (unsigned) a->threads : 0,
        };
        const char *what = a->database ?: a->file;
        GrantlogReport r;

        if (a->since || a->until || a->n_events > 0 || a->format || a->output) {
                fprintf(stderr,
                        "brokerctl: %s applies to audit export, not verify: verify checks a "
                        "whole database or export file. To verify a time window, export it "
                        "(audit export --since/--until) and verify that file with --audit-key "
                        "and the audit.public_key 'brokerctl status' prints\n",
                        a->since    ? "--since"
                        : a->until  ? "--until"
                        : a->format ? "--format"
                        : a->output ? "--output"
                                    : "--event");
                return EXIT_USAGE;
        }
        if (!!a->database == !!a->file) {
                fprintf(stderr, "brokerctl: audit verify needs --database PATH or --file PATH\n");
                return EXIT_USAGE;
        }
        if (a->allow_empty && !a->file) {
                fprintf(stderr, "brokerctl: --allow-empty applies to --file only\n");
                return EXIT_USAGE;
        }
        if (a->database)
                grantlog_verify_database(a->database, &o, &r);
        else
                grantlog_verify_file(a->file, &o, &r);

        switch (r.verdict) {
        case GRANTLOG_INTACT:
                break;
        case GRANTLOG_EMPTY:
                if (a->allow_empty) {
                        printf("%s: no records\n", what);
                        return EXIT_OK;
                }
                fprintf(stderr,
                        "brokerctl: %s: no records: an export always holds some (pass "
                        "--allow-empty if an empty window is expected)\n",
                        what);
                return EXIT_OTHER;
        case GRANTLOG_UNREADABLE:
                /* not a verdict on the log: it may be intact */
                fprintf(stderr, "brokerctl: %s%s\n", r.why,
                        a->database ? " (check --database)" : "");
                return EXIT_USAGE;
        case GRANTLOG_NOT_A_LOG:
                fprintf(stderr, "brokerctl: %s\n", r.why);
                return EXIT_OTHER;
        case GRANTLOG_KEY_MISMATCH:
        case GRANTLOG_TAMPERED:
        case GRANTLOG_DAMAGED: /* its why names the seq */
                if (r.problem_seq > 0 && r.verdict != GRANTLOG_DAMAGED)
                        fprintf(stderr, "brokerctl: %s: seq %llu: %s\n", what,
                                (unsigned long long) r.problem_seq, r.why);
                else
                        fprintf(stderr, "brokerctl: %s: %s\n", what, r.why);
                return EXIT_OTHER;
        }

        printf("%s: %llu records (seq %llu..%llu), %llu checkpoints, chain intact%s\n", what,
               (unsigned long long) r.n_records, (unsigned long long) r.first_seq,
               (unsigned long long) r.last_seq, (unsigned long long) r.n_checkpoints,
               r.from_anchor ? " from its pruning anchor" : "");
        if (a->file && r.first_seq != 1)
                printf("  starts at seq %llu: the records before it are not in this file\n",
                       (unsigned long long) r.first_seq);
        if (a->file && r.last_checkpoint_seq < r.last_seq)
                printf("  the last %llu records come after the last checkpoint: no signature "
                       "covers them in this file\n",
                       (unsigned long long) (r.last_seq - r.last_checkpoint_seq));
        print_keys(&r, a->n_pins > 0);
        return EXIT_OK;
}
