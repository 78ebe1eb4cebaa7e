/* Workload socket ops: ping, jwks, whoami, token. A token request is handed to the issuance
 * service; the answer comes back through its callback. */
#include "daemon/server-private.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "policy/policy.h"

/* AWS's credentials, named as the SDKs' credential_process output names them. */
static json_t *aws_token_response(const IssueResult *r, json_t *id)
{
        json_t *resp = response_new_ok(id);

        if (resp &&
            (json_object_set_new(resp, "aws",
                                 json_pack("{s:s, s:s, s:s, s:s}", "AccessKeyId",
                                           r->aws_access_key_id, "SecretAccessKey",
                                           r->aws_secret_access_key, "SessionToken",
                                           r->access_token, "Expiration", r->aws_expiration)) < 0 ||
             json_object_set_new(resp, "expires_at", json_integer(r->expires_at)) < 0)) {
                json_decref(resp);
                return NULL;
        }
        return resp;
}

/* RFC 6749 §5.1's fields, with expires_at instead of expires_in (the caller may read it
 * later). */
static json_t *upstream_token_response(const IssueResult *r, json_t *id)
{
        json_t *resp;

        if (r->aws_access_key_id)
                return aws_token_response(r, id);
        resp = response_new_ok(id);
        if (resp &&
            (json_object_set_new(resp, "access_token", json_string(r->access_token)) < 0 ||
             json_object_set_new(resp, "token_type", json_string(r->token_type)) < 0 ||
             json_object_set_new(resp, "expires_at", json_integer(r->expires_at)) < 0 ||
             (r->scope && json_object_set_new(resp, "scope", json_string(r->scope)) < 0) ||
             (r->issued_token_type &&
              json_object_set_new(resp, "issued_token_type", json_string(r->issued_token_type)) <
                  0))) {
                json_decref(resp);
                return NULL;
        }
        return resp;
}

static json_t *token_response(const IssueResult *r, json_t *id)
{
        json_t *resp;

        switch (r->status) {
        case ISSUE_GRANTED:
                if (r->access_token)
                        return upstream_token_response(r, id);
                resp = response_new_ok(id);
                if (resp &&
                    (json_object_set_new(resp, "token", json_string(r->token)) < 0 ||
                     json_object_set_new(resp, "expires_at", json_integer(r->expires_at)) < 0 ||
                     json_object_set_new(resp, "kid", json_string(r->kid)) < 0 ||
                     json_object_set_new(resp, "jti", json_string(r->jti)) < 0)) {
                        json_decref(resp);
                        return NULL;
                }
                return resp;
        case ISSUE_DENIED:
                resp = response_new_error(BROKER_ERR_DENIED, r->message, id);
                break;
        case ISSUE_UNAVAILABLE:
                resp = response_new_error(BROKER_ERR_UNAVAILABLE, r->message, id);
                break;
        case ISSUE_INTERNAL:
        default:
                return response_new_error(BROKER_ERR_INTERNAL, r->message, id);
        }
        if (resp && r->upstream_error && response_error_set_upstream(resp, r->upstream_error) < 0) {
                json_decref(resp);
                return NULL;
        }
        return resp;
}

typedef struct Pending {
        Conn *conn;
        json_t *id;
} Pending;

static void token_done(const IssueResult *r, void *userdata)
{
        Pending *p = userdata;

        conn_reply_async(p->conn, token_response(r, p->id));
        json_decref(p->id);
        free(p);
}

static void handle_token(Server *s, Conn *c, const Request *req)
{
        TokenRequest tr = {.upstream = req->upstream,
                           .audience = req->audience,
                           .scopes = req->scopes,
                           .n_scopes = req->n_scopes,
                           .has_ttl = req->has_ttl,
                           .ttl = req->ttl,
                           .owner = req->root};
        Pending *p = malloc(sizeof(Pending));
        int r;

        if (!p) {
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL, "out of memory", req->id));
                return;
        }
        *p = (Pending){.conn = c, .id = json_incref(req->id)};
        r = issuance_token(s->issuance, conn_caller(c), &tr, token_done, p);
        if (r >= 0) {
                /* The callback runs from the mailbox, on this thread, after this returns. */
                conn_begin_async(c);
                return;
        }
        json_decref(p->id);
        free(p);
        if (r == -EAGAIN)
                conn_reply(c, response_new_error(BROKER_ERR_RATE_LIMITED,
                                                 "too many token requests from this caller; "
                                                 "slow down and retry",
                                                 req->id));
        else if (r == -ESHUTDOWN)
                conn_reply(c, response_new_error(BROKER_ERR_UNAVAILABLE,
                                                 "the broker is stopping; retry later", req->id));
        else
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL, "out of memory", req->id));
}

static void handle_whoami(Server *s, Conn *c, const Request *req)
{
        _cleanup_(json_decrefp) json_t *who = NULL;
        Caller *caller = conn_caller(c);
        GrantlogPeer peer;
        const Rule *rule;
        json_t *resp;

        if (caller_check(caller) < 0) {
                conn_reply(
                    c, response_new_error(BROKER_ERR_DENIED, caller_unconfirmed_message, req->id));
                return;
        }
        identity_peer(&caller->id, &peer);
        who = grantlog_peer_new(&peer, true);
        resp = response_new_ok(req->id);
        if (!who || !resp || json_object_update(resp, who) < 0) {
                json_decref(resp);
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL, "out of memory", req->id));
                return;
        }
        /* Only the caller's own deciding rule: never anything about other rules. */
        rule = policy_find_rule(s->config, &caller->id);
        json_object_set_new(resp, "rule", rule ? json_string(rule->name) : json_null());
        conn_reply(c, resp);
}

static void handle_jwks(Server *s, Conn *c, const Request *req)
{
        _cleanup_(json_decrefp) json_t *jwks = keyservice_jwks(s->keys);
        json_t *resp = response_new_ok(req->id);

        if (!jwks || !resp || json_object_update(resp, jwks) < 0) {
                json_decref(resp);
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL, "out of memory", req->id));
                return;
        }
        conn_reply(c, resp);
}

void workload_handle(Conn *c, const Request *req, void *userdata)
{
        Server *s = userdata;

        switch (req->op) {
        case OP_PING:
                conn_reply(c, response_new_ok(req->id));
                break;
        case OP_TOKEN:
                handle_token(s, c, req);
                break;
        case OP_WHOAMI:
                handle_whoami(s, c, req);
                break;
        case OP_JWKS:
                handle_jwks(s, c, req);
                break;
        default: /* request_parse() only lets workload ops through */
                conn_reply(c, response_new_error(BROKER_ERR_BAD_REQUEST, "unknown op", req->id));
        }
}
