"""Test harness: runs the real brokerd on real sockets, with callers under real uids, cgroups
and PID namespaces, and checks tokens with independent JOSE libraries (PyJWT, jwcrypto).

Binaries come from $BROKER_BUILD. They are copied into a world-readable temporary directory so
that callers running as other uids can execute them wherever the checkout lives."""

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

BUILD = os.environ.get("BROKER_BUILD") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
CGROUP2 = "/sys/fs/cgroup/unified"
ISSUER = "https://broker.test"

_bin_dir = None


def bin_dir():
    """A 0755 copy of the binaries, made once per test process."""
    global _bin_dir
    if _bin_dir is None:
        _bin_dir = tempfile.mkdtemp(prefix="broker-bin-")
        os.chmod(_bin_dir, 0o755)
        for name in ("brokerd", "brokerctl"):
            shutil.copy2(os.path.join(BUILD, name), os.path.join(_bin_dir, name))
            os.chmod(os.path.join(_bin_dir, name), 0o755)
    return _bin_dir


def brokerd_path():
    return os.path.join(bin_dir(), "brokerd")


def brokerctl_path():
    return os.path.join(bin_dir(), "brokerctl")


def sanitizer_env():
    env = dict(os.environ)
    # abort_on_error: a sanitizer finding fails the test through the exit status.
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1:exitcode=99")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1:exitcode=99")
    return env


def sanitizer_build():
    """Whether $BROKER_BUILD is a sanitizer build (make SAN=1): brokerd --version says so."""
    r = subprocess.run([brokerd_path(), "--version"], capture_output=True, text=True,
                       env=sanitizer_env())
    return "sanitizer build" in r.stdout


VALGRIND_ERROR_EXIT = 97


def valgrind_prefix(log_path):
    """Runs a command under valgrind's memcheck: any error (invalid access, use of an
    uninitialised value, a definite or possible leak, a bad free) makes it exit with
    VALGRIND_ERROR_EXIT; the report goes to log_path, not to the program's stderr."""
    return ["valgrind", "--tool=memcheck", f"--error-exitcode={VALGRIND_ERROR_EXIT}",
            "--leak-check=full", "--errors-for-leak-kinds=definite,possible",
            "--show-leak-kinds=definite,possible", "--track-origins=yes", "--num-callers=30",
            f"--log-file={log_path}"]


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() every `interval` seconds until it returns something truthy, and returns
    that; raises AssertionError naming `what` once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def as_user(uid, gid=None, groups=None):
    """setpriv prefix that runs a command under a real other uid/gid/groups."""
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid if gid is not None else uid}"]
    if groups:
        cmd.append("--groups=" + ",".join(str(g) for g in groups))
    else:
        cmd.append("--clear-groups")
    return cmd


def random_container_id():
    return os.urandom(32).hex()


class Cgroup:
    """A real cgroup2 directory (e.g. system.slice/docker-ID.scope) that commands can be
    started in. Removed on close."""

    def __init__(self, relpath):
        self.relpath = relpath.strip("/")
        self.path = os.path.join(CGROUP2, self.relpath)
        os.makedirs(self.path, exist_ok=True)

    def wrap(self, cmd):
        # The shell moves itself into the cgroup, then execs the command in it.
        procs = os.path.join(self.path, "cgroup.procs")
        return ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh"] + list(cmd)

    def close(self):
        # Remove leaf first, then empty parents we may have created under our prefix.
        parts = self.relpath.split("/")
        for i in range(len(parts), 0, -1):
            p = os.path.join(CGROUP2, *parts[:i])
            for _ in range(50):
                try:
                    os.rmdir(p)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # its last process is still exiting
                    continue


class Raw:
    """A raw protocol client: frames and bytes exactly as the test wants them."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, body):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def recv(self):
        """The next response as a dict, or None when the broker closed the connection."""
        hdr = self._recv_exact(4)
        if hdr is None:
            return None
        (n,) = struct.unpack(">I", hdr)
        body = self._recv_exact(n)
        if body is None:
            return None
        return json.loads(body)

    def request(self, obj):
        self.send_frame(obj)
        return self.recv()

    def closed_by_peer(self, timeout=5.0):
        """True once the broker has closed its end (EOF), False if it stays open."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


class NotifyListener:
    """A real NOTIFY_SOCKET: collects every datagram brokerd sends, in order, each as its list
    of lines. Writable by every uid (a daemon that dropped privileges still reaches it)."""

    def __init__(self, path):
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.settimeout(0.1)
        self.messages = []
        self.cond = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self):
        while not self.closing:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            with self.cond:
                self.messages.append(data.decode(errors="replace").split("\n"))
                self.cond.notify_all()

    def mark(self):
        """Where the messages from now on begin (for wait_for's `since`)."""
        with self.cond:
            return len(self.messages)

    def wait_for(self, pred, timeout=10.0, since=0, proc=None):
        """The first message from index `since` on for which pred(lines) holds, waiting up to
        `timeout` seconds (less if `proc` exits meanwhile); None if none came."""
        deadline = time.time() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.messages):
                    if pred(self.messages[i]):
                        return self.messages[i]
                    i += 1
                left = deadline - time.time()
                if left <= 0 or (proc is not None and proc.poll() is not None):
                    return None
                self.cond.wait(min(left, 0.1))

    def all(self, since=0):
        with self.cond:
            return list(self.messages[since:])

    def close(self):
        self.closing = True
        self.thread.join()
        self.sock.close()


def default_rules():
    return [{"name": "root", "match": {"uid": 0}, "subject": "spiffe://test/uid/{uid}",
             "audiences": ["https://api.test"], "scopes": ["read", "write"]}]


class Broker:
    """One brokerd process with its own config, sockets, state and audit database."""

    def __init__(self, rules=None, tmp=None, extra=None, start=True, prefix=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="broker-test-")
        os.chmod(self.tmp, 0o755)
        self.workload = os.path.join(self.tmp, "run", "workload", "broker.sock")
        self.admin = os.path.join(self.tmp, "run", "admin.sock")
        self.state = os.path.join(self.tmp, "state")
        self.db = os.path.join(self.state, "audit.db")
        self.config_path = os.path.join(self.tmp, "brokerd.json")
        self.log_path = os.path.join(self.tmp, "brokerd.log")
        self.prefix = prefix or []
        self.proc = None
        self.notify = None  # the NotifyListener of the current (or last) start
        self.master_key = os.path.join(self.tmp, "master.key")
        if not os.path.exists(self.master_key):
            subprocess.run([brokerd_path(), "--generate-master-key", self.master_key],
                           check=True, capture_output=True, env=sanitizer_env())
        self.config = {
            "issuer": ISSUER,
            "master_key_file": self.master_key,
            "listen": {"workload": self.workload, "admin": self.admin},
            "state_directory": self.state,
            "audit": {"database": self.db},
            "rules": rules if rules is not None else default_rules(),
        }
        for k, v in (extra or {}).items():
            if isinstance(v, dict) and isinstance(self.config.get(k), dict):
                self.config[k].update(v)
            else:
                self.config[k] = v
        self.write_config()
        if start:
            self.start()

    def write_config(self, config=None):
        with open(self.config_path, "w") as f:
            json.dump(config if config is not None else self.config, f, indent=2)

    @staticmethod
    def daemon_env(env=None):
        """sanitizer_env() with `env`'s variables added (a None value removes one)."""
        daemon_env = sanitizer_env()
        for k, v in (env or {}).items():
            if v is None:
                daemon_env.pop(k, None)
            else:
                daemon_env[k] = v
        return daemon_env

    def start(self, expect_ready=True, timeout=10.0, env=None):
        """Starts brokerd and waits for READY=1 on a real NOTIFY_SOCKET, which stays open:
        self.notify holds every datagram of this run. `env` adds variables to brokerd's
        environment (a None value removes one)."""
        notify_path = os.path.join(self.tmp, "notify.sock")
        if self.notify:
            self.notify.close()
        self.notify = NotifyListener(notify_path)
        daemon_env = self.daemon_env(env)
        daemon_env["NOTIFY_SOCKET"] = notify_path
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.prefix + [brokerd_path(), "--config", self.config_path],
            stdout=self.log, stderr=self.log, env=daemon_env)
        ready = self.notify.wait_for(lambda lines: "READY=1" in lines, timeout=timeout,
                                     proc=self.proc) is not None
        if expect_ready and not ready:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("brokerd did not become ready:\n" + self.read_log())
        return ready

    def check(self, env=None, prefix=()):
        """Runs `brokerd --config <config_path> --check` (behind `prefix`, e.g. an unshare
        wrapper) and returns its CompletedProcess, output as text. `env` as for start()."""
        return subprocess.run(list(prefix) + [brokerd_path(), "--config", self.config_path,
                                              "--check"],
                              capture_output=True, text=True, env=self.daemon_env(env))

    def daemon_pid(self):
        """The brokerd process itself, also when it runs under a wrapper such as unshare."""
        pid = self.proc.pid
        for _ in range(10):
            try:
                if os.readlink(f"/proc/{pid}/exe") == brokerd_path():
                    return pid
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    kids = f.read().split()
            except OSError:
                return None
            if not kids:
                return None
            pid = int(kids[0])
        return None

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Stops brokerd; returns its exit status (negative: killed by a signal). A wrapper
        like unshare --fork passes the daemon's status through."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            pid = self.daemon_pid()
            if pid:
                os.kill(pid, sig)
            else:
                self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            raise AssertionError("brokerd did not stop in time:\n" + self.read_log())
        self.log.close()
        self.proc = None
        self.notify.close()  # what it collected stays readable
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.proc = None
        self.notify.close()

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self):
        try:
            if self.proc:
                rc = self.stop()
                if rc != 0:
                    raise AssertionError(f"brokerd exited with {rc}:\n" + self.read_log())
        finally:
            if self.notify:
                self.notify.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- clients -------------------------------------------------------------------

    def ctl(self, *args, user=None, cgroup=None, prefix=None, env=None, socket_path=None,
            timeout=30, input=None):
        """Runs brokerctl against this broker. `user` is an as_user() prefix; `input` is
        its stdin (none: /dev/null)."""
        cmd = [brokerctl_path()]
        if socket_path is not False:
            cmd += ["--socket", socket_path or self.workload]
        cmd += list(args)
        if prefix:
            cmd = list(prefix) + cmd
        if user:
            cmd = list(user) + cmd
        if cgroup:  # outermost: root moves the shell into the cgroup, then drops privileges
            cmd = cgroup.wrap(cmd)
        e = sanitizer_env()
        e.pop("BROKER_SOCKET", None)
        if env:
            e.update(env)
        return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout,
                              input=input if input is not None else "")

    def admin_ctl(self, *args, user=None, input=None):
        return self.ctl("--admin-socket", self.admin, *args, user=user, socket_path=False,
                        input=input)

    def token(self, audience="https://api.test", scopes=(), ttl=None, **kw):
        args = ["token", "--audience", audience]
        for s in scopes:
            args += ["--scope", s]
        if ttl is not None:
            args += ["--ttl", str(ttl)]
        return self.ctl(*args, **kw)

    def raw(self, admin=False):
        return Raw(self.admin if admin else self.workload)

    def admin_request(self, req):
        """Sends one request on a fresh raw admin connection; returns the response (a dict, or
        None when the broker closed the connection)."""
        c = self.raw(admin=True)
        try:
            return c.request(req)
        finally:
            c.close()

    def jwks(self):
        r = self.ctl("jwks")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def audit(self, *extra):
        r = self.ctl("audit", "export", "--database", self.db, *extra, socket_path=False)
        assert r.returncode == 0, r.stderr
        # split at "\n" only: str.splitlines() also splits at U+2028 or U+0085 inside a record
        return [json.loads(l) for l in r.stdout.split("\n") if l.strip()]

    def decisions(self):
        return [r for r in self.audit() if r["event"] in ("grant", "deny")]


def b64url_json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def token_header(token):
    return b64url_json(token.split(".")[0])


def token_claims(token):
    return b64url_json(token.split(".")[1])


def verify_token(token, jwks, audience, issuer=ISSUER, leeway=0):
    """Verifies with PyJWT and with jwcrypto, independently; returns the claims."""
    import jwt as pyjwt
    from jwcrypto import jwk as cjwk, jwt as cjwt

    kid = token_header(token)["kid"]
    matching = [k for k in jwks["keys"] if k["kid"] == kid]
    if not matching:
        raise AssertionError(f"kid {kid} is not in the JWKS")
    key = matching[0]
    alg = token_header(token)["alg"]

    claims = pyjwt.decode(token, pyjwt.PyJWK(key).key, algorithms=[alg], audience=audience,
                          issuer=issuer, leeway=leeway,
                          options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]})

    ck = cjwk.JWK(**key)
    if ck.thumbprint() != kid:
        raise AssertionError("kid is not the RFC 7638 thumbprint of the key")
    t = cjwt.JWT(jwt=token, key=ck, algs=[alg],
                 check_claims={"iss": issuer, "aud": audience, "exp": None, "nbf": None})
    if json.loads(t.claims) != claims:
        raise AssertionError("PyJWT and jwcrypto disagree on the claims")
    return claims


class BrokerTestCase(unittest.TestCase):
    """Gives each test a fresh broker (self.b) unless the class sets start_broker = False."""

    rules = None
    extra = None
    start_broker = True

    def setUp(self):
        self.brokers = []
        self.cgroups = []
        if self.start_broker:
            self.b = self.broker(rules=self.rules, extra=self.extra)

    def broker(self, **kw):
        b = Broker(**kw)
        self.brokers.append(b)
        return b

    def start_refused(self, b, *needles, env=None, within=None):
        """Starts b expecting brokerd to refuse: it must not become ready and must exit 1 (it
        is killed after 15 s). Asserts that what it logged during this start holds each of
        `needles` and, with `within`, that it refused in fewer than `within` seconds. Returns
        that log. `env` as for Broker.start()."""
        offset = os.path.getsize(b.log_path) if os.path.exists(b.log_path) else 0
        t0 = time.time()
        ready = b.start(expect_ready=False, timeout=10, env=env)
        try:
            rc = b.proc.wait(15)
        except subprocess.TimeoutExpired:
            b.proc.kill()
            b.proc.wait()
            rc = None
        elapsed = time.time() - t0
        b.log.close()
        b.proc = None
        with open(b.log_path, "rb") as f:
            f.seek(offset)
            log = f.read().decode(errors="replace")
        self.assertFalse(ready, "brokerd became ready but should have refused:\n" + log)
        self.assertEqual(rc, 1, "brokerd should exit 1 when it refuses to start:\n" + log)
        if within is not None:
            self.assertLess(elapsed, within, "brokerd took too long to refuse:\n" + log)
        for n in needles:
            self.assertIn(n, log)
        return log

    def cgroup(self, relpath):
        cg = Cgroup(relpath)
        self.cgroups.append(cg)
        return cg

    def tearDown(self):
        errors = []
        for b in self.brokers:
            try:
                b.close()
            except AssertionError as e:
                errors.append(str(e))
        for cg in self.cgroups:
            cg.close()
        if errors:
            self.fail("\n".join(errors))
