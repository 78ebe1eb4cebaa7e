"""Every resource a local caller controls is bounded (proto/PROTOCOL.md §6): the read timeout,
the idle timeout, connections per uid and in total, a client that never reads, the token
request rate per identity, and the admin socket's uid check.

Each test hits one bound with small configured limits, shows the exact refusal (code, message,
close), shows that other callers are served meanwhile, and that nothing was lost or invented in
the audit log. Other uids connect either through setpriv (as_user) or, where hundreds of
connections are needed, by switching this process's effective uid around connect(): the kernel
records the effective uid of the connecting process for SO_PEERCRED."""

import contextlib
import json
import os
import socket
import struct
import subprocess
import time

from harness import BrokerTestCase, Raw, as_user, sanitizer_env

AUD = "https://api.test"
ALLOW_ALL = [{"name": "all", "subject": "spiffe://test/uid/{uid}", "audiences": [AUD]}]
READ_TIMEOUT_MSG = "incomplete frame: read timeout; closing connection"
PER_UID_MSG = "too many connections from this uid; close some and retry"
FULL_MSG = "broker has too many connections; retry later"
RATE_MSG = "too many token requests from this caller; slow down and retry"
# sd-event fires timers up to 250 ms late by default; the sanitizer build is slower still.
TIMER_SLACK = 0.9


def frame(body):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    return struct.pack(">I", len(body)) + body


def token_req(id=None, audience=AUD):
    r = {"op": "token", "audience": audience}
    if id is not None:
        r["id"] = id
    return r


@contextlib.contextmanager
def effective_uid(uid):
    """Connections made inside carry `uid` (and gid `uid`) in SO_PEERCRED."""
    os.setegid(uid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def recv_or_eof(raw, timeout=3.0):
    raw.sock.settimeout(timeout)
    try:
        return raw.recv()
    except ConnectionResetError:
        return None


def wait_eof(raw, timeout):
    """(seconds until the broker closes the connection (EOF/reset), bytes it sent before);
    (None, bytes) when it is still open after `timeout` seconds in all."""
    t0 = time.monotonic()
    data = b""
    while True:
        left = t0 + timeout - time.monotonic()
        if left <= 0:  # also when the broker keeps sending and never closes
            return None, data
        raw.sock.settimeout(left)
        try:
            chunk = raw.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except socket.timeout:
            return None, data
        if not chunk:
            return time.monotonic() - t0, data
        data += chunk


def parse_frames(data):
    out = []
    while len(data) >= 4:
        (n,) = struct.unpack(">I", data[:4])
        if len(data) < 4 + n:
            break
        out.append(json.loads(data[4:4 + n]))
        data = data[4 + n:]
    return out, data


class LimitsCase(BrokerTestCase):
    rules = ALLOW_ALL
    limits = {}

    def setUp(self):
        self.extra = {"limits": dict(self.limits)}
        super().setUp()
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        super().tearDown()

    def raw(self, uid=None, admin=False):
        path = self.b.admin if admin else self.b.workload
        if uid is None:
            c = Raw(path)
        else:
            with effective_uid(uid):
                c = Raw(path)
        self.conns.append(c)
        return c

    def held(self, n, uid=None):
        """n connections, each proven accepted with a ping."""
        conns = [self.raw(uid) for _ in range(n)]
        for i, c in enumerate(conns):
            self.assertEqual(c.request({"op": "ping", "id": i}), {"ok": True, "id": i},
                             f"connection {i} of {n} (uid {uid}) was not accepted")
        return conns

    def assertRefused(self, conn, code, message):
        """One error frame, then EOF: nothing else."""
        resp = recv_or_eof(conn)
        self.assertEqual(resp, {"ok": False, "error": {"code": code, "message": message}})
        elapsed, rest = wait_eof(conn, 2.0)
        self.assertIsNotNone(elapsed, "refused connection was left open")
        self.assertEqual(rest, b"", "more than one frame on a refused connection")

    def timed_token(self, uid=None):
        """A fresh client (connect included) gets a token; returns the seconds it took."""
        t0 = time.monotonic()
        c = self.raw(uid)
        t = c.request(token_req("timed"))
        elapsed = time.monotonic() - t0
        self.assertTrue(t and t["ok"], t)
        c.close()
        return elapsed

    def status(self):
        c = Raw(self.b.admin)
        try:
            s = c.request({"op": "status"})
        finally:
            c.close()
        self.assertTrue(s and s["ok"], s)
        return s

    def wait_connections(self, n, timeout=2.0):
        deadline = time.monotonic() + timeout
        while True:
            got = self.status()["connections"]
            if got == n or time.monotonic() > deadline:
                self.assertEqual(got, n)
                return
            time.sleep(0.02)

    def decisions(self):
        return self.b.decisions()


class ReadTimeoutTest(LimitsCase):
    """A started frame must arrive completely within read_timeout (1 s here; the idle timeout
    is far longer so it cannot be what closes anything)."""

    limits = {"read_timeout": 1, "idle_timeout": 10, "max_connections": 100,
              "max_connections_per_uid": 80, "max_connections_per_identity": 80, "rate": 1000,
              "burst": 1000}

    def assertTimedOut(self, conn, since, low=0.9):
        resp = recv_or_eof(conn, timeout=1 + TIMER_SLACK + 1)
        elapsed = time.monotonic() - since
        self.assertEqual(resp, {"ok": False, "error": {"code": "bad_request",
                                                       "message": READ_TIMEOUT_MSG}})
        self.assertGreaterEqual(elapsed, low, "closed before the read timeout")
        self.assertLessEqual(elapsed, 1 + TIMER_SLACK, "read timeout not enforced in time")
        gone, rest = wait_eof(conn, 1.0)
        self.assertIsNotNone(gone, "not closed after the read-timeout error")
        self.assertEqual(rest, b"")

    def test_half_frame_then_stall(self):
        c = self.raw()
        data = frame(token_req("stalled"))
        c.send_raw(data[:len(data) // 2])
        self.assertTimedOut(c, time.monotonic())
        self.assertLess(self.timed_token(), 0.5)
        self.assertEqual([r["event"] for r in self.decisions()], ["grant"])

    def test_half_header_then_stall(self):
        c = self.raw()
        c.send_raw(b"\x00\x00")
        self.assertTimedOut(c, time.monotonic())
        self.assertLess(self.timed_token(), 0.5)

    def test_others_served_promptly_while_30_connections_stall(self):
        stalled = []
        data = frame(token_req("stalled"))
        t0 = time.monotonic()
        for _ in range(30):
            c = self.raw()
            c.send_raw(data[:len(data) - 1])  # all but the last byte
            stalled.append(c)
        # While all 30 hold half a frame, fresh clients are served at once.
        times = [self.timed_token() for _ in range(5)]
        self.assertLess(time.monotonic() - t0, 0.9, "the stalled connections timed out before "
                                                    "the measurement ended; machine too slow")
        self.wait_connections(30, timeout=0.3)  # the 30 stalled (status is not counted)
        self.assertLess(max(times), 0.5, times)
        for c in stalled:
            self.assertTimedOut(c, t0)
        recs = self.decisions()
        self.assertEqual(len(recs), 5)  # the five served requests, none of the stalled ones
        self.assertTrue(all(r["event"] == "grant" for r in recs))

    def test_trickled_frame_is_cut_at_read_timeout(self):
        # Slowloris: one byte every 0.25 s keeps each gap far below the read timeout, but the
        # frame as a whole must still arrive within it.
        c = self.raw()
        data = frame(token_req("trickle", audience=AUD + "/" + "x" * 40))
        t0 = time.monotonic()
        sent = 0
        c.sock.setblocking(False)
        while sent < len(data) and time.monotonic() - t0 < 3.5:
            try:
                c.sock.send(data[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(0.25)
            try:  # has the broker answered (and closed)?
                if c.sock.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
        c.sock.setblocking(True)
        self.assertLess(sent, len(data), "the whole trickled frame was accepted")
        self.assertTimedOut(c, t0)
        self.assertEqual(self.decisions(), [])

    def test_read_timeout_starts_at_the_first_byte_of_a_frame(self):
        # Time spent idle before a frame, or on earlier frames, does not count against it.
        c = self.raw()
        time.sleep(1.3)
        self.assertEqual(c.request({"op": "ping", "id": 1}), {"ok": True, "id": 1})
        data = frame({"op": "ping", "id": 2}) + frame({"op": "ping", "id": 3})
        for i in range(0, len(data), 8):  # two frames over ~1.2 s, each within 1 s
            c.send_raw(data[i:i + 8])
            time.sleep(0.2)
        self.assertEqual(recv_or_eof(c), {"ok": True, "id": 2})
        self.assertEqual(recv_or_eof(c), {"ok": True, "id": 3})


class IdleTimeoutTest(LimitsCase):
    """A connection with no request in progress is closed after idle_timeout (1 s), silently.
    The read timeout is long here, so it cannot be what closes anything."""

    limits = {"idle_timeout": 1, "read_timeout": 10, "max_connections": 40,
              "max_connections_per_uid": 2, "max_connections_per_identity": 2, "rate": 1000,
              "burst": 1000}

    def test_idle_connection_is_closed_silently(self):
        c = self.raw()
        elapsed, data = wait_eof(c, 1 + TIMER_SLACK + 1)
        self.assertIsNotNone(elapsed, "idle connection never closed")
        self.assertEqual(data, b"", "idle close must not send a frame")
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLessEqual(elapsed, 1 + TIMER_SLACK)
        self.assertLess(self.timed_token(), 0.5)

    def test_each_request_restarts_the_idle_clock(self):
        c = self.raw()
        for i in range(3):  # 1.2 s in all, never 1 s without a request
            if i:
                time.sleep(0.6)
            self.assertEqual(c.request({"op": "whoami", "id": i})["id"], i)
            last = time.monotonic()
        elapsed, data = wait_eof(c, 1 + TIMER_SLACK + 1)
        self.assertIsNotNone(elapsed, "idle connection never closed")
        self.assertEqual(data, b"")
        idle = time.monotonic() - last
        self.assertGreaterEqual(idle, 0.9)
        self.assertLessEqual(idle, 1 + TIMER_SLACK)

    def test_pings_do_not_keep_a_connection_open(self):
        # A slot is not held for free: only requests that use the broker restart the clock.
        c = self.raw()
        t0 = time.monotonic()
        closed = None
        for i in range(8):  # a ping every 0.3 s for 2.4 s
            try:
                resp = c.request({"op": "ping", "id": i})
            except OSError:
                resp = None
            if resp is None:
                closed = time.monotonic() - t0
                break
            self.assertEqual(resp, {"ok": True, "id": i})
            time.sleep(0.3)
        self.assertIsNotNone(closed, "pings kept an idle connection open")
        self.assertLessEqual(closed, 1 + TIMER_SLACK + 0.3)

    def test_frame_in_progress_is_not_idle(self):
        c = self.raw()
        data = frame({"op": "ping", "id": "half"})
        c.send_raw(data[:6])
        time.sleep(1.5)  # longer than idle_timeout, shorter than read_timeout
        c.send_raw(data[6:])
        self.assertEqual(recv_or_eof(c), {"ok": True, "id": "half"})

    def test_idle_closes_free_their_slots(self):
        first = self.held(2, uid=5001)
        self.assertRefused(self.raw(5001), "rate_limited", PER_UID_MSG)
        for c in first:
            self.assertIsNotNone(wait_eof(c, 1 + TIMER_SLACK + 1)[0])
        self.held(2, uid=5001)  # both slots are free again


class ConnectionLimitTest(LimitsCase):
    """max_connections_per_uid (20) and max_connections (40)."""

    limits = {"max_connections": 40, "max_connections_per_uid": 20,
              "max_connections_per_identity": 20, "idle_timeout": 10, "read_timeout": 1,
              "rate": 1000, "burst": 1000}

    def test_per_uid_limit_refuses_with_rate_limited_and_others_are_served(self):
        held = self.held(20, uid=5001)
        self.assertRefused(self.raw(5001), "rate_limited", PER_UID_MSG)
        # The refused client sees rate_limited as the answer to its request: exit code 5.
        r = self.b.token(user=as_user(5001))
        self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
        self.assertIn("rate_limited: " + PER_UID_MSG, r.stderr)
        # Other uids are untouched: root on a raw connection, 4001 through brokerctl.
        self.assertLess(self.timed_token(), 0.5)
        r = self.b.token(user=as_user(4001))
        self.assertEqual(r.returncode, 0, r.stderr)
        # The 20 held connections still work.
        self.assertTrue(held[7].request(token_req(7))["ok"])
        # Exactly the three real decisions; nothing for the refused connections.
        self.assertEqual(sorted(r["peer"]["uid"] for r in self.decisions()), [0, 4001, 5001])
        self.assertEqual(self.status()["refused_connections"], 2)

    def test_total_limit_refuses_with_unavailable(self):
        self.held(20, uid=5001)
        b = self.held(18, uid=5002)
        # Other uids together stop at 38: the last sixteenth (2 of 40) is root's.
        self.assertRefused(self.raw(5002), "unavailable", FULL_MSG)
        self.assertRefused(self.raw(5003), "unavailable", FULL_MSG)
        roots = []
        for i in range(2):  # root: the 39th and 40th connections
            roots.append(self.raw())
            self.assertEqual(roots[-1].request({"op": "ping"}), {"ok": True})
        self.assertRefused(self.raw(), "unavailable", FULL_MSG)  # full for root too
        r = self.b.ctl("ping", user=as_user(4001))
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn(FULL_MSG, r.stderr)
        # The operator is never locked out: admin connections have their own allowance.
        st = self.status()
        self.assertEqual((st["connections"], st["admin_connections"]), (40, 1))
        for c in roots:
            c.close()
        self.wait_connections(38)
        self.assertRefused(self.raw(5003), "unavailable", FULL_MSG)  # still root's
        # A connection the broker closes itself (bad frame) frees its slot at once.
        b[0].send_raw(struct.pack(">I", 0))
        self.assertIsNotNone(wait_eof(b[0], 2.0)[0])
        self.held(1, uid=5003)
        self.assertRefused(self.raw(5003), "unavailable", FULL_MSG)
        # A connection the client closes frees its slot as soon as the broker notices.
        b[1].close()
        deadline = time.monotonic() + 2.0
        while True:
            c = self.raw(5003)
            try:
                resp = c.request({"op": "ping", "id": "retry"}) if self._readable_ok(c) else None
            except OSError:  # refused and closed before the request went out
                resp = None
            if resp == {"ok": True, "id": "retry"}:
                break
            self.assertLess(time.monotonic(), deadline, "closed connection's slot not freed")
            time.sleep(0.02)
        self.assertEqual(self.decisions(), [])

    @staticmethod
    def _readable_ok(c):
        """False when a refusal frame is already waiting (the broker refused at accept)."""
        c.sock.settimeout(0.05)
        try:
            c.sock.recv(1, socket.MSG_PEEK)
            return False
        except socket.timeout:
            return True
        finally:
            c.sock.settimeout(5.0)

    def test_slots_are_not_leaked(self):
        # Fill, empty and refill the same uid's slots through every way a connection ends.
        for round in range(3):
            conns = self.held(20, uid=5001)
            self.assertRefused(self.raw(5001), "rate_limited", PER_UID_MSG)
            for c in conns[:10]:  # the broker closes these: a bad frame
                c.send_raw(struct.pack(">I", 70000))
                self.assertIsNotNone(wait_eof(c, 2.0)[0])
            for c in conns[10:]:  # the client closes these
                c.close()
            self.wait_connections(0)
        self.assertEqual(self.status()["refused_connections"], 3)


class ManyIdleConnectionsTest(LimitsCase):
    """300 idle connections from 15 uids (20 each, the per-uid limit) do not stop service."""

    limits = {"max_connections": 400, "max_connections_per_uid": 20,
              "max_connections_per_identity": 20, "idle_timeout": 10, "read_timeout": 1,
              "rate": 1000, "burst": 1000}

    def test_hundreds_of_idle_connections(self):
        uids = range(5101, 5116)
        for uid in uids:
            self.held(20, uid=uid)
        self.assertEqual(self.status()["connections"], 300)
        # One of those uids is at its limit: one rate_limited frame and a close.
        self.assertRefused(self.raw(5101), "rate_limited", PER_UID_MSG)
        # Everyone else is served promptly.
        self.assertLess(self.timed_token(), 0.5)
        self.assertLess(self.timed_token(uid=4001), 0.5)
        r = self.b.token(user=as_user(4002))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(r["peer"]["uid"] for r in self.decisions()), [0, 4001, 4002])
        # Closing them all releases every slot.
        for c in self.conns:
            c.close()
        self.conns = []
        self.wait_connections(0, timeout=3.0)
        self.held(20, uid=5101)


class SlowReaderTest(LimitsCase):
    """A client that pipelines requests and never reads the answers: the broker stops reading
    from it once its answers back up, serves everyone else meanwhile, and disconnects it after
    read_timeout."""

    limits = {"read_timeout": 1, "idle_timeout": 10, "max_connections": 40,
              "max_connections_per_uid": 20, "rate": 1000, "burst": 1000}

    def test_client_that_never_reads(self):
        hog = self.raw()
        hog.sock.setblocking(False)
        req = frame({"op": "jwks"})
        stream = req * 20000
        off = 0
        t0 = time.monotonic()
        while off < len(stream) and time.monotonic() - t0 < 0.5:
            try:
                off += hog.sock.send(stream[off:off + 65536])
            except BlockingIOError:
                break
        sent = off // len(req)  # whole requests written
        self.assertGreater(sent, 200, "the hog could not even fill its socket")
        times = [self.timed_token() for _ in range(5)]
        self.assertLess(max(times), 0.5, times)
        # Disconnected once its pending answer has waited read_timeout.
        deadline = t0 + 1 + TIMER_SLACK + 1
        while self.status()["connections"] != 0:
            self.assertLess(time.monotonic(), deadline, "the non-reading client was never "
                                                        "disconnected")
            time.sleep(0.05)
        hog.sock.setblocking(True)
        elapsed, data = wait_eof(hog, 2.0)
        self.assertIsNotNone(elapsed)
        frames, rest = parse_frames(data)
        self.assertGreater(len(frames), 0)
        self.assertLess(len(frames), sent, "every request was answered: nothing backed up")
        self.assertTrue(all(f["ok"] and f["keys"] for f in frames))
        self.assertEqual(len(self.decisions()), 5)


class RateCase(LimitsCase):
    limits = {"rate": 5, "burst": 5, "idle_timeout": 10, "read_timeout": 1,
              "max_connections": 40, "max_connections_per_uid": 20}

    def burst(self, conn, n, first_id=0, **kw):
        """n token requests in one write; the answers, in order."""
        conn.send_raw(b"".join(frame(token_req(first_id + i, **kw)) for i in range(n)))
        return [recv_or_eof(conn) for _ in range(n)]

    def assertLimited(self, resp, id):
        self.assertEqual(resp, {"ok": False, "id": id,
                                "error": {"code": "rate_limited", "message": RATE_MSG}})


class RateLimitTest(RateCase):
    """Token requests per identity (uid + cgroup): rate 5/s, burst 5."""

    def test_burst_then_rate_limited(self):
        c = self.raw()
        resps = self.burst(c, 8)
        for i, r in enumerate(resps[:5]):
            self.assertTrue(r["ok"], r)
            self.assertEqual(r["id"], i)
        for i, r in enumerate(resps[5:], 5):
            self.assertLimited(r, i)
        # The connection stays usable; ping is answered.
        self.assertEqual(c.request({"op": "ping", "id": "p"}), {"ok": True, "id": "p"})
        # Rate-limited requests are not audited: exactly the five grants, the ones we got.
        recs = self.decisions()
        self.assertEqual([r["jti"] for r in recs], [r["jti"] for r in resps[:5]])
        self.assertEqual(self.status()["rate_limited"], 3)

    def test_ping_whoami_jwks_and_bad_requests_are_not_counted(self):
        c = self.raw()
        free = ([{"op": "ping", "id": i} for i in range(10)]  # the pings' own burst
                + [{"op": "whoami", "id": i} for i in range(10)]
                + [{"op": "jwks", "id": i} for i in range(10)]
                + [{"op": "token", "audience": AUD, "ttl": 0, "id": i} for i in range(20)])
        c.send_raw(b"".join(frame(r) for r in free))
        for r in free:
            resp = recv_or_eof(c)
            want_ok = r.get("ttl") != 0
            self.assertEqual(resp["ok"], want_ok, resp)
            if not want_ok:
                self.assertEqual(resp["error"]["code"], "bad_request")
        resps = self.burst(c, 6)
        self.assertTrue(all(r["ok"] for r in resps[:5]), resps)
        self.assertLimited(resps[5], 5)

    def test_pings_have_a_limit_of_their_own(self):
        # 10 at once, then 2 a second: a ping cannot keep a connection busy for free either.
        c = self.raw()
        c.send_raw(b"".join(frame({"op": "ping", "id": i}) for i in range(14)))
        resps = [recv_or_eof(c) for _ in range(14)]
        self.assertEqual(resps[:10], [{"ok": True, "id": i} for i in range(10)])
        for i, r in enumerate(resps[10:], 10):
            self.assertEqual(r, {"ok": False, "id": i, "error": {
                "code": "rate_limited", "message": "too many pings on this connection; slow down"}})
        time.sleep(0.6)  # one ping's worth, and some
        self.assertEqual(c.request({"op": "ping", "id": "again"}), {"ok": True, "id": "again"})
        # Token requests are not held back by it.
        self.assertTrue(c.request(token_req("t"))["ok"])

    def test_denied_requests_are_counted(self):
        c = self.raw()
        resps = self.burst(c, 5, audience="https://other.test")
        self.assertTrue(all(r["error"]["code"] == "denied" for r in resps), resps)
        self.assertLimited(self.burst(c, 1, first_id=9)[0], 9)
        recs = self.decisions()
        self.assertEqual([r["event"] for r in recs], ["deny"] * 5)

    def test_bucket_refills_at_rate(self):
        c = self.raw()
        resps = self.burst(c, 6)
        self.assertLimited(resps[5], 5)
        time.sleep(1 / 5 + 0.05)  # one token's worth
        resps = self.burst(c, 2, first_id=10)
        self.assertTrue(resps[0]["ok"], resps[0])
        self.assertLimited(resps[1], 11)
        time.sleep(1.0 + 0.1)  # five tokens' worth: the whole burst again, no more
        resps = self.burst(c, 6, first_id=20)
        self.assertTrue(all(r["ok"] for r in resps[:5]), resps)
        self.assertLimited(resps[5], 25)
        self.assertEqual(len(self.decisions()), 11)


class RateIdentityTest(RateCase):
    """Whose bucket a request takes from. rate 1/s, so that nothing refills while other
    processes start up during a test."""

    limits = dict(RateCase.limits, rate=1)

    def test_brokerctl_exits_5_when_rate_limited(self):
        c = self.raw()
        self.assertTrue(all(r["ok"] for r in self.burst(c, 5)))
        r = self.b.token()  # same uid, same cgroup as this process
        self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertIn("rate_limited: " + RATE_MSG, r.stderr)
        self.assertEqual(len(self.decisions()), 5)

    def test_other_uid_has_its_own_bucket(self):
        c = self.raw()
        self.assertTrue(all(r["ok"] for r in self.burst(c, 5)))
        self.assertLimited(self.burst(c, 1, first_id=5)[0], 5)
        other = self.raw(4001)  # same process and cgroup, other uid
        resps = self.burst(other, 6)
        self.assertTrue(all(r["ok"] for r in resps[:5]), resps)
        self.assertLimited(resps[5], 5)
        self.assertLimited(self.burst(c, 1, first_id=6)[0], 6)  # root is still limited
        r = self.b.token(user=as_user(4002))
        self.assertEqual(r.returncode, 0, r.stderr)
        uids = [r["peer"]["uid"] for r in self.decisions()]
        self.assertEqual(sorted(uids), [0] * 5 + [4001] * 5 + [4002])

    def test_other_cgroup_has_its_own_bucket(self):
        c = self.raw()
        self.assertTrue(all(r["ok"] for r in self.burst(c, 5)))
        self.assertLimited(self.burst(c, 1, first_id=5)[0], 5)
        path = f"brokertest.slice/ratelimit-{os.getpid()}.service"
        cg = self.cgroup(path)
        # Same uid, same executable, another cgroup: a bucket of its own, just as full.
        script = r'''
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
body = b"".join(struct.pack(">I", len(b)) + b for b in (
    json.dumps({"op": "token", "audience": "https://api.test", "id": i}).encode()
    for i in range(6)))
s.sendall(body)
def exact(n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise SystemExit("closed")
        buf += chunk
    return buf
for _ in range(6):
    n = struct.unpack(">I", exact(4))[0]
    print(exact(n).decode())
'''
        p = subprocess.run(cg.wrap(["/usr/bin/python3", "-c", script, self.b.workload]),
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        resps = [json.loads(l) for l in p.stdout.splitlines()]
        self.assertTrue(all(r["ok"] for r in resps[:5]), resps)
        self.assertLimited(resps[5], 5)
        self.assertLimited(self.burst(c, 1, first_id=6)[0], 6)  # ours is still empty
        cgroups = [r["peer"]["cgroup"] for r in self.decisions()]
        self.assertEqual(cgroups.count("/" + path), 5)
        self.assertEqual(len(cgroups), 10)


class RateZeroTest(LimitsCase):
    """rate 0 disables the limit (whatever the burst)."""

    limits = {"rate": 0, "burst": 1, "idle_timeout": 10, "read_timeout": 1}

    def test_rate_zero_disables_limiting(self):
        c = self.raw()
        c.send_raw(b"".join(frame(token_req(i)) for i in range(100)))
        resps = [recv_or_eof(c) for _ in range(100)]
        self.assertTrue(all(r["ok"] for r in resps), [r for r in resps if not r["ok"]][:1])
        self.assertEqual([r["id"] for r in resps], list(range(100)))
        self.assertEqual(len(self.decisions()), 100)
        self.assertEqual(self.status()["rate_limited"], 0)


class AdminSocketUidTest(LimitsCase):
    """The admin socket is for root and the broker's own uid. Its 0600 mode is only the first
    line: with the socket made world-writable on purpose, another uid still gets `denied`
    (like OpenSSH's agent-getpeereid test)."""

    rules = None

    def test_other_uid_refused_even_when_socket_is_world_writable(self):
        os.chmod(self.b.admin, 0o666)
        for d in (os.path.dirname(self.b.admin), self.b.tmp):
            os.chmod(d, 0o755)
        a = Raw(self.b.admin)
        keys_before = a.request({"op": "keys"})["keys"]
        a.close()

        r = self.b.admin_ctl("status", user=as_user(4001))
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertIn("denied: the admin socket is for root and the broker's own user",
                      r.stderr)

        # A raw client under uid 4001 sends a mutating op; the refusal comes first and only.
        script = r'''
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
for op in ("rotate", "reload"):
    body = json.dumps({"op": op, "id": op}).encode()
    try:
        s.sendall(struct.pack(">I", len(body)) + body)
    except OSError:
        pass
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        chunk = b""
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.hex())
'''
        p = subprocess.run(as_user(4001) + ["/usr/bin/python3", "-c", script, self.b.admin],
                           capture_output=True, text=True, timeout=10, env=sanitizer_env())
        self.assertEqual(p.returncode, 0, p.stderr)
        frames, rest = parse_frames(bytes.fromhex(p.stdout))
        self.assertEqual(rest, b"")
        self.assertEqual(frames, [{"ok": False, "error": {
            "code": "denied", "message": "the admin socket is for root and the broker's own "
                                         "user"}}])

        # Nothing ran: same keys, no rotation or reload recorded; root is still served.
        admin = Raw(self.b.admin)
        self.assertEqual(admin.request({"op": "keys"})["keys"], keys_before)
        events = {r["event"] for r in self.b.audit()}
        self.assertFalse(events & {"key_rotated", "config_reloaded"}, events)
        s = admin.request({"op": "status"})
        self.assertTrue(s["ok"], s)
        self.assertEqual(s["refused_connections"], 2)
        admin.close()
        self.assertEqual(self.b.token().returncode, 0)
