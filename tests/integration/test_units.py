"""The systemd units parse and point at a real brokerd (systemd-analyze verify, offline)."""

import os
import shutil
import subprocess
import tempfile
import unittest

from harness import brokerd_path

UNITS = os.path.join(os.path.dirname(__file__), "..", "..", "units")


class UnitFilesTest(unittest.TestCase):
    def test_units_verify(self):
        analyze = shutil.which("systemd-analyze")
        if not analyze:
            self.skipTest("systemd-analyze not installed")
        d = tempfile.mkdtemp(prefix="broker-units-")
        try:
            sbindir = os.path.dirname(brokerd_path())
            for name in os.listdir(UNITS):
                with open(os.path.join(UNITS, name)) as f:
                    text = f.read().replace("@SBINDIR@", sbindir)
                with open(os.path.join(d, name), "w") as f:
                    f.write(text)
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
