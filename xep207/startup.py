"""Start-up: a private data directory, one server per data, and fatal errors that end
the process with one clear line and a non-zero exit status.

twistd runs ``makeService`` before its reactor and logging start, and the
services after; a problem found in either phase must not leave a process that
runs with no listener and exits 0. Before the reactor runs, ``StartupError``
ends twistd through ``SystemExit`` (printed on stderr). Once it runs, ``fatal``
logs the line, stops the reactor and makes the process exit 1.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import os
import sys

from twisted.python import log

DATA_DIR_MODE = 0o700  # the database holds SCRAM keys, messages and room passwords
FILE_MODE = 0o600

_exit_status = 0
_held: list = []  # the process' ExclusiveLocks


class StartupError(Exception):
    """A start-up problem the operator must fix; the message names the file or port."""


def fail_start(message: str) -> None:
    """End the process before the reactor ran: one line on stderr, exit status 1."""
    raise SystemExit(f"xep207: fatal: {message}")


def fatal(message: str) -> None:
    """End a running server: one log line, then stop with exit status 1."""
    global _exit_status
    from twisted.internet import reactor

    log.msg(f"xep207: fatal: {message}")
    if _exit_status == 0:
        _exit_status = 1
        atexit.register(_exit_with_status)
    if reactor.running:
        reactor.stop()
    else:  # found while twistd starts the services, before its reactor runs
        reactor.callWhenRunning(reactor.stop)


def _exit_with_status() -> None:
    # Python exits 0 once twistd's run() returns; atexit is the last word.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_exit_status)


def prepare_data_dir(path: str) -> str:
    """Create ``path`` private to this user (0700), or tighten an existing one
    that others can read; fail clearly if it cannot be written."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, mode=DATA_DIR_MODE, exist_ok=True)
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
            log.msg(f"data dir {path} was readable by others ({mode:o}); now {mode & 0o700:o}")
    except OSError as exc:
        raise StartupError(f"data dir {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(f"data dir {path}: not writable by this user")
    return path


def private_files(*paths: str) -> None:
    """Drop group and other permissions from existing files (owner bits kept, so a
    read-only file stays read-only)."""
    for path in paths:
        try:
            mode = os.stat(path).st_mode & 0o777
            if mode & 0o077:
                os.chmod(path, mode & 0o700)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StartupError(f"{path}: {exc.strerror or exc}") from None


def create_private(path: str) -> None:
    """Create ``path`` empty and 0600 if missing (SQLite gives its -wal and -shm
    files the main file's permissions)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    except OSError as exc:
        raise StartupError(f"cannot open {path} for writing: {exc.strerror or exc}") from None
    private_files(path, path + "-wal", path + "-shm")


class ExclusiveLock:
    """An advisory lock (``flock``) held for the life of the process: a second
    server on the same data is refused instead of sharing it. The kernel
    releases it when the process dies, however it dies."""

    def __init__(self, path: str, what: str):
        self.path = path
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StartupError(f"cannot create lock file {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(descriptor, 32).decode("ascii", "replace").strip() or "?"
            os.close(descriptor)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(f"{what} is in use by another xep207 process (pid {holder}, "
                                   f"lock {path}); stop it, or give this one its own data") from None
            raise StartupError(f"cannot lock {path}: {exc.strerror or exc}") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode("ascii"))
        self._descriptor: int | None = descriptor
        _held.append(self)  # kept until the process ends

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
            _held.remove(self)
