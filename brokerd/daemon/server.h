/* The daemon's state and its lifecycle: event loop, listeners, signals, reload, shutdown. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "daemon/audit.h"
#include "policy/config.h"
#include "keys/keystore.h"
#include "transport/listener.h"
#include "issuance/ratelimit.h"
#include "keys/seal.h"
#include "runtime/signpool.h"

typedef struct Conn Conn;

typedef struct Server {
        sd_event *event;
        Config *config;
        MasterKey *master;
        KeyStore *keys;
        sd_event_source *key_timer, *key_tick;
        AuditStore *audit;
        RateLimiter *rate;
        SignPool *signers;

        Listener workload;
        Listener admin;

        Conn *conns;          /* every open connection */
        size_t n_conns;       /* workload connections, bounded by limits */
        size_t n_admin_conns; /* admin connections, bounded on their own */
        UidCounter uids;

        int reserve_fd; /* closed to accept-and-refuse when out of file descriptors */

        int64_t started_at;
        uint64_t grants, denials, rate_limited, refused_connections;
        bool stopping;
} Server;

int server_new(Config *config, Server **ret);
int server_run(Server *s);
void server_free(Server *s);

/* Re-reads the configuration file. On any problem the running configuration stays; the
 * problems are returned one per line in *ret_errors. */
int server_reload(Server *s, char **ret_errors);

/* Queues a lifecycle event with optional extra fields (reference taken over). */
void server_audit_event(Server *s, const char *event, json_t *fields);
