"""Shared scaffolding for the XML-level pubsub tests."""

from twisted.internet import task
from twisted.trial import unittest

from xep207.pubsub.engine import PubSubEngine
from xep207.service import pubsub_handlers
from xep207.storage.memory import MemoryStorage
from xep207.testing.stanzas import StanzaHarness

SERVICE = "pubsub.shakespeare.lit"
NS = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS + "#owner"
NS_ERRORS = NS + "#errors"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
HAMLET = "hamlet@denmark.lit/elsinore"
ROMEO = "romeo@montague.lit/orchard"
JULIET = "juliet@capulet.lit/balcony"
IAGO = "iago@shakespeare.lit/pda"

ENTRY = ("<entry xmlns='http://www.w3.org/2005/Atom'><title>Soliloquy</title>"
         "<summary>To be, or not to be: that is the question</summary></entry>")


def form(namespace, fields, type="submit"):
    parts = [f"<field var='FORM_TYPE' type='hidden'><value>{namespace}</value></field>"]
    for var, value in fields.items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values)
                     + "</field>")
    return f"<x xmlns='jabber:x:data' type='{type}'>{''.join(parts)}</x>"


def node_config(**fields):
    return form(NS + "#node_config", {f"pubsub#{k}": v for k, v in fields.items()})


class PubSubTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.storage = self.make_storage()
        self.engine = PubSubEngine(self.storage, call_later=self.clock.callLater,
                                   max_payload_size=4096)
        self.harness = StanzaHarness(pubsub_handlers(self.engine))

    def make_storage(self):
        return MemoryStorage()

    def iq(self, sender, type, body, to=SERVICE):
        return self.harness.request(f"<iq type='{type}' from='{sender}' to='{to}'>{body}</iq>")

    def pubsub(self, sender, type, body, to=SERVICE, ns=NS):
        return self.iq(sender, type, f"<pubsub xmlns='{ns}'>{body}</pubsub>", to)

    def owner(self, sender, type, body, to=SERVICE):
        return self.pubsub(sender, type, body, to, NS_OWNER)

    def assert_result(self, reply):
        self.assertEqual(reply["type"], "result", reply.toXml())
        return reply

    def assert_error(self, reply, condition, pubsub_condition=None, error_type=None):
        self.assertEqual(reply["type"], "error", reply.toXml())
        error = reply.error
        conditions = [c.name for c in error.elements() if c.uri == NS_STANZAS]
        self.assertIn(condition, conditions, reply.toXml())
        if pubsub_condition:
            app = [c.name for c in error.elements() if c.uri == NS_ERRORS]
            self.assertEqual(app, [pubsub_condition], reply.toXml())
        if error_type:
            self.assertEqual(error["type"], error_type)
        return reply

    async def create(self, node="princely_musings", owner=HAMLET, config=""):
        configure = f"<configure>{config}</configure>" if config else ""
        return self.assert_result(
            await self.pubsub(owner, "set", f"<create node='{node}'/>{configure}"))

    async def publish(self, node="princely_musings", sender=HAMLET, item_id="ae890ac52d0df67ed7cfdf51b644e901",
                      payload=ENTRY, extra=""):
        id_attribute = f" id='{item_id}'" if item_id else ""
        return await self.pubsub(
            sender, "set", f"<publish node='{node}'><item{id_attribute}>{payload}</item></publish>{extra}")

    async def subscribe(self, subscriber, node="princely_musings", options=""):
        return await self.pubsub(
            subscriber, "set", f"<subscribe node='{node}' jid='{subscriber}'/>{options}")

    def flush(self):
        """Run what the engine scheduled for after the reply (last-item delivery)."""
        self.clock.advance(0)
