#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <sys/stat.h>

static const char *log_program = "brokerd";
static int log_max_level = LOG_INFO;
static bool log_prefix_level;

/* Prefix lines with <N> only when stderr really is the journal stream systemd gave us
 * (JOURNAL_STREAM names its device:inode); a terminal or a pipe gets plain lines. */
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
        log_prefix_level = stderr_is_journal();
}

void log_set_max_level(int level)
{
        log_max_level = level;
}

int log_get_max_level(void)
{
        return log_max_level;
}

int log_internal(int level, int err, const char *format, ...)
{
        char line[2048];
        va_list ap;

        if (err < 0)
                err = -err;
        if (level > log_max_level)
                return -err;

        errno = err; /* for %m */
        va_start(ap, format);
        vsnprintf(line, sizeof(line), format, ap);
        va_end(ap);

        if (log_prefix_level)
                fprintf(stderr, "<%d>%s\n", level, line);
        else
                fprintf(stderr, "%s: %s\n", log_program, line);
        return -err;
}
