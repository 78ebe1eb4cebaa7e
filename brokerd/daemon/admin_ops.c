/* Admin socket ops: status, reload, keys, rotate, revoke (and ping). Only root and the
 * broker's own uid get this far (checked at accept). */
#include "daemon/server-private.h"
#include "daemon/version.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"

static void reply_json(Conn *c, const Request *req, json_t *fields)
{
        _cleanup_(json_decrefp) json_t *f = fields;
        json_t *resp = response_new_ok(req->id);

        if (!f || !resp || json_object_update(resp, f) < 0) {
                json_decref(resp);
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL, "out of memory", req->id));
                return;
        }
        conn_reply(c, resp);
}

static void handle_status(Server *s, Conn *c, const Request *req)
{
        IssuanceStats is;
        TransportStats ts;

        issuance_stats(s->issuance, &is);
        transport_stats(s->transport, &ts);
        reply_json(c, req,
                   json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                             " s:{s:s, s:I, s:s, s:O}}",
                             "version", BROKERD_VERSION, "pid", (int) getpid(), "started_at",
                             (json_int_t) s->started_at, "connections", (json_int_t) ts.connections,
                             "admin_connections", (json_int_t) ts.admin_connections, "grants",
                             (json_int_t) is.grants, "denials", (json_int_t) is.denials,
                             "rate_limited", (json_int_t) is.rate_limited, "refused_connections",
                             (json_int_t) ts.refused_connections, "audit", "state",
                             grantlog_store_healthy(s->log) ? "ok" : "failing", "last_seq",
                             (json_int_t) grantlog_store_last_seq(s->log), "key_id",
                             s->audit_key->kid, "public_key",
                             json_object_get(s->audit_key->jwk, "x")));
}

static void handle_reload(Server *s, Conn *c, const Request *req)
{
        _cleanup_free_ char *errors = NULL;
        int r = server_reload(s, &errors);

        if (r < 0) {
                conn_reply(c, response_new_error(r == -ENOMEM ? BROKER_ERR_INTERNAL
                                                              : BROKER_ERR_BAD_REQUEST,
                                                 errors ? errors : "reload failed", req->id));
                return;
        }
        conn_reply(c, response_new_ok(req->id));
}

static void handle_keys(Server *s, Conn *c, const Request *req)
{
        reply_json(c, req, json_pack("{s:o}", "keys", keyservice_list(s->keys)));
}

static void handle_rotate(Server *s, Conn *c, const Request *req)
{
        json_t *rotated = NULL;
        int r = keyservice_rotate(s->keys, req->alg ? alg_from_string(req->alg) : -1, &rotated);

        if (r == -ENOENT) {
                conn_reply(c, response_new_error(BROKER_ERR_NOT_FOUND,
                                                 "no active key of this algorithm", req->id));
                return;
        }
        if (r < 0) {
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL,
                                                 "rotation failed; see the broker's log", req->id));
                return;
        }
        /* "kid": the first series' new key (EdDSA unless only another was asked for). */
        reply_json(c, req,
                   json_pack("{s:O, s:o}", "kid",
                             json_object_get(json_array_get(rotated, 0), "kid"), "rotated",
                             rotated));
}

static void handle_revoke(Server *s, Conn *c, const Request *req)
{
        char repl[KID_LEN + 1];
        int r = keyservice_revoke(s->keys, req->kid, repl);

        if (r == -ENOENT) {
                conn_reply(
                    c, response_new_error(BROKER_ERR_NOT_FOUND, "no key with this kid", req->id));
                return;
        }
        if (r == -EALREADY) {
                conn_reply(c,
                           response_new_error(BROKER_ERR_BAD_REQUEST,
                                              "this key is already revoked or removed", req->id));
                return;
        }
        if (r < 0) {
                conn_reply(c,
                           response_new_error(BROKER_ERR_INTERNAL,
                                              "revocation failed; see the broker's log", req->id));
                return;
        }
        reply_json(
            c, req,
            json_pack("{s:s, s:s*}", "kid", req->kid, "replacement_kid", repl[0] ? repl : NULL));
}

void admin_handle(Conn *c, const Request *req, void *userdata)
{
        Server *s = userdata;

        switch (req->op) {
        case OP_PING:
                conn_reply(c, response_new_ok(req->id));
                break;
        case OP_STATUS:
                handle_status(s, c, req);
                break;
        case OP_RELOAD:
                handle_reload(s, c, req);
                break;
        case OP_KEYS:
                handle_keys(s, c, req);
                break;
        case OP_ROTATE:
                handle_rotate(s, c, req);
                break;
        case OP_REVOKE:
                handle_revoke(s, c, req);
                break;
        default: /* request_parse() only lets admin ops through */
                conn_reply(c, response_new_error(BROKER_ERR_BAD_REQUEST, "unknown op", req->id));
        }
}
