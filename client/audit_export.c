/* brokerctl audit export: streams records in file order, one row at a time (constant memory),
 * as JSON lines (the stored records themselves), RFC 4180 CSV, or OCSF. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "audit-tool.h"
#include "errors.h"
#include "json-util.h"
#include "macro.h"
#include "timeutil.h"

static const char *const csv_columns[] = {
    "seq",
    "time",
    "event",
    "reason",
    "rule",
    "peer_uid",
    "peer_gid",
    "peer_pid",
    "peer_user",
    "peer_exe",
    "peer_unit",
    "peer_cgroup",
    "peer_container",
    "subject",
    "audience",
    "scopes",
    "alg",
    "kid",
    "jti",
    "expires_at",
    "token_sha256",
    "prev_hash",
    "hash",
    NULL,
};

/* RFC 4180 quoting, and no cell may start like a spreadsheet formula (=, +, -, @, tab, CR):
 * such a cell is prefixed with a single quote so it is shown as text, not evaluated. */
static void csv_cell(FILE *out, const char *s)
{
        bool formula = s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' ||
                       s[0] == '\r';

        fputc('"', out);
        if (formula)
                fputc('\'', out);
        for (const char *p = s; *p; p++) {
                if (*p == '"')
                        fputc('"', out);
                fputc(*p, out);
        }
        fputc('"', out);
}

/* A record field as CSV text: strings as they are, integers in decimal, scopes joined by
 * spaces, absent fields empty. */
static void csv_value(FILE *out, json_t *v)
{
        char buf[32];

        if (json_is_string(v))
                csv_cell(out, json_string_value(v));
        else if (json_is_integer(v)) {
                snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                csv_cell(out, buf);
        } else if (json_is_array(v)) {
                size_t i;
                json_t *e;
                size_t len = 0;
                char *joined = NULL;
                FILE *m = open_memstream(&joined, &len);
                if (!m)
                        return;
                json_array_foreach (v, i, e)
                        fprintf(m, "%s%s", i ? " " : "", json_string_value(e) ?: "");
                fclose(m);
                csv_cell(out, joined);
                free(joined);
        }
}

static void csv_row(FILE *out, json_t *rec)
{
        json_t *peer = json_object_get(rec, "peer");

        for (const char *const *c = csv_columns; *c; c++) {
                if (c != csv_columns)
                        fputc(',', out);
                if (strncmp(*c, "peer_", 5) == 0)
                        csv_value(out, json_object_get(peer, *c + 5));
                else
                        csv_value(out, json_object_get(rec, *c));
        }
        fputs("\r\n", out);
}

/* OCSF 1.1 Authentication (class 3002), activity "Authentication Ticket" (3): the broker
 * issues (or refuses) a ticket for a local process. The mapping is documented in README.md. */
static json_t *ocsf_event(json_t *rec)
{
        const char *event = json_string_value(json_object_get(rec, "event"));
        json_t *peer = json_object_get(rec, "peer");
        bool grant = event && strcmp(event, "grant") == 0;
        int64_t time_ms = 0;
        int r = 0;

        (void) time_parse_rfc3339(json_string_value(json_object_get(rec, "time")) ?: "", &time_ms);
        _cleanup_(json_decrefp) json_t *o =
            json_pack("{s:i, s:s, s:i, s:s, s:i, s:s, s:i, s:i, s:s, s:I, s:i, s:s}", "class_uid",
                      3002, "class_name", "Authentication", "category_uid", 3, "category_name",
                      "Identity & Access Management", "activity_id", 3, "activity_name",
                      "Authentication Ticket", "type_uid", 300203, "status_id", grant ? 1 : 2,
                      "status", grant ? "Success" : "Failure", "time", (json_int_t) time_ms,
                      "severity_id", 1, "severity", "Informational");
        if (!o)
                return NULL;
        r |= json_object_set_new(o, "metadata",
                                 json_pack("{s:s, s:O?, s:{s:s, s:s}}", "version", "1.1.0", "uid",
                                           json_object_get(rec, "seq"), "product", "name",
                                           "brokerd", "vendor_name", "brokerd"));
        /* actor: the local process that asked, as the kernel identified it */
        r |= json_object_set_new(o, "actor",
                                 json_pack("{s:{s:O?, s:{s:O?}}, s:{s:O?, s:O?}}", "process", "pid",
                                           json_object_get(peer, "pid"), "file", "path",
                                           json_object_get(peer, "exe"), "user", "uid",
                                           json_object_get(peer, "uid"), "name",
                                           json_object_get(peer, "user")));
        /* user: the identity the ticket is for; dst_endpoint: whom it is for */
        r |= json_object_set_new(
            o, "user",
            json_pack("{s:s, s:O?}", "type", "System", "name", json_object_get(rec, "subject")));
        r |= json_object_set_new(o, "dst_endpoint",
                                 json_pack("{s:O?}", "svc_name", json_object_get(rec, "audience")));
        if (!grant)
                r |= json_object_set(o, "status_detail",
                                     json_object_get(rec, "reason") ?: json_null());
        r |= json_object_set_new(
            o, "unmapped",
            json_pack("{s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?}", "rule",
                      json_object_get(rec, "rule"), "scopes", json_object_get(rec, "scopes"),
                      "unit", json_object_get(peer, "unit"), "cgroup",
                      json_object_get(peer, "cgroup"), "container",
                      json_object_get(peer, "container"), "jti", json_object_get(rec, "jti"), "kid",
                      json_object_get(rec, "kid"), "expires_at", json_object_get(rec, "expires_at"),
                      "token_sha256", json_object_get(rec, "token_sha256")));
        return r == 0 ? TAKE_PTR(o) : NULL;
}

int audit_export(const AuditToolArgs *a)
{
        _cleanup_fclose_ FILE *file = NULL;
        int64_t since = INT64_MIN, until = INT64_MAX;
        sqlite3_stmt *st = NULL;
        sqlite3 *db;
        FILE *out = stdout;
        bool jsonl, csv, ocsf;
        int rc, ret = EXIT_OK;

        jsonl = strcmp(a->format, "jsonl") == 0;
        csv = strcmp(a->format, "csv") == 0;
        ocsf = strcmp(a->format, "ocsf") == 0;
        if (!jsonl && !csv && !ocsf) {
                fprintf(stderr, "brokerctl: --format must be jsonl, csv or ocsf, got \"%s\"\n",
                        a->format);
                return EXIT_USAGE;
        }
        if (a->since && time_parse_rfc3339(a->since, &since) < 0) {
                fprintf(stderr,
                        "brokerctl: --since: \"%s\" is not RFC 3339 (2026-11-22T10:00:00Z) or a "
                        "date (2026-11-22)\n",
                        a->since);
                return EXIT_USAGE;
        }
        if (a->until && time_parse_rfc3339(a->until, &until) < 0) {
                fprintf(stderr,
                        "brokerctl: --until: \"%s\" is not RFC 3339 (2026-11-22T10:00:00Z) or a "
                        "date (2026-11-22)\n",
                        a->until);
                return EXIT_USAGE;
        }
        db = audit_db_open(a->database);
        if (!db)
                return EXIT_USAGE;
        if (a->output) {
                file = fopen(a->output, "we");
                if (!file) {
                        fprintf(stderr, "brokerctl: cannot write %s: %m\n", a->output);
                        sqlite3_close(db);
                        return EXIT_USAGE;
                }
                out = file;
        }

        if (sqlite3_prepare_v2(db,
                               "SELECT body FROM records WHERE time_ms >= ?1 AND time_ms < ?2 "
                               "AND (?3 IS NULL OR event = ?3) ORDER BY seq",
                               -1, &st, NULL) != SQLITE_OK) {
                fprintf(stderr, "brokerctl: %s: not an audit database: %s\n", a->database,
                        sqlite3_errmsg(db));
                sqlite3_close(db);
                return EXIT_OTHER;
        }
        sqlite3_bind_int64(st, 1, since);
        sqlite3_bind_int64(st, 2, until);
        if (a->event)
                sqlite3_bind_text(st, 3, a->event, -1, SQLITE_STATIC);

        if (csv) {
                for (const char *const *c = csv_columns; *c; c++)
                        fprintf(out, "%s%s", c == csv_columns ? "" : ",", *c);
                fputs("\r\n", out);
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *body = (const char *) sqlite3_column_text(st, 0);
                if (jsonl) {
                        fputs(body, out);
                        fputc('\n', out);
                        continue;
                }
                _cleanup_(json_decrefp) json_t *rec = json_loads(body, 0, NULL);
                if (!rec) {
                        fprintf(stderr, "brokerctl: a stored record is not valid JSON; run "
                                        "'brokerctl audit verify'\n");
                        ret = EXIT_OTHER;
                        break;
                }
                if (csv)
                        csv_row(out, rec);
                else {
                        const char *ev = json_string_value(json_object_get(rec, "event"));
                        if (!ev || (strcmp(ev, "grant") != 0 && strcmp(ev, "deny") != 0))
                                continue; /* OCSF Authentication holds decisions only */
                        _cleanup_(json_decrefp) json_t *o = ocsf_event(rec);
                        if (!o || json_dumpf(o, out, JSON_COMPACT) < 0) {
                                ret = EXIT_OTHER;
                                break;
                        }
                        fputc('\n', out);
                }
        }
        if (ret == EXIT_OK && rc != SQLITE_DONE) {
                fprintf(stderr, "brokerctl: reading %s failed: %s\n", a->database,
                        sqlite3_errmsg(db));
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
