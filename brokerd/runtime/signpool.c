#include "signpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"

#define THREADS_MAX 16u

typedef struct Job {
        sign_job_t fn;
        void *arg;
        struct Job *next;
} Job;

struct SignPool {
        pthread_mutex_t lock;
        pthread_cond_t wake;
        Job *head, *tail;
        bool stop;
        pthread_t threads[THREADS_MAX];
        unsigned n_threads;
};

static void *worker_main(void *userdata)
{
        SignPool *p = userdata;

        for (;;) {
                Job *j;

                pthread_mutex_lock(&p->lock);
                while (!p->head && !p->stop)
                        pthread_cond_wait(&p->wake, &p->lock);
                j = p->head;
                if (j) {
                        p->head = j->next;
                        if (!p->head)
                                p->tail = NULL;
                }
                pthread_mutex_unlock(&p->lock);
                if (!j) /* stopping, and nothing left */
                        return NULL;
                j->fn(j->arg);
                free(j);
        }
}

int signpool_new(unsigned threads, SignPool **ret)
{
        SignPool *p = calloc(1, sizeof(SignPool));
        int r;

        if (!p)
                return -ENOMEM;
        if (threads == 0) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                threads = n > 0 ? (unsigned) n : 1;
        }
        threads = MIN(threads, THREADS_MAX);
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->wake, NULL);
        for (unsigned i = 0; i < threads; i++) {
                r = -pthread_create(&p->threads[i], NULL, worker_main, p);
                if (r < 0) {
                        log_error_errno(r, "Cannot start a signing thread: %m");
                        signpool_free(p);
                        return r;
                }
                p->n_threads++;
        }
        *ret = p;
        return 0;
}

int signpool_submit(SignPool *p, sign_job_t fn, void *arg)
{
        Job *j = malloc(sizeof(Job));

        if (!j)
                return -ENOMEM;
        *j = (Job){.fn = fn, .arg = arg};
        pthread_mutex_lock(&p->lock);
        if (p->stop) {
                pthread_mutex_unlock(&p->lock);
                free(j);
                return -ESHUTDOWN;
        }
        if (p->tail)
                p->tail->next = j;
        else
                p->head = j;
        p->tail = j;
        pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->lock);
        return 0;
}

void signpool_drain(SignPool *p)
{
        if (!p)
                return;
        pthread_mutex_lock(&p->lock);
        p->stop = true;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        for (unsigned i = 0; i < p->n_threads; i++)
                pthread_join(p->threads[i], NULL);
        p->n_threads = 0;
}

void signpool_free(SignPool *p)
{
        if (!p)
                return;
        signpool_drain(p);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->wake);
        free(p);
}
