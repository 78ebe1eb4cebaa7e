#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <time.h>

static const char *log_program = "brokerd";
static int log_max_level = LOG_INFO;
static bool log_stream_is_journal; /* stderr: <N> prefixes */
static bool log_journal;           /* structured entries */

/* Structured entries only when stderr really is the journal stream systemd gave us
 * (JOURNAL_STREAM names its device:inode); a terminal, a file or a pipe gets plain lines. */
static bool stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == dev && st.st_ino == ino;
}

void log_setup(const char *program)
{
        if (program)
                log_program = program;
        log_stream_is_journal = stderr_is_journal();
        /* sd_journal_send() drops what it cannot send when the journal's socket is missing:
         * then the stream (prefixed lines) is the only way to be heard. */
        log_journal = log_stream_is_journal && access("/run/systemd/journal/socket", F_OK) == 0;
}

void log_set_max_level(int level)
{
        log_max_level = level;
}

int log_get_max_level(void)
{
        return log_max_level;
}

bool log_to_journal(void)
{
        return log_journal;
}

static size_t add_field(LogJournalEntry *e, size_t n, char *buf, size_t size, const char *fmt, ...)
    _printf_(5, 6);
static size_t add_field(LogJournalEntry *e, size_t n, char *buf, size_t size, const char *fmt, ...)
{
        va_list ap;
        int len;

        va_start(ap, fmt);
        len = vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        if (len < 0)
                return n;
        e->iov[n] = (struct iovec){.iov_base = buf, .iov_len = MIN((size_t) len, size - 1)};
        return n + 1;
}

size_t log_journal_entry(LogJournalEntry *e, int level, int err, const LogFields *f,
                         const char *message)
{
        size_t n = 0, s = 0, w = 0;

        n = add_field(e, n, e->message, sizeof(e->message), "MESSAGE=%s", message);
        n = add_field(e, n, e->small[s++], sizeof(e->small[0]), "PRIORITY=%d", level & LOG_PRIMASK);
        n = add_field(e, n, e->small[s++], sizeof(e->small[0]), "SYSLOG_IDENTIFIER=%s",
                      log_program);
        if (err != 0)
                n = add_field(e, n, e->small[s++], sizeof(e->small[0]), "ERRNO=%d",
                              err < 0 ? -err : err);
        if (!f)
                return n;
        if (f->message_id)
                n = add_field(e, n, e->small[s++], sizeof(e->small[0]), "MESSAGE_ID=%s",
                              f->message_id);
        if (f->has_peer) {
                n = add_field(e, n, e->small[s++], sizeof(e->small[0]), "PEER_UID=%u",
                              (unsigned) f->peer_uid);
                if (f->peer_pid > 0)
                        n = add_field(e, n, e->small[s++], sizeof(e->small[0]), "PEER_PID=%d",
                                      (int) f->peer_pid);
        }
        if (f->suppressed > 0)
                n = add_field(e, n, e->small[s++], sizeof(e->small[0]), "SUPPRESSED=%llu",
                              (unsigned long long) f->suppressed);
        if (f->peer_unit)
                n = add_field(e, n, e->names[w++], sizeof(e->names[0]), "PEER_UNIT=%s",
                              f->peer_unit);
        if (f->rule)
                n = add_field(e, n, e->names[w++], sizeof(e->names[0]), "RULE=%s", f->rule);
        if (f->kid)
                n = add_field(e, n, e->names[w++], sizeof(e->names[0]), "KID=%s", f->kid);
        if (f->upstream)
                n = add_field(e, n, e->names[w++], sizeof(e->names[0]), "UPSTREAM=%s", f->upstream);
        return n;
}

/* One message out: a journal entry, or a line (the journal's <N> prefix when the entry could
 * not be sent to a journal that is there: stderr still reaches it). */
static void emit(int level, int err, const LogFields *f, const char *message)
{
        if (log_journal) {
                LogJournalEntry e;
                size_t n = log_journal_entry(&e, level, err, f, message);

                if (sd_journal_sendv(e.iov, (int) n) >= 0)
                        return;
        }
        if (log_stream_is_journal)
                fprintf(stderr, "<%d>%s\n", level, message);
        else
                fprintf(stderr, "%s: %s\n", log_program, message);
}

static int log_va(int level, int err, const LogFields *f, const char *suffix, const char *format,
                  va_list ap) _printf_(5, 0);
static int log_va(int level, int err, const LogFields *f, const char *suffix, const char *format,
                  va_list ap)
{
        char line[LOG_LINE_MAX];
        size_t len;

        if (err < 0)
                err = -err;
        if (level > log_max_level)
                return -err;
        errno = err; /* for %m */
        vsnprintf(line, sizeof(line), format, ap);
        len = strlen(line);
        if (suffix)
                snprintf(line + len, sizeof(line) - len, "%s", suffix);
        emit(level, err, f, line);
        return -err;
}

int log_internal(int level, int err, const char *format, ...)
{
        va_list ap;
        int r;

        va_start(ap, format);
        r = log_va(level, err, NULL, NULL, format, ap);
        va_end(ap);
        return r;
}

int log_struct(int level, int err, const LogFields *f, const char *format, ...)
{
        va_list ap;
        int r;

        va_start(ap, format);
        r = log_va(level, err, f, NULL, format, ap);
        va_end(ap);
        return r;
}

bool log_ratelimit_pass(LogRatelimit *rl, uint64_t now_usec, uint64_t *ret_suppressed)
{
        if (rl->begin_usec != 0 && now_usec - rl->begin_usec < rl->interval_usec) {
                rl->suppressed++;
                return false;
        }
        rl->begin_usec = now_usec ? now_usec : 1;
        *ret_suppressed = rl->suppressed;
        rl->suppressed = 0;
        return true;
}

static pthread_mutex_t ratelimit_lock = PTHREAD_MUTEX_INITIALIZER;

int log_struct_ratelimited(LogRatelimit *rl, int level, int err, const LogFields *f,
                           const char *format, ...)
{
        LogFields fields = f ? *f : (LogFields){};
        char suffix[64] = "";
        struct timespec ts;
        uint64_t held = 0;
        va_list ap;
        bool pass;
        int r;

        if (level > log_max_level)
                return err < 0 ? err : -err;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        pthread_mutex_lock(&ratelimit_lock);
        pass = log_ratelimit_pass(rl, (uint64_t) ts.tv_sec * 1000000u + ts.tv_nsec / 1000, &held);
        pthread_mutex_unlock(&ratelimit_lock);
        if (!pass)
                return err < 0 ? err : -err;
        if (held > 0) {
                snprintf(suffix, sizeof(suffix), " (%llu similar messages suppressed)",
                         (unsigned long long) held);
                fields.suppressed = held;
        }
        va_start(ap, format);
        r = log_va(level, err, &fields, suffix, format, ap);
        va_end(ap);
        return r;
}
