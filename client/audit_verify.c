/* brokerctl audit verify: checks the stored records are whole and in sequence. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "audit-tool.h"
#include "errors.h"
#include "json-util.h"
#include "macro.h"

int audit_verify(const AuditToolArgs *a)
{
        sqlite3_stmt *st = NULL;
        sqlite3 *db = audit_db_open(a->database);
        uint64_t expect = 0, n = 0;
        int rc, ret = EXIT_OK;

        if (!db)
                return EXIT_USAGE;
        if (sqlite3_prepare_v2(db, "SELECT seq, event, body FROM records ORDER BY seq", -1, &st,
                               NULL) != SQLITE_OK) {
                fprintf(stderr, "brokerctl: %s: not an audit database: %s\n", a->database,
                        sqlite3_errmsg(db));
                sqlite3_close(db);
                return EXIT_OTHER;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                uint64_t seq = (uint64_t) sqlite3_column_int64(st, 0);
                const char *event = (const char *) sqlite3_column_text(st, 1);
                const char *body = (const char *) sqlite3_column_text(st, 2);
                _cleanup_(json_decrefp) json_t *rec = body ? json_loads(body, 0, NULL) : NULL;

                if (expect == 0)
                        expect = seq;
                if (seq != expect) {
                        fprintf(stderr, "brokerctl: seq %llu: missing (found seq %llu next)\n",
                                (unsigned long long) expect, (unsigned long long) seq);
                        ret = EXIT_OTHER;
                        break;
                }
                if (!rec || !json_is_object(rec)) {
                        fprintf(stderr, "brokerctl: seq %llu: record is not a JSON object\n",
                                (unsigned long long) seq);
                        ret = EXIT_OTHER;
                        break;
                }
                json_t *s = json_object_get(rec, "seq");
                if (!json_is_integer(s) || (uint64_t) json_integer_value(s) != seq || !event ||
                    strcmp(json_string_value(json_object_get(rec, "event")) ?: "", event) != 0) {
                        fprintf(stderr,
                                "brokerctl: seq %llu: record does not match its row (seq or "
                                "event edited)\n",
                                (unsigned long long) seq);
                        ret = EXIT_OTHER;
                        break;
                }
                expect++;
                n++;
        }
        if (ret == EXIT_OK && rc != SQLITE_DONE) {
                fprintf(stderr, "brokerctl: reading %s failed: %s\n", a->database,
                        sqlite3_errmsg(db));
                ret = EXIT_OTHER;
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
        if (ret == EXIT_OK)
                printf("%s: %llu records, sequence intact\n", a->database, (unsigned long long) n);
        return ret;
}
