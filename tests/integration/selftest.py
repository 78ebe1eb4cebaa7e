"""What oauth_selftest.py and cloud_selftest.py share: the broker's part (its issuer, signing
keys and the JWKS file a server reads them from, the OAuth2 names its requests use), a plain
HTTP client that returns error answers instead of raising, and the bookkeeping of a run: one
line a check ("ok   NAME", or "FAIL NAME" and the traceback), "selftest: N passed, N failed"
last.

Uses the standard library and PyJWT."""

import json
import os
import traceback
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import jwt

BROKER_ISS = "https://broker.test"  # the issuer of the JWTs the self-tests sign as the broker
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Key:
    """A broker signing key: the private key, its alg and kid, and its public JWK."""

    def __init__(self, kid, alg, private):
        self.kid, self.alg, self.private = kid, alg, private
        algorithm = jwt.get_algorithm_by_name(alg)
        self.jwk = {**json.loads(algorithm.to_jwk(private.public_key())),
                    "kid": kid, "alg": alg, "use": "sig"}

    def sign(self, claims):
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid})


def write_jwks(path, keys):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"keys": [k.jwk for k in keys]}, f)
    os.replace(tmp, path)  # atomically, as a rotating broker would


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def xml(self):
        return ET.fromstring(self.body)

    def __repr__(self):
        return f"Response({self.status}, {self.body[:600]!r})"


def request(method, url, data=None, headers=None, ctx=None, timeout=10):
    """The answer, whatever its status (an HTTP error is a Response too)."""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
            return Response(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.headers, e.read())


class Suite:
    """The checks of one server (a nodeserver.NodeServer): run() calls every test_* method, in
    name order, after srv.reset(); each one passes unless it raises."""

    def __init__(self, srv):
        self.srv = srv
        self.passed = 0
        self.failed = 0

    def record(self, name, fn):
        """Runs fn() as the check `name`, without resetting the server first."""
        try:
            fn()
        except Exception:
            self.failed += 1
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
        else:
            self.passed += 1
            print(f"ok   {name}", flush=True)

    def check(self, name, fn):
        self.srv.reset()
        self.record(name, fn)

    def run(self):
        for name in sorted(n for n in dir(self) if n.startswith("test_")):
            self.check(name, getattr(self, name))

    def stop_server(self):
        """Stops the server, which is a check of its own: exit status 0 after SIGTERM."""
        def stop():
            status = self.srv.stop()
            assert status == 0, f"exit status {status}"
        self.record("sigterm_exit_status", stop)

    def finish(self):
        """Prints the summary (after the server's stderr when a check failed); returns the
        exit code of the run."""
        if self.failed:
            print("--- server stderr ---\n" + self.srv.stderr(), flush=True)
        print(f"selftest: {self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0
