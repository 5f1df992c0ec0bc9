"""Moving data between backends: SQLite -> PostgreSQL -> SQLite round-trips losslessly."""

import io
import os
import subprocess
import sys

from twisted.trial import unittest

from tests.peers import source_env, temp_dir
from tests.pg import shared_cluster
from xep207.server.sasl import make_account
from xep207.storage.migrate import copy_storage
from xep207.storage.records import Item, Node, NodeConfig, Subscription, VIA_LEGACY
from xep207.storage.sqlite import SQLiteStorage


async def fill(storage):
    await storage.create_account(make_account("juliet", "example.org", "secret-password"))
    await storage.create_account(make_account("romeo", "example.org", "other-password"))
    for n in range(3):
        config = NodeConfig(access_model="whitelist", max_items=50, title=f"node {n}", extra={"muc": {"a": [1, 2]}})
        await storage.create_node(Node("pubsub.example.org", f"n{n}", config, "juliet@example.org", 1.5 + n))
        await storage.set_affiliation("pubsub.example.org", f"n{n}", "juliet@example.org", "owner")
        await storage.set_affiliation("pubsub.example.org", f"n{n}", "romeo@example.org", "publisher")
        await storage.set_subscription(Subscription("pubsub.example.org", f"n{n}", "romeo@example.org/r",
                                                    options={"roomnick": "R"}, via=VIA_LEGACY))
        for i in range(5):
            await storage.put_item("pubsub.example.org", f"n{n}",
                                   Item(f"i{i}", f"<body xmlns='jabber:client'>caf\u00e9 {i} &amp;</body>",
                                        "romeo@example.org/r", 1000.0 + i), None)


async def dump(storage):
    nodes = []
    for service, node_id in await storage.list_all_nodes():
        node = await storage.get_node(service, node_id)
        items = [(i.item_id, i.payload, i.publisher, i.published)
                 for i in (await storage.page_items(service, node_id)).items]
        subscriptions = sorted((s.subscriber, s.state, s.subid, dict(s.options), s.via)
                               for s in await storage.get_subscriptions(service, node_id))
        nodes.append((node, items, subscriptions, await storage.get_affiliations(service, node_id)))
    accounts = [await storage.get_account(j) for j in await storage.list_accounts()]
    return accounts, nodes


class RoundTrip(unittest.TestCase):
    async def test_sqlite_postgresql_sqlite(self):
        directory = temp_dir(self)
        first = SQLiteStorage("sqlite:///" + os.path.join(directory, "a.sqlite"))
        middle_url = shared_cluster().new_database()
        from xep207.storage.postgresql import PostgreSQLStorage

        middle = PostgreSQLStorage(middle_url)
        last = SQLiteStorage("sqlite:///" + os.path.join(directory, "b.sqlite"))
        for storage in (first, middle, last):
            await storage.start()
            self.addCleanup(storage.stop)
        await fill(first)
        quiet = io.StringIO()
        counts = await copy_storage(first, middle, quiet)
        self.assertEqual((counts.accounts, counts.nodes, counts.items, counts.mismatches), (2, 3, 15, []))
        again = await copy_storage(first, middle, quiet)  # idempotent
        self.assertEqual(again.mismatches, [])
        await copy_storage(middle, last, quiet)
        self.assertEqual(await dump(first), await dump(middle))
        self.assertEqual(await dump(first), await dump(last))

    def test_command_line(self):
        directory = temp_dir(self)
        source = "sqlite:///" + os.path.join(directory, "a.sqlite")
        target = "sqlite:///" + os.path.join(directory, "b.sqlite")
        add = subprocess.run([sys.executable, "-m", "xep207.admin", "--storage", source, "--domain", "example.org",
                              "adduser", "juliet"], input="secret-password\n", capture_output=True, text=True,
                             env=source_env(), cwd=directory)
        self.assertEqual(add.returncode, 0, add.stderr)
        moved = subprocess.run([sys.executable, "-m", "xep207.admin", "migrate", "--from", source, "--to", target],
                               capture_output=True, text=True, env=source_env(), cwd=directory)
        self.assertEqual(moved.returncode, 0, moved.stderr)
        self.assertIn("copied 1 accounts, 2 nodes", moved.stdout)
        listed = subprocess.run([sys.executable, "-m", "xep207.admin", "--storage", target, "--domain",
                                 "example.org", "list"], capture_output=True, text=True, env=source_env(), cwd=directory)
        self.assertEqual(listed.stdout.split(), ["juliet@example.org"])


