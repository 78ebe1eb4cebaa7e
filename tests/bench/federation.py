"""make bench, federation: upstream tokens handed out from the broker's cache (8 clients on
persistent connections, tokens/s with p50/p99), and the cold single-flight latency: 8 callers
ask at the same moment on an empty cache, and the time until the last has its token is one
exchange against oidc-provider on loopback (TLS, client_secret_basic) plus the hand-out. The
cache is emptied between cold rounds by setting the secret again; the server's own count
proves each round was one upstream call.

Prints one line at the end:
  federation: upstream_hits_per_s=N upstream_hit_p50_us=N upstream_hit_p99_us=N
              cold_p50_us=N cold_max_us=N upstream_calls_per_round=R
Needs node with tests/integration/node installed (npm ci); prints a skip line without it."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import oauth  # noqa: E402
from harness import Broker, bin_dir  # noqa: E402

BUILD = os.environ["BROKER_BUILD"]
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_COLD_ROUNDS", "30"))
SECRET = "bench-Secret-31b7c0"


def field(name, line):
    m = re.search(rf"\b{name}=([0-9.]+)", line)
    if not m:
        raise SystemExit(f"federation bench: no {name} in {line!r}")
    return float(m.group(1))


def main():
    if shutil.which("node") is None or not os.path.isdir(
            os.path.join(oauth.NODE_DIR, "node_modules", "oidc-provider")):
        print("federation: skipped (node or tests/integration/node/node_modules missing; "
              "npm ci --prefix tests/integration/node)")
        return 0
    tmp = tempfile.mkdtemp(prefix="brokerd-bench-fed.")
    os.chmod(tmp, 0o755)
    broker = None
    pub = os.path.join(tmp, "pub")
    clients = [{"client_id": "bench", "client_secret": SECRET,
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["client_credentials"], "scope": "read"}]
    srv = oauth.OAuthServer(tmp, os.path.join(pub, "jwks.json"), "https://broker.bench",
                            "https://as.bench", clients, untrusted=False)
    try:
        srv.start()
        broker = Broker(
            rules=[{"name": "bench", "match": {"uid": os.getuid()},
                    "subject": "spiffe://bench/uid/{uid}", "audiences": [],
                    "scopes": ["read"], "upstreams": ["bench"]}],
            tmp=tmp,
            extra={"issuer": "https://broker.bench", "publish_directory": pub,
                   "limits": {"rate": 0},
                   "upstreams": {"bench": {"kind": "client_credentials",
                                           "token_endpoint": srv.token_endpoint,
                                           "ca_file": srv.ca_file, "client_id": "bench",
                                           "client_auth": "client_secret_basic",
                                           "client_secret": "bench", "scope": "read"}}})
        sock, admin = broker.workload, broker.admin

        def set_secret():  # also empties the cache of the upstream that uses it
            subprocess.run([f"{BUILD}/brokerctl", "--admin-socket", admin, "secret", "set",
                            "bench"], input=SECRET + "\n", text=True, check=True,
                           capture_output=True)

        def bench(*args):
            r = subprocess.run([f"{BUILD}/bench/bench", "--socket", sock, "--upstream",
                                "bench", *args], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"federation bench: {r.stderr}")
            return r.stdout.strip()

        set_secret()
        bench("--threads", "8", "--seconds", "1")  # warm-up, and the token is in the cache
        srv.reset()
        hits = bench("--threads", "8", "--seconds", str(SECONDS))
        print("== upstream tokens from the cache, 8 clients\n" + hits)
        if srv.stats()["token_requests"] != 0:
            raise SystemExit("federation bench: cache hits reached the upstream")

        cold = []
        for _ in range(ROUNDS):
            set_secret()
            cold.append(field("cold_us", bench("--threads", "8", "--once")))
        calls = srv.stats()["token_requests"]
        cold.sort()
        print(f"== cold single flight, 8 callers at once, {ROUNDS} rounds: p50 "
              f"{cold[len(cold) // 2]:.0f} us, max {cold[-1]:.0f} us, {calls} upstream calls")
        print(f"federation: upstream_hits_per_s={field('tokens_per_s', hits):.0f} "
              f"upstream_hit_p50_us={field('p50_us', hits):.0f} "
              f"upstream_hit_p99_us={field('p99_us', hits):.0f} "
              f"cold_p50_us={cold[len(cold) // 2]:.0f} cold_max_us={cold[-1]:.0f} "
              f"upstream_calls_per_round={calls / ROUNDS:.2f}")
        return 0
    finally:
        if broker:
            broker.stop()
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(bin_dir(), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
