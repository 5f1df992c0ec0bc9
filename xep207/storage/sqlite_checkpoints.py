"""WAL checkpoints for SQLite's writer, on a thread and connection of their own.

Why: SQLite checkpoints inside the COMMIT that crosses ``wal_autocheckpoint``
pages, so the writer thread — and every message waiting for its batch —
waited for the copy into the database file and its fsync. Measured with a
single-threaded writer (300 items per batch, 90,000 items): 58–60 µs of wall
time per item with checkpoints in the commit, 26–33 without (issue 13).

This thread runs a PASSIVE checkpoint (it never blocks the writer, nor waits
for a lock: whatever it cannot copy now, the next one does) at most every
``INTERVAL`` seconds after the writer pokes it. The WAL then holds what was
committed since the last checkpoint; at stop this connection closes last,
which checkpoints the rest and removes the WAL file.

**Starting the WAL over.** SQLite starts the WAL file from its beginning only
when a write begins and every frame in it was already copied. A copy made
while the writer appends never is, so under steady writes the WAL grew without
bound, and the writer's own automatic checkpoint (its net) had to catch up:
in its COMMIT it copied all the thread had not (up to a fifth of a second of
frames, 8 MB at 5,000 messages/s), with two fsyncs, every 4,000 pages. At a
fixed 5,000 one-to-one messages/s those commits (17–44 ms, one every half
second) were the p99 (issue 13). Now, once a pass found ``WRAP_PAGES`` or more
in the WAL, the writer — after answering its batch, before taking the next —
copies the few frames committed since that pass began (``after_batch``), and
its next commit starts the WAL over. The wait for two fsyncs stays (a WAL may
not be overwritten before what it holds is in the database file, on disk);
the copy is a few hundred pages, and it comes every ``WRAP_PAGES`` pages, not
every 4,000. The writer's automatic checkpoint stays as a net
(``WRITER_CHECKPOINT_PAGES``) for a thread that cannot keep up.
"""

from __future__ import annotations

import sqlite3
import threading

from twisted.python import log

INTERVAL = 0.2  # seconds between checkpoints, at most

# Pages (of 4 KiB) in the WAL past which the writer finishes a pass's copy so
# that the WAL starts over: the WAL file's size under steady writes (64 MiB).
WRAP_PAGES = 16_000

# The writer's own automatic checkpoint, a net only (a thread that never
# finishes a pass); SQLite's default when there is no thread at all.
WRITER_CHECKPOINT_PAGES = 2 * WRAP_PAGES
WRITER_CHECKPOINT_PAGES_ALONE = 1000

# Bytes the WAL file is cut back to when it starts over (SQLite's
# ``journal_size_limit``; frames are pages plus 24 bytes). A WAL never
# shrinks by itself: once a reader elsewhere (the sqlite3 shell, a backup)
# kept every checkpoint from copying past it, or a full disk kept them from
# copying at all, the file stayed at its largest until the server stopped.
# Steady writes stay below it, so it costs them no truncation.
WAL_SIZE_LIMIT = WRITER_CHECKPOINT_PAGES * (4096 + 24)


class Checkpointer:
    def __init__(self, path: str) -> None:
        self.path = path
        self._due = threading.Event()
        self._stopping = threading.Event()
        self.passed = threading.Event()  # set after each checkpoint (tests wait on it)
        self.wrap_due = False  # set by this thread, cleared by the writer (a bool: atomic)
        self._alone = False  # (the writer's: it checkpoints as often as SQLite would, this thread gone)
        self._thread = threading.Thread(target=self._run, name=f"xep207-sqlite-checkpoints {path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def after_batch(self, connection: sqlite3.Connection) -> None:
        """From the writer, once a batch is committed and answered: this thread
        has something to copy; and when its last pass left a long WAL, the
        writer copies what came since, so that its next commit starts the WAL
        over."""
        if not self._alone and not self._thread.is_alive():
            # (it never started, could not open the file, or died: the writer
            # copies as SQLite does alone, not only at the net, 128 MB in a COMMIT)
            self._alone = True
            try:
                connection.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES_ALONE}")
            except sqlite3.Error as exc:
                log.msg(f"SQLite checkpoints of {self.path} stay at the net: {exc}")
        if self.wrap_due:
            self.wrap_due = False
            try:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # (a full disk: the next long pass asks again)
                log.msg(f"SQLite checkpoint of {self.path} in the writer failed: {exc}")
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
                    busy, pages, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # (a full disk: the WAL waits, the next one tries again)
                    log.msg(f"SQLite checkpoint of {self.path} failed: {exc}")
                else:
                    # (it copied all it found, and found a long WAL: only what came meanwhile is left)
                    if not busy and pages >= WRAP_PAGES and copied == pages:
                        self.wrap_due = True
                self.passed.set()
                if self._stopping.wait(INTERVAL):
                    break
        finally:
            connection.close()
