/* The export (contract in export.h). */
#include "grantlog/export.h"

#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "grantlog/format.h"
#include "grantlog/reader.h"
#include "grantlog/schema.h"
#include "json-util.h"
#include "macro.h"
#include "timeutil.h"

/* The columns, and the SQL that reads each from a stored record. "scopes" (a JSON array) is
 * joined with spaces here, not in SQL, whose group_concat() does not promise an order. A value
 * a denial's record holds truncated (record.h) is its JSON object, as "->>" renders it. The
 * counts of a deny_summary have columns of their own, before the chain's. */
static const struct {
        const char *name, *sql;
} csv_columns[] = {
    {"seq", "body ->> '$.seq'"},
    {"time", "body ->> '$.time'"},
    {"event", "body ->> '$.event'"},
    {"reason", "body ->> '$.reason'"},
    {"rule", "body ->> '$.rule'"},
    {"peer_uid", "body ->> '$.peer.uid'"},
    {"peer_gid", "body ->> '$.peer.gid'"},
    {"peer_pid", "body ->> '$.peer.pid'"},
    {"peer_user", "body ->> '$.peer.user'"},
    {"peer_exe", "body ->> '$.peer.exe'"},
    {"peer_unit", "body ->> '$.peer.unit'"},
    {"peer_cgroup", "body ->> '$.peer.cgroup'"},
    {"peer_container", "body ->> '$.peer.container'"},
    {"subject", "body ->> '$.subject'"},
    {"audience", "body ->> '$.audience'"},
    {"scopes", "body -> '$.scopes'"},
    {"alg", "body ->> '$.alg'"},
    {"kid", "body ->> '$.kid'"},
    {"jti", "body ->> '$.jti'"},
    {"expires_at", "body ->> '$.expires_at'"},
    {"token_sha256", "body ->> '$.token_sha256'"},
    {"count", "body ->> '$.count'"},
    {"below_floor", "body ->> '$.below_floor'"},
    {"first_time", "body ->> '$.first_time'"},
    {"last_time", "body ->> '$.last_time'"},
    {"prev_hash", "body ->> '$.prev_hash'"},
    {"hash", "hash"},
};

/* RFC 4180 quoting, and no cell may start like a spreadsheet formula (=, +, -, @, tab, CR):
 * such a cell is prefixed with a single quote so it is shown as text, not evaluated. */
static void csv_cell(FILE *out, const char *s)
{
        bool formula = s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' ||
                       s[0] == '\r';
        const char *q;

        fputs(formula ? "\"'" : "\"", out);
        while ((q = strchr(s, '"'))) { /* a '"' is doubled */
                fwrite(s, 1, (size_t) (q - s) + 1, out);
                fputc('"', out);
                s = q + 1;
        }
        fputs(s, out);
        fputc('"', out);
}

/* A JSON array of strings as one cell, its elements joined by spaces; anything else (a
 * denial's truncated scopes) as its JSON text. */
static void csv_list(FILE *out, const char *json)
{
        _cleanup_(json_decrefp) json_t *v = json_loads(json, JSON_DECODE_ANY, NULL);
        _cleanup_free_ char *joined = NULL;
        size_t i, len = 0;
        json_t *e;
        FILE *m;

        if (!json_is_array(v)) {
                csv_cell(out, json);
                return;
        }
        m = open_memstream(&joined, &len);
        if (!m)
                return;
        json_array_foreach (v, i, e)
                fprintf(m, "%s%s", i ? " " : "", json_string_value(e) ?: "");
        fclose(m);
        csv_cell(out, joined);
}

/* Absent fields and JSON nulls are empty, unquoted cells. */
static void csv_row(FILE *out, sqlite3_stmt *st)
{
        for (size_t i = 0; i < ELEMENTSOF(csv_columns); i++) {
                const char *v = (const char *) sqlite3_column_text(st, (int) i);

                if (i > 0)
                        fputc(',', out);
                if (!v)
                        continue;
                if (strcmp(csv_columns[i].name, "scopes") == 0)
                        csv_list(out, v);
                else
                        csv_cell(out, v);
        }
        fputs("\r\n", out);
}

/* The records an export holds, in order: ?1..?2 are the seq window, ?3 the events to keep (a
 * JSON array, or NULL for all). */
#define EXPORT_WHERE                                                                               \
        "seq BETWEEN ?1 AND ?2 AND (?3 IS NULL OR event IN (SELECT value FROM json_each(?3)))"

static const char jsonl_sql[] =
    "SELECT body, hash FROM records WHERE " EXPORT_WHERE " ORDER BY seq";

static char *csv_sql(void)
{
        char *sql = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&sql, &len);

        if (!m)
                return NULL;
        fputs("SELECT ", m);
        for (size_t i = 0; i < ELEMENTSOF(csv_columns); i++)
                fprintf(m, "%s%s", i ? ", " : "", csv_columns[i].sql);
        fputs(" FROM records WHERE " EXPORT_WHERE " ORDER BY seq", m);
        if (fclose(m) != 0) {
                free(sql);
                return NULL;
        }
        return sql;
}

/* OCSF 1.1 Authentication (class 3002), activity "Authentication Ticket" (3): the broker
 * issues (or refuses) a ticket for a local process; one event per decision, and one per
 * deny_summary with the OCSF "count", "start_time" and "end_time" of the denials it counts. The
 * mapping is documented in README.md. Built by SQLite's JSON functions straight from the stored
 * record: "->" keeps a field's JSON type (a missing field becomes null). ?4 is this host's
 * name. */
/* A string attribute: a denial's truncated value (record.h) gives its prefix; the whole
 * truncated objects are listed under unmapped.truncated. */
#define OCSF_TEXT(path)                                                                            \
        "iif(json_type(body, '" path "') = 'object', body ->> '" path ".prefix', body ->> '" path  \
        "')"
/* An RFC 3339 time of a record, in ms since the epoch. */
#define OCSF_MS(path)                                                                              \
        "CAST(round((julianday(body ->> '" path "') - 2440587.5) * 86400000.0) AS INTEGER)"
#define OCSF_EXE      OCSF_TEXT("$.peer.exe")
#define OCSF_USER     OCSF_TEXT("$.peer.user")
#define OCSF_UNIT     OCSF_TEXT("$.peer.unit")
#define OCSF_AUDIENCE OCSF_TEXT("$.audience")
#define OCSF_FIRST_MS OCSF_MS("$.first_time")
#define OCSF_LAST_MS  OCSF_MS("$.last_time")
static const char ocsf_sql[] =
    "SELECT CASE WHEN ev = 'grant' THEN o"
    "       WHEN ev = 'deny_summary' THEN json_set(o, '$.status_detail', body -> '$.reason',"
    "         '$.count', body -> '$.count', '$.start_time', " OCSF_FIRST_MS ","
    "         '$.end_time', " OCSF_LAST_MS ","
    "         '$.unmapped.below_floor', body -> '$.below_floor',"
    "         '$.unmapped.budget', body -> '$.budget', '$.unmapped.interval_s',"
    "         body -> '$.interval_s')"
    "       WHEN instr(body, '\"truncated\":true') = 0"
    "         THEN json_set(o, '$.status_detail', body -> '$.reason')"
    "       ELSE json_set(o, '$.status_detail', body -> '$.reason', '$.unmapped.truncated',"
    "         (SELECT json_group_object(substr(fullkey, 3), json(value)) FROM json_tree(body)"
    "          WHERE type = 'object' AND json_extract(value, '$.truncated') = 1)) END "
    "FROM (SELECT seq, body, ev, json_object("
    "  'class_uid', 3002, 'class_name', 'Authentication',"
    "  'category_uid', 3, 'category_name', 'Identity & Access Management',"
    "  'activity_id', 3, 'activity_name', 'Authentication Ticket', 'type_uid', 300203,"
    "  'status_id', iif(ev = 'grant', 1, 2), 'status', iif(ev = 'grant', 'Success', 'Failure'),"
    "  'time', time_ms, 'severity_id', 1, 'severity', 'Informational',"
    /* every "uid" of the OCSF schema is a string */
    "  'metadata', json_object('version', '1.1.0', 'uid', CAST(body ->> '$.seq' AS TEXT),"
    "                          'product', json_object('name', 'brokerd',"
    "                                                 'vendor_name', 'brokerd')),"
    /* actor: the local process that asked, as the kernel identified it */
    "  'actor', json_object("
    "    'process', json_object('pid', body -> '$.peer.pid',"
    "                           'file', json_object('path', " OCSF_EXE ")),"
    "    'user', json_object('uid', CAST(body ->> '$.peer.uid' AS TEXT),"
    "                        'name', " OCSF_USER ")),"
    /* user: the identity the ticket is for; dst_endpoint: whom it is for */
    "  'user', json_object('type', 'System', 'name', body -> '$.subject'),"
    "  'dst_endpoint', json_object('svc_name', " OCSF_AUDIENCE "),"
    /* src_endpoint: the caller's place on this host, its unit and its container */
    "  'src_endpoint', CASE WHEN instr(ctr, ':') > 1 THEN json_object("
    "      'hostname', ?4, 'svc_name', " OCSF_UNIT ","
    "      'container', json_object('uid', substr(ctr, instr(ctr, ':') + 1),"
    "                               'runtime', substr(ctr, 1, instr(ctr, ':') - 1)))"
    "    ELSE json_object('hostname', ?4, 'svc_name', " OCSF_UNIT ") END,"
    "  'unmapped', json_object('rule', body -> '$.rule', 'scopes', body -> '$.scopes',"
    "    'unit', body -> '$.peer.unit', 'cgroup', body -> '$.peer.cgroup',"
    "    'container', body -> '$.peer.container', 'jti', body -> '$.jti',"
    "    'kid', body -> '$.kid', 'expires_at', body -> '$.expires_at',"
    "    'token_sha256', body -> '$.token_sha256')) AS o"
    "  FROM (SELECT seq, body, time_ms, body ->> '$.event' AS ev,"
    "               iif(json_type(body, '$.peer.container') = 'text',"
    "                   body ->> '$.peer.container', '') AS ctr"
    "        FROM records WHERE " EXPORT_WHERE ")"
    "  WHERE ev IN ('grant', 'deny', 'deny_summary')) "
    "ORDER BY seq";

static const char *host_name(void)
{
        static char name[256];

        if (!name[0] && gethostname(name, sizeof(name) - 1) < 0)
                strcpy(name, "localhost");
        return name;
}

/* The contiguous seq range of a time window: a window export is a piece of the chain and still
 * verifies. Records are in time order except across a wall-clock jump back, where the range
 * may include a few records stamped outside the window. */
static int seq_window(sqlite3 *db, int64_t since, int64_t until, int64_t *ret_lo, int64_t *ret_hi)
{
        sqlite3_stmt *st = NULL;
        int rc;

        if (sqlite3_prepare_v2(db,
                               "SELECT (SELECT MIN(seq) FROM records WHERE time_ms >= ?1), "
                               "(SELECT MAX(seq) FROM records WHERE time_ms < ?2)",
                               -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_int64(st, 1, since);
        sqlite3_bind_int64(st, 2, until);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                bool none = sqlite3_column_type(st, 0) == SQLITE_NULL ||
                            sqlite3_column_type(st, 1) == SQLITE_NULL;
                *ret_lo = none ? 1 : sqlite3_column_int64(st, 0);
                *ret_hi = none ? 0 : sqlite3_column_int64(st, 1);
        }
        sqlite3_finalize(st);
        return rc == SQLITE_ROW ? 0 : -EIO;
}

/* At most how many records the database can hold: a row takes 64 bytes or more of a page
 * (seq, time, event, a body, a 64-digit hash). A seq range wider than this has holes. */
static uint64_t records_max(sqlite3 *db)
{
        sqlite3_stmt *st = NULL;
        uint64_t n = 0;

        if (sqlite3_prepare_v2(db,
                               "SELECT page_count * page_size / 64 FROM pragma_page_count(), "
                               "pragma_page_size()",
                               -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                n = (uint64_t) sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return n;
}

/* ---- rendering -------------------------------------------------------------------------- */

int grantlog_format_from_string(const char *s)
{
        static const char *const names[] = {
            [GRANTLOG_FORMAT_JSONL] = "jsonl",
            [GRANTLOG_FORMAT_CSV] = "csv",
            [GRANTLOG_FORMAT_OCSF] = "ocsf",
        };

        for (size_t i = 0; s && i < ELEMENTSOF(names); i++)
                if (strcmp(s, names[i]) == 0)
                        return (int) i;
        return -EINVAL;
}

/* One reader of the log: a connection and the export's statement, ?3 and ?4 bound. */
typedef struct Reader {
        sqlite3 *db;
        sqlite3_stmt *st;
        GrantlogFormat format;
        const char *database;
} Reader;

static int reader_open(Reader *r, const GrantlogExportOptions *o, const char *sql,
                       const char *events, char *err, size_t errlen)
{
        int ret;

        *r = (Reader){.database = o->database, .format = o->format};
        ret = grantlog_db_open_readonly(o->database, &r->db, err, errlen);
        if (ret < 0)
                return ret;
        if (sqlite3_prepare_v2(r->db, sql, -1, &r->st, NULL) != SQLITE_OK) {
                snprintf(err, errlen, "%s: not an audit database: %s", o->database,
                         sqlite3_errmsg(r->db));
                return -EMEDIUMTYPE;
        }
        if (events)
                sqlite3_bind_text(r->st, 3, events, -1, SQLITE_STATIC);
        if (o->format == GRANTLOG_FORMAT_OCSF)
                sqlite3_bind_text(r->st, 4, host_name(), -1, SQLITE_STATIC);
        return 0;
}

static void reader_close(Reader *r)
{
        sqlite3_finalize(r->st);
        sqlite3_close(r->db);
        *r = (Reader){};
}

/* Export-wide progress: reported each PROGRESS_STEP records. */
#define PROGRESS_STEP 100000
typedef struct Progress {
        const GrantlogExportOptions *o;
        uint64_t done, total;
} Progress;

static void progress_add(Progress *p, uint64_t n)
{
        if (p->o->progress && p->done / PROGRESS_STEP != (p->done + n) / PROGRESS_STEP)
                p->o->progress(p->done + n, p->total, false, p->o->userdata);
        p->done += n;
}

/* Writes the records with seq lo..hi to out; counts them in *rows (and in p, if given). On
 * failure, the message. */
static int render(Reader *r, int64_t lo, int64_t hi, FILE *out, uint64_t *rows, Progress *p,
                  char *err, size_t err_size)
{
        int rc;

        sqlite3_bind_int64(r->st, 1, lo);
        sqlite3_bind_int64(r->st, 2, hi);
        while ((rc = sqlite3_step(r->st)) == SQLITE_ROW) {
                (*rows)++;
                if (p)
                        progress_add(p, 1);
                if (r->format == GRANTLOG_FORMAT_CSV) {
                        csv_row(out, r->st);
                        continue;
                }
                if (r->format == GRANTLOG_FORMAT_OCSF) {
                        const char *o = (const char *) sqlite3_column_text(r->st, 0);
                        fwrite(o ?: "", 1, (size_t) sqlite3_column_bytes(r->st, 0), out);
                        fputc('\n', out);
                        continue;
                }
                const char *body = (const char *) sqlite3_column_text(r->st, 0);
                const char *hash = (const char *) sqlite3_column_text(r->st, 1);
                size_t len = (size_t) sqlite3_column_bytes(r->st, 0);
                if (!body || len < 2 || !hash || strlen(hash) != 64) {
                        snprintf(err, err_size, "%s: a stored record is damaged", r->database);
                        sqlite3_reset(r->st);
                        return -EBADMSG;
                }
                grantlog_line_write(out, body, len, hash);
        }
        sqlite3_reset(r->st);
        if (rc == SQLITE_DONE)
                return 0;
        /* e.g. "malformed JSON": a stored record that is not one */
        snprintf(err, err_size, "reading %s failed: %s", r->database, sqlite3_errmsg(r->db));
        return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_IOERR ? -EIO : -EBADMSG;
}

/* ---- in parallel, in order ---------------------------------------------------------------
 *
 * CSV and OCSF rows are built by SQLite's JSON functions at about 200,000 a second on one core.
 * A large export is cut into blocks of BLOCK_RECORDS seqs; worker i renders blocks i, i + n,
 * i + 2n, ... into memory, and the main thread writes them out in order. A worker renders its
 * next block while the last waits, and no further: memory stays at two blocks a worker.
 *
 * Each connection reads in a transaction of its own, so each sees one snapshot of the log. The
 * daemon only appends (after the window) and prunes (from the start): a worker's snapshot holds
 * the window as the main thread's does unless a prune reached into it since, which the worker
 * checks before it renders anything. */

#define BLOCK_RECORDS        500   /* divides the progress step: the count is exact */
#define PARALLEL_RECORDS_MIN 20000 /* per thread; below it one thread is faster */

typedef struct Block {
        char *text;
        size_t len;
        uint64_t rows;
        int ret;
        char err[512];
} Block;

typedef struct Export Export;

typedef struct Worker {
        Export *x;
        size_t index;
        pthread_t thread;
        bool ready; /* `done` holds a block the main thread has not taken */
        Block done;
} Worker;

struct Export {
        const GrantlogExportOptions *o;
        const char *sql, *events;
        int64_t lo, hi;
        uint64_t n_blocks;
        size_t n_workers;
        pthread_mutex_t lock;
        pthread_cond_t changed;
        bool stop;
        Worker workers[GRANTLOG_THREADS_MAX];
};

static void block_range(const Export *x, uint64_t b, int64_t *lo, int64_t *hi)
{
        /* b * BLOCK_RECORDS < hi - lo + 1, which records_max() bounds */
        *lo = x->lo + (int64_t) (b * BLOCK_RECORDS);
        *hi = (uint64_t) x->hi - (uint64_t) *lo < BLOCK_RECORDS ? x->hi : *lo + BLOCK_RECORDS - 1;
}

/* Starts the reader's snapshot; 0 when it holds the window as the main thread saw it. */
static int snapshot_matches(const Export *x, Reader *r, char *err, size_t err_size)
{
        sqlite3_stmt *st = NULL;
        int ret = -ESTALE;

        if (grantlog_reader_snapshot(r->db) < 0 ||
            sqlite3_prepare_v2(r->db, "SELECT MIN(seq) FROM records", -1, &st, NULL) != SQLITE_OK) {
                snprintf(err, err_size, "reading %s failed: %s", r->database,
                         sqlite3_errmsg(r->db));
                return -EIO;
        }
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER &&
            sqlite3_column_int64(st, 0) <= x->lo)
                ret = 0;
        else
                snprintf(err, err_size, "the log was pruned under the export: export again");
        sqlite3_finalize(st);
        return ret;
}

/* Renders block b into memory. */
static void render_block(const Export *x, Reader *r, uint64_t b, Block *blk)
{
        FILE *m = open_memstream(&blk->text, &blk->len);
        int64_t lo, hi;

        if (!m) {
                blk->ret = -ENOMEM;
                snprintf(blk->err, sizeof(blk->err), "out of memory");
                return;
        }
        __fsetlocking(m, FSETLOCKING_BYCALLER); /* only this thread writes to it */
        block_range(x, b, &lo, &hi);
        blk->ret = render(r, lo, hi, m, &blk->rows, NULL, blk->err, sizeof(blk->err));
        if (fclose(m) != 0 && blk->ret == 0) {
                blk->ret = -ENOMEM;
                snprintf(blk->err, sizeof(blk->err), "out of memory");
        }
}

static void *worker_main(void *userdata)
{
        Worker *w = userdata;
        Export *x = w->x;
        Reader r = {};
        char err[sizeof(((Block *) NULL)->err)] = "";
        int ready = reader_open(&r, x->o, x->sql, x->events, err, sizeof(err));

        if (ready >= 0)
                ready = snapshot_matches(x, &r, err, sizeof(err));
        for (uint64_t b = w->index; b < x->n_blocks; b += x->n_workers) {
                Block next = {.ret = ready};

                if (ready >= 0)
                        render_block(x, &r, b, &next);
                else
                        snprintf(next.err, sizeof(next.err), "%s", err);
                pthread_mutex_lock(&x->lock);
                while (w->ready && !x->stop)
                        pthread_cond_wait(&x->changed, &x->lock);
                if (x->stop) {
                        pthread_mutex_unlock(&x->lock);
                        free(next.text);
                        break;
                }
                w->done = next;
                w->ready = true;
                pthread_cond_broadcast(&x->changed);
                pthread_mutex_unlock(&x->lock);
                if (next.ret < 0)
                        break;
        }
        reader_close(&r);
        return NULL;
}

/* Block b, from the worker that renders it, once it is ready. */
static Block take_block(Export *x, uint64_t b)
{
        Worker *w = &x->workers[b % x->n_workers];
        Block blk;

        pthread_mutex_lock(&x->lock);
        while (!w->ready)
                pthread_cond_wait(&x->changed, &x->lock);
        blk = w->done;
        w->ready = false;
        pthread_cond_broadcast(&x->changed);
        pthread_mutex_unlock(&x->lock);
        return blk;
}

/* Stops the workers (mid-export too, after a failure) and frees what they hold. */
static void stop_workers(Export *x, size_t n_started)
{
        pthread_mutex_lock(&x->lock);
        x->stop = true;
        pthread_cond_broadcast(&x->changed);
        pthread_mutex_unlock(&x->lock);
        for (size_t i = 0; i < n_started; i++) {
                pthread_join(x->workers[i].thread, NULL);
                if (x->workers[i].ready)
                        free(x->workers[i].done.text);
        }
}

/* n workers, or none (render in this thread) if they cannot all start. */
static void start_workers(Export *x, size_t n)
{
        size_t started = 0;

        x->n_workers = n; /* read by the workers: set before any starts */
        for (; started < n; started++) {
                x->workers[started] = (Worker){.x = x, .index = started};
                if (pthread_create(&x->workers[started].thread, NULL, worker_main,
                                   &x->workers[started]) != 0)
                        break;
        }
        if (started < n) {
                stop_workers(x, started);
                x->n_workers = 0;
        }
}

/* The events to keep as the JSON array ?3 binds, or NULL for all. */
static int events_json(const GrantlogExportOptions *o, char **ret)
{
        _cleanup_(json_decrefp) json_t *a = NULL;

        *ret = NULL;
        if (o->n_events == 0)
                return 0;
        a = json_array();
        for (size_t i = 0; a && i < o->n_events; i++)
                if (json_array_append_new(a, json_string(o->events[i])) < 0)
                        return -ENOMEM;
        *ret = a ? json_dumps(a, JSON_COMPACT) : NULL;
        return *ret ? 0 : -ENOMEM;
}

int grantlog_export(const GrantlogExportOptions *o, char *err, size_t errlen)
{
        Export x = {.o = o, .lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};
        _cleanup_free_ char *csv_text = NULL, *events = NULL;
        Reader r = {};
        Progress prog = {.o = o};
        uint64_t span; /* seqs in the window */
        FILE *out = o->out;
        int ret;

        if (o->format == GRANTLOG_FORMAT_CSV) {
                csv_text = csv_sql();
                x.sql = csv_text;
        } else
                x.sql = o->format == GRANTLOG_FORMAT_JSONL ? jsonl_sql : ocsf_sql;
        if (!x.sql || events_json(o, &events) < 0) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        x.events = events;
        ret = reader_open(&r, o, x.sql, events, err, errlen);
        /* One snapshot for the window and its records: a prune by the running daemon cannot
         * take records from under the export. */
        if (ret >= 0 && (grantlog_reader_snapshot(r.db) < 0 ||
                         seq_window(r.db, o->since_ms, o->until_ms, &x.lo, &x.hi) < 0)) {
                snprintf(err, errlen, "reading %s failed: %s", o->database, sqlite3_errmsg(r.db));
                ret = -EIO;
        }
        if (ret < 0) {
                reader_close(&r);
                return ret;
        }
        span = x.hi >= x.lo ? (uint64_t) x.hi - (uint64_t) x.lo + 1 : 0;
        prog.total = span;

        if (o->format == GRANTLOG_FORMAT_CSV) {
                for (size_t i = 0; i < ELEMENTSOF(csv_columns); i++)
                        fprintf(out, "%s%s", i ? "," : "", csv_columns[i].name);
                fputs("\r\n", out);
        }
        /* Threads only for a large export in a format that gains from them (JSONL copies stored
         * text, millions a second, faster than the handoff), and only over a seq range the
         * file could fill: a damaged log with seqs far apart would be cut into empty blocks. */
        if ((o->format != GRANTLOG_FORMAT_JSONL || o->threads > 0) && span > 0 &&
            span <= records_max(r.db)) {
                size_t n = grantlog_thread_count(o->threads, span, PARALLEL_RECORDS_MIN);
                if (n > 1) {
                        /* A block's buffer (~600 KiB of OCSF) is above glibc's mmap threshold,
                         * and a thread's heap is trimmed with madvise as blocks are freed:
                         * either way each block would be faulted in page by page again (66,000
                         * faults for 200,000 records). Kept, the same memory serves block
                         * after block. */
                        mallopt(M_MMAP_THRESHOLD, 16 << 20);
                        mallopt(M_TRIM_THRESHOLD, 32 << 20);
                        x.n_blocks = (span + BLOCK_RECORDS - 1) / BLOCK_RECORDS;
                        start_workers(&x, n);
                }
        }
        if (x.n_workers == 0) {
                /* One statement over the window, streamed. */
                uint64_t rows = 0;
                ret = render(&r, x.lo, x.hi, out, &rows, &prog, err, errlen);
        }
        for (uint64_t b = 0; x.n_workers > 0 && b < x.n_blocks && ret >= 0; b++) {
                Block blk = take_block(&x, b);

                fwrite(blk.text, 1, blk.len, out);
                free(blk.text);
                if (blk.ret < 0) {
                        snprintf(err, errlen, "%s", blk.err);
                        ret = blk.ret;
                }
                progress_add(&prog, blk.rows);
        }
        if (x.n_workers > 0)
                stop_workers(&x, x.n_workers);
        if (o->progress)
                o->progress(prog.done, prog.total, true, o->userdata);
        reader_close(&r);
        if (fflush(out) != 0 || ferror(out)) {
                if (ret >= 0)
                        snprintf(err, errlen, "writing the export failed: %m");
                ret = ret < 0 ? ret : -EIO;
        }
        return ret;
}
