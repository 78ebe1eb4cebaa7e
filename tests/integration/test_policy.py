"""A grant and a denial for every selector, with real callers, and first-match order."""

import json

from harness import BrokerTestCase, as_user, brokerctl_path, random_container_id, token_claims

AUD = "https://api.test"


def rule(name, match, **kw):
    r = {"name": name, "match": match, "subject": "spiffe://test/{rule}/{uid}",
         "audiences": [AUD]}
    r.update(kw)
    return r


class SelectorTest(BrokerTestCase):
    start_broker = False

    def grant_and_deny(self, match, granted, denied):
        """`granted` and `denied` are dicts of ctl() keyword arguments for two callers."""
        b = self.broker(rules=[rule("sel", match)])
        r = b.token(**granted)
        self.assertEqual(r.returncode, 0, f"{match}: expected grant: {r.stderr}")
        self.assertEqual(token_claims(r.stdout.strip())["sub"].split("/")[3], "sel")
        r = b.token(**denied)
        self.assertEqual(r.returncode, 3, f"{match}: expected denial: {r.stdout}")
        self.assertIn("no rule matches this caller", r.stderr)
        events = [(d["event"], d.get("reason")) for d in b.decisions()]
        self.assertEqual(events, [("grant", None), ("deny", "no_matching_rule")])

    def test_uid(self):
        self.grant_and_deny({"uid": 4001}, {"user": as_user(4001)}, {"user": as_user(4002)})

    def test_gid_primary(self):
        self.grant_and_deny({"gid": 4100}, {"user": as_user(4001, 4100)},
                            {"user": as_user(4001, 4101)})

    def test_gid_supplementary(self):
        self.grant_and_deny({"gid": 4200}, {"user": as_user(4001, 4001, groups=[4199, 4200])},
                            {"user": as_user(4001, 4001, groups=[4199])})

    def test_user(self):
        self.grant_and_deny({"user": "www-data"}, {"user": as_user(33)},
                            {"user": as_user(34)})

    def test_group(self):
        # "nogroup" is 65534 on Debian; match through a supplementary group
        self.grant_and_deny({"group": "nogroup"}, {"user": as_user(4001, 4001, groups=[65534])},
                            {"user": as_user(4001, 4001, groups=[4002])})

    def test_exe_glob(self):
        # exe needs a pin on who runs it (uid here); test_exe_identity has the rest.
        bindir = brokerctl_path().rsplit("/", 1)[0]
        b = self.broker(rules=[rule("sel", {"exe": bindir + "/broker*", "uid": 0})])
        self.assertEqual(b.token().returncode, 0)
        b2 = self.broker(rules=[rule("sel", {"exe": "/usr/bin/*", "uid": 0})])
        r = b2.token()
        self.assertEqual(r.returncode, 3, r.stdout)

    def test_unit_glob(self):
        ok = self.cgroup("brokertest.slice/web-1.service")
        other = self.cgroup("brokertest.slice/db-1.service")
        self.grant_and_deny({"unit": "web-*.service"}, {"cgroup": ok}, {"cgroup": other})

    def test_unit_under_a_user_manager_needs_the_uid_too(self):
        # Any user may name a unit of their own systemd "nginx-test.service"; that name must
        # not pass for the system service of the same name unless the rule pins the uid.
        um = "user.slice/user-4001.slice/user@4001.service"
        user_delegated = self.cgroup(f"{um}/app.slice/nginx-test.service")
        system_unit = self.cgroup("brokertest.slice/nginx-test.service")
        b = self.broker(rules=[rule("sys", {"unit": "nginx-test.service"})])
        self.assertEqual(b.token(cgroup=system_unit).returncode, 0)
        r = b.token(user=as_user(4001), cgroup=user_delegated)
        self.assertEqual(r.returncode, 3, r.stdout)
        who = json.loads(b.ctl("whoami", user=as_user(4001), cgroup=user_delegated).stdout)
        self.assertEqual((who["unit"], who["user_delegated"]), ("nginx-test.service", True))
        b2 = self.broker(rules=[rule("usr", {"unit": "nginx-test.service", "uid": 4001})])
        self.assertEqual(b2.token(user=as_user(4001), cgroup=user_delegated).returncode, 0)

    def test_container_named_in_a_users_own_subtree_needs_the_uid_too(self):
        # A user can create "docker-<any id>.scope" below their own systemd; it must not pass
        # for a docker container unless the rule pins the uid.
        cid = random_container_id()
        fake = self.cgroup(f"user.slice/user-4001.slice/user@4001.service/app.slice/x/"
                           f"docker-{cid}.scope")
        b = self.broker(rules=[rule("docker", {"container": "docker:*"})])
        who = json.loads(b.ctl("whoami", user=as_user(4001), cgroup=fake).stdout)
        self.assertEqual((who["container"], who["user_delegated"]), (f"docker:{cid}", True))
        self.assertEqual(b.token(user=as_user(4001), cgroup=fake).returncode, 3)
        b2 = self.broker(rules=[rule("rootless", {"container": "docker:*", "uid": 4001})])
        self.assertEqual(b2.token(user=as_user(4001), cgroup=fake).returncode, 0)

    def test_cgroup_glob(self):
        ok = self.cgroup("brokertest.slice/app.scope")
        other = self.cgroup("brokertest-other.slice/app.scope")
        self.grant_and_deny({"cgroup": "/brokertest.slice/*"}, {"cgroup": ok},
                            {"cgroup": other})

    def test_container_glob(self):
        ok = self.cgroup(f"brokertest.slice/docker-{random_container_id()}.scope")
        other = self.cgroup(f"brokertest.slice/crio-{random_container_id()}.scope")
        self.grant_and_deny({"container": "docker:*"}, {"cgroup": ok}, {"cgroup": other})

    def test_all_selectors_must_hold(self):
        cid = random_container_id()
        cg = self.cgroup(f"brokertest.slice/docker-{cid}.scope")
        b = self.broker(rules=[rule("both", {"uid": 4001, "container": f"docker:{cid}"})])
        self.assertEqual(b.token(user=as_user(4001), cgroup=cg).returncode, 0)
        self.assertEqual(b.token(user=as_user(4001)).returncode, 3)  # not in the container
        self.assertEqual(b.token(cgroup=cg).returncode, 3)  # root, not uid 4001

    def test_empty_match_matches_everyone(self):
        b = self.broker(rules=[rule("any", {})])
        self.assertEqual(b.token(user=as_user(4001)).returncode, 0)
        self.assertEqual(b.token().returncode, 0)

    def test_no_rules_denies_everyone(self):
        b = self.broker(rules=[])
        r = b.token()
        self.assertEqual(r.returncode, 3)
        self.assertEqual(b.decisions()[0]["reason"], "no_matching_rule")


class DecisionTest(BrokerTestCase):
    rules = [
        rule("first", {"uid": 0}, audiences=[AUD, "https://*.example.test"],
             scopes=["read", "write"], max_ttl="60s",
             subject="spiffe://test/{rule}/{uid}/{user}"),
        rule("second", {}, audiences=["https://secret-audience.test"], scopes=["admin-scope"]),
    ]

    def test_first_match_decides(self):
        # root matches both rules; the first one decides, so the second's audience is refused
        r = self.b.token(audience="https://secret-audience.test")
        self.assertEqual(r.returncode, 3)
        # the message names what was asked, never the other rule's name or scopes
        self.assertNotIn("admin-scope", r.stderr)
        self.assertNotIn("second", r.stderr)
        r = self.b.token(audience="https://nope.test")
        self.assertNotIn("secret-audience", r.stderr)
        self.assertNotIn("example.test", r.stderr)  # nor the deciding rule's own list
        # a non-root caller falls through to the second rule
        self.assertEqual(self.b.token(audience="https://secret-audience.test",
                                      user=as_user(4001)).returncode, 0)

    def test_audience_glob_does_not_cross_slash(self):
        self.assertEqual(self.b.token(audience="https://x.example.test").returncode, 0)
        self.assertEqual(self.b.token(audience="https://evil.test/x.example.test").returncode, 3)

    def test_scope_subset(self):
        self.assertEqual(self.b.token(scopes=["read"]).returncode, 0)
        r = self.b.token(scopes=["read", "delete"])
        self.assertEqual(r.returncode, 3)
        self.assertIn('scope "delete" is not allowed', r.stderr)
        self.assertNotIn("write", r.stderr)

    def test_ttl_clamped_to_rule_max(self):
        r = self.b.ctl("token", "--audience", AUD, "--ttl", "3600", "--json")
        resp = json.loads(r.stdout)
        c = token_claims(resp["token"])
        self.assertEqual(c["exp"] - c["iat"], 60)

    def test_subject_template(self):
        c = token_claims(self.b.token().stdout.strip())
        self.assertEqual(c["sub"], "spiffe://test/first/0/root")

    def test_denials_are_audited_with_reasons(self):
        self.b.token(audience="https://nope.test")
        self.b.token(scopes=["delete"])
        self.b.token()
        got = [(d["event"], d.get("reason"), d.get("rule")) for d in self.b.decisions()]
        self.assertEqual(got, [("deny", "audience_not_allowed", "first"),
                               ("deny", "scope_not_allowed", "first"),
                               ("grant", None, "first")])


class SubjectTest(BrokerTestCase):
    rules = [rule("u", {}, subject="spiffe://test/unit/{unit}")]

    def test_subject_needing_missing_unit_is_denied(self):
        r = self.b.token()  # the test runner is in no unit
        self.assertEqual(r.returncode, 3)
        self.assertIn("{unit}", r.stderr)
        self.assertEqual(self.b.decisions()[0]["reason"], "subject_unavailable")
        cg = self.cgroup("brokertest.slice/api.service")
        r = self.b.token(cgroup=cg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(token_claims(r.stdout.strip())["sub"], "spiffe://test/unit/api.service")
