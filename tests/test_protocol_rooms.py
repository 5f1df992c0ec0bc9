"""Issue 11, rooms: the XEP-0045 clauses real clients trip on, stanza by stanza
over real sockets (the rest of the issue is in test_protocol_correctness.py).

One class per numbered item; a test fails until its item is fixed.
"""

from tests.doors_helpers import (
    BOB,
    CHAT,
    NS_ADMIN,
    NS_MUC,
    NS_MUC_OWNER,
    NS_USER,
    ROOM,
    ROOM_JID,
    RoomDoorsTestCase,
    error_condition,
    from_room,
    groupchat,
    statuses,
)

NS_INFO = "http://jabber.org/protocol/disco#info"
ROOMCONFIG = NS_MUC + "#roomconfig"


def user_x(stanza):
    return [c for c in stanza.elements() if c.name == "x" and c.uri == NS_USER]


def item_of(presence):
    x = user_x(presence)
    return x[0].item if x else None


def subject_message(e) -> bool:
    return e.name == "message" and e.subject is not None


class RoomsTestCase(RoomDoorsTestCase):
    async def open_room(self, **config):
        """alice creates the room and submits a configuration: the room is
        unlocked (XEP-0045 §10.1.1) both today and once item 2 is fixed."""
        return await self.room_with_alice(roomdesc="issue 11", **config)


class OwnerForms(RoomsTestCase):
    """XEP-0045 §10.1.1 (step 3): "If the room owner would prefer to create an
    instant room, the room owner MUST send a query element qualified by the
    'http://jabber.org/protocol/muc#owner' namespace and containing an empty
    <x/> element of type 'submit'". XEP-0004 §3.3: "For data forms of type
    'submit', 'result' or 'error', the receiving entity can infer the 'type'
    attribute value from context"; XEP-0068 §3 treats as legacy only "forms
    with type='submit' that do not have any field of name FORM_TYPE" — so a
    submitted FORM_TYPE field without type='hidden' is the FORM_TYPE.
    §10.1.1 (step 1): the service MUST "add the owner to the room but not
    allow anyone else to enter the room (effectively 'locking' the room)" and
    §7.2.10: "If a user attempts to enter a room while it is 'locked' ... the
    service MUST refuse entry and return an <item-not-found/> error".
    Issue item 2."""

    async def owner_set(self, client, x: str):
        return await self.iq(client, "set", ROOM_JID, f"<query xmlns='{NS_MUC_OWNER}'>{x}</query>")

    async def test_empty_submit_makes_an_instant_room(self):
        alice = await self.online("alice", "phone")
        own = await self.join(alice, "Alice", instant=False)
        self.assertIn(201, statuses(own))
        self.assert_ok(await self.owner_set(alice, "<x xmlns='jabber:x:data' type='submit'/>"))

    async def test_form_type_without_type_hidden(self):
        alice = await self.online("alice", "phone")
        await self.join(alice, "Alice", instant=False)
        x = ("<x xmlns='jabber:x:data' type='submit'>"
             f"<field var='FORM_TYPE'><value>{ROOMCONFIG}</value></field>"
             "<field var='muc#roomconfig_roomname'><value>The Den</value></field></x>")
        self.assert_ok(await self.owner_set(alice, x))
        reply = self.assert_ok(await self.iq(alice, "get", ROOM_JID, f"<query xmlns='{NS_INFO}'/>"))
        self.assertIn("The Den", reply.toXml())

    async def test_room_is_locked_until_the_owner_accepts(self):
        alice = await self.online("alice", "phone")
        own = await self.join(alice, "Alice", instant=False)
        self.assertIn(201, statuses(own))
        bob = await self.online("bob", "desk")
        bob.send(f"<presence to='{ROOM_JID}/Bob'><x xmlns='{NS_MUC}'/></presence>")
        await self.settle(bob, alice)
        answers = [e for e in bob.stanzas if e.name == "presence" and e.getAttribute("from") == f"{ROOM_JID}/Bob"]
        self.assertEqual([(e.getAttribute("type"), error_condition(e)) for e in answers],
                         [("error", "item-not-found")], [e.toXml() for e in answers])
        self.assert_ok(await self.owner_set(alice, "<x xmlns='jabber:x:data' type='submit'/>"))
        await self.join(bob, "Bob")

    async def test_only_the_owner_unlocks(self):
        alice = await self.online("alice", "phone")
        await self.join(alice, "Alice", instant=False)
        eve = await self.online("eve", "lair")
        self.assert_error(await self.owner_set(eve, "<x xmlns='jabber:x:data' type='submit'/>"), "forbidden")
        self.assert_error(await self.owner_set(eve, "<x xmlns='jabber:x:data' type='cancel'/>"), "forbidden")
        self.assertEqual(await self.refused_join(eve, "Eve"), "item-not-found")
        self.assertIsNotNone(await self.server.storage.get_node(CHAT, ROOM))

    async def test_locked_through_the_other_door_too(self):
        """The lock is the room kind's admission rule: a native subscribe, or a
        history read, by anyone but the owner is refused as if no room existed."""
        alice = await self.online("alice", "phone")
        await self.join(alice, "Alice", instant=False)
        bob = await self.online("bob", "native")
        self.assert_error(await self.native_join(bob, "Bob"), "item-not-found")
        self.assert_error(await self.items(bob, CHAT, ROOM), "item-not-found")
        self.assertIsNone(await self.subscription_of(bob.jid))
        self.assert_ok(await self.owner_set(alice, "<x xmlns='jabber:x:data' type='submit'/>"))
        self.assert_ok(await self.native_join(bob, "Bob"))

    async def test_a_room_made_through_xep_0060_is_instant(self):
        """Our reading: XEP-0207 §5's subscribe tells its maker nothing like 201."""
        bob = await self.online("bob", "native")
        self.assert_ok(await self.native_join(bob, "Bob"))
        carol = await self.online("carol", "desk")
        own = await self.join(carol, "Carol")
        self.assertNotIn(201, statuses(own))

    async def test_a_groupchat_1_0_join_makes_an_open_room(self):
        """A join without the MUC <x/> (XEP-0045 §7.2.1's older protocol) cannot
        know about 201: its room is not locked (Prosody does the same)."""
        alice = await self.online("alice", "phone")
        alice.send(f"<presence to='{ROOM_JID}/Alice'/>")
        await alice.wait_for(lambda e: from_room(ROOM_JID, "Alice")(e) and 201 in statuses(e))
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")

    async def test_the_lock_expires(self):
        """An owner who never answers 201 does not keep the room shut forever:
        it opens after the kind's ``lock_timeout`` (300 s, as Prosody's
        muc_room_lock_timeout); here the timeout is zero."""
        self.server.engine.kind_of(CHAT, ROOM).lock_timeout = 0
        alice = await self.online("alice", "phone")
        await self.join(alice, "Alice", instant=False)
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")


class LeaveRoleNone(RoomsTestCase):
    """XEP-0045 §7.14: "Presence stanzas of type 'unavailable' reflected by
    the room MUST contain extended presence information about roles and
    affiliations; in particular, the 'role' attribute MUST be set to a value
    of 'none' to denote that the individual is no longer an occupant".
    §7.2.8: a second session of the same bare JID may share the nick ("two
    (or more) in-room 'sessions' with the same roomnick"): the occupant is
    still there while one of them is, so nobody is told it left (our
    reading; the XEP names no departure rule for one session). Issue item 3."""

    async def test_unavailable_presence_says_role_none(self):
        alice = await self.open_room()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        bob.send(f"<presence to='{ROOM_JID}/Bob' type='unavailable'/>")
        own = await bob.wait_for(from_room(ROOM_JID, "Bob", "unavailable"))
        seen = await alice.wait_for(from_room(ROOM_JID, "Bob", "unavailable"))
        self.assertEqual([item_of(p)["role"] for p in (own, seen)], ["none", "none"], seen.toXml())

    async def test_one_of_two_sessions_leaving_is_not_announced(self):
        alice = await self.open_room()
        desk = await self.online("bob", "desk")
        await self.join(desk, "Bob")
        phone = await self.online("bob", "phone")
        await self.join(phone, "Bob")
        await self.settle(alice, desk, phone)
        since = len(alice.stanzas)
        phone.send(f"<presence to='{ROOM_JID}/Bob' type='unavailable'/>")
        await self.settle(phone, alice, desk)
        self.nothing(alice, from_room(ROOM_JID, "Bob", "unavailable"), since)
        self.say(alice, "still there?")
        await desk.wait_for(groupchat("still there?"))


class SubjectAfterHistory(RoomsTestCase):
    """XEP-0045 §7.2.15: "After the room has optionally sent the discussion
    history to the new occupant, it SHALL send the current room subject" — one
    subject message, after the history (§7.2.13); clients take it as the end
    of the join, so a past subject change is not history. Issue item 4."""

    async def test_subject_changes_are_not_replayed_as_history(self):
        alice = await self.open_room()
        for subject in ("first topic", "second topic"):
            alice.send(f"<message to='{ROOM_JID}' type='groupchat'><subject>{subject}</subject></message>")
            await alice.wait_for(lambda e: subject_message(e) and str(e.subject) == subject)
        self.say(alice, "hello")
        await alice.wait_for(groupchat("hello"))
        bob = await self.online("bob", "desk")
        bob.send(f"<presence to='{ROOM_JID}/Bob'><x xmlns='{NS_MUC}'/></presence>")
        await bob.wait_for(lambda e: from_room(ROOM_JID, "Bob")(e) and 110 in statuses(e))
        await self.settle(bob)
        subjects = [str(e.subject) for e in bob.stanzas if subject_message(e)]
        self.assertEqual(subjects, ["second topic"])
        messages = [e for e in bob.stanzas if e.name == "message"]
        self.assertTrue(subject_message(messages[-1]), [m.toXml() for m in messages])
        self.assertIn("hello", messages[-2].toXml())


class AdminNickItem(RoomsTestCase):
    """XEP-0045 §9.3: membership is granted "by changing the affiliation for
    the user's bare JID to 'member' (if a nick is provided, that nick becomes
    the user's default nick in the room ...)". A nick-only <item/> (Profanity
    sends one for an occupant) is not defined there: resolving it to the
    occupant's bare JID, or a stanza error such as <bad-request/>, are both
    acceptable; <internal-server-error/> (RFC 6120 §8.3.3.5, "the server has
    experienced a misconfiguration or other internal error") is not. Issue item 5."""

    async def test_member_by_nick(self):
        alice = await self.open_room()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        reply = await self.admin(alice, "<item affiliation='member' nick='Bob'/>")
        self.assertNotEqual(error_condition(reply), "internal-server-error", reply.toXml())
        if reply["type"] == "result":
            listing = self.assert_ok(await self.iq(alice, "get", ROOM_JID,
                                                   f"<query xmlns='{NS_ADMIN}'><item affiliation='member'/></query>"))
            self.assertEqual([i["jid"] for i in listing.query.elements() if i.name == "item"], [BOB])


class NativeJoinConflict(RoomsTestCase):
    """XEP-0045 §7.2.8 (the issue says §7.2.9, which is Max Users): "If the
    room already contains another user with the nickname desired by the user
    seeking to enter the room ..., the service MUST deny access to the room and
    inform the user of the conflict" (<conflict/>); XEP-0207 §5 makes the
    XEP-0060 subscribe with a roomnick the same join. Issue item 12."""

    async def test_taken_nick_is_a_conflict(self):
        await self.open_room()
        bob = await self.online("bob", "native")
        reply = await self.native_join(bob, "Alice")
        self.assert_error(reply, "conflict")
        self.assertIsNone(await self.subscription_of(bob.jid))

    async def test_taken_nick_for_a_bare_jid_is_a_conflict(self):
        await self.open_room()
        bob = await self.online("bob", "native")
        self.assert_error(await self.subscribe(bob, CHAT, ROOM, jid=BOB, options={"roomnick": "Alice"}), "conflict")

    async def test_changing_to_a_taken_nick_is_a_conflict(self):
        """§7.6: a nick change to a nick in use MUST be refused with <conflict/>."""
        alice = await self.open_room()
        bob = await self.online("bob", "native")
        self.assert_ok(await self.native_join(bob, "Bob"))
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        self.assert_error(await self.set_options(bob, CHAT, ROOM, {"roomnick": "Alice"}), "conflict")
        await self.settle(bob, alice)
        self.nothing(alice, from_room(ROOM_JID, "Alice", "unavailable"))


class SemiAnonymous(RoomsTestCase):
    """XEP-0045 §7.2.4: "If the room is semi-anonymous, the service MUST send
    presence from the new occupant to all occupants ... but MUST include the
    new occupant's full JID only in the presence notifications it sends to
    occupants with a role of 'moderator' and not to non-moderator occupants."
    §7.2.3: in a non-anonymous room "the service MUST warn the user by
    including a status code of '100' in the initial presence". §10.2.1: "If the
    room is now non-anonymous, status code 172. If the room is now
    semi-anonymous, status code 173." §16.5.3: muc#roomconfig_whois
    ("moderators" / "anyone"). Semi-anonymous by default, as the issue asks
    (Prosody and ejabberd do so; the XEP sets no default). Issue item 15."""

    async def test_form_offers_whois_defaulting_to_moderators(self):
        alice = await self.open_room()
        reply = self.assert_ok(await self.iq(alice, "get", ROOM_JID, f"<query xmlns='{NS_MUC_OWNER}'/>"))
        field = next((f for f in reply.query.x.elements() if f.name == "field"
                      and f.getAttribute("var") == "muc#roomconfig_whois"), None)
        self.assertIsNotNone(field, reply.toXml())
        options = {str(o.value) for o in field.elements() if o.name == "option"}
        self.assertEqual(options, {"moderators", "anyone"})
        self.assertEqual(str(field.value), "moderators")

    async def test_default_room_hides_jids_from_participants(self):
        alice = await self.open_room()
        bob = await self.online("bob", "desk")
        own = await self.join(bob, "Bob")
        self.assertNotIn(100, statuses(own))
        alice_seen_by_bob = next(e for e in bob.stanzas if from_room(ROOM_JID, "Alice")(e))
        self.assertIsNone(item_of(alice_seen_by_bob).getAttribute("jid"), alice_seen_by_bob.toXml())
        bob_seen_by_alice = await alice.wait_for(from_room(ROOM_JID, "Bob"))  # alice moderates
        self.assertEqual(item_of(bob_seen_by_alice).getAttribute("jid"), bob.jid)
        info = self.assert_ok(await self.iq(bob, "get", ROOM_JID, f"<query xmlns='{NS_INFO}'/>"))
        features = {f["var"] for f in info.query.elements() if f.name == "feature"}
        self.assertIn("muc_semianonymous", features)
        self.assertNotIn("muc_nonanonymous", features)

    async def test_whois_anyone_shows_jids_with_status_100(self):
        alice = await self.open_room(whois="anyone")
        bob = await self.online("bob", "desk")
        own = await self.join(bob, "Bob")
        self.assertIn(100, statuses(own))
        alice_seen_by_bob = next(e for e in bob.stanzas if from_room(ROOM_JID, "Alice")(e))
        self.assertEqual(item_of(alice_seen_by_bob).getAttribute("jid"), alice.jid)

    async def test_changes_are_announced_with_172_and_173(self):
        alice = await self.open_room()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")

        def status_message(code):
            return lambda e: (e.name == "message" and e.getAttribute("from") == ROOM_JID
                              and any(int(s["code"]) == code for x in user_x(e)
                                      for s in x.elements() if s.name == "status"))
        await self.configure(alice, whois="anyone")
        await bob.wait_for(status_message(172), timeout=5)
        await self.configure(alice, whois="moderators")
        await bob.wait_for(status_message(173), timeout=5)


class NativeSubject(RoomsTestCase):
    """XEP-0207 §5: a subject change published through XEP-0060 is the same
    change as XEP-0045 §8.1's message: newcomers are sent it (§7.2.16), once,
    from the occupant who set it; who may set it is the room kind's rule."""

    async def test_a_native_subject_is_the_room_subject(self):
        alice = await self.open_room(changesubject="1")
        carol = await self.online("carol", "native")
        self.assert_ok(await self.native_join(carol, "Carol"))
        self.assert_ok(await self.publish(carol, CHAT, ROOM, "<message xmlns='jabber:client'>"
                                                             "<subject>set natively</subject></message>"))
        await alice.wait_for(lambda e: subject_message(e) and str(e.subject) == "set natively")
        await self.settle(carol, alice)
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        await self.settle(bob)
        subjects = [(e["from"], str(e.subject)) for e in bob.stanzas if subject_message(e)]
        self.assertEqual(subjects, [(f"{ROOM_JID}/Carol", "set natively")])

    async def test_a_participant_may_not_where_the_room_says_so(self):
        alice = await self.open_room()
        carol = await self.online("carol", "native")
        self.assert_ok(await self.native_join(carol, "Carol"))
        self.assert_error(await self.publish(carol, CHAT, ROOM, "<message xmlns='jabber:client'>"
                                                                "<subject>coup</subject></message>"), "forbidden")
        await self.settle(carol, alice)
        node = await self.server.storage.get_node(CHAT, ROOM)
        self.assertNotEqual(node.config.extra.get("subject"), "coup")


class SmallerNits(RoomsTestCase):
    """Issue item 16 (its caps nit is ConcurrentUnknownCaps in
    test_protocol_correctness.py). XEP-0045 §7.5: "the sending client SHOULD
    add an <x/> element qualified by the 'http://jabber.org/protocol/muc#user'
    namespace" and "The service SHOULD add the <x/> element if the message does
    not contain it already" (so one, not two); §6.4: "The room MUST return its
    identity" (category conference, named after the room); §7.2.15: the
    subject once."""

    async def test_private_message_has_one_muc_user_x(self):
        alice = await self.open_room()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        # XEP-0045 §7.5: the client "SHOULD include" the empty muc#user x itself (Profanity does).
        alice.send(f"<message to='{ROOM_JID}/Bob' type='chat'><body>psst</body><x xmlns='{NS_USER}'/></message>")
        private = await bob.wait_for(lambda e: e.name == "message" and e.body is not None and str(e.body) == "psst")
        self.assertLessEqual(len(user_x(private)), 1, private.toXml())

    async def test_disco_name_is_the_title_or_the_node(self):
        """Every identity of the room JID names the room (a client shows any
        one of them): not the pubsub service's name."""
        alice = await self.open_room()
        self.assertEqual(await self.room_identities(alice), {("conference", ROOM)})
        await self.configure(alice, roomname="The Den")
        self.assertEqual(await self.room_identities(alice), {("conference", "The Den")})

    async def room_identities(self, client):
        info = self.assert_ok(await self.iq(client, "get", ROOM_JID, f"<query xmlns='{NS_INFO}'/>"))
        return {(i["category"], i.getAttribute("name")) for i in info.query.elements() if i.name == "identity"
                and i["category"] != "pubsub" or i.getAttribute("name") == "xep207 publish-subscribe"}

    async def test_subject_once_on_join(self):
        alice = await self.open_room()
        alice.send(f"<message to='{ROOM_JID}' type='groupchat'><subject>topic</subject></message>")
        await alice.wait_for(lambda e: subject_message(e) and str(e.subject) == "topic")
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        await self.settle(bob, alice)
        self.assertEqual(len([e for e in bob.stanzas if subject_message(e)]), 1,
                         [e.toXml() for e in bob.stanzas if subject_message(e)])



class NativeJoinConflictOnSQLite(NativeJoinConflict):
    storage = "sqlite"  # storage that yields between the nick check and the subscription
