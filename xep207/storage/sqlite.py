"""``sqlite:///path`` — the embedded default.

Operations run on one dedicated database thread, in the order issued, so the
reactor never blocks and writes are serialized without lock errors. Under load
the thread runs the operations that queued up while it was busy as one
transaction (group commit): they pay for a single commit and a single wake-up
of the reactor, and one failing operation still rolls back alone (the batch is
then run again with a savepoint around each operation). A Deferred fires only
after its transaction committed.

**Small writes inline.** A write of a row or two (a message's item, a
subscription, an affiliation, a node) issued while the thread has nothing to
do — nothing queued, nothing running, every answer back, so everything issued
before it has committed — runs at once on the reactor, on a second connection
that never waits for a lock (``busy_timeout=0``) and never checkpoints. The
small writes of one reactor turn share one transaction, committed at the end of
the turn (where the turn's operations are handed to the thread); their
Deferreds fire after that COMMIT. The first operation of a turn that goes to
the thread (a read, a larger write, one beyond ``INLINE_MAX``, a put that must
count or trim its node) takes every later one of that turn with it, handed over
after the inline COMMIT: the order run is the order issued. Only under a light
load: after a turn that issued more than ``INLINE_MAX`` operations, the next
turn's go to the thread, which runs them in parallel with the reactor (all
writes inline made the reactor the bottleneck, issue 13). The write lock held elsewhere (``SQLITE_BUSY``), or any failure
inline, rolls the inline transaction back and hands its operations to the
thread, which waits for the lock or lets the failing one fail alone. A
``_running`` lock, never waited for, asserts that the two sides never run
operations at once (the item counts are touched by whichever side runs).
With ``synchronous=FULL`` (a sync per commit) nothing runs inline.

**Checkpoints stay off the reactor.** The thread's connection checkpoints
after its own commits (SQLite's default); every ``CHECKPOINT_EVERY`` inline
commits the reactor asks the thread for a PASSIVE checkpoint, counted as the
thread's work so that writes go there while it runs and the WAL can start over.

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
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads
from twisted.python.failure import Failure
from zope.interface import implementer

from xep207.storage.interface import IStorage, StorageUnavailable
from xep207.storage.sql import SQLStorage, deliver_results, drain_batch, migrate, schema

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
        # Items per node, kept by whichever side runs a write (the database
        # thread, or the reactor inline): an insert trims a node only when it
        # holds too many, instead of looking max_items rows deep on every insert.
        self._counts: dict[tuple[str, str], int] = {}
        # Held by whoever runs operations: the thread for a batch, the reactor
        # from an inline BEGIN to its COMMIT. Never waited for: the rule below
        # (inline only while the thread has nothing) means it is always free,
        # and finding it taken is a bug, reported as one.
        self._running = threading.Lock()
        self._inline_connection: sqlite3.Connection | None = None
        self._inline_cursor: sqlite3.Cursor | None = None

    MAX_BATCH = 256
    # Small writes run inline only under a light load: at most this many in a
    # turn, and only after a turn that issued at most this many operations.
    # Under a heavy load the thread does the writing, in parallel with the
    # reactor: all writes inline (or the first few of every turn) made the
    # reactor the bottleneck (bench/compare.py, issue 13).
    INLINE_MAX = 4
    # Inline commits between two requests to the thread for a WAL checkpoint
    # (each commit adds a handful of pages; the thread's own connection
    # checkpoints itself every 1000 pages, SQLite's default).
    CHECKPOINT_EVERY = 200

    def _trim_needed(self, cursor, key, max_items, added):
        count = self._counts.get(key)
        if count is None:
            count = cursor.execute("SELECT COUNT(*) FROM items WHERE service = ? AND node = ?", key).fetchone()[0]
        elif added:
            count += 1
        self._counts[key] = min(count, max_items)
        return count > max_items

    def _items_changed(self, key):
        if key is None:
            self._counts.clear()
        else:
            self._counts.pop(key, None)

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        # xep207ctl may write meanwhile; beyond this, operations fail with StorageUnavailable.
        connection.execute(f"PRAGMA busy_timeout={self._busy_timeout}")
        return connection

    def _open_inline(self) -> sqlite3.Connection:
        """The reactor's connection (opened by the thread, used by the reactor
        only): it never waits for a lock and never checkpoints."""
        connection = self._open()
        connection.execute("PRAGMA busy_timeout=0")
        connection.execute("PRAGMA wal_autocheckpoint=0")
        return connection

    def start(self):
        from twisted.internet import reactor

        self._reactor = IReactorFromThreads(reactor)
        self._clock = reactor
        # Operations issued in one reactor turn go to the thread together, as one
        # transaction: one commit, one wake-up of the reactor for their answers,
        # and their consequences (deliveries) written in one turn (issue 13).
        self._turn: list[_Job] | None = None
        # Small writes run inline in this turn's transaction (see _transact_small),
        # with their results, answered once it committed.
        self._inline: list[tuple[_Job, Any]] | None = None
        self._turn_end: IDelayedCall | None = None
        self._in_flight = 0  # operations handed to the thread, not answered yet
        self._light = True  # the last turn issued at most INLINE_MAX operations
        self._inline_commits = 0
        self._checkpoint_due = threading.Event()
        self._jobs: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()  # None: stop
        self._stopped: defer.Deferred[None] = defer.Deferred()
        self._pool = threading.Thread(target=self._work, name=f"xep207-sqlite {self.path}", daemon=True)
        self._pool.start()
        return self._transact(migrate, self._execute, MIGRATIONS)

    def stop(self):
        if self._pool is None:
            return defer.succeed(None)
        if self._turn_end is not None:
            self._turn_end.cancel()
            self._turn_end = None
        results = self._commit_inline()
        if self._turn_end is not None:  # (set again should the commit fail: its operations are in _turn)
            self._turn_end.cancel()
            self._turn_end = None
        self._hand_over()
        self._pool = None
        self._inline_connection = None  # (the thread closes it)
        self._jobs.put(None)
        if results:
            deliver_results(results)  # (what they issue now fails: storage is closed)
        return self._stopped

    def queue_depth(self) -> int:
        """Operations issued and not answered yet (for metrics)."""
        if self._pool is None:
            return 0
        return self._in_flight + len(self._turn or ()) + len(self._inline or ())

    def _transact(self, function, *args):
        if self._pool is None:
            return defer.fail(StorageUnavailable(f"storage {self.url} is not open"))
        d: defer.Deferred[Any] = defer.Deferred()
        if self._turn is None:
            self._turn = []
            self._end_turn_later()
        self._turn.append((function, args, d))
        return d

    def _transact_small(self, function, counted=None):
        """Run a small write inline, in the reactor thread, when the database
        thread has nothing to do: nothing issued before it is then waiting
        or uncommitted, so running it now keeps the order issued. It joins
        this turn's inline transaction, which commits at the end of the turn;
        its Deferred fires after that. Anything else goes to the thread."""
        connection = self._inline_connection
        if connection is None or self._turn or self._in_flight or not self._light:
            return self._transact(function)
        if counted is not None:
            key, max_items = counted
            count = self._counts.get(key)
            if count is None or count >= max_items:
                return self._transact(function)  # (a count or a trim to make: the thread's)
        inline = self._inline
        if inline is not None and len(inline) >= self.INLINE_MAX:
            return self._transact(function)  # (a busy turn: the rest in parallel, on the thread)
        if inline is None:
            try:
                self._take_turn()
            except AssertionError:
                return defer.fail()
            try:
                connection.execute("BEGIN IMMEDIATE")  # (busy_timeout 0: locked elsewhere fails at once)
            except sqlite3.Error:
                self._running.release()
                return self._transact(function)  # the thread waits for the lock, or reports why not
            inline = self._inline = []
            self._end_turn_later()
        d: defer.Deferred[Any] = defer.Deferred()
        job = (function, (), d)
        try:
            result = function(self._inline_cursor)
        except Exception:
            inline.append((job, None))
            self._inline_to_thread()  # where it fails alone, or the database's failure is reported
            return d
        inline.append((job, result))
        return d

    def _take_turn(self) -> None:
        """Operations are about to run here (the thread's batch, or the
        reactor's inline transaction). Under the rule they never run on both
        at once (so ``_counts`` needs no lock); should they, that is a bug,
        and the operations fail with it rather than corrupt the counts."""
        if not self._running.acquire(blocking=False):
            raise AssertionError("SQLite operations would run in two threads at once")

    def _end_turn_later(self) -> None:
        if self._turn_end is None:
            self._turn_end = self._clock.callLater(0, self._end_turn)

    def _end_turn(self) -> None:
        """The end of a reactor turn: commit what ran inline, then give the
        thread what this turn issued for it, then answer the inline writes."""
        self._turn_end = None
        self._light = len(self._inline or ()) + len(self._turn or ()) <= self.INLINE_MAX
        results = self._commit_inline()
        self._hand_over()
        if results:
            deliver_results(results)

    def _commit_inline(self) -> list[tuple[defer.Deferred, Any]] | None:
        inline, self._inline = self._inline, None
        if inline is None:
            return None
        connection = self._inline_connection
        assert connection is not None
        try:
            connection.execute("COMMIT")
        except sqlite3.Error:
            self._inline = inline
            self._inline_to_thread()  # (they run again there: the thread reports the failure)
            return None
        self._running.release()
        self._inline_commits += 1
        if self._inline_commits % self.CHECKPOINT_EVERY == 0:
            # The checkpoint counts as the thread's work: writes go there while
            # it runs, so none is half-way when it copies (else the WAL could not
            # start over; see _checkpoint).
            self._in_flight += 1
            self._checkpoint_due.set()
            self._jobs.put([])  # (wakes the thread; no operation)
        return [(job[2], result) for job, result in inline]

    def _inline_to_thread(self) -> None:
        """Roll back the inline transaction; its operations go to the thread,
        first in this turn's queue (they were issued before anything in it)."""
        inline, self._inline = self._inline or [], None
        self._counts.clear()  # (what they counted is rolled back)
        if self._inline_connection is not None:
            self._abandon(self._inline_connection)
        self._running.release()
        jobs = [job for job, _ in inline]
        self._turn = jobs + (self._turn or [])
        self._end_turn_later()

    def _hand_over(self) -> None:
        """Give the thread what this turn issued, in the order issued."""
        turn, self._turn = self._turn, None
        if turn:
            self._in_flight += len(turn)
            self._jobs.put(turn)

    def _checkpointed(self) -> None:
        self._in_flight -= 1

    def _deliver(self, results) -> None:
        """In the reactor thread: the thread's answers (committed)."""
        self._in_flight -= len(results)
        deliver_results(results)

    # The database thread ------------------------------------------------------------

    def _work(self) -> None:
        try:
            connection = self._open()
        except Exception:
            failure = Failure(self._translate())
            self._reactor.callFromThread(self._fail_all, failure)
            self._reactor.callFromThread(self._stopped.callback, None)
            return
        inline = None  # (then every operation comes here)
        if self._synchronous != "FULL":  # (no fsync on the reactor)
            try:
                inline = self._open_inline()
            except Exception:
                pass
        # The reactor reads these only once the migration's answer came back.
        self._inline_cursor = inline.cursor() if inline is not None else None
        self._inline_connection = inline
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                if self._checkpoint_due.is_set():
                    self._checkpoint_due.clear()
                    self._checkpoint(connection)
                    self._reactor.callFromThread(self._checkpointed)
                if not batch:
                    continue  # (a wake-up for the checkpoint)
                # Whatever goes wrong, every operation of the batch gets an answer
                # and the thread goes on with the next batch: a lock held by
                # another process for longer than busy_timeout, a full disk or
                # a read-only file are failures of these operations, not of the writer.
                try:
                    self._take_turn()
                    try:
                        results = self._run_batch(connection, batch, self._translate)
                    finally:
                        self._running.release()
                except BaseException:
                    failure = Failure(self._translate())
                    self._counts.clear()
                    self._abandon(connection)
                    results = [(d, failure) for _, _, d in batch]
                self._reactor.callFromThread(self._deliver, results)
        finally:
            if inline is not None:
                inline.close()  # (first: the last connection closed checkpoints, here)
            connection.close()
            self._reactor.callFromThread(self._stopped.callback, None)

    @staticmethod
    def _checkpoint(connection) -> None:
        """Copy the WAL's committed pages into the database, waiting for no
        one (PASSIVE). Once all are copied (no write half-way, no reader of an
        older state), the next writer starts the WAL over from its beginning,
        so it stays as large as one stretch of writes between checkpoints.
        The thread's own connection checkpoints after its commits (SQLite's
        default, every 1000 pages); the inline connection never does (that
        would be on the reactor): every ``CHECKPOINT_EVERY`` commits the
        reactor asks for this."""
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # (tried again at the next request; the WAL only grows meanwhile)

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

    def _next_batch(self):
        return drain_batch(self._jobs, self.MAX_BATCH)

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
            results = [(d, function(cursor, *args)) for function, args, d in batch]
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
        self._in_flight = 0
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
        for job in waiting:
            job[2].errback(failure)

