"""``postgresql://user@host:port/db`` — a database server several xep207 processes share.

psycopg 3, one connection per process used by one dedicated thread, so the
reactor never waits on the database and operations run in the order they were
issued (``ordered_writes``: a caller may go on once its write is queued).
Under load the thread runs the operations that queued up while it was busy as
one transaction (group commit): one commit and one wake-up of the reactor for
the lot, instead of a connection checkout, a round trip and a commit each.

Operations that are one statement (reads, a publish's upsert-and-trim) go to
the server in pipeline mode, with the COMMIT when they end the batch: a batch
is about one round trip, however many operations it holds.

Every operation still succeeds or fails alone: when one of a batch fails, the
batch is rolled back and each of its operations runs again in a transaction
of its own, so only the failing one gets the error. Other processes of a
cluster write the same rows: a batch that loses a deadlock with one of their
transactions is rolled back and its operations run again the same way (each
retried a few times), none of them failing for it. A dropped connection
(the server restarted) is replaced before the next batch; if it dropped
before this batch ran anything, the batch runs again on the new one. While
the server is down, operations fail fast with ``StorageUnavailable`` (the XMPP
layers answer ``internal-server-error``), never hang. The usual libpq
environment (``PGPASSWORD``, ``PGSSLMODE``, ``~/.pgpass`` …) applies.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, urlsplit, urlunsplit

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure
from zope.interface import implementer

from xep207.storage.interface import IStorage, StorageUnavailable
from xep207.storage.records import Item
from xep207.storage.sql import _ITEM_COLUMNS, SQLStorage, _item, migrate, schema

if TYPE_CHECKING:
    from psycopg import Connection

# Each entry migrates the schema from version i to i + 1. Append, never edit.
MIGRATIONS = [schema(serial="BIGSERIAL PRIMARY KEY", binary="BYTEA", real="DOUBLE PRECISION")]
SCHEMA_VERSION = len(MIGRATIONS)
MIGRATION_LOCK = 207_207  # pg_advisory_xact_lock key: one process migrates at a time

# What the database thread runs: function(cursor, *args), or a _Statement,
# answered on the Deferred.
_Job = tuple[Any, tuple[Any, ...], "defer.Deferred[Any]"]


def _display(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _BatchFailed(Exception):
    """An operation of a batch failed (``failure``): run them again one by one.
    ``conflict``: PostgreSQL gave up the transaction because of another one
    (a deadlock, a serialization failure) — nothing was
    wrong with the operation, and running it again is expected to succeed."""

    def __init__(self, failure: Failure, conflict: bool = False):
        super().__init__(failure.getErrorMessage())
        self.failure = failure
        self.conflict = conflict


class _Statement:
    """An operation that is one statement: sent in pipeline mode with its
    neighbours; ``convert`` makes its rows the operation's result (None: it
    returns nothing)."""

    __slots__ = ("sql", "args", "convert")

    def __init__(self, sql: str, args: tuple, convert: Callable[[list], Any] | None):
        self.sql, self.args, self.convert = sql, args, convert


def _conflict(exc: BaseException) -> bool:
    """A transaction PostgreSQL rolled back because of another one (SQLSTATE
    40P01 deadlock, 40001 serialization failure), raised by the operation or
    by anything it raised in turn."""
    while exc is not None:
        if getattr(exc, "sqlstate", None) in ("40P01", "40001"):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


@implementer(IStorage)
class PostgreSQLStorage(SQLStorage):
    placeholder = "%s"
    lock_row = " FOR UPDATE"  # other processes write the same rows
    ordered_writes = True  # one thread runs the operations in the order they were issued

    # Fewer than PostgreSQL's 64 cached subtransactions is not the point here
    # (no savepoints); the cap keeps one batch's latency bounded.
    MAX_BATCH = 128
    # Runs of one operation that another process's transaction made fail
    # (deadlock, serialization): tried again up to this many times.
    CONFLICT_TRIES = 5

    def __init__(self, url: str):
        import psycopg  # a clear ImportError names the missing extra: pip install 'xep207[postgresql]'

        self.integrity_errors = (psycopg.errors.IntegrityError,)
        self._pipelines = psycopg.Pipeline.is_supported()  # libpq 14 or later; else one round trip each
        self._operational = (psycopg.OperationalError, psycopg.InterfaceError)
        parts = urlsplit(url)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        params.pop("pool_size", None)  # accepted for old URLs: one connection now
        self.timeout = float(params.pop("pool_timeout", 5))
        query = "&".join(f"{k}={v}" for k, v in params.items())
        self.conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, query, ""))
        self.url = _display(url)
        self._thread: threading.Thread | None = None
        self._connection: Connection | None = None
        self._ran = False  # a statement of the current batch reached the server

    def start(self):
        from twisted.internet import reactor

        if self._thread is None and (waiting := self._after_stop(self.start)) is not None:
            return waiting
        self._reactor = IReactorFromThreads(reactor)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # None: stop
        self._stopped: defer.Deferred[None] = defer.Deferred()
        self._thread = threading.Thread(target=self._work, name=f"xep207-postgresql {self.url}", daemon=True)
        self._thread.start()
        return self._transact(self._migrate)

    def _migrate(self, cursor):
        self._execute(cursor, "SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        migrate(cursor, self._execute, MIGRATIONS)

    def stop(self):
        if self._thread is None:  # never started, or stopped already
            return defer.succeed(None)
        self._thread = None
        self._jobs.put(None)
        return self._stopped

    def queue_depth(self) -> int:
        """Operations waiting for the database thread (for metrics)."""
        return self._jobs.qsize() if self._thread is not None else 0

    def _transact(self, function, *args):
        if self._thread is None:
            return defer.fail(StorageUnavailable(f"storage {self.url} is not open"))
        d: defer.Deferred[Any] = defer.Deferred()
        self._jobs.put((function, args, d))
        self._count_issued()
        return d

    def _execute(self, cursor, statement: str, args=()):
        result = super()._execute(cursor, statement, args)
        self._ran = True
        return result

    # Operations that are one statement are queued as such (``_Statement``): a
    # batch sends each run of them in pipeline mode (with the COMMIT when they
    # end it), so the batch costs one round trip to the server, not one each.

    def _fetch(self, statement: str, args=(), convert=list):
        return self._transact(_Statement(self._sql(statement), tuple(args), convert))

    def _run(self, statement: str, args=()):
        return self._transact(_Statement(self._sql(statement), tuple(args), None))

    def get_items(self, service, node_id, item_ids):
        item_ids = list(item_ids)
        if not item_ids:
            return self._fetch("SELECT 1 WHERE false", (), lambda rows: [])  # in order, like the others
        marks = ", ".join("?" * len(item_ids))
        return self._fetch(f"SELECT {_ITEM_COLUMNS} FROM items WHERE service = ? AND node = ?"
                           f" AND item_id IN ({marks}) ORDER BY seq", (service, node_id, *item_ids),
                           lambda rows: [_item(r) for r in rows])

    def put_item(self, service, node_id, item, max_items):
        """One statement: a new id is inserted, an existing one replaced as the
        newest (a fresh ``seq``; atomic against other processes writing the
        same id: ``ON CONFLICT DO UPDATE``), and when a row was added, the node
        trimmed to ``max_items`` (the DELETE sees the rows from before the
        insert, hence ``max_items - 1`` of them kept). A replacement leaves the
        count as it was, so it trims nothing."""
        upsert = ("INSERT INTO items (service, node, item_id, payload, publisher, published)"
                  " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (service, node, item_id) DO UPDATE"
                  " SET seq = nextval('items_seq_seq'), payload = excluded.payload,"
                  " publisher = excluded.publisher, published = excluded.published"
                  " RETURNING seq, xmax = 0 AS added")
        values: tuple = (service, node_id, item.item_id, item.payload, item.publisher, item.published)
        if max_items is None:
            statement = upsert
        else:
            statement = (
                f"WITH new AS ({upsert}),"
                " trimmed AS (DELETE FROM items WHERE service = ? AND node = ?"
                " AND EXISTS (SELECT 1 FROM new WHERE added)"
                " AND seq <= (SELECT seq FROM items WHERE service = ? AND node = ?"
                " ORDER BY seq DESC LIMIT 1 OFFSET ?))"
                " SELECT seq, added FROM new")
            values += (service, node_id, service, node_id, max(max_items - 1, 0))

        def stored(rows):
            return Item(item.item_id, item.payload, item.publisher, item.published, rows[0][0])

        return self._fetch(statement, values, stored)

    # The database thread ------------------------------------------------------------

    def _work(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                self._reactor.callFromThread(self._deliver, self._answer(batch))
        finally:
            self._disconnect()
            self._reactor.callFromThread(self._stopped.callback, None)

    def _answer(self, batch: list[_Job]) -> list[tuple[defer.Deferred, Any]]:
        """Every operation's outcome, whatever happens: a batch that fails as a
        whole (one operation failed, or another process's transaction made it
        fail: a deadlock) is run again one operation at a time; a connection
        that was found dead before anything ran is replaced and the batch tried
        once more."""
        for attempt in (1, 2):
            self._ran = False
            try:
                return self._in_one_transaction(batch)
            except _BatchFailed as failed:
                if len(batch) == 1 and not failed.conflict:
                    return [(batch[0][2], failed.failure)]
                return [self._run_alone(job) for job in batch]
            except self._operational:
                stale = not self._ran and self._connection is not None
                self._disconnect()
                if stale and attempt == 1:
                    continue  # the server restarted since the last batch: nothing ran
                failure = Failure(self._unavailable())
                return [(d, failure) for _, _, d in batch]
        raise AssertionError("not reached")

    def _run_alone(self, job: _Job) -> tuple[defer.Deferred, Any]:
        for attempt in range(1, self.CONFLICT_TRIES + 1):
            try:
                return self._in_one_transaction([job])[0]
            except _BatchFailed as failed:
                if not failed.conflict or attempt == self.CONFLICT_TRIES:
                    return job[2], failed.failure
            except self._operational:
                self._disconnect()
                return job[2], Failure(self._unavailable())
        raise AssertionError("not reached")

    def _in_one_transaction(self, jobs: list[_Job]) -> list[tuple[defer.Deferred, Any]]:
        """``jobs`` in one transaction, committed; ``_BatchFailed`` (rolled back)
        when one of them failed or the transaction lost a conflict with another
        process's; a connection failure as it is. Each run of statements goes
        in pipeline mode, with the COMMIT when it ends the batch."""
        from psycopg.pq import TransactionStatus

        results: list[tuple[defer.Deferred, Any]] = []
        sent: list[tuple[int, Any]] = []  # (index in results, cursor) of statements, answered at the end
        try:
            connection = self._connect()  # a bad URL too is every operation's error, not the thread's end
            with connection.cursor() as cursor:
                i = 0
                while i < len(jobs):
                    function, args, d = jobs[i]
                    if not isinstance(function, _Statement):
                        results.append((d, function(cursor, *args)))
                        if connection.info.transaction_status == TransactionStatus.INERROR:
                            raise RuntimeError("an operation left its transaction failed")  # COMMIT would roll back
                        i += 1
                        continue
                    with connection.pipeline() if self._pipelines else contextlib.nullcontext():
                        while i < len(jobs) and isinstance(jobs[i][0], _Statement):
                            statement, _, d = jobs[i]
                            sent.append((len(results), self._send(connection, statement)))
                            results.append((d, None))
                            i += 1
                        if i == len(jobs):
                            connection.commit()
                if connection.info.transaction_status != TransactionStatus.IDLE:
                    connection.commit()
        except Exception as exc:
            if isinstance(exc, self._operational) and self._connection_lost(exc):
                raise
            failed = _BatchFailed(Failure(), conflict=_conflict(exc))
            self._rollback()
            raise failed from exc
        for index, statement_cursor in sent:
            d, _ = results[index]
            convert = jobs[index][0].convert
            try:
                results[index] = (d, None if convert is None else convert(statement_cursor.fetchall()))
            except Exception:
                results[index] = (d, Failure())
            statement_cursor.close()
        return results

    def _send(self, connection, statement: _Statement):
        """Queue one statement in the pipeline; its cursor holds the rows."""
        cursor = connection.cursor()
        cursor.execute(statement.sql, statement.args)
        self._ran = True
        return cursor

    def _connection_lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` was the connection's (the server went away, or none
        could be made), not one statement's (a deadlock, a timeout).

        The connection may not know yet: a server shutting down sends its
        FATAL (57P01) before the socket closes, and psycopg, leaving pipeline
        mode with that answer unread, replaces it with an error of its own
        that has no SQLSTATE ("cannot exit pipeline mode while busy"). A
        statement's error always has one; so an operational error without
        one, or with a connection or shutdown SQLSTATE anywhere in its
        chain, is the connection's: it is dropped and the batch answered
        ``StorageUnavailable``, as for a closed socket."""
        connection = self._connection
        if connection is None or connection.closed or connection.broken:
            return True
        if getattr(exc, "sqlstate", None) is None:
            return True
        link: BaseException | None = exc
        for _ in range(8):  # (a chain is short; a cycle must not hang the thread)
            if link is None:
                break
            if (getattr(link, "sqlstate", None) or "").startswith(("08", "57P")):
                return True
            link = link.__cause__ or link.__context__
        return False

    def _connect(self) -> Connection:
        import psycopg

        if self._connection is not None and not self._connection.closed and self._went_away(self._connection):
            self._disconnect()
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(self.conninfo, connect_timeout=max(1, int(self.timeout)))
        return self._connection

    def _went_away(self, connection: Connection) -> bool:
        """Whether the server ended this idle connection (it restarted, or an
        administrator terminated it): it then said so, or closed the socket,
        which makes it readable. A batch sent in one pipeline with its COMMIT
        could not tell afterwards whether a lost connection had run it."""
        import select

        try:
            readable, _, _ = select.select([connection.fileno()], [], [], 0)
            if readable:
                connection.pgconn.consume_input()  # fails at the end of the stream
        except Exception:
            return True
        from psycopg.pq import ConnStatus

        return bool(readable) and (connection.pgconn.status != ConnStatus.OK or connection.broken)

    def _rollback(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            connection.rollback()
        except self._operational:
            self._disconnect()

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass

    def _unavailable(self) -> StorageUnavailable:
        import sys

        exc = sys.exc_info()[1]
        unavailable = StorageUnavailable(f"{self.url}: {exc}")
        unavailable.__cause__ = exc
        return unavailable

