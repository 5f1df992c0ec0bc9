"""Stanzas the hot paths are done with are freed by reference counting, not
left as cycles for the garbage collector (issue 13: on one-to-one chat its
passes cost 25-50 µs a message). With the collector off, a weak reference
dies the moment the last strong one goes only if nothing is left in a cycle."""

import gc
import weakref

from twisted.trial import unittest
from twisted.words.xish import domish

from xep207.xmlutil import parse_stanza, release

MESSAGE = ("<message to='b@x' type='chat'><body>hi</body><html xmlns='http://jabber.org/protocol/xhtml-im'>"
           "<body xmlns='http://www.w3.org/1999/xhtml'><p>hi <b>there</b></p></body></html></message>")


class WithoutTheCollector(unittest.TestCase):
    def setUp(self):
        if gc.isenabled():
            gc.disable()
            self.addCleanup(gc.enable)

    def test_a_released_stanza_goes_with_its_last_reference(self):
        stanza = parse_stanza(MESSAGE)
        deepest = stanza.children[1].children[0].children[0].children[1]  # <b>
        self.assertEqual(deepest.name, "b")
        watched = [weakref.ref(stanza), weakref.ref(deepest)]
        release(stanza)
        self.assertIsNone(deepest.parent)
        del stanza, deepest
        self.assertEqual([w() for w in watched], [None, None])

    def test_without_release_it_would_wait_for_the_collector(self):
        stanza = parse_stanza(MESSAGE)
        watched = weakref.ref(stanza)
        del stanza
        self.assertIsNotNone(watched())  # (child-to-parent links: a cycle)
        gc.collect()
        self.assertIsNone(watched())

    def test_parse_stanza_leaves_no_parser_or_wrapper_behind(self):
        parsed = parse_stanza("<presence/>")  # no children: only the parser and the wrapper could hold it
        self.assertIsNone(parsed.parent)
        watched = weakref.ref(parsed)
        del parsed
        self.assertIsNone(watched())

    def test_release_keeps_the_tree_and_text(self):
        stanza = parse_stanza(MESSAGE)
        before = stanza.toXml()
        release(stanza)
        self.assertEqual(stanza.toXml(), before)
        built = domish.Element((None, "message"))
        built.addElement("body", content="x")
        release(built)
        self.assertEqual(built.toXml(), "<message><body>x</body></message>")


class ThroughTheServer(unittest.TestCase):
    """The real server (``InMemoryServer``), the collector off: each stanza a
    session sends is gone once handled, captured (chat with a body, room
    messages, broadcast presence) or only routed (receipts, chat states,
    directed presence: one per message a modern client sends)."""

    async def setUp(self):
        from xep207.testing import InMemoryServer

        self.harness = await InMemoryServer.start(accounts=["alice", "bob"])
        self.addCleanup(self.harness.stop)
        self.alice = await self.harness.login("alice", "a")
        self.bob = await self.harness.login("bob", "b")
        for session in (self.alice, self.bob):
            self.harness.send(session, "<presence/>")
        # A conversation under way: its pair node exists.
        self.harness.send(self.alice, "<message to='bob@localhost' type='chat'><body>first</body></message>")
        await self.harness.settle()
        if gc.isenabled():
            gc.disable()
            self.addCleanup(gc.enable)

    async def assert_freed(self, sender, xml: str, expected: str) -> None:
        before = {s: len(s.stream.written) for s in (self.alice, self.bob)}
        # As the c2s stream hands a stanza over (parsed, no parent, marked);
        # not ``harness.send``, whose parser keeps what it parsed until a collection.
        stanza = parse_stanza(xml)
        stanza.handled = True
        self.harness.router.route_from_session(sender.session, stanza)
        watched = [weakref.ref(stanza), *(weakref.ref(c) for c in stanza.elements())]
        del stanza
        await self.harness.settle()
        written = [x for s in (self.alice, self.bob) for x in s.stream.written[before[s]:]]
        self.assertTrue(any(expected in x for x in written), written)
        self.assertEqual([w() for w in watched], [None] * len(watched), xml)

    async def test_a_captured_chat_message(self):
        await self.assert_freed(self.alice, "<message to='bob@localhost' type='chat'><body>hi</body>"
                                            "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
                                "<body>hi</body>")

    async def test_a_broadcast_presence(self):
        await self.assert_freed(self.bob, "<presence><show>away</show><status>out</status></presence>",
                                "<status>out</status>")

    async def test_a_receipt(self):
        await self.assert_freed(self.bob, "<message to='alice@localhost/a' id='r1'>"
                                          "<received xmlns='urn:xmpp:receipts' id='m1'/></message>",
                                "urn:xmpp:receipts")

    async def test_a_chat_state_to_the_bare_jid(self):
        await self.assert_freed(self.alice, "<message to='bob@localhost' type='chat'>"
                                            "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
                                "<composing")

    async def test_a_directed_presence(self):
        await self.assert_freed(self.alice, "<presence to='bob@localhost/b'><status>only you</status></presence>",
                                "<status>only you</status>")

    async def test_a_message_kept_offline(self):
        """Kept for an account with no session: the push hook reads it too."""
        await self.harness.logout(self.bob)
        self.harness.send(self.alice, "<message to='bob@localhost' type='chat'><body>while away</body></message>")
        await self.harness.settle()
        gc.collect()
        stanza = parse_stanza("<message to='bob@localhost' type='chat'><body>still away</body></message>")
        stanza.handled = True
        watched = weakref.ref(stanza)
        self.harness.router.route_from_session(self.alice.session, stanza)
        del stanza
        await self.harness.settle()
        self.assertIsNone(watched())
        self.assertEqual(gc.collect(), 0)  # (nothing else the message made was left in a cycle)

    def cyclic_elements(self) -> list:
        """The Elements only the collector would free (kept alive: call once)."""
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found = [o for o in gc.garbage if isinstance(o, domish.Element)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        return found

    async def assert_answered_without_cycles(self, xml: str) -> None:
        gc.collect()  # (what the set-up left)
        stanza = parse_stanza(xml)
        stanza.handled = True
        watched = [weakref.ref(stanza), weakref.ref(stanza.firstChildElement())]
        before = len(self.alice.stream.written)
        self.harness.router.route_from_session(self.alice.session, stanza)
        del stanza
        await self.harness.settle()
        answer = [x for x in self.alice.stream.written[before:] if x.startswith("<iq")]
        self.assertIn("type='result'", answer[0])
        self.assertEqual([w() for w in watched], [None, None])
        self.assertEqual([e.toXml()[:100] for e in self.cyclic_elements()], [])

    async def test_a_publish_through_xep_0060_to_the_pair_node(self):
        """The other door: the request and its answer (wokkel parses the request
        by ``parent``, so it is let go of only once answered)."""
        from xep207.pubsub.kinds import pair_node_id

        node = pair_node_id("alice@localhost", "bob@localhost")
        await self.assert_answered_without_cycles(
            f"<iq type='set' to='pubsub.localhost' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
            f"<publish node='{node}'><item><message xmlns='jabber:client' to='bob@localhost' type='chat'>"
            f"<body>native</body></message></item></publish></pubsub></iq>")
        self.assertTrue(any("<body>native</body>" in x for x in self.bob.stream.written))

    async def test_a_pep_publish(self):
        await self.assert_answered_without_cycles(
            "<iq type='set' id='p2'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
            "<publish node='urn:xmpp:microblog:0'><item><entry xmlns='http://www.w3.org/2005/Atom'>"
            "<title>hi</title></entry></item></publish></pubsub></iq>")

    async def test_a_native_presence_publish(self):
        """XEP-0207 §3: presence through the other door."""
        await self.assert_answered_without_cycles(
            "<iq type='set' id='p3'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
            "<publish node='presence'><item id='a'><presence xmlns='jabber:client'><show>dnd</show>"
            "<status>native</status></presence></item></publish></pubsub></iq>")
        page = await self.harness.server.storage.page_items("alice@localhost", "presence")
        self.assertIn("<status>native</status>", page.items[0].payload)

    async def test_room_messages_through_both_doors(self):
        """XEP-0045 ``groupchat``, and a publish to the room node (the subject too)."""
        for xml in ("<presence to='room@chat.localhost/a'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
                    "<iq type='set' to='room@chat.localhost' id='cfg'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                    "<x xmlns='jabber:x:data' type='submit'/></query></iq>",
                    "<presence to='room@chat.localhost/b'><x xmlns='http://jabber.org/protocol/muc'/></presence>"):
            self.harness.send(self.bob if "/b'" in xml else self.alice, xml)
            await self.harness.settle()
        await self.assert_freed(self.alice, "<message to='room@chat.localhost' type='groupchat'><body>legacy</body>"
                                            "</message>", "<body>legacy</body>")
        await self.assert_answered_without_cycles(
            "<iq type='set' to='chat.localhost' id='r1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
            "<publish node='room'><item><message xmlns='jabber:client' type='groupchat'><body>native</body>"
            "</message></item></publish></pubsub></iq>")
        self.assertTrue(any("<body>native</body>" in x for x in self.bob.stream.written))
