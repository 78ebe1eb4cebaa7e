"""Started as root with `user`, brokerd runs as that user (a real account made for the test)
once what needs root is done, with only CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, and keeps
working: callers of other uids are still identified by the file they run (also below a
directory the daemon's user cannot search), reload, rotation, publication and a restart still
work, and everything it made is the user's. A user that does not exist, root as `user`, and a
state directory of someone else are refused at start, naming the key."""

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import unittest

from harness import BrokerTestCase, as_user, brokerctl_path, sanitizer_env, token_claims

AUD = "https://api.test"
CALLER = 4001  # a caller of another uid than the daemon's
CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
KEPT = (1 << CAP_DAC_READ_SEARCH) | (1 << CAP_SYS_PTRACE)

USER = f"brokerd-t{os.getpid() % 100000}"


def proc_status(pid, task=None):
    path = f"/proc/{pid}/status" if task is None else f"/proc/{pid}/task/{task}/status"
    with open(path) as f:
        return dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)


def rule(name, match):
    return {"name": name, "match": match, "subject": "spiffe://test/{rule}/{uid}",
            "audiences": [AUD]}


def setUpModule():
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", USER],
                   check=True, capture_output=True)


def tearDownModule():
    subprocess.run(["userdel", USER], capture_output=True)
    subprocess.run(["groupdel", USER], capture_output=True)  # if userdel left it


class PrivilegeTestCase(BrokerTestCase):
    start_broker = False

    def setUp(self):
        super().setUp()
        pw = pwd.getpwnam(USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        # the caller's own program, in a directory only the caller may search: the daemon's
        # user can look at it only through CAP_DAC_READ_SEARCH
        self.own = tempfile.mkdtemp(prefix="broker-caller-")
        self.prog_dir = os.path.join(self.own, "private")
        os.makedirs(self.prog_dir)
        self.prog = os.path.join(self.prog_dir, "brokerctl")
        shutil.copy2(brokerctl_path(), self.prog)
        os.chmod(self.own, 0o755)
        os.chmod(self.prog_dir, 0o700)
        os.chown(self.prog_dir, CALLER, CALLER)
        os.chown(self.prog, CALLER, CALLER)
        self.addCleanup(shutil.rmtree, self.own, ignore_errors=True)

    def user_broker(self, start=True, **kw):
        rules = [rule("root", {"uid": 0}),
                 rule("caller", {"exe": self.prog, "uid": CALLER})]
        extra = {"user": USER}
        extra.update(kw.pop("extra", {}))
        b = self.broker(rules=rules, extra=extra, start=False, **kw)
        if start:
            b.start()
        return b

    def caller_token(self, b):
        """A token request from uid CALLER running its own program."""
        e = sanitizer_env()
        e.pop("BROKER_SOCKET", None)
        return subprocess.run(as_user(CALLER) + [self.prog, "--socket", b.workload, "token",
                                                 "--audience", AUD],
                              capture_output=True, text=True, env=e, timeout=30)

    def owner(self, path):
        st = os.stat(path)
        return st.st_uid, st.st_gid


class DropTest(PrivilegeTestCase):
    def test_runs_as_the_user_with_two_capabilities(self):
        b = self.user_broker()
        pid = b.daemon_pid()
        st = proc_status(pid)
        self.assertEqual(st["Uid"].split(), [str(self.uid)] * 4)
        self.assertEqual(st["Gid"].split(), [str(self.gid)] * 4)
        self.assertEqual(st["Groups"].split(), [str(self.gid)])
        for field in ("CapEff", "CapPrm", "CapBnd"):
            self.assertEqual(int(st[field], 16), KEPT, f"{field}: {st[field]}")
        self.assertEqual(int(st["CapInh"], 16), 0)
        self.assertEqual(int(st["CapAmb"], 16), 0)
        self.assertEqual(st["NoNewPrivs"].strip(), "1")
        # every thread alike (capabilities are per thread; none was made before the drop)
        tasks = os.listdir(f"/proc/{pid}/task")
        self.assertGreater(len(tasks), 1)
        for t in tasks:
            ts = proc_status(pid, t)
            self.assertEqual(ts["Uid"].split(), [str(self.uid)] * 4, t)
            self.assertEqual(int(ts["CapEff"], 16), KEPT, t)
            self.assertEqual(int(ts["CapBnd"], 16), KEPT, t)
        self.assertIn(f"Running as user {USER} (uid {self.uid}, gid {self.gid})", b.read_log())

        # what it made is the user's
        for p in (b.state, b.db, os.path.join(b.state, "keys.db"), os.path.dirname(b.workload),
                  os.path.dirname(b.admin), b.workload, b.admin):
            self.assertEqual(self.owner(p), (self.uid, self.gid), p)
        # what root made for it is root's still
        self.assertEqual(self.owner(b.master_key)[0], 0)
        self.assertEqual(self.owner(b.config_path)[0], 0)

        # root's caller, and a caller of another uid identified by its program: reading its
        # /proc/PID/exe takes CAP_SYS_PTRACE, and looking at that program's path below a
        # directory the daemon's user cannot search takes CAP_DAC_READ_SEARCH
        r = b.token()
        self.assertEqual(r.returncode, 0, r.stderr + b.read_log())
        r = self.caller_token(b)
        self.assertEqual(r.returncode, 0, r.stderr + b.read_log()[-2000:])
        self.assertEqual(token_claims(r.stdout.strip())["sub"], f"spiffe://test/caller/{CALLER}")
        grants = [d for d in b.decisions() if d["event"] == "grant"]
        self.assertEqual(grants[-1]["peer"]["exe"], self.prog)

        # a clean stop removes the sockets (their directories are the user's)
        self.assertEqual(b.stop(), 0)
        self.assertFalse(os.path.exists(b.workload))
        self.assertFalse(os.path.exists(b.admin))

    def test_reload_rotation_publication_and_restart_after_the_drop(self):
        pub = os.path.join(tempfile.mkdtemp(prefix="broker-pub-"), "pub")
        os.chmod(os.path.dirname(pub), 0o755)
        self.addCleanup(shutil.rmtree, os.path.dirname(pub), ignore_errors=True)
        b = self.user_broker(extra={"publish_directory": pub})
        self.assertEqual(self.owner(pub), (self.uid, self.gid))
        # the configuration only root may read: reload reads it through CAP_DAC_READ_SEARCH
        cfg = json.loads(json.dumps(b.config))
        cfg["rules"][0]["audiences"].append("https://reloaded.test")
        b.write_config(cfg)
        os.chmod(b.config_path, 0o600)
        mark = b.notify.mark()
        os.kill(b.daemon_pid(), signal.SIGHUP)
        self.assertIsNotNone(b.notify.wait_for(lambda l: "READY=1" in l, since=mark))
        self.assertIn("Configuration reloaded", b.read_log())
        self.assertEqual(b.token(audience="https://reloaded.test").returncode, 0)

        # rotation: a new key in keys.db, published in the user's directory
        rotated = b.admin_request({"op": "rotate"})
        self.assertTrue(rotated["ok"], rotated)
        self.assertIn(rotated["kid"], [k["kid"] for k in b.jwks()["keys"]])
        with open(os.path.join(pub, "jwks.json")) as f:
            self.assertIn(rotated["kid"], [k["kid"] for k in json.load(f)["keys"]])
        for name in ("jwks.json", ".well-known/openid-configuration"):
            self.assertEqual(self.owner(os.path.join(pub, name)), (self.uid, self.gid), name)
        for name in os.listdir(b.state):
            self.assertEqual(self.owner(os.path.join(b.state, name))[0], self.uid, name)

        # a restart, as root again, finds all of it the user's and goes on
        self.assertEqual(b.stop(), 0)
        b.start()
        self.assertEqual(b.token(audience="https://reloaded.test").returncode, 0)
        self.assertEqual(self.caller_token(b).returncode, 0)
        # the checks root made before the drop (keys.db against the master key) left nothing
        # of root's behind
        for name in os.listdir(b.state):
            self.assertEqual(self.owner(os.path.join(b.state, name))[0], self.uid, name)
        events = [r["event"] for r in b.audit()]
        self.assertIn("key_rotated", events)
        self.assertEqual(events.count("started"), 2)
        self.assertEqual(b.stop(), 0)
        r = subprocess.run([brokerctl_path(), "audit", "verify", "--database", b.db],
                           capture_output=True, text=True, env=sanitizer_env())
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_admin_socket_takes_root_and_the_user(self):
        b = self.user_broker()
        self.assertEqual(b.admin_ctl("keys").returncode, 0)
        self.assertEqual(b.admin_ctl("keys", user=as_user(self.uid, self.gid)).returncode, 0)
        r = b.admin_ctl("keys", user=as_user(CALLER))
        self.assertNotEqual(r.returncode, 0)


class RefusedTest(PrivilegeTestCase):
    def test_user_that_does_not_exist(self):
        b = self.user_broker(start=False, extra={"user": "no-such-user-brokerd"})
        self.start_refused(b, f'{b.config_path}: user: no such user "no-such-user-brokerd"')
        self.assertFalse(os.path.exists(b.state), "a refused start made the state directory")
        r = b.check()
        self.assertEqual(r.returncode, 1)
        self.assertIn('user: no such user "no-such-user-brokerd"', r.stderr)

    def test_root_as_user(self):
        b = self.user_broker(start=False, extra={"user": "root"})
        self.start_refused(b, "user: \"root\" is root")

    def test_state_directory_of_someone_else(self):
        b = self.user_broker(start=False)
        os.makedirs(b.state, mode=0o700)  # root's, from a start without `user`
        log = self.start_refused(b, b.state, f"owned by uid 0, wanted uid {self.uid}",
                                 "the user brokerd runs as")
        self.assertFalse(os.path.exists(b.db))
        r = b.check()
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{b.state}: owned by uid 0, wanted uid {self.uid}", r.stderr)
        # given to the user, it starts
        os.chown(b.state, self.uid, self.gid)
        b.start()
        self.assertEqual(b.token().returncode, 0)

    def test_socket_directory_of_root(self):
        b = self.user_broker(start=False)
        os.makedirs(os.path.dirname(b.workload))  # root's: the user could not bind there
        self.start_refused(b, os.path.dirname(b.workload), f"wanted uid {self.uid}")

    def test_not_root_and_not_the_user(self):
        b = self.user_broker(start=False)
        b.prefix = as_user(CALLER)
        os.chown(b.master_key, CALLER, CALLER)
        self.start_refused(b, f'neither root nor "{USER}"')


if __name__ == "__main__":
    unittest.main()
