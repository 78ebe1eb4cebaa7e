#include "identity/caller.h"

#include <stdlib.h>

#include "macro.h"

const char caller_unconfirmed_message[] =
    "caller identity could not be confirmed: the connecting process has exited, or runs in "
    "a PID namespace the broker cannot see";

static Caller *caller_alloc(const struct ucred *cred)
{
        Caller *c = calloc(1, sizeof(Caller));

        if (!c)
                return NULL;
        atomic_init(&c->refs, 1);
        c->cred = *cred;
        c->id.pidfd = -EBADF;
        return c;
}

/* What the kernel said, when that is all there is. */
static json_t *peer_from_cred(const struct ucred *cred)
{
        return grantlog_peer_new(
            &(GrantlogPeer){.uid = cred->uid, .gid = cred->gid, .pid = cred->pid}, false);
}

int caller_from_socket(int fd, Caller **ret)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        Caller *c;
        int r;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return -errno;
        c = caller_alloc(&cred);
        if (!c)
                return -ENOMEM;
        r = identity_from_socket(fd, &c->id);
        if (r == -EREMOTE) {
                /* Kept: its requests are answered "denied" (and recorded). */
                c->error = r;
                c->identified = true;
                c->peer = peer_from_cred(&cred);
                if (!c->peer) {
                        caller_unref(c);
                        return -ENOMEM;
                }
        } else if (r < 0) {
                caller_unref(c);
                return r;
        }
        *ret = c;
        return 0;
}

int caller_from_cred(const struct ucred *cred, Caller **ret)
{
        Caller *c = caller_alloc(cred);

        if (!c)
                return -ENOMEM;
        c->identified = true;
        c->error = -EPERM; /* an admin caller asks for no tokens */
        c->peer = peer_from_cred(cred);
        if (!c->peer) {
                caller_unref(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

int caller_identify(Caller *c)
{
        GrantlogPeer p;
        int r;

        if (c->identified)
                return 0;
        r = identity_read_process(&c->id);
        if (r == -ESRCH) {
                c->error = r;
                c->peer = peer_from_cred(&c->cred);
        } else if (r < 0)
                return r;
        else {
                identity_peer(&c->id, &p);
                c->peer = grantlog_peer_new(&p, false);
        }
        if (!c->peer)
                return -ENOMEM;
        c->identified = true;
        return 0;
}

int caller_check(const Caller *c)
{
        if (!c->identified || c->error < 0)
                return c->error < 0 ? c->error : -ESRCH;
        return identity_check_alive(&c->id);
}

Caller *caller_ref(Caller *c)
{
        atomic_fetch_add(&c->refs, 1);
        return c;
}

void caller_unref(Caller *c)
{
        if (atomic_fetch_sub(&c->refs, 1) != 1)
                return;
        identity_done(&c->id);
        json_decref(c->peer);
        free(c);
}
