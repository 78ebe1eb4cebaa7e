/* brokerctl audit export / verify: read the audit database (or an exported file) directly,
 * without the daemon, as a compliance team would. Both return brokerctl exit codes. */
#pragma once

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_PINS_MAX    16
#define AUDIT_THREADS_MAX 16

typedef struct AuditToolArgs {
        const char *database;
        const char *file;          /* verify: an exported JSONL file ("-": stdin) */
        const char *since, *until; /* RFC 3339 or YYYY-MM-DD; since inclusive, until exclusive */
        const char *event;
        const char *format;               /* jsonl | csv | ocsf */
        const char *output;               /* NULL: stdout */
        const char *pins[AUDIT_PINS_MAX]; /* verify: accepted audit public keys (base64url) */
        size_t n_pins;
        int threads; /* 0: one per CPU for a large input */
} AuditToolArgs;

int audit_export(const AuditToolArgs *a);
int audit_verify(const AuditToolArgs *a);

/* Opens the database read-only; prints why not and returns NULL on failure. */
sqlite3 *audit_db_open(const char *path);

/* --threads, or one per CPU once the input (`size` units) is large enough to gain from them:
 * per_thread_min units for each. */
size_t audit_thread_count(const AuditToolArgs *a, uint64_t size, uint64_t per_thread_min);
