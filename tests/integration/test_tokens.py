"""Tokens verified by independent JOSE libraries (PyJWT and jwcrypto) against the JWKS."""

import json
import os
import stat
import time

import jwt as pyjwt

from harness import ISSUER, BrokerTestCase, token_claims, token_header, verify_token


class TokenTest(BrokerTestCase):
    extra = {"tokens": {"default_ttl": "2m", "max_ttl": "10m"}}

    def test_token_verifies_with_pyjwt_and_jwcrypto(self):
        r = self.b.token(scopes=["read", "write"])
        self.assertEqual(r.returncode, 0, r.stderr)
        tok = r.stdout.strip()
        claims = verify_token(tok, self.b.jwks(), "https://api.test")
        self.assertEqual(claims["iss"], ISSUER)
        self.assertEqual(claims["sub"], "spiffe://test/uid/0")
        self.assertEqual(claims["aud"], "https://api.test")
        self.assertEqual(claims["scope"], "read write")
        # nbf backdated by keys.clock_skew (5m by default) so a relying party whose clock lags
        # accepts a fresh token; iat and exp stay
        self.assertEqual(claims["nbf"], claims["iat"] - 300)
        self.assertEqual(claims["exp"] - claims["iat"], 120)  # default_ttl
        self.assertLessEqual(abs(claims["iat"] - time.time()), 5)
        self.assertEqual(set(claims), {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope"})
        h = token_header(tok)
        self.assertEqual((h["alg"], h["typ"]), ("ES256", "JWT"))  # the default alg
        self.assertEqual(set(h), {"alg", "typ", "kid"})

    def test_scope_claim_omitted_without_scopes(self):
        tok = self.b.token().stdout.strip()
        self.assertNotIn("scope", token_claims(tok))

    def test_jti_has_128_random_bits_and_is_unique(self):
        jtis = set()
        for _ in range(20):
            c = token_claims(self.b.token().stdout.strip())
            raw = pyjwt.utils.base64url_decode(c["jti"])
            self.assertGreaterEqual(len(raw), 16)
            jtis.add(c["jti"])
        self.assertEqual(len(jtis), 20)

    def test_json_output_matches_token(self):
        r = self.b.token(ttl=60, env={}, )
        self.assertEqual(r.returncode, 0)
        r = self.b.ctl("token", "--audience", "https://api.test", "--ttl", "60", "--json")
        resp = json.loads(r.stdout)
        self.assertTrue(resp["ok"])
        c = token_claims(resp["token"])
        self.assertEqual(resp["expires_at"], c["exp"])
        self.assertEqual(resp["jti"], c["jti"])
        self.assertEqual(resp["kid"], token_header(resp["token"])["kid"])
        self.assertEqual(c["exp"] - c["iat"], 60)

    def test_ttl_above_max_is_clamped_and_response_says_so(self):
        r = self.b.ctl("token", "--audience", "https://api.test", "--ttl", "100000", "--json")
        resp = json.loads(r.stdout)
        c = token_claims(resp["token"])
        self.assertEqual(c["exp"] - c["iat"], 600)
        self.assertEqual(resp["expires_at"], c["exp"])

    def test_wrong_audience_issuer_and_tampering_are_rejected_by_verifiers(self):
        tok = self.b.token().stdout.strip()
        jwks = self.b.jwks()
        with self.assertRaises(Exception):
            verify_token(tok, jwks, "https://other.test")
        with self.assertRaises(Exception):
            verify_token(tok, jwks, "https://api.test", issuer="https://evil.test")
        h, p, s = tok.split(".")
        c = token_claims(tok)
        c["sub"] = "spiffe://test/uid/1"
        forged = h + "." + pyjwt.utils.base64url_encode(json.dumps(c).encode()).decode() + "." + s
        with self.assertRaises(Exception):
            verify_token(forged, jwks, "https://api.test")

    def test_expired_token_is_rejected(self):
        b = self.broker(extra={"tokens": {"default_ttl": 1, "max_ttl": 1}})
        tok = b.token().stdout.strip()
        jwks = b.jwks()
        # iat is whole seconds, so a 1 s token may have expired by the time it is first
        # verified: check it with a leeway, then strictly once its exp has surely passed.
        claims = verify_token(tok, jwks, "https://api.test", leeway=5)
        self.assertEqual(claims["exp"] - claims["iat"], 1)
        while time.time() < claims["exp"] + 1:
            time.sleep(0.1)
        with self.assertRaises(pyjwt.ExpiredSignatureError):
            verify_token(tok, jwks, "https://api.test")

    def test_key_persists_across_restart(self):
        kid1 = token_header(self.b.token().stdout.strip())["kid"]
        jwks1 = self.b.jwks()
        self.assertEqual(self.b.stop(), 0)
        self.b.start()
        kid2 = token_header(self.b.token().stdout.strip())["kid"]
        self.assertEqual(kid1, kid2)
        self.assertEqual(jwks1, self.b.jwks())

    def test_state_files_are_private(self):
        st = os.stat(self.b.state)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o700)
        for name in os.listdir(self.b.state):
            mode = stat.S_IMODE(os.stat(os.path.join(self.b.state, name)).st_mode)
            self.assertEqual(mode & 0o077, 0, f"{name} has mode {oct(mode)}")

    def test_jwks_is_standard_and_public_only(self):
        jwks = self.b.jwks()
        self.assertEqual(list(jwks), ["keys"])  # a JWKS, no protocol envelope
        self.assertEqual(len(jwks["keys"]), 1)
        k = jwks["keys"][0]
        # the default algorithm's key alone: no rule asks for another
        self.assertEqual(set(k), {"kty", "crv", "x", "y", "alg", "use", "kid"})
        self.assertEqual((k["kty"], k["crv"], k["alg"], k["use"]), ("EC", "P-256", "ES256", "sig"))
