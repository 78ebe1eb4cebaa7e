#!/usr/bin/python3
"""Self-test of oauth.py and node/oauth_server.mjs, with no broker: plays the broker's part
with urllib over TLS, PyJWT and python3-cryptography. Not named test_*.py, so the main suite
does not collect it. Run: /usr/bin/python3 tests/integration/oauth_selftest.py
Exits non-zero on any failure; the last line is "selftest: N passed, N failed"."""

import base64
import http.client
import json
import os
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oauth  # noqa: E402
from selftest import (ASSERTION_TYPE, BROKER_ISS, TOKEN_EXCHANGE, TYPE_ACCESS_TOKEN,  # noqa: E402
                      TYPE_JWT, Key, Suite, request, write_jwks)

SUBJECT_AUD = "https://as.test/exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

CLIENTS = [
    {"client_id": "cc-basic", "client_secret": "basic-secret",
     "token_endpoint_auth_method": "client_secret_basic",
     "grant_types": ["client_credentials"], "scope": "read write"},
    {"client_id": "cc-post", "client_secret": "post-secret",
     "token_endpoint_auth_method": "client_secret_post",
     "grant_types": ["client_credentials"], "scope": "read"},
    {"client_id": "broker-jwt", "token_endpoint_auth_method": "private_key_jwt",
     "grant_types": ["client_credentials", TOKEN_EXCHANGE, JWT_BEARER], "scope": "read write"},
    {"client_id": "exchanger", "client_secret": "exchange-secret",
     "token_endpoint_auth_method": "client_secret_basic",
     "grant_types": [TOKEN_EXCHANGE, JWT_BEARER], "scope": "read"},
    {"client_id": "public", "token_endpoint_auth_method": "none",
     "grant_types": [TOKEN_EXCHANGE]},
]


ED = Key("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate())
EC = Key("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))
RSA = Key("rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
# Same kid as ED but never published: its signatures must fail, not merely miss a key.
ROGUE = Key("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate())


def client_assertion(key, client_id, aud, **over):
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60,
              "jti": str(uuid.uuid4())}
    claims.update(over)
    return key.sign(claims)


def broker_jwt(key, sub="spiffe://test/alice", **over):
    now = int(time.time())
    claims = {"iss": BROKER_ISS, "sub": sub, "aud": SUBJECT_AUD, "iat": now, "nbf": now,
              "exp": now + 120, "jti": str(uuid.uuid4())}
    claims.update(over)
    return key.sign(claims)


def post(url, form, ctx, basic=None, headers=None, timeout=10):
    headers = {**(headers or {}), "Content-Type": "application/x-www-form-urlencoded"}
    if basic:
        # RFC 6749 §2.3.1: each part form-urlencoded before base64.
        creds = ":".join(urllib.parse.quote_plus(p) for p in basic)
        headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
    return request("POST", url, urllib.parse.urlencode(form).encode(), headers, ctx, timeout)


class SelfTest(Suite):
    def __init__(self, srv, jwks_path):
        super().__init__(srv)
        self.jwks_path = jwks_path
        self.ctx = ssl.create_default_context(cafile=srv.ca_file)

    def token(self, form, **kw):
        return post(self.srv.token_endpoint, form, self.ctx, **kw)

    # --- helpers ---

    def expect_token(self, r, scope=None, expires_in=3600):
        assert r.status == 200, (r.status, r.body)
        body = r.json()
        assert body["token_type"] == "Bearer", body
        assert isinstance(body["access_token"], str) and body["access_token"], body
        assert body["expires_in"] == expires_in, body
        assert body.get("scope") == scope, body
        assert "no-store" in r.headers.get("Cache-Control", ""), dict(r.headers)
        return body

    def expect_error(self, r, status, error):
        assert r.status == status, (r.status, r.body)
        assert r.json()["error"] == error, r.body

    def jwt_client(self, key, form, aud=None):
        return self.token({**form, "client_assertion_type": ASSERTION_TYPE,
                           "client_assertion": client_assertion(
                               key, "broker-jwt", aud or self.srv.token_endpoint)})

    def exchange(self, subject_token, basic=("exchanger", "exchange-secret"), **extra):
        return self.token({"grant_type": TOKEN_EXCHANGE, "subject_token": subject_token,
                           "subject_token_type": TYPE_JWT, **extra}, basic=basic)

    # --- client_credentials ---

    def test_cc_basic(self):
        body = self.expect_token(self.token({"grant_type": "client_credentials", "scope": "read"},
                                            basic=("cc-basic", "basic-secret")), scope="read")
        info = self.srv.introspect(body["access_token"])
        assert info["active"] and info["client_id"] == "cc-basic", info
        assert info["sub"] == "cc-basic" and info["grant_type"] == "client_credentials", info
        assert self.srv.stats()["last_auth"] == {"client_id": "cc-basic", "method": "basic"}

    def test_cc_post(self):
        self.expect_token(self.token({"grant_type": "client_credentials", "scope": "read",
                                      "client_id": "cc-post", "client_secret": "post-secret"}),
                          scope="read")
        assert self.srv.stats()["last_auth"] == {"client_id": "cc-post", "method": "post"}

    def test_cc_no_scope(self):
        self.expect_token(self.token({"grant_type": "client_credentials"},
                                     basic=("cc-basic", "basic-secret")), scope=None)

    def test_cc_audience_resource_recorded(self):
        form = [("grant_type", "client_credentials"), ("scope", "read write"),
                ("audience", "https://api.test"), ("resource", "https://api.test/v1"),
                ("resource", "https://api.test/v2")]
        body = self.expect_token(self.token(form, basic=("cc-basic", "basic-secret")),
                                 scope="read write")
        info = self.srv.introspect(body["access_token"])
        assert info["aud"] == ["https://api.test", "https://api.test/v1",
                               "https://api.test/v2"], info

    def test_cc_wrong_secret(self):
        r = self.token({"grant_type": "client_credentials"}, basic=("cc-basic", "nope"))
        self.expect_error(r, 401, "invalid_client")
        assert "WWW-Authenticate" in r.headers, dict(r.headers)
        self.expect_error(self.token({"grant_type": "client_credentials", "client_id": "cc-post",
                                      "client_secret": "nope"}), 401, "invalid_client")

    def test_cc_unknown_client(self):
        self.expect_error(self.token({"grant_type": "client_credentials"},
                                     basic=("nobody", "x")), 401, "invalid_client")

    def test_cc_scope_refused(self):
        # "write" is another client's scope; "admin" is no client's.
        for scope in ("write", "read admin"):
            self.expect_error(self.token({"grant_type": "client_credentials", "scope": scope,
                                          "client_id": "cc-post",
                                          "client_secret": "post-secret"}),
                              400, "invalid_scope")

    def test_grant_not_allowed(self):
        self.expect_error(self.token({"grant_type": "client_credentials"},
                                     basic=("exchanger", "exchange-secret")),
                          400, "invalid_request")
        self.expect_error(self.token({"grant_type": "password"},
                                     basic=("cc-basic", "basic-secret")),
                          400, "unsupported_grant_type")

    # --- private_key_jwt ---

    def test_private_key_jwt_algs(self):
        for key in (ED, EC, RSA):
            self.expect_token(self.jwt_client(key, {"grant_type": "client_credentials",
                                                    "scope": "write"}), scope="write")
        assert self.srv.stats()["last_auth"] == {"client_id": "broker-jwt", "method": "jwt"}

    def test_private_key_jwt_issuer_audience(self):
        self.expect_token(self.jwt_client(ED, {"grant_type": "client_credentials"},
                                          aud=self.srv.issuer))

    def test_private_key_jwt_refused(self):
        form = {"grant_type": "client_credentials"}
        self.expect_error(self.jwt_client(ROGUE, form), 401, "invalid_client")
        self.expect_error(self.jwt_client(ED, form, aud="https://elsewhere.test/token"),
                          401, "invalid_client")
        # The same assertion twice: RFC 7523 §3 jti replay.
        assertion = client_assertion(ED, "broker-jwt", self.srv.token_endpoint)
        form = {**form, "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
        self.expect_token(self.token(form))
        self.expect_error(self.token(form), 401, "invalid_client")

    def test_private_key_jwt_rotation(self):
        fresh = Key("ed-2", "EdDSA", ed25519.Ed25519PrivateKey.generate())
        form = {"grant_type": "client_credentials"}
        self.expect_error(self.jwt_client(fresh, form), 401, "invalid_client")
        write_jwks(self.jwks_path, [ED, EC, RSA, fresh])
        try:
            self.expect_token(self.jwt_client(fresh, form))
            self.expect_token(self.exchange(broker_jwt(fresh)))
        finally:
            write_jwks(self.jwks_path, [ED, EC, RSA])

    # --- token exchange ---

    def test_token_exchange(self):
        for key in (ED, EC, RSA):
            r = self.exchange(broker_jwt(key, sub=f"spiffe://test/{key.kid}"), scope="read",
                              requested_token_type=TYPE_ACCESS_TOKEN)
            body = self.expect_token(r, scope="read")
            assert body["issued_token_type"] == TYPE_ACCESS_TOKEN, body
            info = self.srv.introspect(body["access_token"])
            assert info["active"] and info["sub"] == f"spiffe://test/{key.kid}", info
            assert info["client_id"] == "exchanger" and info["grant_type"] == TOKEN_EXCHANGE

    def test_token_exchange_audience_resource(self):
        body = self.expect_token(self.exchange(
            broker_jwt(ED), audience="https://api.test", resource="https://api.test/v1"))
        info = self.srv.introspect(body["access_token"])
        assert info["aud"] == ["https://api.test", "https://api.test/v1"], info

    def test_token_exchange_private_key_jwt(self):
        r = self.token({"grant_type": TOKEN_EXCHANGE, "subject_token": broker_jwt(EC),
                        "subject_token_type": TYPE_JWT, "client_assertion_type": ASSERTION_TYPE,
                        "client_assertion": client_assertion(ED, "broker-jwt",
                                                             self.srv.token_endpoint)})
        self.expect_token(r)

    def test_token_exchange_public_client(self):
        r = self.token({"grant_type": TOKEN_EXCHANGE, "subject_token": broker_jwt(ED),
                        "subject_token_type": TYPE_JWT, "client_id": "public"})
        self.expect_token(r)
        assert self.srv.stats()["last_auth"] == {"client_id": "public", "method": "none"}

    def test_token_exchange_bad_subject(self):
        past = int(time.time()) - 3600
        for token in (broker_jwt(ED, aud="https://other.test"),
                      broker_jwt(ED, exp=past, iat=past - 60, nbf=past - 60),
                      broker_jwt(ED, nbf=int(time.time()) + 600),
                      broker_jwt(ED, iss="https://not-the-broker.test"),
                      broker_jwt(ROGUE),
                      jwt.encode({"iss": BROKER_ISS, "sub": "x", "aud": SUBJECT_AUD,
                                  "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256"),
                      "not.a.jwt"):
            r = self.exchange(token)
            self.expect_error(r, 400, "invalid_grant")
            assert r.json().get("error_description"), r.body

    def test_token_exchange_bad_request(self):
        self.expect_error(self.exchange(broker_jwt(ED), scope="write"), 400, "invalid_scope")
        self.expect_error(self.token({"grant_type": TOKEN_EXCHANGE, "subject_token_type": TYPE_JWT},
                                     basic=("exchanger", "exchange-secret")),
                          400, "invalid_request")
        self.expect_error(self.token({"grant_type": TOKEN_EXCHANGE, "subject_token": broker_jwt(ED),
                                      "subject_token_type": TYPE_ACCESS_TOKEN},
                                     basic=("exchanger", "exchange-secret")),
                          400, "invalid_request")
        self.expect_error(self.exchange(broker_jwt(ED), requested_token_type=TYPE_JWT),
                          400, "invalid_request")

    # --- jwt-bearer ---

    def test_jwt_bearer(self):
        r = self.token({"grant_type": JWT_BEARER, "assertion": broker_jwt(ED, sub="bob"),
                        "scope": "read"}, basic=("exchanger", "exchange-secret"))
        body = self.expect_token(r, scope="read")
        assert "issued_token_type" not in body, body
        info = self.srv.introspect(body["access_token"])
        assert info["sub"] == "bob" and info["grant_type"] == JWT_BEARER, info

    def test_jwt_bearer_private_key_jwt(self):
        self.expect_token(self.jwt_client(EC, {"grant_type": JWT_BEARER,
                                               "assertion": broker_jwt(RSA)}))

    def test_jwt_bearer_refused(self):
        for token in (broker_jwt(ED, aud="https://other.test"), broker_jwt(ROGUE)):
            self.expect_error(self.token({"grant_type": JWT_BEARER, "assertion": token},
                                         basic=("exchanger", "exchange-secret")),
                              400, "invalid_grant")

    # --- control: stats, ttl, introspection ---

    def test_stats_and_request_ids(self):
        ids = [f"req-{i}-{uuid.uuid4()}" for i in range(3)]
        for rid in ids:
            self.token({"grant_type": "client_credentials"}, basic=("cc-basic", "basic-secret"),
                       headers={"X-Request-Id": rid})
        self.token({"grant_type": TOKEN_EXCHANGE, "subject_token": broker_jwt(ED),
                    "subject_token_type": TYPE_JWT}, basic=("exchanger", "exchange-secret"),
                   headers={"X-Request-Id": "x-1"})
        self.token({"grant_type": "client_credentials"}, basic=("cc-basic", "nope"))
        s = self.srv.stats()
        assert s["token_requests"] == 5, s
        assert s["by_grant"] == {"client_credentials": 4, TOKEN_EXCHANGE: 1}, s
        assert s["by_client"] == {"cc-basic": 4, "exchanger": 1}, s
        assert s["request_ids"] == ids + ["x-1"], s
        self.srv.reset()
        s = self.srv.stats()
        assert s["token_requests"] == 0 and s["request_ids"] == [] and s["by_grant"] == {}, s

    def test_request_id_history_bounded(self):
        for i in range(205):
            self.token({"grant_type": "client_credentials"}, basic=("cc-basic", "basic-secret"),
                       headers={"X-Request-Id": str(i)})
        s = self.srv.stats()
        assert s["token_requests"] == 205, s
        assert s["request_ids"] == [str(i) for i in range(5, 205)], s["request_ids"][:3]

    def test_ttl(self):
        self.srv.set_ttl(120)
        try:
            self.expect_token(self.token({"grant_type": "client_credentials"},
                                         basic=("cc-basic", "basic-secret")), expires_in=120)
            body = self.expect_token(self.exchange(broker_jwt(ED)), expires_in=120)
            info = self.srv.introspect(body["access_token"])
            assert abs(info["exp"] - (time.time() + 120)) < 5, info
            self.srv.set_ttl(1)
            body = self.expect_token(self.token({"grant_type": "client_credentials"},
                                                basic=("cc-basic", "basic-secret")),
                                     expires_in=1)
            time.sleep(1.5)
            assert self.srv.introspect(body["access_token"]) == {"active": False}
        finally:
            self.srv.set_ttl(3600)

    def test_introspect_unknown(self):
        assert self.srv.introspect("no-such-token") == {"active": False}

    # --- faults ---

    def cc(self, **kw):
        return self.token({"grant_type": "client_credentials"},
                          basic=("cc-basic", "basic-secret"), **kw)

    def test_fault_status(self):
        self.srv.fault("status", status=503, count=2)
        for _ in range(2):
            self.expect_error(self.cc(), 503, "server_error")
        self.expect_token(self.cc())
        self.srv.fault("status", status=429, headers={"Retry-After": "7"},
                       body={"error": "slow_down"})
        r = self.cc()
        self.expect_error(r, 429, "slow_down")
        assert r.headers["Retry-After"] == "7", dict(r.headers)
        self.expect_error(self.cc(), 429, "slow_down")  # no count: until changed
        self.srv.fault("none")
        self.expect_token(self.cc())
        assert self.srv.stats()["token_requests"] == 6

    def test_fault_slow(self):
        self.srv.fault("slow", delay_ms=1500, count=1)
        t0 = time.monotonic()
        try:
            self.cc(timeout=0.5)
        except (TimeoutError, socket.timeout, urllib.error.URLError) as e:
            assert "timed out" in str(e), e
        else:
            raise AssertionError("slow fault did not delay the response")
        assert time.monotonic() - t0 < 1.4
        self.srv.fault("slow", delay_ms=300, count=1)
        t0 = time.monotonic()
        self.expect_token(self.cc())
        assert time.monotonic() - t0 >= 0.3

    def test_fault_malformed(self):
        self.srv.fault("malformed", count=1)
        r = self.cc()
        assert r.status == 200, r.status
        try:
            json.loads(r.body)
        except ValueError:
            pass
        else:
            raise AssertionError(f"malformed body parsed: {r.body!r}")

    def test_fault_no_token(self):
        self.srv.fault("no_token", count=1)
        r = self.cc()
        assert r.status == 200 and "access_token" not in r.json(), r.body

    def test_fault_error200(self):
        self.srv.fault("error200", count=1)
        r = self.cc()
        assert r.status == 200 and r.json() == {"error": "invalid_request"}, r.body

    def test_fault_oversize(self):
        self.srv.fault("oversize", count=2)
        r = self.cc()
        assert r.status == 200 and len(r.body) == 200000, len(r.body)
        assert r.json()["access_token"], r.body[:100]
        self.srv.fault("oversize", size=70000, count=1)
        assert len(self.cc().body) == 70000

    def test_fault_close(self):
        self.srv.fault("close", count=1)
        try:
            self.cc()
        except (http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError):
            pass
        else:
            raise AssertionError("close fault answered")
        self.expect_token(self.cc())
        assert self.srv.stats()["token_requests"] == 2

    def test_fault_refused(self):
        for mode, kw in (("explode", {}), ("status", {"status": 99})):
            try:
                self.srv.fault(mode, **kw)
            except RuntimeError as e:
                assert "400" in str(e), e
            else:
                raise AssertionError(f"fault {mode} {kw} accepted")
        self.expect_token(self.cc())

    def test_faults_only_token_endpoint(self):
        self.srv.fault("status", status=500)
        disc = self.srv.issuer + "/.well-known/openid-configuration"
        with urllib.request.urlopen(disc, context=self.ctx, timeout=10) as r:
            meta = json.load(r)
        assert meta["token_endpoint"] == self.srv.token_endpoint, meta
        assert "EdDSA" in meta["token_endpoint_auth_signing_alg_values_supported"], meta
        assert TOKEN_EXCHANGE in meta["grant_types_supported"], meta

    # --- TLS ---

    def test_untrusted_listener(self):
        try:
            self.token_at(self.srv.untrusted_token_endpoint, self.ctx)
        except urllib.error.URLError as e:
            assert isinstance(e.reason, ssl.SSLCertVerificationError), e
        else:
            raise AssertionError("untrusted certificate was accepted")
        # It is the same provider, reachable by whoever trusts the other CA.
        ctx = ssl.create_default_context(cafile=self.srv.untrusted_ca_file)
        self.expect_token(self.token_at(self.srv.untrusted_token_endpoint, ctx))

    def token_at(self, url, ctx):
        return post(url, {"grant_type": "client_credentials"}, ctx,
                    basic=("cc-basic", "basic-secret"))


def plain_http_check(tmp, jwks_path):
    """tls=False: the provider on plain http, no untrusted listener."""
    srv = oauth.OAuthServer(tmp, jwks_path, BROKER_ISS, SUBJECT_AUD, CLIENTS,
                            tls=False, untrusted=False)
    with srv:
        assert srv.issuer.startswith("http://") and srv.ca_file is None, srv.issuer
        r = post(srv.token_endpoint, {"grant_type": "client_credentials"}, None,
                 basic=("cc-basic", "basic-secret"))
        assert r.status == 200 and r.json()["access_token"], r.body


def main():
    with tempfile.TemporaryDirectory(prefix="oauth-selftest-") as tmp:
        jwks_path = os.path.join(tmp, "broker-jwks.json")
        write_jwks(jwks_path, [ED, EC, RSA])
        srv = oauth.OAuthServer(tmp, jwks_path, BROKER_ISS, SUBJECT_AUD, CLIENTS)
        t0 = time.monotonic()
        with srv:
            print(f"server ready in {time.monotonic() - t0:.1f} s: {srv.token_endpoint} "
                  f"(untrusted {srv.untrusted_token_endpoint}, control {srv.control_port})",
                  flush=True)
            suite = SelfTest(srv, jwks_path)
            suite.run()
            suite.stop_server()
        # Outside the server's lifetime: plain-http mode.
        http_dir = os.path.join(tmp, "plain")
        os.mkdir(http_dir)
        suite.record("plain_http", lambda: plain_http_check(http_dir, jwks_path))
        return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
