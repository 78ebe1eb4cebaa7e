#include "keys/keyservice.h"

#include <pthread.h>
#include <string.h>

#include "grantlog/record.h"
#include "json-util.h"
#include "keys/publish.h"
#include "log.h"
#include "messageid.h"
#include "macro.h"
#include "timeutil.h"

#define USEC_PER_SEC 1000000ULL
/* How often the boottime tick re-checks the schedule against the wall clock. */
#define TICK_MAX_SEC 60u

struct KeyService {
        sd_event *event;
        KeyStore *store;
        GrantSink sink;
        KeyPolicy policy;
        char *issuer, *publish_directory;
        sd_event_source *timer, *tick;
        int64_t publish_success; /* unix seconds of the last publication that worked, 0: none */
        char *publish_error;     /* what the last one that failed said; NULL once one works */

        /* What the workers sign with: a copy of the store's active keys, each with a reference
         * of its own, swapped under the lock after every change. */
        pthread_mutex_t lock;
        SigningKey *active[_ALG_MAX];
};

static void refresh_active(KeyService *ks)
{
        SigningKey *old[_ALG_MAX];

        pthread_mutex_lock(&ks->lock);
        for (int a = 0; a < _ALG_MAX; a++) {
                SigningKey *k = keystore_active(ks->store, a);
                old[a] = ks->active[a];
                ks->active[a] = k ? signing_key_ref(k) : NULL;
        }
        pthread_mutex_unlock(&ks->lock);
        for (int a = 0; a < _ALG_MAX; a++)
                if (old[a])
                        signing_key_unref(old[a]);
}

SigningKey *keyservice_active(KeyService *ks, Alg alg)
{
        SigningKey *k;

        if ((unsigned) alg >= _ALG_MAX)
                return NULL;
        pthread_mutex_lock(&ks->lock);
        k = ks->active[alg] ? signing_key_ref(ks->active[alg]) : NULL;
        pthread_mutex_unlock(&ks->lock);
        return k;
}

static void audit_event(KeyService *ks, const KeyEvent *e, const GrantlogOrigin *origin)
{
        int64_t now = now_unix_ms();
        json_t *f = json_pack("{s:s, s:s}", "alg", alg_to_string(e->alg), "kid", e->kid);
        json_t *rec;

        if (f && e->state)
                json_object_set_new(f, "state", json_string(e->state));
        if (f && e->other_kid[0])
                json_object_set_new(
                    f, strcmp(e->event, "key_revoked") == 0 ? "replacement_kid" : "retired_kid",
                    json_string(e->other_kid));
        log_struct(LOG_NOTICE, 0,
                   &(LogFields){.message_id = message_id_of_key_event(e->event), .kid = e->kid},
                   "%s: %s key %s%s%s", e->event, alg_to_string(e->alg), e->kid,
                   e->other_kid[0] ? " / " : "", e->other_kid);
        rec = f ? grantlog_record_lifecycle(e->event, now, origin, f) : NULL;
        /* Lifecycle records are not waited for; the grant log keeps and retries them. */
        if (!rec || ks->sink.submit(ks->sink.ctx, rec, now, false, NULL, NULL) < 0)
                log_error("%s of key %s could not be queued for the grant log", e->event, e->kid);
}

/* One attempt, one log line when it fails; status shows the outcome (keyservice_publish_status). */
static void publish(KeyService *ks)
{
        _cleanup_(json_decrefp) json_t *jwks = NULL;
        int64_t now = now_unix_sec();
        bool algs[_ALG_MAX];
        char err[1024] = "out of memory";
        int r = -ENOMEM;

        if (!ks->publish_directory)
                return;
        jwks = keystore_jwks(ks->store, now);
        keystore_published_algs(ks->store, now, algs);
        if (jwks)
                r = publish_write(ks->publish_directory, ks->issuer, jwks, algs, err, sizeof(err));
        if (r >= 0) {
                if (ks->publish_error)
                        log_notice("Published to %s again", ks->publish_directory);
                ks->publish_success = now;
                free(ks->publish_error);
                ks->publish_error = NULL;
                return;
        }
        free(ks->publish_error);
        ks->publish_error = strdup(err);
        if (r == -EPERM)
                log_struct(LOG_ERR, r, &(LogFields){.message_id = MESSAGE_ID_PUBLISH_FAILURE},
                           "Refusing to publish to %s: %s; relying parties may miss key changes "
                           "until a publication succeeds",
                           ks->publish_directory, err);
        else
                log_struct(LOG_ERR, r, &(LogFields){.message_id = MESSAGE_ID_PUBLISH_FAILURE},
                           "Cannot publish to %s: %s%s; relying parties may miss key changes "
                           "until a publication succeeds",
                           ks->publish_directory, err,
                           r == -EROFS ? " (under systemd's ProtectSystem=strict, list it in "
                                         "ReadWritePaths=)"
                                       : "");
}

static void arm_timer(KeyService *ks)
{
        int64_t d = keystore_next_deadline(ks->store, &ks->policy);

        if (d == INT64_MAX) {
                (void) sd_event_source_set_enabled(ks->timer, SD_EVENT_OFF);
                return;
        }
        uint64_t at = d <= 0 ? 1 : (uint64_t) d * USEC_PER_SEC;
        (void) sd_event_source_set_time(ks->timer, at);
        (void) sd_event_source_set_enabled(ks->timer, SD_EVENT_ONESHOT);
}

/* After every change of the store: the one place that audits, publishes and re-arms. Records
 * carry `origin` (who asked; NULL: the schedule). Returns whether it published. */
static bool changed(KeyService *ks, const KeyEvents *ev, const GrantlogOrigin *origin)
{
        for (size_t i = 0; i < ev->n; i++)
                audit_event(ks, &ev->e[i], origin);
        if (ev->n > 0) {
                refresh_active(ks);
                publish(ks);
        }
        arm_timer(ks);
        return ev->n > 0;
}

static int run_schedule(KeyService *ks, const GrantlogOrigin *origin, bool *ret_published)
{
        KeyEvents ev = {};
        int r = keystore_advance(ks->store, &ks->policy, now_unix_sec(), &ev);
        bool published;

        if (r < 0)
                log_error_errno(r, "Key schedule could not be applied; retrying later: %m");
        published = changed(ks, &ev, origin);
        if (ret_published)
                *ret_published = published;
        return r;
}

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
        (void) run_schedule(userdata, NULL, NULL);
        return 0;
}

static int on_tick(sd_event_source *src, uint64_t usec, void *userdata)
{
        (void) run_schedule(userdata, NULL, NULL);
        (void) sd_event_source_set_time_relative(src, TICK_MAX_SEC * USEC_PER_SEC);
        return 0;
}

static int apply_settings(KeyService *ks, const KeyServiceSettings *s)
{
        char *issuer = strdup(s->issuer);
        char *dir = s->publish_directory ? strdup(s->publish_directory) : NULL;

        if (!issuer || (s->publish_directory && !dir)) {
                free(issuer);
                free(dir);
                return -ENOMEM;
        }
        free(ks->issuer);
        free(ks->publish_directory);
        ks->issuer = issuer;
        ks->publish_directory = dir;
        ks->policy = s->policy;
        return 0;
}

int keyservice_new(sd_event *event, KeyStore *store, const GrantSink *sink,
                   const KeyServiceSettings *s, KeyService **ret)
{
        KeyService *ks = calloc(1, sizeof(KeyService));
        int r;

        if (!ks)
                return -ENOMEM;
        pthread_mutex_init(&ks->lock, NULL);
        ks->event = sd_event_ref(event);
        ks->store = store;
        ks->sink = *sink;
        r = apply_settings(ks, s);
        /* Second-exact: the schedule is in whole seconds and tests use periods of seconds. */
        if (r >= 0)
                r = sd_event_add_time(event, &ks->timer, CLOCK_REALTIME, UINT64_MAX, 1, on_timer,
                                      ks);
        if (r >= 0)
                r = sd_event_add_time_relative(event, &ks->tick, CLOCK_BOOTTIME,
                                               TICK_MAX_SEC * USEC_PER_SEC, USEC_PER_SEC, on_tick,
                                               ks);
        if (r >= 0)
                r = sd_event_source_set_enabled(ks->tick, SD_EVENT_ON);
        if (r < 0) {
                log_error_errno(r, "Cannot set up key timers: %m");
                keyservice_free(ks);
                return r;
        }
        bool published;
        r = run_schedule(ks, NULL, &published);
        if (r < 0) {
                keyservice_free(ks);
                return r;
        }
        refresh_active(ks);
        /* Written at every start, so the files match the store even if the last run died
         * between a key change and its publication (once: the schedule may have just done it). */
        if (!published)
                publish(ks);
        *ret = ks;
        return 0;
}

void keyservice_free(KeyService *ks)
{
        if (!ks)
                return;
        sd_event_source_disable_unref(ks->timer);
        sd_event_source_disable_unref(ks->tick);
        for (int a = 0; a < _ALG_MAX; a++)
                if (ks->active[a])
                        signing_key_unref(ks->active[a]);
        keystore_close(ks->store);
        sd_event_unref(ks->event);
        pthread_mutex_destroy(&ks->lock);
        free(ks->issuer);
        free(ks->publish_directory);
        free(ks->publish_error);
        free(ks);
}

int keyservice_update(KeyService *ks, const KeyServiceSettings *s, const GrantlogOrigin *origin)
{
        bool published;
        int r = apply_settings(ks, s);

        if (r < 0)
                return r;
        r = run_schedule(ks, origin, &published);
        /* Now, not at the next key change: the issuer (and jwks_uri with it) may be new, and
         * relying parties doing discovery would refuse tokens naming it until then. */
        if (!published)
                publish(ks);
        return r;
}

json_t *keyservice_publish_status(KeyService *ks)
{
        return json_pack("{s:s?, s:o, s:s?}", "directory", ks->publish_directory, "last_success",
                         ks->publish_success > 0 ? json_integer(ks->publish_success) : json_null(),
                         "last_error", ks->publish_error);
}

json_t *keyservice_jwks(KeyService *ks)
{
        return keystore_jwks(ks->store, now_unix_sec());
}

json_t *keyservice_list(KeyService *ks)
{
        return keystore_list(ks->store);
}

int keyservice_rotate(KeyService *ks, int alg, const GrantlogOrigin *origin, json_t **ret_rotated)
{
        _cleanup_(json_decrefp) json_t *rotated = json_array();
        int64_t now = now_unix_sec();
        KeyEvents ev = {};
        int r = 0, n = 0;

        if (!rotated)
                return -ENOMEM;
        /* The default algorithm's series first, then the others in order: the admin's reply
         * names the first one's new key. */
        for (int nth = 0; nth < _ALG_MAX && r >= 0; nth++) {
                int a = nth == 0 ? ALG_DEFAULT : nth <= ALG_DEFAULT ? nth - 1 : nth;

                if ((alg >= 0 && a != alg) || !keystore_active(ks->store, a))
                        continue;
                size_t first = ev.n;
                r = keystore_rotate(ks->store, &ks->policy, a, now, &ev);
                for (size_t i = first; r >= 0 && i < ev.n; i++)
                        if (strcmp(ev.e[i].event, "key_rotated") == 0 &&
                            json_array_append_new(rotated,
                                                  json_pack("{s:s, s:s, s:s}", "alg",
                                                            alg_to_string(a), "kid", ev.e[i].kid,
                                                            "retired_kid", ev.e[i].other_kid)) < 0)
                                r = -ENOMEM;
                n++;
        }
        changed(ks, &ev, origin);
        if (r < 0)
                return r;
        if (n == 0)
                return -ENOENT;
        *ret_rotated = TAKE_PTR(rotated);
        return 0;
}

int keyservice_revoke(KeyService *ks, const char *kid, const GrantlogOrigin *origin,
                      char ret_replacement[KID_LEN + 1])
{
        KeyEvents ev = {};
        int r = keystore_revoke(ks->store, &ks->policy, kid, now_unix_sec(), &ev);

        (void) changed(ks, &ev, origin);
        if (r < 0)
                return r;
        snprintf(ret_replacement, KID_LEN + 1, "%s", ev.n > 0 ? ev.e[ev.n - 1].other_kid : "");
        return 0;
}
