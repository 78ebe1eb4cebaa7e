"""The cloud presets and the official cloud SDKs, end to end against loopback stand-ins of AWS
STS and Bedrock, Google STS, IAM Credentials and Vertex AI, and Entra ID (node/cloud_server.mjs,
modelled on the providers' documented requests and answers; see its header). Every stand-in
verifies the broker's JWT against the JWKS the broker publishes (signature, iss, aud, exp) and
AWS's checks SigV4 with the keys it issued, so a pass means the SDK, unchanged, got working
credentials out of brokerd:

- broker-side presets: aws_sts, gcp_sts (with impersonation), azure_ad;
- AWS SDK v3: GetCallerIdentity and Bedrock InvokeModel with credential_process = brokerctl,
  and with AWS_WEB_IDENTITY_TOKEN_FILE kept fresh by brokerctl's agent mode;
- google-auth-library external_account, executable-sourced (brokerctl) and file-sourced (the
  agent), then @google-cloud/vertexai generateContent;
- @azure/identity WorkloadIdentityCredential with the agent's token file."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import cloud
from harness import (ISSUER, BrokerTestCase, as_user, brokerctl_path, sanitizer_env,
                     token_claims, token_header)

AZURE_UID = 4243
AZURE_SUBJECT = "spiffe://test/azure-agent"
COGNITIVE = "https://cognitiveservices.azure.com/.default"


class CloudTestCase(BrokerTestCase):
    """One set of stand-ins per class (reset before each test), one broker per test."""

    start_broker = False

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="broker-cloud-")
        os.chmod(cls.tmp, 0o755)
        cls.pub = os.path.join(cls.tmp, "pub")
        cls.srv = cloud.CloudServer(cls.tmp, os.path.join(cls.pub, "jwks.json"), ISSUER,
                                    entra={"subjects": ["spiffe://test/uid/0", AZURE_SUBJECT]})
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.srv.reset()
        self.home = tempfile.mkdtemp(prefix="home-", dir=self.tmp)
        os.chmod(self.home, 0o777)

    def start(self):
        s = self.srv
        upstreams = {
            "aws": {"kind": "aws_sts", "role_arn": s.aws_role_arn,
                    "token_endpoint": s.aws_endpoint + "/"},
            "gcp": {"kind": "gcp_sts", "audience": s.google_audience,
                    "token_endpoint": s.google_sts_url, "ca_file": s.ca_file,
                    "service_account_impersonation_url": s.google_impersonation_url(),
                    "lifetime": "30m"},
            "azure": {"kind": "azure_ad", "tenant": s.entra_tenant_id,
                      "client_id": s.entra_client_id, "scope": COGNITIVE,
                      "authority_host": s.entra_authority_host, "ca_file": s.ca_file},
        }
        rules = [{"name": "root", "match": {"uid": 0}, "subject": "spiffe://test/uid/{uid}",
                  "audiences": ["sts.amazonaws.com", s.google_jwt_audience],
                  "upstreams": sorted(upstreams)},
                 {"name": "azure-agent", "match": {"uid": AZURE_UID}, "alg": "RS256",
                  "subject": AZURE_SUBJECT, "audiences": [s.entra_audience]}]
        b = self.broker(rules=rules, extra={"upstreams": upstreams, "publish_directory": self.pub})
        return b

    def sdk(self, b, script, **env):
        r = cloud.run_sdk(script, self.srv.sdk_env(self.home, BROKER_SOCKET=b.workload, **env))
        self.assertTrue(r.ok, repr(r))
        return r.result

    def brokerctl_cmd(self, b, *args):
        return " ".join([brokerctl_path(), "--socket", b.workload, *args])

    def agent(self, b, path, *args, user=None):
        """brokerctl's agent mode keeping `path` fresh; stopped (SIGTERM, exit 0) at cleanup."""
        cmd = [brokerctl_path(), "--socket", b.workload, "token", *args, "--write", path,
               "--refresh"]
        if user:
            cmd = list(user) + cmd
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=sanitizer_env())

        def stop():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=10)
            self.assertEqual(p.returncode, 0, err)
        self.addCleanup(stop)
        for _ in range(100):
            if os.path.exists(path):
                return p
            time.sleep(0.05)
        self.fail("the agent wrote no token file")


class PresetTest(CloudTestCase):
    def test_aws_sts(self):
        b = self.start()
        r = b.ctl("token", "--upstream", "aws", "--json")
        self.assertEqual(r.returncode, 0, r.stderr + b.read_log())
        out = json.loads(r.stdout)
        aws = out["aws"]
        self.assertTrue(aws["AccessKeyId"].startswith("ASIA"))
        self.assertTrue(aws["SecretAccessKey"] and aws["SessionToken"])
        self.assertNotIn("access_token", out)
        st = self.srv.stats()
        self.assertEqual(st["last_role_session_name"], "spiffe---test-uid-0")
        self.assertEqual(st["last_role_arn"], self.srv.aws_role_arn)
        self.assertEqual(str(st["last_duration_seconds"]), "3600")
        jwt = st["last_jwt"]["aws"]
        self.assertEqual(jwt["header"]["alg"], "ES256")
        self.assertEqual(jwt["claims"]["aud"], "sts.amazonaws.com")
        self.assertEqual(jwt["claims"]["sub"], "spiffe://test/uid/0")
        self.assertEqual(self.srv.introspect(aws["AccessKeyId"])["active"], True)
        # a hit: same credentials, no second AssumeRoleWithWebIdentity
        again = json.loads(b.ctl("token", "--upstream", "aws", "--json").stdout)["aws"]
        self.assertEqual(again, aws)
        self.assertEqual(self.srv.stats()["by_action"]["AssumeRoleWithWebIdentity"], 1)
        recs = [x for x in b.decisions() if x.get("upstream", {}).get("name") == "aws"]
        self.assertEqual([x["upstream"]["cache"] for x in recs], ["miss", "hit"])
        self.assertEqual(recs[0]["upstream"]["kind"], "aws_sts")
        self.assertEqual(recs[0]["token_sha256"],
                         hashlib.sha256(aws["SessionToken"].encode()).hexdigest())
        export = json.dumps(b.audit())
        self.assertNotIn(aws["SecretAccessKey"], export)
        self.assertNotIn(aws["SessionToken"], export)

    def test_aws_error_codes(self):
        b = self.start()
        self.srv.fault("status", target="aws_sts", status=400, body=(
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            "<Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Incorrect token "
            "audience</Message></Error><RequestId>x</RequestId></ErrorResponse>"),
            headers={"Content-Type": "text/xml"})
        r = b.ctl("token", "--upstream", "aws")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("InvalidIdentityToken", r.stderr)
        deny = b.decisions()[-1]
        self.assertEqual(deny["reason"], "upstream_denied")
        self.assertEqual(deny["upstream"]["error"], "InvalidIdentityToken")

    def test_gcp_sts_with_impersonation(self):
        b = self.start()
        r = b.ctl("token", "--upstream", "gcp", "--json")
        self.assertEqual(r.returncode, 0, r.stderr + b.read_log())
        out = json.loads(r.stdout)
        info = self.srv.introspect(out["access_token"])
        self.assertTrue(info["active"], info)
        st = self.srv.stats()
        self.assertEqual(st["by_action"]["google.sts.token"], 1)
        self.assertEqual(st["by_action"]["iamcredentials.generateAccessToken"], 1)
        jwt = st["last_jwt"]["google"]
        self.assertEqual(jwt["claims"]["aud"], self.srv.google_jwt_audience)
        self.assertIn(jwt["header"]["alg"], ("ES256", "RS256"))
        self.assertAlmostEqual(out["expires_at"], time.time() + 1800, delta=10)

    def test_azure_ad(self):
        b = self.start()
        r = b.ctl("token", "--upstream", "azure", "--json")
        self.assertEqual(r.returncode, 0, r.stderr + b.read_log())
        out = json.loads(r.stdout)
        self.assertEqual(out["token_type"], "Bearer")
        jwt = self.srv.stats()["last_jwt"]["entra"]
        self.assertEqual(jwt["header"]["alg"], "RS256")
        self.assertEqual(jwt["claims"]["aud"], "api://AzureADTokenExchange")
        self.assertEqual(jwt["claims"]["sub"], "spiffe://test/uid/0")
        self.assertTrue(self.srv.introspect(out["access_token"])["active"])


class SdkTest(CloudTestCase):
    def test_aws_credential_process_sts_and_bedrock(self):
        b = self.start()
        config = cloud.write_aws_config(
            os.path.join(self.home, "aws-config"), "brokerd",
            credential_process=self.brokerctl_cmd(b, "credentials", "--upstream", "aws",
                                                  "--format", "aws"),
            region="us-east-1")
        env = {"AWS_CONFIG_FILE": config, "AWS_PROFILE": "brokerd"}
        who = self.sdk(b, "sdk_aws_sts.mjs", **env)
        self.assertIn(":assumed-role/", who["arn"])
        self.assertTrue(who["arn"].endswith("/spiffe---test-uid-0"))
        reply = self.sdk(b, "sdk_aws_bedrock.mjs", **env)
        self.assertTrue(reply["text"])
        st = self.srv.stats()
        self.assertEqual(st["ok"]["GetCallerIdentity"], 1)
        self.assertEqual(st["ok"]["InvokeModel"], 1)
        # both SDK processes ran brokerctl; the broker exchanged once
        self.assertEqual(st["by_action"]["AssumeRoleWithWebIdentity"], 1)

    def test_aws_web_identity_token_file(self):
        b = self.start()
        path = os.path.join(self.home, "aws-token")
        self.agent(b, path, "--audience", "sts.amazonaws.com")
        who = self.sdk(b, "sdk_aws_sts.mjs", AWS_WEB_IDENTITY_TOKEN_FILE=path,
                       AWS_ROLE_ARN=self.srv.aws_role_arn, AWS_ROLE_SESSION_NAME="web")
        self.assertTrue(who["arn"].endswith("/web"))
        claims = self.srv.stats()["last_jwt"]["aws"]["claims"]
        self.assertEqual(claims["iss"], ISSUER)
        with open(path) as f:
            self.assertEqual(token_claims(f.read().strip())["jti"], claims["jti"])

    def test_google_executable_sourced_and_vertex(self):
        b = self.start()
        config = self.srv.google_credential_config(
            os.path.join(self.home, "gcp.json"),
            executable=self.brokerctl_cmd(b, "token", "--format", "gcp-executable",
                                          "--audience", self.srv.google_jwt_audience),
            timeout_millis=10000)
        out = self.sdk(b, "sdk_google.mjs", GOOGLE_APPLICATION_CREDENTIALS=config,
                       GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES="1")
        self.assertEqual(out["service_account"], self.srv.google_service_account)
        self.assertTrue(out["vertex_text"])
        self.assertEqual(self.srv.stats()["last_vertex"]["token_kind"], "iam")

    def test_google_file_sourced(self):
        b = self.start()
        path = os.path.join(self.home, "gcp-token")
        self.agent(b, path, "--audience", self.srv.google_jwt_audience)
        config = self.srv.google_credential_config(os.path.join(self.home, "gcp.json"),
                                                   file=path)
        out = self.sdk(b, "sdk_google.mjs", GOOGLE_APPLICATION_CREDENTIALS=config)
        self.assertTrue(out["access_token"])

    def test_azure_workload_identity(self):
        b = self.start()
        path = os.path.join(self.home, "azure-token")
        self.agent(b, path, "--audience", self.srv.entra_audience, user=as_user(AZURE_UID))
        with open(path) as f:
            self.assertEqual(token_header(f.read().strip())["alg"], "RS256")
        out = self.sdk(b, "sdk_azure.mjs", AZURE_FEDERATED_TOKEN_FILE=path)
        self.assertGreater(out["expires_on_timestamp"], time.time() * 1000)
        claims = self.srv.stats()["last_jwt"]["entra"]["claims"]
        self.assertEqual(claims["sub"], AZURE_SUBJECT)
