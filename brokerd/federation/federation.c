#include "federation/federation.h"

#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "federation/aws.h"
#include "federation/breaker.h"
#include "federation/google.h"
#include "federation/http.h"
#include "federation/oauth.h"
#include "keys/jwt.h"
#include "log.h"
#include "macro.h"
#include "messageid.h"
#include "timeutil.h"

/* What Google's IAM Credentials API needs of the STS token that calls it. */
#define GCP_CLOUD_PLATFORM "https://www.googleapis.com/auth/cloud-platform"

/* Backoff between attempts: full jitter, uniform in [0, min(cap, base * 2^attempt)]. */
#define BACKOFF_BASE_MS 200
#define BACKOFF_CAP_MS  5000
/* An attempt is only worth starting with this much of the deadline left. */
#define ATTEMPT_MIN_MS 100
/* Failures of one upstream are logged once per this long, with a count of the others. */
#define LOG_INTERVAL_MS (60 * 1000)
/* A token whose answer gave no lifetime: handed to the callers that waited for it with this
 * lifetime, never cached (README §Federation). */
#define UNKNOWN_LIFETIME_S 300
/* The default refresh-ahead margin: 20 % of the lifetime, at least 5 minutes (as AWS SDKs and
 * the kubelet do), but at most half the lifetime. */
#define REFRESH_SHARE_PERCENT 20
#define REFRESH_MIN_MS        (5 * 60 * 1000)
/* A client assertion (RFC 7523 §3) only has to outlive one attempt. */
#define ASSERTION_TTL_S 60

/* One upstream of the running configuration: its cache, breaker and counters. Guarded by the
 * federation's lock; referenced by the flights running for it, so a reload may drop it from
 * the table while they finish. */
typedef struct UpstreamState {
        unsigned refs;
        char *name;
        char *secret; /* client_secret's name, for federation_drop() */
        TokenCache *cache;
        Breaker breaker;
        uint64_t hits, misses;
        char last_error[384];
        LogRatelimit failures_logged; /* under the lock */
} UpstreamState;

typedef struct Waiter {
        fed_done_t done;
        void *userdata;
        struct Waiter *next;
} Waiter;

/* One exchange for one cache key (single flight), from its first attempt to its last. Made by
 * whoever missed (any thread, under the lock), run on the loop. */
struct Flight {
        MailboxMsg start;
        Federation *fed;
        UpstreamState *state;
        Config *config;
        const UpstreamConfig *up;
        CacheSlot *slot; /* NULL: uncached (a test), or detached (the cache was dropped) */
        char *subject, *scope;
        Waiter *waiters; /* under the lock */
        bool probe;      /* the breaker's half-open probe */
        bool test;       /* one attempt, breaker untouched */
        bool started;
        unsigned attempt;
        /* gcp_sts with impersonation: step 1 trades the STS token (secure memory) for the
         * service account's */
        unsigned step;
        char *sts_token;
        int64_t deadline_ms; /* monotonic */
        sd_event_source *retry;
        /* the attempt on the wire: wiped when it ends */
        SecureText form, auth;
        struct curl_slist *headers;
        bool in_http;
        /* the last attempt's outcome */
        char request_id[33];
        long http_status;
        char message[384];
        char upstream_error[OAUTH_ERROR_MAX + 1];
        struct Flight *prev, *next; /* every flight: federation_stop() ends them */
};

struct Federation {
        FederationDeps deps;
        pthread_mutex_t lock;
        Config *config;
        UpstreamState **states; /* parallel to config->upstreams */
        size_t n_states;
        Flight *flights; /* under the lock */
        HttpClient *http;
        bool stopping;
};

static int64_t mono_ms(void)
{
        return (int64_t) (now_mono_usec() / 1000);
}

static void state_unref(UpstreamState *s)
{
        if (!s || --s->refs > 0)
                return;
        token_cache_free(s->cache);
        free(s->name);
        free(s->secret);
        free(s);
}

static void flight_detach(CacheSlot *slot)
{
        slot->flight->slot = NULL;
        slot->flight = NULL;
}

/* Under the lock. */
static void states_drop(Federation *f)
{
        for (size_t i = 0; i < f->n_states; i++) {
                token_cache_clear(f->states[i]->cache, flight_detach);
                state_unref(f->states[i]);
        }
        free(f->states);
        f->states = NULL;
        f->n_states = 0;
}

static int states_build(const Config *c, UpstreamState ***ret)
{
        UpstreamState **v = calloc(c->n_upstreams + 1, sizeof(UpstreamState *));

        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_upstreams; i++) {
                const UpstreamConfig *u = &c->upstreams[i];
                UpstreamState *s = calloc(1, sizeof(UpstreamState));

                v[i] = s;
                if (!s || !(s->name = strdup(u->name)) ||
                    (u->client_secret && !(s->secret = strdup(u->client_secret))) ||
                    token_cache_new(u->cache_max_entries, &s->cache) < 0) {
                        for (size_t j = 0; j <= i; j++)
                                if (v[j])
                                        v[j]->refs = 1, state_unref(v[j]);
                        free(v);
                        return -ENOMEM;
                }
                s->refs = 1;
                s->failures_logged = (LogRatelimit) LOG_RATELIMIT_INIT(LOG_INTERVAL_MS / 1000);
        }
        *ret = v;
        return 0;
}

/* Under the lock. */
static UpstreamState *state_find(Federation *f, const char *name)
{
        for (size_t i = 0; i < f->n_states; i++)
                if (strcmp(f->states[i]->name, name) == 0)
                        return f->states[i];
        return NULL;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* The scope asked of the upstream: the caller's scopes, sorted (the cache key must not depend
 * on their order), or the upstream's default. NULL with *ret_none when there is none. */
static int effective_scope(const FedRequest *req, char **ret)
{
        _cleanup_free_ const char **v = NULL;
        size_t len = 0;
        char *s, *p;

        *ret = NULL;
        if (req->n_scopes == 0) {
                if (req->upstream->scope && !(*ret = strdup(req->upstream->scope)))
                        return -ENOMEM;
                return 0;
        }
        v = malloc(req->n_scopes * sizeof(char *));
        if (!v)
                return -ENOMEM;
        memcpy(v, req->scopes, req->n_scopes * sizeof(char *));
        qsort(v, req->n_scopes, sizeof(char *), cmp_str);
        for (size_t i = 0; i < req->n_scopes; i++)
                len += strlen(v[i]) + 1;
        s = p = malloc(len);
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < req->n_scopes; i++)
                p += sprintf(p, "%s%s", i ? " " : "", v[i]);
        *ret = s;
        return 0;
}

/* Length-prefixed parts: no subject or rule name can run into the next part. */
static char *cache_key(const char *upstream, const char *rule, const char *subject,
                       const char *scope)
{
        char *k = NULL;

        if (asprintf(&k, "%zu:%s%zu:%s%zu:%s%zu:%s", strlen(upstream), upstream, strlen(rule),
                     rule, strlen(subject), subject, scope ? strlen(scope) : 0, scope ?: "") < 0)
                return NULL;
        return k;
}

/* The margins of a token of this lifetime. */
static int64_t refresh_margin_ms(const UpstreamConfig *u, int64_t lifetime_ms)
{
        int64_t m = u->refresh_ahead_ms >= 0
                        ? u->refresh_ahead_ms
                        : MAX(lifetime_ms / 100 * REFRESH_SHARE_PERCENT, REFRESH_MIN_MS);
        return MIN(m, lifetime_ms / 2);
}

static int64_t min_remaining_ms(const UpstreamConfig *u, int64_t lifetime_ms)
{
        /* a token shorter than the setting is still worth handing out early in its life */
        return MIN(u->min_remaining_ms, lifetime_ms / 4);
}

static bool token_usable(const FedToken *t, const UpstreamConfig *u, int64_t now)
{
        return t && t->cacheable &&
               t->expires_ms - now >= min_remaining_ms(u, t->expires_ms - t->obtained_ms);
}

static bool token_due_for_refresh(const FedToken *t, const UpstreamConfig *u, int64_t now)
{
        return t->expires_ms - now < refresh_margin_ms(u, t->expires_ms - t->obtained_ms);
}

static void flight_start(MailboxMsg *m);

/* Under the lock. */
static Flight *flight_new(Federation *f, UpstreamState *st, const FedRequest *req,
                          const char *subject, const char *scope)
{
        Flight *fl = calloc(1, sizeof(Flight));

        if (!fl)
                return NULL;
        *fl = (Flight){.start.run = flight_start,
                       .fed = f,
                       .state = st,
                       .config = config_ref(req->config),
                       .up = req->upstream,
                       .subject = strdup(subject),
                       .scope = scope ? strdup(scope) : NULL,
                       .deadline_ms = mono_ms() + req->upstream->deadline_ms,
                       .next = f->flights};
        if (!fl->subject || (scope && !fl->scope)) {
                config_unref(fl->config);
                free(fl->subject);
                free(fl->scope);
                free(fl);
                return NULL;
        }
        st->refs++;
        if (f->flights)
                f->flights->prev = fl;
        f->flights = fl;
        return fl;
}

static int add_waiter(Flight *fl, fed_done_t done, void *userdata)
{
        Waiter *w = malloc(sizeof(Waiter));

        if (!w)
                return -ENOMEM;
        *w = (Waiter){.done = done, .userdata = userdata, .next = fl->waiters};
        fl->waiters = w;
        return 0;
}

int federation_get(Federation *f, const FedRequest *req, fed_done_t done, void *userdata)
{
        const UpstreamConfig *u = req->upstream;
        _cleanup_free_ char *scope = NULL, *key = NULL;
        FedToken *hit = NULL;
        Flight *fl = NULL, *refresh = NULL;
        UpstreamState *st;
        CacheSlot *slot;
        bool probe;
        int r;

        r = effective_scope(req, &scope);
        if (r < 0)
                return r;
        key = cache_key(u->name, req->rule, req->subject, scope);
        if (!key)
                return -ENOMEM;

        pthread_mutex_lock(&f->lock);
        st = state_find(f, u->name);
        if (!st || f->stopping) {
                pthread_mutex_unlock(&f->lock);
                done(&(FedResult){.status = FED_UNAVAILABLE,
                                  .scope = scope,
                                  .message = f->stopping ? "the broker is stopping; retry later"
                                                         : "the upstream was removed by a "
                                                           "reload; retry",
                                  .request_id = ""},
                     userdata);
                return 0;
        }
        int64_t now = now_unix_ms();
        slot = token_cache_get(st->cache, key);
        if (slot && token_usable(slot->token, u, now)) {
                st->hits++;
                hit = fed_token_ref(slot->token);
                /* Refresh ahead, in the background: the caller gets the token it has now. */
                if (!slot->flight && token_due_for_refresh(hit, u, now) &&
                    breaker_allow(&st->breaker, mono_ms(), &probe)) {
                        refresh = flight_new(f, st, req, req->subject, scope);
                        if (refresh) {
                                refresh->probe = probe;
                                refresh->slot = slot;
                                slot->flight = refresh;
                        } else if (probe)
                                breaker_probe_abandoned(&st->breaker);
                }
                pthread_mutex_unlock(&f->lock);
                if (refresh)
                        mailbox_post(f->deps.mailbox, &refresh->start);
                done(&(FedResult){.status = FED_OK,
                                  .cache_hit = true,
                                  .token = hit,
                                  .scope = scope,
                                  .http_status = hit->http_status,
                                  .request_id = hit->request_id},
                     userdata);
                fed_token_unref(hit);
                return 0;
        }
        st->misses++;
        if (slot && slot->flight) {
                /* Single flight: wait for the exchange already running for this key. */
                r = add_waiter(slot->flight, done, userdata);
                pthread_mutex_unlock(&f->lock);
                return r < 0 ? r : 1;
        }
        if (!breaker_allow(&st->breaker, mono_ms(), &probe)) {
                char msg[512];

                snprintf(msg, sizeof(msg),
                         "upstream \"%s\" is failing (%s); the broker stops asking it for a while "
                         "(circuit open); retry later",
                         u->name, st->last_error[0] ? st->last_error : "repeated failures");
                pthread_mutex_unlock(&f->lock);
                done(&(FedResult){.status = FED_UNAVAILABLE,
                                  .scope = scope,
                                  .message = msg,
                                  .request_id = ""},
                     userdata);
                return 0;
        }
        slot = slot ?: token_cache_put(st->cache, key);
        fl = slot ? flight_new(f, st, req, req->subject, scope) : NULL;
        if (!fl || add_waiter(fl, done, userdata) < 0) {
                if (fl) {
                        /* not started: unlink and free by hand */
                        f->flights = fl->next;
                        if (fl->next)
                                fl->next->prev = NULL;
                        st->refs--;
                        config_unref(fl->config);
                        free(fl->subject);
                        free(fl->scope);
                        free(fl);
                }
                if (probe)
                        breaker_probe_abandoned(&st->breaker);
                pthread_mutex_unlock(&f->lock);
                return -ENOMEM;
        }
        fl->probe = probe;
        fl->slot = slot;
        slot->flight = fl;
        pthread_mutex_unlock(&f->lock);
        mailbox_post(f->deps.mailbox, &fl->start);
        return 1;
}

/* The attempt's wire data goes: it holds the secret and the broker's JWTs. */
static void attempt_wipe(Flight *fl)
{
        secure_text_free(&fl->form);
        secure_text_free(&fl->auth);
        curl_slist_free_all(fl->headers);
        fl->headers = NULL;
}

static void flight_free(Flight *fl)
{
        Federation *f = fl->fed;

        attempt_wipe(fl);
        sd_event_source_disable_unref(fl->retry);
        pthread_mutex_lock(&f->lock);
        if (fl->prev)
                fl->prev->next = fl->next;
        else
                f->flights = fl->next;
        if (fl->next)
                fl->next->prev = fl->prev;
        state_unref(fl->state);
        pthread_mutex_unlock(&f->lock);
        config_unref(fl->config);
        if (fl->sts_token)
                sodium_free(fl->sts_token);
        free(fl->subject);
        free(fl->scope);
        free(fl);
}

/* The exchange is over: the cache learns the outcome, every waiter gets it, once. */
static void flight_finish(Flight *fl, FedStatus status, FedToken *token)
{
        Federation *f = fl->fed;
        Waiter *w;

        pthread_mutex_lock(&f->lock);
        if (fl->slot) {
                CacheSlot *slot = fl->slot;

                slot->flight = NULL;
                if (token && token->cacheable) {
                        fed_token_unref(slot->token);
                        slot->token = fed_token_ref(token);
                }
                /* A failed refresh keeps the token the slot has; a slot with none goes. */
                if (!slot->token)
                        token_cache_remove(fl->state->cache, slot);
                fl->slot = NULL;
        }
        if (fl->probe && status != FED_OK && status != FED_DENIED)
                breaker_probe_abandoned(&fl->state->breaker);
        w = fl->waiters;
        fl->waiters = NULL;
        pthread_mutex_unlock(&f->lock);

        FedResult r = {.status = status,
                       .async = true,
                       .token = token,
                       .scope = fl->scope,
                       .message = fl->message,
                       .upstream_error = fl->upstream_error[0] ? fl->upstream_error : NULL,
                       .http_status = fl->http_status,
                       .request_id = fl->request_id};
        while (w) {
                Waiter *next = w->next;
                w->done(&r, w->userdata);
                free(w);
                w = next;
        }
        fed_token_unref(token);
        flight_free(fl);
}

/* Logged once per LOG_INTERVAL_MS per upstream, with how many were not. */
static void note_failure(Flight *fl)
{
        Federation *f = fl->fed;
        UpstreamState *st = fl->state;
        LogFields lf = {.message_id = MESSAGE_ID_UPSTREAM_FAILURE, .upstream = fl->up->name};
        uint64_t unlogged = 0;
        bool log;

        pthread_mutex_lock(&f->lock);
        snprintf(st->last_error, sizeof(st->last_error), "%s", fl->message);
        log = log_ratelimit_pass(&st->failures_logged, now_mono_usec(), &unlogged);
        pthread_mutex_unlock(&f->lock);
        if (!log)
                return;
        lf.suppressed = unlogged;
        if (unlogged > 0)
                log_struct(LOG_WARNING, 0, &lf,
                           "Upstream %s: %s (request %s); %" PRIu64
                           " more failures in the last minute were not logged",
                           fl->up->name, fl->message, fl->request_id, unlogged);
        else
                log_struct(LOG_WARNING, 0, &lf, "Upstream %s: %s (request %s)", fl->up->name,
                           fl->message, fl->request_id);
}

static void breaker_update(Flight *fl, bool healthy)
{
        Federation *f = fl->fed;

        if (fl->test)
                return;
        pthread_mutex_lock(&f->lock);
        if (healthy)
                breaker_success(&fl->state->breaker);
        else
                breaker_failure(&fl->state->breaker, mono_ms(), fl->up->breaker_failures,
                                fl->up->breaker_open_for_ms);
        pthread_mutex_unlock(&f->lock);
}

static bool breaker_closed(Flight *fl)
{
        bool closed;

        pthread_mutex_lock(&fl->fed->lock);
        closed = fl->state->breaker.state == BREAKER_CLOSED;
        pthread_mutex_unlock(&fl->fed->lock);
        return closed;
}

static void flight_attempt(Flight *fl);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
        Flight *fl = userdata;

        fl->retry = sd_event_source_disable_unref(fl->retry);
        flight_attempt(fl);
        return 0;
}

/* A failure worth another attempt: after a backoff with full jitter, if the deadline leaves
 * room, the circuit is still closed and this is not a probe or a test. */
static void retry_or_fail(Flight *fl, int64_t retry_after_s)
{
        int64_t cap = MIN((int64_t) BACKOFF_BASE_MS << MIN(fl->attempt, 16u), BACKOFF_CAP_MS);
        int64_t delay = (int64_t) randombytes_uniform((uint32_t) cap + 1);
        int64_t now = mono_ms();

        if (retry_after_s >= 0)
                delay = MAX(delay, retry_after_s * 1000);
        if (fl->test || fl->probe || fl->fed->stopping || !breaker_closed(fl) ||
            now + delay + ATTEMPT_MIN_MS > fl->deadline_ms ||
            sd_event_add_time_relative(fl->fed->deps.event, &fl->retry, CLOCK_MONOTONIC,
                                       (uint64_t) delay * 1000, 1000, on_retry, fl) < 0) {
                flight_finish(fl, FED_UNAVAILABLE, NULL);
                return;
        }
}

_printf_(3, 4) static void set_message(Flight *fl, bool upstream_said, const char *fmt, ...)
{
        char what[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        snprintf(fl->message, sizeof(fl->message), "upstream \"%s\" %s%s", fl->up->name,
                 upstream_said ? "said: " : "", what);
}

static FedToken *token_from_answer(Flight *fl, OAuthAnswer *a)
{
        FedToken *t = calloc(1, sizeof(FedToken));
        unsigned char digest[crypto_hash_sha256_BYTES];
        int64_t now = now_unix_ms();

        if (!t)
                return NULL;
        atomic_init(&t->refs, 1);
        t->access_token = TAKE_PTR(a->access_token);
        t->access_token_len = a->access_token_len;
        t->token_type = strdup(a->token_type);
        t->scope = TAKE_PTR(a->scope);
        t->issued_token_type = TAKE_PTR(a->issued_token_type);
        if (a->aws_secret_access_key) {
                t->aws_secret_access_key = TAKE_PTR(a->aws_secret_access_key);
                t->aws_access_key_id = strdup(a->aws_access_key_id);
                t->aws_expiration = strdup(a->aws_expiration);
                if (!t->aws_access_key_id || !t->aws_expiration) {
                        fed_token_unref(t);
                        return NULL;
                }
        }
        t->obtained_ms = now;
        t->cacheable = a->expires_in >= 0;
        t->expires_ms = now + (a->expires_in >= 0 ? a->expires_in : UNKNOWN_LIFETIME_S) * 1000;
        t->http_status = fl->http_status;
        memcpy(t->request_id, fl->request_id, sizeof(t->request_id));
        crypto_hash_sha256(digest, (const unsigned char *) t->access_token, t->access_token_len);
        sodium_bin2hex(t->token_sha256, sizeof(t->token_sha256), digest, sizeof(digest));
        if (!t->token_type) {
                fed_token_unref(t);
                return NULL;
        }
        return t;
}

/* Each kind's answer, read into the one shape the outcome handling takes. */
static int parse_answer(Flight *fl, const HttpResponse *resp, OAuthAnswer *a)
{
        const UpstreamConfig *u = fl->up;

        if (u->kind == UPSTREAM_AWS_STS)
                return aws_parse_response(resp->status, resp->body, resp->len,
                                          u->max_response_bytes, now_unix_ms(), a);
        if (u->kind == UPSTREAM_GCP_STS && fl->step == 1)
                return google_parse_access_token(resp->status, resp->body, resp->len,
                                                 u->max_response_bytes, now_unix_ms(), a);
        return oauth_parse_response(resp->status, resp->body, resp->len, u->max_response_bytes,
                                    a);
}

/* gcp_sts: the STS token is in; impersonation follows at once (on the next loop iteration,
 * not inside this transfer's completion), within the same deadline. */
static void next_step(Flight *fl, OAuthAnswer *a)
{
        fl->sts_token = TAKE_PTR(a->access_token);
        oauth_answer_done(a);
        fl->step = 1;
        if (sd_event_add_time_relative(fl->fed->deps.event, &fl->retry, CLOCK_MONOTONIC, 0, 0,
                                       on_retry, fl) < 0) {
                set_message(fl, false, "could not be asked: out of memory");
                flight_finish(fl, FED_INTERNAL, NULL);
        }
}

static void on_http_done(const HttpResponse *resp, void *userdata)
{
        Flight *fl = userdata;
        OAuthAnswer a = {};
        FedToken *t;

        fl->in_http = false;
        attempt_wipe(fl);
        fl->http_status = resp->outcome == HTTP_RESPONSE ? resp->status : 0;
        switch (resp->outcome) {
        case HTTP_RESPONSE:
                break;
        case HTTP_CANCELLED:
                set_message(fl, false, "could not be asked: the broker is stopping");
                flight_finish(fl, FED_UNAVAILABLE, NULL);
                return;
        case HTTP_CONNECT_FAILED:
        case HTTP_TIMEOUT:
                set_message(fl, false, "%s: %s", http_outcome_to_string(resp->outcome),
                            resp->error);
                note_failure(fl);
                breaker_update(fl, false);
                retry_or_fail(fl, -1);
                return;
        default: /* TLS, too large, refused by libcurl: another attempt would fail alike */
                set_message(fl, false, "%s: %s", http_outcome_to_string(resp->outcome),
                            resp->error);
                note_failure(fl);
                breaker_update(fl, false);
                flight_finish(fl, FED_UNAVAILABLE, NULL);
                return;
        }

        if (parse_answer(fl, resp, &a) < 0) {
                set_message(fl, false, "answered, but the broker ran out of memory reading it");
                flight_finish(fl, FED_INTERNAL, NULL);
                return;
        }
        switch (a.outcome) {
        case OAUTH_TOKEN:
                if (fl->up->kind == UPSTREAM_GCP_STS && fl->up->impersonation_url &&
                    fl->step == 0) {
                        next_step(fl, &a);
                        return;
                }
                t = token_from_answer(fl, &a);
                oauth_answer_done(&a);
                if (!t) {
                        set_message(fl, false, "answered, but the broker ran out of memory");
                        flight_finish(fl, FED_INTERNAL, NULL);
                        return;
                }
                breaker_update(fl, true);
                fl->message[0] = 0;
                flight_finish(fl, FED_OK, t);
                return;
        case OAUTH_REFUSED:
                /* An answer: the upstream is up, and it said no. */
                snprintf(fl->upstream_error, sizeof(fl->upstream_error), "%s", a.error);
                set_message(fl, true, "%s%s%s", a.error, a.error_description[0] ? ": " : "",
                            a.error_description);
                oauth_answer_done(&a);
                breaker_update(fl, true);
                flight_finish(fl, FED_DENIED, NULL);
                return;
        case OAUTH_RETRYABLE:
                snprintf(fl->upstream_error, sizeof(fl->upstream_error), "%s", a.error);
                set_message(fl, false, "failed: %s%s%s", a.problem, a.error[0] ? " " : "",
                            a.error);
                oauth_answer_done(&a);
                note_failure(fl);
                breaker_update(fl, false);
                retry_or_fail(fl, resp->headers.retry_after_s);
                return;
        default:
                set_message(fl, false, "gave an unusable answer: %s", a.problem);
                oauth_answer_done(&a);
                note_failure(fl);
                breaker_update(fl, false);
                flight_finish(fl, FED_UNAVAILABLE, NULL);
                return;
        }
}

/* A broker JWT for this exchange: the subject token or assertion for the caller, or the
 * client assertion (RFC 7523 §3: iss = sub = client_id, aud = the token endpoint). */
static int mint(Flight *fl, Alg alg, const char *issuer, const char *subject,
                const char *audience, uint64_t ttl, MintedToken *ret)
{
        _cleanup_(signing_key_unrefp) SigningKey *k =
            fl->fed->deps.keys.active(fl->fed->deps.keys.ctx, alg);

        if (!k)
                return -ENOKEY;
        return jwt_mint(k, issuer, subject, audience, NULL, 0, now_unix_sec(), ttl,
                        fl->config->keys.clock_skew, ret);
}

static const char *grant_type(UpstreamKind k)
{
        switch (k) {
        case UPSTREAM_TOKEN_EXCHANGE:
                return OAUTH_GRANT_TOKEN_EXCHANGE;
        case UPSTREAM_JWT_BEARER:
                return OAUTH_GRANT_JWT_BEARER;
        default:
                return OAUTH_GRANT_CLIENT_CREDENTIALS;
        }
}

/* RFC 6749 / 8693 / 7523: the generic kinds' form and client authentication. */
static int oauth_form(Flight *fl, const MintedToken *subject, const MintedToken *assertion,
                      const SecretValue *secret)
{
        const UpstreamConfig *u = fl->up;
        int r;

        r = oauth_form_add(&fl->form, "grant_type", grant_type(u->kind));
        if (r >= 0 && u->kind == UPSTREAM_TOKEN_EXCHANGE) {
                r = oauth_form_add(&fl->form, "subject_token", subject->token);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "subject_token_type", OAUTH_TOKEN_TYPE_JWT);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "requested_token_type",
                                           u->requested_token_type);
        }
        if (r >= 0 && u->kind == UPSTREAM_JWT_BEARER)
                r = oauth_form_add(&fl->form, "assertion", subject->token);
        if (r >= 0)
                r = oauth_form_add(&fl->form, "scope", fl->scope);
        if (r >= 0)
                r = oauth_form_add(&fl->form, "audience", u->audience);
        if (r >= 0)
                r = oauth_form_add(&fl->form, "resource", u->resource);
        switch (u->client_auth) {
        case CLIENT_AUTH_SECRET_POST:
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "client_id", u->client_id);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "client_secret", (char *) secret->bytes);
                break;
        case CLIENT_AUTH_PRIVATE_KEY_JWT:
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "client_id", u->client_id);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "client_assertion_type",
                                           OAUTH_ASSERTION_TYPE_JWT);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "client_assertion", assertion->token);
                break;
        case CLIENT_AUTH_NONE:
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "client_id", u->client_id);
                break;
        case CLIENT_AUTH_SECRET_BASIC:
                if (r >= 0)
                        r = oauth_basic_header(u->client_id, (char *) secret->bytes, &fl->auth);
                if (r >= 0 && !(fl->headers = curl_slist_append(NULL, fl->auth.data)))
                        r = -ENOMEM;
                break;
        default:
                break;
        }
        return r;
}

/* The cloud presets' forms: the provider's parameters, the broker's JWT as the credential. */
static int preset_form(Flight *fl, const MintedToken *subject)
{
        const UpstreamConfig *u = fl->up;
        char session[AWS_SESSION_NAME_MAX + 1], duration[24];
        int r;

        switch (u->kind) {
        case UPSTREAM_AWS_STS:
                aws_session_name(fl->subject, session);
                snprintf(duration, sizeof(duration), "%" PRIu64, u->duration);
                r = oauth_form_add(&fl->form, "Action", "AssumeRoleWithWebIdentity");
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "Version", "2011-06-15");
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "RoleArn", u->role_arn);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "RoleSessionName", session);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "DurationSeconds", duration);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "WebIdentityToken", subject->token);
                return r;
        case UPSTREAM_GCP_STS:
                r = oauth_form_add(&fl->form, "grant_type", OAUTH_GRANT_TOKEN_EXCHANGE);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "audience", u->audience);
                /* impersonation needs cloud-platform; the caller's scope is asked of IAM */
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "scope",
                                           u->impersonation_url ? GCP_CLOUD_PLATFORM : fl->scope);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "requested_token_type",
                                           OAUTH_TOKEN_TYPE_ACCESS_TOKEN);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "subject_token_type", OAUTH_TOKEN_TYPE_JWT);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "subject_token", subject->token);
                return r;
        default: /* UPSTREAM_AZURE_AD */
                r = oauth_form_add(&fl->form, "grant_type", OAUTH_GRANT_CLIENT_CREDENTIALS);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "client_id", u->client_id);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "scope", fl->scope);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "client_assertion_type",
                                           OAUTH_ASSERTION_TYPE_JWT);
                if (r >= 0)
                        r = oauth_form_add(&fl->form, "client_assertion", subject->token);
                return r;
        }
}

/* gcp_sts step 1: generateAccessToken with the STS token as the bearer. */
static int impersonation_request(Flight *fl)
{
        _cleanup_free_ char *body = NULL;
        int r = google_impersonation_body(fl->scope, fl->up->lifetime, &body);

        if (r < 0)
                return r;
        r = secure_text_new(strlen(body), &fl->form);
        if (r < 0)
                return r;
        memcpy(fl->form.data, body, strlen(body) + 1);
        fl->form.len = strlen(body);
        r = oauth_bearer_header(fl->sts_token, &fl->auth);
        if (r < 0)
                return r;
        fl->headers = curl_slist_append(NULL, fl->auth.data);
        return fl->headers ? 0 : -ENOMEM;
}

/* The form and headers of one attempt. A problem here is the broker's, not the upstream's:
 * *ret_message says what, and the exchange is not retried. */
static int build_attempt(Flight *fl, char *why, size_t whylen)
{
        const UpstreamConfig *u = fl->up;
        SecretValue secret = {};
        MintedToken subject = {}, assertion = {};
        unsigned char rnd[16];
        char hdr[128]; /* a header name of at most 64 bytes, ": ", 32 hex digits */
        int r;

        if (u->client_auth == CLIENT_AUTH_SECRET_BASIC || u->client_auth == CLIENT_AUTH_SECRET_POST) {
                r = secretstore_reveal(fl->fed->deps.secrets, u->client_secret, &secret);
                if (r == -ENOENT) {
                        snprintf(why, whylen,
                                 "cannot be asked: its client secret \"%s\" is not set (brokerctl "
                                 "secret set %s)",
                                 u->client_secret, u->client_secret);
                        return r;
                }
                if (r < 0) {
                        snprintf(why, whylen,
                                 "cannot be asked: its client secret \"%s\" cannot be read; see "
                                 "the broker's log",
                                 u->client_secret);
                        return r;
                }
        }
        if (u->kind != UPSTREAM_CLIENT_CREDENTIALS && fl->step == 0) {
                r = mint(fl, u->subject_token.alg, fl->config->issuer, fl->subject,
                         u->subject_token.audience ?: u->token_endpoint, u->subject_token.ttl,
                         &subject);
                if (r < 0) {
                        snprintf(why, whylen, "cannot be asked: no %s key to sign the %s",
                                 alg_to_string(u->subject_token.alg),
                                 u->kind == UPSTREAM_TOKEN_EXCHANGE ? "subject token"
                                                                    : "assertion");
                        goto out;
                }
        }
        if (u->client_auth == CLIENT_AUTH_PRIVATE_KEY_JWT) {
                r = mint(fl, u->client_assertion_alg, u->client_id, u->client_id,
                         u->token_endpoint, ASSERTION_TTL_S, &assertion);
                if (r < 0) {
                        snprintf(why, whylen,
                                 "cannot be asked: no %s key to sign the client assertion",
                                 alg_to_string(u->client_assertion_alg));
                        goto out;
                }
        }

        if (fl->step == 1)
                r = impersonation_request(fl);
        else {
                r = secure_text_new(OAUTH_FORM_MAX, &fl->form);
                if (r < 0)
                        goto oom;
                r = upstream_kind_is_preset(u->kind) ? preset_form(fl, &subject)
                                                     : oauth_form(fl, &subject, &assertion, &secret);
        }
        if (r == -E2BIG) {
                snprintf(why, whylen, "cannot be asked: the request would pass %u bytes",
                         OAUTH_FORM_MAX);
                goto out;
        }
        if (r < 0)
                goto oom;

        randombytes_buf(rnd, sizeof(rnd));
        sodium_bin2hex(fl->request_id, sizeof(fl->request_id), rnd, sizeof(rnd));
        snprintf(hdr, sizeof(hdr), "%s: %s", u->request_id_header, fl->request_id);
        struct curl_slist *h = curl_slist_append(fl->headers, hdr);
        if (!h)
                goto oom;
        fl->headers = h;
        r = 0;
        goto out;
oom:
        r = -ENOMEM;
        snprintf(why, whylen, "cannot be asked: out of memory");
out:
        secret_value_free(&secret);
        minted_token_done(&subject);
        minted_token_done(&assertion);
        return r;
}

static void flight_attempt(Flight *fl)
{
        const UpstreamConfig *u = fl->up;
        char why[256];
        int r;

        if (fl->fed->stopping) {
                set_message(fl, false, "could not be asked: the broker is stopping");
                flight_finish(fl, FED_UNAVAILABLE, NULL);
                return;
        }
        fl->upstream_error[0] = 0;
        r = build_attempt(fl, why, sizeof(why));
        if (r < 0) {
                attempt_wipe(fl);
                set_message(fl, false, "%s", why);
                note_failure(fl);
                flight_finish(fl, r == -ENOMEM ? FED_INTERNAL : FED_UNAVAILABLE, NULL);
                return;
        }
        int64_t left = fl->deadline_ms - mono_ms();
        const char *url = fl->step == 1 ? u->impersonation_url : u->token_endpoint;
        HttpRequest req = {
            .url = url,
            .allow_http = strncmp(url, "http://", 7) == 0, /* loopback: the config checked */
            .headers = fl->headers,
            .body = fl->form.data,
            .body_len = fl->form.len,
            .json_body = fl->step == 1,
            .accept_xml = u->kind == UPSTREAM_AWS_STS,
            .ca_file = u->ca_file,
            .proxy = u->proxy,
            .timeout_ms = MAX(MIN(u->timeout_ms, left), 1),
            .connect_timeout_ms = MAX(MIN(u->connect_timeout_ms, left), 1),
            .max_response_bytes = u->max_response_bytes,
        };
        fl->attempt++;
        r = http_post(fl->fed->http, &req, on_http_done, fl);
        if (r < 0) {
                attempt_wipe(fl);
                set_message(fl, false, "could not be asked: %s", strerror(-r));
                flight_finish(fl, FED_INTERNAL, NULL);
                return;
        }
        fl->in_http = true;
}

static void flight_start(MailboxMsg *m)
{
        Flight *fl = (Flight *) ((char *) m - offsetof(Flight, start));

        fl->started = true;
        flight_attempt(fl);
}

int federation_test(Federation *f, Config *config, const UpstreamConfig *upstream, fed_done_t done,
                    void *userdata)
{
        FedRequest req = {.config = config, .upstream = upstream, .rule = "", .subject = FED_TEST_SUBJECT};
        _cleanup_free_ char *scope = NULL;
        UpstreamState *st;
        Flight *fl;
        int r;

        r = effective_scope(&req, &scope);
        if (r < 0)
                return r;
        pthread_mutex_lock(&f->lock);
        st = state_find(f, upstream->name);
        fl = st && !f->stopping ? flight_new(f, st, &req, FED_TEST_SUBJECT, scope) : NULL;
        if (fl && add_waiter(fl, done, userdata) < 0) {
                pthread_mutex_unlock(&f->lock);
                flight_finish(fl, FED_INTERNAL, NULL);
                return -ENOMEM;
        }
        pthread_mutex_unlock(&f->lock);
        if (!fl)
                return st ? -ENOMEM : -ENOENT;
        fl->test = true;
        fl->started = true;
        flight_attempt(fl);
        return 0;
}

int federation_new(const FederationDeps *deps, Config *config, Federation **ret)
{
        Federation *f = calloc(1, sizeof(Federation));
        int r;

        if (!f)
                return -ENOMEM;
        f->deps = *deps;
        pthread_mutex_init(&f->lock, NULL);
        f->config = config_ref(config);
        r = states_build(config, &f->states);
        if (r >= 0) {
                f->n_states = config->n_upstreams;
                r = http_client_new(deps->event, &f->http);
        }
        if (r < 0) {
                federation_free(f);
                return r;
        }
        *ret = f;
        return 0;
}

void federation_stop(Federation *f)
{
        f->stopping = true;
        /* Exchanges posted but not started end at their start; then the ones waiting to retry;
         * the HTTP client cancels the ones on the wire. */
        (void) mailbox_dispatch(f->deps.mailbox);
        for (;;) {
                Flight *fl;

                pthread_mutex_lock(&f->lock);
                for (fl = f->flights; fl && !(fl->started && !fl->in_http); fl = fl->next)
                        ;
                pthread_mutex_unlock(&f->lock);
                if (!fl)
                        break;
                set_message(fl, false, "could not be asked: the broker is stopping");
                flight_finish(fl, FED_UNAVAILABLE, NULL);
        }
        http_client_free(f->http);
        f->http = NULL;
}

void federation_free(Federation *f)
{
        if (!f)
                return;
        if (f->http)
                federation_stop(f);
        pthread_mutex_lock(&f->lock);
        states_drop(f);
        pthread_mutex_unlock(&f->lock);
        config_unref(f->config);
        pthread_mutex_destroy(&f->lock);
        free(f);
}

void federation_set_config(Federation *f, Config *config)
{
        UpstreamState **states;

        if (states_build(config, &states) < 0) {
                /* Keep serving from the old states rather than none; the cache still drops. */
                log_oom();
                federation_drop(f, NULL);
                return;
        }
        pthread_mutex_lock(&f->lock);
        states_drop(f);
        f->states = states;
        f->n_states = config->n_upstreams;
        config_ref(config);
        config_unref(f->config);
        f->config = config;
        pthread_mutex_unlock(&f->lock);
}

void federation_drop(Federation *f, const char *secret_name)
{
        pthread_mutex_lock(&f->lock);
        for (size_t i = 0; i < f->n_states; i++)
                if (!secret_name ||
                    (f->states[i]->secret && strcmp(f->states[i]->secret, secret_name) == 0))
                        token_cache_clear(f->states[i]->cache, flight_detach);
        pthread_mutex_unlock(&f->lock);
}

json_t *federation_status(Federation *f)
{
        _cleanup_(json_decrefp) json_t *o = json_object();
        int64_t now = mono_ms();

        if (!o)
                return NULL;
        pthread_mutex_lock(&f->lock);
        for (size_t i = 0; i < f->n_states; i++) {
                UpstreamState *s = f->states[i];
                uint64_t asked = s->hits + s->misses;
                json_t *e = json_pack(
                    "{s:s, s:s?, s:I, s:f, s:I, s:I}", "state",
                    breaker_state_name(&s->breaker, now), "last_error",
                    s->last_error[0] ? s->last_error : NULL, "cache_entries",
                    (json_int_t) token_cache_size(s->cache), "hit_ratio",
                    asked ? (double) s->hits / (double) asked : 0.0, "hits", (json_int_t) s->hits,
                    "misses", (json_int_t) s->misses);
                if (!e || json_object_set_new(o, s->name, e) < 0) {
                        pthread_mutex_unlock(&f->lock);
                        return NULL;
                }
        }
        pthread_mutex_unlock(&f->lock);
        return TAKE_PTR(o);
}
