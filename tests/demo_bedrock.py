"""make demo, second part: the scenario brokerd is for. A container-like process (its own cgroup,
another uid, no key anywhere) calls Amazon Bedrock with the unchanged AWS SDK for JavaScript:
the SDK runs `brokerctl credentials --upstream bedrock --format aws` as its credential_process,
the broker trades its JWT for the caller at AWS STS (AssumeRoleWithWebIdentity), and the SDK
signs InvokeModel with the session it got. STS and Bedrock are loopback stand-ins
(tests/integration/node/cloud_server.mjs) that verify the broker's JWT against its published
JWKS and the SigV4 signature with the keys they issued. Ends with the grant records.

Run by tests/demo.sh (BROKER_BUILD, as root); needs node and `npm ci --prefix
tests/integration/node` (make deps does both)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "integration"))
import cloud  # noqa: E402
from harness import Broker, bin_dir, brokerctl_path  # noqa: E402

UID = 4244
CGROUP2 = "/sys/fs/cgroup/unified" if os.path.ismount("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
SCOPE = "demo.slice/web-container.scope"
ISSUER = "https://broker.demo.internal"


def step(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def main():
    if not shutil.which("node") or not os.path.isdir(os.path.join(cloud.NODE_DIR, "node_modules")):
        print("(skipped: needs node and npm ci --prefix tests/integration/node; make deps)")
        return 0
    tmp = tempfile.mkdtemp(prefix="brokerd-demo-bedrock.")
    os.chmod(tmp, 0o755)
    cg = os.path.join(CGROUP2, SCOPE)
    broker = srv = None
    try:
        # What the container's image holds besides brokerctl (harness.py's copy, which any uid
        # can run): the application, here the SDK and a script, copied so that the other uid
        # can read it wherever the checkout lives.
        brokerctl = brokerctl_path()
        app = os.path.join(tmp, "app")
        shutil.copytree(cloud.NODE_DIR, app, symlinks=True)
        subprocess.run(["chmod", "-R", "a+rX", tmp], check=True)

        srv = cloud.CloudServer(tmp, os.path.join(tmp, "pub", "jwks.json"), ISSUER)
        srv.start()
        upstreams = {"bedrock": {"kind": "aws_sts", "role_arn": srv.aws_role_arn,
                                 "token_endpoint": srv.aws_endpoint + "/"}}
        rules = [{"name": "web", "match": {"uid": UID, "cgroup": "/" + SCOPE},
                  "subject": "spiffe://demo.internal/container/web", "audiences": [],
                  "upstreams": ["bedrock"]}]
        step("The broker's configuration: an aws_sts upstream, one rule for the container")
        print(json.dumps({"upstreams": upstreams, "rules": rules}, indent=2))
        broker = Broker(rules=rules, tmp=tmp,
                        extra={"issuer": ISSUER, "publish_directory": os.path.join(tmp, "pub"),
                               "upstreams": upstreams})
        sock = broker.workload

        aws_config = os.path.join(tmp, "aws-config")
        with open(aws_config, "w") as f:
            f.write(f"[default]\nregion = us-east-1\ncredential_process = {brokerctl} "
                    f"--socket {sock} credentials --upstream bedrock --format aws\n")
        os.chmod(aws_config, 0o644)
        step("The container's ~/.aws/config (the SDK reads it; no key anywhere):")
        print(open(aws_config).read(), end="")

        step(f"The application, as uid {UID} in cgroup /{SCOPE}: Bedrock InvokeModel with the "
             "AWS SDK for JavaScript v3")
        os.makedirs(cg, exist_ok=True)
        home = os.path.join(tmp, "home")
        env = srv.sdk_env(home, AWS_CONFIG_FILE=aws_config, SDK_PROMPT="Hello from a container")
        os.chmod(home, 0o777)
        cmd = ["sh", "-c", f'echo $$ > "{cg}/cgroup.procs" && exec "$@"', "sh",
               "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
               shutil.which("node"), os.path.join(app, "sdk_aws_bedrock.mjs")]
        r = subprocess.run(cmd, env=env, cwd=app, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            print(r.stderr)
            return 1
        print(r.stdout.strip())
        st = srv.stats()
        print(f"(the loopback STS saw {st['by_action'].get('AssumeRoleWithWebIdentity', 0)} "
              f"AssumeRoleWithWebIdentity with RoleSessionName {st['last_role_session_name']}; "
              f"Bedrock checked the SigV4 signature of key {st['last_sigv4']['access_key_id']})")

        step("The same from uid 0 outside that cgroup: no rule, denied (exit 3)")
        r = subprocess.run([brokerctl, "--socket", sock, "credentials",
                            "--upstream", "bedrock", "--format", "aws"],
                           capture_output=True, text=True)
        print(r.stderr.strip(), f"(exit code {r.returncode})")

        broker.stop()
        step("The grant log: the container's grant (the upstream, its cache, the hash of what "
             "it got) and the denial")
        out = subprocess.run([brokerctl, "audit", "export", "--database", broker.db,
                              "--event", "grant,deny"],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            print(json.dumps(json.loads(line), indent=None))
        return 0
    finally:
        if broker:
            broker.stop()
        if srv:
            srv.stop()
        for _ in range(50):
            try:
                os.rmdir(cg)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)
        try:
            os.rmdir(os.path.dirname(cg))
        except OSError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(bin_dir(), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
