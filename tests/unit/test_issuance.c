/* The token path end to end in process (brokerd/issuance): real callers (this process, or a
 * child, over a socketpair, identified by the kernel), the real Workers, Mailbox, policy and
 * minting, keys made by the signer, and a fake grant sink that keeps each record's JSON text and
 * answers as the test says: on the submitting worker, or later from a thread of its own. Most
 * tests give the mailbox no sd_event: the test thread is the loop and drives it with
 * mailbox_wait() and mailbox_dispatch(); one wires it as the daemon does (an sd_event loop, the
 * workers attached to it).
 *
 * Every token is checked independently of the signer: libsodium verifies an EdDSA signature with
 * the public JWK's "x", OpenSSL an ES256 one with a key rebuilt from "x" and "y"; the record's
 * token_sha256 is recomputed from the token with libsodium.
 *
 * Denials beyond a uid's budget (and below the free-space floor) are counted, not recorded, and
 * leave as deny_summary records: the tests drive issuance_flush_denials() where the daemon's
 * timer and loop exit would, and one runs the timer on a real loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <sodium.h>
#include <systemd/sd-event.h>

#include "issuance/issuance.h"
#include "keys/signer.h"
#include "macro.h"
#include "policy/config.h"
#include "policy/policy.h"
#include "runtime/mailbox.h"
#include "runtime/workers.h"
#include "timeutil.h"
#include "testutil.h"

#define ISSUER  "https://broker.example"
#define ISSUER2 "https://broker2.example"
#define AUD     "https://api.example.com"

#define WAIT_USEC (10 * 1000 * 1000ULL) /* for answers that must come */
#define QUIET_MS  100                   /* for answers that must not */

static void json_decrefp_(json_t **j)
{
        json_decref(*j);
}

/* ---- the fake grant sink --------------------------------------------------------------------- */

typedef struct SinkItem {
        struct SinkItem *next;
        grantlog_done_t done;
        void *userdata;
} SinkItem;

/* Keeps the JSON text (sorted keys) of every record it accepts. With a thread, `done` runs there
 * in submission order, as the store's writer runs it; without, `done` runs inside submit, on the
 * submitting worker, before submit returns (stricter than the store, which never does that: the
 * service must not touch its job once it has handed the record over). It also keeps the balance
 * of the service's announcements (`expect`, grantlog_store_expect()): every record must be
 * announced before it is submitted, and every announcement withdrawn once. */
typedef struct FakeSink {
        pthread_mutex_t lock;
        pthread_cond_t wake;
        bool threaded, stop;
        bool hold; /* a threaded sink answers nothing until sink_release() */
        pthread_t thread;
        int result;       /* what done reports: 0 (durable) or -errno */
        int submit_error; /* < 0: submit refuses every record with this */
        atomic_size_t submits;
        atomic_int expected;          /* announced, not yet withdrawn */
        atomic_bool expect_violation; /* negative balance, or a record submitted unannounced */
        char **texts;                 /* accepted records */
        size_t n_texts, cap;
        SinkItem *head, *tail;
} FakeSink;

static int sink_submit(void *ctx, json_t *record, int64_t time_ms, bool announced,
                       grantlog_done_t done, void *userdata)
{
        FakeSink *s = ctx;
        /* The reference is the sink's, whatever happens (as with the store). No cmocka asserts
         * here: this runs on a worker. */
        char *text = json_dumps(record, JSON_COMPACT | JSON_SORT_KEYS);
        SinkItem *item = NULL;

        json_decref(record);
        atomic_fetch_add(&s->submits, 1);
        /* every token record is announced before it is submitted; a deny_summary, which no
         * request waits for, is not */
        if (announced ? atomic_load(&s->expected) < 1
                      : !text || !strstr(text, "\"event\":\"deny_summary\""))
                atomic_store(&s->expect_violation, true);
        if (!text)
                return -ENOMEM;
        if (s->submit_error < 0) {
                free(text);
                return s->submit_error;
        }
        if (s->threaded) {
                item = calloc(1, sizeof(SinkItem));
                if (!item) {
                        free(text);
                        return -ENOMEM;
                }
                *item = (SinkItem){.done = done, .userdata = userdata};
        }
        pthread_mutex_lock(&s->lock);
        if (s->n_texts == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 64;
                char **t = realloc(s->texts, cap * sizeof(char *));
                if (!t) {
                        pthread_mutex_unlock(&s->lock);
                        free(text);
                        free(item);
                        return -ENOMEM;
                }
                s->texts = t;
                s->cap = cap;
        }
        s->texts[s->n_texts++] = text;
        if (item) {
                if (s->tail)
                        s->tail->next = item;
                else
                        s->head = item;
                s->tail = item;
                pthread_cond_signal(&s->wake);
        }
        pthread_mutex_unlock(&s->lock);
        /* queued: the record settles its announcement, as the store's does */
        if (announced)
                atomic_fetch_sub(&s->expected, 1);
        if (!item)
                done(s->result, userdata);
        return 0;
}

static void sink_expect(void *ctx, int delta)
{
        FakeSink *s = ctx;

        if (atomic_fetch_add(&s->expected, delta) + delta < 0)
                atomic_store(&s->expect_violation, true);
}

static void *sink_main(void *userdata)
{
        FakeSink *s = userdata;

        for (;;) {
                SinkItem *item;

                pthread_mutex_lock(&s->lock);
                while ((!s->head || s->hold) && !s->stop)
                        pthread_cond_wait(&s->wake, &s->lock);
                item = s->head;
                if (item) {
                        s->head = item->next;
                        if (!s->head)
                                s->tail = NULL;
                }
                pthread_mutex_unlock(&s->lock);
                if (!item)
                        return NULL;
                item->done(s->result, item->userdata);
                free(item);
        }
}

static void sink_init(FakeSink *s)
{
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->wake, NULL);
        atomic_init(&s->submits, 0);
        atomic_init(&s->expected, 0);
        atomic_init(&s->expect_violation, false);
}

static void sink_start_thread(FakeSink *s)
{
        s->threaded = true;
        assert_int_equal(pthread_create(&s->thread, NULL, sink_main, s), 0);
}

/* Answers everything queued, then stops the thread. */
static void sink_stop(FakeSink *s)
{
        if (!s->threaded)
                return;
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
        s->threaded = false;
}

/* A held sink answers what it has, and from now on everything. */
static void sink_release(FakeSink *s)
{
        pthread_mutex_lock(&s->lock);
        s->hold = false;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->lock);
}

static void sink_done(FakeSink *s)
{
        for (size_t i = 0; i < s->n_texts; i++)
                free(s->texts[i]);
        free(s->texts);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->wake);
}

static size_t sink_count(FakeSink *s)
{
        size_t n;

        pthread_mutex_lock(&s->lock);
        n = s->n_texts;
        pthread_mutex_unlock(&s->lock);
        return n;
}

/* ---- the fake key source ------------------------------------------------------------------ */

typedef struct FakeKeys {
        SigningKey *eddsa, *es256;
        atomic_uint calls;
        bool none; /* no active key of any alg */
} FakeKeys;

static FakeKeys keys;

static SigningKey *keys_active(void *ctx, Alg alg)
{
        FakeKeys *k = ctx;
        SigningKey *key = alg == ALG_EDDSA ? k->eddsa : alg == ALG_ES256 ? k->es256 : NULL;

        atomic_fetch_add(&k->calls, 1);
        return key && !k->none ? signing_key_ref(key) : NULL;
}

/* ---- the environment: one service, its workers, mailbox and sink ------------------------- */

typedef struct Env Env;

typedef struct Answer {
        Env *env;
        unsigned calls;
        bool on_loop; /* done ran on the test thread, the loop */
        IssueStatus status;
        char *message, *token, *kid, *jti;
        int64_t expires_at;
} Answer;

/* Holds the workers until opened: requests queue behind it. */
typedef struct Gate {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool open;
        unsigned waiting;
} Gate;

typedef struct Blocker {
        WorkerJob job;
        Gate *gate;
} Blocker;

struct Env {
        sd_event *event; /* the daemon's wiring (env_start_loop): NULL otherwise */
        Workers *workers;
        Mailbox *mailbox;
        FakeSink sink;
        Issuance *svc;
        Caller *self; /* this process, identified through a socketpair */
        pthread_t loop;
        size_t answered;
        Answer *answers;
        size_t n_answers;
        Gate gate;
        Blocker blockers[WORKERS_MAX];
};

static void on_done(const IssueResult *r, void *userdata)
{
        Answer *a = userdata;

        a->env->answered++;
        if (a->calls++ > 0)
                return; /* the first answer is the one checked; a second one is a failure */
        a->on_loop = pthread_equal(pthread_self(), a->env->loop);
        a->status = r->status;
        a->message = r->message ? strdup(r->message) : NULL;
        a->token = r->token ? strdup(r->token) : NULL;
        a->kid = r->kid ? strdup(r->kid) : NULL;
        a->jti = r->jti ? strdup(r->jti) : NULL;
        a->expires_at = r->expires_at;
}

static Answer *answers(Env *e, size_t n)
{
        assert_null(e->answers);
        e->answers = calloc(n, sizeof(Answer));
        assert_non_null(e->answers);
        e->n_answers = n;
        for (size_t i = 0; i < n; i++)
                e->answers[i].env = e;
        return e->answers;
}

static void gate_open(Gate *g)
{
        pthread_mutex_lock(&g->lock);
        g->open = true;
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->lock);
}

static void blocker_run(WorkerJob *j)
{
        Blocker *b = (Blocker *) ((char *) j - offsetof(Blocker, job));
        Gate *g = b->gate;

        pthread_mutex_lock(&g->lock);
        g->waiting++;
        pthread_cond_broadcast(&g->cond);
        while (!g->open)
                pthread_cond_wait(&g->cond, &g->lock);
        pthread_mutex_unlock(&g->lock);
}

/* Occupies every worker until gate_open(). */
static void block_workers(Env *e)
{
        unsigned n = workers_count(e->workers);

        for (unsigned i = 0; i < n; i++) {
                e->blockers[i] = (Blocker){.job.run = blocker_run, .gate = &e->gate};
                assert_int_equal(workers_submit(e->workers, &e->blockers[i].job), 0);
        }
        pthread_mutex_lock(&e->gate.lock);
        while (e->gate.waiting < n)
                pthread_cond_wait(&e->gate.cond, &e->gate.lock);
        pthread_mutex_unlock(&e->gate.lock);
}

static int env_setup(void **state)
{
        Env *e = calloc(1, sizeof(Env));

        if (!e)
                return -1;
        e->loop = pthread_self();
        sink_init(&e->sink);
        pthread_mutex_init(&e->gate.lock, NULL);
        pthread_cond_init(&e->gate.cond, NULL);
        atomic_store(&keys.calls, 0);
        keys.none = false;
        *state = e;
        return 0;
}

/* Runs whatever is still queued, so nothing outlives the test (also when it failed), and checks
 * that every request taken was answered. */
static int env_teardown(void **state)
{
        Env *e = *state;
        int r = 0;

        gate_open(&e->gate);
        if (e->workers)
                workers_drain(e->workers);
        sink_stop(&e->sink);
        if (e->svc) {
                IssuanceStats st;
                uint64_t deadline = now_mono_usec() + WAIT_USEC;

                for (;;) {
                        (void) mailbox_dispatch(e->mailbox);
                        issuance_stats(e->svc, &st);
                        if (st.in_flight == 0)
                                break;
                        if (now_mono_usec() > deadline) {
                                print_error("%" PRIu64 " requests were never answered\n",
                                            st.in_flight);
                                r = -1;
                                break;
                        }
                        mailbox_wait(e->mailbox, 100);
                }
        }
        if (atomic_load(&e->sink.expected) != 0 || atomic_load(&e->sink.expect_violation)) {
                print_error("grant sink announcements: balance %d at the end%s\n",
                            atomic_load(&e->sink.expected),
                            atomic_load(&e->sink.expect_violation)
                                ? ", and it went negative or a record came unannounced"
                                : "");
                r = -1;
        }
        issuance_free(e->svc);
        mailbox_free(e->mailbox);
        workers_free(e->workers);
        if (e->self)
                caller_unref(e->self);
        sd_event_unref(e->event);
        sink_done(&e->sink);
        for (size_t i = 0; i < e->n_answers; i++) {
                Answer *a = &e->answers[i];
                free(a->message);
                if (a->token)
                        sodium_memzero(a->token, strlen(a->token));
                free(a->token);
                free(a->kid);
                free(a->jti);
        }
        free(e->answers);
        pthread_mutex_destroy(&e->gate.lock);
        pthread_cond_destroy(&e->gate.cond);
        free(e);
        return r;
}

/* This process as a workload caller: the kernel's word on the peer of a socketpair end. */
static Caller *self_caller(void)
{
        Caller *c = NULL;
        int sv[2];

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(caller_from_socket(sv[0], &c), 0);
        close(sv[0]);
        close(sv[1]);
        assert_int_equal(caller_identify(c), 0);
        assert_int_equal(c->error, 0);
        assert_int_equal(c->cred.pid, getpid());
        assert_int_equal(caller_check(c), 0);
        return c;
}

static void env_start(Env *e, Config *c, unsigned threads, bool threaded_sink)
{
        IssuanceDeps deps;

        assert_int_equal(workers_new(threads, &e->workers), 0);
        assert_int_equal(mailbox_new(NULL, &e->mailbox), 0);
        if (threaded_sink)
                sink_start_thread(&e->sink);
        deps = (IssuanceDeps){
            .workers = e->workers,
            .mailbox = e->mailbox,
            .keys = {.active = keys_active, .ctx = &keys},
            .sink = {.submit = sink_submit, .expect = sink_expect, .ctx = &e->sink},
        };
        assert_int_equal(issuance_new(&deps, c, &e->svc), 0);
        e->self = self_caller();
}

/* As the daemon wires it: the mailbox on an sd_event loop and the workers attached to it, so a
 * worker is woken at the end of the loop iteration that queued its job. */
static void env_start_loop(Env *e, Config *c, unsigned threads)
{
        IssuanceDeps deps;

        assert_int_equal(sd_event_new(&e->event), 0);
        assert_int_equal(workers_new(threads, &e->workers), 0);
        assert_int_equal(workers_attach_event(e->workers, e->event), 0);
        assert_int_equal(mailbox_new(e->event, &e->mailbox), 0);
        sink_start_thread(&e->sink);
        deps = (IssuanceDeps){
            .event = e->event,
            .workers = e->workers,
            .mailbox = e->mailbox,
            .keys = {.active = keys_active, .ctx = &keys},
            .sink = {.submit = sink_submit, .expect = sink_expect, .ctx = &e->sink},
        };
        assert_int_equal(issuance_new(&deps, c, &e->svc), 0);
        e->self = self_caller();
}

/* Runs the loop until `want` answers in all have come. */
static void wait_answers(Env *e, size_t want)
{
        uint64_t deadline = now_mono_usec() + WAIT_USEC;

        while (e->answered < want) {
                if (mailbox_dispatch(e->mailbox) > 0)
                        continue;
                if (now_mono_usec() > deadline)
                        fail_msg("%zu of %zu answers after %llu s", e->answered, want,
                                 WAIT_USEC / 1000000);
                mailbox_wait(e->mailbox, 100);
        }
}

/* Runs the loop a little longer: no answer may come that was not expected. */
static void assert_quiet(Env *e)
{
        size_t before = e->answered;

        mailbox_wait(e->mailbox, QUIET_MS);
        (void) mailbox_dispatch(e->mailbox);
        assert_int_equal(e->answered, before);
}

static IssuanceStats stats(Env *e)
{
        IssuanceStats st;

        issuance_stats(e->svc, &st);
        return st;
}

/* ---- configs and requests --------------------------------------------------------------- */

/* A copy of `s` with ' for " and $UID / $OTHER for this process's uid and another one. */
static char *expand(const char *s)
{
        char *out = malloc(strlen(s) * 4 + 64), *p = out;
        char uid[16], other[16];

        assert_non_null(out);
        snprintf(uid, sizeof(uid), "%u", (unsigned) getuid());
        snprintf(other, sizeof(other), "%u", (unsigned) getuid() + 4242);
        while (*s) {
                if (strncmp(s, "$UID", 4) == 0) {
                        p = stpcpy(p, uid);
                        s += 4;
                } else if (strncmp(s, "$OTHER", 6) == 0) {
                        p = stpcpy(p, other);
                        s += 6;
                } else {
                        *p++ = *s == '\'' ? '"' : *s;
                        s++;
                }
        }
        *p = 0;
        return out;
}

/* A config with `issuer`, the given "limits" object (or NULL), more "audit" members (or NULL)
 * and "rules" array, in the quoting of expand(). Tokens: 5m by default, at most 1h. */
static Config *config_make_audit(const char *issuer, const char *limits_sq, const char *audit_sq,
                                 const char *rules_sq)
{
        _cleanup_free_ char *limits = limits_sq ? expand(limits_sq) : NULL;
        _cleanup_free_ char *audit = audit_sq ? expand(audit_sq) : NULL;
        _cleanup_free_ char *rules = expand(rules_sq);
        _cleanup_free_ char *text = NULL;
        char **errs = NULL;
        Config *c = NULL;
        int r;

        assert_true(
            asprintf(&text,
                     "{\"issuer\": \"%s\","
                     " \"listen\": {\"workload\": \"/run/w.sock\", \"admin\": \"/run/a.sock\"},"
                     " \"state_directory\": \"/var/lib/brokerd\","
                     " \"audit\": {%s%s%s},"
                     " \"tokens\": {\"default_ttl\": \"5m\", \"max_ttl\": \"1h\"},"
                     " %s%s%s \"rules\": %s}",
                     issuer, audit ? audit : "", audit ? ", " : "",
                     audit && strstr(audit, "\"database\"")
                         ? "\"checkpoint_every\": 1000"
                         : "\"database\": \"/var/lib/brokerd/audit.db\"",
                     limits ? "\"limits\": " : "", limits ? limits : "", limits ? "," : "",
                     rules) > 0);
        r = config_parse_text(text, strlen(text), "issuance.json", &c, &errs);
        if (r != 0) {
                for (char **p = errs; p && *p; p++)
                        print_error("  %s\n", *p);
                strv_free(errs);
                fail_msg("config rejected (%d): %s", r, text);
        }
        return c;
}

static Config *config_make(const char *issuer, const char *limits_sq, const char *rules_sq)
{
        return config_make_audit(issuer, limits_sq, NULL, rules_sq);
}

/* The rule this process's requests meet: its subject names the uid and the rule. */
#define WEB_RULE                                                                                   \
        "{'name': 'web', 'match': {'uid': $UID},"                                                  \
        " 'subject': 'spiffe://example.org/uid/{uid}/{rule}',"                                     \
        " 'audiences': ['https://api.example.com', 'https://*.example.net'],"                      \
        " 'scopes': ['read', 'write'], 'max_ttl': '15m'}"
/* A rule for someone else, with everything this process asks for: it must never decide. */
#define OTHER_RULE                                                                                 \
        "{'name': 'other', 'match': {'uid': $OTHER}, 'subject': 'spiffe://example.org/other',"     \
        " 'audiences': ['https://api.example.com', 'https://evil.example.org'],"                   \
        " 'scopes': ['read', 'write', 'admin']}"

static Config *web_config(void)
{
        return config_make(ISSUER, NULL, "[" OTHER_RULE ", " WEB_RULE "]");
}

/* Issues a request given as JSON (in expand()'s quoting: audience, scopes, ttl). The parsed
 * request owns the strings, as the transport's does; the test drops its own reference and wipes
 * its scopes array as soon as issuance_token() returns: the service must hold what it keeps. */
static int issue(Env *e, Caller *c, const char *req_sq, Answer *a)
{
        _cleanup_free_ char *text = expand(req_sq);
        json_t *owner = json_loads(text, 0, NULL);
        json_t *scopes_json, *ttl;
        const char **scopes;
        TokenRequest req;
        size_t n;
        int r;

        assert_non_null(owner);
        scopes_json = json_object_get(owner, "scopes");
        ttl = json_object_get(owner, "ttl");
        n = json_array_size(scopes_json);
        scopes = calloc(n + 1, sizeof(char *));
        assert_non_null(scopes);
        for (size_t i = 0; i < n; i++)
                scopes[i] = json_string_value(json_array_get(scopes_json, i));
        req = (TokenRequest){
            .audience = json_string_value(json_object_get(owner, "audience")),
            .scopes = scopes,
            .n_scopes = n,
            .has_ttl = ttl != NULL,
            .ttl = json_integer_value(ttl),
            .owner = owner,
        };
        r = issuance_token(e->svc, c, &req, on_done, a);
        memset(scopes, 0, (n + 1) * sizeof(char *));
        free(scopes);
        json_decref(owner);
        return r;
}

/* ---- independent verification ----------------------------------------------------------- */

static unsigned char *unb64(const char *s, size_t len, size_t *ret_len)
{
        unsigned char *out = malloc(len + 1);
        const char *end = NULL;

        assert_non_null(out);
        if (sodium_base642bin(out, len + 1, s, len, NULL, ret_len, &end,
                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
            end != s + len)
                fail_msg("not base64url: %.*s", (int) len, s);
        return out;
}

static json_t *unb64_json(const char *s, size_t len)
{
        size_t n;
        _cleanup_free_ unsigned char *raw = unb64(s, len, &n);
        json_t *j = json_loadb((const char *) raw, n, JSON_REJECT_DUPLICATES, NULL);

        if (!json_is_object(j))
                fail_msg("not a JSON object: %.*s", (int) n, raw);
        return j;
}

static const char *str(const json_t *o, const char *name)
{
        const char *v = json_string_value(json_object_get(o, name));

        if (!v) {
                _cleanup_free_ char *dump = json_dumps(o, JSON_COMPACT);
                fail_msg("no string \"%s\" in %s", name, dump);
        }
        return v;
}

static int64_t num(const json_t *o, const char *name)
{
        json_t *v = json_object_get(o, name);

        if (!json_is_integer(v))
                fail_msg("no integer \"%s\"", name);
        return json_integer_value(v);
}

static void sha256_hex(const char *text, char out[65])
{
        unsigned char d[crypto_hash_sha256_BYTES];

        crypto_hash_sha256(d, (const unsigned char *) text, strlen(text));
        sodium_bin2hex(out, 65, d, sizeof(d));
}

static bool verify_es256(const json_t *jwk, const void *msg, size_t len, const unsigned char *sig,
                         size_t siglen)
{
        size_t xl, yl;
        const char *xs = str(jwk, "x"), *ys = str(jwk, "y");
        _cleanup_free_ unsigned char *x = unb64(xs, strlen(xs), &xl);
        _cleanup_free_ unsigned char *y = unb64(ys, strlen(ys), &yl);
        unsigned char point[65], *der = NULL;
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        OSSL_PARAM *params;
        EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        EVP_PKEY *pkey = NULL;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        ECDSA_SIG *es = ECDSA_SIG_new();
        int derlen, ok;

        assert_int_equal(xl, 32);
        assert_int_equal(yl, 32);
        assert_int_equal(siglen, 64);
        point[0] = 0x04; /* uncompressed (SEC 1 §2.3.3) */
        memcpy(point + 1, x, 32);
        memcpy(point + 33, y, 32);
        assert_non_null(bld);
        assert_non_null(pctx);
        assert_non_null(md);
        assert_non_null(es);
        assert_int_equal(
            OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0), 1);
        assert_int_equal(
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)),
            1);
        params = OSSL_PARAM_BLD_to_param(bld);
        assert_non_null(params);
        assert_int_equal(EVP_PKEY_fromdata_init(pctx), 1);
        assert_int_equal(EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params), 1);
        /* JWS carries r||s (RFC 7518 §3.4); OpenSSL verifies DER. */
        assert_int_equal(
            ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL)), 1);
        derlen = i2d_ECDSA_SIG(es, &der);
        assert_true(derlen > 0);
        assert_int_equal(EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, pkey, NULL), 1);
        ok = EVP_DigestVerify(md, der, (size_t) derlen, msg, len);
        OPENSSL_free(der);
        ECDSA_SIG_free(es);
        EVP_MD_CTX_free(md);
        EVP_PKEY_free(pkey);
        EVP_PKEY_CTX_free(pctx);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(bld);
        return ok == 1;
}

/* Checks the JWS header and signature of `token` with the public half of `k` only; returns the
 * claims. */
static json_t *verify_token(const char *token, const SigningKey *k)
{
        const char *d1 = strchr(token, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
        _cleanup_(json_decrefp_) json_t *header = NULL;
        _cleanup_free_ unsigned char *sig = NULL;
        size_t siglen;
        bool ok;

        if (!d1 || !d2 || strchr(d2 + 1, '.'))
                fail_msg("not a JWS compact serialization: %s", token);
        header = unb64_json(token, (size_t) (d1 - token));
        assert_int_equal(json_object_size(header), 3);
        assert_string_equal(str(header, "alg"), alg_to_string(k->alg));
        assert_string_equal(str(header, "typ"), "JWT");
        assert_string_equal(str(header, "kid"), k->kid);
        sig = unb64(d2 + 1, strlen(d2 + 1), &siglen);
        if (k->alg == ALG_EDDSA) {
                size_t pklen;
                const char *x = str(k->jwk, "x");
                _cleanup_free_ unsigned char *pk = unb64(x, strlen(x), &pklen);

                assert_int_equal(pklen, crypto_sign_PUBLICKEYBYTES);
                ok = siglen == crypto_sign_BYTES &&
                     crypto_sign_verify_detached(sig, (const unsigned char *) token,
                                                 (size_t) (d2 - token), pk) == 0;
        } else
                ok = verify_es256(k->jwk, token, (size_t) (d2 - token), sig, siglen);
        if (!ok)
                fail_msg("the signature of %s does not verify with %s", token, k->kid);
        return unb64_json(d1 + 1, (size_t) (d2 - d1 - 1));
}

static json_t *record(Env *e, size_t i)
{
        json_t *rec;

        assert_true(i < sink_count(&e->sink));
        rec = json_loads(e->sink.texts[i], JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(rec);
        return rec;
}

/* The record of the grant whose jti is `jti`. */
static json_t *record_by_jti(Env *e, const char *jti)
{
        size_t n = sink_count(&e->sink);

        for (size_t i = 0; i < n; i++) {
                json_t *rec = record(e, i);
                const char *j = json_string_value(json_object_get(rec, "jti"));
                if (j && strcmp(j, jti) == 0)
                        return rec;
                json_decref(rec);
        }
        fail_msg("no record for jti %s", jti);
        return NULL;
}

static void assert_scopes(const json_t *rec, const char *const *want, size_t n)
{
        json_t *s = json_object_get(rec, "scopes");

        assert_true(json_is_array(s));
        assert_int_equal(json_array_size(s), n);
        for (size_t i = 0; i < n; i++)
                assert_string_equal(json_string_value(json_array_get(s, i)), want[i]);
}

/* keys.clock_skew's default: no config here sets it. */
#define CLOCK_SKEW 300

typedef struct WantGrant {
        const SigningKey *key;
        const char *issuer, *rule, *subject, *audience;
        const char *scope; /* the "scope" claim; NULL: none */
        const char *const *scopes;
        size_t n_scopes;
        int64_t ttl;
        const Caller *caller;
} WantGrant;

/* A granted answer, its token and its record: everything agrees, the token verifies, and the
 * record holds the token's hash, never the token. */
static void assert_grant(Env *e, const Answer *a, const json_t *rec, const WantGrant *w)
{
        _cleanup_(json_decrefp_) json_t *claims = NULL;
        _cleanup_free_ char *rec_text = NULL;
        char hex[65];
        int64_t t, now = now_unix_sec();
        const char *sig;

        assert_int_equal(a->calls, 1);
        assert_true(a->on_loop);
        if (a->status != ISSUE_GRANTED)
                fail_msg("expected a grant, got status %d: %s", a->status,
                         a->message ? a->message : "(no message)");
        assert_non_null(a->token);
        assert_non_null(a->jti);
        assert_non_null(a->kid);
        assert_string_equal(a->kid, w->key->kid);

        claims = verify_token(a->token, w->key);
        assert_string_equal(str(claims, "iss"), w->issuer);
        assert_string_equal(str(claims, "sub"), w->subject);
        assert_string_equal(str(claims, "aud"), w->audience);
        assert_string_equal(str(claims, "jti"), a->jti);
        assert_true(strlen(a->jti) >= 22); /* 128 bits of base64url */
        t = num(claims, "iat");
        assert_true(t <= now && t >= now - 30);
        /* backdated by keys.clock_skew, so a relying party a little behind accepts it */
        assert_int_equal(num(claims, "nbf"), t - CLOCK_SKEW);
        assert_int_equal(num(claims, "exp"), t + w->ttl);
        assert_int_equal(a->expires_at, t + w->ttl);
        if (w->scope)
                assert_string_equal(str(claims, "scope"), w->scope);
        else
                assert_null(json_object_get(claims, "scope"));
        assert_int_equal(json_object_size(claims), 7 + (w->scope != NULL));

        assert_string_equal(str(rec, "event"), "grant");
        assert_string_equal(str(rec, "rule"), w->rule);
        assert_string_equal(str(rec, "subject"), w->subject);
        assert_string_equal(str(rec, "audience"), w->audience);
        assert_string_equal(str(rec, "alg"), alg_to_string(w->key->alg));
        assert_string_equal(str(rec, "kid"), w->key->kid);
        assert_string_equal(str(rec, "jti"), a->jti);
        assert_int_equal(num(rec, "expires_at"), a->expires_at);
        sha256_hex(a->token, hex);
        assert_string_equal(str(rec, "token_sha256"), hex);
        assert_scopes(rec, w->scopes, w->n_scopes);
        assert_null(json_object_get(rec, "reason"));
        assert_true(json_equal(json_object_get(rec, "peer"), w->caller->peer));
        assert_non_null(str(rec, "time"));

        /* Never the token, nor its signature, anywhere in the record. */
        rec_text = json_dumps(rec, JSON_COMPACT);
        assert_non_null(rec_text);
        sig = strrchr(a->token, '.') + 1;
        assert_null(strstr(rec_text, a->token));
        assert_null(strstr(rec_text, sig));
        assert_null(json_object_get(rec, "token"));
}

/* A denied answer and its record. `rule` NULL: the record names no rule. */
static void assert_deny(const Answer *a, const json_t *rec, const char *reason, const char *rule,
                        const char *message_has, const Caller *c, const char *audience)
{
        static const char *const grant_only[] = {"subject",    "alg",   "kid",         "jti",
                                                 "expires_at", "token", "token_sha256"};

        assert_int_equal(a->calls, 1);
        assert_true(a->on_loop);
        if (a->status != ISSUE_DENIED)
                fail_msg("expected a denial (%s), got status %d", reason, a->status);
        assert_null(a->token);
        assert_null(a->kid);
        assert_null(a->jti);
        assert_int_equal(a->expires_at, 0);
        assert_non_null(a->message);
        if (!strstr(a->message, message_has))
                fail_msg("message \"%s\" does not say \"%s\"", a->message, message_has);

        assert_string_equal(str(rec, "event"), "deny");
        assert_string_equal(str(rec, "reason"), reason);
        if (rule)
                assert_string_equal(str(rec, "rule"), rule);
        else
                assert_true(!json_object_get(rec, "rule") ||
                            json_is_null(json_object_get(rec, "rule")));
        assert_string_equal(str(rec, "audience"), audience);
        assert_true(json_equal(json_object_get(rec, "peer"), c->peer));
        for (size_t i = 0; i < ELEMENTSOF(grant_only); i++)
                if (json_object_get(rec, grant_only[i]))
                        fail_msg("a deny record holds \"%s\"", grant_only[i]);
}

/* An answer that is neither grant nor denial: no token, a message. */
static void assert_failed(const Answer *a, IssueStatus want)
{
        assert_int_equal(a->calls, 1);
        assert_true(a->on_loop);
        assert_int_equal(a->status, want);
        assert_null(a->token);
        assert_null(a->kid);
        assert_null(a->jti);
        assert_non_null(a->message);
        assert_true(strlen(a->message) > 0);
}

/* ---- grants ------------------------------------------------------------------------------- */

static void grant_case(void **state, bool threaded_sink)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        Answer *a = answers(e, 4);
        IssuanceStats st;
        char subject[128];
        json_t *rec;

        env_start(e, c, 2, threaded_sink);
        snprintf(subject, sizeof(subject), "spiffe://example.org/uid/%u/web", (unsigned) getuid());

        /* one at a time: the sink's records are then in request order */
        assert_int_equal(
            issue(e, e->self, "{'audience': '" AUD "', 'scopes': ['write', 'read']}", &a[0]), 0);
        wait_answers(e, 1);
        /* a ttl above the rule's max_ttl is clamped to it */
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "', 'ttl': 7200}", &a[1]), 0);
        wait_answers(e, 2);
        /* a ttl below it is kept */
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "', 'ttl': 60}", &a[2]), 0);
        wait_answers(e, 3);
        /* an audience the rule allows by a one-label pattern */
        assert_int_equal(issue(e, e->self,
                               "{'audience': 'https://eu-1.example.net', 'scopes': ['read']}",
                               &a[3]),
                         0);
        wait_answers(e, 4);
        assert_quiet(e);
        assert_int_equal(sink_count(&e->sink), 4);

        rec = record(e, 0);
        assert_grant(e, &a[0], rec,
                     &(WantGrant){.key = keys.es256,
                                  .issuer = ISSUER,
                                  .rule = "web",
                                  .subject = subject,
                                  .audience = AUD,
                                  .scope = "write read",
                                  .scopes = (const char *const[]){"write", "read"},
                                  .n_scopes = 2,
                                  .ttl = 300,
                                  .caller = e->self});
        json_decref(rec);
        rec = record(e, 1);
        assert_grant(e, &a[1], rec,
                     &(WantGrant){.key = keys.es256,
                                  .issuer = ISSUER,
                                  .rule = "web",
                                  .subject = subject,
                                  .audience = AUD,
                                  .ttl = 900,
                                  .caller = e->self});
        json_decref(rec);
        rec = record(e, 2);
        assert_grant(e, &a[2], rec,
                     &(WantGrant){.key = keys.es256,
                                  .issuer = ISSUER,
                                  .rule = "web",
                                  .subject = subject,
                                  .audience = AUD,
                                  .ttl = 60,
                                  .caller = e->self});
        json_decref(rec);
        rec = record(e, 3);
        assert_grant(e, &a[3], rec,
                     &(WantGrant){.key = keys.es256,
                                  .issuer = ISSUER,
                                  .rule = "web",
                                  .subject = subject,
                                  .audience = "https://eu-1.example.net",
                                  .scope = "read",
                                  .scopes = (const char *const[]){"read"},
                                  .n_scopes = 1,
                                  .ttl = 300,
                                  .caller = e->self});
        json_decref(rec);

        assert_string_not_equal(a[0].jti, a[1].jti);
        st = stats(e);
        assert_int_equal(st.grants, 4);
        assert_int_equal(st.denials, 0);
        assert_int_equal(st.rate_limited, 0);
        assert_int_equal(st.in_flight, 0);
        assert_int_equal(atomic_load(&keys.calls), 4);
}

static void test_grant_sink_thread(void **state)
{
        grant_case(state, true);
}

static void test_grant_sink_inline(void **state)
{
        grant_case(state, false);
}

/* A rule that asks for EdDSA (not the default) gets an EdDSA key from the source and an EdDSA
 * token. */
static void test_grant_eddsa(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = config_make(
            ISSUER, NULL,
            "[{'name': 'vault', 'match': {'uid': $UID}, 'subject': 'spiffe://example.org/{rule}',"
            " 'audiences': ['https://vault.example.com'], 'alg': 'EdDSA'}]");
        Answer *a = answers(e, 1);
        _cleanup_(json_decrefp_) json_t *rec = NULL;

        env_start(e, c, 2, true);
        assert_int_equal(issue(e, e->self, "{'audience': 'https://vault.example.com'}", &a[0]), 0);
        wait_answers(e, 1);
        rec = record(e, 0);
        assert_grant(e, &a[0], rec,
                     &(WantGrant){.key = keys.eddsa,
                                  .issuer = ISSUER,
                                  .rule = "vault",
                                  .subject = "spiffe://example.org/vault",
                                  .audience = "https://vault.example.com",
                                  .ttl = 300,
                                  .caller = e->self});
}

/* ---- denials: one reason each --------------------------------------------------------------- */

/* Issues one request and returns its answer and record, checking the stats of a denial. */
static json_t *deny_one(Env *e, Caller *c, const char *req_sq)
{
        Answer *a = answers(e, 1);
        IssuanceStats st;

        assert_int_equal(issue(e, c, req_sq, &a[0]), 0);
        wait_answers(e, 1);
        assert_quiet(e);
        assert_int_equal(sink_count(&e->sink), 1);
        st = stats(e);
        assert_int_equal(st.grants, 0);
        assert_int_equal(st.denials, 1);
        assert_int_equal(st.in_flight, 0);
        /* nothing was signed for a denial */
        assert_int_equal(atomic_load(&keys.calls), 0);
        return record(e, 0);
}

static void test_deny_no_rule(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = config_make(ISSUER, NULL, "[" OTHER_RULE "]");
        _cleanup_(json_decrefp_) json_t *rec = NULL;

        env_start(e, c, 2, true);
        rec = deny_one(e, e->self, "{'audience': '" AUD "', 'scopes': ['read']}");
        assert_deny(&e->answers[0], rec, "no_matching_rule", NULL, "no rule matches", e->self, AUD);
        /* nothing of the rule that did not match */
        assert_null(strstr(e->answers[0].message, "other"));
        assert_null(strstr(e->answers[0].message, "evil"));
        assert_scopes(rec, (const char *const[]){"read"}, 1);
}

static void test_deny_audience(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        _cleanup_(json_decrefp_) json_t *rec = NULL;

        env_start(e, c, 2, false);
        /* another rule allows it; the deciding one does not */
        rec = deny_one(e, e->self, "{'audience': 'https://evil.example.org'}");
        assert_deny(&e->answers[0], rec, "audience_not_allowed", "web", "https://evil.example.org",
                    e->self, "https://evil.example.org");
        assert_null(strstr(e->answers[0].message, "api.example.com"));
        assert_null(strstr(e->answers[0].message, "example.net"));
}

/* The pattern's asterisk is one DNS label, not two. */
static void test_deny_audience_two_labels(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        _cleanup_(json_decrefp_) json_t *rec = NULL;

        env_start(e, c, 2, true);
        rec = deny_one(e, e->self, "{'audience': 'https://a.b.example.net'}");
        assert_deny(&e->answers[0], rec, "audience_not_allowed", "web", "a.b.example.net", e->self,
                    "https://a.b.example.net");
}

static void test_deny_scope(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        _cleanup_(json_decrefp_) json_t *rec = NULL;

        env_start(e, c, 2, true);
        rec = deny_one(e, e->self, "{'audience': '" AUD "', 'scopes': ['read', 'admin']}");
        assert_deny(&e->answers[0], rec, "scope_not_allowed", "web", "\"admin\"", e->self, AUD);
        assert_null(strstr(e->answers[0].message, "write"));
        assert_scopes(rec, (const char *const[]){"read", "admin"}, 2);
}

static void test_deny_subject(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = NULL;
        _cleanup_(json_decrefp_) json_t *rec = NULL;
        _cleanup_free_ char *rules = NULL;
        const char *missing;

        /* A placeholder this process has no value for. */
        Caller *self = self_caller();
        missing = !self->id.container ? "container" : !self->id.unit ? "unit" : NULL;
        caller_unref(self);
        if (!missing) {
                print_message("this process has both a unit and a container; nothing to miss\n");
                skip();
        }
        assert_true(asprintf(&rules,
                             "[{'name': 'needs', 'match': {'uid': $UID},"
                             " 'subject': 'spiffe://example.org/{%s}',"
                             " 'audiences': ['" AUD "']}]",
                             missing) > 0);
        c = config_make(ISSUER, NULL, rules);
        env_start(e, c, 2, true);
        rec = deny_one(e, e->self, "{'audience': '" AUD "'}");
        assert_deny(&e->answers[0], rec, "subject_unavailable", "needs", missing, e->self, AUD);
}

/* An admin caller (peer credentials only) asks for no tokens: denied as unconfirmed, recorded
 * with what the kernel said. */
static void test_deny_identity_cred_only(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = config_make(
            ISSUER, NULL,
            "[{'name': 'all', 'subject': 'spiffe://example.org/{uid}', 'audiences': ['" AUD "']}]");
        _cleanup_(json_decrefp_) json_t *rec = NULL;
        Caller *admin = NULL;

        env_start(e, c, 2, true);
        assert_int_equal(
            caller_from_cred(&(struct ucred){.pid = getpid(), .uid = getuid(), .gid = getgid()},
                             &admin),
            0);
        rec = deny_one(e, admin, "{'audience': '" AUD "'}");
        assert_deny(&e->answers[0], rec, "identity_unconfirmed", NULL, caller_unconfirmed_message,
                    admin, AUD);
        assert_true(json_is_null(json_object_get(json_object_get(rec, "peer"), "user")));
        caller_unref(admin);
}

/* ---- the caller's process exits ------------------------------------------------------------ */

/* A caller whose peer is a child: the child makes a socketpair (so the kernel's word on the end
 * it hands over is the child's), passes one end over `ctl`, and exits when told. */
static pid_t child_caller(int ctl[2], Caller **ret)
{
        char cbuf[CMSG_SPACE(sizeof(int))] = {};
        char byte = 0;
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        struct cmsghdr *cm;
        int fd;
        pid_t pid;

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                int sp[2];

                close(ctl[0]);
                if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
                        _exit(1);
                cm = CMSG_FIRSTHDR(&mh);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &sp[0], sizeof(int));
                if (sendmsg(ctl[1], &mh, 0) != 1)
                        _exit(1);
                close(sp[0]);
                /* until the parent says so, or goes */
                if (read(ctl[1], &byte, 1) < 0)
                        _exit(1);
                _exit(0);
        }
        close(ctl[1]);
        ctl[1] = -1;
        assert_int_equal(recvmsg(ctl[0], &mh, MSG_CMSG_CLOEXEC), 1);
        cm = CMSG_FIRSTHDR(&mh);
        assert_non_null(cm);
        assert_int_equal(cm->cmsg_type, SCM_RIGHTS);
        memcpy(&fd, CMSG_DATA(cm), sizeof(int));
        assert_int_equal(caller_from_socket(fd, ret), 0);
        close(fd);
        assert_int_equal((*ret)->cred.pid, pid);
        return pid;
}

static void child_exit(int ctl[2], pid_t pid)
{
        int status;

        assert_int_equal(write(ctl[0], "x", 1), 1);
        close(ctl[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Identified while alive (and granted then), the same caller is denied once its process has
 * exited and been reaped: whoever holds that connection now is not who was identified. */
static void test_caller_gone(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        _cleanup_(json_decrefp_) json_t *rec = NULL;
        Answer *a = answers(e, 2);
        Caller *child = NULL;
        int ctl[2];
        pid_t pid;
        IssuanceStats st;

        env_start(e, c, 2, true);
        pid = child_caller(ctl, &child);
        assert_int_equal(caller_identify(child), 0);
        assert_int_equal(child->error, 0);
        assert_int_equal(num(child->peer, "pid"), pid);

        assert_int_equal(issue(e, child, "{'audience': '" AUD "'}", &a[0]), 0);
        wait_answers(e, 1);
        assert_int_equal(a[0].status, ISSUE_GRANTED);

        child_exit(ctl, pid);
        assert_int_equal(issue(e, child, "{'audience': '" AUD "'}", &a[1]), 0);
        wait_answers(e, 2);
        assert_quiet(e);
        assert_int_equal(sink_count(&e->sink), 2);
        rec = record(e, 1);
        assert_deny(&a[1], rec, "identity_unconfirmed", NULL, caller_unconfirmed_message, child,
                    AUD);
        /* the record says who was identified: the child, by its pid */
        assert_int_equal(num(json_object_get(rec, "peer"), "pid"), pid);
        st = stats(e);
        assert_int_equal(st.grants, 1);
        assert_int_equal(st.denials, 1);
        caller_unref(child);
}

/* A child that exits before it is identified is denied the same way. */
static void test_caller_gone_before_identify(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        _cleanup_(json_decrefp_) json_t *rec = NULL;
        Caller *child = NULL;
        int ctl[2];
        pid_t pid;

        env_start(e, c, 2, true);
        pid = child_caller(ctl, &child);
        child_exit(ctl, pid);
        assert_int_equal(caller_identify(child), 0);
        assert_int_equal(child->error, -ESRCH);
        assert_true(caller_check(child) < 0);
        rec = deny_one(e, child, "{'audience': '" AUD "'}");
        assert_deny(&e->answers[0], rec, "identity_unconfirmed", NULL, caller_unconfirmed_message,
                    child, AUD);
        assert_int_equal(num(json_object_get(rec, "peer"), "pid"), pid);
        caller_unref(child);
}

/* ---- denials: a budget per uid, counts beyond it, summaries ---------------------------------- */

/* The records of one event the sink holds, parsed, in order; their number. */
static size_t records_of(Env *e, const char *event, json_t **out, size_t max)
{
        size_t n = 0, total = sink_count(&e->sink);

        for (size_t i = 0; i < total; i++) {
                json_t *rec = record(e, i);
                if (strcmp(str(rec, "event"), event) == 0 && n < max)
                        out[n++] = rec;
                else
                        json_decref(rec);
        }
        return n;
}

static void decref_all(json_t **v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                json_decref(v[i]);
}

/* A deny_summary record: its uid (or null), reason and count, and first <= last. */
static void assert_summary(const json_t *rec, int64_t uid, const char *reason, uint64_t count,
                           uint64_t below_floor)
{
        json_t *peer = json_object_get(rec, "peer");
        int64_t first, last;

        assert_string_equal(str(rec, "event"), "deny_summary");
        assert_int_equal(json_object_size(peer), 1);
        if (uid < 0)
                assert_true(json_is_null(json_object_get(peer, "uid")));
        else
                assert_int_equal(num(peer, "uid"), uid);
        assert_string_equal(str(rec, "reason"), reason);
        assert_int_equal(num(rec, "count"), count);
        assert_int_equal(num(rec, "below_floor"), below_floor);
        assert_int_equal(time_parse_rfc3339(str(rec, "first_time"), &first), 0);
        assert_int_equal(time_parse_rfc3339(str(rec, "last_time"), &last), 0);
        assert_true(first <= last);
        assert_true(last <= now_unix_ms());
        assert_non_null(str(rec, "time"));
}

/* Issues a request and waits for its answer. */
static void issue_wait(Env *e, Caller *c, const char *req_sq, Answer *a)
{
        size_t before = e->answered;

        assert_int_equal(issue(e, c, req_sq, a), 0);
        wait_answers(e, before + 1);
}

#define EVIL  "{'audience': 'https://evil.example.org'}"
#define ADMIN "{'audience': '" AUD "', 'scopes': ['admin']}"

/* Two records a uid; the rest of its denials counted per reason, and summarized at the end of
 * the interval (here: at the close, as when brokerd stops), after which every denial has a
 * record of its own. */
static void test_deny_budget(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c =
            config_make_audit(ISSUER, NULL, "'deny_budget': 2", "[" OTHER_RULE ", " WEB_RULE "]");
        Answer *a = answers(e, 8);
        json_t *recs[8];
        size_t n;
        IssuanceStats st;

        env_start(e, c, 2, true);
        for (size_t i = 0; i < 7; i++)
                issue_wait(e, e->self, i < 5 ? EVIL : ADMIN, &a[i]);
        assert_quiet(e);
        for (size_t i = 0; i < 7; i++) {
                assert_int_equal(a[i].calls, 1);
                assert_int_equal(a[i].status, ISSUE_DENIED);
                /* a counted denial says the same as a recorded one */
                assert_non_null(strstr(a[i].message, i < 5 ? "evil.example.org" : "\"admin\""));
        }
        assert_int_equal(sink_count(&e->sink), 2);
        st = stats(e);
        assert_int_equal(st.denials, 7);
        assert_int_equal(st.denials_counted, 5);

        /* the interval has not ended: nothing is due */
        issuance_flush_denials(e->svc, false);
        sink_stop(&e->sink);
        assert_int_equal(sink_count(&e->sink), 2);

        issuance_flush_denials(e->svc, true);
        n = records_of(e, "deny_summary", recs, 8);
        assert_int_equal(n, 2);
        assert_summary(recs[0], getuid(), "audience_not_allowed", 3, 0);
        assert_summary(recs[1], getuid(), "scope_not_allowed", 2, 0);
        assert_int_equal(num(recs[0], "budget"), 2);
        assert_int_equal(num(recs[0], "interval_s"), 60);
        decref_all(recs, n);

        /* closed: a record whatever the budget */
        e->sink.result = 0;
        issue_wait(e, e->self, EVIL, &a[7]);
        assert_int_equal(a[7].status, ISSUE_DENIED);
        assert_int_equal(records_of(e, "deny", recs, 8), 3);
        decref_all(recs, 3);
        assert_int_equal(stats(e).denials_counted, 5);
}

/* The budget is per uid; grants are never counted, however spent the budget. */
static void test_deny_budget_per_uid_grants_never_counted(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c =
            config_make_audit(ISSUER, NULL, "'deny_budget': 1", "[" WEB_RULE "]");
        Answer *a = answers(e, 12);
        Caller *other = NULL;
        json_t *recs[12];
        size_t n;

        env_start(e, c, 2, false);
        assert_int_equal(
            caller_from_cred(&(struct ucred){.pid = getpid(), .uid = 4242, .gid = 4242}, &other),
            0);
        for (size_t i = 0; i < 4; i++) {
                issue_wait(e, e->self, EVIL, &a[3 * i]);
                issue_wait(e, e->self, "{'audience': '" AUD "'}", &a[3 * i + 1]);
                issue_wait(e, other, "{'audience': '" AUD "'}", &a[3 * i + 2]);
        }
        assert_quiet(e);
        for (size_t i = 0; i < 4; i++) {
                assert_int_equal(a[3 * i].status, ISSUE_DENIED);
                assert_int_equal(a[3 * i + 1].status, ISSUE_GRANTED);
                assert_int_equal(a[3 * i + 2].status, ISSUE_DENIED);
        }
        n = records_of(e, "grant", recs, 12);
        assert_int_equal(n, 4);
        decref_all(recs, n);
        /* one record for each uid: the budget of one is not the other's */
        n = records_of(e, "deny", recs, 12);
        assert_int_equal(n, 2);
        assert_int_equal(num(json_object_get(recs[0], "peer"), "uid"), getuid());
        assert_int_equal(num(json_object_get(recs[1], "peer"), "uid"), 4242);
        decref_all(recs, n);

        issuance_flush_denials(e->svc, true);
        n = records_of(e, "deny_summary", recs, 12);
        assert_int_equal(n, 2);
        if (num(json_object_get(recs[0], "peer"), "uid") != 4242) {
                assert_summary(recs[0], getuid(), "audience_not_allowed", 3, 0);
                assert_summary(recs[1], 4242, "identity_unconfirmed", 3, 0);
        } else {
                assert_summary(recs[0], 4242, "identity_unconfirmed", 3, 0);
                assert_summary(recs[1], getuid(), "audience_not_allowed", 3, 0);
        }
        decref_all(recs, n);
        caller_unref(other);
}

/* Once the interval ends the counts are due and the budget is whole again. */
static void test_deny_interval(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = config_make_audit(
            ISSUER, NULL, "'deny_budget': 1, 'deny_interval': 1", "[" WEB_RULE "]");
        Answer *a = answers(e, 6);
        json_t *recs[6];
        size_t n;

        env_start(e, c, 2, false);
        for (size_t i = 0; i < 3; i++)
                issue_wait(e, e->self, EVIL, &a[i]);
        assert_int_equal(records_of(e, "deny", recs, 6), 1);
        json_decref(recs[0]);
        usleep(1100 * 1000);
        issuance_flush_denials(e->svc, false);
        n = records_of(e, "deny_summary", recs, 6);
        assert_int_equal(n, 1);
        assert_summary(recs[0], getuid(), "audience_not_allowed", 2, 0);
        json_decref(recs[0]);

        /* a new interval: a record again, then counts again */
        issue_wait(e, e->self, EVIL, &a[3]);
        issue_wait(e, e->self, EVIL, &a[4]);
        n = records_of(e, "deny", recs, 6);
        assert_int_equal(n, 2);
        decref_all(recs, n);
        issuance_flush_denials(e->svc, false); /* not yet due */
        assert_int_equal(records_of(e, "deny_summary", recs, 6), 1);
        json_decref(recs[0]);
        usleep(1100 * 1000);
        /* a request in the new interval makes the counts of the last one due as well */
        issue_wait(e, e->self, EVIL, &a[5]);
        issuance_flush_denials(e->svc, false);
        n = records_of(e, "deny_summary", recs, 6);
        assert_int_equal(n, 2);
        assert_summary(recs[1], getuid(), "audience_not_allowed", 1, 0);
        decref_all(recs, n);
        assert_int_equal(stats(e).denials_counted, 3);
}

/* Fail closed, for a denial: one with a record of its own is answered after its commit, like a
 * grant; a counted one at once, before any summary is written (it gives nothing away). */
static void test_deny_counted_is_answered_before_any_commit(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c =
            config_make_audit(ISSUER, NULL, "'deny_budget': 1", "[" WEB_RULE "]");
        Answer *a = answers(e, 3);

        e->sink.hold = true;
        env_start(e, c, 2, true);
        assert_int_equal(issue(e, e->self, EVIL, &a[0]), 0);
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[1]), 0);
        /* the record of the first denial and the grant's wait in the held sink */
        uint64_t deadline = now_mono_usec() + WAIT_USEC;
        while (sink_count(&e->sink) < 2 && now_mono_usec() < deadline)
                usleep(1000);
        assert_int_equal(sink_count(&e->sink), 2);
        assert_quiet(e);
        assert_int_equal(a[0].calls, 0);
        assert_int_equal(a[1].calls, 0);

        /* over the budget: answered now, nothing written */
        assert_int_equal(issue(e, e->self, EVIL, &a[2]), 0);
        wait_answers(e, 1);
        assert_int_equal(a[2].calls, 1);
        assert_int_equal(a[2].status, ISSUE_DENIED);
        assert_int_equal(sink_count(&e->sink), 2);
        assert_int_equal(stats(e).in_flight, 2);

        sink_release(&e->sink);
        wait_answers(e, 3);
        assert_int_equal(a[0].status, ISSUE_DENIED);
        assert_int_equal(a[1].status, ISSUE_GRANTED);
        /* the count is in the summary, once it is written */
        json_t *rec;
        issuance_flush_denials(e->svc, true);
        sink_stop(&e->sink);
        assert_int_equal(records_of(e, "deny_summary", &rec, 1), 1);
        assert_summary(rec, getuid(), "audience_not_allowed", 1, 0);
        json_decref(rec);
}

/* Below the free-space floor only grants are written: every denial is counted (the budget
 * untouched), its summary waits until there is room, and says how many came below the floor. */
static void test_deny_below_floor(void **state)
{
        Env *e = *state;
        char dir[64], audit[256];
        Config *full, *roomy;
        Answer *a = answers(e, 6);
        json_t *recs[6];
        size_t n;

        assert_int_equal(tmpdir_make(dir, sizeof(dir), "floor"), 0);
        /* 100 %: free space is always below it */
        snprintf(audit, sizeof(audit),
                 "'database': '%s/audit.db', 'deny_interval': 1, 'free_space_floor': '100%%'", dir);
        full = config_make_audit(ISSUER, NULL, audit, "[" WEB_RULE "]");
        snprintf(audit, sizeof(audit),
                 "'database': '%s/audit.db', 'deny_interval': 1, 'free_space_floor': 0", dir);
        roomy = config_make_audit(ISSUER, NULL, audit, "[" WEB_RULE "]");

        env_start(e, full, 2, false);
        for (size_t i = 0; i < 4; i++)
                issue_wait(e, e->self, EVIL, &a[i]);
        issue_wait(e, e->self, "{'audience': '" AUD "'}", &a[4]);
        for (size_t i = 0; i < 4; i++)
                assert_int_equal(a[i].status, ISSUE_DENIED);
        assert_int_equal(a[4].status, ISSUE_GRANTED);
        assert_int_equal(sink_count(&e->sink), 1); /* the grant */
        assert_int_equal(stats(e).denials_counted, 4);

        /* the interval is over, but there is no room: held */
        usleep(1100 * 1000);
        issuance_flush_denials(e->svc, false);
        assert_int_equal(sink_count(&e->sink), 1);

        /* room again (a reload without a floor stands in for the disk): written */
        issuance_set_config(e->svc, roomy);
        issuance_flush_denials(e->svc, false);
        n = records_of(e, "deny_summary", recs, 6);
        assert_int_equal(n, 1);
        assert_summary(recs[0], getuid(), "audience_not_allowed", 4, 4);
        json_decref(recs[0]);
        /* the budget was not spent below the floor */
        issue_wait(e, e->self, EVIL, &a[5]);
        assert_int_equal(records_of(e, "deny", recs, 6), 1);
        json_decref(recs[0]);

        config_unref(full);
        config_unref(roomy);
        assert_int_equal(tmpdir_remove(dir), 0);
}

/* A summary the log cannot write keeps its counts: the next one has them. */
static void test_deny_summary_write_fails(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = config_make_audit(
            ISSUER, NULL, "'deny_budget': 0, 'deny_interval': 1", "[" WEB_RULE "]");
        Answer *a = answers(e, 5);
        json_t *recs[4];
        size_t n;

        env_start(e, c, 2, false);
        for (size_t i = 0; i < 3; i++)
                issue_wait(e, e->self, EVIL, &a[i]);
        assert_int_equal(sink_count(&e->sink), 0);
        usleep(1100 * 1000);
        e->sink.result = -EIO;
        issuance_flush_denials(e->svc, false);
        assert_int_equal(sink_count(&e->sink), 1); /* tried, and failed */
        e->sink.submit_error = -ESHUTDOWN;
        issuance_flush_denials(e->svc, false);
        assert_int_equal(sink_count(&e->sink), 1); /* refused */
        e->sink.submit_error = 0;
        e->sink.result = 0;
        issue_wait(e, e->self, EVIL, &a[3]);
        issuance_flush_denials(e->svc, false);
        n = records_of(e, "deny_summary", recs, 4);
        assert_int_equal(n, 2);
        assert_summary(recs[1], getuid(), "audience_not_allowed", 4, 0);
        decref_all(recs, n);
}

/* The worst request a caller can make is recorded bounded (the format: test_grantlog_writer). */
static void test_deny_record_bounded(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        _cleanup_(json_decrefp_) json_t *rec = NULL;
        _cleanup_free_ char *req = NULL;
        FILE *m;
        size_t len = 0;

        m = open_memstream(&req, &len);
        assert_non_null(m);
        fputs("{'audience': 'https://", m);
        for (size_t i = 0; i < 1010; i++)
                fputc('a' + (int) (i % 26), m);
        fputs("', 'scopes': [", m);
        for (size_t i = 0; i < 64; i++) {
                fprintf(m, "%s'%02zu", i ? ", " : "", i);
                for (size_t k = 0; k < 254; k++)
                        fputc('s', m);
                fputc('\'', m);
        }
        fputs("]}", m);
        assert_int_equal(fclose(m), 0);
        env_start(e, c, 2, true);
        rec = deny_one(e, e->self, req);
        assert_int_equal(e->answers[0].status, ISSUE_DENIED);
        json_t *aud = json_object_get(rec, "audience");
        assert_true(json_is_true(json_object_get(aud, "truncated")));
        assert_int_equal(num(aud, "length"), 1018);
        json_t *sc = json_object_get(rec, "scopes");
        assert_int_equal(num(sc, "count"), 64);
        assert_int_equal(num(sc, "length"), 64 * 256 + 63);
        assert_true(strlen(e->sink.texts[0]) < 1536);
        assert_string_equal(str(rec, "reason"), "audience_not_allowed");
}

/* A request taken inside a loop iteration, as the transport takes it. */
typedef struct LoopOne {
        Env *env;
        const char *req;
        Answer *a;
        int r;
} LoopOne;

static int issue_one_in_iteration(sd_event_source *src, void *userdata)
{
        LoopOne *lo = userdata;

        lo->r = issue(lo->env, lo->env->self, lo->req, lo->a);
        return 0;
}

static void loop_issue_wait(Env *e, const char *req_sq, Answer *a)
{
        LoopOne lo = {.env = e, .req = req_sq, .a = a};
        size_t before = e->answered;
        uint64_t deadline = now_mono_usec() + WAIT_USEC;
        sd_event_source *src = NULL;

        assert_int_equal(sd_event_add_defer(e->event, &src, issue_one_in_iteration, &lo), 0);
        assert_int_equal(sd_event_source_set_enabled(src, SD_EVENT_ONESHOT), 0);
        while (e->answered == before && now_mono_usec() < deadline)
                assert_true(sd_event_run(e->event, 100 * 1000) >= 0);
        sd_event_source_disable_unref(src);
        assert_int_equal(lo.r, 0);
        assert_int_equal(e->answered, before + 1);
}

/* The daemon's wiring: the loop's timer writes the summary once the interval is over, and the
 * loop's exit the last counts, before brokerd writes "stopped". */
static void test_deny_summaries_from_the_loop(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = config_make_audit(
            ISSUER, NULL, "'deny_budget': 1, 'deny_interval': 2", "[" WEB_RULE "]");
        Answer *a = answers(e, 6);
        json_t *recs[6];
        uint64_t deadline;
        size_t n;

        env_start_loop(e, c, 2);
        for (size_t i = 0; i < 3; i++)
                loop_issue_wait(e, EVIL, &a[i]);
        assert_int_equal(stats(e).denials_counted, 2);
        /* no request comes: the timer finds the summary due, about a second after the interval */
        deadline = now_mono_usec() + 6 * 1000 * 1000;
        while ((n = records_of(e, "deny_summary", recs, 6)) == 0 && now_mono_usec() < deadline)
                assert_true(sd_event_run(e->event, 100 * 1000) >= 0);
        assert_int_equal(n, 1);
        assert_summary(recs[0], getuid(), "audience_not_allowed", 2, 0);
        json_decref(recs[0]);

        for (size_t i = 3; i < 6; i++)
                loop_issue_wait(e, EVIL, &a[i]);
        assert_int_equal(stats(e).denials_counted, 4);
        /* brokerd stops: the loop's exit writes what is counted, whatever the interval */
        assert_int_equal(sd_event_exit(e->event, 0), 0);
        assert_true(sd_event_run(e->event, 0) >= 0);
        deadline = now_mono_usec() + WAIT_USEC;
        while ((n = records_of(e, "deny_summary", recs, 6)) < 2 && now_mono_usec() < deadline) {
                decref_all(recs, n);
                usleep(1000);
        }
        assert_int_equal(n, 2);
        assert_summary(recs[1], getuid(), "audience_not_allowed", 2, 0);
        decref_all(recs, n);
}

/* The audit keys of the configuration: defaults, the forms they take, and every problem named
 * by its JSON path. */
static void assert_config_problem(const char *audit_sq, const char *want)
{
        _cleanup_free_ char *audit = expand(audit_sq);
        _cleanup_free_ char *text = NULL;
        char **errs = NULL;
        Config *c = NULL;
        bool found = false;

        assert_true(asprintf(&text,
                             "{\"issuer\": \"" ISSUER "\", \"listen\": {\"workload\": "
                             "\"/run/w.sock\", \"admin\": \"/run/a.sock\"}, \"state_directory\": "
                             "\"/var/lib/brokerd\", \"audit\": {\"database\": \"/x/audit.db\", %s},"
                             " \"rules\": []}",
                             audit) > 0);
        assert_int_equal(config_parse_text(text, strlen(text), "t.json", &c, &errs), -EINVAL);
        for (char **p = errs; p && *p; p++)
                found |= strcmp(*p, want) == 0;
        if (!found) {
                for (char **p = errs; p && *p; p++)
                        print_error("  %s\n", *p);
                fail_msg("no problem \"%s\"", want);
        }
        strv_free(errs);
}

static void test_audit_config_keys(void **state)
{
        static const struct {
                const char *sq;
                int kind;
                uint64_t value;
        } floors[] = {
            {"'free_space_floor': 1048576", AUDIT_FLOOR_BYTES, 1048576},
            {"'free_space_floor': '0'", AUDIT_FLOOR_BYTES, 0},
            {"'free_space_floor': '512'", AUDIT_FLOOR_BYTES, 512},
            {"'free_space_floor': '64M'", AUDIT_FLOOR_BYTES, 64ull << 20},
            {"'free_space_floor': '2G'", AUDIT_FLOOR_BYTES, 2ull << 30},
            {"'free_space_floor': '3K'", AUDIT_FLOOR_BYTES, 3072},
            {"'free_space_floor': '5%'", AUDIT_FLOOR_PERCENT, 5},
        };
        Config *c = config_make(ISSUER, NULL, "[]");

        assert_int_equal(c->audit_deny_budget, 100);
        assert_int_equal(c->audit_deny_interval_ms, 60000);
        assert_int_equal(c->audit_free_space_floor.kind, AUDIT_FLOOR_DEFAULT);
        /* the default: 64 MiB, or a tenth of a smaller filesystem */
        assert_int_equal(config_audit_floor_bytes(&c->audit_free_space_floor, 10ull << 30),
                         64ull << 20);
        assert_int_equal(config_audit_floor_bytes(&c->audit_free_space_floor, 48ull << 20),
                         (48ull << 20) / 10);
        config_unref(c);
        c = config_make_audit(ISSUER, NULL, "'deny_budget': 0, 'deny_interval': '24h'", "[]");
        assert_int_equal(c->audit_deny_budget, 0);
        assert_int_equal(c->audit_deny_interval_ms, 86400000);
        config_unref(c);
        for (size_t i = 0; i < ELEMENTSOF(floors); i++) {
                c = config_make_audit(ISSUER, NULL, floors[i].sq, "[]");
                assert_int_equal(c->audit_free_space_floor.kind, floors[i].kind);
                assert_int_equal(c->audit_free_space_floor.value, floors[i].value);
                config_unref(c);
        }
        AuditFloor pct = {AUDIT_FLOOR_PERCENT, 5};
        assert_int_equal(config_audit_floor_bytes(&pct, 1000), 50);
        assert_int_equal(config_audit_floor_bytes(&pct, UINT64_MAX), UINT64_MAX / 100 * 5);

        assert_config_problem("'deny_budget': 'x'",
                              "audit.deny_budget: expected integer, got string");
        assert_config_problem("'deny_budget': -1",
                              "audit.deny_budget: must be between 0 and 1000000");
        assert_config_problem("'deny_interval': 0",
                              "audit.deny_interval: must be at least 1 seconds");
        assert_config_problem("'deny_interval': '25h'", "audit.deny_interval: must be at most 24h");
        assert_config_problem("'free_space_floor': true",
                              "audit.free_space_floor: expected bytes (integer) or a string such "
                              "as \"64M\" or \"5%\", got boolean");
        assert_config_problem("'free_space_floor': -1",
                              "audit.free_space_floor: must not be negative");
        assert_config_problem("'free_space_floor': '101%'",
                              "audit.free_space_floor: a percentage must be between 0 and 100, "
                              "got \"101%\"");
        assert_config_problem("'free_space_floor': '99999999999T'",
                              "audit.free_space_floor: size too large: \"99999999999T\"");
        static const char *const bad[] = {"'5x'", "'M'", "''", "'-5M'", "'5MiB'", "'5 M'", "'5%%'"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char sq[64], want[256];
                snprintf(sq, sizeof(sq), "'free_space_floor': %s", bad[i]);
                snprintf(want, sizeof(want),
                         "audit.free_space_floor: invalid size \"%.*s\": expected a number of "
                         "bytes, with K, M, G or T, or a percentage (e.g. \"64M\", \"5%%\")",
                         (int) strlen(bad[i]) - 2, bad[i] + 1);
                assert_config_problem(sq, want);
        }
        /* all at once, each with its path */
        assert_config_problem("'deny_budget': 'x', 'free_space_floor': true, 'deny_typo': 1",
                              "audit.deny_typo: unknown key");
}

/* ---- the rate limit ------------------------------------------------------------------------ */

static void test_rate_limit(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c =
            config_make(ISSUER, "{'rate': 1, 'burst': 3}", "[" WEB_RULE "]");
        Answer *a = answers(e, 6);
        Caller *other = NULL;
        IssuanceStats st;

        env_start(e, c, 2, true);
        for (size_t i = 0; i < 3; i++)
                assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[i]), 0);
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[3]), -EAGAIN);
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[4]), -EAGAIN);
        st = stats(e);
        assert_int_equal(st.rate_limited, 2);
        assert_int_equal(st.in_flight, 3);
        assert_true(atomic_load(&e->sink.expected) <= 3);

        wait_answers(e, 3);
        assert_quiet(e);
        for (size_t i = 0; i < 3; i++)
                assert_int_equal(a[i].status, ISSUE_GRANTED);
        assert_int_equal(a[3].calls, 0);
        assert_int_equal(a[4].calls, 0);
        /* the refused ones reached neither the signer nor the grant log */
        assert_int_equal(atomic_load(&e->sink.submits), 3);
        assert_int_equal(sink_count(&e->sink), 3);
        assert_int_equal(atomic_load(&keys.calls), 3);

        /* an answer returns no token to the bucket */
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[4]), -EAGAIN);
        /* another identity has a bucket of its own */
        assert_int_equal(
            caller_from_cred(&(struct ucred){.pid = 1, .uid = 4242, .gid = 4242}, &other), 0);
        assert_int_equal(issue(e, other, "{'audience': '" AUD "'}", &a[5]), 0);
        wait_answers(e, 4);
        assert_quiet(e);
        assert_int_equal(a[4].calls, 0);
        assert_int_equal(a[5].status, ISSUE_DENIED);
        st = stats(e);
        assert_int_equal(st.rate_limited, 3);
        assert_int_equal(st.grants, 3);
        assert_int_equal(st.denials, 1);
        assert_int_equal(st.in_flight, 0);
        caller_unref(other);
}

/* ---- the grant log fails ------------------------------------------------------------------- */

static void log_fails_case(void **state, bool threaded_sink)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        _cleanup_(json_decrefp_) json_t *rec = NULL;
        Answer *a = answers(e, 2);
        IssuanceStats st;

        e->sink.result = -EIO;
        env_start(e, c, 2, threaded_sink);
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[0]), 0);
        assert_int_equal(issue(e, e->self, "{'audience': 'https://evil.example.org'}", &a[1]), 0);
        wait_answers(e, 2);
        assert_quiet(e);
        assert_failed(&a[0], ISSUE_UNAVAILABLE);
        assert_int_equal(a[0].expires_at, 0);
        /* a denial that cannot be recorded is not answered "denied" either */
        assert_failed(&a[1], ISSUE_UNAVAILABLE);
        /* the grant was decided and handed to the log, which could not keep it */
        assert_int_equal(sink_count(&e->sink), 2);
        st = stats(e);
        assert_int_equal(st.grants, 0);
        assert_int_equal(st.denials, 0);
        assert_int_equal(st.in_flight, 0);
}

static void test_log_fails_sink_thread(void **state)
{
        log_fails_case(state, true);
}

static void test_log_fails_sink_inline(void **state)
{
        log_fails_case(state, false);
}

/* The log refuses the record outright: stopping is "unavailable", anything else "internal";
 * either way exactly one answer and no token. */
static void test_log_refuses(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        Answer *a = answers(e, 2);
        _cleanup_free_ char *log = NULL;
        IssuanceStats st;

        env_start(e, c, 2, false);
        e->sink.submit_error = -ESHUTDOWN;
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[0]), 0);
        wait_answers(e, 1);
        e->sink.submit_error = -ENOMEM;
        capture_begin();
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[1]), 0);
        wait_answers(e, 2);
        assert_quiet(e);
        log = capture_end();
        assert_logged(log, "Cannot queue the grant record");
        assert_failed(&a[0], ISSUE_UNAVAILABLE);
        assert_failed(&a[1], ISSUE_INTERNAL);
        st = stats(e);
        assert_int_equal(st.grants, 0);
        assert_int_equal(st.in_flight, 0);
}

/* No active key: an internal error, no token, nothing recorded as granted. */
static void test_no_key(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        Answer *a = answers(e, 1);
        _cleanup_free_ char *log = NULL;
        IssuanceStats st;

        keys.none = true;
        env_start(e, c, 2, true);
        capture_begin();
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[0]), 0);
        wait_answers(e, 1);
        assert_quiet(e);
        log = capture_end();
        assert_logged(log, "No active ES256 key");
        assert_failed(&a[0], ISSUE_INTERNAL);
        for (size_t i = 0; i < sink_count(&e->sink); i++)
                assert_null(strstr(e->sink.texts[i], "\"grant\""));
        st = stats(e);
        assert_int_equal(st.grants, 0);
        assert_int_equal(st.in_flight, 0);
}

/* ---- a reload while requests are queued ----------------------------------------------------- */

static void test_reload_in_flight(void **state)
{
        Env *e = *state;
        Config *before = web_config();
        _cleanup_(config_unrefp) Config *after = config_make(
            ISSUER2, NULL,
            "[{'name': 'web2', 'match': {'uid': $UID}, 'subject': 'spiffe://example.org/{rule}',"
            " 'audiences': ['" AUD "'], 'alg': 'EdDSA', 'max_ttl': '2m'}]");
        Answer *a = answers(e, 10);
        char subject[128];
        IssuanceStats st;

        env_start(e, before, 2, true);
        snprintf(subject, sizeof(subject), "spiffe://example.org/uid/%u/web", (unsigned) getuid());
        block_workers(e);
        for (size_t i = 0; i < 5; i++)
                assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[i]), 0);
        issuance_set_config(e->svc, after);
        /* only the queued requests hold the old config now */
        config_unref(before);
        for (size_t i = 5; i < 10; i++)
                assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[i]), 0);
        assert_int_equal(stats(e).in_flight, 10);
        assert_int_equal(sink_count(&e->sink), 0); /* all of them were queued */
        /* each queued request is announced to the grant log, so its commit can wait for it */
        assert_int_equal(atomic_load(&e->sink.expected), 10);
        gate_open(&e->gate);
        wait_answers(e, 10);
        assert_quiet(e);

        for (size_t i = 0; i < 10; i++) {
                _cleanup_(json_decrefp_) json_t *rec = NULL;

                if (a[i].status != ISSUE_GRANTED)
                        fail_msg("request %zu: status %d: %s", i, a[i].status, a[i].message);
                rec = record_by_jti(e, a[i].jti);
                if (i < 5)
                        assert_grant(e, &a[i], rec,
                                     &(WantGrant){.key = keys.es256,
                                                  .issuer = ISSUER,
                                                  .rule = "web",
                                                  .subject = subject,
                                                  .audience = AUD,
                                                  .ttl = 300,
                                                  .caller = e->self});
                else
                        assert_grant(e, &a[i], rec,
                                     &(WantGrant){.key = keys.eddsa,
                                                  .issuer = ISSUER2,
                                                  .rule = "web2",
                                                  .subject = "spiffe://example.org/web2",
                                                  .audience = AUD,
                                                  .ttl = 120,
                                                  .caller = e->self});
        }
        st = stats(e);
        assert_int_equal(st.grants, 10);
        assert_int_equal(st.in_flight, 0);
        assert_int_equal(atomic_load(&e->sink.expected), 0);
        assert_false(atomic_load(&e->sink.expect_violation));
}

/* ---- many at once -----------------------------------------------------------------------------
 */

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Requests far beyond the workers' number, answered from the sink's thread while more are being
 * taken: every done runs once, on the loop, and in_flight counts exactly what is unanswered. */
static void test_many_at_once(void **state)
{
        enum { N = 1000, THREADS = 4 };
        Env *e = *state;
        /* a budget for every denial: each has a record of its own */
        _cleanup_(config_unrefp) Config *c =
            config_make_audit(ISSUER, "{'rate': 0}", "'deny_budget': 1000", "[" WEB_RULE "]");
        Answer *a = answers(e, N);
        _cleanup_free_ char **jtis = calloc(N, sizeof(char *));
        size_t n_jti = 0, n_denied = 0;
        IssuanceStats st;

        assert_non_null(jtis);
        env_start(e, c, THREADS, true);
        assert_int_equal(workers_count(e->workers), THREADS);
        for (size_t i = 0; i < N; i++) {
                /* every third is denied */
                assert_int_equal(issue(e, e->self,
                                       i % 3 == 2 ? "{'audience': 'https://evil.example.org'}"
                                                  : "{'audience': '" AUD "', 'scopes': ['read']}",
                                       &a[i]),
                                 0);
                if (i % 64 == 63)
                        (void) mailbox_dispatch(e->mailbox);
                st = stats(e);
                assert_int_equal(st.in_flight, i + 1 - e->answered);
        }
        wait_answers(e, N);
        assert_quiet(e);

        for (size_t i = 0; i < N; i++) {
                if (a[i].calls != 1)
                        fail_msg("request %zu answered %u times", i, a[i].calls);
                assert_true(a[i].on_loop);
                if (i % 3 == 2) {
                        assert_int_equal(a[i].status, ISSUE_DENIED);
                        assert_null(a[i].token);
                        n_denied++;
                } else {
                        assert_int_equal(a[i].status, ISSUE_GRANTED);
                        assert_non_null(a[i].token);
                        jtis[n_jti++] = a[i].jti;
                }
        }
        qsort(jtis, n_jti, sizeof(char *), cmp_str);
        for (size_t i = 1; i < n_jti; i++)
                assert_string_not_equal(jtis[i - 1], jtis[i]);
        assert_int_equal(sink_count(&e->sink), N);
        st = stats(e);
        assert_int_equal(st.grants, n_jti);
        assert_int_equal(st.denials, n_denied);
        assert_int_equal(st.in_flight, 0);
        assert_int_equal(st.rate_limited, 0);
}

/* Drained workers: the service says the daemon is stopping, and never answers. */
static void test_workers_drained(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = web_config();
        Answer *a = answers(e, 1);

        env_start(e, c, 2, true);
        workers_drain(e->workers);
        assert_int_equal(issue(e, e->self, "{'audience': '" AUD "'}", &a[0]), -ESHUTDOWN);
        assert_quiet(e);
        assert_int_equal(a[0].calls, 0);
        assert_int_equal(stats(e).in_flight, 0);
        assert_int_equal(atomic_load(&e->sink.submits), 0);
        /* a request not taken is not announced either */
        assert_int_equal(atomic_load(&e->sink.expected), 0);
}

/* Requests taken inside a loop iteration, as the transport takes them. */
typedef struct LoopIssue {
        Env *env;
        size_t n;
        int r;
} LoopIssue;

static int issue_in_iteration(sd_event_source *src, void *userdata)
{
        LoopIssue *li = userdata;

        for (size_t i = 0; i < li->n && li->r == 0; i++)
                li->r = issue(li->env, li->env->self,
                              i % 2 ? "{'audience': '" AUD "'}"
                                    : "{'audience': 'https://evil.example.org'}",
                              &li->env->answers[i]);
        return 0;
}

/* The daemon's wiring: the answers come from the sd_event loop itself, every request of a burst
 * and a lone one alike (a worker is woken for them at the end of the iteration). */
static void test_event_loop_wiring(void **state)
{
        Env *e = *state;
        _cleanup_(config_unrefp) Config *c = config_make(ISSUER, "{'rate': 0}", "[" WEB_RULE "]");
        size_t bursts[] = {1, 3, 40}, total = 0;
        Answer *a = answers(e, 40 + 3 + 1);

        env_start_loop(e, c, 4);
        for (size_t b = 0; b < ELEMENTSOF(bursts); b++) {
                LoopIssue li = {.env = e, .n = bursts[b]};
                Answer *saved = e->answers;
                sd_event_source *src = NULL;
                uint64_t deadline = now_mono_usec() + WAIT_USEC;

                e->answers = a + total; /* this burst's slots */
                assert_int_equal(sd_event_add_defer(e->event, &src, issue_in_iteration, &li), 0);
                assert_int_equal(sd_event_source_set_enabled(src, SD_EVENT_ONESHOT), 0);
                while (e->answered < total + bursts[b]) {
                        if (now_mono_usec() > deadline)
                                fail_msg("burst of %zu: %zu answers from the loop", bursts[b],
                                         e->answered - total);
                        assert_true(sd_event_run(e->event, 100 * 1000) >= 0);
                }
                e->answers = saved;
                sd_event_source_disable_unref(src);
                assert_int_equal(li.r, 0);
                for (size_t i = 0; i < bursts[b]; i++) {
                        Answer *x = &a[total + i];
                        assert_int_equal(x->calls, 1);
                        assert_true(x->on_loop);
                        assert_int_equal(x->status, i % 2 ? ISSUE_GRANTED : ISSUE_DENIED);
                }
                total += bursts[b];
        }
        assert_int_equal(stats(e).in_flight, 0);
        assert_int_equal(sink_count(&e->sink), total);
}

static int group_setup(void **state)
{
        if (sodium_init() < 0 || signer_init() < 0)
                return -1;
        if (signing_key_generate(ALG_EDDSA, 0, &keys.eddsa) < 0 ||
            signing_key_generate(ALG_ES256, 0, &keys.es256) < 0)
                return -1;
        return 0;
}

static int group_teardown(void **state)
{
        signing_key_unref(keys.eddsa);
        signing_key_unref(keys.es256);
        return 0;
}

#define T(f) cmocka_unit_test_setup_teardown(f, env_setup, env_teardown)

int main(void)
{
        const struct CMUnitTest tests[] = {
            T(test_grant_sink_thread),
            T(test_grant_sink_inline),
            T(test_grant_eddsa),
            T(test_deny_no_rule),
            T(test_deny_audience),
            T(test_deny_audience_two_labels),
            T(test_deny_scope),
            T(test_deny_subject),
            T(test_deny_identity_cred_only),
            T(test_caller_gone),
            T(test_caller_gone_before_identify),
            T(test_rate_limit),
            T(test_log_fails_sink_thread),
            T(test_log_fails_sink_inline),
            T(test_log_refuses),
            T(test_no_key),
            T(test_reload_in_flight),
            T(test_many_at_once),
            T(test_workers_drained),
            T(test_event_loop_wiring),
            T(test_deny_budget),
            T(test_deny_budget_per_uid_grants_never_counted),
            T(test_deny_interval),
            T(test_deny_counted_is_answered_before_any_commit),
            T(test_deny_below_floor),
            T(test_deny_summary_write_fails),
            T(test_deny_record_bounded),
            T(test_deny_summaries_from_the_loop),
            cmocka_unit_test(test_audit_config_keys),
        };

        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
