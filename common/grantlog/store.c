#include "grantlog/store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "messageid.h"
#include "timeutil.h"

/* Records taken into one transaction at most: bounds a transaction's size and time. */
#define BATCH_MAX 1024
/* Lifecycle records kept while the log cannot be written, and how often they are retried
 * when no request comes to retry them with. */
#define RETAINED_MAX    (BATCH_MAX / 2) /* all of them and as many requests fit in a batch */
#define RETAIN_RETRY_MS 1000
/* How long a commit may wait for records announced with grantlog_store_expect() (being signed
 * by a worker right now): each commit costs an fdatasync and a head signature whatever it
 * holds, so a batch that waits for its siblings costs each of them less. Like PostgreSQL's
 * commit_delay with commit_siblings, it never delays a lone request: nothing else is expected
 * then. */
#define GROUP_WAIT_US 1000
/* How often the checkpointer copies the WAL into the database. */
#define WAL_CHECKPOINT_EVERY_MS 100
/* Past this many WAL frames a checkpoint may briefly hold writers back so the WAL restarts
 * from the beginning instead of growing without end under constant load. */
#define WAL_FRAMES_RESTART 65536

typedef struct AuditItem {
        GrantlogEntry entry; /* prepared by the submitting thread */
        grantlog_done_t done;
        void *userdata;
        int result;
        struct AuditItem *next;
} AuditItem;

typedef struct ItemList {
        AuditItem *head, *tail;
} ItemList;

struct GrantlogStore {
        char *path;
        GrantlogOptions opt;
        GrantlogSigner signer;
        GrantlogFaults faults; /* writer thread only */

        pthread_mutex_t lock;
        pthread_cond_t wake;
        ItemList pending; /* queued, not yet taken by the writer */
        size_t n_pending;
        unsigned expected;   /* records announced, not yet submitted */
        bool writer_idle;    /* waiting for a first record: a submit wakes it */
        bool writer_gathers; /* waiting for the expected ones: the last of them wakes it */
        bool stop;
        bool threads_started;
        pthread_t writer, checkpointer;

        /* writer thread only */
        ItemList retained;   /* lifecycle records a failed commit could not write, oldest first */
        int64_t retry_ms;    /* when to try them again without a new request */
        GrantlogWriter *log; /* NULL after a failure, until reopened */
        GrantlogMark mark;   /* the file and the chain we wrote */
        bool refusal_logged; /* why the log cannot be reopened, said once */
        int64_t next_prune_ms;

        atomic_bool healthy;
        atomic_uint_least64_t last_seq;
};

static void list_append(ItemList *l, AuditItem *i)
{
        i->next = NULL;
        if (l->tail)
                l->tail->next = i;
        else
                l->head = i;
        l->tail = i;
}

static void list_concat(ItemList *l, ItemList *other)
{
        if (!other->head)
                return;
        if (l->tail)
                l->tail->next = other->head;
        else
                l->head = other->head;
        l->tail = other->tail;
        *other = (ItemList){};
}

static int64_t prune_period_ms(const GrantlogStore *a)
{
        /* A quarter of the retention, between a second and ten minutes. */
        return MIN(MAX(a->opt.retention_ms / 4, 1000), 600000);
}

/* After a failure the log is closed and reopened for the next batch: that is how a database
 * that was read-only or full recovers by itself. Only the file we wrote is reopened, and only
 * while it holds the chain we wrote: a database deleted, or replaced by another (even a valid
 * log, even a copy of ours), is refused until it is restored or brokerd restarts. */
static int writer_ensure_log(GrantlogStore *a)
{
        int r;

        if (a->log && grantlog_writer_file_replaced(a->log)) {
                log_struct(LOG_ERR, 0, &(LogFields){.message_id = MESSAGE_ID_AUDIT_FAILURE},
                           "%s: the audit database was deleted or replaced while in use; "
                           "refusing requests until it is restored or brokerd restarts",
                           a->path);
                a->refusal_logged = true;
                grantlog_writer_close(a->log);
                a->log = NULL;
                return -ENOENT;
        }
        if (a->log)
                return 0;
        r = grantlog_writer_reopen(a->path, &a->opt, &a->signer, &a->faults, &a->mark, &a->log);
        if (r == -ESTALE && !a->refusal_logged) {
                log_struct(LOG_ERR, 0, &(LogFields){.message_id = MESSAGE_ID_AUDIT_FAILURE},
                           "%s: the audit database is not the log this broker wrote (another "
                           "file, or it no longer holds seq %llu); refusing requests until it is "
                           "restored or brokerd restarts",
                           a->path, (unsigned long long) a->mark.seq);
                a->refusal_logged = true;
        }
        return r;
}

static void writer_note(GrantlogStore *a, int r)
{
        bool was = atomic_exchange(&a->healthy, r >= 0);

        if (r >= 0) {
                grantlog_writer_mark(a->log, &a->mark);
                a->refusal_logged = false;
                atomic_store(&a->last_seq, a->mark.seq);
                if (!was)
                        log_struct(LOG_NOTICE, 0,
                                   &(LogFields){.message_id = MESSAGE_ID_AUDIT_RECOVERED},
                                   "%s: audit writes succeed again", a->path);
        } else if (a->log) {
                grantlog_writer_close(a->log);
                a->log = NULL;
        }
}

/* Commits one batch (and a closing checkpoint when `final`). */
static int writer_commit(GrantlogStore *a, AuditItem *batch, bool final)
{
        GrantlogEntry entries[BATCH_MAX];
        size_t n = 0;
        int r;

        for (AuditItem *i = batch; i; i = i->next)
                entries[n++] = i->entry;
        r = writer_ensure_log(a);
        if (r >= 0)
                r = grantlog_writer_append(a->log, entries, n, final, now_unix_ms());
        writer_note(a, r);
        return r;
}

/* Takes at most `max` items from the head of a list. */
static ItemList take_items(ItemList *from, size_t max)
{
        ItemList b = {.head = from->head};
        AuditItem *i = from->head;

        if (!i || max == 0)
                return (ItemList){};
        for (size_t n = 1; i->next && n < max; n++)
                i = i->next;
        b.tail = i;
        from->head = i->next;
        if (!from->head)
                from->tail = NULL;
        i->next = NULL;
        return b;
}

static size_t list_length(const ItemList *l)
{
        size_t n = 0;

        for (const AuditItem *i = l->head; i; i = i->next)
                n++;
        return n;
}

static void item_free(AuditItem *i)
{
        grantlog_entry_done(&i->entry);
        free(i);
}

/* The record is gone for good: the journal is the last place it can be seen. */
static void log_lost(GrantlogStore *a, const AuditItem *i, const char *why)
{
        char t[TIME_RFC3339_MAX];

        time_format_rfc3339_ms(i->entry.time_ms, t);
        log_struct(LOG_ERR, 0, &(LogFields){.message_id = MESSAGE_ID_AUDIT_RECORD_LOST},
                   "%s: audit record lost (%s): event %s at %s", a->path, why, i->entry.event, t);
}

/* After a failed commit: lifecycle records (no caller waits for them) are kept, to be written
 * first once the log can be written again; the rest go back to their callers. Every kept
 * record was in the batch (a batch takes them all), so what is kept now is all there is.
 * Writer thread. */
static void retain_lifecycle(GrantlogStore *a, ItemList *batch, ItemList *answered)
{
        size_t kept = 0;

        a->retained = (ItemList){};
        for (AuditItem *i = batch->head, *next; i; i = next) {
                next = i->next;
                if (i->done)
                        list_append(answered, i);
                else if (kept < RETAINED_MAX) {
                        list_append(&a->retained, i);
                        kept++;
                } else {
                        log_lost(a, i, "too many kept while the log cannot be written");
                        item_free(i);
                }
        }
        *batch = (ItemList){};
        a->retry_ms = now_unix_ms() + RETAIN_RETRY_MS;
}

static int64_t writer_deadline(GrantlogStore *a)
{
        int64_t d = a->log ? grantlog_writer_checkpoint_deadline(a->log) : INT64_MAX;

        if (a->retained.head)
                d = MIN(d, a->retry_ms);
        if (a->opt.retention_ms > 0 && a->log)
                d = MIN(d, a->next_prune_ms);
        return d;
}

/* With the lock held and a batch to commit: while records are announced and the batch is not
 * full, wait (a little) for them. */
static void gather(GrantlogStore *a)
{
        struct timespec until;

        if (a->expected == 0 || a->stop || a->n_pending >= BATCH_MAX)
                return;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += GROUP_WAIT_US * 1000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        a->writer_gathers = true;
        while (a->expected > 0 && !a->stop && a->n_pending < BATCH_MAX &&
               pthread_cond_timedwait(&a->wake, &a->lock, &until) == 0)
                ;
        a->writer_gathers = false;
}

static void wait_until(GrantlogStore *a, int64_t deadline_ms)
{
        if (deadline_ms == INT64_MAX) {
                pthread_cond_wait(&a->wake, &a->lock);
                return;
        }
        struct timespec ts = {.tv_sec = deadline_ms / 1000,
                              .tv_nsec = (long) (deadline_ms % 1000) * 1000000L};
        (void) pthread_cond_timedwait(&a->wake, &a->lock, &ts);
}

static void *writer_main(void *userdata)
{
        GrantlogStore *a = userdata;

        (void) pthread_setname_np(pthread_self(), "grantlog-writer");

        for (;;) {
                int64_t deadline = writer_deadline(a);
                ItemList batch;
                bool stopping;

                pthread_mutex_lock(&a->lock);
                if (!a->pending.head && !a->stop && now_unix_ms() < deadline) {
                        a->writer_idle = true;
                        wait_until(a, deadline);
                        a->writer_idle = false;
                }
                if (a->pending.head)
                        gather(a);
                /* Kept lifecycle records go first, all of them (RETAINED_MAX leaves room for
                 * requests), with the next request or when retried. */
                if (a->retained.head &&
                    (a->pending.head || a->stop || now_unix_ms() >= a->retry_ms)) {
                        batch = a->retained;
                        a->retained = (ItemList){};
                } else
                        batch = (ItemList){};
                ItemList fresh = take_items(&a->pending, BATCH_MAX - list_length(&batch));
                a->n_pending -= list_length(&fresh);
                list_concat(&batch, &fresh);
                stopping = a->stop && !a->pending.head && !a->retained.head;
                pthread_mutex_unlock(&a->lock);

                if (batch.head || stopping) {
                        ItemList answered = {};
                        int r = writer_commit(a, batch.head, stopping);
                        for (AuditItem *i = batch.head; i; i = i->next)
                                i->result = r;
                        if (r < 0)
                                retain_lifecycle(a, &batch, &answered);
                        else
                                answered = batch;
                        /* The callbacks hand their results on (to the event loop's mailbox):
                         * they run here, in commit order, without the lock. */
                        for (AuditItem *i = answered.head, *next; i; i = next) {
                                next = i->next;
                                if (i->done)
                                        i->done(i->result, i->userdata);
                                item_free(i);
                        }
                        pthread_mutex_lock(&a->lock);
                        /* stopping, or stopping with the log unwritable and nothing left to
                         * answer */
                        bool give_up = stopping || (r < 0 && a->stop && !a->pending.head);
                        pthread_mutex_unlock(&a->lock);
                        if (give_up) {
                                /* shutting down with the log unwritable */
                                for (AuditItem *i = a->retained.head, *next; i; i = next) {
                                        next = i->next;
                                        log_lost(a, i,
                                                 "brokerd stopped before the log could "
                                                 "be written");
                                        item_free(i);
                                }
                                a->retained = (ItemList){};
                                break;
                        }
                        continue;
                }

                /* Idle: a checkpoint that is due, or pruning. A failed log is retried by the
                 * next batch, not here. */
                int64_t now = now_unix_ms();
                if (a->log && now >= grantlog_writer_checkpoint_deadline(a->log))
                        (void) writer_commit(a, NULL, false);
                if (a->log && a->opt.retention_ms > 0 && now >= a->next_prune_ms) {
                        bool more = false;
                        int r = grantlog_writer_prune(a->log, now, &more);
                        /* A stretch that does not verify is refused (and logged); the log
                         * still takes records, so that is not a write failure. */
                        if (r != -EBADMSG)
                                writer_note(a, r);
                        a->next_prune_ms = more && r >= 0 ? now : now + prune_period_ms(a);
                }
        }
        return NULL;
}

/* Copies the WAL into the database from its own connection, so no commit waits for it. */
static void *checkpointer_main(void *userdata)
{
        GrantlogStore *a = userdata;

        (void) pthread_setname_np(pthread_self(), "grantlog-ckpt");
        sqlite3 *db = NULL;

        for (;;) {
                int nlog = 0, nckpt = 0;
                bool stop;

                pthread_mutex_lock(&a->lock);
                stop = a->stop;
                pthread_mutex_unlock(&a->lock);
                if (stop)
                        break;
                nanosleep(&(struct timespec){.tv_nsec = WAL_CHECKPOINT_EVERY_MS * 1000000L}, NULL);
                if (!db &&
                    (sqlite3_open_v2(a->path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
                     /* A connection that has read nothing has not opened the WAL yet, and a
                      * checkpoint on it does nothing at all (nlog -1). */
                     sqlite3_exec(db, "PRAGMA user_version", NULL, NULL, NULL) != SQLITE_OK)) {
                        sqlite3_close(db);
                        db = NULL;
                        continue;
                }
                if (sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt) !=
                    SQLITE_OK) {
                        sqlite3_close(db); /* reopened next round (file replaced, I/O error) */
                        db = NULL;
                        continue;
                }
                if (nlog > WAL_FRAMES_RESTART) {
                        sqlite3_busy_timeout(db, 1000);
                        (void) sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_RESTART, NULL,
                                                         NULL);
                        sqlite3_busy_timeout(db, 0);
                }
        }
        sqlite3_close(db);
        return NULL;
}

int grantlog_store_open(const char *path, const GrantlogOptions *opt, const GrantlogSigner *signer,
                        GrantlogStore **ret)
{
        GrantlogStore *a;
        int r;

        a = calloc(1, sizeof(GrantlogStore));
        if (!a)
                return -ENOMEM;
        pthread_mutex_init(&a->lock, NULL);
        pthread_cond_init(&a->wake, NULL);
        atomic_init(&a->healthy, true);
        a->opt = *opt;
        a->signer = *signer;
        a->path = strdup(path);
        if (!a->path) {
                r = -ENOMEM;
                goto fail;
        }
        r = grantlog_writer_open(path, true, opt, &a->signer, &a->faults, &a->log);
        if (r < 0)
                goto fail;
        grantlog_writer_mark(a->log, &a->mark);
        atomic_store(&a->last_seq, a->mark.seq);
        a->next_prune_ms = now_unix_ms();

        r = -pthread_create(&a->writer, NULL, writer_main, a);
        if (r >= 0) {
                r = -pthread_create(&a->checkpointer, NULL, checkpointer_main, a);
                if (r < 0) {
                        pthread_mutex_lock(&a->lock);
                        a->stop = true;
                        pthread_cond_signal(&a->wake);
                        pthread_mutex_unlock(&a->lock);
                        pthread_join(a->writer, NULL);
                }
        }
        if (r < 0) {
                log_error_errno(r, "Cannot start audit threads: %m");
                goto fail;
        }
        a->threads_started = true;
        *ret = a;
        return 0;
fail:
        grantlog_store_close(a);
        return r;
}

int grantlog_store_submit(GrantlogStore *a, json_t *record, int64_t time_ms, bool announced,
                          grantlog_done_t done, void *userdata)
{
        _cleanup_(json_decrefp) json_t *rec = record;
        AuditItem *i = calloc(1, sizeof(AuditItem));
        int r;

        if (!i)
                return -ENOMEM;
        /* The canonical form is made here, on the submitting thread, not in the commit. */
        r = grantlog_entry_prepare(rec, time_ms, &i->entry);
        if (r < 0) {
                free(i);
                return r;
        }
        i->done = done;
        i->userdata = userdata;

        pthread_mutex_lock(&a->lock);
        if (a->stop) {
                pthread_mutex_unlock(&a->lock);
                grantlog_entry_done(&i->entry);
                free(i);
                return -ESHUTDOWN;
        }
        list_append(&a->pending, i);
        a->n_pending++;
        /* Here, under the lock that queues it, so a writer never waits for a record it has. */
        if (announced)
                a->expected--;
        /* A gathering writer is woken by the last expected record, or by a full batch. */
        bool wake = a->writer_idle ||
                    (a->writer_gathers && (a->expected == 0 || a->n_pending >= BATCH_MAX));
        pthread_mutex_unlock(&a->lock);
        if (wake)
                pthread_cond_signal(&a->wake);
        return 0;
}

void grantlog_store_expect(GrantlogStore *a, int delta)
{
        bool wake;

        pthread_mutex_lock(&a->lock);
        a->expected = (unsigned) ((int) a->expected + delta);
        wake = a->writer_gathers && a->expected == 0;
        pthread_mutex_unlock(&a->lock);
        if (wake)
                pthread_cond_signal(&a->wake);
}

void grantlog_store_drain(GrantlogStore *a)
{
        if (!a || !a->threads_started)
                return;
        pthread_mutex_lock(&a->lock);
        a->stop = true;
        pthread_cond_signal(&a->wake);
        pthread_mutex_unlock(&a->lock);
        pthread_join(a->writer, NULL);
        pthread_join(a->checkpointer, NULL);
        a->threads_started = false;
}

void grantlog_store_close(GrantlogStore *a)
{
        if (!a)
                return;
        grantlog_store_drain(a);
        grantlog_writer_close(a->log);
        pthread_mutex_destroy(&a->lock);
        pthread_cond_destroy(&a->wake);
        free(a->path);
        free(a);
}

static int sink_submit(void *ctx, json_t *record, int64_t time_ms, bool announced,
                       grantlog_done_t done, void *userdata)
{
        return grantlog_store_submit(ctx, record, time_ms, announced, done, userdata);
}

static void sink_expect(void *ctx, int delta)
{
        grantlog_store_expect(ctx, delta);
}

GrantSink grantlog_store_sink(GrantlogStore *a)
{
        return (GrantSink){.submit = sink_submit, .expect = sink_expect, .ctx = a};
}

bool grantlog_store_healthy(GrantlogStore *a)
{
        return atomic_load(&a->healthy);
}

uint64_t grantlog_store_last_seq(GrantlogStore *a)
{
        return atomic_load(&a->last_seq);
}
