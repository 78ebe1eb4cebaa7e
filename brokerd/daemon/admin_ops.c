/* Admin socket ops: status, reload, keys, rotate, revoke, the upstreams' secrets and
 * `upstream test` (and ping). Only root and the broker's own uid get this far (checked at
 * accept). */
#include "daemon/server-private.h"
#include "version.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "timeutil.h"

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

/* Who asked: the admin connection's peer credentials, as the kernel gave them at accept. */
static GrantlogOrigin admin_origin(Conn *c)
{
        const Caller *caller = conn_caller(c);

        return (GrantlogOrigin){.uid = caller->cred.uid, .pid = caller->cred.pid};
}

static void handle_status(Server *s, Conn *c, const Request *req)
{
        IssuanceStats is;
        TransportStats ts;

        issuance_stats(s->issuance, &is);
        transport_stats(s->transport, &ts);
        reply_json(c, req,
                   json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                             " s:{s:s, s:I, s:s, s:O}, s:o, s:o}",
                             "version", BROKERD_VERSION, "pid", (int) getpid(), "started_at",
                             (json_int_t) s->started_at, "connections", (json_int_t) ts.connections,
                             "admin_connections", (json_int_t) ts.admin_connections, "grants",
                             (json_int_t) is.grants, "denials", (json_int_t) is.denials,
                             "rate_limited", (json_int_t) is.rate_limited, "refused_connections",
                             (json_int_t) ts.refused_connections, "audit", "state",
                             grantlog_store_healthy(s->log) ? "ok" : "failing", "last_seq",
                             (json_int_t) grantlog_store_last_seq(s->log), "key_id",
                             s->audit_key->kid, "public_key",
                             json_object_get(s->audit_key->jwk, "x"), "upstreams",
                             federation_status(s->federation), "publish",
                             keyservice_publish_status(s->keys)));
}

static void handle_reload(Server *s, Conn *c, const Request *req)
{
        _cleanup_free_ char *errors = NULL;
        GrantlogOrigin origin = admin_origin(c);
        int r = server_reload(s, &origin, &errors);

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
        GrantlogOrigin origin = admin_origin(c);
        json_t *rotated = NULL;
        int r = keyservice_rotate(s->keys, req->alg ? alg_from_string(req->alg) : -1, &origin,
                                  &rotated);

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
        /* "kid": the first series' new key (the default algorithm's unless only another was
         * asked for). */
        reply_json(c, req,
                   json_pack("{s:O, s:o}", "kid",
                             json_object_get(json_array_get(rotated, 0), "kid"), "rotated",
                             rotated));
}

static void handle_revoke(Server *s, Conn *c, const Request *req)
{
        GrantlogOrigin origin = admin_origin(c);
        char repl[KID_LEN + 1];
        int r = keyservice_revoke(s->keys, req->kid, &origin, repl);

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
        /* Upstream tokens obtained with the broker's JWTs are dropped too: a key is revoked when
         * it can no longer be trusted, and neither can what it bought. */
        federation_drop(s->federation, NULL);
        reply_json(
            c, req,
            json_pack("{s:s, s:s*}", "kid", req->kid, "replacement_kid", repl[0] ? repl : NULL));
}

static void handle_secret_set(Server *s, Conn *c, const Request *req)
{
        int r = secretstore_set(s->secrets, req->name, req->value, strlen(req->value),
                                now_unix_sec());

        /* The value goes no further: wiped in the parsed request (the frame it came in is
         * the transport's). */
        explicit_bzero((char *) req->value, strlen(req->value));
        if (r < 0) {
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL,
                                                 "the secret could not be stored; see the "
                                                 "broker's log",
                                                 req->id));
                return;
        }
        GrantlogOrigin origin = admin_origin(c);
        server_record_by(s, "secret_set", &origin,
                         json_pack("{s:s, s:b}", "name", req->name, "created", r > 0));
        federation_drop(s->federation, req->name);
        log_info("Secret %s %s", req->name, r > 0 ? "created" : "replaced");
        reply_json(c, req, json_pack("{s:s, s:b}", "name", req->name, "created", r > 0));
}

static void handle_secret_list(Server *s, Conn *c, const Request *req)
{
        json_t *list = secretstore_list(s->secrets);

        if (!list) {
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL,
                                                 "the secrets could not be listed; see the "
                                                 "broker's log",
                                                 req->id));
                return;
        }
        reply_json(c, req, json_pack("{s:o}", "secrets", list));
}

static void handle_secret_delete(Server *s, Conn *c, const Request *req)
{
        int r = secretstore_delete(s->secrets, req->name);

        if (r == -ENOENT) {
                conn_reply(c, response_new_error(BROKER_ERR_NOT_FOUND, "no secret with this name",
                                                 req->id));
                return;
        }
        if (r < 0) {
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL,
                                                 "the secret could not be deleted; see the "
                                                 "broker's log",
                                                 req->id));
                return;
        }
        GrantlogOrigin origin = admin_origin(c);
        server_record_by(s, "secret_deleted", &origin, json_pack("{s:s}", "name", req->name));
        federation_drop(s->federation, req->name);
        log_info("Secret %s deleted", req->name);
        reply_json(c, req, json_pack("{s:s}", "name", req->name));
}

typedef struct TestPending {
        Server *server;
        Conn *conn;
        json_t *id;
        char *upstream;
        GrantlogOrigin origin; /* who asked; the connection may be gone by the answer */
} TestPending;

static const char *fed_status_name(FedStatus st)
{
        switch (st) {
        case FED_OK:
                return "ok";
        case FED_DENIED:
                return "denied";
        case FED_UNAVAILABLE:
                return "unavailable";
        default:
                return "internal";
        }
}

/* The exchange's outcome, never its token: recorded, and answered like a token request would
 * be (ok, denied, unavailable). */
static void upstream_tested(const FedResult *r, void *userdata)
{
        TestPending *p = userdata;
        json_t *resp;

        server_record_by(p->server, "upstream_tested", &p->origin,
                         json_pack("{s:s, s:s, s:I, s:s*, s:s*}", "upstream", p->upstream, "result",
                                   fed_status_name(r->status), "http_status",
                                   (json_int_t) r->http_status, "request_id",
                                   r->request_id[0] ? r->request_id : NULL, "upstream_error",
                                   r->upstream_error));
        if (r->status == FED_OK) {
                resp = response_new_ok(p->id);
                if (resp)
                        json_object_update_new(
                            resp, json_pack("{s:s, s:s, s:I, s:I, s:s*, s:s*, s:s*}", "upstream",
                                            p->upstream, "token_type", r->token->token_type,
                                            "expires_at",
                                            (json_int_t) (r->token->expires_ms / 1000),
                                            "http_status", (json_int_t) r->http_status, "scope",
                                            r->token->scope ?: r->scope, "issued_token_type",
                                            r->token->issued_token_type, "request_id",
                                            r->request_id));
        } else {
                resp = response_new_error(r->status == FED_DENIED        ? BROKER_ERR_DENIED
                                          : r->status == FED_UNAVAILABLE ? BROKER_ERR_UNAVAILABLE
                                                                         : BROKER_ERR_INTERNAL,
                                          r->message, p->id);
                if (resp && r->upstream_error &&
                    response_error_set_upstream(resp, r->upstream_error) < 0) {
                        json_decref(resp);
                        resp = NULL;
                }
        }
        conn_reply_async(p->conn, resp);
        json_decref(p->id);
        free(p->upstream);
        free(p);
}

static void handle_upstream_test(Server *s, Conn *c, const Request *req)
{
        const UpstreamConfig *u = config_find_upstream(s->config, req->upstream);
        TestPending *p;
        int r;

        if (!u) {
                conn_reply(c, response_new_error(BROKER_ERR_NOT_FOUND,
                                                 "no upstream with this name in the configuration",
                                                 req->id));
                return;
        }
        p = malloc(sizeof(TestPending));
        if (!p || !(p->upstream = strdup(req->upstream))) {
                free(p);
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL, "out of memory", req->id));
                return;
        }
        p->server = s;
        p->conn = c;
        p->origin = admin_origin(c);
        p->id = json_incref(req->id);
        conn_begin_async(c);
        r = federation_test(s->federation, s->config, u, upstream_tested, p);
        if (r < 0) {
                json_decref(p->id);
                free(p->upstream);
                free(p);
                conn_reply_async(c, response_new_error(BROKER_ERR_INTERNAL,
                                                       "the test could not start; see the "
                                                       "broker's log",
                                                       req->id));
        }
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
        case OP_SECRET_SET:
                handle_secret_set(s, c, req);
                break;
        case OP_SECRET_LIST:
                handle_secret_list(s, c, req);
                break;
        case OP_SECRET_DELETE:
                handle_secret_delete(s, c, req);
                break;
        case OP_UPSTREAM_TEST:
                handle_upstream_test(s, c, req);
                break;
        default: /* request_parse() only lets admin ops through */
                conn_reply(c, response_new_error(BROKER_ERR_BAD_REQUEST, "unknown op", req->id));
        }
}
