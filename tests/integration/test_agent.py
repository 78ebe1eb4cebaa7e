"""brokerctl for the cloud SDKs: Google's executable-sourced credentials (token --format
gcp-executable), AWS credential_process (credentials --format aws) and agent mode (token --write
FILE [--refresh]), which keeps a token file fresh for SDKs that read their token from a file.

Broker JWTs come from the real daemon and are checked with the harness's two JOSE verifiers. The
AWS format needs an aws_sts upstream's answer, and the upstream paths of agent mode an upstream
that hands out short-lived tokens on demand: those tests talk to ScriptedBroker, a socket that
answers the documented wire shapes (proto/PROTOCOL.md) the way a test script says, since what
they check is brokerctl's side. Where the official SDKs are installed (tests/integration/node:
google-auth-library, @aws-sdk/credential-provider-process), they read brokerctl's output
themselves."""

import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (BrokerTestCase, as_user, brokerctl_path, sanitizer_env, token_claims,
                     verify_token)

AUD = "https://api.test"
ATTACKER_UID = 4243
VICTIM_UID = 4244
NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
GCP_JWT = "urn:ietf:params:oauth:token-type:jwt"


def brokerctl(*args, env=None, timeout=30, prefix=None):
    e = sanitizer_env()
    e.pop("BROKER_SOCKET", None)
    for k in [k for k in e if k.startswith("GOOGLE_EXTERNAL_ACCOUNT_")]:
        del e[k]
    e.update(env or {})
    return subprocess.run(list(prefix or []) + [brokerctl_path(), *args], capture_output=True,
                          text=True, env=e, timeout=timeout)


def node_has(package):
    return shutil.which("node") is not None and os.path.isdir(
        os.path.join(NODE_DIR, "node_modules", package))


def run_node(script, env=None, timeout=60):
    """Runs an ES module with the packages of tests/integration/node; returns its parsed stdout
    (one JSON value)."""
    e = sanitizer_env()
    e.update(env or {})
    r = subprocess.run(["node", "--input-type=module", "-e", script], cwd=NODE_DIR,
                       capture_output=True, text=True, env=e, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"node failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return json.loads(r.stdout)


def wait_for(predicate, timeout, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    return predicate()


def read_or_none(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


class ScriptedBroker:
    """A workload socket whose answers a test scripts: answer(request dict) -> response dict.
    Speaks the framing of proto/PROTOCOL.md; records every request."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = []
        self.dir = tempfile.mkdtemp(prefix="broker-scripted-")
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, "broker.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _recv_exact(self, conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while True:
                    hdr = self._recv_exact(conn, 4)
                    if hdr is None:
                        break
                    body = self._recv_exact(conn, struct.unpack(">I", hdr)[0])
                    if body is None:
                        break
                    req = json.loads(body)
                    self.requests.append(req)
                    out = json.dumps(self.answer(req)).encode()
                    conn.sendall(struct.pack(">I", len(out)) + out)

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def aws_answer(expiration="2031-05-01T12:00:00Z", expires_at=1935403200, **over):
    aws = {"AccessKeyId": "ASIAEXAMPLEKEYID0001",
           "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
           "SessionToken": "FwoGZXIvYXdzEXAMPLESESSIONTOKEN//////////",
           "Expiration": expiration}
    aws.update(over)
    return {"ok": True, "aws": aws, "access_token": aws.get("SessionToken", ""),
            "token_type": "aws4_request", "expires_at": expires_at}


class GcpExecutableTest(BrokerTestCase):
    """token --format gcp-executable: https://google.aip.dev/auth/4117."""

    def gcp(self, *extra, audience=AUD, env=None, socket_path=None, prefix=None):
        return brokerctl("--socket", socket_path or self.b.workload, "token", "--format",
                         "gcp-executable", "--audience", audience, *extra, env=env,
                         prefix=prefix)

    def test_success_shape_and_nothing_on_stderr(self):
        r = self.gcp("--ttl", "300")
        self.assertEqual(r.returncode, 0, r.stdout)
        # the libraries read stdout and stderr as one stream and parse it as JSON
        self.assertEqual(r.stderr, "")
        self.assertTrue(r.stdout.endswith("}\n") and r.stdout.count("\n") == 1, r.stdout)
        resp = json.loads(r.stdout)
        self.assertEqual(list(resp), ["version", "success", "token_type", "id_token",
                                      "expiration_time"])
        self.assertEqual(resp["version"], 1)
        self.assertIs(resp["success"], True)
        self.assertEqual(resp["token_type"], GCP_JWT)
        claims = verify_token(resp["id_token"], self.b.jwks(), AUD)
        self.assertEqual(resp["expiration_time"], claims["exp"])
        self.assertAlmostEqual(claims["exp"] - time.time(), 300, delta=30)

    def test_denied_is_a_failure_response_with_nonzero_exit(self):
        r = self.gcp(audience="https://not-allowed.test")
        self.assertEqual(r.returncode, 3, r.stdout)
        self.assertEqual(r.stderr, "")
        resp = json.loads(r.stdout)
        self.assertEqual(list(resp), ["version", "success", "code", "message"])
        self.assertEqual(resp["version"], 1)
        self.assertIs(resp["success"], False)
        self.assertEqual(resp["code"], "denied")
        self.assertIn("whoami", resp["message"])  # says what to do

    def test_unreachable_broker_is_a_failure_response(self):
        r = self.gcp(socket_path="/nonexistent/broker.sock")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "")
        resp = json.loads(r.stdout)
        self.assertEqual((resp["success"], resp["code"]), (False, "unavailable"))
        self.assertIn("cannot reach the broker", resp["message"])

    def test_usage_errors_are_failure_responses_too(self):
        r = brokerctl("--socket", self.b.workload, "token", "--format", "gcp-executable",
                      "--upstream", "x")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "")
        self.assertEqual(json.loads(r.stdout)["code"], "usage")

    def test_saml_subject_token_type_is_refused(self):
        r = self.gcp(env={"GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE":
                          "urn:ietf:params:oauth:token-type:saml2"})
        self.assertEqual(r.returncode, 1)
        resp = json.loads(r.stdout)
        self.assertEqual(resp["code"], "unsupported_token_type")
        for t in (GCP_JWT, "urn:ietf:params:oauth:token-type:id_token"):
            r = self.gcp(env={"GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": t})
            self.assertEqual(r.returncode, 0, r.stdout)

    def test_output_file_gets_the_response_atomically_and_private(self):
        d = tempfile.mkdtemp(prefix="broker-gcp-")
        self.addCleanup(shutil.rmtree, d, True)
        out = os.path.join(d, "cache.json")
        r = self.gcp(env={"GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE": out},
                     prefix=["sh", "-c", 'umask 0; exec "$@"', "sh"])
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stderr, "")
        st = os.stat(out)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)  # whatever the umask
        self.assertEqual(read_or_none(out), r.stdout)
        self.assertEqual(os.listdir(d), ["cache.json"])  # no temporary file left
        # a failure leaves the cached success as it was
        r2 = self.gcp(audience="https://not-allowed.test",
                      env={"GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE": out})
        self.assertEqual(r2.returncode, 3)
        self.assertEqual(read_or_none(out), r.stdout)

    def test_output_file_that_cannot_be_written_still_answers_on_stdout(self):
        r = self.gcp(env={"GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE": "/nonexistent/dir/cache.json"})
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stderr, "")
        self.assertTrue(json.loads(r.stdout)["success"])

    @unittest.skipUnless(node_has("google-auth-library"), "google-auth-library not installed")
    def test_google_auth_library_takes_it(self):
        """The real library (Node google-auth-library) runs brokerctl, parses the response and
        caches it in output_file; its second retrieval is served from that file."""
        d = tempfile.mkdtemp(prefix="broker-gcp-")
        self.addCleanup(shutil.rmtree, d, True)
        out = os.path.join(d, "cache.json")
        cmd = f"{brokerctl_path()} --socket {self.b.workload} token --format gcp-executable " \
              f"--audience {AUD}"

        def client_script(command):
            return """
import { createRequire } from "node:module";
const require = createRequire(process.cwd() + "/");
const { PluggableAuthClient } = require("google-auth-library");
const client = new PluggableAuthClient({
  type: "external_account",
  audience: "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/b",
  subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
  token_url: "https://sts.googleapis.com/v1/token",
  credential_source: { executable: { command: %s, timeout_millis: 30000, output_file: %s } },
});
const out = [];
for (let i = 0; i < 2; i++) {
  try { out.push({ token: await client.retrieveSubjectToken() }); }
  catch (e) { out.push({ error: String(e.message) }); }
}
console.log(JSON.stringify(out));
""" % (json.dumps(command), json.dumps(out))

        env = {"GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "1"}
        got = run_node(client_script(cmd), env=env)
        self.assertIn("token", got[0], got)
        verify_token(got[0]["token"], self.b.jwks(), AUD)
        self.assertEqual(got[1], got[0])  # from the output file, not a second request
        self.assertEqual(len(self.b.decisions()), 1)

        os.unlink(out)
        bad = cmd.replace(AUD, "https://not-allowed.test")
        got = run_node(client_script(bad), env=env)
        self.assertIn("error", got[0])
        self.assertIn("denied", got[0]["error"])
        self.assertFalse(os.path.exists(out))


class AwsCredentialsTest(BrokerTestCase):
    """credentials --upstream NAME --format aws: AWS credential_process JSON."""

    def scripted(self, answer):
        s = ScriptedBroker(answer)
        self.addCleanup(s.close)
        return s

    def creds(self, sock, *extra):
        return brokerctl("--socket", sock, "credentials", "--upstream", "cloud", "--format",
                         "aws", *extra)

    def test_shape(self):
        s = self.scripted(lambda req: aws_answer())
        r = self.creds(s.path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        out = json.loads(r.stdout)
        self.assertEqual(list(out), ["Version", "AccessKeyId", "SecretAccessKey", "SessionToken",
                                     "Expiration"])
        aws = aws_answer()["aws"]
        self.assertEqual(out, {"Version": 1, **{k: aws[k] for k in aws}})
        self.assertEqual(s.requests, [{"op": "token", "upstream": "cloud"}])

    def test_expiration_is_rfc3339_utc_and_never_later_than_the_broker_says(self):
        s = self.scripted(lambda req: aws_answer(expiration="2031-05-01T14:00:00+02:00"))
        r = self.creds(s.path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["Expiration"], "2031-05-01T12:00:00Z")
        s2 = self.scripted(lambda req: aws_answer(expires_at=1935403200 - 600))
        r = self.creds(s2.path)
        self.assertEqual(json.loads(r.stdout)["Expiration"], "2031-05-01T11:50:00Z")

    def test_failures_print_nothing_on_stdout(self):
        cases = [
            # not an aws_sts upstream
            ({"ok": True, "access_token": "opaque", "token_type": "Bearer",
              "expires_at": int(time.time()) + 600}, 1, "aws_sts"),
            # malformed credentials
            (aws_answer(Expiration="soon"), 4, "Expiration"),
            (aws_answer(AccessKeyId=""), 4, "AccessKeyId"),
            # the broker says no, or the upstream refused the broker
            ({"ok": False, "error": {"code": "denied", "message": "upstream not allowed"}}, 3,
             "denied"),
            ({"ok": False, "error": {"code": "denied", "message": "refused",
                                     "upstream_error": "AccessDenied"}}, 3, "upstream test"),
            ({"ok": False, "error": {"code": "unavailable", "message": "STS is down"}}, 2,
             "STS is down"),
        ]
        for answer, code, words in cases:
            s = self.scripted(lambda req, a=answer: a)
            r = self.creds(s.path)
            self.assertEqual(r.returncode, code, f"{answer}: {r.stderr}")
            self.assertEqual(r.stdout, "", answer)
            self.assertIn(words, r.stderr, answer)
            self.assertNotIn("wJalrXUtnFEMI", r.stderr)
        r = brokerctl("--socket", "/nonexistent/broker.sock", "credentials", "--upstream",
                      "cloud", "--format", "aws")
        self.assertEqual((r.returncode, r.stdout), (2, ""))

    def test_real_broker_refuses_an_upstream_the_rule_does_not_name(self):
        r = self.creds(self.b.workload)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertIn("denied", r.stderr)

    def test_usage(self):
        for args in (["credentials", "--upstream", "cloud"],
                     ["credentials", "--format", "aws"],
                     ["credentials", "--upstream", "cloud", "--format", "gcp"],
                     ["credentials", "--upstream", "cloud", "--format", "aws", "--audience", "x"],
                     ["credentials", "--upstream", "cloud", "--format", "aws", "--json"]):
            r = brokerctl("--socket", self.b.workload, *args)
            self.assertEqual(r.returncode, 1, args)
            self.assertEqual(r.stdout, "", args)
            self.assertTrue(r.stderr.strip(), args)

    @unittest.skipUnless(node_has("@aws-sdk/credential-provider-process"),
                         "@aws-sdk/credential-provider-process not installed")
    def test_aws_sdk_takes_it(self):
        """The AWS SDK for JavaScript runs brokerctl as the profile's credential_process."""
        s = self.scripted(lambda req: aws_answer())
        d = tempfile.mkdtemp(prefix="broker-aws-")
        self.addCleanup(shutil.rmtree, d, True)
        config = os.path.join(d, "config")
        with open(config, "w") as f:
            f.write("[profile brokerd]\ncredential_process = "
                    f"{brokerctl_path()} --socket {s.path} credentials --upstream cloud "
                    "--format aws\n")
        got = run_node("""
import { createRequire } from "node:module";
const require = createRequire(process.cwd() + "/");
const { fromProcess } = require("@aws-sdk/credential-provider-process");
const c = await fromProcess({ profile: "brokerd", configFilepath: %s, filepath: %s })();
console.log(JSON.stringify({ ...c, expiration: c.expiration.toISOString() }));
""" % (json.dumps(config), json.dumps(os.path.join(d, "credentials"))))
        aws = aws_answer()["aws"]
        self.assertEqual(got["accessKeyId"], aws["AccessKeyId"])
        self.assertEqual(got["secretAccessKey"], aws["SecretAccessKey"])
        self.assertEqual(got["sessionToken"], aws["SessionToken"])
        self.assertEqual(got["expiration"], "2031-05-01T12:00:00.000Z")


class AgentTest(BrokerTestCase):
    """token --write FILE [--refresh] [--mode MODE]."""

    rules = [{"name": "root", "match": {"uid": 0}, "subject": "spiffe://test/uid/{uid}",
              "audiences": [AUD], "scopes": ["read", "write"]},
             {"name": "victim", "match": {"uid": VICTIM_UID}, "subject": "spiffe://test/victim",
              "audiences": [AUD]}]

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="broker-agent-")
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.file = os.path.join(self.dir, "token")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()
        super().tearDown()

    def agent(self, *args, socket_path=None):
        """Starts brokerctl token ... --write FILE --refresh; its stderr goes to a pipe."""
        e = sanitizer_env()
        e.pop("BROKER_SOCKET", None)
        p = subprocess.Popen(
            [brokerctl_path(), "--socket", socket_path or self.b.workload, "token", *args,
             "--write", self.file, "--refresh"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=e)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        t = time.time()
        p.send_signal(sig)
        rc = p.wait(timeout=5)
        elapsed = time.time() - t
        log = p.stderr.read()
        return rc, elapsed, log

    def test_write_once(self):
        r = brokerctl("--socket", self.b.workload, "token", "--audience", AUD, "--scope", "read",
                      "--write", self.file, "--mode", "0640",
                      prefix=["sh", "-c", 'umask 077; exec "$@"', "sh"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual((r.stdout, r.stderr), ("", ""))
        st = os.lstat(self.file)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)  # the mode asked for, not the umask's
        token = read_or_none(self.file)
        self.assertFalse(token.endswith("\n"))  # the SDKs send the file's bytes as they are
        self.assertEqual(verify_token(token, self.b.jwks(), AUD)["scope"], "read")
        self.assertEqual(os.listdir(self.dir), ["token"])

        r = brokerctl("--socket", self.b.workload, "token", "--audience", AUD, "--write",
                      self.file)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(self.file).st_mode), 0o600)  # the default

    def test_write_once_failures_leave_the_file(self):
        with open(self.file, "w") as f:
            f.write("old")
        r = brokerctl("--socket", self.b.workload, "token", "--audience",
                      "https://not-allowed.test", "--write", self.file)
        self.assertEqual(r.returncode, 3)
        self.assertIn("denied", r.stderr)
        r = brokerctl("--socket", "/nonexistent/broker.sock", "token", "--audience", AUD,
                      "--write", self.file)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(read_or_none(self.file), "old")

    def test_usage(self):
        w = ["--write", self.file]
        for args in (["--audience", AUD, "--refresh"], ["--audience", AUD, "--mode", "0600"],
                     ["--refresh"] + w, ["--audience", AUD, "--json"] + w,
                     ["--audience", AUD, "--format", "gcp-executable"] + w,
                     ["--upstream", "u", "--ttl", "5"] + w,
                     ["--audience", AUD, "--write", ""],
                     ["--audience", AUD, "--write", self.dir]):
            r = brokerctl("--socket", self.b.workload, "token", *args)
            self.assertEqual(r.returncode, 1, f"{args}: {r.stderr}")
            self.assertTrue(r.stderr.strip(), args)
        r = brokerctl("--socket", self.b.workload, "token", "--audience", AUD, "--write",
                      os.path.join(self.dir, "missing", "token"), "--refresh")
        self.assertEqual(r.returncode, 1, r.stderr)  # refused at once, not retried forever
        self.assertIn("directory must exist", r.stderr)
        self.assertEqual(os.listdir(self.dir), [])

    def test_modes_are_parsed_strictly(self):
        for mode in ("0666", "0622", "0755", "0700", "0601", "4600", "1600", "0200", "0000",
                     "0o600", "600 ", " 600", "+600", "0x180", "8", "", "00600"):
            r = brokerctl("--socket", self.b.workload, "token", "--audience", AUD, "--write",
                          self.file, "--mode", mode)
            self.assertEqual(r.returncode, 1, f"{mode!r}: {r.stderr}")
            self.assertIn("--mode", r.stderr)
        self.assertFalse(os.path.exists(self.file))
        for mode, want in (("600", 0o600), ("0644", 0o644), ("440", 0o440), ("0400", 0o400)):
            r = brokerctl("--socket", self.b.workload, "token", "--audience", AUD, "--write",
                          self.file, "--mode", mode)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(stat.S_IMODE(os.stat(self.file).st_mode), want)

    def test_refresh_replaces_before_expiry_and_survives_the_broker_going_away(self):
        p = self.agent("--audience", AUD, "--ttl", "5")
        first = wait_for(lambda: read_or_none(self.file), 10)
        self.assertTrue(first, "no token file")
        st1 = os.stat(self.file)
        exp1 = verify_token(first, self.b.jwks(), AUD)["exp"]
        self.assertEqual(stat.S_IMODE(st1.st_mode), 0o600)

        # rewritten at 80 % of the lifetime: before the first token expires
        second = wait_for(lambda: (t := read_or_none(self.file)) != first and t, 10)
        self.assertTrue(second, "not rewritten")
        self.assertLess(time.time(), exp1)
        self.assertNotEqual(second, first)
        st2 = os.stat(self.file)
        self.assertNotEqual(st2.st_ino, st1.st_ino)  # a new file renamed over the old one
        verify_token(second, self.b.jwks(), AUD)
        self.assertEqual(stat.S_IMODE(st2.st_mode), 0o600)

        # broker gone: the file stays as it is, the agent keeps trying
        jwks = self.b.jwks()
        self.b.stop()
        held = read_or_none(self.file)
        exp_held = token_claims(held)["exp"]
        time.sleep(max(0, exp_held - time.time()) + 2)  # past its refresh and its expiry
        self.assertIsNone(p.poll(), "the agent gave up")
        self.assertEqual(read_or_none(self.file), held)

        # broker back: refreshed again within the backoff (at most 30 s, here less)
        self.b.start()
        third = wait_for(lambda: (t := read_or_none(self.file)) != held and t, 20)
        self.assertTrue(third, "not refreshed after the broker came back")
        verify_token(third, self.b.jwks(), AUD)

        rc, elapsed, log = self.stop(p)
        self.assertEqual(rc, 0, log)
        self.assertLess(elapsed, 2, log)
        self.assertIn("retrying in", log)
        self.assertIn("cannot reach the broker", log)
        self.assertIn("Stopping on SIGTERM", log)
        for t in (first, second, held, third):
            self.assertNotIn(t, log)  # never the token
            self.assertNotIn(t.split(".")[2], log)
        self.assertTrue(os.path.exists(self.file))  # kept after stopping
        self.assertEqual(sorted(os.listdir(self.dir)), ["token"])
        self.assertTrue(jwks["keys"])

    def test_backoff_waits_longer_each_time(self):
        p = self.agent("--audience", AUD, socket_path=os.path.join(self.dir, "nobody.sock"))
        time.sleep(7.5)  # attempts at 0, 1, 3, 7 s
        rc, _, log = self.stop(p, signal.SIGINT)
        self.assertEqual(rc, 0, log)
        waits = [l.split("retrying in ")[1] for l in log.splitlines() if "retrying in" in l]
        # the attempt due at 7 s may come just after the signal on a loaded machine
        self.assertIn(waits, (["1 s.", "2 s.", "4 s."], ["1 s.", "2 s.", "4 s.", "8 s."]), log)
        self.assertIn("Stopping on SIGINT", log)
        self.assertFalse(os.path.exists(self.file))

    def test_denied_is_retried_and_logged(self):
        p = self.agent("--audience", "https://not-allowed.test")
        time.sleep(1.5)
        self.assertIsNone(p.poll())
        rc, _, log = self.stop(p)
        self.assertEqual(rc, 0, log)
        log_lines = [l for l in log.splitlines() if "denied" in l]
        self.assertGreaterEqual(len(log_lines), 2, log)
        self.assertIn("whoami", log_lines[0])
        self.assertFalse(os.path.exists(self.file))

    def test_bad_request_is_not_retried(self):
        p = self.agent("--audience", AUD, "--scope", "has space")
        rc = p.wait(timeout=10)
        log = p.stderr.read()
        self.assertEqual(rc, 1, log)
        self.assertIn("bad_request", log)
        self.assertIn("not retrying", log)

    def test_sigterm_while_waiting_is_prompt(self):
        p = self.agent("--audience", AUD, "--ttl", "600")
        self.assertTrue(wait_for(lambda: read_or_none(self.file), 10))
        time.sleep(0.3)
        rc, elapsed, log = self.stop(p)
        self.assertEqual(rc, 0, log)
        self.assertLess(elapsed, 1, log)
        self.assertEqual(len([l for l in log.splitlines() if "Wrote a new token" in l]), 1, log)

    def test_upstream_access_token(self):
        n = [0]

        def answer(req):
            n[0] += 1
            return {"ok": True, "access_token": f"upstream-token-{n[0]}", "token_type": "Bearer",
                    "expires_at": int(time.time()) + 2}

        s = ScriptedBroker(answer)
        self.addCleanup(s.close)
        p = self.agent("--upstream", "corp", "--scope", "read", socket_path=s.path)
        self.assertTrue(wait_for(lambda: read_or_none(self.file) == "upstream-token-2", 10),
                        read_or_none(self.file))
        rc, _, log = self.stop(p)
        self.assertEqual(rc, 0, log)
        self.assertEqual(s.requests[0], {"op": "token", "upstream": "corp", "scopes": ["read"]})
        self.assertNotIn("upstream-token-", log)

    def test_upstream_refusal_points_at_the_upstream(self):
        s = ScriptedBroker(lambda req: {"ok": False, "error": {
            "code": "denied", "message": "the upstream refused", "upstream_error":
            "invalid_client"}})
        self.addCleanup(s.close)
        r = brokerctl("--socket", s.path, "token", "--upstream", "corp", "--write", self.file)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("invalid_client", r.stderr)
        self.assertIn("brokerctl upstream test corp", r.stderr)
        self.assertNotIn("whoami", r.stderr)  # no rule of ours is missing
        self.assertFalse(os.path.exists(self.file))

    # --- hostile setups -----------------------------------------------------------------------

    def sticky_dir_and_target(self):
        """A 1777 directory shared with another user, and outside it a file that matters to the
        victim (0666: only never following a link keeps it intact)."""
        shared = os.path.join(self.dir, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o1777)
        target = os.path.join(self.dir, "precious")
        with open(target, "w") as f:
            f.write("precious content")
        os.chmod(target, 0o666)
        return shared, target

    def plant_link(self, target, link):
        """The other user makes link a symlink to target."""
        subprocess.run(as_user(ATTACKER_UID) + ["ln", "-s", target, link], check=True)
        self.assertEqual(os.lstat(link).st_uid, ATTACKER_UID)

    def sticky_dir_with_planted_link(self):
        """sticky_dir_and_target(), and FILE planted in the directory as a symlink to the
        target."""
        shared, target = self.sticky_dir_and_target()
        link = os.path.join(shared, "token")
        self.plant_link(target, link)
        return shared, link, target

    def test_planted_symlink_is_replaced_not_followed(self):
        shared, link, target = self.sticky_dir_with_planted_link()
        r = brokerctl("--socket", self.b.workload, "token", "--audience", AUD, "--write", link)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read_or_none(target), "precious content")  # target untouched
        st = os.lstat(link)
        self.assertTrue(stat.S_ISREG(st.st_mode))  # the link itself was replaced
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (0, 0o600))
        verify_token(read_or_none(link), self.b.jwks(), AUD)
        self.assertEqual(os.listdir(shared), ["token"])

    def test_planted_symlink_of_another_user_stops_a_non_root_writer(self):
        """The sticky bit keeps the victim from replacing the attacker's link: the write fails,
        and neither the link nor its target changes."""
        shared, link, target = self.sticky_dir_with_planted_link()
        r = brokerctl("--socket", self.b.workload, "token", "--audience", AUD, "--write", link,
                      prefix=as_user(VICTIM_UID))
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("Cannot write the token", r.stderr)
        self.assertEqual(read_or_none(target), "precious content")
        self.assertTrue(stat.S_ISLNK(os.lstat(link).st_mode))
        self.assertEqual(os.listdir(shared), ["token"])  # its temporary file was removed

    def test_names_planted_in_the_directory_are_never_opened(self):
        """Symlinks planted under the temporary names an attacker might guess are not followed:
        the temporary file is created with O_EXCL|O_NOFOLLOW under a random name."""
        shared, target = self.sticky_dir_and_target()
        planted = [os.path.join(shared, n) for n in
                   ("token.tmp", ".token.tmp", ".brokerctl-0000000000000000.tmp", "token~")]
        for n in planted:
            self.plant_link(target, n)
        f = os.path.join(shared, "token")
        for _ in range(3):
            r = brokerctl("--socket", self.b.workload, "token", "--audience", AUD, "--write", f)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read_or_none(target), "precious content")
        self.assertEqual(sorted(os.listdir(shared)),
                         sorted(os.path.basename(n) for n in planted + [f]))


if __name__ == "__main__":
    unittest.main()
