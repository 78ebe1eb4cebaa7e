#include "runtime/workers.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"

struct Workers {
        pthread_mutex_t lock;
        pthread_cond_t wake;
        WorkerJob *head, *tail;
        unsigned idle;   /* threads waiting for a job: no wakeup is needed while none is */
        unsigned queued; /* jobs in the queue; a long queue wakes a thread at once */
        bool stop;
        sd_event_source *post; /* attached: wakeups wait for the end of a loop iteration */
        pthread_t threads[WORKERS_MAX];
        unsigned n_threads;
};

static void *worker_main(void *userdata)
{
        Workers *w = userdata;

        (void) pthread_setname_np(pthread_self(), "brokerd-worker");

        for (;;) {
                WorkerJob *j;

                pthread_mutex_lock(&w->lock);
                while (!w->head && !w->stop) {
                        w->idle++;
                        pthread_cond_wait(&w->wake, &w->lock);
                        w->idle--;
                }
                j = w->head;
                if (j) {
                        w->head = j->next;
                        if (!w->head)
                                w->tail = NULL;
                        w->queued--;
                }
                /* More waiting and a thread idle: wake it here, so the loop wakes one thread
                 * per iteration, not one per job. */
                bool chain = w->head && w->idle > 0;
                pthread_mutex_unlock(&w->lock);
                if (chain)
                        pthread_cond_signal(&w->wake);
                if (!j) /* stopping, and nothing left */
                        return NULL;
                j->run(j);
        }
}

int workers_new(unsigned threads, Workers **ret)
{
        Workers *w = calloc(1, sizeof(Workers));
        int r;

        if (!w)
                return -ENOMEM;
        if (threads == 0) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                threads = n > 0 ? (unsigned) n : 1;
        }
        threads = MIN(threads, WORKERS_MAX);
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->wake, NULL);
        for (unsigned i = 0; i < threads; i++) {
                r = -pthread_create(&w->threads[i], NULL, worker_main, w);
                if (r < 0) {
                        log_error_errno(r, "Cannot start a worker thread: %m");
                        workers_free(w);
                        return r;
                }
                w->n_threads++;
        }
        *ret = w;
        return 0;
}

int workers_submit(Workers *w, WorkerJob *job)
{
        bool wake;

        job->next = NULL;
        pthread_mutex_lock(&w->lock);
        if (w->stop) {
                pthread_mutex_unlock(&w->lock);
                return -ESHUTDOWN;
        }
        if (w->tail)
                w->tail->next = job;
        else
                w->head = job;
        w->tail = job;
        /* A busy worker takes the next job when it is done: only an idle one needs waking, and
         * with a loop attached, only once the loop has queued what this iteration brings. */
        w->queued++;
        wake = w->idle > 0 && (!w->post || w->queued >= 2 * w->n_threads);
        pthread_mutex_unlock(&w->lock);
        if (wake)
                pthread_cond_signal(&w->wake);
        return 0;
}

static int on_post(sd_event_source *s, void *userdata)
{
        Workers *w = userdata;
        bool wake;

        pthread_mutex_lock(&w->lock);
        wake = w->head && w->idle > 0;
        pthread_mutex_unlock(&w->lock);
        if (wake)
                pthread_cond_signal(&w->wake);
        return 0;
}

int workers_attach_event(Workers *w, sd_event *event)
{
        int r = sd_event_add_post(event, &w->post, on_post, w);

        if (r < 0)
                return log_error_errno(r, "Cannot attach the workers to the event loop: %m");
        /* At the loop's normal priority: it runs after the sources that were already pending
         * (the requests that arrived together are queued before a thread is woken for them),
         * but before any that arrive later, so a flood of other events cannot hold it back. */
        (void) sd_event_source_set_description(w->post, "workers-wakeup");
        return 0;
}

void workers_drain(Workers *w)
{
        if (!w)
                return;
        /* From here on every job wakes a thread at once: the loop no longer runs. */
        pthread_mutex_lock(&w->lock);
        w->post = sd_event_source_disable_unref(w->post);
        pthread_mutex_unlock(&w->lock);
        pthread_mutex_lock(&w->lock);
        w->stop = true;
        pthread_cond_broadcast(&w->wake);
        pthread_mutex_unlock(&w->lock);
        for (unsigned i = 0; i < w->n_threads; i++)
                pthread_join(w->threads[i], NULL);
        w->n_threads = 0;
}

void workers_free(Workers *w)
{
        if (!w)
                return;
        workers_drain(w);
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->wake);
        free(w);
}

unsigned workers_count(const Workers *w)
{
        return w->n_threads;
}
