"""The real daemon, plain build, once under valgrind's memcheck: started, driven through every
kind of request (tokens granted and denied, whoami, jwks, admin status, rotate and reload, a
bad frame, a bad request, a bad config on reload) and stopped with SIGTERM. Any memcheck error
(an invalid read or write, a jump on an uninitialised value, a definite or possible leak, a bad
free) fails the test, with valgrind's report.

The sanitizer builds cannot run under valgrind: under make SAN=1 the test is skipped (ASan,
UBSan and LeakSanitizer check the daemon there)."""

import json
import os
import re
import shutil
import struct
import unittest

from harness import (ISSUER, VALGRIND_ERROR_EXIT, Broker, Raw, as_user, sanitizer_build,
                     token_header, valgrind_prefix, verify_token)

AUD = "https://api.test"
RULES = [
    {"name": "root", "match": {"uid": 0}, "subject": "spiffe://test/uid/{uid}",
     "audiences": [AUD], "scopes": ["read", "write"], "alg": "EdDSA"},
    {"name": "es", "match": {"uid": 65534}, "subject": "spiffe://test/es/{uid}",
     "audiences": ["https://es.test"], "alg": "ES256"},
]
# memcheck runs the daemon some 20-50 times slower: generous limits, few requests.
START_TIMEOUT = 120


class ValgrindTest(unittest.TestCase):
    def setUp(self):
        if sanitizer_build():
            self.skipTest("a sanitizer build cannot run under valgrind; the plain build's "
                          "make integration runs this test")
        if not shutil.which("valgrind"):
            self.fail("valgrind is not installed (make deps installs it)")
        self.b = Broker(rules=RULES, start=False)
        self.vg_log = os.path.join(self.b.tmp, "valgrind.log")
        self.b.prefix = valgrind_prefix(self.vg_log)

    def tearDown(self):
        self.b.close()

    def valgrind_report(self):
        try:
            with open(self.vg_log) as f:
                return f.read()
        except FileNotFoundError:
            return "(no valgrind log)"

    def drive(self):
        b = self.b
        # Tokens granted (two algorithms) and checked by independent verifiers.
        r = b.token(scopes=["read"], ttl=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        token = r.stdout.strip()
        verify_token(token, b.jwks(), AUD, issuer=ISSUER)
        r = b.token(audience="https://es.test", user=as_user(65534))
        self.assertEqual(r.returncode, 0, r.stderr)
        verify_token(r.stdout.strip(), b.jwks(), "https://es.test", issuer=ISSUER)
        self.assertEqual(token_header(r.stdout.strip())["alg"], "ES256")

        # Denied: an audience and a scope the rule does not allow.
        r = b.token(audience="https://elsewhere.test")
        self.assertEqual(r.returncode, 3, r.stderr)
        r = b.token(scopes=["admin"])
        self.assertEqual(r.returncode, 3, r.stderr)

        r = b.ctl("whoami")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["uid"], 0)

        # Admin: status, rotate (then a token from the new key), reload, a reload refused.
        for op in ("status", "keys", "rotate", "reload"):
            r = b.admin_ctl(op)
            self.assertEqual(r.returncode, 0, f"{op}: {r.stderr}")
        r = b.token()
        self.assertEqual(r.returncode, 0, r.stderr)
        verify_token(r.stdout.strip(), b.jwks(), AUD, issuer=ISSUER)
        bad = dict(b.config, rules=[dict(RULES[0], match={"uid": "root"})])
        b.write_config(bad)
        r = b.admin_ctl("reload")
        self.assertEqual(r.returncode, 1, r.stderr)
        b.write_config()

        # On the wire: a bad request gets an answer, a bad frame an error and a close.
        raw = Raw(b.workload, timeout=30)
        resp = raw.request({"op": "token", "audience": AUD, "ttl": "5"})
        self.assertEqual(resp["error"]["code"], "bad_request")
        raw.send_raw(struct.pack(">I", 0))
        resp = raw.recv()
        self.assertEqual(resp["error"]["code"], "bad_request")
        self.assertTrue(raw.closed_by_peer(timeout=30))
        raw.close()
        raw = Raw(b.workload, timeout=30)
        raw.send_raw(struct.pack(">I", 65537) + b"{}")
        self.assertEqual(raw.recv()["error"]["code"], "bad_request")
        raw.close()
        # And a caller that goes away mid-frame.
        raw = Raw(b.workload, timeout=30)
        raw.send_raw(struct.pack(">I", 100) + b'{"op"')
        raw.close()

        r = b.ctl("ping")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_daemon_under_memcheck(self):
        self.assertTrue(self.b.start(timeout=START_TIMEOUT),
                        "brokerd did not become ready under valgrind:\n" + self.b.read_log() +
                        self.valgrind_report())
        try:
            self.drive()
        finally:
            rc = self.b.stop(timeout=START_TIMEOUT)
        report = self.valgrind_report()
        summary = re.findall(r"ERROR SUMMARY: (\d+) errors", report)
        self.assertNotEqual(rc, VALGRIND_ERROR_EXIT, "memcheck found errors:\n" + report)
        self.assertEqual(rc, 0, f"brokerd exited with {rc}:\n" + self.b.read_log() + report)
        self.assertEqual(summary, ["0"], "no clean memcheck summary:\n" + report)


if __name__ == "__main__":
    unittest.main()
