/* Admin socket ops: status, reload, keys, rotate, revoke (and ping). Only root and the
 * broker's own uid get this far (checked at accept). */
#include "daemon/handlers.h"
#include "daemon/keyschedule.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "timeutil.h"
#include "daemon/version.h"

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
        const SigningKey *ak = audit_signing_key(s->audit);

        reply_json(c, req,
                   json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                             " s:{s:s, s:I, s:s, s:O}}",
                             "version", BROKERD_VERSION, "pid", (int) getpid(), "started_at",
                             (json_int_t) s->started_at, "connections", (json_int_t) s->n_conns,
                             "admin_connections", (json_int_t) s->n_admin_conns, "grants",
                             (json_int_t) s->grants, "denials", (json_int_t) s->denials,
                             "rate_limited", (json_int_t) s->rate_limited, "refused_connections",
                             (json_int_t) s->refused_connections, "audit", "state",
                             audit_healthy(s->audit) ? "ok" : "failing", "last_seq",
                             (json_int_t) audit_last_seq(s->audit), "key_id", ak->kid, "public_key",
                             json_object_get(ak->jwk, "x")));
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

/* Every series now, or only `alg`'s. The new active key is the next key if one is published
 * already; otherwise it is made and signs at once (the operator asked for now). */
static void handle_rotate(Conn *c, const Request *req)
{
        Server *s = c->server;
        _cleanup_(json_decrefp) json_t *rotated = json_array();
        KeyEvents ev = {};
        KeyPolicy p;
        int64_t now = now_unix_sec();
        int r = 0, n = 0;

        key_policy_from_config(s->config, &p);
        for (int a = 0; a < _ALG_MAX && r >= 0; a++) {
                if ((req->alg && a != alg_from_string(req->alg)) || !keystore_active(s->keys, a))
                        continue;
                size_t first = ev.n;
                r = keystore_rotate(s->keys, &p, a, now, &ev);
                for (size_t i = first; r >= 0 && i < ev.n; i++)
                        if (strcmp(ev.e[i].event, "key_rotated") == 0)
                                json_array_append_new(rotated, json_pack("{s:s, s:s, s:s}", "alg",
                                                                         alg_to_string(a), "kid",
                                                                         ev.e[i].kid, "retired_kid",
                                                                         ev.e[i].other_kid));
                n++;
        }
        key_schedule_changed(s, &ev);
        if (r < 0) {
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL,
                                                 "rotation failed; see the broker's log", req->id));
                return;
        }
        if (n == 0) {
                conn_reply(c, response_new_error(BROKER_ERR_NOT_FOUND,
                                                 "no active key of this algorithm", req->id));
                return;
        }
        /* "kid": the first series' new key (EdDSA unless only another was asked for). */
        json_t *first = json_array_get(rotated, 0);
        reply_json(
            c, req,
            json_pack("{s:O, s:O}", "kid", json_object_get(first, "kid"), "rotated", rotated));
}

static void handle_revoke(Conn *c, const Request *req)
{
        Server *s = c->server;
        KeyEvents ev = {};
        KeyPolicy p;
        int r;

        key_policy_from_config(s->config, &p);
        r = keystore_revoke(s->keys, &p, req->kid, now_unix_sec(), &ev);
        key_schedule_changed(s, &ev);
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
        const char *repl = ev.n > 0 ? ev.e[ev.n - 1].other_kid : "";
        reply_json(
            c, req,
            json_pack("{s:s, s:s*}", "kid", req->kid, "replacement_kid", repl[0] ? repl : NULL));
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
