"""``sqlite:///path`` — the embedded default.

One connection, used from one dedicated thread (``adbapi`` with a pool of one),
so the reactor never blocks and writes are serialized without lock errors.
WAL journaling with ``synchronous=NORMAL``: a transaction is durable once its
commit returns, across a process kill (power loss may lose the last commits;
``?synchronous=FULL`` in the URL trades speed for that too).
"""

from __future__ import annotations

import sqlite3
from urllib.parse import parse_qs, urlsplit

from twisted.enterprise import adbapi
from zope.interface import implementer

from xep207.storage.interface import IStorage
from xep207.storage.sql import SQLStorage, migrate, schema

# Each entry migrates the schema from version i to i + 1. Append, never edit.
MIGRATIONS = [schema(serial="INTEGER PRIMARY KEY AUTOINCREMENT", binary="BLOB", real="REAL")]
SCHEMA_VERSION = len(MIGRATIONS)


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

    def __init__(self, url: str):
        self.url = url
        self.path, params = _path_from_url(url)
        synchronous = params.get("synchronous", "NORMAL").upper()
        if synchronous not in ("NORMAL", "FULL", "OFF"):
            raise ValueError(f"synchronous must be NORMAL, FULL or OFF, not {synchronous!r}")
        self._synchronous = synchronous
        self._pool = None

    def _open(self, connection):
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous}")

    def start(self):
        self._pool = adbapi.ConnectionPool(
            "sqlite3", self.path, check_same_thread=False, cp_min=1, cp_max=1, cp_openfun=self._open)
        return self._transact(migrate, self._execute, MIGRATIONS)

    def stop(self):
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _transact(self, function, *args):
        if self._pool is None:
            from twisted.internet import defer

            return defer.fail(RuntimeError(f"storage {self.url} is not open"))
        return self._pool.runInteraction(function, *args)
