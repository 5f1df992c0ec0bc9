"""Rooms attacked through both doors: a participant, a visitor or a stranger
trying to learn a real JID in a semi-anonymous room (XEP-0045 §7.2.4), to
forge what only the room says, or to get into (or hold) a locked room.

Each ``Found`` test failed before its fix; the ``Held`` tests pin down the
paths that were tried and gave nothing away.
"""

from tests.doors_helpers import (
    ALICE,
    BOB,
    CAROL,
    CHAT,
    EVE,
    NS_ADMIN,
    NS_MUC,
    NS_MUC_OWNER,
    NS_USER,
    ROOM,
    ROOM_JID,
    RoomDoorsTestCase,
    error_of,
    event_on,
    from_room,
    groupchat,
    statuses,
)

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
REAL_JIDS = (ALICE, BOB, CAROL, EVE)


def meta_data_owners(reply) -> list[str]:
    for x in reply.query.elements("jabber:x:data", "x"):
        for field in x.elements("jabber:x:data", "field"):
            if field.getAttribute("var") == "pubsub#owner":
                return [str(v) for v in field.elements("jabber:x:data", "value")]
    return []


class AttackTestCase(RoomDoorsTestCase):
    async def full_room(self, **config):
        """alice owns (moderates); bob is a legacy participant, carol a native one."""
        alice = await self.room_with_alice(**config)
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        carol = await self.online("carol", "native")
        self.assert_ok(await self.native_join(carol, "Carol"))
        await bob.wait_for(from_room(ROOM_JID, "Carol"))
        return alice, bob, carol

    def assert_no_real_jid(self, stanzas, *, but=()):
        for stanza in stanzas:
            xml = stanza.toXml() if hasattr(stanza, "toXml") else stanza
            for jid in REAL_JIDS:
                if jid not in but:
                    self.assertNotIn(jid, xml)


class Found(AttackTestCase):
    async def test_the_room_nodes_disco_info_names_no_owner_to_a_stranger(self):
        """XEP-0060 disco#info meta-data of the room node listed its creator
        (pubsub#owner) to anyone: a semi-anonymous room's owner, unmasked."""
        await self.full_room()
        for asker in (await self.online("eve", "lair"), await self.online("bob", "other")):
            reply = self.assert_ok(await self.iq(asker, "get", CHAT,
                                                 f"<query xmlns='{NS_DISCO_INFO}' node='{ROOM}'/>"))
            self.assertEqual(meta_data_owners(reply), [])
            self.assert_no_real_jid([reply.query])

    async def test_a_non_anonymous_rooms_disco_info_still_names_its_owner(self):
        await self.full_room(whois="anyone")
        eve = await self.online("eve", "lair")
        reply = self.assert_ok(await self.iq(eve, "get", CHAT, f"<query xmlns='{NS_DISCO_INFO}' node='{ROOM}'/>"))
        self.assertEqual(meta_data_owners(reply), [ALICE])

    async def test_a_private_message_of_type_groupchat_is_refused(self):
        """§7.5: relayed, it reached one occupant as a public message, or as a
        subject change, that nobody else saw."""
        alice, bob, carol = await self.full_room()
        bob.send(f"<message to='{ROOM_JID}/Alice' type='groupchat' id='forge'>"
                 "<subject>forged</subject><body>forged</body></message>")
        error = await bob.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "forge")
        self.assertEqual(error["type"], "error", error.toXml())
        self.assertEqual(error_of(error)[0], "bad-request")
        await self.settle(alice, bob, carol)
        self.nothing(alice, lambda e: e.name == "message" and "forged" in e.toXml())
        # A private message of type chat still goes through.
        bob.send(f"<message to='{ROOM_JID}/Alice' type='chat'><body>psst</body></message>")
        got = await alice.wait_for(lambda e: e.name == "message" and e.body is not None and str(e.body) == "psst")
        self.assertEqual((got["from"], got["type"]), (f"{ROOM_JID}/Bob", "chat"))

    async def test_occupants_cannot_speak_with_the_rooms_voice(self):
        """A groupchat message (either door) kept its muc#user <x/>: an occupant
        could send everyone, and the history, a status 173 or an occupant
        <item/> with someone's real JID, under the room's namespace."""
        alice, bob, carol = await self.full_room()
        forged = (f"<x xmlns='{NS_USER}'><status code='173'/><status code='110'/>"
                  f"<item jid='{ALICE}/phone' affiliation='owner' role='moderator'/></x>")
        bob.send(f"<message to='{ROOM_JID}' type='groupchat'><body>legacy spoof</body>{forged}</message>")
        self.assert_ok(await self.publish(carol, CHAT, ROOM, "<message xmlns='jabber:client' type='groupchat'>"
                                                             f"<body>native spoof</body>{forged}</message>"))
        for body in ("legacy spoof", "native spoof"):
            seen = await alice.wait_for(groupchat(body))
            self.assertEqual(list(seen.elements(NS_USER, "x")), [], seen.toXml())
        event = await carol.wait_for(lambda e: event_on(ROOM, "items")(e) and "legacy spoof" in e.toXml())
        self.assertNotIn(NS_USER, event.toXml())
        items = self.assert_ok(await self.items(bob, CHAT, ROOM))
        self.assertIn("native spoof", items.toXml())
        self.assertNotIn(NS_USER, items.toXml())
        eve = await self.online("eve", "lair")
        await self.join(eve, "Eve")
        history = await eve.wait_for(groupchat("native spoof"))
        self.assertNotIn(NS_USER, history.toXml())

    async def test_an_admin_revoked_through_xep0060_stays_revoked(self):
        """An admin is a publisher the room's settings list; revoked through
        XEP-0060 (affiliation none), the JID stayed listed, so a later grant of
        membership silently made it an admin again, moderator of every JID."""
        alice = await self.room_with_alice()
        self.assert_ok(await self.admin(alice, f"<item jid='{BOB}' affiliation='admin'/>"))
        for affiliation in ("none", "publisher"):
            self.assert_ok(await self.pubsub(alice, "set", CHAT, f"<affiliations node='{ROOM}'><affiliation "
                                                                 f"jid='{BOB}' affiliation='{affiliation}'/>"
                                                                 "</affiliations>", owner=True))
        listing = self.assert_ok(await self.iq(alice, "get", ROOM_JID, f"<query xmlns='{NS_ADMIN}'/>"))
        self.assertEqual({i["jid"]: i["affiliation"] for i in listing.query.elements(NS_ADMIN, "item")},
                         {ALICE: "owner", BOB: "member"})
        bob = await self.online("bob", "desk")
        own = await self.join(bob, "Bob")
        self.assertEqual((own.x.item["affiliation"], own.x.item["role"]), ("member", "participant"))


class Held(AttackTestCase):
    """Tried, and nothing was given away."""

    async def test_iqs_to_an_occupant_are_not_relayed_and_tell_nothing(self):
        """§7.3 relays iqs to occupants; relaying would hand the target's client
        the asker's real JID (and its answers, e.g. a vCard, the target's). The
        service answers every nick the same, taken or not."""
        alice, bob, carol = await self.full_room()
        eve = await self.online("eve", "lair")
        await self.join(eve, "Eve")
        for body in ("<vCard xmlns='vcard-temp'/>", "<query xmlns='jabber:iq:version'/>",
                     f"<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{ROOM}'/></pubsub>"):
            answers = set()
            for nick in ("Alice", "Carol", "Nobody"):
                reply = await self.iq(eve, "get", f"{ROOM_JID}/{nick}", body)
                answers.add(error_of(reply))
                self.assert_no_real_jid([reply], but=(EVE,))
            self.assertEqual(answers, {("service-unavailable", None)})
        await self.settle(alice, bob, carol)
        for client in (alice, bob, carol):
            self.nothing(client, lambda e: e.name == "iq" and EVE in e.getAttribute("from", ""))

    async def test_a_non_occupant_cannot_probe_nicks_or_occupancy(self):
        """Self-ping (XEP-0410), XEP-0060 options and unsubscribe of another's
        JID: the same answer for an occupant, a stranger and a missing room."""
        alice, bob, carol = await self.full_room()
        eve = await self.online("eve", "lair")
        pings = {error_of(await self.iq(eve, "get", to, "<ping xmlns='urn:xmpp:ping'/>"))
                 for to in (f"{ROOM_JID}/Bob", f"{ROOM_JID}/Carol", f"{ROOM_JID}/Nobody", f"nowhere@{CHAT}/Bob")}
        self.assertEqual(pings, {("not-acceptable", None)})
        for verb in ("get-options", "unsubscribe"):
            answers = set()
            for jid in (bob.jid, carol.jid, "nobody@localhost/x"):
                if verb == "get-options":
                    reply = await self.get_options(eve, CHAT, ROOM, jid=jid)
                else:
                    reply = await self.pubsub(eve, "set", CHAT, f"<unsubscribe node='{ROOM}' jid='{jid}'/>")
                answers.add(error_of(reply))
            self.assertEqual(len(answers), 1, (verb, answers))
        # disco#info to an occupant JID answers alike whoever holds the nick.
        infos = [(await self.iq(eve, "get", f"{ROOM_JID}/{nick}", f"<query xmlns='{NS_DISCO_INFO}'/>")).toXml()
                 .replace(f"/{nick}'", "/N'") for nick in ("Bob", "Nobody")]
        self.assertEqual(infos[0].split("id=")[0], infos[1].split("id=")[0])
        # disco#items of the room lists no occupants.
        items = self.assert_ok(await self.iq(eve, "get", ROOM_JID,
                                             "<query xmlns='http://jabber.org/protocol/disco#items'/>"))
        self.assertEqual(list(items.query.elements()), [])

    async def test_invitations_kicks_nick_changes_and_demotions_show_no_jid(self):
        alice, bob, carol = await self.full_room()
        eve = await self.online("eve", "lair")
        since = {c: len(c.stanzas) for c in (bob, carol, eve)}
        # An invitation names the inviter by occupant JID; a decline from a
        # non-occupant is refused.
        bob.send(f"<message to='{ROOM_JID}'><x xmlns='{NS_USER}'><invite to='{EVE}'/></x></message>")
        invite = await eve.wait_for(lambda e: e.name == "message" and "invite" in e.toXml())
        self.assertEqual(invite.x.invite["from"], f"{ROOM_JID}/Bob")
        # bob becomes a moderator, then is demoted: what he is sent afterwards has no JIDs.
        self.assert_ok(await self.admin(alice, "<item nick='Bob' role='moderator'/>"))
        await bob.wait_for(lambda e: from_room(ROOM_JID, "Carol")(e) and CAROL in e.toXml())
        self.assert_ok(await self.admin(alice, "<item nick='Bob' role='participant'/>"))
        await self.settle(alice, bob, carol)
        since[bob] = len(bob.stanzas)
        await self.join(eve, "Eve")
        eve.send(f"<presence to='{ROOM_JID}/Evil'/>")  # a nick change: 303
        await bob.wait_for(from_room(ROOM_JID, "Evil"))
        self.assert_ok(await self.admin(alice, "<item nick='Evil' role='none'><reason>out</reason></item>"))
        kicked = await bob.wait_for(lambda e: from_room(ROOM_JID, "Evil", "unavailable")(e) and 307 in statuses(e))
        self.assertIsNone(kicked.x.item.getAttribute("jid"))
        self.assertIsNone(kicked.x.item.actor)
        await self.settle(alice, bob, carol, eve)
        self.assert_no_real_jid(bob.stanzas[since[bob]:], but=(BOB,))
        self.assert_no_real_jid(carol.stanzas[since[carol]:], but=(CAROL,))
        self.assert_no_real_jid(eve.stanzas[since[eve]:], but=(EVE,))
        # bob's lists are gone with his moderation, through both doors.
        self.assert_error(await self.pubsub(bob, "get", CHAT, f"<subscriptions node='{ROOM}'/>", owner=True),
                          "forbidden")
        self.assert_error(await self.iq(bob, "get", ROOM_JID, f"<query xmlns='{NS_ADMIN}'>"
                                                              "<item affiliation='owner'/></query>"), "forbidden")

    async def test_errors_from_an_occupants_client_are_not_relayed(self):
        """An error a client returns for a room message names that client's
        real JID: it must not reach the sender."""
        alice, bob, carol = await self.full_room()
        since = len(bob.stanzas)
        bob.send(f"<message to='{ROOM_JID}/Alice' type='chat'><body>hey</body></message>")
        await alice.wait_for(lambda e: e.name == "message" and e.body is not None and str(e.body) == "hey")
        alice.send(f"<message to='{ROOM_JID}/Bob' type='error'><body>hey</body><error type='cancel'>"
                   "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
        await self.settle(alice, bob)
        self.assert_no_real_jid(bob.stanzas[since:], but=(BOB,))


class LockedRoom(AttackTestCase):
    """A new room made through XEP-0045 is locked until its owner configures it."""

    async def locked_room(self):
        alice = await self.online("alice", "phone")
        own = await self.join(alice, "Alice", instant=False)
        self.assertIn(201, statuses(own))
        return alice

    async def test_nobody_else_gets_in_or_reads_it_through_either_door(self):
        alice = await self.locked_room()
        eve = await self.online("eve", "lair")
        self.assertEqual(await self.refused_join(eve, "Eve"), "item-not-found")
        eve.send(f"<presence to='{ROOM_JID}/Eve2'/>")  # a groupchat 1.0 join does not unlock it either
        self.assertEqual(error_of(await eve.wait_for(from_room(ROOM_JID, "Eve2", "error")))[0], "item-not-found")
        self.assert_error(await self.native_join(eve, "Eve"), "item-not-found")
        self.assert_error(await self.items(eve, CHAT, ROOM), "item-not-found")
        self.assert_error(await self.iq(eve, "get", CHAT, f"<query xmlns='{NS_DISCO_INFO}' node='{ROOM}'/>"),
                          "item-not-found")

    async def test_a_non_owner_cannot_configure_cancel_or_destroy_it(self):
        alice = await self.locked_room()
        eve = await self.online("eve", "lair")
        for x in ("<x xmlns='jabber:x:data' type='submit'/>", "<x xmlns='jabber:x:data' type='cancel'/>",
                  "<destroy/>"):
            self.assert_error(await self.iq(eve, "set", ROOM_JID, f"<query xmlns='{NS_MUC_OWNER}'>{x}</query>"),
                              "forbidden")
        self.assertEqual(await self.refused_join(eve, "Eve"), "item-not-found")  # still locked
        self.assertIsNotNone(await self.server.storage.get_node(CHAT, ROOM))  # and still there
        # Its owner's other session gets in; then the owner unlocks it for everyone.
        laptop = await self.online("alice", "laptop")
        laptop.send(f"<presence to='{ROOM_JID}/Alice2'><x xmlns='{NS_MUC}'/></presence>")
        await laptop.wait_for(lambda e: from_room(ROOM_JID, "Alice2")(e) and 110 in statuses(e))
        self.assert_ok(await self.iq(alice, "set", ROOM_JID, f"<query xmlns='{NS_MUC_OWNER}'>"
                                                             "<x xmlns='jabber:x:data' type='submit'/></query>"))
        await self.join(eve, "Eve")

    async def test_two_creators_at_once_make_one_owner(self):
        """A legacy join and a native subscribe race to make the same room:
        one of them made it and owns it; the other is an ordinary occupant."""
        alice = await self.online("alice", "phone")
        eve = await self.online("eve", "native")
        alice.send(f"<presence to='{ROOM_JID}/Alice'><x xmlns='{NS_MUC}'/></presence>")
        native = await self.native_join(eve, "Eve")
        await self.settle(alice, eve)
        affiliations = await self.server.storage.get_affiliations(CHAT, ROOM)
        owners = {e for e, a in affiliations.items() if a == "owner"} - {CHAT}
        self.assertEqual(len(owners), 1, affiliations)
        if owners == {EVE}:  # the native door won: an instant room, alice joins it
            self.assert_ok(native)
            own = next(e for e in alice.stanzas if from_room(ROOM_JID, "Alice")(e) and 110 in statuses(e))
            self.assertNotIn(201, statuses(own))
        else:  # the legacy door won: locked, eve is kept out
            self.assert_error(native, "item-not-found")


class MembersOnly(AttackTestCase):
    async def test_a_non_member_reads_nothing_through_either_door(self):
        alice = await self.room_with_alice(membersonly="1", whois="anyone")
        self.assert_ok(await self.admin(alice, f"<item jid='{BOB}' affiliation='member'/>"))
        self.say(alice, "secret words")
        alice.send(f"<message to='{ROOM_JID}' type='groupchat'><subject>secret subject</subject></message>")
        await self.settle(alice)
        eve = await self.online("eve", "lair")
        self.assertEqual(await self.refused_join(eve, "Eve"), "registration-required")
        self.assert_error(await self.native_join(eve, "Eve"), "registration-required")
        self.assert_error(await self.items(eve, CHAT, ROOM), "registration-required")
        self.assert_error(await self.iq(eve, "get", CHAT, f"<query xmlns='{NS_DISCO_INFO}' node='{ROOM}'/>"),
                          "item-not-found")
        self.assert_error(await self.iq(eve, "get", ROOM_JID, f"<query xmlns='{NS_ADMIN}'>"
                                                              "<item affiliation='member'/></query>"), "forbidden")
        self.assert_error(await self.pubsub(eve, "get", CHAT, f"<affiliations node='{ROOM}'/>", owner=True),
                          "forbidden")
        info = self.assert_ok(await self.iq(eve, "get", ROOM_JID, f"<query xmlns='{NS_DISCO_INFO}'/>"))
        self.assertNotIn("secret", info.toXml())
        self.assert_no_real_jid([info.query])
        items = self.assert_ok(await self.iq(eve, "get", CHAT, "<query xmlns='http://jabber.org/protocol/disco#items'/>"))
        self.assertNotIn(ROOM, items.toXml())
        # A member reads the lists of this non-anonymous room; not once it is semi-anonymous.
        bob = await self.online("bob", "desk")
        listing = self.assert_ok(await self.iq(bob, "get", ROOM_JID, f"<query xmlns='{NS_ADMIN}'>"
                                                                     "<item affiliation='member'/></query>"))
        self.assertEqual([i["jid"] for i in listing.query.elements(NS_ADMIN, "item")], [BOB])
        self.assert_error(await self.iq(bob, "set", ROOM_JID, f"<query xmlns='{NS_ADMIN}'>"
                                                              f"<item jid='{EVE}' affiliation='member'/></query>"),
                          "forbidden")
        await self.configure(alice, whois="moderators")
        self.assert_error(await self.iq(bob, "get", ROOM_JID, f"<query xmlns='{NS_ADMIN}'>"
                                                              "<item affiliation='member'/></query>"), "forbidden")
        self.assert_error(await self.pubsub(bob, "get", CHAT, f"<affiliations node='{ROOM}'/>", owner=True),
                          "forbidden")

    async def test_affiliation_notices_reach_only_those_who_see_jids(self):
        """An affiliation change of someone absent names that JID: moderators
        of a semi-anonymous room are told, participants are not."""
        alice, bob, carol = await self.full_room()
        since = len(bob.stanzas)
        self.assert_ok(await self.admin(alice, f"<item jid='{EVE}' affiliation='outcast'/>"))
        told = await alice.wait_for(lambda e: e.name == "message" and EVE in e.toXml())
        self.assertEqual(told["from"], ROOM_JID)
        await self.settle(alice, bob, carol)
        self.assert_no_real_jid(bob.stanzas[since:], but=(BOB,))
