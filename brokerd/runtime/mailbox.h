/* The one way results come back to the event loop from other threads (signing workers, the
 * grant log's writer): any thread posts a message, the loop runs it. Messages are intrusive
 * (embedded in the job they finish), so posting never allocates and cannot fail.
 *
 * Threads: mailbox_post() from any thread; everything else on the loop thread. The eventfd is
 * written only when the mailbox goes from empty to non-empty, so a burst of results costs one
 * wakeup. */
#pragma once

#include <stddef.h>
#include <systemd/sd-event.h>

typedef struct MailboxMsg MailboxMsg;
struct MailboxMsg {
        void (*run)(MailboxMsg *m); /* on the loop thread; may free m */
        MailboxMsg *next;
};

typedef struct Mailbox Mailbox;

/* With `event`, messages run from the loop when they arrive; without (tests), from
 * mailbox_dispatch() calls. */
int mailbox_new(sd_event *event, Mailbox **ret);
void mailbox_free(Mailbox *m);

void mailbox_post(Mailbox *m, MailboxMsg *msg);

/* Runs every message posted so far, in the order posted; returns how many. */
size_t mailbox_dispatch(Mailbox *m);

/* Waits until a message is posted or timeout_ms passes (tests, shutdown). */
void mailbox_wait(Mailbox *m, int timeout_ms);
