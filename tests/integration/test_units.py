"""The systemd units: they parse and point at a real brokerd (systemd-analyze verify, offline),
and the daemon works inside the service's sandbox as the kernel enforces it.

The machines that run the tests have no systemd as PID 1, so ServiceSandboxTest builds the
parts of brokerd.service that decide whether callers can still be identified, with the same
kernel mechanisms systemd uses: a non-root user with CAP_SYS_PTRACE as its only (ambient)
capability and no_new_privs (User=, AmbientCapabilities=, CapabilityBoundingSet=,
NoNewPrivileges=), /proc mounted hidepid=invisible,subset=pid in a private mount namespace
(ProtectProc=invisible, ProcSubset=pid) and the unit's system call allow list as a seccomp
filter that answers EPERM (SystemCallFilter=, SystemCallErrorNumber=). The installed units
are checked in test_install."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import (BrokerTestCase, as_user, brokerctl_path, brokerd_path, sanitizer_build,
                     token_claims)

UNITS = os.path.join(os.path.dirname(__file__), "..", "..", "units")
HERE = os.path.dirname(os.path.abspath(__file__))

# The daemon's user in the emulated service, and a caller of another uid.
DAEMON_UID = 61234
CALLER_UID = 61235


def unit_settings(path, section="Service"):
    """KEY -> [values] of one section of a unit file (a key may be given more than once)."""
    out, current = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                current = line.strip("[]")
                continue
            if current == section and "=" in line:
                k, v = line.split("=", 1)
                out.setdefault(k.strip(), []).append(v.strip())
    return out


def syscall_groups():
    """systemd-analyze's system call groups: {"@name": [members, "@groups" included]}."""
    r = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                       check=True)
    groups, current = {}, None
    for line in r.stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif not line.strip() or line.startswith("#"):
            current = None  # the end of a group, or the list of calls in none
        elif current is not None and not line.lstrip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names, groups):
    out = set()
    for n in names:
        if n.startswith("@"):
            out |= expand(groups[n], groups)
        else:
            out.add(n)
    return out


def unit_syscall_allow_list(settings):
    """The system calls SystemCallFilter= lines allow: allow lists add, ~ lists take away."""
    groups = syscall_groups()
    allowed = set()
    for v in settings.get("SystemCallFilter", []):
        if v.startswith("~"):
            allowed -= expand(v[1:].split(), groups)
        else:
            allowed |= expand(v.split(), groups)
    return allowed


class UnitFilesTest(unittest.TestCase):
    def test_units_verify(self):
        analyze = shutil.which("systemd-analyze")
        if not analyze:
            self.skipTest("systemd-analyze not installed")
        d = tempfile.mkdtemp(prefix="broker-units-")
        try:
            sbindir = os.path.dirname(brokerd_path())
            for name in ("brokerd.service", "brokerd.socket", "brokerd-admin.socket"):
                with open(os.path.join(UNITS, name)) as f:
                    text = f.read().replace("@SBINDIR@", sbindir).replace("@SYSCONFDIR@", "/etc")
                self.assertNotRegex(text, r"@[A-Z_]+@", name)
                with open(os.path.join(d, name), "w") as f:
                    f.write(text)
            # The man pages are checked where they are installed (test_install).
            r = subprocess.run([analyze, "verify", "--man=no",
                                os.path.join(d, "brokerd.service"),
                                os.path.join(d, "brokerd.socket"),
                                os.path.join(d, "brokerd-admin.socket")],
                               capture_output=True, text=True, cwd=d)
            # systemd-analyze prints warnings on stderr and exits non-zero on errors
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(r.stderr.strip(), "", r.stderr)
        finally:
            shutil.rmtree(d)

    def test_units_name_the_contract_sockets(self):
        with open(os.path.join(UNITS, "brokerd.socket")) as f:
            s = f.read()
        self.assertIn("ListenStream=/run/brokerd/workload/broker.sock", s)
        self.assertIn("FileDescriptorName=workload", s)
        self.assertIn("SocketMode=0666", s)
        with open(os.path.join(UNITS, "brokerd-admin.socket")) as f:
            s = f.read()
        self.assertIn("ListenStream=/run/brokerd/admin.sock", s)
        self.assertIn("FileDescriptorName=admin", s)
        self.assertIn("SocketMode=0600", s)

    def test_service_keeps_what_the_daemon_needs(self):
        """The settings the README's exposure table explains, as the daemon needs them."""
        s = unit_settings(os.path.join(UNITS, "brokerd.service"))
        self.assertEqual(s["Type"], ["notify"])
        self.assertEqual(s["User"], ["brokerd"])
        self.assertNotIn("DynamicUser", s)  # the keys keep one owner across restarts
        self.assertEqual(s["CapabilityBoundingSet"], ["CAP_SYS_PTRACE"])
        self.assertEqual(s["AmbientCapabilities"], ["CAP_SYS_PTRACE"])
        self.assertNotIn("PrivateUsers", s)  # callers' uids and /proc/PID/exe need the host's
        self.assertEqual(s["StateDirectory"], ["brokerd"])
        self.assertEqual(s["RuntimeDirectory"], ["brokerd brokerd/workload"])
        # The socket units' sockets live in the runtime directories: not removed on stop.
        self.assertEqual(s["RuntimeDirectoryPreserve"], ["yes"])
        self.assertTrue(s["LoadCredentialEncrypted"][0].startswith("master.key:"))
        self.assertEqual(s["PrivateNetwork"], ["yes"])
        self.assertEqual(s["RestrictAddressFamilies"], ["AF_UNIX"])
        self.assertEqual(s["IPAddressDeny"], ["any"])
        self.assertIn("@SBINDIR@/brokerd --config @SYSCONFDIR@/brokerd/brokerd.json --check",
                      s["ExecStartPre"])

    def test_federation_dropin_opens_only_the_network(self):
        s = unit_settings(os.path.join(UNITS, "federation.conf"))
        self.assertEqual(set(s), {"PrivateNetwork", "RestrictAddressFamilies", "IPAddressAllow"})
        self.assertEqual(s["PrivateNetwork"], ["no"])
        self.assertEqual(s["RestrictAddressFamilies"], ["AF_UNIX AF_INET AF_INET6"])


class ServiceSandboxTest(BrokerTestCase):
    """brokerd as brokerd.service runs it (see the module's docstring), called by other uids."""

    start_broker = False

    def setUp(self):
        super().setUp()
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze not installed (the unit's system call groups)")
        self.settings = unit_settings(os.path.join(UNITS, "brokerd.service"))
        # What this test builds; a change to any of them needs a change here.
        self.assertEqual(self.settings["ProtectProc"], ["invisible"])
        self.assertEqual(self.settings["ProcSubset"], ["pid"])
        self.assertEqual(self.settings["NoNewPrivileges"], ["yes"])
        self.assertEqual(self.settings["SystemCallErrorNumber"], ["EPERM"])
        self.allowed = unit_syscall_allow_list(self.settings)
        self.assertIn("read", self.allowed)
        for denied in ("setuid", "capset", "fchown", "setrlimit", "ptrace", "process_vm_writev",
                       "mount"):
            self.assertNotIn(denied, self.allowed)
        self.cg = self.cgroup("brokertest.slice/sandbox-caller.service")

    def sandboxed(self, capability=True):
        caps = ",+sys_ptrace" if capability else ""
        prefix = [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount -t proc -o hidepid=invisible,subset=pid proc /proc && exec "$@"',
            "sh",
            "setpriv", f"--reuid={DAEMON_UID}", f"--regid={DAEMON_UID}", "--clear-groups",
            f"--inh-caps=-all{caps}", f"--ambient-caps=-all{caps}",
            "--bounding-set=-all,+sys_ptrace", "--no-new-privs",
        ]
        # LeakSanitizer ptraces the process at exit, which the unit's filter forbids: a
        # sanitizer build gets everything but the filter.
        if not sanitizer_build():
            prefix += ["/usr/bin/python3", os.path.join(HERE, "seccomp_exec.py"),
                       ",".join(sorted(self.allowed)), "--"]
        rules = [{"name": "caller",
                  "match": {"uid": CALLER_UID, "unit": "sandbox-caller.service",
                            "exe": brokerctl_path()},
                  "subject": "spiffe://test/{unit}", "audiences": ["https://api.test"]}]
        b = self.broker(rules=rules, start=False, prefix=prefix)
        # The daemon's user owns what StateDirectory= and RuntimeDirectory= would give it.
        os.chown(b.tmp, DAEMON_UID, DAEMON_UID)
        os.chown(b.master_key, DAEMON_UID, DAEMON_UID)
        old = os.umask(0)  # the daemon's user must be able to send to the notify socket
        try:
            b.start()
        finally:
            os.umask(old)
        return b

    def caller(self, b, *args):
        return b.ctl(*args, user=as_user(CALLER_UID), cgroup=self.cg)

    def test_callers_identified_with_only_cap_sys_ptrace(self):
        b = self.sandboxed()
        with open(f"/proc/{b.daemon_pid()}/status") as f:
            status = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        self.assertEqual(status["Uid"].split()[0], str(DAEMON_UID))
        self.assertEqual(int(status["CapEff"], 16), 1 << 19)  # CAP_SYS_PTRACE alone
        self.assertEqual(status["NoNewPrivs"].strip(), "1")
        if not sanitizer_build():
            self.assertEqual(status["Seccomp"].strip(), "2")

        r = self.caller(b, "whoami")
        self.assertEqual(r.returncode, 0, r.stderr + b.read_log())
        w = json.loads(r.stdout)
        self.assertEqual(w["uid"], CALLER_UID)
        self.assertEqual(w["exe"], brokerctl_path())
        self.assertEqual(w["unit"], "sandbox-caller.service")
        self.assertEqual(w["rule"], "caller")
        r = self.caller(b, "token", "--audience", "https://api.test")
        self.assertEqual(r.returncode, 0, r.stderr + b.read_log())
        self.assertEqual(token_claims(r.stdout.strip())["sub"], "spiffe://test/sandbox-caller.service")
        # Root's processes too (a uid the daemon's user cannot ptrace without the capability).
        r = b.ctl("whoami")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["exe"], brokerctl_path())

        # Admin operations and a reload under the same filter; the state is the user's own.
        for op in ("status", "reload", "rotate"):
            r = b.admin_ctl(op)
            self.assertEqual(r.returncode, 0, f"{op}: {r.stdout}{r.stderr}{b.read_log()}")
        for name in ("keys.db", "audit.db"):
            self.assertEqual(os.stat(os.path.join(b.state, name)).st_uid, DAEMON_UID)
        self.assertEqual(b.stop(), 0, b.read_log())

    def test_without_the_capability_callers_are_not_identified(self):
        """The capability is what makes identification work: without it, /proc hides other
        users' processes and their requests are refused, not granted on a partial identity."""
        b = self.sandboxed(capability=False)
        r = self.caller(b, "token", "--audience", "https://api.test")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stdout, "")
        r = self.caller(b, "whoami")
        self.assertNotIn("sandbox-caller.service", r.stdout)
        self.assertEqual(b.stop(), 0, b.read_log())


if __name__ == "__main__":
    unittest.main()
