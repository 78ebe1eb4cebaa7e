/* The daemon's parts, as its own files (server.c and the two sockets' ops) see them. Nothing
 * outside brokerd/daemon/ includes this. Event loop thread only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "daemon/notify.h"
#include "daemon/server.h"
#include "federation/federation.h"
#include "grantlog/record.h"
#include "grantlog/store.h"
#include "issuance/issuance.h"
#include "keys/keyservice.h"
#include "keys/seal.h"
#include "keys/secretstore.h"
#include "runtime/mailbox.h"
#include "runtime/workers.h"
#include "transport/transport.h"

struct Server {
        sd_event *event;
        Config *config;
        MasterKey *master;
        SigningKey *audit_key; /* signs the grant log's statements */
        GrantlogStore *log;
        Mailbox *mailbox;
        Workers *workers;
        KeyService *keys;
        SecretStore *secrets;
        Federation *federation;
        Issuance *issuance;
        Transport *transport;
        int64_t started_at;
        bool stopping;
        Notifier notify; /* sd_notify: READY, STATUS, RELOADING, STOPPING */
};

/* The request handlers of the two sockets (userdata: the Server). */
void workload_handle(Conn *c, const Request *req, void *userdata);
void admin_handle(Conn *c, const Request *req, void *userdata);

/* Re-reads the configuration file. On any problem the running configuration stays; the
 * problems are returned one per line in *ret_errors. Recorded as config_reloaded or
 * config_reload_failed, with who asked (`origin`: the admin caller or the signal's sender). */
int server_reload(Server *s, const GrantlogOrigin *origin, char **ret_errors);

/* Queues a lifecycle record with optional extra fields (reference taken over); _by: one that
 * someone asked for (see grantlog_record_lifecycle()). */
void server_record(Server *s, const char *event, json_t *fields);
void server_record_by(Server *s, const char *event, const GrantlogOrigin *origin, json_t *fields);
/* Queues a record made by a grantlog/record.h builder (taken over; NULL: out of memory). */
void server_submit(Server *s, json_t *rec, int64_t time_ms);
