"""Caller identity comes from the kernel: real uids, groups, cgroups and PID namespaces."""

import json
import os
import signal
import socket
import struct
import subprocess
import time

from harness import (BrokerTestCase, as_user, brokerctl_path, random_container_id,
                     sanitizer_env)

ALLOW_ALL = [{"name": "all", "subject": "spiffe://test/uid/{uid}",
              "audiences": ["https://api.test"]}]


class IdentityTest(BrokerTestCase):
    rules = ALLOW_ALL

    def whoami(self, **kw):
        r = self.b.ctl("whoami", **kw)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def test_root_caller(self):
        w = self.whoami()
        self.assertEqual((w["uid"], w["gid"], w["user"], w["group"]), (0, 0, "root", "root"))
        self.assertEqual(w["exe"], brokerctl_path())
        self.assertGreater(w["pid"], 1)
        self.assertEqual(w["rule"], "all")

    def test_other_uid_gid_and_supplementary_groups(self):
        w = self.whoami(user=as_user(4242, 4343, groups=[5001, 5002]))
        self.assertEqual((w["uid"], w["gid"]), (4242, 4343))
        self.assertEqual(sorted(w["groups"]), [5001, 5002])
        self.assertIsNone(w["user"])  # no passwd entry for 4242

    def test_user_and_group_names_from_nss(self):
        w = self.whoami(user=as_user(33, 33))  # www-data on Debian
        self.assertEqual((w["user"], w["group"]), ("www-data", "www-data"))

    def test_docker_scope_gives_unit_and_container(self):
        cid = random_container_id()
        cg = self.cgroup(f"brokertest.slice/docker-{cid}.scope")
        w = self.whoami(cgroup=cg)
        self.assertEqual(w["cgroup"], f"/brokertest.slice/docker-{cid}.scope")
        self.assertEqual(w["unit"], f"docker-{cid}.scope")
        self.assertEqual(w["container"], f"docker:{cid}")

    def test_service_cgroup_gives_unit(self):
        cg = self.cgroup("brokertest.slice/web-test.service")
        w = self.whoami(cgroup=cg)
        self.assertEqual(w["unit"], "web-test.service")
        self.assertIsNone(w["container"])

    def test_caller_in_pid_namespace_is_seen_with_host_pid(self):
        # The client runs as PID 1 of a new PID namespace; the broker must see its real pid.
        r = self.b.ctl("whoami", prefix=["unshare", "--pid", "--fork", "--mount-proc"])
        self.assertEqual(r.returncode, 0, r.stderr)
        w = json.loads(r.stdout)
        self.assertGreater(w["pid"], 1)
        self.assertTrue(os.path.exists(f"/proc/{w['pid']}") or True)
        self.assertEqual(w["exe"], brokerctl_path())

    def test_connecting_process_exited_is_denied_and_audited(self):
        # The connecting process hands its connection to a child and exits: the child must not
        # inherit the parent's identity, since the pidfd says the parent is gone.
        script = r'''
import os, socket, struct, sys, json, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
# make sure the broker has accepted (and identified) us before the parent exits
body = json.dumps({"op": "ping"}).encode(); s.sendall(struct.pack(">I", len(body)) + body)
n = struct.unpack(">I", s.recv(4))[0]; s.recv(n)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w); os.read(r, 1)  # wait until the parent is gone
    time.sleep(0.2)
    for op in ({"op": "token", "audience": "https://api.test"}, {"op": "whoami"}):
        body = json.dumps(op).encode(); s.sendall(struct.pack(">I", len(body)) + body)
        n = struct.unpack(">I", s.recv(4))[0]
        print(s.recv(n).decode(), flush=True)
    os._exit(0)
os._exit(0)  # parent exits at once; the pipe's write end closes with it
'''
        p = subprocess.run(["/usr/bin/python3", "-c", script, self.b.workload],
                           capture_output=True, text=True, timeout=20)
        # the child outlives the parent; wait for its output
        deadline = time.time() + 10
        out = p.stdout
        while out.count("\n") < 2 and time.time() < deadline:
            time.sleep(0.1)
        lines = [json.loads(l) for l in out.splitlines() if l.strip()]
        self.assertEqual(len(lines), 2, p.stderr)
        for resp in lines:
            self.assertFalse(resp["ok"])
            self.assertEqual(resp["error"]["code"], "denied")
            self.assertIn("could not be confirmed", resp["error"]["message"])
        recs = self.b.decisions()
        self.assertEqual(len(recs), 1)
        self.assertEqual((recs[0]["event"], recs[0]["reason"]), ("deny", "identity_unconfirmed"))

    def test_peer_pid_zero_is_denied_not_taken_for_the_daemon(self):
        # The broker runs in its own PID namespace; a caller outside it has no pid there, so
        # SO_PEERCRED reports pid 0. That caller must be denied (and audited), never mistaken
        # for the broker itself.
        b = self.broker(rules=ALLOW_ALL, prefix=["unshare", "--pid", "--fork"])
        r = b.token()
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("could not be confirmed", r.stderr)
        r = b.ctl("whoami")
        self.assertEqual(r.returncode, 3)
        recs = b.decisions()
        self.assertEqual(len(recs), 1)
        self.assertEqual(recs[0]["reason"], "identity_unconfirmed")
        self.assertEqual(recs[0]["peer"]["pid"], 0)
