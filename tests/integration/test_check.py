"""`brokerd --check` checks everything a start would, and neither it nor a refused start creates
anything. One test per broken setup (MUNGE's habit): break one thing, show that --check exits 1
naming the configuration key, the path and the problem, that a start is refused with the same
line, and that the file system is exactly as it was (no state directory, no audit.db, no
keys.db, no socket directory). Then a configuration with every problem at once: all of them are
named, still nothing is made."""

import hashlib
import os
import shutil
import subprocess

from harness import Broker, BrokerTestCase, brokerd_path, sanitizer_env

OTHER = 4001
STRICT = ("wanted no group/other write (e.g. {eg}); the sticky bit is no exception for this "
          "directory")


def snapshot(top, skip=("brokerd.log", "notify.sock")):
    """Everything below `top`: kind, mode, owner, size, mtime, content hash and link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, top)
            if rel in skip:
                continue
            st = os.lstat(p)
            entry = [st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns]
            if os.path.islink(p):
                entry.append(os.readlink(p))
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    entry.append(hashlib.sha256(f.read()).hexdigest())
            out[rel] = entry
    st = os.lstat(top)  # its mtime moves with the test's own brokerd.log and notify.sock
    out["."] = [st.st_mode, st.st_uid]
    return out


class CheckTestCase(BrokerTestCase):
    start_broker = False

    def check(self, b):
        return b.check(env={"CREDENTIALS_DIRECTORY": None})

    def refused_everywhere(self, b, *lines, loaded=True):
        """--check exits 1 naming every line (each after "CONFIG: "), a start is refused with
        the same lines, and neither leaves a trace: the tree is as it was, and no state
        directory, audit database or socket was made. `loaded`: the configuration loads (the
        problems are the start's checks, not the file's own)."""
        before = snapshot(b.tmp)
        r = self.check(b)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "")
        for line in lines:
            self.assertIn(f"{b.config_path}: {line}", r.stderr)
        self.assertEqual(snapshot(b.tmp), before, "--check changed the file system")

        log = self.start_refused(b)
        for line in lines:
            self.assertIn(f"{b.config_path}: {line}", log)
        n = len(r.stderr.strip().splitlines())
        if loaded:
            self.assertIn(f"Refusing to start: {n} problem{'' if n == 1 else 's'} above; "
                          "nothing was created", log)
        self.assertEqual(snapshot(b.tmp), before, "a refused start changed the file system")
        return r.stderr

    def own_dir(self, b, name, mode=0o755):
        d = os.path.join(b.tmp, name)
        os.mkdir(d)
        os.chmod(d, mode)
        return d


class CheckEachProblemTest(CheckTestCase):
    def test_valid_config_checks_and_creates_nothing(self):
        b = self.broker(start=False)
        before = snapshot(b.tmp)
        r = self.check(b)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), f"{b.config_path}: configuration is valid (1 rules)")
        self.assertEqual(r.stderr, "")
        self.assertEqual(snapshot(b.tmp), before)
        for p in (b.state, b.db, os.path.dirname(b.workload), b.admin):
            self.assertFalse(os.path.exists(p), p)
        # and the same configuration starts
        b.start()
        self.assertEqual(b.token().returncode, 0)

    # -- the master key -------------------------------------------------------------------------

    def test_master_key_missing(self):
        b = self.broker(start=False)
        os.unlink(b.master_key)
        self.refused_everywhere(
            b, f"master_key_file: {b.master_key}: does not exist, wanted a regular file with "
               f"mode 0600; create one with brokerd --generate-master-key {b.master_key}")

    def test_master_key_0644(self):
        b = self.broker(start=False)
        os.chmod(b.master_key, 0o644)
        self.refused_everywhere(
            b, f"master_key_file: {b.master_key}: mode 0644, wanted 0600 (no group or other "
               "access)")

    def test_master_key_of_16_bytes(self):
        b = self.broker(start=False)
        with open(b.master_key, "r+b") as f:
            f.truncate(16)
        self.refused_everywhere(
            b, f"master_key_file: {b.master_key}: 16 bytes, wanted exactly 32; create one with "
               "brokerd --generate-master-key")

    def test_master_key_symlinked(self):
        b = self.broker(start=False)
        real = os.path.join(b.tmp, "real.key")
        os.rename(b.master_key, real)
        os.symlink(real, b.master_key)
        self.refused_everywhere(
            b, f"master_key_file: {b.master_key}: is a symlink, wanted a regular file")

    def test_no_master_key_at_all(self):
        b = self.broker(start=False)
        del b.config["master_key_file"]
        b.write_config()
        err = self.refused_everywhere(b, "master_key_file: no master key: pass the systemd "
                                         "credential master.key")
        self.assertIn("--generate-master-key", err)

    def test_master_key_that_did_not_seal_the_key_store(self):
        b = self.broker()
        self.assertEqual(b.stop(), 0)
        os.unlink(b.master_key)
        subprocess.run([brokerd_path(), "--generate-master-key", b.master_key], check=True,
                       capture_output=True, env=sanitizer_env())
        keys_db = os.path.join(b.state, "keys.db")
        self.refused_everywhere(
            b, f"master_key_file: the master key from {b.master_key} is not the one that sealed "
               f"{keys_db}; refusing to start")

    # -- directories ----------------------------------------------------------------------------

    def test_state_directory_0755(self):
        b = self.broker(start=False)
        os.mkdir(b.state)
        os.chmod(b.state, 0o755)
        # the audit database lives there too, which is fine for it (0755 is not writable)
        self.refused_everywhere(
            b, f"state_directory: {b.state}: mode 0755, wanted no group or other access "
               "(e.g. 0700)")

    def test_audit_directory_0777(self):
        b = self.broker(start=False)
        audit = self.own_dir(b, "audit", 0o777)
        b.db = os.path.join(audit, "audit.db")
        b.config["audit"]["database"] = b.db
        b.write_config()
        self.refused_everywhere(
            b, f"audit.database: {audit}: directory is writable by group or others (mode "
               "0777), " + STRICT.format(eg="0755"))

    def test_workload_socket_directory_0777(self):
        b = self.broker(start=False)
        wl = os.path.dirname(b.workload)
        os.makedirs(wl)
        os.chmod(wl, 0o777)
        self.refused_everywhere(
            b, f"listen.workload: {wl}: directory is writable by group or others (mode 0777), "
               + STRICT.format(eg="0755"))

    def test_admin_socket_directory_0777(self):
        b = self.broker(start=False)
        adm = self.own_dir(b, "adm", 0o777)
        b.admin = os.path.join(adm, "admin.sock")
        b.config["listen"]["admin"] = b.admin
        b.write_config()
        self.refused_everywhere(
            b, f"listen.admin: {adm}: directory is writable by group or others (mode 0777), "
               + STRICT.format(eg="0755"))

    def test_workload_socket_directory_not_searchable(self):
        b = self.broker(start=False)
        wl = os.path.dirname(b.workload)
        os.makedirs(wl)
        os.chmod(wl, 0o700)
        self.refused_everywhere(
            b, f"listen.workload: {wl}: not searchable by others (mode 0700), wanted o+x")

    def test_something_else_where_the_socket_goes(self):
        b = self.broker(start=False)
        os.makedirs(os.path.dirname(b.workload))
        with open(b.workload, "w") as f:
            f.write("precious")
        self.refused_everywhere(
            b, f"listen.workload: {b.workload} exists and is not a socket; refusing to replace "
               "it")

    def test_publish_directory_of_another_uid(self):
        b = self.broker(start=False)
        pub = self.own_dir(b, "pub")
        os.chown(pub, OTHER, OTHER)
        b.config["publish_directory"] = pub
        b.write_config()
        self.refused_everywhere(
            b, f"publish_directory: {pub}: owned by uid {OTHER}, wanted uid 0 (the daemon's "
               "effective uid)")

    def test_publish_directory_below_a_group_writable_one(self):
        b = self.broker(start=False)
        gw = self.own_dir(b, "gw", 0o775)
        b.config["publish_directory"] = os.path.join(gw, "pub")
        b.write_config()
        self.refused_everywhere(
            b, f"publish_directory: {gw}: directory is writable by group or others (mode 0775)")

    # -- files the configuration names -----------------------------------------------------------

    def test_ca_file_of_an_upstream_writable_by_others(self):
        b = self.broker(start=False)
        ca = os.path.join(b.tmp, "ca.pem")
        with open(ca, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\n")
        os.chmod(ca, 0o666)
        b.config["upstreams"] = {"idp": {
            "kind": "client_credentials", "token_endpoint": "https://idp.test/token",
            "ca_file": ca, "client_id": "broker", "client_auth": "client_secret_basic",
            "client_secret": "idp-secret"}}
        b.write_config()
        self.refused_everywhere(
            b, f"upstreams.idp.ca_file: refusing a CA file others could change: {ca}: mode "
               "0666, wanted no group or other write", loaded=False)

    def test_audit_database_of_another_uid(self):
        b = self.broker(start=False)
        os.makedirs(b.state, 0o700)
        with open(b.db, "wb"):
            pass
        os.chown(b.db, OTHER, OTHER)
        self.refused_everywhere(
            b, f"audit.database: {b.db}: owned by uid {OTHER}, wanted uid 0 (the daemon's "
               "effective uid)")


class CheckEverythingAtOnceTest(CheckTestCase):
    def test_every_problem_named_at_once_and_nothing_made(self):
        b = self.broker(start=False)
        os.chmod(b.master_key, 0o644)
        os.mkdir(b.state)
        os.chmod(b.state, 0o755)
        audit = self.own_dir(b, "audit", 0o777)
        b.db = os.path.join(audit, "audit.db")
        b.config["audit"]["database"] = b.db
        run = self.own_dir(b, "run", 0o777)
        pub = self.own_dir(b, "pub")
        os.chown(pub, OTHER, OTHER)
        b.config["publish_directory"] = pub
        b.write_config()
        err = self.refused_everywhere(
            b,
            f"master_key_file: {b.master_key}: mode 0644, wanted 0600",
            f"state_directory: {b.state}: mode 0755, wanted no group or other access",
            f"audit.database: {audit}: directory is writable by group or others (mode 0777)",
            f"publish_directory: {pub}: owned by uid {OTHER}",
            f"listen.workload: {run}: directory is writable by group or others (mode 0777)",
            f"listen.admin: {run}: directory is writable by group or others (mode 0777)")
        self.assertEqual(len(err.strip().splitlines()), 6, err)
        self.assertFalse(os.path.exists(os.path.join(b.state, "keys.db")))
        self.assertFalse(os.path.exists(b.db))


class CheckWhileRunningTest(CheckTestCase):
    def test_check_passes_while_the_daemon_runs_but_a_second_start_is_refused(self):
        b = self.broker()
        # the running daemon holds the socket locks: a check of its next configuration is fine
        r = self.check(b)
        self.assertEqual(r.returncode, 0, r.stderr)

        second = Broker(start=False)
        self.brokers.append(second)
        second.config["listen"] = b.config["listen"]
        second.write_config()
        before = snapshot(second.tmp)
        log = self.start_refused(second)
        self.assertIn(f"listen.workload: another brokerd is already serving {b.workload} (lock "
                      f"{b.workload}.lock is held); stop it first", log)
        self.assertIn(f"listen.admin: another brokerd is already serving {b.admin}", log)
        # nothing made for the second, nothing written to the first's log
        self.assertEqual(snapshot(second.tmp), before)
        self.assertFalse(os.path.exists(second.state))
        self.assertNotIn("started", [r["event"] for r in b.audit()][2:])
        self.assertEqual(b.token().returncode, 0)


class CheckReadOnlyPublishTest(CheckTestCase):
    """A publish directory on a read-only file system (what ProtectSystem=strict makes of one
    outside ReadWritePaths=): a start goes on, so --check warns and passes."""

    def test_read_only_publish_directory_is_a_warning(self):
        if not shutil.which("unshare"):
            self.skipTest("unshare not installed")
        b = self.broker(start=False)
        pub = self.own_dir(b, "pub")
        b.config["publish_directory"] = pub
        b.write_config()
        ro = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              f'mount --bind "{pub}" "{pub}" && mount -o remount,bind,ro "{pub}" && exec "$@"',
              "sh"]
        before = snapshot(b.tmp)
        r = b.check(prefix=ro)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{b.config_path}: warning: publish_directory: {pub}: on a read-only file "
                      "system", r.stderr)
        self.assertIn("ReadWritePaths=", r.stderr)
        self.assertEqual(snapshot(b.tmp), before)
        # a missing one that would have to be made there cannot be: a problem
        b.config["publish_directory"] = os.path.join(pub, "sub")
        b.write_config()
        r = b.check(prefix=ro)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"publish_directory: {pub}/sub: cannot create directory: Read-only file "
                      "system", r.stderr)
