"""Rooms on chat.DOMAIN through both doors: subscription options, roles,
publishing and shared history. Issue 10, TWO_DOORS_SPEC.md "Rooms".

The nick, the role and the voice of an occupant come from its occupancy and
from those allowed to change them, never from what the occupant claims in a
subscription option or a payload.
"""

from tests.doors_helpers import (
    ALICE,
    BOB,
    CAROL,
    CHAT,
    EVE,
    NS_ADMIN,
    NS_NICK,
    ROOM,
    ROOM_JID,
    RoomDoorsTestCase,
    chat_item,
    error_condition,
    from_room,
    groupchat,
    message_with,
    statuses,
)


class SubscriptionOptions(RoomDoorsTestCase):
    async def test_subscribe_without_roomnick_is_no_invisible_listener(self):
        alice = await self.room_with_alice(publicroom="0")
        eve = await self.online("eve", "lair")
        self.assert_error(await self.subscribe(eve, CHAT, ROOM), "bad-request")
        self.assert_error(await self.subscribe(eve, CHAT, ROOM, options={"pubsub#deliver": "1"}), "bad-request")
        self.assert_error(await self.subscribe(eve, CHAT, ROOM, jid=EVE), "bad-request")
        self.say(alice, "anyone listening?")
        await alice.wait_for(groupchat("anyone listening?"))
        await self.settle(alice, eve)
        self.nothing(eve, message_with("anyone listening?"))
        self.assertIsNone(await self.subscription_of(eve.jid))
        self.assertIsNone(await self.subscription_of(EVE))

    async def test_two_valued_roomnick_is_a_clean_bad_request(self):
        alice = await self.room_with_alice()
        eve = await self.online("eve", "lair")
        self.assert_error(await self.native_join(eve, ["Eve", "Evil"]), "bad-request")
        self.assertIsNone(await self.subscription_of(eve.jid))
        # The same on an existing subscription: eve stays Eve.
        self.assert_ok(await self.native_join(eve, "Eve"))
        await alice.wait_for(from_room(ROOM_JID, "Eve"))
        self.assert_error(await self.set_options(eve, CHAT, ROOM, {"roomnick": ["Eve", "Evil"]}), "bad-request")
        self.assertEqual((await self.subscription_of(eve.jid)).options.get("roomnick"), "Eve")
        # The room keeps working: a join, a message, an admin request.
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        self.say(alice, "still alive")
        await bob.wait_for(groupchat("still alive"))
        listing = await self.iq(alice, "get", ROOM_JID,
                                f"<query xmlns='{NS_ADMIN}'><item affiliation='owner'/></query>")
        self.assert_ok(listing)
        self.assert_ok(await self.native_say(eve, "me too"))
        got = await bob.wait_for(groupchat("me too"))
        self.assertEqual(got["from"], f"{ROOM_JID}/Eve")

    async def test_unknown_option_is_invalid(self):
        alice = await self.room_with_alice()
        eve = await self.online("eve", "lair")
        self.assert_error(await self.native_join(eve, "Eve", **{"x-unknown": "1"}), "bad-request", "invalid-options")
        self.assertIsNone(await self.subscription_of(eve.jid))
        self.assert_ok(await self.native_join(eve, "Eve"))
        await alice.wait_for(from_room(ROOM_JID, "Eve"))
        self.assert_error(await self.set_options(eve, CHAT, ROOM, {"x-unknown": "1"}),
                          "bad-request", "invalid-options")
        self.assertNotIn("x-unknown", (await self.subscription_of(eve.jid)).options)

    async def test_deliver_is_a_boolean(self):
        """XEP-0060 §16.4.2: any other pubsub#deliver was kept with the occupant (any text, joining or after)."""
        alice = await self.room_with_alice()
        eve = await self.online("eve", "lair")
        for value in ("x" * 3000, "maybe"):
            self.assert_error(await self.native_join(eve, "Eve", **{"pubsub#deliver": value}),
                              "bad-request", "invalid-options")
        self.assertIsNone(await self.subscription_of(eve.jid))
        self.assert_ok(await self.native_join(eve, "Eve", **{"pubsub#deliver": "1"}))
        await alice.wait_for(from_room(ROOM_JID, "Eve"))
        for value in ("x" * 3000, ["1", "0"]):
            self.assert_error(await self.set_options(eve, CHAT, ROOM, {"pubsub#deliver": value}),
                              "bad-request", "invalid-options")
        self.assertEqual((await self.subscription_of(eve.jid)).options["pubsub#deliver"], "1")

    async def test_nobody_sets_her_own_role(self):
        alice = await self.room_with_alice(moderatedroom="1")
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        eve = await self.online("eve", "lair")
        self.assert_error(await self.native_join(eve, "Eve", **{"xep207#role": "moderator"}), "forbidden")
        self.assertIsNone(await self.subscription_of(eve.jid))
        self.assert_ok(await self.native_join(eve, "Eve"))  # a visitor: the room is moderated
        await bob.wait_for(from_room(ROOM_JID, "Eve"))
        self.assert_error(await self.set_options(eve, CHAT, ROOM, {"xep207#role": "moderator"}), "forbidden")
        # Still a visitor: no kick, no ban, no voice.
        self.assert_error(await self.admin(eve, "<item nick='Bob' role='none'/>"), "forbidden")
        self.assert_error(await self.admin(eve, f"<item jid='{BOB}' affiliation='outcast'/>"), "forbidden")
        self.assert_error(await self.native_say(eve, "hear me"), "forbidden")
        # A legacy occupant crossing to the other door is no different.
        carol = await self.online("carol", "home")
        await self.join(carol, "Carol")
        self.assert_error(await self.set_options(carol, CHAT, ROOM, {"xep207#role": "moderator"}), "forbidden")
        self.assert_error(await self.admin(carol, "<item nick='Bob' role='none'/>"), "forbidden")
        await self.settle(eve, carol, bob, alice)
        self.nothing(bob, lambda e: e.name == "presence" and e.getAttribute("type") == "unavailable")
        self.nothing(alice, message_with("hear me"))
        for jid in (eve.jid, carol.jid):
            self.assertNotIn("xep207#role", (await self.subscription_of(jid)).options)
        self.assertNotEqual((await self.server.storage.get_affiliations(CHAT, ROOM)).get(BOB), "outcast")

    async def test_nick_comes_from_the_occupancy(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        eve = await self.online("eve", "lair")
        self.assert_ok(await self.native_join(eve, "Eve"))
        await bob.wait_for(from_room(ROOM_JID, "Eve"))
        # Taking alice's nick is a nick change into a conflict, through either verb.
        self.assert_error(await self.set_options(eve, CHAT, ROOM, {"roomnick": "Alice"}), "conflict")
        self.assert_error(await self.native_join(eve, "Alice"), "conflict")
        self.assertEqual((await self.subscription_of(eve.jid)).options.get("roomnick"), "Eve")
        # A claimed nick or sender in the payload is ignored.
        payload = (f"<message xmlns='jabber:client' from='{ALICE}/phone'><body>I am alice</body>"
                   f"<nick xmlns='{NS_NICK}'>Alice</nick></message>")
        self.assert_ok(await self.publish(eve, CHAT, ROOM, payload))
        got = await bob.wait_for(groupchat("I am alice"))
        self.assertEqual(got["from"], f"{ROOM_JID}/Eve")
        # A free nick is a nick change: later messages carry it.
        self.assert_ok(await self.set_options(eve, CHAT, ROOM, {"roomnick": "Evelyn"}))
        self.assert_ok(await self.native_say(eve, "renamed"))
        got = await bob.wait_for(groupchat("renamed"))
        self.assertEqual(got["from"], f"{ROOM_JID}/Evelyn")
        await self.settle(eve, bob, alice)
        self.nothing(bob, lambda e: e.name == "message" and e.getAttribute("from") == f"{ROOM_JID}/Alice")


class Publishing(RoomDoorsTestCase):
    async def test_visitor_in_a_moderated_room_is_silent_through_both_doors(self):
        alice = await self.room_with_alice(moderatedroom="1")
        bob = await self.online("bob", "native")
        self.assert_ok(await self.native_join(bob, "Bob"))
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        self.assert_error(await self.native_say(bob, "native visitor"), "forbidden")
        carol = await self.online("carol", "home")
        await self.join(carol, "Carol")
        self.say(carol, "legacy visitor")
        error = await carol.wait_for(lambda e: e.name == "message" and e.getAttribute("type") == "error")
        self.assertEqual(error_condition(error), "forbidden")
        self.assert_error(await self.native_say(carol, "legacy visitor, other door"), "forbidden")
        await self.settle(bob, carol, alice)
        self.nothing(alice, message_with("visitor"))
        self.assertEqual(await self.history(), [])
        # With voice, both doors speak.
        self.assert_ok(await self.admin(alice, "<item nick='Bob' role='participant'/>"))
        self.assert_ok(await self.native_say(bob, "now I may"))
        await alice.wait_for(groupchat("now I may"))

    async def test_non_occupant_cannot_publish(self):
        alice = await self.room_with_alice()
        eve = await self.online("eve", "lair")
        self.assert_error(await self.native_say(eve, "lurker"), "forbidden")
        self.say(eve, "lurker too")
        await eve.wait_for(lambda e: e.name == "message" and e.getAttribute("type") == "error")
        await self.settle(eve, alice)
        self.nothing(alice, message_with("lurker"))
        self.assertEqual(await self.history(), [])

    async def test_create_through_xep0060_is_forbidden(self):
        await self.room_with_alice()
        eve = await self.online("eve", "lair")
        self.assert_error(await self.create(eve, CHAT, "newroom"), "forbidden")
        self.assert_error(await self.create(eve, CHAT, ROOM), "forbidden")
        self.assertIsNone(await self.server.storage.get_node(CHAT, "newroom"))


class SharedHistory(RoomDoorsTestCase):
    async def test_nobody_rewrites_anothers_item(self):
        alice = await self.room_with_alice()
        self.say(alice, "the original")
        await alice.wait_for(groupchat("the original"))
        self.assert_ok(await self.admin(alice, f"<item jid='{BOB}' affiliation='member'/>"))
        bob = await self.online("bob", "native")
        self.assert_ok(await self.native_join(bob, "Bob"))
        [alices] = self.item_ids(self.assert_ok(await self.items(bob, CHAT, ROOM)))
        self.assert_error(await self.native_say(bob, "the forgery", item_id=alices), "forbidden")
        self.assert_error(await self.retract(bob, CHAT, ROOM, alices), "forbidden")
        await self.settle(bob, alice)
        self.nothing(alice, message_with("the forgery"))
        history = await self.history()
        self.assertEqual(len(history), 1)
        self.assertIn("the original", history[0])
        # bob's own item: alice (owner, moderator) may retract it but not overwrite it.
        self.assert_ok(await self.native_say(bob, "bob's line", item_id="bobs-1"))
        await alice.wait_for(groupchat("bob's line"))
        self.assert_error(await self.publish(alice, CHAT, ROOM, chat_item("alice edits bob"), item_id="bobs-1"),
                          "forbidden")
        self.assertIn("bob's line", (await self.history())[-1])
        self.assert_ok(await self.retract(alice, CHAT, ROOM, "bobs-1"))
        self.assertEqual(len(await self.history()), 1)


class Moderation(RoomDoorsTestCase):
    async def test_moderator_who_is_not_admin_cannot_ban(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        carol = await self.online("carol", "home")
        await self.join(carol, "Carol")
        self.assert_ok(await self.admin(alice, "<item nick='Bob' role='moderator'/>"))
        self.assert_error(await self.admin(bob, f"<item jid='{CAROL}' affiliation='outcast'/>"), "forbidden")
        self.assert_error(await self.admin(bob, f"<item jid='{EVE}' affiliation='member'/>"), "forbidden")
        ban = f"<affiliations node='{ROOM}'><affiliation jid='{CAROL}' affiliation='outcast'/></affiliations>"
        self.assert_error(await self.pubsub(bob, "set", CHAT, ban, owner=True), "forbidden")
        await self.settle(bob, carol, alice)
        self.nothing(carol, lambda e: e.name == "presence" and e.getAttribute("type") == "unavailable")
        affiliations = await self.server.storage.get_affiliations(CHAT, ROOM)
        self.assertNotIn(affiliations.get(CAROL), ("outcast", "member", "publisher"))
        self.assertNotIn(EVE, affiliations)
        # A kick is a moderator's to give.
        self.assert_ok(await self.admin(bob, "<item nick='Carol' role='none'/>"))
        kicked = await carol.wait_for(from_room(ROOM_JID, "Carol", "unavailable"))
        self.assertIn(307, statuses(kicked))
