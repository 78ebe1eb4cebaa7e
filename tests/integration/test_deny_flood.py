"""Denials cannot fill the disk (README §Audit, "Denials"), against the real daemon.

A caller with no rule can be denied as fast as the rate limit lets it ask, and each denial used
to be recorded whole: the request (64 scopes of 256 bytes, a 1 KiB audience) and the peer (an
exe path of 4 KiB of bytes that are not UTF-8 is 16 KiB escaped), some 37 KB a record, about
20 MB/s from one uid. Now
  1. a denial's record is bounded: long values are their length, SHA-256 and a prefix;
  2. each uid gets audit.deny_budget records per audit.deny_interval; beyond that its denials
     are counted into deny_summary records, in the chain, exported and verified, and every
     caller still gets `denied` each time;
  3. below audit.free_space_floor only grants are written.

The flood test measures what the worst flood one uid can make does to the log (several
processes in cgroups of their own, so several rate-limit buckets, several connections each,
max-size requests with a different audience each time, from a binary at a long non-UTF-8 path)
and asserts at most 1 MB a minute; FLOOD_SECONDS (default 20) sets its length. It prints one
line of figures ("deny-flood: ...")."""

import csv
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from harness import BrokerTestCase, Raw, as_user, brokerctl_path, sanitizer_env, token_claims

AUD = "https://api.test"
FLOOD_UID = 4243
OTHER_UID = 4244
MB = 1000 * 1000
# What a record of a denial may take at most, exported (canonical form and hash): the bound of
# record.h plus the chain's members.
DENY_LINE_MAX = 2048

# Sends max-size token requests, each for another audience, on `conns` connections for
# `seconds`, and prints how each was answered. argv: socket, seconds, conns, tag.
FLOODER = r"""
import json, socket, struct, sys, threading, time

path, seconds, conns, tag = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
scopes = json.dumps(["%02d" % i + "s" * 254 for i in range(64)])
counts = {}
lock = threading.Lock()


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def run(k):
    local = {}
    s = connect()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        head = "https://%s-%d-%d.test/" % (tag, k, n)
        aud = head + "a" * (1024 - len(head))
        body = ('{"op":"token","audience":"%s","scopes":%s}' % (aud, scopes)).encode()
        try:
            s.sendall(struct.pack(">I", len(body)) + body)
            hdr = recv_exact(s, 4)
            resp = hdr and recv_exact(s, struct.unpack(">I", hdr)[0])
        except OSError:
            resp = None
        if not resp:
            local["closed"] = local.get("closed", 0) + 1
            s.close()
            s = connect()
            continue
        r = json.loads(resp)
        code = "ok" if r["ok"] else r["error"]["code"]
        local[code] = local.get(code, 0) + 1
        n += 1
    s.close()
    with lock:
        for c, v in local.items():
            counts[c] = counts.get(c, 0) + v


threads = [threading.Thread(target=run, args=(k,)) for k in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(counts))
"""

# whoami, then one max-size token request; prints both answers. argv: socket.
ASK_ONCE = r"""
import json, socket, struct, sys

s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])


def request(obj):
    body = json.dumps(obj).encode()
    s.sendall(struct.pack(">I", len(body)) + body)
    n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
    return json.loads(s.recv(n, socket.MSG_WAITALL))


scopes = ["%02d" % i + "s" * 254 for i in range(64)]
aud = "https://" + "b" * 1016
print(json.dumps([request({"op": "whoami"}),
                  request({"op": "token", "audience": aud, "scopes": scopes}), aud, scopes]))
"""


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def db_bytes(db):
    """What the log takes on disk now: the database and its write-ahead log."""
    return sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))


def brokerctl(*args):
    return subprocess.run([brokerctl_path(), *args], capture_output=True, text=True,
                          env=sanitizer_env(), timeout=120)


class DenyFloodCase(BrokerTestCase):
    start_broker = False

    def setUp(self):
        super().setUp()
        self.scratch = tempfile.mkdtemp(prefix="broker-flood-")
        os.chmod(self.scratch, 0o755)
        self.mounts = []
        with open(os.path.join(self.scratch, "flooder.py"), "w") as f:
            f.write(FLOODER)
        with open(os.path.join(self.scratch, "ask_once.py"), "w") as f:
            f.write(ASK_ONCE)
        os.chmod(os.path.join(self.scratch, "flooder.py"), 0o644)
        os.chmod(os.path.join(self.scratch, "ask_once.py"), 0o644)

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            for m in reversed(self.mounts):
                subprocess.run(["umount", "-l", m], capture_output=True)
            shutil.rmtree(self.scratch.encode(), ignore_errors=True)

    def long_exe(self):
        """A copy of this Python at a path of about 3,800 bytes, most of them not UTF-8 (each
        escaped as \\xNN in a record: some 15 KB of text), every directory 0755."""
        d = self.scratch.encode()
        for i in range(15):
            d += b"/" + bytes(0x80 + (i + k) % 64 for k in range(250))
            os.mkdir(d, 0o755)
        exe = d + b"/python3"
        shutil.copy2(os.path.realpath(sys.executable), exe)
        os.chmod(exe, 0o755)
        return exe

    def mount_tmpfs(self, size):
        path = os.path.join(self.scratch, "fs")
        os.makedirs(path)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                       check=True)
        self.mounts.append(path)
        return path

    def broker_with_db_in(self, directory, **kw):
        b = self.broker(start=False, **kw)
        b.db = os.path.join(directory, "audit.db")
        b.config["audit"]["database"] = b.db
        b.write_config()
        b.start()
        return b

    def flood(self, b, procs, conns, seconds, exe=None, uid=FLOOD_UID):
        """`procs` flooders as `uid`, each in a cgroup of its own (a rate-limit bucket of its
        own) with `conns` connections; returns the answers counted by code."""
        popens = []
        for p in range(procs):
            cg = self.cgroup(f"broker-deny-flood-{os.getpid()}/p{p}")
            cmd = cg.wrap(as_user(uid) + [exe or sys.executable,
                                          os.path.join(self.scratch, "flooder.py"),
                                          b.workload, str(seconds), str(conns), f"p{p}"])
            popens.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        counts = {}
        for p in popens:
            out, err = p.communicate(timeout=seconds + 60)
            self.assertEqual(p.returncode, 0, err.decode(errors="replace"))
            for code, n in json.loads(out).items():
                counts[code] = counts.get(code, 0) + n
        return counts

    def audit(self, db):
        r = brokerctl("audit", "export", "--database", db)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [l for l in r.stdout.split("\n") if l]
        return lines, [json.loads(l) for l in lines]

    def verify(self, db):
        r = brokerctl("audit", "verify", "--database", db)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def assert_all_denials_accounted(self, records, uid, denied):
        """Every `denied` answer is in the log: a record of its own, or a summary's count."""
        own = [r for r in records if r["event"] == "deny" and r["peer"]["uid"] == uid]
        summaries = [r for r in records if r["event"] == "deny_summary"
                     and r["peer"]["uid"] == uid]
        self.assertEqual(len(own) + sum(s["count"] for s in summaries), denied,
                         "denials missing from the log, or counted twice")
        return own, summaries


class FloodTest(DenyFloodCase):

    def test_worst_flood_of_one_uid_grows_the_log_at_most_1mb_a_minute(self):
        seconds = float(os.environ.get("FLOOD_SECONDS", "20"))
        # the defaults: no audit.deny_* or free_space_floor, the default rate limit
        b = self.broker()
        exe = self.long_exe()
        time.sleep(0.5)
        db0, total0 = os.path.getsize(b.db), db_bytes(b.db)
        peak = {"db+wal": 0, "wal": 0}
        done = threading.Event()

        def sample():  # the write-ahead log is reused, not grown: its high-water mark counts
            while not done.wait(0.25):
                peak["db+wal"] = max(peak["db+wal"], db_bytes(b.db) - total0)
                peak["wal"] = max(peak["wal"], db_bytes(b.db) - os.path.getsize(b.db))

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.monotonic()
        try:
            counts = self.flood(b, procs=4, conns=4, seconds=seconds, exe=exe)
        finally:
            elapsed = time.monotonic() - start
            done.set()
            sampler.join()
        self.assertEqual(b.stop(), 0)  # writes the last summaries, folds the WAL in
        db_growth = os.path.getsize(b.db) - db0
        growth = max(peak["db+wal"], db_bytes(b.db) - total0)
        minutes = math.ceil(elapsed / 60)
        denied = counts.get("denied", 0)
        lines, records = self.audit(b.db)
        deny_lines = [l for l, r in zip(lines, records) if r["event"] == "deny"]
        print(f"\ndeny-flood: seconds={elapsed:.1f} denied={denied} "
              f"rate_limited={counts.get('rate_limited', 0)} other="
              f"{ {k: v for k, v in counts.items() if k not in ('denied', 'rate_limited')} } "
              f"deny_records={len(deny_lines)} "
              f"summaries={sum(r['event'] == 'deny_summary' for r in records)} "
              f"max_deny_line={max(map(len, deny_lines), default=0)} "
              f"db_growth={db_growth} peak_db_wal_growth={peak['db+wal']} "
              f"peak_wal={peak['wal']} db_bytes_per_denied={db_growth / max(denied, 1):.2f} "
              f"growth_per_started_minute={growth / minutes:.0f}", file=sys.stderr)

        self.assertGreater(denied, 1000, f"the flood did not flood: {counts}")
        self.assertEqual(set(counts) - {"denied", "rate_limited"}, set(),
                         f"answers other than denied: {counts}")
        self.assertLessEqual(growth, MB * minutes, f"{growth} bytes in {elapsed:.0f} s")
        self.assertLessEqual(max(map(len, deny_lines)), DENY_LINE_MAX)
        own, summaries = self.assert_all_denials_accounted(records, FLOOD_UID, denied)
        # the default budget, once a minute
        self.assertLessEqual(len(own), 100 * minutes)
        self.assertGreaterEqual(len(own), 100)
        self.assertTrue(all(s["reason"] == "no_matching_rule" and s["below_floor"] == 0
                            for s in summaries), summaries)
        self.verify(b.db)


class BudgetTest(DenyFloodCase):

    def test_budget_summaries_exports_and_verify(self):
        """deny_budget 5 in 2 s: a burst of 30 denials from one uid gives 5 records and a
        summary of 25 within about a second of the interval's end, without a request to bring it;
        another uid has its budget; grants are never counted. The summary is in the chain,
        exported as JSONL, CSV and OCSF, and verifies."""
        b = self.broker(extra={"audit": {"deny_budget": 5, "deny_interval": "2s"},
                               "limits": {"rate": 0}})
        c = Raw(b.workload)  # root: granted
        for _ in range(10):
            self.assertTrue(c.request({"op": "token", "audience": AUD})["ok"])
        c.close()
        counts = self.flood(b, procs=1, conns=1, seconds=0.5, uid=FLOOD_UID)
        burst = counts.get("denied", 0)
        self.assertGreater(burst, 30, counts)
        r = b.token(user=as_user(OTHER_UID))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("denied", r.stderr)

        deadline = time.monotonic() + 8
        while True:
            _, recs = self.audit(b.db)
            if any(r["event"] == "deny_summary" for r in recs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        own, summaries = self.assert_all_denials_accounted(recs, FLOOD_UID, burst)
        self.assertEqual(len(own), 5)
        self.assertEqual(len(summaries), 1, "written by the timer, no request needed")
        s = summaries[0]
        self.assertEqual((s["peer"], s["reason"], s["count"], s["below_floor"], s["budget"],
                          s["interval_s"]),
                         ({"uid": FLOOD_UID}, "no_matching_rule", burst - 5, 0, 5, 2))
        self.assertLessEqual(s["first_time"], s["last_time"])
        self.assertEqual(sum(r["event"] == "grant" for r in recs), 10)
        other = [r for r in recs if r["event"] == "deny" and r["peer"]["uid"] == OTHER_UID]
        self.assertEqual(len(other), 1)
        # a denial's record: long values truncated, with length and hash
        aud = own[0]["audience"]
        self.assertTrue(aud["truncated"])
        self.assertEqual(aud["length"], 1024)
        self.assertTrue(own[0]["scopes"]["truncated"])
        self.assertEqual(own[0]["scopes"]["count"], 64)
        self.assertEqual(own[0]["scopes"]["sha256"], sha256(
            " ".join("%02d" % i + "s" * 254 for i in range(64))))

        self.assertEqual(b.stop(), 0)
        self.verify(b.db)
        _, recs = self.audit(b.db)
        events = [r["event"] for r in recs]
        self.assertEqual(events[-2:], ["stopped", "checkpoint"])
        exp = os.path.join(self.scratch, "export.jsonl")
        r = brokerctl("audit", "export", "--database", b.db, "--output", exp)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = brokerctl("audit", "verify", "--file", exp)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = brokerctl("audit", "export", "--database", b.db, "--event", "deny_summary")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([json.loads(l) for l in r.stdout.splitlines()], summaries)

        r = brokerctl("audit", "export", "--database", b.db, "--format", "csv")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = list(csv.reader(io.StringIO(r.stdout, newline="")))
        col = {name: i for i, name in enumerate(rows[0])}
        srow = [row for row in rows[1:] if row[col["event"]] == "deny_summary"]
        self.assertEqual(len(srow), 1)
        self.assertEqual((srow[0][col["peer_uid"]], srow[0][col["reason"]],
                          srow[0][col["count"]], srow[0][col["first_time"]]),
                         (str(FLOOD_UID), "no_matching_rule", str(burst - 5), s["first_time"]))
        drow = next(row for row in rows[1:] if row[col["event"]] == "deny")
        self.assertEqual(json.loads(drow[col["audience"]]), aud)

        r = brokerctl("audit", "export", "--database", b.db, "--format", "ocsf")
        self.assertEqual(r.returncode, 0, r.stderr)
        evs = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual(len(evs), 10 + 5 + 1 + 1, "every decision, and the summary")
        se = [e for e in evs if "count" in e]
        self.assertEqual(len(se), 1)
        self.assertEqual((se[0]["count"], se[0]["status_id"], se[0]["status_detail"],
                          se[0]["actor"]["user"]["uid"]),
                         (burst - 5, 2, "no_matching_rule", str(FLOOD_UID)))
        self.assertLessEqual(se[0]["start_time"], se[0]["end_time"])

    def test_stop_writes_the_counts_before_stopped(self):
        b = self.broker(extra={"audit": {"deny_budget": 1}, "limits": {"rate": 0}})
        counts = self.flood(b, procs=1, conns=2, seconds=0.5)
        _, recs = self.audit(b.db)
        self.assertFalse(any(r["event"] == "deny_summary" for r in recs))
        self.assertEqual(b.stop(), 0)
        _, recs = self.audit(b.db)
        own, summaries = self.assert_all_denials_accounted(recs, FLOOD_UID, counts["denied"])
        self.assertEqual(len(own), 1)
        events = [r["event"] for r in recs]
        self.assertLess(events.index("deny_summary"), events.index("stopped"))
        self.verify(b.db)

    def test_truncated_values_are_verifiable(self):
        """The hash of a truncated value is that of the text a full record would hold: the
        audience and scopes as sent, the exe as whoami shows it (escaped)."""
        b = self.broker()
        exe = self.long_exe()
        r = subprocess.run(as_user(FLOOD_UID) + [exe, os.path.join(self.scratch, "ask_once.py"),
                                                 b.workload],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        who, answer, aud, scopes = json.loads(r.stdout)
        self.assertEqual(answer["error"]["code"], "denied")
        _, recs = self.audit(b.db)
        d = [x for x in recs if x["event"] == "deny"][-1]
        for value, full in ((d["audience"], aud), (d["scopes"], " ".join(scopes)),
                            (d["peer"]["exe"], who["exe"])):
            self.assertTrue(value["truncated"])
            self.assertEqual(value["length"], len(full.encode()))
            self.assertEqual(value["sha256"], sha256(full))
            self.assertTrue(full.startswith(value["prefix"]))
            self.assertLessEqual(len(value["prefix"]), 64)
        self.assertGreater(len(who["exe"]), 12000)  # \xNN for most of its bytes
        self.assertEqual(d["peer"]["uid"], FLOOD_UID)
        self.assertEqual(d["peer"]["cgroup"], who["cgroup"])


class FloorTest(DenyFloodCase):

    def test_grants_go_on_when_a_denial_flood_reached_the_floor(self):
        """Every denial asks for a record of its own (a budget no flood spends) and the flood
        takes the filesystem down to the floor: from there denials are counted, never written
        and never `unavailable`, while grants are issued and recorded; the counts are written
        when brokerd stops, and nothing is lost."""
        fs = self.mount_tmpfs("12m")
        b = self.broker_with_db_in(fs, extra={"audit": {"deny_budget": 1000000,
                                                        "free_space_floor": "4M"}})
        floor = 4 << 20

        def free():
            st = os.statvfs(fs)
            return st.f_bavail * st.f_frsize

        counts = {}
        errors = []
        stop = threading.Event()

        def flooding():
            try:
                while not stop.is_set():
                    for k, v in self.flood(b, procs=2, conns=4, seconds=2).items():
                        counts[k] = counts.get(k, 0) + v
            except Exception as e:  # reported by the test's thread
                errors.append(e)

        t = threading.Thread(target=flooding)
        t.start()
        try:
            deadline = time.monotonic() + 120
            while free() >= floor and time.monotonic() < deadline:
                time.sleep(0.2)
            self.assertLess(free(), floor, "the flood never reached the floor")
            time.sleep(1)  # records in flight land
            at_floor = db_bytes(b.db)
            # grants, while the flood goes on
            c = Raw(b.workload)
            tokens = []
            for _ in range(200):
                resp = c.request({"op": "token", "audience": AUD})
                self.assertTrue(resp["ok"], resp)
                tokens.append(resp["token"])
            c.close()
            time.sleep(3)
            grew = db_bytes(b.db) - at_floor
        finally:
            stop.set()
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(set(counts) - {"denied", "rate_limited"}, set(), counts)
        print(f"\ndeny-floor: denied={counts.get('denied')} free_at_end={free()} "
              f"grew_below_floor={grew}", file=sys.stderr)
        # 200 grants of some 800 bytes and a checkpoint or two; no denial
        self.assertLess(grew, 400 * 1024)
        self.assertGreater(free(), 1 << 20, "the floor left room for grants")
        self.assertEqual(b.stop(), 0)
        self.verify(b.db)
        _, recs = self.audit(b.db)
        own, summaries = self.assert_all_denials_accounted(recs, FLOOD_UID, counts["denied"])
        self.assertTrue(summaries, "no denial was counted below the floor")
        self.assertEqual(sum(s["below_floor"] for s in summaries),
                         sum(s["count"] for s in summaries))
        jtis = {r["jti"] for r in recs if r["event"] == "grant"}
        for tok in tokens:
            self.assertIn(token_claims(tok)["jti"], jtis)
