#include "audit.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>

#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "timeutil.h"

typedef struct AuditItem {
        json_t *record;
        int64_t time_ms;
        audit_done_t done;
        void *userdata;
        int result;
        struct AuditItem *next;
} AuditItem;

typedef struct ItemList {
        AuditItem *head, *tail;
} ItemList;

struct AuditStore {
        sqlite3 *db;
        char *path;
        sqlite3_stmt *insert;

        pthread_t thread;
        bool thread_started;
        pthread_mutex_t lock;
        pthread_cond_t wake;
        ItemList pending; /* queued, not yet taken by the writer */
        ItemList done;    /* finished, callbacks not yet run */
        size_t in_flight; /* submitted and not yet called back */
        bool stop;

        int efd;
        sd_event_source *efd_source;

        uint64_t last_seq; /* writer thread only */
        atomic_bool healthy;
        atomic_uint_least64_t last_seq_committed;
};

static const char schema[] = "PRAGMA journal_mode=WAL;"
                             "PRAGMA synchronous=FULL;"
                             "CREATE TABLE IF NOT EXISTS records ("
                             " seq INTEGER PRIMARY KEY,"
                             " time_ms INTEGER NOT NULL,"
                             " event TEXT NOT NULL,"
                             " body TEXT NOT NULL);"
                             "CREATE INDEX IF NOT EXISTS records_time ON records(time_ms);";

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

static int db_exec(sqlite3 *db, const char *path, const char *sql)
{
        char *msg = NULL;
        int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

        if (rc != SQLITE_OK) {
                log_error("%s: %s", path, msg ? msg : sqlite3_errmsg(db));
                sqlite3_free(msg);
                return rc == SQLITE_FULL ? -ENOSPC : -EIO;
        }
        return 0;
}

static int sqlite_to_errno(int rc)
{
        switch (rc & 0xff) {
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        default:
                return -EIO;
        }
}

/* Commits one batch in one transaction. On failure nothing of the batch is kept. */
static int write_batch(AuditStore *a, AuditItem *batch)
{
        uint64_t seq = a->last_seq;
        int rc, r;

        r = db_exec(a->db, a->path, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;

        for (AuditItem *i = batch; i; i = i->next) {
                _cleanup_free_ char *body = NULL;

                seq++;
                if (json_object_set_new(i->record, "seq", json_integer((json_int_t) seq)) < 0) {
                        r = -ENOMEM;
                        break;
                }
                /* Sorted keys and no whitespace: the same record always has the same bytes. */
                body = json_dumps(i->record, JSON_COMPACT | JSON_SORT_KEYS);
                if (!body) {
                        r = -ENOMEM;
                        break;
                }
                sqlite3_bind_int64(a->insert, 1, (sqlite3_int64) seq);
                sqlite3_bind_int64(a->insert, 2, i->time_ms);
                sqlite3_bind_text(a->insert, 3,
                                  json_string_value(json_object_get(i->record, "event")), -1,
                                  SQLITE_STATIC);
                sqlite3_bind_text(a->insert, 4, body, -1, SQLITE_STATIC);
                rc = sqlite3_step(a->insert);
                sqlite3_reset(a->insert);
                sqlite3_clear_bindings(a->insert);
                if (rc != SQLITE_DONE) {
                        log_error("%s: cannot write audit record: %s", a->path,
                                  sqlite3_errmsg(a->db));
                        r = sqlite_to_errno(rc);
                        break;
                }
        }
        if (r >= 0) {
                rc = sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL);
                if (rc != SQLITE_OK) {
                        log_error("%s: cannot commit audit records: %s", a->path,
                                  sqlite3_errmsg(a->db));
                        r = sqlite_to_errno(rc);
                }
        }
        if (r < 0) {
                /* A failed COMMIT may leave the transaction open; end it either way. */
                if (!sqlite3_get_autocommit(a->db))
                        (void) sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
                return r;
        }
        a->last_seq = seq;
        return 0;
}

static void *writer_main(void *userdata)
{
        AuditStore *a = userdata;

        for (;;) {
                ItemList batch;

                pthread_mutex_lock(&a->lock);
                while (!a->pending.head && !a->stop)
                        pthread_cond_wait(&a->wake, &a->lock);
                if (!a->pending.head && a->stop) {
                        pthread_mutex_unlock(&a->lock);
                        break;
                }
                batch = a->pending;
                a->pending = (ItemList){};
                pthread_mutex_unlock(&a->lock);

                int r = write_batch(a, batch.head);
                bool was_healthy = atomic_exchange(&a->healthy, r >= 0);
                if (r >= 0 && !was_healthy)
                        log_notice("%s: audit writes succeed again", a->path);
                if (r >= 0)
                        atomic_store(&a->last_seq_committed, a->last_seq);
                for (AuditItem *i = batch.head; i; i = i->next)
                        i->result = r;

                pthread_mutex_lock(&a->lock);
                list_concat(&a->done, &batch);
                pthread_mutex_unlock(&a->lock);
                (void) eventfd_write(a->efd, 1);
        }
        return NULL;
}

/* Runs callbacks of finished items on the event loop thread. */
static void run_completions(AuditStore *a)
{
        ItemList done;

        pthread_mutex_lock(&a->lock);
        done = a->done;
        a->done = (ItemList){};
        pthread_mutex_unlock(&a->lock);

        for (AuditItem *i = done.head, *next; i; i = next) {
                next = i->next;
                a->in_flight--;
                if (i->done)
                        i->done(i->result, i->userdata);
                json_decref(i->record);
                free(i);
        }
}

static int on_completion(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        eventfd_t v;

        (void) eventfd_read(fd, &v);
        run_completions(userdata);
        return 0;
}

static int read_last_seq(AuditStore *a)
{
        sqlite3_stmt *st = NULL;
        int rc;

        if (sqlite3_prepare_v2(a->db, "SELECT COALESCE(MAX(seq), 0) FROM records", -1, &st, NULL) !=
            SQLITE_OK)
                return log_error_errno(EIO, "%s: %s", a->path, sqlite3_errmsg(a->db));
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                a->last_seq = (uint64_t) sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW)
                return log_error_errno(EIO, "%s: %s", a->path, sqlite3_errmsg(a->db));
        atomic_store(&a->last_seq_committed, a->last_seq);
        return 0;
}

int audit_open(const char *path, sd_event *event, AuditStore **ret)
{
        AuditStore *a;
        int r;

        a = calloc(1, sizeof(AuditStore));
        if (!a)
                return -ENOMEM;
        a->efd = -EBADF;
        pthread_mutex_init(&a->lock, NULL);
        pthread_cond_init(&a->wake, NULL);
        atomic_init(&a->healthy, true);
        a->path = strdup(path);
        if (!a->path) {
                r = -ENOMEM;
                goto fail;
        }

        if (sqlite3_open_v2(path, &a->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                r = log_error_errno(EIO, "Cannot open audit database %s: %s", path,
                                    a->db ? sqlite3_errmsg(a->db) : "out of memory");
                goto fail;
        }
        sqlite3_busy_timeout(a->db, 5000);
        r = db_exec(a->db, path, schema);
        if (r < 0)
                goto fail;
        r = read_last_seq(a);
        if (r < 0)
                goto fail;
        if (sqlite3_prepare_v3(a->db,
                               "INSERT INTO records (seq, time_ms, event, body) VALUES (?,?,?,?)",
                               -1, SQLITE_PREPARE_PERSISTENT, &a->insert, NULL) != SQLITE_OK) {
                r = log_error_errno(EIO, "%s: %s", path, sqlite3_errmsg(a->db));
                goto fail;
        }

        a->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (a->efd < 0) {
                r = log_error_errno(errno, "eventfd: %m");
                goto fail;
        }
        r = sd_event_add_io(event, &a->efd_source, a->efd, EPOLLIN, on_completion, a);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(a->efd_source, "audit-completions");

        r = -pthread_create(&a->thread, NULL, writer_main, a);
        if (r < 0) {
                log_error_errno(r, "Cannot start audit writer thread: %m");
                goto fail;
        }
        a->thread_started = true;
        *ret = a;
        return 0;
fail:
        audit_close(a);
        return r;
}

int audit_submit(AuditStore *a, json_t *record, int64_t time_ms, audit_done_t done, void *userdata)
{
        AuditItem *i = calloc(1, sizeof(AuditItem));

        if (!i) {
                json_decref(record);
                return -ENOMEM;
        }
        i->record = record;
        i->time_ms = time_ms;
        i->done = done;
        i->userdata = userdata;

        pthread_mutex_lock(&a->lock);
        list_append(&a->pending, i);
        a->in_flight++;
        pthread_cond_signal(&a->wake);
        pthread_mutex_unlock(&a->lock);
        return 0;
}

void audit_drain(AuditStore *a)
{
        if (!a || !a->thread_started)
                return;
        pthread_mutex_lock(&a->lock);
        a->stop = true;
        pthread_cond_signal(&a->wake);
        pthread_mutex_unlock(&a->lock);
        pthread_join(a->thread, NULL);
        a->thread_started = false;
        run_completions(a);
}

void audit_close(AuditStore *a)
{
        if (!a)
                return;
        audit_drain(a);
        sd_event_source_disable_unref(a->efd_source);
        if (a->efd >= 0)
                close(a->efd);
        sqlite3_finalize(a->insert);
        sqlite3_close(a->db);
        pthread_mutex_destroy(&a->lock);
        pthread_cond_destroy(&a->wake);
        free(a->path);
        free(a);
}

bool audit_healthy(AuditStore *a)
{
        return atomic_load(&a->healthy);
}

uint64_t audit_last_seq(AuditStore *a)
{
        return atomic_load(&a->last_seq_committed);
}

json_t *audit_record_new(const char *event, int64_t time_ms)
{
        char t[TIME_RFC3339_MAX];

        time_format_rfc3339_ms(time_ms, t);
        return json_pack("{s:s, s:s}", "time", t, "event", event);
}
