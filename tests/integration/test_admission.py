"""Fair admission (SECURITY.md, README "Limits"): a uid's connections are shared out among its
workloads (identity: uid, unit and container), and the last sixteenth of all connections is
root's, so neither one container of a uid nor all other uids together can lock the others out.

Workloads here are real processes in real cgroups (system.slice/docker-ID.scope), under real
other uids, holding real connections; the broker identifies them from the kernel."""

import json
import os
import subprocess
import time

from harness import BrokerTestCase, Cgroup, Raw, as_user, random_container_id

AUD = "https://api.test"
ALLOW_ALL = [{"name": "all", "subject": "spiffe://test/uid/{uid}", "audiences": [AUD]}]
IDENTITY_MSG = ("too many connections from this workload (its uid, unit and container); close "
                "some and retry")
FULL_MSG = "broker has too many connections; retry later"

# Opens N connections to SOCKET, then on each reads the refusal it got at accept or sends one
# whoami, prints one JSON line with what each got back ("ok" or the error code), then holds them
# until its stdin closes.
HOLDER = r"""
import json, select, socket, struct, sys, time
path, n = sys.argv[1], int(sys.argv[2])
conns, got = [], []
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    conns.append(s)
time.sleep(0.3)  # a connection refused at accept has its one error frame waiting by now

def answer(s):
    h = s.recv(4)
    return json.loads(s.recv(struct.unpack(">I", h)[0])) if len(h) == 4 else None

for i, s in enumerate(conns):
    try:
        if select.select([s], [], [], 0)[0]:
            r = answer(s)  # refused at accept
        else:
            b = json.dumps({"op": "whoami", "id": i}).encode()
            s.sendall(struct.pack(">I", len(b)) + b)
            r = answer(s)
    except OSError:
        r = None
    got.append("gone" if r is None else "ok" if r.get("ok") else r["error"]["code"])
print(json.dumps(got), flush=True)
sys.stdin.read()
"""

class Holder:
    """A process of `uid` in cgroup `cg` holding n connections."""

    def __init__(self, sock, n, uid, cg=None):
        cmd = as_user(uid) + ["/usr/bin/python3", "-c", HOLDER, sock, str(n)]
        if cg:
            cmd = cg.wrap(cmd)
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        self.got = json.loads(line) if line else None

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=10)


class AdmissionCase(BrokerTestCase):
    rules = ALLOW_ALL
    limits = {}

    def setUp(self):
        self.extra = {"limits": dict(self.limits)}
        super().setUp()
        self.holders, self.cgroups = [], []

    def tearDown(self):
        for h in self.holders:
            h.close()
        for cg in self.cgroups:
            cg.close()
        super().tearDown()

    def container(self):
        cg = Cgroup(f"system.slice/docker-{random_container_id()}.scope")
        self.cgroups.append(cg)
        return cg

    def hold(self, n, uid, cg=None):
        h = Holder(self.b.workload, n, uid, cg)
        self.holders.append(h)
        self.assertIsNotNone(h.got, "the holder died")
        return h

    def status(self):
        c = Raw(self.b.admin)
        try:
            return c.request({"op": "status"})
        finally:
            c.close()


class IdentityShareTest(AdmissionCase):
    """Per uid 12, per identity 4 (uid + unit + container)."""

    limits = {"max_connections": 100, "max_connections_per_uid": 12,
              "max_connections_per_identity": 4, "idle_timeout": 30}

    def test_one_container_cannot_take_another_containers_slots(self):
        # Docker's container root is host uid 0 here played by uid 5301: two containers of it.
        a, b = self.container(), self.container()
        first = self.hold(6, 5301, a)
        # (identified on worker threads, so not necessarily the last two)
        self.assertEqual(sorted(first.got), ["ok"] * 4 + ["rate_limited"] * 2)
        # The other container of the same uid still gets its share, and its own identity.
        second = self.hold(4, 5301, b)
        self.assertEqual(second.got, ["ok"] * 4)
        # The uid itself outside both containers too, up to its ceiling of 12 in all.
        third = self.hold(6, 5301)
        self.assertEqual(sorted(third.got), ["ok"] * 4 + ["rate_limited"] * 2)
        self.assertEqual(self.status()["connections"], 12)
        # And the refused ones were told why.
        c = self.container()
        h = Holder(self.b.workload, 1, 5301, c)
        self.holders.append(h)
        self.assertEqual(h.got, ["rate_limited"])  # the uid's ceiling now, at accept

    def test_refusal_message_and_slot_freed(self):
        a = self.container()
        self.hold(4, 5302, a)
        cmd = a.wrap(as_user(5302) + ["/usr/bin/python3", "-c", r"""
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
h = s.recv(4); print(s.recv(struct.unpack(">I", h)[0]).decode())
""", self.b.workload])
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        self.assertEqual(json.loads(out.stdout), {"ok": False, "error": {
            "code": "rate_limited", "message": IDENTITY_MSG}})
        # Closing the holder frees the identity's slots.
        self.holders.pop().close()
        deadline = time.monotonic() + 3
        while self.status()["connections"] and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.hold(4, 5302, a).got, ["ok"] * 4)


class RootReserveTest(AdmissionCase):
    """64 connections in all, per uid 16: four uids fill what is theirs (60), root still gets
    the last sixteenth (4)."""

    limits = {"max_connections": 64, "max_connections_per_uid": 16,
              "max_connections_per_identity": 16, "idle_timeout": 30}

    def test_four_uids_cannot_lock_root_out(self):
        got = [self.hold(16, uid).got for uid in (5401, 5402, 5403, 5404)]
        self.assertEqual(sum(g.count("ok") for g in got), 60)
        self.assertEqual(got[3].count("unavailable"), 4)
        roots = [Raw(self.b.workload) for _ in range(4)]
        try:
            for r in roots:
                self.assertTrue(r.request({"op": "token", "audience": AUD})["ok"])
            st = self.status()  # the admin socket has its own allowance
            self.assertEqual(st["connections"], 64)
        finally:
            for r in roots:
                r.close()


class ConnectRateTest(AdmissionCase):
    """New connections per uid: 20 at once, then 10 a second; a churning uid is refused at
    accept, cheaply, before anything identifies it, and other uids are not."""

    limits = {"connect_rate": 10, "connect_burst": 20, "idle_timeout": 30}

    def test_churn_is_refused_at_accept_and_others_are_served(self):
        cmd = as_user(5501) + ["/usr/bin/python3", "-c", r"""
import json, socket, struct, sys
import select, time
conns, got = [], []
for i in range(40):  # as fast as it can
    s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1]); conns.append(s)
time.sleep(0.5)
for s in conns:  # a refusal comes at once, unasked; an accepted connection stays silent
    if select.select([s], [], [], 0)[0]:
        h = s.recv(4); r = json.loads(s.recv(struct.unpack(">I", h)[0]))
        got.append(r["error"]["code"] + ": " + r["error"]["message"])
    else:
        got.append("ok")
print(json.dumps(got))
""", self.b.workload]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        got = json.loads(out.stdout)
        ok = got.count("ok")
        self.assertGreaterEqual(ok, 20)  # the burst, and what refilled meanwhile
        self.assertLess(ok, 40, got)
        refused = [g for g in got if g != "ok"]
        self.assertTrue(all(g == "rate_limited: too many new connections from this uid; slow "
                                 "down and retry" for g in refused), refused)
        # Another uid is not held back by it.
        r = self.b.token(user=as_user(5502))
        self.assertEqual(r.returncode, 0, r.stderr)
