"""Every bundled backend against the storage contract, plus selection and durability."""

import os
import subprocess
import sys
import textwrap

from twisted.internet import defer
from twisted.trial import unittest

from xep207.storage import open_storage
from xep207.storage.cache import CachingStorage
from xep207.storage.interface import IStorage
from xep207.storage.memory import MemoryStorage
from xep207.storage.records import (OWNER, PENDING, PUBLISHER, SUBSCRIBED, VIA_LEGACY, Item, Node, NodeConfig,
                                    Subscription)
from xep207.storage.sqlite import SCHEMA_VERSION, SQLiteStorage
from xep207.testing import StorageContract

from tests.peers import temp_dir

S = "pubsub.example.org"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BackendExtras:
    """What the bundled backends do beyond the contract (item counts kept by
    SQLite's writer; the SQL backends' one-statement node state)."""

    async def test_limit_kept_after_deletes_purges_and_replaces(self):
        """A backend that remembers item counts (SQLite) trims exactly as one
        that counts every time, whatever removed items in between."""
        for i in range(4):
            await self.storage.put_item(S, "a", Item(f"i{i}", "<p/>", "x@example.org"), 3)
        await self.storage.delete_items(S, "a", ["i2"])
        for i in range(4, 6):
            await self.storage.put_item(S, "a", Item(f"i{i}", "<p/>", "x@example.org"), 3)
        self.assertEqual([i.item_id for i in (await self.storage.page_items(S, "a")).items], ["i3", "i4", "i5"])
        await self.storage.put_item(S, "a", Item("i4", "<p n='2'/>", "x@example.org"), 3)  # a replace
        self.assertEqual([i.item_id for i in (await self.storage.page_items(S, "a")).items], ["i3", "i5", "i4"])
        await self.storage.purge_items(S, "a")
        for i in range(6, 10):
            await self.storage.put_item(S, "a", Item(f"i{i}", "<p/>", "x@example.org"), 2)
        self.assertEqual([i.item_id for i in (await self.storage.page_items(S, "a")).items], ["i8", "i9"])
        await self.storage.create_node(Node(S, "a", NodeConfig(), "o@example.org"))
        await self.storage.delete_node(S, "a")
        await self.storage.put_item(S, "a", Item("j", "<p/>", "x@example.org"), 2)
        self.assertEqual([i.item_id for i in (await self.storage.page_items(S, "a")).items], ["j"])

    async def test_node_state_in_one_read(self):
        """``get_node_state``, where a backend offers it, answers what the
        three reads it replaces answer."""
        read = getattr(self.storage, "get_node_state", None)
        if read is None:
            raise AssertionError("the SQL backends read node state in one statement")
        self.assertEqual(await read(S, "missing"), (None, {}, []))
        config = NodeConfig(access_model="whitelist", max_items=5, extra={"muc#x": "1"})
        await self.storage.create_node(Node(S, "n", config, "o@example.org", 2.5))
        self.assertEqual(await read(S, "n"), (await self.storage.get_node(S, "n"), {}, []))
        await self.storage.set_affiliation(S, "n", "o@example.org", OWNER)
        await self.storage.set_affiliation(S, "n", "p@example.org", PUBLISHER)
        await self.storage.set_subscription(Subscription(S, "n", "a@example.org/r", SUBSCRIBED,
                                                         options={"pubsub#deliver": "1"}, via=VIA_LEGACY))
        await self.storage.set_subscription(Subscription(S, "n", "b@example.org", PENDING))
        node, affiliations, subscriptions = await read(S, "n")
        self.assertEqual(node, await self.storage.get_node(S, "n"))
        self.assertEqual(affiliations, await self.storage.get_affiliations(S, "n"))
        self.assertEqual(sorted(subscriptions, key=lambda s: s.subscriber),
                         sorted(await self.storage.get_subscriptions(S, "n"), key=lambda s: s.subscriber))


class MemoryContract(StorageContract, unittest.TestCase):
    """Not durable: the contract's reopen test reports itself skipped."""

    def make_storage(self):
        return MemoryStorage()



class CachedMemoryContract(MemoryContract):
    """The server puts the cache in front of ``memory:`` too."""

    def make_storage(self):
        from xep207.storage.cache import CachingStorage

        return CachingStorage(MemoryStorage())


class IStorageOnly:
    """A third-party backend written against ``IStorage`` alone: none of the
    bundled backends' extras (``answer_pending_subscription``, say)."""

    single_writer = True

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        if name not in IStorage.names():
            raise AttributeError(name)
        return getattr(self._backend, name)


class CachedIStorageOnlyContract(StorageContract, unittest.TestCase):
    """Such a backend behind the cache the server puts in front of it keeps
    the contract: the cache offers no more than the backend has (the
    contract's tests of the extras skip, rather than fail)."""

    def make_storage(self):
        return CachingStorage(IStorageOnly(MemoryStorage()))

    def test_the_cache_offers_only_what_the_backend_has(self):
        self.assertFalse(hasattr(self.storage, "answer_pending_subscription"))
        self.assertTrue(hasattr(CachingStorage(MemoryStorage()), "answer_pending_subscription"))


class SQLiteContract(StorageContract, BackendExtras, unittest.TestCase):
    def make_storage(self):
        self.path = os.path.join(temp_dir(self), "contract.sqlite")
        return SQLiteStorage("sqlite:///" + self.path)

    async def reopen(self):
        await defer.maybeDeferred(self.storage.stop)
        self.storage = SQLiteStorage("sqlite:///" + self.path)
        await self.storage.start()
        return self.storage


class CachedSQLiteContract(SQLiteContract):
    """The cache the server puts in front of SQLite keeps the contract too."""

    def make_storage(self):
        from xep207.storage.cache import CachingStorage

        return CachingStorage(super().make_storage())

    async def reopen(self):
        from xep207.storage.cache import CachingStorage

        await defer.maybeDeferred(self.storage.stop)
        self.storage = CachingStorage(SQLiteStorage("sqlite:///" + self.path))
        await self.storage.start()
        return self.storage

    async def test_reads_after_writes_are_fresh(self):
        from xep207.storage.records import Node, NodeConfig, Subscription

        await self.storage.create_node(Node("s", "n", NodeConfig(), "o@x"))
        self.assertEqual(await self.storage.get_subscriptions("s", "n"), [])  # now cached
        first = self.storage.get_affiliations("s", "n")
        await self.storage.set_affiliation("s", "n", "o@x", "owner")  # while a read is in flight
        await first
        self.assertEqual(await self.storage.get_affiliations("s", "n"), {"o@x": "owner"})
        await self.storage.set_subscription(Subscription("s", "n", "a@x"))
        self.assertEqual([s.subscriber for s in await self.storage.get_subscriptions("s", "n")], ["a@x"])
        mutable = await self.storage.get_affiliations("s", "n")
        mutable["intruder@x"] = "owner"
        self.assertEqual(await self.storage.get_affiliations("s", "n"), {"o@x": "owner"})
        await self.storage.set_node_config("s", "n", NodeConfig(title="new"))
        self.assertEqual((await self.storage.get_node("s", "n")).config.title, "new")
        await self.storage.delete_node("s", "n")
        self.assertIsNone(await self.storage.get_node("s", "n"))

    async def test_login_accounts_are_read_once_and_fresh_after_every_write(self):
        from xep207.testing.contract import account

        selects = self._count_reads("get_account")
        self.assertIsNone(await self.storage.get_login_account("juliet@example.org"))
        self.assertIsNone(await self.storage.get_login_account("juliet@example.org"))  # a name without one: kept too
        await self.storage.create_account(account())
        self.assertEqual((await self.storage.get_login_account("juliet@example.org")).salt, b"salt1")
        self.assertEqual((await self.storage.get_login_account("juliet@example.org")).salt, b"salt1")
        self.assertEqual(len(selects), 2)  # once before the account, once after: then from memory
        await self.storage.update_account(account(marker=b"2"))
        self.assertEqual((await self.storage.get_login_account("juliet@example.org")).salt, b"salt2")
        racing = self.storage.get_login_account("juliet@example.org")  # in flight while the password changes
        changed = self.storage.update_account(account(marker=b"3"))
        self.assertEqual((await racing).salt, b"salt2")  # issued before the write: its answer
        await changed
        self.assertEqual((await self.storage.get_login_account("juliet@example.org")).salt, b"salt3")
        await self.storage.delete_account("juliet@example.org")
        self.assertIsNone(await self.storage.get_login_account("juliet@example.org"))
        await self.storage.create_account(account(marker=b"4"))  # the name taken again
        self.assertEqual((await self.storage.get_login_account("juliet@example.org")).salt, b"salt4")
        reads = len(selects)
        self.assertEqual((await self.storage.get_account("juliet@example.org")).salt, b"salt4")
        self.assertEqual(len(selects), reads + 1)  # get_account itself asks the database (a check it is usable)

    async def test_entity_subscriptions_are_fresh_after_every_write(self):
        entity = "a@example.org"

        async def subscribed(service=None, node_id=None):
            return [(s.service, s.node_id, s.subscriber, dict(s.options))
                    for s in await self.storage.get_entity_subscriptions(entity, service, node_id)]

        selects = self._count_reads("get_entity_subscriptions")
        for node_id in ("n", "m"):
            await self.storage.create_node(Node(S, node_id, NodeConfig(), "o@example.org"))
        self.assertEqual(await subscribed(), [])
        self.assertEqual(await subscribed(S), [])
        self.assertEqual(await subscribed(), [])
        self.assertEqual(len(selects), 2)  # each question once
        await self.storage.set_subscription(Subscription(S, "n", entity + "/r"))  # a full JID: its bare's
        self.assertEqual(await subscribed(), [(S, "n", entity + "/r", {})])
        self.assertEqual(await subscribed(S, "m"), [])
        await self.storage.set_subscription_option(S, "n", entity + "/r", "nick", "al")
        self.assertEqual(await subscribed(S), [(S, "n", entity + "/r", {"nick": "al"})])
        answer = await self.storage.get_entity_subscriptions(entity)
        answer.clear()  # a caller's list is its own
        self.assertEqual(len(await subscribed()), 1)
        await self.storage.set_subscription(Subscription(S, "m", entity))
        self.assertEqual([s[1] for s in await subscribed()], ["m", "n"])
        racing = self.storage.get_entity_subscriptions(entity)
        removed = self.storage.remove_subscription(S, "m", entity)
        self.assertEqual(len(await racing), 2)
        await removed
        self.assertEqual([s[1] for s in await subscribed()], ["n"])
        await self.storage.delete_node(S, "n")  # someone else's node: its subscriptions go
        self.assertEqual(await subscribed(), [])
        self.assertEqual(await subscribed(S, "m"), [])
        await self.storage.create_node(Node("b@example.org", "presence", NodeConfig(), "b@example.org"))
        await self.storage.set_subscription(Subscription("b@example.org", "presence", entity))
        self.assertEqual(len(await subscribed()), 1)
        await self.storage.delete_account("b@example.org")  # its nodes go, with others' subscriptions
        self.assertEqual(await subscribed(), [])

    async def test_deleting_a_node_forgets_only_its_subscribers_answers(self):
        """Every answer that held a subscription to the node is asked again
        (never served stale); the answers of entities without one stay."""
        alice, bob, carol, dave = (f"{name}@example.org" for name in ("alice", "bob", "carol", "dave"))
        for node_id in ("n", "m"):
            await self.storage.create_node(Node(S, node_id, NodeConfig(), "o@example.org"))
        await self.storage.create_node(Node("other.example.org", "n", NodeConfig(), "o@example.org"))
        await self.storage.set_subscription(Subscription(S, "n", alice))
        await self.storage.set_subscription(Subscription(S, "m", alice))
        await self.storage.set_subscription(Subscription(S, "m", bob))
        await self.storage.set_subscription(Subscription("other.example.org", "n", bob))  # same name, other service
        await self.storage.set_subscription(Subscription(S, "n", dave + "/phone"))  # a full JID: its bare's

        async def subscribed(entity, service=None, node_id=None):
            return sorted((s.service, s.node_id) for s in
                          await self.storage.get_entity_subscriptions(entity, service, node_id))

        questions = [(alice,), (alice, S), (alice, S, "n"), (alice, S, "m"), (bob,), (bob, S, "n"),
                     (carol,), (dave,)]
        for question in questions:
            await subscribed(*question)  # now kept
        selects = self._count_reads("get_entity_subscriptions")
        await self.storage.delete_node(S, "n")
        self.assertEqual(await subscribed(bob), [("other.example.org", "n"), (S, "m")])
        self.assertEqual(await subscribed(bob, S, "n"), [])
        self.assertEqual(await subscribed(carol), [])
        self.assertEqual(selects, [])  # still kept: no subscription of theirs went
        self.assertEqual(await subscribed(alice), [(S, "m")])
        self.assertEqual(await subscribed(alice, S), [(S, "m")])
        self.assertEqual(await subscribed(alice, S, "n"), [])
        self.assertEqual(await subscribed(dave), [])
        self.assertEqual(len(selects), 4)  # each of the four that held one asked again ...
        self.assertEqual(await subscribed(alice, S, "m"), [(S, "m")])
        self.assertEqual(len(selects), 5)  # ... and the rest of alice's answers with them (one entry an entity)

    def _count_reads(self, method: str) -> list:
        """The calls of the database's ``method`` from now on (those the cache did not answer)."""
        calls: list[tuple] = []
        original = getattr(self.storage.backend, method)

        def counted(*args):
            calls.append(args)
            return original(*args)

        setattr(self.storage.backend, method, counted)
        return calls

class _Held:
    """A memory backend whose node deletions and entity-subscription reads
    answer when the test says: the order in which a database thread answers,
    made deterministic (a read answers what was there when it ran)."""

    def __init__(self) -> None:
        self.memory = MemoryStorage()
        self.reads = 0
        self.held: dict[str, tuple[defer.Deferred, object]] = {}

    def __getattr__(self, name):
        return getattr(self.memory, name)

    def get_entity_subscriptions(self, *args):
        self.reads += 1
        answer: list = []
        self.memory.get_entity_subscriptions(*args).addCallback(answer.extend)  # (memory answers at once)
        return self._hold(f"read{self.reads}", lambda: answer)

    def delete_node(self, service, node_id):
        def delete() -> None:
            self.memory.delete_node(service, node_id)  # (memory deletes at once)

        return self._hold("delete", delete)

    def _hold(self, name: str, answer) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.held[name] = (d, answer)
        return d

    def answer(self, name: str) -> None:
        d, answer = self.held.pop(name)
        d.callback(answer())


class NodeDeletionRacesEntityReads(unittest.TestCase):
    """An entity-subscription read that races a node's deletion is never
    kept with the deleted node's subscription in it."""

    ALICE = "alice@example.org"

    async def _storage(self):
        from xep207.storage.cache import CachingStorage

        backend = _Held()
        storage = CachingStorage(backend)
        await storage.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        await storage.set_subscription(Subscription(S, "n", self.ALICE))
        return storage, backend

    def _fresh(self, storage, backend, *query) -> list:
        """Alice's subscriptions as the cache answers now (asking the backend if it must)."""
        d = storage.get_entity_subscriptions(self.ALICE, *query)
        for name in [n for n in backend.held if n.startswith("read")]:
            backend.answer(name)
        return [(s.service, s.node_id) for s in self.successResultOf(d)]

    async def test_read_under_way_when_the_deletion_starts(self):
        storage, backend = await self._storage()
        racing = storage.get_entity_subscriptions(self.ALICE)  # read before the deletion runs ...
        deleted = storage.delete_node(S, "n")
        backend.answer("read1")  # ... and answered with what it read
        self.assertEqual([s.node_id for s in self.successResultOf(racing)], ["n"])
        backend.answer("delete")
        self.successResultOf(deleted)
        self.assertEqual(self._fresh(storage, backend), [])
        self.assertEqual(backend.reads, 2)  # not kept: asked again

    async def test_read_answered_after_the_deletion_was_written(self):
        storage, backend = await self._storage()
        racing = storage.get_entity_subscriptions(self.ALICE)  # it read before the deletion ...
        deleted = storage.delete_node(S, "n")
        backend.answer("delete")
        self.successResultOf(deleted)
        backend.answer("read1")  # ... and its answer comes after it
        self.assertEqual([s.node_id for s in self.successResultOf(racing)], ["n"])
        self.assertEqual(self._fresh(storage, backend), [])
        self.assertEqual(backend.reads, 2)  # not kept: asked again

    async def test_read_started_while_the_deletion_is_written(self):
        storage, backend = await self._storage()
        deleted = storage.delete_node(S, "n")
        racing = storage.get_entity_subscriptions(self.ALICE)  # the database has not deleted yet
        backend.answer("read1")
        self.assertEqual([s.node_id for s in self.successResultOf(racing)], ["n"])
        backend.answer("delete")
        self.successResultOf(deleted)
        self.assertEqual(self._fresh(storage, backend), [])

    async def test_answer_kept_before_and_read_under_way_for_another_query(self):
        storage, backend = await self._storage()
        self.assertEqual(self._fresh(storage, backend), [(S, "n")])  # kept
        racing = storage.get_entity_subscriptions(self.ALICE, S)  # another question, under way
        deleted = storage.delete_node(S, "n")
        backend.answer("read2")
        self.successResultOf(racing)
        backend.answer("delete")
        self.successResultOf(deleted)
        self.assertEqual(self._fresh(storage, backend), [])
        self.assertEqual(self._fresh(storage, backend, S), [])
        self.assertEqual(backend.reads, 4)  # neither answer kept: both asked again


class SQLiteBatches(unittest.TestCase):
    """Operations of one reactor turn share a transaction: without a savepoint
    each while none fails; one that fails fails alone."""

    async def setUp(self):
        self.statements: list[str] = []
        statements = self.statements

        class Traced(SQLiteStorage):
            def _open(self):
                connection = super()._open()
                connection.set_trace_callback(statements.append)
                return connection

        self.storage = Traced("sqlite:///" + os.path.join(temp_dir(self), "batch.sqlite"))
        await self.storage.start()
        self.addCleanup(self.storage.stop)
        await self.storage.create_node(Node(S, "n", NodeConfig(), "o@example.org"))

    async def test_a_turn_without_failures_takes_no_savepoints(self):
        del self.statements[:]
        ds = [self.storage.put_item(S, "n", Item(f"i{i}", "<p/>", "x@example.org"), 10) for i in range(3)]
        stored = await defer.gatherResults(ds)
        self.assertEqual([i.item_id for i in stored], ["i0", "i1", "i2"])
        self.assertEqual([s for s in self.statements if s.startswith(("BEGIN", "COMMIT", "SAVEPOINT"))],
                         ["BEGIN IMMEDIATE", "COMMIT"])

    async def test_one_failing_operation_fails_alone(self):
        from xep207.storage.interface import NodeExists

        del self.statements[:]
        before = self.storage.put_item(S, "n", Item("before", "<p/>", "x@example.org"), 10)
        again = self.storage.create_node(Node(S, "n", NodeConfig(), "intruder@example.org"))
        other = self.storage.create_node(Node(S, "m", NodeConfig(), "o@example.org"))
        after = self.storage.put_item(S, "n", Item("after", "<p/>", "x@example.org"), 10)
        self.assertEqual((await before).item_id, "before")
        await self.assertFailure(again, NodeExists)
        await other
        self.assertEqual((await after).item_id, "after")
        self.assertEqual(self.statements.count("ROLLBACK"), 1)  # the optimistic attempt, then one by one
        self.assertEqual((await self.storage.get_node(S, "n")).creator, "o@example.org")
        self.assertIsNotNone(await self.storage.get_node(S, "m"))
        items = (await self.storage.page_items(S, "n")).items
        self.assertEqual([i.item_id for i in items], ["before", "after"])
        # and its seq numbers are the committed ones, in order
        self.assertLess(items[0].seq, items[1].seq)


class StorageSelection(unittest.TestCase):
    def test_bundled_schemes(self):
        self.assertIsInstance(open_storage("memory:"), MemoryStorage)
        storage = open_storage("sqlite:////tmp/x.sqlite")
        self.assertIsInstance(storage, SQLiteStorage)
        self.assertEqual(storage.path, "/tmp/x.sqlite")
        self.assertEqual(open_storage("sqlite:///rel.sqlite").path, "rel.sqlite")

    def test_unknown_scheme_is_a_clear_error(self):
        with self.assertRaises(ValueError) as caught:
            open_storage("nosuch://x")
        self.assertIn("nosuch", str(caught.exception))

    def test_bad_sqlite_url(self):
        for url in ("sqlite://host/x.db", "sqlite:", "sqlite:///x.db?synchronous=SOMETIMES"):
            with self.assertRaises(ValueError):
                open_storage(url)

    def test_third_party_backend_found_through_twisted_plugins(self):
        plugin_root = temp_dir(self)
        os.makedirs(os.path.join(plugin_root, "twisted", "plugins"))
        with open(os.path.join(plugin_root, "twisted", "plugins", "demo_storage.py"), "w") as f:
            f.write(textwrap.dedent("""
                from zope.interface import provider
                from twisted.plugin import IPlugin
                from xep207.storage import IStorageFactory
                from xep207.storage.memory import MemoryStorage

                class Demo(MemoryStorage):
                    pass

                @provider(IPlugin, IStorageFactory)
                class DemoFactory:
                    scheme = "demo"

                    @staticmethod
                    def open(url):
                        return Demo(url)
            """))
        script = ("from xep207.storage import open_storage; s = open_storage('demo://anything'); "
                  "print(type(s).__name__, s.url)")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([plugin_root, ROOT]))
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, check=True, cwd=plugin_root)
        self.assertEqual(out.stdout.strip(), "Demo demo://anything")


class SQLiteSchema(unittest.TestCase):
    async def test_schema_version_recorded_and_newer_refused(self):
        path = os.path.join(temp_dir(self), "db.sqlite")
        storage = SQLiteStorage("sqlite:///" + path)
        await storage.start()
        storage.stop()
        import sqlite3

        with sqlite3.connect(path) as db:
            self.assertEqual(db.execute("SELECT version FROM schema_version").fetchone()[0], SCHEMA_VERSION)
            self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
        newer = SQLiteStorage("sqlite:///" + path)
        with self.assertRaises(RuntimeError):
            await newer.start()
        newer.stop()
