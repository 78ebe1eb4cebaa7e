#!/usr/bin/python3
"""Self-test of cloud.py, node/cloud_server.mjs and the node/sdk_*.mjs drivers, with no broker:
plays the broker's part by signing JWTs itself (PyJWT, python3-cryptography) with keys it
publishes in a JWKS file, checks each stand-in directly (urllib, an independent SigV4 signer),
then runs each official SDK against them. Not named test_*.py, so the main suite does not
collect it. Run: /usr/bin/python3 tests/integration/cloud_selftest.py
Exits non-zero on any failure; the last line is "selftest: N passed, N failed"."""

import datetime
import hashlib
import hmac
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
import cloud  # noqa: E402
from selftest import (ASSERTION_TYPE, BROKER_ISS, TOKEN_EXCHANGE, TYPE_ACCESS_TOKEN,  # noqa: E402
                      TYPE_JWT, Key, Suite, request, write_jwks)

AWS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
AZURE_SUBJECT = "spiffe://test/azure-app"
OTHER_SA = "restricted@test-project.iam.gserviceaccount.com"
COGNITIVE = "https://cognitiveservices.azure.com/.default"
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


RSA = Key("rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC = Key("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))
ED = Key("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate())
# Same kid as RSA but never published: its signatures must fail, not merely miss a key.
ROGUE = Key("rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def broker_jwt(key, aud, sub="spiffe://test/alice", ttl=300, **over):
    now = int(time.time())
    claims = {"iss": BROKER_ISS, "sub": sub, "aud": aud, "iat": now, "nbf": now,
              "exp": now + ttl, "jti": str(uuid.uuid4())}
    claims.update(over)
    return key.sign(claims)


def expired(key, aud, **over):
    past = int(time.time()) - 3600
    return broker_jwt(key, aud, exp=past, iat=past - 60, nbf=past - 60, **over)


# --- HTTP -------------------------------------------------------------------------------------

def post_form(url, form, ctx=None, headers=None, **kw):
    return request("POST", url, urllib.parse.urlencode(form).encode(), {
        "Content-Type": "application/x-www-form-urlencoded", **(headers or {})}, ctx, **kw)


def post_json(url, body, ctx=None, headers=None, **kw):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request("POST", url, data, {"Content-Type": "application/json", **(headers or {})},
                   ctx, **kw)


# --- an independent SigV4 signer
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html)

def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_headers(method, url, body, creds, service, region="us-east-1", headers=None,
                  amz_date=None):
    u = urllib.parse.urlsplit(url)
    amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    date = amz_date[:8]
    h = {k.lower(): v for k, v in (headers or {}).items()}
    h["host"] = u.netloc
    h["x-amz-date"] = amz_date
    if creds.get("token"):
        h["x-amz-security-token"] = creds["token"]
    payload_hash = hashlib.sha256(body).hexdigest()
    h["x-amz-content-sha256"] = payload_hash
    signed = sorted(h)
    canon_headers = "".join(f"{k}:{' '.join(h[k].split())}\n" for k in signed)
    canon_uri = urllib.parse.quote(u.path or "/", safe="/~")  # the sent path, encoded again
    query = sorted((urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
                   for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    canon_query = "&".join(f"{k}={v}" for k, v in query)
    creq = "\n".join([method, canon_uri, canon_query, canon_headers, ";".join(signed),
                      payload_hash])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(creq.encode()).hexdigest()])
    k = _hmac(("AWS4" + creds["secret"]).encode(), date)
    for part in (region, service, "aws4_request"):
        k = _hmac(k, part)
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds['akid']}/{scope}, "
                          f"SignedHeaders={';'.join(signed)}, Signature={sig}")
    return h


def signed_request(method, url, body, creds, service, tamper=None, **kw):
    headers = sigv4_headers(method, url, body, creds, service, **kw)
    if tamper:
        body = tamper(body)
    return request(method, url, body if method != "GET" else None, headers)


# --- helper programs the SDKs run ---------------------------------------------------------------

CRED_PROCESS = r'''#!/usr/bin/python3
# credential_process for the AWS SDK: AssumeRoleWithWebIdentity at the stand-in with the JWT in
# a file, printed in credential_process's JSON (Version 1).
import json, sys, urllib.parse, urllib.request, xml.etree.ElementTree as ET
endpoint, role_arn, token_file = sys.argv[1:4]
form = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": role_arn,
        "RoleSessionName": "credential-process",
        "WebIdentityToken": open(token_file).read().strip()}
req = urllib.request.Request(endpoint + "/", data=urllib.parse.urlencode(form).encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
try:
    body = urllib.request.urlopen(req, timeout=10).read()
except urllib.error.HTTPError as e:
    sys.stderr.write(e.read().decode() + "\n")
    sys.exit(1)
ns = "{https://sts.amazonaws.com/doc/2011-06-15/}"
c = ET.fromstring(body).find(f"{ns}AssumeRoleWithWebIdentityResult/{ns}Credentials")
print(json.dumps({"Version": 1, "AccessKeyId": c.find(ns + "AccessKeyId").text,
                  "SecretAccessKey": c.find(ns + "SecretAccessKey").text,
                  "SessionToken": c.find(ns + "SessionToken").text,
                  "Expiration": c.find(ns + "Expiration").text}))
'''

GOOGLE_EXECUTABLE = r'''#!/usr/bin/python3
# An executable-sourced credential for google-auth-library: prints Google's executable response
# with the JWT in a file, and records the GOOGLE_EXTERNAL_ACCOUNT_* variables it was given.
import json, os, sys
token_file, env_out = sys.argv[1:3]
token = open(token_file).read().strip()
with open(env_out, "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith("GOOGLE_EXTERNAL_ACCOUNT")}, f)
payload = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[1] + "=="))
print(json.dumps({"version": 1, "success": True,
                  "token_type": "urn:ietf:params:oauth:token-type:jwt",
                  "id_token": token, "expiration_time": payload["exp"]}))
'''


def write_script(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


def write_token(path, token):
    with open(path, "w") as f:
        f.write(token)
    return path


class SelfTest(Suite):
    def __init__(self, srv, tmp, jwks_path):
        super().__init__(srv)
        self.tmp = tmp
        self.jwks_path = jwks_path
        self.ctx = ssl.create_default_context(cafile=srv.ca_file)
        self.home = os.path.join(tmp, "home")
        self.cred_process = write_script(os.path.join(tmp, "cred_process.py"), CRED_PROCESS)
        self.google_exec = write_script(os.path.join(tmp, "google_exec.py"), GOOGLE_EXECUTABLE)

    def path(self, name):
        return os.path.join(self.tmp, name)

    # --- AWS helpers ---

    def arwwi(self, token, endpoint=None, ctx=None, **params):
        form = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15",
                "RoleArn": self.srv.aws_role_arn, "RoleSessionName": "selftest",
                "WebIdentityToken": token, **params}
        form = {k: v for k, v in form.items() if v is not None}
        return post_form((endpoint or self.srv.aws_endpoint) + "/", form, ctx)

    def aws_creds(self, key=RSA, **params):
        r = self.arwwi(broker_jwt(key, "sts.amazonaws.com"), **params)
        assert r.status == 200, r
        c = r.xml().find(f"{AWS_NS}AssumeRoleWithWebIdentityResult/{AWS_NS}Credentials")
        return {"akid": c.find(AWS_NS + "AccessKeyId").text,
                "secret": c.find(AWS_NS + "SecretAccessKey").text,
                "token": c.find(AWS_NS + "SessionToken").text,
                "expiration": c.find(AWS_NS + "Expiration").text}

    def expect_aws_error(self, r, status, code):
        assert r.status == status, r
        root = r.xml()
        assert root.tag == AWS_NS + "ErrorResponse", r
        err = root.find(AWS_NS + "Error")
        assert err.find(AWS_NS + "Code").text == code, r
        assert err.find(AWS_NS + "Type").text in ("Sender", "Receiver"), r
        assert err.find(AWS_NS + "Message").text, r
        assert root.find(AWS_NS + "RequestId").text, r
        return err.find(AWS_NS + "Message").text

    def gci(self, creds, method="POST", **kw):
        if method == "POST":
            body = b"Action=GetCallerIdentity&Version=2011-06-15"
            return signed_request("POST", self.srv.aws_endpoint + "/", body, creds, "sts",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"},
                                  **kw)
        return signed_request("GET", self.srv.aws_endpoint
                              + "/?Version=2011-06-15&Action=GetCallerIdentity", b"", creds,
                              "sts", **kw)

    def invoke(self, creds, model=BEDROCK_MODEL, body=None, service="bedrock", **kw):
        body = body if body is not None else json.dumps({
            "anthropic_version": "bedrock-2023-05-31", "max_tokens": 32,
            "messages": [{"role": "user", "content": "ping"}]}).encode()
        url = f"{self.srv.aws_endpoint}/model/{urllib.parse.quote(model, safe='')}/invoke"
        return signed_request("POST", url, body, creds, service,
                              headers={"Content-Type": "application/json",
                                       "Accept": "application/json"}, **kw)

    def expect_bedrock_error(self, r, status, code):
        assert r.status == status, r
        assert r.headers["x-amzn-errortype"].split(":")[0] == code, dict(r.headers)
        assert r.json()["message"], r

    # --- AWS: AssumeRoleWithWebIdentity ---

    def test_aws_arwwi(self):
        for key in (RSA, EC):
            r = self.arwwi(broker_jwt(key, "sts.amazonaws.com", sub=f"spiffe://test/{key.kid}"))
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/xml"), r
            root = r.xml()
            assert root.tag == AWS_NS + "AssumeRoleWithWebIdentityResponse", r
            res = root.find(AWS_NS + "AssumeRoleWithWebIdentityResult")
            c = res.find(AWS_NS + "Credentials")
            assert c.find(AWS_NS + "AccessKeyId").text.startswith("ASIA"), r
            assert len(c.find(AWS_NS + "SecretAccessKey").text) == 40, r
            assert c.find(AWS_NS + "SessionToken").text, r
            exp = datetime.datetime.strptime(c.find(AWS_NS + "Expiration").text,
                                             "%Y-%m-%dT%H:%M:%SZ")
            left = exp.replace(tzinfo=datetime.timezone.utc).timestamp() - time.time()
            assert 3590 < left <= 3601, left
            subject = res.find(AWS_NS + "SubjectFromWebIdentityToken").text
            assert subject == f"spiffe://test/{key.kid}", r
            assert res.find(AWS_NS + "Audience").text == "sts.amazonaws.com"
            assert res.find(AWS_NS + "Provider").text == BROKER_ISS
            user = res.find(AWS_NS + "AssumedRoleUser")
            assert user.find(AWS_NS + "Arn").text == \
                "arn:aws:sts::123456789012:assumed-role/brokerd-test/selftest", r
            assert user.find(AWS_NS + "AssumedRoleId").text.startswith("AROA"), r
            assert user.find(AWS_NS + "AssumedRoleId").text.endswith(":selftest"), r
            assert root.find(f"{AWS_NS}ResponseMetadata/{AWS_NS}RequestId").text, r
        s = self.srv.stats()
        assert s["by_action"] == {"AssumeRoleWithWebIdentity": 2}, s
        assert s["ok"] == {"AssumeRoleWithWebIdentity": 2}, s
        assert s["last_role_session_name"] == "selftest", s
        assert s["last_jwt_claims"]["sub"] == "spiffe://test/ec-1", s
        assert s["last_jwt"]["aws"]["header"]["alg"] == "ES256", s

    def test_aws_arwwi_duration(self):
        c = self.aws_creds(DurationSeconds="900")
        left = datetime.datetime.strptime(c["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp() - time.time()
        assert 890 < left <= 901, left
        assert self.srv.stats()["last_duration_seconds"] == "900"
        for value in ("899", "43201", "7200", "abc"):  # 7200: over the role's 3600 s maximum
            self.expect_aws_error(self.arwwi(broker_jwt(RSA, "sts.amazonaws.com"),
                                             DurationSeconds=value), 400, "ValidationError")

    def test_aws_arwwi_token_refused(self):
        aud = "sts.amazonaws.com"
        hs = jwt.encode({"iss": BROKER_ISS, "sub": "x", "aud": aud,
                         "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256")
        for token, code, words in (
                (broker_jwt(ED, aud), "InvalidIdentityToken", "algorithm"),
                (broker_jwt(RSA, "https://other.test"), "InvalidIdentityToken", "audience"),
                (broker_jwt(RSA, aud, iss="https://not-the-broker.test"),
                 "InvalidIdentityToken", "OpenIDConnect provider"),
                (broker_jwt(ROGUE, aud), "InvalidIdentityToken", ""),
                (hs, "InvalidIdentityToken", ""),
                ("not.a.jwt", "InvalidIdentityToken", ""),
                (expired(RSA, aud), "ExpiredTokenException", "expired"),
                (broker_jwt(RSA, aud, nbf=int(time.time()) + 600), "InvalidIdentityToken", "")):
            message = self.expect_aws_error(self.arwwi(token), 400, code)
            assert words.lower() in message.lower(), (code, message)
        s = self.srv.stats()
        assert s["errors"]["AssumeRoleWithWebIdentity"] == {
            "InvalidIdentityToken": 7, "ExpiredTokenException": 1}, s
        assert "AssumeRoleWithWebIdentity" not in s["ok"], s

    def test_aws_arwwi_validation(self):
        token = broker_jwt(RSA, "sts.amazonaws.com")
        for params in ({"RoleSessionName": "a"}, {"RoleSessionName": "bad name!"},
                       {"RoleSessionName": "x" * 65}, {"RoleSessionName": None},
                       {"RoleArn": None}, {"RoleArn": "arn:aws:iam::123:role"},
                       {"RoleArn": "arn:aws:iam::123456789012:user/bob"},
                       {"WebIdentityToken": None}):
            r = self.arwwi(token, **params)
            self.expect_aws_error(r, 400, "ValidationError")
        self.expect_aws_error(self.arwwi(token, RoleArn="arn:aws:iam::999999999999:role/x"),
                              403, "AccessDenied")
        # The session name's full alphabet is fine, and a role path.
        assert self.arwwi(token, RoleSessionName="a+=,.@-_Z9").status == 200
        assert self.arwwi(token, RoleArn="arn:aws:iam::123456789012:role/path/to/r").status == 200
        r = post_form(self.srv.aws_endpoint + "/", {"Version": "2011-06-15"})
        self.expect_aws_error(r, 400, "MissingAction")
        r = post_form(self.srv.aws_endpoint + "/", {"Action": "AssumeRoleWithWebIdentity"})
        self.expect_aws_error(r, 400, "InvalidAction")
        r = post_form(self.srv.aws_endpoint + "/", {"Action": "AssumeRole",
                                                    "Version": "2011-06-15"})
        self.expect_aws_error(r, 400, "InvalidAction")
        # GET with the query string works too, as on AWS.
        q = urllib.parse.urlencode({"Action": "AssumeRoleWithWebIdentity",
                                    "Version": "2011-06-15", "RoleArn": self.srv.aws_role_arn,
                                    "RoleSessionName": "via-get", "WebIdentityToken": token})
        assert request("GET", f"{self.srv.aws_endpoint}/?{q}").status == 200

    def test_aws_tls_listener(self):
        r = self.arwwi(broker_jwt(EC, "sts.amazonaws.com"), endpoint=self.srv.aws_tls_endpoint,
                       ctx=self.ctx)
        assert r.status == 200, r

    # --- AWS: SigV4 ---

    def test_aws_get_caller_identity(self):
        creds = self.aws_creds()
        for method in ("POST", "GET"):
            r = self.gci(creds, method)
            assert r.status == 200, r
            res = r.xml().find(AWS_NS + "GetCallerIdentityResult")
            assert res.find(AWS_NS + "Arn").text == \
                "arn:aws:sts::123456789012:assumed-role/brokerd-test/selftest", r
            assert res.find(AWS_NS + "Account").text == "123456789012", r
            assert res.find(AWS_NS + "UserId").text.endswith(":selftest"), r
        s = self.srv.stats()
        assert s["by_action"]["GetCallerIdentity"] == 2, s
        assert s["last_sigv4"]["access_key_id"] == creds["akid"], s
        assert s["last_sigv4"]["service"] == "sts" and s["last_sigv4"]["region"] == "us-east-1"
        assert self.srv.introspect(creds["akid"])["sub"] == "spiffe://test/alice"

    def test_aws_sigv4_refused(self):
        creds = self.aws_creds()
        body = b"Action=GetCallerIdentity&Version=2011-06-15"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = post_form(self.srv.aws_endpoint + "/", {"Action": "GetCallerIdentity",
                                                    "Version": "2011-06-15"})
        self.expect_aws_error(r, 403, "MissingAuthenticationToken")
        self.expect_aws_error(self.gci({**creds, "secret": "x" * 40}), 403,
                              "SignatureDoesNotMatch")
        self.expect_aws_error(self.gci({**creds, "akid": "ASIAAAAAAAAAAAAAAAAA"}), 403,
                              "InvalidClientTokenId")
        self.expect_aws_error(self.gci({**creds, "token": "forged"}), 403,
                              "InvalidClientTokenId")
        r = signed_request("POST", self.srv.aws_endpoint + "/", body, creds, "iam",
                           headers=form)
        self.expect_aws_error(r, 403, "SignatureDoesNotMatch")
        skewed = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 1200))
        self.expect_aws_error(self.gci(creds, amz_date=skewed), 403, "SignatureDoesNotMatch")
        r = signed_request("POST", self.srv.aws_endpoint + "/", body, creds, "sts",
                           headers=form, tamper=lambda b: b + b"&X=1")
        self.expect_aws_error(r, 403, "SignatureDoesNotMatch")
        r = request("POST", self.srv.aws_endpoint + "/", body, {
            **form, "Authorization": "AWS4-HMAC-SHA256 Credential=x", "X-Amz-Date": skewed})
        self.expect_aws_error(r, 400, "IncompleteSignature")
        self.srv.set_ttl(aws=1)
        short = self.aws_creds()
        time.sleep(1.2)
        self.expect_aws_error(self.gci(short), 400, "ExpiredToken")

    # --- AWS: Bedrock ---

    def test_bedrock_invoke(self):
        creds = self.aws_creds()
        r = self.invoke(creds)
        assert r.status == 200, r
        body = r.json()
        assert body["type"] == "message" and body["role"] == "assistant", body
        assert body["content"] == [{"type": "text", "text": "echo: ping"}], body
        assert body["stop_reason"] == "end_turn" and body["usage"]["output_tokens"] > 0, body
        s = self.srv.stats()
        assert s["last_bedrock"]["model_id"] == BEDROCK_MODEL, s
        assert s["last_sigv4"]["service"] == "bedrock", s

    def test_bedrock_refused(self):
        creds = self.aws_creds()
        self.expect_bedrock_error(self.invoke(creds, service="sts"), 403,
                                  "InvalidSignatureException")
        self.expect_bedrock_error(self.invoke({**creds, "akid": "ASIAAAAAAAAAAAAAAAAA"}), 403,
                                  "UnrecognizedClientException")
        self.expect_bedrock_error(self.invoke(creds, model="amazon.titan-text-v1"), 400,
                                  "ValidationException")
        self.expect_bedrock_error(self.invoke(creds, body=b"{not json"), 400,
                                  "ValidationException")
        self.expect_bedrock_error(self.invoke(creds, body=b'{"messages": []}'), 400,
                                  "ValidationException")
        r = request("POST", f"{self.srv.aws_endpoint}/model/{BEDROCK_MODEL}/invoke", b"{}",
                    {"Content-Type": "application/json"})
        self.expect_bedrock_error(r, 403, "MissingAuthenticationTokenException")

    # --- Google ---

    def google_sts(self, token, body_json=False, **over):
        form = {"grant_type": TOKEN_EXCHANGE, "audience": self.srv.google_audience,
                "scope": cloud.CLOUD_PLATFORM, "requested_token_type": TYPE_ACCESS_TOKEN,
                "subject_token_type": TYPE_JWT, "subject_token": token, **over}
        form = {k: v for k, v in form.items() if v is not None}
        if body_json:
            camel = {"".join(w.capitalize() if i else w for i, w in enumerate(k.split("_"))): v
                     for k, v in form.items()}
            return post_json(self.srv.google_sts_url, camel, self.ctx)
        return post_form(self.srv.google_sts_url, form, self.ctx)

    def sts_token(self, key=RSA, sub="spiffe://test/alice"):
        r = self.google_sts(broker_jwt(key, self.srv.google_jwt_audience, sub=sub))
        assert r.status == 200, r
        return r.json()["access_token"]

    def iam(self, bearer, email=None, body=None):
        url = self.srv.google_impersonation_url(email)
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return post_json(url, body if body is not None else
                         {"scope": [cloud.CLOUD_PLATFORM], "lifetime": "3600s"},
                         self.ctx, headers)

    def vertex(self, bearer, body=None, path=None):
        path = path or ("/v1/projects/test-project/locations/us-central1/publishers/google/"
                        "models/gemini-2.0-flash-001:generateContent")
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return post_json(self.srv.google_endpoint + path, body if body is not None else
                         {"contents": [{"role": "user", "parts": [{"text": "ping"}]}]},
                         self.ctx, headers)

    def expect_google_error(self, r, status, error):
        assert r.status == status, r
        body = r.json()
        if isinstance(body["error"], dict):
            assert body["error"]["status"] == error and body["error"]["code"] == status, body
            assert body["error"]["message"], body
        else:
            assert body["error"] == error and body["error_description"], body

    def test_google_sts(self):
        for key, aud, as_json in ((RSA, self.srv.google_jwt_audience, False),
                                  (EC, self.srv.google_jwt_audience, True),
                                  (RSA, self.srv.google_audience, False)):
            r = self.google_sts(broker_jwt(key, aud), body_json=as_json)
            assert r.status == 200, r
            body = r.json()
            assert body["token_type"] == "Bearer" and body["expires_in"] == 3600, body
            assert body["issued_token_type"] == TYPE_ACCESS_TOKEN, body
            info = self.srv.introspect(body["access_token"])
            assert info["active"] and info["kind"] == "google_sts", info
            assert info["sub"] == "spiffe://test/alice", info
            assert info["principal"].endswith("/workloadIdentityPools/brokerd-pool/subject/"
                                              "spiffe://test/alice"), info
        s = self.srv.stats()
        assert s["ok"]["google.sts.token"] == 3, s
        assert s["last_google_sts"]["audience"] == self.srv.google_audience, s

    def test_google_sts_refused(self):
        aud = self.srv.google_jwt_audience
        now = int(time.time())
        for token, words in ((broker_jwt(ED, aud), "algorithm"),
                             (broker_jwt(RSA, "https://other.test"), "audience"),
                             (expired(RSA, aud), "expired"),
                             (broker_jwt(RSA, aud, iss="https://evil.test"), "issuer"),
                             (broker_jwt(ROGUE, aud), "signature"),
                             (broker_jwt(RSA, aud, iat=now, exp=now + 90000), "24 hours"),
                             (broker_jwt(RSA, aud, sub="s" * 128), "127 bytes"),
                             ("garbage", "parse")):
            r = self.google_sts(token)
            self.expect_google_error(r, 400, "invalid_grant")
            assert words in r.json()["error_description"], (words, r)
        token = broker_jwt(RSA, aud)
        for over, error in (({"audience": "//iam.googleapis.com/projects/x/pools"},
                             "invalid_request"),
                            ({"audience": cloud.google_provider_name("1", "nopool", "noprov")},
                             "invalid_target"),
                            ({"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
                             "invalid_request"),
                            ({"requested_token_type": TYPE_JWT}, "invalid_request"),
                            ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
                            ({"subject_token": None}, "invalid_request")):
            self.expect_google_error(self.google_sts(token, **over), 400, error)

    def test_google_iam(self):
        sts = self.sts_token()
        r = self.iam(sts)
        assert r.status == 200, r
        body = r.json()
        exp = datetime.datetime.fromisoformat(body["expireTime"].replace("Z", "+00:00"))
        assert 3590 < exp.timestamp() - time.time() <= 3601, body
        info = self.srv.introspect(body["accessToken"])
        assert info["kind"] == "google_iam" and info["service_account"] == \
            self.srv.google_service_account, info
        r = self.iam(sts, body={"scope": [cloud.CLOUD_PLATFORM], "lifetime": "600s"})
        assert r.status == 200, r
        s = self.srv.stats()
        assert s["last_google_iam"]["lifetime"] == "600s", s
        # Refusals: no token, a token STS did not issue (IAM's own), an unknown account, a
        # restricted account, a project other than "-", bad lifetime or scope.
        self.expect_google_error(self.iam(None), 401, "UNAUTHENTICATED")
        self.expect_google_error(self.iam(body["accessToken"]), 401, "UNAUTHENTICATED")
        self.expect_google_error(self.iam(sts, email="nobody@x.iam.gserviceaccount.com"), 404,
                                 "NOT_FOUND")
        self.expect_google_error(self.iam(sts, email=OTHER_SA), 403, "PERMISSION_DENIED")
        url = self.srv.google_impersonation_url().replace("/projects/-/", "/projects/p1/")
        self.expect_google_error(post_json(url, {"scope": ["x"]}, self.ctx,
                                           {"Authorization": f"Bearer {sts}"}),
                                 400, "INVALID_ARGUMENT")
        for bad in ({"scope": [cloud.CLOUD_PLATFORM], "lifetime": "1h"},
                    {"scope": [cloud.CLOUD_PLATFORM], "lifetime": "50000s"}, {"scope": []}, {}):
            self.expect_google_error(self.iam(sts, body=bad), 400, "INVALID_ARGUMENT")
        allowed = self.sts_token(sub="spiffe://test/allowed")
        assert self.iam(allowed, email=OTHER_SA).status == 200

    def test_vertex(self):
        sts = self.sts_token()
        iam_token = self.iam(sts).json()["accessToken"]
        for token, kind in ((iam_token, "iam"), (sts, "sts")):
            r = self.vertex(token)
            assert r.status == 200, r
            body = r.json()
            assert body["candidates"][0]["content"]["parts"][0]["text"] == "echo: ping", body
            assert body["candidates"][0]["finishReason"] == "STOP", body
            assert body["usageMetadata"]["totalTokenCount"] > 0, body
            assert self.srv.stats()["last_vertex"]["token_kind"] == kind
        self.expect_google_error(self.vertex(None), 401, "UNAUTHENTICATED")
        self.expect_google_error(self.vertex("ya29.forged"), 401, "UNAUTHENTICATED")
        self.expect_google_error(self.vertex(iam_token, body={"contents": []}), 400,
                                 "INVALID_ARGUMENT")
        self.expect_google_error(self.vertex(iam_token, body=b"{"), 400, "INVALID_ARGUMENT")
        self.expect_google_error(self.vertex(iam_token, path="/v1/nothing"), 404, "NOT_FOUND")

    # --- Entra ---

    def entra_token(self, assertion, **over):
        form = {"grant_type": "client_credentials", "client_id": self.srv.entra_client_id,
                "scope": COGNITIVE, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion, **over}
        form = {k: v for k, v in form.items() if v is not None}
        url = f"{self.srv.entra_endpoint}/{self.srv.entra_tenant_id}/oauth2/v2.0/token"
        return post_form(url, form, self.ctx)

    def expect_entra_error(self, r, status, error, code):
        assert r.status == status, r
        body = r.json()
        assert body["error"] == error, body
        assert body["error_codes"] == [code], body
        assert body["error_description"].startswith(f"AADSTS{code}: "), body
        assert "\r\nTrace ID: " in body["error_description"], body
        assert body["trace_id"] and body["correlation_id"] and body["timestamp"], body

    def test_entra_discovery(self):
        t = self.srv.entra_tenant_id
        base = self.srv.entra_endpoint
        r = request("GET", f"{base}/{t}/v2.0/.well-known/openid-configuration", ctx=self.ctx)
        assert r.status == 200, r
        meta = r.json()
        assert meta["token_endpoint"] == f"{base}/{t}/oauth2/v2.0/token", meta
        assert meta["issuer"] == f"{base}/{t}/v2.0", meta
        keys = request("GET", meta["jwks_uri"], ctx=self.ctx).json()
        assert keys["keys"][0]["kty"] == "RSA", keys
        r = request("GET", f"{base}/no-such-tenant/v2.0/.well-known/openid-configuration",
                    ctx=self.ctx)
        self.expect_entra_error(r, 400, "invalid_tenant", 90002)
        r = request("GET", f"{base}/common/discovery/instance?api-version=1.1&"
                    f"authorization_endpoint={base}/{t}/oauth2/v2.0/authorize", ctx=self.ctx)
        assert r.json()["tenant_discovery_endpoint"].startswith(f"{base}/{t}/"), r

    def test_entra_token(self):
        r = self.entra_token(broker_jwt(RSA, cloud.ENTRA_AUDIENCE, sub=AZURE_SUBJECT))
        assert r.status == 200, r
        body = r.json()
        assert body["token_type"] == "Bearer", body
        assert body["expires_in"] == body["ext_expires_in"] == 3599, body
        keys = request("GET", f"{self.srv.entra_endpoint}/{self.srv.entra_tenant_id}/discovery/"
                       "v2.0/keys", ctx=self.ctx).json()
        key = jwt.PyJWK(keys["keys"][0], algorithm="RS256")
        claims = jwt.decode(body["access_token"], key.key, algorithms=["RS256"],
                            audience="https://cognitiveservices.azure.com")
        assert claims["tid"] == self.srv.entra_tenant_id, claims
        assert claims["appid"] == self.srv.entra_client_id, claims
        s = self.srv.stats()
        assert s["last_entra"]["assertion_sub"] == AZURE_SUBJECT, s
        assert s["last_entra"]["params"]["client_assertion"] == "(present)", s
        assert self.srv.introspect(body["access_token"])["sub"] == AZURE_SUBJECT

    def test_entra_refused(self):
        aud = cloud.ENTRA_AUDIENCE
        good = broker_jwt(RSA, aud, sub=AZURE_SUBJECT)
        for token, status, error, code in (
                (broker_jwt(EC, aud, sub=AZURE_SUBJECT), 401, "invalid_client", 5002738),
                (broker_jwt(ED, aud, sub=AZURE_SUBJECT), 401, "invalid_client", 5002738),
                (broker_jwt(RSA, aud, sub="spiffe://test/other"), 400, "invalid_client", 70021),
                (broker_jwt(RSA, "api://other", sub=AZURE_SUBJECT), 400, "invalid_client",
                 700212),
                (broker_jwt(RSA, aud, sub=AZURE_SUBJECT, iss="https://evil.test"), 400,
                 "invalid_client", 700211),
                (expired(RSA, aud, sub=AZURE_SUBJECT), 400, "invalid_client", 700024),
                (broker_jwt(ROGUE, aud, sub=AZURE_SUBJECT), 401, "invalid_client", 700027),
                ("garbage", 400, "invalid_request", 50027)):
            self.expect_entra_error(self.entra_token(token), status, error, code)
        for over, status, error, code in (
                ({"client_id": "11111111-0000-0000-0000-000000000000"}, 400,
                 "unauthorized_client", 700016),
                ({"scope": "https://cognitiveservices.azure.com/user.read"}, 400,
                 "invalid_scope", 1002012),
                ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
                ({"client_assertion": None}, 401, "invalid_client", 7000216),
                ({"client_secret": "s"}, 401, "invalid_client", 7000215),
                ({"client_assertion_type": "x"}, 401, "invalid_client", 70002)):
            self.expect_entra_error(self.entra_token(good, **over), status, error, code)
        url = f"{self.srv.entra_endpoint}/other-tenant/oauth2/v2.0/token"
        self.expect_entra_error(post_form(url, {"grant_type": "client_credentials"}, self.ctx),
                                400, "invalid_tenant", 90002)

    # --- keys, robustness, control ---

    def test_key_rotation(self):
        fresh = Key("rsa-2", "RS256", rsa.generate_private_key(public_exponent=65537,
                                                               key_size=2048))
        token = broker_jwt(fresh, "sts.amazonaws.com")
        self.expect_aws_error(self.arwwi(token), 400, "InvalidIdentityToken")
        write_jwks(self.jwks_path, [RSA, EC, ED, fresh])
        try:
            assert self.arwwi(token).status == 200
            assert self.entra_token(broker_jwt(fresh, cloud.ENTRA_AUDIENCE,
                                               sub=AZURE_SUBJECT)).status == 200
        finally:
            write_jwks(self.jwks_path, [RSA, EC, ED])
        self.expect_aws_error(self.arwwi(broker_jwt(fresh, "sts.amazonaws.com")), 400,
                              "InvalidIdentityToken")
        # No JWKS at all (the broker not started): AWS cannot reach the provider's keys.
        os.rename(self.jwks_path, self.jwks_path + ".away")
        try:
            self.expect_aws_error(self.arwwi(broker_jwt(RSA, "sts.amazonaws.com")), 400,
                                  "IDPCommunicationError")
            self.expect_google_error(self.google_sts(broker_jwt(RSA, self.srv.google_jwt_audience)),
                                     400, "invalid_grant")
        finally:
            os.rename(self.jwks_path + ".away", self.jwks_path)
        assert self.arwwi(broker_jwt(RSA, "sts.amazonaws.com")).status == 200

    def test_bad_input(self):
        big = b"x" * ((1 << 20) + 10)
        for url, ctx in ((self.srv.aws_endpoint + "/", None),
                         (self.srv.google_sts_url, self.ctx),
                         (f"{self.srv.entra_endpoint}/{self.srv.entra_tenant_id}/oauth2/v2.0/"
                          "token", self.ctx)):
            r = request("POST", url, big, {"Content-Type": "application/x-www-form-urlencoded"},
                        ctx)
            assert r.status == 413, r
        # Garbage: bad percent-encoding, JSON where a form is expected, a raw non-HTTP line.
        r = request("POST", self.srv.aws_endpoint + "/", b"Action=%zz&Version=%",
                    {"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 400, r
        r = post_json(self.srv.google_sts_url, b"[1,2", self.ctx)
        self.expect_google_error(r, 400, "invalid_request")
        with socket.create_connection(("127.0.0.1", self.srv.ports["aws"]), timeout=5) as s:
            s.sendall(b"\x00\x01GARBAGE\r\n\r\n")
            assert b"400" in s.recv(100)
        r = request("GET", self.srv.aws_endpoint + "/nowhere")
        assert r.status == 404, r
        # Still serving.
        assert self.arwwi(broker_jwt(RSA, "sts.amazonaws.com")).status == 200

    def test_faults(self):
        token = broker_jwt(RSA, "sts.amazonaws.com")
        self.srv.fault("status", "aws_sts", status=503, count=1)
        self.expect_aws_error(self.arwwi(token), 503, "ServiceUnavailable")
        assert self.arwwi(token).status == 200
        # A target's fault leaves the others alone; "*" hits all.
        self.srv.fault("status", "google_sts", status=500)
        assert self.arwwi(token).status == 200
        self.expect_google_error(self.google_sts(broker_jwt(RSA, self.srv.google_jwt_audience)),
                                 500, "server_error")
        self.srv.fault("none")
        self.srv.fault("status", status=429, body={"error": "slow_down"},
                       headers={"Retry-After": "3"}, count=2)
        r = self.entra_token("x")
        assert r.status == 429 and r.headers["Retry-After"] == "3", r
        assert self.arwwi(token).status == 429
        assert self.arwwi(token).status == 200
        self.srv.fault("malformed", "entra_token", count=1)
        r = self.entra_token("x")
        assert r.status == 200, r
        try:
            r.json()
        except ValueError:
            pass
        else:
            raise AssertionError("malformed body parsed")
        self.srv.fault("oversize", "aws_sts", size=70000, count=1)
        r = self.arwwi(token)
        assert r.status == 200 and len(r.body) == 70000, len(r.body)
        self.srv.fault("close", "google_iam", count=1)
        try:
            self.iam("x")
        except (http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError):
            pass
        else:
            raise AssertionError("close fault answered")
        self.srv.fault("slow", "aws_sts", delay_ms=1500, count=1)
        try:
            post_form(self.srv.aws_endpoint + "/", {}, timeout=0.5)
        except (TimeoutError, socket.timeout, urllib.error.URLError) as e:
            assert "timed out" in str(e), e
        else:
            raise AssertionError("slow fault did not delay")
        s = self.srv.stats()
        assert s["requests"]["aws_sts"] == 7 and s["requests"]["google_iam"] == 1, s
        for args in (("explode",), ("status", "nowhere"), ("status", "*")):
            kw = {"status": 99} if args == ("status", "*") else {}
            try:
                self.srv.fault(*args, **kw)
            except RuntimeError as e:
                assert "400" in str(e), e
            else:
                raise AssertionError(f"fault {args} accepted")

    def test_ttl_and_stats(self):
        self.srv.set_ttl(entra=300, google_sts=120)
        r = self.entra_token(broker_jwt(RSA, cloud.ENTRA_AUDIENCE, sub=AZURE_SUBJECT))
        assert r.json()["expires_in"] == 300, r
        r = self.google_sts(broker_jwt(RSA, self.srv.google_jwt_audience))
        assert r.json()["expires_in"] == 120, r
        self.entra_token(broker_jwt(EC, cloud.ENTRA_AUDIENCE, sub=AZURE_SUBJECT))
        s = self.srv.stats()
        assert s["by_action"] == {"entra.token": 2, "google.sts.token": 1}, s
        assert s["ok"] == {"entra.token": 1, "google.sts.token": 1}, s
        assert s["errors"] == {"entra.token": {"invalid_client": 1}}, s
        assert s["last_error"]["code"] == "invalid_client", s
        assert s["last_error"]["message"].startswith("AADSTS5002738"), s
        self.srv.reset()
        s = self.srv.stats()
        assert s["by_action"] == {} and s["last_jwt"] == {}, s
        r = self.entra_token(broker_jwt(RSA, cloud.ENTRA_AUDIENCE, sub=AZURE_SUBJECT))
        assert r.json()["expires_in"] == 3599, r
        assert self.srv.introspect("nothing") == {"active": False}

    # --- the official SDKs ---

    def env(self, **extra):
        return self.srv.sdk_env(self.home, **extra)

    def web_identity_env(self, key=RSA, session="sdk-web-identity"):
        path = write_token(self.path(f"aws-{key.kid}.jwt"),
                           broker_jwt(key, "sts.amazonaws.com", sub="spiffe://test/aws-sdk"))
        return self.env(AWS_WEB_IDENTITY_TOKEN_FILE=path, AWS_ROLE_ARN=self.srv.aws_role_arn,
                        AWS_ROLE_SESSION_NAME=session)

    def credential_process_env(self):
        token = write_token(self.path("aws-credproc.jwt"),
                            broker_jwt(EC, "sts.amazonaws.com", sub="spiffe://test/credproc"))
        config = cloud.write_aws_config(
            self.path("aws-config"), profile="brokerd", region="us-east-1",
            credential_process=f"/usr/bin/python3 {self.cred_process} {self.srv.aws_endpoint} "
                               f"{self.srv.aws_role_arn} {token}")
        return self.env(AWS_CONFIG_FILE=config, AWS_PROFILE="brokerd")

    def expect_sdk_ok(self, r):
        assert r.ok, r
        return r.result

    def test_sdk_aws_sts_web_identity(self):
        for key in (RSA, EC):
            res = self.expect_sdk_ok(cloud.run_sdk("sdk_aws_sts.mjs", self.web_identity_env(key)))
            assert res["arn"] == ("arn:aws:sts::123456789012:assumed-role/brokerd-test/"
                                  "sdk-web-identity"), res
            assert res["account"] == "123456789012" and res["access_key_id"].startswith("ASIA")
            assert res["expiration"], res
        s = self.srv.stats()
        assert s["ok"] == {"AssumeRoleWithWebIdentity": 2, "GetCallerIdentity": 2}, s
        assert s["last_role_session_name"] == "sdk-web-identity", s
        assert s["last_jwt_claims"]["sub"] == "spiffe://test/aws-sdk", s
        assert s["last_user_agent"]["aws_sts"].startswith("aws-sdk-js/"), s

    def test_sdk_aws_sts_credential_process(self):
        res = self.expect_sdk_ok(cloud.run_sdk("sdk_aws_sts.mjs", self.credential_process_env()))
        assert res["arn"].endswith(":assumed-role/brokerd-test/credential-process"), res
        assert self.srv.introspect(res["access_key_id"])["sub"] == "spiffe://test/credproc"
        s = self.srv.stats()
        assert s["ok"] == {"AssumeRoleWithWebIdentity": 1, "GetCallerIdentity": 1}, s

    def test_sdk_aws_sts_refused(self):
        r = cloud.run_sdk("sdk_aws_sts.mjs", self.web_identity_env(ED))
        assert r.rc != 0 and r.error, r
        assert r.error["error"] == "InvalidIdentityTokenException", r
        assert "GetCallerIdentity" not in self.srv.stats()["by_action"]

    def test_sdk_aws_sts_retries_5xx(self):
        self.srv.fault("status", "aws_sts", status=503, count=1)
        self.expect_sdk_ok(cloud.run_sdk("sdk_aws_sts.mjs", self.web_identity_env()))
        assert self.srv.stats()["requests"]["aws_sts"] == 3

    def test_sdk_aws_bedrock(self):
        for env in (self.web_identity_env(), self.credential_process_env()):
            res = self.expect_sdk_ok(cloud.run_sdk("sdk_aws_bedrock.mjs",
                                                   {**env, "SDK_PROMPT": "hi there"}))
            assert res["text"] == "echo: hi there" and res["stop_reason"] == "end_turn", res
        s = self.srv.stats()
        assert s["ok"]["InvokeModel"] == 2, s
        assert s["last_bedrock"]["caller_arn"].endswith("/credential-process"), s
        # The same through the client's endpoint option.
        env = self.web_identity_env()
        env = {**env, "BEDROCK_ENDPOINT": env.pop("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")}
        self.expect_sdk_ok(cloud.run_sdk("sdk_aws_bedrock.mjs", env))

    def google_env(self, config, **extra):
        return self.env(GOOGLE_APPLICATION_CREDENTIALS=config, **extra)

    def test_sdk_google_executable(self):
        token = write_token(self.path("google-exec.jwt"),
                            broker_jwt(RSA, self.srv.google_jwt_audience, sub="spiffe://test/g"))
        env_out = self.path("google-exec-env.json")
        config = self.srv.google_credential_config(
            self.path("google-exec.json"),
            executable=f"{self.google_exec} {token} {env_out}")
        res = self.expect_sdk_ok(cloud.run_sdk("sdk_google.mjs", self.google_env(
            config, GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES="1", SDK_PROMPT="vertex hi")))
        assert res["client"] == "PluggableAuthClient", res
        assert res["service_account"] == self.srv.google_service_account, res
        assert res["vertex_text"] == "echo: vertex hi", res
        info = self.srv.introspect(res["access_token"])
        assert info["kind"] == "google_iam" and info["sub"] == "spiffe://test/g", info
        with open(env_out) as f:
            seen = json.load(f)
        assert seen["GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE"] == self.srv.google_audience, seen
        assert seen["GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL"] == \
            self.srv.google_service_account, seen
        s = self.srv.stats()
        assert s["last_vertex"]["token_kind"] == "iam", s
        assert s["ok"]["aiplatform.generateContent"] == 1, s
        # Without GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES the library refuses to run it.
        r = cloud.run_sdk("sdk_google.mjs", self.google_env(config))
        assert r.rc != 0 and "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES" in r.error["message"], r

    def test_sdk_google_file(self):
        token = write_token(self.path("google-file.jwt"),
                            broker_jwt(EC, self.srv.google_jwt_audience, sub="spiffe://test/gf"))
        for impersonate, kind in ((True, "iam"), (False, "sts")):
            config = self.srv.google_credential_config(self.path(f"google-file-{kind}.json"),
                                                       file=token, impersonate=impersonate)
            res = self.expect_sdk_ok(cloud.run_sdk("sdk_google.mjs", self.google_env(config)))
            assert res["client"] == "IdentityPoolClient", res
            assert res["vertex_text"] == "echo: hello from brokerd", res
            assert self.srv.introspect(res["access_token"])["kind"] == f"google_{kind}", res
            assert self.srv.stats()["last_vertex"]["token_kind"] == kind

    def test_sdk_google_refused(self):
        token = write_token(self.path("google-bad.jwt"),
                            broker_jwt(RSA, "https://wrong.test", sub="spiffe://test/g"))
        config = self.srv.google_credential_config(self.path("google-bad.json"), file=token)
        r = cloud.run_sdk("sdk_google.mjs", self.google_env(config))
        assert r.rc != 0 and r.error, r
        assert "invalid_grant" in json.dumps(r.error), r
        assert "aiplatform.generateContent" not in self.srv.stats()["by_action"]

    def test_sdk_azure(self):
        token = write_token(self.path("azure.jwt"),
                            broker_jwt(RSA, cloud.ENTRA_AUDIENCE, sub=AZURE_SUBJECT))
        res = self.expect_sdk_ok(cloud.run_sdk("sdk_azure.mjs",
                                               self.env(AZURE_FEDERATED_TOKEN_FILE=token)))
        left = res["expires_on_timestamp"] / 1000 - time.time()
        assert 3500 < left <= 3600, res
        assert self.srv.introspect(res["access_token"])["sub"] == AZURE_SUBJECT
        s = self.srv.stats()
        assert s["ok"]["entra.token"] == 1 and s["ok"]["entra.openid-configuration"] >= 1, s
        assert s["last_entra"]["scope"] == COGNITIVE, s
        assert "entra.instance-discovery" not in s["by_action"], s
        assert s["last_user_agent"]["entra_discovery"].startswith("azsdk-js-identity/"), s

    def test_sdk_azure_refused(self):
        for key, sub, code in ((RSA, "spiffe://test/intruder", "AADSTS70021"),
                               (EC, AZURE_SUBJECT, "AADSTS5002738")):
            token = write_token(self.path("azure-bad.jwt"),
                                broker_jwt(key, cloud.ENTRA_AUDIENCE, sub=sub))
            r = cloud.run_sdk("sdk_azure.mjs", self.env(AZURE_FEDERATED_TOKEN_FILE=token))
            assert r.rc != 0 and r.error and code in r.error["message"], r


def main():
    with tempfile.TemporaryDirectory(prefix="cloud-selftest-") as tmp:
        jwks_path = os.path.join(tmp, "broker-jwks.json")
        write_jwks(jwks_path, [RSA, EC, ED])
        srv = cloud.CloudServer(
            tmp, jwks_path, BROKER_ISS,
            google={"service_accounts": [cloud.DEFAULT_GOOGLE_SERVICE_ACCOUNT,
                                         {"email": OTHER_SA,
                                          "subjects": ["spiffe://test/allowed"]}]},
            entra={"subjects": [AZURE_SUBJECT]})
        t0 = time.monotonic()
        with srv:
            print(f"server ready in {time.monotonic() - t0:.1f} s: aws {srv.aws_endpoint} "
                  f"(tls {srv.aws_tls_endpoint}), google {srv.google_endpoint}, entra "
                  f"{srv.entra_endpoint}, control {srv.control_port}", flush=True)
            suite = SelfTest(srv, tmp, jwks_path)
            suite.run()
            suite.stop_server()
        return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
