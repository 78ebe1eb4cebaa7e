/* Logging to stderr, one line per message; when stderr is the journal stream systemd gave us
 * (JOURNAL_STREAM), each message goes to the journal as a structured entry instead (PRIORITY,
 * ERRNO, MESSAGE_ID and the fields of LogFields), and, should the journal not take it, as a line
 * with a <N> syslog prefix. Elsewhere the lines are plain ("brokerd: message").
 * The log_*_errno() helpers return -abs(err) so a caller can `return log_error_errno(r, ...)`
 * and "%m" prints strerror(err). Thread-safe: one write per message.
 * Nothing logged may hold a token or a secret: callers pass names, ids and hashes only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <syslog.h>

#include "macro.h"

/* A message longer than this is cut. */
#define LOG_LINE_MAX 2048

void log_setup(const char *program);
void log_set_max_level(int level);
int log_get_max_level(void);
/* Whether messages go to the journal as structured entries (stderr is the journal stream). */
bool log_to_journal(void);

int log_internal(int level, int err, const char *format, ...) _printf_(3, 4);

#define log_full_errno(level, err, ...) log_internal((level), (err), __VA_ARGS__)
#define log_error_errno(err, ...)       log_internal(LOG_ERR, (err), __VA_ARGS__)
#define log_warning_errno(err, ...)     log_internal(LOG_WARNING, (err), __VA_ARGS__)
#define log_error(...)                  log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_warning(...)                log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_notice(...)                 log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_info(...)                   log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_debug(...)                  log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_oom()                       log_internal(LOG_ERR, ENOMEM, "Out of memory.")

/* What a message is about, as journal fields; NULL and unset ones are left out. The plain line
 * is the message alone, so the message must say what matters without them. */
typedef struct LogFields {
        const char *message_id; /* MESSAGE_ID: the event kind, one of messageid.h */
        bool has_peer;          /* PEER_UID (and PEER_PID when peer_pid > 0) */
        uid_t peer_uid;
        pid_t peer_pid;
        const char *peer_unit; /* PEER_UNIT */
        const char *rule;      /* RULE */
        const char *kid;       /* KID */
        const char *upstream;  /* UPSTREAM */
        uint64_t suppressed;   /* SUPPRESSED: like messages held back by a rate limit */
} LogFields;

/* log_internal() with fields (f may be NULL). */
int log_struct(int level, int err, const LogFields *f, const char *format, ...) _printf_(4, 5);

/* The journal entry of one message, as sd_journal_sendv() takes it: MESSAGE=, PRIORITY=,
 * SYSLOG_IDENTIFIER=, then ERRNO= (err != 0) and the set fields of `f`. The iovecs point into
 * `e`. Returns the number of fields. Exposed for the unit tests. */
#define LOG_JOURNAL_FIELDS_MAX 12
typedef struct LogJournalEntry {
        struct iovec iov[LOG_JOURNAL_FIELDS_MAX];
        char message[LOG_LINE_MAX + sizeof("MESSAGE=")];
        char small[LOG_JOURNAL_FIELDS_MAX - 1][64];
        char names[4][sizeof("PEER_UNIT=") + 256]; /* unit, rule, kid, upstream */
} LogJournalEntry;
size_t log_journal_entry(LogJournalEntry *e, int level, int err, const LogFields *f,
                         const char *message);

/* A flood guard for one cause of messages (a call site, or one upstream): at most one message
 * per interval; the next one to go out says how many were held back. Plain data; the caller
 * serialises access, or uses log_struct_ratelimited(), which does (one lock for all). */
typedef struct LogRatelimit {
        uint64_t interval_usec;
        uint64_t begin_usec; /* of the interval whose message went out; 0: none yet */
        uint64_t suppressed; /* held back since */
} LogRatelimit;
/* clang-format off */
#define LOG_RATELIMIT_INIT(seconds) {.interval_usec = (uint64_t) (seconds) * 1000000u}
/* clang-format on */
/* Seconds: one line per cause per this long. */
#define LOG_RATELIMIT_INTERVAL 10

/* Whether a message of this cause may go out at monotonic now_usec; when it may,
 * *ret_suppressed is how many were held back before it (and the count starts again). */
bool log_ratelimit_pass(LogRatelimit *rl, uint64_t now_usec, uint64_t *ret_suppressed);

/* log_struct() through `rl`: a message that goes out after others were held back ends with
 * " (N similar messages suppressed)" and carries SUPPRESSED=N. Returns -abs(err) either way. */
int log_struct_ratelimited(LogRatelimit *rl, int level, int err, const LogFields *f,
                           const char *format, ...) _printf_(5, 6);
