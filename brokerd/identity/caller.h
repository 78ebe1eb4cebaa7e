/* A caller as its connection knows it: the kernel's word at accept (peer credentials, a pidfd
 * that pins the process), then what /proc and the user database say, read once on a worker,
 * and the peer object its grant records hold. Immutable once identified, and shared by
 * reference between the connection and the jobs working for it.
 *
 * Threads: made on the event loop, identified on one worker, then read by any thread; the
 * reference count is atomic. Errors: -errno. */
#pragma once

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "identity/identity.h"

typedef struct Caller {
        atomic_uint refs;
        struct ucred cred; /* always: from SO_PEERCRED */
        /* 0 once identified; -ESRCH (the process was gone before it was identified) or
         * -EREMOTE (it lives in a PID namespace the broker cannot see): its token requests are
         * denied, and recorded with what the kernel said. */
        int error;
        bool identified;
        Identity id;  /* when identified and error == 0 */
        json_t *peer; /* the object grant records hold under "peer" */
} Caller;

/* A workload caller at accept, on the loop: SO_PEERCRED and SO_PEERPIDFD. A caller in another
 * PID namespace is made (error -EREMOTE, identified); other failures are returned. */
int caller_from_socket(int fd, Caller **ret);

/* An admin caller: its peer credentials are all that is recorded. */
int caller_from_cred(const struct ucred *cred, Caller **ret);

/* Reads the rest of the identity (a worker's job). Sets error to -ESRCH when the process has
 * gone; returns -ENOMEM or another unexpected -errno (the connection is then refused). */
int caller_identify(Caller *c);

/* 0 while the caller is identified and the process that connected is alive: whoever holds a
 * connection whose process has exited is not the process that was identified. */
int caller_check(const Caller *c);

/* What a caller that fails caller_check() is told. */
extern const char caller_unconfirmed_message[];

Caller *caller_ref(Caller *c);
void caller_unref(Caller *c);
static inline void caller_unrefp(Caller **c)
{
        if (*c)
                caller_unref(*c);
}
