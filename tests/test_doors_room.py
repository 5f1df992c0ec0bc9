"""Rooms on chat.DOMAIN through both doors: admission and leaving.
Issue 10, TWO_DOORS_SPEC.md "Rooms".

A room is node ``den`` on chat.localhost; XEP-0045 (presence, groupchat
message, muc#admin/#owner) is one door, XEP-0060 on the chat service (items,
subscribe with ``roomnick``, options, publish, retract) the other. Each
admission rule answers with the same XEP-0045 condition through both.
"""

from xml.sax.saxutils import quoteattr

from tests.doors_helpers import (
    BOB,
    CHAT,
    EVE,
    NS_MUC_OWNER,
    ROOM,
    ROOM_JID,
    RoomDoorsTestCase,
    event_on,
    from_room,
    groupchat,
    message_with,
    statuses,
)


class Admission(RoomDoorsTestCase):
    """Each XEP-0045 admission rule, with the same condition through both doors."""

    async def test_password_room(self):
        alice = await self.room_with_alice(passwordprotectedroom="1", roomsecret="cauldron")
        self.say(alice, "the secret plan")
        await alice.wait_for(groupchat("the secret plan"))
        eve = await self.online("eve", "lair")
        self.assert_error(await self.items(eve, CHAT, ROOM), "not-authorized")
        self.assertEqual(await self.refused_join(eve, "Eve"), "not-authorized")
        self.assert_error(await self.native_join(eve, "Eve"), "not-authorized")
        self.assert_error(await self.native_join(eve, "Eve", **{"muc#password": "guess"}), "not-authorized")
        await self.settle(eve, alice)
        self.nothing(eve, message_with("the secret plan"))
        self.nothing(alice, from_room(ROOM_JID, "Eve"))
        self.assertIsNone(await self.subscription_of(eve.jid))
        # The right password admits through either door, and is not kept.
        self.assert_ok(await self.native_join(eve, "Eve", **{"muc#password": "cauldron"}))
        await alice.wait_for(from_room(ROOM_JID, "Eve"))
        options = self.assert_ok(await self.get_options(eve, CHAT, ROOM))
        self.assertNotIn("cauldron", options.toXml())
        self.assertNotIn("cauldron", repr((await self.subscription_of(eve.jid)).options))
        carol = await self.online("carol", "home")
        await self.join(carol, "Carol", muc="<password>cauldron</password>")

    async def test_members_may_read_a_password_room_history(self):
        alice = await self.room_with_alice(passwordprotectedroom="1", roomsecret="cauldron")
        self.say(alice, "for members")
        await alice.wait_for(groupchat("for members"))
        self.assert_ok(await self.admin(alice, f"<item jid='{BOB}' affiliation='member'/>"))
        bob = await self.online("bob", "desk")
        self.assertIn("for members", self.assert_ok(await self.items(bob, CHAT, ROOM)).toXml())

    async def test_members_only_room(self):
        alice = await self.room_with_alice(membersonly="1")
        self.say(alice, "members talk")
        await alice.wait_for(groupchat("members talk"))
        eve = await self.online("eve", "lair")
        self.assert_error(await self.items(eve, CHAT, ROOM), "registration-required")
        self.assertEqual(await self.refused_join(eve, "Eve"), "registration-required")
        self.assert_error(await self.native_join(eve, "Eve"), "registration-required")
        await self.settle(eve, alice)
        self.nothing(eve, message_with("members talk"))
        self.nothing(alice, from_room(ROOM_JID, "Eve"))
        self.assertIsNone(await self.subscription_of(eve.jid))

    async def test_locked_room(self):
        alice = await self.online("alice", "phone")
        await self.join(alice, "Alice", instant=False)
        self.assert_ok(await self.iq(alice, "get", ROOM_JID, f"<query xmlns='{NS_MUC_OWNER}'/>"))  # reserved
        eve = await self.online("eve", "lair")
        self.assert_error(await self.items(eve, CHAT, ROOM), "item-not-found")
        self.assertEqual(await self.refused_join(eve, "Eve"), "item-not-found")
        self.assert_error(await self.native_join(eve, "Eve"), "item-not-found")
        await self.settle(eve, alice)
        self.nothing(alice, from_room(ROOM_JID, "Eve"))
        self.assertIsNone(await self.subscription_of(eve.jid))

    async def test_full_room(self):
        alice = await self.room_with_alice(maxusers="1")
        eve = await self.online("eve", "lair")
        self.assertEqual(await self.refused_join(eve, "Eve"), "service-unavailable")
        self.assert_error(await self.native_join(eve, "Eve"), "service-unavailable")
        await self.settle(eve, alice)
        self.nothing(alice, from_room(ROOM_JID, "Eve"))
        self.assertIsNone(await self.subscription_of(eve.jid))

    async def test_banned(self):
        alice = await self.room_with_alice()
        self.assert_ok(await self.admin(alice, f"<item jid='{EVE}' affiliation='outcast'/>"))
        self.say(alice, "not for eve")
        await alice.wait_for(groupchat("not for eve"))
        eve = await self.online("eve", "lair")
        self.assert_error(await self.items(eve, CHAT, ROOM), "forbidden")
        self.assertEqual(await self.refused_join(eve, "Eve"), "forbidden")
        self.assert_error(await self.native_join(eve, "Eve"), "forbidden")
        await self.settle(eve, alice)
        self.nothing(eve, message_with("not for eve"))
        self.nothing(alice, from_room(ROOM_JID, "Eve"))
        self.assertIsNone(await self.subscription_of(eve.jid))

    async def test_nick_in_use_by_another_account(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        eve = await self.online("eve", "lair")
        self.assertEqual(await self.refused_join(eve, "Bob"), "conflict")
        self.assert_error(await self.native_join(eve, "Bob"), "conflict")
        await self.settle(eve, alice, bob)
        self.assertEqual(len([e for e in alice.stanzas if from_room(ROOM_JID, "Bob")(e)]), 1)  # bob's join
        self.nothing(bob, lambda e: e.name == "presence" and e.getAttribute("type") == "unavailable")
        self.assertIsNone(await self.subscription_of(eve.jid))

    async def test_open_room_history_is_readable_by_anyone_admitted(self):
        alice = await self.room_with_alice()
        self.say(alice, "public words")
        await alice.wait_for(groupchat("public words"))
        eve = await self.online("eve", "lair")
        self.assertIn("public words", self.assert_ok(await self.items(eve, CHAT, ROOM)).toXml())


class Leaving(RoomDoorsTestCase):
    async def test_native_full_jid_occupant_leaves_with_its_session(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "native")
        self.assert_ok(await self.native_join(bob, "Bob"))
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        await self.logout(bob)
        await alice.wait_for(from_room(ROOM_JID, "Bob", "unavailable"))
        self.assertIsNone(await self.subscription_of(bob.jid))
        self.say(alice, "after bob")
        await alice.wait_for(groupchat("after bob"))

    async def test_native_bare_jid_occupant_leaves_with_its_last_session(self):
        """A bare-JID occupancy stands for all the account's resources: it
        ends when the last of them does, not before."""
        alice = await self.room_with_alice()
        desk = await self.online("bob", "desk")
        phone = await self.online("bob", "phone")
        self.assert_ok(await self.subscribe(desk, CHAT, ROOM, jid=BOB, options={"roomnick": "Bob"}))
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        await self.logout(desk)
        await self.settle(phone, alice)
        self.nothing(alice, from_room(ROOM_JID, "Bob", "unavailable"))
        self.assertIsNotNone(await self.subscription_of(BOB))
        await self.logout(phone)
        await alice.wait_for(from_room(ROOM_JID, "Bob", "unavailable"))
        self.assertIsNone(await self.subscription_of(BOB))

    async def test_destroyed_room_tells_native_occupants(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "native")
        self.assert_ok(await self.native_join(bob, "Bob"))
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        self.assert_ok(await self.iq(alice, "set", ROOM_JID, f"<query xmlns='{NS_MUC_OWNER}'>"
                                                             "<destroy><reason>closing</reason></destroy></query>"))
        await bob.wait_for(event_on(ROOM, "delete"))
        self.assertIsNone(await self.server.storage.get_node(CHAT, ROOM))

    async def test_temporary_room_ends_through_the_engine(self):
        """The last occupant leaves (legacy door, then XEP-0060 door): the room
        is gone, and native subscribers, if any remain, are told."""
        alice = await self.room_with_alice()
        bob = await self.online("bob", "native")
        self.assert_ok(await self.native_join(bob, "Bob"))
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        self.say(alice, "soon gone")
        await alice.wait_for(groupchat("soon gone"))
        alice.send(f"<presence to='{ROOM_JID}/Alice' type='unavailable'/>")
        await alice.wait_for(from_room(ROOM_JID, "Alice", "unavailable"))
        self.assertIsNotNone(await self.server.storage.get_node(CHAT, ROOM))  # bob is still in
        self.assert_ok(await self.pubsub(bob, "set", CHAT, f"<unsubscribe node='{ROOM}' jid={quoteattr(bob.jid)}/>"))
        await self.settle(bob, alice)
        self.assertIsNone(await self.server.storage.get_node(CHAT, ROOM))
        # Nothing of it is left: a new join makes a new room, without the old history.
        carol = await self.online("carol", "home")
        created = await self.join(carol, "Carol")
        self.assertIn(201, statuses(created))
        await self.settle(carol)
        self.nothing(carol, message_with("soon gone"))
