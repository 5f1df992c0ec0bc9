"""Real peers for end-to-end tests: Prosody from Debian, our own twistd, slixmpp scripts.

A peer that is missing skips the test on a laptop, and fails it under CI
(``CI=true``), where ``.ci/run`` installs every peer.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time

import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = os.path.join(ROOT, "tests", "clients")


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"{program} is not installed, and CI must run this test (.ci/run installs it)")
        raise unittest.SkipTest(f"{program} is not installed (apt-get install {program})")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def source_env(**extra) -> dict:
    """Environment for a child that must run this checkout's code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Process:
    """A child process whose output we read line by line until a marker shows.

    Output is read from the pipe's descriptor in whatever chunks arrive (a
    buffered reader could hold complete lines that select() no longer reports)."""

    def __init__(self, args, *, env=None, cwd=None, name=None):
        self.name = name or os.path.basename(args[0])
        self.lines: list[str] = []
        self._partial = b""
        self._unread: list[str] = []  # complete lines not yet looked at by wait_for
        # stdin from /dev/null: under ``trial -j`` a worker's stdin is its command pipe, and a
        # peer left holding it would keep trial waiting for that worker forever.
        self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, env=env, cwd=cwd, bufsize=0,
                                      start_new_session=True)

    def _next_line(self, deadline: float, what: str) -> str | None:
        """The next output line; None at end of output; fail at the deadline."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.popen.stdout, selectors.EVENT_READ)
            while not self._unread:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name}: {what}:\n" + self.output())
                if not selector.select(remaining):
                    continue
                chunk = os.read(self.popen.stdout.fileno(), 65536)
                if not chunk:
                    if self._partial:
                        self._unread.append(self._partial.decode("utf-8", "replace"))
                        self._partial = b""
                        break
                    return None
                *complete, self._partial = (self._partial + chunk).split(b"\n")
                self._unread.extend(line.decode("utf-8", "replace") + "\n" for line in complete)
        line = self._unread.pop(0)
        self.lines.append(line)
        return line

    def wait_for(self, marker: str, timeout: float = 30.0) -> str:
        """Read output until a line contains ``marker``; fail on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline, f"no {marker!r} within {timeout}s")
            if line is None:
                raise AssertionError(f"{self.name} exited before {marker!r}:\n" + self.output())
            if marker in line:
                return line

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Read output until the process exits; its exit status (fail on timeout)."""
        deadline = time.monotonic() + timeout
        while self._next_line(deadline, f"still running after {timeout}s") is not None:
            pass
        return self.popen.wait(max(0.1, deadline - time.monotonic()))

    def output(self) -> str:
        return "".join(self.lines[-80:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.popen.stdout.close()


PROSODY_CONFIG = """
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
certificates = "{dir}/certs"
log = {{ {{ levels = {{ min = "info" }}, to = "console" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
s2s_ports = {{ }}
component_ports = {{ {component} }}
component_interfaces = {{ "127.0.0.1" }}
http_ports = {{ }}
https_ports = {{ }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "posix" }}
modules_disabled = {{ "s2s", "tls" }}
VirtualHost "{domain}"
Component "{component_jid}"
  component_secret = "{secret}"
"""


class Prosody:
    def __init__(self, directory: str, domain: str, component_jid: str, secret: str):
        self.binary = require("prosody")
        self.directory = directory
        self.domain = domain
        self.c2s_port = free_port()
        self.component_port = free_port()
        for sub in ("data", "certs"):
            os.makedirs(os.path.join(directory, sub), exist_ok=True)
        self.config = os.path.join(directory, "prosody.cfg.lua")
        with open(self.config, "w") as f:
            f.write(PROSODY_CONFIG.format(dir=directory, c2s=self.c2s_port, component=self.component_port,
                                          domain=domain, component_jid=component_jid, secret=secret))
        self.process = None

    def register(self, user: str, password: str) -> None:
        subprocess.run(["prosodyctl", "--config", self.config, "register", user, self.domain, password],
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self.process = Process([self.binary, "--config", self.config, "-F"], name="prosody")
        self.process.wait_for("Activated service 'c2s'")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def twistd(args, directory: str, **env) -> Process:
    """Run ``twistd -n xep207 …`` from this checkout, logging to stdout."""
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--logfile=-",
               f"--pidfile={os.path.join(directory, 'twistd.pid')}", "xep207",
               "--c2s-direct-tls-port", "0", *args]  # (tests never take the fixed 5223)
    return Process(command, env=source_env(**env), cwd=directory, name="twistd xep207")


def run_client(script: str, *args, timeout: float = 120) -> dict:
    """Run a slixmpp scenario script; its last stdout line is a JSON report."""
    completed = subprocess.run([sys.executable, os.path.join(CLIENTS, script), *map(str, args)],
                               capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        raise AssertionError(f"{script} failed:\n{completed.stdout}\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def temp_dir(testcase) -> str:
    """A private temporary directory removed after the test (parallel-safe)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="xep207-test-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path
