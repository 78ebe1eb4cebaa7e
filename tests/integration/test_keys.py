"""The key lifecycle against the real daemon: three algorithms verified by three independent
JOSE libraries (PyJWT, jwcrypto, Node's jose), scheduled rotation with pre-publication and
retention, admin rotate/revoke, a schedule that survives restarts, sealed keys that never
appear in plaintext, master key checks, published JWKS (whole and per algorithm) and OIDC
discovery, process hardening, the `keys` configuration, and nbf backdated by keys.clock_skew
for relying parties whose clocks lag. Periods are seconds; the tests poll with deadlines."""

import base64
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import tempfile
import time
from datetime import datetime
from types import SimpleNamespace
from unittest import mock

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key
from jwcrypto import jwk as cjwk
from jwcrypto import jwt as cjwt
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey

from harness import (ISSUER, BrokerTestCase, as_user, brokerd_path, sanitizer_env,
                     token_claims, token_header, verify_token, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
NODE_VERIFY = os.path.join(NODE_DIR, "verify.mjs")

AUD = "https://api.test"
AUD_ES = "https://es.test"
AUD_RS = "https://rs.test"
ALGS = ("EdDSA", "ES256", "RS256")
DEFAULT_ALG = "ES256"  # a rule's alg when it names none; its series always exists
# `rotate` of every series: the default algorithm's first (the reply's "kid"), then the others
ROTATE_ORDER = ("ES256", "EdDSA", "RS256")

# One rule per algorithm, told apart by the caller's real uid (first match decides).
THREE_ALGS = [
    {"name": "ed", "match": {"uid": 0}, "subject": "spiffe://test/uid/{uid}",
     "audiences": [AUD], "alg": "EdDSA"},
    {"name": "es", "match": {"uid": 4001}, "subject": "spiffe://test/uid/{uid}",
     "audiences": [AUD_ES], "alg": "ES256"},
    {"name": "rs", "match": {"uid": 4002}, "subject": "spiffe://test/uid/{uid}",
     "audiences": [AUD_RS], "alg": "RS256"},
]
CALLER = {"EdDSA": (None, AUD), "ES256": (as_user(4001), AUD_ES),
          "RS256": (as_user(4002), AUD_RS)}
ROOT = (None, AUD)  # the caller and audience of the harness's default rule (no alg)

# RFC 7517/7518 members that may appear in a public JWK; the private ones must never.
PUBLIC_MEMBERS = {"kty", "use", "key_ops", "alg", "kid", "x5u", "x5c", "x5t", "x5t#S256",
                  "crv", "x", "y", "n", "e"}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k", "r", "t"}
REQUIRED_MEMBERS = {
    "EdDSA": {"kty": "OKP", "crv": "Ed25519", "members": {"x"}},
    "ES256": {"kty": "EC", "crv": "P-256", "members": {"x", "y"}},
    "RS256": {"kty": "RSA", "crv": None, "members": {"n", "e"}},
}
KEY_LIST_FIELDS = {"kid", "alg", "state", "created_at", "activated_at", "retired_at",
                   "expires_at"}
SEAL_PURPOSE = {a: "signing-key/" + a for a in ALGS}


# --- helpers ------------------------------------------------------------------------------

def b64u_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def int_bytes(n, length=None):
    return n.to_bytes(length or (n.bit_length() + 7) // 8, "big")


def mktmp():
    d = tempfile.mkdtemp(prefix="broker-keys-")
    os.chmod(d, 0o755)
    return d


def read_json(path):
    with open(path) as f:
        return json.load(f)


def jwks_kids(jwks):
    return [k["kid"] for k in jwks["keys"]]


def is_sanitizer_build():
    r = subprocess.run([brokerd_path(), "--version"], capture_output=True, text=True,
                       env=sanitizer_env())
    return "(sanitizer build" in r.stdout


def unseal(master, alg, kid, blob, purpose=None):
    """Opens a sealed_secret the way the format is documented: version byte 1, 24-byte nonce,
    XChaCha20-Poly1305-IETF ciphertext and tag; AD "brokerd/v1\\0" purpose "\\0" kid."""
    if blob[0] != 1:
        raise AssertionError(f"sealed blob of {kid} has version {blob[0]}, wanted 1")
    ad = b"brokerd/v1\0" + (purpose or SEAL_PURPOSE[alg]).encode() + b"\0" + kid.encode()
    return crypto_aead_xchacha20poly1305_ietf_decrypt(bytes(blob[25:]), ad, bytes(blob[1:25]),
                                                      master)


def key_rows(state_dir):
    """{kid: (alg, state, public_jwk, sealed_secret)} straight from STATE/keys.db."""
    db = sqlite3.connect(f"file:{os.path.join(state_dir, 'keys.db')}?mode=ro", uri=True,
                         timeout=5)
    try:
        return {kid: (alg, st, json.loads(pub), blob) for kid, alg, st, pub, blob in db.execute(
            "SELECT kid, alg, state, public_jwk, sealed_secret FROM keys")}
    finally:
        db.close()


def node_verify(token, jwks, audience, issuer=ISSUER):
    return subprocess.run(["node", NODE_VERIFY], cwd=NODE_DIR, capture_output=True, text=True,
                          timeout=60,
                          input=json.dumps({"token": token, "jwks": {"keys": jwks["keys"]},
                                            "audience": audience, "issuer": issuer}))


def forge(token, **claims):
    """The token with its claims changed and its signature kept."""
    h, p, s = token.split(".")
    c = json.loads(b64u_decode(p))
    c.update(claims)
    return h + "." + b64u(json.dumps(c).encode()).decode() + "." + s


class KeysTestCase(BrokerTestCase):
    start_broker = False

    # --- brokers ---------------------------------------------------------------------

    def keys_broker(self, rules=None, extra=None, publish=False, start=True, **kw):
        tmp = mktmp()
        extra = dict(extra or {})
        if publish:
            extra["publish_directory"] = os.path.join(tmp, "pub")
        b = self.broker(rules=rules, extra=extra, tmp=tmp, start=start, **kw)
        b.pub = extra.get("publish_directory")
        return b

    # --- admin and tokens --------------------------------------------------------------

    def keys(self, b):
        r = b.admin_ctl("keys", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)["keys"]

    def admin_json(self, b, *args):
        r = b.admin_ctl(*args)
        self.assertEqual(r.returncode, 0, f"brokerctl {args}: {r.stderr}")
        resp = json.loads(r.stdout)
        self.assertTrue(resp["ok"], resp)
        return resp

    def active(self, b, alg):
        act = [k for k in self.keys(b) if k["alg"] == alg and k["state"] == "active"]
        self.assertEqual(len(act), 1, f"exactly one active {alg} key wanted: {act}")
        return act[0]

    def token_of(self, b, alg, caller=None, **kw):
        user, aud = caller or CALLER[alg]
        r = b.ctl("token", "--audience", aud, "--json", user=user, **kw)
        self.assertEqual(r.returncode, 0, f"{alg} token: {r.stderr}")
        resp = json.loads(r.stdout)
        self.assertEqual(token_header(resp["token"])["alg"], alg)
        self.assertEqual(token_header(resp["token"])["kid"], resp["kid"])
        return resp

    def key_events(self, b):
        return [r for r in self.audit_chain(b) if r["event"].startswith("key_")]

    def audit_chain(self, b):
        """The audit records, checked to be a whole chain: contiguous seq, linked hashes when
        the store keeps them, and `audit verify` content."""
        recs = b.audit()
        self.assertEqual([r["seq"] for r in recs], list(range(1, len(recs) + 1)))
        if any("hash" in r for r in recs):
            for prev, cur in zip(recs, recs[1:]):
                self.assertEqual(cur["prev_hash"], prev["hash"], f"chain broken at {cur['seq']}")
        r = b.ctl("audit", "verify", "--database", b.db, socket_path=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        return recs

    def require_node(self):
        """Node's jose is a required verifier: a missing install fails, never skips."""
        if not shutil.which("node"):
            self.fail("node is not installed; run `make deps` (installs nodejs and npm, then "
                      "npm ci --prefix tests/integration/node)")
        pkg = os.path.join(NODE_DIR, "node_modules", "jose", "package.json")
        if not os.path.exists(pkg):
            self.fail(f"{os.path.dirname(pkg)} is missing; run `make deps` "
                      "(npm ci --prefix tests/integration/node)")
        lock = read_json(os.path.join(NODE_DIR, "package-lock.json"))
        self.assertEqual(read_json(pkg)["version"],
                         lock["packages"]["node_modules/jose"]["version"],
                         "installed jose differs from package-lock.json; run `make deps`")

    def assert_node_verifies(self, token, jwks, audience):
        r = node_verify(token, jwks, audience)
        self.assertEqual(r.returncode, 0, f"jose rejected a valid token: {r.stderr}")
        return json.loads(r.stdout)

    def assert_node_rejects(self, token, jwks, audience, why):
        r = node_verify(token, jwks, audience)
        self.assertNotEqual(r.returncode, 0, f"jose accepted {why}: {r.stdout}")
        self.assertIn("jose:", r.stderr)
        return r.stderr


# --- 1. three algorithms, three verifiers --------------------------------------------------

class AlgorithmsTest(KeysTestCase):
    def test_every_algorithm_verifies_with_pyjwt_jwcrypto_and_node_jose(self):
        self.require_node()
        b = self.keys_broker(rules=THREE_ALGS, publish=True)
        jwks = b.jwks()
        published = read_json(os.path.join(b.pub, "jwks.json"))
        self.assertEqual(published, {"keys": jwks["keys"]})
        self.assertEqual(sorted(k["alg"] for k in jwks["keys"]), sorted(ALGS))

        seen_kids = set()
        for alg in ALGS:
            with self.subTest(alg=alg):
                resp = self.token_of(b, alg)
                tok, kid = resp["token"], resp["kid"]
                seen_kids.add(kid)
                self.assertEqual(token_header(tok), {"alg": alg, "typ": "JWT", "kid": kid})
                # PyJWT and jwcrypto (which also recomputes the RFC 7638 thumbprint)
                claims = verify_token(tok, jwks, CALLER[alg][1])
                self.assertEqual(claims["sub"],
                                 "spiffe://test/uid/%d" % {"EdDSA": 0, "ES256": 4001,
                                                           "RS256": 4002}[alg])
                # Node's jose against the published file, as a relying party would fetch it
                out = self.assert_node_verifies(tok, published, CALLER[alg][1])
                self.assertEqual(out["payload"], claims)
                self.assertEqual(out["protectedHeader"]["alg"], alg)
                # ... and it rejects tampering, a wrong audience and a key set without the key
                self.assert_node_rejects(forge(tok, sub="spiffe://test/uid/1"), published,
                                         CALLER[alg][1], "a token with a changed subject")
                h, p, s = tok.split(".")
                sig = bytearray(b64u_decode(s))
                sig[len(sig) // 2] ^= 0x01
                self.assert_node_rejects(f"{h}.{p}.{b64u(bytes(sig)).decode()}", published,
                                         CALLER[alg][1], "a token with a flipped signature bit")
                self.assert_node_rejects(tok, published, "https://other.test",
                                         "a token for another audience")
                others = {"keys": [k for k in published["keys"] if k["kid"] != kid]}
                self.assert_node_rejects(tok, others, CALLER[alg][1],
                                         "a token whose key is not in the JWKS")
                with self.assertRaises(Exception):
                    verify_token(forge(tok, sub="spiffe://test/uid/1"), jwks, CALLER[alg][1])
        self.assertEqual(seen_kids, set(jwks_kids(jwks)))

    def test_jwks_members_are_public_standard_and_thumbprinted(self):
        b = self.keys_broker(rules=THREE_ALGS)
        jwks = b.jwks()
        self.assertEqual(len(jwks["keys"]), 3)
        for k in jwks["keys"]:
            alg = k["alg"]
            with self.subTest(alg=alg):
                want = REQUIRED_MEMBERS[alg]
                self.assertEqual(k["kty"], want["kty"])
                self.assertEqual(k.get("crv"), want["crv"])
                self.assertEqual(k["use"], "sig")
                self.assertTrue(want["members"] | {"kty", "alg", "use", "kid"} <= set(k), k)
                self.assertEqual(set(k) & PRIVATE_MEMBERS, set(), f"private member in {k}")
                self.assertTrue(set(k) <= PUBLIC_MEMBERS, f"unexpected members in {k}")
                self.assertEqual(cjwk.JWK(**k).thumbprint(), k["kid"])  # RFC 7638
                self.assertFalse(cjwk.JWK(**k).has_private)
                if alg == "EdDSA":
                    self.assertEqual(len(b64u_decode(k["x"])), 32)
                elif alg == "ES256":
                    self.assertEqual(len(b64u_decode(k["x"])), 32)
                    self.assertEqual(len(b64u_decode(k["y"])), 32)
                    # on the curve, or cryptography refuses it
                    ec.EllipticCurvePublicNumbers(
                        int.from_bytes(b64u_decode(k["x"]), "big"),
                        int.from_bytes(b64u_decode(k["y"]), "big"),
                        ec.SECP256R1()).public_key()
                else:
                    n = int.from_bytes(b64u_decode(k["n"]), "big")
                    self.assertEqual(n.bit_length(), 2048)  # keys.rsa_bits default
                    self.assertEqual(k["e"], "AQAB")
        # every listed key and no other
        self.assertEqual(sorted(jwks_kids(jwks)), sorted(k["kid"] for k in self.keys(b)))


# --- 2. scheduled rotation with overlap ---------------------------------------------------

class RotationTest(KeysTestCase):
    PERIOD, AHEAD, SKEW, TTL = 4, 2, 1, 2
    RETENTION = TTL + SKEW  # the default: longest token lifetime plus clock skew

    def test_rotation_publishes_ahead_and_keeps_old_tokens_verifying(self):
        self.require_node()
        b = self.keys_broker(extra={
            "keys": {"rotation_period": self.PERIOD, "publish_ahead": self.AHEAD,
                     "clock_skew": self.SKEW},
            "tokens": {"default_ttl": self.TTL, "max_ttl": self.TTL}})
        first = self.active(b, DEFAULT_ALG)
        t0 = first["activated_at"]
        kid_a = first["kid"]
        # Until the second rotation (t0 + 2 periods) and a little more: next key B, rotation
        # A->B, next key C, A removed after retention, rotation B->C.
        end = t0 + 2 * self.PERIOD + 1.3

        polls = []          # (t_before, t_after, kids in the JWKS)
        first_seen = {}     # kid -> t_after of the first JWKS read that listed it
        first_used = {}     # kid -> t_before of the first token request it signed
        tokens = []         # (token, kid, exp)
        overlap = {}        # retired kid -> verifications of its tokens after it retired
        node_checked = set()
        while time.time() < end:
            tb = time.time()
            jwks = b.jwks()
            ta = time.time()
            kids = set(jwks_kids(jwks))
            polls.append((tb, ta, kids))
            for kid in kids:
                first_seen.setdefault(kid, ta)

            tr = time.time()
            resp = self.token_of(b, DEFAULT_ALG, caller=ROOT)
            signing = resp["kid"]
            first_used.setdefault(signing, tr)
            tokens.append((resp["token"], signing, resp["expires_at"]))

            # Every token not yet expired when this JWKS was read must still find its key
            # in it, and verify, also after its key retired.
            for tok, kid, exp in tokens:
                if ta < exp:
                    self.assertIn(kid, kids, f"key {kid} left the JWKS at {ta:.2f} before its "
                                  f"token expired at {exp}")
                if time.time() < exp - 0.1:
                    verify_token(tok, jwks, AUD)
                    if kid != signing:
                        overlap[kid] = overlap.get(kid, 0) + 1
                        if kid not in node_checked:
                            self.assert_node_verifies(tok, jwks, AUD)
                            node_checked.add(kid)
            time.sleep(0.05)

        listing = {k["kid"]: k for k in self.keys(b)}
        series = sorted((k for k in listing.values() if k["alg"] == DEFAULT_ALG),
                        key=lambda k: k["created_at"])
        self.assertEqual(len(series), 3, listing)
        self.assertEqual(len(listing), 3, "a series no rule asks for")
        a, nb, nc = series
        self.assertEqual(a["kid"], kid_a)

        # The schedule, from the daemon's own records (whole seconds).
        self.assertIn(nb["created_at"] - t0, (self.PERIOD - self.AHEAD,
                                              self.PERIOD - self.AHEAD + 1))
        self.assertIn(nb["activated_at"] - t0, (self.PERIOD, self.PERIOD + 1))
        self.assertIn(nc["activated_at"] - nb["activated_at"], (self.PERIOD, self.PERIOD + 1))
        for k in (nb, nc):
            self.assertGreaterEqual(k["activated_at"] - k["created_at"], self.AHEAD)
        self.assertEqual((a["state"], a["retired_at"], a["expires_at"]),
                         ("removed", nb["activated_at"], nb["activated_at"] + self.RETENTION))
        self.assertEqual((nb["state"], nb["retired_at"], nb["expires_at"]),
                         ("retired", nc["activated_at"], nc["activated_at"] + self.RETENTION))
        self.assertEqual((nc["state"], nc["retired_at"], nc["expires_at"]), ("active", 0, 0))

        # Observed: a new key is in the JWKS at least publish_ahead (less 1 s for whole-second
        # scheduling and polling) before the first token it signs.
        for k in (nb, nc):
            kid = k["kid"]
            self.assertIn(kid, first_seen, f"{kid} never seen in the JWKS")
            self.assertIn(kid, first_used, f"{kid} never signed a token")
            self.assertGreaterEqual(first_used[kid] - first_seen[kid], self.AHEAD - 1,
                                    f"{kid} signed {first_used[kid] - first_seen[kid]:.2f}s "
                                    f"after it was first published")
        # Tokens signed before each rotation were verified after it, by all three verifiers.
        for kid in (a["kid"], nb["kid"]):
            self.assertGreater(overlap.get(kid, 0), 0, f"no token of {kid} checked after it "
                               "retired; the polling missed the overlap window")
            self.assertIn(kid, node_checked)
        # The retired key A stayed exactly until its retention was over, then left.
        for tb, ta, kids in polls:
            if ta < a["expires_at"]:
                self.assertIn(a["kid"], kids, f"A gone at {ta:.2f} < {a['expires_at']}")
            elif tb >= a["expires_at"]:
                self.assertNotIn(a["kid"], kids, f"A still published at {tb:.2f}")
        self.assertTrue(any(tb >= a["expires_at"] for tb, _, _ in polls))

        # Every transition is an audit event, in the record chain, in order.
        ev = [(e["event"], e["alg"], e["kid"], e.get("state"), e.get("retired_kid"))
              for e in self.key_events(b)]
        self.assertEqual(ev[:6], [
            ("key_created", DEFAULT_ALG, a["kid"], "active", None),
            ("key_created", DEFAULT_ALG, nb["kid"], "next", None),
            ("key_rotated", DEFAULT_ALG, nb["kid"], None, a["kid"]),
            ("key_created", DEFAULT_ALG, nc["kid"], "next", None),
            ("key_removed", DEFAULT_ALG, a["kid"], None, None),
            ("key_rotated", DEFAULT_ALG, nc["kid"], None, nb["kid"]),
        ])


# --- 3. admin: keys, rotate, revoke --------------------------------------------------------

class AdminKeysTest(KeysTestCase):
    EXTRA = {"tokens": {"default_ttl": "2m", "max_ttl": "10m"}, "keys": {"clock_skew": "5m"}}
    RETENTION = 600 + 300

    def test_keys_lists_every_key_with_its_times(self):
        before = int(time.time())
        b = self.keys_broker(rules=THREE_ALGS, extra=self.EXTRA)
        after = int(time.time())
        listing = self.keys(b)
        self.assertEqual(sorted(k["alg"] for k in listing), sorted(ALGS))
        for k in listing:
            self.assertEqual(set(k), KEY_LIST_FIELDS)
            self.assertEqual(k["state"], "active")
            self.assertEqual(k["created_at"], k["activated_at"])
            self.assertTrue(before <= k["created_at"] <= after, k)
            self.assertEqual((k["retired_at"], k["expires_at"]), (0, 0))
        self.assertEqual(sorted(k["kid"] for k in listing), sorted(jwks_kids(b.jwks())))

    def test_rotate_all_then_one_algorithm_then_revoke(self):
        self.require_node()
        b = self.keys_broker(rules=THREE_ALGS, extra=self.EXTRA, publish=True)
        old = {alg: self.active(b, alg)["kid"] for alg in ALGS}
        old_tokens = {alg: self.token_of(b, alg)["token"] for alg in ALGS}

        # rotate: every series at once
        t = int(time.time())
        resp = self.admin_json(b, "rotate")
        t2 = int(time.time())
        self.assertEqual([r["alg"] for r in resp["rotated"]], list(ROTATE_ORDER))
        self.assertEqual([r["retired_kid"] for r in resp["rotated"]],
                         [old[a] for a in ROTATE_ORDER])
        self.assertEqual(resp["kid"], resp["rotated"][0]["kid"])  # the default algorithm's
        new = {r["alg"]: r["kid"] for r in resp["rotated"]}
        self.assertEqual(set(new.values()) & set(old.values()), set())
        listing = {k["kid"]: k for k in self.keys(b)}
        for alg in ALGS:
            o, n = listing[old[alg]], listing[new[alg]]
            self.assertEqual(o["state"], "retired")
            self.assertTrue(t <= o["retired_at"] <= t2)
            self.assertEqual(o["expires_at"], o["retired_at"] + self.RETENTION)
            self.assertEqual((n["state"], n["activated_at"]), ("active", o["retired_at"]))
        jwks = b.jwks()
        self.assertEqual(sorted(jwks_kids(jwks)), sorted(list(old.values()) + list(new.values())))
        self.assertEqual(read_json(os.path.join(b.pub, "jwks.json")), {"keys": jwks["keys"]})
        for alg in ALGS:  # tokens signed before the rotation still verify
            verify_token(old_tokens[alg], jwks, CALLER[alg][1])
            self.assertEqual(self.token_of(b, alg)["kid"], new[alg])

        # rotate --alg ES256: that series only
        resp = self.admin_json(b, "rotate", "--alg", "ES256")
        self.assertEqual(len(resp["rotated"]), 1)
        self.assertEqual((resp["rotated"][0]["alg"], resp["rotated"][0]["retired_kid"]),
                         ("ES256", new["ES256"]))
        es2 = resp["kid"]
        self.assertEqual(resp["rotated"][0]["kid"], es2)
        self.assertEqual(self.active(b, "EdDSA")["kid"], new["EdDSA"])
        self.assertEqual(self.active(b, "RS256")["kid"], new["RS256"])
        self.assertEqual(self.active(b, "ES256")["kid"], es2)
        self.assertEqual(self.token_of(b, "ES256")["kid"], es2)
        r = b.admin_ctl("rotate", "--alg", "HS256")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("bad_request", r.stderr)

        # revoke the active EdDSA key: out of the JWKS and the published file at once,
        # replaced at once, its tokens no longer verify
        victim = self.token_of(b, "EdDSA")
        self.assertEqual(victim["kid"], new["EdDSA"])
        resp = self.admin_json(b, "revoke", new["EdDSA"])
        jwks = b.jwks()
        published = read_json(os.path.join(b.pub, "jwks.json"))
        self.assertEqual(resp["kid"], new["EdDSA"])
        repl = resp["replacement_kid"]
        self.assertNotIn(new["EdDSA"], jwks_kids(jwks))
        self.assertNotIn(new["EdDSA"], jwks_kids(published))
        self.assertEqual(published, {"keys": jwks["keys"]})
        self.assertIn(repl, jwks_kids(jwks))
        listing = {k["kid"]: k for k in self.keys(b)}
        self.assertEqual(listing[new["EdDSA"]]["state"], "revoked")
        self.assertEqual(listing[repl]["state"], "active")
        self.assertNotIn(repl, set(old.values()) | set(new.values()))
        with self.assertRaisesRegex(AssertionError, "is not in the JWKS"):
            verify_token(victim["token"], jwks, AUD)
        self.assert_node_rejects(victim["token"], published, AUD, "a token of a revoked key")
        fresh = self.token_of(b, "EdDSA")
        self.assertEqual(fresh["kid"], repl)
        verify_token(fresh["token"], jwks, AUD)

        # revoke a retired key: it leaves too, without a replacement
        resp = self.admin_json(b, "revoke", old["ES256"])
        self.assertNotIn("replacement_kid", resp)
        jwks = b.jwks()
        self.assertNotIn(old["ES256"], jwks_kids(jwks))
        self.assertNotIn(old["ES256"], jwks_kids(read_json(os.path.join(b.pub, "jwks.json"))))
        with self.assertRaises(AssertionError):
            verify_token(old_tokens["ES256"], jwks, AUD_ES)
        verify_token(old_tokens["RS256"], jwks, AUD_RS)  # other series untouched
        self.assertEqual(self.active(b, "ES256")["kid"], es2)

        # twice, or unknown
        r = b.admin_ctl("revoke", old["ES256"])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("already revoked", r.stderr)
        r = b.admin_ctl("revoke", "A" * 43)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("not_found", r.stderr)

        # each one an audit event
        ev = [(e["event"], e["alg"], e["kid"], e.get("state"), e.get("retired_kid"),
               e.get("replacement_kid")) for e in self.key_events(b)]
        want = [("key_created", a, old[a], "active", None, None) for a in ALGS]
        for a in ROTATE_ORDER:
            want += [("key_created", a, new[a], "active", None, None),
                     ("key_rotated", a, new[a], None, old[a], None)]
        want += [("key_created", "ES256", es2, "active", None, None),
                 ("key_rotated", "ES256", es2, None, new["ES256"], None),
                 ("key_created", "EdDSA", repl, "active", None, None),
                 ("key_revoked", "EdDSA", new["EdDSA"], None, None, repl),
                 ("key_revoked", "ES256", old["ES256"], None, None, None)]
        self.assertEqual(ev, want)


# --- 4. restarts keep the schedule and the keys -------------------------------------------

class RestartTest(KeysTestCase):
    PERIOD, AHEAD = 6, 2

    def test_restart_keeps_keys_states_and_schedule(self):
        b = self.keys_broker(extra={
            "keys": {"rotation_period": self.PERIOD, "publish_ahead": self.AHEAD,
                     "clock_skew": 1},
            "tokens": {"default_ttl": 2, "max_ttl": 2}})
        k0 = self.keys(b)
        self.assertEqual(len(k0), 1)
        a = k0[0]
        t0 = a["activated_at"]
        next_at, rotate_at = t0 + self.PERIOD - self.AHEAD, t0 + self.PERIOD

        # 1: restart before the next key is due: nothing made early
        wait_until(lambda: time.time() >= t0 + 1.2, 3, what="t0 + 1.2")
        self.assertEqual(b.stop(), 0)
        b.start()
        self.assertLess(time.time(), next_at, "restart too slow to test the schedule")
        self.assertEqual(self.keys(b), k0)
        self.assertEqual(self.token_of(b, DEFAULT_ALG, caller=ROOT)["kid"], a["kid"])

        # the next key comes at the originally scheduled time
        k1 = wait_until(lambda: (lambda ks: ks if len(ks) == 2 else None)(self.keys(b)),
                        next_at + 2 - time.time(), what="the next key")
        seen = time.time()
        self.assertGreaterEqual(seen, next_at - 0.05, "next key made early")
        nb = [k for k in k1 if k["state"] == "next"][0]
        self.assertIn(nb["created_at"] - next_at, (0, 1))
        self.assertEqual([k for k in k1 if k["kid"] == a["kid"]], k0)

        # 2: restart with a next key pending: same keys, same states, same times
        self.assertEqual(b.stop(), 0)
        b.start()
        k2 = self.keys(b)
        self.assertLess(time.time(), rotate_at, "restart too slow to test the schedule")
        self.assertEqual(k2, k1)
        self.assertEqual(self.token_of(b, DEFAULT_ALG, caller=ROOT)["kid"], a["kid"])
        self.assertIn(nb["kid"], jwks_kids(b.jwks()))

        # the rotation comes at the originally scheduled time, not before
        def rotated():
            ks = {k["kid"]: k for k in self.keys(b)}
            return ks if ks[nb["kid"]]["state"] == "active" else None
        k3 = wait_until(rotated, rotate_at + 2 - time.time(), what="the rotation")
        self.assertGreaterEqual(time.time(), rotate_at - 0.05, "rotated early")
        self.assertIn(k3[nb["kid"]]["activated_at"] - rotate_at, (0, 1))
        self.assertEqual(k3[a["kid"]]["state"], "retired")
        self.assertEqual(len(k3), 2)

        # exactly the scheduled transitions were made, none by the restarts
        recs = self.audit_chain(b)
        self.assertEqual([r["event"] for r in recs if r["event"] in ("started", "stopped")],
                         ["started", "stopped", "started", "stopped", "started"])
        self.assertEqual([(e["event"], e["kid"]) for e in recs if e["event"].startswith("key_")],
                         [("key_created", a["kid"]), ("key_created", nb["kid"]),
                          ("key_rotated", nb["kid"])])


# --- 5. no private key bytes in plaintext -------------------------------------------------

class NoPlaintextKeysTest(KeysTestCase):
    def private_material(self, b):
        """Unseals every key that still has a sealed half, proves it is the key the JWK
        publishes, and returns {kid: [(what, bytes), ...]} of its secret forms."""
        with open(b.master_key, "rb") as f:
            master = f.read()
        self.assertEqual(len(master), 32)
        out = {}
        for kid, (alg, state, pub, blob) in key_rows(b.state).items():
            if blob is None:
                self.assertNotIn(state, ("next", "active"), f"{kid} has no sealed key")
                continue
            self.assertIn(state, ("next", "active"), f"{state} key {kid} kept its sealed half")
            plain = unseal(master, alg, kid, blob)
            self.assertNotIn(plain, bytes(blob))  # it really is encrypted
            other_kid = kid[:-1] + ("A" if kid[-1] != "A" else "B")
            with self.assertRaises(CryptoError):  # bound to its own kid ...
                unseal(master, alg, other_kid, blob)
            with self.assertRaises(CryptoError):  # ... and purpose
                unseal(master, alg, kid, blob, purpose="signing-key/other")
            if alg == "EdDSA":
                self.assertEqual(len(plain), 32)
                sk = SigningKey(plain)
                self.assertEqual(sk.verify_key.encode(), b64u_decode(pub["x"]))
                secrets = [("seed", plain), ("seed+pk", plain + sk.verify_key.encode())]
            else:
                key = load_der_private_key(plain, None)
                pn = key.public_key().public_numbers()
                if alg == "ES256":
                    self.assertIsInstance(key, ec.EllipticCurvePrivateKey)
                    self.assertEqual((int_bytes(pn.x, 32), int_bytes(pn.y, 32)),
                                     (b64u_decode(pub["x"]), b64u_decode(pub["y"])))
                    secrets = [("DER", plain),
                               ("d", int_bytes(key.private_numbers().private_value, 32))]
                else:
                    self.assertIsInstance(key, rsa.RSAPrivateKey)
                    self.assertEqual((int_bytes(pn.n), int_bytes(pn.e)),
                                     (b64u_decode(pub["n"]), b64u_decode(pub["e"])))
                    priv = key.private_numbers()
                    secrets = [("DER", plain), ("d", int_bytes(priv.d)),
                               ("p", int_bytes(priv.p)), ("q", int_bytes(priv.q))]
            out[kid] = (alg, secrets)
        return out

    def needles(self, material):
        """Each secret raw, as hex, base64url (a JWK "d") and base64 (a PEM's first line)."""
        for kid, (alg, secrets) in material.items():
            for what, raw in secrets:
                for enc, n in (("raw", raw), ("hex", raw.hex().encode()),
                               ("base64url", b64u(raw)),
                               ("base64", base64.b64encode(raw).rstrip(b"=")[:64])):
                    yield f"{alg} key {kid}: {what} ({enc})", n

    def files_under(self, root):
        for d, _, names in os.walk(root):
            for name in names:
                p = os.path.join(d, name)
                if stat.S_ISREG(os.lstat(p).st_mode):
                    with open(p, "rb") as f:
                        yield p, f.read()

    def assert_nowhere(self, b, material, master):
        files = dict(self.files_under(b.tmp))
        # the search covers what the brief names, and can find what is there
        for must in (os.path.join(b.state, "keys.db"), b.db, b.log_path,
                     os.path.join(b.pub, "jwks.json")):
            self.assertIn(must, files)
        rows = key_rows(b.state)
        for kid, (alg, state, pub, blob) in rows.items():
            if blob is not None:
                self.assertIn(bytes(blob[1:25]), files[os.path.join(b.state, "keys.db")])
            if alg == "EdDSA" and state in ("next", "active"):
                self.assertIn(pub["x"].encode(), files[os.path.join(b.pub, "jwks.json")])
        found = []
        for what, needle in self.needles(material):
            for path, data in files.items():
                if needle in data:
                    found.append(f"{what} in {path}")
        for path, data in files.items():
            if path != b.master_key and master in data:
                found.append(f"the master key in {path}")
        self.assertEqual(found, [], "private key bytes in plaintext:\n" + "\n".join(found))
        return files

    def test_no_private_key_bytes_in_any_file(self):
        b = self.keys_broker(rules=THREE_ALGS, publish=True)
        with open(b.master_key, "rb") as f:
            master = f.read()
        for alg in ALGS:
            verify_token(self.token_of(b, alg)["token"], b.jwks(), CALLER[alg][1])
        material = self.private_material(b)
        self.assertEqual(sorted(a for a, _ in material.values()), sorted(ALGS))

        # rotate, so retired keys (whose sealed half is dropped) are searched for too
        self.admin_json(b, "rotate")
        for alg in ALGS:
            self.token_of(b, alg)
        newer = self.private_material(b)
        self.assertEqual(set(newer) & set(material), set())
        material.update(newer)
        self.assertEqual(len(material), 6)
        files = self.assert_nowhere(b, material, master)
        self.assertIn(b.db + "-wal", files)  # the running audit store has its WAL

        # and after a clean stop (checkpointed WAL, final log lines)
        self.assertEqual(b.stop(), 0)
        self.assert_nowhere(b, material, master)


# --- 6. the master key -------------------------------------------------------------------

class MasterKeyTest(KeysTestCase):
    def refused_fresh(self, b, *fragments, env=None):
        """A first start refused with a message holding every fragment; no key was made, and
        nothing else either (refused before the start creates anything)."""
        state_before = os.path.exists(b.state)
        log = self.start_refused(b, *fragments, env=env)
        self.assertFalse(os.path.exists(os.path.join(b.state, "keys.db")),
                         "keys.db created although the master key was refused")
        if not state_before:
            self.assertFalse(os.path.exists(b.state), "state directory created by a refused start")
        self.assertFalse(os.path.exists(b.db), "audit database created by a refused start")
        return log

    def test_wrong_master_key_after_keys_exist(self):
        b = self.keys_broker(rules=THREE_ALGS)
        kids = sorted(jwks_kids(b.jwks()))
        rows = key_rows(b.state)
        self.assertEqual(b.stop(), 0)
        shutil.move(b.master_key, b.master_key + ".good")
        subprocess.run([brokerd_path(), "--generate-master-key", b.master_key], check=True,
                       capture_output=True, env=sanitizer_env())
        log = self.start_refused(b)
        self.assertIn(f"master_key_file: the master key from {b.master_key} is not the one that "
                      f"sealed {os.path.join(b.state, 'keys.db')}; refusing to start", log)
        self.assertIn("never re-keys", log)
        self.assertEqual(key_rows(b.state), rows)  # nothing re-keyed, nothing lost
        # the right key brings back the same keys
        os.replace(b.master_key + ".good", b.master_key)
        b.start()
        self.assertEqual(sorted(jwks_kids(b.jwks())), kids)
        self.assertEqual(key_rows(b.state), rows)

    def test_mode_0644(self):
        b = self.keys_broker(start=False)
        os.chmod(b.master_key, 0o644)
        self.refused_fresh(b, f"master_key_file: {b.master_key}: mode 0644, wanted 0600")
        os.chmod(b.master_key, 0o600)
        b.start()

    def test_symlink_to_a_valid_key(self):
        b = self.keys_broker(start=False)
        real = os.path.join(b.tmp, "real.key")
        os.rename(b.master_key, real)
        os.symlink(real, b.master_key)
        self.refused_fresh(b, f"master_key_file: {b.master_key}: is a symlink, wanted a "
                              "regular file")
        os.unlink(b.master_key)
        os.rename(real, b.master_key)
        b.start()

    def test_owned_by_another_uid(self):
        b = self.keys_broker(start=False)
        os.chown(b.master_key, 4001, 4001)
        self.refused_fresh(b, f"master_key_file: {b.master_key}: owned by uid 4001, "
                              "wanted uid 0")
        os.chown(b.master_key, 0, 0)
        b.start()

    def test_wrong_size(self):
        b = self.keys_broker(start=False)
        with open(b.master_key, "r+b") as f:
            f.truncate(31)
        self.refused_fresh(b, f"master_key_file: {b.master_key}: 31 bytes, wanted exactly 32")

    def test_group_writable_parent_directory(self):
        b = self.keys_broker(start=False)
        kdir = os.path.join(b.tmp, "keydir")
        os.mkdir(kdir, 0o755)
        path = os.path.join(kdir, "master.key")
        os.rename(b.master_key, path)
        b.config["master_key_file"] = path
        b.write_config()
        os.chmod(kdir, 0o775)
        self.refused_fresh(b, f"master_key_file: {kdir}: directory is writable by group or "
                              "others (mode 0775)")
        os.chmod(kdir, 0o755)
        b.start()

    def test_missing_file_suggests_generating_one(self):
        b = self.keys_broker(start=False)
        os.unlink(b.master_key)
        self.refused_fresh(b, f"master_key_file: {b.master_key}: does not exist, wanted a "
                              "regular file with mode 0600; create one with brokerd "
                              f"--generate-master-key {b.master_key}")

    def test_no_master_key_configured(self):
        b = self.keys_broker(start=False)
        del b.config["master_key_file"]
        b.write_config()
        log = self.refused_fresh(b, "master_key_file: no master key",
                                 "--generate-master-key", env={"CREDENTIALS_DIRECTORY": None})
        self.assertIn("LoadCredential=master.key", log)

    def test_generate_master_key(self):
        d = mktmp()
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "new.key")
        r = subprocess.run([brokerd_path(), "--generate-master-key", path], capture_output=True,
                           text=True, env=sanitizer_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(path, r.stdout)
        st = os.lstat(path)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_size, st.st_uid), (0o600, 32, 0))
        with open(path, "rb") as f:
            key = f.read()
        self.assertNotEqual(key, bytes(32))
        r = subprocess.run([brokerd_path(), "--generate-master-key", path], capture_output=True,
                           text=True, env=sanitizer_env())
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"Cannot create {path}", r.stderr)
        self.assertIn("never overwritten", r.stderr)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), key)

    def test_systemd_credential_takes_precedence_over_master_key_file(self):
        b = self.keys_broker(start=False)
        creds = os.path.join(b.tmp, "credentials")
        os.mkdir(creds, 0o700)
        cred_key = os.path.join(creds, "master.key")
        subprocess.run([brokerd_path(), "--generate-master-key", cred_key], check=True,
                       capture_output=True, env=sanitizer_env())
        os.chmod(cred_key, 0o400)  # as systemd leaves LoadCredential= files
        env = {"CREDENTIALS_DIRECTORY": creds}
        b.start(env=env)
        self.assertIn(f"Using the systemd credential master.key, not master_key_file "
                      f"{b.master_key}", b.read_log())
        kids = sorted(jwks_kids(b.jwks()))
        # the keys are sealed under the credential, not under master_key_file
        with open(cred_key, "rb") as f:
            cred = f.read()
        with open(b.master_key, "rb") as f:
            filekey = f.read()
        self.assertNotEqual(cred, filekey)
        for kid, (alg, _, _, blob) in key_rows(b.state).items():
            unseal(cred, alg, kid, blob)
            with self.assertRaises(CryptoError):
                unseal(filekey, alg, kid, blob)
        self.assertEqual(b.stop(), 0)
        # without the credential, master_key_file is used, and it is the wrong key
        log = self.start_refused(b, env={"CREDENTIALS_DIRECTORY": None})
        self.assertIn(f"master_key_file: the master key from {b.master_key} is not the one "
                      "that sealed", log)
        b.start(env=env)
        self.assertEqual(sorted(jwks_kids(b.jwks())), kids)


# --- 7. publishing for relying parties -----------------------------------------------------

ALG_FILES = {"EdDSA": "jwks-eddsa.json", "ES256": "jwks-es256.json", "RS256": "jwks-rs256.json"}


class PublishTest(KeysTestCase):
    RULES = THREE_ALGS[:2]  # EdDSA and ES256; no RS256 rule

    def per_alg(self, b):
        """{alg: the keys of its file beside jwks.json}, each file checked to hold exactly the
        JWKS's keys of its algorithm, in order, and nothing else (no private member)."""
        jwks = read_json(os.path.join(b.pub, "jwks.json"))
        out = {}
        for alg, name in ALG_FILES.items():
            doc = read_json(os.path.join(b.pub, name))
            self.assertEqual(set(doc), {"keys"}, name)
            self.assertEqual(doc["keys"], [k for k in jwks["keys"] if k["alg"] == alg], name)
            for k in doc["keys"]:
                self.assertEqual(k["kty"], REQUIRED_MEMBERS[alg]["kty"], name)
                self.assertEqual(set(k) & PRIVATE_MEMBERS, set(), name)
                self.assertEqual(cjwk.JWK(**k).thumbprint(), k["kid"])
            out[alg] = jwks_kids(doc)
        return out

    def inodes(self, b):
        return {n: os.stat(os.path.join(b.pub, n)).st_ino
                for n in ["jwks.json"] + list(ALG_FILES.values())}

    def check_published(self, b, algs):
        jwks = b.jwks()
        jpath = os.path.join(b.pub, "jwks.json")
        dpath = os.path.join(b.pub, ".well-known", "openid-configuration")
        self.assertEqual(read_json(jpath), {"keys": jwks["keys"]})
        disc = read_json(dpath)
        self.assertEqual(disc["issuer"], ISSUER)
        self.assertEqual(disc["jwks_uri"], ISSUER + "/jwks.json")
        self.assertEqual(disc["response_types_supported"], ["id_token"])
        self.assertEqual(disc["subject_types_supported"], ["public"])
        got = disc["id_token_signing_alg_values_supported"]
        self.assertEqual(sorted(got), sorted(algs))
        self.assertEqual(len(got), len(set(got)))
        self.assertEqual(sorted(algs), sorted({k["alg"] for k in jwks["keys"]}))
        for p in [jpath, dpath] + [os.path.join(b.pub, n) for n in ALG_FILES.values()]:
            st = os.lstat(p)
            self.assertTrue(stat.S_ISREG(st.st_mode))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o644, p)
        # no temporary file left behind
        self.assertEqual(sorted(os.listdir(b.pub)),
                         sorted([".well-known", "jwks.json"] + list(ALG_FILES.values())))
        self.assertEqual(os.listdir(os.path.join(b.pub, ".well-known")),
                         ["openid-configuration"])
        # every algorithm has its file, empty when it has no key
        per_alg = self.per_alg(b)
        self.assertEqual({a for a, kids in per_alg.items() if kids}, set(algs))
        return jwks, os.stat(jpath).st_ino

    def test_files_match_the_jwks_and_follow_rotate_revoke_and_reload(self):
        b = self.keys_broker(rules=self.RULES, publish=True)
        jwks, ino = self.check_published(b, ["EdDSA", "ES256"])
        self.assertEqual(len(jwks["keys"]), 2)
        es0, ed0 = self.active(b, "ES256")["kid"], self.active(b, "EdDSA")["kid"]
        self.assertEqual(self.per_alg(b), {"EdDSA": [ed0], "ES256": [es0], "RS256": []})
        inodes = self.inodes(b)

        self.admin_json(b, "rotate")
        jwks, ino2 = self.check_published(b, ["EdDSA", "ES256"])
        self.assertEqual(len(jwks["keys"]), 4)
        self.assertNotEqual(ino2, ino)  # replaced by rename, not rewritten in place
        es1, ed1 = self.active(b, "ES256")["kid"], self.active(b, "EdDSA")["kid"]
        per_alg = self.per_alg(b)
        self.assertEqual(sorted(per_alg["ES256"]), sorted([es0, es1]))
        self.assertEqual(sorted(per_alg["EdDSA"]), sorted([ed0, ed1]))
        self.assertEqual(per_alg["RS256"], [])
        for name, i in self.inodes(b).items():  # every file replaced by rename
            self.assertNotEqual(i, inodes[name], name)

        self.admin_json(b, "revoke", es1)
        jwks, _ = self.check_published(b, ["EdDSA", "ES256"])
        self.assertNotIn(es1, jwks_kids(jwks))
        per_alg = self.per_alg(b)
        self.assertNotIn(es1, per_alg["ES256"])
        self.assertIn(self.active(b, "ES256")["kid"], per_alg["ES256"])  # its replacement
        self.assertEqual(sorted(per_alg["EdDSA"]), sorted([ed0, ed1]))

        # a rule asking for RS256 makes its series, published at once
        b.config["rules"] = THREE_ALGS
        b.write_config()
        self.admin_json(b, "reload")
        jwks, _ = self.check_published(b, list(ALGS))
        self.assertIn("RS256", [k["alg"] for k in jwks["keys"]])
        self.assertEqual(self.per_alg(b)["RS256"], [self.active(b, "RS256")["kid"]])

    def test_scheduled_rotation_rewrites_the_files(self):
        b = self.keys_broker(publish=True, extra={
            "keys": {"rotation_period": 3, "publish_ahead": 1, "clock_skew": 0},
            "tokens": {"default_ttl": 1, "max_ttl": 1}})
        jwks, _ = self.check_published(b, [DEFAULT_ALG])
        t0 = self.active(b, DEFAULT_ALG)["activated_at"]
        first = set(jwks_kids(jwks))
        jpath = os.path.join(b.pub, "jwks.json")

        # the next key appears in the file with no request to the broker in between
        kids = wait_until(lambda: (lambda k: k if k != first else None)(
            set(jwks_kids(read_json(jpath)))), t0 + 4 - time.time(), what="the next key")
        self.assertEqual(len(kids - first), 1)
        self.assertTrue(first <= kids)
        nxt = (kids - first).pop()
        listing = {k["kid"]: k for k in self.keys(b)}
        self.assertEqual(listing[nxt]["state"], "next")
        self.check_published(b, [DEFAULT_ALG])
        self.assertEqual(set(self.per_alg(b)[DEFAULT_ALG]), kids)
        # and the old key leaves the file after rotation plus retention (1 s)
        old = first.pop()
        wait_until(lambda: old not in jwks_kids(read_json(jpath)), t0 + 6 - time.time(),
                   what="the retired key to leave jwks.json")
        self.assertGreaterEqual(time.time(), t0 + 3 + 1 - 0.05)
        self.check_published(b, [DEFAULT_ALG])
        self.assertNotIn(old, self.per_alg(b)[DEFAULT_ALG])

    def test_unsafe_publish_directory_is_refused_at_start(self):
        tmp = mktmp()
        gw = os.path.join(tmp, "gw")
        os.mkdir(gw, 0o755)
        os.chmod(gw, 0o775)
        b = self.broker(tmp=tmp, start=False,
                        extra={"publish_directory": os.path.join(gw, "pub")})
        log = self.start_refused(b)
        self.assertIn(f"publish_directory: {gw}: directory is writable by group or "
                      "others (mode 0775)", log)
        self.assertFalse(os.path.exists(os.path.join(gw, "pub", "jwks.json")))
        os.chmod(gw, 0o755)
        b.start()
        self.assertTrue(os.path.exists(os.path.join(gw, "pub", "jwks.json")))

    def publish_status(self, b):
        resp = b.admin_request({"op": "status"})
        self.assertTrue(resp["ok"], resp)
        return resp["publish"]

    def test_issuer_changed_on_reload_is_published_at_once(self):
        b = self.keys_broker(rules=self.RULES, publish=True)
        self.check_published(b, ["EdDSA", "ES256"])
        dpath = os.path.join(b.pub, ".well-known", "openid-configuration")
        jwks_before = read_json(os.path.join(b.pub, "jwks.json"))
        st = self.publish_status(b)
        self.assertEqual(st["directory"], b.pub)
        self.assertIsNone(st["last_error"])
        self.assertIsInstance(st["last_success"], int)
        self.assertLessEqual(abs(st["last_success"] - time.time()), 5)

        new = "https://new-issuer.test"
        b.config["issuer"] = new
        b.write_config()
        self.admin_json(b, "reload")
        # at once, not at the next key event: discovery names the issuer tokens now carry
        disc = read_json(dpath)
        self.assertEqual((disc["issuer"], disc["jwks_uri"]), (new, new + "/jwks.json"))
        self.assertEqual(read_json(os.path.join(b.pub, "jwks.json")), jwks_before)
        resp = self.token_of(b, DEFAULT_ALG)
        self.assertEqual(token_claims(resp["token"])["iss"], new)
        verify_token(resp["token"], read_json(os.path.join(b.pub, "jwks.json")),
                     CALLER[DEFAULT_ALG][1], issuer=disc["issuer"])
        self.assertIsNone(self.publish_status(b)["last_error"])

        # and by SIGHUP too
        b.config["issuer"] = ISSUER
        b.write_config()
        os.kill(b.daemon_pid(), signal.SIGHUP)
        wait_until(lambda: read_json(dpath)["issuer"] == ISSUER, 5,
                   what="the SIGHUP reload to publish the issuer")

    def test_read_only_publish_directory_is_reported_once_and_in_status(self):
        # what ProtectSystem=strict makes of a publish directory outside ReadWritePaths=
        if not shutil.which("unshare"):
            self.skipTest("unshare not installed")
        tmp = mktmp()
        pub = os.path.join(tmp, "pub")
        os.mkdir(pub, 0o755)
        ro = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              f'mount --bind "{pub}" "{pub}" && mount -o remount,bind,ro "{pub}" && exec "$@"',
              "sh"]
        b = self.broker(rules=self.RULES, tmp=tmp, start=False, prefix=ro,
                        extra={"publish_directory": pub})
        b.start()  # publishing is not a start's condition
        self.assertEqual(self.token_of(b, DEFAULT_ALG)["kid"], self.active(b, DEFAULT_ALG)["kid"])
        st = self.publish_status(b)
        self.assertIsNone(st["last_success"])
        self.assertIn(pub, st["last_error"])
        self.assertIn("Read-only file system", st["last_error"])
        log = b.read_log()
        self.assertEqual(log.count(f"Cannot publish to {pub}: "), 1, log)
        self.assertIn("ReadWritePaths=", log)
        self.assertNotIn("Unsafe publish_directory", log)
        self.assertEqual(os.listdir(pub), [])
        # each later attempt is one line more, and status keeps the latest
        self.admin_json(b, "rotate")
        self.assertEqual(b.read_log().count(f"Cannot publish to {pub}: "), 2)
        self.assertIn("Read-only file system", self.publish_status(b)["last_error"])


# --- 8. process hardening -----------------------------------------------------------------

class HardeningTest(KeysTestCase):
    def assert_no_core(self, pid):
        with open(f"/proc/{pid}/limits") as f:
            line = [l for l in f if l.startswith("Max core file size")]
        self.assertEqual(len(line), 1)
        self.assertRegex(line[0], r"^Max core file size\s+0\s+0\s+bytes\s*$")

    def test_core_dumps_disabled(self):
        b = self.keys_broker()
        self.assert_no_core(b.daemon_pid())

    def test_not_dumpable(self):
        if is_sanitizer_build():
            self.skipTest("sanitizer build (stays dumpable for LeakSanitizer)")
        # As root every /proc file is root's anyway: run the daemon as uid 4001, whose files
        # there belong to 4001 unless the process made itself non-dumpable.
        tmp = mktmp()
        b = self.broker(tmp=tmp, start=False, prefix=as_user(4001))
        os.chown(b.master_key, 4001, 4001)
        for d, mode in ((b.state, 0o700), (os.path.dirname(b.admin), 0o755),
                        (os.path.dirname(b.workload), 0o755)):
            os.makedirs(d, exist_ok=True)
            os.chown(d, 4001, 4001)
            os.chmod(d, mode)
        old = os.umask(0)  # the test's notify socket must be writable by uid 4001
        try:
            b.start()
        finally:
            os.umask(old)
        pid = b.daemon_pid()
        with open(f"/proc/{pid}/status") as f:
            uids = [l.split()[1:] for l in f if l.startswith("Uid:")][0]
        self.assertEqual(uids, ["4001"] * 4)
        self.assertEqual(os.stat(f"/proc/{pid}/environ").st_uid, 0)  # non-dumpable: root's
        self.assert_no_core(pid)
        r = subprocess.run(as_user(4001) + ["cat", f"/proc/{pid}/environ"], capture_output=True)
        self.assertNotEqual(r.returncode, 0, "uid 4001 could read the daemon's environ")

        # the control: a plain process of uid 4001
        ctl = subprocess.Popen(as_user(4001) + ["sleep", "30"])
        try:
            wait_until(lambda: os.readlink(f"/proc/{ctl.pid}/exe").endswith("/sleep"), 5,
                       what="the control process")
            self.assertEqual(os.stat(f"/proc/{ctl.pid}/environ").st_uid, 4001)
            r = subprocess.run(as_user(4001) + ["cat", f"/proc/{ctl.pid}/environ"],
                               capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            ctl.kill()
            ctl.wait()
        # it still works as that uid
        r = b.admin_ctl("keys")
        self.assertEqual(r.returncode, 0, r.stderr)


# --- 9. configuration --------------------------------------------------------------------

class KeysConfigTest(KeysTestCase):
    def check(self, b, **changes):
        cfg = json.loads(json.dumps(b.config))
        for k, v in changes.items():
            cfg[k] = v
        b.write_config(cfg)
        return b.check()

    def test_es256_and_rs256_rules_are_accepted(self):
        b = self.keys_broker(rules=THREE_ALGS, start=False)
        r = self.check(b)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), f"{b.config_path}: configuration is valid (3 rules)")

    def test_publish_ahead_must_be_shorter_than_rotation_period(self):
        b = self.keys_broker(start=False)
        for ahead in ("1h", "2h"):
            r = self.check(b, keys={"rotation_period": "1h", "publish_ahead": ahead})
            self.assertEqual(r.returncode, 1, r.stdout)
            secs = {"1h": 3600, "2h": 7200}[ahead]
            self.assertEqual(r.stderr.strip(),
                             f"{b.config_path}: keys.publish_ahead: {secs}s must be shorter "
                             "than keys.rotation_period (3600s)")
        r = self.check(b, keys={"rotation_period": "1h", "publish_ahead": 3599})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_retention_must_cover_longest_ttl_plus_clock_skew(self):
        b = self.keys_broker(start=False)
        tokens = {"default_ttl": "1m", "max_ttl": "10m"}
        r = self.check(b, tokens=tokens, keys={"clock_skew": "1m", "retention": "10m"})
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertEqual(r.stderr.strip(),
                         f"{b.config_path}: keys.retention: 600s is shorter than the longest "
                         "token lifetime plus keys.clock_skew (660s): tokens would outlive the "
                         "key that verifies them")
        # the default skew (5m) counts when none is given
        r = self.check(b, tokens=tokens, keys={"retention": "14m"})
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("keys.retention: 840s is shorter than the longest token lifetime plus "
                      "keys.clock_skew (900s)", r.stderr)
        r = self.check(b, tokens=tokens, keys={"clock_skew": "1m", "retention": "11m"})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_every_keys_problem_is_reported_and_start_refuses(self):
        b = self.keys_broker(start=False)
        rules = [dict(b.config["rules"][0], alg="HS256")]
        bad = dict(tokens={"default_ttl": "1m", "max_ttl": "10m"}, rules=rules,
                   keys={"rotation_period": 60, "publish_ahead": 60, "retention": 1,
                         "rsa_bits": 3000})
        r = self.check(b, **bad)
        self.assertEqual(r.returncode, 1, r.stdout)
        lines = r.stderr.strip().splitlines()
        for frag in ('rules[0].alg: unsupported algorithm "HS256"',
                     "keys.publish_ahead: 60s must be shorter than keys.rotation_period (60s)",
                     "keys.retention: 1s is shorter",
                     "keys.rsa_bits: must be 2048, 3072 or 4096"):
            self.assertEqual(len([l for l in lines
                                  if l.startswith(f"{b.config_path}: {frag}")]), 1,
                             f"{frag!r} not reported once in:\n{r.stderr}")
        log = self.start_refused(b)
        self.assertIn("keys.publish_ahead: 60s must be shorter", log)


# --- 10. relying parties whose clocks lag ---------------------------------------------------

# Node's jose as verify.mjs runs it, but at a given time and with no tolerance at all.
NODE_VERIFY_AT = r"""
import { createLocalJWKSet, jwtVerify } from "jose";
let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
try {
  const { token, jwks, audience, issuer, now } = JSON.parse(input);
  const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), {
    audience, issuer, algorithms: ["EdDSA", "ES256", "RS256"],
    requiredClaims: ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"],
    currentDate: new Date(now * 1000), clockTolerance: 0,
  });
  process.stdout.write(JSON.stringify(payload) + "\n");
} catch (e) {
  process.stderr.write(`jose: ${e.code || e.name}: ${e.message}\n`);
  process.exit(1);
}
"""


def node_verify_at(token, jwks, audience, now):
    return subprocess.run(["node", "--input-type=module", "-e", NODE_VERIFY_AT], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=60,
                          input=json.dumps({"token": token, "jwks": {"keys": jwks["keys"]},
                                            "audience": audience, "issuer": ISSUER,
                                            "now": now}))


def pyjwt_at(token, key, audience, now, verify_iat=True):
    """PyJWT at zero leeway with its clock reading `now` (it reads datetime.now())."""
    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(now, tz)

    with mock.patch.object(pyjwt.api_jwt, "datetime", Clock):
        return pyjwt.decode(token, pyjwt.PyJWK(key).key, algorithms=[key["alg"]],
                            audience=audience, issuer=ISSUER, leeway=0,
                            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"],
                                     "verify_iat": verify_iat})


def jwcrypto_at(token, key, audience, now):
    """jwcrypto at zero leeway (its default is 60 s) with its clock reading `now`."""
    t = cjwt.JWT(algs=[key["alg"]], check_claims={"iss": ISSUER, "aud": audience, "exp": None,
                                                  "nbf": None})
    t.leeway = 0
    with mock.patch.object(cjwt, "time", SimpleNamespace(time=lambda: float(now))):
        t.deserialize(token, cjwk.JWK(**key))
    return json.loads(t.claims)


class ClockSkewTest(KeysTestCase):
    SKEW = 30

    def test_nbf_backdated_by_clock_skew_for_relying_parties_behind(self):
        self.require_node()
        b = self.keys_broker(rules=THREE_ALGS, extra={"keys": {"clock_skew": f"{self.SKEW}s"}})
        jwks = b.jwks()
        for alg in ALGS:
            with self.subTest(alg=alg):
                before = int(time.time())
                resp = self.token_of(b, alg)
                after = int(time.time())
                tok = resp["token"]
                c = token_claims(tok)
                key = [k for k in jwks["keys"] if k["kid"] == resp["kid"]][0]
                # only nbf moves: iat is the second of minting, the lifetime is exp - iat
                self.assertTrue(before <= c["iat"] <= after, (before, c, after))
                self.assertEqual(c["nbf"], c["iat"] - self.SKEW)
                self.assertEqual(c["exp"] - c["iat"], 300)  # tokens.default_ttl
                self.assertEqual(resp["expires_at"], c["exp"])

                # A relying party one second behind, checking the token in the very second it
                # was minted, and one as far behind as keys.clock_skew: zero leeway, accepted.
                for behind in (1, self.SKEW):
                    now = c["iat"] - behind
                    self.assertEqual(jwcrypto_at(tok, key, CALLER[alg][1], now), c)
                    r = node_verify_at(tok, jwks, CALLER[alg][1], now)
                    self.assertEqual(r.returncode, 0, f"{behind}s behind: {r.stderr}")
                    self.assertEqual(json.loads(r.stdout), c)
                    # PyJWT >= 2.6 also refuses an iat in its future, whatever nbf says
                    # (jpadilla/pyjwt#794): nbf can only pass its own check.
                    self.assertEqual(pyjwt_at(tok, key, CALLER[alg][1], now, verify_iat=False),
                                     c)
                    with self.assertRaisesRegex(pyjwt.ImmatureSignatureError, r"\(iat\)"):
                        pyjwt_at(tok, key, CALLER[alg][1], now)

                # One second further behind than the skew: nbf refuses, in all three.
                now = c["iat"] - self.SKEW - 1
                with self.assertRaises(cjwt.JWTNotYetValid):
                    jwcrypto_at(tok, key, CALLER[alg][1], now)
                with self.assertRaisesRegex(pyjwt.ImmatureSignatureError, r"\(nbf\)"):
                    pyjwt_at(tok, key, CALLER[alg][1], now, verify_iat=False)
                r = node_verify_at(tok, jwks, CALLER[alg][1], now)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertIn('"nbf" claim timestamp check failed', r.stderr)
                # and at our own clock every verifier, PyJWT included, takes it
                verify_token(tok, jwks, CALLER[alg][1])
