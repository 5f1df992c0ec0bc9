"""The wokkel shims: every wokkel module we use imports, and pubsub round-trips."""

import importlib

from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.jid import JID

import xep207  # noqa: F401  (installs the shims)
from xep207.testing.stanzas import parse

WOKKEL_MODULES = ["wokkel.pubsub", "wokkel.disco", "wokkel.data_form", "wokkel.component",
                  "wokkel.subprotocols", "wokkel.ping", "wokkel.generic", "wokkel.client",
                  "wokkel.xmppim", "wokkel.muc", "wokkel.delay", "wokkel.shim",
                  "wokkel.server", "wokkel.iwokkel"]


class WokkelImports(unittest.TestCase):
    def test_every_module_we_use_imports(self):
        for name in WOKKEL_MODULES:
            module = importlib.import_module(name)
            self.assertTrue(module.__name__ == name)

    def test_constants_come_from_constantly(self):
        from twisted.python.constants import ValueConstant, Values

        class Sample(Values):
            ONE = ValueConstant("1")

        self.assertEqual(Sample.lookupByValue("1"), Sample.ONE)


class PubSubRoundTrip(unittest.TestCase):
    def test_publish_request_round_trips(self):
        from wokkel.pubsub import Item, PubSubRequest

        request = PubSubRequest("publish")
        request.recipient = JID("pubsub.example.org")
        request.sender = JID("juliet@example.org/balcony")
        request.nodeIdentifier = "princely_musings"
        request.items = [Item("ae890ac52d0df67ed7cfdf51b644e901", parse(
            "<entry xmlns='http://www.w3.org/2005/Atom'><title>Soliloquy</title></entry>"))]
        xs = xmlstream.XmlStream(xmlstream.Authenticator())
        transport = StringTransport()
        xs.makeConnection(transport)
        request.send(xs)
        wire = transport.value().decode("utf-8")
        self.assertIn("princely_musings", wire)
        parsed = PubSubRequest.fromElement(parse(wire))
        self.assertEqual(parsed.verb, "publish")
        self.assertEqual(parsed.nodeIdentifier, "princely_musings")
        self.assertEqual(parsed.items[0]["id"], "ae890ac52d0df67ed7cfdf51b644e901")
        self.assertEqual(parsed.sender, JID("juliet@example.org/balcony"))
