"""Global backpressure: the storage tells when its writer falls behind and
when it caught up (``SQLStorage.watch_backlog``).

The writer is held back for real: another connection holds the database's
lock, so no batch commits and every operation issued waits for its answer."""

import os
import sqlite3

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.peers import temp_dir
from xep207.storage.postgresql import PostgreSQLStorage
from xep207.storage.sqlite import SQLiteStorage


class WatchBacklog:
    """``SQLStorage.watch_backlog``, on the storage alone: told once at the
    high-water mark (counted as operations are issued), once when the answers
    are down to the low-water mark, and nothing in between. Two operations a
    batch here: marks of 8 and 2."""

    async def test_told_at_the_high_mark_and_back_at_the_low_one(self):
        storage = self.make_storage()
        storage.MAX_BATCH = 2
        await storage.start()
        self.addCleanup(storage.stop)
        self.assertEqual(storage.backlog_marks(), (8, 2))
        told: list[bool] = []
        storage.watch_backlog(told.append)
        release = self.hold_writer()
        issued, seen = [], []
        for _ in range(12):
            issued.append(storage.list_nodes("s"))
            seen.append(list(told))
        self.assertEqual(seen, [[]] * 7 + [[True]] * 5)
        self.assertEqual(storage.waiting(), 12)
        release()
        await defer.gatherResults(issued)
        await task.deferLater(reactor, 0, lambda: None)  # (told after the answers' own callbacks)
        self.assertEqual((told, storage.waiting()), ([True, False], 0))


class WatchBacklogOnSQLite(WatchBacklog, unittest.TestCase):
    def make_storage(self):
        self.path = os.path.join(temp_dir(self), "x.sqlite")
        return SQLiteStorage(f"sqlite:///{self.path}?busy_timeout=30000")

    def hold_writer(self):
        locker = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(locker.close)
        locker.execute("BEGIN EXCLUSIVE")  # (the writer's next batch waits for it)
        return lambda: locker.execute("ROLLBACK")


class WatchBacklogOnPostgreSQL(WatchBacklog, unittest.TestCase):
    def make_storage(self):
        from tests.pg import shared_cluster

        self.url = shared_cluster().new_database()
        return PostgreSQLStorage(self.url)

    def hold_writer(self):
        import psycopg

        locker = psycopg.connect(self.url)
        self.addCleanup(locker.close)
        locker.execute("LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE")  # (the writer's reads wait for it)
        return locker.rollback
