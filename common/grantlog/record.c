#include "grantlog/record.h"

#include <stdio.h>
#include <string.h>

#include "escape.h"
#include "grantlog/format.h"
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

json_t *grantlog_record_lifecycle(const char *event, int64_t time_ms, const GrantlogOrigin *origin,
                                  json_t *fields)
{
        _cleanup_(json_decrefp) json_t *rec = grantlog_record_new(event, time_ms, fields);
        json_t *o;

        if (!rec || !origin)
                return TAKE_PTR(rec);
        o = origin->signal ? json_pack("{s:s, s:I, s:I}", "name", origin->signal, "uid",
                                       (json_int_t) origin->uid, "pid", (json_int_t) origin->pid)
                           : json_pack("{s:I, s:I}", "uid", (json_int_t) origin->uid, "pid",
                                       (json_int_t) origin->pid);
        if (!o || json_object_set_new(rec, origin->signal ? "signal" : "admin", o) < 0)
                return NULL;
        return TAKE_PTR(rec);
}

json_t *grantlog_record_config_reloaded(int64_t time_ms, const GrantlogOrigin *origin,
                                        const char *path, const char *config_sha256, size_t n_rules)
{
        json_t *f = json_object();

        if (!f || set_text(f, "path", path) < 0 ||
            json_object_set_new(f, "config_sha256", json_string(config_sha256)) < 0 ||
            json_object_set_new(f, "rules", json_integer((json_int_t) n_rules)) < 0) {
                json_decref(f);
                return NULL;
        }
        return grantlog_record_lifecycle("config_reloaded", time_ms, origin, f);
}

json_t *grantlog_record_config_reload_failed(int64_t time_ms, const GrantlogOrigin *origin,
                                             const char *path, const char *error)
{
        json_t *f = json_object();

        /* the error quotes the file, which a typo can fill with anything */
        if (!f || set_text(f, "path", path) < 0 || set_text(f, "error", error) < 0) {
                json_decref(f);
                return NULL;
        }
        return grantlog_record_lifecycle("config_reload_failed", time_ms, origin, f);
}

/* The stand-in for a long value of a denial (record.h): its length and hash, and a prefix cut
 * where a character or a \xNN escape begins, so the prefix is valid UTF-8 and unambiguous. */
static json_t *truncated_new(const char *text, size_t len)
{
        char hash[GRANTLOG_HASH_HEX];
        size_t cut = MIN(len, (size_t) GRANTLOG_DENY_PREFIX);

        if (cut < len)
                while (cut > 0 && ((unsigned char) text[cut] & 0xc0) == 0x80)
                        cut--;
        for (size_t back = 1; back <= 3 && back <= cut; back++)
                if (text[cut - back] == '\\') {
                        cut -= back;
                        break;
                }
        grantlog_hash_hex(text, len, hash);
        return json_pack("{s:b, s:I, s:s, s:s%}", "truncated", true, "length", (json_int_t) len,
                         "sha256", hash, "prefix", text, cut);
}

/* A string of a denial, as it is or truncated. */
static json_t *bounded_text(const char *text)
{
        size_t len = strlen(text);

        return len > GRANTLOG_DENY_TEXT_MAX ? truncated_new(text, len) : json_string(text);
}

static json_t *bounded_scopes(const char *const *scopes, size_t n)
{
        _cleanup_free_ char *joined = NULL;
        size_t len = 0;
        json_t *v;
        FILE *m;

        for (size_t i = 0; i < n; i++)
                len += strlen(scopes[i]) + (i > 0);
        if (n <= GRANTLOG_DENY_SCOPES_MAX && len <= GRANTLOG_DENY_SCOPES_TEXT_MAX) {
                json_t *a = json_array();
                for (size_t i = 0; a && i < n; i++)
                        if (json_array_append_new(a, json_string(scopes[i])) < 0) {
                                json_decref(a);
                                return NULL;
                        }
                return a;
        }
        m = open_memstream(&joined, &len);
        if (!m)
                return NULL;
        for (size_t i = 0; i < n; i++)
                fprintf(m, "%s%s", i ? " " : "", scopes[i]);
        if (fclose(m) != 0)
                return NULL;
        v = truncated_new(joined, len);
        if (v && json_object_set_new(v, "count", json_integer((json_int_t) n)) < 0) {
                json_decref(v);
                return NULL;
        }
        return v;
}

/* The peer of a denial: every long string truncated. A copy: the peer is the connection's. */
static json_t *bounded_peer(json_t *peer)
{
        _cleanup_(json_decrefp) json_t *o = json_copy(peer);
        const char *key;
        json_t *v;

        if (!o)
                return NULL;
        json_object_foreach (o, key, v)
                if (json_is_string(v) && json_string_length(v) > GRANTLOG_DENY_TEXT_MAX) {
                        json_t *t = truncated_new(json_string_value(v), json_string_length(v));
                        if (!t || json_object_set_new(o, key, t) < 0)
                                return NULL;
                }
        return TAKE_PTR(o);
}

json_t *grantlog_record_decision(const GrantlogDecision *d, int64_t time_ms)
{
        _cleanup_(json_decrefp) json_t *rec =
            grantlog_record_new(d->granted ? "grant" : "deny", time_ms, NULL);
        json_t *scopes, *peer, *audience;
        int r = 0;

        if (!rec)
                return NULL;
        if (d->granted) {
                scopes = json_array();
                for (size_t i = 0; scopes && i < d->n_scopes; i++)
                        r |= json_array_append_new(scopes, json_string(d->scopes[i]));
                peer = json_incref(d->peer);
                audience = d->audience ? json_string(d->audience) : NULL;
        } else {
                scopes = bounded_scopes(d->scopes, d->n_scopes);
                peer = bounded_peer(d->peer);
                audience = d->audience ? bounded_text(d->audience) : NULL;
        }
        r |= json_object_set_new(rec, "scopes", scopes);
        r |= json_object_set_new(rec, "peer", peer);
        /* an upstream's token has no audience of the broker's choosing */
        if (d->audience)
                r |= json_object_set_new(rec, "audience", audience);
        if (d->upstream)
                r |= json_object_set(rec, "upstream", d->upstream);
        if (d->rule)
                r |= json_object_set_new(rec, "rule", json_string(d->rule));
        if (!d->granted)
                r |= json_object_set_new(rec, "reason", json_string(d->reason));
        else {
                r |= json_object_set_new(rec, "subject", json_string(d->subject));
                if (d->alg)
                        r |= json_object_set_new(rec, "alg", json_string(d->alg));
                if (d->kid)
                        r |= json_object_set_new(rec, "kid", json_string(d->kid));
                if (d->jti)
                        r |= json_object_set_new(rec, "jti", json_string(d->jti));
                r |= json_object_set_new(rec, "expires_at", json_integer(d->expires_at));
                r |= json_object_set_new(rec, "token_sha256", json_string(d->token_sha256));
        }
        return r == 0 ? TAKE_PTR(rec) : NULL;
}

json_t *grantlog_upstream_new(const GrantlogUpstream *u)
{
        _cleanup_(json_decrefp) json_t *o = json_pack("{s:s}", "name", u->name);
        int r = 0;

        if (!o)
                return NULL;
        if (u->kind)
                r |= json_object_set_new(o, "kind", json_string(u->kind));
        if (u->cache)
                r |= json_object_set_new(o, "cache", json_string(u->cache));
        if (u->http_status > 0)
                r |= json_object_set_new(o, "http_status", json_integer(u->http_status));
        if (u->request_id && u->request_id[0])
                r |= json_object_set_new(o, "request_id", json_string(u->request_id));
        if (u->expires_at > 0)
                r |= json_object_set_new(o, "expires_at", json_integer(u->expires_at));
        if (u->scope)
                r |= json_object_set_new(o, "scope", json_string(u->scope));
        if (u->error && u->error[0])
                r |= json_object_set_new(o, "error", json_string(u->error));
        return r == 0 ? TAKE_PTR(o) : NULL;
}

json_t *grantlog_record_deny_summary(const GrantlogDenySummary *s, int64_t time_ms)
{
        char first[TIME_RFC3339_MAX], last[TIME_RFC3339_MAX];
        json_t *fields;

        time_format_rfc3339_ms(s->first_ms, first);
        time_format_rfc3339_ms(s->last_ms, last);
        /* "peer" holds only the uid: the denials came from any of its processes */
        fields =
            json_pack("{s:{s:o}, s:s, s:I, s:I, s:s, s:s, s:I, s:I}", "peer", "uid",
                      s->uid_known ? json_integer(s->uid) : json_null(), "reason", s->reason,
                      "count", (json_int_t) s->count, "below_floor", (json_int_t) s->below_floor,
                      "first_time", first, "last_time", last, "budget", (json_int_t) s->budget,
                      "interval_s", (json_int_t) s->interval_s);
        return fields ? grantlog_record_new("deny_summary", time_ms, fields) : NULL;
}

bool grantlog_event_known(const char *event)
{
        static const char *const events[] = {
            "grant",           "deny",        "deny_summary", "started",      "stopped",
            "config_reloaded", "key_created", "key_rotated",  "key_retired",  "key_removed",
            "key_revoked",     "audit_key",   "checkpoint",   "audit_pruned", "secret_set",
            "secret_deleted",  "upstream_tested", "config_reload_failed",
        };

        for (size_t i = 0; event && i < ELEMENTSOF(events); i++)
                if (strcmp(event, events[i]) == 0)
                        return true;
        return false;
}
