#include "grantlog/record.h"

#include <string.h>

#include "escape.h"
#include "json-util.h"
#include "macro.h"
#include "timeutil.h"

static int set_text(json_t *o, const char *key, const char *value)
{
        _cleanup_free_ char *e = NULL;

        if (!value)
                return json_object_set_new(o, key, json_null());
        e = text_escape(value);
        return e ? json_object_set_new(o, key, json_string(e)) : -1;
}

json_t *grantlog_peer_new(const GrantlogPeer *p, bool with_groups)
{
        _cleanup_(json_decrefp) json_t *o = json_object();
        bool id = p->identified;
        int r = 0;

        if (!o)
                return NULL;
        r |= json_object_set_new(o, "uid", json_integer(p->uid));
        r |= json_object_set_new(o, "gid", json_integer(p->gid));
        if (with_groups) {
                json_t *g = json_array();
                for (size_t i = 0; g && id && i < p->n_groups; i++)
                        r |= json_array_append_new(g, json_integer(p->groups[i]));
                r |= json_object_set_new(o, "groups", g);
        }
        r |= json_object_set_new(o, "pid", json_integer(p->pid));
        r |= set_text(o, "user", id ? p->user : NULL);
        r |= set_text(o, "group", id ? p->group : NULL);
        r |= set_text(o, "exe", id ? p->exe : NULL);
        r |= set_text(o, "cgroup", id ? p->cgroup : NULL);
        r |= set_text(o, "unit", id ? p->unit : NULL);
        r |= json_object_set_new(o, "user_delegated", json_boolean(id && p->user_delegated));
        r |= set_text(o, "container", id ? p->container : NULL);
        return r == 0 ? TAKE_PTR(o) : NULL;
}

json_t *grantlog_record_new(const char *event, int64_t time_ms, json_t *fields)
{
        _cleanup_(json_decrefp) json_t *f = fields;
        char t[TIME_RFC3339_MAX];
        json_t *rec;

        time_format_rfc3339_ms(time_ms, t);
        rec = json_pack("{s:s, s:s}", "time", t, "event", event);
        if (rec && f && json_object_update(rec, f) < 0) {
                json_decref(rec);
                return NULL;
        }
        return rec;
}

json_t *grantlog_record_decision(const GrantlogDecision *d, int64_t time_ms)
{
        _cleanup_(json_decrefp) json_t *rec =
            grantlog_record_new(d->granted ? "grant" : "deny", time_ms, NULL);
        json_t *scopes = json_array();
        int r = 0;

        if (!rec || !scopes) {
                json_decref(scopes);
                return NULL;
        }
        for (size_t i = 0; i < d->n_scopes; i++)
                r |= json_array_append_new(scopes, json_string(d->scopes[i]));
        r |= json_object_set_new(rec, "scopes", scopes);
        r |= json_object_set(rec, "peer", d->peer);
        r |= json_object_set_new(rec, "audience", json_string(d->audience));
        if (d->rule)
                r |= json_object_set_new(rec, "rule", json_string(d->rule));
        if (!d->granted)
                r |= json_object_set_new(rec, "reason", json_string(d->reason));
        else {
                r |= json_object_set_new(rec, "subject", json_string(d->subject));
                r |= json_object_set_new(rec, "alg", json_string(d->alg));
                r |= json_object_set_new(rec, "kid", json_string(d->kid));
                r |= json_object_set_new(rec, "jti", json_string(d->jti));
                r |= json_object_set_new(rec, "expires_at", json_integer(d->expires_at));
                r |= json_object_set_new(rec, "token_sha256", json_string(d->token_sha256));
        }
        return r == 0 ? TAKE_PTR(rec) : NULL;
}

bool grantlog_event_known(const char *event)
{
        static const char *const events[] = {
            "grant",       "deny",        "started",      "stopped",     "config_reloaded",
            "key_created", "key_rotated", "key_retired",  "key_removed", "key_revoked",
            "audit_key",   "checkpoint",  "audit_pruned",
        };

        for (size_t i = 0; event && i < ELEMENTSOF(events); i++)
                if (strcmp(event, events[i]) == 0)
                        return true;
        return false;
}
