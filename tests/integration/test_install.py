"""make install and make uninstall, into a DESTDIR: the tree and its modes, every placeholder
filled in, a configuration never overwritten, man pages that render without a warning, a
program built against the installed libbroker with pkg-config, and the installed units as
systemd-analyze verifies and scores them (offline: the machines that run the tests have no
systemd as PID 1)."""

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest

from harness import BUILD, sanitizer_build

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# systemd-analyze security --offline=true: the shipped service, and with the federation
# drop-in; the README's "systemd" section explains each item left.
EXPOSURE_MAX = 1.5
EXPOSURE_SHIPPED = 0.7
EXPOSURE_FEDERATION = 1.5
ITEMS_LEFT = {
    "RootDirectory=/RootImage=",
    "AmbientCapabilities=",
    "RestrictAddressFamilies=~AF_UNIX",
    "CapabilityBoundingSet=~CAP_SYS_PTRACE",
    "PrivateUsers=",
    "DeviceAllow=",
}
ITEMS_LEFT_FEDERATION = ITEMS_LEFT | {
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "PrivateNetwork=",
    "IPAddressDeny=",
}

# Under DESTDIR with PREFIX=/usr: path -> mode (None: a symlink).
TREE = {
    "usr/sbin/brokerd": 0o755,
    "usr/bin/brokerctl": 0o755,
    "usr/lib/libbroker.so.0": 0o755,
    "usr/lib/libbroker.so": None,
    "usr/lib/libbroker.a": 0o644,
    "usr/include/broker.h": 0o644,
    "usr/lib/pkgconfig/libbroker.pc": 0o644,
    "usr/lib/systemd/system/brokerd.service": 0o644,
    "usr/lib/systemd/system/brokerd.socket": 0o644,
    "usr/lib/systemd/system/brokerd-admin.socket": 0o644,
    "usr/lib/sysusers.d/brokerd.conf": 0o644,
    "usr/share/doc/brokerd/examples/federation.conf": 0o644,
    "usr/share/doc/brokerd/examples/brokerd.json": 0o644,
    "usr/share/bash-completion/completions/brokerctl": 0o644,
    "usr/share/man/man8/brokerd.8": 0o644,
    "usr/share/man/man5/brokerd.json.5": 0o644,
    "usr/share/man/man1/brokerctl.1": 0o644,
    "etc/brokerd/brokerd.json": 0o644,
}
MAN_PAGES = ["usr/share/man/man8/brokerd.8", "usr/share/man/man5/brokerd.json.5",
             "usr/share/man/man1/brokerctl.1"]

PROGRAM = r"""
#include <broker.h>
#include <stdio.h>
#include <string.h>

/* Which libbroker this process runs: the shared one from the install, or none (static). */
static void print_libbroker(void)
{
        char line[4096];
        FILE *f = fopen("/proc/self/maps", "r");

        while (f && fgets(line, sizeof(line), f))
                if (strstr(line, "libbroker.so")) {
                        printf("mapped %s", strchr(line, '/'));
                        break;
                }
        if (f)
                fclose(f);
}

int main(int argc, char **argv)
{
        broker *b = NULL;
        broker_error err;
        int r;

        if (argc != 2 || strcmp(broker_strerror(BROKER_E_DENIED), "denied") != 0)
                return 10;
        r = broker_open(argv[1], 1000, &b, &err);
        if (r != BROKER_E_UNAVAILABLE || b) {
                fprintf(stderr, "broker_open: %d\n", r);
                return 11;
        }
        printf("%s: %s\n", broker_strerror(r), err.message);
        print_libbroker();
        return 0;
}
"""


def clean_env(**extra):
    env = dict(os.environ)
    # A make that runs us (make integration) passes its jobserver, whose descriptors we do
    # not inherit.
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    env.update(extra)
    return env


def make(*args):
    """make in the checkout, on the build the tests run (BROKER_BUILD), already built."""
    cmd = ["make", "-C", ROOT, "--no-print-directory", f"BUILD={os.path.abspath(BUILD)}"]
    if sanitizer_build():
        cmd.append("SAN=1")
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, env=clean_env())
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd + list(args))}: {r.stdout}{r.stderr}")
    return r.stdout


def files_under(d):
    out = set()
    for dirpath, dirnames, filenames in os.walk(d):
        for n in filenames + [x for x in dirnames if os.path.islink(os.path.join(dirpath, x))]:
            out.add(os.path.relpath(os.path.join(dirpath, n), d))
    return out


def exposure(output):
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", output)
    if not m:
        raise AssertionError("no exposure level in:\n" + output)
    return float(m.group(1))


def items_left(output):
    """The names of the items systemd-analyze security counts against the unit (✗, or - in
    a locale without it)."""
    return {line.split()[1] for line in output.splitlines() if line.startswith(("✗ ", "- "))}


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="broker-install-")
        os.chmod(cls.tmp, 0o755)
        cls.dest = os.path.join(cls.tmp, "dest")
        make("install", f"DESTDIR={cls.dest}", "PREFIX=/usr")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, rel):
        return os.path.join(self.dest, rel)

    def test_tree(self):
        self.assertEqual(files_under(self.dest), set(TREE))
        for rel, mode in TREE.items():
            st = os.lstat(self.path(rel))
            if mode is None:
                self.assertTrue(stat.S_ISLNK(st.st_mode), rel)
                continue
            self.assertTrue(stat.S_ISREG(st.st_mode), rel)
            self.assertEqual(stat.S_IMODE(st.st_mode), mode, f"{rel}: {oct(st.st_mode)}")
        self.assertEqual(os.readlink(self.path("usr/lib/libbroker.so")), "libbroker.so.0")
        for dirpath, dirnames, _ in os.walk(self.dest):
            for n in dirnames:
                st = os.lstat(os.path.join(dirpath, n))
                self.assertEqual(stat.S_IMODE(st.st_mode), 0o755, os.path.join(dirpath, n))
        with open(os.path.join(BUILD, "brokerd"), "rb") as a, \
                open(self.path("usr/sbin/brokerd"), "rb") as b:
            self.assertTrue(a.read() == b.read(), "the installed brokerd is not the build's")

    def test_placeholders_filled_in(self):
        for rel in TREE:
            if rel.startswith(("usr/bin/", "usr/sbin/", "usr/lib/libbroker")):
                continue
            with open(self.path(rel), encoding="utf-8") as f:
                text = f.read()
            self.assertNotRegex(text, r"@[A-Z_]+@", rel)
        with open(self.path("usr/lib/systemd/system/brokerd.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=/usr/sbin/brokerd --config /etc/brokerd/brokerd.json\n", unit)
        with open(self.path("usr/lib/pkgconfig/libbroker.pc")) as f:
            pc = f.read()
        self.assertRegex(pc, r"(?m)^Version: \d+\.\d+\.\d+$")
        self.assertIn("libdir=/usr/lib\n", pc)

    def test_example_config_is_valid(self):
        with open(os.path.join(ROOT, "brokerd", "brokerd.json.example"), "rb") as a, \
                open(self.path("etc/brokerd/brokerd.json"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        # brokerd --check also checks the files and directories the example names, which are
        # this host's: the same policy, with its paths moved here.
        with open(self.path("etc/brokerd/brokerd.json")) as f:
            config = json.load(f)
        d = tempfile.mkdtemp(prefix="example-", dir=self.tmp)
        os.chmod(d, 0o755)
        config["listen"] = {"workload": f"{d}/run/workload/broker.sock",
                            "admin": f"{d}/run/admin.sock"}
        config["state_directory"] = f"{d}/state"
        config["audit"]["database"] = f"{d}/state/audit.db"
        with open(f"{d}/brokerd.json", "w") as f:
            json.dump(config, f)
        creds = os.path.join(d, "credentials")
        os.mkdir(creds, 0o700)
        subprocess.run([self.path("usr/sbin/brokerd"), "--generate-master-key",
                        f"{creds}/master.key"], check=True, capture_output=True)
        r = subprocess.run([self.path("usr/sbin/brokerd"), "--config", f"{d}/brokerd.json",
                            "--check"], capture_output=True, text=True,
                           env=clean_env(CREDENTIALS_DIRECTORY=creds))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_config_never_overwritten(self):
        dest = os.path.join(self.tmp, "kept")
        config = os.path.join(dest, "etc", "brokerd", "brokerd.json")
        os.makedirs(os.path.dirname(config))
        edited = '{"issuer": "https://edited.example"}\n'
        with open(config, "w") as f:
            f.write(edited)
        out = make("install", f"DESTDIR={dest}", "PREFIX=/usr")
        self.assertIn("KEEP", out)
        out = make("install", f"DESTDIR={dest}", "PREFIX=/usr")  # and again
        with open(config) as f:
            self.assertEqual(f.read(), edited)
        # uninstall keeps it too, and removes everything else.
        make("uninstall", f"DESTDIR={dest}", "PREFIX=/usr")
        self.assertEqual(files_under(dest), {"etc/brokerd/brokerd.json"})

    def test_uninstall_removes_what_install_put(self):
        dest = os.path.join(self.tmp, "removed")
        make("install", f"DESTDIR={dest}", "PREFIX=/usr")
        self.assertEqual(files_under(dest), set(TREE))
        make("uninstall", f"DESTDIR={dest}", "PREFIX=/usr")
        self.assertEqual(files_under(dest), set())
        for d in ("usr/share/doc/brokerd", "etc/brokerd"):
            self.assertFalse(os.path.exists(os.path.join(dest, d)), d)

    def test_man_pages_render_without_warnings(self):
        if not shutil.which("man"):
            self.skipTest("man (man-db) not installed")
        for rel in MAN_PAGES:
            r = subprocess.run(["man", "--warnings", "-l", self.path(rel)], capture_output=True,
                               text=True, env=clean_env(MANWIDTH="80", MAN_KEEP_FORMATTING=""))
            self.assertEqual(r.returncode, 0, rel + r.stderr)
            self.assertEqual(r.stderr, "", rel)
            self.assertIn("NAME", r.stdout, rel)
            self.assertIn("SEE ALSO", r.stdout, rel)

    def test_man_pages_name_every_option(self):
        """Each option --help lists is in the program's man page."""
        if not shutil.which("man"):
            self.skipTest("man (man-db) not installed")
        for prog, page in (("usr/sbin/brokerd", "usr/share/man/man8/brokerd.8"),
                           ("usr/bin/brokerctl", "usr/share/man/man1/brokerctl.1")):
            helptext = subprocess.run([self.path(prog), "--help"], capture_output=True,
                                      text=True).stdout
            rendered = subprocess.run(["man", "-l", self.path(page)], capture_output=True,
                                      text=True, env=clean_env(MANWIDTH="200")).stdout
            options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", helptext))
            self.assertTrue(options, prog)
            for o in sorted(options):
                self.assertIn(o, rendered, f"{page} does not name {o}")

    def test_program_builds_against_installed_libbroker(self):
        if not shutil.which("pkg-config"):
            self.skipTest("pkg-config not installed")
        # As for a cross build: the .pc file says /usr, the files lie under DESTDIR.
        env = clean_env(PKG_CONFIG_PATH=self.path("usr/lib/pkgconfig"),
                        PKG_CONFIG_SYSROOT_DIR=self.dest)
        src = os.path.join(self.tmp, "prog.c")
        with open(src, "w") as f:
            f.write(PROGRAM)
        flags = ["-fsanitize=address,undefined"] if sanitizer_build() else []
        missing = os.path.join(self.tmp, "no-such-dir", "broker.sock")

        cflags = subprocess.run(["pkg-config", "--cflags", "libbroker"], env=env, check=True,
                                capture_output=True, text=True).stdout.split()
        self.assertIn("-I" + self.path("usr/include"), cflags)
        libs = subprocess.run(["pkg-config", "--libs", "libbroker"], env=env, check=True,
                              capture_output=True, text=True).stdout.split()
        prog = os.path.join(self.tmp, "prog")
        subprocess.run(["cc", "-Wall", "-Werror", *flags, "-o", prog, src, *cflags, *libs],
                       check=True, env=env)
        r = subprocess.run([prog, missing], capture_output=True, text=True,
                           env=clean_env(LD_LIBRARY_PATH=self.path("usr/lib")))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("broker unavailable: ", r.stdout)
        self.assertIn("mapped " + self.path("usr/lib/libbroker.so.0"), r.stdout)

        # Static: libbroker.a and what pkg-config --static adds (jansson).
        libs = subprocess.run(["pkg-config", "--static", "--libs", "libbroker"], env=env,
                              check=True, capture_output=True, text=True).stdout.split()
        self.assertIn("-ljansson", libs)
        libs = [self.path("usr/lib/libbroker.a") if l == "-lbroker" else l for l in libs]
        prog = os.path.join(self.tmp, "prog-static")
        subprocess.run(["cc", "-Wall", "-Werror", *flags, "-o", prog, src, *cflags, *libs],
                       check=True, env=env)
        r = subprocess.run([prog, missing], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("broker unavailable: ", r.stdout)
        self.assertNotIn("mapped", r.stdout)


class InstalledUnitsTest(unittest.TestCase):
    """The units as installed (PREFIX in a temporary directory, so that the binaries, the
    configuration and the man pages they name exist), verified and scored."""

    @classmethod
    def setUpClass(cls):
        if not shutil.which("systemd-analyze"):
            raise unittest.SkipTest("systemd-analyze not installed")
        cls.tmp = tempfile.mkdtemp(prefix="broker-units-installed-")
        os.chmod(cls.tmp, 0o755)
        cls.prefix = os.path.join(cls.tmp, "usr")
        make("install", f"PREFIX={cls.prefix}", f"SYSCONFDIR={cls.tmp}/etc")
        cls.unitdir = os.path.join(cls.prefix, "lib", "systemd", "system")
        cls.units = [os.path.join(cls.unitdir, n)
                     for n in ("brokerd.service", "brokerd.socket", "brokerd-admin.socket")]

    @classmethod
    def tearDownClass(cls):
        make("uninstall", f"PREFIX={cls.prefix}", f"SYSCONFDIR={cls.tmp}/etc")
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def analyze(self, *args):
        return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                              cwd=self.tmp,
                              env=clean_env(MANPATH=os.path.join(self.prefix, "share", "man"),
                                            SYSTEMD_COLORS="0"))

    def test_verify(self):
        with open(self.units[0]) as f:
            self.assertIn(f"ExecStart={self.prefix}/sbin/brokerd --config {self.tmp}/etc/",
                          f.read())
        # --man=yes (the default): Documentation= must name installed pages.
        man = ["--man=yes"] if shutil.which("man") else ["--man=no"]
        r = self.analyze("verify", *man, *self.units)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stderr.strip(), "", r.stderr)

    def test_security_exposure(self):
        r = self.analyze("security", "--offline=true", "--no-pager", self.units[0])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        level = exposure(r.stdout)
        self.assertLessEqual(level, EXPOSURE_MAX, r.stdout)
        self.assertLessEqual(level, EXPOSURE_SHIPPED, r.stdout)
        self.assertEqual(items_left(r.stdout), ITEMS_LEFT, r.stdout)

    def test_security_exposure_with_federation_dropin(self):
        """The example drop-in, where the README tells the operator to put it."""
        root = os.path.join(self.tmp, "root")
        unitdir = os.path.join(root, "etc", "systemd", "system")
        os.makedirs(os.path.join(unitdir, "brokerd.service.d"), exist_ok=True)
        for u in self.units:
            shutil.copy(u, unitdir)
        shutil.copy(os.path.join(self.prefix, "share", "doc", "brokerd", "examples",
                                 "federation.conf"),
                    os.path.join(unitdir, "brokerd.service.d", "federation.conf"))
        r = self.analyze("security", "--offline=true", "--no-pager", f"--root={root}",
                         "brokerd.service")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertLessEqual(exposure(r.stdout), EXPOSURE_FEDERATION, r.stdout)
        self.assertEqual(items_left(r.stdout), ITEMS_LEFT_FEDERATION, r.stdout)

    def test_sysusers(self):
        """The service's User= is the user the installed sysusers.d file creates."""
        r = subprocess.run(["systemd-sysusers", "--dry-run",
                            os.path.join(self.prefix, "lib", "sysusers.d", "brokerd.conf")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(self.prefix, "lib", "sysusers.d", "brokerd.conf")) as f:
            self.assertRegex(f.read(), r"(?m)^u brokerd ")
        with open(self.units[0]) as f:
            self.assertIn("\nUser=brokerd\n", f.read())


if __name__ == "__main__":
    unittest.main()
