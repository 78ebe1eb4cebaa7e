"""A server of node/ run as a child process, for oauth.py's OAuthServer and cloud.py's
CloudServer: node/NAME_server.mjs takes one JSON configuration file, binds its listeners
(127.0.0.1, ports it picks itself), prints one JSON line with "ready": true and what it chose,
serves a control listener (plain http, JSON in and out) on control_port, and exits 0 on
SIGTERM.

Uses only the standard library and the `node` on PATH with the packages of node/package.json
installed (npm ci --prefix tests/integration/node)."""

import json
import os
import select
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class NodeServer:
    """node/NAME_server.mjs as a context manager. A subclass sets NAME ("oauth": the script
    node/oauth_server.mjs, its configuration TMPDIR/oauth_server.json, its stderr
    TMPDIR/oauth_server.stderr, "oauth server: ..." in errors), builds the configuration in
    start() and passes it to _launch(), which returns the ready line."""

    NAME = None

    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.control_port = None
        self.stderr_path = os.path.join(tmpdir, f"{self.NAME}_server.stderr")
        self.proc = None

    def _launch(self, config):
        """Writes config, starts the server and waits for its ready line (a dict, also
        stored as control_port). Stops the server and raises RuntimeError, with its stderr,
        when it does not get ready."""
        node = shutil.which("node")
        if node is None:
            raise RuntimeError(f"{self.NAME} server: node is not on PATH")
        config_path = os.path.join(self.tmpdir, f"{self.NAME}_server.json")
        with open(config_path, "w") as f:
            json.dump(config, f, indent=1)
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [node, os.path.join(NODE_DIR, f"{self.NAME}_server.mjs"), config_path],
                cwd=NODE_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        try:
            ready = self._read_ready()
        except Exception:
            self.stop()
            raise
        self.control_port = ready["control_port"]
        return ready

    def _read_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise RuntimeError(f"{self.NAME} server: not ready after {READY_TIMEOUT:.0f} s\n"
                                   + self.stderr())
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"{self.NAME} server exited ({self.proc.wait()}) before "
                                   "ready\n" + self.stderr())
            line += chunk
        try:
            ready = json.loads(line)
        except ValueError:
            ready = {}
        if not isinstance(ready, dict) or not ready.get("ready"):
            raise RuntimeError(f"{self.NAME} server: bad ready line {line!r}\n" + self.stderr())
        return ready

    def stderr(self):
        """What the server has written to stderr so far."""
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s. Returns the exit status (0 after a clean SIGTERM)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        return proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _control(self, method, path, body=None):
        """A request to the control listener; its JSON answer. RuntimeError on an HTTP error."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}", data=data,
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            error = f"{self.NAME} control {method} {path}: {e.code} {e.read()!r}"
        raise RuntimeError(error)
