"""A private PostgreSQL cluster (Debian's package) for tests: initdb in a temp
dir, on a free port, as an unprivileged user, stopped at exit."""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import unittest
import uuid

from tests.peers import free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _require():
    initdb = _bin("initdb")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        initdb = None
    if initdb is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("PostgreSQL (or psycopg) is missing, and CI must run this test")
        raise unittest.SkipTest("PostgreSQL is not installed (apt-get install postgresql; pip install 'psycopg[binary,pool]')")


class Cluster:
    def __init__(self):
        _require()
        self.directory = tempfile.mkdtemp(prefix="xep207-pg-")
        self.data = os.path.join(self.directory, "data")
        self.port = free_port()
        self._as = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = "postgres"
            pwd.getpwnam(user)
            shutil.chown(self.directory, user)
            self._as = ["runuser", "-u", user, "--"]
        self._run(_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth", "trust", "-E", "UTF8")
        self.start()
        atexit.register(self.destroy)

    def _run(self, *command):
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=120)

    def start(self):
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c full_page_writes=off -c deadlock_timeout=100ms")
        self._run(_bin("pg_ctl"), "-D", self.data, "-o", options, "-w", "-l",
                  os.path.join(self.directory, "log"), "start")

    def stop(self, mode="fast"):
        self._run(_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop")

    def restart(self):
        self.stop()
        self.start()

    def destroy(self):
        try:
            self.stop("immediate")
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.directory, ignore_errors=True)

    def admin(self, statement: str):
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(statement)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        name = "t" + uuid.uuid4().hex[:12]
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)


_shared = None


def shared_cluster() -> Cluster:
    """One cluster per test process, created on first use."""
    global _shared
    if _shared is None:
        _shared = Cluster()
    return _shared
