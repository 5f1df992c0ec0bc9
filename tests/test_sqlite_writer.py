"""What SQLite's database thread promises the reactor (issue 13): the order
issued across writes and reads of one turn, answers only once committed, a lock
held by another process never blocking the reactor, one failure failing alone,
stop() draining, a kill losing nothing answered — and ``memory:``'s answers
under a random mix."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from xep207.storage.interface import NodeExists, StorageUnavailable
from xep207.storage.memory import MemoryStorage
from xep207.storage.records import Item, Node, NodeConfig
from xep207.storage.sqlite import SQLiteStorage
from xep207.storage.sqlite_checkpoints import WRITER_CHECKPOINT_PAGES, WRITER_CHECKPOINT_PAGES_ALONE

from tests.peers import temp_dir

S = "pubsub.example.org"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def item(item_id: str) -> Item:
    return Item(item_id, f"<p>{item_id}</p>", "x@example.org")


def next_turn() -> defer.Deferred:
    return task.deferLater(reactor, 0, lambda: None)


class Traced(SQLiteStorage):
    """The statements the database thread ran."""

    def __init__(self, url):
        super().__init__(url)
        self.statements: list[str] = []

    def _open(self):
        connection = super()._open()
        connection.set_trace_callback(self.statements.append)
        return connection

    def forget(self):
        del self.statements[:]

    def inserts(self):
        return [s for s in self.statements if s.startswith("INSERT INTO items")]


class WriterPromises(unittest.TestCase):
    async def setUp(self):
        self.path = os.path.join(temp_dir(self), "writer.sqlite")
        self.storage = Traced("sqlite:///" + self.path)
        await self.storage.start()
        self.addCleanup(self.stop)
        await self.storage.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        await self.storage.put_item(S, "n", item("first"), 100)
        self.storage.forget()

    def stop(self):
        return self.storage.stop()

    def read_ids(self, node="n"):
        """The items committed, as another process sees them."""
        other = sqlite3.connect(self.path)
        try:
            return [r[0] for r in other.execute("SELECT item_id FROM items WHERE service = ? AND node = ?"
                                                " ORDER BY seq", (S, node))]
        finally:
            other.close()

    async def test_answered_only_once_committed(self):
        """Each Deferred fires after its transaction committed: another
        connection already reads the item in the callback."""
        seen = []
        ds = [self.storage.put_item(S, "n", item(f"c{i}"), 100).addCallback(lambda _: seen.append(self.read_ids()))
              for i in range(2)]
        self.assertEqual(self.read_ids(), ["first"])
        await defer.gatherResults(ds)
        self.assertEqual(seen, [["first", "c0", "c1"]] * 2)
        self.assertEqual(self.storage.queue_depth(), 0)

    async def test_order_issued_across_writes_and_reads_of_one_turn(self):
        """A write, a read, a write: the read sees exactly the first write."""
        first = self.storage.put_item(S, "n", item("a"), 100)
        read = self.storage.page_items(S, "n")
        after = self.storage.put_item(S, "n", item("b"), 100)
        self.assertEqual([i.item_id for i in (await read).items], ["first", "a"])
        await defer.gatherResults([first, after])
        self.assertEqual(self.read_ids(), ["first", "a", "b"])

    async def test_order_issued_across_turns_while_the_thread_works(self):
        read = self.storage.page_items(S, "n")
        await next_turn()  # (on its way to the thread, or running there)
        written = self.storage.put_item(S, "n", item("w"), 100)
        self.assertEqual([i.item_id for i in (await read).items], ["first"])
        await written
        self.assertEqual(self.read_ids(), ["first", "w"])

    async def test_create_node_then_publish_in_one_turn(self):
        created = self.storage.create_node(Node(S, "new", NodeConfig(), "o@example.org"))
        put = self.storage.put_item(S, "new", item("x"), 10)
        node = self.storage.get_node(S, "new")
        page = self.storage.page_items(S, "new")
        await created
        self.assertEqual((await put).item_id, "x")
        self.assertEqual((await node).creator, "o@example.org")
        self.assertEqual([i.item_id for i in (await page).items], ["x"])

    async def test_failing_operation_fails_alone_and_counts_stay_right(self):
        before = self.storage.put_item(S, "n", item("before"), 100)
        again = self.storage.create_node(Node(S, "n", NodeConfig(), "intruder@example.org"))
        other = self.storage.create_node(Node(S, "m", NodeConfig(), "o@example.org"))
        after = self.storage.put_item(S, "n", item("after"), 100)
        self.assertEqual((await before).item_id, "before")
        await self.assertFailure(again, NodeExists)
        await other
        self.assertEqual((await after).item_id, "after")
        self.assertEqual((await self.storage.get_node(S, "n")).creator, "o@example.org")
        self.assertEqual(self.read_ids(), ["first", "before", "after"])
        # What the rolled-back attempt counted is forgotten: limits still hold.
        for i in range(3):
            await self.storage.put_item(S, "n", item(f"t{i}"), 4)
        self.assertEqual(self.read_ids(), ["after", "t0", "t1", "t2"])

    async def test_locked_elsewhere_the_reactor_goes_on(self):
        """Another process holds the write lock (the sqlite3 shell, xep207ctl
        without a running server): the thread waits for it; the reactor runs
        meanwhile; what comes next keeps its order."""
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO items (service, node, item_id, payload, publisher, published)"
                      " VALUES (?, 'n', 'other', '<p/>', 'y@example.org', 0)", (S,))
        waiting = self.storage.put_item(S, "n", item("waits"), 100)
        await next_turn()
        later = self.storage.put_item(S, "n", item("later"), 100)
        for _ in range(5):
            await next_turn()  # the reactor is not blocked (a blocked one would never get here) ...
        self.assertFalse(waiting.called)  # ... while the write waits for the lock
        self.assertFalse(later.called)
        self.assertGreater(self.storage.queue_depth(), 0)
        other.execute("COMMIT")
        self.assertEqual((await waiting).item_id, "waits")
        self.assertEqual((await later).item_id, "later")
        self.assertEqual(self.read_ids(), ["first", "other", "waits", "later"])

    async def test_locked_for_longer_than_busy_timeout(self):
        await self.storage.stop()
        self.storage = Traced("sqlite:///" + self.path + "?busy_timeout=50")
        await self.storage.start()
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        refused = self.storage.put_item(S, "n", item("refused"), 100)
        failure = await self.assertFailure(refused, StorageUnavailable)
        self.assertIn("locked", str(failure))
        other.execute("ROLLBACK")
        await self.storage.put_item(S, "n", item("fine"), 100)
        self.assertEqual(self.read_ids(), ["first", "fine"])

    async def test_stop_drains_what_this_turn_issued(self):
        written = [self.storage.put_item(S, "n", item(f"s{i}"), 100) for i in range(3)]
        read = self.storage.page_items(S, "n")
        stopped = self.storage.stop()
        late = self.storage.put_item(S, "n", item("late"), 100)
        self.assertEqual([i.item_id for i in await defer.gatherResults(written)], ["s0", "s1", "s2"])
        self.assertEqual([i.item_id for i in (await read).items], ["first", "s0", "s1", "s2"])
        await self.assertFailure(late, StorageUnavailable)
        await stopped
        self.assertFalse(os.path.exists(self.path + "-wal"))  # (closed cleanly: the last close checkpointed)
        self.assertEqual(self.read_ids(), ["first", "s0", "s1", "s2"])

    async def test_same_answers_as_memory_under_a_random_mix(self):
        """Writes, reads and failing operations mixed over many turns give the
        answers ``memory:`` gives (the writer's item counts trim exactly)."""
        memory = MemoryStorage()
        await memory.start()
        await memory.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        await memory.put_item(S, "n", item("first"), 100)
        rng = random.Random(207)
        nodes = ["n", "m", "p"]

        def issue(storage, op):
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
                results = await defer.DeferredList([issue(storage, op) for op in ops], consumeErrors=True)
                answers.append([(ok, (r.value.__class__ if not ok else
                                      r.item_id if isinstance(r, Item) else r)) for ok, r in results])
            self.assertEqual(answers[0], answers[1], (turn, ops))
            if rng.random() < 0.3:
                await next_turn()
        self.assertIn("ROLLBACK", self.storage.statements)  # (failures were among them)
        for node in nodes:
            self.assertEqual([i.item_id for i in (await memory.page_items(S, node)).items],
                             self.read_ids(node))


class Checkpoints(unittest.TestCase):
    """The writer's commits do not copy the WAL into the database file (that
    waited for an fsync while messages waited for the commit): a thread of
    its own does, soon after."""

    async def test_no_thread_to_be_had_the_writer_goes_on(self):
        """A process at its thread limit: the checkpoint thread cannot start,
        and the writer still answers every operation (its own net checkpoints)."""
        from xep207.storage import sqlite as sqlite_module
        from xep207.storage.sqlite_checkpoints import Checkpointer

        class NoThread(Checkpointer):
            def start(self):
                raise RuntimeError("can't start new thread")

        self.patch(sqlite_module, "Checkpointer", NoThread)
        storage = Traced("sqlite:///" + os.path.join(temp_dir(self), "nothread.sqlite"))
        await storage.start()
        await storage.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        self.assertEqual((await storage.put_item(S, "n", item("a"), 10)).item_id, "a")
        await storage.stop()
        # (SQLite's own default: the net alone would let the WAL grow to 128 MiB)
        self.assertEqual([s for s in storage.statements if "wal_autocheckpoint" in s][-1],
                         f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES_ALONE}")

    async def test_committed_items_reach_the_database_file_from_another_thread(self):
        path = os.path.join(temp_dir(self), "checkpoints.sqlite")
        storage = Traced("sqlite:///" + path)
        await storage.start()
        self.addCleanup(storage.stop)
        self.assertIn(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}", storage.statements)
        await storage.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        before = os.path.getsize(path)
        big = "x" * 2000
        await defer.gatherResults([storage.put_item(S, "n", Item(f"i{i}", f"<p>{big}</p>", "x@example.org"), 1000)
                                   for i in range(500)])
        # In WAL mode only a checkpoint writes the database file: it grows by
        # the megabyte just committed, after the pass that follows the commit
        # (one may have been under way for the node's creation).
        for _ in range(3):
            storage.checkpoints.passed.clear()
            if os.path.getsize(path) >= before + 1_000_000:
                break
            self.assertTrue(await threads.deferToThread(storage.checkpoints.passed.wait, 10))
        self.assertGreaterEqual(os.path.getsize(path), before + 1_000_000)
        self.assertFalse(any("wal_checkpoint" in s for s in storage.statements))  # (not the writer)

    async def test_the_wal_starts_over_while_the_writer_never_pauses(self):
        """A checkpoint from another thread copies while the writer appends, so
        the WAL is never wholly copied when a write begins and SQLite never
        starts it over: 100 back-to-back batches grew it to 70 MB (and on
        without bound) for a database of 0.7 MB. Once a pass finds
        ``WRAP_PAGES``, the writer copies what came since, between two
        batches, and the WAL starts over — without the writer's net (here
        out of reach), which made the writer copy everything in a COMMIT.
        (Restarts are counted, in the WAL header: its largest size depends
        on how often a loaded box lets the thread run — 13 MB once, under
        the full suite, where a bound of 10 MB was asserted.)"""
        from xep207.storage import sqlite as sqlite_module
        from xep207.storage import sqlite_checkpoints

        self.patch(sqlite_checkpoints, "WRAP_PAGES", 250)  # (1 MB)
        self.patch(sqlite_checkpoints, "INTERVAL", 0.01)
        self.patch(sqlite_module, "WRITER_CHECKPOINT_PAGES", 10**6)
        path = os.path.join(temp_dir(self), "bounded.sqlite")
        storage = Traced("sqlite:///" + path)
        await storage.start()
        self.addCleanup(storage.stop)
        await storage.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        big = "x" * 2000
        restarts = set()
        for turn in range(150):  # (30 MB of items: WRAP_PAGES 30 times over)
            await defer.gatherResults([storage.put_item(S, "n", Item(f"i{turn}-{i}", f"<p>{big}</p>", "x@example.org"), 10)
                                       for i in range(100)])
            with open(path + "-wal", "rb") as wal:
                restarts.add(wal.read(16)[12:])  # (the checkpoint sequence: one more at each restart)
        self.assertIn("PRAGMA wal_checkpoint(PASSIVE)", storage.statements)  # (the writer's, between batches)
        self.assertGreaterEqual(len(restarts), 3)

    async def test_a_short_wal_is_left_to_the_thread(self):
        """Below ``WRAP_PAGES`` the writer copies nothing itself."""
        path = os.path.join(temp_dir(self), "short.sqlite")
        storage = Traced("sqlite:///" + path)
        await storage.start()
        self.addCleanup(storage.stop)
        await storage.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        for turn in range(20):
            storage.checkpoints.passed.clear()
            await defer.gatherResults([storage.put_item(S, "n", Item(f"i{turn}-{i}", "<p/>", "x@example.org"), 10)
                                       for i in range(50)])
            self.assertTrue(await threads.deferToThread(storage.checkpoints.passed.wait, 10))
        await storage.put_item(S, "n", Item("last", "<p/>", "x@example.org"), 10)
        self.assertFalse(any("wal_checkpoint" in s for s in storage.statements))

    async def test_started_and_stopped_many_times_nothing_is_left(self):
        """A process starts hundreds of storages (the test suite, a cluster's
        tests): each stop ends both its threads, closes both connections and
        leaves no WAL behind, even stopped in the turn it was started."""
        import threading

        directory = temp_dir(self)
        warm = SQLiteStorage("sqlite:///" + os.path.join(directory, "warm.sqlite"))  # (the reactor's
        await warm.start()  # waker, opened at the first callFromThread, stays)
        await warm.stop()
        files = len(os.listdir("/proc/self/fd"))
        for n in range(30):
            path = os.path.join(directory, f"{n}.sqlite")
            storage = SQLiteStorage("sqlite:///" + path)
            started = storage.start()
            if n % 2:
                await started
                await storage.put_item(S, "n", item("i"), 10)
            else:
                storage.put_item(S, "n", item("i"), 10)
            await storage.stop()
            await started
            self.assertFalse(os.path.exists(path + "-wal"))
        ours = [t for t in threading.enumerate() if t.name.startswith("xep207-sqlite")]
        for thread in ours:  # (a writer answers stop() as its last act, then ends)
            thread.join(10)
        self.assertEqual([t.name for t in ours if t.is_alive()], [])
        self.assertEqual(len(os.listdir("/proc/self/fd")), files)


class WriterCrash(unittest.TestCase):
    def killed_child(self, main_body: str) -> None:
        """Run ``main_body`` (the body of ``async def main()``, with ``path``,
        SQLiteStorage and Item at hand) in a child process that kills itself."""
        script = textwrap.dedent("""
            import os, signal
            from twisted.internet import reactor, defer
            from xep207.storage.sqlite import SQLiteStorage
            from xep207.storage.records import Item

            async def main():
            {body}
                os.kill(os.getpid(), signal.SIGKILL)

            reactor.callWhenRunning(lambda: defer.ensureDeferred(main()))
            reactor.run()
        """).format(body=textwrap.indent(textwrap.dedent(main_body), "    "))
        child = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=ROOT),
                               capture_output=True, text=True, timeout=60)
        self.assertEqual(child.returncode, -signal.SIGKILL, child.stderr)

    async def test_killed_with_a_turn_unanswered_keeps_what_was_answered(self):
        """A process killed with operations issued and not answered: what was
        answered is there (an acknowledged publish survives a kill), and the
        file opens cleanly."""
        path = os.path.join(temp_dir(self), "crash.sqlite")
        self.killed_child(f"""
            storage = SQLiteStorage("sqlite:///{path}")
            await storage.start()
            for i in range(5):
                await storage.put_item("svc", "node", Item(f"acked{{i}}", "<p/>", "x@y"), 100)
            for i in range(5):
                storage.put_item("svc", "node", Item(f"open{{i}}", "<p/>", "x@y"), 100)
        """)
        storage = SQLiteStorage("sqlite:///" + path)
        await storage.start()
        self.addCleanup(storage.stop)
        page = await storage.page_items("svc", "node")
        self.assertEqual([i.item_id for i in page.items], [f"acked{i}" for i in range(5)])
        await storage.put_item("svc", "node", Item("after", "<p/>", "x@y"), 100)
        self.assertEqual((await storage.page_items("svc", "node")).count, 6)

    async def test_killed_while_the_checkpoint_thread_copies_keeps_what_was_answered(self):
        """Killed just after the answer to a megabyte's batch, when the checkpoint
        thread is copying it into the database file: every answered item is
        there and the file is sound."""
        path = os.path.join(temp_dir(self), "checkpoint-crash.sqlite")
        self.killed_child(f"""
            storage = SQLiteStorage("sqlite:///{path}")
            await storage.start()
            big = "x" * 4000
            for turn in range(3):
                await defer.gatherResults([storage.put_item("svc", "node", Item(f"{{turn}}-{{i}}", f"<p>{{big}}</p>", "x@y"), 10_000)
                                           for i in range(300)])
        """)
        other = sqlite3.connect(path)
        try:
            self.assertEqual(other.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
            self.assertEqual(other.execute("SELECT count(*) FROM items").fetchone()[0], 900)
        finally:
            other.close()
