"""A cluster attacked where two processes act at once (issue 15): one full
JID bound on two processes in the same instant, a room's nick taken through
both doors on two processes. Three processes, PostgreSQL, Redis
(``tests.cluster_helpers``); every client of a test on the next process."""

from __future__ import annotations

from twisted.internet import defer, reactor

from tests.doors_helpers import NS_PUBSUB
from tests.test_cluster import ClusterCase, is_message
from tests.server_helpers import DOMAIN


def presence_from(full, type=None):
    return lambda e: e.name == "presence" and e.getAttribute("from") == full and e.getAttribute("type") == type


class OneFullJidTwoProcesses(ClusterCase):
    async def authenticated(self, user: str):
        """A stream of ``user`` on the next process, authenticated, not bound."""
        client = await self.connect()
        await client.authenticate(user)
        return client

    async def test_binding_one_full_jid_on_two_processes_at_once_keeps_one(self):
        """RFC 6120 §7.7.2.2 exactly once: each process's mirror showed nobody
        with that name, so both kept their session (two sessions of one full
        JID in the cluster, each process routing to its own)."""
        for round in range(3):
            first, second = await self.authenticated("bob"), await self.authenticated("bob")
            self._next += 1  # the next round on another pair of processes
            full = f"bob@{DOMAIN}/same{round}"
            for client in (first, second):  # the two binds leave together
                client.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                            f"<resource>same{round}</resource></bind></iq>")
            for client in (first, second):
                await client.expect("</bind></iq>")
            # One of them is told conflict and closed; the other stays, and is where the cluster routes.
            closing = defer.DeferredList([first.closed, second.closed], fireOnOneCallback=True)
            index = (await closing.addTimeout(10, reactor))[1]
            loser, winner = (first, second) if index == 0 else (second, first)
            self.assertIn(b"conflict", loser.received)
            holders = [s for s in self.servers if full in {x.full for r in s.router.sessions.values()
                                                          for x in r.values()}]
            self.assertEqual(len(holders), 1, full)
            self.assertTrue(winner.transport.connected)
            winner.start_parsing(winner.received[winner._cursor:])
            alice = await self.online("alice", f"a{round}")
            alice.send(f"<message to='{full}' type='chat'><body>to the one left {round}</body></message>")
            await winner.wait_for(is_message(f"to the one left {round}"))

    async def test_the_replaced_session_is_gone_before_the_new_one_speaks(self):
        """As in one process: the older session's presence is retracted (and
        its rooms left) before the new binding's first stanza is handled. The
        old process's clean-up arrived after the new session's presence: it
        retracted the new one's presence item (item id = the resource), and
        contacts saw the new session go unavailable while it was online."""
        alice = await self.roster_ready("alice", "a")  # the first process
        bob = await self.roster_ready("bob", "b")  # the second
        await self.befriend(alice, bob)
        full = bob.jid
        for round in range(3):
            since = len(alice.stanzas)
            again = await self.connect()  # the third process, then the second, the third
            await again.login("bob", resource="b")
            again.send("<presence/>")  # at once, as clients do
            await again.wait_for(presence_from(again.jid))
            self.assertIn(b"conflict", await bob.closed)
            await self.delivered(again, alice, f"after {round}")
            seen = [e.getAttribute("type") for e in alice.stanzas[since:]
                    if e.name == "presence" and e.getAttribute("from") == full]
            self.assertEqual(seen, ["unavailable", None])
            items = await self.servers[0].storage.get_items(f"bob@{DOMAIN}", "presence", ["b"])
            self.assertEqual([i.item_id for i in items], ["b"])
            bob = again
            if self._next % 3 == 0:
                self._next += 1  # (alice's process: any would do, but keep them apart)

    async def delivered(self, sender, receiver, body: str) -> None:
        """Whatever ``sender``'s process sent before has reached ``receiver``'s:
        once every process is quiet, a message after it on the same channel."""
        for server in self.servers:
            await server.quiesce()
        sender.send(f"<message to='{receiver.jid}' type='chat'><body>{body}</body></message>")
        await receiver.wait_for(is_message(body))

    async def befriend(self, alice, bob) -> None:
        alice.send(f"<presence to='bob@{DOMAIN}' type='subscribe'/>")
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe")
        bob.send(f"<presence to='alice@{DOMAIN}' type='subscribed'/>")
        await alice.wait_for(presence_from(bob.jid))


class LeavingProcesses(ClusterCase):
    """A process shut down cleanly while one-to-one messages cross."""

    async def test_a_message_unconfirmed_when_its_sender_stops_is_kept_offline_first(self):
        """The sender's process keeps an unconfirmed crossing offline at its
        reply timeout: a shutdown within that time left it neither confirmed
        nor kept (the process exits with the timer), and the recipient never
        got it. Now the shutdown waits for it."""
        from tests.test_cluster import AcknowledgedAcrossProcesses
        from xep207.cluster.registry import SessionInfo
        from xep207.pubsub.kinds import pair_node_id
        from xep207.pubsub.kinds.pair import OFFLINE_MARK

        alice = await self.online("alice", "a")  # the first process
        await AcknowledgedAcrossProcesses.mute_process(self, "mute")  # hears, never answers
        first = self.servers[0]
        first.cluster.directory.set("mute", f"bob@{DOMAIN}/b", SessionInfo(available=True))
        alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>as it stops</body></message>")
        await self.settle(alice)
        self.servers.remove(first)
        await first.top.stopService()
        self.server = self.servers[0]
        node_id = pair_node_id(f"alice@{DOMAIN}", f"bob@{DOMAIN}")
        subscription = await self.server.storage.get_subscription(f"pubsub.{DOMAIN}", node_id, f"bob@{DOMAIN}")
        self.assertIsNotNone(subscription.options.get(OFFLINE_MARK))
        bob = await self.online("bob", "b")
        await bob.wait_for(is_message("as it stops"))

    async def test_a_leaving_process_confirms_what_crosses_to_it(self):
        """A process that began stopping dropped a message crossing to it: its
        sender waited its whole reply timeout before keeping it offline."""
        alice = await self.online("alice", "a")  # the first process
        bob = await self.online("bob", "b")  # the second
        second = self.servers[1]
        second.cluster.stopping = True  # its shutdown has begun (it still hears its channel)
        try:
            alice.send(f"<message to='{bob.jid}' type='chat'><body>while it leaves</body></message>")
            await bob.wait_for(is_message("while it leaves"))
            started = self.servers[0].cluster.reactor.seconds()
            waiting = self.servers[0].cluster.routing.handled_elsewhere(f"chat:alice@{DOMAIN}:bob@{DOMAIN}")
            if waiting is not None:
                await waiting
            self.assertLess(self.servers[0].cluster.reactor.seconds() - started,
                            self.servers[0].cluster.link.reply_timeout)
            self.assertEqual(self.servers[0].cluster.stats["crossings-unanswered"], 0)
            self.assertEqual(self.servers[0].cluster.stats["crossings-handled"], 1)
        finally:
            second.cluster.stopping = False


class OneNickTwoDoors(ClusterCase):
    async def test_a_nick_taken_through_both_doors_at_once_goes_to_one(self):
        """XEP-0045 §7.2.9 across doors and processes: a legacy join on one
        process and an XEP-0060 subscribe with the same roomnick on another,
        at once. The join was handled at the room's home, the subscribe where
        it arrived; both read the occupants before either wrote, and both got
        the nick (1 room in 12 on the old code). Now XEP-0060 requests on a
        room's node go to its home and take turns with XEP-0045's."""
        from tests.test_groupchat import NS_MUC

        chat = f"chat.{DOMAIN}"
        owner = await self.online("carol", "c")  # the first process
        alice = await self.online("alice", "a")  # the second: the legacy door
        bob = await self.online("bob", "b")  # the third: the XEP-0060 door
        rooms = [f"race{i}" for i in range(16)]
        for name in rooms:
            room = f"{name}@{chat}"
            owner.send(f"<presence to='{room}/Owner'><x xmlns='{NS_MUC}'/></presence>")
            await owner.wait_for(presence_from(f"{room}/Owner"))
            self.assert_ok(await self.iq(owner, "set", room, f"<query xmlns='{NS_MUC}#owner'>"
                                                             "<x xmlns='jabber:x:data' type='submit'/></query>"))
        for name in rooms:  # every pair of requests at once
            alice.send(f"<presence to='{name}@{chat}/Same'><x xmlns='{NS_MUC}'/></presence>")
            bob.send(f"<iq type='set' to='{chat}' id='join-{name}'><pubsub xmlns='{NS_PUBSUB}'>"
                     f"<subscribe node='{name}' jid='{bob.jid}'/><options node='{name}' jid='{bob.jid}'>"
                     "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                     "<value>http://jabber.org/protocol/pubsub#subscribe_options</value></field>"
                     "<field var='roomnick'><value>Same</value></field></x></options></pubsub></iq>")
        for name in rooms:
            room = f"{name}@{chat}"
            native = await bob.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == f"join-{name}")
            legacy = await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{room}/Same"
                                          and (e.getAttribute("type") == "error" or "code='110'" in e.toXml()))
            admitted = [legacy.getAttribute("type") != "error", native["type"] == "result"]
            self.assertEqual(sorted(admitted), [False, True], (room, legacy.toXml(), native.toXml()))
            subscriptions = await self.server.storage.get_subscriptions(chat, name)
            nicks = [s.options.get("roomnick") for s in subscriptions if s.options.get("roomnick")]
            self.assertEqual(sorted(nicks), ["Owner", "Same"])

    async def test_native_requests_for_a_room_are_handled_at_its_home(self):
        bob = await self.online("bob", "b")
        here = next(s.cluster for s in self.servers if s.router.sessions.get(f"bob@{DOMAIN}"))
        elsewhere = next(n for n in (f"room{i}" for i in range(100)) if here.routing.home_of(n) != here.name)
        before = here.stats["room-stanzas-forwarded"]
        self.assert_ok(await self.subscribe(bob, f"chat.{DOMAIN}", elsewhere, options={"roomnick": "Bob"}))
        self.assert_ok(await self.set_options(bob, f"chat.{DOMAIN}", elsewhere, {"roomnick": "Robert"}))
        self.assertEqual(here.stats["room-stanzas-forwarded"] - before, 2)
        for server in self.servers:
            await server.quiesce()  # the room's announcements of those, at its home
