"""Attacks on the personal-data PEP nodes (private, bookmarks, vCard, avatars)
and on the kinds' fixed configuration, through real streams and both doors."""

from __future__ import annotations

import base64
import hashlib

from tests.doors_helpers import ALICE, EVE, NODE_CONFIG, DoorsTestCase, form

BOOKMARKS = "urn:xmpp:bookmarks:1"
VCARD = "vcard-temp"
AVATAR_DATA = "urn:xmpp:avatar:data"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"


def vcard(name: str) -> str:
    return f"<vCard xmlns='{VCARD}'><FN>{name}</FN></vCard>"


class CreateWithConfig(DoorsTestCase):
    """A create's configuration form is a configuration: the kind's rules for
    ``configure`` apply to it as well."""

    async def test_vcard_created_open_to_publishers_is_refused(self):
        alice, eve = await self.online("alice"), await self.online("eve")
        # The vCard node does not exist yet: alice creates it with an open publish model.
        self.assert_error(await self.create(alice, ALICE, VCARD, {"publish_model": "open"}), "not-acceptable")
        self.assert_error(await self.create(alice, ALICE, VCARD, {"publisher": EVE}), "not-acceptable")
        # Nothing was created, so eve still cannot write alice's vCard (it would
        # become alice's public vCard, her avatar and her presence hash).
        self.assert_error(await self.publish(eve, ALICE, VCARD, vcard("Forged"), item_id="current"), "forbidden")
        got = self.assert_ok(await self.iq(alice, "get", None, f"<vCard xmlns='{VCARD}'/>"))
        self.assertNotIn("Forged", got.toXml())
        # A plain create is still fine.
        self.assert_ok(await self.create(alice, ALICE, VCARD))

    async def test_presence_node_recreated_open_is_refused(self):
        alice, eve = await self.online("alice"), await self.online("eve", presence=False)
        # (Deleting it is the service's: tests/test_attack_kind_rules.py AccountNodesStay.)
        self.assert_error(await self.pubsub(alice, "set", ALICE, "<delete node='presence'/>", owner=True),
                          "forbidden")
        self.assert_error(await self.create(alice, ALICE, "presence", {"access_model": "open"}), "not-acceptable")
        # So eve cannot follow alice's presence without alice's authorization.
        reply = await self.subscribe(eve, ALICE, "presence")
        if reply["type"] == "result":
            self.assertNotEqual(reply.pubsub.subscription["subscription"], "subscribed", reply.toXml())

    async def test_private_nodes_created_open_are_refused(self):
        alice = await self.online("alice")
        for node in (BOOKMARKS, "jabber:iq:private"):
            self.assert_error(await self.create(alice, ALICE, node, {"access_model": "open"}), "not-acceptable")
            self.assert_error(await self.create(alice, ALICE, node, {"publisher": EVE}), "not-acceptable")
            self.assert_ok(await self.create(alice, ALICE, node))
            config = self.assert_ok(await self.pubsub(alice, "get", ALICE, f"<configure node='{node}'/>",
                                                      owner=True))
            self.assertIn("<value>whitelist</value>", config.toXml())


class DeleteAccount(DoorsTestCase):
    async def test_deleting_the_account_removes_every_personal_node(self):
        alice = await self.online("alice")
        self.assert_ok(await self.iq(alice, "set", None, vcard("Alice")))
        self.assert_ok(await self.iq(alice, "set", None,
                                     "<query xmlns='jabber:iq:private'><n xmlns='urn:example:n'/></query>"))
        self.assert_ok(await self.publish(alice, ALICE, BOOKMARKS,
                                          f"<conference xmlns='{BOOKMARKS}'/>", item_id="tea@chat.localhost"))
        self.assertTrue(await self.server.engine.storage.list_nodes(ALICE))
        await self.server.accounts.delete_user(ALICE)
        self.assertEqual(await self.server.engine.storage.list_nodes(ALICE), [])


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


class FixedConfiguration(DoorsTestCase):
    """What the kinds promise (every bookmark kept, the vCard kept) is not the
    owner's to configure away: XEP-0048 writes would silently lose bookmarks."""

    async def test_bookmarks_keep_every_item(self):
        alice = await self.online("alice")
        self.assert_ok(await self.publish(alice, ALICE, BOOKMARKS,
                                          f"<conference xmlns='{BOOKMARKS}'/>", item_id="a@chat.localhost"))
        for field, value in (("max_items", "1"), ("persist_items", "0")):
            reply = await self.pubsub(alice, "set", ALICE, f"<configure node='{BOOKMARKS}'>"
                                      + form(NODE_CONFIG, {f"pubsub#{field}": value}) + "</configure>", owner=True)
            self.assert_error(reply, "not-acceptable")
        storage = ("<storage xmlns='storage:bookmarks'><conference jid='a@chat.localhost'/>"
                   "<conference jid='b@chat.localhost'/><conference jid='c@chat.localhost'/></storage>")
        self.assert_ok(await self.iq(alice, "set", None, f"<query xmlns='jabber:iq:private'>{storage}</query>"))
        items = self.assert_ok(await self.items(alice, ALICE, BOOKMARKS))
        self.assertEqual(sorted(self.item_ids(items)), ["a@chat.localhost", "b@chat.localhost", "c@chat.localhost"])

    async def test_vcard_is_kept(self):
        alice = await self.online("alice")
        self.assert_ok(await self.iq(alice, "set", None, vcard("Alice")))
        reply = await self.pubsub(alice, "set", ALICE, f"<configure node='{VCARD}'>"
                                  + form(NODE_CONFIG, {"pubsub#persist_items": "0"}) + "</configure>", owner=True)
        self.assert_error(reply, "not-acceptable")
        got = self.assert_ok(await self.iq(alice, "get", None, f"<vCard xmlns='{VCARD}'/>"))
        self.assertIn("<FN>Alice</FN>", got.toXml())


class PhotoType(DoorsTestCase):
    async def test_a_photo_must_say_it_is_an_image(self):
        alice = await self.online("alice")
        data = base64.b64encode(PNG).decode()
        for kind in ("text/html", "application/javascript"):
            card = (f"<vCard xmlns='{VCARD}'><PHOTO><TYPE>{kind}</TYPE><BINVAL>{data}</BINVAL></PHOTO></vCard>")
            self.assert_error(await self.iq(alice, "set", None, card), "bad-request")
            self.assert_error(await self.publish(alice, ALICE, VCARD, card, item_id="current"),
                              "bad-request", "invalid-payload")
        # XEP-0084 metadata naming a non-image type does not become a vCard PHOTO.
        digest = hashlib.sha1(PNG).hexdigest()
        self.assert_ok(await self.publish(alice, ALICE, AVATAR_DATA, f"<data xmlns='{AVATAR_DATA}'>{data}</data>",
                                          item_id=digest))
        metadata = (f"<metadata xmlns='{AVATAR_METADATA}'><info id='{digest}' bytes='{len(PNG)}' "
                    "type='text/html'/></metadata>")
        self.assert_ok(await self.publish(alice, ALICE, AVATAR_METADATA, metadata, item_id=digest))
        await self.server.avatars.settled(ALICE)
        await self.settle(alice)
        got = self.assert_ok(await self.iq(alice, "get", None, f"<vCard xmlns='{VCARD}'/>"))
        self.assertNotIn("text/html", got.toXml())


class Held(DoorsTestCase):
    """Attacks that the kinds already refused (kept as regression tests)."""

    async def test_publish_options_never_loosen_other_kinds(self):
        alice, eve = await self.online("alice"), await self.online("eve")
        self.assert_ok(await self.iq(alice, "set", None, "<block xmlns='urn:xmpp:blocking'>"
                                                         "<item jid='spam@example.org'/></block>"))
        loosen = {"pubsub#access_model": "open"}
        for node in ("roster", "blocklist", "mam-prefs", "urn:xmpp:push:0", "jabber:iq:private", BOOKMARKS):
            reply = await self.publish(alice, ALICE, node, "<x xmlns='urn:example:x'/>", publish_options=loosen)
            self.assertEqual(reply["type"], "error", f"{node}: {reply.toXml()}")
            if node in ("jabber:iq:private", BOOKMARKS):  # made by this publish: options not silently dropped
                self.assert_error(reply, "conflict", "precondition-not-met")
            answers = await self.answers(eve, ALICE, node)
            self.assertEqual({v for v in answers.values()}, {("error", "item-not-found", None)}, (node, answers))
        # The presence node stays 'authorize': a stranger's subscription waits for alice.
        reply = await self.publish(alice, ALICE, "presence", "<x xmlns='urn:example:x'/>", publish_options=loosen)
        self.assertEqual(reply["type"], "error", reply.toXml())
        config = self.assert_ok(await self.pubsub(alice, "get", ALICE, "<configure node='presence'/>", owner=True))
        self.assertIn("<value>authorize</value>", config.toXml())

    async def test_stranger_subscribing_to_a_presence_access_node_gets_no_last_item(self):
        alice, eve = await self.online("alice"), await self.online("eve")
        self.assert_ok(await self.publish(alice, ALICE, "urn:xmpp:omemo:2:devices",
                                          "<devices xmlns='urn:xmpp:omemo:2'><device id='1'/></devices>",
                                          item_id="current"))
        self.assert_error(await self.subscribe(eve, ALICE, "urn:xmpp:omemo:2:devices"),
                          "not-authorized", "presence-subscription-required")
        since = len(eve.stanzas)
        await self.settle(alice, eve)
        self.nothing(eve, lambda e: e.name == "message", since)

    async def test_avatar_metadata_naming_anothers_data_converts_nothing(self):
        alice, eve = await self.online("alice"), await self.online("eve")
        data = base64.b64encode(PNG).decode()
        digest = hashlib.sha1(PNG).hexdigest()
        self.assert_ok(await self.publish(alice, ALICE, AVATAR_DATA, f"<data xmlns='{AVATAR_DATA}'>{data}</data>",
                                          item_id=digest))
        metadata = (f"<metadata xmlns='{AVATAR_METADATA}'><info id='{digest}' bytes='{len(PNG)}' "
                    "type='image/png'/></metadata>")
        self.assert_ok(await self.publish(eve, EVE, AVATAR_METADATA, metadata, item_id=digest))
        await self.server.avatars.settled(EVE)
        got = self.assert_ok(await self.iq(eve, "get", None, f"<vCard xmlns='{VCARD}'/>"))
        self.assertNotIn("BINVAL", got.toXml())
        # Nor may eve publish into alice's avatar nodes.
        self.assert_failed(await self.publish(eve, ALICE, AVATAR_DATA, f"<data xmlns='{AVATAR_DATA}'>{data}</data>",
                                              item_id=digest))

    async def test_xep0048_and_xep0402_writes_interleaved_stay_one_copy(self):
        alice = await self.online("alice")
        second = await self.online("alice", resource="other")
        storage = ("<storage xmlns='storage:bookmarks'><conference jid='a@chat.localhost'/>"
                   "<conference jid='b@chat.localhost'/></storage>")
        legacy = self.iq(alice, "set", None, f"<query xmlns='jabber:iq:private'>{storage}</query>")
        native = self.publish(second, ALICE, BOOKMARKS, f"<conference xmlns='{BOOKMARKS}' name='C'/>",
                              item_id="c@chat.localhost")
        self.assert_ok(await legacy)
        self.assert_ok(await native)
        items = self.assert_ok(await self.items(alice, ALICE, BOOKMARKS))
        ids = sorted(self.item_ids(items))
        self.assertEqual(ids, ["a@chat.localhost", "b@chat.localhost", "c@chat.localhost"])
        # Retract through one door, read through the other.
        self.assert_ok(await self.retract(second, ALICE, BOOKMARKS, "b@chat.localhost"))
        got = self.assert_ok(await self.iq(alice, "get", None,
                                           "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/>"
                                           "</query>"))
        xml = got.toXml()
        self.assertNotIn("b@chat", xml)
        self.assertEqual(xml.count("<conference"), 2, xml)


class PublishOptionsOnCreation(DoorsTestCase):
    async def test_a_kinds_node_made_by_a_publish_checks_the_options(self):
        """XEP-0060 §7.1.5: options the new node cannot have are precondition-not-met,
        not silently dropped (the client would believe its bookmarks open)."""
        alice = await self.online("alice")
        self.assert_error(await self.publish(alice, ALICE, BOOKMARKS, f"<conference xmlns='{BOOKMARKS}'/>",
                                             item_id="a@chat.localhost",
                                             publish_options={"pubsub#access_model": "open"}),
                          "conflict", "precondition-not-met")
        # XEP-0402 §5's own options describe the kind's node: accepted on creation.
        self.assert_ok(await self.publish(alice, ALICE, BOOKMARKS, f"<conference xmlns='{BOOKMARKS}'/>",
                                          item_id="a@chat.localhost",
                                          publish_options={"pubsub#persist_items": "true",
                                                           "pubsub#max_items": "max",
                                                           "pubsub#send_last_published_item": "never",
                                                           "pubsub#access_model": "whitelist"}))
