/* The daemon's parts, as its own files (server.c and the two sockets' ops) see them. Nothing
 * outside brokerd/daemon/ includes this. Event loop thread only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "daemon/server.h"
#include "federation/federation.h"
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
};

/* The request handlers of the two sockets (userdata: the Server). */
void workload_handle(Conn *c, const Request *req, void *userdata);
void admin_handle(Conn *c, const Request *req, void *userdata);

/* Re-reads the configuration file. On any problem the running configuration stays; the
 * problems are returned one per line in *ret_errors. */
int server_reload(Server *s, char **ret_errors);

/* Queues a lifecycle record with optional extra fields (reference taken over). */
void server_record(Server *s, const char *event, json_t *fields);
