/* Workload socket ops: ping, jwks, whoami, token. */
#include <sodium.h>

#include "handlers.h"
#include "jose.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "policy.h"
#include "timeutil.h"

static const char identity_unconfirmed_msg[] =
    "caller identity could not be confirmed: the connecting process has exited, or runs in "
    "a PID namespace the broker cannot see";

/* A token request between its decision and its audit commit. */
typedef struct TokenJob {
        Conn *conn;
        json_t *id;
        bool granted;
        MintedToken minted;
        char kid[KID_LEN + 1];
        char message[512];
} TokenJob;

static void token_job_free(TokenJob *j)
{
        minted_token_done(&j->minted); /* wipes the token */
        json_decref(j->id);
        free(j);
}

/* No token leaves before its grant record is durable; if the record could not be written,
 * the caller learns the broker is unavailable and the token is wiped unseen. */
static void token_committed(int result, void *userdata)
{
        TokenJob *j = userdata;
        Conn *c = j->conn;
        Server *s = c->server;
        json_t *resp;

        if (result < 0)
                resp = response_new_error(BROKER_ERR_UNAVAILABLE,
                                          "the decision could not be recorded in the audit log, "
                                          "so no token was issued; retry later",
                                          j->id);
        else if (j->granted) {
                s->grants++;
                resp = response_new_ok(j->id);
                if (resp &&
                    (json_object_set_new(resp, "token", json_string(j->minted.token)) < 0 ||
                     json_object_set_new(resp, "expires_at", json_integer(j->minted.exp)) < 0 ||
                     json_object_set_new(resp, "kid", json_string(j->kid)) < 0 ||
                     json_object_set_new(resp, "jti", json_string(j->minted.jti)) < 0)) {
                        json_decref(resp);
                        resp = NULL;
                }
        } else {
                s->denials++;
                resp = response_new_error(BROKER_ERR_DENIED, j->message, j->id);
        }
        token_job_free(j);
        conn_reply_async(c, resp);
}

static json_t *scopes_array(const Request *req)
{
        json_t *a = json_array();

        for (size_t i = 0; a && i < req->n_scopes; i++)
                if (json_array_append_new(a, json_string(req->scopes[i])) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

/* The audit record of a decision; NULL on allocation failure. */
static json_t *decision_record(Conn *c, const Request *req, const Decision *d, const TokenJob *j,
                               const SigningKey *k, int64_t now_ms)
{
        _cleanup_(json_decrefp) json_t *rec =
            audit_record_new(j->granted ? "grant" : "deny", now_ms);
        int r = 0;

        if (!rec)
                return NULL;
        r |= json_object_set(rec, "peer", c->peer);
        r |= json_object_set_new(rec, "audience", json_string(req->audience));
        r |= json_object_set_new(rec, "scopes", scopes_array(req));
        if (d->rule)
                r |= json_object_set_new(rec, "rule", json_string(d->rule->name));
        if (!j->granted)
                r |= json_object_set_new(rec, "reason",
                                         json_string(deny_reason_to_string(d->reason)));
        else {
                r |= json_object_set_new(rec, "subject", json_string(d->subject));
                r |= json_object_set_new(rec, "alg", json_string(alg_to_string(k->alg)));
                r |= json_object_set_new(rec, "kid", json_string(k->kid));
                r |= json_object_set_new(rec, "jti", json_string(j->minted.jti));
                r |= json_object_set_new(rec, "expires_at", json_integer(j->minted.exp));
                r |= json_object_set_new(rec, "token_sha256", json_string(j->minted.token_sha256));
        }
        return r == 0 ? TAKE_PTR(rec) : NULL;
}

static void handle_token(Conn *c, const Request *req)
{
        Server *s = c->server;
        const Config *cfg = s->config;
        int64_t now_ms = now_unix_ms();
        Decision d = {};
        SigningKey *k = NULL;
        TokenJob *j;
        json_t *rec;
        int r;

        /* Checked first: a flood must not reach the policy, the signer or the audit log. A
         * user can make cgroups at will below their own systemd, so there the whole subtree
         * is one identity. */
        if (!ratelimit_take(s->rate, c->cred.uid, c->id.user_delegated ? NULL : c->id.cgroup,
                            cfg->limits.rate, cfg->limits.burst, now_mono_usec())) {
                s->rate_limited++;
                conn_reply(c,
                           response_new_error(BROKER_ERR_RATE_LIMITED,
                                              "too many token requests from this caller; slow down "
                                              "and retry",
                                              req->id));
                return;
        }

        j = calloc(1, sizeof(TokenJob));
        if (!j) {
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL, "out of memory", req->id));
                return;
        }
        j->conn = c;
        j->id = json_incref(req->id);

        /* The connecting process must still be alive: if it has exited, whoever now holds the
         * connection is not the process we identified. */
        if (c->id_error < 0 || identity_check_alive(&c->id) < 0) {
                d.reason = DENY_IDENTITY;
                snprintf(d.message, sizeof(d.message), "%s", identity_unconfirmed_msg);
        } else {
                r = policy_decide(cfg, &c->id, req->audience, req->scopes, req->n_scopes,
                                  req->has_ttl, req->ttl, &d);
                if (r < 0)
                        goto internal;
        }
        j->granted = d.reason == DENY_NONE;
        snprintf(j->message, sizeof(j->message), "%s", d.message);

        if (j->granted) {
                k = keystore_active(s->keys, d.rule->alg);
                if (!k) {
                        log_error("No active %s key", alg_to_string(d.rule->alg));
                        goto internal;
                }
                r = jwt_mint(k, cfg->issuer, d.subject, req->audience, req->scopes, req->n_scopes,
                             now_ms / 1000, d.ttl, &j->minted);
                if (r < 0) {
                        log_error_errno(r, "Cannot sign token: %m");
                        goto internal;
                }
                memcpy(j->kid, k->kid, sizeof(j->kid));
        }

        rec = decision_record(c, req, &d, j, k, now_ms);
        decision_done(&d);
        if (!rec || audit_submit(s->audit, rec, now_ms, token_committed, j) < 0) {
                token_job_free(j);
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL, "out of memory", req->id));
                return;
        }
        conn_begin_async(c);
        return;

internal:
        decision_done(&d);
        token_job_free(j);
        conn_reply(c, response_new_error(BROKER_ERR_INTERNAL,
                                         "internal error; see the broker's log", req->id));
}

static void handle_whoami(Conn *c, const Request *req)
{
        _cleanup_(json_decrefp) json_t *who = NULL;
        json_t *resp;
        const Rule *rule;

        if (c->id_error < 0 || identity_check_alive(&c->id) < 0) {
                conn_reply(
                    c, response_new_error(BROKER_ERR_DENIED, identity_unconfirmed_msg, req->id));
                return;
        }
        who = identity_to_json(&c->id, true);
        resp = response_new_ok(req->id);
        if (!who || !resp || json_object_update(resp, who) < 0) {
                json_decref(resp);
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL, "out of memory", req->id));
                return;
        }
        /* Only the caller's own deciding rule: never anything about other rules. */
        rule = policy_find_rule(c->server->config, &c->id);
        json_object_set_new(resp, "rule", rule ? json_string(rule->name) : json_null());
        conn_reply(c, resp);
}

static void handle_jwks(Conn *c, const Request *req)
{
        _cleanup_(json_decrefp) json_t *jwks = keystore_jwks(c->server->keys, now_unix_sec());
        json_t *resp = response_new_ok(req->id);

        if (!jwks || !resp || json_object_update(resp, jwks) < 0) {
                json_decref(resp);
                conn_reply(c, response_new_error(BROKER_ERR_INTERNAL, "out of memory", req->id));
                return;
        }
        conn_reply(c, resp);
}

void workload_handle(Conn *c, const Request *req)
{
        switch (req->op) {
        case OP_PING:
                conn_reply(c, response_new_ok(req->id));
                break;
        case OP_TOKEN:
                handle_token(c, req);
                break;
        case OP_WHOAMI:
                handle_whoami(c, req);
                break;
        case OP_JWKS:
                handle_jwks(c, req);
                break;
        default: /* request_parse() only lets workload ops through */
                conn_reply(c, response_new_error(BROKER_ERR_BAD_REQUEST, "unknown op", req->id));
        }
}
