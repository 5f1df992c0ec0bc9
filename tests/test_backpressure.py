"""Global backpressure (``xep207/server/backpressure.py``): while the storage
writer is behind, client streams stop being read; once it caught up they are
read again, and nothing they sent is lost or reordered.

The writer is held back for real, as in ``test_early_delivery``: another
connection to the SQLite file holds its write lock, so no batch commits and
every operation issued waits for its answer. The clients are raw sockets
that pipeline their messages (they never wait for one to arrive)."""

import os
import sqlite3
import time
import urllib.request

from twisted.internet import defer, protocol, reactor, task, threads
from twisted.python import log
from twisted.trial import unittest

from tests.doors_helpers import BOB, PUBSUB, chat_body, pair
from tests.peers import temp_dir
from tests.server_helpers import DOMAIN, plain_auth
from tests.sm_helpers import server_side_gone
from tests.test_early_delivery import TwoTalkingOnSQLite, bodies, ping
from tests.test_idle_tls import ZlibClient
from tests.web_helpers import connect_ws
from xep207.server.stream import HELD_BY_RATE, HELD_BY_STORAGE, PARSE_SLICE
from xep207.storage.postgresql import PostgreSQLStorage
from xep207.storage.sqlite import SQLiteStorage

FLOODERS = ("carol", "dave", "erin", "frank")


def chat(body: str) -> str:
    return f"<message to='{BOB}' type='chat'><body>{body}</body></message>"


async def until(condition, clock=None, step: float = 0, timeout: float = 20) -> None:
    """Reactor turns (with a test's ``clock``: advanced by ``step`` each turn)
    until ``condition()``: what the server does with bytes already sent, with
    no guess at how long that takes (``timeout``: seconds before giving up)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s")
        await task.deferLater(reactor, 0, lambda: clock is not None and clock.advance(step))


class Flooding(TwoTalkingOnSQLite):
    """alice and bob online on SQLite (commits held when a test says so), and
    ``flooder_names`` logged in, each already in a conversation with bob (the
    storage has nothing to create for their messages)."""

    users = ("alice", "bob", *FLOODERS)
    server_args = ("--no-tls", "--allow-plaintext-auth", "--c2s-rate", "0", "--metrics-port", "0")
    flooder_names = FLOODERS

    async def setUp(self):
        await super().setUp()
        self.storage = self.server.storage_backend
        self.gate = self.server.backpressure
        self.flooders = {}
        for user in self.flooder_names:
            self.flooders[user] = await self.talking_to_bob(user)
        await ping(self.bob, "known")
        self.backlog: list[bool] = []  # what the storage told its watchers, in order
        self.storage.watch_backlog(self.backlog.append)

    async def talking_to_bob(self, user: str):
        client = await self.connect()
        await client.login(user)
        client.send(chat(f"hello from {user}"))
        await self.bob.wait_for(chat_body(f"hello from {user}"))
        return client

    def stream_of(self, user: str):
        return self.server.router.session(f"{user}@{DOMAIN}/raw").stream

    def flood(self, count: int) -> None:
        """Each flooder writes ``count`` messages to bob at once."""
        for user, client in self.flooders.items():
            client.send("".join(chat(f"{user} {i}") for i in range(count)))

    async def newcomer_behind_a_flood(self):
        """Commits held, the flooders paused, and a new client's stream header
        read: (the lock, how many each flooder sent, the newcomer, paused too)."""
        locker = self.hold_commits()
        count = self.storage.backlog_marks()[0] // 2
        self.flood(count)
        await self.all_paused()
        newcomer = await self.connect()
        newcomer.header()
        await until(lambda: len(self.gate.paused) == len(FLOODERS) + 1)
        return locker, count, newcomer

    async def all_paused(self) -> None:
        await until(lambda: self.backlog == [True] and len(self.gate.paused) == len(self.flooders))

    async def stored(self, user: str) -> list[str]:
        page = await self.server.storage.page_items(PUBSUB, pair(f"{user}@{DOMAIN}", BOB))
        return [i.payload.split("<body>")[1].split("</body>")[0] for i in page.items if "<body>" in i.payload]

    async def everything_arrives(self, count: int) -> None:
        """Each flooder's ``count`` messages are delivered to bob and stored,
        in the order sent, and each flooder is read again (a ping answered)."""
        users = list(self.flooders)
        for user in users:
            await self.bob.wait_for(chat_body(f"{user} {count - 1}"), timeout=60)
        got = bodies(self.bob)
        for user in users:
            sent = [f"{user} {i}" for i in range(count)]
            self.assertEqual([b for b in got if b.startswith(user + " ")], sent)
            self.assertEqual(await self.stored(user), [f"hello from {user}", *sent])
            await ping(self.flooders[user], f"{user}-reads-again")
        self.assertEqual((self.gate.holding, self.gate.paused), (False, {}))
        self.assertEqual(self.backlog[-1:], [False])

    def transitions(self) -> list[str]:
        """The log's backpressure lines from now on, each up to its colon."""
        lines: list[str] = []

        def observe(event):
            text = " ".join(str(m) for m in event.get("message", ()))
            if text.startswith("storage writer"):
                lines.append(text.split(":")[0])

        log.addObserver(observe)
        self.addCleanup(log.removeObserver, observe)
        return lines

    async def scrape(self) -> dict:
        from prometheus_client.parser import text_string_to_metric_families

        def get():
            with urllib.request.urlopen(f"http://127.0.0.1:{self.server.metrics.port}/metrics",
                                        timeout=20) as response:
                return response.read().decode()

        text = await threads.deferToThread(get)
        return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
                if s.name.startswith("xep207_backpressure")}


class AFloodWaitsForTheWriter(Flooding):
    async def test_reading_stops_near_the_high_water_mark_and_everything_arrives_after(self):
        high, low = self.storage.backlog_marks()
        self.assertEqual((high, low), (4 * 256, 256))  # SQLite's batches: 256 operations
        count = high // 2  # (together, twice the high-water mark's messages: one operation each)
        lines = self.transitions()
        locker = self.hold_commits()
        self.flood(count)
        await self.all_paused()
        # Past the mark, the stream reading when it was crossed finishes its
        # slice (a read, parsed a slice at a time); no other is parsed.
        waiting = self.storage.waiting()
        self.assertGreaterEqual(waiting, high)
        self.assertLessEqual(waiting, high + PARSE_SLICE // len(chat("carol 0")))
        for user in FLOODERS:
            self.assertNotIn(self.stream_of(user).transport, reactor.getReaders())
            self.assertEqual(self.stream_of(user)._reading_held, HELD_BY_STORAGE)
        for _ in range(100):  # (whatever the reactor does meanwhile, nothing more is read)
            await task.deferLater(reactor, 0, lambda: None)
        self.assertEqual(self.storage.waiting(), waiting)
        # The metrics endpoint is no client stream: served meanwhile.
        self.assertEqual(await self.scrape(), {"xep207_backpressure_holding": 1,
                                               "xep207_backpressure_paused_streams": 4,
                                               "xep207_backpressure_pauses_total": 1})
        self.assertEqual(lines, ["storage writer behind"])
        locker.execute("ROLLBACK")
        await self.everything_arrives(count)
        self.assertGreaterEqual(self.gate.pauses, 1)
        # One line each way, however often the marks were crossed meanwhile (LogLines).
        self.assertEqual(lines, ["storage writer behind", "storage writer caught up"])

    async def test_a_client_paused_behind_the_flood_gets_its_turn_before_the_flood_is_through(self):
        """bob pings while the flooders wait: his stream is paused last; once
        the writer catches up the paused streams go in the order paused, each
        a slice, so his turn comes within a round, not after the flood."""
        count = 3 * self.storage.backlog_marks()[0] // 2  # (each: one and a half high-water marks)
        locker = self.hold_commits()
        self.flood(count)
        await self.all_paused()
        bob = self.stream_of("bob")
        self.bob.send(f"<iq type='get' id='turn' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await until(lambda: list(self.gate.paused)[-1:] == [bob])
        locker.execute("ROLLBACK")
        await self.bob.wait_for(lambda e: e.getAttribute("id") == "turn")
        delivered = sum(1 for body in bodies(self.bob) if body.split(" ")[0] in FLOODERS)
        self.assertLess(delivered, len(FLOODERS) * count // 2)
        await self.everything_arrives(count)

    async def test_a_connection_that_closes_while_paused_is_forgotten_once_read_again(self):
        """Its close is seen when it is read again (a socket not read says
        nothing); then it leaves the paused ones, and what it sent before
        is handled (RFC 6120 §10.1), in order. The others go on."""
        count = self.storage.backlog_marks()[0] // 2
        locker = self.hold_commits()
        self.flood(count)
        await self.all_paused()
        stream = self.stream_of("carol")
        gone = server_side_gone(self.server, f"carol@{DOMAIN}/raw")
        self.flooders.pop("carol").transport.abortConnection()
        locker.execute("ROLLBACK")
        await gone
        self.assertNotIn(stream, self.gate.paused)
        await self.everything_arrives(count)
        kept = (await self.stored("carol"))[1:]
        self.assertEqual(kept, [f"carol {i}" for i in range(len(kept))])

    async def test_a_client_connecting_meanwhile_waits_and_then_logs_in(self):
        locker, count, newcomer = await self.newcomer_behind_a_flood()
        self.assertNotIn(b"<stream:features", newcomer.received)
        locker.execute("ROLLBACK")
        await newcomer.expect("</stream:features>")
        newcomer.send(plain_auth("alice"))
        await newcomer.expect("<success")
        await self.everything_arrives(count)


class ACompressedFlood(Flooding):
    """XEP-0138: a read of a few KB inflates to many slices' worth, parsed a
    16 KB chunk at a time; past the mark, the rest waits between two chunks."""

    flooder_names = ()

    async def setUp(self):
        await super().setUp()
        client = await protocol.ClientCreator(reactor, ZlibClient).connectTCP("127.0.0.1", self.port)
        self.addCleanup(self._close, client)
        await client.authenticate("frank")
        await client.compress_and_bind("raw")
        client.send(chat("hello from frank"))
        await self.bob.wait_for(chat_body("hello from frank"))
        self.flooders["frank"] = client

    async def test_the_mark_crossed_while_inflating_holds_the_rest(self):
        self.assertTrue(self.stream_of("frank").compressed)
        high, _ = self.storage.backlog_marks()
        locker = self.hold_commits()
        behind = [self.storage.list_nodes(PUBSUB) for _ in range(high - 10)]  # (ten short of the mark)
        count = high // 2  # 37 KB inflated, from one read of a few KB
        self.flood(count)
        await self.all_paused()
        self.assertLessEqual(self.storage.waiting(), high + PARSE_SLICE // len(chat("frank 0")))
        locker.execute("ROLLBACK")
        await defer.gatherResults(behind)
        await self.everything_arrives(count)


class AnUnauthenticatedClientMeanwhile(Flooding):
    server_args = Flooding.server_args + ("--auth-timeout", "2")

    async def test_timed_out_while_paused_it_is_forgotten_at_once(self):
        """The server ends it (no session in time) while the storage is
        still behind: it leaves the paused ones then, not at the release."""
        locker, count, newcomer = await self.newcomer_behind_a_flood()
        self.assertIn(b"<connection-timeout", await newcomer.closed)
        await until(lambda: len(self.gate.paused) == len(FLOODERS))
        self.assertTrue(self.gate.holding)
        locker.execute("ROLLBACK")
        await self.everything_arrives(count)


class AWebSocketClientMeanwhile(Flooding):
    server_args = (*Flooding.server_args, "--http-port", "0", "--http-plain", "--http-interfaces", "127.0.0.1")

    async def test_its_messages_wait_whole_and_in_order(self):
        """RFC 7395: the same client stream, one element per message; what it
        sends while the storage is behind waits with its connection paused."""
        browser = await connect_ws(self, f"ws://127.0.0.1:{self.server.web.port}/xmpp-websocket")
        await browser.login("alice", resource="ws")
        stream = self.server.router.session(f"alice@{DOMAIN}/ws").stream
        locker = self.hold_commits()
        count = self.storage.backlog_marks()[0] // 2
        self.flood(count)
        await self.all_paused()
        for i in range(3):
            browser.send_text(f"<message xmlns='jabber:client' to='{BOB}' type='chat'>"
                              f"<body>ws {i}</body></message>")
        browser.send_text(f"<iq xmlns='jabber:client' type='get' id='ws-ping' to='{DOMAIN}'>"
                          "<ping xmlns='urn:xmpp:ping'/></iq>")
        await until(lambda: stream in self.gate.paused)
        self.assertNotIn("ws 0", bodies(self.bob))
        locker.execute("ROLLBACK")
        await browser.wait_for(lambda e: e.getAttribute("id") == "ws-ping")
        await self.everything_arrives(count)
        await self.bob.wait_for(chat_body("ws 2"))
        self.assertEqual([b for b in bodies(self.bob) if b.startswith("ws ")], ["ws 0", "ws 1", "ws 2"])


class ShaperAndStorage(Flooding):
    """One flooder over its shaping rate while the storage is behind: its
    socket is read again only once neither holds it, whichever lets go first.
    The shaper runs on the test's clock; the storage is put behind first by
    operations of its own (behind the lock), so the flood's first read meets both."""

    server_args = ("--no-tls", "--allow-plaintext-auth", "--c2s-rate", "100000", "--c2s-burst", "2000")
    flooder_names = ()
    COUNT = 400  # 28 KB: far over the burst

    async def setUp(self):
        await super().setUp()
        self.clock = task.Clock()
        self.server.client_factory.clock = self.clock  # (for connections from now on)
        self.flooders["carol"] = await self.talking_to_bob("carol")
        self.carol = self.stream_of("carol")

    async def held_by_both(self):
        locker = self.hold_commits()
        high, _ = self.storage.backlog_marks()
        self.behind = [self.storage.list_nodes(PUBSUB) for _ in range(high)]
        self.assertEqual(self.backlog, [True])
        self.flood(self.COUNT)
        await until(lambda: self.carol._reading_held == HELD_BY_RATE | HELD_BY_STORAGE)
        self.assertNotIn(self.carol.transport, reactor.getReaders())
        return locker

    async def drain(self) -> None:
        await until(lambda: any(chat_body(f"carol {self.COUNT - 1}")(e) for e in self.bob.stanzas),
                    self.clock, step=0.5)
        for d in self.behind:
            await d
        await self.everything_arrives(self.COUNT)

    async def test_the_storage_catching_up_leaves_a_socket_over_its_rate_paused(self):
        locker = await self.held_by_both()
        locker.execute("ROLLBACK")
        # (the shaper's clock stands still meanwhile)
        await until(lambda: self.backlog[-1:] == [False] and not self.gate.paused)
        self.assertEqual(self.carol._reading_held, HELD_BY_RATE)
        self.assertNotIn(self.carol.transport, reactor.getReaders())
        await self.drain()

    async def test_the_rate_refilled_leaves_a_socket_paused_while_the_storage_is_behind(self):
        locker = await self.held_by_both()
        self.clock.advance(60)  # the bucket is full again
        self.assertEqual(self.carol._reading_held, HELD_BY_STORAGE)
        self.assertNotIn(self.carol.transport, reactor.getReaders())
        locker.execute("ROLLBACK")
        await self.drain()


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


class LogLines(unittest.TestCase):
    """An operator reads one line when the writer falls behind and one when
    it catches up; under sustained overload (the marks crossed many times a
    second) not one pair per crossing."""

    def test_at_most_one_line_per_interval_and_how_often_since(self):
        from xep207.server.backpressure import LOG_INTERVAL, Backpressure

        clock = task.Clock()
        gate = Backpressure(clock)
        lines: list[str] = []
        observer = lambda event: lines.append(" ".join(str(m) for m in event.get("message", ())))  # noqa: E731
        log.addObserver(observer)
        self.addCleanup(log.removeObserver, observer)
        for _ in range(5):
            gate.storage_backlogged(True)
            clock.advance(0.1)
            gate.storage_backlogged(False)
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("behind", lines[0])
        self.assertIn("caught up", lines[1])
        clock.advance(LOG_INTERVAL)
        gate.storage_backlogged(True)
        self.assertEqual(len(lines), 3, lines)
        self.assertIn("and 4 more times", lines[2])
        self.assertEqual(gate.pauses, 6)

