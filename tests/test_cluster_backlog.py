"""An offline backlog in a cluster whose sender's process has not yet heard
of the recipient's initial presence (docs/cluster.md, "Known limits").

Three processes, PostgreSQL, Redis (``tests.cluster_helpers``); alice on
the first, bob on the second. The first process's mirror of who is online is
made to lag: what reaches it on the cluster's broadcast channel from bob's
availability on is held back, in order, until the test lets it through —
as a slow subscriber connection would deliver it."""

from __future__ import annotations

from twisted.internet import defer, reactor

from tests.server_helpers import DOMAIN
from tests.sm_helpers import NS_SM, STANZAS, bodies, body_of, enable
from tests.test_cluster import ClusterCase

PUBSUB = f"pubsub.{DOMAIN}"


def chat(to: str, text: str) -> str:
    return f"<message to='{to}' type='chat'><body>{text}</body></message>"


def received_count(client) -> int:
    """The client's XEP-0198 h: stanzas received since ``<enabled/>``."""
    counting, count = False, 0
    for element in client.stanzas:
        if element.uri == NS_SM and element.name == "enabled":
            counting = True
        elif counting and element.name in STANZAS and element.uri == "jabber:client":
            count += 1
    return count


class LaggingMirror:
    """The cluster broadcasts ``server`` hears, from the one that makes
    ``full`` available on, held back until ``release``."""

    def __init__(self, server, full: str) -> None:
        from xep207.cluster import codec
        from xep207.cluster.registry import SessionInfo

        self.link = server.cluster.link
        self.channel = server.cluster.keys.all
        self.deliver = self.link.on_message
        self.held: list[tuple[str, str]] = []
        self.registered: defer.Deferred = defer.Deferred()  # the availability, held
        self.more: defer.Deferred = defer.Deferred()  # anything after it, held

        def lagging(channel: str, text: str) -> None:
            if channel != self.channel:
                return self.deliver(channel, text)
            if not self.held:
                message = codec.loads(text)
                info = message.get("i")
                if not (message.get("t") == "s" and message.get("j") == full and info
                        and SessionInfo.loads(info).available):
                    return self.deliver(channel, text)
            self.held.append((channel, text))
            if len(self.held) <= 2:
                (self.registered if len(self.held) == 1 else self.more).callback(None)
            return None

        self.link.on_message = lagging

    def release(self) -> None:
        self.link.on_message = self.deliver
        for channel, text in self.held:
            self.deliver(channel, text)
        self.held = []


class BacklogWhileAMirrorLags(ClusterCase):
    async def test_a_message_sent_by_a_process_that_thinks_the_recipient_offline_is_not_lost(self):
        """Bob's initial presence is registered, and his backlog is under way
        (the XEP-0198 flush waits for his acknowledgement); alice's process,
        one message behind, still thinks bob offline and keeps her message
        offline: the mark is already set, so it stays. The backlog's end then
        cleared the mark past that message, which bob never got (it was only
        in the archive)."""
        from xep207.pubsub.kinds import pair_node_id
        from xep207.pubsub.kinds.pair import OFFLINE_MARK

        alice = await self.online("alice", "a")  # the first process
        await enable(alice, resume=False)
        for n in range(3):
            alice.send(chat(f"bob@{DOMAIN}", f"m{n}"))
        await self.acked(alice, 3)  # kept offline
        bob = await self.connect()  # the second process
        await bob.login("bob", resource="b")
        await enable(bob, resume=False)
        # Bob answers the server's <r/> only once the test says so.
        answering = False
        backlog_written: defer.Deferred = defer.Deferred()
        on_stanza = bob._parser.ElementEvent

        def stanza(element) -> None:
            on_stanza(element)
            if element.name == "message" and body_of(element) == "m2" and not backlog_written.called:
                backlog_written.callback(None)
            if answering and element.uri == NS_SM and element.name == "r":
                bob.send(f"<a xmlns='{NS_SM}' h='{received_count(bob)}'/>")

        bob._parser.ElementEvent = stanza
        lag = LaggingMirror(self.servers[0], bob.jid)
        self.addCleanup(lambda: lag.held and lag.release())
        bob.send("<presence/>")
        await lag.registered.addTimeout(10, reactor)  # registered in Redis; the first process has not applied it
        # Bob's process goes on: it writes the backlog, or waits for the first process first.
        await defer.DeferredList([backlog_written, lag.more], fireOnOneCallback=True).addTimeout(10, reactor)
        alice.send(chat(f"bob@{DOMAIN}", "mX"))
        await self.acked(alice, 4)  # handled where alice is: bob is offline there
        answering = True
        bob.send(f"<a xmlns='{NS_SM}' h='{received_count(bob)}'/>")  # the backlog may end now
        lag.release()
        await bob.wait_for(lambda e: e.name == "message" and body_of(e) == "m2")  # the backlog was read
        alice.send(chat(f"bob@{DOMAIN}", "mY"))  # live: after the backlog, which it waits for
        await bob.wait_for(lambda e: e.name == "message" and body_of(e) == "mY")
        self.assertEqual(bodies(bob), ["m0", "m1", "m2", "mX", "mY"])
        node_id = pair_node_id(f"alice@{DOMAIN}", f"bob@{DOMAIN}")
        subscription = await self.server.storage.get_subscription(PUBSUB, node_id, f"bob@{DOMAIN}")
        self.assertIsNone(subscription.options.get(OFFLINE_MARK))  # nothing left waiting (nor twice)

    async def acked(self, client, count: int) -> int:
        client.send(f"<r xmlns='{NS_SM}'/>")
        answer = await client.wait_for(lambda e: e.uri == NS_SM and e.name == "a"
                                       and int(e.getAttribute("h")) >= count)
        return int(answer["h"])

    async def test_a_first_message_kept_offline_meanwhile_comes_in_this_session(self):
        """The marks are read again once every process applied bob's
        availability: carol's first message to him, kept offline by her
        process (still one message behind) while bob's process waited, is in
        this backlog, not the next one's."""
        alice = await self.online("alice", "a")  # the first process
        await enable(alice, resume=False)
        alice.send(chat(f"bob@{DOMAIN}", "from alice"))
        await self.acked(alice, 1)  # kept offline: bob's next presence has a backlog
        bob = await self.connect()  # the second process
        await bob.login("bob", resource="b")
        self._next = 0
        carol = await self.online("carol", "c")  # the first process too
        await enable(carol, resume=False)
        lag = LaggingMirror(self.servers[0], bob.jid)
        self.addCleanup(lambda: lag.held and lag.release())
        bob.send("<presence/>")
        await lag.registered.addTimeout(10, reactor)
        await lag.more.addTimeout(10, reactor)  # bob's process waits for the first one
        carol.send(chat(f"bob@{DOMAIN}", "from carol"))
        await self.acked(carol, 1)  # kept offline there: bob is offline as far as it knows
        lag.release()
        await bob.wait_for(lambda e: e.name == "message" and body_of(e) == "from carol")
        self.assertEqual(sorted(bodies(bob)), ["from alice", "from carol"])
        self.assertIsNotNone(bob.stanzas[-1].delay)  # from the backlog, not routed live

    async def test_no_backlog_no_barrier(self):
        """An initial presence with nothing waiting costs no cluster round trip."""
        bob = await self.online("bob", "b")
        alice = await self.online("alice", "a")
        alice.send(chat(bob.jid, "live"))
        await bob.wait_for(lambda e: e.name == "message" and body_of(e) == "live")
        self.assertEqual(self.forwarded("invalidations-sent"), [0, 0, 0])

    async def test_a_session_that_ends_while_its_process_waits_keeps_its_backlog(self):
        """Bob leaves while his process waits for the others: nothing is
        written to the gone session, the marks stay, his next session gets
        everything once."""
        from tests.sm_helpers import server_side_gone

        alice = await self.online("alice", "a")  # the first process
        await enable(alice, resume=False)
        for n in range(3):
            alice.send(chat(f"bob@{DOMAIN}", f"m{n}"))
        await self.acked(alice, 3)
        bob = await self.connect()  # the second process
        await bob.login("bob", resource="b")
        lag = LaggingMirror(self.servers[0], bob.jid)
        self.addCleanup(lambda: lag.held and lag.release())
        bob.send("<presence/>")
        await lag.registered.addTimeout(10, reactor)
        await lag.more.addTimeout(10, reactor)  # bob's process waits for the first one
        gone = server_side_gone(self.servers[1], bob.jid)
        bob.transport.abortConnection()
        await gone
        lag.release()
        for server in self.servers:
            await server.quiesce()
        self._next = 1
        again = await self.online("bob", "b")  # the second process again
        await again.wait_for(lambda e: e.name == "message" and body_of(e) == "m2")
        self.assertEqual(bodies(bob), [])
        self.assertEqual(bodies(again), ["m0", "m1", "m2"])
