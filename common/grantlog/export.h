/* Export of the grant log: the records of a time window, in seq order, as JSON lines (the
 * stored canonical records with their hash: what verify --file checks), RFC 4180 CSV, or OCSF
 * 1.1 Authentication events (mapping in README §Audit). Reads one snapshot, so a concurrent
 * prune by the running daemon leaves no gap; streams in constant memory; large CSV and OCSF
 * exports are rendered by several threads and still written in order.
 * Thread-safe: no shared state. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum GrantlogFormat {
        GRANTLOG_FORMAT_JSONL,
        GRANTLOG_FORMAT_CSV,
        GRANTLOG_FORMAT_OCSF,
} GrantlogFormat;

/* "jsonl", "csv", "ocsf"; -EINVAL for anything else. */
int grantlog_format_from_string(const char *s);

#define GRANTLOG_EVENTS_MAX 32

typedef struct GrantlogExportOptions {
        const char *database;
        GrantlogFormat format;
        int64_t since_ms, until_ms; /* [since, until), Unix ms; INT64_MIN / INT64_MAX: open */
        const char *const *events;  /* only records of these events; n_events 0: all */
        size_t n_events;
        unsigned threads; /* 0: one per online CPU for a large CSV or OCSF export */
        FILE *out;
        /* Called now and then with the records written so far, and once at the end (last). */
        void (*progress)(uint64_t done, uint64_t total, bool last, void *userdata);
        void *userdata;
} GrantlogExportOptions;

/* 0, or -errno with err filled:
 *   -ENOENT, -EACCES, -EBUSY      the database could not be read (no verdict on it)
 *   -EMEDIUMTYPE, -EPROTO         not a grant log (of a version this code reads)
 *   -EBADMSG                      a stored record is damaged: run verify
 *   -ESTALE                       the log was pruned under a parallel export: export again
 *   -EIO                          reading or writing failed */
int grantlog_export(const GrantlogExportOptions *o, char *err, size_t errlen);
