"""Who may change what brokerd reads and where it creates names: the configuration file and
its directory, and the directories of the state, the grant log, the sockets and the published
files. One test per broken setup, MUNGE's habit: break one thing, show that brokerd refuses it
with a message naming the path, what it found and what it wants, and that nothing was lost or
written where it should not be. The other uid is a real one (setpriv), the daemon runs as
root."""

import json
import os
import signal
import subprocess

from harness import BrokerTestCase, as_user, wait_until

OTHER = 4001  # another local user
NEW_AUD = "https://new.test"
REFUSED = "refusing a configuration others could change: "
STRICT = ("wanted no group/other write (e.g. {eg}); the sticky bit is no exception for this "
          "directory")


def run_as_other(*cmd, **kw):
    return subprocess.run(as_user(OTHER) + list(cmd), check=True, capture_output=True, **kw)


class PathsTestCase(BrokerTestCase):
    start_broker = False

    def start_refused(self, b, *needles, **kw):
        """BrokerTestCase.start_refused, and brokerd must refuse at once (within 8 s)."""
        return super().start_refused(b, *needles, within=8, **kw)


# --- 5. the configuration file ------------------------------------------------------------------

class ConfigFileTest(PathsTestCase):
    """Each unsafe setup is refused at start, by --check and on reload (SIGHUP and brokerctl
    reload), where the running configuration stays."""

    def config_broker(self, in_dir=False):
        """A broker whose config is root's, 0644; with in_dir, in a 0755 directory of its own
        (etc/) below the broker's 0755 tmp."""
        b = self.broker(start=False)
        if in_dir:
            etc = os.path.join(b.tmp, "etc")
            os.mkdir(etc)
            os.chmod(etc, 0o755)
            b.config_path = os.path.join(etc, "brokerd.json")
            b.write_config()
        os.chmod(b.config_path, 0o644)
        return b

    def widened(self, b):
        """The running config plus an audience: whether it is granted shows which config
        runs."""
        cfg = json.loads(json.dumps(b.config))
        cfg["rules"][0]["audiences"].append(NEW_AUD)
        return cfg

    # -- the unsafe setups: (what to break, what to undo, what the message must say) ---------

    def file_world_writable(self, b):
        return (lambda: os.chmod(b.config_path, 0o666), lambda: os.chmod(b.config_path, 0o644),
                f"{b.config_path}: mode 0666, wanted no group or other write (e.g. 0644 or 0600)")

    def file_other_owner(self, b):
        return (lambda: os.chown(b.config_path, OTHER, OTHER),
                lambda: os.chown(b.config_path, 0, 0),
                f"{b.config_path}: owned by uid {OTHER}, wanted root or uid 0")

    def dir_world_writable(self, b):
        etc = os.path.dirname(b.config_path)
        return (lambda: os.chmod(etc, 0o777), lambda: os.chmod(etc, 0o755),
                f"{etc}: directory is writable by group or others (mode 0777), "
                + STRICT.format(eg="0755"))

    def dir_sticky(self, b):
        etc = os.path.dirname(b.config_path)
        return (lambda: os.chmod(etc, 0o1777), lambda: os.chmod(etc, 0o755),
                f"{etc}: directory is writable by group or others (mode 1777), "
                + STRICT.format(eg="0755"))

    # -- the three places it is read -----------------------------------------------------------

    def refused_at_start(self, setup, in_dir=False):
        b = self.config_broker(in_dir)
        brk, _, msg = setup(b)
        brk()
        log = self.start_refused(b)
        self.assertIn(f"{b.config_path}: {REFUSED}{msg}", log)
        # refused before anything was made from it
        self.assertFalse(os.path.exists(b.state))
        self.assertFalse(os.path.exists(b.workload))

    def refused_by_check(self, setup, in_dir=False):
        b = self.config_broker(in_dir)
        self.assertEqual(b.check().returncode, 0)
        brk, _, msg = setup(b)
        brk()
        r = b.check()
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertIn(f"{b.config_path}: {REFUSED}{msg}", r.stderr)

    def refused_on_reload(self, setup, in_dir=False):
        b = self.config_broker(in_dir)
        b.start()
        self.assertEqual(b.token().returncode, 0)
        self.assertEqual(b.token(audience=NEW_AUD).returncode, 3)
        brk, undo, msg = setup(b)
        b.write_config(self.widened(b))
        brk()

        mark = len(b.read_log())
        os.kill(b.daemon_pid(), signal.SIGHUP)
        log = wait_until(lambda: (lambda l: l if "keeping the running" in l else None)(
            b.read_log()[mark:]), 5, what="the refused SIGHUP reload")
        self.assertIn(f"{b.config_path}: {REFUSED}{msg}", log)
        self.assertEqual(b.token(audience=NEW_AUD).returncode, 3)

        r = b.admin_ctl("reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{b.config_path}: {REFUSED}{msg}", r.stderr)
        # the running configuration stays and still serves
        self.assertEqual(b.token(audience=NEW_AUD).returncode, 3)
        self.assertEqual(b.token().returncode, 0)

        # only the permission was wrong: put it right and the same file loads
        undo()
        r = b.admin_ctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(b.token(audience=NEW_AUD).returncode, 0)

    # config 0666
    def test_world_writable_config_refused_at_start(self):
        self.refused_at_start(self.file_world_writable)

    def test_world_writable_config_refused_by_check(self):
        self.refused_by_check(self.file_world_writable)

    def test_world_writable_config_refused_on_reload(self):
        self.refused_on_reload(self.file_world_writable)

    # config owned by another uid
    def test_config_of_another_uid_refused_at_start(self):
        self.refused_at_start(self.file_other_owner)

    def test_config_of_another_uid_refused_by_check(self):
        self.refused_by_check(self.file_other_owner)

    def test_config_of_another_uid_refused_on_reload(self):
        self.refused_on_reload(self.file_other_owner)

    # config in a 0777 directory
    def test_config_in_world_writable_dir_refused_at_start(self):
        self.refused_at_start(self.dir_world_writable, in_dir=True)

    def test_config_in_world_writable_dir_refused_by_check(self):
        self.refused_by_check(self.dir_world_writable, in_dir=True)

    def test_config_in_world_writable_dir_refused_on_reload(self):
        self.refused_on_reload(self.dir_world_writable, in_dir=True)

    # config in a 1777 directory: no sticky exception for its own directory
    def test_config_in_sticky_dir_refused_at_start(self):
        self.refused_at_start(self.dir_sticky, in_dir=True)

    def test_config_in_sticky_dir_refused_by_check(self):
        self.refused_by_check(self.dir_sticky, in_dir=True)

    def test_config_in_sticky_dir_refused_on_reload(self):
        self.refused_on_reload(self.dir_sticky, in_dir=True)

    # a root config, 0644, in 0755 directories: accepted everywhere
    def accepted_setup(self):
        b = self.config_broker(in_dir=True)
        for d in (b.tmp, os.path.dirname(b.config_path)):
            self.assertEqual(os.stat(d).st_mode & 0o7777, 0o755)
        st = os.stat(b.config_path)
        self.assertEqual((st.st_uid, st.st_mode & 0o7777), (0, 0o644))
        return b

    def test_root_config_0644_in_0755_dirs_accepted_at_start(self):
        b = self.accepted_setup()
        b.start()
        self.assertEqual(b.token().returncode, 0)

    def test_root_config_0644_in_0755_dirs_accepted_by_check(self):
        b = self.accepted_setup()
        r = b.check()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), f"{b.config_path}: configuration is valid (1 rules)")

    def test_root_config_0644_in_0755_dirs_accepted_on_reload(self):
        b = self.accepted_setup()
        b.start()
        b.write_config(self.widened(b))
        os.kill(b.daemon_pid(), signal.SIGHUP)
        wait_until(lambda: b.token(audience=NEW_AUD).returncode == 0, 5, what="the SIGHUP reload")
        b.write_config(b.config)
        r = b.admin_ctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(b.token(audience=NEW_AUD).returncode, 3)

    def test_config_dir_below_sticky_ancestor_accepted(self):
        # its ancestors keep the usual rule: /tmp-like 1777 above a directory of its own
        b = self.broker(start=False)
        shared = os.path.join(b.tmp, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o1777)
        etc = os.path.join(shared, "etc")
        os.mkdir(etc, 0o755)
        b.config_path = os.path.join(etc, "brokerd.json")
        b.write_config()
        os.chmod(b.config_path, 0o644)
        self.assertEqual(b.check().returncode, 0)
        b.start()
        self.assertEqual(b.token().returncode, 0)


# --- 6. directories brokerd creates names in ----------------------------------------------------

class OwnDirectoriesTest(PathsTestCase):
    def sticky_dir(self, b, name):
        d = os.path.join(b.tmp, name)
        os.mkdir(d)
        os.chmod(d, 0o1777)
        return d

    def test_audit_db_planted_in_sticky_dir_is_refused(self):
        b = self.broker(start=False)
        shared = self.sticky_dir(b, "audit")
        db = os.path.join(shared, "audit.db")
        # another user makes the database first, 0666, so that they could delete rows later
        run_as_other("sh", "-c", f'umask 0; : > "{db}"')
        st = os.stat(db)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (OTHER, 0o666))
        b.db = db
        b.config["audit"]["database"] = db
        b.write_config()
        log = self.start_refused(b)
        self.assertIn(f"audit.database: {shared}: directory is writable by "
                      "group or others (mode 1777), " + STRICT.format(eg="0755"), log)
        # nothing written to it, nothing made beside it
        after = os.stat(db)
        self.assertEqual((after.st_size, after.st_mtime_ns, after.st_uid),
                         (0, st.st_mtime_ns, OTHER))
        self.assertEqual(sorted(os.listdir(shared)), ["audit.db"])

    def test_audit_db_of_another_uid_in_own_dir_is_refused(self):
        # the directory is safe, but a file someone else owns is there (made before it was)
        b = self.broker(start=False)
        d = os.path.join(b.tmp, "audit")
        os.mkdir(d, 0o700)
        db = os.path.join(d, "audit.db")
        with open(db, "wb"):
            pass
        os.chown(db, OTHER, OTHER)
        b.db = db
        b.config["audit"]["database"] = db
        b.write_config()
        log = self.start_refused(b)
        self.assertIn(f"audit.database: {db}: owned by uid {OTHER}, wanted uid 0 (the "
                      "daemon's effective uid)", log)
        self.assertEqual(os.path.getsize(db), 0)
        self.assertEqual(os.listdir(d), ["audit.db"])

    def test_world_writable_audit_db_is_refused(self):
        b = self.broker(start=False)
        os.makedirs(b.state, 0o700)
        with open(b.db, "wb"):
            pass
        os.chmod(b.db, 0o666)
        log = self.start_refused(b)
        self.assertIn(f"audit.database: {b.db}: mode 0666, wanted no group or other "
                      "write (e.g. 0600)", log)
        self.assertEqual(os.path.getsize(b.db), 0)

    def test_lock_held_by_another_uid_in_sticky_socket_dir_is_refused(self):
        b = self.broker(start=False)
        shared = self.sticky_dir(b, "sock")
        sock = os.path.join(shared, "broker.sock")
        lock = sock + ".lock"
        b.workload = sock
        b.config["listen"]["workload"] = sock
        b.write_config()
        # flock(1) as the other user: creates the lock file, takes the lock, then says so
        holder = subprocess.Popen(
            as_user(OTHER) + ["flock", "--exclusive", lock, "sh", "-c", "echo locked; sleep 60"],
            stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(holder.stdout.readline().strip(), "locked")
            self.assertEqual(os.stat(lock).st_uid, OTHER)
            log = self.start_refused(b)
        finally:
            holder.kill()
            holder.wait()
        self.assertIn(f"listen.workload: {shared}: directory is writable by group or "
                      "others (mode 1777), " + STRICT.format(eg="0755"), log)
        self.assertNotIn("another brokerd is already serving", log)
        self.assertFalse(os.path.exists(sock))

    def test_lock_file_of_another_uid_in_own_socket_dir_is_refused(self):
        b = self.broker(start=False)
        wl = os.path.dirname(b.workload)
        os.makedirs(wl, 0o755)
        lock = b.workload + ".lock"
        with open(lock, "wb"):
            pass
        os.chown(lock, OTHER, OTHER)
        log = self.start_refused(b)
        self.assertIn(f"listen.workload: {lock}: owned by uid {OTHER}, "
                      "wanted uid 0 (the daemon's effective uid)", log)
        self.assertFalse(os.path.exists(b.workload))

    def test_symlink_planted_for_publish_directory_is_refused(self):
        b = self.broker(start=False)
        shared = self.sticky_dir(b, "www")
        victim = os.path.join(b.tmp, "victim")  # a directory of root's the link points at
        os.mkdir(victim, 0o755)
        with open(os.path.join(victim, "index.html"), "w") as f:
            f.write("hello\n")
        before = sorted(os.listdir(victim)), os.stat(victim).st_mtime_ns
        pub = os.path.join(shared, "pub")
        run_as_other("ln", "-s", victim, pub)
        self.assertEqual(os.lstat(pub).st_uid, OTHER)
        b.config["publish_directory"] = pub
        b.write_config()
        log = self.start_refused(b)
        self.assertIn(f"publish_directory: {pub}: symlink owned by uid {OTHER}, wanted "
                      "a directory, or a symlink owned by root or uid 0", log)
        # the link target untouched: no jwks.json, no .well-known
        self.assertEqual((sorted(os.listdir(victim)), os.stat(victim).st_mtime_ns), before)
        self.assertTrue(os.path.islink(pub))

    def test_publish_directory_in_sticky_dir_made_by_brokerd_is_fine(self):
        # the control: nothing planted, brokerd makes pub/ itself below the sticky directory
        b = self.broker(start=False)
        shared = self.sticky_dir(b, "www")
        pub = os.path.join(shared, "pub")
        b.config["publish_directory"] = pub
        b.write_config()
        b.start()
        st = os.lstat(pub)
        self.assertEqual((st.st_uid, st.st_mode & 0o7777), (0, 0o755))
        with open(os.path.join(pub, "jwks.json")) as f:
            self.assertTrue(json.load(f)["keys"])
        self.assertTrue(os.path.exists(os.path.join(pub, ".well-known", "openid-configuration")))

    def test_sticky_state_directory_is_refused(self):
        b = self.broker(start=False)
        os.mkdir(b.state)
        os.chmod(b.state, 0o1777)
        log = self.start_refused(b)
        self.assertIn(f"state_directory: {b.state}: directory is writable by group or "
                      "others (mode 1777), " + STRICT.format(eg="0700"), log)
        self.assertEqual(os.listdir(b.state), [])

    def test_sticky_publish_directory_is_refused(self):
        b = self.broker(start=False)
        pub = self.sticky_dir(b, "pub")
        b.config["publish_directory"] = pub
        b.write_config()
        log = self.start_refused(b)
        self.assertIn(f"publish_directory: {pub}: directory is writable by group or "
                      "others (mode 1777), " + STRICT.format(eg="0755"), log)
        self.assertEqual(os.listdir(pub), [])
