"""Structured journal entries, read back from a real systemd-journald.

systemd is not PID 1 where these tests run, so each test starts its own journald in a private
mount namespace: a tmpfs over /run (and /var/log/journal) gives it the usual sockets, and its
journal files land in the test's directory, where `journalctl -D` reads them. brokerd runs in
that namespace with stderr to a file and JOURNAL_STREAM naming that file, as systemd would name
the stream it passes (StandardError=journal). The entries are what libsystemd's sd_journal_send
gave journald; nothing in between is the test's own.

Checked: MESSAGE_ID per event kind with the fields that apply (KID, PEER_UID, RULE, UPSTREAM,
ERRNO, PRIORITY); a flood that is logged once with a count; no token or secret anywhere; and,
with no journald to take them, <N>-prefixed lines on stderr instead."""

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile

from harness import BrokerTestCase, wait_until
from oauth import free_port

JOURNALD = "/lib/systemd/systemd-journald"

MSG = {
    "started": "4b17ad67f73e4fe99af061d3a9b13e43",
    "stopping": "50d9a7c929f44abcb1fa502423852d51",
    "reloaded": "6de3d748c2ea441087bbaf4e91d02773",
    "reload_failed": "83a0b4f99e394ae9a9f0856c17a53761",
    "deny_summary": "19dce0ecf2c0449995dc54e336271427",
    "key_created": "7efa286009954e65982e0a4bea5fb5b3",
    "key_rotated": "ea5c282575414d10b516fc05259c83c7",
    "upstream_failure": "6b5cd6d3996a425e844e5531c2a4f092",
    "publish_failure": "a9da21e927144406aea553ce6941bdc2",
}

# Runs in the new mount namespace, then execs brokerd ("$@"). $JDIR: where journald writes.
NAMESPACE = r"""
set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
mount --bind "$JDIR" /run/log/journal
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
if [ "$START_JOURNALD" = 1 ]; then
    env -u NOTIFY_SOCKET /lib/systemd/systemd-journald </dev/null >/dev/null 2>&1 &
    echo $! > "$JDIR.pid"
    i=0
    while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
fi
export JOURNAL_STREAM="$(stat -L -c %d:%i /proc/self/fd/2)"
exec "$@"
"""


class JournalTestCase(BrokerTestCase):
    start_broker = False

    def setUp(self):
        if not os.path.exists(JOURNALD):
            self.skipTest("systemd-journald is not installed")
        super().setUp()

    def journal_broker(self, journald=True, **kw):
        b = self.broker(start=False, **kw)
        self.jdir = os.path.join(b.tmp, "journal")
        os.makedirs(self.jdir)
        b.prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", NAMESPACE, "sh"]
        self.addCleanup(self.stop_journald)
        b.start(env={"JDIR": self.jdir, "START_JOURNALD": "1" if journald else "0"})
        return b

    def stop_journald(self):
        try:
            with open(self.jdir + ".pid") as f:
                os.kill(int(f.read()), signal.SIGTERM)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass

    def entries(self):
        """brokerd's entries, oldest first."""
        dirs = glob.glob(os.path.join(self.jdir, "*"))
        self.assertEqual(len(dirs), 1, dirs)
        r = subprocess.run(["journalctl", "-D", dirs[0], "-o", "json", "--no-pager",
                            "SYSLOG_IDENTIFIER=brokerd"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]

    def of_kind(self, entries, kind):
        return [e for e in entries if e.get("MESSAGE_ID") == MSG[kind]]

    def entries_after_stop(self):
        """Once the daemon's last entry ("stopping") is in the journal: all of them."""
        return wait_until(lambda: self.of_kind(self.entries(), "stopping") and self.entries(),
                          timeout=10, what="brokerd's entries in the journal")


class JournalTest(JournalTestCase):
    def test_structured_entries(self):
        dead = f"http://127.0.0.1:{free_port()}/token"  # nothing listens there
        rules = [{"name": "root-rule", "match": {"uid": 0}, "subject": "spiffe://test/{uid}",
                  "audiences": ["https://api.test"], "upstreams": ["dead"]}]
        secret = "s3cret-value-that-must-never-be-logged-7f1c"
        b = self.journal_broker(rules=rules, extra={
            "audit": {"deny_budget": 1, "deny_interval": "1s"},
            "upstreams": {"dead": {"kind": "client_credentials", "token_endpoint": dead,
                                   "client_id": "c", "client_auth": "client_secret_basic",
                                   "client_secret": "dead-secret", "timeout": "1s",
                                   "connect_timeout": "1s", "deadline": "2s"}}})
        admin = b.raw(admin=True)
        self.assertTrue(admin.request({"op": "secret_set", "name": "dead-secret",
                                       "value": secret})["ok"])
        r = b.token()
        self.assertEqual(r.returncode, 0, r.stderr)
        token = r.stdout.strip()
        self.assertGreater(len(token), 100)
        # a flood of upstream failures: logged once, the others counted
        for _ in range(4):
            r = b.ctl("token", "--upstream", "dead")
            self.assertEqual(r.returncode, 2, r.stderr)
        # denials beyond the budget of 1 per second: one deny_summary, in the journal too
        for _ in range(5):
            self.assertEqual(b.token(audience="https://not-allowed.test").returncode, 3)
        wait_until(lambda: any(e["event"] == "deny_summary" for e in b.audit()), timeout=10,
                   what="the deny_summary record")
        rotated = admin.request({"op": "rotate"})
        admin.close()
        self.assertTrue(rotated["ok"], rotated)
        kid = rotated["kid"]
        pid = b.daemon_pid()
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: any(e["event"] == "config_reloaded" for e in b.audit()), timeout=10,
                   what="the reload")
        self.assertEqual(b.stop(), 0)

        entries = self.entries_after_stop()
        self.assertTrue(entries, "no entry from brokerd in the journal")
        for kind in ("started", "stopping", "reloaded", "key_created", "key_rotated",
                     "deny_summary", "upstream_failure"):
            self.assertTrue(self.of_kind(entries, kind), f"no {kind} entry:\n" +
                            "\n".join(e["MESSAGE"] for e in entries))
        started = self.of_kind(entries, "started")[0]
        self.assertTrue(started["MESSAGE"].startswith("Serving workloads on "))
        self.assertEqual(started["PRIORITY"], "6")
        rotated = self.of_kind(entries, "key_rotated")
        self.assertIn(kid, [e.get("KID") for e in rotated])
        self.assertEqual(rotated[0]["PRIORITY"], "5")
        summary = self.of_kind(entries, "deny_summary")[0]
        self.assertEqual(summary["PEER_UID"], "0")
        self.assertIn("Denied uid 0 ", summary["MESSAGE"])
        failures = self.of_kind(entries, "upstream_failure")
        self.assertEqual(len(failures), 1, [e["MESSAGE"] for e in failures])
        self.assertEqual(failures[0]["UPSTREAM"], "dead")
        self.assertEqual(failures[0]["PRIORITY"], "4")
        # journald's own view of the sender
        self.assertEqual(started["_TRANSPORT"], "journal")
        self.assertEqual(started["_PID"], str(pid))

        # nothing secret anywhere: not the token, not the upstream secret, not in any field
        dump = json.dumps(entries)
        self.assertNotIn(token, dump)
        self.assertNotIn(token.split(".")[2], dump)  # not even its signature
        self.assertNotIn(secret, dump)
        # and the lines that went to the journal did not also go to stderr
        log = b.read_log()
        self.assertNotIn("Serving workloads", log)
        self.assertNotIn(secret, log)

    def test_failures_with_errno(self):
        # a published file that is not the daemon's (a symlink planted there): publishing is
        # refused, EPERM
        pub = os.path.join(tempfile.mkdtemp(prefix="broker-pub-"), "pub")
        self.addCleanup(shutil.rmtree, os.path.dirname(pub), ignore_errors=True)
        os.chmod(os.path.dirname(pub), 0o755)
        os.makedirs(pub, mode=0o755)
        os.symlink("/etc/hostname", os.path.join(pub, "jwks.json"))
        b = self.journal_broker(extra={"publish_directory": pub})
        # a reload that fails: the file is gone
        os.rename(b.config_path, b.config_path + ".away")
        r = b.admin_ctl("reload")
        self.assertNotEqual(r.returncode, 0)
        os.rename(b.config_path + ".away", b.config_path)
        self.assertEqual(b.stop(), 0)
        entries = self.entries_after_stop()
        published = self.of_kind(entries, "publish_failure")
        self.assertTrue(published, [e["MESSAGE"] for e in entries])
        self.assertEqual(published[0]["ERRNO"], "1")
        self.assertEqual(published[0]["PRIORITY"], "3")
        self.assertIn(pub, published[0]["MESSAGE"])
        failed = self.of_kind(entries, "reload_failed")
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["PRIORITY"], "3")
        self.assertIn("keeping the running configuration", failed[0]["MESSAGE"])


class NoJournaldTest(JournalTestCase):
    def test_prefixed_lines_when_the_journal_does_not_answer(self):
        # stderr is the journal stream, but nothing listens on the journal's socket: the
        # lines still reach stderr, with the <N> priority prefix systemd reads
        b = self.journal_broker(journald=False)
        self.assertEqual(b.token().returncode, 0)
        self.assertEqual(b.stop(), 0)
        log = b.read_log()
        self.assertIn("<6>Serving workloads on ", log)
        self.assertNotIn("brokerd: Serving", log)
