/* The runtime (brokerd/runtime): the mailbox that brings results from any thread back to the loop,
 * and the worker pool. Real threads throughout: posting and submitting from many at once, the
 * order messages and jobs run in, every one exactly once, wakeups never lost, drain running
 * what is queued and refusing what comes after. Waits are bounded, so a lost wakeup fails a test
 * instead of hanging it. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "runtime/mailbox.h"
#include "runtime/workers.h"
#include "timeutil.h"

#define WAIT_USEC (10 * 1000 * 1000ULL)

/* ---- mailbox ----------------------------------------------------------------------------------
 */

typedef struct Msg {
        MailboxMsg m;
        unsigned thread, seq;
        unsigned runs;
        struct Log *log;
} Msg;

/* What the loop saw, in the order it ran the messages. Loop thread only. */
typedef struct Log {
        unsigned *last_seq; /* per thread: seq + 1 of the last message run, 0 before any */
        size_t ran;
        bool out_of_order;
        unsigned *order; /* single-thread tests: seq in run order */
        size_t order_cap;
} Log;

static void msg_run(MailboxMsg *m)
{
        Msg *x = (Msg *) ((char *) m - offsetof(Msg, m));
        Log *l = x->log;

        x->runs++;
        if (l->last_seq && l->last_seq[x->thread] != x->seq)
                l->out_of_order = true;
        if (l->last_seq)
                l->last_seq[x->thread] = x->seq + 1;
        if (l->order && l->ran < l->order_cap)
                l->order[l->ran] = x->seq;
        l->ran++;
}

/* Runs the mailbox until `want` messages ran; returns what dispatch said it ran. */
static size_t pump(Mailbox *mb, Log *l, size_t want)
{
        uint64_t deadline = now_mono_usec() + WAIT_USEC;
        size_t n = 0;

        while (l->ran < want) {
                size_t k = mailbox_dispatch(mb);
                n += k;
                if (k > 0)
                        continue;
                if (now_mono_usec() > deadline)
                        fail_msg("%zu of %zu messages after %llu s", l->ran, want,
                                 WAIT_USEC / 1000000);
                mailbox_wait(mb, 100);
        }
        return n;
}

/* Posted and run in the same thread: in the order posted, each once, and dispatch counts them. */
static void test_mailbox_order(void **state)
{
        enum { N = 100 };
        Mailbox *mb = NULL;
        Msg msgs[N];
        unsigned order[N];
        Log log = {.order = order, .order_cap = N};

        assert_int_equal(mailbox_new(NULL, &mb), 0);
        assert_int_equal(mailbox_dispatch(mb), 0);
        for (unsigned i = 0; i < N; i++) {
                msgs[i] = (Msg){.m.run = msg_run, .seq = i, .log = &log};
                msgs[i].m.next = &msgs[0].m; /* garbage: post must not trust it */
                mailbox_post(mb, &msgs[i].m);
        }
        assert_int_equal(mailbox_dispatch(mb), N);
        assert_int_equal(log.ran, N);
        for (unsigned i = 0; i < N; i++) {
                assert_int_equal(order[i], i);
                assert_int_equal(msgs[i].runs, 1);
        }
        assert_int_equal(mailbox_dispatch(mb), 0);

        /* the mailbox is reusable once empty */
        log.ran = 0;
        for (unsigned i = 0; i < 3; i++) {
                msgs[i].seq = 10 + i;
                mailbox_post(mb, &msgs[i].m);
        }
        assert_int_equal(mailbox_dispatch(mb), 3);
        assert_int_equal(order[0], 10);
        assert_int_equal(order[2], 12);
        mailbox_free(mb);
        mailbox_free(NULL);
}

typedef struct Poster {
        pthread_t thread;
        Mailbox *mb;
        Msg *msgs;
        unsigned n;
        pthread_barrier_t *start;
} Poster;

static void *poster_main(void *userdata)
{
        Poster *p = userdata;

        pthread_barrier_wait(p->start);
        for (unsigned i = 0; i < p->n; i++) {
                mailbox_post(p->mb, &p->msgs[i].m);
                if (i % 512 == 0)
                        sched_yield();
        }
        return NULL;
}

/* Many threads post while the loop dispatches: every message runs once, each thread's messages
 * in the order that thread posted them, and nothing is left behind. */
static void test_mailbox_many_threads(void **state)
{
        enum { THREADS = 8, PER = 5000 };
        Mailbox *mb = NULL;
        Poster posters[THREADS];
        unsigned last[THREADS] = {};
        Log log = {.last_seq = last};
        Msg *msgs = calloc((size_t) THREADS * PER, sizeof(Msg));
        pthread_barrier_t start;
        size_t counted;

        assert_non_null(msgs);
        assert_int_equal(mailbox_new(NULL, &mb), 0);
        assert_int_equal(pthread_barrier_init(&start, NULL, THREADS + 1), 0);
        for (unsigned t = 0; t < THREADS; t++) {
                for (unsigned i = 0; i < PER; i++)
                        msgs[t * PER + i] =
                            (Msg){.m.run = msg_run, .thread = t, .seq = i, .log = &log};
                posters[t] = (Poster){.mb = mb, .msgs = &msgs[t * PER], .n = PER, .start = &start};
                assert_int_equal(pthread_create(&posters[t].thread, NULL, poster_main, &posters[t]),
                                 0);
        }
        pthread_barrier_wait(&start);
        counted = pump(mb, &log, (size_t) THREADS * PER);
        for (unsigned t = 0; t < THREADS; t++)
                pthread_join(posters[t].thread, NULL);
        counted += mailbox_dispatch(mb);

        assert_int_equal(log.ran, (size_t) THREADS * PER);
        assert_int_equal(counted, (size_t) THREADS * PER);
        assert_false(log.out_of_order);
        for (size_t i = 0; i < (size_t) THREADS * PER; i++)
                if (msgs[i].runs != 1)
                        fail_msg("message %u/%u ran %u times", msgs[i].thread, msgs[i].seq,
                                 msgs[i].runs);
        for (unsigned t = 0; t < THREADS; t++)
                assert_int_equal(last[t], PER);
        pthread_barrier_destroy(&start);
        mailbox_free(mb);
        free(msgs);
}

/* A message's run may free it. */
typedef struct OwnedMsg {
        MailboxMsg m;
        unsigned *count;
} OwnedMsg;

static void owned_run(MailboxMsg *m)
{
        OwnedMsg *o = (OwnedMsg *) m;

        (*o->count)++;
        memset(o, 0x5a, sizeof(*o) - sizeof(o->count)); /* as a freed one may look */
        free(o);
}

static void test_mailbox_run_frees(void **state)
{
        Mailbox *mb = NULL;
        unsigned count = 0;

        assert_int_equal(mailbox_new(NULL, &mb), 0);
        for (unsigned i = 0; i < 50; i++) {
                OwnedMsg *o = calloc(1, sizeof(OwnedMsg));
                assert_non_null(o);
                *o = (OwnedMsg){.m.run = owned_run, .count = &count};
                mailbox_post(mb, &o->m);
        }
        assert_int_equal(mailbox_dispatch(mb), 50);
        assert_int_equal(count, 50);
        mailbox_free(mb);
}

/* A message posted while the loop runs the mailbox waits for the next dispatch, and the loop is
 * woken for it: no wakeup is lost between taking the list and the next wait. */
typedef struct Repost {
        MailboxMsg m;
        Mailbox *mb;
        MailboxMsg *next_msg;
        unsigned runs;
} Repost;

static void repost_run(MailboxMsg *m)
{
        Repost *r = (Repost *) m;

        r->runs++;
        if (r->next_msg)
                mailbox_post(r->mb, r->next_msg);
}

static uint64_t waited_ms(Mailbox *mb, int timeout_ms)
{
        uint64_t t0 = now_mono_usec();

        mailbox_wait(mb, timeout_ms);
        return (now_mono_usec() - t0) / 1000;
}

static void test_mailbox_post_during_dispatch(void **state)
{
        Mailbox *mb = NULL;
        Repost second = {.m.run = repost_run}, first = {.m.run = repost_run};

        assert_int_equal(mailbox_new(NULL, &mb), 0);
        second.mb = first.mb = mb;
        first.next_msg = &second.m;
        mailbox_post(mb, &first.m);
        assert_int_equal(mailbox_dispatch(mb), 1);
        assert_int_equal(first.runs, 1);
        assert_int_equal(second.runs, 0);
        /* the repost woke the mailbox */
        assert_true(waited_ms(mb, 5000) < 2000);
        assert_int_equal(mailbox_dispatch(mb), 1);
        assert_int_equal(second.runs, 1);
        /* and nothing is pending now: the wait runs to its timeout */
        assert_true(waited_ms(mb, 50) >= 40);
        assert_int_equal(mailbox_dispatch(mb), 0);
        mailbox_free(mb);
}

typedef struct Delayed {
        pthread_t thread;
        Mailbox *mb;
        Msg *msg;
        unsigned delay_ms;
} Delayed;

static void *delayed_main(void *userdata)
{
        Delayed *d = userdata;

        usleep(d->delay_ms * 1000);
        mailbox_post(d->mb, &d->msg->m);
        return NULL;
}

/* A post from another thread ends a wait on the loop long before its timeout. */
static void test_mailbox_wait_wakes(void **state)
{
        Mailbox *mb = NULL;
        Log log = {};
        Msg msg = {.m.run = msg_run, .log = &log};
        Delayed d;

        assert_int_equal(mailbox_new(NULL, &mb), 0);
        assert_true(waited_ms(mb, 50) >= 40);
        d = (Delayed){.mb = mb, .msg = &msg, .delay_ms = 20};
        assert_int_equal(pthread_create(&d.thread, NULL, delayed_main, &d), 0);
        assert_true(waited_ms(mb, 5000) < 2000);
        pthread_join(d.thread, NULL);
        assert_int_equal(mailbox_dispatch(mb), 1);
        assert_int_equal(msg.runs, 1);
        mailbox_free(mb);
}

/* With an sd_event, messages from other threads run from the loop itself. */
static void test_mailbox_sd_event(void **state)
{
        enum { THREADS = 4, PER = 1000 };
        sd_event *ev = NULL;
        Mailbox *mb = NULL;
        Poster posters[THREADS];
        unsigned last[THREADS] = {};
        Log log = {.last_seq = last};
        Msg *msgs = calloc((size_t) THREADS * PER, sizeof(Msg));
        pthread_barrier_t start;
        uint64_t deadline = now_mono_usec() + WAIT_USEC;

        assert_non_null(msgs);
        assert_int_equal(sd_event_new(&ev), 0);
        assert_int_equal(mailbox_new(ev, &mb), 0);
        assert_int_equal(pthread_barrier_init(&start, NULL, THREADS + 1), 0);
        for (unsigned t = 0; t < THREADS; t++) {
                for (unsigned i = 0; i < PER; i++)
                        msgs[t * PER + i] =
                            (Msg){.m.run = msg_run, .thread = t, .seq = i, .log = &log};
                posters[t] = (Poster){.mb = mb, .msgs = &msgs[t * PER], .n = PER, .start = &start};
                assert_int_equal(pthread_create(&posters[t].thread, NULL, poster_main, &posters[t]),
                                 0);
        }
        pthread_barrier_wait(&start);
        while (log.ran < (size_t) THREADS * PER) {
                assert_true(sd_event_run(ev, 100 * 1000) >= 0);
                if (now_mono_usec() > deadline)
                        fail_msg("%zu of %u messages from the event loop", log.ran, THREADS * PER);
        }
        for (unsigned t = 0; t < THREADS; t++)
                pthread_join(posters[t].thread, NULL);
        assert_false(log.out_of_order);
        for (size_t i = 0; i < (size_t) THREADS * PER; i++)
                assert_int_equal(msgs[i].runs, 1);
        pthread_barrier_destroy(&start);
        mailbox_free(mb);
        sd_event_unref(ev);
        free(msgs);
}

/* ---- workers ------------------------------------------------------------------------------- */

typedef struct Job {
        WorkerJob w;
        atomic_uint runs;
        unsigned seq;
        struct Run *run;
} Job;

/* What the workers did; shared by the jobs of one test. */
typedef struct Run {
        atomic_size_t ran;
        atomic_uint *order; /* seq of the n-th job to start, when set */
        atomic_size_t started;
} Run;

static void job_run(WorkerJob *w)
{
        Job *j = (Job *) ((char *) w - offsetof(Job, w));
        Run *r = j->run;

        atomic_fetch_add(&j->runs, 1);
        if (r->order)
                atomic_store(&r->order[atomic_fetch_add(&r->started, 1)], j->seq);
        atomic_fetch_add(&r->ran, 1);
}

static void wait_ran(Run *r, size_t want)
{
        uint64_t deadline = now_mono_usec() + WAIT_USEC;

        while (atomic_load(&r->ran) < want) {
                if (now_mono_usec() > deadline)
                        fail_msg("%zu of %zu jobs ran after %llu s", atomic_load(&r->ran), want,
                                 WAIT_USEC / 1000000);
                usleep(1000);
        }
}

static void test_workers_count(void **state)
{
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        Workers *w = NULL;

        assert_int_equal(workers_new(3, &w), 0);
        assert_int_equal(workers_count(w), 3);
        workers_free(w);
        assert_int_equal(workers_new(0, &w), 0);
        assert_int_equal(workers_count(w), MIN((unsigned) (cpus > 0 ? cpus : 1), WORKERS_MAX));
        workers_free(w);
        assert_int_equal(workers_new(WORKERS_MAX + 100, &w), 0);
        assert_int_equal(workers_count(w), WORKERS_MAX);
        workers_free(w);
        workers_free(NULL);
        workers_drain(NULL);
}

/* One worker: jobs run in the order submitted. */
static void test_workers_order(void **state)
{
        enum { N = 2000 };
        Workers *w = NULL;
        Job *jobs = calloc(N, sizeof(Job));
        atomic_uint *order = calloc(N, sizeof(atomic_uint));
        Run run = {.order = order};

        assert_non_null(jobs);
        assert_non_null(order);
        assert_int_equal(workers_new(1, &w), 0);
        for (unsigned i = 0; i < N; i++) {
                jobs[i] = (Job){.w.run = job_run, .seq = i, .run = &run};
                jobs[i].w.next = &jobs[0].w; /* garbage: submit must not trust it */
                assert_int_equal(workers_submit(w, &jobs[i].w), 0);
        }
        wait_ran(&run, N);
        for (unsigned i = 0; i < N; i++) {
                assert_int_equal(atomic_load(&order[i]), i);
                assert_int_equal(atomic_load(&jobs[i].runs), 1);
        }
        workers_free(w);
        free(jobs);
        free(order);
}

typedef struct Submitter {
        pthread_t thread;
        Workers *w;
        Job *jobs;
        unsigned n;
        int error;
        pthread_barrier_t *start;
} Submitter;

static void *submitter_main(void *userdata)
{
        Submitter *s = userdata;

        pthread_barrier_wait(s->start);
        for (unsigned i = 0; i < s->n; i++) {
                int r = workers_submit(s->w, &s->jobs[i].w);
                if (r < 0 && s->error == 0)
                        s->error = r;
        }
        return NULL;
}

/* Many threads submit to many workers: every job runs exactly once. */
static void test_workers_every_job_once(void **state)
{
        enum { THREADS = 6, PER = 5000, WORKERS = 4 };
        Workers *w = NULL;
        Submitter subs[THREADS];
        Job *jobs = calloc((size_t) THREADS * PER, sizeof(Job));
        Run run = {};
        pthread_barrier_t start;

        assert_non_null(jobs);
        assert_int_equal(workers_new(WORKERS, &w), 0);
        assert_int_equal(pthread_barrier_init(&start, NULL, THREADS + 1), 0);
        for (unsigned t = 0; t < THREADS; t++) {
                for (unsigned i = 0; i < PER; i++)
                        jobs[t * PER + i] = (Job){.w.run = job_run, .seq = i, .run = &run};
                subs[t] = (Submitter){.w = w, .jobs = &jobs[t * PER], .n = PER, .start = &start};
                assert_int_equal(pthread_create(&subs[t].thread, NULL, submitter_main, &subs[t]),
                                 0);
        }
        pthread_barrier_wait(&start);
        for (unsigned t = 0; t < THREADS; t++) {
                pthread_join(subs[t].thread, NULL);
                assert_int_equal(subs[t].error, 0);
        }
        wait_ran(&run, (size_t) THREADS * PER);
        workers_drain(w);
        assert_int_equal(atomic_load(&run.ran), (size_t) THREADS * PER);
        for (size_t i = 0; i < (size_t) THREADS * PER; i++)
                if (atomic_load(&jobs[i].runs) != 1)
                        fail_msg("job %zu ran %u times", i, atomic_load(&jobs[i].runs));
        pthread_barrier_destroy(&start);
        workers_free(w);
        free(jobs);
}

/* A job handed to an idle pool runs without another submit to push it: done one at a time, a
 * lost wakeup would leave a job queued with every worker asleep. */
typedef struct Ping {
        WorkerJob w;
        sem_t *done;
} Ping;

static void ping_run(WorkerJob *w)
{
        Ping *p = (Ping *) w;

        sem_post(p->done);
}

static bool sem_wait_ms(sem_t *s, unsigned ms)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (long) (ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
        }
        while (sem_timedwait(s, &ts) < 0)
                if (errno != EINTR)
                        return false;
        return true;
}

static void test_workers_no_lost_wakeup(void **state)
{
        static const unsigned sizes[] = {1, 4};
        sem_t done;
        Ping pings[2];

        assert_int_equal(sem_init(&done, 0, 0), 0);
        for (size_t s = 0; s < ELEMENTSOF(sizes); s++) {
                Workers *w = NULL;

                assert_int_equal(workers_new(sizes[s], &w), 0);
                for (unsigned i = 0; i < 1000; i++) {
                        unsigned n = 1 + i % 2;

                        for (unsigned k = 0; k < n; k++) {
                                pings[k] = (Ping){.w.run = ping_run, .done = &done};
                                assert_int_equal(workers_submit(w, &pings[k].w), 0);
                        }
                        for (unsigned k = 0; k < n; k++)
                                if (!sem_wait_ms(&done, 5000))
                                        fail_msg("%u workers, round %u: a job submitted to an idle "
                                                 "pool never ran",
                                                 sizes[s], i);
                }
                workers_free(w);
        }
        sem_destroy(&done);
}

/* Holds workers until opened. */
typedef struct Gate {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool open;
        unsigned waiting, max_waiting;
        unsigned want; /* rendezvous: opens itself when this many wait (0: never) */
} Gate;

typedef struct GateJob {
        WorkerJob w;
        Gate *gate;
} GateJob;

static void gate_run(WorkerJob *w)
{
        Gate *g = ((GateJob *) w)->gate;
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 10; /* a rendezvous that never completes fails, it does not hang */
        pthread_mutex_lock(&g->lock);
        g->waiting++;
        g->max_waiting = MAX(g->max_waiting, g->waiting);
        if (g->want && g->waiting >= g->want)
                g->open = true;
        pthread_cond_broadcast(&g->cond);
        while (!g->open)
                if (pthread_cond_timedwait(&g->cond, &g->lock, &ts) != 0)
                        break;
        g->waiting--;
        pthread_mutex_unlock(&g->lock);
}

static void gate_init(Gate *g, unsigned want)
{
        *g = (Gate){.want = want};
        pthread_mutex_init(&g->lock, NULL);
        pthread_cond_init(&g->cond, NULL);
}

static void gate_open(Gate *g)
{
        pthread_mutex_lock(&g->lock);
        g->open = true;
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->lock);
}

static void gate_wait_for(Gate *g, unsigned n)
{
        pthread_mutex_lock(&g->lock);
        while (g->waiting < n)
                pthread_cond_wait(&g->cond, &g->lock);
        pthread_mutex_unlock(&g->lock);
}

static void gate_done(Gate *g)
{
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->cond);
}

/* Several at once: four jobs that only finish together finish on four workers. */
static void test_workers_concurrent(void **state)
{
        enum { N = 4 };
        Workers *w = NULL;
        Gate g;
        GateJob jobs[N];

        gate_init(&g, N);
        assert_int_equal(workers_new(N, &w), 0);
        for (unsigned i = 0; i < N; i++) {
                jobs[i] = (GateJob){.w.run = gate_run, .gate = &g};
                assert_int_equal(workers_submit(w, &jobs[i].w), 0);
        }
        workers_drain(w);
        assert_int_equal(g.max_waiting, N);
        assert_true(g.open);
        workers_free(w);
        gate_done(&g);
}

typedef struct Opener {
        pthread_t thread;
        Gate *gate;
} Opener;

static void *opener_main(void *userdata)
{
        Opener *o = userdata;

        usleep(50 * 1000);
        gate_open(o->gate);
        return NULL;
}

/* Drain runs what is queued, then stops; a submit after it is refused and never runs. */
static void test_workers_drain_runs_queued(void **state)
{
        enum { N = 200 };
        Workers *w = NULL;
        Gate g;
        GateJob blockers[2];
        Job *jobs = calloc(N, sizeof(Job));
        Job late;
        Run run = {};
        Opener o = {.gate = &g};

        assert_non_null(jobs);
        gate_init(&g, 0);
        assert_int_equal(workers_new(2, &w), 0);
        /* both workers held: everything after them stays queued */
        for (unsigned i = 0; i < 2; i++) {
                blockers[i] = (GateJob){.w.run = gate_run, .gate = &g};
                assert_int_equal(workers_submit(w, &blockers[i].w), 0);
        }
        gate_wait_for(&g, 2);
        for (unsigned i = 0; i < N; i++) {
                jobs[i] = (Job){.w.run = job_run, .seq = i, .run = &run};
                assert_int_equal(workers_submit(w, &jobs[i].w), 0);
        }
        assert_int_equal(atomic_load(&run.ran), 0);
        /* opened while drain waits (most likely) */
        assert_int_equal(pthread_create(&o.thread, NULL, opener_main, &o), 0);
        workers_drain(w);
        assert_int_equal(atomic_load(&run.ran), N);
        for (unsigned i = 0; i < N; i++)
                assert_int_equal(atomic_load(&jobs[i].runs), 1);
        pthread_join(o.thread, NULL);

        late = (Job){.w.run = job_run, .run = &run};
        assert_int_equal(workers_submit(w, &late.w), -ESHUTDOWN);
        workers_drain(w); /* again: nothing to do */
        usleep(20 * 1000);
        assert_int_equal(atomic_load(&late.runs), 0);
        assert_int_equal(atomic_load(&run.ran), N);
        workers_free(w);
        gate_done(&g);
        free(jobs);
}

/* workers_free() on a pool with queued work runs it first, and an idle pool stops at once. */
static void test_workers_free_drains(void **state)
{
        enum { N = 500 };
        Workers *w = NULL;
        Job *jobs = calloc(N, sizeof(Job));
        Run run = {};
        uint64_t t0;

        assert_non_null(jobs);
        assert_int_equal(workers_new(3, &w), 0);
        for (unsigned i = 0; i < N; i++) {
                jobs[i] = (Job){.w.run = job_run, .seq = i, .run = &run};
                assert_int_equal(workers_submit(w, &jobs[i].w), 0);
        }
        workers_free(w);
        assert_int_equal(atomic_load(&run.ran), N);

        assert_int_equal(workers_new(16, &w), 0);
        usleep(20 * 1000); /* let them all go idle */
        t0 = now_mono_usec();
        workers_drain(w);
        assert_true(now_mono_usec() - t0 < 2 * 1000 * 1000);
        workers_free(w);
        free(jobs);
}

/* ---- workers attached to an event loop ---------------------------------------------------- */

typedef struct LoopSubmit {
        Workers *w;
        Job *jobs;
        unsigned n;
        int error;
} LoopSubmit;

static int submit_in_iteration(sd_event_source *src, void *userdata)
{
        LoopSubmit *ls = userdata;

        for (unsigned i = 0; i < ls->n; i++) {
                int r = workers_submit(ls->w, &ls->jobs[i].w);
                if (r < 0 && ls->error == 0)
                        ls->error = r;
        }
        return 0;
}

/* Runs one loop iteration that submits n jobs, then the loop until they ran: a short queue (less
 * than the workers' wake threshold) and a long one alike. */
static void submit_from_loop(sd_event *ev, Workers *w, Job *jobs, unsigned n, Run *run,
                             size_t ran_before)
{
        LoopSubmit ls = {.w = w, .jobs = jobs, .n = n};
        sd_event_source *src = NULL;
        uint64_t deadline = now_mono_usec() + WAIT_USEC;

        assert_int_equal(sd_event_add_defer(ev, &src, submit_in_iteration, &ls), 0);
        assert_int_equal(sd_event_source_set_enabled(src, SD_EVENT_ONESHOT), 0);
        while (atomic_load(&run->ran) < ran_before + n) {
                if (now_mono_usec() > deadline)
                        fail_msg("%zu of %u jobs queued in a loop iteration ran",
                                 atomic_load(&run->ran) - ran_before, n);
                assert_true(sd_event_run(ev, 10 * 1000) >= 0);
        }
        assert_int_equal(ls.error, 0);
        sd_event_source_disable_unref(src);
}

typedef struct LoopGate {
        Workers *w;
        GateJob *jobs;
        unsigned n;
        int error;
} LoopGate;

static int gate_in_iteration(sd_event_source *src, void *userdata)
{
        LoopGate *lg = userdata;

        for (unsigned i = 0; i < lg->n; i++) {
                int r = workers_submit(lg->w, &lg->jobs[i].w);
                if (r < 0 && lg->error == 0)
                        lg->error = r;
        }
        return 0;
}

/* Attached, the pool is woken once per loop iteration: a lone job, a few, more than the workers
 * and a flood all run, each once, and jobs queued in one iteration still run several at once (a
 * woken worker wakes the next). */
static void test_workers_attached(void **state)
{
        enum { WORKERS = 3 };
        static const unsigned batches[] = {1, 2, 5, 100};
        sd_event *ev = NULL;
        Workers *w = NULL;
        Job *jobs = calloc(200, sizeof(Job));
        Run run = {};
        unsigned done = 0;
        Gate g;
        GateJob gjobs[WORKERS];
        LoopGate lg = {.jobs = gjobs, .n = WORKERS};
        sd_event_source *src = NULL;
        uint64_t deadline;

        assert_non_null(jobs);
        assert_int_equal(sd_event_new(&ev), 0);
        assert_int_equal(workers_new(WORKERS, &w), 0);
        assert_int_equal(workers_attach_event(w, ev), 0);
        for (size_t b = 0; b < ELEMENTSOF(batches); b++) {
                for (unsigned i = 0; i < batches[b]; i++)
                        jobs[done + i] = (Job){.w.run = job_run, .seq = done + i, .run = &run};
                submit_from_loop(ev, w, &jobs[done], batches[b], &run, done);
                done += batches[b];
        }
        for (unsigned i = 0; i < done; i++)
                assert_int_equal(atomic_load(&jobs[i].runs), 1);

        /* a rendezvous of as many jobs as workers, queued in one iteration */
        gate_init(&g, WORKERS);
        for (unsigned i = 0; i < WORKERS; i++)
                gjobs[i] = (GateJob){.w.run = gate_run, .gate = &g};
        lg.w = w;
        assert_int_equal(sd_event_add_defer(ev, &src, gate_in_iteration, &lg), 0);
        assert_int_equal(sd_event_source_set_enabled(src, SD_EVENT_ONESHOT), 0);
        deadline = now_mono_usec() + WAIT_USEC;
        for (bool open = false; !open;) {
                assert_true(sd_event_run(ev, 10 * 1000) >= 0);
                pthread_mutex_lock(&g.lock);
                open = g.open;
                pthread_mutex_unlock(&g.lock);
                if (!open && now_mono_usec() > deadline)
                        break;
        }
        workers_drain(w);
        assert_int_equal(lg.error, 0);
        if (g.max_waiting != WORKERS)
                fail_msg("jobs queued in one iteration: at most %u of %u ran at once",
                         g.max_waiting, WORKERS);
        sd_event_source_disable_unref(src);
        gate_done(&g);
        workers_free(w);
        sd_event_unref(ev);
        free(jobs);
}

/* Jobs an attached pool has not been woken for yet (the loop never got to the end of its
 * iteration) still run on drain. */
static void test_workers_attached_drain(void **state)
{
        enum { N = 3 };
        sd_event *ev = NULL;
        Workers *w = NULL;
        Job jobs[N];
        Run run = {};

        assert_int_equal(sd_event_new(&ev), 0);
        assert_int_equal(workers_new(2, &w), 0);
        assert_int_equal(workers_attach_event(w, ev), 0);
        for (unsigned i = 0; i < N; i++) {
                jobs[i] = (Job){.w.run = job_run, .seq = i, .run = &run};
                assert_int_equal(workers_submit(w, &jobs[i].w), 0);
        }
        workers_drain(w);
        assert_int_equal(atomic_load(&run.ran), N);
        for (unsigned i = 0; i < N; i++)
                assert_int_equal(atomic_load(&jobs[i].runs), 1);
        assert_int_equal(workers_submit(w, &jobs[0].w), -ESHUTDOWN);
        workers_free(w);
        /* the pool let go of its event source: the loop can go without it */
        assert_true(sd_event_run(ev, 0) >= 0);
        sd_event_unref(ev);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_mailbox_order),
            cmocka_unit_test(test_mailbox_many_threads),
            cmocka_unit_test(test_mailbox_run_frees),
            cmocka_unit_test(test_mailbox_post_during_dispatch),
            cmocka_unit_test(test_mailbox_wait_wakes),
            cmocka_unit_test(test_mailbox_sd_event),
            cmocka_unit_test(test_workers_count),
            cmocka_unit_test(test_workers_order),
            cmocka_unit_test(test_workers_every_job_once),
            cmocka_unit_test(test_workers_no_lost_wakeup),
            cmocka_unit_test(test_workers_concurrent),
            cmocka_unit_test(test_workers_drain_runs_queued),
            cmocka_unit_test(test_workers_free_drains),
            cmocka_unit_test(test_workers_attached),
            cmocka_unit_test(test_workers_attached_drain),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
