"""Every token decision is in the audit store before the answer, with the right peer; and no
token leaves when its record cannot be written. The chain, its verification and the export
formats are tested in test_chain.py."""

import hashlib
import json
import os
import signal
import socket
import subprocess

from harness import (BrokerTestCase, as_user, brokerctl_path, random_container_id,
                     sanitizer_env, token_claims, wait_until)

AUD = "https://api.test"


class AuditExportTest(BrokerTestCase):
    rules = [{"name": "root", "match": {"uid": 0}, "subject": "spiffe://test/uid/{uid}",
              "audiences": [AUD], "scopes": ["read"]},
             {"name": "svc", "match": {"uid": 4001}, "subject": "spiffe://test/unit/{unit}",
              "audiences": [AUD]}]

    def test_export_holds_exactly_the_decisions_with_their_peers(self):
        cid = random_container_id()
        cg = self.cgroup(f"brokertest.slice/docker-{cid}.scope")
        made = []
        r = self.b.ctl("token", "--audience", AUD, "--scope", "read", "--json")
        made.append(("grant", 0, json.loads(r.stdout)["token"]))
        r = self.b.token(audience="https://nope.test")
        made.append(("deny", 0, None))
        r = self.b.token(user=as_user(4001, 4001), cgroup=cg)
        self.assertEqual(r.returncode, 0, r.stderr)
        made.append(("grant", 4001, r.stdout.strip()))
        r = self.b.token(user=as_user(4002))
        made.append(("deny", 4002, None))
        # ping, whoami, jwks and bad requests are not decisions
        self.b.ctl("ping"), self.b.ctl("whoami"), self.b.ctl("jwks")
        self.b.token(audience="x" * 5000)

        recs = self.b.decisions()
        self.assertEqual([(r["event"], r["peer"]["uid"]) for r in recs],
                         [(e, uid) for e, uid, _ in made])
        for rec, (event, uid, tok) in zip(recs, made):
            self.assertRegex(rec["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertEqual(rec["peer"]["exe"], brokerctl_path())
            self.assertGreater(rec["peer"]["pid"], 0)
            self.assertEqual(rec["audience"], AUD if event == "grant" or uid == 4002
                             else "https://nope.test")
            if tok:
                c = token_claims(tok)
                self.assertEqual(rec["jti"], c["jti"])
                self.assertEqual(rec["expires_at"], c["exp"])
                self.assertEqual(rec["subject"], c["sub"])
                self.assertEqual(rec["token_sha256"], hashlib.sha256(tok.encode()).hexdigest())
                self.assertEqual(rec["alg"], "ES256")  # the default
                self.assertNotIn(tok, json.dumps(rec))  # never the token itself
        self.assertEqual(recs[2]["peer"]["container"], f"docker:{cid}")
        self.assertEqual(recs[2]["peer"]["unit"], f"docker-{cid}.scope")
        self.assertEqual(recs[2]["subject"], f"spiffe://test/unit/docker-{cid}.scope")
        self.assertEqual(recs[1]["reason"], "audience_not_allowed")
        self.assertEqual(recs[3]["reason"], "no_matching_rule")
        self.assertNotIn("rule", recs[3])
        seqs = [r["seq"] for r in self.b.audit()]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))


class AuditFailureTest(BrokerTestCase):
    """The audit store on a tiny real filesystem that fills up: no record, no token."""

    start_broker = False

    def setUp(self):
        super().setUp()
        self.mnt = None

    def tearDown(self):
        super().tearDown()
        if self.mnt:
            subprocess.run(["umount", "-l", self.mnt])

    def test_full_filesystem_gives_unavailable_and_no_token_then_recovers(self):
        b = self.broker(start=False)
        self.mnt = os.path.join(b.tmp, "auditfs")
        os.makedirs(self.mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", self.mnt],
                       check=True)
        b.db = os.path.join(self.mnt, "audit.db")
        b.config["audit"]["database"] = b.db
        b.write_config()
        b.start()
        self.assertEqual(b.token().returncode, 0)

        filler = os.path.join(self.mnt, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        outcomes = []
        for _ in range(60):
            r = b.ctl("token", "--audience", AUD, "--json")
            outcomes.append(r)
            if r.returncode == 2:
                break
        failed = outcomes[-1]
        self.assertEqual(failed.returncode, 2, "writes never failed on a full filesystem")
        self.assertEqual(failed.stdout, "")
        self.assertIn("unavailable", failed.stderr)
        self.assertIn("could not be recorded", failed.stderr)
        granted = [json.loads(r.stdout)["jti"] for r in outcomes if r.returncode == 0]
        # the daemon stays up and says so
        st = json.loads(b.admin_ctl("status", "--json").stdout)
        self.assertEqual(st["audit"]["state"], "failing")

        os.unlink(filler)  # space returns: it serves again by itself
        r = b.token()
        self.assertEqual(r.returncode, 0, r.stderr)
        recs = b.decisions()
        jtis = [x["jti"] for x in recs if x["event"] == "grant"]
        # every token a client received has its record; the failed one has none
        for j in granted:
            self.assertIn(j, jtis)
        self.assertEqual(len(jtis), 1 + len(granted) + 1)
        self.assertEqual(json.loads(b.admin_ctl("status", "--json").stdout)["audit"]["state"], "ok")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AdminRecordsTest(BrokerTestCase):
    """Lifecycle records of what an operator asked for say who asked, as the kernel said: the
    admin connection's peer credentials ({"uid", "pid"} under "admin"), or the sender of a
    SIGHUP (under "signal"). The test's own process makes the raw requests, so the pid to expect
    is its own; brokerctl's is its child's."""

    start_broker = False

    def setUp(self):
        super().setUp()
        self.me = {"uid": 0, "pid": os.getpid()}

    def brokerctl_admin(self, b, *args, input=""):
        """brokerctl as root against the admin socket; returns (its pid, exit status)."""
        p = subprocess.Popen([brokerctl_path(), "--admin-socket", b.admin, *args],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=sanitizer_env())
        out, err = p.communicate(input, timeout=30)
        return p.pid, p.returncode, err

    def records(self, b, event, n):
        """The records of `event`, once there are at least n."""
        return wait_until(lambda: (lambda rs: rs if len(rs) >= n else None)(
            [r for r in b.audit() if r["event"] == event]), 5, what=f"{n} {event} record(s)")

    def test_key_operations_name_the_admin(self):
        b = self.broker()
        created_at_start = self.records(b, "key_created", 1)
        self.assertNotIn("admin", created_at_start[0])  # the schedule's own doing

        resp = b.admin_request({"op": "rotate"})
        self.assertTrue(resp["ok"], resp)
        rotated = self.records(b, "key_rotated", 1)[-1]
        self.assertEqual(rotated["admin"], self.me)
        self.assertEqual(rotated["kid"], resp["kid"])
        # the key made for it is the rotation's too
        made = [r for r in b.audit() if r["event"] == "key_created" and r["kid"] == resp["kid"]]
        self.assertEqual([r.get("admin") for r in made], [self.me])

        resp = b.admin_request({"op": "revoke", "kid": resp["kid"]})
        self.assertTrue(resp["ok"], resp)
        revoked = self.records(b, "key_revoked", 1)[-1]
        self.assertEqual(revoked["admin"], self.me)

        pid, rc, err = self.brokerctl_admin(b, "rotate")
        self.assertEqual(rc, 0, err)
        self.assertNotEqual(pid, os.getpid())
        rotated = self.records(b, "key_rotated", 2)[-1]
        self.assertEqual(rotated["admin"], {"uid": 0, "pid": pid})
        self.assertNotIn("signal", rotated)

    def test_config_reloaded_names_the_absolute_path_its_hash_and_who_asked(self):
        b = self.broker(start=False)
        # started with a relative --config in its own directory
        b.prefix = ["sh", "-c", 'cd "$0" && exec "$1" "$2" "$(basename "$3")"', b.tmp]
        b.start()
        cfg = json.loads(json.dumps(b.config))
        cfg["rules"][0]["audiences"].append("https://reload.test")
        b.write_config(cfg)
        with open(b.config_path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()

        resp = b.admin_request({"op": "reload"})
        self.assertTrue(resp["ok"], resp)
        rec = self.records(b, "config_reloaded", 1)[-1]
        self.assertEqual(rec["path"], b.config_path)
        self.assertTrue(os.path.isabs(rec["path"]))
        self.assertEqual(rec["config_sha256"], digest)
        self.assertEqual(rec["rules"], 1)
        self.assertEqual(rec["admin"], self.me)
        self.assertNotIn("config", rec)

        # by SIGHUP: the signal's sender, as signalfd says (this process)
        cfg["rules"][0]["audiences"].append("https://hup.test")
        b.write_config(cfg)
        with open(b.config_path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        os.kill(b.daemon_pid(), signal.SIGHUP)
        rec = self.records(b, "config_reloaded", 2)[-1]
        self.assertEqual(rec["signal"], {"name": "SIGHUP", **self.me})
        self.assertNotIn("admin", rec)
        self.assertEqual(rec["config_sha256"], digest)
        self.assertEqual(rec["path"], b.config_path)

        # by brokerctl: its pid
        pid, rc, err = self.brokerctl_admin(b, "reload")
        self.assertEqual(rc, 0, err)
        rec = self.records(b, "config_reloaded", 3)[-1]
        self.assertEqual(rec["admin"], {"uid": 0, "pid": pid})
        self.assertEqual(b.token(audience="https://hup.test").returncode, 0)

    def test_failed_reload_is_a_record_with_its_first_error(self):
        b = self.broker()
        # two problems: the record holds the first, the answer both
        b.write_config({**b.config, "issuer": 1, "rules": [{"name": 2}]})
        resp = b.admin_request({"op": "reload"})
        self.assertFalse(resp["ok"])
        lines = resp["error"]["message"].split("\n")
        self.assertGreaterEqual(len(lines), 2, lines)
        prefix = b.config_path + ": "
        self.assertTrue(lines[0].startswith(prefix), lines[0])
        rec = self.records(b, "config_reload_failed", 1)[-1]
        self.assertEqual(rec["error"], lines[0][len(prefix):])
        self.assertEqual(rec["path"], b.config_path)
        self.assertEqual(rec["admin"], self.me)

        # by SIGHUP
        os.kill(b.daemon_pid(), signal.SIGHUP)
        rec = self.records(b, "config_reload_failed", 2)[-1]
        self.assertEqual(rec["signal"], {"name": "SIGHUP", **self.me})
        self.assertEqual(rec["error"], lines[0][len(prefix):])

        # a change that needs a restart is a failed reload too
        cfg = json.loads(json.dumps(b.config))
        cfg["listen"]["admin"] = os.path.join(b.tmp, "run", "other-admin.sock")
        b.write_config(cfg)
        pid, rc, err = self.brokerctl_admin(b, "reload")
        self.assertEqual(rc, 1, err)
        rec = self.records(b, "config_reload_failed", 3)[-1]
        self.assertEqual(rec["error"], "listen.admin: cannot change on reload; restart brokerd")
        self.assertEqual(rec["admin"], {"uid": 0, "pid": pid})

        # none of them was a reload, and the running configuration still serves
        self.assertNotIn("config_reloaded", [r["event"] for r in b.audit()])
        self.assertEqual(b.token().returncode, 0)
        r = b.ctl("audit", "verify", "--database", b.db, socket_path=False)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_secret_and_upstream_records_name_the_admin(self):
        port = free_port()
        b = self.broker(extra={"upstreams": {"idp": {
            "kind": "client_credentials", "token_endpoint": f"http://127.0.0.1:{port}/token",
            "client_id": "broker", "client_auth": "client_secret_basic",
            "client_secret": "idp-secret", "timeout": "2s", "connect_timeout": "1s"}}})
        resp = b.admin_request({"op": "secret_set", "name": "idp-secret", "value": "s3cr3t"})
        self.assertTrue(resp["ok"], resp)
        rec = self.records(b, "secret_set", 1)[-1]
        self.assertEqual((rec["name"], rec["admin"]), ("idp-secret", self.me))
        self.assertNotIn("s3cr3t", json.dumps(b.audit()))

        resp = b.admin_request({"op": "upstream_test", "upstream": "idp"})
        self.assertFalse(resp["ok"])  # nothing listens there
        rec = self.records(b, "upstream_tested", 1)[-1]
        self.assertEqual((rec["upstream"], rec["admin"]), ("idp", self.me))

        pid, rc, err = self.brokerctl_admin(b, "secret", "delete", "idp-secret")
        self.assertEqual(rc, 0, err)
        rec = self.records(b, "secret_deleted", 1)[-1]
        self.assertEqual((rec["name"], rec["admin"]), ("idp-secret", {"uid": 0, "pid": pid}))
