"""A private Redis (Debian's ``redis-server``) for tests: a free port, a temp
dir, no persistence, stopped at exit; restartable on the same port."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time

from tests.peers import free_port, require


class RedisServer:
    def __init__(self):
        self.binary = require("redis-server")
        self.directory = tempfile.mkdtemp(prefix="xep207-redis-")
        self.port = free_port()
        self.popen: subprocess.Popen | None = None
        self._databases = itertools.count()
        self.start()
        atexit.register(self.destroy)

    def start(self) -> None:
        self.popen = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory,
             "--save", "", "--appendonly", "no", "--databases", "1000", "--protected-mode", "no",
             "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 30
        while True:  # setting up a peer, not a test's synchronization: wait for its port
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.popen.poll() is not None:
                raise AssertionError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def new_url(self) -> str:
        """A database of its own (keys); channels are named per test by node names."""
        return f"redis://127.0.0.1:{self.port}/{next(self._databases) % 1000}"


_shared: RedisServer | None = None


def shared_redis() -> RedisServer:
    global _shared
    if _shared is None or (_shared.popen is not None and _shared.popen.poll() is not None):
        _shared = RedisServer()
    return _shared


def redis_available() -> bool:
    return shutil.which("redis-server") is not None or os.environ.get("CI") == "true"
