/* Small helpers every file uses: scope-bound cleanup (systemd's idiom) and ownership moves. */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f)   __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _unused_       __attribute__((unused))
#define _noreturn_     __attribute__((noreturn))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b)     ((a) < (b) ? (a) : (b))
#define MAX(a, b)     ((a) > (b) ? (a) : (b))

/* Hand ownership out of a cleanup-guarded variable. */
#define TAKE_PTR(p)                                                                                \
        ({                                                                                         \
                typeof(p) _p = (p);                                                                \
                (p) = NULL;                                                                        \
                _p;                                                                                \
        })
#define TAKE_FD(fd)                                                                                \
        ({                                                                                         \
                int _fd = (fd);                                                                    \
                (fd) = -EBADF;                                                                     \
                _fd;                                                                               \
        })

static inline void freep(void *p)
{
        free(*(void **) p);
}

static inline void closep(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}

static inline void fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}

/* For strings that may hold secrets (tokens, key material rendered as text). */
static inline void erase_and_freep(char **p)
{
        if (*p) {
                explicit_bzero(*p, strlen(*p));
                free(*p);
        }
}

/* A NULL-terminated array of heap strings. */
static inline void strv_free(char **v)
{
        if (!v)
                return;
        for (char **i = v; *i; i++)
                free(*i);
        free(v);
}
static inline void strv_freep(char ***v)
{
        strv_free(*v);
}

#define _cleanup_free_       _cleanup_(freep)
#define _cleanup_close_      _cleanup_(closep)
#define _cleanup_fclose_     _cleanup_(fclosep)
#define _cleanup_strv_free_  _cleanup_(strv_freep)
#define _cleanup_erase_free_ _cleanup_(erase_and_freep)

static inline const char *strna(const char *s)
{
        return s ? s : "n/a";
}

static inline int negative_errno(void)
{
        return errno > 0 ? -errno : -EIO;
}
