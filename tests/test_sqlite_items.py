"""SQLite stores a run of puts with multi-row statements (xep207/storage/sqlite_items.py);
each put must still get exactly what it would have got alone, as ``memory:`` answers:
the same rows, seqs in the order issued, overwrites as the newest, trims to max_items."""

import os
import random
import sqlite3

from twisted.internet import defer
from twisted.trial import unittest

from xep207.storage.memory import MemoryStorage
from xep207.storage.records import Item, Node, NodeConfig

from tests.peers import temp_dir
from tests.test_sqlite_writer import Traced

S = "pubsub.example.org"


def item(item_id: str) -> Item:
    return Item(item_id, f"<p>{item_id}</p>", "x@example.org", 1700000000.0)


class StoredTogether(unittest.TestCase):
    async def setUp(self):
        self.path = os.path.join(temp_dir(self), "items.sqlite")
        self.sqlite = Traced("sqlite:///" + self.path)
        self.memory = MemoryStorage()
        for storage in (self.sqlite, self.memory):
            await storage.start()
            self.addCleanup(storage.stop)
            for node in ("n", "m", "few"):
                await storage.create_node(Node(S, node, NodeConfig(), "o@example.org"))
            await storage.put_item(S, "n", item("old"), 1000)
        self.sqlite.forget()

    def rows(self):
        """(node, item_id, seq) as another connection reads them, in seq order."""
        other = sqlite3.connect(self.path)
        try:
            return other.execute("SELECT node, item_id, seq FROM items ORDER BY seq").fetchall()
        finally:
            other.close()

    async def both(self, puts):
        """Each (node, item_id, max_items) put in one turn, on both backends:
        the answers (checked equal but for seq) and SQLite's stored items."""
        answers = []
        for storage in (self.memory, self.sqlite):
            stored = await defer.gatherResults(
                [storage.put_item(S, node, item(item_id), max_items) for node, item_id, max_items in puts])
            answers.append(stored)
        by_memory, by_sqlite = answers
        self.assertEqual([(i.item_id, i.payload, i.publisher, i.published) for i in by_memory],
                         [(i.item_id, i.payload, i.publisher, i.published) for i in by_sqlite])
        for node in ("n", "m", "few"):
            self.assertEqual([i.item_id for i in (await self.memory.page_items(S, node)).items],
                             [i.item_id for i in (await self.sqlite.page_items(S, node)).items], node)
        return by_sqlite

    async def test_a_long_run_is_a_few_statements_in_the_order_issued(self):
        puts = [("n" if i % 3 else "m", f"i{i}", 1000) for i in range(300)]
        stored = await self.both(puts)
        self.assertLessEqual(len(self.sqlite.inserts()), 8)  # (128 + 128 + 32 + 8 + 4 rows)
        seqs = [i.seq for i in stored]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + 300)))  # consecutive, as issued
        self.assertEqual([(node, item_id, seq) for node, item_id, seq in self.rows()][1:],
                         [(node, item_id, seq) for (node, item_id, _), seq in zip(puts, seqs)])

    async def test_an_overwrite_in_a_run_is_stored_as_the_newest(self):
        await self.both([("n", "a", 1000), ("n", "b", 1000), ("m", "c", 1000)])
        stored = await self.both([("n", "d", 1000), ("n", "a", 1000), ("m", "e", 1000), ("n", "f", 1000)])
        self.assertEqual([i.seq for i in stored], sorted(i.seq for i in stored))
        self.assertEqual([item_id for node, item_id, _ in self.rows() if node == "n"],
                         ["old", "b", "d", "a", "f"])
        self.assertEqual(sum(1 for row in self.rows() if row[1] == "a"), 1)

    async def test_an_id_twice_in_one_run_keeps_the_second(self):
        stored = await self.both([("m", "x", 1000), ("m", "y", 1000), ("m", "x", 1000), ("m", "z", 1000)])
        self.assertEqual([i.seq for i in stored], sorted(i.seq for i in stored))
        self.assertEqual([item_id for node, item_id, _ in self.rows() if node == "m"], ["y", "x", "z"])

    async def test_a_run_trims_to_max_items_like_puts_one_by_one(self):
        await self.both([("few", f"a{i}", 5) for i in range(3)])
        await self.both([("few", f"b{i}", 5) for i in range(20)])
        self.assertEqual([item_id for node, item_id, _ in self.rows() if node == "few"],
                         [f"b{i}" for i in range(15, 20)])
        await self.both([("few", "c", 5), ("n", "c", 1000)])
        self.assertEqual([item_id for node, item_id, _ in self.rows() if node == "few"],
                         [f"b{i}" for i in range(16, 20)] + ["c"])

    async def test_a_trim_counts_from_the_database_after_a_restart(self):
        await self.both([("few", f"a{i}", 5) for i in range(4)])
        await self.sqlite.stop()
        self.sqlite = Traced("sqlite:///" + self.path)  # (its counts start empty)
        await self.sqlite.start()
        self.addCleanup(self.sqlite.stop)
        await self.both([("few", f"b{i}", 5) for i in range(3)])
        self.assertEqual([item_id for node, item_id, _ in self.rows() if node == "few"],
                         ["a2", "a3", "b0", "b1", "b2"])

    async def test_a_failing_operation_amid_a_run_fails_alone(self):
        puts = [self.sqlite.put_item(S, "n", item(f"p{i}"), 1000) for i in range(4)]
        again = self.sqlite.create_node(Node(S, "n", NodeConfig(), "intruder@example.org"))
        puts += [self.sqlite.put_item(S, "m", item(f"q{i}"), 1000) for i in range(4)]
        await self.assertFailure(again, Exception)
        stored = await defer.gatherResults(puts)
        self.assertEqual([i.seq for i in stored], sorted(i.seq for i in stored))
        self.assertEqual([item_id for _, item_id, _ in self.rows()],
                         ["old"] + [f"p{i}" for i in range(4)] + [f"q{i}" for i in range(4)])

    async def test_an_overwrite_amid_a_run_leaves_the_counts_exact(self):
        """An id that exists, amid a run, still takes a seq in SQLite (AUTOINCREMENT
        counts the row it skipped): the rows before it must all be undone, else
        their puts count as replacements and the node later keeps too many."""
        await self.both([("few", "p0", 10), ("few", "p1", 10)])
        run = ["x1", "x2", "x3", "p0", "p1", "y1", "y2", "y3"]  # (one statement of 8 rows)
        await self.both([("few", item_id, 10) for item_id in run])
        await self.both([("few", f"z{i}", 10) for i in range(4)])
        self.assertEqual([item_id for node, item_id, _ in self.rows() if node == "few"],
                         ["x3", "p0", "p1", "y1", "y2", "y3", "z0", "z1", "z2", "z3"])

    async def test_max_items_changing_amid_a_run_trims_as_one_by_one(self):
        """Puts to one node may carry different max_items (a configure between
        two publishes): each put trims to its own, in the order issued."""
        await self.both([("few", f"a{i}", 10) for i in range(4)])
        await self.both([("few", "b0", 10), ("few", "b1", 2), ("few", "b2", 10), ("few", "b3", 10)])
        self.assertEqual([item_id for node, item_id, _ in self.rows() if node == "few"],
                         ["b0", "b1", "b2", "b3"])

    async def test_a_put_sqlite_cannot_bind_fails_alone_amid_a_run(self):
        """A payload SQLite cannot encode (a lone surrogate) fails the statement
        of its whole run: the turn runs again one operation at a time."""
        bad = Item("bad", "<p>\ud800</p>", "x@example.org", 1700000000.0)
        puts = [self.sqlite.put_item(S, "n", item(f"p{i}"), 1000) for i in range(3)]
        failed = self.sqlite.put_item(S, "n", bad, 1000)
        puts += [self.sqlite.put_item(S, "n", item(f"q{i}"), 1000) for i in range(3)]
        await self.assertFailure(failed, UnicodeEncodeError)
        stored = await defer.gatherResults(puts)
        self.assertEqual([i.seq for i in stored], sorted(i.seq for i in stored))
        self.assertEqual([item_id for _, item_id, _ in self.rows()],
                         ["old", "p0", "p1", "p2", "q0", "q1", "q2"])


class Summaries(list):
    """Statements as (their beginning, how many items they list): the whole
    text of a run of large payloads would weigh megabytes each."""

    def append(self, statement: str) -> None:
        head = next((h for h in ("INSERT INTO items", "SELECT seq FROM sqlite_sequence")
                     if statement.startswith(h)), statement[:40])
        super().append((head, statement.count("'x@example.org'")))


class StoredTogetherAtRandom(unittest.TestCase):
    """Long turns of puts (many overwrites, ids shared by nodes, max_items small
    and changing) mixed with deletes, purges, node deletes, failing creates and
    restarts: SQLite answers and keeps what ``memory:`` does."""

    async def setUp(self):
        self.path = os.path.join(temp_dir(self), "random.sqlite")
        self.memory = MemoryStorage()
        await self.memory.start()
        self.statements = Summaries()
        self.sqlite = await self.open()

    async def open(self):
        storage = Traced("sqlite:///" + self.path)
        storage.statements = self.statements  # (all of them, across restarts)
        await storage.start()
        self.addCleanup(storage.stop)
        return storage

    async def test_same_answers_as_memory(self):
        rng = random.Random(2071)
        nodes = ["n", "m", "p", "q"]
        payloads = ["<p>é</p>", "<p>\U0001F600 \u202e\u0000</p>", "<p>" + "x" * 70000 + "</p>", "<p/>"]

        def issue(storage, op):
            kind, node, arg, limit = op
            if kind == "put":
                published = 1700000000.0 + arg
                return storage.put_item(S, node, Item(f"i{arg}", payloads[arg % 4], "x@example.org", published),
                                        limit)
            if kind == "create":
                return storage.create_node(Node(S, node, NodeConfig(), "o@example.org"))
            if kind == "page":
                return storage.page_items(S, node).addCallback(lambda page: [i.item_id for i in page.items])
            if kind == "delete":
                return storage.delete_items(S, node, [f"i{arg}", f"i{arg + 1}"])
            if kind == "purge":
                return storage.purge_items(S, node)
            return storage.delete_node(S, node)

        fresh = iter(range(1000, 10 ** 6))
        for turn in range(60):
            limits = {node: rng.choice([2, 3, 5, 9, 40, 1000]) for node in nodes}
            # Some turns reuse few ids (overwrites), others new ones (long runs);
            # some hold an operation that fails (the turn runs again, one by one).
            reuse = rng.random() < 0.4
            kinds = ["put"] * 200 + ["page", "delete", "delete", "purge", "drop"] + \
                ["create"] * (20 if rng.random() < 0.2 else 0)
            ops = []
            for _ in range(rng.choice([1, 5, 40, 130, 260])):
                node = rng.choice(nodes)
                if rng.random() < 0.01:
                    limits[node] = rng.choice([1, 2, 4, 1000])  # (a configure amid the turn)
                arg = rng.randrange(60) if reuse else next(fresh)
                ops.append((rng.choice(kinds), node, arg, limits[node]))
            answers = []
            for storage in (self.memory, self.sqlite):
                results = await defer.DeferredList([issue(storage, op) for op in ops], consumeErrors=True)
                answers.append([(ok, (r.value.__class__ if not ok else
                                      (r.item_id, r.payload, r.published) if isinstance(r, Item) else r))
                                for ok, r in results])
                if storage is self.sqlite:
                    seqs = [r.seq for ok, r in results if ok and isinstance(r, Item)]
                    self.assertEqual(seqs, sorted(set(seqs)), turn)  # (in the order issued)
            self.assertEqual(answers[0], answers[1], turn)
            for node in nodes:
                self.assertEqual([(i.item_id, i.payload) for i in (await self.memory.page_items(S, node)).items],
                                 [(i.item_id, i.payload) for i in (await self.sqlite.page_items(S, node)).items],
                                 (turn, node))
            if rng.random() < 0.15:
                await self.sqlite.stop()  # (a restart: the item counts start empty)
                self.sqlite = await self.open()
        # (what it meant to reach: 128-row statements, a chunk undone, a failure rerun per operation)
        self.assertTrue(("INSERT INTO items", 128) in self.statements)
        self.assertTrue(("SELECT seq FROM sqlite_sequence", 0) in self.statements)
        self.assertTrue(("ROLLBACK", 0) in self.statements)
