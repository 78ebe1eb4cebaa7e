/* Workload socket ops: ping, jwks, whoami, token. */
#include <sodium.h>

#include "daemon/handlers.h"
#include "keys/jwt.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "policy/policy.h"
#include "timeutil.h"

static const char identity_unconfirmed_msg[] =
    "caller identity could not be confirmed: the connecting process has exited, or runs in "
    "a PID namespace the broker cannot see";

/* A token request between its decision and its audit commit. It owns copies of everything
 * the signer needs, so a reload or a key rotation meanwhile changes nothing for it. */
typedef struct TokenJob {
        Conn *conn;
        AuditStore *audit;
        json_t *id;
        bool granted;
        bool mint_failed;
        char message[512];
        json_t *record; /* until handed to the audit store */
        int64_t time_ms;

        /* for the signer */
        SigningKey *key;
        char *issuer, *subject, *audience;
        char **scopes;
        size_t n_scopes;
        uint64_t ttl;
        MintedToken minted;
} TokenJob;

static void token_job_free(TokenJob *j)
{
        minted_token_done(&j->minted); /* wipes the token */
        json_decref(j->id);
        json_decref(j->record);
        if (j->key)
                signing_key_unref(j->key);
        free(j->issuer);
        free(j->subject);
        free(j->audience);
        strv_free(j->scopes);
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

        if (j->mint_failed)
                resp = response_new_error(BROKER_ERR_INTERNAL,
                                          "internal error; see the broker's log", j->id);
        else if (result < 0)
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
                     json_object_set_new(resp, "kid", json_string(j->key->kid)) < 0 ||
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

/* Hands the record to the audit writer, whose completion answers the caller. */
static void token_record(TokenJob *j)
{
        json_t *rec = TAKE_PTR(j->record);

        if (audit_submit(j->audit, rec, j->time_ms, token_committed, j) < 0) {
                j->mint_failed = true; /* out of memory: answer "internal", record nothing */
                audit_complete(j->audit, -ENOMEM, token_committed, j);
        }
}

/* On a signing thread: mint, complete the grant record, queue it. */
static void token_sign(void *userdata)
{
        TokenJob *j = userdata;
        int r;

        r = jwt_mint(j->key, j->issuer, j->subject, j->audience, (const char *const *) j->scopes,
                     j->n_scopes, j->time_ms / 1000, j->ttl, &j->minted);
        if (r >= 0 &&
            (json_object_set_new(j->record, "jti", json_string(j->minted.jti)) < 0 ||
             json_object_set_new(j->record, "expires_at", json_integer(j->minted.exp)) < 0 ||
             json_object_set_new(j->record, "token_sha256", json_string(j->minted.token_sha256)) <
                 0))
                r = -ENOMEM;
        if (r < 0) {
                log_error_errno(r, "Cannot sign token: %m");
                j->mint_failed = true;
                audit_complete(j->audit, r, token_committed, j);
                return;
        }
        token_record(j);
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

/* The audit record of a decision; a grant's jti, expires_at and token_sha256 are added by
 * the signer. NULL on allocation failure. */
static json_t *decision_record(Conn *c, const Request *req, const Decision *d, bool granted,
                               const SigningKey *k, int64_t now_ms)
{
        _cleanup_(json_decrefp) json_t *rec = audit_record_new(granted ? "grant" : "deny", now_ms);
        int r = 0;

        if (!rec)
                return NULL;
        r |= json_object_set(rec, "peer", c->peer);
        r |= json_object_set_new(rec, "audience", json_string(req->audience));
        r |= json_object_set_new(rec, "scopes", scopes_array(req));
        if (d->rule)
                r |= json_object_set_new(rec, "rule", json_string(d->rule->name));
        if (!granted)
                r |= json_object_set_new(rec, "reason",
                                         json_string(deny_reason_to_string(d->reason)));
        else {
                r |= json_object_set_new(rec, "subject", json_string(d->subject));
                r |= json_object_set_new(rec, "alg", json_string(alg_to_string(k->alg)));
                r |= json_object_set_new(rec, "kid", json_string(k->kid));
        }
        return r == 0 ? TAKE_PTR(rec) : NULL;
}

/* Copies what the signer needs out of the request and the decision. */
static int token_job_prepare_grant(TokenJob *j, const Config *cfg, const Request *req, Decision *d,
                                   SigningKey *k)
{
        j->key = signing_key_ref(k);
        j->issuer = strdup(cfg->issuer);
        j->subject = TAKE_PTR(d->subject);
        j->audience = strdup(req->audience);
        j->scopes = calloc(req->n_scopes + 1, sizeof(char *));
        j->ttl = d->ttl;
        if (!j->issuer || !j->audience || !j->scopes)
                return -ENOMEM;
        for (size_t i = 0; i < req->n_scopes; i++)
                if (!(j->scopes[j->n_scopes++] = strdup(req->scopes[i])))
                        return -ENOMEM;
        return 0;
}

static void handle_token(Conn *c, const Request *req)
{
        Server *s = c->server;
        const Config *cfg = s->config;
        int64_t now_ms = now_unix_ms();
        Decision d = {};
        SigningKey *k = NULL;
        TokenJob *j;
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
        j->audit = s->audit;
        j->id = json_incref(req->id);
        j->time_ms = now_ms;

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
        }
        j->record = decision_record(c, req, &d, j->granted, k, now_ms);
        if (!j->record || (j->granted && token_job_prepare_grant(j, cfg, req, &d, k) < 0))
                goto internal;
        decision_done(&d);

        /* A denial goes straight to the audit writer. EdDSA and ES256 sign in tens of
         * microseconds, less than handing the job to another thread costs; RS256 takes about a
         * millisecond and goes to a signing thread, so it never stalls the event loop. Either
         * way the answer waits for the commit. */
        conn_begin_async(c);
        if (!j->granted)
                token_record(j);
        else if (k->alg != ALG_RS256)
                token_sign(j);
        else if (signpool_submit(s->signers, token_sign, j) < 0) {
                j->mint_failed = true;
                audit_complete(s->audit, -ENOMEM, token_committed, j);
        }
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
