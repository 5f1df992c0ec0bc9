"""Fan-out meets the block lists at once, whichever door changed them.

The delivery filter looks each event's senders' lists up once and each
recipient's own list once (``EventGate``); the engine decides subscribers
without a coroutine when neither side blocks anybody. These tests pin that
the cheap paths still apply every rule: a recipient's block, a sender's
block of one resource, the lists of uninvolved accounts, and a change made
through XEP-0191 or through XEP-0060 taking effect for the very next event.
They run on SQLite, where status changes hand off at the writer queue.
"""

from tests.doors_helpers import ALICE, BOB, CAROL, EVE, PUBSUB, event_on
from tests.test_blocking import NODE, NS_BLOCKING, BlockingTestCase


def status_from(jid: str, text: str):
    return lambda e: (e.name == "presence" and e.getAttribute("from") == jid and e.getAttribute("type") is None
                      and e.status is not None and str(e.status) == text)


def entry(text: str):
    return f"<entry xmlns='urn:bench'>{text}</entry>"


def has_entry(node: str, text: str):
    return lambda e: event_on(node)(e) and text in e.toXml()


class PresenceFanOut(BlockingTestCase):
    storage = "sqlite"

    async def test_a_senders_block_of_one_resource_spares_the_others(self):
        alice = await self.online("alice")
        phone = await self.online("bob", "phone")
        desk = await self.online("bob", "desk")
        await self.contacts(ALICE, BOB)
        # Through XEP-0060: alice's own block list node.
        self.assert_ok(await self.publish(alice, ALICE, NODE, f"<item xmlns='{NS_BLOCKING}' jid='{BOB}/phone'/>"))
        mark = len(phone.stanzas)
        alice.send("<presence><status>one</status></presence>")
        await desk.wait_for(status_from(alice.jid, "one"))
        await self.settle(alice, phone)
        self.nothing(phone, status_from(alice.jid, "one"), since=mark)
        # Through XEP-0191: unblocked, the very next change reaches the phone.
        self.assert_ok(await self.unblock(alice, f"{BOB}/phone"))
        alice.send("<presence><status>two</status></presence>")
        await phone.wait_for(status_from(alice.jid, "two"))
        await desk.wait_for(status_from(alice.jid, "two"))

    async def test_a_recipients_block_while_others_block_nobody_involved(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        carol = await self.online("carol")
        await self.contacts(ALICE, BOB)
        await self.contacts(ALICE, CAROL)
        self.assert_ok(await self.block(carol, EVE))  # a list that concerns nobody here
        # Through XEP-0191: bob blocks alice; carol, whose list does not name her, still hears.
        self.assert_ok(await self.block(bob, ALICE))
        mark = len(bob.stanzas)
        alice.send("<presence><status>one</status></presence>")
        await carol.wait_for(status_from(alice.jid, "one"))
        await self.settle(alice, bob)
        self.nothing(bob, status_from(alice.jid, "one"), since=mark)
        # Through XEP-0060: bob retracts the item; the next change reaches him.
        self.assert_ok(await self.retract(bob, BOB, NODE, ALICE))
        alice.send("<presence><status>two</status></presence>")
        await bob.wait_for(status_from(alice.jid, "two"))

    async def test_a_burst_of_changes_arrives_whole_and_in_order(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        await self.contacts(ALICE, BOB)
        for i in range(40):
            alice.send(f"<presence><status>{i}</status></presence>")
        await bob.wait_for(status_from(alice.jid, "39"))
        seen = [str(e.status) for e in bob.stanzas
                if e.name == "presence" and e.getAttribute("from") == alice.jid and e.status is not None]
        self.assertEqual(seen, [str(i) for i in range(40)])
        # Stored too: a new session of bob is told the last one.
        other = await self.online("bob", "other")
        await other.wait_for(status_from(alice.jid, "39"))


class PubSubFanOut(BlockingTestCase):
    storage = "sqlite"

    async def node_with(self, *subscribers):
        alice = await self.online("alice")
        self.assert_ok(await self.create(alice, PUBSUB, "news"))
        clients = []
        for user in subscribers:
            client = await self.online(user)
            self.assert_ok(await self.subscribe(client, PUBSUB, "news"))
            clients.append(client)
        return alice, clients

    async def test_a_subscriber_who_blocked_the_publisher(self):
        alice, (bob, carol) = await self.node_with("bob", "carol")
        # Through XEP-0191.
        self.assert_ok(await self.block(bob, ALICE))
        self.assert_ok(await self.publish(alice, PUBSUB, "news", entry("one")))
        await carol.wait_for(has_entry("news", "one"))
        await self.settle(alice, bob)
        self.nothing(bob, has_entry("news", "one"))
        # Through XEP-0060: the block list item retracted; the next item reaches bob.
        self.assert_ok(await self.retract(bob, BOB, NODE, ALICE))
        self.assert_ok(await self.publish(alice, PUBSUB, "news", entry("two")))
        await bob.wait_for(has_entry("news", "two"))

    async def test_a_publisher_who_blocked_a_subscriber(self):
        alice, (bob, carol) = await self.node_with("bob", "carol")
        # Through XEP-0060: alice's own block list node names carol's account.
        self.assert_ok(await self.publish(alice, ALICE, NODE, f"<item xmlns='{NS_BLOCKING}' jid='{CAROL}'/>"))
        self.assert_ok(await self.publish(alice, PUBSUB, "news", entry("one")))
        await bob.wait_for(has_entry("news", "one"))
        await self.settle(alice, carol)
        self.nothing(carol, has_entry("news", "one"))
        # Through XEP-0191: unblock-all; the next item reaches carol.
        self.assert_ok(await self.iq(alice, "set", None, f"<unblock xmlns='{NS_BLOCKING}'/>"))
        self.assert_ok(await self.publish(alice, PUBSUB, "news", entry("two")))
        await carol.wait_for(has_entry("news", "two"))
