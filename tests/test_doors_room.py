"""Rooms on chat.DOMAIN through both doors: issue 10, TWO_DOORS_SPEC.md "Rooms".

A room is node ``den`` on chat.localhost; XEP-0045 (presence, groupchat
message, muc#admin/#owner) is one door, XEP-0060 on the chat service (items,
subscribe with ``roomnick``, options, publish, retract) the other. The same
admission rules and roles must hold through both.
"""

from xml.sax.saxutils import quoteattr

from doors_helpers import (
    ALICE,
    BOB,
    CAROL,
    CHAT,
    EVE,
    NS_ADMIN,
    NS_MUC,
    NS_MUC_OWNER,
    DoorsTestCase,
    chat_item,
    event_on,
    form,
    from_room,
    groupchat,
    message_with,
    statuses,
)

ROOM = "den"
ROOM_JID = f"{ROOM}@{CHAT}"
NS_NICK = "http://jabber.org/protocol/nick"


def error_presence(e):
    return e.name == "presence" and e.getAttribute("type") == "error"


def error_condition(stanza) -> str | None:
    error = stanza.error
    return next((c.name for c in error.elements() if c.uri == "urn:ietf:params:xml:ns:xmpp-stanzas"), None) \
        if error is not None else None


class RoomDoors(DoorsTestCase):
    # Legacy door ---------------------------------------------------------------

    async def join(self, client, nick, muc=""):
        """A XEP-0045 join that must succeed; fires with the own presence."""
        client.send(f"<presence to='{ROOM_JID}/{nick}'><x xmlns='{NS_MUC}'>{muc}</x></presence>")
        own = await client.wait_for(lambda e: from_room(ROOM_JID, nick)(e) and 110 in statuses(e))
        await client.wait_for(lambda e: e.name == "message" and e.subject is not None)
        return own

    async def refused_join(self, client, nick, muc="") -> str | None:
        """A XEP-0045 join that must fail; the error condition."""
        client.send(f"<presence to='{ROOM_JID}/{nick}'><x xmlns='{NS_MUC}'>{muc}</x></presence>")
        return error_condition(await client.wait_for(error_presence))

    def say(self, client, body):
        client.send(f"<message to='{ROOM_JID}' type='groupchat'><body>{body}</body></message>")

    async def configure(self, owner, **fields):
        values = {f"muc#roomconfig_{k}": v for k, v in fields.items()}
        reply = await self.iq(owner, "set", ROOM_JID,
                              f"<query xmlns='{NS_MUC_OWNER}'>{form(NS_MUC + '#roomconfig', values)}</query>")
        return self.assert_ok(reply)

    async def admin(self, client, item: str):
        return await self.iq(client, "set", ROOM_JID, f"<query xmlns='{NS_ADMIN}'>{item}</query>")

    async def room_with_alice(self, **config):
        """alice (legacy) creates the room as its owner and configures it."""
        alice = await self.online("alice", "phone")
        await self.join(alice, "Alice")
        if config:
            await self.configure(alice, **config)
        return alice

    # XEP-0060 door -------------------------------------------------------------

    def native_join(self, client, nick, **options):
        """Subscribe the full JID with ``roomnick`` (XEP-0207 §5)."""
        return self.subscribe(client, CHAT, ROOM, options={"roomnick": nick, **options})

    def native_say(self, client, body, item_id=None, **attributes):
        return self.publish(client, CHAT, ROOM, chat_item(body, **attributes), item_id=item_id)

    # State ---------------------------------------------------------------------

    async def subscription_of(self, jid):
        return await self.server.storage.get_subscription(CHAT, ROOM, jid)

    async def history(self) -> list[str]:
        page = await self.server.storage.page_items(CHAT, ROOM)
        return [i.payload for i in page.items]


class Admission(RoomDoors):
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
        await self.join(alice, "Alice")
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


class SubscriptionOptions(RoomDoors):
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


class Publishing(RoomDoors):
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


class SharedHistory(RoomDoors):
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


class Moderation(RoomDoors):
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


class Leaving(RoomDoors):
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
