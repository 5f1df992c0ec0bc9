"""PostgreSQL: the storage contract, atomicity when the connection dies mid-operation,
and clean failures and reconnection when the database server restarts."""

from twisted.internet import defer
from twisted.trial import unittest

from tests.pg import Cluster, shared_cluster
from tests.test_storage import BackendExtras
from xep207.storage import StorageUnavailable
from xep207.storage.postgresql import SCHEMA_VERSION, PostgreSQLStorage
from xep207.storage.records import Item, Node, NodeConfig, Subscription
from xep207.testing import StorageContract
from xep207.testing.contract import account


class PostgreSQLContract(StorageContract, BackendExtras, unittest.TestCase):
    def make_storage(self):
        self.url = shared_cluster().new_database()
        return PostgreSQLStorage(self.url)

    async def reopen(self):
        await defer.maybeDeferred(self.storage.stop)
        self.storage = PostgreSQLStorage(self.url)
        await self.storage.start()
        return self.storage


class KillsOwnConnection(PostgreSQLStorage):
    """Terminates its own backend right after a chosen statement ran."""

    kill_after = None

    def _execute(self, cursor, statement, args=()):
        result = super()._execute(cursor, statement, args)
        if self.kill_after and statement.lstrip().startswith(self.kill_after):
            self.kill_after = None
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return result


class Atomicity(unittest.TestCase):
    async def setUp(self):
        self.storage = KillsOwnConnection(shared_cluster().new_database())
        await self.storage.start()
        self.addCleanup(self.storage.stop)

    async def test_publish_with_trimming_is_all_or_nothing(self):
        for i in range(3):
            await self.storage.put_item("svc", "n", Item(f"i{i}", "<p/>", "x@y"), 3)
        self.storage.kill_after = "WITH new AS (INSERT INTO items"  # insert and trim: one statement
        with self.assertRaises(Exception):
            await self.storage.put_item("svc", "n", Item("new", "<p/>", "x@y"), 3)
        page = await self.storage.page_items("svc", "n")
        self.assertEqual([i.item_id for i in page.items], ["i0", "i1", "i2"])  # nothing trimmed, nothing added

    async def test_account_deletion_is_all_or_nothing(self):
        await self.storage.create_account(account())
        await self.storage.create_node(Node("juliet@example.org", "presence", NodeConfig(), "juliet@example.org"))
        await self.storage.set_subscription(Subscription("other@example.org", "presence", "juliet@example.org"))
        self.storage.kill_after = "DELETE FROM accounts"
        with self.assertRaises(Exception):
            await self.storage.delete_account("juliet@example.org")
        self.assertIsNotNone(await self.storage.get_account("juliet@example.org"))
        self.assertEqual(await self.storage.list_nodes("juliet@example.org"), ["presence"])
        self.assertEqual(len(await self.storage.get_entity_subscriptions("juliet@example.org")), 1)

    async def test_schema_version_recorded(self):
        rows = await self.storage._fetch("SELECT version FROM schema_version")
        self.assertEqual(rows, [(SCHEMA_VERSION,)])


class ServerRestart(unittest.TestCase):
    async def test_fails_fast_while_down_and_reconnects(self):
        cluster = Cluster()
        self.addCleanup(cluster.destroy)
        storage = PostgreSQLStorage(cluster.new_database() + "?pool_timeout=2")
        await storage.start()
        self.addCleanup(storage.stop)
        await storage.put_item("svc", "n", Item("before", "<p/>", "x@y"), None)
        cluster.stop()
        with self.assertRaises(StorageUnavailable):
            await storage.put_item("svc", "n", Item("during", "<p/>", "x@y"), None)
        cluster.start()
        await storage.put_item("svc", "n", Item("after", "<p/>", "x@y"), None)
        page = await storage.page_items("svc", "n")
        self.assertEqual([i.item_id for i in page.items], ["before", "after"])


class Concurrency(unittest.TestCase):
    async def test_concurrent_writers_of_one_item_id(self):
        storage = PostgreSQLStorage(shared_cluster().new_database())
        await storage.start()
        self.addCleanup(storage.stop)
        await defer.gatherResults([storage.put_item("svc", "n", Item("same", f"<p n='{i}'/>", "x@y"), 10)
                                   for i in range(20)])
        page = await storage.page_items("svc", "n")
        self.assertEqual([i.item_id for i in page.items], ["same"])


class UnusableURL(unittest.TestCase):
    async def test_a_bad_connection_option_fails_every_operation_and_stop_still_works(self):
        """psycopg refuses an unknown option before connecting: each operation
        gets that error (the database thread must not die and leave them waiting)."""
        storage = PostgreSQLStorage(shared_cluster().new_database() + "?no_such_libpq_option=1")
        with self.assertRaises(Exception):
            await storage.start()
        with self.assertRaises(Exception):
            await storage.put_item("svc", "n", Item("i", "<p/>", "x@y"), None)
        await storage.stop()
