"""The grant log's tamper evidence, checked against the real daemon and the real brokerctl.

The chain is recomputed here, independently, from the format in common/auditfmt.h (RFC 8785
canonical JSON, SHA-256, 64-zero genesis) and every signed statement is checked with PyNaCl.
Then each defence is broken on its own, on a copy of a real log, and `brokerctl audit verify`
must name the first bad seq and what is wrong with it. Export formats, time windows, constant
memory and retention (pruning with a signed anchor) are covered too."""

import base64
import csv
import datetime
import hashlib
import io
import json
import os
import pty
import re
import shutil
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import nacl.exceptions
import nacl.signing

from harness import Broker, BrokerTestCase, Raw, brokerctl_path, sanitizer_env

AUD = "https://api.test"
GENESIS = "0" * 64
RULES = [{"name": "root", "match": {"uid": 0}, "subject": "spiffe://test/uid/{uid}",
          "audiences": [AUD], "scopes": ["read", "write"]}]
# Denied audiences that a spreadsheet or a naive canonicaliser would trip over.
TRICKY_AUDIENCES = ['https://a,b "quoted".test', "https://\u00fc.test/\u2603\U0001F600",
                    "=1+2", "+cmd", "-cmd", "@SUM(A1)"]
EXIT_OTHER = 4

# --- the format, written from its documentation -------------------------------------------


def canonical(obj):
    """RFC 8785 for records: sorted members, no whitespace, UTF-8, integers only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(rec):
    body = {k: v for k, v in rec.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def statement(kind, seq, hash_, time_, key_id):
    return canonical({"hash": hash_, "key_id": key_id, "seq": seq, "time": time_,
                      "type": kind}).encode()


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify_sig(public_key_b64, msg, sig_b64):
    nacl.signing.VerifyKey(unb64u(public_key_b64)).verify(msg, unb64u(sig_b64))


def time_ms(rfc3339):
    dt = datetime.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)
    return int(dt.timestamp() * 1000 + 0.5)


def ctl(*args, timeout=60):
    """brokerctl without a broker, as an auditor runs it; bytes out, text err."""
    r = subprocess.run([brokerctl_path()] + list(args), capture_output=True,
                       env=sanitizer_env(), timeout=timeout)
    r.stderr = r.stderr.decode(errors="replace")
    return r


def token_frame(audience=AUD, **extra):
    body = json.dumps(dict({"op": "token", "audience": audience}, **extra)).encode()
    return struct.pack(">I", len(body)) + body


def pipelined_tokens(b, n_conns, per_conn, audience=AUD):
    """n_conns connections each sending per_conn token requests at once, then reading the
    answers: the daemon commits them in shared transactions."""
    frame = token_frame(audience)
    conns = [Raw(b.workload, timeout=60) for _ in range(n_conns)]
    errors = []

    def run(c):
        try:
            c.send_raw(frame * per_conn)
            for _ in range(per_conn):
                r = c.recv()
                if not r or not r.get("ok"):
                    errors.append(r)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    if errors:
        raise AssertionError(f"token requests failed: {errors[:3]}")


def copy_db(src, dst_dir):
    dst = os.path.join(dst_dir, "audit.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(src + suffix):
            shutil.copyfile(src + suffix, dst + suffix)
    return dst


def db_records(path):
    """(seq, time_ms, event, body, hash) rows, as stored."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq, time_ms, event, body, hash FROM records "
                          "ORDER BY seq").fetchall()


def db_signed(path, name):
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM signed WHERE name = ?", (name,)).fetchone()
        return dict(row) if row else None


def sql(path, script, *params):
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute(script, params)
    finally:
        db.close()


class Forgery:
    """What an attacker with write access to the database can do: rewrite records, re-link the
    chain, re-sign with a key of their own. Records are kept without their hash."""

    def __init__(self, path):
        self.path = path
        self.recs = [json.loads(body) for _, _, _, body, _ in db_records(path)]

    def index(self, seq):
        return [r["seq"] for r in self.recs].index(seq)

    def rechain(self, start, signer=None, key_id=None):
        """Renumbers and re-links every record from index start on; checkpoints are pointed at
        the record before them and, given a signer, re-signed with it (else their old signature
        stays)."""
        prev = GENESIS if start == 0 else record_hash(self.recs[start - 1])
        for i in range(start, len(self.recs)):
            r = self.recs[i]
            r["seq"], r["prev_hash"] = i + 1, prev
            if r["event"] == "checkpoint":
                cp = r["checkpoint"]
                cp["seq"], cp["hash"] = i, prev
                if signer:
                    cp["key_id"] = key_id
                    cp["signature"] = b64u(signer.sign(
                        statement("checkpoint", i, prev, cp["time"], key_id)).signature)
            prev = record_hash(r)

    def save(self, head_signer=None, key_id=None):
        rows = [(r["seq"], time_ms(r["time"]), r["event"], canonical(r), record_hash(r))
                for r in self.recs]
        db = sqlite3.connect(self.path)
        try:
            with db:
                db.execute("DELETE FROM records")
                db.executemany("INSERT INTO records (seq, time_ms, event, body, hash) "
                               "VALUES (?,?,?,?,?)", rows)
                if head_signer:
                    last = self.recs[-1]
                    t = last["time"]
                    sig = head_signer.sign(statement("head", last["seq"], record_hash(last), t,
                                                     key_id)).signature
                    db.execute("UPDATE signed SET seq=?, hash=?, time=?, key_id=?, public_key=?, "
                               "signature=? WHERE name='head'",
                               (last["seq"], record_hash(last), t, key_id,
                                b64u(bytes(head_signer.verify_key)), b64u(sig)))
        finally:
            db.close()


def attacker_key():
    k = nacl.signing.SigningKey.generate()
    pub = b64u(bytes(k.verify_key))
    jwk = canonical({"crv": "Ed25519", "kty": "OKP", "x": pub})
    return k, pub, b64u(hashlib.sha256(jwk.encode()).digest())


# --- one real log, shared by the read-only and the tampering tests ------------------------

REF = {}


def setUpModule():
    REF["dir"] = tempfile.mkdtemp(prefix="chain-ref-")
    try:
        make_reference_log()
    except BaseException:
        shutil.rmtree(REF["dir"], ignore_errors=True)  # tearDownModule will not run
        raise


def make_reference_log():
    b = Broker(rules=RULES, extra={"audit": {"checkpoint_every": 5},
                                   "limits": {"rate": 0}})
    try:
        tokens = []
        for scopes in ((), ("read",), ("read", "write")):
            r = b.token(scopes=scopes)
            assert r.returncode == 0, r.stderr
            tokens.append(r.stdout.strip())
        c = Raw(b.workload)
        for aud in TRICKY_AUDIENCES:
            r = c.request({"op": "token", "audience": aud})
            assert r["error"]["code"] == "denied", r
        time.sleep(0.03)
        rot = json.loads(b.admin_ctl("rotate").stdout)
        for _ in range(2):
            assert c.request({"op": "token", "audience": AUD})["ok"]
        r = b.admin_ctl("revoke", rot["rotated"][0]["retired_kid"])
        assert r.returncode == 0, r.stderr
        time.sleep(0.03)
        assert b.admin_ctl("reload").returncode == 0
        time.sleep(0.03)
        for _ in range(4):
            assert c.request({"op": "token", "audience": AUD, "scopes": ["write"]})["ok"]
        c.close()
        REF["status"] = json.loads(b.admin_ctl("status", "--json").stdout)
        REF["tokens"] = tokens
        rc = b.stop()
        assert rc == 0, b.read_log()
        REF["db"] = copy_db(b.db, REF["dir"])
    finally:
        b.close()
    REF["rows"] = db_records(REF["db"])
    r = ctl("audit", "export", "--database", REF["db"])
    assert r.returncode == 0, r.stderr
    REF["jsonl"] = r.stdout


def tearDownModule():
    shutil.rmtree(REF.get("dir", ""), ignore_errors=True)


def jsonl_lines(data):
    """Lines of an export. (str.splitlines would also split at U+2028 inside a record.)"""
    return data.decode().split("\n")[:-1]


def ref_records():
    return [json.loads(l) for l in jsonl_lines(REF["jsonl"])]


class ChainTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="chain-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def copy(self, src=None):
        d = tempfile.mkdtemp(dir=self.tmp)
        return copy_db(src or REF["db"], d)

    def seqs(self, event, recs=None):
        return [r["seq"] for r in (recs or ref_records()) if r["event"] == event]

    def verify(self, *args):
        return ctl("audit", "verify", *args)

    def assertIntact(self, r):
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr)
        self.assertIn(b"chain intact", r.stdout)

    def assertCaught(self, r, seq, *phrases):
        """Exit 4, and the message names seq and says what is wrong."""
        self.assertEqual(r.returncode, EXIT_OTHER, r.stdout.decode() + r.stderr)
        m = re.search(r": seq (\d+): (.*)", r.stderr)
        self.assertIsNotNone(m, r.stderr)
        self.assertEqual(int(m.group(1)), seq, r.stderr)
        for p in phrases:
            self.assertIn(p, m.group(2))
        self.assertEqual(r.stdout, b"", "a failed verify must not also print a result")


# --- 1. independent recomputation -----------------------------------------------------------


class RecomputeTest(ChainTestCase):
    def test_every_hash_and_link_recomputes_from_genesis(self):
        recs = ref_records()
        self.assertEqual([r["seq"] for r in recs], list(range(1, len(recs) + 1)))
        prev = GENESIS
        for line, r in zip(jsonl_lines(REF["jsonl"]), recs):
            self.assertEqual(r["prev_hash"], prev, f"seq {r['seq']} does not link")
            self.assertEqual(r["hash"], record_hash(r), f"seq {r['seq']}: hash differs")
            # an exported line is the canonical form with "hash" appended last
            body = {k: v for k, v in r.items() if k != "hash"}
            self.assertEqual(line, canonical(body)[:-1] + ',"hash":"' + r["hash"] + '"}')
            prev = r["hash"]
        # the stored bodies are the canonical bytes themselves (non-ASCII included)
        for (seq, _, event, body, h), r in zip(REF["rows"], recs):
            self.assertEqual(body, canonical({k: v for k, v in r.items() if k != "hash"}))
            self.assertEqual((seq, event, h), (r["seq"], r["event"], r["hash"]))
        denied = [r["audience"] for r in recs if r["event"] == "deny"]
        self.assertEqual(denied, TRICKY_AUDIENCES)

    def test_checkpoint_and_head_signatures_verify_with_pynacl(self):
        recs = ref_records()
        st = REF["status"]["audit"]
        keys = [r for r in recs if r["event"] == "audit_key"]
        self.assertEqual(len(keys), 1)
        self.assertEqual(keys[0]["seq"], 1, "a new log names its audit key first")
        self.assertEqual((keys[0]["key_id"], keys[0]["public_key"], keys[0]["alg"]),
                         (st["key_id"], st["public_key"], "EdDSA"))
        pub = st["public_key"]

        cps = [r for r in recs if r["event"] == "checkpoint"]
        self.assertGreaterEqual(len(cps), 4)
        for r in cps:
            cp = r["checkpoint"]
            before = recs[r["seq"] - 2]
            self.assertEqual((cp["seq"], cp["hash"], cp["key_id"]),
                             (before["seq"], before["hash"], st["key_id"]))
            self.assertEqual(cp["time"], r["time"])
            verify_sig(pub, statement("checkpoint", cp["seq"], cp["hash"], cp["time"],
                                      cp["key_id"]), cp["signature"])
            # the signature is over exactly these bytes: any other seq fails
            with self.assertRaises(nacl.exceptions.BadSignatureError):
                verify_sig(pub, statement("checkpoint", cp["seq"] + 1, cp["hash"], cp["time"],
                                          cp["key_id"]), cp["signature"])

        head = db_signed(REF["db"], "head")
        self.assertEqual((head["seq"], head["hash"]), (recs[-1]["seq"], recs[-1]["hash"]))
        self.assertEqual((head["key_id"], head["public_key"]), (st["key_id"], pub))
        verify_sig(pub, statement("head", head["seq"], head["hash"], head["time"],
                                  head["key_id"]), head["signature"])
        with self.assertRaises(nacl.exceptions.BadSignatureError):
            verify_sig(pub, statement("checkpoint", head["seq"], head["hash"], head["time"],
                                      head["key_id"]), head["signature"])
        self.assertIsNone(db_signed(REF["db"], "anchor"), "nothing was pruned")

        # brokerctl agrees and shows the key the running daemon reported
        r = self.verify("--database", REF["db"])
        self.assertIntact(r)
        self.assertIn(f"{len(recs)} records (seq 1..{len(recs)}), {len(cps)} checkpoints",
                      r.stdout.decode())
        self.assertIn(f"audit key {st['key_id']} (public key {pub})", r.stdout.decode())

    def test_lifecycle_events_are_records_in_the_same_chain(self):
        recs = ref_records()
        events = [r["event"] for r in recs]
        self.assertEqual(events[:3], ["audit_key", "started", "key_created"])
        self.assertEqual(events[-2:], ["stopped", "checkpoint"])
        for e in ("key_rotated", "key_revoked", "config_reloaded"):
            self.assertIn(e, events)
        self.assertLess(events.index("key_rotated"), events.index("key_revoked"))
        self.assertLess(events.index("key_revoked"), events.index("config_reloaded"))
        # the rotation is recorded between the grants signed by the old and the new key
        grants = [r for r in recs if r["event"] == "grant"]
        rot = recs[events.index("key_rotated")]
        self.assertEqual({g["kid"] for g in grants if g["seq"] < rot["seq"]}, {rot["retired_kid"]})
        self.assertEqual({g["kid"] for g in grants if g["seq"] > rot["seq"]}, {rot["kid"]})
        self.assertEqual(len(grants), 3 + 2 + 4)
        # every token handed out has its record, by hash only
        shas = {g["token_sha256"] for g in grants}
        for t in REF["tokens"]:
            self.assertIn(hashlib.sha256(t.encode()).hexdigest(), shas)
            self.assertNotIn(t, REF["jsonl"].decode())


# --- 2. checkpoints -------------------------------------------------------------------------


class CheckpointTest(BrokerTestCase):
    start_broker = False

    def uncovered_runs(self, recs):
        """Lengths of the runs of records between checkpoints."""
        runs, n = [], 0
        for r in recs:
            if r["event"] == "checkpoint":
                runs.append(n)
                n = 0
            else:
                n += 1
        return runs, n

    def test_a_checkpoint_follows_every_n_records(self):
        b = self.broker(rules=RULES, extra={"audit": {"checkpoint_every": 5}})
        c = Raw(b.workload)
        for _ in range(12):
            self.assertTrue(c.request({"op": "token", "audience": AUD})["ok"])
        c.close()
        recs = b.audit()
        runs, tail = self.uncovered_runs(recs)
        # audit_key, started, key_created + 12 grants = 15 records: three full runs of five
        self.assertEqual(runs, [5, 5, 5], [r["event"] for r in recs])
        self.assertEqual(tail, 0)
        for r in recs:
            if r["event"] == "checkpoint":
                self.assertEqual(r["checkpoint"]["seq"], r["seq"] - 1)

    def test_at_most_n_records_between_checkpoints_under_concurrent_load(self):
        # Concurrent grants share a transaction (group commit): a checkpoint is still due
        # after every N records, not after every transaction that passed N.
        b = self.broker(rules=RULES, extra={"audit": {"checkpoint_every": 5},
                                            "limits": {"rate": 0}})
        pipelined_tokens(b, 8, 40)
        self.assertEqual(b.stop(), 0)
        recs = b.audit()
        self.assertEqual(sum(r["event"] == "grant" for r in recs), 320)
        runs, tail = self.uncovered_runs(recs)
        self.assertLessEqual(max(runs), 5, f"checkpoint_every 5, but runs of {sorted(runs)[-5:]}")
        self.assertEqual(tail, 0)
        self.assertIntact(b)

    def assertIntact(self, b):
        r = ctl("audit", "verify", "--database", b.db)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_a_checkpoint_is_written_after_the_interval_without_new_requests(self):
        b = self.broker(rules=RULES, extra={"audit": {"checkpoint_every": 1000,
                                                      "checkpoint_interval": "1s"}})
        self.assertEqual(b.token().returncode, 0)
        recs = b.audit()
        self.assertNotIn("checkpoint", [r["event"] for r in recs])
        first_uncovered = time_ms(recs[0]["time"])
        deadline = time.time() + 5
        while time.time() < deadline:
            time.sleep(0.1)
            recs = b.audit()
            if recs[-1]["event"] == "checkpoint":
                break
        self.assertEqual(recs[-1]["event"], "checkpoint", "no checkpoint after an idle period")
        self.assertEqual([r["event"] for r in recs[:-1]],
                         ["audit_key", "started", "key_created", "grant"])
        waited = time_ms(recs[-1]["time"]) - first_uncovered
        self.assertGreaterEqual(waited, 1000)
        self.assertLess(waited, 2000)
        # idle and covered: no further checkpoints
        time.sleep(1.3)
        self.assertEqual(len(b.audit()), len(recs))

    def test_a_clean_stop_ends_with_a_checkpoint_over_stopped(self):
        b = self.broker(rules=RULES, extra={"audit": {"checkpoint_every": 1000}})
        self.assertEqual(b.token().returncode, 0)
        self.assertEqual(b.stop(), 0)
        recs = b.audit()
        self.assertEqual([r["event"] for r in recs[-2:]], ["stopped", "checkpoint"])
        self.assertEqual(recs[-1]["checkpoint"]["hash"], recs[-2]["hash"])
        head = db_signed(b.db, "head")
        self.assertEqual((head["seq"], head["hash"]), (recs[-1]["seq"], recs[-1]["hash"]))
        # restarted, the chain goes on from it
        b.start()
        self.assertEqual(b.token().returncode, 0)
        self.assertEqual(b.stop(), 0)
        again = b.audit()
        self.assertEqual(again[:len(recs)], recs)
        self.assertEqual(again[len(recs)]["prev_hash"], recs[-1]["hash"])
        self.assertEqual(again[len(recs)]["event"], "started")
        self.assertIntact(b)


# --- 3. verify --database: each kind of tampering on its own --------------------------------


class VerifyDatabaseTest(ChainTestCase):
    def test_intact_log_verifies(self):
        self.assertIntact(self.verify("--database", self.copy()))

    def test_edited_field_is_named(self):
        db = self.copy()
        seq = self.seqs("grant")[1]
        sql(db, "UPDATE records SET body = replace(body, 'spiffe://test/uid/0', "
                "'spiffe://test/uid/1') WHERE seq = ?", seq)
        self.assertCaught(self.verify("--database", db), seq, "record was edited")

    def test_edited_field_with_the_chain_rebuilt_is_caught_by_the_next_checkpoint(self):
        db = self.copy()
        seq = self.seqs("grant")[1]
        f = Forgery(db)
        f.recs[f.index(seq)]["audience"] = "https://elsewhere.test"
        f.rechain(f.index(seq))
        f.save()
        cp = min(s for s in self.seqs("checkpoint") if s > seq)
        self.assertCaught(self.verify("--database", db), cp,
                          "checkpoint signature is invalid",
                          f"forged checkpoint, or records up to seq {cp - 1} were rewritten")

    def test_rebuilt_tail_after_the_last_checkpoint_is_caught_by_the_head(self):
        b = Broker(rules=RULES, extra={"audit": {"checkpoint_every": 1000}})
        try:
            for _ in range(3):
                self.assertEqual(b.token().returncode, 0)
            b.kill9()  # no closing checkpoint: only the signed head covers the grants
            db = self.copy(b.db)
        finally:
            b.close()
        recs = [json.loads(r[3]) for r in db_records(db)]
        self.assertNotIn("checkpoint", [r["event"] for r in recs])
        self.assertIntact(self.verify("--database", db))
        f = Forgery(db)
        last = recs[-1]["seq"]
        f.recs[-1]["scopes"] = ["admin"]
        f.rechain(len(f.recs) - 1)
        f.save()
        self.assertCaught(self.verify("--database", db), last, "signed head does not match")

    def test_appended_record_is_caught_by_the_head(self):
        db = self.copy()
        f = Forgery(db)
        fake = json.loads(json.dumps([r for r in f.recs if r["event"] == "grant"][-1]))
        fake["jti"] = "forged-grant"
        f.recs.append(fake)
        f.rechain(len(f.recs) - 1)
        f.save()
        n = len(f.recs)
        self.assertCaught(self.verify("--database", db), n,
                          f"records appended after the signed head (seq {n - 1})")

    def test_deleted_row_in_the_middle(self):
        db = self.copy()
        seq = self.seqs("deny")[2]
        sql(db, "DELETE FROM records WHERE seq = ?", seq)
        self.assertCaught(self.verify("--database", db), seq,
                          f"missing: the next record is seq {seq + 1}", "rows deleted")

    def test_deleted_row_with_the_chain_rebuilt_is_caught_by_the_next_checkpoint(self):
        db = self.copy()
        seq = self.seqs("grant")[3]
        f = Forgery(db)
        i = f.index(seq)
        del f.recs[i]
        f.rechain(i)
        f.save()
        cp = min(s for s in self.seqs("checkpoint") if s > seq) - 1  # one row fewer before it
        self.assertCaught(self.verify("--database", db), cp, "checkpoint signature is invalid")

    def test_two_rows_swapped(self):
        db = self.copy()
        a = self.seqs("deny")[1]
        sql(db, "UPDATE records SET seq = -1 WHERE seq = ?", a)
        sql(db, "UPDATE records SET seq = ? WHERE seq = ?", a, a + 1)
        sql(db, "UPDATE records SET seq = ? WHERE seq = -1", a + 1)
        self.assertCaught(self.verify("--database", db), a, "rows reordered")

    def test_two_rows_swapped_and_renumbered(self):
        # the attacker also fixes the seq inside each body and its hash
        db = self.copy()
        a = self.seqs("deny")[1]
        f = Forgery(db)
        i = f.index(a)
        f.recs[i], f.recs[i + 1] = f.recs[i + 1], f.recs[i]
        f.recs[i]["seq"], f.recs[i + 1]["seq"] = a, a + 1
        f.save()
        self.assertCaught(self.verify("--database", db), a, f"does not link to seq {a - 1}")

    def test_event_column_edited(self):
        db = self.copy()
        seq = self.seqs("deny")[0]
        sql(db, "UPDATE records SET event = 'grant' WHERE seq = ?", seq)
        self.assertCaught(self.verify("--database", db), seq, "event edited")

    def test_time_column_edited(self):
        # time_ms decides what a --since/--until export holds and what retention prunes: a
        # record moved out of its window must not go unnoticed
        db = self.copy()
        seq = self.seqs("grant")[2]
        sql(db, "UPDATE records SET time_ms = time_ms + 86400000 WHERE seq = ?", seq)
        self.assertCaught(self.verify("--database", db), seq, "time")

    def test_forged_checkpoint_signature_bytes(self):
        db = self.copy()
        cp = self.seqs("checkpoint")[1]
        f = Forgery(db)
        c = f.recs[f.index(cp)]["checkpoint"]
        sig = bytearray(unb64u(c["signature"]))
        sig[10] ^= 1
        forged = b64u(bytes(sig))
        # only the signature changed in the row: the record no longer matches its hash
        sql(db, "UPDATE records SET body = replace(body, ?, ?) WHERE seq = ?",
            c["signature"], forged, cp)
        self.assertCaught(self.verify("--database", db), cp, "record was edited")
        # hash recomputed too: the next record no longer links, but the signature is first
        c["signature"] = forged
        f.save()
        self.assertCaught(self.verify("--database", db), cp, "checkpoint signature is invalid")
        # and the chain rebuilt after it
        f.rechain(f.index(cp))
        f.save()
        self.assertCaught(self.verify("--database", db), cp, "checkpoint signature is invalid")

    def test_checkpoint_resigned_by_another_key_under_the_real_key_id(self):
        db = self.copy()
        cp = self.seqs("checkpoint")[1]
        k, _, _ = attacker_key()
        f = Forgery(db)
        f.rechain(f.index(cp), signer=k, key_id=REF["status"]["audit"]["key_id"])
        f.save()
        self.assertCaught(self.verify("--database", db), cp, "checkpoint signature is invalid")

    def test_checkpoint_resigned_by_a_key_the_log_does_not_name(self):
        db = self.copy()
        cp = self.seqs("checkpoint")[1]
        k, _, kid = attacker_key()
        f = Forgery(db)
        f.rechain(f.index(cp), signer=k, key_id=kid)
        f.save(head_signer=k, key_id=kid)
        self.assertCaught(self.verify("--database", db), cp,
                          f"checkpoint is signed by audit key {kid}, which this log does not name")

    def test_forged_audit_key_record_inserted_to_resign_the_rest(self):
        # The attacker names a key of their own in the chain, rebuilds everything after it and
        # signs every later checkpoint and the head: each statement is valid under the key the
        # log names. Only the log's first key (or the pinned ones) may sign: a later audit_key
        # record is a key change no trusted key vouches for.
        db = self.copy()
        cp = self.seqs("checkpoint")[1]
        k, pub, kid = attacker_key()
        f = Forgery(db)
        i = f.index(cp - 2)
        f.recs.insert(i, {"event": "audit_key", "time": f.recs[i]["time"], "key_id": kid,
                          "alg": "EdDSA", "public_key": pub})
        f.rechain(i, signer=k, key_id=kid)
        f.save(head_signer=k, key_id=kid)
        r = self.verify("--database", db)
        self.assertCaught(r, cp - 2, f"the log switches to audit key {kid} here",
                          "pass --audit-key for every key you trust")
        # pinned to the real key, the verdict is the same, and says so
        r = self.verify("--database", db, "--audit-key", REF["status"]["audit"]["public_key"])
        self.assertCaught(r, cp - 2, f"audit key {kid} is not one of the keys given with "
                                     "--audit-key")

    def test_whole_log_rewritten_under_another_key_needs_the_pinned_key(self):
        # Rebuilt from genesis under the attacker's key, the log is self-consistent: without a
        # pin brokerctl can only show which key signed it, and that is not the daemon's.
        db = self.copy()
        k, pub, kid = attacker_key()
        f = Forgery(db)
        f.recs[0].update(key_id=kid, public_key=pub)
        f.rechain(0, signer=k, key_id=kid)
        f.save(head_signer=k, key_id=kid)
        real = REF["status"]["audit"]
        r = self.verify("--database", db)
        self.assertIntact(r)
        self.assertIn(f"audit key {kid} (public key {pub})", r.stdout.decode())
        self.assertNotIn(real["public_key"], r.stdout.decode())
        self.assertIn(b"compare these with the key brokerctl status shows", r.stdout)
        r = self.verify("--database", db, "--audit-key", real["public_key"])
        self.assertCaught(r, 1, f"audit key {kid} is not one of the keys given with --audit-key")
        # and the genuine log passes with its pin
        r = self.verify("--database", REF["db"], "--audit-key", real["public_key"])
        self.assertIntact(r)
        self.assertIn(b"pinned", r.stdout)

    def test_audit_key_changed_by_a_state_reset_needs_both_keys_pinned(self):
        # The genuine way a log changes key: keys.db lost, the audit database kept. Nothing can
        # prove the new key continues the old one, so the auditor must vouch for both.
        b = Broker(rules=RULES)
        try:
            self.assertEqual(b.token().returncode, 0)
            old = json.loads(b.admin_ctl("status", "--json").stdout)["audit"]
            self.assertEqual(b.stop(), 0)
            os.unlink(os.path.join(b.state, "keys.db"))
            b.start()
            self.assertEqual(b.token().returncode, 0)
            new = json.loads(b.admin_ctl("status", "--json").stdout)["audit"]
            self.assertEqual(b.stop(), 0)
            db = self.copy(b.db)
        finally:
            b.close()
        self.assertNotEqual(old["key_id"], new["key_id"])
        recs = [json.loads(r[3]) for r in db_records(db)]
        switch = [r["seq"] for r in recs if r["event"] == "audit_key"]
        self.assertEqual(len(switch), 2)
        self.assertEqual(recs[switch[1] - 1]["key_id"], new["key_id"])
        self.assertCaught(self.verify("--database", db), switch[1],
                          f"the log switches to audit key {new['key_id']} here")
        self.assertCaught(self.verify("--database", db, "--audit-key", old["public_key"]),
                          switch[1], f"audit key {new['key_id']} is not one of the keys given")
        r = self.verify("--database", db, "--audit-key", old["public_key"], "--audit-key",
                        new["public_key"])
        self.assertIntact(r)
        self.assertIn(new["key_id"].encode(), r.stdout)

    def test_truncated_tail(self):
        db = self.copy()
        n = REF["rows"][-1][0]
        sql(db, "DELETE FROM records WHERE seq > ?", n - 3)
        self.assertCaught(self.verify("--database", db), n - 2, "truncated",
                          f"ends at seq {n - 3} but its signed head is at seq {n}")

    def test_truncated_tail_and_head_removed(self):
        db = self.copy()
        n = REF["rows"][-1][0]
        sql(db, "DELETE FROM records WHERE seq > ?", n - 3)
        sql(db, "DELETE FROM signed WHERE name = 'head'")
        self.assertCaught(self.verify("--database", db), n - 3, "no signed head")

    def test_forged_head(self):
        db = self.copy()
        head = db_signed(db, "head")
        sig = bytearray(unb64u(head["signature"]))
        sig[0] ^= 0x80
        sql(db, "UPDATE signed SET signature = ? WHERE name = 'head'", b64u(bytes(sig)))
        self.assertCaught(self.verify("--database", db), head["seq"], "forged head")

    def test_rows_deleted_from_the_start_without_an_anchor(self):
        db = self.copy()
        sql(db, "DELETE FROM records WHERE seq <= 3")
        self.assertCaught(self.verify("--database", db), 4, "does not start at seq 1",
                          "no pruning anchor")

    def test_all_rows_deleted(self):
        db = self.copy()
        sql(db, "DELETE FROM records")
        n = REF["rows"][-1][0]
        self.assertCaught(self.verify("--database", db), n, "truncated")
        sql(db, "DELETE FROM signed")  # and the head with them
        self.assertCaught(self.verify("--database", db), 1, "no records and no signed head")

    def test_verify_does_not_change_the_database(self):
        db = self.copy()
        with open(db, "rb") as f:
            before = f.read()
        self.assertIntact(self.verify("--database", db))
        with open(db, "rb") as f:
            self.assertEqual(f.read(), before)


# --- 4. verify --file on an export ----------------------------------------------------------


class VerifyFileTest(ChainTestCase):
    def write(self, data, name="export.jsonl"):
        p = os.path.join(self.tmp, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def lines(self):
        return REF["jsonl"].splitlines(keepends=True)

    def test_intact_export_verifies(self):
        r = self.verify("--file", self.write(REF["jsonl"]))
        self.assertIntact(r)
        n = len(self.lines())
        self.assertIn(f"{n} records (seq 1..{n})".encode(), r.stdout)
        # also from stdin
        r = subprocess.run([brokerctl_path(), "audit", "verify", "--file", "-"],
                           input=REF["jsonl"], capture_output=True, env=sanitizer_env())
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_edited_line(self):
        lines = self.lines()
        seq = self.seqs("grant")[2]
        lines[seq - 1] = lines[seq - 1].replace(b'"scopes":["read","write"]', b'"scopes":[]')
        self.assertNotEqual(lines[seq - 1], self.lines()[seq - 1])
        r = self.verify("--file", self.write(b"".join(lines)))
        self.assertCaught(r, seq, "record was edited")

    def test_edited_line_with_hashes_rebuilt_is_caught_by_the_next_checkpoint(self):
        recs = ref_records()
        seq = self.seqs("grant")[2]
        recs[seq - 1]["scopes"] = []
        for r in recs[seq - 1:]:
            r["prev_hash"] = recs[r["seq"] - 2]["hash"]
            if r["event"] == "checkpoint":
                r["checkpoint"]["hash"] = r["prev_hash"]
            r["hash"] = record_hash(r)
        # canonical() would sort "hash" among the members: exports put it last
        data = b"".join(
            (canonical({k: v for k, v in r.items() if k != "hash"})[:-1] + ',"hash":"' +
             r["hash"] + '"}\n').encode() for r in recs)
        cp = min(s for s in self.seqs("checkpoint") if s > seq)
        self.assertCaught(self.verify("--file", self.write(data)), cp,
                          "checkpoint signature is invalid")

    def test_removed_line(self):
        lines = self.lines()
        seq = self.seqs("deny")[3]
        del lines[seq - 1]
        r = self.verify("--file", self.write(b"".join(lines)))
        self.assertCaught(r, seq, f"missing: the next line is seq {seq + 1}")

    def test_two_lines_swapped(self):
        lines = self.lines()
        seq = self.seqs("deny")[3]
        lines[seq - 1], lines[seq] = lines[seq], lines[seq - 1]
        r = self.verify("--file", self.write(b"".join(lines)))
        self.assertCaught(r, seq, f"missing: the next line is seq {seq + 1}", "reordered")

    def test_checkpoint_with_two_prev_hash_members(self):
        """A record rewritten and the chain rebuilt, each checkpoint given its genuine prev_hash
        a second time: a reader that takes the last copy (jansson) sees the signed hash, the
        chain (SQLite) the first. Caught at the next checkpoint, pinned key or not, in a file
        and in a database."""
        target = self.seqs("grant")[1]
        cp = min(s for s in self.seqs("checkpoint") if s > target)
        lines, prev = [], None
        for line in jsonl_lines(REF["jsonl"]):
            body = line[:line.rindex(',"hash":"')] + "}"
            rec = json.loads(body)
            if rec["seq"] == target:
                body = body.replace(rec["subject"], "spiffe://test/uid/forged")
            if prev is not None:
                real = '"prev_hash":"%s"' % rec["prev_hash"]
                forged = '"prev_hash":"%s"' % prev
                body = body.replace(real, forged + ("," + real if rec["event"] == "checkpoint"
                                                    else ""), 1)
            h = hashlib.sha256(body.encode()).hexdigest()
            if rec["seq"] >= target:
                prev = h
            lines.append((rec["seq"], body, h))
        data = "".join(b[:-1] + ',"hash":"' + h + '"}\n' for _, b, h in lines).encode()
        p = self.write(data)
        for pin in ((), ("--audit-key", REF["status"]["audit"]["public_key"])):
            self.assertCaught(self.verify("--file", p, *pin), cp, "member twice")
        db = self.copy()
        for seq, body, h in lines[target - 1:]:
            sql(db, "UPDATE records SET body = ?, hash = ? WHERE seq = ?", body, h, seq)
        self.assertCaught(self.verify("--database", db), cp, "member twice")

    def test_nul_byte_hides_text_after_it(self):
        # the hash covers the line up to the NUL; what follows it must not pass unread
        seq = self.seqs("grant")[0]
        lines = self.lines()
        body, tail = lines[seq - 1].split(b',"hash":"')
        lines[seq - 1] = body + b'\x00{"note":"granted to someone else"},"hash":"' + tail
        r = self.verify("--file", self.write(b"".join(lines)))
        self.assertCaught(r, seq, f"line {seq} holds a NUL byte")

    def test_blank_line(self):
        seq = self.seqs("deny")[0]
        lines = self.lines()
        lines.insert(seq - 1, b"\n")
        r = self.verify("--file", self.write(b"".join(lines)))
        self.assertCaught(r, seq, f"line {seq} is not an exported record")

    def test_line_pretty_printed(self):
        seq = self.seqs("grant")[0]
        for fmt in (lambda o: json.dumps(o, indent=2), lambda o: json.dumps(o),
                    lambda o: json.dumps(o, separators=(",", ":"), sort_keys=True)):
            lines = self.lines()
            lines[seq - 1] = fmt(json.loads(lines[seq - 1])).encode() + b"\n"
            self.assertNotEqual(lines[seq - 1], self.lines()[seq - 1])
            r = self.verify("--file", self.write(b"".join(lines)))
            self.assertCaught(r, seq, "is not an exported record")

    def test_escaped_non_ascii_line_is_not_the_canonical_form(self):
        # \\u escapes parse to the same JSON, but the hash covers the canonical bytes
        seq = self.seqs("deny")[1]
        lines = self.lines()
        lines[seq - 1] = json.dumps(json.loads(lines[seq - 1]), ensure_ascii=True,
                                    separators=(",", ":")).encode() + b"\n"
        self.assertIn(b"\\u", lines[seq - 1])
        r = self.verify("--file", self.write(b"".join(lines)))
        self.assertCaught(r, seq, "record was edited")

    def test_time_window_export_is_a_verifiable_piece_of_the_chain(self):
        recs = ref_records()
        pub = REF["status"]["audit"]["public_key"]
        since = recs[self.seqs("key_rotated")[0] - 1]["time"]
        until = recs[self.seqs("config_reloaded")[0] - 1]["time"]
        lo = min(r["seq"] for r in recs if time_ms(r["time"]) >= time_ms(since))
        hi = max(r["seq"] for r in recs if time_ms(r["time"]) < time_ms(until))
        r = ctl("audit", "export", "--database", REF["db"], "--since", since, "--until", until)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual([g["seq"] for g in got], list(range(lo, hi + 1)))
        self.assertEqual(got, recs[lo - 1:hi])
        self.assertGreater(lo, 1)
        p = self.write(r.stdout)
        self.assertTrue(any(g["event"] == "checkpoint" for g in got))
        # it starts after the log's audit_key record: its checkpoints need the pinned key
        r = self.verify("--file", p, "--audit-key", pub)
        self.assertIntact(r)
        self.assertIn(f"(seq {lo}..{hi})".encode(), r.stdout)
        self.assertIn(f"starts at seq {lo}: the records before it are not in this file".encode(),
                      r.stdout)
        cp = min(g["seq"] for g in got if g["event"] == "checkpoint")
        r = self.verify("--file", p)
        self.assertCaught(r, cp, "does not name", "pass --audit-key")

    def test_event_filtered_export_fails_as_incomplete(self):
        r = ctl("audit", "export", "--database", REF["db"], "--event", "grant")
        self.assertEqual(r.returncode, 0, r.stderr)
        grants = self.seqs("grant")
        gap = next(i for i in range(len(grants) - 1) if grants[i + 1] != grants[i] + 1)
        r = self.verify("--file", self.write(r.stdout))
        self.assertCaught(r, grants[gap] + 1, f"the next line is seq {grants[gap + 1]}",
                          "filtered by event")

    def test_pinned_audit_key(self):
        p = self.write(REF["jsonl"])
        r = self.verify("--file", p, "--audit-key", REF["status"]["audit"]["public_key"])
        self.assertIntact(r)
        self.assertIn(b", pinned", r.stdout)
        _, other, _ = attacker_key()
        r = self.verify("--file", p, "--audit-key", other)
        self.assertCaught(r, 1, f"audit key {REF['status']['audit']['key_id']} is not one of the "
                                "keys given with --audit-key")
        # several pins: any of them may be the log's
        r = self.verify("--file", p, "--audit-key", other, "--audit-key",
                        REF["status"]["audit"]["public_key"])
        self.assertIntact(r)

    def test_forged_audit_key_line_inserted(self):
        # the --file flavour of the inserted-key forgery: rebuilt after the insertion point
        k, pub, kid = attacker_key()
        recs = [{k_: v for k_, v in r.items() if k_ != "hash"} for r in ref_records()]
        cp = self.seqs("checkpoint")[1]
        recs.insert(cp - 3, {"event": "audit_key", "time": recs[cp - 3]["time"], "key_id": kid,
                             "alg": "EdDSA", "public_key": pub})
        prev = record_hash(recs[cp - 4])
        for i in range(cp - 3, len(recs)):
            r = recs[i]
            r["seq"], r["prev_hash"] = i + 1, prev
            if r["event"] == "checkpoint":
                c = r["checkpoint"]
                c.update(seq=i, hash=prev, key_id=kid)
                c["signature"] = b64u(k.sign(statement("checkpoint", i, prev, c["time"],
                                                       kid)).signature)
            prev = record_hash(r)
        data = b"".join((canonical(r)[:-1] + ',"hash":"' + record_hash(r) + '"}\n').encode()
                        for r in recs)
        self.assertCaught(self.verify("--file", self.write(data)), cp - 2,
                          f"the log switches to audit key {kid} here")


# --- 5. export formats ----------------------------------------------------------------------


def neutralised(cell):
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


class ExportTest(ChainTestCase):
    def export(self, *args):
        r = ctl("audit", "export", "--database", REF["db"], *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "", "no progress line when stderr is not a terminal")
        return r.stdout

    def test_jsonl_lines_are_the_stored_records_with_their_hash(self):
        out = self.export("--format", "jsonl")
        self.assertEqual(out, REF["jsonl"])
        lines = out.split(b"\n")
        self.assertEqual(lines[-1], b"")
        for line, (seq, _, _, body, h) in zip(lines, REF["rows"]):
            self.assertEqual(line, body.encode()[:-1] + b',"hash":"' + h.encode() + b'"}')
        self.assertEqual(len(lines) - 1, len(REF["rows"]))

    def test_csv_is_rfc4180_and_neutralises_formulas(self):
        out = self.export("--format", "csv")
        self.assertTrue(out.endswith(b"\r\n"))
        self.assertNotIn(b"\n", out.replace(b"\r\n", b""), "every line ends in CRLF")
        rows = list(csv.reader(io.StringIO(out.decode(), newline="")))
        header = rows[0]
        self.assertEqual(header[:3], ["seq", "time", "event"])
        self.assertEqual(header[-2:], ["prev_hash", "hash"])
        recs = ref_records()
        self.assertEqual(len(rows) - 1, len(recs))
        col = {name: i for i, name in enumerate(header)}
        for row, rec in zip(rows[1:], recs):
            self.assertEqual(len(row), len(header))
            self.assertEqual(row[col["seq"]], str(rec["seq"]))
            self.assertEqual(row[col["hash"]], rec["hash"])
            self.assertEqual(row[col["event"]], rec["event"])
            if rec["event"] == "deny":
                self.assertEqual(row[col["reason"]], "audience_not_allowed")
                self.assertEqual(row[col["subject"]], "")
            if rec["event"] == "grant":
                self.assertEqual(row[col["scopes"]], " ".join(rec["scopes"]))
                self.assertEqual(row[col["peer_uid"]], "0")
                # base64url ids may start with "-": the documented rule prefixes them too
                self.assertEqual(row[col["jti"]], neutralised(rec["jti"]))
                self.assertEqual(row[col["kid"]], neutralised(rec["kid"]))
        auds = [row[col["audience"]] for row in rows[1:] if row[col["event"]] == "deny"]
        self.assertEqual(auds, ['https://a,b "quoted".test',
                                "https://\u00fc.test/\u2603\U0001F600",
                                "'=1+2", "'+cmd", "'-cmd", "'@SUM(A1)"])
        # the raw bytes: quotes doubled inside a quoted cell
        self.assertIn(b'"https://a,b ""quoted"".test"', out)

    def test_csv_quotes_newlines_inside_cells(self):
        # The daemon never records a control character (requests with one are refused,
        # kernel strings are escaped), so this cell is planted in a copy of the database.
        db = self.copy()
        seq = self.seqs("deny")[0]
        sql(db, "UPDATE records SET body = json_set(body, '$.audience', ?) WHERE seq = ?",
            "line one\r\nline \"two\",\n-x", seq)
        r = ctl("audit", "export", "--database", db, "--format", "csv", "--event", "deny")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = list(csv.reader(io.StringIO(r.stdout.decode(), newline="")))
        aud = rows[0].index("audience")
        self.assertEqual(rows[1][aud], "line one\r\nline \"two\",\n-x")
        self.assertEqual(len(rows), 1 + len(self.seqs("deny")))

    def test_ocsf_mapping(self):
        out = self.export("--format", "ocsf")
        evs = [json.loads(l) for l in out.splitlines()]
        decisions = [r for r in ref_records() if r["event"] in ("grant", "deny")]
        self.assertEqual(len(evs), len(decisions), "one event per decision, nothing else")
        for e, rec in zip(evs, decisions):
            grant = rec["event"] == "grant"
            self.assertEqual((e["class_uid"], e["category_uid"], e["activity_id"],
                              e["type_uid"]), (3002, 3, 3, 300203))
            self.assertEqual(e["activity_name"], "Authentication Ticket")
            self.assertEqual(e["status_id"], 1 if grant else 2)
            self.assertEqual(e["time"], time_ms(rec["time"]))
            # every "uid" attribute of the OCSF schema is a string
            self.assertEqual(e["metadata"]["uid"], str(rec["seq"]))
            self.assertEqual(e["actor"]["process"]["pid"], rec["peer"]["pid"])
            self.assertEqual(e["actor"]["process"]["file"]["path"], rec["peer"]["exe"])
            self.assertEqual(e["actor"]["user"], {"uid": str(rec["peer"]["uid"]),
                                                  "name": rec["peer"]["user"]})
            self.assertEqual(e["dst_endpoint"]["svc_name"], rec["audience"])
            if grant:
                self.assertEqual(e["user"]["name"], rec["subject"])
                self.assertNotIn("status_detail", e)
                for k in ("jti", "kid", "expires_at", "token_sha256", "rule", "scopes"):
                    self.assertEqual(e["unmapped"][k], rec[k])
            else:
                self.assertEqual(e["status_detail"], rec["reason"])

    def test_output_file_holds_the_same_bytes_as_stdout(self):
        for fmt in ("jsonl", "csv", "ocsf"):
            p = os.path.join(self.tmp, f"out.{fmt}")
            r = ctl("audit", "export", "--database", REF["db"], "--format", fmt, "--output", p)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, b"")
            with open(p, "rb") as f:
                self.assertEqual(f.read(), self.export("--format", fmt), fmt)

    def test_event_filter(self):
        for event in ("grant", "deny", "checkpoint", "audit_key", "key_rotated"):
            got = [json.loads(l) for l in self.export("--event", event).splitlines()]
            self.assertEqual(got, [r for r in ref_records() if r["event"] == event], event)
        # several events: comma-separated, repeated, or both, in seq order either way
        want = [r for r in ref_records() if r["event"] in ("grant", "deny", "checkpoint")]
        for args in (("--event", "grant,deny,checkpoint"),
                     ("--event", "grant", "--event", "deny", "--event", "checkpoint"),
                     ("--event", "checkpoint,deny", "--event", "grant")):
            got = [json.loads(l) for l in self.export(*args).splitlines()]
            self.assertEqual(got, want, args)

    def test_unknown_event_is_a_usage_error(self):
        for bad in ("nonesuch", "grant,nonesuch", "Grant", "grant,", ",deny", ""):
            r = ctl("audit", "export", "--database", REF["db"], "--event", bad)
            self.assertEqual(r.returncode, 1, (bad, r.stderr))
            self.assertEqual(r.stdout, b"")
            self.assertIn("is not an event the grant log records", r.stderr)
            self.assertIn("grant, deny", r.stderr)  # it says which there are

    def test_since_later_than_until_is_a_usage_error(self):
        r = ctl("audit", "export", "--database", REF["db"], "--since", "2026-11-23",
                "--until", "2026-11-22")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, b"")
        self.assertIn("--since 2026-11-23 is later than --until 2026-11-22", r.stderr)

    def test_since_and_until(self):
        recs = ref_records()
        mid = recs[self.seqs("key_rotated")[0] - 1]
        after = [json.loads(l) for l in self.export("--since", mid["time"]).splitlines()]
        self.assertEqual(after, [r for r in recs if time_ms(r["time"]) >= time_ms(mid["time"])])
        before = [json.loads(l) for l in self.export("--until", mid["time"]).splitlines()]
        self.assertEqual(before, [r for r in recs if time_ms(r["time"]) < time_ms(mid["time"])])
        self.assertEqual(len(before) + len(after), len(recs))
        # other spellings of the same instant
        t = mid["time"]
        for spelling in (t.replace("T", " "), t[:-1] + "+00:00", t.replace("Z", "z")):
            self.assertEqual(self.export("--since", spelling), self.export("--since", t),
                             spelling)
        # plain dates, UTC: since inclusive, until exclusive
        day = datetime.date.fromisoformat(recs[0]["time"][:10])
        nxt = (day + datetime.timedelta(days=1)).isoformat()
        self.assertEqual(self.export("--since", day.isoformat()), REF["jsonl"])
        self.assertEqual(self.export("--until", nxt), REF["jsonl"])
        self.assertEqual(self.export("--until", day.isoformat()), b"")
        self.assertEqual(self.export("--since", nxt), b"")
        for bad in ("yesterday", "2026-13-01", "2026-02-30", "1700000000"):
            r = ctl("audit", "export", "--database", REF["db"], "--since", bad)
            self.assertEqual(r.returncode, 1, bad)
            self.assertIn("RFC 3339", r.stderr)
            self.assertEqual(r.stdout, b"")

    def test_bad_arguments(self):
        r = ctl("audit", "export", "--database", REF["db"], "--format", "xml")
        self.assertEqual(r.returncode, 1)
        r = ctl("audit", "export", "--database", os.path.join(self.tmp, "missing.db"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("no such audit database", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "missing.db")))
        r = ctl("audit", "verify", "--file", os.path.join(self.tmp, "missing.jsonl"))
        self.assertEqual(r.returncode, 1)


LARGE_N = 200_000


def large_log():
    """A log of 200,000 records, built once: the real reference log extended with records
    cloned from its grants, each hashed and linked as the daemon would. (Its head is not
    re-signed, which no one but the daemon can do; export ignores it.) Real requests would
    take ~30s at the ~6,000 grants/s this host reaches. Returns (path, the appended rows)."""
    if "large" in REF:
        return REF["large"]
    db_path = copy_db(REF["db"], tempfile.mkdtemp(dir=REF["dir"]))
    recs = ref_records()
    grant = next(r for r in recs if r["event"] == "grant")
    template = {k: v for k, v in grant.items() if k != "hash"}
    prev, seq, t0 = recs[-1]["hash"], recs[-1]["seq"], time_ms(recs[-1]["time"])
    rows = []
    for i in range(LARGE_N - len(recs)):
        seq += 1
        ms = t0 + 1 + i // 50
        template.update(seq=seq, prev_hash=prev, jti=f"j{seq:022d}",
                        time=datetime.datetime.fromtimestamp(
                            ms // 1000, datetime.timezone.utc).strftime(
                            "%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z")
        body = canonical(template)
        prev = hashlib.sha256(body.encode()).hexdigest()
        rows.append((seq, ms, "grant", body, prev))
    db = sqlite3.connect(db_path)
    with db:
        db.executemany("INSERT INTO records VALUES (?,?,?,?,?)", rows)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    REF["large"] = (db_path, rows)
    return REF["large"]


class LargeExportTest(ChainTestCase):
    """Constant memory and the progress line, on the large log."""

    N = LARGE_N
    WINDOW = 20_000  # CSV and OCSF are slower than JSONL (~200,000/s): a window of the large log
    MEDIUM = 5_000   # enough to reach the steady state (ASan's quarantine included)

    @classmethod
    def setUpClass(cls):
        cls.db, rows = large_log()
        cls.n = rows[-1][0]
        cls.since, cls.count = {}, {}
        for n in (cls.WINDOW, cls.MEDIUM):
            cls.since[n] = rows[-n][3].split('"time":"')[1][:24]
            cls.count[n] = sum(1 for r in rows if r[1] >= rows[-n][1])

    def run_measured(self, db, fmt, *extra, tty=False):
        """Exports to /dev/null under GNU time (a child forked from this big Python process
        would inherit its RSS high-water mark); returns (max RSS in KiB, stderr bytes)."""
        self.assertTrue(os.access("/usr/bin/time", os.X_OK), "GNU time (Debian: time) needed")
        rss_file = os.path.join(self.tmp, "rss")
        args = ["/usr/bin/time", "-f", "%M", "-o", rss_file, brokerctl_path(), "audit",
                "export", "--database", db, "--format", fmt] + list(extra)
        env = sanitizer_env()
        if self.sanitized():
            # ASan holds freed memory in a quarantine (256 MiB by default) to catch use after
            # free: that is the sanitizer's memory, not the exporter's. Keep it small here.
            env["ASAN_OPTIONS"] += ":quarantine_size_mb=4:thread_local_quarantine_size_kb=64"
        if tty:
            master, slave = pty.openpty()
            p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave, env=env)
            os.close(slave)
            err = b""
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO once the child closed the pty
                    break
                if not chunk:
                    break
                err += chunk
            os.close(master)
            p.wait()
        else:
            p = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            err = p.stderr
        self.assertEqual(p.returncode, 0, err)
        with open(rss_file) as f:
            return int(f.read().split()[-1]), err

    def sanitized(self):
        with open(brokerctl_path(), "rb") as f:
            return b"__asan_init" in f.read()

    def test_export_memory_does_not_grow_with_the_log(self):
        self.assertEqual(self.n, self.N)
        medium = ("--since", self.since[self.MEDIUM])
        for fmt, extra, n in (("jsonl", (), self.N),
                              ("csv", ("--since", self.since[self.WINDOW]), self.WINDOW),
                              ("ocsf", ("--since", self.since[self.WINDOW]), self.WINDOW)):
            mid, _ = self.run_measured(self.db, fmt, *medium)
            large, err = self.run_measured(self.db, fmt, *extra)
            self.assertEqual(err, b"")
            # 4 MiB over 15,000 more records: a leak of ~270 bytes a record (~20 for jsonl)
            self.assertLess(large - mid, 4 * 1024,
                            f"{fmt}: {mid} KiB for {self.MEDIUM} records, {large} KiB for {n}")
            if not self.sanitized():
                self.assertLess(large, 32 * 1024, f"{fmt}: max RSS {large} KiB")
        # the windows are what they say
        for n in (self.WINDOW, self.MEDIUM):
            r = ctl("audit", "export", "--database", self.db, "--since", self.since[n],
                    "--format", "csv")
            self.assertEqual(r.stdout.count(b"\r\n"), 1 + self.count[n])

    def test_parallel_export_writes_the_same_bytes(self):
        # blocks of records rendered by several threads must come out as one thread writes them
        window = ("--since", self.since[self.WINDOW])
        for args in (("--format", "jsonl"), ("--format", "csv") + window,
                     ("--format", "ocsf") + window, ("--format", "csv", "--event", "grant")):
            one = ctl("audit", "export", "--database", self.db, "--threads", "1", *args,
                      timeout=300)
            self.assertEqual(one.returncode, 0, one.stderr)
            for t in ("2", "3"):
                many = ctl("audit", "export", "--database", self.db, "--threads", t, *args,
                           timeout=300)
                self.assertEqual(many.returncode, 0, many.stderr)
                self.assertTrue(one.stdout == many.stdout, f"{args} --threads {t} differs")
        self.assertEqual(one.stdout.count(b"\r\n"), 1 + self.n - len(REF["rows"]) +
                         len(self.seqs("grant")))

    def test_parallel_export_memory_does_not_grow_with_the_log(self):
        mid, _ = self.run_measured(self.db, "csv", "--threads", "2", "--since",
                                   self.since[self.MEDIUM])
        large, err = self.run_measured(self.db, "csv", "--threads", "2")
        self.assertEqual(err, b"")
        # two blocks of 500 rows a thread, whatever the size of the export
        self.assertLess(large - mid, 4 * 1024, f"{mid} KiB for {self.MEDIUM}, {large} KiB "
                                               f"for {self.n}")

    def test_damaged_record_stops_a_parallel_export(self):
        db = self.copy(self.db)
        bad = self.n // 2 + 123
        sql(db, "UPDATE records SET body = 'not json' WHERE seq = ?", bad)
        for fmt in ("csv", "ocsf"):
            r = ctl("audit", "export", "--database", db, "--format", fmt, "--threads", "2",
                    timeout=300)
            self.assertEqual(r.returncode, 4, fmt)
            self.assertIn("malformed JSON; run 'brokerctl audit verify'", r.stderr)
            # everything before the damaged record's block, in order, and nothing after it
            rows = r.stdout.split(b"\r\n" if fmt == "csv" else b"\n")[:-1]
            last = rows[-1].split(b",")[0].strip(b'"') if fmt == "csv" else json.loads(
                rows[-1])["metadata"]["uid"]
            self.assertLess(int(last), bad, fmt)
            self.assertGreater(int(last), bad - 1000, fmt)

    def test_records_pruned_during_an_export_are_still_exported(self):
        """The daemon prunes while an auditor exports: the export reads one snapshot, so it
        holds every record of the window or fails, never a silent gap. The export is held on
        a full pipe while the first 100,000 records are deleted under it."""
        for fmt, threads in (("jsonl", "1"), ("csv", "1"), ("csv", "2")):
            with self.subTest(fmt=fmt, threads=threads):
                db = self.copy(self.db)
                p = subprocess.Popen([brokerctl_path(), "audit", "export", "--database", db,
                                      "--format", fmt, "--threads", threads],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=sanitizer_env())
                head = p.stdout.read(256 * 1024)
                con = sqlite3.connect(db)
                with con:
                    con.execute("DELETE FROM records WHERE seq <= 100000")
                con.close()
                out, err = p.communicate(timeout=300)
                out = head + out
                self.assertEqual(p.returncode, 0, err)
                if fmt == "jsonl":
                    seqs = [json.loads(l)["seq"] for l in out.splitlines()]
                else:
                    seqs = [int(l.split(b",")[0].strip(b'"')) for l in out.split(b"\r\n")[1:-1]]
                self.assertEqual(seqs, list(range(1, self.n + 1)))

    def test_a_log_with_holes_exports_what_it_holds(self):
        # a damaged or tampered log: seqs far apart, up to the largest there is
        db = self.copy(REF["db"])
        body, h = db_records(db)[-1][3:5]
        far = [10 ** 12, 2 ** 63 - 2, 2 ** 63 - 1]
        con = sqlite3.connect(db)
        with con:
            for seq in far:
                con.execute("INSERT INTO records VALUES (?, 0, 'grant', ?, ?)", (seq, body, h))
        con.close()
        for threads in ("1", "2"):
            r = ctl("audit", "export", "--database", db, "--format", "csv", "--threads", threads,
                    timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            rows = r.stdout.split(b"\r\n")[1:-1]
            self.assertEqual(len(rows), len(REF["rows"]) + 3)
            self.assertEqual(rows[-3:], [rows[-4]] * 3)  # the copies of the last record

    def test_progress_line_on_a_terminal(self):
        _, err = self.run_measured(self.db, "jsonl", tty=True)
        text = err.decode()
        self.assertIn(f"\rbrokerctl: exported 100000 of {self.n} records", text)
        self.assertTrue(text.replace("\r\n", "\n").endswith(
            f"\rbrokerctl: exported {self.n} of {self.n} records\n"), repr(text[-200:]))
        # small exports stay quiet on a terminal too
        _, err = self.run_measured(REF["db"], "jsonl", tty=True)
        self.assertEqual(err, b"")


class ParallelVerifyTest(ChainTestCase):
    """verify cuts a large input into chunks that threads check at once (a file at line starts,
    a database by seq ranges). What it finds must not depend on the cut: a fault anywhere,
    at a cut above all, is reported as the one-piece check reports it."""

    THREADS = 4

    @classmethod
    def setUpClass(cls):
        cls.db, _ = large_log()
        r = ctl("audit", "export", "--database", cls.db, timeout=300)
        assert r.returncode == 0, r.stderr
        cls.jsonl = r.stdout
        cls.starts = [0]  # byte offset of every line
        at = cls.jsonl.find(b"\n")
        while at != -1 and at + 1 < len(cls.jsonl):
            cls.starts.append(at + 1)
            at = cls.jsonl.find(b"\n", at + 1)

    def file_cut(self, i):
        """seq of the first line of chunk i, as verify cuts the file with THREADS threads: the
        first line that starts at or after i/THREADS of its bytes."""
        lo = len(self.jsonl) // self.THREADS * i
        return next(n for n, at in enumerate(self.starts) if at >= lo) + 1

    def write_lines(self, edit):
        lines = jsonl_lines(self.jsonl)
        edit(lines)
        p = os.path.join(self.tmp, "export.jsonl")
        with open(p, "w") as f:
            f.write("\n".join(lines) + "\n")
        return p

    def verify_both_ways(self, *args):
        """Runs verify in one piece and in THREADS pieces; they must say the same."""
        one = self.verify(*args, "--threads", "1")
        many = self.verify(*args, "--threads", str(self.THREADS))
        self.assertEqual((one.returncode, one.stdout, one.stderr),
                         (many.returncode, many.stdout, many.stderr))
        return many

    def test_intact_export_verifies_in_any_number_of_pieces(self):
        self.assertGreater(len(self.jsonl), 8 << 20, "too small to be cut by default")
        p = self.write_lines(lambda lines: None)
        want = self.verify("--file", p, "--threads", "1")
        self.assertIntact(want)
        self.assertIn(f"{LARGE_N} records (seq 1..{LARGE_N})".encode(), want.stdout)
        for t in ("2", "3", "16"):
            r = self.verify("--file", p, "--threads", t)
            self.assertEqual((r.returncode, r.stdout), (0, want.stdout), r.stderr)
        r = self.verify("--file", p)  # the default: one thread per CPU for a file this large
        self.assertEqual((r.returncode, r.stdout), (0, want.stdout), r.stderr)

    def test_edited_line_mid_chunk(self):
        seq = self.file_cut(2) + 1234

        def edit(lines):
            lines[seq - 1] = lines[seq - 1].replace('"jti":"j', '"jti":"k', 1)
        self.assertCaught(self.verify_both_ways("--file", self.write_lines(edit)), seq,
                          "record was edited")

    def test_removed_line_at_each_cut(self):
        for i in range(1, self.THREADS):
            cut = self.file_cut(i)
            for seq in (cut - 1, cut):  # the last line of one chunk, the first of the next
                with self.subTest(cut=i, seq=seq):
                    p = self.write_lines(lambda lines: lines.pop(seq - 1))
                    self.assertCaught(self.verify_both_ways("--file", p), seq,
                                      f"missing: the next line is seq {seq + 1}")

    def test_lines_swapped_across_a_cut(self):
        cut = self.file_cut(1)

        def swap(lines):
            lines[cut - 2], lines[cut - 1] = lines[cut - 1], lines[cut - 2]
        self.assertCaught(self.verify_both_ways("--file", self.write_lines(swap)), cut - 1,
                          f"missing: the next line is seq {cut}")

    def test_database_faults_at_a_cut(self):
        # by seq: chunk i of THREADS starts at 1 + i * (N / THREADS)
        cut = 1 + LARGE_N // self.THREADS
        db = self.copy(self.db)
        sql(db, "UPDATE records SET body = replace(body, '\"jti\":\"j', '\"jti\":\"k') WHERE seq = ?",
            cut)
        self.assertCaught(self.verify_both_ways("--database", db), cut, "record was edited")
        db = self.copy(self.db)
        sql(db, "DELETE FROM records WHERE seq = ?", cut - 1)
        self.assertCaught(self.verify_both_ways("--database", db), cut - 1,
                          f"missing: the next record is seq {cut}", "rows deleted")

    def test_threads_must_be_between_1_and_16(self):
        for bad in ("0", "17", "-1", "four", "4x", ""):
            with self.subTest(threads=bad):
                r = self.verify("--file", "-", "--threads", bad)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn("--threads must be between 1 and 16", r.stderr)
                self.assertEqual(r.stdout, b"")


# --- 6. retention -------------------------------------------------------------------------


class RetentionTest(ChainTestCase):
    """audit.retention of two seconds on a real daemon: old records go, a signed anchor
    proves where the rest starts. The daemon is restarted once after the first pruning, so the
    log names its (unchanged) audit key again after the anchor."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="chain-retention-")
        b = Broker(rules=RULES, extra={"audit": {"retention": 2, "checkpoint_every": 5,
                                                 "checkpoint_interval": 1}})
        try:
            for _ in range(6):
                assert b.token().returncode == 0
            deadline = time.time() + 10
            pruned = []
            while time.time() < deadline and not pruned:
                time.sleep(0.2)
                pruned = [r for r in b.audit() if r["event"] == "audit_pruned"]
            assert b.stop() == 0
            b.start()
            for _ in range(3):
                assert b.token().returncode == 0
            cls.status = json.loads(b.admin_ctl("status", "--json").stdout)
            assert b.stop() == 0
            cls.db = copy_db(b.db, cls.dir)
            cls.log = b.read_log()
        finally:
            b.close()
        cls.recs = [json.loads(r[3]) for r in db_records(cls.db)]
        cls.anchor = db_signed(cls.db, "anchor")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_old_records_are_pruned_behind_a_signed_anchor(self):
        recs, anchor = self.recs, self.anchor
        pruned = [r for r in recs if r["event"] == "audit_pruned"]
        self.assertTrue(pruned, "no audit_pruned record within 10s:\n" + self.log)
        self.assertIsNotNone(anchor)
        self.assertGreater(recs[0]["seq"], 1, "nothing was deleted")
        # the first audit_key record was pruned; the restart named the same key again
        keys = [r for r in recs if r["event"] == "audit_key"]
        self.assertEqual([k["key_id"] for k in keys], [anchor["key_id"]])
        self.assertGreater(keys[0]["seq"], pruned[0]["seq"])
        # the remaining chain starts right after the anchor and links to it
        self.assertEqual(recs[0]["seq"], anchor["seq"] + 1)
        self.assertEqual(recs[0]["prev_hash"], anchor["hash"])
        # the latest pruning run is recorded, and the anchor is what it says it pruned
        last = pruned[-1]
        self.assertEqual((last["through_seq"], last["through_hash"]),
                         (anchor["seq"], anchor["hash"]))
        self.assertEqual(last["retention_s"], 2)
        self.assertGreater(last["records"], 0)
        # a run only prunes records before its own
        for p in pruned:
            self.assertLess(p["through_seq"], p["seq"])
        # its signature, checked independently, is by the daemon's audit key
        st = self.status["audit"]
        self.assertEqual((anchor["key_id"], anchor["public_key"]),
                         (st["key_id"], st["public_key"]))
        verify_sig(st["public_key"], statement("anchor", anchor["seq"], anchor["hash"],
                                               anchor["time"], anchor["key_id"]),
                   anchor["signature"])
        # records are linked and hashed as everywhere else
        for a, b in zip(recs, recs[1:]):
            self.assertEqual(b["prev_hash"], record_hash(a))
        # the grants made after the pruning are all there
        self.assertGreaterEqual([r["event"] for r in recs].count("grant"), 3)

    def test_pruned_log_verifies_from_its_anchor(self):
        r = self.verify("--database", self.copy(self.db))
        self.assertIntact(r)
        self.assertIn(b"from its pruning anchor", r.stdout)
        self.assertIn(f"(seq {self.recs[0]['seq']}..{self.recs[-1]['seq']})".encode(), r.stdout)
        r = self.verify("--database", self.copy(self.db), "--audit-key",
                        self.status["audit"]["public_key"])
        self.assertIntact(r)

    def test_export_of_a_pruned_log_verifies_with_the_pinned_key(self):
        r = ctl("audit", "export", "--database", self.db)
        p = os.path.join(self.tmp, "pruned.jsonl")
        with open(p, "wb") as f:
            f.write(r.stdout)
        r = self.verify("--file", p, "--audit-key", self.status["audit"]["public_key"])
        self.assertIntact(r)
        self.assertIn(f"starts at seq {self.recs[0]['seq']}".encode(), r.stdout)

    def test_anchor_seq_moved(self):
        db = self.copy(self.db)
        sql(db, "UPDATE signed SET seq = seq + 1 WHERE name = 'anchor'")
        self.assertCaught(self.verify("--database", db), self.recs[0]["seq"],
                          "does not start where its pruning anchor says")

    def test_anchor_hash_changed(self):
        db = self.copy(self.db)
        sql(db, "UPDATE signed SET hash = ? WHERE name = 'anchor'", "1" * 64)
        self.assertCaught(self.verify("--database", db), self.recs[0]["seq"],
                          "does not start where its pruning anchor says")

    def test_anchor_signature_forged(self):
        db = self.copy(self.db)
        sig = bytearray(unb64u(self.anchor["signature"]))
        sig[5] ^= 4
        sql(db, "UPDATE signed SET signature = ? WHERE name = 'anchor'", b64u(bytes(sig)))
        self.assertCaught(self.verify("--database", db), self.recs[0]["seq"], "forged anchor")

    def test_anchor_moved_with_more_rows_deleted_and_resigned_by_another_key(self):
        # the attacker deletes more of the start and signs an anchor of their own over it
        db = self.copy(self.db)
        k, pub, kid = attacker_key()
        first = self.recs[2]
        before = self.recs[1]
        t = before["time"]
        sig = k.sign(statement("anchor", before["seq"], record_hash(before), t, kid)).signature
        sql(db, "DELETE FROM records WHERE seq <= ?", before["seq"])
        sql(db, "UPDATE signed SET seq=?, hash=?, time=?, key_id=?, public_key=?, signature=? "
                "WHERE name='anchor'", before["seq"], record_hash(before), t, kid, pub,
            b64u(sig))
        # what is left was signed by the daemon's key, which the forged start does not name:
        # the first checkpoint by it, or the log's later audit_key record naming it, is refused
        bad = next(x for x in self.recs[2:] if x["event"] in ("checkpoint", "audit_key"))
        self.assertCaught(self.verify("--database", db), bad["seq"],
                          f"audit key {self.status['audit']['key_id']}")
        r = self.verify("--database", db, "--audit-key", self.status["audit"]["public_key"])
        self.assertCaught(r, first["seq"], f"audit key {kid} is not one of the keys given")

    def test_rows_deleted_after_the_anchor(self):
        db = self.copy(self.db)
        lo = self.recs[0]["seq"]
        sql(db, "DELETE FROM records WHERE seq <= ?", lo + 1)
        self.assertCaught(self.verify("--database", db), lo + 2,
                          f"does not start where its pruning anchor says (seq {lo})",
                          "records deleted from the start")

    def test_anchor_removed(self):
        db = self.copy(self.db)
        sql(db, "DELETE FROM signed WHERE name = 'anchor'")
        self.assertCaught(self.verify("--database", db), self.recs[0]["seq"],
                          "does not start at seq 1 and has no pruning anchor")



class LiveVerifyTest(ChainTestCase):
    def test_verify_of_a_log_being_written_finds_it_intact(self):
        """The daemon moves its signed head with every commit: verify reads the range and the
        head from one snapshot, so a busy log is not taken for a truncated one."""
        b = Broker(rules=RULES, extra={"limits": {"rate": 0},
                                       "audit": {"checkpoint_every": 100}})
        stop = threading.Event()

        def load():
            c = b.raw()
            try:
                while not stop.is_set():
                    assert c.request({"op": "token", "audience": AUD})["ok"]
            finally:
                c.close()
        clients = [threading.Thread(target=load) for _ in range(4)]
        try:
            for t in clients:
                t.start()
            time.sleep(0.5)
            for _ in range(20):
                r = self.verify("--database", b.db)
                self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            stop.set()
            for t in clients:
                t.join(10)
            b.close()


class RetentionRefusalTest(ChainTestCase):
    def test_a_stretch_that_does_not_verify_is_not_pruned_and_writes_go_on(self):
        """Records edited in place (as one would to backdate them out of the retention) are
        not pruned: an anchor signed over them would launder the edit. The refusal is logged;
        the log still takes records, so the broker stays healthy."""
        b = Broker(rules=RULES, extra={"audit": {"retention": 2, "checkpoint_every": 5}})
        try:
            for _ in range(3):
                self.assertEqual(b.token().returncode, 0)
            seq = next(r["seq"] for r in b.audit() if r["event"] == "grant")
            sql(b.db, "UPDATE records SET body = replace(body, 'spiffe://test/uid/0', "
                      "'spiffe://test/uid/1') WHERE seq = ?", seq)
            deadline = time.time() + 10
            while "do not verify; not pruning them" not in b.read_log():
                self.assertLess(time.time(), deadline, "no refusal within 10s:\n" + b.read_log())
                time.sleep(0.1)
            self.assertEqual(json.loads(b.admin_ctl("status", "--json").stdout)["audit"]["state"], "ok")
            self.assertEqual(b.token().returncode, 0)
            self.assertNotIn("audit_pruned", [r["event"] for r in b.audit()])
            self.assertEqual(b.stop(), 0)
            self.assertCaught(self.verify("--database", b.db), seq, "record was edited")
        finally:
            b.close()

if __name__ == "__main__":
    unittest.main()
