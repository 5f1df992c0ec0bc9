"""A fresh attack on the two doors after the node kinds (issue 10, TWO_DOORS_SPEC.md).

Each test class is one hole found (the test fails until it is fixed) or one
behaviour verified (a pin that passes). Attacks come as eve (nobody's contact)
or as an occupant/party overstepping, through the XEP-0060 door, the legacy
door or both; the victims are legacy clients unless said otherwise.
"""

from xml.sax.saxutils import quoteattr

from tests.doors_helpers import (
    ALICE,
    BOB,
    CAROL,
    CHAT,
    DOMAIN,
    EVE,
    NODE_CONFIG,
    NS_MUC,
    PUBSUB,
    ROOM,
    ROOM_JID,
    DoorsTestCase,
    RoomDoorsTestCase,
    chat_body,
    chat_item,
    error_condition,
    form,
    from_room,
    message_with,
    pair,
    statuses,
)
from tests.server_helpers import PASSWORD
from xep207.server.accounts import create_account, delete_account


def presence_from(user: str, type=None):
    return lambda e: (e.name == "presence" and e.getAttribute("from", "").split("/")[0] == user
                      and e.getAttribute("type") == type)


def subject_message(e) -> bool:
    return e.name == "message" and e.subject is not None and "pwned" in str(e.subject)


# Rooms ---------------------------------------------------------------------------


class NickImpersonation(RoomDoorsTestCase):
    """XEP-0045 §7.2.9 compares nicks after resourceprep; the legacy door gets a
    prepped nick from the router, the XEP-0060 door stores ``roomnick`` raw."""

    async def test_fullwidth_nick_is_the_same_nick(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        eve = await self.online("eve", "lair")
        # U+FF21 FULLWIDTH LATIN CAPITAL LETTER A: resourceprep (NFKC) makes it "A".
        self.assertEqual(await self.refused_join(eve, "\uff21lice"), "conflict")  # legacy door: prepped
        self.assert_error(await self.native_join(eve, "\uff21lice"), "conflict")
        await self.settle(eve, bob, alice)
        self.nothing(bob, lambda e: e.name == "presence" and "lice" in e.getAttribute("from", "")
                     and e.getAttribute("from") != f"{ROOM_JID}/Alice")

    async def test_zero_width_nick_is_the_same_nick(self):
        await self.room_with_alice()
        eve = await self.online("eve", "lair")
        # U+200B ZERO WIDTH SPACE is "commonly mapped to nothing" (RFC 3454 B.1).
        self.assert_error(await self.native_join(eve, "Al\u200bice"), "conflict")


class SubjectThroughTheBackDoor(RoomDoorsTestCase):
    """XEP-0045 §8.1: only moderators change the subject unless the room lets
    participants. The legacy door checks; a native publish of a message with a
    ``<subject/>`` reaches every legacy occupant as a subject change."""

    async def test_participant_cannot_change_the_subject_natively(self):
        alice = await self.room_with_alice(changesubject="0")
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        eve = await self.online("eve", "lair")
        self.assert_ok(await self.native_join(eve, "Eve"))
        await bob.wait_for(from_room(ROOM_JID, "Eve"))
        # The legacy door says no.
        carol = await self.online("carol", "home")
        await self.join(carol, "Carol")
        carol.send(f"<message to='{ROOM_JID}' type='groupchat'><subject>pwned</subject></message>")
        self.assertEqual(error_condition(await carol.wait_for(
            lambda e: e.name == "message" and e.getAttribute("type") == "error")), "forbidden")
        # So must the XEP-0060 door.
        reply = await self.publish(eve, CHAT, ROOM, "<message xmlns='jabber:client'><subject>pwned</subject></message>")
        self.assert_error(reply, "forbidden")
        await self.settle(eve, bob, alice)
        self.nothing(bob, subject_message)
        self.nothing(alice, subject_message)


class RoomNamesAreJids(RoomDoorsTestCase):
    """A room is room@chat.DOMAIN: its node name is a nodeprepped localpart.
    The XEP-0060 door must not make ``DEN`` beside ``den``: a room no legacy
    client can reach (its JID normalizes to den@…), listed beside the real one."""

    async def test_unnormalized_room_name_makes_no_second_room(self):
        await self.room_with_alice(passwordprotectedroom="1", roomsecret="cauldron")
        eve = await self.online("eve", "lair")
        reply = await self.subscribe(eve, CHAT, "DEN", options={"roomnick": "Eve"})
        self.assert_failed(reply)  # the password room (not-authorized), or a malformed name
        self.assertIsNone(await self.server.storage.get_node(CHAT, "DEN"))


class RoomDeletedThroughXep0060(RoomDoorsTestCase):
    """The owner deletes the room node through XEP-0060 (or it is refused).
    If it is accepted, XEP-0045 §10.9 occupants must learn the room is gone:
    otherwise legacy clients stay 'in' a room that no longer exists."""

    async def test_legacy_occupants_are_told(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        reply = await self.pubsub(alice, "set", CHAT, f"<delete node='{ROOM}'/>", owner=True)
        if reply["type"] == "error":
            self.assertIsNotNone(await self.server.storage.get_node(CHAT, ROOM))
            return
        gone = await bob.wait_for(lambda e: from_room(ROOM_JID, "Bob", "unavailable")(e), timeout=5)
        self.assertIn("destroy", gone.toXml())


class NativeNickChange(RoomDoorsTestCase):
    """TWO_DOORS_SPEC: setting ``roomnick`` on an existing subscription is a
    nick change. Legacy occupants must see it (XEP-0045 §7.6: 303 then the new
    nick), not messages from a nick that never joined."""

    async def test_legacy_occupants_see_the_new_nick(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "native")
        self.assert_ok(await self.native_join(bob, "Bob"))
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        self.assert_ok(await self.set_options(bob, CHAT, ROOM, {"roomnick": "Robert"}))
        left = await alice.wait_for(from_room(ROOM_JID, "Bob", "unavailable"), timeout=5)
        self.assertIn(303, statuses(left))
        await alice.wait_for(from_room(ROOM_JID, "Robert"), timeout=5)

    async def test_legacy_occupant_changing_nick_natively_is_announced(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        self.assert_ok(await self.set_options(bob, CHAT, ROOM, {"roomnick": "Robert"}))
        await alice.wait_for(from_room(ROOM_JID, "Robert"), timeout=5)


class ModeratorGrantsModerator(RoomDoorsTestCase):
    """XEP-0045 §9.6/§9.7: granting and revoking moderator status are admin
    use cases; a moderator only grants and revokes voice (§8.3–8.4)."""

    async def _moderated(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        carol = await self.online("carol", "home")
        await self.join(carol, "Carol")
        self.assert_ok(await self.admin(alice, "<item nick='Bob' role='moderator'/>"))
        return alice, bob, carol

    async def test_legacy_door(self):
        alice, bob, carol = await self._moderated()
        self.assert_failed(await self.admin(bob, "<item nick='Carol' role='moderator'/>"))

    async def test_xep0060_door(self):
        alice, bob, carol = await self._moderated()
        self.assert_failed(await self.set_options(bob, CHAT, ROOM, {"xep207#role": "moderator"}, jid=carol.jid))


class BanThroughXep0060(RoomDoorsTestCase):
    """An owner bans through XEP-0060 affiliations: legacy occupants must see
    a ban (XEP-0045 §9.1 status 301), as through muc#admin."""

    async def test_ban_is_announced_with_301(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        reply = await self.pubsub(alice, "set", CHAT, f"<affiliations node='{ROOM}'>"
                                                      f"<affiliation jid='{BOB}' affiliation='outcast'/></affiliations>",
                                  owner=True)
        self.assert_ok(reply)
        seen = await alice.wait_for(from_room(ROOM_JID, "Bob", "unavailable"))
        self.assertIn(301, statuses(seen))
        own = await bob.wait_for(from_room(ROOM_JID, "Bob", "unavailable"))
        self.assertIn(301, statuses(own))


class AdminBannedThroughXep0060(RoomDoorsTestCase):
    """An owner bans (or demotes) an admin through XEP-0060 affiliations. The
    room's admin list is kept beside the affiliations and wins over them:
    the banned admin walks back in, still an admin."""

    async def _with_admin_bob(self):
        alice = await self.room_with_alice()
        self.assert_ok(await self.admin(alice, f"<item jid='{BOB}' affiliation='admin'/>"))
        return alice

    async def test_banned_admin_stays_out(self):
        alice = await self._with_admin_bob()
        self.assert_ok(await self.pubsub(alice, "set", CHAT, f"<affiliations node='{ROOM}'>"
                                         f"<affiliation jid='{BOB}' affiliation='outcast'/></affiliations>",
                                         owner=True))
        bob = await self.online("bob", "desk")
        bob.send(f"<presence to='{ROOM_JID}/Bob'><x xmlns='{NS_MUC}'/></presence>")
        answer = await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from", "").startswith(ROOM_JID))
        self.assertEqual(error_condition(answer), "forbidden", answer.toXml())

    async def test_demoted_admin_bans_nobody(self):
        alice = await self._with_admin_bob()
        self.assert_ok(await self.pubsub(alice, "set", CHAT, f"<affiliations node='{ROOM}'>"
                                         f"<affiliation jid='{BOB}' affiliation='none'/></affiliations>",
                                         owner=True))
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        self.assert_failed(await self.admin(bob, f"<item jid='{CAROL}' affiliation='outcast'/>"))


class GhostOccupant(RoomDoorsTestCase):
    """TWO_DOORS_SPEC: a native occupant subscribed with a full JID leaves when
    that session ends. eve subscribes a full JID of hers that has no session:
    it never ends, so the occupant never leaves (and keeps a temporary room,
    and a seat in a full one, for good)."""

    async def test_full_jid_without_a_session_is_no_occupant(self):
        alice = await self.room_with_alice()
        eve = await self.online("eve", "lair")
        reply = await self.subscribe(eve, CHAT, ROOM, jid=f"{EVE}/ghost", options={"roomnick": "Ghost"})
        await self.settle(eve, alice)
        if reply["type"] == "result":
            await self.logout(eve)
            await self.settle(alice)
        self.assertIsNone(await self.subscription_of(f"{EVE}/ghost"))


class SameNickRace(RoomDoorsTestCase):
    """Two joins with the same nick at once, one per door: one must lose."""

    storage = "sqlite"  # storage that yields, so that the two joins interleave

    async def test_one_nick_one_occupant(self):
        await self.room_with_alice()
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        for attempt in range(8):
            nick = f"Twin{attempt}"
            bob.send(f"<presence to='{ROOM_JID}/{nick}'><x xmlns='{NS_MUC}'/></presence>")
            native = self.native_join(eve, nick)
            await native
            await self.settle(bob, eve)
            holders = [s for s in await self.server.storage.get_subscriptions(CHAT, ROOM)
                       if s.options.get("roomnick") == nick]
            self.assertEqual(len(holders), 1, [s.subscriber for s in holders])
            for s in holders:  # make room for the next attempt
                client = bob if s.subscriber == bob.jid else eve
                if client is bob:
                    bob.send(f"<presence to='{ROOM_JID}/{nick}' type='unavailable'/>")
                    await bob.wait_for(from_room(ROOM_JID, nick, "unavailable"))
                else:
                    self.assert_ok(await self.pubsub(eve, "set", CHAT,
                                                     f"<unsubscribe node='{ROOM}' jid={quoteattr(eve.jid)}/>"))
            await self.settle(bob, eve)


# Presence nodes ------------------------------------------------------------------


class PresenceNodeConfiguration(DoorsTestCase):
    """TWO_DOORS_SPEC: a presence node's items are published by the owner's
    resources only. A node configuration form must not open it up."""

    async def test_publish_model_open_is_refused(self):
        alice = await self.online("alice", "phone")
        eve = await self.online("eve", "lair")
        reply = await self.pubsub(alice, "set", ALICE,
                                  f"<configure node='presence'>{form(NODE_CONFIG, {'pubsub#publish_model': 'open'})}"
                                  "</configure>", owner=True)
        self.assert_failed(reply)
        self.assert_failed(await self.publish(eve, ALICE, "presence",
                                              "<presence xmlns='jabber:client'><status>it is eve</status></presence>"))
        self.assertEqual([i.item_id for i in (await self.server.storage.page_items(ALICE, "presence")).items],
                         ["phone"])

    async def test_publisher_list_is_refused(self):
        alice = await self.online("alice", "phone")
        eve = await self.online("eve", "lair")
        reply = await self.pubsub(alice, "set", ALICE,
                                  f"<configure node='presence'>{form(NODE_CONFIG, {'pubsub#publisher': EVE})}"
                                  "</configure>", owner=True)
        self.assert_failed(reply)
        self.assert_failed(await self.publish(eve, ALICE, "presence",
                                              "<presence xmlns='jabber:client'><status>it is eve</status></presence>"))

    async def test_other_resources_presence_is_not_retracted(self):
        """Item id = resource: a resource publishes only its own item, and
        retracts only its own (else contacts see an online resource go)."""
        phone = await self.online("alice", "phone")
        await self.online("alice", "laptop")
        self.assert_failed(await self.retract(phone, ALICE, "presence", "laptop"))


class FullJidPresenceSubscriber(DoorsTestCase):
    """XEP-0060 lets eve subscribe her full JID to alice's presence node. The
    legacy door speaks bare JIDs (RFC 6121): alice's answers must still reach
    that subscription — above all her revocation."""

    AUTH = "http://jabber.org/protocol/pubsub#subscribe_authorization"

    async def test_legacy_owner_approves(self):
        alice = await self.online("alice", "phone")
        eve = await self.online("eve", "lair")
        self.assert_ok(await self.subscribe(eve, ALICE, "presence", jid=eve.jid))
        await alice.wait_for(presence_from(EVE, "subscribe"))
        alice.send(f"<presence to='{EVE}' type='subscribed'/>")
        await self.settle(alice, eve)
        # Kept under the bare JID (RFC 6121), whichever door asked.
        self.assertEqual((await self.server.storage.get_subscription(ALICE, "presence", EVE)).state,
                         "subscribed")

    async def test_legacy_owner_revokes(self):
        alice = await self.online("alice", "phone")
        eve = await self.online("eve", "lair")
        self.assert_ok(await self.subscribe(eve, ALICE, "presence", jid=eve.jid))
        # alice's native client approves with the XEP-0207 form...
        answer = form(self.AUTH, {"pubsub#node": "presence", "pubsub#subscriber_jid": eve.jid,
                                  "pubsub#allow": "true"})
        alice.send(f"<message to='{ALICE}'>{answer}</message>")
        await self.settle(alice, eve)
        self.assertEqual((await self.server.storage.get_subscription(ALICE, "presence", EVE)).state,
                         "subscribed")
        # ...then her legacy client revokes it, and removes eve from the roster.
        alice.send(f"<presence to='{EVE}' type='unsubscribed'/>")
        await self.settle(alice, eve)
        await self.iq(alice, "set", None, f"<query xmlns='jabber:iq:roster'><item jid='{EVE}' subscription='remove'/></query>")
        await self.settle(alice, eve)
        since = len(eve.stanzas)
        alice.send("<presence><status>eve must not see this</status></presence>")
        await self.settle(alice, eve)
        self.nothing(eve, lambda e: "eve must not see this" in e.toXml(), since)
        self.assertIsNone(await self.server.storage.get_subscription(ALICE, "presence", EVE))


class OneRequestPerAccount(DoorsTestCase):
    """RFC 6121 subscriptions are between bare JIDs, and the legacy door caps
    pending requests. Through XEP-0060, eve subscribes one full JID after
    another: each is a new pending request and a new ``subscribe`` to alice."""

    async def test_resources_do_not_multiply_requests(self):
        alice = await self.online("alice", "phone")
        eve = await self.online("eve", "lair")
        for n in range(5):
            await self.subscribe(eve, ALICE, "presence", jid=f"{EVE}/spam{n}")
        await self.settle(eve, alice)
        pending = [s for s in await self.server.storage.get_subscriptions(ALICE, "presence")
                   if s.subscriber.split("/")[0] == EVE]
        self.assertLessEqual(len(pending), 1, [s.subscriber for s in pending])
        asked = [e for e in alice.stanzas if presence_from(EVE, "subscribe")(e)]
        self.assertLessEqual(len(asked), 1)


class PairSubscriptionIsThePartysMailbox(DoorsTestCase):
    """A party's native client unsubscribes from its pair node (or it is
    refused): its legacy client must still get the other party's messages,
    live or offline — they must not vanish without a bounce."""

    async def test_unsubscribe_does_not_swallow_messages(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.chat(alice, BOB, "first")
        await bob.wait_for(chat_body("first"))
        native = await self.online("bob", "native", presence=False)
        await self.pubsub(native, "set", PUBSUB, f"<unsubscribe node={quoteattr(pair(ALICE, BOB))} jid='{BOB}'/>")
        self.chat(alice, BOB, "second")
        await bob.wait_for(chat_body("second"), timeout=5)


class LegacyClientsSeeNoPubsub(DoorsTestCase):
    """DESIGN.md: a client that never speaks pubsub never sees a pubsub stanza.
    The pair kind's legacy renderer only knows items; other events on a pair
    node fall through to the XEP-0207 form."""

    async def test_native_retract_in_a_pair_node(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "native")
        reply = self.assert_ok(await self.publish(bob, PUBSUB, pair(ALICE, BOB), chat_item("oops")))
        item_id = reply.pubsub.publish.item["id"]
        await alice.wait_for(chat_body("oops"))
        since = len(alice.stanzas)
        self.assert_ok(await self.retract(bob, PUBSUB, pair(ALICE, BOB), item_id))
        await self.settle(bob, alice)
        self.nothing(alice, lambda e: "pubsub#event" in e.toXml(), since)

    async def test_contact_deleted(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.chat(alice, BOB, "hi")
        await bob.wait_for(chat_body("hi"))
        since = len(alice.stanzas)
        await delete_account(self.server.engine, BOB)
        await self.settle(alice)
        self.nothing(alice, lambda e: "pubsub#event" in e.toXml(), since)


# Accounts ------------------------------------------------------------------------


class ReCreatedAccount(DoorsTestCase):
    """TWO_DOORS_SPEC: a re-created account inherits nothing of the old one.
    bob pre-approved the old alice (RFC 6121 §3.4); the new alice is someone
    else and must ask."""

    async def test_pre_approval_is_not_inherited(self):
        bob = await self.online("bob", "desk")
        bob.send(f"<presence to='{ALICE}' type='subscribed'/>")
        await self.settle(bob)
        await delete_account(self.server.engine, ALICE)
        await create_account(self.server.engine, ALICE, PASSWORD)
        alice = await self.online("alice", "new")
        alice.send(f"<presence to='{BOB}' type='subscribe'/>")
        await self.settle(alice, bob)
        subscription = await self.server.storage.get_subscription(BOB, "presence", ALICE)
        self.assertIsNotNone(subscription)
        self.assertEqual(subscription.state, "pending")
        self.nothing(alice, presence_from(BOB, "subscribed"))


# One-to-one chat -------------------------------------------------------------------


class NoteToOwnResource(DoorsTestCase):
    """RFC 6121 §8.5.3.1: a message to an available full JID of one's own
    account is delivered to it (a note to another device)."""

    async def test_chat_to_own_other_resource(self):
        phone = await self.online("alice", "phone")
        laptop = await self.online("alice", "laptop")
        self.chat(phone, f"{ALICE}/laptop", "to my laptop")
        got = await laptop.wait_for(chat_body("to my laptop"), timeout=5)
        self.assertEqual(got["from"], f"{ALICE}/phone")
        await self.settle(phone, laptop)
        self.nothing(phone, lambda e: e.name == "message" and e.getAttribute("type") == "error")


class PairItemType(DoorsTestCase):
    """A native publish to a pair node is a one-to-one message: it must not
    reach the other party as a groupchat message or as an error."""

    async def test_type_is_chat_or_normal(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "native")
        for kind in ("groupchat", "error", "headline"):
            reply = await self.publish(bob, PUBSUB, pair(ALICE, BOB), chat_item(f"typed {kind}", type=kind))
            if reply["type"] == "error":
                continue  # refusing is fine
            got = await alice.wait_for(message_with(f"typed {kind}"))
            self.assertIn(got.getAttribute("type"), ("chat", "normal"), got.toXml())


class InternalOptionsStayInside(DoorsTestCase):
    """``xep207#…`` subscription options are the service's bookkeeping (the
    offline mark): the options form shows a subscriber its options, not those."""

    async def test_offline_mark_is_not_shown(self):
        alice = await self.online("alice", "phone")
        self.chat(alice, BOB, "while away")
        await self.settle(alice)
        bob = await self.online("bob", "native", presence=False)  # no presence: the mark stays
        options = self.assert_ok(await self.get_options(bob, PUBSUB, pair(ALICE, BOB), jid=BOB))
        self.assertNotIn("xep207#", options.toXml())


class CapsPoisoning(DoorsTestCase):
    """XEP-0115's verification string joins features with '<'; a feature
    containing '<' makes another feature set hash to the same ``ver``. The
    server caches interests by ``ver`` for everyone: eve answers first for a
    popular client's ``ver`` with the features merged, and every later session
    announcing that ``ver`` loses its ``+notify`` interests (XEP-0115 §5.4 and
    §8: such an answer is ill-formed and must not be cached)."""

    NS_CAPS = "http://jabber.org/protocol/caps"
    NS_INFO = "http://jabber.org/protocol/disco#info"
    IDENTITY = "<identity category='client' type='pc' name='T'/>"

    def ver(self) -> str:
        import base64
        import hashlib
        text = f"client/pc//T<{self.NS_INFO}<x+notify<"
        return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()

    def caps_presence(self) -> str:
        return f"<presence><c xmlns='{self.NS_CAPS}' hash='sha-1' node='http://client' ver='{self.ver()}'/></presence>"

    async def test_merged_features_are_not_cached(self):
        eve = await self.online("eve", "lair", presence=False)
        eve.send(self.caps_presence())
        ask = await eve.wait_for(lambda e: e.name == "iq" and e.getAttribute("type") == "get"
                                 and e.query is not None and e.query.uri == self.NS_INFO)
        eve.send(f"<iq type='result' id={quoteattr(ask['id'])} to={quoteattr(ask['from'])}>"
                 f"<query xmlns='{self.NS_INFO}' node={quoteattr(ask.query['node'])}>{self.IDENTITY}"
                 f"<feature var='{self.NS_INFO}&lt;x+notify'/></query></iq>")
        await self.settle(eve)
        laptop = await self.online("alice", "laptop", presence=False)
        laptop.send(self.caps_presence())
        asked = laptop.wait_for(lambda e: e.name == "iq" and e.getAttribute("type") == "get"
                                and e.query is not None and e.query.uri == self.NS_INFO)
        await laptop.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == laptop.jid)
        await self.settle(laptop)  # a disco#info question, if the server asks one, has arrived
        if asked.called:  # the server did not trust eve's answer: it asks alice's client
            ask = await asked
            laptop.send(f"<iq type='result' id={quoteattr(ask['id'])} to={quoteattr(ask['from'])}>"
                        f"<query xmlns='{self.NS_INFO}' node={quoteattr(ask.query['node'])}>{self.IDENTITY}"
                        f"<feature var='{self.NS_INFO}'/><feature var='x+notify'/></query></iq>")
            await self.settle(laptop)
        else:
            asked.cancel()
            asked.addErrback(lambda f: None)
        phone = await self.online("alice", "phone")
        self.assert_ok(await self.publish(phone, ALICE, "x", "<x xmlns='urn:example'>tune</x>"))
        await laptop.wait_for(message_with("tune"), timeout=5)


# Pins: what was tried and held -------------------------------------------------------


class Pins(DoorsTestCase):
    async def test_pair_node_is_not_listed_or_described_to_a_stranger(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.chat(alice, BOB, "hello")
        await bob.wait_for(chat_body("hello"))
        eve = await self.online("eve", "lair")
        items = await self.iq(eve, "get", PUBSUB, "<query xmlns='http://jabber.org/protocol/disco#items'/>")
        self.assertNotIn("chat:", items.toXml())
        existing = await self.iq(eve, "get", PUBSUB, "<query xmlns='http://jabber.org/protocol/disco#info' "
                                                     f"node={quoteattr(pair(ALICE, BOB))}/>")
        missing = await self.iq(eve, "get", PUBSUB, "<query xmlns='http://jabber.org/protocol/disco#info' "
                                                    f"node={quoteattr(pair(CAROL, EVE.replace('eve', 'dave')))}/>")
        from tests.doors_helpers import error_of
        self.assertEqual((existing["type"], error_of(existing)), (missing["type"], error_of(missing)))

    async def test_unnormalized_pair_names_reach_nothing(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.chat(alice, BOB, "hello")
        await bob.wait_for(chat_body("hello"))
        eve = await self.online("eve", "lair")
        for node in (f"chat:{ALICE}:{BOB}/x", f"chat:{ALICE.upper()}:{BOB}", f"Chat:{ALICE}:{BOB}",
                     f"chat:{ALICE}/r:{BOB}"):
            reply = await self.items(eve, PUBSUB, node)
            self.assertEqual(reply["type"], "error", (node, reply.toXml()))
            self.assertNotIn("hello", reply.toXml())

    async def test_pep_auto_create_on_someone_elses_jid(self):
        eve = await self.online("eve", "lair")
        self.assert_failed(await self.publish(eve, ALICE, "urn:xmpp:avatar:metadata", "<x xmlns='eve'/>"))
        self.assertIsNone(await self.server.storage.get_node(ALICE, "urn:xmpp:avatar:metadata"))

    async def test_authorization_form_from_a_non_owner_changes_nothing(self):
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        self.assert_ok(await self.subscribe(eve, BOB, "presence"))
        carol = await self.online("carol", "home")
        answer = form("http://jabber.org/protocol/pubsub#subscribe_authorization",
                      {"pubsub#node": "presence", "pubsub#subscriber_jid": eve.jid, "pubsub#allow": "true"})
        for to in (DOMAIN, CAROL, PUBSUB, BOB):
            carol.send(f"<message to={quoteattr(to)}>{answer}</message>")
        await self.settle(carol, bob, eve)
        # Presence subscriptions are kept under the bare JID (RFC 6121), whichever door.
        self.assertEqual((await self.server.storage.get_subscription(BOB, "presence", EVE)).state, "pending")

    async def test_mam_reads_only_ones_own_pairs(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.chat(alice, BOB, "private")
        await bob.wait_for(chat_body("private"))
        eve = await self.online("eve", "lair")
        self.assertEqual(await self.mam(eve, ALICE), [])
        self.assertEqual(await self.mam(eve, BOB), [])
        self.assertEqual(await self.mam(eve), [])
        reply = await self.iq(eve, "set", ALICE, "<query xmlns='urn:xmpp:mam:2'/>")
        self.assertEqual(reply["type"], "error")

    async def test_trusted_is_not_reachable_by_a_room_leave_for_someone_else(self):
        """The legacy leave unsubscribes as ``Trusted(jid)``; jid is the
        stamped sender, so an unavailable presence removes only one's own."""
        alice = await self.online("alice", "phone")
        alice.send(f"<presence to='{ROOM_JID}/Alice'><x xmlns='{NS_MUC}'/></presence>")
        await alice.wait_for(from_room(ROOM_JID, "Alice"))
        eve = await self.online("eve", "lair")
        eve.send(f"<presence to='{ROOM_JID}/Alice' type='unavailable'/>")
        eve.send(f"<presence from={quoteattr(alice.jid)} to='{ROOM_JID}/Alice' type='unavailable'/>")
        await eve.closed  # invalid-from ends eve's stream
        await self.settle(alice)
        self.assertIsNotNone(await self.server.storage.get_subscription(CHAT, ROOM, alice.jid))


class RedirectThroughPep(DoorsTestCase):
    """XEP-0060 §8.4.3 through the other door that names a redirect: an
    account's own (PEP) node. The engine's check is the same for both."""

    async def test_a_pep_node_deleted_with_a_redirect(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        node = "urn:example:blog"
        self.assert_ok(await self.create(alice, ALICE, node, {"access_model": "open"}))
        self.assert_ok(await self.subscribe(bob, ALICE, node))

        def delete(client, uri):
            return self.pubsub(client, "set", ALICE, f"<delete node={quoteattr(node)}>"
                                                     f"<redirect uri={quoteattr(uri)}/></delete>", owner=True)

        for uri in ("javascript:alert(1)", "https://evil.example/", "xmpp:a\"onclick=\"alert(1)", "xmpp:\u202egro"):
            self.assert_error(await delete(eve, uri), "forbidden")
            self.assert_error(await delete(bob, uri), "forbidden")
            self.assert_error(await delete(alice, uri), "bad-request")
            self.assertIsNotNone(await self.server.storage.get_node(ALICE, node))
        self.assert_ok(await delete(alice, f"xmpp:{ALICE}?;node=urn%3Aexample%3Anew"))
        told = await bob.wait_for(lambda e: e.name == "message" and "redirect" in e.toXml())
        self.assertIn(f"uri='xmpp:{ALICE}?;node=urn%3Aexample%3Anew'", told.toXml())
        self.assertIsNone(await self.server.storage.get_node(ALICE, node))
