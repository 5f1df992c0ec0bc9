"""``sqlite:///path`` — the embedded default.

One connection, used from one dedicated thread, so the reactor never blocks and
writes are serialized without lock errors. Under load the thread runs the
operations that queued up while it was busy as one transaction (group commit):
they pay for a single commit and a single wake-up of the reactor, and one
failing operation still rolls back alone (the batch is then run again with a
savepoint around each operation). A
Deferred fires only after its transaction committed.

Why not write on the reactor when the thread is idle (issue 13): built and
measured, it made the reactor — the bottleneck — slower at every load tried;
the thread idles between batches even at saturation (docs/architecture.md).

A failure of the database itself (another process holding the lock for
longer than ``busy_timeout``, a full disk, a read-only file) fails the
operations of that batch with ``StorageUnavailable``; the thread carries on.

WAL journaling with ``synchronous=NORMAL``: committed data survives a process
kill (power loss may lose the last commits; ``?synchronous=FULL`` in the URL
trades speed for that too).
"""

from __future__ import annotations

import queue
import sqlite3
import sys
import threading
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import log
from twisted.python.failure import Failure
from zope.interface import implementer

from xep207.storage.interface import IStorage, StorageUnavailable
from xep207.storage.sql import SQLStorage, insert_items, migrate, schema
from xep207.storage.sqlite_checkpoints import WAL_SIZE_LIMIT, WRITER_CHECKPOINT_PAGES, Checkpointer
from xep207.storage.sqlite_items import run_jobs

# Each entry migrates the schema from version i to i + 1. Append, never edit.
MIGRATIONS = [schema(serial="INTEGER PRIMARY KEY AUTOINCREMENT", binary="BLOB", real="REAL")]
SCHEMA_VERSION = len(MIGRATIONS)

# What the database thread runs: function(cursor, *args), answered on the Deferred.
_Job = tuple[Callable[..., Any], tuple[Any, ...], defer.Deferred[Any]]


def _path_from_url(url: str) -> tuple[str, dict]:
    """SQLAlchemy's convention: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``."""
    parts = urlsplit(url)
    if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
        raise ValueError(f"not a sqlite URL: {url!r} (use sqlite:///relative or sqlite:////absolute)")
    return parts.path[1:], {k: v[-1] for k, v in parse_qs(parts.query).items()}


@implementer(IStorage)
class SQLiteStorage(SQLStorage):
    integrity_errors = (sqlite3.IntegrityError,)
    single_writer = True  # one server process owns the file: node metadata may be cached
    ordered_writes = True  # one thread runs the operations in the order they were issued

    def __init__(self, url: str):
        self.url = url
        self.path, params = _path_from_url(url)
        synchronous = params.get("synchronous", "NORMAL").upper()
        if synchronous not in ("NORMAL", "FULL", "OFF"):
            raise ValueError(f"synchronous must be NORMAL, FULL or OFF, not {synchronous!r}")
        self._synchronous = synchronous
        try:
            self._busy_timeout = int(params.get("busy_timeout", 5000))
        except ValueError:
            raise ValueError("busy_timeout is in milliseconds") from None
        self._pool: threading.Thread | None = None
        # Items per node, kept by the database thread alone (it is the only
        # writer): an insert trims a node only when it holds too many, instead
        # of looking max_items rows deep on every insert.
        self._counts: dict[tuple[str, str], int] = {}

    MAX_BATCH = 256

    def _trim_needed(self, cursor, key, max_items, added):
        count = self._counts.get(key)
        if count is None:
            count = cursor.execute("SELECT COUNT(*) FROM items WHERE service = ? AND node = ?", key).fetchone()[0]
        else:
            count += added
        self._counts[key] = min(count, max_items)
        return count > max_items

    def _execute(self, cursor, statement: str, args=()):
        return cursor.execute(statement, args)  # (placeholders are ours already: no rewriting, no copy)

    # An item insert without ``RETURNING``: sqlite3 would step the statement
    # twice (the row, then its end), and every step hands the GIL to the
    # reactor and waits to take it back; ``lastrowid`` is the new ``seq``.
    _INSERT_ITEM = insert_items(1)

    def _insert_new_item(self, cursor, values):
        cursor.execute(self._INSERT_ITEM, values)
        return (cursor.lastrowid,) if cursor.rowcount == 1 else None

    def _items_changed(self, key):
        if key is None:
            self._counts.clear()
        else:
            self._counts.pop(key, None)

    def _open(self) -> sqlite3.Connection:
        # (a statement prepared again hands the GIL over too: room for all of ours)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     cached_statements=256)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        # xep207ctl may write meanwhile; beyond this, operations fail with StorageUnavailable.
        connection.execute(f"PRAGMA busy_timeout={self._busy_timeout}")
        return connection

    def start(self):
        from twisted.internet import reactor

        if self._pool is None and (waiting := self._after_stop(self.start)) is not None:
            return waiting
        self._reactor = IReactorFromThreads(reactor)
        self._clock = reactor
        # Operations issued in one reactor turn go to the thread together, as one
        # transaction: one commit, one wake-up of the reactor for their answers,
        # and their consequences (deliveries) written in one turn (issue 13).
        self._turn: list[_Job] | None = None
        self._under_way = 0  # operations of the batch the thread runs (set by it; an int is atomic)
        self._jobs: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()  # None: stop
        self._stopped: defer.Deferred[None] = defer.Deferred()
        self._pool = threading.Thread(target=self._work, name=f"xep207-sqlite {self.path}", daemon=True)
        self._pool.start()
        return self._transact(migrate, self._execute, MIGRATIONS)

    def stop(self):
        if self._pool is None:
            return defer.succeed(None)
        self._hand_over()
        self._pool = None
        self._jobs.put(None)
        return self._stopped

    def queue_depth(self) -> int:
        """Work waiting for the database thread or under way there (for metrics:
        the batch the thread runs counts too, or a write waiting for a lock
        another process holds would show an empty queue)."""
        if self._pool is None:
            return 0
        # (turns waiting, the batch under way, and this turn's)
        return self._jobs.qsize() + self._under_way + len(self._turn or ())

    def _transact(self, function, *args):
        if self._pool is None:
            return defer.fail(StorageUnavailable(f"storage {self.url} is not open"))
        d: defer.Deferred[Any] = defer.Deferred()
        if self._turn is None:
            self._turn = []
            self._clock.callLater(0, self._hand_over)
        self._turn.append((function, args, d))
        self._count_issued()
        return d

    def _hand_over(self) -> None:
        """Give the thread what this turn issued, in the order issued."""
        turn, self._turn = self._turn, None
        if turn:
            self._jobs.put(turn)

    # The database thread ------------------------------------------------------------

    def _work(self) -> None:
        try:
            connection = self._open()
        except Exception:
            failure = Failure(self._translate())
            self._reactor.callFromThread(self._fail_all, failure)
            self._reactor.callFromThread(self._stopped.callback, None)
            return
        checkpoints = self.checkpoints = Checkpointer(self.path)  # (off this thread: sqlite_checkpoints.py)
        try:
            # (not 0: a WAL that never stops growing would then never start over)
            connection.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
            # (a WAL that grew while no checkpoint could copy is cut back when it starts over)
            connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            try:
                checkpoints.start()
            except RuntimeError as exc:  # (no thread to be had: the writer checkpoints, as SQLite does,
                log.msg(f"SQLite checkpoints for {self.path} stay in the writer: {exc}")  # after_batch)
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                self._under_way = len(batch)
                # Whatever goes wrong, every operation of the batch gets an answer
                # and the thread goes on with the next batch: a lock held by
                # another process for longer than busy_timeout, a full disk or
                # a read-only file are failures of these operations, not of the writer.
                try:
                    results = self._run_batch(connection, batch, self._translate)
                except BaseException:
                    failure = Failure(self._translate())
                    self._counts.clear()
                    self._abandon(connection)
                    results = [(d, failure) for _, _, d in batch]
                self._under_way = 0  # (before the answers: whoever reads them sees it done)
                self._reactor.callFromThread(self._deliver, results)
                checkpoints.after_batch(connection)
        finally:
            connection.close()
            checkpoints.stop()  # (closes last: checkpoints the rest, removes the WAL)
            self._reactor.callFromThread(self._stopped.callback, None)

    def _translate(self) -> BaseException:
        """The exception being handled, as callers should see it: a database that
        cannot be used right now (locked, full, read-only, unreadable) becomes
        ``StorageUnavailable`` naming the file."""
        exc = sys.exc_info()[1]
        assert exc is not None, "only called while an exception is handled"
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
                exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
            unavailable = StorageUnavailable(f"SQLite database {self.path}: {exc}")
            unavailable.__cause__ = exc
            return unavailable
        return exc

    @staticmethod
    def _abandon(connection) -> None:
        """Leave a failed transaction so the next batch starts clean."""
        try:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _run_batch(self, connection, batch, translate):
        # Optimistically, the whole batch in one transaction, no savepoints:
        # an operation is then one statement or two, not three or four (each
        # statement hands the GIL back to the reactor thread, and waits for it).
        # Should one operation fail, the transaction is rolled back and the
        # batch run again with a savepoint around each operation, so that
        # one fails alone. (Operations are re-runnable: their arguments were
        # made in the reactor thread; their counts here are cleared.)
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            results = run_jobs(cursor, batch)
        except Exception:
            failure = Failure(translate())
            self._counts.clear()
            self._abandon(connection)
            if len(batch) == 1 or isinstance(failure.value, StorageUnavailable):
                return [(d, failure) for _, _, d in batch]  # (the database's failure is every operation's)
            return self._run_batch_by_operation(connection, batch, translate)
        return self._commit(connection, cursor, results, translate)

    def _run_batch_by_operation(self, connection, batch, translate):
        results = []
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        for function, args, d in batch:
            cursor.execute("SAVEPOINT operation")
            try:
                result = function(cursor, *args)
                cursor.execute("RELEASE operation")
                results.append((d, result))
            except Exception:
                failure = Failure(translate())
                self._counts.clear()  # what the operation counted may be rolled back
                cursor.execute("ROLLBACK TO operation")
                cursor.execute("RELEASE operation")
                results.append((d, failure))
        return self._commit(connection, cursor, results, translate)

    def _commit(self, connection, cursor, results, translate):
        """The batch's results once committed; the commit's failure for every one otherwise."""
        try:
            cursor.execute("COMMIT")
        except Exception:
            failure = Failure(translate())
            self._counts.clear()
            self._abandon(connection)
            return [(d, failure) for d, _ in results]
        return results

    def _fail_all(self, failure):
        self._pool = None  # the thread is gone: later operations fail at once
        waiting: list[_Job] = []
        while True:
            try:
                jobs = self._jobs.get_nowait()
            except queue.Empty:
                break
            if jobs is not None:
                waiting.extend(jobs)
        waiting.extend(self._turn or ())
        self._turn = None
        self._answered += len(waiting)
        for job in waiting:
            job[2].errback(failure)
        if self.backlogged:
            self._maybe_caught_up()

