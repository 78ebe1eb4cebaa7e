#include "issuance/issuance.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "grantlog/record.h"
#include "federation/oauth.h"
#include "issuance/denials.h"
#include "runtime/ratelimit.h"
#include "keys/jwt.h"
#include "log.h"
#include "macro.h"
#include "messageid.h"
#include "policy/policy.h"
#include "timeutil.h"

/* How often the loop looks for summaries that are due: they are written within this long of
 * their interval's end (or of free space coming back). */
#define SUMMARY_TICK_USEC (1000 * 1000ULL)

struct Issuance {
        IssuanceDeps deps;
        Config *config;
        RateLimiter *rate;
        DenyLedger *denials;
        sd_event_source *tick; /* on while the ledger or a request may hold counts */
        sd_event_source *exit; /* the loop's exit: the last summaries */
        IssuanceStats stats;   /* event loop only */
};

/* One token request, from its rate-limit check to its answer. Everything it reads it holds a
 * reference to (the config, the caller, the parsed request), so a reload, a key rotation or a
 * closed connection meanwhile changes nothing for it. */
typedef struct TokenJob {
        WorkerJob work;   /* on a worker: decide, mint, record */
        MailboxMsg reply; /* on the loop: answer */
        Issuance *svc;
        Config *config;
        Caller *caller;
        TokenRequest req;
        int64_t time_ms, mono_ms;
        issue_done_t done;
        void *userdata;

        IssueStatus status;
        bool counted; /* a denial counted toward a summary, without a record of its own */
        char message[512];
        SigningKey *key;
        MintedToken minted;
        /* an upstream's token */
        char *subject;        /* rendered by the deciding rule */
        const char *rule;     /* its name, in config */
        FedToken *fed_token;  /* granted */
        char *fed_scope;      /* what was asked of the upstream */
        char upstream_error[OAUTH_ERROR_MAX + 1];
        const char *scopes[]; /* req.scopes: the request's array is the caller's */
} TokenJob;

static void job_free(TokenJob *j)
{
        minted_token_done(&j->minted); /* wipes the token */
        fed_token_unref(j->fed_token);
        free(j->subject);
        free(j->fed_scope);
        if (j->key)
                signing_key_unref(j->key);
        json_decref(j->req.owner);
        caller_unref(j->caller);
        config_unref(j->config);
        free(j);
}

/* On the loop. */
static void job_answer(MailboxMsg *m)
{
        TokenJob *j = (TokenJob *) ((char *) m - offsetof(TokenJob, reply));
        Issuance *s = j->svc;
        IssueResult r = {.status = j->status, .message = j->message};

        s->stats.in_flight--;
        if (j->status == ISSUE_GRANTED && j->fed_token) {
                const FedToken *t = j->fed_token;

                s->stats.grants++;
                r.access_token = t->access_token;
                r.token_type = t->token_type;
                r.expires_at = t->expires_ms / 1000;
                /* RFC 6749 §5.1: no scope in the answer means the scope asked for */
                r.scope = t->scope ?: j->fed_scope;
                r.issued_token_type = t->issued_token_type;
                r.aws_access_key_id = t->aws_access_key_id;
                r.aws_secret_access_key = t->aws_secret_access_key;
                r.aws_expiration = t->aws_expiration;
        } else if (j->status == ISSUE_GRANTED) {
                s->stats.grants++;
                r.token = j->minted.token;
                r.expires_at = j->minted.exp;
                r.kid = j->key->kid;
                r.jti = j->minted.jti;
        } else if (j->status == ISSUE_DENIED) {
                s->stats.denials++;
                s->stats.denials_counted += j->counted;
        }
        if (j->upstream_error[0])
                r.upstream_error = j->upstream_error;
        j->done(&r, j->userdata);
        job_free(j);
}

static void job_post(TokenJob *j, IssueStatus status, const char *message)
{
        j->status = status;
        if (message)
                snprintf(j->message, sizeof(j->message), "%s", message);
        mailbox_post(j->svc->deps.mailbox, &j->reply);
}

/* On the grant log's writer thread, once the record is durable (or not). */
static void job_committed(int result, void *userdata)
{
        TokenJob *j = userdata;

        if (result < 0) {
                /* No token leaves without its record: the caller learns the broker is
                 * unavailable, and the token is wiped unseen. */
                job_post(j, ISSUE_UNAVAILABLE,
                         "the decision could not be recorded in the audit log, so no token was "
                         "issued; retry later");
                return;
        }
        mailbox_post(j->svc->deps.mailbox, &j->reply);
}

/* The journal fields of a request's log line: who asked, under which rule. */
static LogFields job_fields(const TokenJob *j, const char *message_id)
{
        const Caller *c = j->caller;

        return (LogFields){.message_id = message_id,
                           .has_peer = true,
                           .peer_uid = c->cred.uid,
                           .peer_pid = c->cred.pid,
                           .peer_unit = c->identified && c->error == 0 ? c->id.unit : NULL,
                           .rule = j->rule};
}

/* Once per interval per call site: every request may fail the same way. */
static void job_internal_ratelimited(TokenJob *j, int r, const char *what, LogRatelimit *rl)
{
        LogFields f = job_fields(j, NULL);

        log_struct_ratelimited(rl, LOG_ERR, r, &f, "%s: %m", what);
        job_post(j, ISSUE_INTERNAL, "internal error; see the broker's log");
}
#define job_internal(j, r, what)                                                                   \
        ({                                                                                         \
                static LogRatelimit _rl = LOG_RATELIMIT_INIT(LOG_RATELIMIT_INTERVAL);              \
                job_internal_ratelimited((j), (r), (what), &_rl);                                  \
        })

static void sink_expect(Issuance *s, int delta)
{
        if (s->deps.sink.expect)
                s->deps.sink.expect(s->deps.sink.ctx, delta);
}

/* Whether free space on the grant log's filesystem is below audit.free_space_floor. Unknown
 * (the directory cannot be looked at) counts as not: the write itself will then tell. */
static bool below_floor(const Config *c)
{
        const char *slash = strrchr(c->audit_database, '/');
        char dir[PATH_MAX];
        struct statvfs st;
        size_t n;

        if (!slash)
                return false;
        n = slash == c->audit_database ? 1 : (size_t) (slash - c->audit_database);
        if (n >= sizeof(dir))
                return false;
        memcpy(dir, c->audit_database, n);
        dir[n] = 0;
        if (statvfs(dir, &st) < 0)
                return false;
        return (uint64_t) st.f_bavail * st.f_frsize <
               config_audit_floor_bytes(&c->audit_free_space_floor,
                                        (uint64_t) st.f_blocks * st.f_frsize);
}

/* Whether a denial gets a record of its own, or is only counted toward its uid's summary: the
 * uid's budget for the interval, then the free-space floor (only grants are written below it). */
static bool deny_gets_record(TokenJob *j, DenyReason reason)
{
        DenyLedger *l = j->svc->denials;
        uid_t uid = j->caller->cred.uid;

        switch (deny_ledger_take(l, uid, reason, j->mono_ms, j->time_ms,
                                 j->config->audit_deny_budget, j->config->audit_deny_interval_ms)) {
        case DENY_COUNTED:
                return false;
        case DENY_RECORD:
                return !below_floor(j->config) ||
                       !deny_ledger_count_below_floor(l, uid, reason, j->time_ms);
        default:
                return true;
        }
}

/* Hands the decision's record to the grant log; the answer waits for its commit
 * (job_committed). `announced`: the record was expected (a worker is making it), so queueing it
 * settles that. False when the job was answered without a record. */
static bool job_submit(TokenJob *j, const GrantlogDecision *rec, bool announced)
{
        json_t *record = grantlog_record_decision(rec, j->time_ms);
        int r;

        if (!record) {
                job_internal(j, -ENOMEM, "Cannot build the grant record");
                return false;
        }
        r = j->svc->deps.sink.submit(j->svc->deps.sink.ctx, record, j->time_ms, announced,
                                     job_committed, j);
        if (r >= 0)
                return true;
        if (r == -ESHUTDOWN)
                job_post(j, ISSUE_UNAVAILABLE, "the broker is stopping; retry later");
        else
                job_internal(j, r, "Cannot queue the grant record");
        return false;
}

/* A denial (or, for an upstream that gave no usable answer, `status` unavailable): recorded,
 * or only counted toward its uid's deny_summary. A denial gives nothing away, so a counted one
 * is answered now, not after that summary's commit; what a kill -9 can lose meanwhile is a
 * count (README §Audit). */
static bool job_deny(TokenJob *j, IssueStatus status, DenyReason reason, const char *message,
                     GrantlogDecision *rec, bool announced)
{
        j->status = status;
        snprintf(j->message, sizeof(j->message), "%s", message);
        rec->granted = false;
        rec->reason = deny_reason_to_string(reason);
        if (!deny_gets_record(j, reason)) {
                j->counted = true;
                job_post(j, status, NULL);
                return false;
        }
        return job_submit(j, rec, announced);
}

/* Decides, mints, builds the record and hands it to the grant log; false when it answered the
 * job without a record. The job may be answered and freed (on the loop) as soon as it is handed
 * over. */
static bool job_work(TokenJob *j)
{
        const TokenRequest *req = &j->req;
        GrantlogDecision rec = {.peer = j->caller->peer,
                                .audience = req->audience,
                                .scopes = req->scopes,
                                .n_scopes = req->n_scopes};
        Decision d = {};
        bool handed;
        int r;

        /* The connecting process must still be alive: if it has exited, whoever now holds the
         * connection is not the process we identified. */
        if (caller_check(j->caller) < 0) {
                d.reason = DENY_IDENTITY;
                snprintf(d.message, sizeof(d.message), "%s", caller_unconfirmed_message);
        } else {
                r = policy_decide(j->config, &j->caller->id, req->audience, req->scopes,
                                  req->n_scopes, req->has_ttl, req->ttl, &d);
                if (r < 0) {
                        job_internal(j, r, "Cannot decide a token request");
                        return false;
                }
        }
        rec.rule = d.rule ? d.rule->name : NULL;
        if (d.reason != DENY_NONE) {
                handed = job_deny(j, ISSUE_DENIED, d.reason, d.message, &rec, true);
                decision_done(&d);
                return handed;
        }
        j->key = j->svc->deps.keys.active(j->svc->deps.keys.ctx, d.rule->alg);
        if (!j->key) {
                static LogRatelimit rl = LOG_RATELIMIT_INIT(LOG_RATELIMIT_INTERVAL);
                LogFields f = job_fields(j, MESSAGE_ID_NO_SIGNING_KEY);

                f.rule = d.rule->name;
                log_struct_ratelimited(&rl, LOG_ERR, 0, &f, "No active %s key",
                                       alg_to_string(d.rule->alg));
                decision_done(&d);
                job_post(j, ISSUE_INTERNAL, "internal error; see the broker's log");
                return false;
        }
        /* nbf backdated by keys.clock_skew: a relying party one second behind us would
         * otherwise refuse a token minted this second. */
        r = jwt_mint(j->key, j->config->issuer, d.subject, req->audience, req->scopes,
                            req->n_scopes, j->time_ms / 1000, d.ttl, j->config->keys.clock_skew,
                            &j->minted);
        if (r < 0) {
                decision_done(&d);
                job_internal(j, r, "Cannot sign token");
                return false;
        }
        j->status = ISSUE_GRANTED;
        rec.granted = true;
        rec.subject = d.subject;
        rec.alg = alg_to_string(j->key->alg);
        rec.kid = j->key->kid;
        rec.jti = j->minted.jti;
        rec.expires_at = j->minted.exp;
        rec.token_sha256 = j->minted.token_sha256;
        handed = job_submit(j, &rec, true);
        decision_done(&d);
        return handed;
}

/* Builds and hands over the record of the federation's answer; false when the job was answered
 * without one. The job may be gone once this returns. */
static bool job_fed_record(TokenJob *j, const FedResult *r)
{
        const UpstreamConfig *u = config_find_upstream(j->config, j->req.upstream);
        _cleanup_(json_decrefp) json_t *upstream = NULL;
        GrantlogDecision rec = {.peer = j->caller->peer,
                                .scopes = j->req.scopes,
                                .n_scopes = j->req.n_scopes,
                                .rule = j->rule,
                                .subject = j->subject};
        bool announced = !r->async;

        if (r->scope && !(j->fed_scope = strdup(r->scope))) {
                job_internal(j, -ENOMEM, "Cannot record an upstream's answer");
                return false;
        }
        upstream = grantlog_upstream_new(&(GrantlogUpstream){
            .name = u->name,
            .kind = upstream_kind_to_string(u->kind),
            .cache = r->status == FED_OK ? (r->cache_hit ? "hit" : "miss") : NULL,
            .http_status = r->http_status,
            .request_id = r->request_id,
            .expires_at = r->token ? r->token->expires_ms / 1000 : 0,
            .scope = r->scope,
            .error = r->upstream_error});
        if (!upstream) {
                job_internal(j, -ENOMEM, "Cannot build the grant record");
                return false;
        }
        rec.upstream = upstream;
        if (r->upstream_error)
                snprintf(j->upstream_error, sizeof(j->upstream_error), "%s", r->upstream_error);
        switch (r->status) {
        case FED_OK:
                j->status = ISSUE_GRANTED;
                j->fed_token = fed_token_ref(r->token);
                rec.granted = true;
                rec.expires_at = r->token->expires_ms / 1000;
                rec.token_sha256 = r->token->token_sha256;
                return job_submit(j, &rec, announced);
        case FED_DENIED:
                return job_deny(j, ISSUE_DENIED, DENY_UPSTREAM_REFUSED, r->message, &rec,
                                announced);
        case FED_UNAVAILABLE:
                return job_deny(j, ISSUE_UNAVAILABLE, DENY_UPSTREAM_UNAVAILABLE, r->message, &rec,
                                announced);
        default: {
                static LogRatelimit rl = LOG_RATELIMIT_INIT(LOG_RATELIMIT_INTERVAL);
                LogFields f = job_fields(j, MESSAGE_ID_UPSTREAM_FAILURE);

                f.upstream = u->name;
                log_struct_ratelimited(&rl, LOG_ERR, 0, &f, "Upstream %s: %s", u->name,
                                       r->message ? r->message : "internal error");
                job_post(j, ISSUE_INTERNAL, "internal error; see the broker's log");
                return false;
        }
        }
}

/* The federation's answer for an upstream job: within federation_get() on the worker (a cache
 * hit, a fast failure), where the record was announced and its announcement is settled here,
 * or on the loop after an exchange (r->async), when it no longer was. */
static void job_fed_done(const FedResult *r, void *userdata)
{
        TokenJob *j = userdata;
        Issuance *s = j->svc; /* the job may be gone once its record is handed over */

        if (!job_fed_record(j, r) && !r->async)
                sink_expect(s, -1);
}

/* An upstream's token: the policy decides as for any token, the federation does the rest. */
/* Like job_work(): true when the record's announcement is settled (handed over, or settled in
 * job_fed_done()). */
static bool job_work_upstream(TokenJob *j)
{
        const TokenRequest *req = &j->req;
        _cleanup_(json_decrefp) json_t *upstream = NULL;
        GrantlogDecision rec = {.peer = j->caller->peer,
                                .scopes = req->scopes,
                                .n_scopes = req->n_scopes};
        Decision d = {};
        bool handed;
        int r;

        if (caller_check(j->caller) < 0) {
                d.reason = DENY_IDENTITY;
                snprintf(d.message, sizeof(d.message), "%s", caller_unconfirmed_message);
        } else {
                r = policy_decide_upstream(j->config, &j->caller->id, req->upstream, req->scopes,
                                           req->n_scopes, &d);
                if (r < 0) {
                        job_internal(j, r, "Cannot decide a token request");
                        return false;
                }
        }
        if (d.reason != DENY_NONE) {
                upstream = grantlog_upstream_new(&(GrantlogUpstream){.name = req->upstream});
                if (!upstream) {
                        decision_done(&d);
                        job_internal(j, -ENOMEM, "Cannot build the grant record");
                        return false;
                }
                rec.upstream = upstream;
                rec.rule = d.rule ? d.rule->name : NULL;
                handed = job_deny(j, ISSUE_DENIED, d.reason, d.message, &rec, true);
                decision_done(&d);
                return handed;
        }
        if (!j->svc->deps.federation) {
                decision_done(&d);
                job_post(j, ISSUE_UNAVAILABLE, "upstream tokens are not available here");
                return false;
        }
        j->rule = d.rule->name;
        j->subject = TAKE_PTR(d.subject);
        r = federation_get(j->svc->deps.federation,
                           &(FedRequest){.config = j->config,
                                         .upstream = config_find_upstream(j->config, req->upstream),
                                         .rule = j->rule,
                                         .subject = j->subject,
                                         .scopes = req->scopes,
                                         .n_scopes = req->n_scopes},
                           job_fed_done, j);
        if (r < 0) {
                job_internal(j, r, "Cannot ask an upstream");
                return false;
        }
        /* 0: answered already, and job_fed_done() settled the announcement. 1: later, on the
         * loop (an exchange): no record to wait for meanwhile. */
        return r == 0;
}

/* On a worker. */
static void job_run(WorkerJob *w)
{
        TokenJob *j = (TokenJob *) ((char *) w - offsetof(TokenJob, work));
        Issuance *s = j->svc;

        /* A record that will never come, or not soon (an exchange): a commit need not wait for
         * it any longer. (One handed over settled its announcement as it was queued.) */
        if (!(j->req.upstream ? job_work_upstream(j) : job_work(j)))
                sink_expect(s, -1);
}

int issuance_token(Issuance *s, Caller *caller, const TokenRequest *req, issue_done_t done,
                   void *userdata)
{
        const Config *cfg = s->config;
        TokenJob *j;
        int r;

        /* Checked first: a flood must not reach a worker, the policy, the signer or the grant
         * log. A user can make cgroups at will below their own systemd, so there the whole
         * subtree is one identity. */
        if (!ratelimit_take(s->rate, caller->cred.uid,
                            caller->error == 0 && !caller->id.user_delegated ? caller->id.cgroup
                                                                             : NULL,
                            cfg->limits.rate, cfg->limits.burst, now_mono_usec())) {
                s->stats.rate_limited++;
                return -EAGAIN;
        }
        j = calloc(1, sizeof(TokenJob) + req->n_scopes * sizeof(char *));
        if (!j)
                return -ENOMEM;
        /* the flexible array is not assigned: its pointers are copied right after */
        *j = (TokenJob){
            .work.run = job_run,
            .reply.run = job_answer,
            .svc = s,
            .config = config_ref(s->config),
            .caller = caller_ref(caller),
            .req = *req,
            .time_ms = now_unix_ms(),
            .mono_ms = (int64_t) (now_mono_usec() / 1000),
            .done = done,
            .userdata = userdata,
        };
        json_incref(req->owner);
        memcpy(j->scopes, req->scopes, req->n_scopes * sizeof(char *));
        j->req.scopes = j->scopes;
        /* The grant log's next commit may wait for this record while a worker makes it. */
        sink_expect(s, +1);
        r = workers_submit(s->deps.workers, &j->work);
        if (r < 0) {
                sink_expect(s, -1);
                job_free(j);
                return r;
        }
        s->stats.in_flight++;
        /* A denial may be counted: summaries are looked for until nothing is held. */
        if (s->tick && sd_event_source_get_enabled(s->tick, NULL) == SD_EVENT_OFF) {
                (void) sd_event_source_set_time_relative(s->tick, SUMMARY_TICK_USEC);
                (void) sd_event_source_set_enabled(s->tick, SD_EVENT_ONESHOT);
        }
        return 0;
}

/* One summary on its way to the log; its counts go back to the ledger if it cannot be
 * written. */
typedef struct SummaryJob {
        DenyLedger *ledger;
        DenyTally tally;
} SummaryJob;

/* On the grant log's writer thread. A summary is what a flood of denials leaves: the journal
 * hears of it too, once per uid, reason and interval (the ledger's budget). */
static void summary_committed(int result, void *userdata)
{
        SummaryJob *sj = userdata;
        const DenyTally *t = &sj->tally;
        char first[TIME_RFC3339_MAX], last[TIME_RFC3339_MAX], who[32] = "uids beyond the table";

        if (result < 0)
                deny_ledger_restore(sj->ledger, t);
        else {
                time_format_rfc3339_ms(t->first_ms, first);
                time_format_rfc3339_ms(t->last_ms, last);
                if (t->uid_known)
                        snprintf(who, sizeof(who), "uid %u", (unsigned) t->uid);
                log_struct(LOG_NOTICE, 0,
                           &(LogFields){.message_id = MESSAGE_ID_DENY_SUMMARY,
                                        .has_peer = t->uid_known,
                                        .peer_uid = t->uid},
                           "Denied %s %llu more times (%s) from %s to %s; recorded as one "
                           "deny_summary",
                           who, (unsigned long long) t->count, deny_reason_to_string(t->reason),
                           first, last);
        }
        free(sj);
}

static void submit_summary(Issuance *s, const DenyTally *t, int64_t now_ms)
{
        const Config *c = s->config;
        SummaryJob *sj = malloc(sizeof(SummaryJob));
        json_t *rec = NULL;
        int r = -ENOMEM;

        if (sj) {
                *sj = (SummaryJob){.ledger = s->denials, .tally = *t};
                rec = grantlog_record_deny_summary(
                    &(GrantlogDenySummary){.uid_known = t->uid_known,
                                           .uid = t->uid,
                                           .reason = deny_reason_to_string(t->reason),
                                           .count = t->count,
                                           .below_floor = t->below_floor,
                                           .first_ms = t->first_ms,
                                           .last_ms = t->last_ms,
                                           .budget = c->audit_deny_budget,
                                           .interval_s = c->audit_deny_interval_ms / 1000},
                    now_ms);
        }
        /* Not announced: nobody waits for it, and a commit need not wait for it either. */
        if (rec)
                r = s->deps.sink.submit(s->deps.sink.ctx, rec, now_ms, false, summary_committed,
                                        sj);
        if (r >= 0)
                return;
        deny_ledger_restore(s->denials, t);
        free(sj);
        if (r != -ESHUTDOWN)
                log_error_errno(r, "Cannot queue a deny_summary record: %m");
}

void issuance_flush_denials(Issuance *s, bool close)
{
        _cleanup_free_ DenyTally *t = NULL;
        int64_t now_ms = now_unix_ms();
        int n;

        if (close)
                n = deny_ledger_close(s->denials, &t);
        else
                n = deny_ledger_collect(s->denials, (int64_t) (now_mono_usec() / 1000), false,
                                        below_floor(s->config), &t);
        if (n < 0) {
                log_oom();
                return;
        }
        for (int i = 0; i < n; i++)
                submit_summary(s, &t[i], now_ms);
}

static int on_tick(sd_event_source *src, uint64_t usec, void *userdata)
{
        Issuance *s = userdata;

        issuance_flush_denials(s, false);
        /* A request still in flight may yet be counted. */
        if (!deny_ledger_busy(s->denials) && s->stats.in_flight == 0)
                return sd_event_source_set_enabled(src, SD_EVENT_OFF);
        (void) sd_event_source_set_time_relative(src, SUMMARY_TICK_USEC);
        return sd_event_source_set_enabled(src, SD_EVENT_ONESHOT);
}

/* The loop is ending (brokerd stops): the counts go out now, ahead of the "stopped" record, and
 * the requests still on the workers get records of their own. */
static int on_loop_exit(sd_event_source *src, void *userdata)
{
        issuance_flush_denials(userdata, true);
        return 0;
}

int issuance_new(const IssuanceDeps *deps, Config *config, Issuance **ret)
{
        Issuance *s = calloc(1, sizeof(Issuance));
        int r;

        if (!s)
                return -ENOMEM;
        s->deps = *deps;
        s->config = config_ref(config);
        r = ratelimit_new(&s->rate);
        if (r >= 0)
                r = deny_ledger_new(&s->denials);
        if (r >= 0 && deps->event) {
                r = sd_event_add_time_relative(deps->event, &s->tick, CLOCK_MONOTONIC,
                                               SUMMARY_TICK_USEC, 100 * 1000, on_tick, s);
                if (r >= 0)
                        r = sd_event_source_set_enabled(s->tick, SD_EVENT_OFF);
                if (r >= 0)
                        r = sd_event_add_exit(deps->event, &s->exit, on_loop_exit, s);
        }
        if (r < 0) {
                issuance_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

void issuance_free(Issuance *s)
{
        if (!s)
                return;
        sd_event_source_disable_unref(s->tick);
        sd_event_source_disable_unref(s->exit);
        ratelimit_free(s->rate);
        deny_ledger_free(s->denials);
        config_unref(s->config);
        free(s);
}

void issuance_set_config(Issuance *s, Config *config)
{
        config_ref(config);
        config_unref(s->config);
        s->config = config;
}

void issuance_stats(const Issuance *s, IssuanceStats *ret)
{
        *ret = s->stats;
}
