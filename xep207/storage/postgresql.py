"""``postgresql://user@host:port/db`` — a database server several xep207 processes share.

psycopg 3 with a ``psycopg_pool`` connection pool, driven from a Twisted thread
pool of the same size, so the reactor never waits on the database. Every
operation is one transaction (commit on success, rollback on any error, a
dropped connection included), so a crash leaves no partial state. Connections
are checked before use and replaced when the server restarted; while it is
down, operations fail fast with ``StorageUnavailable`` (the XMPP layers answer
``internal-server-error``), never hang. The usual libpq environment
(``PGPASSWORD``, ``PGSSLMODE``, ``~/.pgpass`` …) applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit, urlunsplit

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from xep207.storage.interface import IStorage, StorageUnavailable
from xep207.storage.sql import SQLStorage, migrate, schema

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg_pool import ConnectionPool

# Each entry migrates the schema from version i to i + 1. Append, never edit.
MIGRATIONS = [schema(serial="BIGSERIAL PRIMARY KEY", binary="BYTEA", real="DOUBLE PRECISION")]
SCHEMA_VERSION = len(MIGRATIONS)
MIGRATION_LOCK = 207_207  # pg_advisory_xact_lock key: one process migrates at a time


def _display(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@implementer(IStorage)
class PostgreSQLStorage(SQLStorage):
    placeholder = "%s"

    def __init__(self, url: str):
        import psycopg  # a clear ImportError names the missing extra: pip install 'xep207[postgresql]'

        self.integrity_errors = (psycopg.errors.IntegrityError,)
        self._operational = (psycopg.OperationalError, psycopg.InterfaceError)
        parts = urlsplit(url)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.pool_size = int(params.pop("pool_size", 8))
        self.timeout = float(params.pop("pool_timeout", 5))
        query = "&".join(f"{k}={v}" for k, v in params.items())
        self.conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, query, ""))
        self.url = _display(url)
        self._pool: ConnectionPool[Connection] | None = None
        self._threads: ThreadPool | None = None

    def start(self):
        from psycopg_pool import ConnectionPool

        self._threads = ThreadPool(minthreads=1, maxthreads=self.pool_size, name="xep207-postgresql")
        self._threads.start()
        self._pool = ConnectionPool(
            self.conninfo, min_size=1, max_size=self.pool_size, open=False, timeout=self.timeout,
            check=ConnectionPool.check_connection, kwargs={"connect_timeout": max(1, int(self.timeout))},
            reconnect_timeout=0)
        d = threads.deferToThreadPool(_reactor(), self._threads, self._pool.open, True, self.timeout)
        return d.addCallback(lambda _: self._transact(self._migrate))

    def _migrate(self, cursor):
        self._execute(cursor, "SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        migrate(cursor, self._execute, MIGRATIONS)

    def stop(self):
        pool, thread_pool = self._pool, self._threads
        self._pool = self._threads = None
        if pool is None or thread_pool is None:  # never started, or stopped already
            return defer.succeed(None)

        def close():
            pool.close()

        def stopped(result):
            thread_pool.stop()
            return result

        d = threads.deferToThreadPool(_reactor(), thread_pool, close)
        return d.addBoth(stopped)

    def _transact(self, function, *args):
        pool, thread_pool = self._pool, self._threads
        if pool is None or thread_pool is None:
            return defer.fail(StorageUnavailable(f"storage {self.url} is not open"))

        def work():
            with pool.connection() as connection:  # commits, or rolls back on any exception
                with connection.cursor() as cursor:
                    return function(cursor, *args)

        d = threads.deferToThreadPool(_reactor(), thread_pool, work)
        return d.addErrback(self._unavailable)

    def _unavailable(self, failure):
        from psycopg_pool import PoolTimeout

        if failure.check(PoolTimeout, *self._operational):
            raise StorageUnavailable(f"{self.url}: {failure.getErrorMessage()}")
        return failure


def _reactor():
    from twisted.internet import reactor

    return reactor
