#include "daemon/keyschedule.h"

#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "keys/publish.h"
#include "timeutil.h"

#define USEC_PER_SEC 1000000ULL
/* How often the boottime tick re-checks the schedule against the wall clock. */
#define TICK_MAX_SEC 60u

void key_policy_from_config(const Config *c, KeyPolicy *ret)
{
        *ret = (KeyPolicy){
            .rotation_period = c->keys.rotation_period,
            .publish_ahead = c->keys.publish_ahead,
            .retention = c->keys.retention,
            .rsa_bits = c->keys.rsa_bits,
        };
        ret->algs[ALG_EDDSA] = true; /* the default algorithm always has a key */
        for (size_t i = 0; i < c->n_rules; i++)
                ret->algs[c->rules[i].alg] = true;
}

static void audit_key_event(Server *s, const KeyEvent *e)
{
        json_t *f = json_pack("{s:s, s:s}", "alg", alg_to_string(e->alg), "kid", e->kid);

        if (f && e->state)
                json_object_set_new(f, "state", json_string(e->state));
        if (f && e->other_kid[0])
                json_object_set_new(
                    f, strcmp(e->event, "key_revoked") == 0 ? "replacement_kid" : "retired_kid",
                    json_string(e->other_kid));
        log_notice("%s: %s key %s%s%s", e->event, alg_to_string(e->alg), e->kid,
                   e->other_kid[0] ? " / " : "", e->other_kid);
        server_audit_event(s, e->event, f);
}

static void publish(Server *s)
{
        _cleanup_(json_decrefp) json_t *jwks = NULL;
        int64_t now = now_unix_sec();
        bool algs[_ALG_MAX];

        if (!s->config->publish_directory)
                return;
        jwks = keystore_jwks(s->keys, now);
        keystore_published_algs(s->keys, now, algs);
        if (!jwks || publish_write(s->config->publish_directory, s->config->issuer, jwks, algs) < 0)
                log_error("Publishing the JWKS to %s failed; relying parties may miss key "
                          "changes until the next one succeeds",
                          s->config->publish_directory);
}

static void arm_timer(Server *s)
{
        KeyPolicy p;
        int64_t d;

        key_policy_from_config(s->config, &p);
        d = keystore_next_deadline(s->keys, &p);
        if (d == INT64_MAX) {
                (void) sd_event_source_set_enabled(s->key_timer, SD_EVENT_OFF);
                return;
        }
        uint64_t at = d <= 0 ? 1 : (uint64_t) d * USEC_PER_SEC;
        (void) sd_event_source_set_time(s->key_timer, at);
        (void) sd_event_source_set_enabled(s->key_timer, SD_EVENT_ONESHOT);
}

void key_schedule_changed(Server *s, const KeyEvents *ev)
{
        for (size_t i = 0; i < ev->n; i++)
                audit_key_event(s, &ev->e[i]);
        if (ev->n > 0)
                publish(s);
        arm_timer(s);
}

int key_schedule_run(Server *s)
{
        KeyEvents ev = {};
        KeyPolicy p;
        int r;

        key_policy_from_config(s->config, &p);
        r = keystore_advance(s->keys, &p, now_unix_sec(), &ev);
        if (r < 0)
                log_error_errno(r, "Key schedule could not be applied; retrying later: %m");
        key_schedule_changed(s, &ev);
        return r;
}

static int on_key_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
        (void) key_schedule_run(userdata);
        return 0;
}

static int on_key_tick(sd_event_source *src, uint64_t usec, void *userdata)
{
        Server *s = userdata;

        (void) key_schedule_run(s);
        (void) sd_event_source_set_time_relative(src, TICK_MAX_SEC * USEC_PER_SEC);
        return 0;
}

int key_schedule_start(Server *s)
{
        int r;

        /* Second-exact: the schedule is in whole seconds and tests use periods of seconds. */
        r = sd_event_add_time(s->event, &s->key_timer, CLOCK_REALTIME, UINT64_MAX, 1, on_key_timer,
                              s);
        if (r >= 0)
                r = sd_event_add_time_relative(s->event, &s->key_tick, CLOCK_BOOTTIME,
                                               TICK_MAX_SEC * USEC_PER_SEC, USEC_PER_SEC,
                                               on_key_tick, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->key_tick, SD_EVENT_ON);
        if (r < 0)
                return log_error_errno(r, "Cannot set up key timers: %m");
        r = key_schedule_run(s);
        if (r < 0)
                return r;
        /* Written at every start, so the files match the store even if the last run died
         * between a key change and its publication. */
        publish(s);
        return 0;
}

void key_schedule_stop(Server *s)
{
        s->key_timer = sd_event_source_disable_unref(s->key_timer);
        s->key_tick = sd_event_source_disable_unref(s->key_tick);
}
