/* Threads that sign slow tokens: an RS256 signature takes about a millisecond, which would
 * stall the event loop and every connection on it. (EdDSA and ES256 are signed on the loop:
 * they cost less than the handoff to another thread.) */
#pragma once

#include <stddef.h>

typedef struct SignPool SignPool;

/* Runs on a pool thread. It must hand its result on itself (the token path submits its record
 * to the audit store, whose completion answers the caller). */
typedef void (*sign_job_t)(void *job);

/* threads == 0: one per online CPU. */
int signpool_new(unsigned threads, SignPool **ret);

/* Queues a job. -ENOMEM or -ESHUTDOWN (after signpool_drain()). */
int signpool_submit(SignPool *p, sign_job_t fn, void *job);

/* Runs every queued job to completion and stops the threads. For shutdown. */
void signpool_drain(SignPool *p);

void signpool_free(SignPool *p);
