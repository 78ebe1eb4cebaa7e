/* The transport: the listening sockets and their connections. It frames and routes, nothing
 * else: it accepts (admitting a connection by its uid's count, the total, and a small allowance
 * of its own for the admin socket, so workloads filling the broker never lock the operator out;
 * with a file-descriptor reserve so accept never starves), identifies the caller (the kernel's
 * word at accept; /proc on a worker), reads frames (length checked before the body is
 * buffered), hands each parsed request to the handler of its socket, writes the answer, and
 * enforces the idle, read and write timeouts. A connection works on one request at a time: while
 * a request is being answered nothing more is read from it, so a client can never queue
 * unbounded work or memory.
 *
 * A uid's connections are shared out among its workloads (identity: uid, unit and container),
 * and the last sixteenth of the total is kept for root, so neither one container of a uid nor
 * all the other uids together can lock out the rest.
 *
 * Threads: the event loop only (identification runs on a worker and comes back through the
 * mailbox). Errors: -errno, logged. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "message.h"
#include "runtime/mailbox.h"
#include "runtime/workers.h"
#include "transport/conn.h"

typedef struct Transport Transport;

typedef struct TransportLimits {
        uint64_t max_connections;              /* workload connections in all; the last
                                                * sixteenth of them is for root */
        uint64_t max_connections_per_uid;      /* workload connections per uid */
        uint64_t max_connections_per_identity; /* per uid + unit + container, within that */
        uint64_t connect_rate, connect_burst;  /* new connections a second per uid; 0: none */
        uint64_t idle_timeout;                 /* seconds without a request */
        uint64_t read_timeout;                 /* seconds for a started frame, or pending output */
} TransportLimits;

/* Answers one request (see conn.h for how). `req` lives only for the duration of the call. */
typedef void (*request_handler_t)(Conn *c, const Request *req, void *userdata);

int transport_new(sd_event *event, Workers *workers, Mailbox *mailbox,
                  const TransportLimits *limits, Transport **ret);
void transport_free(Transport *t);

/* Takes the socket systemd passed under `name` or creates one at `path` (see listener.h) and
 * serves it: admin sockets take root and the broker's own uid only, workload sockets anyone. */
int transport_listen(Transport *t, const char *path, const char *name, bool admin,
                     request_handler_t handler, void *userdata);

void transport_set_limits(Transport *t, const TransportLimits *limits);

/* Shutdown: stop accepting; then let connections finish the request they work on and close;
 * then close what is left. */
void transport_stop_accepting(Transport *t);
void transport_shutdown(Transport *t);
void transport_close_all(Transport *t);

typedef struct TransportStats {
        uint64_t connections, admin_connections, refused_connections;
} TransportStats;

void transport_stats(const Transport *t, TransportStats *ret);
