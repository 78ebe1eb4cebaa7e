"""Loopback stand-ins for the cloud services that take brokerd's JWTs (AWS STS and Bedrock,
Google STS, IAM Credentials and Vertex AI, Microsoft Entra ID), run by node/cloud_server.mjs,
and the drivers that run the clouds' official SDKs against them (node/sdk_*.mjs). Each stand-in
verifies the broker JWT against the broker's JWKS file, read afresh on every request.

Uses only the standard library, make_pki from oauth.py, and `node` on PATH with the packages of
node/package.json installed (npm ci --prefix tests/integration/node).

    with CloudServer(tmpdir, jwks_path, "https://broker.test",
                     entra={"subjects": ["spiffe://test/azure"]}) as srv:
        env = srv.sdk_env(home, AWS_WEB_IDENTITY_TOKEN_FILE=..., AWS_ROLE_ARN=srv.aws_role_arn,
                          AWS_ROLE_SESSION_NAME="s1")
        r = run_sdk("sdk_aws_sts.mjs", env)     # r.ok, r.result["arn"], r.error, r.stderr
        srv.stats()["by_action"]["AssumeRoleWithWebIdentity"], srv.fault("status", "aws_sts", ...)

Listeners (all 127.0.0.1, ports picked by the server): aws (plain http: STS at POST /, Bedrock
at POST /model/{id}/invoke), aws_tls (the same over https), google (https: /v1/token,
/v1/projects/-/serviceAccounts/{email}:generateAccessToken,
/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent), entra (https:
/{tenant}/v2.0/.well-known/openid-configuration, /{tenant}/discovery/v2.0/keys,
/{tenant}/oauth2/v2.0/token, /common/discovery/instance), and control (plain http).
The https listeners use make_pki's CA (ca_file); SDK processes trust it via NODE_EXTRA_CA_CERTS.

What each stand-in checks (all: the JWT's signature against the broker JWKS, iss = the broker
issuer, exp, with 5 s of clock tolerance; a JWKS file that cannot be read is AWS's
IDPCommunicationError, and no key for the others):
  AWS AssumeRoleWithWebIdentity: aud = aws["audience"]; RS256 or ES256 only; RoleArn in
    aws["account_id"] (and among aws["roles"] with their subjects, if given); RoleSessionName
    [\\w+=,.@-]{2,64}; DurationSeconds 900..43200 and <= aws["max_session_duration"].
    Credentials are ASIA... keys; GetCallerIdentity (service sts) and InvokeModel (service
    bedrock) must carry a SigV4 signature made with them and their session token.
  Google STS: audience = a configured provider's resource name; aud = one of its allowed
    audiences (default: "https:" + the resource name, or the resource name itself); RS256 or
    ES256; iat required, exp - iat <= 24 h, sub <= 127 bytes. IAM generateAccessToken needs an
    STS token, the project "-", a configured service account (whose "subjects", if given, must
    include the JWT's sub), scope list, lifetime "Ns" <= 43200. Vertex needs an IAM token, or an
    STS one while google["vertex_accepts_federated"] (default true).
  Entra token: the configured tenant; grant_type client_credentials; scope RESOURCE/.default;
    a configured client_id; client_assertion_type jwt-bearer; RS256 only; a federated
    credential of that application with the JWT's iss, an aud in its audiences (default
    api://AzureADTokenExchange) and sub equal to its subject. Access tokens are RS256 JWTs
    signed by the stand-in (keys at /{tenant}/discovery/v2.0/keys).
"""

import json
import os
import shutil
import subprocess
import urllib.parse

from nodeserver import NODE_DIR, NodeServer
from oauth import make_pki

DEFAULT_AWS_ACCOUNT = "123456789012"
DEFAULT_AWS_ROLE = "brokerd-test"
DEFAULT_GOOGLE_PROJECT_NUMBER = "123456789012"
DEFAULT_GOOGLE_POOL = "brokerd-pool"
DEFAULT_GOOGLE_PROVIDER = "brokerd-oidc"
DEFAULT_GOOGLE_SERVICE_ACCOUNT = "brokerd-test@test-project.iam.gserviceaccount.com"
DEFAULT_ENTRA_TENANT = "72f1c2a4-5b0e-4d7a-9c1e-2b3f4a5d6e7f"
DEFAULT_ENTRA_CLIENT = "0d3c6f8a-1b2e-4c5d-8e9f-a0b1c2d3e4f5"
ENTRA_AUDIENCE = "api://AzureADTokenExchange"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"

FAULT_TARGETS = ("aws_sts", "bedrock", "google_sts", "google_iam", "vertex", "entra_token",
                 "entra_discovery")


def google_provider_name(project_number, pool, provider):
    return (f"//iam.googleapis.com/projects/{project_number}/locations/global/"
            f"workloadIdentityPools/{pool}/providers/{provider}")


class CloudServer(NodeServer):
    """node/cloud_server.mjs as a context manager (nodeserver.py: start, stop, stderr()).

    aws:    {"audience" ("sts.amazonaws.com"), "account_id" ("123456789012"), "roles" (None: any
            role of the account; else [{"arn", "subjects" (optional list)}]),
            "max_session_duration" (3600, as a new IAM role has)}
    google: {"project_number", "pool", "provider" (make the one provider's resource name),
            "allowed_audiences" (None: the provider's defaults), "service_accounts" (list of
            emails or {"email", "subjects"}; default one: DEFAULT_GOOGLE_SERVICE_ACCOUNT),
            "vertex_accepts_federated" (True), "providers" (a full list of {"name",
            "allowed_audiences", "issuer"} instead of the one made from the ids above)}
    entra:  {"tenant_id", "client_id", "subjects" (federated subjects of that application, all
            with issuer = broker_issuer and audience api://AzureADTokenExchange), or
            "applications" ([{"client_id", "federated_credentials": [{"subject", "issuer",
            "audiences"}]}]) for full control}

    After start(): aws_endpoint (http://...), aws_tls_endpoint, google_endpoint, entra_endpoint
    (= entra_authority_host), google_sts_url, vertex_api_endpoint ("127.0.0.1:PORT"),
    ca_file, ports, control_port; and the configured names: aws_role_arn, aws_audience,
    google_audience (provider resource name), google_jwt_audience (the default allowed aud,
    "https://iam.googleapis.com/projects/..."), google_service_account, entra_tenant_id,
    entra_client_id, entra_audience.
    """

    NAME = "cloud"

    def __init__(self, tmpdir, broker_jwks_path, broker_issuer, aws=None, google=None,
                 entra=None):
        super().__init__(tmpdir)
        self.broker_jwks_path = broker_jwks_path
        self.broker_issuer = broker_issuer

        aws = dict(aws or {})
        self.aws_audience = aws.setdefault("audience", "sts.amazonaws.com")
        account = aws.setdefault("account_id", DEFAULT_AWS_ACCOUNT)
        aws.setdefault("roles", None)
        aws.setdefault("max_session_duration", 3600)
        self.aws_role_arn = (aws["roles"][0]["arn"] if aws["roles"]
                             else f"arn:aws:iam::{account}:role/{DEFAULT_AWS_ROLE}")
        self.aws_config = aws

        google = dict(google or {})
        name = google_provider_name(google.pop("project_number", DEFAULT_GOOGLE_PROJECT_NUMBER),
                                    google.pop("pool", DEFAULT_GOOGLE_POOL),
                                    google.pop("provider", DEFAULT_GOOGLE_PROVIDER))
        allowed = google.pop("allowed_audiences", None)
        google.setdefault("providers", [{"name": name, "allowed_audiences": allowed}])
        google.setdefault("service_accounts", [DEFAULT_GOOGLE_SERVICE_ACCOUNT])
        google.setdefault("vertex_accepts_federated", True)
        self.google_audience = google["providers"][0]["name"]
        self.google_jwt_audience = "https:" + self.google_audience
        first_sa = google["service_accounts"][0] if google["service_accounts"] else None
        self.google_service_account = (first_sa["email"] if isinstance(first_sa, dict)
                                       else first_sa)
        self.google_config = google

        entra = dict(entra or {})
        self.entra_tenant_id = entra.pop("tenant_id", DEFAULT_ENTRA_TENANT)
        client_id = entra.pop("client_id", DEFAULT_ENTRA_CLIENT)
        subjects = entra.pop("subjects", [])
        if "applications" not in entra:
            entra["applications"] = [{"client_id": client_id, "federated_credentials": [
                {"subject": s, "issuer": broker_issuer, "audiences": [ENTRA_AUDIENCE]}
                for s in subjects]}]
        entra["tenant_id"] = self.entra_tenant_id
        self.entra_client_id = entra["applications"][0]["client_id"]
        self.entra_audience = ENTRA_AUDIENCE
        self.entra_config = entra

        self.pki = None
        self.ca_file = None
        self.aws_endpoint = self.aws_tls_endpoint = None
        self.google_endpoint = self.entra_endpoint = self.entra_authority_host = None
        self.google_sts_url = self.vertex_api_endpoint = None
        self.ports = None

    def start(self):
        self.pki = make_pki(os.path.join(self.tmpdir, "cloud-pki"))
        self.ca_file = self.pki["ca"]
        config = {
            "aws_port": 0, "aws_tls_port": 0, "google_port": 0, "entra_port": 0,
            "control_port": 0,
            "cert": self.pki["cert"], "key": self.pki["key"],
            "broker_jwks": self.broker_jwks_path,
            "broker_issuer": self.broker_issuer,
            "aws": self.aws_config,
            "google": self.google_config,
            "entra": self.entra_config,
        }
        ready = self._launch(config)
        self.aws_endpoint = ready["aws_endpoint"]
        self.aws_tls_endpoint = ready["aws_tls_endpoint"]
        self.google_endpoint = ready["google_endpoint"]
        self.entra_endpoint = self.entra_authority_host = ready["entra_endpoint"]
        self.ports = ready["ports"]
        self.google_sts_url = self.google_endpoint + "/v1/token"
        self.vertex_api_endpoint = urllib.parse.urlsplit(self.google_endpoint).netloc
        return self

    # --- endpoints and SDK configuration ------------------------------------------------

    def google_impersonation_url(self, email=None):
        email = email or self.google_service_account
        return (f"{self.google_endpoint}/v1/projects/-/serviceAccounts/"
                f"{email}:generateAccessToken")

    def google_credential_config(self, path, executable=None, file=None, impersonate=True,
                                 timeout_millis=None, output_file=None,
                                 token_lifetime_seconds=None, subject_token_type=TYPE_JWT,
                                 audience=None):
        """Writes an external_account credential configuration (as `gcloud iam
        workload-identity-pools create-cred-config` makes) at path and returns path.
        executable: the command (absolute path first; split on spaces, no shell) that prints
        Google's executable-sourced response; file: a file holding the JWT (text format).
        impersonate: True for google_service_account, an email, or False for none."""
        if (executable is None) == (file is None):
            raise ValueError("give exactly one of executable= and file=")
        if executable is not None:
            source = {"executable": {"command": executable}}
            if timeout_millis is not None:
                source["executable"]["timeout_millis"] = timeout_millis
            if output_file is not None:
                source["executable"]["output_file"] = output_file
        else:
            source = {"file": file, "format": {"type": "text"}}
        config = {
            "type": "external_account",
            "audience": audience or self.google_audience,
            "subject_token_type": subject_token_type,
            "token_url": self.google_sts_url,
            "credential_source": source,
            "universe_domain": "googleapis.com",
        }
        if impersonate:
            config["service_account_impersonation_url"] = self.google_impersonation_url(
                None if impersonate is True else impersonate)
            if token_lifetime_seconds is not None:
                config["service_account_impersonation"] = {
                    "token_lifetime_seconds": token_lifetime_seconds}
        with open(path, "w") as f:
            json.dump(config, f, indent=1)
        return path

    def sdk_env(self, home, **extra):
        """A clean environment for the sdk_*.mjs drivers: nothing inherited from this process
        but PATH (no AWS_*, GOOGLE_*, AZURE_*, proxies), HOME=home (created; no ~/.aws), IMDS
        and the GCE metadata server off, the test CA trusted, and every SDK pointed at the
        stand-ins. extra adds or overrides variables (None removes one)."""
        os.makedirs(home, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "LANG": "C.UTF-8",
            "NODE_EXTRA_CA_CERTS": self.ca_file,
            "NO_COLOR": "1",
            # AWS: no shared files but those a test names; IMDS off (it would time out).
            "AWS_CONFIG_FILE": os.path.join(home, "aws-config-none"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "aws-credentials-none"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_STS": self.aws_endpoint,
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.aws_tls_endpoint,
            # Google: never probe the metadata server.
            "METADATA_SERVER_DETECTION": "none",
            "VERTEX_API_ENDPOINT": self.vertex_api_endpoint,
            # Azure: what the AKS workload identity webhook sets, but the token file.
            "AZURE_AUTHORITY_HOST": self.entra_authority_host,
            "AZURE_TENANT_ID": self.entra_tenant_id,
            "AZURE_CLIENT_ID": self.entra_client_id,
        }
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    # --- control listener ---------------------------------------------------------------

    def stats(self):
        """{"requests": {target: n} (every request that reached the endpoint, faulted ones
        included), "by_action": {action: n}, "ok": {action: n}, "errors": {action: {code: n}},
        "last_error": {"action", "status", "code", "message"}, "last_user_agent": {target: ua},
        "last_jwt": {"aws"|"google"|"entra": {"header", "claims"}} (unverified: as presented),
        "last_jwt_claims", "last_role_session_name", "last_role_arn", "last_duration_seconds",
        "last_sigv4": {"access_key_id", "date", "region", "service", "signed_headers"},
        "last_caller_arn", "last_bedrock": {"model_id", "prompt", "caller_arn"},
        "last_google_sts": {"grant_type", "audience", "scope", "requested_token_type",
        "subject_token_type", "options"}, "last_google_iam": {"service_account", "scope",
        "lifetime", "sub"}, "last_vertex": {"api_version", "project", "location", "model",
        "prompt", "token_kind": iam|sts, "principal"}, "last_entra": {"tenant", "params"
        (client_assertion shown as "(present)"), "client_id", "scope", "assertion_sub"}}.
        Actions: AssumeRoleWithWebIdentity, GetCallerIdentity, InvokeModel, sts:unknown,
        google.sts.token, iamcredentials.generateAccessToken, aiplatform.generateContent,
        entra.token, entra.openid-configuration, entra.keys, entra.instance-discovery.
        Error codes are the provider's (InvalidIdentityToken, invalid_grant, UNAUTHENTICATED,
        invalid_client, ...)."""
        return self._control("GET", "/stats")

    def reset(self):
        """Zero the counters, clear faults and ttl overrides (issued credentials stay valid)."""
        return self._control("POST", "/reset", {})

    def fault(self, mode, target="*", **kw):
        """Make requests to target (one of FAULT_TARGETS, or "*" for all) fail: mode is none |
        status (status=, body= (default: an error in the provider's shape: for aws_sts
        Throttling on 400/429, InternalFailure on 500, else ServiceUnavailable), headers=) | slow
        (delay_ms=, then answers normally) | malformed | oversize (size=) | close; count=K
        limits it to the next K requests. A target's own fault wins over "*"'s;
        fault("none") clears them all."""
        return self._control("POST", "/fault", {"mode": mode, "target": target, **kw})

    def set_ttl(self, **seconds):
        """Lifetimes of what is issued from now on, whatever was asked: aws= (credentials'
        Expiration), google_sts=, google_iam=, entra= (expires_in); None restores the default."""
        return self._control("POST", "/ttl", seconds)

    def introspect(self, token):
        """{"active": False} or {"active": True, "kind": aws|google_sts|google_iam|entra, "sub"
        (the broker JWT's), "exp", ...}: token is an AWS access key id or a bearer token."""
        return self._control("GET", "/introspect?token=" + urllib.parse.quote(token, safe=""))


# --- SDK drivers ------------------------------------------------------------------------

class SdkResult:
    """rc, result (the driver's JSON line, or None), error (its JSON error line on stderr, or
    None), stdout, stderr; ok is rc == 0 with a result."""

    def __init__(self, rc, stdout, stderr):
        self.rc, self.stdout, self.stderr = rc, stdout, stderr
        self.result = None
        self.error = None
        lines = stdout.strip().splitlines()
        if lines:
            try:
                self.result = json.loads(lines[-1])
            except ValueError:
                pass
        for line in reversed(stderr.strip().splitlines()):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "error" in obj:
                self.error = obj
                break

    @property
    def ok(self):
        return self.rc == 0 and self.result is not None

    def __repr__(self):
        return (f"SdkResult(rc={self.rc}, result={self.result!r}, error={self.error!r}, "
                f"stderr={self.stderr[-2000:]!r})")


def run_sdk(script, env, args=(), timeout=90):
    """Runs node/SCRIPT (e.g. "sdk_aws_sts.mjs") with env (see CloudServer.sdk_env)."""
    node = shutil.which("node", path=env.get("PATH")) or shutil.which("node")
    proc = subprocess.run([node, os.path.join(NODE_DIR, script), *args], cwd=NODE_DIR, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return SdkResult(proc.returncode, proc.stdout.decode(errors="replace"),
                     proc.stderr.decode(errors="replace"))


def write_aws_config(path, profile="default", **settings):
    """An AWS shared config file with one profile (e.g. credential_process="CMD ARGS",
    region="us-east-1"); use with AWS_CONFIG_FILE=path and AWS_PROFILE=profile."""
    section = "default" if profile == "default" else f"profile {profile}"
    lines = [f"[{section}]"] + [f"{k} = {v}" for k, v in settings.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
