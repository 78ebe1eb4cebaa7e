#!/bin/bash
# make demo: start brokerd on an embedded default config in a temporary directory, ask it for
# a token with brokerctl, verify the token against the broker's JWKS with an independent
# library (PyJWT), show the audit record of the grant, and stop. Then the scenario brokerd is
# for (tests/demo_bedrock.py): a container-like process calls a loopback Bedrock through the AWS
# SDK with credentials from brokerctl, and the grant records show it.
set -euo pipefail

BUILD=${BROKER_BUILD:-$(cd "$(dirname "$0")/.." && pwd)/build}
dir=$(mktemp -d /tmp/brokerd-demo.XXXXXX)
chmod 755 "$dir"
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "A master key: every private key is stored sealed under it"
"$BUILD/brokerd" --generate-master-key "$dir/master.key"

step "Configuration (embedded): one rule for uid $(id -u)"
cat >"$dir/brokerd.json" <<EOF
{
  "issuer": "https://broker.demo.internal",
  "master_key_file": "$dir/master.key",
  "listen": { "workload": "$dir/run/workload/broker.sock", "admin": "$dir/run/admin.sock" },
  "state_directory": "$dir/state",
  "audit": { "database": "$dir/state/audit.db" },
  "tokens": { "default_ttl": "5m", "max_ttl": "1h" },
  "rules": [
    { "name": "demo",
      "match": { "uid": $(id -u) },
      "subject": "spiffe://demo.internal/uid/{uid}",
      "audiences": ["https://api.demo.internal"],
      "scopes": ["read", "write"] }
  ]
}
EOF
cat "$dir/brokerd.json"
"$BUILD/brokerd" --config "$dir/brokerd.json" --check

step "Start brokerd"
"$BUILD/brokerd" --config "$dir/brokerd.json" &
pid=$!
for _ in $(seq 100); do [ -S "$dir/run/workload/broker.sock" ] && break; sleep 0.05; done
export BROKER_SOCKET="$dir/run/workload/broker.sock"

step "brokerctl whoami: the identity the broker sees for this shell"
"$BUILD/brokerctl" whoami

step "brokerctl token --audience https://api.demo.internal --scope read"
token=$("$BUILD/brokerctl" token --audience https://api.demo.internal --scope read)
echo "$token"

step "Verify the token against the broker's JWKS (PyJWT)"
"$BUILD/brokerctl" jwks >"$dir/jwks.json"
/usr/bin/python3 - "$token" "$dir/jwks.json" <<'EOF'
import json, sys, jwt
token, jwks = sys.argv[1], json.load(open(sys.argv[2]))
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in jwks["keys"] if k["kid"] == kid)
claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=[key["alg"]],
                    audience="https://api.demo.internal", issuer="https://broker.demo.internal")
print(f"signature ({key['alg']}, the default), issuer, audience and expiry verified with key", kid)
print(json.dumps(claims, indent=2))
EOF

step "A request the policy refuses (exit code 3)"
"$BUILD/brokerctl" token --audience https://elsewhere.example || echo "exit code $?"

step "Stop brokerd (SIGTERM)"
kill "$pid"; wait "$pid"; pid=
echo "exit code 0"

step "The audit records of both decisions (brokerctl audit export)"
"$BUILD/brokerctl" audit export --database "$dir/state/audit.db" --event grant
"$BUILD/brokerctl" audit export --database "$dir/state/audit.db" --event deny
"$BUILD/brokerctl" audit verify --database "$dir/state/audit.db"

step "Part 2: a container calls Amazon Bedrock with the unchanged AWS SDK (tests/demo_bedrock.py)"
BROKER_BUILD="$BUILD" /usr/bin/python3 "$(dirname "$0")/demo_bedrock.py"
