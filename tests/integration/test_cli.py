"""brokerctl: every command, BROKER_SOCKET, and every exit code of the contract."""

import json
import os
import subprocess

from harness import (BrokerTestCase, as_user, brokerctl_path, brokerd_path, sanitizer_env,
                     token_header, verify_token)


def run(*args, env=None):
    e = sanitizer_env()
    e.pop("BROKER_SOCKET", None)
    e.update(env or {})
    return subprocess.run([brokerctl_path(), *args], capture_output=True, text=True, env=e,
                          timeout=30)


class ExitCodeTest(BrokerTestCase):
    def test_0_ok(self):
        r = self.b.token()
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stderr, "")
        self.assertEqual(r.stdout.count("."), 2)  # the token alone

    def test_1_usage(self):
        for args in (["token"], ["frobnicate"], ["token", "--audience", "x", "--ttl", "abc"],
                     ["token", "--audience", "x", "--ttl", "0"], ["--bogus-flag", "ping"], [],
                     ["revoke"], ["audit", "export"], ["audit", "export", "--database",
                                                        "/nonexistent/audit.db"]):
            r = run(*args)
            self.assertEqual(r.returncode, 1, f"{args}: {r.stdout} {r.stderr}")
            self.assertTrue(r.stderr.strip(), f"{args}: no message on stderr")

    def test_unknown_options_are_named_by_the_program(self):
        for args in (["--bogus-flag", "ping"], ["audit", "export", "--bogus-flag"],
                     ["audit", "verify", "-o", "x"]):
            r = run(*args)
            self.assertEqual(r.returncode, 1, f"{args}: {r.stderr}")
            first = r.stderr.splitlines()[0]
            self.assertRegex(first, r"^\S*brokerctl: (unrecognized|invalid) option", args)

    def test_1_bad_request_from_broker(self):
        r = self.b.token(audience="x" * 2000)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("bad_request", r.stderr)
        r = self.b.token(scopes=["has space"])
        self.assertEqual(r.returncode, 1, r.stderr)

    def test_2_unreachable(self):
        r = run("--socket", "/nonexistent/broker.sock", "ping")
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot reach the broker", r.stderr)
        self.assertIn("BROKER_SOCKET", r.stderr)  # says what to do

    def test_3_denied(self):
        r = self.b.token(audience="https://not-allowed.test")
        self.assertEqual(r.returncode, 3)
        self.assertIn("denied", r.stderr)
        self.assertIn("whoami", r.stderr)  # says what to do
        self.assertEqual(r.stdout, "")

    def test_3_rate_limited(self):
        b = self.broker(extra={"limits": {"rate": 1, "burst": 1}})
        self.assertEqual(b.token().returncode, 0)
        r = b.token()
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("rate_limited", r.stderr)

    def test_4_other(self):
        r = self.b.admin_ctl("revoke", "A" * 43)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("not_found", r.stderr)

    def test_kid_starting_with_a_dash_is_not_an_option(self):
        # base64url kids may start with '-'; 1 in 64 real kids does
        for kid in ("-" + "A" * 42, "--" + "B" * 41):
            r = self.b.admin_ctl("revoke", kid)
            self.assertEqual(r.returncode, 4, r.stderr)
            self.assertIn("not_found", r.stderr)
        r = self.b.admin_ctl("revoke", "--", "-" + "C" * 42)
        self.assertEqual(r.returncode, 4, r.stderr)

    def test_options_after_the_command(self):
        r = run("token", "--audience", "https://api.test", "--socket", self.b.workload)
        self.assertEqual(r.returncode, 0, r.stderr)


class SocketSelectionTest(BrokerTestCase):
    def test_broker_socket_env(self):
        r = run("ping", env={"BROKER_SOCKET": self.b.workload})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), {"ok": True})

    def test_socket_flag_overrides_env(self):
        r = run("--socket", self.b.workload, "ping", env={"BROKER_SOCKET": "/nonexistent"})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_default_socket_path_is_the_contract_one(self):
        r = run("ping")
        if os.path.exists("/run/brokerd/workload/broker.sock"):
            self.skipTest("a broker is running on the default socket")
        self.assertEqual(r.returncode, 2)
        self.assertIn("/run/brokerd/workload/broker.sock", r.stderr)


class CommandsTest(BrokerTestCase):
    def test_ping_whoami_jwks_print_json(self):
        for cmd in ("ping", "whoami", "jwks"):
            r = self.b.ctl(cmd)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(json.loads(r.stdout)["ok"])

    def test_status(self):
        self.b.token()
        self.b.token(audience="https://nope.test")
        r = self.b.admin_ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        s = json.loads(r.stdout)
        self.assertEqual((s["grants"], s["denials"]), (1, 1))
        self.assertEqual(s["audit"]["state"], "ok")
        self.assertGreaterEqual(s["audit"]["last_seq"], 3)
        self.assertEqual(s["pid"], self.b.daemon_pid())

    def test_keys_rotate_revoke(self):
        tok1 = self.b.token().stdout.strip()
        kid1 = token_header(tok1)["kid"]
        keys = json.loads(self.b.admin_ctl("keys").stdout)["keys"]
        self.assertEqual([(k["kid"], k["state"]) for k in keys], [(kid1, "active")])

        r = self.b.admin_ctl("rotate")
        self.assertEqual(r.returncode, 0, r.stderr)
        kid2 = json.loads(r.stdout)["kid"]
        self.assertNotEqual(kid1, kid2)
        tok2 = self.b.token().stdout.strip()
        self.assertEqual(token_header(tok2)["kid"], kid2)
        # the old token still verifies: its key stays published, retired
        jwks = self.b.jwks()
        verify_token(tok1, jwks, "https://api.test")
        verify_token(tok2, jwks, "https://api.test")
        states = {k["kid"]: k["state"] for k in json.loads(self.b.admin_ctl("keys").stdout)["keys"]}
        self.assertEqual(states, {kid1: "retired", kid2: "active"})

        # revoking the active key: gone from the JWKS at once and replaced
        r = self.b.admin_ctl("revoke", kid2)
        self.assertEqual(r.returncode, 0, r.stderr)
        kid3 = json.loads(r.stdout)["replacement_kid"]
        kids = [k["kid"] for k in self.b.jwks()["keys"]]
        self.assertNotIn(kid2, kids)
        self.assertIn(kid3, kids)
        with self.assertRaises(Exception):
            verify_token(tok2, self.b.jwks(), "https://api.test")
        self.assertEqual(token_header(self.b.token().stdout.strip())["kid"], kid3)
        # revoking twice is refused
        self.assertEqual(self.b.admin_ctl("revoke", kid2).returncode, 1)
        events = [r["event"] for r in self.b.audit()]
        self.assertIn("key_rotated", events)
        self.assertIn("key_revoked", events)
        # and the revocation survives a restart
        self.assertEqual(self.b.stop(), 0)
        self.b.start()
        self.assertNotIn(kid2, [k["kid"] for k in self.b.jwks()["keys"]])

    def test_admin_socket_refuses_other_uids(self):
        os.chmod(self.b.admin, 0o666)  # even if someone opens the file mode up
        r = self.b.admin_ctl("status", user=as_user(4001))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("admin socket", r.stderr)

    def test_reload(self):
        self.assertEqual(self.b.token(audience="https://new.test").returncode, 3)
        cfg = dict(self.b.config)
        cfg["rules"] = [dict(cfg["rules"][0], audiences=["https://new.test"])]
        self.b.write_config(cfg)
        r = self.b.admin_ctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.b.token(audience="https://new.test").returncode, 0)
        # a bad config is refused with every problem named, and the running one stays
        cfg["rules"][0]["match"] = {"uid": "zero"}
        cfg["bogus"] = 1
        self.b.write_config(cfg)
        r = self.b.admin_ctl("reload")
        self.assertEqual(r.returncode, 1)
        self.assertIn("rules[0].match.uid: expected integer", r.stderr)
        self.assertIn("bogus: unknown key", r.stderr)
        self.assertEqual(self.b.token(audience="https://new.test").returncode, 0)
        # changing a socket path needs a restart
        cfg = dict(self.b.config)
        cfg["listen"] = dict(cfg["listen"], workload=self.b.workload + "2")
        self.b.write_config(cfg)
        r = self.b.admin_ctl("reload")
        self.assertEqual(r.returncode, 1)
        self.assertIn("listen.workload", r.stderr)
        self.assertIn("config_reloaded", [r["event"] for r in self.b.audit()])


class CheckTest(BrokerTestCase):
    start_broker = False

    def test_check_valid_and_invalid(self):
        b = self.broker(start=False)
        r = subprocess.run([brokerd_path(), "--config", b.config_path, "--check"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        b.config["rules"][0]["audiences"] = "https://api.test"
        b.config["tokens"] = {"default_ttl": "5x"}
        b.write_config()
        r = subprocess.run([brokerd_path(), "--config", b.config_path, "--check"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{b.config_path}: rules[0].audiences: expected array", r.stderr)
        self.assertIn(f"{b.config_path}: tokens.default_ttl: invalid duration", r.stderr)
        # a bad config at start is fatal, with the same messages
        self.assertFalse(b.start(expect_ready=False, timeout=3))
        self.assertEqual(b.proc.wait(5), 1)
        self.assertIn("rules[0].audiences: expected array", b.read_log())
        b.proc = None
