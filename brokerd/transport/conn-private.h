/* Between the transport and its connections (transport/ only). */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>

#include "transport/transport.h"

/* What the connections of a transport share. */
typedef struct TransportShared {
        sd_event *event;
        Workers *workers;
        Mailbox *mailbox;
        TransportLimits limits;
        Conn *conns; /* every open connection */
        uint64_t n_conns, n_admin_conns;
        void (*on_close)(Transport *t, Conn *c); /* frees the connection's admission */
        /* Once the caller is identified: NULL to keep it, else why not (and the code). */
        const char *(*on_identified)(Transport *t, Conn *c, BrokerErrorCode *ret_code);
        Transport *transport;
} TransportShared;

/* A connection on an accepted socket (taken over). Workload callers are identified on a worker
 * before their first request is handled. */
int conn_new(TransportShared *sh, int fd, Caller *caller, bool admin, request_handler_t handler,
             void *userdata);

bool conn_is_admin(const Conn *c);
/* Whether the connection holds a slot of its identity's (set when the transport admits it). */
bool conn_identity_counted(const Conn *c);
void conn_set_identity_counted(Conn *c);
void conn_close(Conn *c);
void conn_close_all(TransportShared *sh);
/* Stops reading new requests; connections close once their current request is answered. */
void conn_shutdown_all(TransportShared *sh);
