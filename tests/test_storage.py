"""Every bundled backend against the storage contract, plus selection and durability."""

import os
import signal
import subprocess
import sys
import textwrap

from twisted.internet import defer
from twisted.trial import unittest

from xep207.storage import open_storage
from xep207.storage.memory import MemoryStorage
from xep207.storage.sqlite import SCHEMA_VERSION, SQLiteStorage
from xep207.testing import StorageContract

from tests.peers import temp_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MemoryContract(StorageContract, unittest.TestCase):
    """Not durable: the contract's reopen test reports itself skipped."""

    def make_storage(self):
        return MemoryStorage()


class SQLiteContract(StorageContract, unittest.TestCase):
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


class SQLiteDurability(unittest.TestCase):
    async def test_acknowledged_publish_survives_kill(self):
        path = os.path.join(temp_dir(self), "db.sqlite")
        script = textwrap.dedent(f"""
            import sys
            from twisted.internet import reactor, defer
            from xep207.storage.sqlite import SQLiteStorage
            from xep207.storage.records import Item

            async def main():
                storage = SQLiteStorage("sqlite:///{path}")
                await storage.start()
                for i in range(50):
                    await storage.put_item("svc", "node", Item(f"i{{i}}", "<p/>", "x@y"), None)
                print("ACK", flush=True)

            reactor.callWhenRunning(lambda: defer.ensureDeferred(main()))
            reactor.run()
        """)
        env = dict(os.environ, PYTHONPATH=ROOT)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
        try:
            self.assertEqual(child.stdout.readline().strip(), "ACK")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        storage = SQLiteStorage("sqlite:///" + path)
        await storage.start()
        self.addCleanup(storage.stop)
        page = await storage.page_items("svc", "node")
        self.assertEqual(page.count, 50)
