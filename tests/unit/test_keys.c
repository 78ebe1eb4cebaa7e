/* The key store and its schedule, on real SQLite files, with the clock passed in: each key goes
 * next -> active -> retired -> removed at exactly the times the policy gives, a next key is
 * published publish_ahead before it signs, a restart or a clock jump never creates, rotates or
 * loses a key, and nothing private reaches the disk unsealed. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <sqlite3.h>

#include "keys/keystore.h"
#include "macro.h"
#include "keys/seal.h"
#include "keys/signer.h"
#define TESTUTIL_MASTER_KEY
#include "testutil.h"

#define T0     INT64_C(1700000000)
#define PERIOD 100
#define AHEAD  20
#define RETAIN 30

static char dir[64];
static MasterKey *master;

/* ---- fixtures ----------------------------------------------------------------------------- */

static void keystore_closep(KeyStore **ks)
{
        keystore_close(*ks);
}

static int setup(void **state)
{
        if (tmpdir_make(dir, sizeof(dir), "keys") < 0 || chmod(dir, 0700) < 0)
                return -1;
        master = master_key_random("test master key");
        return 0;
}

static int teardown(void **state)
{
        master_key_free(master);
        master = NULL;
        return tmpdir_remove(dir);
}

static KeyPolicy policy(void)
{
        KeyPolicy p = {
            .rotation_period = PERIOD,
            .publish_ahead = AHEAD,
            .retention = RETAIN,
            .rsa_bits = 2048,
        };
        p.algs[ALG_EDDSA] = true;
        return p;
}

static KeyStore *open_store(const MasterKey *m)
{
        KeyStore *ks = NULL;

        assert_int_equal(keystore_open(dir, m, &ks), 0);
        assert_non_null(ks);
        return ks;
}

static const char *db_path(const char *suffix)
{
        static char b[4][160];
        static unsigned i;
        char *p = b[i++ % 4];

        snprintf(p, sizeof(b[0]), "%s/keys.db%s", dir, suffix);
        return p;
}

/* ---- what the store says ------------------------------------------------------------------ */

/* "event(alg[,state])" for each event, space-separated: a failure shows all that happened. */
static const char *describe(const KeyEvents *ev)
{
        static char buf[2048];
        size_t n = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < ev->n; i++) {
                const KeyEvent *e = &ev->e[i];
                n += (size_t) snprintf(buf + n, sizeof(buf) - n, "%s%s(%s%s%s)", i ? " " : "",
                                       e->event, alg_to_string(e->alg), e->state ? "," : "",
                                       e->state ? e->state : "");
                assert_true(n < sizeof(buf));
                assert_int_equal(strlen(e->kid), KID_LEN);
        }
        return buf;
}

/* Advances to `now` and checks that exactly `want` happened. */
static KeyEvents advance(KeyStore *ks, const KeyPolicy *p, int64_t now, const char *want)
{
        KeyEvents ev = {};
        int r = keystore_advance(ks, p, now, &ev);

        if (r != 0)
                fail_msg("keystore_advance(T0%+lld) = %d", (long long) (now - T0), r);
        if (strcmp(describe(&ev), want) != 0)
                fail_msg("at T0%+lld: events \"%s\", wanted \"%s\"", (long long) (now - T0),
                         describe(&ev), want);
        return ev;
}

typedef struct Info {
        char state[16];
        Alg alg;
        int64_t created, activated, retired, expires;
} Info;

static Info info(KeyStore *ks, const char *kid)
{
        _cleanup_(json_decrefp) json_t *l = keystore_list(ks);
        size_t i;
        json_t *o;
        Info x = {};

        assert_non_null(l);
        json_array_foreach (l, i, o) {
                if (strcmp(json_string_value(json_object_get(o, "kid")), kid) != 0)
                        continue;
                snprintf(x.state, sizeof(x.state), "%s",
                         json_string_value(json_object_get(o, "state")));
                x.alg = alg_from_string(json_string_value(json_object_get(o, "alg")));
                x.created = json_integer_value(json_object_get(o, "created_at"));
                x.activated = json_integer_value(json_object_get(o, "activated_at"));
                x.retired = json_integer_value(json_object_get(o, "retired_at"));
                x.expires = json_integer_value(json_object_get(o, "expires_at"));
                return x;
        }
        fail_msg("kid %s not in keystore_list", kid);
        return x;
}

static void assert_info(KeyStore *ks, const char *kid, const char *state, int64_t created,
                        int64_t activated, int64_t retired, int64_t expires)
{
        Info x = info(ks, kid);

        if (strcmp(x.state, state) != 0 || x.created != created || x.activated != activated ||
            x.retired != retired || x.expires != expires)
                fail_msg("key %s: %s created T0%+lld activated %lld retired %lld expires %lld; "
                         "wanted %s T0%+lld %lld %lld %lld (activated/retired/expires relative "
                         "to T0 when not 0)",
                         kid, x.state, (long long) (x.created - T0),
                         (long long) (x.activated ? x.activated - T0 : 0),
                         (long long) (x.retired ? x.retired - T0 : 0),
                         (long long) (x.expires ? x.expires - T0 : 0), state,
                         (long long) (created - T0), (long long) (activated ? activated - T0 : 0),
                         (long long) (retired ? retired - T0 : 0),
                         (long long) (expires ? expires - T0 : 0));
}

static size_t n_keys(KeyStore *ks)
{
        _cleanup_(json_decrefp) json_t *l = keystore_list(ks);

        assert_non_null(l);
        return json_array_size(l);
}

static bool in_jwks(KeyStore *ks, int64_t now, const char *kid)
{
        _cleanup_(json_decrefp) json_t *j = keystore_jwks(ks, now);
        json_t *keys = json_object_get(j, "keys"), *k;
        size_t i;

        assert_true(json_is_array(keys));
        json_array_foreach (keys, i, k)
                if (strcmp(json_string_value(json_object_get(k, "kid")), kid) == 0) {
                        assert_null(json_object_get(k, "d"));
                        return true;
                }
        return false;
}

static size_t jwks_size(KeyStore *ks, int64_t now)
{
        _cleanup_(json_decrefp) json_t *j = keystore_jwks(ks, now);

        return json_array_size(json_object_get(j, "keys"));
}

/* The active kid of `alg`, "" when none. */
static const char *active(KeyStore *ks, Alg alg)
{
        static char b[4][KID_LEN + 1];
        static unsigned i;
        char *p = b[i++ % 4];
        SigningKey *k = keystore_active(ks, alg);

        snprintf(p, sizeof(b[0]), "%s", k ? k->kid : "");
        if (k) {
                assert_int_equal(k->alg, alg);
                assert_string_equal(info(ks, k->kid).state, "active");
        }
        return p;
}

static char *dump(json_t *j)
{
        char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

        assert_non_null(s);
        json_decref(j);
        return s;
}

static void assert_deadline(KeyStore *ks, const KeyPolicy *p, int64_t want)
{
        int64_t d = keystore_next_deadline(ks, p);

        if (d != want)
                fail_msg("next deadline %lld (T0%+lld), wanted %lld (T0%+lld)", (long long) d,
                         (long long) (d - T0), (long long) want, (long long) (want - T0));
}

/* What the schedule must never do, whatever the clock did: sign with a key published for less
 * than publish_ahead (unless it was its series' first key, which signs from creation), keep two
 * active or two next keys of one series, or keep a retired key for other than the retention. */
static void assert_schedule_invariants(KeyStore *ks, const KeyPolicy *p)
{
        _cleanup_(json_decrefp) json_t *l = keystore_list(ks);
        unsigned n_active[_ALG_MAX] = {}, n_next[_ALG_MAX] = {};
        size_t i;
        json_t *o;

        json_array_foreach (l, i, o) {
                const char *state = json_string_value(json_object_get(o, "state"));
                const char *kid = json_string_value(json_object_get(o, "kid"));
                int a = alg_from_string(json_string_value(json_object_get(o, "alg")));
                int64_t created = json_integer_value(json_object_get(o, "created_at"));
                int64_t activated = json_integer_value(json_object_get(o, "activated_at"));
                int64_t retired = json_integer_value(json_object_get(o, "retired_at"));
                int64_t expires = json_integer_value(json_object_get(o, "expires_at"));

                assert_true(a >= 0);
                n_active[a] += strcmp(state, "active") == 0;
                n_next[a] += strcmp(state, "next") == 0;
                if (activated && activated != created &&
                    activated - created < (int64_t) p->publish_ahead)
                        fail_msg("key %s signed from T0%+lld, published only at T0%+lld", kid,
                                 (long long) (activated - T0), (long long) (created - T0));
                if (strcmp(state, "retired") == 0 && expires != retired + (int64_t) p->retention)
                        fail_msg("retired key %s expires %lld after retiring", kid,
                                 (long long) (expires - retired));
        }
        for (int a = 0; a < _ALG_MAX; a++) {
                assert_true(n_active[a] <= 1);
                assert_true(n_next[a] <= 1);
        }
}

/* ---- first key, next key, rotation, retention --------------------------------------------- */

static void test_first_key(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();

        assert_int_equal(n_keys(ks), 0);
        assert_string_equal(active(ks, ALG_EDDSA), "");
        assert_int_equal(jwks_size(ks, T0), 0);
        /* A series the policy needs has no key: due now. */
        assert_deadline(ks, &p, INT64_MIN);

        KeyEvents ev = advance(ks, &p, T0, "key_created(EdDSA,active)");
        const char *a = ev.e[0].kid;
        assert_string_equal(ev.e[0].other_kid, "");
        assert_string_equal(active(ks, ALG_EDDSA), a);
        assert_info(ks, a, "active", T0, T0, 0, 0);
        assert_true(in_jwks(ks, T0, a));
        assert_int_equal(jwks_size(ks, T0), 1);
        assert_int_equal(n_keys(ks), 1);
        assert_deadline(ks, &p, T0 + PERIOD - AHEAD);

        /* Idempotent: the same or a slightly later time changes nothing. */
        advance(ks, &p, T0, "");
        advance(ks, &p, T0 + 1, "");
        advance(ks, &p, T0, "");
        assert_int_equal(n_keys(ks), 1);
        assert_string_equal(active(ks, ALG_EDDSA), a);
        assert_info(ks, a, "active", T0, T0, 0, 0);
        assert_deadline(ks, &p, T0 + PERIOD - AHEAD);

        /* Other series are not made when the policy does not ask for them. */
        assert_string_equal(active(ks, ALG_ES256), "");
        assert_string_equal(active(ks, ALG_RS256), "");
}

static void test_next_key_published_ahead(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        char a[KID_LEN + 1], n[KID_LEN + 1];

        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);
        advance(ks, &p, T0 + 50, "");
        advance(ks, &p, T0 + PERIOD - AHEAD - 1, "");
        assert_int_equal(n_keys(ks), 1);
        assert_deadline(ks, &p, T0 + 80);

        snprintf(n, sizeof(n), "%s", advance(ks, &p, T0 + 80, "key_created(EdDSA,next)").e[0].kid);
        assert_string_not_equal(n, a);
        assert_info(ks, n, "next", T0 + 80, 0, 0, 0);
        /* Published, but not signing. */
        assert_true(in_jwks(ks, T0 + 80, n));
        assert_true(in_jwks(ks, T0 + 80, a));
        assert_int_equal(jwks_size(ks, T0 + 80), 2);
        assert_string_equal(active(ks, ALG_EDDSA), a);
        assert_deadline(ks, &p, T0 + PERIOD);

        advance(ks, &p, T0 + 80, "");
        advance(ks, &p, T0 + 99, "");
        assert_string_equal(active(ks, ALG_EDDSA), a);
        assert_info(ks, n, "next", T0 + 80, 0, 0, 0);
        assert_int_equal(n_keys(ks), 2);
}

static void test_rotation_and_retention(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        char a[KID_LEN + 1], n[KID_LEN + 1];

        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);
        snprintf(n, sizeof(n), "%s", advance(ks, &p, T0 + 80, "key_created(EdDSA,next)").e[0].kid);

        advance(ks, &p, T0 + 99, "");
        assert_string_equal(active(ks, ALG_EDDSA), a);

        KeyEvents ev = advance(ks, &p, T0 + 100, "key_rotated(EdDSA)");
        assert_string_equal(ev.e[0].kid, n);
        assert_string_equal(ev.e[0].other_kid, a);
        assert_string_equal(active(ks, ALG_EDDSA), n);
        assert_info(ks, n, "active", T0 + 80, T0 + 100, 0, 0);
        assert_info(ks, a, "retired", T0, T0, T0 + 100, T0 + 100 + RETAIN);
        assert_true(in_jwks(ks, T0 + 100, a));
        assert_true(in_jwks(ks, T0 + 100, n));
        assert_int_equal(n_keys(ks), 2);
        /* The retired key's expiry comes before the new key's next key. */
        assert_deadline(ks, &p, T0 + 130);

        advance(ks, &p, T0 + 129, "");
        assert_true(in_jwks(ks, T0 + 129, a));
        assert_info(ks, a, "retired", T0, T0, T0 + 100, T0 + 130);

        ev = advance(ks, &p, T0 + 130, "key_removed(EdDSA)");
        assert_string_equal(ev.e[0].kid, a);
        assert_false(in_jwks(ks, T0 + 130, a));
        assert_true(in_jwks(ks, T0 + 130, n));
        assert_int_equal(jwks_size(ks, T0 + 130), 1);
        /* Its history is kept. */
        assert_info(ks, a, "removed", T0, T0, T0 + 100, T0 + 130);
        assert_deadline(ks, &p, T0 + 180);
        advance(ks, &p, T0 + 130, "");
        advance(ks, &p, T0 + 179, "");

        /* And around again. */
        char n2[KID_LEN + 1];
        snprintf(n2, sizeof(n2), "%s",
                 advance(ks, &p, T0 + 180, "key_created(EdDSA,next)").e[0].kid);
        assert_deadline(ks, &p, T0 + 200);
        ev = advance(ks, &p, T0 + 200, "key_rotated(EdDSA)");
        assert_string_equal(ev.e[0].kid, n2);
        assert_string_equal(ev.e[0].other_kid, n);
        assert_info(ks, n, "retired", T0 + 80, T0 + 100, T0 + 200, T0 + 230);
        assert_schedule_invariants(ks, &p);
}

/* The daemon was down from T0+50 to T0+150: the next key it should have made at T0+80 is made
 * at T0+150, and signs only publish_ahead later, even though rotation is overdue. */
static void test_late_next_key(void **state)
{
        KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        char a[KID_LEN + 1], n[KID_LEN + 1];

        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);
        advance(ks, &p, T0 + 50, "");
        keystore_close(ks);

        ks = open_store(master);
        assert_deadline(ks, &p, T0 + 80); /* overdue */
        snprintf(n, sizeof(n), "%s", advance(ks, &p, T0 + 150, "key_created(EdDSA,next)").e[0].kid);
        assert_string_equal(active(ks, ALG_EDDSA), a);
        assert_info(ks, n, "next", T0 + 150, 0, 0, 0);
        assert_true(in_jwks(ks, T0 + 150, n));
        assert_deadline(ks, &p, T0 + 170);

        advance(ks, &p, T0 + 151, "");
        advance(ks, &p, T0 + 169, "");
        assert_string_equal(active(ks, ALG_EDDSA), a);

        KeyEvents ev = advance(ks, &p, T0 + 170, "key_rotated(EdDSA)");
        assert_string_equal(ev.e[0].kid, n);
        assert_string_equal(active(ks, ALG_EDDSA), n);
        assert_info(ks, n, "active", T0 + 150, T0 + 170, 0, 0);
        assert_info(ks, a, "retired", T0, T0, T0 + 170, T0 + 200);
        assert_deadline(ks, &p, T0 + 200);
        assert_schedule_invariants(ks, &p);
        keystore_close(ks);

        /* Down between making the next key and rotating: it has been published long enough, so
         * the rotation happens at once, and only one. */
        ks = open_store(master);
        char n2[KID_LEN + 1];
        snprintf(n2, sizeof(n2), "%s",
                 advance(ks, &p, T0 + 250, "key_created(EdDSA,next) key_removed(EdDSA)").e[0].kid);
        keystore_close(ks);
        ks = open_store(master);
        ev = advance(ks, &p, T0 + 400, "key_rotated(EdDSA)");
        assert_string_equal(ev.e[0].kid, n2);
        assert_info(ks, n2, "active", T0 + 250, T0 + 400, 0, 0);
        assert_info(ks, n, "retired", T0 + 150, T0 + 170, T0 + 400, T0 + 430);
        assert_deadline(ks, &p, T0 + 430);
        assert_schedule_invariants(ks, &p);
        keystore_close(ks);
}

/* ---- wall-clock jumps --------------------------------------------------------------------- */

static void test_clock_jump_forward(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        char a[KID_LEN + 1], n[KID_LEN + 1];

        /* With a next key published: one rotation, not ten. */
        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);
        snprintf(n, sizeof(n), "%s", advance(ks, &p, T0 + 80, "key_created(EdDSA,next)").e[0].kid);
        KeyEvents ev = advance(ks, &p, T0 + 80 + 10 * PERIOD, "key_rotated(EdDSA)");
        assert_string_equal(ev.e[0].kid, n);
        assert_int_equal(n_keys(ks), 2);
        assert_info(ks, n, "active", T0 + 80, T0 + 1080, 0, 0);
        assert_info(ks, a, "retired", T0, T0, T0 + 1080, T0 + 1110);
        assert_deadline(ks, &p, T0 + 1110);
        advance(ks, &p, T0 + 1080, "");

        /* Without one: the next key is made, and signs publish_ahead later, not at once. Retired
         * keys whose time is over go in the same call. */
        ev = advance(ks, &p, T0 + 1080 + 10 * PERIOD, "key_created(EdDSA,next) key_removed(EdDSA)");
        char n2[KID_LEN + 1];
        snprintf(n2, sizeof(n2), "%s", ev.e[0].kid);
        assert_string_equal(ev.e[1].kid, a);
        assert_string_equal(active(ks, ALG_EDDSA), n);
        assert_int_equal(n_keys(ks), 3);
        assert_deadline(ks, &p, T0 + 2080 + AHEAD);
        advance(ks, &p, T0 + 2080 + AHEAD - 1, "");
        ev = advance(ks, &p, T0 + 2080 + AHEAD, "key_rotated(EdDSA)");
        assert_string_equal(ev.e[0].kid, n2);
        assert_info(ks, n2, "active", T0 + 2080, T0 + 2100, 0, 0);

        /* A jump of a thousand periods: still bounded work, still no early signing. */
        ev = advance(ks, &p, T0 + 1000 * PERIOD, "key_created(EdDSA,next) key_removed(EdDSA)");
        assert_string_equal(active(ks, ALG_EDDSA), n2);
        assert_int_equal(n_keys(ks), 4);
        assert_schedule_invariants(ks, &p);
}

static KeyStore *restart(KeyStore *ks, const KeyPolicy *p, int64_t now);

static void test_clock_jump_backward(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        char a[KID_LEN + 1], n[KID_LEN + 1];

        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);
        snprintf(n, sizeof(n), "%s", advance(ks, &p, T0 + 80, "key_created(EdDSA,next)").e[0].kid);

        /* Back to before the next key was made: it stays, published, not signing. */
        _cleanup_free_ char *l1 = dump(keystore_list(ks));
        advance(ks, &p, T0 + 50, "");
        advance(ks, &p, T0 - 1000, "");
        _cleanup_free_ char *l1b = dump(keystore_list(ks));
        assert_string_equal(l1b, l1);
        assert_true(in_jwks(ks, T0 + 50, n));
        assert_string_equal(active(ks, ALG_EDDSA), a);
        assert_deadline(ks, &p, T0 + 100);

        advance(ks, &p, T0 + 100, "key_rotated(EdDSA)");
        _cleanup_free_ char *l2 = dump(keystore_list(ks));
        _cleanup_free_ char *j2 = dump(keystore_jwks(ks, T0 + 110));

        /* Back to before the rotation and before the first key: nothing changes, the retired
         * key stays published, the new one keeps signing. */
        advance(ks, &p, T0 + 99, "");
        advance(ks, &p, T0 + 10, "");
        advance(ks, &p, T0 - 5 * PERIOD, "");
        _cleanup_free_ char *l2b = dump(keystore_list(ks));
        _cleanup_free_ char *j2b = dump(keystore_jwks(ks, T0 + 110));
        assert_string_equal(l2b, l2);
        assert_string_equal(j2b, j2);
        assert_true(in_jwks(ks, T0 - 5 * PERIOD, a));
        assert_string_equal(active(ks, ALG_EDDSA), n);
        assert_deadline(ks, &p, T0 + 130);

        /* And forward again: the schedule resumes where it was. */
        advance(ks, &p, T0 + 129, "");
        advance(ks, &p, T0 + 130, "key_removed(EdDSA)");
        advance(ks, &p, T0 + 179, "");
        char n2[KID_LEN + 1];
        snprintf(n2, sizeof(n2), "%s",
                 advance(ks, &p, T0 + 180, "key_created(EdDSA,next)").e[0].kid);
        assert_schedule_invariants(ks, &p);

        /* A key made while the clock is behind (here by revoking both keys) is younger than
         * its created_at says; a restart still finds everything as it was. */
        KeyEvents ev = {};
        assert_int_equal(keystore_revoke(ks, &p, n2, T0 - 500, &ev), 0);
        assert_int_equal(keystore_revoke(ks, &p, n, T0 - 500, &ev), 0);
        assert_string_equal(describe(&ev),
                            "key_revoked(EdDSA) key_created(EdDSA,active) key_revoked(EdDSA)");
        assert_info(ks, ev.e[1].kid, "active", T0 - 500, T0 - 500, 0, 0);
        ks = restart(ks, &p, T0 - 500);
}

/* ---- the deadline, as a timer armed on it sees it ----------------------------------------- */

static void test_deadline_edge_cases(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy(), none = policy();

        none.algs[ALG_EDDSA] = false;
        /* Nothing needed, nothing held: never. */
        assert_deadline(ks, &none, INT64_MAX);
        advance(ks, &none, T0, "");
        assert_int_equal(n_keys(ks), 0);
        assert_deadline(ks, &none, INT64_MAX);

        /* Needed and missing: now. */
        assert_deadline(ks, &p, INT64_MIN);
        advance(ks, &p, T0, "key_created(EdDSA,active)");

        /* Held but no longer needed: now (the active key must retire). */
        assert_deadline(ks, &none, INT64_MIN);
        advance(ks, &none, T0 + 10, "key_retired(EdDSA)");
        assert_string_equal(active(ks, ALG_EDDSA), "");
        /* Only the retired key's expiry is left, then never. */
        assert_deadline(ks, &none, T0 + 10 + RETAIN);
        advance(ks, &none, T0 + 39, "");
        advance(ks, &none, T0 + 40, "key_removed(EdDSA)");
        assert_deadline(ks, &none, INT64_MAX);
        assert_int_equal(jwks_size(ks, T0 + 40), 0);
}

/* Runs the schedule as keyschedule.c does: wake at the deadline, advance, re-arm. At one second
 * before each deadline nothing is due (not late); at the deadline something is (not early);
 * and each deadline is after the one before (no busy loop). Some wake-ups are late, as after a
 * suspend, and the invariants must hold throughout. */
static void test_deadline_timer_simulation(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        int64_t now = T0, prev = INT64_MIN;
        unsigned rotations = 0;

        p.publish_ahead = 15;
        for (int i = 0; i < 60; i++) {
                KeyEvents ev = {};

                /* A second series joins later, so the two run on different times. */
                if (i == 4)
                        p.algs[ALG_ES256] = true;
                int64_t d = keystore_next_deadline(ks, &p);

                assert_true(d != INT64_MAX);
                assert_true(d > prev || d == INT64_MIN);
                if (d != INT64_MIN && d > now) {
                        ev.n = 0;
                        assert_int_equal(keystore_advance(ks, &p, d - 1, &ev), 0);
                        if (ev.n)
                                fail_msg("%s at T0%+lld, before the deadline T0%+lld",
                                         describe(&ev), (long long) (d - 1 - T0),
                                         (long long) (d - T0));
                        now = d;
                }
                /* Every seventh wake-up comes 37 seconds late. */
                if (i % 7 == 6)
                        now += 37;
                ev.n = 0;
                assert_int_equal(keystore_advance(ks, &p, now, &ev), 0);
                if (ev.n == 0)
                        fail_msg("nothing due at the deadline T0%+lld", (long long) (now - T0));
                for (size_t k = 0; k < ev.n; k++)
                        rotations += strcmp(ev.e[k].event, "key_rotated") == 0;
                assert_schedule_invariants(ks, &p);
                assert_true(keystore_active(ks, ALG_EDDSA) != NULL);
                assert_true(keystore_active(ks, ALG_ES256) != NULL || i < 4);
                prev = now;
                if (keystore_next_deadline(ks, &p) <= now)
                        fail_msg("deadline T0%+lld not after the run at T0%+lld",
                                 (long long) (keystore_next_deadline(ks, &p) - T0),
                                 (long long) (now - T0));
        }
        assert_true(rotations >= 10);
}

/* ---- restarts ----------------------------------------------------------------------------- */

typedef struct Snapshot {
        char *list, *jwks;
        char active[_ALG_MAX][KID_LEN + 1];
        int64_t deadline;
} Snapshot;

static Snapshot snap(KeyStore *ks, const KeyPolicy *p, int64_t now)
{
        Snapshot s = {
            .list = dump(keystore_list(ks)),
            .jwks = dump(keystore_jwks(ks, now)),
            .deadline = keystore_next_deadline(ks, p),
        };

        for (int a = 0; a < _ALG_MAX; a++)
                snprintf(s.active[a], sizeof(s.active[a]), "%s", active(ks, a));
        return s;
}

static void assert_snap_equal(const Snapshot *a, const Snapshot *b)
{
        assert_string_equal(b->list, a->list);
        assert_string_equal(b->jwks, a->jwks);
        for (int i = 0; i < _ALG_MAX; i++)
                assert_string_equal(b->active[i], a->active[i]);
        assert_true(b->deadline == a->deadline);
}

static void snap_done(Snapshot *s)
{
        free(s->list);
        free(s->jwks);
}

/* Closes and reopens the store: everything is as it was, the same keys sign (the same private
 * keys: their signatures match), and advancing to the same time does nothing. */
static KeyStore *restart(KeyStore *ks, const KeyPolicy *p, int64_t now)
{
        Snapshot before = snap(ks, p, now), after, again;
        unsigned char sig_before[_ALG_MAX][SIGNATURE_MAX], sig_after[SIGNATURE_MAX];
        size_t len_before[_ALG_MAX] = {}, len_after;

        for (int a = 0; a < _ALG_MAX; a++) {
                SigningKey *k = keystore_active(ks, a);
                /* EdDSA and RS256 signatures are deterministic; ES256 is checked by kid. */
                if (k && a != ALG_ES256)
                        assert_int_equal(signing_key_sign(k, "m", 1, sig_before[a], &len_before[a]),
                                         0);
        }
        keystore_close(ks);
        ks = open_store(master);
        after = snap(ks, p, now);
        assert_snap_equal(&before, &after);
        for (int a = 0; a < _ALG_MAX; a++) {
                if (!len_before[a])
                        continue;
                assert_int_equal(
                    signing_key_sign(keystore_active(ks, a), "m", 1, sig_after, &len_after), 0);
                assert_int_equal(len_after, len_before[a]);
                assert_memory_equal(sig_after, sig_before[a], len_after);
        }
        advance(ks, p, now, "");
        again = snap(ks, p, now);
        assert_snap_equal(&before, &again);
        snap_done(&before);
        snap_done(&after);
        snap_done(&again);
        return ks;
}

static void test_restart_exact(void **state)
{
        KeyStore *ks = open_store(master);
        KeyPolicy p = policy(), none = policy();

        none.algs[ALG_EDDSA] = false;
        ks = restart(ks, &none, T0 - 1); /* empty */
        advance(ks, &p, T0, "key_created(EdDSA,active)");
        ks = restart(ks, &p, T0);
        ks = restart(ks, &p, T0 + 79);
        advance(ks, &p, T0 + 80, "key_created(EdDSA,next)");
        ks = restart(ks, &p, T0 + 80);
        ks = restart(ks, &p, T0 + 99);
        advance(ks, &p, T0 + 100, "key_rotated(EdDSA)");
        ks = restart(ks, &p, T0 + 100);
        ks = restart(ks, &p, T0 + 129);
        advance(ks, &p, T0 + 130, "key_removed(EdDSA)");
        ks = restart(ks, &p, T0 + 130);

        /* Three series made at the same second, then moving together. */
        p.algs[ALG_ES256] = p.algs[ALG_RS256] = true;
        advance(ks, &p, T0 + 140, "key_created(ES256,active) key_created(RS256,active)");
        ks = restart(ks, &p, T0 + 140);
        advance(ks, &p, T0 + 180, "key_created(EdDSA,next)");
        advance(ks, &p, T0 + 200, "key_rotated(EdDSA)");
        advance(ks, &p, T0 + 220, "key_created(ES256,next) key_created(RS256,next)");
        ks = restart(ks, &p, T0 + 220);
        advance(ks, &p, T0 + 240, "key_rotated(ES256) key_rotated(RS256) key_removed(EdDSA)");
        ks = restart(ks, &p, T0 + 240);
        assert_schedule_invariants(ks, &p);

        /* A long time down: opening the store changes nothing by itself; the schedule then
         * does what is due, once. */
        Snapshot before = snap(ks, &p, T0 + 240), after;
        keystore_close(ks);
        ks = open_store(master);
        after = snap(ks, &p, T0 + 240);
        assert_snap_equal(&before, &after);
        advance(ks, &p, T0 + 5000,
                "key_created(EdDSA,next) key_created(ES256,next) key_created(RS256,next) "
                "key_removed(ES256) key_removed(RS256)");
        ks = restart(ks, &p, T0 + 5000);
        assert_schedule_invariants(ks, &p);
        snap_done(&before);
        snap_done(&after);
        keystore_close(ks);
}

/* ---- admin operations --------------------------------------------------------------------- */

static void test_admin_rotate(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        KeyEvents ev = {};
        char a[KID_LEN + 1], b[KID_LEN + 1], c[KID_LEN + 1];

        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);

        /* No next key: a new one, signing at once; the old one retires normally. */
        assert_int_equal(keystore_rotate(ks, &p, ALG_EDDSA, T0 + 10, &ev), 0);
        assert_string_equal(describe(&ev), "key_created(EdDSA,active) key_rotated(EdDSA)");
        snprintf(b, sizeof(b), "%s", ev.e[0].kid);
        assert_string_equal(ev.e[1].kid, b);
        assert_string_equal(ev.e[1].other_kid, a);
        assert_string_equal(active(ks, ALG_EDDSA), b);
        assert_info(ks, b, "active", T0 + 10, T0 + 10, 0, 0);
        assert_info(ks, a, "retired", T0, T0, T0 + 10, T0 + 10 + RETAIN);
        assert_true(in_jwks(ks, T0 + 10, a));
        assert_true(in_jwks(ks, T0 + 10, b));
        /* The schedule restarts from the new key. */
        assert_deadline(ks, &p, T0 + 10 + RETAIN);
        advance(ks, &p, T0 + 10, "");
        advance(ks, &p, T0 + 40, "key_removed(EdDSA)");
        assert_deadline(ks, &p, T0 + 10 + PERIOD - AHEAD);
        advance(ks, &p, T0 + 89, "");

        /* A next key: promoted, no key made. */
        snprintf(c, sizeof(c), "%s", advance(ks, &p, T0 + 90, "key_created(EdDSA,next)").e[0].kid);
        ev.n = 0;
        assert_int_equal(keystore_rotate(ks, &p, ALG_EDDSA, T0 + 95, &ev), 0);
        assert_string_equal(describe(&ev), "key_rotated(EdDSA)");
        assert_string_equal(ev.e[0].kid, c);
        assert_string_equal(ev.e[0].other_kid, b);
        assert_string_equal(active(ks, ALG_EDDSA), c);
        assert_info(ks, c, "active", T0 + 90, T0 + 95, 0, 0);
        assert_info(ks, b, "retired", T0 + 10, T0 + 10, T0 + 95, T0 + 95 + RETAIN);
        assert_int_equal(n_keys(ks), 3);
        advance(ks, &p, T0 + 95, "");
        assert_deadline(ks, &p, T0 + 95 + RETAIN);

        /* A series without an active key cannot be rotated. */
        ev.n = 0;
        assert_int_equal(keystore_rotate(ks, &p, ALG_ES256, T0 + 96, &ev), -ENOENT);
        assert_int_equal(ev.n, 0);
        assert_int_equal(n_keys(ks), 3);

        /* It survives a restart. */
        keystore_close(ks);
        ks = open_store(master);
        assert_string_equal(active(ks, ALG_EDDSA), c);
        assert_info(ks, b, "retired", T0 + 10, T0 + 10, T0 + 95, T0 + 95 + RETAIN);
}

static void test_revoke_active(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        KeyEvents ev = {};
        char a[KID_LEN + 1], n[KID_LEN + 1], r[KID_LEN + 1];

        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);
        snprintf(n, sizeof(n), "%s", advance(ks, &p, T0 + 80, "key_created(EdDSA,next)").e[0].kid);

        /* With a next key: it takes over at once, no key is made. */
        assert_int_equal(keystore_revoke(ks, &p, a, T0 + 85, &ev), 0);
        assert_string_equal(describe(&ev), "key_revoked(EdDSA)");
        assert_string_equal(ev.e[0].kid, a);
        assert_string_equal(ev.e[0].other_kid, n);
        assert_false(in_jwks(ks, T0 + 85, a));
        assert_true(in_jwks(ks, T0 + 85, n));
        assert_int_equal(jwks_size(ks, T0 + 85), 1);
        assert_string_equal(active(ks, ALG_EDDSA), n);
        assert_string_equal(info(ks, a).state, "revoked");
        assert_info(ks, n, "active", T0 + 80, T0 + 85, 0, 0);
        assert_int_equal(n_keys(ks), 2);
        /* Never again: not after the retention, not at an earlier time. */
        advance(ks, &p, T0 + 85, "");
        assert_false(in_jwks(ks, T0 + 10, a));

        /* Twice, or a kid that never was. */
        ev.n = 0;
        assert_int_equal(keystore_revoke(ks, &p, a, T0 + 86, &ev), -EALREADY);
        assert_int_equal(keystore_revoke(ks, &p, "nope", T0 + 86, &ev), -ENOENT);
        assert_int_equal(
            keystore_revoke(ks, &p, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", T0 + 86, &ev),
            -ENOENT);
        assert_int_equal(keystore_revoke(ks, &p, "", T0 + 86, &ev), -ENOENT);
        assert_int_equal(ev.n, 0);

        /* Without a next key: a new key, signing at once. */
        ev.n = 0;
        assert_int_equal(keystore_revoke(ks, &p, n, T0 + 90, &ev), 0);
        assert_string_equal(describe(&ev), "key_created(EdDSA,active) key_revoked(EdDSA)");
        snprintf(r, sizeof(r), "%s", ev.e[0].kid);
        assert_string_equal(ev.e[1].kid, n);
        assert_string_equal(ev.e[1].other_kid, r);
        assert_string_equal(active(ks, ALG_EDDSA), r);
        assert_info(ks, r, "active", T0 + 90, T0 + 90, 0, 0);
        assert_false(in_jwks(ks, T0 + 90, n));
        assert_int_equal(jwks_size(ks, T0 + 90), 1);
        /* Neither revoked key has a deadline: the schedule follows the replacement. */
        assert_deadline(ks, &p, T0 + 90 + PERIOD - AHEAD);

        /* Survives a restart. */
        keystore_close(ks);
        ks = open_store(master);
        assert_string_equal(info(ks, a).state, "revoked");
        assert_string_equal(info(ks, n).state, "revoked");
        assert_false(in_jwks(ks, T0 + 90, a));
        assert_false(in_jwks(ks, T0 + 90, n));
        assert_string_equal(active(ks, ALG_EDDSA), r);
        advance(ks, &p, T0 + 90, "");
        ev.n = 0;
        assert_int_equal(keystore_revoke(ks, &p, a, T0 + 91, &ev), -EALREADY);
}

static void test_revoke_next_and_retired(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        KeyEvents ev = {};
        char a[KID_LEN + 1], n[KID_LEN + 1], n2[KID_LEN + 1], n3[KID_LEN + 1];

        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);
        snprintf(n, sizeof(n), "%s", advance(ks, &p, T0 + 80, "key_created(EdDSA,next)").e[0].kid);

        /* A next key: withdrawn, no key made, the active one signs on. */
        assert_int_equal(keystore_revoke(ks, &p, n, T0 + 90, &ev), 0);
        assert_string_equal(describe(&ev), "key_revoked(EdDSA)");
        assert_string_equal(ev.e[0].other_kid, "");
        assert_string_equal(active(ks, ALG_EDDSA), a);
        assert_false(in_jwks(ks, T0 + 90, n));
        assert_int_equal(n_keys(ks), 2);
        assert_string_equal(info(ks, n).state, "revoked");
        assert_int_equal(info(ks, n).activated, 0);

        /* The schedule makes another next key, and it too waits publish_ahead. */
        assert_deadline(ks, &p, T0 + 80);
        snprintf(n2, sizeof(n2), "%s",
                 advance(ks, &p, T0 + 90, "key_created(EdDSA,next)").e[0].kid);
        assert_deadline(ks, &p, T0 + 110);
        advance(ks, &p, T0 + 100, "");
        advance(ks, &p, T0 + 109, "");
        assert_string_equal(active(ks, ALG_EDDSA), a);
        advance(ks, &p, T0 + 110, "key_rotated(EdDSA)");
        assert_string_equal(active(ks, ALG_EDDSA), n2);
        assert_info(ks, a, "retired", T0, T0, T0 + 110, T0 + 140);

        /* A retired key: out of the JWKS before its retention is over; no key made; it keeps
         * the time it stopped signing. */
        ev.n = 0;
        assert_int_equal(keystore_revoke(ks, &p, a, T0 + 115, &ev), 0);
        assert_string_equal(describe(&ev), "key_revoked(EdDSA)");
        assert_string_equal(ev.e[0].other_kid, "");
        assert_false(in_jwks(ks, T0 + 115, a));
        assert_string_equal(active(ks, ALG_EDDSA), n2);
        assert_int_equal(n_keys(ks), 3);
        Info x = info(ks, a);
        assert_string_equal(x.state, "revoked");
        assert_int_equal(x.activated, T0);
        if (x.retired != T0 + 110)
                fail_msg("revoking a retired key moved its retired_at from T0+110 to T0%+lld: "
                         "it claims the key signed until its revocation",
                         (long long) (x.retired - T0));
        /* Its removal is not scheduled any more: the next deadline is the next key. */
        assert_deadline(ks, &p, T0 + 110 + PERIOD - AHEAD);
        advance(ks, &p, T0 + 140, "");
        assert_string_equal(info(ks, a).state, "revoked");

        /* Revoked and removed keys cannot be revoked again. */
        snprintf(n3, sizeof(n3), "%s",
                 advance(ks, &p, T0 + 190, "key_created(EdDSA,next)").e[0].kid);
        advance(ks, &p, T0 + 210, "key_rotated(EdDSA)");
        advance(ks, &p, T0 + 240, "key_removed(EdDSA)");
        assert_string_equal(info(ks, n2).state, "removed");
        ev.n = 0;
        assert_int_equal(keystore_revoke(ks, &p, n2, T0 + 241, &ev), -EALREADY);
        assert_int_equal(keystore_revoke(ks, &p, n, T0 + 241, &ev), -EALREADY);
        assert_int_equal(ev.n, 0);
        assert_string_equal(active(ks, ALG_EDDSA), n3);

        /* Survives a restart. */
        keystore_close(ks);
        ks = open_store(master);
        assert_string_equal(info(ks, n).state, "revoked");
        assert_string_equal(info(ks, a).state, "revoked");
        assert_false(in_jwks(ks, T0 + 241, a));
        assert_false(in_jwks(ks, T0 + 241, n));
        advance(ks, &p, T0 + 241, "");
}

/* Many retired keys expiring at once (an operator rotated many times, then the daemon was down):
 * every removal is reported, none is lost because one call's event list is full. What does not
 * fit waits for the next call, and the deadline says it is due at once. */
static void test_every_transition_reported(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        const unsigned n_rot = KEY_EVENTS_MAX + 8;
        unsigned removed = 0, calls = 0;

        advance(ks, &p, T0, "key_created(EdDSA,active)");
        for (unsigned i = 1; i <= n_rot; i++) {
                KeyEvents ev = {};
                assert_int_equal(keystore_rotate(ks, &p, ALG_EDDSA, T0 + i, &ev), 0);
                assert_int_equal(ev.n, 2);
        }
        assert_int_equal(n_keys(ks), n_rot + 1);

        for (;;) {
                KeyEvents ev = {};
                assert_int_equal(keystore_advance(ks, &p, T0 + 1000, &ev), 0);
                assert_true(ev.n <= KEY_EVENTS_MAX);
                if (ev.n == 0)
                        break;
                calls++;
                for (size_t i = 0; i < ev.n; i++)
                        removed += strcmp(ev.e[i].event, "key_removed") == 0;
                if (ev.n == KEY_EVENTS_MAX)
                        assert_true(keystore_next_deadline(ks, &p) <= T0 + 1000);
                assert_true(calls < 10);
        }
        if (removed != n_rot)
                fail_msg("%u retired keys removed, %u removals reported", n_rot, removed);
        assert_int_equal(jwks_size(ks, T0 + 1000), 2); /* the active key and its next key */
        _cleanup_(json_decrefp) json_t *l = keystore_list(ks);
        size_t i;
        json_t *o;
        json_array_foreach (l, i, o)
                assert_string_not_equal(json_string_value(json_object_get(o, "state")), "retired");
        assert_true(keystore_next_deadline(ks, &p) > T0 + 1000);
}

/* ---- policy changes ----------------------------------------------------------------------- */

static void test_policy_changes(void **state)
{
        _cleanup_(keystore_closep) KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        char e1[KID_LEN + 1], e2[KID_LEN + 1], r1[KID_LEN + 1], r2[KID_LEN + 1];

        advance(ks, &p, T0, "key_created(EdDSA,active)");

        /* Enabling ES256 and RS256 makes their series at once. */
        p.algs[ALG_ES256] = p.algs[ALG_RS256] = true;
        assert_deadline(ks, &p, INT64_MIN);
        KeyEvents ev =
            advance(ks, &p, T0 + 10, "key_created(ES256,active) key_created(RS256,active)");
        snprintf(e1, sizeof(e1), "%s", ev.e[0].kid);
        snprintf(r1, sizeof(r1), "%s", ev.e[1].kid);
        assert_string_equal(active(ks, ALG_ES256), e1);
        assert_string_equal(active(ks, ALG_RS256), r1);
        assert_true(in_jwks(ks, T0 + 10, e1));
        assert_true(in_jwks(ks, T0 + 10, r1));
        assert_int_equal(jwks_size(ks, T0 + 10), 3);
        bool algs[_ALG_MAX];
        keystore_published_algs(ks, T0 + 10, algs);
        assert_true(algs[ALG_EDDSA] && algs[ALG_ES256] && algs[ALG_RS256]);
        assert_int_equal(keystore_active(ks, ALG_RS256)->alg, ALG_RS256);
        assert_deadline(ks, &p, T0 + 80);

        /* Each series has its own schedule. */
        advance(ks, &p, T0 + 80, "key_created(EdDSA,next)");
        ev = advance(ks, &p, T0 + 90, "key_created(ES256,next) key_created(RS256,next)");
        snprintf(e2, sizeof(e2), "%s", ev.e[0].kid);
        snprintf(r2, sizeof(r2), "%s", ev.e[1].kid);

        /* Disabling ES256: its next key (never signed) goes at once, its active key retires
         * normally and stays published for the retention. */
        p.algs[ALG_ES256] = false;
        assert_deadline(ks, &p, INT64_MIN);
        ev = advance(ks, &p, T0 + 95, "key_removed(ES256) key_retired(ES256)");
        assert_string_equal(ev.e[0].kid, e2);
        assert_string_equal(ev.e[1].kid, e1);
        assert_string_equal(active(ks, ALG_ES256), "");
        assert_false(in_jwks(ks, T0 + 95, e2));
        assert_true(in_jwks(ks, T0 + 95, e1));
        assert_string_equal(info(ks, e2).state, "removed");
        assert_info(ks, e1, "retired", T0 + 10, T0 + 10, T0 + 95, T0 + 95 + RETAIN);
        advance(ks, &p, T0 + 95, "");
        assert_deadline(ks, &p, T0 + 100);
        advance(ks, &p, T0 + 100, "key_rotated(EdDSA)");
        /* RS256 is untouched by all this. */
        advance(ks, &p, T0 + 110, "key_rotated(RS256)");
        assert_string_equal(active(ks, ALG_RS256), r2);
        advance(ks, &p, T0 + 124, "");
        assert_true(in_jwks(ks, T0 + 124, e1));
        advance(ks, &p, T0 + 125, "key_removed(ES256)");
        assert_false(in_jwks(ks, T0 + 125, e1));
        keystore_published_algs(ks, T0 + 125, algs);
        assert_true(algs[ALG_EDDSA] && !algs[ALG_ES256] && algs[ALG_RS256]);

        /* Disabling RS256 with no next key: only the retirement. */
        p.algs[ALG_RS256] = false;
        advance(ks, &p, T0 + 126, "key_retired(RS256)");
        assert_string_equal(active(ks, ALG_RS256), "");
        assert_info(ks, r2, "retired", T0 + 90, T0 + 110, T0 + 126, T0 + 126 + RETAIN);
        /* Restart with the series disabled: nothing comes back. */
        keystore_close(ks);
        ks = open_store(master);
        advance(ks, &p, T0 + 126, "");
        assert_string_equal(active(ks, ALG_ES256), "");
        assert_string_equal(active(ks, ALG_RS256), "");

        /* Enabling ES256 again: a fresh key. */
        p.algs[ALG_ES256] = true;
        ev = advance(ks, &p, T0 + 130, "key_created(ES256,active) key_removed(EdDSA)");
        assert_string_not_equal(ev.e[0].kid, e1);
        assert_string_not_equal(ev.e[0].kid, e2);
        assert_schedule_invariants(ks, &p);
}

/* ---- sealing ------------------------------------------------------------------------------ */

/* Another process's view of the database. */
static sqlite3 *db_open(void)
{
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open_v2(db_path(""), &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        return db;
}

static Bytes db_blob(sqlite3 *db, const char *kid)
{
        sqlite3_stmt *st = NULL;
        Bytes b = {};

        assert_int_equal(
            sqlite3_prepare_v2(db, "SELECT sealed_secret FROM keys WHERE kid = ?", -1, &st, NULL),
            SQLITE_OK);
        sqlite3_bind_text(st, 1, kid, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        b.n = (size_t) sqlite3_column_bytes(st, 0);
        b.p = malloc(b.n + 1);
        assert_non_null(b.p);
        if (b.n)
                memcpy(b.p, sqlite3_column_blob(st, 0), b.n);
        sqlite3_finalize(st);
        return b;
}

static void db_set_blob(sqlite3 *db, const char *kid, const Bytes *b)
{
        sqlite3_stmt *st = NULL;

        assert_int_equal(sqlite3_prepare_v2(db, "UPDATE keys SET sealed_secret = ? WHERE kid = ?",
                                            -1, &st, NULL),
                         SQLITE_OK);
        if (b)
                sqlite3_bind_blob(st, 1, b->p, (int) b->n, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, 1);
        sqlite3_bind_text(st, 2, kid, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        assert_int_equal(sqlite3_changes(db), 1);
        sqlite3_finalize(st);
}

static int reopen_result(const MasterKey *m)
{
        KeyStore *ks = (KeyStore *) 0x1;
        int r = keystore_open(dir, m, &ks);

        if (r >= 0)
                keystore_close(ks);
        else
                assert_ptr_equal(ks, (KeyStore *) 0x1);
        return r;
}

/* keystore_check_master(): what keystore_open() says of a master key, found read-only. */
static void test_check_master_reads_only(void **state)
{
        _cleanup_(master_key_freep) MasterKey *other = master_key_random("the other master key");
        KeyPolicy p = policy();
        char err[1024] = "";

        /* No store yet: nothing to hold the key against, and none is made. */
        assert_int_equal(keystore_check_master(dir, other, err, sizeof(err)), 0);
        assert_int_equal(access(db_path(""), F_OK), -1);

        KeyStore *ks = open_store(master);
        advance(ks, &p, T0, "key_created(EdDSA,active)");
        keystore_close(ks);
        Bytes before = slurp(db_path(""));
        assert_non_null(before.p);

        assert_int_equal(keystore_check_master(dir, master, err, sizeof(err)), 0);
        assert_int_equal(keystore_check_master(dir, other, err, sizeof(err)), -EKEYREJECTED);
        assert_non_null(strstr(err, "the other master key"));
        assert_non_null(strstr(err, db_path("")));
        assert_non_null(strstr(err, "never re-keys"));

        /* Not a byte changed, no journal made. */
        Bytes after = slurp(db_path(""));
        assert_int_equal(after.n, before.n);
        assert_memory_equal(after.p, before.p, before.n);
        assert_int_equal(access(db_path("-journal"), F_OK), -1);
        free(after.p);
        free(before.p);

        /* Not a database at all: said so. */
        int fd = open(db_path(""), O_WRONLY | O_TRUNC | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(
            write(fd, "not sqlite, just text that is long enough to be a header\n", 57), 57);
        close(fd);
        assert_int_equal(keystore_check_master(dir, master, err, sizeof(err)), -EIO);
        assert_non_null(strstr(err, db_path("")));
}

static void test_wrong_master_key(void **state)
{
        KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        _cleanup_(master_key_freep) MasterKey *other = master_key_random("the other master key");
        int r;

        advance(ks, &p, T0, "key_created(EdDSA,active)");
        advance(ks, &p, T0 + 80, "key_created(EdDSA,next)");
        _cleanup_free_ char *list = dump(keystore_list(ks));
        keystore_close(ks);

        Bytes before = slurp(db_path(""));
        assert_non_null(before.p);
        capture_begin();
        r = reopen_result(other);
        _cleanup_free_ char *log = capture_end();
        assert_int_equal(r, -EKEYREJECTED);
        /* The message names the master key's source and the store. */
        assert_logged(log, "the other master key");
        assert_logged(log, db_path(""));
        assert_logged(log, "refusing to start");
        /* Not a byte changed, no journal left behind. */
        Bytes after = slurp(db_path(""));
        assert_int_equal(after.n, before.n);
        assert_memory_equal(after.p, before.p, before.n);
        assert_int_equal(access(db_path("-journal"), F_OK), -1);
        assert_int_equal(access(db_path("-wal"), F_OK), -1);
        free(after.p);

        /* A master key that differs in one bit is just as wrong. */
        unsigned char raw[MASTER_KEY_BYTES];
        MasterKey *near = NULL;
        memcpy(raw, master->key, MASTER_KEY_BYTES);
        raw[0] ^= 0x80;
        assert_int_equal(master_key_new(raw, "one bit off", &near), 0);
        sodium_memzero(raw, sizeof(raw));
        assert_int_equal(reopen_result(near), -EKEYREJECTED);
        master_key_free(near);
        after = slurp(db_path(""));
        assert_memory_equal(after.p, before.p, before.n);
        free(after.p);

        /* The right one still opens it, unchanged. */
        ks = open_store(master);
        _cleanup_free_ char *list2 = dump(keystore_list(ks));
        assert_string_equal(list2, list);
        keystore_close(ks);

        /* Keys without the check value: refused, not re-keyed. */
        sqlite3 *db = db_open();
        assert_int_equal(sqlite3_exec(db, "DELETE FROM meta", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        free(before.p);
        before = slurp(db_path(""));
        assert_int_equal(reopen_result(master), -EKEYREJECTED);
        after = slurp(db_path(""));
        assert_int_equal(after.n, before.n);
        assert_memory_equal(after.p, before.p, before.n);
        free(after.p);
        free(before.p);
}

/* Every private number of a key, as the bytes someone searching the disk would look for. */
typedef struct Secrets {
        Bytes item[64];
        bool whole_only[64]; /* DER: its framing and public parts are no secret */
        size_t n;
} Secrets;

static void add_secret(Secrets *s, const void *p, size_t n)
{
        assert_true(s->n < ELEMENTSOF(s->item));
        s->item[s->n].p = malloc(n);
        assert_non_null(s->item[s->n].p);
        memcpy(s->item[s->n].p, p, n);
        s->item[s->n++].n = n;
}

static void add_bn_param(Secrets *s, EVP_PKEY *pkey, const char *name, int pad)
{
        BIGNUM *bn = NULL;
        unsigned char buf[512];
        int n;

        assert_int_equal(EVP_PKEY_get_bn_param(pkey, name, &bn), 1);
        n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
        assert_true(n > 16);
        add_secret(s, buf, (size_t) n);
        BN_clear_free(bn);
}

static void collect_secrets(KeyStore *ks, Alg alg, Secrets *s)
{
        SigningKey *k = keystore_active(ks, alg);
        unsigned char *priv = NULL;
        size_t len = 0;

        assert_non_null(k);
        assert_int_equal(signing_key_export(k, &priv, &len), 0);
        add_secret(s, priv, len); /* the seed, or the whole DER */
        s->whole_only[s->n - 1] = alg != ALG_EDDSA;
        if (alg == ALG_EDDSA) {
                assert_int_equal(len, 32);
                add_secret(s, k->secret, 64); /* libsodium's seed || public key */
        } else {
                const unsigned char *p = priv;
                EVP_PKEY *pkey = d2i_PrivateKey(alg == ALG_ES256 ? EVP_PKEY_EC : EVP_PKEY_RSA, NULL,
                                                &p, (long) len);
                assert_non_null(pkey);
                if (alg == ALG_ES256)
                        add_bn_param(s, pkey, OSSL_PKEY_PARAM_PRIV_KEY, 32);
                else {
                        add_bn_param(s, pkey, OSSL_PKEY_PARAM_RSA_D, 0);
                        add_bn_param(s, pkey, OSSL_PKEY_PARAM_RSA_FACTOR1, 0);
                        add_bn_param(s, pkey, OSSL_PKEY_PARAM_RSA_FACTOR2, 0);
                        add_bn_param(s, pkey, OSSL_PKEY_PARAM_RSA_EXPONENT1, 0);
                        add_bn_param(s, pkey, OSSL_PKEY_PARAM_RSA_EXPONENT2, 0);
                        add_bn_param(s, pkey, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, 0);
                }
                EVP_PKEY_free(pkey);
        }
        sodium_free(priv);
}

/* Every file in the state directory, as it is now. */
typedef struct Files {
        Bytes f[64];
        char name[64][64];
        size_t n;
} Files;

static void snapshot_files(Files *fs)
{
        static const char *const suffixes[] = {"", "-journal", "-wal", "-shm"};

        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                Bytes b = slurp_optional(db_path(suffixes[i]));
                if (!b.p)
                        continue;
                assert_true(fs->n < ELEMENTSOF(fs->f));
                snprintf(fs->name[fs->n], sizeof(fs->name[0]), "keys.db%s", suffixes[i]);
                fs->f[fs->n++] = b;
        }
}

/* No secret in any file, whole or in part (16 bytes of it in a row: 24 for the long RSA
 * numbers, searched at a stride of 8). */
static void assert_not_on_disk(const Files *fs, const Secrets *s)
{
        for (size_t i = 0; i < fs->n; i++)
                for (size_t j = 0; j < s->n; j++) {
                        const Bytes *x = &s->item[j];
                        if (memmem(fs->f[i].p, fs->f[i].n, x->p, x->n))
                                fail_msg("secret %zu (%zu bytes) found whole in %s", j, x->n,
                                         fs->name[i]);
                        if (s->whole_only[j])
                                continue;
                        for (size_t off = 0; off + 16 <= x->n; off += x->n <= 64 ? 1 : 8)
                                if (memmem(fs->f[i].p, fs->f[i].n, x->p + off, 16))
                                        fail_msg("16 bytes of secret %zu found in %s", j,
                                                 fs->name[i]);
                }
}

static void test_no_private_bytes_on_disk(void **state)
{
        KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        Secrets s = {};
        Files fs = {};

        p.algs[ALG_ES256] = p.algs[ALG_RS256] = true;
        advance(ks, &p, T0,
                "key_created(EdDSA,active) key_created(ES256,active) key_created(RS256,active)");
        for (int a = 0; a < _ALG_MAX; a++)
                collect_secrets(ks, a, &s);
        snapshot_files(&fs);
        advance(ks, &p, T0 + 80,
                "key_created(EdDSA,next) key_created(ES256,next) key_created(RS256,next)");
        snapshot_files(&fs); /* the next keys, sealed; their secrets are collected below */
        advance(ks, &p, T0 + 100, "key_rotated(EdDSA) key_rotated(ES256) key_rotated(RS256)");
        for (int a = 0; a < _ALG_MAX; a++)
                collect_secrets(ks, a, &s); /* the former next keys, now active */
        snapshot_files(&fs);
        assert_true(fs.n >= 3);

        /* The control: what the store unseals with the real master key is what we search for,
         * and the sealed rows are there (so the search looked where the keys are). */
        sqlite3 *db = db_open();
        sqlite3_stmt *st = NULL;
        int with_secret = 0;
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT COUNT(*) FROM keys WHERE sealed_secret IS NOT "
                                            "NULL",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        with_secret = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        /* Only keys that may still sign keep their sealed half: the three active ones. */
        assert_int_equal(with_secret, 3);

        keystore_close(ks);
        snapshot_files(&fs);
        /* The master key is not there either. */
        add_secret(&s, master->key, MASTER_KEY_BYTES);
        assert_not_on_disk(&fs, &s);

        for (size_t i = 0; i < fs.n; i++)
                free(fs.f[i].p);
        for (size_t i = 0; i < s.n; i++)
                free(s.item[i].p);
}

/* Runs one UPDATE with ?1 = kid and ?2 = n; it must change a row. */
static void db_update(sqlite3 *db, const char *sql, const char *kid, long long n)
{
        sqlite3_stmt *st = NULL;

        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        sqlite3_bind_text(st, 1, kid, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, n);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        assert_int_equal(sqlite3_changes(db), 1);
        sqlite3_finalize(st);
}

/* States, times and public keys are in the clear but MAC'ed: editing them is refused at
 * start, so a revoked key cannot be published again and no foreign public key slips in. */
static void test_rows_are_authenticated(void **state)
{
        KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        char a[KID_LEN + 1];
        KeyEvents ev = {};

        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);
        advance(ks, &p, T0 + 80, "key_created(EdDSA,next)");
        assert_int_equal(keystore_revoke(ks, &p, a, T0 + 81, &ev), 0);
        keystore_close(ks);
        assert_int_equal(reopen_result(master), 0);

        sqlite3 *db = db_open();
        /* un-revoke: published again until far in the future */
        db_update(db, "UPDATE keys SET state = 'retired', expires_at = ?2 WHERE kid = ?1", a,
                  4000000000LL);
        assert_int_equal(reopen_result(master), -EKEYREJECTED);
        db_update(db, "UPDATE keys SET state = 'revoked', expires_at = ?2 WHERE kid = ?1", a,
                  T0 + 81);
        assert_int_equal(reopen_result(master), 0); /* restored: accepted again */

        db_update(db, "UPDATE keys SET created_at = created_at + ?2 WHERE kid = ?1", a, 1);
        assert_int_equal(reopen_result(master), -EKEYREJECTED);
        db_update(db, "UPDATE keys SET created_at = created_at - ?2 WHERE kid = ?1", a, 1);
        assert_int_equal(reopen_result(master), 0);

        /* a different public key for the same kid */
        db_update(db,
                  "UPDATE keys SET public_jwk = replace(public_jwk, '\"x\":\"', '\"x\":\"A') "
                  "WHERE kid = ?1 AND ?2",
                  a, 1);
        assert_int_equal(reopen_result(master), -EKEYREJECTED);
        db_update(db,
                  "UPDATE keys SET public_jwk = replace(public_jwk, '\"x\":\"A', '\"x\":\"') "
                  "WHERE kid = ?1 AND ?2",
                  a, 1);
        assert_int_equal(reopen_result(master), 0);
        sqlite3_close(db);
}

static void test_sealed_blob_bound_to_kid(void **state)
{
        KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        char a[KID_LEN + 1], n[KID_LEN + 1];

        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);
        snprintf(n, sizeof(n), "%s", advance(ks, &p, T0 + 80, "key_created(EdDSA,next)").e[0].kid);
        keystore_close(ks);
        assert_int_equal(reopen_result(master), 0);

        sqlite3 *db = db_open();
        Bytes ba = db_blob(db, a), bn = db_blob(db, n);
        assert_true(ba.n > 32 && bn.n > 32);

        /* Swapped between the rows: each blob is a valid seal, but for the other kid. */
        db_set_blob(db, a, &bn);
        db_set_blob(db, n, &ba);
        assert_int_equal(reopen_result(master), -EKEYREJECTED);
        /* One row only. */
        db_set_blob(db, a, &ba);
        assert_int_equal(reopen_result(master), -EKEYREJECTED);
        db_set_blob(db, n, &bn);
        assert_int_equal(reopen_result(master), 0); /* the control */

        /* One byte altered, anywhere. */
        size_t where[] = {0, 1, 25, ba.n / 2, ba.n - 1};
        for (size_t i = 0; i < ELEMENTSOF(where); i++) {
                ba.p[where[i]] ^= 0x01;
                db_set_blob(db, a, &ba);
                assert_int_equal(reopen_result(master), -EKEYREJECTED);
                ba.p[where[i]] ^= 0x01;
        }
        db_set_blob(db, a, &ba);
        assert_int_equal(reopen_result(master), 0);
        /* Gone, or cut short. */
        db_set_blob(db, n, NULL);
        assert_int_equal(reopen_result(master), -EKEYREJECTED);
        db_set_blob(db, n, &bn);
        Bytes cut = {.p = ba.p, .n = ba.n - 1};
        assert_int_equal(reopen_result(master), 0);
        db_set_blob(db, a, &cut);
        assert_int_equal(reopen_result(master), -EKEYREJECTED);

        /* Restored: opens, and the keys are the ones they were. */
        db_set_blob(db, a, &ba);
        sqlite3_close(db);
        ks = open_store(master);
        assert_string_equal(active(ks, ALG_EDDSA), a);
        assert_string_equal(info(ks, n).state, "next");
        keystore_close(ks);
        free(ba.p);
        free(bn.p);
}

/* ---- a write that fails ------------------------------------------------------------------- */

/* Disk writes work again (writes_fail() made them fail, testutil.h); the failure was logged
 * once, naming the store. */
static void writes_work(void)
{
        _cleanup_free_ char *log = writes_restore();
        assert_logged(log, db_path(""));
        if (strstr(log, "cannot rollback"))
                fail_msg("a failed write logs a second, misleading error: %s", log);
}

static void test_failed_write_changes_nothing(void **state)
{
        KeyStore *ks = open_store(master);
        KeyPolicy p = policy();
        KeyEvents ev = {};
        char a[KID_LEN + 1], n[KID_LEN + 1];
        int r;

        /* The first key cannot be stored: there is none, in memory or on disk. */
        writes_fail();
        r = keystore_advance(ks, &p, T0, &ev);
        writes_work();
        assert_true(r < 0);
        assert_int_equal(ev.n, 0);
        assert_int_equal(n_keys(ks), 0);
        assert_string_equal(active(ks, ALG_EDDSA), "");
        assert_deadline(ks, &p, INT64_MIN);

        snprintf(a, sizeof(a), "%s", advance(ks, &p, T0, "key_created(EdDSA,active)").e[0].kid);
        snprintf(n, sizeof(n), "%s", advance(ks, &p, T0 + 80, "key_created(EdDSA,next)").e[0].kid);
        _cleanup_free_ char *list = dump(keystore_list(ks));

        /* A rotation that cannot be written: not made in memory either; events already in the
         * caller's list stay, the failed call's are taken back. */
        ev = (KeyEvents){.n = 1, .e[0] = {.event = "earlier"}};
        Bytes file = slurp(db_path(""));
        writes_fail();
        r = keystore_advance(ks, &p, T0 + 100, &ev);
        writes_work();
        assert_true(r < 0);
        assert_int_equal(ev.n, 1);
        assert_string_equal(ev.e[0].event, "earlier");
        _cleanup_free_ char *list2 = dump(keystore_list(ks));
        assert_string_equal(list2, list);
        assert_string_equal(active(ks, ALG_EDDSA), a);
        assert_deadline(ks, &p, T0 + 100);

        /* Nor a revocation or an admin rotation. */
        ev.n = 0;
        writes_fail();
        r = keystore_revoke(ks, &p, a, T0 + 100, &ev);
        writes_work();
        assert_true(r < 0);
        assert_int_equal(ev.n, 0);
        writes_fail();
        r = keystore_rotate(ks, &p, ALG_EDDSA, T0 + 100, &ev);
        writes_work();
        assert_true(r < 0);
        assert_int_equal(ev.n, 0);
        _cleanup_free_ char *list3 = dump(keystore_list(ks));
        assert_string_equal(list3, list);
        assert_string_equal(active(ks, ALG_EDDSA), a);
        assert_true(in_jwks(ks, T0 + 100, a));
        /* Not a byte of the database changed, and no journal is left to replay. */
        Bytes file2 = slurp(db_path(""));
        assert_int_equal(file2.n, file.n);
        assert_memory_equal(file2.p, file.p, file.n);
        assert_int_equal(access(db_path("-journal"), F_OK), -1);
        free(file.p);
        free(file2.p);

        /* Once the disk works again the schedule catches up, and the store is intact. */
        KeyEvents ok = advance(ks, &p, T0 + 100, "key_rotated(EdDSA)");
        assert_string_equal(ok.e[0].kid, n);
        ks = restart(ks, &p, T0 + 100);
        assert_string_equal(active(ks, ALG_EDDSA), n);
        assert_info(ks, a, "retired", T0, T0, T0 + 100, T0 + 130);
        keystore_close(ks);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_first_key, setup, teardown),
            cmocka_unit_test_setup_teardown(test_next_key_published_ahead, setup, teardown),
            cmocka_unit_test_setup_teardown(test_rotation_and_retention, setup, teardown),
            cmocka_unit_test_setup_teardown(test_late_next_key, setup, teardown),
            cmocka_unit_test_setup_teardown(test_clock_jump_forward, setup, teardown),
            cmocka_unit_test_setup_teardown(test_clock_jump_backward, setup, teardown),
            cmocka_unit_test_setup_teardown(test_deadline_edge_cases, setup, teardown),
            cmocka_unit_test_setup_teardown(test_deadline_timer_simulation, setup, teardown),
            cmocka_unit_test_setup_teardown(test_restart_exact, setup, teardown),
            cmocka_unit_test_setup_teardown(test_admin_rotate, setup, teardown),
            cmocka_unit_test_setup_teardown(test_revoke_active, setup, teardown),
            cmocka_unit_test_setup_teardown(test_revoke_next_and_retired, setup, teardown),
            cmocka_unit_test_setup_teardown(test_every_transition_reported, setup, teardown),
            cmocka_unit_test_setup_teardown(test_policy_changes, setup, teardown),
            cmocka_unit_test_setup_teardown(test_wrong_master_key, setup, teardown),
            cmocka_unit_test_setup_teardown(test_check_master_reads_only, setup, teardown),
            cmocka_unit_test_setup_teardown(test_no_private_bytes_on_disk, setup, teardown),
            cmocka_unit_test_setup_teardown(test_sealed_blob_bound_to_kid, setup, teardown),
            cmocka_unit_test_setup_teardown(test_rows_are_authenticated, setup, teardown),
            cmocka_unit_test_setup_teardown(test_failed_write_changes_nothing, setup, teardown),
        };

        if (sodium_init() < 0 || signer_init() < 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
