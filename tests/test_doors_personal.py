"""Personal data as nodes, through both doors (raw stanzas): XEP-0049 private
storage, XEP-0048 ↔ XEP-0402 bookmarks (XEP-0411), XEP-0054 vCards, XEP-0084
avatars with XEP-0398 conversion and XEP-0153 presence hashes."""

from __future__ import annotations

import base64
import hashlib

from tests.doors_helpers import ALICE, NODE_CONFIG, DoorsTestCase, form

NS_PRIVATE = "jabber:iq:private"
BOOKMARKS = "urn:xmpp:bookmarks:1"
AVATAR_DATA = "urn:xmpp:avatar:data"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
IMAGE_B64 = base64.b64encode(IMAGE).decode()
IMAGE_SHA1 = hashlib.sha1(IMAGE).hexdigest()


def private(body: str) -> str:
    return f"<query xmlns='{NS_PRIVATE}'>{body}</query>"


def conference(name: str, autojoin: str = "true", nick: str = "") -> str:
    return (f"<conference xmlns='{BOOKMARKS}' name='{name}' autojoin='{autojoin}'>"
            + (f"<nick>{nick}</nick>" if nick else "") + "</conference>")


class PrivateStorage(DoorsTestCase):
    async def test_store_and_read_any_namespace_through_both_doors(self):
        alice = await self.online("alice")
        empty = self.assert_ok(await self.iq(alice, "get", None, private("<notes xmlns='storage:rosternotes'/>")))
        self.assertEqual(empty.query.toXml(), f"<query xmlns='{NS_PRIVATE}'>"
                                              "<notes xmlns='storage:rosternotes'/></query>")
        note = "<storage xmlns='storage:rosternotes'><note jid='bob@localhost'>tall</note></storage>"
        reply = self.assert_ok(await self.iq(alice, "set", None, private(note)))
        self.assertIsNone(reply.query)  # XEP-0049: an empty result
        got = self.assert_ok(await self.iq(alice, "get", ALICE, private("<storage xmlns='storage:rosternotes'/>")))
        self.assertIn(">tall</note>", got.query.toXml())
        # The same data is an item of the account's private node (the XEP-0060 door).
        items = self.assert_ok(await self.items(alice, ALICE, NS_PRIVATE))
        self.assertEqual(self.item_ids(items), ["storage:rosternotes"])
        # … and that door writes what the legacy one reads.
        self.assert_ok(await self.publish(alice, ALICE, NS_PRIVATE,
                                          "<prefs xmlns='urn:example:prefs'><colour>teal</colour></prefs>"))
        got = self.assert_ok(await self.iq(alice, "get", None, private("<prefs xmlns='urn:example:prefs'/>")))
        self.assertIn("<colour>teal</colour>", got.query.toXml())

    async def test_nobody_else_reads_writes_or_sees_it(self):
        alice, eve = await self.online("alice"), await self.online("eve")
        self.assert_ok(await self.iq(alice, "set", None, private("<secret xmlns='urn:example:s'>x</secret>")))
        self.assert_error(await self.iq(eve, "get", ALICE, private("<secret xmlns='urn:example:s'/>")), "forbidden")
        self.assert_error(await self.iq(eve, "set", ALICE, private("<secret xmlns='urn:example:s'>y</secret>")),
                          "forbidden")
        answers = await self.answers(eve, ALICE, NS_PRIVATE)
        self.assertEqual({v for v in answers.values()}, {("error", "item-not-found", None)}, answers)
        # Eve's own storage of the same namespace is hers, and empty.
        got = self.assert_ok(await self.iq(eve, "get", None, private("<secret xmlns='urn:example:s'/>")))
        self.assertEqual(got.query.toXml(), f"<query xmlns='{NS_PRIVATE}'><secret xmlns='urn:example:s'/></query>")
        got = self.assert_ok(await self.iq(alice, "get", None, private("<secret xmlns='urn:example:s'/>")))
        self.assertIn(">x</secret>", got.query.toXml())

    async def test_bad_requests(self):
        alice = await self.online("alice")
        self.assert_error(await self.iq(alice, "get", None, private("")), "bad-request")
        self.assert_error(await self.iq(alice, "set", None, private("<a xmlns='urn:a'/><b xmlns='urn:b'/>")),
                          "bad-request")
        for reserved in ("jabber:client", "jabber:iq:private", "jabber:server"):
            self.assert_error(await self.iq(alice, "set", None, private(f"<x xmlns='{reserved}'/>")),
                              "not-acceptable")
        self.assert_error(await self.iq(alice, "get", None, private("<x xmlns='jabber:client'/>")), "not-acceptable")
        # Through XEP-0060: the item id is the namespace, reserved ones refused too.
        self.assert_error(await self.publish(alice, ALICE, NS_PRIVATE, "<a xmlns='urn:a'/>", item_id="urn:b"),
                          "bad-request", "invalid-payload")
        self.assert_error(await self.publish(alice, ALICE, NS_PRIVATE, "<a xmlns='jabber:client'/>"),
                          "not-acceptable")
        big = "x" * (self.server.engine.max_payload_size + 1)
        self.assert_error(await self.iq(alice, "set", None, private(f"<big xmlns='urn:big'>{big}</big>")),
                          "not-acceptable")
        got = self.assert_ok(await self.iq(alice, "get", None, private("<big xmlns='urn:big'/>")))
        self.assertEqual(got.query.toXml(), f"<query xmlns='{NS_PRIVATE}'><big xmlns='urn:big'/></query>")


class Bookmarks(DoorsTestCase):
    async def test_xep0048_writes_are_xep0402_items_and_back(self):
        alice = await self.online("alice")
        storage = ("<storage xmlns='storage:bookmarks'>"
                   "<conference jid='Tea@chat.localhost' name='Tea' autojoin='true'><nick>al</nick></conference>"
                   "<conference jid='cake@chat.localhost' name='Cake'/>"
                   "<url name='home' url='https://example.org/'/></storage>")
        self.assert_ok(await self.iq(alice, "set", None, private(storage)))
        items = self.assert_ok(await self.items(alice, ALICE, BOOKMARKS))
        self.assertEqual(sorted(self.item_ids(items)), ["cake@chat.localhost", "tea@chat.localhost"])
        self.assertIn("<nick>al</nick>", items.toXml())
        # XEP-0402 → XEP-0048: a publish and a retraction show in the next read.
        self.assert_ok(await self.publish(alice, ALICE, BOOKMARKS, conference("Pie", "false"),
                                          item_id="pie@chat.localhost"))
        self.assert_ok(await self.retract(alice, ALICE, BOOKMARKS, "cake@chat.localhost"))
        got = self.assert_ok(await self.iq(alice, "get", None, private("<storage xmlns='storage:bookmarks'/>")))
        xml = got.query.toXml()
        self.assertIn("jid='tea@chat.localhost'", xml)
        self.assertIn("jid='pie@chat.localhost'", xml)
        self.assertNotIn("cake@", xml)
        self.assertIn("url='https://example.org/'", xml)  # what XEP-0402 cannot say is kept
        self.assertEqual(xml.count("<conference"), 2)
        # Removing a conference through XEP-0048 retracts its item, with the event.
        storage = ("<storage xmlns='storage:bookmarks'>"
                   "<conference jid='tea@chat.localhost' name='Tea' autojoin='true'><nick>al</nick></conference>"
                   "</storage>")
        self.assert_ok(await self.iq(alice, "set", None, private(storage)))
        items = self.assert_ok(await self.items(alice, ALICE, BOOKMARKS))
        self.assertEqual(self.item_ids(items), ["tea@chat.localhost"])
        # The private node keeps only the rest: conferences live in one place.
        rest = self.assert_ok(await self.items(alice, ALICE, NS_PRIVATE))
        self.assertNotIn("conference", rest.toXml())

    async def test_bookmarks_are_the_accounts_alone(self):
        alice, eve = await self.online("alice"), await self.online("eve")
        self.assert_ok(await self.publish(alice, ALICE, BOOKMARKS, conference("Tea"), item_id="tea@chat.localhost"))
        answers = await self.answers(eve, ALICE, BOOKMARKS)
        self.assertEqual({v for v in answers.values()}, {("error", "item-not-found", None)}, answers)
        # The owner may not open it up.
        configure = form(NODE_CONFIG, {"pubsub#access_model": "open"})
        self.assert_error(await self.pubsub(alice, "set", ALICE, f"<configure node='{BOOKMARKS}'>{configure}"
                                                                 "</configure>", owner=True), "not-acceptable")
        # XEP-0402's publish-options match; others are a precondition not met.
        self.assert_ok(await self.publish(alice, ALICE, BOOKMARKS, conference("Pie"), item_id="pie@chat.localhost",
                                          publish_options={"pubsub#persist_items": "true",
                                                           "pubsub#max_items": "max",
                                                           "pubsub#send_last_published_item": "never",
                                                           "pubsub#access_model": "whitelist"}))
        self.assert_error(await self.publish(alice, ALICE, BOOKMARKS, conference("Pie"), item_id="pie@chat.localhost",
                                             publish_options={"pubsub#access_model": "open"}),
                          "conflict", "precondition-not-met")

    async def test_bad_bookmarks(self):
        alice = await self.online("alice")
        for item_id in (None, "chat.localhost", "tea@chat.localhost/nick", "@@"):
            self.assert_error(await self.publish(alice, ALICE, BOOKMARKS, conference("T"), item_id=item_id),
                              "bad-request", "invalid-payload")
        self.assert_error(await self.publish(alice, ALICE, BOOKMARKS, "<conference xmlns='urn:wrong'/>",
                                             item_id="tea@chat.localhost"), "bad-request", "invalid-payload")
        self.assert_error(await self.publish(alice, ALICE, BOOKMARKS, conference("T", autojoin="maybe"),
                                             item_id="tea@chat.localhost"), "bad-request", "invalid-payload")
        for storage in ("<storage xmlns='storage:bookmarks'><conference name='no jid'/></storage>",
                        "<storage xmlns='storage:bookmarks'><conference jid='not a room'/></storage>"):
            self.assert_error(await self.iq(alice, "set", None, private(storage)), "bad-request")
        # Conferences are not smuggled into the private node through XEP-0060.
        self.assert_error(await self.publish(alice, ALICE, NS_PRIVATE,
                                             "<storage xmlns='storage:bookmarks'><conference jid='a@b'/></storage>"),
                          "bad-request", "invalid-payload")
        nothing = self.assert_ok(await self.iq(alice, "get", None, private("<storage xmlns='storage:bookmarks'/>")))
        self.assertNotIn("conference", nothing.toXml())
