"""brokerctl: every command, BROKER_SOCKET, every exit code of the contract, and what it tells
its user: --version, each command's --help, the options each command takes (and the refusal of
any other), durations, the advice after a failure, the JWKS and the admin tables, and the bash
completion (client/brokerctl.bash-completion)."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import (BrokerTestCase, Raw, as_user, brokerctl_path, brokerd_path, sanitizer_env,
                     token_claims, token_header, verify_token)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPLETION = os.path.join(ROOT, "client", "brokerctl.bash-completion")
RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def run(*args, env=None, input=""):
    e = sanitizer_env()
    for k in ("BROKER_SOCKET", "BROKER_ADMIN_SOCKET"):
        e.pop(k, None)
    e.update(env or {})
    return subprocess.run([brokerctl_path(), *args], capture_output=True, text=True, env=e,
                          timeout=30, input=input)


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

    def test_5_rate_limited_is_not_denied(self):
        # retryable, unlike a denial: a script that gives up on 3 retries on 5
        b = self.broker(extra={"limits": {"rate": 1, "burst": 1}})
        self.assertEqual(b.token().returncode, 0)
        r = b.token()
        self.assertEqual(r.returncode, 5, r.stderr)
        self.assertIn("rate_limited", r.stderr)
        self.assertIn("retry later", r.stderr)
        self.assertNotIn("whoami", r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertEqual(self.b.token(audience="https://not-allowed.test").returncode, 3)

    def test_4_other(self):
        r = self.b.admin_ctl("revoke", "A" * 43)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("not_found", r.stderr)

    def test_help_states_the_exit_codes(self):
        out = run("--help").stdout
        for code, word in ((0, "ok"), (1, "usage"), (2, "unreachable"), (3, "denied"),
                           (4, "anything else"), (5, "rate limited")):
            self.assertRegex(out, rf"(?m)^  {code}  .*{word}", code)

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
    def test_ping_whoami_print_the_response(self):
        # the contract: the JSON response as it is
        for cmd in ("ping", "whoami"):
            r = self.b.ctl(cmd)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(json.loads(r.stdout)["ok"])
        self.assertEqual(json.loads(self.b.ctl("whoami").stdout)["uid"], 0)

    def test_jwks_prints_a_pure_jwks(self):
        r = self.b.ctl("jwks")
        self.assertEqual(r.returncode, 0, r.stderr)
        jwks = json.loads(r.stdout)
        self.assertEqual(list(jwks), ["keys"])  # no protocol envelope
        raw = self.b.raw().request({"op": "jwks"})
        self.assertEqual(jwks["keys"], raw["keys"])
        verify_token(self.b.token().stdout.strip(), jwks, "https://api.test")

    def test_status(self):
        self.b.token()
        self.b.token(audience="https://nope.test")
        r = self.b.admin_ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        s = json.loads(r.stdout)
        self.assertEqual((s["grants"], s["denials"]), (1, 1))
        self.assertEqual(s["audit"]["state"], "ok")
        self.assertGreaterEqual(s["audit"]["last_seq"], 3)
        self.assertEqual(s["pid"], self.b.daemon_pid())

    def test_keys_rotate_revoke(self):
        tok1 = self.b.token().stdout.strip()
        kid1 = token_header(tok1)["kid"]
        keys = json.loads(self.b.admin_ctl("keys", "--json").stdout)["keys"]
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
        states = {k["kid"]: k["state"]
                  for k in json.loads(self.b.admin_ctl("keys", "--json").stdout)["keys"]}
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
        # no policy rule opens the admin socket: the advice must not send them for one
        self.assertNotIn("rule", r.stderr)
        self.assertNotIn("whoami", r.stderr)
        self.assertIn("as root or as the broker's user", r.stderr)

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


# --- what brokerctl tells its user (issue 12: "the CLI misleads") ---------------------------

# Every option brokerctl has, with a value for those that take one.
OPTIONS = {
    "--socket": "/nonexistent/broker.sock", "--admin-socket": "/nonexistent/admin.sock",
    "--audience": "https://api.test", "--upstream": "up", "--scope": "read", "--ttl": "60",
    "--json": None, "--format": "json", "--write": "/nonexistent/token", "--refresh": None,
    "--mode": "0600", "--alg": "ES256", "--database": "/nonexistent/audit.db",
    "--file": "/nonexistent/export.jsonl", "--since": "2026-01-01", "--until": "2026-01-02",
    "--event": "grant", "--output": "/nonexistent/out", "--audit-key": "k", "--threads": "1",
    "--allow-empty": None,
}
# Every command, with its operand if it has one.
COMMANDS = {
    "token": [], "credentials": [], "whoami": [], "jwks": [], "ping": [], "status": [],
    "reload": [], "keys": [], "rotate": [], "revoke": ["A" * 43], "secret set": ["n"],
    "secret list": [], "secret delete": ["n"], "upstream test": ["up"], "audit export": [],
    "audit verify": [],
}
NOWHERE = {"BROKER_SOCKET": "/nonexistent/broker.sock",
           "BROKER_ADMIN_SOCKET": "/nonexistent/admin.sock"}


def help_options(command):
    """The options `brokerctl COMMAND --help` lists under "Options:"."""
    r = run(*command.split(), "--help")
    assert r.returncode == 0, r.stderr
    section = r.stdout.split("\nOptions:\n", 1)[1]
    return {m.group(1) for m in re.finditer(r"(?m)^  (--[a-z-]+)", section)}


def complete(*words):
    """What the bash completion offers for a command line whose last word is being typed."""
    script = ('source "$1"; shift; COMP_WORDS=(brokerctl "$@"); COMP_CWORD=$#; _brokerctl; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    r = subprocess.run(["bash", "-c", script, "bash", COMPLETION, *words], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.split("\n") if w]


class VersionAndHelpTest(unittest.TestCase):
    def test_version_of_both_programs_is_the_same(self):
        ctl = run("--version")
        self.assertEqual(ctl.returncode, 0, ctl.stderr)
        self.assertRegex(ctl.stdout, r"^brokerctl \d+\.\d+\.\d+\n$")
        d = subprocess.run([brokerd_path(), "--version"], capture_output=True, text=True,
                           env=sanitizer_env())
        self.assertEqual(d.returncode, 0, d.stderr)
        self.assertEqual(ctl.stdout.split()[1], d.stdout.split()[1])
        # anywhere on the line, like --help
        self.assertEqual(run("token", "--version").stdout, ctl.stdout)

    def test_each_command_has_its_own_help(self):
        general = run("--help").stdout
        for command in COMMANDS:
            with self.subTest(command=command):
                r = run(*command.split(), "--help")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stderr, "")
                self.assertTrue(r.stdout.startswith("Usage: "), r.stdout)
                self.assertNotEqual(r.stdout, general)
                # its synopsis names it, and no other command's
                synopsis = r.stdout.split("\n\n", 1)[0]
                self.assertIn(f" {command} ", synopsis + " ")
                for other in COMMANDS:
                    if other != command and not other.startswith(command.split()[0] + " "):
                        self.assertNotIn(f"] {other} ", synopsis)
                self.assertIn("\nOptions:\n", r.stdout)
        # -h too, and --help before the command word
        self.assertEqual(run("jwks", "-h").stdout, run("jwks", "--help").stdout)
        self.assertEqual(run("--help", "jwks").stdout, run("jwks", "--help").stdout)
        self.assertEqual(run("revoke", "--help").returncode, 0)

    def test_group_help_lists_its_commands(self):
        for group, subs in (("audit", ("export", "verify")), ("secret", ("set", "list", "delete")),
                            ("upstream", ("test",))):
            r = run(group, "--help")
            self.assertEqual(r.returncode, 0, r.stderr)
            for sub in subs:
                self.assertIn(f"brokerctl {group} {sub}", r.stdout.replace(
                    "[--admin-socket PATH] ", ""))

    def test_help_lists_exactly_the_options_a_command_takes(self):
        """Every option brokerctl has, given to every command: an option the command's help
        lists is taken, any other is refused as a usage error that names it and the command."""
        for command, operands in COMMANDS.items():
            listed = help_options(command)
            self.assertLessEqual(listed, set(OPTIONS), command)
            for opt, value in OPTIONS.items():
                args = [*command.split(), *operands, opt] + ([value] if value else [])
                with self.subTest(args=args):
                    r = run(*args, env=NOWHERE)
                    if opt in listed:
                        self.assertNotRegex(r.stderr, r"does not apply|applies to", r.stderr)
                        continue
                    self.assertEqual(r.returncode, 1, r.stderr)
                    self.assertEqual(r.stdout, "")
                    self.assertIn(opt, r.stderr)
                    self.assertIn(command.split()[-1], r.stderr)
                    self.assertRegex(r.stderr, r"does not apply|applies to")
                    self.assertNotIn("cannot reach", r.stderr)  # refused before connecting

    def test_a_global_option_is_not_silently_ignored(self):
        for args in (["--format", "json", "whoami"], ["--json", "ping"],
                     ["--socket", "/x", "status"], ["--admin-socket", "/x", "token",
                                                    "--audience", "a"]):
            r = run(*args, env=NOWHERE)
            self.assertEqual(r.returncode, 1, f"{args}: {r.stderr}")
            self.assertIn(args[0], r.stderr)
            self.assertIn(args[-1] if args[-1] != "a" else "token", r.stderr)
        r = run("--socket", "/x", "keys", env=NOWHERE)
        self.assertIn("--admin-socket", r.stderr)  # what was meant

    def test_usage_errors_say_what_is_wrong(self):
        for args, says in ((["frobnicate"], ["unknown command 'frobnicate'", "token", "audit"]),
                           ([], ["no command", "token"]),
                           (["audit"], ["audit needs a command", "export or verify"]),
                           (["audit", "exprot"], ["'audit exprot'", "export or verify"]),
                           (["secret", "set"], ["secret set needs NAME"]),
                           (["secret", "list", "extra"], ["secret list takes no arguments",
                                                          '"extra"']),
                           (["revoke"], ["revoke needs KID"]),
                           (["revoke", "A", "B"], ["revoke takes one KID", '"B"']),
                           (["ping", "now"], ["ping takes no arguments", '"now"']),
                           (["token"], ["--audience", "--upstream"]),
                           (["token", "--audience", "a", "--format", "yaml"],
                            ["--format", "plain, json or gcp-executable", '"yaml"']),
                           (["token", "--audience", "a", "--refresh"], ["--refresh",
                                                                         "--write"]),
                           (["credentials", "--upstream", "u"], ["--format aws"])):
            r = run(*args, env=NOWHERE)
            self.assertEqual(r.returncode, 1, f"{args}: {r.stderr}")
            for s in says:
                self.assertIn(s, r.stderr, args)


class DurationTest(BrokerTestCase):
    extra = {"tokens": {"default_ttl": "5m", "max_ttl": "2h"}}

    def test_ttl_takes_durations_like_the_config(self):
        for ttl, seconds in (("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600),
                             ("1d", 7200)):  # clamped to max_ttl
            r = self.b.token(ttl=ttl)
            self.assertEqual(r.returncode, 0, f"{ttl}: {r.stderr}")
            c = token_claims(r.stdout.strip())
            self.assertEqual(c["exp"] - c["iat"], seconds, ttl)

    def test_bad_ttl_is_a_usage_error_that_names_the_option(self):
        for ttl in ("0", "0s", "-5", "5x", "1.5h", "5 m", "m", "", "99999999999"):
            r = self.b.token(ttl=ttl)
            self.assertEqual(r.returncode, 1, f"{ttl}: {r.stderr}")
            self.assertIn("--ttl", r.stderr)
            self.assertIn(f'"{ttl}"', r.stderr)
            self.assertIn("15m", r.stderr)  # what it takes


class AdviceTest(BrokerTestCase):
    """The advice after a failure names the option and variable that apply, and what was not
    found; it does not point at a log that says nothing."""

    def test_admin_command_that_cannot_connect_names_the_admin_socket(self):
        for args in (["status"], ["keys"], ["reload"], ["rotate"], ["revoke", "A" * 43],
                     ["secret", "list"], ["upstream", "test", "x"]):
            r = run("--admin-socket", "/nonexistent/admin.sock", *args)
            self.assertEqual(r.returncode, 2, f"{args}: {r.stderr}")
            self.assertIn("--admin-socket", r.stderr, args)
            self.assertIn("BROKER_ADMIN_SOCKET", r.stderr, args)
            self.assertNotIn("--socket", r.stderr, args)
            self.assertNotIn("$BROKER_SOCKET", r.stderr, args)
            self.assertNotIn(" BROKER_SOCKET", r.stderr, args)
        # and the variable is read
        r = run("status", env={"BROKER_ADMIN_SOCKET": self.b.admin})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_workload_command_that_cannot_connect_names_the_workload_socket(self):
        for args in (["ping"], ["jwks"], ["token", "--audience", "a"]):
            r = run("--socket", "/nonexistent/broker.sock", *args)
            self.assertEqual(r.returncode, 2, f"{args}: {r.stderr}")
            self.assertIn("--socket", r.stderr)
            self.assertIn("BROKER_SOCKET", r.stderr)
            self.assertNotIn("ADMIN", r.stderr)

    def test_not_found_says_what_was_not_found(self):
        kid = "-" + "Q" * 42
        for args, named, lister in ((["revoke", kid], kid, "brokerctl keys"),
                                    (["secret", "delete", "nosuch"], "nosuch",
                                     "brokerctl secret list"),
                                    (["upstream", "test", "nosuch"], "nosuch", "upstreams")):
            r = self.b.admin_ctl(*args)
            self.assertEqual(r.returncode, 4, f"{args}: {r.stderr}")
            self.assertIn("not_found", r.stderr)
            self.assertIn(named, r.stderr)
            self.assertIn(lister, r.stderr)
            self.assertNotIn("log", r.stderr)

    def test_denied_workload_call_points_at_whoami(self):
        r = self.b.token(audience="https://not-allowed.test")
        self.assertEqual(r.returncode, 3)
        self.assertIn("brokerctl whoami", r.stderr)


class AdminTablesTest(BrokerTestCase):
    def raw_reply(self, op):
        c = Raw(self.b.admin)
        try:
            return c.request({"op": op})
        finally:
            c.close()

    def test_status_is_a_table_with_rfc3339_times(self):
        self.b.token()
        r = self.b.admin_ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("{", r.stdout)
        self.assertNotIn('"ok"', r.stdout)
        self.assertRegex(r.stdout, rf"(?m)^started_at: +{RFC3339}$")
        self.assertRegex(r.stdout, r"(?m)^grants: +1$")
        self.assertRegex(r.stdout, rf"(?m)^pid: +{self.b.daemon_pid()}$")
        # nested objects indented under their name
        self.assertRegex(r.stdout, r"(?m)^audit:\n  state: +ok$")
        status = self.raw_reply("status")
        self.assertRegex(r.stdout, rf"(?m)^  key_id: +{re.escape(status['audit']['key_id'])}$")

    def test_status_json_is_the_reply_without_the_envelope(self):
        r = self.b.admin_ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        s = json.loads(r.stdout)
        raw = self.raw_reply("status")
        self.assertNotIn("ok", s)
        self.assertEqual(set(s), set(raw) - {"ok"})
        self.assertIsInstance(s["started_at"], int)
        self.assertEqual(s["started_at"], raw["started_at"])

    def test_keys_is_a_table_with_rfc3339_times(self):
        self.assertEqual(self.b.admin_ctl("rotate").returncode, 0)
        keys = self.raw_reply("keys")["keys"]
        r = self.b.admin_ctl("keys")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0].split(),
                         ["KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRED", "EXPIRES"])
        self.assertEqual(len(lines), 1 + len(keys))
        for k, line in zip(keys, lines[1:]):
            cols = line.split()
            self.assertEqual(cols[:3], [k["kid"], k["alg"], k["state"]])
            for col, field in zip(cols[3:], ("created_at", "activated_at", "retired_at",
                                             "expires_at")):
                if k[field]:
                    self.assertRegex(col, RFC3339)
                    self.assertEqual(col, time_rfc3339(k[field]))
                else:
                    self.assertEqual(col, "-")
        self.assertIn("retired", [line.split()[2] for line in lines[1:]])

    def test_keys_json_is_the_reply_without_the_envelope(self):
        r = self.b.admin_ctl("keys", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        raw = self.raw_reply("keys")
        del raw["ok"]
        self.assertEqual(json.loads(r.stdout), raw)


def time_rfc3339(sec):
    import datetime
    return datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


@unittest.skipUnless(shutil.which("bash"), "no bash")
class BashCompletionTest(unittest.TestCase):
    def test_commands_and_subcommands(self):
        self.assertEqual(complete("to"), ["token"])
        self.assertEqual(set(complete("")), {w.split()[0] for w in COMMANDS})
        self.assertEqual(complete("audit", ""), ["export", "verify"])
        self.assertEqual(complete("secret", ""), ["set", "list", "delete"])
        self.assertEqual(complete("upstream", ""), ["test"])
        # global options before the command, with their values, are skipped
        self.assertEqual(complete("--socket", "/x", "to"), ["token"])
        self.assertIn("--version", complete("--"))

    def test_options_per_command_are_those_brokerctl_takes(self):
        for command, operands in COMMANDS.items():
            with self.subTest(command=command):
                offered = set(complete(*command.split(), *operands, "--")) - {"--help"}
                self.assertEqual(offered, help_options(command))

    def test_format_values(self):
        self.assertEqual(complete("token", "--format", ""), ["plain", "json", "gcp-executable"])
        self.assertEqual(complete("credentials", "--format", ""), ["aws"])
        self.assertEqual(complete("audit", "export", "--format", ""), ["jsonl", "csv", "ocsf"])
        self.assertEqual(complete("token", "--format", "g"), ["gcp-executable"])

    def test_events_are_those_of_the_grant_log(self):
        r = run("audit", "export", "--event", "?")
        known = re.search(r"\(([a-z_, ]+)\)", r.stderr).group(1).split(", ")
        self.assertLessEqual(set(known), set(complete("audit", "export", "--event", "")))

    def test_files_for_path_options(self):
        d = tempfile.mkdtemp(prefix="broker-compl-")
        self.addCleanup(shutil.rmtree, d, True)
        open(os.path.join(d, "audit.db"), "w").close()
        for words in (["audit", "export", "--database"], ["audit", "export", "--output"],
                      ["audit", "verify", "--file"], ["token", "--audience", "a", "--write"]):
            self.assertEqual(complete(*words, os.path.join(d, "aud")),
                             [os.path.join(d, "audit.db")], words)
        # no file names where a value is free text
        self.assertEqual(complete("token", "--audience", os.path.join(d, "aud")), [])
