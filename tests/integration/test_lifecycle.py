"""Start, stop, reload, socket safety and systemd socket activation."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time

from harness import Broker, BrokerTestCase, brokerd_path, sanitizer_env


class LifecycleTest(BrokerTestCase):
    def test_sigterm_exits_0_and_removes_sockets(self):
        self.assertEqual(self.b.token().returncode, 0)
        self.assertEqual(self.b.stop(), 0)
        self.assertFalse(os.path.exists(self.b.workload))
        self.assertFalse(os.path.exists(self.b.admin))
        events = [r["event"] for r in self.b.audit()]
        # a new log names its signing key first; a clean stop closes it with a checkpoint
        self.assertEqual(events[:2], ["audit_key", "started"])
        self.assertEqual(events[-2:], ["stopped", "checkpoint"])

    def test_socket_modes(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.b.workload).st_mode), 0o666)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.b.workload)).st_mode), 0o755)
        self.assertEqual(stat.S_IMODE(os.stat(self.b.admin).st_mode), 0o600)

    def test_second_daemon_on_same_socket_is_refused(self):
        second = Broker(tmp=None, start=False)
        self.brokers.append(second)
        second.config["listen"] = self.b.config["listen"]
        second.write_config()
        self.assertFalse(second.start(expect_ready=False, timeout=3))
        self.assertEqual(second.proc.wait(5), 1)
        second.proc = None
        log = second.read_log()
        # found before anything is made: its own state directory was not created
        self.assertIn(f"listen.workload: another brokerd is already serving {self.b.workload}",
                      log)
        self.assertIn(f"listen.admin: another brokerd is already serving {self.b.admin}", log)
        self.assertFalse(os.path.exists(second.state))
        # the first one still serves
        self.assertEqual(self.b.token().returncode, 0)

    def test_stale_socket_is_removed(self):
        self.b.kill9()  # leaves its socket file behind
        self.assertTrue(os.path.exists(self.b.workload))
        self.b.start()
        self.assertEqual(self.b.token().returncode, 0)
        self.assertIn("Removed stale socket", self.b.read_log())

    def test_non_socket_in_the_way_is_not_replaced(self):
        self.assertEqual(self.b.stop(), 0)
        with open(self.b.workload, "w") as f:
            f.write("precious")
        self.assertFalse(self.b.start(expect_ready=False, timeout=3))
        self.assertEqual(self.b.proc.wait(5), 1)
        self.b.proc = None
        with open(self.b.workload) as f:
            self.assertEqual(f.read(), "precious")
        self.assertIn("is not a socket", self.b.read_log())

    def test_sighup_reload_keeps_old_config_on_error(self):
        cfg = json.loads(json.dumps(self.b.config))
        cfg["rules"][0]["audiences"].append("https://hup.test")
        self.b.write_config(cfg)
        os.kill(self.b.daemon_pid(), signal.SIGHUP)
        deadline = time.time() + 5
        while time.time() < deadline and self.b.token(audience="https://hup.test").returncode:
            time.sleep(0.05)
        self.assertEqual(self.b.token(audience="https://hup.test").returncode, 0)
        self.b.write_config({"issuer": 1})
        os.kill(self.b.daemon_pid(), signal.SIGHUP)
        deadline = time.time() + 5
        while time.time() < deadline and "keeping the running" not in self.b.read_log():
            time.sleep(0.05)
        self.assertIn("keeping the running configuration", self.b.read_log())
        self.assertEqual(self.b.token(audience="https://hup.test").returncode, 0)


class UnsafePathTest(BrokerTestCase):
    start_broker = False

    def test_group_writable_socket_ancestor_is_refused(self):
        b = self.broker(start=False)
        run = os.path.join(b.tmp, "run")
        os.makedirs(run)
        os.chmod(run, 0o775)
        self.start_refused(b, run, "0775")

    def test_socket_dir_owned_by_another_user_is_refused(self):
        b = self.broker(start=False)
        run = os.path.join(b.tmp, "run")
        os.makedirs(run)
        os.chown(run, 4001, 4001)
        self.start_refused(b, run, "4001")

    def test_workload_socket_dir_not_searchable_is_refused(self):
        b = self.broker(start=False)
        wl = os.path.dirname(b.workload)
        os.makedirs(wl)
        os.chmod(wl, 0o700)
        self.start_refused(b, wl, "0700")

    def test_state_directory_open_to_others_is_refused(self):
        b = self.broker(start=False)
        os.makedirs(b.state)
        os.chmod(b.state, 0o755)
        self.start_refused(b, b.state, "0755")

    def test_sticky_world_writable_ancestor_is_fine(self):
        # /tmp itself is 1777; a test tree below it works, like MUNGE allows
        b = self.broker(start=False)
        mid = os.path.join(b.tmp, "sticky")
        os.makedirs(mid)
        os.chmod(mid, 0o1777)
        b.config["listen"]["workload"] = os.path.join(mid, "wl", "broker.sock")
        b.workload = b.config["listen"]["workload"]
        b.write_config()
        b.start()
        self.assertEqual(b.token().returncode, 0)


class SocketActivationTest(BrokerTestCase):
    start_broker = False

    def test_sockets_passed_by_systemd(self):
        activate = shutil.which("systemd-socket-activate")
        if not activate:
            self.skipTest("systemd-socket-activate not installed")
        b = self.broker(start=False)
        os.makedirs(os.path.dirname(b.workload))
        # systemd-socket-activate binds both sockets and execs brokerd with LISTEN_FDS,
        # naming them as FileDescriptorName= would.
        b.prefix = [activate, "-l", b.workload, "-l", b.admin,
                    "--fdname=workload:admin", "-E", "NOTIFY_SOCKET"]
        # It binds first and execs brokerd on the first connection (lazy activation), so the
        # first client is served by the freshly started daemon from the socket's backlog.
        b.start(expect_ready=False, timeout=0.5)
        self.assertEqual(b.token().returncode, 0)
        self.assertIn('Using socket "workload" passed by systemd', b.read_log())
        self.assertEqual(b.admin_ctl("status").returncode, 0)
        self.assertEqual(b.stop(), 0)
