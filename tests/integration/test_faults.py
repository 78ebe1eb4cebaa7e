"""Faults under the audit store, against the real daemon. Each test breaks one thing and
shows that
  1. every request during the fault is answered `unavailable` (brokerctl exit 2, nothing on
     stdout): no token leaves without its record;
  2. the daemon stays up and its status says the audit store is failing;
  3. it serves again by itself once the fault is gone, where the fault can go away;
  4. nothing was lost or forged: `brokerctl audit verify` passes and every token a client
     received has its grant record (same jti, token_sha256 = sha256(token)).

What cannot be produced on a running daemon is said where it is tested: `mount -o
remount,ro` is refused by the kernel while brokerd holds the database open for writing, so a
read-only database comes from the kernel itself (ext4 errors=remount-ro), which only an
unmount undoes."""

import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time

from harness import BrokerTestCase, brokerctl_path, sanitizer_env, token_claims, wait_until

AUD = "https://api.test"
GENESIS = "0" * 64
NO_RATE_LIMIT = {"limits": {"rate": 0}}


def sha256(token):
    return hashlib.sha256(token.encode()).hexdigest()


def brokerctl(*args):
    """brokerctl without a broker (audit export / verify), as an auditor runs it."""
    return subprocess.run([brokerctl_path(), *args], capture_output=True, text=True,
                          env=sanitizer_env(), timeout=60)


def db_files(db):
    return [db + s for s in ("", "-wal", "-shm")]


def move_db(db, dest_dir):
    """Moves a database with its WAL and index to dest_dir, as an operator would."""
    for p in db_files(db):
        if os.path.exists(p):
            os.rename(p, os.path.join(dest_dir, os.path.basename(p)))


def move_db_back(src_dir, db):
    # The WAL and index first, the database last: nothing may open the database in between
    # and find its WAL missing.
    for p in reversed(db_files(db)):
        src = os.path.join(src_dir, os.path.basename(p))
        if os.path.exists(src):
            os.rename(src, p)


def signed_rows(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(con.execute("SELECT name, seq, hash, signature FROM signed").fetchall())
    finally:
        con.close()


class FaultTestCase(BrokerTestCase):
    start_broker = False

    def setUp(self):
        super().setUp()
        self.mounts = []
        self.scratch_dirs = []

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            for m in reversed(self.mounts):
                subprocess.run(["umount", "-l", m], capture_output=True)
            for d in self.scratch_dirs:
                shutil.rmtree(d, ignore_errors=True)

    # --- setting up ------------------------------------------------------------------------

    def scratch(self):
        """A directory of the test's own (for mount points and images), removed after it."""
        d = tempfile.mkdtemp(prefix="broker-fault-")
        self.scratch_dirs.append(d)
        return d

    def broker_with_db_in(self, directory, **kw):
        """A broker whose audit database lives in `directory` (e.g. its own filesystem)."""
        b = self.broker(start=False, **kw)
        b.db = os.path.join(directory, "audit.db")
        b.config["audit"]["database"] = b.db
        b.write_config()
        b.start()
        return b

    def mount_tmpfs(self, size):
        path = os.path.join(self.scratch(), "fs")
        os.makedirs(path)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                       check=True)
        self.mounts.append(path)
        return path

    # --- what every test checks ------------------------------------------------------------

    def issue(self, b):
        """A token the broker must give; returns it."""
        r = b.token()
        self.assertEqual(r.returncode, 0, r.stderr + b.read_log()[-2000:])
        return r.stdout.strip()

    def assert_unavailable(self, b, n=3):
        """Every request gets `unavailable` and no token, through brokerctl and the protocol."""
        for _ in range(n):
            r = b.token()
            self.assertEqual(r.returncode, 2, f"a request during the fault: {r.stdout!r} "
                                              f"{r.stderr!r}")
            self.assertEqual(r.stdout, "")  # no token leaks
            self.assertIn("unavailable", r.stderr)
            self.assertIn("could not be recorded", r.stderr)
        c = b.raw()
        try:
            resp = c.request({"op": "token", "audience": AUD})
        finally:
            c.close()
        self.assertFalse(resp["ok"], resp)
        self.assertEqual(resp["error"]["code"], "unavailable")
        self.assertNotIn("token", resp)

    def status(self, b):
        r = b.admin_ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def assert_up_and_failing(self, b):
        self.assertIsNone(b.proc.poll(), "brokerd exited during the fault:\n" + b.read_log())
        self.assertEqual(b.ctl("ping").returncode, 0)
        self.assertEqual(self.status(b)["audit"]["state"], "failing")

    def export(self, db):
        r = brokerctl("audit", "export", "--database", db)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def verify(self, db):
        r = brokerctl("audit", "verify", "--database", db)
        self.assertEqual(r.returncode, 0, f"verify {db}: {r.stdout}{r.stderr}")
        return r.stdout

    def assert_log_holds(self, db, tokens, exact=True):
        """The chain verifies and every received token has its grant record; with `exact`,
        there is no grant record for a token nobody received."""
        self.verify(db)
        grants = {r["jti"]: r for r in self.export(db) if r["event"] == "grant"}
        for t in tokens:
            jti = token_claims(t)["jti"]
            self.assertIn(jti, grants, "a client holds a token the log does not record")
            self.assertEqual(grants[jti]["token_sha256"], sha256(t))
        if exact:
            self.assertEqual(set(grants), {token_claims(t)["jti"] for t in tokens},
                             "grant records for tokens nobody received")

    def assert_continues(self, records, after):
        """`records` go on from the record `after`: next seq, linked by prev_hash."""
        i = [r["seq"] for r in records].index(after["seq"])
        nxt = records[i + 1]
        self.assertEqual(nxt["seq"], after["seq"] + 1)
        self.assertEqual(nxt["prev_hash"], after["hash"])
        return nxt


class KillTest(FaultTestCase):
    """SIGKILL under load, several times at random points: nothing a client received is
    missing from the log, and every restart continues the same chain."""

    CLIENTS = 8
    ROUNDS = 5

    def load(self, b, received, errors, stop):
        """One client: requests tokens on one connection until the broker goes away."""
        try:
            c = b.raw()
        except OSError:
            return
        try:
            while not stop.is_set():
                try:
                    resp = c.request({"op": "token", "audience": AUD})
                except (OSError, ValueError):
                    return  # killed mid-frame
                if resp is None:
                    return  # killed: connection closed
                if resp.get("ok") and token_claims(resp["token"])["jti"] == resp["jti"]:
                    received.append(resp["token"])
                else:
                    errors.append(resp)
        finally:
            c.close()

    def kill_round(self, b, kill_after, received, ino, key_id):
        """Load from 8 clients, SIGKILL once `kill_after` tokens were received, restart."""
        stop = threading.Event()
        errors = []
        start_count = len(received)
        clients = [threading.Thread(target=self.load, args=(b, received, errors, stop))
                   for _ in range(self.CLIENTS)]
        for t in clients:
            t.start()
        try:
            wait_until(lambda: len(received) - start_count >= kill_after, 30, interval=0.02,
                       what=f"{kill_after} tokens under load")
            b.kill9()  # mid-stream: requests in flight
        finally:
            stop.set()
            for t in clients:
                t.join(10)
        self.assertEqual(errors, [])

        # The crashed state is consistent on its own, and holds every token handed out (and
        # those committed whose answer the kill cut off).
        self.assert_log_holds(b.db, received, exact=False)
        last = self.export(b.db)[-1]

        log_len = len(b.read_log())
        b.start()
        self.assertNotIn("created a new audit log", b.read_log()[log_len:])
        recs = wait_until(lambda: (lambda r: r if r[-1]["seq"] > last["seq"] else None)(
            self.export(b.db)), 10, interval=0.02, what="the restart's first record")
        started = self.assert_continues(recs, last)
        self.assertEqual(started["event"], "started")
        # the same log and the same audit key: no new audit_key record
        self.assertEqual(os.stat(b.db).st_ino, ino)
        self.assertNotIn("audit_key", [r["event"] for r in recs if r["seq"] > last["seq"]])
        self.assertEqual(self.status(b)["audit"]["key_id"], key_id)

    def test_kill9_under_load_loses_nothing_and_restart_continues_the_chain(self):
        b = self.broker(extra={**NO_RATE_LIMIT,
                               "audit": {"checkpoint_every": 50}})
        ino = os.stat(b.db).st_ino
        key_id = self.status(b)["audit"]["key_id"]
        received = []
        seed = int(os.environ.get("FAULT_SEED") or time.time_ns())
        rng = random.Random(seed)
        for rnd in range(self.ROUNDS):
            try:
                self.kill_round(b, rng.randint(1, 2000), received, ino, key_id)
            except AssertionError as e:
                raise AssertionError(f"round {rnd} (FAULT_SEED={seed}): {e}") from e

        received.append(self.issue(b))
        self.assertEqual(b.stop(), 0)
        self.assert_log_holds(b.db, received, exact=False)
        recs = self.export(b.db)
        self.assertEqual([r["seq"] for r in recs], list(range(1, len(recs) + 1)))
        events = [r["event"] for r in recs]
        self.assertEqual(events.count("audit_key"), 1)
        self.assertEqual(events.count("started"), self.ROUNDS + 1)
        self.assertEqual(events.count("stopped"), 1)  # only the clean stop
        self.assertGreater(events.count("checkpoint"), 2)


class FullFilesystemTest(FaultTestCase):

    def test_full_filesystem(self):
        b = self.broker_with_db_in(self.mount_tmpfs("2m"))
        tokens = [self.issue(b)]

        filler = os.path.join(os.path.dirname(b.db), "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        # Commits that fit in the WAL's existing pages may still succeed (and are recorded);
        # the first one that needs space fails.
        c = b.raw()
        for _ in range(500):
            resp = c.request({"op": "token", "audience": AUD})
            if not resp["ok"]:
                break
            tokens.append(resp["token"])
        c.close()
        self.assertEqual(resp["error"]["code"], "unavailable",
                         "writes never failed on a full filesystem")
        self.assertNotIn("token", resp)

        self.assert_unavailable(b, n=5)
        self.assert_up_and_failing(b)

        os.unlink(filler)  # space returns: the very next request is served
        tokens.append(self.issue(b))
        self.assertEqual(self.status(b)["audit"]["state"], "ok")
        self.assertEqual(b.stop(), 0)
        # no record for any refused request, none lost, the chain intact
        self.assert_log_holds(b.db, tokens)


    def fill(self, b):
        """Fills the filesystem under the database until a request is refused."""
        filler = os.path.join(os.path.dirname(b.db), "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        c = b.raw()
        tokens = []
        for _ in range(500):
            resp = c.request({"op": "token", "audience": AUD})
            if not resp["ok"]:
                break
            tokens.append(resp["token"])
        c.close()
        self.assertEqual(resp["error"]["code"], "unavailable")
        return filler, tokens

    def test_lifecycle_records_made_while_full_are_written_once_space_returns(self):
        """A rotation and a reload while the log cannot be written still happen (and are
        answered); their records are kept and written, in order, before anything newer, by
        the retry timer when no request comes, or with the next request."""
        b = self.broker_with_db_in(self.mount_tmpfs("2m"))
        tokens = [self.issue(b)]
        filler, more = self.fill(b)
        tokens += more
        r = b.admin_ctl("rotate")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(b.admin_ctl("reload").returncode, 0)
        self.assert_unavailable(b, n=1)
        events = [r["event"] for r in self.export(b.db)]
        self.assertNotIn("key_rotated", events)
        self.assertNotIn("config_reloaded", events)

        os.unlink(filler)  # space returns; no request comes
        recs = wait_until(lambda: (lambda rs: rs if "config_reloaded" in
                                   [r["event"] for r in rs] else None)(self.export(b.db)),
                          5, interval=0.02, what="the kept lifecycle records")
        events = [r["event"] for r in recs]
        self.assertLess(events.index("key_rotated"), events.index("config_reloaded"))
        self.assertEqual(self.status(b)["audit"]["state"], "ok")

        # again, this time written with the next request, ahead of it
        filler, more = self.fill(b)
        tokens += more
        self.assertEqual(b.admin_ctl("reload").returncode, 0)
        n_reloads = [r["event"] for r in self.export(b.db)].count("config_reloaded")
        os.unlink(filler)
        tokens.append(self.issue(b))
        recs = self.export(b.db)
        self.assertEqual([r["event"] for r in recs].count("config_reloaded"), n_reloads + 1)
        last_reload = max(r["seq"] for r in recs if r["event"] == "config_reloaded")
        grant = next(r for r in recs if r["event"] == "grant" and
                     r["jti"] == token_claims(tokens[-1])["jti"])
        self.assertLess(last_reload, grant["seq"])
        self.assertEqual(b.stop(), 0)
        self.assert_log_holds(b.db, tokens)


    def test_more_lifecycle_records_than_can_be_kept(self):
        """600 reloads while the log cannot be written: 512 records are kept, the rest logged
        as lost; a request behind them is still answered at once, the kept ones are written
        once space returns, and the daemon stops cleanly."""
        b = self.broker_with_db_in(self.mount_tmpfs("2m"))
        self.issue(b)
        filler, _ = self.fill(b)
        c = b.raw(admin=True)
        try:
            for _ in range(600):
                self.assertTrue(c.request({"op": "reload"})["ok"])
        finally:
            c.close()
        started = time.monotonic()
        self.assert_unavailable(b, n=1)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(b.read_log().count("too many kept while the log cannot be written"), 88)
        os.unlink(filler)
        wait_until(lambda: [r["event"] for r in self.export(b.db)].count("config_reloaded") == 512,
                   5, interval=0.02, what="512 kept config_reloaded records")
        self.assertEqual(b.stop(), 0)
        self.verify(b.db)

    def test_lifecycle_records_still_unwritten_at_exit_are_logged(self):
        b = self.broker_with_db_in(self.mount_tmpfs("2m"))
        self.issue(b)
        filler, _ = self.fill(b)
        self.assertEqual(b.admin_ctl("rotate").returncode, 0)
        log_len = len(b.read_log())
        b.stop()
        log = b.read_log()[log_len:]
        self.assertRegex(log, r"audit record lost \(brokerd stopped before the log could be "
                              r"written\): event key_rotated at \d{4}-")
        self.assertIn("event stopped at", log)
        os.unlink(filler)
        self.verify(b.db)


class ReadOnlyTest(FaultTestCase):
    def test_remount_read_only_while_open(self):
        """What an operator would do. The kernel refuses it (EBUSY) while any file on the
        filesystem is open for writing, and brokerd always holds its database so (writer
        and checkpointer connections): the fault cannot happen this way, and the daemon
        keeps serving. Should a kernel allow it, the daemon must fail closed and recover."""
        mnt = self.mount_tmpfs("4m")
        b = self.broker_with_db_in(mnt)
        tokens = [self.issue(b)]
        r = subprocess.run(["mount", "-o", "remount,ro", mnt], capture_output=True, text=True)
        if r.returncode != 0:
            self.assertIn("busy", r.stderr)
            tokens.append(self.issue(b))
            self.assertEqual(self.status(b)["audit"]["state"], "ok")
        else:
            self.assert_unavailable(b)
            self.assert_up_and_failing(b)
            subprocess.run(["mount", "-o", "remount,rw", mnt], check=True)
            tokens.append(self.issue(b))
        self.assertEqual(b.stop(), 0)
        self.assert_log_holds(b.db, tokens)

    def test_filesystem_turned_read_only_by_the_kernel(self):
        """ext4 with errors=remount-ro: an error makes the filesystem read-only under the
        running daemon, whatever it holds open. Only an unmount (and fsck) undoes that, so
        recovery here is a restart on the repaired filesystem, which continues the chain."""
        scratch = self.scratch()
        image = os.path.join(scratch, "ext4.img")
        mnt = os.path.join(scratch, "ext4")
        os.makedirs(mnt)
        with open(image, "wb") as f:
            f.truncate(16 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
        r = subprocess.run(["mount", "-o", "loop,errors=remount-ro", image, mnt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest(f"cannot loop-mount an ext4 image here: {r.stderr.strip()}")
        self.mounts.append(mnt)
        dev = os.path.basename(subprocess.run(["findmnt", "-no", "SOURCE", mnt],
                                              capture_output=True, text=True).stdout.strip())
        trigger = f"/sys/fs/ext4/{dev}/trigger_fs_error"
        if not os.path.exists(trigger):
            self.skipTest(f"{trigger} is missing: cannot make ext4 fail on demand")
        dbdir = os.path.join(mnt, "audit")
        os.mkdir(dbdir, 0o700)

        b = self.broker_with_db_in(dbdir)
        tokens = [self.issue(b)]
        last = self.export(b.db)[-1]
        with open(trigger, "w") as f:
            f.write("brokerd fault test\n")
        opts = subprocess.run(["findmnt", "-no", "OPTIONS", mnt], capture_output=True,
                              text=True).stdout.strip().split(",")
        self.assertTrue({"ro", "emergency_ro"} & set(opts), opts)
        self.assert_unavailable(b)
        self.assert_up_and_failing(b)
        self.assertEqual(b.stop(), 0)

        subprocess.run(["umount", mnt], check=True)
        self.mounts.remove(mnt)
        subprocess.run(["e2fsck", "-fy", image], capture_output=True)
        subprocess.run(["mount", "-o", "loop", image, mnt], check=True)
        self.mounts.append(mnt)
        self.assert_log_holds(b.db, tokens)
        self.assertEqual(self.export(b.db)[-1], last)  # nothing was written after the error

        b.start()
        tokens.append(self.issue(b))
        self.assertEqual(self.assert_continues(self.export(b.db), last)["event"], "started")
        self.assertEqual(b.stop(), 0)
        self.assert_log_holds(b.db, tokens)


class DeletedTest(FaultTestCase):
    def test_moved_away_then_back(self):
        b = self.broker()
        tokens = [self.issue(b)]
        ino = os.stat(b.db).st_ino
        aside = os.path.join(b.tmp, "aside")
        os.mkdir(aside, 0o700)
        log_len = len(b.read_log())

        move_db(b.db, aside)
        self.assert_unavailable(b)
        self.assert_up_and_failing(b)
        self.assertFalse(os.path.exists(b.db), "brokerd created a new database")
        self.assertIn("deleted or replaced", b.read_log()[log_len:])
        last = self.export(os.path.join(aside, "audit.db"))[-1]

        move_db_back(aside, b.db)
        tokens.append(self.issue(b))  # by itself: the very next request
        self.assertEqual(self.status(b)["audit"]["state"], "ok")
        self.assertEqual(os.stat(b.db).st_ino, ino)
        self.assertEqual(b.stop(), 0)
        recs = self.export(b.db)
        self.assertEqual(self.assert_continues(recs, last)["event"], "grant")
        self.assert_log_holds(b.db, tokens)

    def test_deleted_for_good(self):
        """Stays unavailable (it never recreates the file behind the operator's back); a
        restart starts a new log, from genesis, under the same audit key."""
        b = self.broker()
        self.issue(b)
        key_id = self.status(b)["audit"]["key_id"]
        log_len = len(b.read_log())
        for p in db_files(b.db):
            if os.path.exists(p):
                os.unlink(p)
        self.assert_unavailable(b)
        self.assert_up_and_failing(b)
        self.assert_unavailable(b)
        self.assertFalse(os.path.exists(b.db))
        log = b.read_log()[log_len:]
        self.assertIn("deleted or replaced while in use", log)
        self.assertEqual(log.count("deleted or replaced"), 1, "logged once, not per request")

        self.assertEqual(b.stop(), 0)
        log_len = len(b.read_log())
        b.start()
        self.assertIn("created a new audit log", b.read_log()[log_len:])
        tokens = [self.issue(b)]
        recs = self.export(b.db)
        self.assertEqual([(r["seq"], r["event"]) for r in recs[:2]],
                         [(1, "audit_key"), (2, "started")])
        self.assertEqual(recs[0]["prev_hash"], GENESIS)
        self.assertEqual(recs[0]["key_id"], key_id)
        self.assertEqual(b.stop(), 0)
        self.assert_log_holds(b.db, tokens)


class ReplacedTest(FaultTestCase):
    def replace(self, b, new_db):
        """Swaps the database set for `new_db` while the daemon runs."""
        aside = os.path.join(b.tmp, "aside")
        os.mkdir(aside, 0o700)
        move_db(b.db, aside)
        shutil.copy(new_db, b.db + ".new")
        os.rename(b.db + ".new", b.db)
        return os.path.join(aside, "audit.db")

    def test_replaced_by_another_brokers_log(self):
        # A valid log from another broker (its own master and audit key), longer than ours,
        # so that no seq comparison alone can take it for our own.
        other = self.broker(extra=NO_RATE_LIMIT)
        c = other.raw()
        for _ in range(60):
            self.assertTrue(c.request({"op": "token", "audience": AUD})["ok"])
        c.close()
        self.assertEqual(other.stop(), 0)
        foreign = self.export(other.db)
        foreign_signed = signed_rows(other.db)

        b = self.broker()
        tokens = [self.issue(b)]
        log_len = len(b.read_log())
        ours = self.replace(b, other.db)
        self.assert_unavailable(b)
        self.assert_up_and_failing(b)
        self.assert_unavailable(b)
        self.assertIn("deleted or replaced", b.read_log()[log_len:])
        # never appended to, not even an audit_key record
        self.assertEqual(self.export(b.db), foreign)
        self.assertEqual(signed_rows(b.db), foreign_signed)
        self.verify(b.db)
        self.assert_log_holds(ours, tokens)

    def test_replaced_by_an_older_copy_of_its_own_log(self):
        """A backup restored under the running daemon: records it committed since are
        missing, so it is not the log it writes."""
        b = self.broker()
        tokens = [self.issue(b)]
        backup = os.path.join(b.tmp, "backup.db")
        src = sqlite3.connect(f"file:{b.db}?mode=ro", uri=True)
        dst = sqlite3.connect(backup)
        src.backup(dst)
        src.close()
        dst.close()
        backup_recs = self.export(backup)
        tokens += [self.issue(b) for _ in range(3)]

        ours = self.replace(b, backup)
        self.assert_unavailable(b)
        self.assert_up_and_failing(b)
        self.assertEqual(self.export(b.db), backup_recs)
        self.assert_log_holds(ours, tokens)


class AlteredWhileStoppedTest(FaultTestCase):
    def stopped_with_last_rows_deleted(self, *more_sql):
        """A broker that issued three tokens and stopped; then its last two records are
        deleted (and `more_sql` run) behind its back."""
        b = self.broker()
        for _ in range(3):
            self.issue(b)
        self.assertEqual(b.stop(), 0)
        con = sqlite3.connect(b.db)
        with con:
            con.execute("DELETE FROM records WHERE seq > (SELECT MAX(seq) - 2 FROM records)")
            for q in more_sql:
                con.execute(q)
        con.close()
        return b

    def test_last_rows_deleted_refuses_to_start(self):
        b = self.stopped_with_last_rows_deleted()
        before = self.export(b.db)
        log_len = len(b.read_log())

        self.assertFalse(b.start(expect_ready=False, timeout=5))
        self.assertEqual(b.proc.wait(5), 1)
        b.proc = None
        b.log.close()
        log = b.read_log()[log_len:]
        self.assertIn("truncated or altered", log)
        self.assertIn("brokerctl audit verify", log)
        self.assertEqual(self.export(b.db), before)  # refused without writing
        r = brokerctl("audit", "verify", "--database", b.db)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("truncated", r.stderr)

    def test_last_rows_deleted_and_head_rewritten_refuses_to_start(self):
        """The same truncation with the head row edited to match the new last record: its
        signature no longer verifies, so the daemon must not take it (and re-sign it)."""
        b = self.stopped_with_last_rows_deleted(
            "UPDATE signed SET seq = (SELECT MAX(seq) FROM records), hash = (SELECT hash FROM "
            "records ORDER BY seq DESC LIMIT 1) WHERE name = 'head'")
        before = self.export(b.db)
        log_len = len(b.read_log())

        ready = b.start(expect_ready=False, timeout=5)
        if ready:
            b.stop()
        else:
            b.proc.wait(5)
            b.proc = None
            b.log.close()
        self.assertFalse(ready, "brokerd started on a truncated log with a rewritten head")
        self.assertIn("truncated or altered", b.read_log()[log_len:])
        self.assertEqual(self.export(b.db), before)

