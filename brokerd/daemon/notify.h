/* What the service manager learns of the daemon (sd_notify): READY=1 once both sockets, the key
 * store and the grant log work (the "started" record is committed); STATUS= with live counters
 * and failing parts, sent again when it changed, checked every NOTIFY_STATUS_INTERVAL;
 * RELOADING=1 with MONOTONIC_USEC= in one datagram (Type=notify-reload reads it only there),
 * then READY=1; STOPPING=1. Without NOTIFY_SOCKET it all costs nothing. Nothing here holds a
 * secret. Event loop thread only (the commit callback only posts to the mailbox). */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "runtime/mailbox.h"

#define NOTIFY_STATUS_INTERVAL_USEC (3 * 1000000u)

typedef struct Server Server;

typedef struct Notifier {
        MailboxMsg started; /* the "started" record's commit, on the loop */
        int started_result;
        bool armed; /* the loop runs: READY=1 may go out */
        bool ready; /* READY=1 was sent */
        sd_event_source *timer;
        char *status; /* what STATUS= last said */
} Notifier;

/* Queues the "started" record; READY=1 waits for its commit. */
void notify_record_started(Server *s);
/* Just before the loop runs: READY=1 as soon as the "started" record is committed (if that
 * fails, the daemon logs why and the loop ends with the error: it never says it is ready), and
 * the STATUS= timer. */
int notify_start(Server *s);
void notify_reloading(Server *s);
/* After a reload, done or refused: READY=1 with the current STATUS=. */
void notify_reloaded(Server *s);
void notify_stopping(Server *s);
/* STATUS= now, if it changed (also what the timer does). */
void notify_status(Server *s);
void notify_done(Server *s);
