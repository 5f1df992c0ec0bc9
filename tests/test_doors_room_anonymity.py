"""Semi-anonymous rooms through both doors (issue 11 item 15).

XEP-0045 §7.2.4: in a semi-anonymous room the service "MUST include the new
occupant's full JID only in the presence notifications it sends to occupants
with a role of 'moderator'". The room is also a node: its items, its
notifications (XEP-0033 replyto), its subscription and affiliation lists are
read through XEP-0060, so none of them may carry a real JID to a stranger or
a participant either. A moderator (the owner here) sees them through both.
"""

from tests.doors_helpers import (
    ALICE,
    BOB,
    CAROL,
    CHAT,
    EVE,
    NODE_CONFIG,
    NS_USER,
    ROOM,
    ROOM_JID,
    RoomDoorsTestCase,
    chat_item,
    event_on,
    form,
    from_room,
    groupchat,
)

REAL_JIDS = (ALICE, BOB, CAROL, EVE)


def item_jid(presence) -> str | None:
    x = next((c for c in presence.elements() if c.name == "x" and c.uri == NS_USER), None)
    return x.item.getAttribute("jid") if x is not None and x.item is not None else None


class SemiAnonymousThroughBothDoors(RoomDoorsTestCase):
    """alice owns (moderates) the default room; bob is a legacy participant,
    carol a native (XEP-0060) participant, eve a stranger."""

    async def full_room(self, **config):
        alice = await self.room_with_alice(**config)
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        carol = await self.online("carol", "native")
        self.assert_ok(await self.native_join(carol, "Carol"))
        await alice.wait_for(from_room(ROOM_JID, "Carol"))
        await bob.wait_for(from_room(ROOM_JID, "Carol"))
        return alice, bob, carol

    def assert_no_real_jid(self, stanzas, *, but=None):
        for stanza in stanzas:
            xml = stanza.toXml() if hasattr(stanza, "toXml") else stanza
            for jid in REAL_JIDS:
                if jid != but:
                    self.assertNotIn(jid, xml)

    async def test_participants_see_no_real_jid_through_either_door(self):
        alice, bob, carol = await self.full_room()
        self.say(alice, "hello all")
        await bob.wait_for(groupchat("hello all"))
        event = await carol.wait_for(event_on(ROOM, "items"))
        # The notification names the occupant JID, as the legacy message's from.
        self.assertEqual(event.addresses.address["jid"], f"{ROOM_JID}/Alice")
        self.assertNotIn(ALICE, event.toXml())
        # A native publish is stored, and read back, under the occupant JID.
        self.assert_ok(await self.native_say(carol, "from the other door"))
        seen = await bob.wait_for(groupchat("from the other door"))
        self.assertEqual(seen["from"], f"{ROOM_JID}/Carol")
        for reader in (bob, carol):
            items = self.assert_ok(await self.items(reader, CHAT, ROOM))
            self.assertIn("from the other door", items.toXml())
            self.assert_no_real_jid([items.pubsub])
        self.assertIn(f"from='{ROOM_JID}/Carol'", "".join(await self.history()))
        # Presences: bob and carol see the others without jid; each sees itself.
        eve = await self.online("eve", "lair")
        await self.join(eve, "Eve")
        await carol.wait_for(from_room(ROOM_JID, "Eve"))
        await self.settle(alice, bob, carol)
        for client, me in ((bob, BOB), (carol, CAROL)):
            presences = [e for e in client.stanzas if e.name == "presence"
                         and e.getAttribute("from", "").startswith(ROOM_JID + "/")]
            self.assertTrue(presences)
            self.assert_no_real_jid([c for p in presences for c in p.elements()], but=me)
        # XEP-0060 lists of subscribers and affiliates are the owner's and moderators'.
        for client in (bob, carol):
            self.assert_error(await self.pubsub(client, "get", CHAT, f"<subscriptions node='{ROOM}'/>", owner=True),
                              "forbidden")
            self.assert_error(await self.pubsub(client, "get", CHAT, f"<affiliations node='{ROOM}'/>", owner=True),
                              "forbidden")
        # Nor through the legacy door's lists.
        reply = await self.iq(bob, "get", ROOM_JID, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                                                    "<item role='participant'/></query>")
        self.assert_error(reply, "forbidden")

    async def test_a_stranger_reading_the_history_sees_no_real_jid(self):
        alice, bob, carol = await self.full_room()
        self.say(bob, "public words")
        await alice.wait_for(groupchat("public words"))
        self.assert_ok(await self.native_say(carol, "native words"))
        await alice.wait_for(groupchat("native words"))
        eve = await self.online("eve", "lair")
        items = self.assert_ok(await self.items(eve, CHAT, ROOM))
        self.assertIn("public words", items.toXml())
        self.assertIn("native words", items.toXml())
        self.assert_no_real_jid([items.pubsub])
        eve_joins = await self.online("eve", "joins")
        await self.join(eve_joins, "Eve")
        await self.settle(eve_joins)
        self.assert_no_real_jid([c for e in eve_joins.stanzas if e.getAttribute("from", "").startswith(ROOM_JID)
                                 for c in e.elements()], but=EVE)

    async def test_the_moderator_sees_real_jids_through_both_doors(self):
        alice, bob, carol = await self.full_room()
        await self.settle(alice)
        seen = {e["from"]: item_jid(e) for e in alice.stanzas if from_room(ROOM_JID, "Bob")(e)
                or from_room(ROOM_JID, "Carol")(e)}
        self.assertEqual(seen, {f"{ROOM_JID}/Bob": bob.jid, f"{ROOM_JID}/Carol": carol.jid})
        reply = self.assert_ok(await self.pubsub(alice, "get", CHAT, f"<subscriptions node='{ROOM}'/>", owner=True))
        listed = {s["jid"] for s in reply.pubsub.subscriptions.elements() if s.name == "subscription"}
        self.assertTrue({bob.jid, carol.jid} <= listed, listed)
        listing = self.assert_ok(await self.iq(alice, "get", ROOM_JID,
                                               "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                                               "<item role='participant'/></query>"))
        self.assertEqual({i["jid"] for i in listing.query.elements() if i.name == "item"}, {bob.jid, carol.jid})

    async def test_a_new_moderator_is_sent_the_real_jids(self):
        alice, bob, carol = await self.full_room()
        self.assert_ok(await self.admin(alice, "<item nick='Bob' role='moderator'/>"))
        again = await bob.wait_for(lambda e: from_room(ROOM_JID, "Carol")(e) and item_jid(e) is not None)
        self.assertEqual(item_jid(again), carol.jid)

    async def test_non_anonymous_room_shows_everyone_every_jid(self):
        alice, bob, carol = await self.full_room(whois="anyone")
        eve = await self.online("eve", "lair")
        await self.join(eve, "Eve")
        about_eve = await carol.wait_for(from_room(ROOM_JID, "Eve"))  # the native occupant too
        self.assertEqual(item_jid(about_eve), eve.jid)
        await self.settle(alice, bob, carol)
        about_alice = [item_jid(e) for e in bob.stanzas if from_room(ROOM_JID, "Alice")(e)]
        self.assertEqual(about_alice[-1:], [alice.jid])
        about_carol = [item_jid(e) for e in bob.stanzas if from_room(ROOM_JID, "Carol")(e)]
        self.assertEqual(about_carol[-1:], [carol.jid])

    async def test_the_whois_change_reaches_native_occupants_too(self):
        alice, bob, carol = await self.full_room()

        def status(code):
            return lambda e: (e.name == "message" and e.getAttribute("from") == ROOM_JID
                              and f"code='{code}'" in e.toXml())
        await self.configure(alice, whois="anyone")
        for client in (alice, bob, carol):
            await client.wait_for(status(172))
        await self.configure(alice, roomname="The Den")
        await carol.wait_for(lambda e: status(104)(e) and "code='172'" not in e.toXml())

    async def test_a_forged_from_in_a_native_publish_is_replaced(self):
        alice, bob, carol = await self.full_room()
        payload = chat_item("forged", **{"from": ALICE + "/phone"})
        self.assert_ok(await self.publish(carol, CHAT, ROOM, payload))
        seen = await bob.wait_for(groupchat("forged"))
        self.assertEqual(seen["from"], f"{ROOM_JID}/Carol")
        self.assertNotIn(ALICE, "".join(await self.history()))

    async def test_a_bad_whois_is_refused_and_changes_nothing(self):
        alice = await self.room_with_alice()
        for values in (["everyone"], ["anyone", "moderators"], []):
            with self.subTest(values=values):
                field = "".join(f"<value>{v}</value>" for v in values)
                reply = await self.iq(alice, "set", ROOM_JID,
                                      "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                                      "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
                                      "<value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                                      f"<field var='muc#roomconfig_whois'>{field}</field></x></query>")
                self.assert_error(reply, "not-acceptable")
        node = await self.server.storage.get_node(CHAT, ROOM)
        self.assertEqual(node.config.extra["muc"]["muc#roomconfig_whois"], "moderators")

    async def test_a_participant_cannot_make_the_room_non_anonymous(self):
        alice, bob, carol = await self.full_room()
        reply = await self.iq(bob, "set", ROOM_JID, "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                                                    "<x xmlns='jabber:x:data' type='submit'><field "
                                                    "var='muc#roomconfig_whois'><value>anyone</value></field>"
                                                    "</x></query>")
        self.assert_error(reply, "forbidden")
        self.assert_error(await self.pubsub(carol, "set", CHAT, f"<configure node='{ROOM}'>"
                                                                f"{form(NODE_CONFIG, {'pubsub#title': 'x'})}"
                                                                "</configure>", owner=True), "forbidden")
        node = await self.server.storage.get_node(CHAT, ROOM)
        self.assertEqual(node.config.extra["muc"]["muc#roomconfig_whois"], "moderators")
