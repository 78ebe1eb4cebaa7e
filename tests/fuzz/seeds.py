#!/usr/bin/python3
"""Makes the seeds of the fuzz corpora that come from a real daemon (root; make first):
tests/fuzz/seeds.py [BUILD]. It starts brokerd through the integration harness, sends real
requests on both sockets, and writes into tests/fuzz/<target>/ what went over the wire
(frame/, request/, response/) and a small real grant-log export (grantlog_verify/). The
other seeds (config/, cgroup/) are written from the README's configs and tests/data. Existing
seeds of the same name are replaced; regression inputs (named regress-*) are left alone."""

import copy
import json
import os
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
os.environ.setdefault("BROKER_BUILD", os.path.abspath(sys.argv[1] if len(sys.argv) > 1
                                                      else os.path.join(ROOT, "build")))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402

OPSET = {"workload": 0, "admin": 1, "both": 2, "none": 3}  # first byte of a request seed


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frame(body):
    return struct.pack(">I", len(body)) + body


def wire(b, reqs, admin=False):
    """Sends each request body as it is; returns (request, response) bodies."""
    raw = b.raw(admin=admin)
    out = []
    for req in reqs:
        raw.send_frame(req)
        hdr = raw._recv_exact(4)
        (n,) = struct.unpack(">I", hdr)
        out.append((req, raw._recv_exact(n)))
    raw.close()
    return out


def main():
    rules = [
        {"name": "root", "match": {"uid": 0}, "subject": "spiffe://test/uid/{uid}",
         "audiences": ["https://api.test", "https://*.example.com"], "scopes": ["read", "write"],
         "max_ttl": "15m"},
        {"name": "es", "match": {"uid": 0, "exe": "/usr/bin/python3*"},
         "subject": "spiffe://test/es/{uid}", "audiences": ["https://es.test"], "alg": "ES256"},
    ]
    b = harness.Broker(rules=rules, extra={"audit": {"checkpoint_every": 4}})
    try:
        workload = [
            b'{"op":"ping","id":1}',
            b'{"op":"token","id":"t1","audience":"https://api.test","scopes":["read"],"ttl":300}',
            b'{"op":"token","audience":"https://a.example.com","scopes":["read","write"]}',
            b'{"op":"token","audience":"https://elsewhere.test"}',
            b'{"op":"token","audience":"https://api.test","scopes":["admin"]}',
            b'{"op":"jwks"}',
            b'{"op":"whoami","id":"w"}',
            b'{"op":"token","audience":"https://api.test","scope":"read"}',
            b'{"op":"token","audience":"https://api.test","ttl":1.5}',
            b'{"op":"status"}',
            b'{"op":"ping","op":"ping"}',
            b'[1,2,3]',
            b'{"op":"token","audience":"https://api.test\\u202e"}',
        ]
        admin = [
            b'{"op":"status","id":7}',
            b'{"op":"keys"}',
            b'{"op":"rotate"}',
            b'{"op":"rotate","alg":"ES256"}',
            b'{"op":"reload"}',
            b'{"op":"revoke","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"}',
            b'{"op":"revoke","kid":"not base64url!"}',
            b'{"op":"token","audience":"https://api.test"}',
            b'{"op":"ping"}',
        ]
        pairs = [("workload", p) for p in wire(b, workload)]
        pairs += [("admin", p) for p in wire(b, admin, admin=True)]
        # A reload the config refuses, and its answer.
        bad = copy.deepcopy(b.config)
        bad["rules"][0]["match"]["uid"] = "root"
        b.write_config(bad)
        pairs += [("admin", p) for p in wire(b, [b'{"op":"reload"}'], admin=True)]
        status = b.stop()
        assert status == 0, b.read_log()

        for i, (sock, (req, resp)) in enumerate(pairs):
            op = json.loads(req)["op"] if req.startswith(b"{") else "array"
            name = f"{i:02d}-{sock}-{op}"
            put("request", name, bytes([OPSET[sock]]) + req)
            put("response", name, resp)
            put("frame", name, frame(req))
        put("request", "both-ping", bytes([OPSET["both"]]) + b'{"op":"ping"}')
        put("request", "none-ping", bytes([OPSET["none"]]) + b'{"op":"ping"}')
        # A connection's whole stream: pipelined requests, then what ends it.
        stream = b"".join(frame(r) for r in workload[:4])
        put("frame", "stream", stream)
        put("frame", "stream-then-zero", stream + b"\0\0\0\0")
        put("frame", "stream-then-huge", stream + struct.pack(">I", 65537) + b"{}")
        put("frame", "stream-then-partial", stream + frame(workload[0])[:9])
        put("frame", "max-partial", struct.pack(">I", 65536) + b"{}")

        r = b.ctl("audit", "export", "--database", b.db, socket_path=False)
        assert r.returncode == 0, r.stderr
        export = r.stdout.encode()
        # bit 0 clear: as exported; bit 0 set: record bodies the harness links and hashes
        bodies = b"".join(line[:line.rindex(b',"hash":')] + b"}\n"
                          for line in export.splitlines())
        for flags, name in ((0x00, "export"), (0x02, "export-4-threads"),
                            (0x04, "export-foreign-pin"), (0x08, "export-pin-and-first"),
                            (0x0c, "export-pin-by-kid"), (0x01, "bodies"),
                            (0x03, "bodies-2-threads")):
            put("grantlog_verify", name, bytes([flags]) + (bodies if flags & 1 else export))
        put("grantlog_verify", "tail", bytes([0x02]) + b"".join(export.splitlines(True)[5:]))
    finally:
        b.close()

    # A log pruned by a retention of 2 s (an audit_pruned record, an export that starts late),
    # then restarted so that it names its audit key again.
    b = harness.Broker(rules=rules, extra={"audit": {"retention": 2, "checkpoint_every": 3,
                                                     "checkpoint_interval": 1}})
    try:
        for _ in range(4):
            assert b.token().returncode == 0
        deadline = time.time() + 15
        while time.time() < deadline and not any(r["event"] == "audit_pruned"
                                                 for r in b.audit()):
            time.sleep(0.2)
        assert b.stop() == 0, b.read_log()
        b.start()
        assert b.token().returncode == 0
        assert b.stop() == 0, b.read_log()
        r = b.ctl("audit", "export", "--database", b.db, socket_path=False)
        assert r.returncode == 0 and b'"audit_pruned"' in r.stdout.encode(), r.stderr
        export = r.stdout.encode()
        bodies = b"".join(line[:line.rindex(b',"hash":')] + b"}\n"
                          for line in export.splitlines())
        put("grantlog_verify", "pruned-export", bytes([0x00]) + export)
        put("grantlog_verify", "pruned-bodies", bytes([0x01]) + bodies)
    finally:
        b.close()

    # The configs the README shows (its example and the demo's), the integration harness's.
    readme = open(os.path.join(ROOT, "README.md")).read()
    blocks = readme.split("```json\n")[1:]
    n = 0
    for blk in blocks:
        text = blk.split("```")[0]
        try:
            if "issuer" in json.loads(text):
                put("config", f"readme-{n}.json", text.encode())
                n += 1
        except ValueError:
            pass
    demo = open(os.path.join(ROOT, "tests", "demo.sh")).read()
    text = demo.split("<<EOF\n")[1].split("\nEOF")[0]
    text = text.replace("$dir", "/tmp/demo").replace("$(id -u)", "1000")
    put("config", "demo.json", text.encode())
    put("config", "harness.json", json.dumps(b.config, indent=2).encode())

    # Every /proc/PID/cgroup line of tests/data/cgroup-paths.tsv, and whole files of v1 hosts.
    lines = [l.split("\t")[0] for l in open(os.path.join(ROOT, "tests", "data",
                                                         "cgroup-paths.tsv"))
             if l.strip() and not l.startswith("#")]
    for i, line in enumerate(lines):
        put("cgroup", f"tsv-{i:02d}", (line + "\n").encode())
    put("cgroup", "v1-host", ("12:pids:/system.slice/nginx.service\n"
                              "11:memory:/system.slice/nginx.service\n"
                              "1:name=systemd:/system.slice/nginx.service\n"
                              "0::/\n").encode())
    put("cgroup", "hybrid-host", ("5:cpu,cpuacct:/docker/" + "ab" * 32 + "\n"
                                  "1:name=systemd:/system.slice/docker-" + "cd" * 32 +
                                  ".scope\n0::/system.slice/docker-" + "cd" * 32 + ".scope\n")
        .encode())


if __name__ == "__main__":
    main()
