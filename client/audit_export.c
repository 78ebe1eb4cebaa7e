/* brokerctl audit export: streams records in file order, one row at a time (constant memory),
 * as JSON lines (the stored records themselves), RFC 4180 CSV, or OCSF. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "audit_tool.h"
#include "errors.h"
#include "json-util.h"
#include "macro.h"
#include "timeutil.h"

/* The columns, and the SQL that reads each from a stored record. "scopes" (a JSON array) is
 * joined with spaces here, not in SQL, whose group_concat() does not promise an order. */
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

/* A JSON array of strings as one cell, its elements joined by spaces. */
static void csv_list(FILE *out, const char *json)
{
        _cleanup_(json_decrefp) json_t *v = json_loads(json, JSON_DECODE_ANY, NULL);
        _cleanup_free_ char *joined = NULL;
        size_t i, len = 0;
        json_t *e;
        FILE *m;

        if (!json_is_array(v))
                return;
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

/* The records an export holds, in order: ?1..?3 are the seq window and the event filter. */
#define EXPORT_WHERE "seq BETWEEN ?1 AND ?2 AND (?3 IS NULL OR event = ?3)"

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
 * issues (or refuses) a ticket for a local process; one event per decision. The mapping is
 * documented in README.md. Built by SQLite's JSON functions straight from the stored record:
 * "->" keeps a field's JSON type (a missing field becomes null). ?4 is this host's name. */
static const char ocsf_sql[] =
    "SELECT CASE WHEN ev = 'grant' THEN o"
    "       ELSE json_set(o, '$.status_detail', body -> '$.reason') END "
    "FROM (SELECT seq, body, ev, json_object("
    "  'class_uid', 3002, 'class_name', 'Authentication',"
    "  'category_uid', 3, 'category_name', 'Identity & Access Management',"
    "  'activity_id', 3, 'activity_name', 'Authentication Ticket', 'type_uid', 300203,"
    "  'status_id', iif(ev = 'grant', 1, 2), 'status', iif(ev = 'grant', 'Success', 'Failure'),"
    "  'time', time_ms, 'severity_id', 1, 'severity', 'Informational',"
    "  'metadata', json_object('version', '1.1.0', 'uid', body -> '$.seq',"
    "                          'product', json_object('name', 'brokerd',"
    "                                                 'vendor_name', 'brokerd')),"
    /* actor: the local process that asked, as the kernel identified it */
    "  'actor', json_object("
    "    'process', json_object('pid', body -> '$.peer.pid',"
    "                           'file', json_object('path', body -> '$.peer.exe')),"
    "    'user', json_object('uid', body -> '$.peer.uid', 'name', body -> '$.peer.user')),"
    /* user: the identity the ticket is for; dst_endpoint: whom it is for */
    "  'user', json_object('type', 'System', 'name', body -> '$.subject'),"
    "  'dst_endpoint', json_object('svc_name', body -> '$.audience'),"
    /* src_endpoint: the caller's place on this host, its unit and its container */
    "  'src_endpoint', CASE WHEN instr(ctr, ':') > 1 THEN json_object("
    "      'hostname', ?4, 'svc_name', body -> '$.peer.unit',"
    "      'container', json_object('uid', substr(ctr, instr(ctr, ':') + 1),"
    "                               'runtime', substr(ctr, 1, instr(ctr, ':') - 1)))"
    "    ELSE json_object('hostname', ?4, 'svc_name', body -> '$.peer.unit') END,"
    "  'unmapped', json_object('rule', body -> '$.rule', 'scopes', body -> '$.scopes',"
    "    'unit', body -> '$.peer.unit', 'cgroup', body -> '$.peer.cgroup',"
    "    'container', body -> '$.peer.container', 'jti', body -> '$.jti',"
    "    'kid', body -> '$.kid', 'expires_at', body -> '$.expires_at',"
    "    'token_sha256', body -> '$.token_sha256')) AS o"
    "  FROM (SELECT seq, body, time_ms, body ->> '$.event' AS ev,"
    "               iif(json_type(body, '$.peer.container') = 'text',"
    "                   body ->> '$.peer.container', '') AS ctr"
    "        FROM records WHERE " EXPORT_WHERE ")"
    "  WHERE ev IN ('grant', 'deny')) "
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

static int parse_time_option(const char *name, const char *value, int64_t *ret)
{
        if (value && time_parse_rfc3339(value, ret) < 0) {
                fprintf(stderr,
                        "brokerctl: --%s: \"%s\" is not RFC 3339 (2026-11-22T10:00:00Z) or a date "
                        "(2026-11-22)\n",
                        name, value);
                return -EINVAL;
        }
        return 0;
}

/* The stored canonical record with its hash added as the last member. */
static void jsonl_line(FILE *out, const char *body, size_t len, const char *hash)
{
        fwrite(body, 1, len - 1, out);
        fputs(",\"hash\":\"", out);
        fwrite(hash, 1, 64, out);
        fputs("\"}\n", out);
}

static void progress(bool on, uint64_t done, uint64_t total, bool last)
{
        if (!on || (!last && done % 100000 != 0))
                return;
        fprintf(stderr, "\rbrokerctl: exported %llu of %llu records%s", (unsigned long long) done,
                (unsigned long long) total, last ? "\n" : "");
}

int audit_export(const AuditToolArgs *a)
{
        _cleanup_fclose_ FILE *file = NULL;
        int64_t since = INT64_MIN, until = INT64_MAX, lo = 0, hi = -1;
        sqlite3_stmt *st = NULL;
        sqlite3 *db;
        FILE *out = stdout;
        bool jsonl, csv, ocsf, show_progress;
        uint64_t done = 0;
        int rc, ret = EXIT_OK;

        jsonl = strcmp(a->format, "jsonl") == 0;
        csv = strcmp(a->format, "csv") == 0;
        ocsf = strcmp(a->format, "ocsf") == 0;
        if (!jsonl && !csv && !ocsf) {
                fprintf(stderr, "brokerctl: --format must be jsonl, csv or ocsf, got \"%s\"\n",
                        a->format);
                return EXIT_USAGE;
        }
        if (parse_time_option("since", a->since, &since) < 0 ||
            parse_time_option("until", a->until, &until) < 0)
                return EXIT_USAGE;
        db = audit_db_open(a->database);
        if (!db)
                return EXIT_USAGE;
        _cleanup_free_ char *csv_text = csv ? csv_sql() : NULL;
        const char *sql = csv ? csv_text : jsonl ? jsonl_sql : ocsf_sql;
        if (!sql) {
                sqlite3_close(db);
                return EXIT_OTHER;
        }
        if (seq_window(db, since, until, &lo, &hi) < 0 ||
            sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
                fprintf(stderr, "brokerctl: %s: not an audit database: %s\n", a->database,
                        sqlite3_errmsg(db));
                sqlite3_finalize(st);
                sqlite3_close(db);
                return EXIT_OTHER;
        }
        if (a->output) {
                file = fopen(a->output, "we");
                if (!file) {
                        fprintf(stderr, "brokerctl: cannot write %s: %m\n", a->output);
                        sqlite3_finalize(st);
                        sqlite3_close(db);
                        return EXIT_USAGE;
                }
                out = file;
        }
        setvbuf(out, NULL, _IOFBF, 1u << 20);
        sqlite3_bind_int64(st, 1, lo);
        sqlite3_bind_int64(st, 2, hi);
        if (a->event)
                sqlite3_bind_text(st, 3, a->event, -1, SQLITE_STATIC);
        show_progress = isatty(STDERR_FILENO) && hi - lo + 1 >= 100000;

        if (ocsf)
                sqlite3_bind_text(st, 4, host_name(), -1, SQLITE_STATIC);
        if (csv) {
                for (size_t i = 0; i < ELEMENTSOF(csv_columns); i++)
                        fprintf(out, "%s%s", i ? "," : "", csv_columns[i].name);
                fputs("\r\n", out);
        }
        /* One row at a time: memory stays flat whatever the size of the log. */
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                progress(show_progress, ++done, (uint64_t) (hi - lo + 1), false);
                if (csv) {
                        csv_row(out, st);
                        continue;
                }
                if (ocsf) {
                        fprintf(out, "%s\n", (const char *) sqlite3_column_text(st, 0) ?: "");
                        continue;
                }
                const char *body = (const char *) sqlite3_column_text(st, 0);
                const char *hash = (const char *) sqlite3_column_text(st, 1);
                size_t len = (size_t) sqlite3_column_bytes(st, 0);
                if (!body || len < 2 || !hash || strlen(hash) != 64) {
                        fprintf(stderr, "brokerctl: a stored record is damaged; run "
                                        "'brokerctl audit verify'\n");
                        ret = EXIT_OTHER;
                        break;
                }
                jsonl_line(out, body, len, hash);
        }
        progress(show_progress, done, (uint64_t) (hi - lo + 1), true);
        if (ret == EXIT_OK && rc != SQLITE_DONE) {
                /* e.g. "malformed JSON": a stored record that is not one */
                fprintf(stderr, "brokerctl: reading %s failed: %s; run 'brokerctl audit verify'\n",
                        a->database, sqlite3_errmsg(db));
                ret = EXIT_OTHER;
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
        if (fflush(out) != 0 || ferror(out)) {
                fprintf(stderr, "brokerctl: writing the export failed: %m\n");
                ret = EXIT_OTHER;
        }
        return ret;
}
