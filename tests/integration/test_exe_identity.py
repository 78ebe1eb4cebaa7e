"""`exe` names a file, not a path string, and a delegated cgroup subtree names nothing.

Each attack here is one a local user can really make: an unprivileged user namespace with its own
mount namespace (`unshare -Urm`) in which the caller bind-mounts its own program over the path a
rule names, or a copy, a symlink; and a cgroup directory owned by a non-root uid below which that
uid creates `docker-<any id>.scope`. Each is shown refused, next to the genuine caller that is
still granted."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import (BrokerTestCase, as_user, bin_dir, brokerctl_path, brokerd_path,
                     random_container_id, sanitizer_env, token_claims)

AUD = "https://api.test"
ATTACKER = 4001
OTHER = 4002


def rule(name, match):
    return {"name": name, "match": match, "subject": "spiffe://test/{rule}/{uid}",
            "audiences": [AUD]}


def userns_works():
    """Whether an unprivileged uid may create a user namespace with its own mount namespace and
    bind-mount in it: the attack needs both."""
    r = subprocess.run(as_user(ATTACKER) + ["unshare", "-Urm", "sh", "-c",
                                            "mount --bind /bin/true /bin/false"],
                       capture_output=True, text=True)
    return r.returncode == 0


class ExeIdentityTest(BrokerTestCase):
    start_broker = False

    def setUp(self):
        super().setUp()
        # The attacker's own directory and its own program: a copy of brokerctl (any client
        # will do) with bytes of its own appended, so it is not the genuine file in any sense.
        self.own = tempfile.mkdtemp(prefix="broker-attacker-")
        os.chmod(self.own, 0o755)
        self.evil = os.path.join(self.own, "brokerctl")
        shutil.copy2(brokerctl_path(), self.evil)
        with open(self.evil, "ab") as f:
            f.write(b"\0attacker's own code\0")
        os.chmod(self.evil, 0o755)
        os.chown(self.own, ATTACKER, ATTACKER)
        os.chown(self.evil, ATTACKER, ATTACKER)

    def tearDown(self):
        shutil.rmtree(self.own, ignore_errors=True)
        super().tearDown()

    def in_own_mount_ns(self, uid, source, target, *argv):
        """Runs argv as `uid` in a user and mount namespace of its own in which `source` is
        bind-mounted over `target`."""
        cmd = as_user(uid) + ["unshare", "-Urm", "sh", "-c",
                              'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh",
                              source, target] + list(argv)
        e = sanitizer_env()
        e.pop("BROKER_SOCKET", None)
        return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=30)

    def require_userns(self):
        if not userns_works():
            self.skipTest("unprivileged user namespaces are not allowed on this host: the "
                          "bind-mount attack cannot be made here")

    def assert_granted(self, r, rule_name):
        self.assertEqual(r.returncode, 0, f"expected a grant: {r.stderr}")
        self.assertEqual(token_claims(r.stdout.strip())["sub"].split("/")[3], rule_name)

    def assert_denied(self, r):
        self.assertEqual(r.returncode, 3, f"expected a denial: {r.stdout} {r.stderr}")
        self.assertIn("no rule matches this caller", r.stderr)

    # --- the genuine caller ----------------------------------------------------------------

    def test_genuine_caller_is_granted_exact_and_glob(self):
        b = self.broker(rules=[rule("exact", {"exe": brokerctl_path(), "uid": ATTACKER})])
        self.assert_granted(b.token(user=as_user(ATTACKER)), "exact")
        b2 = self.broker(rules=[rule("glob", {"exe": bin_dir() + "/broker*", "uid": ATTACKER})])
        self.assert_granted(b2.token(user=as_user(ATTACKER)), "glob")
        # The pin holds too: the genuine program run by another uid is not that caller.
        self.assert_denied(b.token(user=as_user(OTHER)))

    # --- the bind-mount attack --------------------------------------------------------------

    def test_own_program_bind_mounted_over_the_rule_path_is_refused(self):
        # The reported attack: /usr/bin/sleep in the caller's own mount namespace is the
        # caller's program, and /proc/PID/exe reads "/usr/bin/sleep".
        self.require_userns()
        b = self.broker(rules=[rule("sleep", {"exe": "/usr/bin/sleep", "uid": ATTACKER})])
        who = self.in_own_mount_ns(ATTACKER, self.evil, "/usr/bin/sleep", "/usr/bin/sleep",
                                   "--socket", b.workload, "whoami")
        self.assertEqual(who.returncode, 0, who.stderr)
        self.assertEqual(json.loads(who.stdout)["exe"], "/usr/bin/sleep")  # the path lies
        r = self.in_own_mount_ns(ATTACKER, self.evil, "/usr/bin/sleep", "/usr/bin/sleep",
                                 "--socket", b.workload, "token", "--audience", AUD)
        self.assert_denied(r)
        events = [(d["event"], d.get("reason"), d["peer"]["exe"]) for d in b.decisions()]
        self.assertEqual(events, [("deny", "no_matching_rule", "/usr/bin/sleep")])

    def test_own_program_bind_mounted_over_the_genuine_client_is_refused(self):
        # The same over the very file the genuine caller runs (which is granted meanwhile).
        self.require_userns()
        b = self.broker(rules=[rule("ctl", {"exe": brokerctl_path(), "uid": ATTACKER})])
        r = self.in_own_mount_ns(ATTACKER, self.evil, brokerctl_path(), brokerctl_path(),
                                 "--socket", b.workload, "token", "--audience", AUD)
        self.assert_denied(r)
        self.assert_granted(b.token(user=as_user(ATTACKER)), "ctl")

    def test_own_directory_bind_mounted_over_a_glob_is_refused(self):
        # For a glob the daemon stats the path the caller's exe string matches, as the daemon
        # sees it: there is no such file there, or it is another one.
        self.require_userns()
        b = self.broker(rules=[rule("glob", {"exe": bin_dir() + "/broker*", "uid": ATTACKER})])
        mine = os.path.join(self.own, "brokerctl-mine")
        shutil.copy2(self.evil, mine)
        os.chown(mine, ATTACKER, ATTACKER)
        for name in ("brokerctl-mine", "brokerctl"):
            r = self.in_own_mount_ns(ATTACKER, self.own, bin_dir(),
                                     os.path.join(bin_dir(), name), "--socket", b.workload,
                                     "token", "--audience", AUD)
            self.assert_denied(r)
        self.assert_granted(b.token(user=as_user(ATTACKER)), "glob")

    # --- copies and symlinks -----------------------------------------------------------------

    def test_byte_identical_copy_elsewhere_is_refused(self):
        b = self.broker(rules=[rule("ctl", {"exe": brokerctl_path(), "uid": ATTACKER})])
        copy = os.path.join(self.own, "copy")
        shutil.copy2(brokerctl_path(), copy)
        os.chmod(copy, 0o755)
        r = subprocess.run(as_user(ATTACKER) + [copy, "--socket", b.workload, "token",
                                                "--audience", AUD],
                           capture_output=True, text=True, env=sanitizer_env())
        self.assert_denied(r)

    def test_symlinks(self):
        # The rule may name a symlink: the daemon follows it to the file it names.
        link = os.path.join(self.own, "link-to-brokerctl")
        os.symlink(brokerctl_path(), link)
        b = self.broker(rules=[rule("link", {"exe": link, "uid": ATTACKER})])
        self.assert_granted(b.token(user=as_user(ATTACKER)), "link")
        # The caller may run the genuine file through a symlink of its own: it is still that
        # file (the kernel's exe is the target).
        mine = os.path.join(self.own, "mine")
        os.symlink(brokerctl_path(), mine)
        r = subprocess.run(as_user(ATTACKER) + [mine, "--socket", b.workload, "token",
                                                "--audience", AUD],
                           capture_output=True, text=True, env=sanitizer_env())
        self.assert_granted(r, "link")
        # A symlink to its own program that the caller puts at the rule's path in its own
        # mount namespace: the exe is the program, not the file the daemon sees at the path.
        self.require_userns()
        b2 = self.broker(rules=[rule("ctl", {"exe": brokerctl_path(), "uid": ATTACKER})])
        ns_dir = os.path.join(self.own, "ns")
        os.mkdir(ns_dir)
        os.symlink(self.evil, os.path.join(ns_dir, "brokerctl"))
        r = self.in_own_mount_ns(ATTACKER, ns_dir, bin_dir(), brokerctl_path(), "--socket",
                                 b2.workload, "token", "--audience", AUD)
        self.assert_denied(r)

    # --- the pin -----------------------------------------------------------------------------

    def test_exe_without_a_pin_is_refused_by_check(self):
        b = self.broker(rules=[rule("ok", {"uid": 0})])
        cfg = dict(b.config)
        cfg["rules"] = [rule("sleep", {"exe": "/usr/bin/sleep"}),
                        rule("cg", {"exe": "/usr/bin/*", "cgroup": "/system.slice/*"}),
                        rule("pinned", {"exe": "/usr/bin/sleep", "group": "nogroup"})]
        b.write_config(cfg)
        r = subprocess.run([brokerd_path(), "--config", b.config_path, "--check"],
                           capture_output=True, text=True, env=sanitizer_env())
        self.assertEqual(r.returncode, 1, r.stdout)
        lines = r.stderr.strip().split("\n")
        self.assertEqual(len(lines), 2, r.stderr)
        for i, line in enumerate(lines):
            self.assertTrue(line.startswith(f"{b.config_path}: rules[{i}].match.exe: "), line)
            self.assertIn("uid, user, gid, group or unit", line)
            self.assertIn("LD_PRELOAD", line)
        # A reload with such a rule is refused, and the running config stays.
        self.assertNotEqual(b.admin_ctl("reload").returncode, 0)
        self.assertEqual(b.token().returncode, 0)


class DelegatedSubtreeTest(BrokerTestCase):
    """A cgroup directory owned by a non-root uid (what systemd's Delegate=yes with User= does
    for a service) lets that uid name cgroups below it: `docker-<any id>.scope` included."""

    start_broker = False

    def delegated_scope(self, cid):
        """brokertest.slice/deleg-N.service chowned to ATTACKER, which makes
        docker-<cid>.scope below it itself."""
        svc = self.cgroup(f"brokertest.slice/deleg-{os.getpid()}.service")
        os.chown(svc.path, ATTACKER, ATTACKER)
        r = subprocess.run(as_user(ATTACKER) + ["mkdir", os.path.join(svc.path,
                                                                      f"docker-{cid}.scope")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        scope = self.cgroup(f"{svc.relpath}/docker-{cid}.scope")
        self.assertEqual(os.stat(scope.path).st_uid, ATTACKER)
        return svc, scope

    def test_container_and_unit_claimed_in_a_delegated_subtree_are_refused(self):
        fake_id, real_id = random_container_id(), random_container_id()
        svc, fake = self.delegated_scope(fake_id)
        real = self.cgroup(f"brokertest.slice/docker-{real_id}.scope")
        unit = svc.relpath.rsplit("/", 1)[1]
        b = self.broker(rules=[rule("docker", {"container": "docker:*"}),
                               rule("unit", {"unit": unit})])
        who = json.loads(b.ctl("whoami", user=as_user(ATTACKER), cgroup=fake).stdout)
        self.assertEqual((who["container"], who["unit"], who["user_delegated"]),
                         (f"docker:{fake_id}", unit, True))
        r = b.token(user=as_user(ATTACKER), cgroup=fake)
        self.assertEqual(r.returncode, 3, r.stdout)
        self.assertIn("no rule matches this caller", r.stderr)
        # The root-owned scope is a container's: granted, and not delegated.
        who = json.loads(b.ctl("whoami", user=as_user(ATTACKER), cgroup=real).stdout)
        self.assertEqual((who["container"], who["user_delegated"]), (f"docker:{real_id}", False))
        r = b.token(user=as_user(ATTACKER), cgroup=real)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(token_claims(r.stdout.strip())["sub"].split("/")[3], "docker")
        # The service's own cgroup (named by root, owned by the delegate) is not delegated;
        # only what lies below it is.
        who = json.loads(b.ctl("whoami", user=as_user(ATTACKER), cgroup=svc).stdout)
        self.assertEqual((who["unit"], who["user_delegated"]), (unit, False))
        # As below user@UID.service: a rule that also pins the uid holds.
        b2 = self.broker(rules=[rule("mine", {"container": "docker:*", "uid": ATTACKER})])
        self.assertEqual(b2.token(user=as_user(ATTACKER), cgroup=fake).returncode, 0)

    def test_a_root_owned_but_group_writable_directory_is_delegated_too(self):
        cid = random_container_id()
        parent = self.cgroup(f"brokertest.slice/open-{os.getpid()}.service")
        os.chmod(parent.path, 0o775)
        scope = self.cgroup(f"{parent.relpath}/docker-{cid}.scope")
        b = self.broker(rules=[rule("docker", {"container": "docker:*"})])
        who = json.loads(b.ctl("whoami", cgroup=scope).stdout)
        self.assertEqual((who["container"], who["user_delegated"]), (f"docker:{cid}", True))
        self.assertEqual(b.token(cgroup=scope).returncode, 3)


if __name__ == "__main__":
    unittest.main()
