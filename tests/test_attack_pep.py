"""Attacks on the personal-data PEP nodes (private, bookmarks, vCard, avatars)
and on the kinds' fixed configuration, through real streams and both doors."""

from __future__ import annotations

from tests.doors_helpers import ALICE, EVE, NS_EVENT, DoorsTestCase

BOOKMARKS = "urn:xmpp:bookmarks:1"
VCARD = "vcard-temp"


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
        self.assert_ok(await self.pubsub(alice, "set", ALICE, "<delete node='presence'/>", owner=True))
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
