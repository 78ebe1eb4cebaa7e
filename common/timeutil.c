#include "timeutil.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

/* RFC 3339 has four-digit years only; these bound what we print and accept. */
#define RFC3339_MIN_SEC (-62167219200LL) /* 0000-01-01T00:00:00Z */
#define RFC3339_MAX_SEC 253402300799LL   /* 9999-12-31T23:59:59Z */

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

int duration_parse(const char *s, uint64_t *ret_sec)
{
        uint64_t v = 0, mult = 1;
        const char *p;

        if (!s || !is_digit(s[0]))
                return -EINVAL; /* empty, sign, leading space */

        /* The whole syntax is checked before any arithmetic so that "99999999999x" is a syntax
         * error, not a range error. */
        for (p = s; is_digit(*p); p++)
                ;
        switch (*p) {
        case '\0':
        case 's':
                break;
        case 'm':
                mult = 60;
                break;
        case 'h':
                mult = 3600;
                break;
        case 'd':
                mult = 86400;
                break;
        default:
                return -EINVAL;
        }
        if (*p != '\0' && p[1] != '\0')
                return -EINVAL;

        for (const char *q = s; q < p; q++) {
                /* Stop as soon as the value exceeds the limit: later digits only make it larger,
                 * and this keeps v * 10 far from wrapping. */
                v = v * 10 + (uint64_t) (*q - '0');
                if (v > DURATION_MAX_SEC)
                        return -ERANGE;
        }
        if (__builtin_mul_overflow(v, mult, &v) || v > DURATION_MAX_SEC)
                return -ERANGE;

        *ret_sec = v;
        return 0;
}

/* Writes v as exactly n decimal digits, then `sep`; returns the position after it. */
static char *put_digits(char *p, int v, int n, char sep)
{
        for (int i = n - 1; i >= 0; i--) {
                p[i] = (char) ('0' + v % 10);
                v /= 10;
        }
        p[n] = sep;
        return p + n + 1;
}

/* Times outside years 0000..9999 cannot be written in RFC 3339; they are clamped to the first
 * or last representable millisecond rather than printed in a form no parser accepts. Negative
 * times (before 1970) are floored, so -1 ms is 1969-12-31T23:59:59.999Z. */
void time_format_rfc3339_ms(int64_t unix_ms, char buf[TIME_RFC3339_MAX])
{
        int64_t sec = unix_ms / 1000, ms = unix_ms % 1000;
        char *p = buf;
        time_t t;
        struct tm tm;

        if (ms < 0) {
                ms += 1000;
                sec -= 1;
        }
        if (sec < RFC3339_MIN_SEC) {
                sec = RFC3339_MIN_SEC;
                ms = 0;
        } else if (sec > RFC3339_MAX_SEC) {
                sec = RFC3339_MAX_SEC;
                ms = 999;
        }

        t = (time_t) sec;
        if (!gmtime_r(&t, &tm)) {
                /* Cannot happen for the clamped range; keep the output well-formed anyway. */
                memcpy(buf, "1970-01-01T00:00:00.000Z", 25);
                return;
        }

        /* Fixed-width fields written by hand: every field is in range after the clamp, and this
         * cannot truncate (snprintf's int fields would need a larger buffer to prove that). */
        p = put_digits(p, tm.tm_year + 1900, 4, '-');
        p = put_digits(p, tm.tm_mon + 1, 2, '-');
        p = put_digits(p, tm.tm_mday, 2, 'T');
        p = put_digits(p, tm.tm_hour, 2, ':');
        p = put_digits(p, tm.tm_min, 2, ':');
        p = put_digits(p, tm.tm_sec, 2, '.');
        p = put_digits(p, (int) ms, 3, 'Z');
        *p = '\0';
}

/* Reads exactly n digits at *p and advances it. */
static bool take_digits(const char **p, int n, int *ret)
{
        int v = 0;

        for (int i = 0; i < n; i++) {
                if (!is_digit((*p)[i]))
                        return false;
                v = v * 10 + ((*p)[i] - '0');
        }
        *p += n;
        *ret = v;
        return true;
}

static bool take_char(const char **p, char c)
{
        if (**p != c)
                return false;
        (*p)++;
        return true;
}

static bool is_leap_year(int y)
{
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
        static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

        return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

/* Leap seconds (":60") are rejected: Unix time cannot represent them, and a caller giving an
 * audit window has no reason to name one. */
int time_parse_rfc3339(const char *s, int64_t *ret_ms)
{
        int year, mon, day, hour = 0, min = 0, sec = 0, ms = 0, off_min = 0;
        struct tm tm = {};
        const char *p = s;
        time_t t;

        if (!s)
                return -EINVAL;

        if (!take_digits(&p, 4, &year) || !take_char(&p, '-') || !take_digits(&p, 2, &mon) ||
            !take_char(&p, '-') || !take_digits(&p, 2, &day))
                return -EINVAL;
        if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon))
                return -EINVAL;

        if (*p != '\0') {
                int off_h, off_m, sign;

                if (*p != 'T' && *p != 't' && *p != ' ')
                        return -EINVAL;
                p++;
                if (!take_digits(&p, 2, &hour) || !take_char(&p, ':') ||
                    !take_digits(&p, 2, &min) || !take_char(&p, ':') || !take_digits(&p, 2, &sec))
                        return -EINVAL;
                if (hour > 23 || min > 59 || sec > 59)
                        return -EINVAL;

                if (*p == '.') {
                        int n = 0;

                        /* Up to nanoseconds; digits below the millisecond are truncated. */
                        for (p++; is_digit(*p); p++, n++) {
                                if (n >= 9)
                                        return -EINVAL;
                                if (n < 3)
                                        ms = ms * 10 + (*p - '0');
                        }
                        if (n == 0)
                                return -EINVAL;
                        for (; n < 3; n++)
                                ms *= 10;
                }

                switch (*p) {
                case 'Z':
                case 'z':
                        p++;
                        break;
                case '+':
                case '-':
                        sign = *p == '+' ? 1 : -1;
                        p++;
                        if (!take_digits(&p, 2, &off_h) || !take_char(&p, ':') ||
                            !take_digits(&p, 2, &off_m))
                                return -EINVAL;
                        if (off_h > 23 || off_m > 59)
                                return -EINVAL;
                        off_min = sign * (off_h * 60 + off_m);
                        break;
                default:
                        return -EINVAL; /* a time without an offset is ambiguous */
                }
                if (*p != '\0')
                        return -EINVAL;
        }

        tm.tm_year = year - 1900;
        tm.tm_mon = mon - 1;
        tm.tm_mday = day;
        tm.tm_hour = hour;
        tm.tm_min = min;
        tm.tm_sec = sec;
        /* Every field is range-checked above, so -1 here is 1969-12-31T23:59:59Z, not an error. */
        t = timegm(&tm);

        /* Local time = UTC + offset, so UTC = local - offset. */
        *ret_ms = ((int64_t) t - (int64_t) off_min * 60) * 1000 + ms;
        return 0;
}

static struct timespec clock_now(clockid_t id)
{
        struct timespec ts;

        /* Only fails for an invalid clock id; both ids used here always exist on Linux. */
        if (clock_gettime(id, &ts) < 0)
                ts = (struct timespec){};
        return ts;
}

int64_t now_unix_ms(void)
{
        struct timespec ts = clock_now(CLOCK_REALTIME);

        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_unix_sec(void)
{
        return (int64_t) clock_now(CLOCK_REALTIME).tv_sec;
}

uint64_t now_mono_usec(void)
{
        struct timespec ts = clock_now(CLOCK_MONOTONIC);

        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}
