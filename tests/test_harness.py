"""xep207.testing.InMemoryServer: the real server without sockets."""

from twisted.trial import unittest

from xep207.testing import InMemoryServer
from xep207.testing.harness import NoReply

NS_PUBSUB = "http://jabber.org/protocol/pubsub"


def chat_bodies(session):
    return [str(e.body) for e in session.received
            if e.name == "message" and e.getAttribute("type") == "chat" and e.body is not None]


class InMemoryServerTests(unittest.TestCase):
    async def setUp(self):
        self.harness = await InMemoryServer.start(accounts=["alice", "bob"])
        self.addCleanup(self.harness.stop)

    async def test_no_listener_is_bound(self):
        self.assertEqual([l for l in self.harness.server.listeners if l.running], [])
        self.assertIsNotNone(await self.harness.server.storage.get_account("alice@localhost"))

    async def test_iq_reply_and_unknown_account(self):
        alice = await self.harness.login("alice", resource="phone")
        reply = await self.harness.iq(alice, "<iq type='get'><query xmlns='jabber:iq:roster'/></iq>")
        self.assertEqual((reply["type"], reply["to"]), ("result", "alice@localhost/phone"))
        reply = await self.harness.iq(alice, "<iq type='get' to='nobody@localhost'>"
                                             "<query xmlns='jabber:iq:version'/></iq>")
        self.assertIn("service-unavailable", reply.toXml())
        with self.assertRaises(Exception):
            await self.harness.login("mallory")

    async def test_presence_and_chat_between_sessions(self):
        alice = await self.harness.login("alice", resource="phone")
        bob = await self.harness.login("bob", resource="desk")
        for session in (alice, bob):
            self.harness.send(session, "<presence/>")
        await self.harness.settle()
        self.harness.send(alice, "<message to='bob@localhost' type='chat'><body>hi bob</body></message>")
        await self.harness.settle()
        self.assertEqual(chat_bodies(bob), ["hi bob"])
        got = [e for e in bob.received if e.name == "message" and e.getAttribute("type") == "chat"][0]
        self.assertEqual(got["from"], "alice@localhost/phone")  # stamped by the router, not claimed
        self.assertEqual(chat_bodies(alice), [])

    async def test_spoofed_from_closes_the_stream_and_unbinds(self):
        alice = await self.harness.login("alice", resource="phone")
        self.harness.send(alice, "<message from='bob@localhost/x' to='alice@localhost'><body>x</body></message>")
        await self.harness.settle()
        self.assertEqual(alice.stream.error[0], "invalid-from")
        self.assertFalse(alice.connected)
        self.assertIsNone(self.harness.router.session("alice@localhost/phone"))

    async def test_pubsub_subscribe_gets_last_item_after_settle(self):
        """The engine sends the last item on a later reactor turn: settle waits for it."""
        alice = await self.harness.login("alice", resource="phone")
        reply = await self.harness.iq(alice, f"<iq type='set' to='pubsub.localhost'><pubsub xmlns='{NS_PUBSUB}'>"
                                             "<create node='news'/><configure><x xmlns='jabber:x:data' type='submit'>"
                                             "<field var='FORM_TYPE' type='hidden'>"
                                             f"<value>{NS_PUBSUB}#node_config</value></field>"
                                             "<field var='pubsub#send_last_published_item'><value>on_sub</value>"
                                             "</field></x></configure></pubsub></iq>")
        self.assertEqual(reply["type"], "result")
        reply = await self.harness.iq(alice, f"<iq type='set' to='pubsub.localhost'><pubsub xmlns='{NS_PUBSUB}'>"
                                             "<publish node='news'><item id='1'><entry xmlns='urn:x'>one</entry>"
                                             "</item></publish></pubsub></iq>")
        self.assertEqual(reply["type"], "result")
        bob = await self.harness.login("bob", resource="desk")
        self.harness.send(bob, "<presence/>")
        reply = await self.harness.iq(bob, f"<iq type='set' to='pubsub.localhost'><pubsub xmlns='{NS_PUBSUB}'>"
                                           "<subscribe node='news' jid='bob@localhost/desk'/></pubsub></iq>")
        self.assertEqual(reply["type"], "result")
        events = [e for e in bob.received if e.name == "message" and "urn:x" in e.toXml()]
        self.assertEqual(len(events), 1)

    async def test_delete_account_closes_its_sessions(self):
        bob = await self.harness.login("bob", resource="desk")
        await self.harness.delete_account("bob")
        self.assertEqual(bob.stream.error[0], "not-authorized")
        self.assertEqual(self.harness.router.resources("bob@localhost"), [])
        alice = await self.harness.login("alice")
        reply = await self.harness.iq(alice, "<iq type='get' to='bob@localhost'>"
                                             "<query xmlns='jabber:iq:version'/></iq>")
        self.assertIn("service-unavailable", reply.toXml())

    async def test_unanswered_iq_is_reported(self):
        alice = await self.harness.login("alice")
        # An iq result nobody asked for is (rightly) not answered.
        with self.assertRaises(NoReply):
            await self.harness.iq(alice, "<iq type='result' to='localhost' id='x'/>")


class SynchronousHarnessTests(unittest.SynchronousTestCase):
    """With a task.Clock, the memory-backed server runs without the reactor."""

    def test_round_trip_without_the_reactor(self):
        from twisted.internet.task import Clock

        from xep207.testing.harness import synchronously

        clock = Clock()
        harness = synchronously(InMemoryServer.start(accounts=["alice", "bob"], clock=clock))
        alice = synchronously(harness.login("alice"))
        bob = synchronously(harness.login("bob"))
        harness.send(bob, "<presence/>")
        reply = synchronously(harness.iq(alice, "<iq type='get' to='bob@localhost'>"
                                                "<query xmlns='jabber:iq:version'/></iq>"))
        self.assertEqual(reply["type"], "result")  # answered for the account, by the server
        harness.send(alice, "<message to='bob@localhost' type='chat'><body>sync</body></message>")
        synchronously(harness.settle())
        self.assertEqual(chat_bodies(bob), ["sync"])
        synchronously(harness.stop())
        self.assertEqual(clock.getDelayedCalls(), [])
