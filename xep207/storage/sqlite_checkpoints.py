"""WAL checkpoints for SQLite's writer, on a thread and connection of their own.

Why: SQLite checkpoints inside the COMMIT that crosses ``wal_autocheckpoint``
pages, so the writer thread — and every message waiting for its batch —
waited for the copy into the database file and its fsync. Measured with a
single-threaded writer (300 items per batch, 90,000 items): 58–60 µs of wall
time per item with checkpoints in the commit, 26–33 without (issue 13).

The writer puts its own automatic checkpoints off to ``WRITER_CHECKPOINT_PAGES``
(a safety net: a WAL copied while the writer appends to it is never wholly
copied when a write begins, so SQLite never starts it over, and without the
net it grew without bound under steady writes) and pokes this thread after each
commit; it runs a PASSIVE checkpoint (it never blocks the writer, nor waits
for a lock: whatever it cannot copy now, the next one does) at most every
``INTERVAL`` seconds. The WAL then holds what was committed since the last
checkpoint; at stop this connection closes last, which checkpoints the rest
and removes the WAL file.
"""

from __future__ import annotations

import sqlite3
import threading

from twisted.python import log

INTERVAL = 0.2  # seconds between checkpoints, at most

# The writer's own checkpoint, a safety net only: pages of WAL (of 4 KiB).
WRITER_CHECKPOINT_PAGES = 4000


class Checkpointer:
    def __init__(self, path: str) -> None:
        self.path = path
        self._due = threading.Event()
        self._stopping = threading.Event()
        self.passed = threading.Event()  # set after each checkpoint (tests wait on it)
        self._thread = threading.Thread(target=self._run, name=f"xep207-sqlite-checkpoints {path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """From the writer, after a commit: there is something to copy."""
        self._due.set()

    def stop(self) -> None:
        """Checkpoint what is left, close, and return once closed."""
        self._stopping.set()
        self._due.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.msg(f"SQLite checkpoints for {self.path} are off: {exc}")
            return
        try:
            while True:
                self._due.wait()
                if self._stopping.is_set():
                    break
                self._due.clear()
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # (a full disk: the WAL waits, the next one tries again)
                    log.msg(f"SQLite checkpoint of {self.path} failed: {exc}")
                self.passed.set()
                if self._stopping.wait(INTERVAL):
                    break
        finally:
            connection.close()
