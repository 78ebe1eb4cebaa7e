/* brokerctl audit export / verify: the command-line side of the grant-log library
 * (common/grantlog/): options checked and turned into the library's, its reports printed, its
 * results mapped to brokerctl's exit codes. Both return an exit code, and both refuse an option
 * of the other command as a usage error rather than ignore it: a verify given --since would
 * check the whole log, not the window its caller meant. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "grantlog/export.h"
#include "grantlog/reader.h"

#define AUDIT_PINS_MAX 16

typedef struct AuditToolArgs {
        const char *database;
        const char *file;          /* verify: an exported JSONL file ("-": stdin) */
        const char *since, *until; /* RFC 3339 or YYYY-MM-DD; since inclusive, until exclusive */
        const char *events[GRANTLOG_EVENTS_MAX]; /* export: --event, repeated or comma-separated */
        size_t n_events;
        const char *format;               /* jsonl | csv | ocsf; NULL: not given (jsonl) */
        const char *output;               /* NULL: stdout */
        const char *pins[AUDIT_PINS_MAX]; /* verify: audit keys vouched for (public key or id) */
        size_t n_pins;
        int threads;      /* 0: one per CPU for a large input */
        bool allow_empty; /* verify --file: an export with no records passes */
} AuditToolArgs;

/* Adds the events of one --event value ("grant" or "grant,deny"). A usage error (printed) for
 * an event the log does not know or too many. */
int audit_args_add_events(AuditToolArgs *a, char *value);

int audit_export(const AuditToolArgs *a);
int audit_verify(const AuditToolArgs *a);
