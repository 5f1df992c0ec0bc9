"""Personal data as nodes, through both doors (raw stanzas): XEP-0049 private
storage, XEP-0048 ↔ XEP-0402 bookmarks (XEP-0411), XEP-0054 vCards, XEP-0084
avatars with XEP-0398 conversion and XEP-0153 presence hashes."""

from __future__ import annotations

import base64
import hashlib

from tests.doors_helpers import ALICE, DOMAIN, EVE, NODE_CONFIG, NS_PUBSUB, DoorsTestCase, form

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


def vcard(body: str = "") -> str:
    return f"<vCard xmlns='vcard-temp'>{body}</vCard>"


def photo(data: str = IMAGE_B64, kind: str = "image/png") -> str:
    return f"<PHOTO><TYPE>{kind}</TYPE><BINVAL>{data}</BINVAL></PHOTO>"


class VCards(DoorsTestCase):
    async def test_get_and_set_through_both_doors(self):
        alice, bob = await self.online("alice"), await self.online("bob")
        own = self.assert_ok(await self.iq(alice, "get", None, vcard()))
        self.assertEqual(own.vCard.toXml(), "<vCard xmlns='vcard-temp'/>")  # none yet: empty
        self.assert_error(await self.iq(bob, "get", ALICE, vcard()), "item-not-found")
        self.assert_ok(await self.iq(alice, "set", None, vcard("<FN>Alice</FN>")))
        for reader, to in ((alice, None), (bob, ALICE), (alice, ALICE)):
            got = self.assert_ok(await self.iq(reader, "get", to, vcard()))
            self.assertIn("<FN>Alice</FN>", got.vCard.toXml())
        # The node door: anyone reads, only the account writes.
        items = self.assert_ok(await self.items(bob, ALICE, "vcard-temp"))
        self.assertEqual(self.item_ids(items), ["current"])
        self.assert_ok(await self.publish(alice, ALICE, "vcard-temp", vcard("<FN>Alice L.</FN>")))
        got = self.assert_ok(await self.iq(bob, "get", ALICE, vcard()))
        self.assertIn("<FN>Alice L.</FN>", got.vCard.toXml())
        # The server has its own, not for clients to write; a user who does not exist has none.
        server = self.assert_ok(await self.iq(alice, "get", DOMAIN, vcard()))
        self.assertEqual(str(server.vCard.FN), "xep207")
        self.assert_error(await self.iq(alice, "set", DOMAIN, vcard("<FN>Mine</FN>")), "forbidden")
        self.assert_error(await self.iq(alice, "get", f"nobody@{DOMAIN}", vcard()), "service-unavailable")

    async def test_nobody_writes_anothers_vcard(self):
        alice, eve = await self.online("alice"), await self.online("eve")
        self.assert_error(await self.iq(eve, "set", ALICE, vcard("<FN>Forged</FN>")), "forbidden")
        self.assert_error(await self.publish(eve, ALICE, "vcard-temp", vcard("<FN>Forged</FN>")), "forbidden")
        self.assert_ok(await self.iq(alice, "set", None, vcard("<FN>Alice</FN>")))
        self.assert_error(await self.iq(eve, "set", ALICE, vcard("<FN>Forged</FN>")), "forbidden")
        self.assert_error(await self.publish(eve, ALICE, "vcard-temp", vcard("<FN>Forged</FN>")), "forbidden")
        self.assert_error(await self.retract(eve, ALICE, "vcard-temp", "current"), "forbidden")
        got = self.assert_ok(await self.iq(eve, "get", ALICE, vcard()))
        self.assertIn("<FN>Alice</FN>", got.vCard.toXml())
        self.assertNotIn("Forged", got.toXml())

    async def test_the_owner_cannot_share_the_pen(self):
        alice, eve = await self.online("alice"), await self.online("eve")
        self.assert_ok(await self.iq(alice, "set", None, vcard("<FN>Alice</FN>")))
        for node in ("vcard-temp", BOOKMARKS, NS_PRIVATE):
            if node != "vcard-temp":
                self.assert_ok(await self.publish(alice, ALICE, node, conference("T") if node == BOOKMARKS
                                                  else "<a xmlns='urn:a'/>", item_id="t@chat.localhost"
                                                  if node == BOOKMARKS else None))
            reply = await self.pubsub(alice, "set", ALICE, f"<affiliations node='{node}'><affiliation "
                                                           f"jid='{EVE}' affiliation='publisher'/></affiliations>",
                                      owner=True)
            self.assert_error(reply, "not-acceptable")
        self.assert_error(await self.iq(eve, "set", ALICE, vcard("<FN>Forged</FN>")), "forbidden")
        configure = form(NODE_CONFIG, {"pubsub#publish_model": "open"})
        self.assert_error(await self.pubsub(alice, "set", ALICE, f"<configure node='vcard-temp'>{configure}"
                                                                 "</configure>", owner=True), "not-acceptable")

    async def test_bad_vcards(self):
        alice = await self.online("alice")
        big = "x" * self.server.engine.max_payload_size
        self.assert_error(await self.iq(alice, "set", None, vcard(f"<DESC>{big}</DESC>")), "not-acceptable")
        self.assert_error(await self.iq(alice, "set", None, vcard(photo("%%% not base64 %%%"))), "bad-request")
        self.assert_error(await self.publish(alice, ALICE, "vcard-temp", "<vCard xmlns='urn:wrong'/>"),
                          "bad-request", "invalid-payload")
        self.assert_error(await self.publish(alice, ALICE, "vcard-temp", vcard(), item_id="other"),
                          "bad-request", "invalid-payload")
        own = self.assert_ok(await self.iq(alice, "get", None, vcard()))
        self.assertEqual(own.vCard.toXml(), "<vCard xmlns='vcard-temp'/>")  # nothing was stored


class Avatars(DoorsTestCase):
    async def test_vcard_photo_becomes_an_avatar_and_a_presence_hash(self):
        alice = await self.online("alice")
        self.assert_ok(await self.iq(alice, "set", None, vcard("<FN>Alice</FN>" + photo())))
        metadata = self.assert_ok(await self.items(alice, ALICE, AVATAR_METADATA))
        self.assertEqual(self.item_ids(metadata), [IMAGE_SHA1])
        self.assertIn(f"bytes='{len(IMAGE)}'", metadata.toXml())
        data = self.assert_ok(await self.pubsub(alice, "get", ALICE,
                                                f"<items node='{AVATAR_DATA}'><item id='{IMAGE_SHA1}'/></items>"))
        self.assertIn(IMAGE_B64, data.toXml())
        # The next presence carries the hash, whatever the client said.
        alice.send("<presence><x xmlns='vcard-temp:x:update'><photo>bogus</photo></x></presence>")
        echo = await alice.wait_for(lambda e: e.name == "presence" and "bogus" not in e.toXml()
                                    and IMAGE_SHA1 in e.toXml())
        self.assertEqual(echo.x.uri, "vcard-temp:x:update")
        # The other door converts too: a vCard published as an item, a new photo.
        other = base64.b64encode(IMAGE[::-1]).decode()
        self.assert_ok(await self.publish(alice, ALICE, "vcard-temp", vcard(photo(other, "image/gif"))))
        await self.server.avatars.settled(ALICE)
        metadata = self.assert_ok(await self.items(alice, ALICE, AVATAR_METADATA))
        self.assertEqual(self.item_ids(metadata), [hashlib.sha1(IMAGE[::-1]).hexdigest()])
        self.assertIn("type='image/gif'", metadata.toXml())
        # A photo-less vCard disables the avatar: empty metadata.
        self.assert_ok(await self.iq(alice, "set", None, vcard("<FN>Alice</FN>")))
        metadata = self.assert_ok(await self.items(alice, ALICE, AVATAR_METADATA))
        self.assertNotIn("<info", metadata.toXml())

    async def test_avatar_becomes_the_vcard_photo(self):
        alice, bob = await self.online("alice"), await self.online("bob")
        self.assert_ok(await self.iq(alice, "set", None, vcard("<FN>Alice</FN>")))
        self.assert_ok(await self.publish(alice, ALICE, AVATAR_DATA, f"<data xmlns='{AVATAR_DATA}'>{IMAGE_B64}</data>",
                                          item_id=IMAGE_SHA1))
        alice.send(f"<iq type='set' id='meta'><pubsub xmlns='{NS_PUBSUB}'><publish node='{AVATAR_METADATA}'>"
                   f"<item id='{IMAGE_SHA1}'><metadata xmlns='{AVATAR_METADATA}'><info id='{IMAGE_SHA1}' "
                   f"bytes='{len(IMAGE)}' type='image/png'/></metadata></item></publish></pubsub></iq>")
        await alice.wait_for(lambda e: e.getAttribute("id") == "meta")
        await self.server.avatars.settled(ALICE)
        got = self.assert_ok(await self.iq(bob, "get", ALICE, vcard()))
        self.assertIn("<FN>Alice</FN>", got.toXml())
        self.assertIn(f"<BINVAL>{IMAGE_B64}</BINVAL>", got.toXml())
        self.assertIn("<TYPE>image/png</TYPE>", got.toXml())
        # What is not XEP-0084 metadata converts to nothing.
        self.assert_ok(await self.publish(alice, ALICE, AVATAR_METADATA, "<junk xmlns='urn:junk'/>"))
        await self.server.avatars.settled(ALICE)
        got = self.assert_ok(await self.iq(bob, "get", ALICE, vcard()))
        self.assertIn(f"<BINVAL>{IMAGE_B64}</BINVAL>", got.toXml())
        # Disabling the avatar (empty metadata) removes the photo.
        self.assert_ok(await self.publish(alice, ALICE, AVATAR_METADATA, f"<metadata xmlns='{AVATAR_METADATA}'/>"))
        await self.server.avatars.settled(ALICE)
        got = self.assert_ok(await self.iq(bob, "get", ALICE, vcard()))
        self.assertNotIn("PHOTO", got.toXml())
        self.assertIn("<FN>Alice</FN>", got.toXml())

    async def test_bad_avatar_data(self):
        alice = await self.online("alice")
        self.assert_error(await self.publish(alice, ALICE, AVATAR_DATA, f"<data xmlns='{AVATAR_DATA}'>{IMAGE_B64}</data>",
                                             item_id="0" * 40), "bad-request", "invalid-payload")
        self.assert_error(await self.publish(alice, ALICE, AVATAR_DATA, f"<data xmlns='{AVATAR_DATA}'>!!not!!</data>",
                                             item_id=IMAGE_SHA1), "bad-request", "invalid-payload")
        self.assert_error(await self.publish(alice, ALICE, AVATAR_DATA, "<data xmlns='urn:wrong'/>"),
                          "bad-request", "invalid-payload")
        eve = await self.online("eve")
        self.assert_error(await self.publish(eve, ALICE, AVATAR_DATA, f"<data xmlns='{AVATAR_DATA}'>{IMAGE_B64}</data>",
                                             item_id=IMAGE_SHA1), "forbidden")
        # Too big for an item, not for a stanza: XEP-0060's payload-too-big, the session lives on.
        size = self.server.engine.max_payload_size
        huge = base64.b64encode(b"\0" * (size // 4 * 3 + 3)).decode()
        self.assert_error(await self.publish(alice, ALICE, AVATAR_DATA, f"<data xmlns='{AVATAR_DATA}'>{huge}</data>"),
                          "not-acceptable", "payload-too-big")
        await self.ping(alice)
