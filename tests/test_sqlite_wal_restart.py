"""The WAL's restart (``storage/sqlite_checkpoints.py``) under attack: a
failed batch before the writer's checkpoint, another connection pinning the
WAL and letting go, a full disk, a kill -9 with a wrap due, stop() with one
due. Real SQLite files; the checkpoint thread's passes are waited on, never
slept for. ``WRAP_PAGES`` is made small (250 pages, 1 MB) so that a few
megabytes of items restart the WAL many times."""

import os
import sqlite3
import struct
import subprocess
import sys
import textwrap

from twisted.internet import defer, threads
from twisted.trial import unittest

from xep207.storage import sqlite as sqlite_module
from xep207.storage import sqlite_checkpoints
from xep207.storage.interface import StorageUnavailable
from xep207.storage.records import Item, Node, NodeConfig

from tests.peers import temp_dir
from tests.test_sqlite_writer import ROOT, Traced

S = "pubsub.example.org"
BIG = "x" * 2000


def wal_restarts(path: str) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time
    the WAL starts over from its beginning (0 for a new WAL file)."""
    with open(path + "-wal", "rb") as wal:
        header = wal.read(32)
    return struct.unpack(">I", header[12:16])[0] if len(header) == 32 else 0


def wal_size(path: str) -> int:
    return os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0


def count_items(path: str) -> tuple[str, int]:
    other = sqlite3.connect(path)
    try:
        return (other.execute("PRAGMA integrity_check").fetchone()[0],
                other.execute("SELECT count(*) FROM items").fetchone()[0])
    finally:
        other.close()


class WalRestart(unittest.TestCase):
    def setUp(self):
        self.patch(sqlite_checkpoints, "WRAP_PAGES", 250)
        self.patch(sqlite_checkpoints, "INTERVAL", 0.01)  # (passes are waited for: sooner)
        self.path = os.path.join(temp_dir(self), "wrap.sqlite")

    async def started(self, query="") -> Traced:
        storage = Traced("sqlite:///" + self.path + query)
        await storage.start()
        self.addCleanup(storage.stop)
        await storage.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        return storage

    async def turn(self, storage, turn: int, count: int = 100) -> None:
        """``count`` items of 2 KB (about 50 pages per 100), as one batch or a few."""
        await defer.gatherResults([storage.put_item(S, "n", Item(f"i{turn}-{i}", f"<p>{BIG}</p>", "x@example.org"),
                                                    10**6) for i in range(count)])

    async def after_a_pass(self, storage, turn: int) -> None:
        """A turn of writes, then a checkpoint pass that began after it."""
        storage.checkpoints.passed.clear()
        await self.turn(storage, turn)
        self.assertTrue(await threads.deferToThread(storage.checkpoints.passed.wait, 30))

    async def test_with_passes_keeping_up_the_wal_stays_near_wrap_pages(self):
        """Each turn followed by a pass: the WAL starts over within a turn or
        two of WRAP_PAGES, so its file never grows much beyond (1 MB)."""
        self.patch(sqlite_module, "WRITER_CHECKPOINT_PAGES", 10**6)
        storage = await self.started()
        largest = 0
        for turn in range(60):  # (12 MB of items)
            await self.after_a_pass(storage, turn)
            largest = max(largest, wal_size(self.path))
        self.assertGreaterEqual(wal_restarts(self.path), 5)
        self.assertLess(largest, 4 * 250 * 4120)

    async def test_a_failed_batch_then_the_writers_checkpoint(self):
        """A wrap is due when a batch fails: another connection (xep207ctl)
        holds the write lock past busy_timeout, with a row of its own not
        yet committed. The writer's checkpoint runs all the same, in no
        transaction (none is left open), neither waiting for the lock nor
        copying the other's row; both commits keep their rows, the file is
        sound, and the WAL starts over."""
        writer_in_transaction = []

        class AlwaysDue(sqlite_checkpoints.Checkpointer):
            """Every pass asks (so the batch that fails is followed by a checkpoint)."""

            wrap_due = property(lambda self: True, lambda self, value: None)

            def after_batch(self, connection):
                writer_in_transaction.append(connection.in_transaction)
                super().after_batch(connection)

        self.patch(sqlite_module, "Checkpointer", AlwaysDue)
        storage = await self.started("?busy_timeout=50")
        for turn in range(8):  # (past WRAP_PAGES)
            await self.turn(storage, turn)
        before = wal_restarts(self.path)
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO items (service, node, item_id, payload, publisher, published)"
                      " VALUES (?, 'n', 'ctl', '<p/>', 'y@example.org', 0)", (S,))
        storage.forget()
        await self.assertFailure(storage.put_item(S, "n", Item("refused", "<p/>", "x@example.org"), 10**6),
                                 StorageUnavailable)
        other.execute("COMMIT")
        await storage.put_item(S, "n", Item("fine", "<p/>", "x@example.org"), 10**6)
        # (the failed BEGIN, the writer's checkpoint, then the next batch in a transaction of its own;
        # the last turn's checkpoint may come first)
        failed = storage.statements.index("BEGIN IMMEDIATE")
        self.assertEqual(storage.statements[failed:failed + 3], ["BEGIN IMMEDIATE", "PRAGMA wal_checkpoint(PASSIVE)",
                                                                 "BEGIN IMMEDIATE"])
        self.assertEqual(set(writer_in_transaction), {False})
        self.assertEqual(count_items(self.path), ("ok", 802))
        for n in range(20):  # (the next write after a checkpoint that copied everything: the thread's may race it)
            await storage.put_item(S, "n", Item(f"again{n}", "<p/>", "x@example.org"), 10**6)
            if wal_restarts(self.path) > before:
                break
        self.assertGreater(wal_restarts(self.path), before)

    async def test_a_reader_that_pins_the_wal_then_lets_go(self):
        """A read transaction held by another connection (xep207ctl, the
        sqlite3 shell, a backup) keeps every checkpoint from copying past it:
        the WAL grows, as SQLite's does. Once it lets go, the WAL starts over,
        and its file shrinks back rather than staying at its largest
        (``journal_size_limit``), so the disk the reader cost is given back."""
        self.patch(sqlite_module, "WAL_SIZE_LIMIT", 2 * 250 * 4120)
        storage = await self.started()
        await self.after_a_pass(storage, 0)
        reader = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(reader.close)
        reader.execute("BEGIN")
        self.assertEqual(reader.execute("SELECT count(*) FROM items").fetchone()[0], 100)
        for turn in range(1, 4):  # (a reader of the database file alone lets one restart by: the WAL was all copied)
            await self.after_a_pass(storage, turn)
        pinned = wal_restarts(self.path)
        for turn in range(4, 40):  # (7 MB)
            await self.after_a_pass(storage, turn)
        self.assertEqual(wal_restarts(self.path), pinned)  # (it could not start over)
        self.assertGreater(wal_size(self.path), 6 * 250 * 4120)
        self.assertEqual(reader.execute("SELECT count(*) FROM items").fetchone()[0], 100)  # (its snapshot)
        reader.execute("COMMIT")
        for turn in range(40, 60):
            await self.after_a_pass(storage, turn)
            if wal_restarts(self.path) > pinned + 1:
                break
        self.assertGreater(wal_restarts(self.path), pinned)
        self.assertLessEqual(wal_size(self.path), 2 * 250 * 4120 + 2 * 200 * 4120)
        self.assertEqual(count_items(self.path)[0], "ok")

    async def test_stopped_with_a_wrap_due(self):
        """stop() between a pass that asked for a wrap and the writer's next
        batch: the last connection's close copies the rest, removes the WAL,
        and loses nothing."""
        storage = await self.started()
        for turn in range(8):
            await self.turn(storage, turn)
        storage.checkpoints.wrap_due = True
        last = storage.put_item(S, "n", Item("last", "<p/>", "x@example.org"), 10**6)
        await storage.stop()
        await last
        self.assertFalse(os.path.exists(self.path + "-wal"))
        self.assertEqual(count_items(self.path), ("ok", 801))


class WalRestartCrash(unittest.TestCase):
    """A child process with a small WRAP_PAGES, killed -9 (or filling its disk)."""

    def child(self, body: str, killed: bool = True) -> str:
        script = textwrap.dedent("""
            import os, signal, resource
            from twisted.internet import reactor, defer, threads
            from twisted.python import log
            from xep207.storage import sqlite_checkpoints
            sqlite_checkpoints.WRAP_PAGES = 250
            sqlite_checkpoints.INTERVAL = 0.01
            sqlite_checkpoints.WAL_SIZE_LIMIT = 2 * 250 * 4120
            from xep207.storage.sqlite import SQLiteStorage
            from xep207.storage.records import Item
            BIG = "x" * 2000

            async def main():
            {body}

            def run():
                d = defer.ensureDeferred(main())
                d.addErrback(lambda f: (print("FAILED", f.getTraceback(), flush=True), os._exit(3)))
                d.addCallback(lambda _: reactor.stop())

            reactor.callWhenRunning(run)
            reactor.run()
        """).format(body=textwrap.indent(textwrap.dedent(body), "    "))
        child = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=ROOT),
                               capture_output=True, text=True, timeout=120)
        self.assertEqual(child.returncode, -9 if killed else 0, child.stdout + child.stderr)
        return child.stdout

    def test_killed_after_many_restarts_with_a_wrap_due(self):
        """Killed -9 right after the writer's checkpoint (a wrap was due) and
        after many restarts, in every synchronous mode: every answered item
        is there and the file is sound."""
        for mode in ("NORMAL", "FULL", "OFF"):
            path = os.path.join(temp_dir(self), f"crash-{mode}.sqlite")
            self.child(f"""
                storage = SQLiteStorage("sqlite:///{path}?synchronous={mode}")
                await storage.start()
                for turn in range(40):  # (8 MB: WRAP_PAGES many times over)
                    storage.checkpoints.passed.clear()
                    await defer.gatherResults([storage.put_item("svc", "node", Item(f"{{turn}}-{{i}}", f"<p>{{BIG}}</p>", "x@y"), 10**6)
                                               for i in range(100)])
                    await threads.deferToThread(storage.checkpoints.passed.wait, 30)
                storage.checkpoints.wrap_due = True
                await storage.put_item("svc", "node", Item("last", "<p/>", "x@y"), 10**6)
                storage.put_item("svc", "node", Item("unanswered", "<p/>", "x@y"), 10**6)
                os.kill(os.getpid(), signal.SIGKILL)
            """)
            self.assertIn(count_items(path), [("ok", 4001), ("ok", 4002)], mode)

    def test_a_full_disk_while_checkpoints_run(self):
        """The disk fills (here the file size limit): the checkpoints, the
        writer's included, fail and the WAL keeps what they could not copy;
        commits fail once the WAL cannot grow either. Room again: writes go
        on, the WAL starts over, nothing answered is lost, the file is sound."""
        path = os.path.join(temp_dir(self), "full.sqlite")
        out = self.child(f"""
            failed = []
            log.addObserver(lambda e: failed.append(e) if "failed" in log.textFromEventDict(e) else None)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (EFBIG, as ENOSPC would be an error)
            storage = SQLiteStorage("sqlite:///{path}")
            await storage.start()
            answered = 0

            async def turn(name):
                nonlocal answered
                results = await defer.DeferredList([storage.put_item("svc", "node", Item(f"{{name}}-{{i}}", f"<p>{{BIG}}</p>", "x@y"), 10**6)
                                                    for i in range(100)], consumeErrors=True)
                answered += sum(1 for ok, _ in results if ok)
                return all(ok for ok, _ in results)

            for n in range(20):  # (4 MB in the database file)
                storage.checkpoints.passed.clear()
                await turn(f"a{{n}}")
                await threads.deferToThread(storage.checkpoints.passed.wait, 30)
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize("{path}") + 8192, hard))
            refused = False
            for n in range(200):  # until a commit fails: the WAL is as large as the database
                storage.checkpoints.wrap_due = True  # (the writer's checkpoint is tried after each batch)
                storage.checkpoints.passed.clear()
                if not await turn(f"b{{n}}"):
                    refused = True
                    break
                await threads.deferToThread(storage.checkpoints.passed.wait, 30)
            print("refused", refused)
            print("checkpoint failures", sum(1 for e in failed if "checkpoint" in log.textFromEventDict(e)))
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            for n in range(30):
                storage.checkpoints.passed.clear()
                assert await turn(f"c{{n}}"), "writes go on"
                await threads.deferToThread(storage.checkpoints.passed.wait, 30)
            print("wal", os.path.getsize("{path}-wal"))
            with open("{path}-wal", "rb") as wal:
                print("restarts", int.from_bytes(wal.read(16)[12:], "big"))
            print("answered", answered)
            await storage.stop()
        """, killed=False)
        lines = dict(line.rsplit(" ", 1) for line in out.splitlines())
        self.assertEqual(lines["refused"], "True")
        self.assertGreater(int(lines["checkpoint failures"]), 0)
        self.assertGreater(int(lines["restarts"]), 0)
        self.assertLessEqual(int(lines["wal"]), 2 * 250 * 4120 + 2 * 200 * 4120)
        self.assertEqual(count_items(path), ("ok", int(lines["answered"])))


class CheckpointThreadGone(unittest.TestCase):
    async def test_a_checkpoint_thread_that_cannot_open_the_file(self):
        """The thread started but could not open its connection (a process at
        its file limit): the writer checkpoints as SQLite does alone (every
        ``WRITER_CHECKPOINT_PAGES_ALONE``), not only at the net of twice
        WRAP_PAGES, which copied 128 MB inside one COMMIT."""
        self.patch(sqlite_module, "WRITER_CHECKPOINT_PAGES", 10**6)  # (the net out of reach)

        class CannotOpen(sqlite_checkpoints.Checkpointer):
            def __init__(self, path):
                super().__init__(os.path.join(path + ".missing", "no.sqlite"))

        self.patch(sqlite_module, "Checkpointer", CannotOpen)
        path = os.path.join(temp_dir(self), "alone.sqlite")
        storage = Traced("sqlite:///" + path)
        await storage.start()
        self.addCleanup(storage.stop)
        await storage.create_node(Node(S, "n", NodeConfig(), "o@example.org"))
        await threads.deferToThread(storage.checkpoints._thread.join, 30)  # (it gave up)
        restarts = set()
        for turn in range(20):  # (4 MB: 1,000 pages four times over)
            await defer.gatherResults([storage.put_item(S, "n", Item(f"i{turn}-{i}", f"<p>{BIG}</p>", "x@example.org"),
                                                        10**6) for i in range(100)])
            restarts.add(wal_restarts(path))
        alone = f"PRAGMA wal_autocheckpoint={sqlite_checkpoints.WRITER_CHECKPOINT_PAGES_ALONE}"
        self.assertTrue(any(s == alone for s in storage.statements))
        self.assertGreaterEqual(len(restarts), 3)
