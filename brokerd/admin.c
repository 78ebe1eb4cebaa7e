/* Admin socket ops: status, reload, keys, rotate, revoke (and ping). Only root and the
 * broker's own uid get this far (checked at accept). */
#include "handlers.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "timeutil.h"

#define BROKERD_VERSION "0.1.0"

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

static void handle_status(Conn *c, const Request *req)
{
        Server *s = c->server;

        reply_json(c, req,
                   json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:{s:s, s:I}}",
                             "version", BROKERD_VERSION, "pid", (int) getpid(), "started_at",
                             (json_int_t) s->started_at, "connections", (json_int_t) s->n_conns,
                             "admin_connections", (json_int_t) s->n_admin_conns, "grants",
                             (json_int_t) s->grants, "denials", (json_int_t) s->denials,
                             "rate_limited", (json_int_t) s->rate_limited, "refused_connections",
                             (json_int_t) s->refused_connections, "audit", "state",
                             audit_healthy(s->audit) ? "ok" : "failing", "last_seq",
                             (json_int_t) audit_last_seq(s->audit)));
}

static void handle_reload(Conn *c, const Request *req)
{
        _cleanup_free_ char *errors = NULL;
        int r = server_reload(c->server, &errors);

        if (r < 0) {
                conn_reply(c, response_new_error(r == -ENOMEM ? BROKER_ERR_INTERNAL
                                                              : BROKER_ERR_BAD_REQUEST,
                                                 errors ? errors : "reload failed", req->id));
                return;
        }
        conn_reply(c, response_new_ok(req->id));
}

static void handle_keys(Conn *c, const Request *req)
{
        reply_json(c, req, json_pack("{s:o}", "keys", keystore_list(c->server->keys)));
}

static void handle_rotate(Conn *c, const Request *req)
{
        Server *s = c->server;
        _cleanup_free_ char *kid = NULL, *retired = NULL;
        int r;

        r = keystore_rotate(s->keys, ALG_EDDSA, now_unix_sec(), server_key_retention(s), &kid,
                            &retired);
        if (r < 0) {
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL,
                                                 "rotation failed; see the broker's log", req->id));
                return;
        }
        log_notice("Rotated EdDSA key: %s is active, %s retired", kid, strna(retired));
        server_audit_event(
            s, "key_rotated",
            json_pack("{s:s, s:s, s:s?}", "alg", "EdDSA", "kid", kid, "retired_kid", retired));
        reply_json(c, req, json_pack("{s:s}", "kid", kid));
}

static void handle_revoke(Conn *c, const Request *req)
{
        Server *s = c->server;
        _cleanup_free_ char *replacement = NULL;
        int r;

        r = keystore_revoke(s->keys, req->kid, now_unix_sec(), &replacement);
        if (r == -ENOENT) {
                conn_reply(
                    c, response_new_error(BROKER_ERR_NOT_FOUND, "no key with this kid", req->id));
                return;
        }
        if (r == -EALREADY) {
                conn_reply(c, response_new_error(BROKER_ERR_BAD_REQUEST,
                                                 "this key is already revoked", req->id));
                return;
        }
        if (r < 0) {
                conn_reply(c,
                           response_new_error(BROKER_ERR_INTERNAL,
                                              "revocation failed; see the broker's log", req->id));
                return;
        }
        log_notice("Revoked key %s%s%s", req->kid, replacement ? "; new active key " : "",
                   replacement ? replacement : "");
        server_audit_event(
            s, "key_revoked",
            json_pack("{s:s, s:s?}", "kid", req->kid, "replacement_kid", replacement));
        reply_json(c, req,
                   json_pack("{s:s, s:s?}", "kid", req->kid, "replacement_kid", replacement));
}

void admin_handle(Conn *c, const Request *req)
{
        switch (req->op) {
        case OP_PING:
                conn_reply(c, response_new_ok(req->id));
                break;
        case OP_STATUS:
                handle_status(c, req);
                break;
        case OP_RELOAD:
                handle_reload(c, req);
                break;
        case OP_KEYS:
                handle_keys(c, req);
                break;
        case OP_ROTATE:
                handle_rotate(c, req);
                break;
        case OP_REVOKE:
                handle_revoke(c, req);
                break;
        default: /* request_parse() only lets admin ops through */
                conn_reply(c, response_new_error(BROKER_ERR_BAD_REQUEST, "unknown op", req->id));
        }
}
