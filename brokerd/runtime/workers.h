/* The worker pool: the threads that do the broker's work off the event loop (identifying a
 * caller, deciding, minting, building the grant record), so the loop only does I/O and
 * issuance grows with cores. Jobs are intrusive (embedded in what they work on): submitting
 * never allocates and cannot fail until the pool is drained.
 *
 * Threads: workers_submit() from any thread; a job runs on one worker and hands its result on
 * itself (through the mailbox or the grant log). Jobs run in the order submitted, several at
 * once. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

typedef struct WorkerJob WorkerJob;
struct WorkerJob {
        void (*run)(WorkerJob *job);
        WorkerJob *next;
};

typedef struct Workers Workers;

#define WORKERS_MAX 64u

/* threads == 0: one per online CPU (at most WORKERS_MAX). */
int workers_new(unsigned threads, Workers **ret);

/* Jobs queued from the event loop then wake the workers once at the end of each loop iteration
 * (an sd-event post source), not once each: a wakeup costs the loop more than queueing a job.
 * Only the loop thread may submit once attached. */
int workers_attach_event(Workers *w, sd_event *event);

/* Queues a job. -ESHUTDOWN after workers_drain(). */
int workers_submit(Workers *w, WorkerJob *job);

/* Runs every queued job to completion and stops the threads. For shutdown. */
void workers_drain(Workers *w);

void workers_free(Workers *w);

unsigned workers_count(const Workers *w);
