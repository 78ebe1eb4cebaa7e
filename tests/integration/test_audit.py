"""Every token decision is in the audit store before the answer, with the right peer; and no
token leaves when its record cannot be written. The chain, its verification and the export
formats are tested in test_chain.py."""

import hashlib
import json
import os
import subprocess

from harness import BrokerTestCase, as_user, brokerctl_path, random_container_id, token_claims

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
        st = json.loads(b.admin_ctl("status").stdout)
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
        self.assertEqual(json.loads(b.admin_ctl("status").stdout)["audit"]["state"], "ok")
