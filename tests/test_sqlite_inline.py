"""SQLite's small writes, run inline on the reactor while its database thread
has nothing to do (issue 13): the order issued, durability before answers, a
lock held elsewhere, failures, the WAL, stop()."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from xep207.storage.interface import NodeExists, StorageUnavailable
from xep207.storage.memory import MemoryStorage
from xep207.storage.records import Item, Node, NodeConfig
from xep207.storage.sqlite import SQLiteStorage

from tests.peers import temp_dir

S = "pubsub.example.org"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def item(item_id: str) -> Item:
    return Item(item_id, f"<p>{item_id}</p>", "x@example.org")


def next_turn() -> defer.Deferred:
    return task.deferLater(reactor, 0, lambda: None)


class Traced(SQLiteStorage):
    """Which connection ran what: the thread's or the reactor's (inline)."""

    def __init__(self, url):
        super().__init__(url)
        self.thread_statements: list[str] = []
        self.inline_statements: list[str] = []

    def _open(self):
        connection = super()._open()
        connection.set_trace_callback(self.thread_statements.append)
        return connection

    def _open_inline(self):
        connection = super()._open_inline()
        connection.set_trace_callback(self.inline_statements.append)
        return connection

    def forget(self):
        del self.thread_statements[:], self.inline_statements[:]

    def inserts(self, statements):
        return [s for s in statements if s.startswith("INSERT INTO items")]


class InlineWrites(unittest.TestCase):
    async def setUp(self):
        self.path = os.path.join(temp_dir(self), "inline.sqlite")
        self.storage = Traced("sqlite:///" + self.path)
        await self.storage.start()
        self.addCleanup(self.stop)
        await self.storage.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        await self.storage.put_item(S, "n", item("first"), 100)  # (the node's item count is now known)
        self.storage.forget()

    def stop(self):
        return self.storage.stop()

    def read_ids(self, node="n"):
        """The items committed, as another process sees them."""
        with sqlite3.connect(self.path) as other:
            return [r[0] for r in other.execute("SELECT item_id FROM items WHERE service = ? AND node = ?"
                                                " ORDER BY seq", (S, node))]

    async def test_a_turn_of_writes_runs_inline_in_one_transaction(self):
        depth = []
        ds = [self.storage.put_item(S, "n", item(f"i{i}"), 100) for i in range(3)]
        depth.append(self.storage.queue_depth())
        stored = await defer.gatherResults(ds)
        self.assertEqual([i.item_id for i in stored], ["i0", "i1", "i2"])
        self.assertEqual(len(self.storage.inserts(self.storage.inline_statements)), 3)
        self.assertEqual([s for s in self.storage.inline_statements if s.startswith(("BEGIN", "COMMIT"))],
                         ["BEGIN IMMEDIATE", "COMMIT"])
        self.assertEqual(self.storage.thread_statements, [])  # the thread was not woken
        self.assertEqual(depth, [3])  # (issued, not answered yet)
        self.assertEqual(self.storage.queue_depth(), 0)
        self.assertEqual(self.read_ids(), ["first", "i0", "i1", "i2"])

    async def test_answered_only_once_committed(self):
        """Each Deferred fires after its transaction committed: another
        connection already reads the item in the callback."""
        seen = []
        ds = [self.storage.put_item(S, "n", item(f"c{i}"), 100).addCallback(lambda _: seen.append(self.read_ids()))
              for i in range(2)]
        self.assertEqual(self.read_ids(), ["first"])  # (running, not committed)
        await defer.gatherResults(ds)
        self.assertEqual(seen, [["first", "c0", "c1"]] * 2)
        self.assertTrue(self.storage.inline_statements)

    async def test_order_kept_from_inline_to_thread_in_one_turn(self):
        """Write inline, a read (the thread's), a write after it: the read sees
        exactly the first write; the write after it runs on the thread, after
        the inline transaction committed."""
        first = self.storage.put_item(S, "n", item("a"), 100)
        read = self.storage.page_items(S, "n")
        after = self.storage.put_item(S, "n", item("b"), 100)
        self.assertEqual([i.item_id for i in (await read).items], ["first", "a"])
        await defer.gatherResults([first, after])
        self.assertEqual([s.split(" (")[0] for s in self.storage.inserts(self.storage.inline_statements)],
                         ["INSERT INTO items"])
        self.assertEqual(len(self.storage.inserts(self.storage.thread_statements)), 1)
        self.assertEqual(self.read_ids(), ["first", "a", "b"])
        # The thread's answers are in: the next turn's writes run inline again.
        self.storage.forget()
        await self.storage.put_item(S, "n", item("c"), 100)
        self.assertEqual(len(self.storage.inserts(self.storage.inline_statements)), 1)

    async def test_while_the_thread_works_everything_goes_there(self):
        read = self.storage.page_items(S, "n")  # (on its way to the thread...)
        await next_turn()
        self.assertGreater(self.storage.queue_depth(), 0)
        written = self.storage.put_item(S, "n", item("w"), 100)  # (... so this goes after it)
        self.assertEqual([i.item_id for i in (await read).items], ["first"])
        await written
        self.assertEqual(self.storage.inline_statements, [])
        self.assertEqual(self.read_ids(), ["first", "w"])

    async def test_create_node_then_publish_in_one_turn(self):
        """A new node's item count is unknown: the put goes to the thread, after
        the node's creation committed inline; a read after both sees both."""
        created = self.storage.create_node(Node(S, "new", NodeConfig(), "o@example.org"))
        put = self.storage.put_item(S, "new", item("x"), 10)
        node = self.storage.get_node(S, "new")
        page = self.storage.page_items(S, "new")
        await created
        self.assertEqual((await put).item_id, "x")
        self.assertEqual((await node).creator, "o@example.org")
        self.assertEqual([i.item_id for i in (await page).items], ["x"])
        self.assertTrue(any(s.startswith("INSERT INTO nodes") for s in self.storage.inline_statements))
        self.assertTrue(self.storage.inserts(self.storage.thread_statements))

    async def test_a_full_node_is_trimmed_by_the_thread(self):
        """A write that would trim (or count) a node is more than a row or two:
        never on the reactor."""
        for i in range(3):
            await self.storage.put_item(S, "small", item(f"s{i}"), 2)
        self.storage.forget()
        await self.storage.put_item(S, "small", item("s3"), 2)
        self.assertEqual(self.storage.inline_statements, [])
        self.assertTrue(any(s.startswith("DELETE FROM items") for s in self.storage.thread_statements))
        self.assertEqual(self.read_ids("small"), ["s2", "s3"])

    async def test_failing_operation_in_an_inline_turn_fails_alone(self):
        before = self.storage.put_item(S, "n", item("before"), 100)
        again = self.storage.create_node(Node(S, "n", NodeConfig(), "intruder@example.org"))
        other = self.storage.create_node(Node(S, "m", NodeConfig(), "o@example.org"))
        after = self.storage.put_item(S, "n", item("after"), 100)
        self.assertEqual((await before).item_id, "before")
        await self.assertFailure(again, NodeExists)
        await other
        self.assertEqual((await after).item_id, "after")
        self.assertIn("ROLLBACK", self.storage.inline_statements)  # (tried inline first)
        self.assertEqual((await self.storage.get_node(S, "n")).creator, "o@example.org")
        self.assertIsNotNone(await self.storage.get_node(S, "m"))
        self.assertEqual(self.read_ids(), ["first", "before", "after"])
        # The counts the rolled-back attempt made are forgotten: limits still hold.
        for i in range(3):
            await self.storage.put_item(S, "n", item(f"t{i}"), 4)
        self.assertEqual(self.read_ids(), ["after", "t0", "t1", "t2"])

    async def test_locked_elsewhere_the_reactor_goes_on(self):
        """Another process holds the write lock (xep207ctl, the sqlite3 shell):
        the inline attempt fails at once and the thread waits for the lock;
        the reactor runs meanwhile; what comes next keeps its order."""
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO items (service, node, item_id, payload, publisher, published)"
                      " VALUES (?, 'n', 'other', '<p/>', 'y@example.org', 0)", (S,))
        waiting = self.storage.put_item(S, "n", item("waits"), 100)
        await next_turn()
        later = self.storage.put_item(S, "n", item("later"), 100)  # (a turn later: goes after it)
        turns = 0
        for _ in range(5):
            await next_turn()  # the reactor is not blocked ...
            turns += 1
        self.assertEqual(turns, 5)
        self.assertFalse(waiting.called)  # ... while the write waits for the lock
        self.assertFalse(later.called)
        self.assertEqual(self.storage.inline_statements, ["BEGIN IMMEDIATE"])  # (tried, refused at once)
        other.execute("COMMIT")
        self.assertEqual((await waiting).item_id, "waits")
        self.assertEqual((await later).item_id, "later")
        self.assertEqual(self.read_ids(), ["first", "other", "waits", "later"])
        self.assertEqual(self.storage.inserts(self.storage.inline_statements), [])

    async def test_locked_for_longer_than_busy_timeout(self):
        await self.storage.stop()
        self.storage = Traced("sqlite:///" + self.path + "?busy_timeout=50")
        await self.storage.start()
        await self.storage.put_item(S, "n", item("counted"), 100)
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        refused = self.storage.put_item(S, "n", item("refused"), 100)
        failure = await self.assertFailure(refused, StorageUnavailable)
        self.assertIn("locked", str(failure))
        other.execute("ROLLBACK")
        await self.storage.put_item(S, "n", item("fine"), 100)
        self.assertEqual(self.read_ids(), ["first", "counted", "fine"])

    async def test_stop_with_an_inline_transaction_open(self):
        written = [self.storage.put_item(S, "n", item(f"s{i}"), 100) for i in range(3)]
        read = self.storage.page_items(S, "n")  # (and one for the thread, after them)
        self.assertIsNotNone(self.storage._inline)
        stopped = self.storage.stop()
        late = self.storage.put_item(S, "n", item("late"), 100)
        self.assertEqual([i.item_id for i in await defer.gatherResults(written)], ["s0", "s1", "s2"])
        self.assertEqual([i.item_id for i in (await read).items], ["first", "s0", "s1", "s2"])
        await self.assertFailure(late, StorageUnavailable)
        await stopped
        self.assertFalse(os.path.exists(self.path + "-wal"))  # (closed cleanly: the last close checkpointed)
        self.assertEqual(self.read_ids(), ["first", "s0", "s1", "s2"])

    async def test_wal_stays_bounded(self):
        """The inline connection never checkpoints; the thread does, when the
        reactor asks: the WAL starts over instead of growing with every write."""
        async def largest_wal(checkpoint_every):
            self.storage.CHECKPOINT_EVERY = checkpoint_every
            largest = 0
            for turn in range(200):
                await defer.gatherResults([self.storage.put_item(S, "n", item(f"w{checkpoint_every}.{turn}.{i}"),
                                                                 100000) for i in range(3)])
                largest = max(largest, os.path.getsize(self.path + "-wal"))
            return largest

        bounded = await largest_wal(10)
        inline = len(self.storage.inserts(self.storage.inline_statements))
        self.assertGreater(inline, 500)  # (most ran inline; the rest while a checkpoint ran)
        self.assertGreater(len(self.storage.inserts(self.storage.thread_statements)), 0)
        self.storage.forget()
        unbounded = await largest_wal(10 ** 9)  # (never asked: only the thread's own would run)
        self.assertEqual(len(self.storage.inserts(self.storage.inline_statements)), 600)
        self.assertGreater(unbounded, 4 * bounded)
        self.assertLess(bounded, 1024 * 1024)
        self.assertEqual(len(self.read_ids()), 1201)

    async def test_a_busy_turn_and_the_next_go_to_the_thread(self):
        """Beyond ``INLINE_MAX`` writes in a turn the rest go to the thread,
        after the inline ones committed; after such a turn (a heavy load) the
        next one's go there too, where they run in parallel with the reactor;
        after a light turn, inline again."""
        limit = self.storage.INLINE_MAX

        async def turn(prefix, count):
            self.storage.forget()
            stored = await defer.gatherResults([self.storage.put_item(S, "n", item(f"{prefix}{i}"), 1000)
                                                for i in range(count)])
            self.assertEqual([i.item_id for i in stored], [f"{prefix}{i}" for i in range(count)])
            self.assertEqual([i.seq for i in stored], sorted(i.seq for i in stored))
            return (len(self.storage.inserts(self.storage.inline_statements)),
                    len(self.storage.inserts(self.storage.thread_statements)))

        self.assertEqual(await turn("busy", limit + 3), (limit, 3))
        self.assertEqual(await turn("after", 2), (0, 2))
        self.assertEqual(await turn("light", 2), (2, 0))
        self.assertEqual(self.read_ids(), ["first"] + [f"busy{i}" for i in range(limit + 3)]
                         + ["after0", "after1", "light0", "light1"])

    async def test_same_answers_as_memory_under_a_random_mix(self):
        """Inline writes, thread writes, reads and failing operations mixed
        over many turns give the answers ``memory:`` gives (the item counts,
        kept by whichever side ran a write, trim exactly)."""
        memory = MemoryStorage()
        await memory.start()
        await memory.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        await memory.put_item(S, "n", item("first"), 100)
        rng = random.Random(207)
        nodes = ["n", "m", "p"]

        def issue(storage, op, serial):
            kind, node, arg = op
            if kind == "put":
                return storage.put_item(S, node, item(f"{node}{arg}"), 12)
            if kind == "create":
                return storage.create_node(Node(S, node, NodeConfig(), "o@example.org"))
            if kind == "page":
                return storage.page_items(S, node).addCallback(lambda page: [i.item_id for i in page.items])
            if kind == "delete":
                return storage.delete_items(S, node, [f"{node}{arg}"])
            return storage.set_affiliation(S, node, f"e{arg}@example.org", "publisher")

        for turn in range(120):
            ops = [(rng.choice(["put"] * 8 + ["create", "page", "delete", "aff"]),
                   rng.choice(nodes), rng.randrange(20)) for _ in range(rng.randrange(1, 6))]
            answers = []
            for storage in (memory, self.storage):
                ds = [issue(storage, op, i) for i, op in enumerate(ops)]
                results = await defer.DeferredList(ds, consumeErrors=True)
                answers.append([(ok, (r.value.__class__ if not ok else
                                      r.item_id if isinstance(r, Item) else r)) for ok, r in results])
            self.assertEqual(answers[0], answers[1], (turn, ops))
            if rng.random() < 0.3:
                await next_turn()
        for statements in (self.storage.inline_statements, self.storage.thread_statements):
            self.assertGreater(len(self.storage.inserts(statements)), 20)  # (both sides ran writes)
            self.assertIn("ROLLBACK", statements)  # (and both saw failures)
        for node in nodes:
            self.assertEqual([i.item_id for i in (await memory.page_items(S, node)).items],
                             self.read_ids(node))

    async def test_nothing_inline_where_every_commit_syncs(self):
        """``synchronous=FULL`` syncs the disk at each commit: not on the reactor."""
        await self.storage.stop()
        self.storage = Traced("sqlite:///" + self.path + "?synchronous=FULL")
        await self.storage.start()
        await self.storage.put_item(S, "n", item("counted"), 100)
        await self.storage.put_item(S, "n", item("synced"), 100)
        self.assertEqual(self.storage.inline_statements, [])
        self.assertEqual(len(self.storage.inserts(self.storage.thread_statements)), 2)

    async def test_operations_on_both_sides_at_once_would_be_refused(self):
        """The guard behind "never concurrently": should the thread hold the
        operations' lock, an inline write fails instead of racing it."""
        self.storage._running.acquire()
        try:
            refused = self.storage.put_item(S, "n", item("x"), 100)
        finally:
            self.storage._running.release()
        await self.assertFailure(refused, AssertionError)
        self.assertEqual((await self.storage.put_item(S, "n", item("y"), 100)).item_id, "y")


class InlineCrash(unittest.TestCase):
    async def test_killed_mid_turn_keeps_what_was_answered_and_nothing_else(self):
        """A process killed with an inline transaction open: what was answered
        is there, what was not is not, and the file opens cleanly."""
        path = os.path.join(temp_dir(self), "crash.sqlite")
        script = textwrap.dedent(f"""
            import os, signal
            from twisted.internet import reactor, defer
            from xep207.storage.sqlite import SQLiteStorage
            from xep207.storage.records import Item

            async def main():
                storage = SQLiteStorage("sqlite:///{path}")
                await storage.start()
                for i in range(5):
                    await storage.put_item("svc", "node", Item(f"acked{{i}}", "<p/>", "x@y"), 100)
                for i in range(5):
                    storage.put_item("svc", "node", Item(f"open{{i}}", "<p/>", "x@y"), 100)
                assert storage._inline, "written inline"
                os.kill(os.getpid(), signal.SIGKILL)

            reactor.callWhenRunning(lambda: defer.ensureDeferred(main()))
            reactor.run()
        """)
        child = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=ROOT),
                               capture_output=True, text=True, timeout=60)
        self.assertEqual(child.returncode, -signal.SIGKILL, child.stderr)
        storage = SQLiteStorage("sqlite:///" + path)
        await storage.start()
        self.addCleanup(storage.stop)
        page = await storage.page_items("svc", "node")
        self.assertEqual([i.item_id for i in page.items], [f"acked{i}" for i in range(5)])
        await storage.put_item("svc", "node", Item("after", "<p/>", "x@y"), 100)
        self.assertEqual((await storage.page_items("svc", "node")).count, 6)
