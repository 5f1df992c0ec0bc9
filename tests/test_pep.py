"""XEP-0163 on account JIDs: auto-create, presence-based access, +notify implicit delivery."""

from twisted.internet import task
from twisted.trial import unittest
from zope.interface import implementer

from tests.pubsub_helpers import NS
from xep207.pubsub.engine import PubSubEngine
from xep207.pubsub.events import IInterestDirectory
from xep207.service import pubsub_handlers
from xep207.storage.memory import MemoryStorage
from xep207.storage.records import Subscription
from xep207.testing.stanzas import StanzaHarness

JULIET = "juliet@capulet.lit"
ROMEO = "romeo@montague.lit"


@implementer(IInterestDirectory)
class Interests:
    """A fake session directory: who is online, and with which +notify."""

    def __init__(self):
        self.online = {}  # full JID -> set of node names

    def interested_resources(self, entities, node_id):
        return [jid for jid, nodes in sorted(self.online.items())
                if jid.split("/")[0] in entities and node_id in nodes]


class PersonalEventing(unittest.TestCase):
    def setUp(self):
        self.interests = Interests()
        self.storage = MemoryStorage()
        self.engine = PubSubEngine(self.storage, pep_domains=["capulet.lit", "montague.lit"],
                                   interest=self.interests, call_later=task.Clock().callLater)
        self.harness = StanzaHarness(pubsub_handlers(self.engine))

    def publish_tune(self, sender=f"{JULIET}/balcony", to=JULIET):
        return self.harness.request(
            f"<iq type='set' from='{sender}' to='{to}'><pubsub xmlns='{NS}'><publish node='http://jabber.org/protocol/tune'>"
            "<item><tune xmlns='http://jabber.org/protocol/tune'><artist>Yes</artist></tune></item>"
            "</publish></pubsub></iq>")

    async def test_auto_create_and_notify_interested_contacts_only(self):
        self.interests.online = {f"{ROMEO}/orchard": {"http://jabber.org/protocol/tune"},
                                 f"{ROMEO}/phone": set(),
                                 "nurse@capulet.lit/chamber": {"http://jabber.org/protocol/tune"},
                                 f"{JULIET}/garden": {"http://jabber.org/protocol/tune"}}
        await self.storage.set_subscription(Subscription(JULIET, "presence", ROMEO))  # Romeo sees Juliet
        reply = await self.publish_tune()
        self.assertEqual(reply["type"], "result")
        node = await self.storage.get_node(JULIET, "http://jabber.org/protocol/tune")
        self.assertEqual(node.config.access_model, "presence")  # XEP-0163 default
        note = await self.harness.next_message_to(f"{ROMEO}/orchard")
        self.assertEqual(note["from"], JULIET)
        self.assertIsNone(note.addresses)  # PEP names no publisher
        await self.harness.next_message_to(f"{JULIET}/garden")  # the owner's own +notify resource
        self.assertEqual(self.harness.messages_to(f"{ROMEO}/phone"), [])  # no +notify
        self.assertEqual(self.harness.messages_to("nurse@capulet.lit/chamber"), [])  # no presence subscription

    async def test_only_the_account_publishes_and_others_are_refused(self):
        reply = await self.publish_tune(sender=f"{ROMEO}/orchard")
        self.assertEqual(reply["type"], "error")
        self.assertIsNone(await self.storage.get_node(JULIET, "http://jabber.org/protocol/tune"))
        await self.publish_tune()
        reply = await self.harness.request(
            f"<iq type='get' from='nurse@capulet.lit/chamber' to='{JULIET}'><pubsub xmlns='{NS}'>"
            "<items node='http://jabber.org/protocol/tune'/></pubsub></iq>")
        self.assertIn("presence-subscription-required", reply.toXml())
        await self.storage.set_subscription(Subscription(JULIET, "presence", ROMEO))
        reply = await self.harness.request(
            f"<iq type='get' from='{ROMEO}/orchard' to='{JULIET}'><pubsub xmlns='{NS}'>"
            "<items node='http://jabber.org/protocol/tune'/></pubsub></iq>")
        self.assertIn("<artist>Yes</artist>", reply.toXml())

    async def test_presence_node_defaults_to_authorize(self):
        config = self.engine.default_node_config(JULIET, "presence")
        self.assertEqual(config.access_model, "authorize")
