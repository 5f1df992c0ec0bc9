"""A one-to-one message reaches its online recipients once it is in storage's
queue, not once committed (issue 13: the commit was most of the latency), and
nothing else changes: delivery order is still the conversation's order through
either door, a recipient who is away still gets it from the store, and a store
that fails still bounces it to its sender.

The commit is held back for real: another connection to the SQLite file holds
its write lock (``BEGIN EXCLUSIVE``), so the writer's batch waits on it."""

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.doors_helpers import ALICE, BOB, PUBSUB, chat_body, error_of, pair
from tests.peers import temp_dir
from tests.server_helpers import AliceAndBobOnline, DOMAIN
from tests.sm_helpers import NS_SM, server_side_gone
from tests.test_storage_outage import condition, is_message

from xep207.storage.interface import StorageUnavailable
from xep207.storage.sqlite import SQLiteStorage

NODE = pair(ALICE, BOB)
COMPOSING = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
NS_BLOCKING = "urn:xmpp:blocking"


def native_publish(stanza_id: str, body: str, to: str = BOB, item_id: str | None = None) -> str:
    item = f"<item id='{item_id}'>" if item_id else "<item>"
    return (f"<iq type='set' id='{stanza_id}' to='{PUBSUB}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
            f"<publish node='{NODE}'>{item}<message xmlns='jabber:client' to='{to}'><body>{body}</body>"
            "</message></item></publish></pubsub></iq>")


def block(stanza_id: str, jid: str) -> str:
    return f"<iq type='set' id='{stanza_id}'><block xmlns='{NS_BLOCKING}'><item jid='{jid}'/></block></iq>"


async def ping(client, stanza_id: str) -> None:
    client.send(f"<iq type='get' id='{stanza_id}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await client.wait_for(lambda e: e.getAttribute("id") == stanza_id)


def bodies(client) -> list[str]:
    return [str(e.body) if e.body is not None else "(state)"
            for e in client.stanzas if e.name == "message" and e.getAttribute("type") != "error"]

class TwoTalkingOnSQLite(AliceAndBobOnline):
    """alice and bob online on a SQLite file whose commits a test can hold back."""

    storage = "sqlite"
    busy_timeout = 30000  # ms: the writer waits for the test's lock, however long it takes

    def storage_url(self):
        self.path = os.path.join(self.data_dir, "xep207.sqlite")
        return f"sqlite:///{self.path}?busy_timeout={self.busy_timeout}"

    async def setUp(self):
        await super().setUp()
        # The conversation exists and the second message took the remembered path.
        for body in ("one", "two"):
            self.alice.send(f"<message to='{BOB}' type='chat'><body>{body}</body></message>")
            await self.bob.wait_for(chat_body(body))

    def hold_commits(self) -> sqlite3.Connection:
        locker = sqlite3.connect(self.path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        self.addCleanup(locker.close)
        return locker

    @staticmethod
    def stored_in_file(locker: sqlite3.Connection, body: str) -> int:
        return locker.execute("SELECT COUNT(*) FROM items WHERE payload LIKE ?",
                              (f"%<body>{body}</body>%",)).fetchone()[0]

    async def bob_drops_and_comes_back(self):
        """bob's connection dies unannounced; his next session is available
        and alice's next message, "after", has reached it."""
        gone = server_side_gone(self.server, f"{BOB}/raw")
        self.bob.transport.abortConnection()
        await gone
        await self.server.quiesce()
        again = await self.connect()
        await again.login("bob")
        again.send("<presence/>")
        self.alice.send(f"<message to='{BOB}' type='chat'><body>after</body></message>")
        await again.wait_for(chat_body("after"))
        return again

    async def stored_bodies(self) -> list[str]:
        page = await self.server.storage.page_items(PUBSUB, NODE)  # (queued behind the writes)
        return [i.payload.split("<body>")[1].split("</body>")[0] for i in page.items if "<body>" in i.payload]


class EarlyDelivery(TwoTalkingOnSQLite):
    async def test_an_online_recipient_gets_the_message_before_its_commit(self):
        locker = self.hold_commits()
        self.alice.send(f"<message to='{BOB}' type='chat' id='e1'><body>early</body></message>")
        got = await self.bob.wait_for(chat_body("early"))
        self.assertEqual(self.stored_in_file(locker, "early"), 0, "delivered while its commit waits")
        # It carries its archive id all the same (XEP-0359), the one it is stored under.
        stanza_id = next(c for c in got.elements() if c.name == "stanza-id")["id"]
        locker.execute("ROLLBACK")
        self.assertEqual(await self.stored_bodies(), ["one", "two", "early"])
        page = await self.server.storage.page_items(PUBSUB, NODE)
        self.assertEqual(page.items[-1].item_id, stanza_id)
        self.assertEqual([e for e in self.alice.stanzas if e.getAttribute("type") == "error"], [])
        self.assertEqual(self.server.engine._notifying_late, {})  # (nothing left to wait for: no leak)

    async def test_a_message_never_overtakes_a_chat_state_waiting_for_the_one_before(self):
        """A chat state waits for the stored messages ahead of it (their
        commit); the message typed after it must not arrive first (the
        recipient would show "composing" under a message already there).
        (The same order through the pubsub door: ``test_publish_verdicts``,
        ``test_messages_through_both_doors_from_one_session_arrive_in_order``.)"""
        locker = self.hold_commits()
        self.alice.send(f"<message to='{BOB}' type='chat'><body>three</body></message>")
        await self.bob.wait_for(chat_body("three"))  # early: nothing ahead of it
        self.alice.send(f"<message to='{BOB}' type='chat' id='typing'>{COMPOSING}</message>")
        self.alice.send(f"<message to='{BOB}' type='chat'><body>four</body></message>")
        await ping(self.bob, "rt")
        self.assertEqual(bodies(self.bob), ["one", "two", "three"])
        locker.execute("ROLLBACK")
        await self.bob.wait_for(chat_body("four"))
        self.assertEqual(bodies(self.bob), ["one", "two", "three", "(state)", "four"])

    async def test_both_doors_and_both_directions_keep_the_conversations_order(self):
        """bob writes first (alice is not available: his message leaves her an
        offline mark, written after its commit), then alice sends a legacy
        message, a native publish and a legacy message: her legacy ones wait
        for that mark, and so must her native one, or it overtakes the legacy
        one stored before it. bob sees hers in the order stored."""
        native = native_publish("native", "n")
        await ping(self.alice, "known")
        await ping(self.bob, "known")
        locker = self.hold_commits()
        self.bob.send(f"<message to='{ALICE}' type='chat'><body>b1</body></message>")
        await ping(self.bob, "b1")  # (in storage's queue first)
        self.alice.send(f"<message to='{BOB}' type='chat'><body>l1</body></message>" + native
                        + f"<message to='{BOB}' type='chat'><body>l2</body></message>")
        await ping(self.alice, "sent")
        locker.execute("ROLLBACK")
        await self.bob.wait_for(chat_body("l2"))
        await self.alice.wait_for(lambda e: e.getAttribute("id") == "native")
        self.assertEqual(bodies(self.bob), ["one", "two", "l1", "n", "l2"])
        self.assertEqual(await self.stored_bodies(), ["one", "two", "b1", "l1", "n", "l2"])

    def when_put(self, node_id: str) -> defer.Deferred:
        """Fires once a publish to ``node_id`` is in storage's queue."""
        storage = self.server.engine.storage
        real = storage.put_item
        issued: defer.Deferred = defer.Deferred()

        def put_item(service, node, item, max_items=None):
            d = real(service, node, item, max_items)
            if node == node_id and not issued.called:
                issued.callback(None)
            return d

        storage.put_item = put_item
        self.addCleanup(setattr, storage, "put_item", real)
        return issued

    async def test_a_recipient_coming_online_before_the_commit_gets_what_it_missed(self):
        """bob is away when alice's "m" reaches nobody (early: his offline
        message), and his initial presence is stored with it, behind bob's
        own "b0" to alice (away too: its offline mark is written first):
        his backlog must carry "m", not leave it waiting for his next session."""
        self.alice.send("<presence/>")
        await self.alice.wait_for(lambda e: e.name == "presence")
        for body in ("b1", "b2"):  # bob's verdict remembered, alice reading: no offline mark of hers
            self.bob.send(f"<message to='{ALICE}' type='chat'><body>{body}</body></message>")
            await self.alice.wait_for(chat_body(body))
        self.alice.send("<presence type='unavailable'/>")
        self.bob.send("<presence type='unavailable'/>")
        await ping(self.alice, "away")
        await ping(self.bob, "away")
        locker = self.hold_commits()
        self.bob.send(f"<message to='{ALICE}' type='chat'><body>b0</body></message>")
        await ping(self.bob, "b0")
        self.alice.send(f"<message to='{BOB}' type='chat'><body>m</body></message>")
        await ping(self.alice, "m")
        presence = self.when_put("presence")
        self.bob.send("<presence/>")
        await presence
        locker.execute("ROLLBACK")
        await self.bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{BOB}/raw")
        self.alice.send(f"<message to='{BOB}' type='chat'><body>next</body></message>")
        await self.bob.wait_for(chat_body("next"))
        self.assertEqual(bodies(self.bob)[-2:], ["m", "next"])

    async def test_messages_of_both_doors_never_acknowledged_wait_offline_in_order(self):
        """bob (XEP-0198) got alice's legacy message and then her native publish,
        in the order stored (the native one waited for its turn in the
        conversation, behind the legacy one still waiting for bob's "b1"), and
        dropped before acknowledging either: his offline mark goes back to the
        earliest one stored, and both come again, in that order."""
        native = native_publish("native", "n")
        self.bob.send(f"<enable xmlns='{NS_SM}' resume='false'/>")
        await self.bob.wait_for(lambda e: e.name == "enabled")
        await ping(self.alice, "known")
        await ping(self.bob, "known")
        locker = self.hold_commits()
        self.bob.send(f"<message to='{ALICE}' type='chat'><body>b1</body></message>")
        await ping(self.bob, "b1")  # (in storage's queue first)
        self.alice.send(f"<message to='{BOB}' type='chat'><body>l1</body></message>" + native)
        await ping(self.alice, "sent")
        locker.execute("ROLLBACK")
        await self.bob.wait_for(chat_body("l1"))
        await self.bob.wait_for(chat_body("n"))
        await self.alice.wait_for(lambda e: e.getAttribute("id") == "native")
        self.assertEqual(bodies(self.bob), ["one", "two", "l1", "n"])  # (the order stored)
        self.assertEqual(await self.stored_bodies(), ["one", "two", "b1", "l1", "n"])
        again = await self.bob_drops_and_comes_back()
        self.assertEqual(bodies(again), ["l1", "n", "after"])

    async def test_a_native_publish_is_judged_before_its_turn_and_again_in_it(self):
        """The conversation is held alone (bob's XEP-0198 window being
        stored, behind alice's "l1" whose commit waits). carol, a stranger,
        publishing to it natively is refused at once: she never waits in it,
        nor holds anyone up. alice's native publish, allowed, waits for its
        turn; bob blocks alice meanwhile: at its turn it is judged again and
        refused, as her legacy message behind it is (the legacy door judges
        a message once its turn came)."""
        carol = await self.connect()
        await carol.login("carol")
        self.bob.send(f"<enable xmlns='{NS_SM}' resume='false'/>")
        await self.bob.wait_for(lambda e: e.name == "enabled")
        self.bob.send(block("warm", f"nobody@{DOMAIN}"))  # (his block list exists: no read behind the lock)
        await self.bob.wait_for(lambda e: e.getAttribute("id") == "warm")
        for client in (self.alice, self.bob, carol):
            await ping(client, "known")
        locker = self.hold_commits()
        self.alice.send(f"<message to='{BOB}' type='chat'><body>l1</body></message>")
        await self.bob.wait_for(chat_body("l1"))  # early; his window's write waits for the conversation
        self.alice.send(native_publish("native", "n"))
        await ping(self.alice, "queued")
        lock = self.server.chat._locks[NODE]
        self.assertEqual(len(lock.waiting), 2, "bob's window, then alice's publish, wait for their turn")
        carol.send(native_publish("stranger", "from carol"))
        refused = await carol.wait_for(lambda e: e.getAttribute("id") == "stranger")
        self.assertEqual(error_of(refused)[0], "item-not-found")  # (as if the node did not exist)
        self.assertEqual(len(lock.waiting), 2, "carol took no place in the conversation")
        blocked = self.when_put("blocklist")
        self.bob.send(block("block", ALICE))
        await blocked
        self.alice.send(f"<message to='{BOB}' type='chat' id='l2'><body>l2</body></message>")
        locker.execute("ROLLBACK")
        reply = await self.alice.wait_for(lambda e: e.getAttribute("id") == "native")
        self.assertEqual(error_of(reply)[0], "service-unavailable")
        bounced = await self.alice.wait_for(is_message("l2"))
        self.assertEqual((bounced["type"], condition(bounced)), ("error", "service-unavailable"))
        await ping(self.bob, "after")
        self.assertEqual(bodies(self.bob), ["one", "two", "l1"])
        self.assertEqual(await self.stored_bodies(), ["one", "two", "l1"])
        self.assertEqual(self.server.chat._locks, {})

    async def test_two_parties_naming_one_item_id_at_once_never_replace_each_others_message(self):
        """alice and bob publish natively under the same item id at once: each
        one's check of whose item it would replace is read while the other's
        write is not issued yet (the reads wait behind the held commit). One
        is stored; the other is refused as an overwrite of the other party's
        message, as it is when it comes second (the pair kind's rule); it
        replaced the first one's message before."""
        await ping(self.alice, "known")
        await ping(self.bob, "known")
        locker = self.hold_commits()
        self.alice.send(native_publish("a", "alice's", to=BOB, item_id="same"))
        self.bob.send(native_publish("b", "bob's", to=ALICE, item_id="same"))
        await ping(self.alice, "sent")
        await ping(self.bob, "sent")
        locker.execute("ROLLBACK")
        replies = {"alice's": await self.alice.wait_for(lambda e: e.getAttribute("id") == "a"),
                   "bob's": await self.bob.wait_for(lambda e: e.getAttribute("id") == "b")}
        stored = [body for body, reply in replies.items() if reply["type"] == "result"]
        self.assertEqual(len(stored), 1, [r.toXml() for r in replies.values()])
        refused = next(reply for reply in replies.values() if reply["type"] == "error")
        self.assertEqual(error_of(refused)[0], "forbidden")
        self.assertEqual((await self.stored_bodies())[-1:], stored)
        winner, other = (self.alice, BOB) if stored == ["alice's"] else (self.bob, ALICE)
        page = await self.server.storage.page_items(PUBSUB, NODE)
        self.assertEqual(page.items[-1].publisher, winner.jid)
        winner.send(native_publish("again", "edited", to=other, item_id="same"))  # (one's own: replaced)
        self.assertEqual((await winner.wait_for(lambda e: e.getAttribute("id") == "again"))["type"], "result")
        self.assertEqual((await self.stored_bodies())[-1:], ["edited"])
        self.assertEqual(self.server.chat._locks, {})

    async def test_a_recipient_away_gets_it_from_the_store(self):
        """carol is offline: nothing is delivered early, her offline mark is
        written after the commit, and her next session gets the messages."""
        self.alice.send(f"<message to='carol@{DOMAIN}' type='chat'><body>c1</body></message>")
        self.alice.send(f"<message to='carol@{DOMAIN}' type='chat'><body>c2</body></message>")
        self.alice.send(f"<iq type='get' id='ping' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self.alice.wait_for(lambda e: e.getAttribute("id") == "ping")
        locker = self.hold_commits()
        self.alice.send(f"<message to='carol@{DOMAIN}' type='chat'><body>c3</body></message>")
        self.alice.send(f"<iq type='get' id='ping2' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self.alice.wait_for(lambda e: e.getAttribute("id") == "ping2")
        locker.execute("ROLLBACK")
        carol = await self.connect()
        await carol.login("carol")
        carol.send("<presence/>")
        await carol.wait_for(chat_body("c3"))
        self.assertEqual(bodies(carol), ["c1", "c2", "c3"])

    async def test_a_writer_behind_makes_messages_wait_for_their_commit_again(self):
        """While the writer thread cannot take all that is queued, delivery
        waits for the commit: senders who wait for their messages to arrive
        are held back by the store instead of filling its queue."""
        engine = self.server.engine
        issued = defer.Deferred()
        put_item = engine.storage.put_item

        def watched(*args):
            d = put_item(*args)
            if not issued.called:
                reactor.callLater(0, issued.callback, None)  # (after the engine's decision, made at once)
            return d

        engine.storage.put_item = watched
        engine._keeping_up = lambda: False  # what the writer says after a batch it could not empty
        locker = self.hold_commits()
        self.alice.send(f"<message to='{BOB}' type='chat'><body>waits</body></message>")
        await issued
        await ping(self.bob, "rt")  # (whatever was written to bob before is read by now)
        self.assertEqual(bodies(self.bob), ["one", "two"])
        locker.execute("ROLLBACK")
        await self.bob.wait_for(chat_body("waits"))

class WriterKeepingUp(unittest.TestCase):
    """``SQLStorage.keeping_up``: False while two batches' worth of operations
    wait for their answers (queued, or in a batch not yet committed)."""

    async def test_operations_waiting_for_answers_are_counted(self):
        path = os.path.join(temp_dir(self), "x.sqlite")
        storage = SQLiteStorage(f"sqlite:///{path}?busy_timeout=30000")
        storage.MAX_BATCH = 2
        await storage.start()
        self.addCleanup(storage.stop)
        locker = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(locker.close)
        locker.execute("BEGIN EXCLUSIVE")  # (the writer's next batch waits for it)
        waiting, seen = [], []
        for _ in range(5):
            seen.append(storage.keeping_up())
            waiting.append(storage._fetch("SELECT 1"))
        self.assertEqual(seen, [True, True, True, True, False])
        self.assertFalse(storage.keeping_up())
        locker.execute("ROLLBACK")
        await defer.gatherResults(waiting)
        self.assertTrue(storage.keeping_up())

    async def test_a_start_while_a_stop_is_under_way_waits_for_it(self):
        """The old writer thread reads the queue off the storage object: a
        start before it ended would hand it the new queue, leaving what it
        had queued unanswered (and counted as waiting for good)."""
        path = os.path.join(temp_dir(self), "x.sqlite")
        storage = SQLiteStorage(f"sqlite:///{path}?busy_timeout=30000")
        await storage.start()
        locker = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(locker.close)
        locker.execute("BEGIN EXCLUSIVE")  # (the writer's batch waits for it)
        first = storage._fetch("SELECT 1")
        await deferLater(reactor, 0, lambda: None)  # (the next one in another batch, queued behind)
        second = storage._fetch("SELECT 2")
        stopped = storage.stop()
        started = storage.start()
        locker.execute("ROLLBACK")
        await defer.gatherResults([first, second, stopped, started]).addTimeout(10, reactor)
        self.assertEqual(storage._issued, storage._answered)
        await storage.stop()


class EarlyDeliveryThenStoreFails(TwoTalkingOnSQLite):
    """The lock outlasts the writer's busy timeout: the store fails after the
    recipient got the message. The sender is told (nothing was kept: the
    archive and the sender's other devices lack it); the conversation goes on."""

    busy_timeout = 300

    async def test_the_sender_is_bounced_and_nothing_is_kept(self):
        locker = self.hold_commits()
        self.alice.send(f"<message to='{BOB}' type='chat' id='doomed'><body>doomed</body></message>")
        await self.bob.wait_for(chat_body("doomed"))  # at least once: it reached bob
        bounced = await self.alice.wait_for(is_message("doomed"), timeout=20)
        self.assertEqual((bounced["type"], condition(bounced)), ("error", "internal-server-error"))
        locker.execute("ROLLBACK")
        self.alice.send(f"<message to='{BOB}' type='chat'><body>after</body></message>")
        await self.bob.wait_for(chat_body("after"))
        self.assertEqual(await self.stored_bodies(), ["one", "two", "after"])
        self.assertEqual(self.server.engine._notifying_late, {})


    async def test_a_native_publish_whose_store_fails_gives_up_its_turn(self):
        """alice's native publish is refused by storage: she is answered with
        an error, not a result, bob never sees it, and its place in the
        conversation is given up: her next message goes through."""
        await ping(self.alice, "known")
        locker = self.hold_commits()
        self.alice.send(native_publish("doomed", "doomed"))
        reply = await self.alice.wait_for(lambda e: e.getAttribute("id") == "doomed", timeout=20)
        self.assertEqual(error_of(reply)[0], "internal-server-error")
        # One log line for storage trouble, as at the legacy door: no traceback logged as an error.
        self.assertEqual(self.flushLoggedErrors(StorageUnavailable), [])
        locker.execute("ROLLBACK")
        self.alice.send(f"<message to='{BOB}' type='chat'><body>after</body></message>")
        await self.bob.wait_for(chat_body("after"))
        self.assertEqual(bodies(self.bob), ["one", "two", "after"])
        self.assertEqual(await self.stored_bodies(), ["one", "two", "after"])
        self.assertEqual(self.server.chat._locks, {})
        self.assertEqual(self.server.engine._notifying_late, {})

    async def test_a_recipient_who_never_acknowledged_it_is_not_sent_the_whole_conversation_again(self):
        """bob (XEP-0198) drops before acknowledging a message whose store
        then failed: his offline mark must not move to an item that was never
        stored (from a mark the store does not know, a backlog is everything
        kept: "one" and "two" again)."""
        self.bob.send(f"<enable xmlns='{NS_SM}' resume='false'/>")
        await self.bob.wait_for(lambda e: e.name == "enabled")
        await ping(self.alice, "known")  # (alice's account read: nothing left to read behind the lock)
        locker = self.hold_commits()
        self.alice.send(f"<message to='{BOB}' type='chat' id='doomed'><body>doomed</body></message>")
        await self.bob.wait_for(chat_body("doomed"))  # never acknowledged
        await self.alice.wait_for(is_message("doomed"), timeout=20)  # bounced: not stored
        locker.execute("ROLLBACK")
        again = await self.bob_drops_and_comes_back()
        self.assertEqual(bodies(again), ["after"])
