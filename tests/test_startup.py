"""The real ``twistd -n xep207`` when it cannot start: one clear line naming the
port or file, and a non-zero exit — never a process running with no listener.
And when it can: a private data directory that only one server uses."""

import os
import socket
import sqlite3
import stat
import subprocess
import sys
import unittest

from tests.peers import free_port, temp_dir, twistd


def fatal_line(process) -> str:
    lines = [line for line in process.lines if "xep207: fatal:" in line]
    assert len(lines) == 1, process.output()
    return lines[0]


class FailsToStart(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)
        self.data = os.path.join(self.dir, "data")

    def start(self, *args, cwd=None, data=None):
        port = free_port()
        process = twistd(["--data-dir", data or self.data, "--c2s-port", str(port),
                          "--c2s-interfaces", "127.0.0.1", *args], cwd or self.dir)
        self.addCleanup(process.stop)
        return process, port

    def assert_fails(self, process, *named):
        status = process.wait_exit()
        self.assertNotEqual(status, 0, process.output())
        line = fatal_line(process)
        for text in named:
            self.assertIn(text, line)
        self.assertFalse(any("starting on" in x for x in process.lines), process.output())

    def test_busy_port(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            process, _ = self.start("--c2s-port", str(port))
            self.assert_fails(process, f"port {port}", "in use")

    def test_corrupt_database(self):
        os.makedirs(self.data)
        path = os.path.join(self.data, "xep207.sqlite")
        with open(path, "wb") as f:
            f.write(b"this is not an SQLite database, it is garbage " * 200)
        process, _ = self.start()
        self.assert_fails(process, path, "not a database")

    def test_database_locked_at_start(self):
        os.makedirs(self.data)
        path = os.path.join(self.data, "xep207.sqlite")
        locker = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(locker.close)
        locker.execute("BEGIN EXCLUSIVE")
        process, _ = self.start("--storage", f"sqlite:///{path}?busy_timeout=100")
        self.assert_fails(process, path, "locked")

    def read_only_mount(self) -> str:
        """A file system mounted read-only (which stops root too), or skip."""
        mount = os.path.join(self.dir, "ro")
        os.makedirs(mount)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount],
                          capture_output=True).returncode != 0:
            raise unittest.SkipTest("cannot mount a tmpfs here (needs root)")
        self.addCleanup(subprocess.run, ["umount", "-l", mount], capture_output=True)
        return mount

    def remount_read_only(self, mount):
        subprocess.run(["mount", "-o", "remount,ro", mount], check=True, capture_output=True)

    def test_read_only_database(self):
        if os.geteuid() == 0:
            directory = self.read_only_mount()
        else:
            directory = os.path.join(self.dir, "db")
            os.makedirs(directory)
        path = os.path.join(directory, "xep207.sqlite")
        sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
        if os.geteuid() == 0:
            self.remount_read_only(directory)
        else:
            os.chmod(path, 0o400)
            os.chmod(directory, 0o500)
            self.addCleanup(os.chmod, directory, 0o700)
        process, _ = self.start("--storage", f"sqlite:///{path}")
        self.assert_fails(process, path)

    def test_unusable_data_dir(self):
        blocker = os.path.join(self.dir, "a-file")
        open(blocker, "w").close()
        data = os.path.join(blocker, "data")
        process, _ = self.start(data=data)
        self.assert_fails(process, f"data dir {data}")

    def test_unwritable_data_dir(self):
        if os.geteuid() == 0:
            data = self.read_only_mount()
            self.remount_read_only(data)
        else:
            data = self.data
            os.makedirs(data, mode=0o500)
        process, _ = self.start(data=data)
        self.assert_fails(process, f"data dir {data}")

    def test_failing_start_up_clean_up(self):
        """Storage opens, then the clean-up of stale presence fails (a table is gone)."""
        from tests.peers import source_env

        path = os.path.join(self.data, "xep207.sqlite")
        added = subprocess.run([sys.executable, "-m", "xep207.admin", "--data-dir", self.data, "adduser",
                                "juliet"], input="juliet-password\n", capture_output=True, text=True,
                               cwd=self.dir, env=source_env(), timeout=60)
        self.assertEqual(added.returncode, 0, added.stderr)
        with sqlite3.connect(path) as connection:
            connection.execute("DROP TABLE items")
        process, _ = self.start()
        self.assert_fails(process, "start-up failed", path, "no such table: items")

    def test_garbage_tls_key(self):
        from xep207.server.tls import generate_self_signed

        cert, key = os.path.join(self.dir, "c.pem"), os.path.join(self.dir, "k.pem")
        generate_self_signed("localhost", cert, key)
        with open(key, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n")
        process, _ = self.start("--tls-cert", cert, "--tls-key", key)
        self.assert_fails(process, f"TLS key {key}")

    def test_mismatched_tls_key(self):
        from xep207.server.tls import generate_self_signed

        cert, key = os.path.join(self.dir, "c.pem"), os.path.join(self.dir, "k.pem")
        generate_self_signed("localhost", cert, os.path.join(self.dir, "unused.pem"))
        generate_self_signed("localhost", os.path.join(self.dir, "other.pem"), key)
        process, _ = self.start("--tls-cert", cert, "--tls-key", key)
        self.assert_fails(process, f"TLS key {key} does not match", cert)


class OneServerPerData(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)
        self.data = os.path.join(self.dir, "data")

    def start(self, cwd, data, *args):
        port = free_port()
        process = twistd(["--data-dir", data, "--c2s-port", str(port), "--c2s-interfaces", "127.0.0.1",
                          *args], cwd)
        self.addCleanup(process.stop)
        return process, port

    def test_second_server_on_the_same_data_dir_is_refused(self):
        first, port = self.start(self.dir, self.data)
        first.wait_for(f"starting on {port}")
        elsewhere = temp_dir(self)
        second, _ = self.start(elsewhere, self.data)
        self.assertNotEqual(second.wait_exit(), 0, second.output())
        line = fatal_line(second)
        self.assertIn(f"data dir {self.data} is in use", line)
        self.assertIn(f"pid {first.popen.pid}", line)
        self.assertIsNone(first.popen.poll())  # the first one is untouched

    def test_second_server_on_the_same_database_is_refused(self):
        database = os.path.join(self.dir, "shared.sqlite")
        first, port = self.start(self.dir, self.data, "--storage", f"sqlite:///{database}")
        first.wait_for(f"starting on {port}")
        second, _ = self.start(temp_dir(self), os.path.join(self.dir, "other"), "--storage",
                               f"sqlite:///{database}")
        self.assertNotEqual(second.wait_exit(), 0, second.output())
        self.assertIn(f"SQLite database {database} is in use", fatal_line(second))

    def test_data_is_private(self):
        os.makedirs(self.data, mode=0o755)
        os.chmod(self.data, 0o755)  # as an older xep207 left it
        first, port = self.start(self.dir, self.data)
        first.wait_for(f"starting on {port}")
        self.assertEqual(stat.S_IMODE(os.stat(self.data).st_mode), 0o700)
        names = [n for n in os.listdir(self.data) if n.startswith("xep207.sqlite")]
        self.assertIn("xep207.sqlite-wal", names)
        for name in names:
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.data, name)).st_mode), 0o600, name)
        key = os.path.join(self.data, "tls", "localhost.key")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
