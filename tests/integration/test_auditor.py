"""The grant log as a new auditor meets it: `brokerctl audit verify` and `audit export` on the
copies an auditor is handed (read-only storage, files owned by someone else, a copy with its
write-ahead log, a copy taken while the daemon runs), on things that are not a log at all, on
a time-window export checked against the key `brokerctl status` prints, and in parallel. A
failure to read is never a verdict: it exits 1 and says what to do; a log that is not intact
exits 4 and says what is wrong. Also: a full disk under the daemon is logged once, and OCSF
writes every `uid` as a string.

The chain itself, each forgery and each export format are tested in test_chain.py, whose
helpers (the format, pipelined token load, attacker keys) are reused here."""

import datetime
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (Broker, BrokerTestCase, as_user, brokerctl_path, random_container_id,
                     sanitizer_env)
from test_chain import (AUD, RULES, attacker_key, b64u, canonical, copy_db, pipelined_tokens,
                        record_hash, sql, statement)

EXIT_USAGE, EXIT_OTHER = 1, 4
AUDITOR = 4711  # a uid with no business writing anywhere here
# Words of a tampering verdict: a read failure or a key mismatch must use none of them.
TAMPER_WORDS = ("forged", "rewritten", "edited", "deleted", "removed", "truncated",
                "reordered", "invalid", "does not link", "missing")


def brokerctl(*args, user=None, stdin=None, timeout=120):
    """brokerctl without a broker, as an auditor runs it (as `user` if given); bytes out,
    text err."""
    cmd = (as_user(user) if user is not None else []) + [brokerctl_path()] + list(args)
    r = subprocess.run(cmd, capture_output=True, env=sanitizer_env(), timeout=timeout,
                       stdin=stdin)
    r.stderr = r.stderr.decode(errors="replace")
    return r


def utc_ms_now():
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def token_request(audience=AUD):
    return {"op": "token", "audience": audience}


# --- one real log, shared ---------------------------------------------------------------------

LOG = {}


def setUpModule():
    LOG["dir"] = tempfile.mkdtemp(prefix="auditor-ref-")
    os.chmod(LOG["dir"], 0o755)
    try:
        make_log()
    except BaseException:
        shutil.rmtree(LOG["dir"], ignore_errors=True)  # tearDownModule will not run
        raise


def shared_dir():
    """A directory of the module's, readable by the auditor's uid."""
    d = tempfile.mkdtemp(dir=LOG["dir"])
    os.chmod(d, 0o755)
    return d


def make_log():
    """A log with two stretches of grants a few milliseconds apart (the second is the window
    an auditor exports with --since), checkpointed every 5 records; a copy of its files taken
    while the daemon runs (its -wal holds records), and a copy after a clean stop."""
    b = Broker(rules=RULES, extra={"audit": {"checkpoint_every": 5,
                                             "checkpoint_interval": "1h"},
                                   "limits": {"rate": 0}})
    try:
        c = b.raw()
        for _ in range(8):
            assert c.request(token_request())["ok"]
        assert c.request(token_request("https://nope.test"))["error"]["code"] == "denied"
        time.sleep(0.02)
        LOG["since"] = utc_ms_now()
        time.sleep(0.02)
        for _ in range(12):
            assert c.request(token_request())["ok"]
        c.close()
        r = b.admin_ctl("status", "--json")
        assert r.returncode == 0, r.stderr
        LOG["status"] = json.loads(r.stdout)
        # Idle now (no timed checkpoint for an hour): nothing is written while the files are
        # copied, however long a last WAL checkpoint pass takes.
        time.sleep(0.3)
        LOG["live"] = copy_db(b.db, shared_dir())
        assert os.path.getsize(LOG["live"] + "-wal") > 0, "the live copy has no -wal"
        assert os.path.exists(LOG["live"] + "-shm")
        assert b.stop() == 0, b.read_log()
        assert not os.path.exists(b.db + "-wal") or os.path.getsize(b.db + "-wal") == 0
        LOG["db"] = os.path.join(shared_dir(), "audit.db")
        shutil.copyfile(b.db, LOG["db"])
    finally:
        b.close()


def tearDownModule():
    shutil.rmtree(LOG.get("dir", ""), ignore_errors=True)


def read(path):
    with open(path, "rb") as f:
        return f.read()


LIVE_FILES = ("", "-wal", "-shm")


def copy_to(src, directory, files=("",), mode=0o644):
    """Copies a database (those of `files` that exist: the file alone by default) into
    directory, owned by root."""
    dst = os.path.join(directory, "audit.db")
    for suffix in files:
        if os.path.exists(src + suffix):
            shutil.copyfile(src + suffix, dst + suffix)
            os.chmod(dst + suffix, mode)
    return dst


class AuditorTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="auditor-test-")
        os.chmod(self.tmp, 0o755)  # the auditor's uid must reach what is in it
        self.mounts = []

    def tearDown(self):
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def dir(self):
        """A fresh directory of root's, 0755: readable by the auditor, not writable."""
        d = tempfile.mkdtemp(dir=self.tmp)
        os.chmod(d, 0o755)
        return d

    def tmpfs(self, size="8m"):
        d = self.dir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", d],
                       check=True)
        self.mounts.append(d)
        return d

    def read_only(self, d):
        subprocess.run(["mount", "-o", "remount,ro", d], check=True)

    def bind_read_only(self, src):
        d = self.dir()
        subprocess.run(["mount", "--bind", src, d], check=True)
        self.mounts.append(d)
        subprocess.run(["mount", "-o", "remount,bind,ro", d], check=True)
        return d

    def assertIntact(self, r):
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr)
        self.assertIn(b"chain intact", r.stdout)

    def assertUnreadable(self, r, *phrases):
        """Exit 1, a message that says what failed, no verdict, nothing on stdout."""
        self.assertEqual(r.returncode, EXIT_USAGE, r.stdout.decode() + r.stderr)
        self.assertEqual(r.stdout, b"")
        for p in phrases:
            self.assertIn(p, r.stderr)
        self.assertNotRegex(r.stderr, r": seq \d+: ", "a read failure reported as a verdict")

    def assertKeyMismatch(self, r, *phrases):
        self.assertEqual(r.returncode, EXIT_OTHER, r.stdout.decode() + r.stderr)
        self.assertEqual(r.stdout, b"")
        self.assertIn("audit key", r.stderr)
        for p in phrases:
            self.assertIn(p, r.stderr)
        for w in TAMPER_WORDS:
            self.assertNotIn(w, r.stderr, "a key mismatch reported as tampering")


def results(db, user=None):
    """What an auditor gets from a database: verify's report (its path made neutral) and the
    three export formats, as (exit status, bytes) pairs."""
    out = {}
    r = brokerctl("audit", "verify", "--database", db, user=user)
    out["verify"] = (r.returncode, r.stdout.replace(db.encode(), b"DB"), r.stderr)
    for fmt in ("jsonl", "csv", "ocsf"):
        r = brokerctl("audit", "export", "--database", db, "--format", fmt, user=user)
        out[fmt] = (r.returncode, r.stdout, r.stderr)
    return out


# --- 1. read-only storage, another uid, things that are not a log ------------------------------


class ReadOnlyStorageTest(AuditorTestCase):
    @classmethod
    def setUpClass(cls):
        # on writable storage, as root: what every other place must give
        cls.want = results(copy_to(LOG["db"], shared_dir()))
        cls.want_live = results(copy_to(LOG["live"], shared_dir(), files=LIVE_FILES))
        for want in (cls.want, cls.want_live):
            assert want["verify"][0] == 0 and b"chain intact" in want["verify"][1], want
            assert all(want[f][0] == 0 and want[f][1] for f in ("jsonl", "csv", "ocsf"))

    def assertSame(self, got, want):
        for k in want:
            self.assertEqual(got[k][:2], want[k][:2], f"{k}: {got[k][2]}")

    def test_read_only_tmpfs(self):
        d = self.tmpfs()
        db = copy_to(LOG["db"], d)
        self.read_only(d)
        self.assertSame(results(db), self.want)
        self.assertSame(results(db, user=AUDITOR), self.want)
        self.assertEqual(os.listdir(d), ["audit.db"])

    def test_read_only_tmpfs_with_the_write_ahead_log_and_its_index(self):
        # the files of a running log, as they were copied: SQLite reads the -wal through the
        # copied -shm without writing it
        d = self.tmpfs()
        db = copy_to(LOG["live"], d, files=LIVE_FILES)
        self.read_only(d)
        self.assertSame(results(db), self.want_live)
        self.assertSame(results(db, user=AUDITOR), self.want_live)

    def test_read_only_bind_mount(self):
        src = self.dir()
        copy_to(LOG["db"], src)
        d = self.bind_read_only(src)
        db = os.path.join(d, "audit.db")
        self.assertSame(results(db), self.want)
        self.assertSame(results(db, user=AUDITOR), self.want)
        self.assertEqual(os.listdir(src), ["audit.db"], "something was written beside it")

    def test_file_the_auditor_may_read_but_not_write_beside(self):
        d = self.dir()  # root's, 0755
        db = copy_to(LOG["db"], d, mode=0o644)
        self.assertSame(results(db, user=AUDITOR), self.want)
        self.assertEqual(os.listdir(d), ["audit.db"])
        # with the running log's -wal and -shm beside it, all root's and 0644
        d = self.dir()
        db = copy_to(LOG["live"], d, files=LIVE_FILES, mode=0o644)
        self.assertSame(results(db, user=AUDITOR), self.want_live)
        # the export the auditor verifies, also root's and 0644
        p = os.path.join(d, "export.jsonl")
        with open(p, "wb") as f:
            f.write(self.want["jsonl"][1])
        os.chmod(p, 0o644)
        r = brokerctl("audit", "verify", "--file", p, user=AUDITOR)
        self.assertIntact(r)
        self.assertEqual(r.stdout.replace(p.encode(), b"DB"), self.want["verify"][1])

    def test_unreadable_file(self):
        d = self.dir()
        db = copy_to(LOG["db"], d, mode=0o600)
        for args in (("verify", "--database", db), ("export", "--database", db),
                     ("export", "--database", db, "--format", "ocsf")):
            r = brokerctl("audit", *args, user=AUDITOR)
            self.assertUnreadable(r, db, "cannot read", "Permission denied")
        p = os.path.join(d, "export.jsonl")
        with open(p, "wb") as f:
            f.write(self.want["jsonl"][1])
        os.chmod(p, 0o600)
        self.assertUnreadable(brokerctl("audit", "verify", "--file", p, user=AUDITOR), p,
                              "cannot read", "Permission denied")
        # a directory where a file was meant
        self.assertUnreadable(brokerctl("audit", "verify", "--file", d), d, "cannot read",
                              "Is a directory")

    def test_not_an_audit_database(self):
        d = self.dir()
        rnd = os.path.join(d, "random.db")
        with open(rnd, "wb") as f:
            f.write(os.urandom(64 * 1024))
        other = os.path.join(d, "other.db")
        with sqlite3.connect(other) as con:
            con.execute("CREATE TABLE things (a, b)")
            con.execute("INSERT INTO things VALUES (1, 2)")
        con.close()
        empty = os.path.join(d, "empty.db")
        open(empty, "wb").close()
        for db in (rnd, other, empty):
            for args in (("verify", "--database", db), ("export", "--database", db)):
                with self.subTest(db=os.path.basename(db), command=args[0]):
                    r = brokerctl("audit", *args)
                    self.assertEqual(r.returncode, EXIT_OTHER, r.stderr)
                    self.assertEqual(r.stdout, b"")
                    self.assertIn(f"{db}: not an audit database", r.stderr)
                    self.assertNotRegex(r.stderr, r": seq \d+: ")
        # as --file: random bytes, and the other export formats, are no JSONL export
        ocsf = os.path.join(d, "export.ocsf")
        with open(ocsf, "wb") as f:
            f.write(self.want["ocsf"][1])
        for p in (rnd, ocsf):
            with self.subTest(file=os.path.basename(p)):
                r = brokerctl("audit", "verify", "--file", p)
                self.assertEqual(r.returncode, EXIT_OTHER, r.stderr)
                self.assertIn(f"{p}: not an export of the grant log: line 1", r.stderr)
                self.assertNotRegex(r.stderr, r": seq \d+: ")

    def test_write_ahead_log_that_cannot_be_read_here_is_a_read_failure(self):
        """The running log's .db and -wal, but no -shm, where SQLite cannot create one: the
        file alone lacks records, which verify must not take for a truncated log."""
        d = self.dir()
        db = copy_to(LOG["live"], d, files=("", "-wal"))
        for user in (AUDITOR,):  # cannot write the directory
            for args in (("verify", "--database", db), ("export", "--database", db)):
                with self.subTest(user=user, command=args[0]):
                    self.assertUnreadable(brokerctl("audit", *args, user=user), db,
                                          "write-ahead log", "copy the database with its -wal")
        d = self.tmpfs()
        db = copy_to(LOG["live"], d, files=("", "-wal"))
        self.read_only(d)  # root cannot write it either
        for args in (("verify", "--database", db), ("export", "--database", db)):
            self.assertUnreadable(brokerctl("audit", *args), db, "write-ahead log")
        # the same two files where SQLite may create the index: the log as it is
        d = self.dir()
        db = copy_to(LOG["live"], d, files=("", "-wal"))
        self.assertEqual(results(db)["jsonl"][:2], self.want_live["jsonl"][:2])

    def test_database_file_alone_of_a_running_log(self):
        """Copied without its -wal from the running daemon: an older, consistent state of the
        log; or, before the daemon first copied its write-ahead log into the file, no tables
        at all, which verify explains. Never a verdict of tampering."""
        db = copy_to(LOG["live"], self.dir())
        r = brokerctl("audit", "verify", "--database", db)
        if r.returncode == 0:
            self.assertIn(b"chain intact", r.stdout)
        else:
            self.assertEqual(r.returncode, EXIT_OTHER, r.stderr)
            self.assertIn("not an audit database", r.stderr)
            self.assertIn("holds no tables at all", r.stderr)
            self.assertIn("copy the -wal file along with it", r.stderr)

    def test_unfinished_rollback_journal_is_a_read_failure(self):
        """A copy converted to a rollback journal whose writer died mid-transaction: the file
        holds half of that transaction, which only a rollback (a write) removes. brokerctl
        only reads: it must say so, not report edited records."""
        d = self.dir()
        db = copy_to(LOG["db"], d)
        sql(db, "PRAGMA journal_mode=DELETE")
        writer = ("import os, sqlite3, sys\n"
                  "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                  "con.execute('PRAGMA cache_size=1')\n"  # spill pages into the file
                  "con.execute('BEGIN')\n"
                  "con.execute(\"UPDATE records SET body = body || ' ' WHERE seq > 3\")\n"
                  "os._exit(0)\n")
        subprocess.run(["/usr/bin/python3", "-c", writer, db], check=True)
        self.assertGreater(os.path.getsize(db + "-journal"), 0)
        before = {p: read(p) for p in (db, db + "-journal")}
        for user in (None, AUDITOR):
            for args in (("verify", "--database", db), ("verify", "--database", db,
                                                        "--threads", "3"),
                         ("export", "--database", db)):
                with self.subTest(user=user, args=args):
                    self.assertUnreadable(brokerctl("audit", *args, user=user), db,
                                          "rollback journal", "unfinished transaction")
        self.assertEqual({p: read(p) for p in before}, before,
                         "brokerctl changed the database or its journal")
        # rolled back by a writer, it is the intact log again
        with sqlite3.connect(db) as con:
            con.execute("SELECT COUNT(*) FROM records").fetchone()
        con.close()
        self.assertFalse(os.path.exists(db + "-journal"))
        self.assertIntact(brokerctl("audit", "verify", "--database", db))


# --- 2. a time-window export and the key brokerctl status prints --------------------------------


class WindowExportKeyTest(AuditorTestCase):
    def setUp(self):
        super().setUp()
        self.pub = LOG["status"]["audit"]["public_key"]
        self.kid = LOG["status"]["audit"]["key_id"]

    def window(self):
        r = brokerctl("audit", "export", "--database", LOG["db"], "--since", LOG["since"])
        self.assertEqual(r.returncode, 0, r.stderr)
        recs = [json.loads(l) for l in r.stdout.decode().split("\n")[:-1]]
        self.assertGreater(recs[0]["seq"], 1)
        self.assertNotIn("audit_key", [x["event"] for x in recs], "the window names its key")
        self.assertGreaterEqual([x["event"] for x in recs].count("checkpoint"), 2)
        p = os.path.join(self.tmp, "window.jsonl")
        with open(p, "wb") as f:
            f.write(r.stdout)
        return p, recs

    def whole(self):
        r = brokerctl("audit", "export", "--database", LOG["db"])
        self.assertEqual(r.returncode, 0, r.stderr)
        p = os.path.join(self.tmp, "whole.jsonl")
        with open(p, "wb") as f:
            f.write(r.stdout)
        return p

    def test_window_export_verifies_with_the_public_key_status_prints(self):
        p, recs = self.window()
        for threads in ("1", "3"):
            r = brokerctl("audit", "verify", "--file", p, "--audit-key", self.pub,
                          "--threads", threads)
            self.assertIntact(r)
            out = r.stdout.decode()
            self.assertIn(f"{len(recs)} records (seq {recs[0]['seq']}..{recs[-1]['seq']})", out)
            self.assertIn(f"starts at seq {recs[0]['seq']}", out)
            # it says which key it checked the checkpoints with
            self.assertIn(f"signed by audit key {self.kid} (public key {self.pub}), pinned", out)
        # without a key it cannot check the checkpoints, and says what to pass
        r = brokerctl("audit", "verify", "--file", p)
        self.assertKeyMismatch(r, "pass --audit-key", "audit.public_key")

    def test_key_id_alone_asks_for_the_public_key(self):
        p, _ = self.window()
        r = brokerctl("audit", "verify", "--file", p, "--audit-key", self.kid)
        self.assertKeyMismatch(r, self.kid, "given by its key id", "public key",
                               "audit.public_key")

    def test_a_key_that_does_not_match_is_a_key_mismatch(self):
        window, _ = self.window()
        whole = self.whole()
        _, other_pub, other_kid = attacker_key()
        for key in (other_pub, other_kid, "not-a-key"):
            for args in (("--file", window), ("--file", whole), ("--database", LOG["db"]),
                         ("--database", LOG["db"], "--threads", "3")):
                with self.subTest(key=key, args=args):
                    r = brokerctl("audit", "verify", *args, "--audit-key", key)
                    self.assertKeyMismatch(r, self.kid, "not one of the keys given with "
                                           "--audit-key", "key mismatch")

    def test_database_takes_the_key_id_or_the_public_key(self):
        for key in (self.kid, self.pub):
            for threads in ("1", "3"):
                r = brokerctl("audit", "verify", "--database", LOG["db"], "--audit-key", key,
                              "--threads", threads)
                self.assertIntact(r)
                self.assertIn(f"signed by audit key {self.kid} (public key {self.pub}), pinned",
                              r.stdout.decode())
        # a whole export names the key's public half too
        r = brokerctl("audit", "verify", "--file", self.whole(), "--audit-key", self.kid)
        self.assertIntact(r)

    def test_signed_head_by_a_key_the_log_does_not_name(self):
        """The head re-signed by another key: reported at the head, naming that key, with or
        without the real key pinned; and a head whose public_key column alone was changed is
        an edited head, not a key mismatch."""
        db = copy_to(LOG["db"], self.dir())
        con = sqlite3.connect(db)
        head = con.execute("SELECT seq, hash, time FROM signed WHERE name = 'head'").fetchone()
        con.close()
        k, pub, kid = attacker_key()
        sig = b64u(k.sign(statement("head", head[0], head[1], head[2], kid)).signature)
        sql(db, "UPDATE signed SET key_id = ?, public_key = ?, signature = ? WHERE name = 'head'",
            kid, pub, sig)
        for pin in ((), ("--audit-key", self.pub), ("--audit-key", self.kid)):
            with self.subTest(pin=pin):
                r = brokerctl("audit", "verify", "--database", db, *pin)
                self.assertEqual(r.returncode, EXIT_OTHER, r.stderr)
                self.assertIn(f"seq {head[0]}: the signed head is signed by audit key {kid}, "
                              "which the log does not name", r.stderr)
        db = copy_to(LOG["db"], self.dir())
        sql(db, "UPDATE signed SET public_key = ? WHERE name = 'head'", pub)
        r = brokerctl("audit", "verify", "--database", db, "--audit-key", self.pub)
        self.assertEqual(r.returncode, EXIT_OTHER, r.stderr)
        self.assertIn(f"the signed head names audit key {self.kid} with a public key that is "
                      "not the one the log names for it", r.stderr)

    def test_key_record_whose_public_half_is_not_the_pinned_key_id(self):
        """The log's audit_key record names the real key id with another public key (and the
        chain is rebuilt): with the real key pinned that is an edited record, not a mismatch
        of the key the auditor gave."""
        lines = read(self.whole()).decode().split("\n")[:-1]
        recs = [json.loads(l) for l in lines]
        _, pub, _ = attacker_key()
        self.assertEqual(recs[0]["event"], "audit_key")
        recs[0]["public_key"] = pub
        prev = "0" * 64
        for rec in recs:
            rec["prev_hash"] = prev
            if rec["event"] == "checkpoint":
                rec["checkpoint"]["hash"] = prev
            rec.pop("hash")
            prev = record_hash(rec)
            rec["hash"] = prev
        p = os.path.join(self.tmp, "rekeyed.jsonl")
        with open(p, "w") as f:
            for rec in recs:
                body = canonical({k: v for k, v in rec.items() if k != "hash"})
                f.write(body[:-1] + ',"hash":"' + rec["hash"] + '"}\n')
        for key in (self.pub, self.kid):
            r = brokerctl("audit", "verify", "--file", p, "--audit-key", key)
            self.assertEqual(r.returncode, EXIT_OTHER, r.stderr)
            self.assertIn(f"seq 1: the log names audit key {self.kid} with public key {pub}, "
                          "which is not that key's", r.stderr)


# --- 3. an empty export ----------------------------------------------------------------------------


class EmptyExportTest(AuditorTestCase):
    def test_an_empty_file_fails_unless_allowed(self):
        empty = os.path.join(self.tmp, "empty.jsonl")
        open(empty, "wb").close()
        # an export of a window with nothing in it is empty too
        r = brokerctl("audit", "export", "--database", LOG["db"], "--since", "2999-01-01")
        self.assertEqual((r.returncode, r.stdout), (0, b""), r.stderr)
        r = brokerctl("audit", "verify", "--file", empty)
        self.assertEqual(r.returncode, EXIT_OTHER, r.stderr)
        self.assertEqual(r.stdout, b"")
        self.assertIn("no records", r.stderr)
        self.assertIn("--allow-empty", r.stderr)
        r = brokerctl("audit", "verify", "--file", empty, "--allow-empty")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, f"{empty}: no records\n".encode())
        with open(empty, "rb") as f:
            r = brokerctl("audit", "verify", "--file", "-", stdin=f)
        self.assertEqual(r.returncode, EXIT_OTHER, r.stderr)
        with open(empty, "rb") as f:
            r = brokerctl("audit", "verify", "--file", "-", "--allow-empty", stdin=f)
        self.assertEqual(r.returncode, 0, r.stderr)
        # --allow-empty does not excuse what is in a file, nor apply to a database
        with open(empty, "wb") as f:
            f.write(b"\n")
        r = brokerctl("audit", "verify", "--file", empty, "--allow-empty")
        self.assertEqual(r.returncode, EXIT_OTHER, r.stderr)
        r = brokerctl("audit", "verify", "--database", LOG["db"], "--allow-empty")
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)


# --- 4. options of the other command --------------------------------------------------------------


class OptionTest(AuditorTestCase):
    """--event and --since/--until are tested in test_chain.ExportTest; here what an auditor
    mixes up."""

    def test_usage_errors_leave_no_output_file(self):
        out = os.path.join(self.tmp, "out.jsonl")
        for args in (("--event", "grant,nonesuch"), ("--since", "2026-11-23T00:00:00Z",
                                                     "--until", "2026-11-22"),
                     ("--format", "xml")):
            with self.subTest(args=args):
                r = brokerctl("audit", "export", "--database", LOG["db"], "--output", out, *args)
                self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
                self.assertFalse(os.path.exists(out))

    def test_an_event_named_twice_is_exported_once(self):
        once = brokerctl("audit", "export", "--database", LOG["db"], "--event", "grant,deny")
        self.assertEqual(once.returncode, 0, once.stderr)
        for fmt in ("jsonl", "csv", "ocsf"):
            one = brokerctl("audit", "export", "--database", LOG["db"], "--format", fmt,
                            "--event", "grant,deny")
            twice = brokerctl("audit", "export", "--database", LOG["db"], "--format", fmt,
                              "--event", "deny,grant", "--event", "grant")
            self.assertEqual((twice.returncode, twice.stdout), (0, one.stdout), fmt)
        events = [json.loads(l)["event"] for l in once.stdout.decode().split("\n")[:-1]]
        self.assertEqual(set(events), {"grant", "deny"})

    def test_verify_refuses_export_options(self):
        # a verify given --since would check the whole log, not the window meant
        for args in (("--since", LOG["since"]), ("--until", "2026-11-22"), ("--event", "grant"),
                     ("--format", "csv"), ("--output", os.path.join(self.tmp, "x"))):
            with self.subTest(args=args):
                r = brokerctl("audit", "verify", "--database", LOG["db"], *args)
                self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
                self.assertEqual(r.stdout, b"")
                self.assertIn(f"{args[0]} applies to audit export, not verify", r.stderr)
                self.assertIn("--audit-key", r.stderr)  # how a window is verified

    def test_export_refuses_verify_options(self):
        for args in (("--file", os.path.join(self.tmp, "out.jsonl")),
                     ("--audit-key", LOG["status"]["audit"]["public_key"]), ("--allow-empty",)):
            with self.subTest(args=args):
                r = brokerctl("audit", "export", "--database", LOG["db"], *args)
                self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
                self.assertEqual(r.stdout, b"")
                self.assertIn(f"{args[0]} applies to audit verify, not export", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "out.jsonl")))


# --- 5. parallel verify: no false alarms ----------------------------------------------------------


class ParallelVerifyTest(AuditorTestCase):
    """A log of 60,800 grants made by the real daemon (pipelined, ~6 s), verified in three
    pieces on fresh copies: never a false alarm."""

    RUNS = 40
    GRANTS = 16 * 100 * 38

    @classmethod
    def setUpClass(cls):
        cls.b = Broker(rules=RULES, extra={"limits": {"rate": 0},
                                           "audit": {"checkpoint_interval": "1h"}})
        try:
            for _ in range(38):
                pipelined_tokens(cls.b, 16, 100)
            time.sleep(0.5)  # idle from here on: nothing writes while copies are taken
        except BaseException:
            cls.b.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.b.close()

    def verify_copies(self, files):
        """RUNS fresh copies of the log's files (some of db, -wal, -shm), each verified with
        three threads; returns the failures."""
        failed = []
        for i in range(self.RUNS):
            d = self.dir()
            db = copy_to(self.b.db, d, files=files)
            r = brokerctl("audit", "verify", "--database", db, "--threads", "3")
            if r.returncode != 0 or b"chain intact" not in r.stdout:
                failed.append((i, r.returncode, r.stderr))
            else:
                m = re.search(rb": (\d+) records \(seq 1\.\.(\d+)\)", r.stdout)
                self.assertIsNotNone(m, r.stdout)
                self.assertGreaterEqual(int(m.group(1)), self.GRANTS)
            shutil.rmtree(d)
        return failed

    def test_fresh_copies_verify_every_time(self):
        # the running (idle) daemon's files, as an auditor copies them
        failed = self.verify_copies(LIVE_FILES)
        self.assertEqual(failed, [], f"{len(failed)} of {self.RUNS} copies taken while the "
                                     "daemon runs did not verify")
        # the file alone, after a clean stop
        self.assertEqual(self.b.stop(), 0, self.b.read_log())
        failed = self.verify_copies(("",))
        self.assertEqual(failed, [], f"{len(failed)} of {self.RUNS} copies did not verify")


class LiveCopyTest(AuditorTestCase):
    def test_online_backup_of_a_log_under_load_verifies(self):
        """What README §Audit advises for copying a running log: SQLite's online backup (here
        through Python's binding of the same API) copies one snapshot, however busy the
        daemon is."""
        b = Broker(rules=RULES, extra={"limits": {"rate": 0},
                                       "audit": {"checkpoint_every": 50}})
        stop, errors = threading.Event(), []

        def load():
            c = b.raw()
            try:
                while not stop.is_set():
                    if not c.request(token_request())["ok"]:
                        errors.append("refused")
            except OSError as e:
                errors.append(e)
            finally:
                c.close()
        clients = [threading.Thread(target=load) for _ in range(2)]
        try:
            for t in clients:
                t.start()
            time.sleep(0.5)
            for i in range(5):
                copy = os.path.join(self.dir(), "copy.db")
                src = sqlite3.connect(f"file:{b.db}?mode=ro", uri=True)
                dst = sqlite3.connect(copy)
                src.backup(dst)
                src.close()
                dst.close()
                r = brokerctl("audit", "verify", "--database", copy, "--threads", "3")
                self.assertIntact(r)
        finally:
            stop.set()
            for t in clients:
                t.join(10)
            b.close()
        self.assertEqual(errors, [])


class ReadFailureTest(AuditorTestCase):
    """A database verify cannot read as it is: no verdict on the log, whatever it looks like."""

    def test_a_locked_database_is_waited_for_then_a_read_failure(self):
        """Another process holds the database locked (a writer in exclusive locking mode, a
        rollback-journal writer): verify and export wait for it (10 s), then exit 1 saying it
        stayed locked. A lock released within that time is waited out."""
        cases = {}
        for name, setup in (("wal", ("PRAGMA locking_mode=EXCLUSIVE",)),
                            ("rollback", ("PRAGMA journal_mode=DELETE",)),
                            ("released", ("PRAGMA journal_mode=DELETE",))):
            db = copy_to(LOG["db"], self.dir())
            con = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            for s in setup:
                con.execute(s)
            con.execute("BEGIN EXCLUSIVE")
            con.execute("UPDATE records SET time_ms = time_ms WHERE seq = 1")
            cases[name] = (db, con)
        procs = []
        for name, (db, _) in cases.items():
            for args in (("verify", "--database", db, "--threads", "3"),
                         ("export", "--database", db)):
                procs.append((name, args[0], subprocess.Popen(
                    [brokerctl_path(), "audit", *args], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, env=sanitizer_env())))
        time.sleep(1)
        cases["released"][1].execute("ROLLBACK")
        try:
            for name, command, p in procs:
                out, err = p.communicate(timeout=60)
                r = subprocess.CompletedProcess(p.args, p.returncode, out,
                                                err.decode(errors="replace"))
                with self.subTest(case=name, command=command):
                    if name == "released":
                        self.assertEqual(r.returncode, 0, r.stderr)
                        self.assertTrue(r.stdout)
                    else:
                        self.assertUnreadable(r, "stayed locked")
        finally:
            for _, con in cases.values():
                con.close()

    def test_a_damaged_file_is_not_reported_as_tampering(self):
        """Two leaf pages of the records swapped, as a copy taken with cp while the daemon
        wrote the file can hold them: what verify sees (rows out of order) is reported with
        SQLite's own finding and what to do, not as records removed."""
        db = copy_to(LOG["db"], self.dir())
        con = sqlite3.connect(db)
        size = con.execute("PRAGMA page_size").fetchone()[0]
        leaves = [n for (n,) in con.execute("SELECT pageno FROM dbstat WHERE name = 'records' "
                                            "AND pagetype = 'leaf' ORDER BY path")]
        con.close()
        self.assertGreaterEqual(len(leaves), 3)
        a, b = leaves[1], leaves[2]
        with open(db, "r+b") as f:
            f.seek((a - 1) * size)
            pa = f.read(size)
            f.seek((b - 1) * size)
            pb = f.read(size)
            f.seek((a - 1) * size)
            f.write(pb)
            f.seek((b - 1) * size)
            f.write(pa)
        for threads in ("1", "3"):
            r = brokerctl("audit", "verify", "--database", db, "--threads", threads)
            self.assertEqual(r.returncode, EXIT_OTHER, r.stderr)
            self.assertIn("the database file is damaged (SQLite's check:", r.stderr)
            self.assertIn("out of order", r.stderr)
            self.assertIn(".backup", r.stderr)  # what to do


# --- 6. a full disk under the running daemon ----------------------------------------------------


class FullDiskLogTest(BrokerTestCase):
    start_broker = False

    def setUp(self):
        super().setUp()
        self.mount = tempfile.mkdtemp(prefix="auditor-full-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", self.mount],
                       check=True)

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            subprocess.run(["umount", "-l", self.mount], capture_output=True)
            shutil.rmtree(self.mount, ignore_errors=True)

    def fill(self, b, c):
        """Fills the filesystem; requests until the first is refused (commits that fit in
        pages the WAL already has may still succeed)."""
        filler = os.path.join(self.mount, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        for _ in range(500):
            resp = c.request(token_request())
            if not resp["ok"]:
                break
        self.assertEqual(resp["error"]["code"], "unavailable", "writes never failed")
        return filler

    def fault_lines(self, b, since):
        return [l for l in b.read_log()[since:].splitlines() if b.db in l]

    def test_a_full_disk_is_logged_once_not_per_request(self):
        b = self.broker(start=False, rules=RULES, extra={"limits": {"rate": 0}})
        b.db = os.path.join(self.mount, "audit.db")
        b.config["audit"]["database"] = b.db
        b.write_config()
        b.start()
        c = b.raw()
        self.assertTrue(c.request(token_request())["ok"])
        for round_ in (1, 2):
            mark = len(b.read_log())
            filler = self.fill(b, c)
            answers = [c.request(token_request()) for _ in range(40)]
            self.assertEqual([a.get("error", {}).get("code") for a in answers],
                             ["unavailable"] * 40)
            self.assertFalse(any("token" in a for a in answers))
            time.sleep(1.5)  # the retry timer runs meanwhile: it must not log either
            lines = self.fault_lines(b, mark)
            self.assertEqual(len(lines), 1, f"round {round_}: the fault logged "
                                            f"{len(lines)} times:\n" + "\n".join(lines[:5]))
            self.assertIn("full", lines[0])
            # space returns: served again; the next fault is a new one and is logged again
            os.unlink(filler)
            self.assertTrue(c.request(token_request())["ok"])
        c.close()
        self.assertEqual(b.stop(), 0)
        self.assertEqual(brokerctl("audit", "verify", "--database", b.db).returncode, 0)


# --- 7. OCSF uids ----------------------------------------------------------------------------------


class OcsfUidTest(BrokerTestCase):
    rules = RULES + [{"name": "svc", "match": {"uid": 4001}, "subject": "spiffe://test/{unit}",
                      "audiences": [AUD]}]

    def uids(self, obj, path=""):
        """Every (path, value) of a member named "uid", at any depth."""
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k == "uid":
                    yield f"{path}.{k}", v
                yield from self.uids(v, f"{path}.{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from self.uids(v, f"{path}[{i}]")

    def test_every_uid_is_a_string(self):
        cid = random_container_id()
        cg = self.cgroup(f"brokertest.slice/docker-{cid}.scope")
        self.assertEqual(self.b.token().returncode, 0)
        r = self.b.token(user=as_user(4001), cgroup=cg)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.b.token(audience="https://nope.test", user=as_user(4001), cgroup=cg)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(self.b.stop(), 0)
        out = {}
        for fmt in ("jsonl", "ocsf"):
            r = brokerctl("audit", "export", "--database", self.b.db, "--format", fmt)
            self.assertEqual(r.returncode, 0, r.stderr)
            out[fmt] = [json.loads(l) for l in r.stdout.decode().split("\n")[:-1]]
        decisions = [x for x in out["jsonl"] if x["event"] in ("grant", "deny")]
        self.assertEqual(len(out["ocsf"]), len(decisions))
        seen = set()
        for e, rec in zip(out["ocsf"], decisions):
            uids = dict(self.uids(e))
            for path, v in uids.items():
                self.assertIsInstance(v, str, f"seq {rec['seq']}: {path} is {v!r}")
            seen |= set(uids)
            self.assertEqual(uids[".metadata.uid"], str(rec["seq"]))
            self.assertEqual(uids[".actor.user.uid"], str(rec["peer"]["uid"]))
            if rec["peer"]["container"]:
                self.assertEqual(e["src_endpoint"]["container"],
                                 {"uid": cid, "runtime": "docker"})
        self.assertEqual(seen, {".metadata.uid", ".actor.user.uid",
                                ".src_endpoint.container.uid"})
        # the container's grant and denial both carry it
        self.assertEqual(sum(1 for e in out["ocsf"] if "container" in e["src_endpoint"]), 2)


if __name__ == "__main__":
    unittest.main()
