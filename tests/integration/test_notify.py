"""What the service manager hears (sd_notify), read on a real NOTIFY_SOCKET: READY=1 only once
the sockets, the key store and the grant log work; STATUS= with live counters and failing
parts, sent again when they change and not when they do not; RELOADING=1 with MONOTONIC_USEC=
in one datagram, then READY=1 (Type=notify-reload reads the timestamp only there); STOPPING=1.
"""

import os
import re
import signal
import subprocess
import time

from harness import BrokerTestCase, wait_until
from test_faults import AUD, FaultTestCase

STATUS_INTERVAL = 3  # seconds: the daemon checks its STATUS= this often


def status_of(lines):
    for l in lines:
        if l.startswith("STATUS="):
            return l[len("STATUS="):]
    return None


def has(*wanted):
    return lambda lines: all(w in lines for w in wanted)


def status_matching(regex):
    return lambda lines: status_of(lines) is not None and re.search(regex, status_of(lines))


def monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class NotifyTest(BrokerTestCase):
    rules = [{"name": "root", "match": {"uid": 0}, "subject": "spiffe://test/uid/{uid}",
              "audiences": [AUD]}]

    def test_ready_carries_status(self):
        ready = self.b.notify.wait_for(has("READY=1"))
        self.assertRegex(status_of(ready), r"^Serving: 0 grants, 0 denials, \d+ connections$")
        # READY=1 once: nothing else said it before
        first = [m for m in self.b.notify.all() if "READY=1" in m]
        self.assertEqual(len(first), 1)

    def test_status_follows_the_counters_and_is_quiet_otherwise(self):
        mark = self.b.notify.mark()
        for _ in range(3):
            self.assertEqual(self.b.token().returncode, 0)
        for _ in range(2):
            self.assertEqual(self.b.token(audience="https://other.test").returncode, 3)
        m = self.b.notify.wait_for(status_matching(r"^Serving: 3 grants, 2 denials, "),
                                   timeout=STATUS_INTERVAL + 3, since=mark)
        self.assertIsNotNone(m, self.b.notify.all(mark))
        self.assertEqual(len(m), 1, "STATUS= alone, not with READY=1 again")
        # nothing changes now: no datagram for two intervals
        quiet = self.b.notify.mark()
        time.sleep(2 * STATUS_INTERVAL + 0.5)
        self.assertEqual(self.b.notify.all(quiet), [])
        # an open connection is a change
        c = self.b.raw()
        try:
            self.assertTrue(c.request({"op": "ping"})["ok"])
            m = self.b.notify.wait_for(status_matching(r", [1-9]\d* connections"),
                                       timeout=STATUS_INTERVAL + 3, since=quiet)
            self.assertIsNotNone(m, self.b.notify.all(quiet))
        finally:
            c.close()

    def test_sighup_reloading_with_timestamp_in_one_datagram_then_ready(self):
        mark = self.b.notify.mark()
        before = monotonic_usec()
        os.kill(self.b.daemon_pid(), signal.SIGHUP)
        reloading = self.b.notify.wait_for(has("RELOADING=1"), since=mark)
        after = monotonic_usec()
        self.assertIsNotNone(reloading, self.b.notify.all(mark))
        stamp = [l for l in reloading if l.startswith("MONOTONIC_USEC=")]
        self.assertEqual(len(stamp), 1, reloading)
        usec = int(stamp[0].split("=", 1)[1])
        self.assertTrue(before <= usec <= after, (before, usec, after))
        msgs = self.b.notify.all(mark)
        i = msgs.index(reloading)
        ready = self.b.notify.wait_for(has("READY=1"), since=mark + i + 1)
        self.assertIsNotNone(ready, self.b.notify.all(mark))
        self.assertIsNotNone(status_of(ready))
        self.assertIn("Configuration reloaded", self.b.read_log())

    def test_admin_reload_and_a_refused_one_end_ready(self):
        for config in (None, {"issuer": 1}):
            if config is not None:
                self.b.write_config(config)
            mark = self.b.notify.mark()
            r = self.b.admin_ctl("reload")
            self.assertEqual(r.returncode == 0, config is None, r.stderr)
            msgs = self.b.notify.all(mark)
            kinds = [("RELOADING=1" in m, "READY=1" in m) for m in msgs]
            self.assertIn((True, False), kinds, msgs)
            self.assertTrue(any(l.startswith("MONOTONIC_USEC=") for l in msgs[0]), msgs)
            # READY=1 after RELOADING=1, in a datagram of its own
            self.assertEqual(kinds[kinds.index((True, False)) + 1:].count((False, True)), 1, msgs)
        # the old configuration still serves
        self.assertEqual(self.b.token().returncode, 0)

    def test_stopping_on_sigterm(self):
        notify = self.b.notify
        mark = notify.mark()
        self.assertEqual(self.b.stop(), 0)
        stopping = [m for m in notify.all(mark) if "STOPPING=1" in m]
        self.assertEqual(len(stopping), 1, notify.all(mark))
        # nothing claims to be ready or serving after it
        after = notify.all(mark)[notify.all(mark).index(stopping[0]) + 1:]
        self.assertFalse([m for m in after if "READY=1" in m], after)


class NotReadyTest(FaultTestCase):
    """The daemon that cannot record a grant never says it is ready: it exits."""

    def refused(self, b, needle):
        self.assertFalse(b.start(expect_ready=False, timeout=15))
        self.assertEqual(b.proc.wait(10), 1, b.read_log())
        b.proc = None
        self.assertFalse([m for m in b.notify.all() if "READY=1" in m], b.notify.all())
        self.assertIn(needle, b.read_log())

    def test_audit_database_that_is_not_a_database(self):
        b = self.broker(start=False)
        os.makedirs(b.state, mode=0o700)
        with open(b.db, "wb") as f:
            f.write(b"this is not an SQLite database" * 100)
        os.chmod(b.db, 0o600)
        self.refused(b, b.db)

    def fill_leaving(self, b, kib):
        filler = os.path.join(os.path.dirname(b.db), "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        os.truncate(filler, os.path.getsize(filler) - kib * 1024)

    def test_audit_database_on_a_full_filesystem(self):
        # SQLite cannot even open the log: server_new() fails
        b = self.broker_with_db_in(self.mount_tmpfs("2m"))
        self.assertEqual(b.token().returncode, 0)
        self.assertEqual(b.stop(), 0)
        self.fill_leaving(b, 0)
        self.refused(b, b.db)

    def test_audit_database_that_opens_but_cannot_be_written(self):
        # Room enough to open the log (its shared-memory index), not to commit the "started"
        # record: READY=1 waits for that commit, so it never comes.
        b = self.broker_with_db_in(self.mount_tmpfs("2m"))
        self.assertEqual(b.token().returncode, 0)
        self.assertEqual(b.stop(), 0)
        self.fill_leaving(b, 36)
        self.refused(b, "the grant log cannot be written")
        self.assertNotIn("Serving workloads", b.read_log().split("Received Terminated")[-1])

    def test_status_says_audit_failing(self):
        b = self.broker_with_db_in(self.mount_tmpfs("2m"))
        self.assertEqual(b.token().returncode, 0)
        mark = b.notify.mark()
        filler = os.path.join(os.path.dirname(b.db), "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        c = b.raw()
        try:
            for _ in range(500):
                if not c.request({"op": "token", "audience": AUD})["ok"]:
                    break
        finally:
            c.close()
        m = b.notify.wait_for(status_matching(r"; audit failing"), timeout=STATUS_INTERVAL + 3,
                              since=mark)
        self.assertIsNotNone(m, b.notify.all(mark))
        os.unlink(filler)
        # writes work again: the status says so by itself
        wait_until(lambda: b.token().returncode == 0, timeout=10, what="a grant after the fault")
        since = mark + b.notify.all(mark).index(m) + 1
        m = b.notify.wait_for(lambda l: status_of(l) and "audit failing" not in status_of(l),
                              timeout=STATUS_INTERVAL + 3, since=since)
        self.assertIsNotNone(m, b.notify.all(mark))
        self.assertEqual(b.stop(), 0)
