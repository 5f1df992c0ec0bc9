"""Attacks on XEP-0191 blocking, MAM preferences and paging, and last activity."""

from tests.doors_helpers import (
    ALICE, BOB, EVE, NS_MAM, NS_USER, PUBSUB, ROOM_JID, RoomDoorsTestCase, chat_body, chat_item, form,
    message_with, pair,
)
from tests.server_helpers import DOMAIN
from tests.test_blocking import BlockingTestCase, presence_from
from tests.test_mam import MamTestCase


def roster_push_about(jid: str):
    return lambda e: (e.name == "iq" and e.getAttribute("type") == "set" and e.query is not None
                      and e.query.uri == "jabber:iq:roster"
                      and any(i.getAttribute("jid") == jid for i in e.query.elements()))


class ThroughTheOtherDoor(BlockingTestCase):
    async def test_a_blocked_contact_cannot_approve_through_xep0060(self):
        """alice asked for eve's presence, then blocked her: eve's legacy
        'subscribed' is dropped, and so must her XEP-0060 approval be."""
        alice = await self.online("alice")
        eve = await self.online("eve")
        await self.roster(alice)  # alice's session wants roster pushes
        alice.send(f"<presence type='subscribe' to='{EVE}'/>")
        await eve.wait_for(presence_from(ALICE, "subscribe"))
        self.assert_ok(await self.block(alice, EVE))
        await self.settle(alice, eve)
        mark = len(alice.stanzas)
        approve = (f"<subscriptions node='presence'><subscription jid='{ALICE}' subscription='subscribed'/>"
                   "</subscriptions>")
        reply = await self.pubsub(eve, "set", EVE, approve, owner=True)
        await self.settle(eve, alice)
        self.nothing(alice, roster_push_about(EVE), since=mark)
        self.nothing(alice, presence_from(EVE, "subscribed"), since=mark)
        subscription = await self.server.storage.get_subscription(EVE, "presence", ALICE)
        self.assertNotEqual(subscription.state, "subscribed", reply.toXml())

    async def test_a_blocked_contact_cannot_approve_with_the_authorization_form(self):
        """The same approval, as XEP-0060 §8.6's form answered by a native client."""
        alice = await self.online("alice")
        eve = await self.online("eve")
        alice.send(f"<presence type='subscribe' to='{EVE}'/>")
        await eve.wait_for(presence_from(ALICE, "subscribe"))
        self.assert_ok(await self.block(alice, EVE))
        answer = form("http://jabber.org/protocol/pubsub#subscribe_authorization", {
            "pubsub#node": "presence", "pubsub#subscriber_jid": ALICE, "pubsub#allow": "true"})
        eve.send(f"<message id='auth' to='{EVE}'>{answer}</message>")
        error = await eve.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "auth")
        self.assertEqual(error["type"], "error", error.toXml())
        self.assertIn("service-unavailable", error.error.toXml())  # as anything else eve sends alice
        subscription = await self.server.storage.get_subscription(EVE, "presence", ALICE)
        self.assertEqual(subscription.state, "pending")


class InRooms(BlockingTestCase, RoomDoorsTestCase):
    async def both_in_the_room(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        await self.join(alice, "Alice")
        await self.join(eve, "Eve")
        return alice, eve

    async def test_groupchat_from_a_blocked_occupant_jid_is_not_delivered(self):
        """XEP-0191 §3.6: nothing from a blocked JID; alice blocked den@chat/Eve.
        Dropped silently (an error would get alice kicked, XEP-0045 §7.2.2)."""
        alice, eve = await self.both_in_the_room()
        self.assert_ok(await self.block(alice, f"{ROOM_JID}/Eve"))
        self.say(eve, "public")
        await eve.wait_for(lambda e: e.name == "message" and e.body is not None and str(e.body) == "public")
        # A native (XEP-0060) publish to the room meets the same gate.
        self.assert_ok(await self.native_say(eve, "native"))
        await self.settle(eve, alice)
        self.nothing(alice, message_with("public"))
        self.nothing(alice, message_with("native"))
        self.nothing(alice, lambda e: e.name == "message" and e.getAttribute("type") == "error")
        # Nothing in the room changed for alice: she still hears the others.
        bob = await self.online("bob")
        await self.join(bob, "Bob")
        self.say(bob, "from bob")
        await alice.wait_for(lambda e: e.name == "message" and e.body is not None and str(e.body) == "from bob")

    async def test_presence_from_a_blocked_occupant_jid_is_not_delivered(self):
        alice = await self.online("alice")
        await self.join(alice, "Alice")
        self.assert_ok(await self.block(alice, f"{ROOM_JID}/Eve"))
        eve = await self.online("eve")
        await self.join(eve, "Eve")  # eve sees alice: alice blocked den/Eve, not the reverse
        self.assertTrue(any(e.getAttribute("from") == f"{ROOM_JID}/Alice" for e in eve.stanzas))
        eve.send(f"<presence to='{ROOM_JID}/Eve'><status>look at me</status></presence>")
        await eve.wait_for(lambda e: e.name == "presence" and "look at me" in e.toXml())
        await self.settle(eve, alice)
        self.nothing(alice, lambda e: e.name == "presence" and e.getAttribute("from") == f"{ROOM_JID}/Eve")

    async def test_a_mediated_invitation_from_a_blocked_jid_is_not_delivered(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        await self.join(eve, "Eve")
        self.assert_ok(await self.block(alice, EVE))
        eve.send(f"<message to='{ROOM_JID}'><x xmlns='{NS_USER}'><invite to='{ALICE}'>"
                 "<reason>come in</reason></invite></x></message>")
        await self.settle(eve, alice)
        self.nothing(alice, message_with("come in"))
        self.nothing(eve, lambda e: e.name == "message" and e.getAttribute("type") == "error")  # no oracle

    async def test_inviting_whom_one_blocked_is_refused(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        await self.join(alice, "Alice")
        self.assert_ok(await self.block(alice, EVE))
        alice.send(f"<message id='inv' to='{ROOM_JID}'><x xmlns='{NS_USER}'><invite to='{EVE}'>"
                   "<reason>please</reason></invite></x></message>")
        error = await alice.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "inv")
        self.assert_blocked_error(error)
        await self.settle(alice, eve)
        self.nothing(eve, message_with("please"))


class HostileArchiveQueries(MamTestCase):
    async def test_repeated_form_fields_are_bad_requests(self):
        """A jid-single or text-single field sent twice is malformed input, not a crash."""
        alice, _ = await self.conversation(2)
        for var, value in (("with", BOB), ("start", "2020-01-01T00:00:00Z"), ("end", "2030-01-01T00:00:00Z"),
                           ("after-id", "x"), ("before-id", "x")):
            fields = f"<field var='{var}'><value>{value}</value><value>{value}</value></field>"
            x = (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                 f"<value>{NS_MAM}</value></field>{fields}</x>")
            reply = await self.iq(alice, "set", None, f"<query xmlns='{NS_MAM}'>{x}</query>")
            self.assert_error(reply, "bad-request")
        await self.ping(alice)

    async def test_other_peoples_ids_and_archives(self):
        alice, bob = await self.conversation(2)
        carol = await self.online("carol")
        _, _, ids = await self.query(alice)
        # carol names alice's message ids: as unknown as any other.
        self.assert_error((await self.query(carol, f"<after>{ids[0]}</after>"))[0], "item-not-found")
        self.assert_error((await self.query(carol, fields={"after-id": ids[0]}))[0], "item-not-found")
        reply, bodies, _ = await self.query(carol, fields={"ids": ids})
        self.assertEqual((bodies, str(reply.fin.set.count)), ([], "0"))
        reply, bodies, _ = await self.query(carol, fields={"with": ALICE})
        self.assertEqual(bodies, [])
        # alice's archive, asked of alice's JID by carol.
        reply = await self.iq(carol, "set", ALICE, f"<query xmlns='{NS_MAM}'/>")
        self.assert_failed(reply)
        self.assertEqual(carol.unconsumed("message"), [])
        # alice's preferences, asked by carol: nothing, through either door.
        self.assert_failed(await self.iq(carol, "get", ALICE, f"<prefs xmlns='{NS_MAM}'/>"))

    async def test_malformed_dates_and_numbers(self):
        alice, _ = await self.conversation(2)
        for start in ("yesterday", "0001-01-01T00:00:00", "2020-13-01T00:00:00Z", "9" * 50):
            self.assert_error((await self.query(alice, fields={"start": start}))[0], "bad-request")
        for rsm in ("<max>9" + "9" * 5000 + "</max>", "<max></max>", "<max>1.5</max>"):
            self.assert_error((await self.query(alice, rsm))[0], "bad-request")
        reply, bodies, _ = await self.query(alice, "<max>99999999999999999999</max>")
        self.assertEqual(bodies, ["m0", "m1"])  # capped, not a crash
        for with_jid in (ALICE, f"{ALICE}/r", DOMAIN, "nobody@nowhere.example"):
            reply, bodies, _ = await self.query(alice, fields={"with": with_jid})
            self.assertEqual((reply["type"], bodies), ("result", []), reply.toXml())
        for with_jid in ("a@b@c", "x" * 2000 + "@localhost"):
            self.assert_error((await self.query(alice, fields={"with": with_jid}))[0], "bad-request")
        await self.ping(alice)

    async def test_a_prefs_answer_is_never_answered(self):
        """RFC 6120 §8.2.3: an iq result or error is not a request."""
        alice = await self.online("alice")
        for type in ("result", "error"):
            alice.send(f"<iq type='{type}' id='p-{type}'><prefs xmlns='{NS_MAM}' default='never'/></iq>")
        await self.settle(alice)
        self.nothing(alice, lambda e: e.name == "iq" and e.getAttribute("id", "").startswith("p-"))
        reply = self.assert_ok(await self.iq(alice, "get", None, f"<prefs xmlns='{NS_MAM}'/>"))
        self.assertEqual(reply.prefs["default"], "always")


class BeforeTheBlock(BlockingTestCase):
    async def test_offline_messages_from_before_the_block_are_not_delivered_after_it(self):
        """eve wrote while alice was away; alice blocks her from a session that
        is not yet available: the stored messages must not follow (§3.6)."""
        alice = await self.online("alice")
        eve = await self.online("eve")
        self.chat(eve, ALICE, "hello")  # the pair node exists, alice is subscribed
        await alice.wait_for(chat_body("hello"))
        await self.logout(alice)
        await self.server.quiesce()
        self.chat(eve, ALICE, "while you were away")
        await self.settle(eve)
        alice = await self.online("alice", "quiet", presence=False)
        self.assert_ok(await self.block(alice, EVE))
        alice.send("<presence/>")  # RFC 6121 §8.5.2.1.1: offline messages now
        await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == alice.jid)
        await self.settle(alice, eve)
        self.nothing(alice, message_with("while you were away"))


class LastActivityIsTheServices(BlockingTestCase):
    async def test_the_account_cannot_rewrite_its_last_activity_through_xep0060(self):
        """Nobody but the service writes the node: not a retract, purge or
        delete by its owner either (a contact would read 'never seen online')."""
        await self.server.engine.subscribe(BOB, ALICE, "presence", BOB, approved=True, via="legacy")
        alice = await self.online("alice")
        await self.logout(alice)
        await self.server.quiesce()
        alice = await self.online("alice")
        node = "last-activity"
        before = [i.item_id for i in (await self.server.storage.page_items(ALICE, node)).items]
        self.assertEqual(before, ["last"])
        self.assert_error(await self.retract(alice, ALICE, node, "last"), "forbidden")
        self.assert_error(await self.pubsub(alice, "set", ALICE, f"<purge node='{node}'/>", owner=True), "forbidden")
        self.assert_error(await self.pubsub(alice, "set", ALICE, f"<delete node='{node}'/>", owner=True), "forbidden")
        after = [i.item_id for i in (await self.server.storage.page_items(ALICE, node)).items]
        self.assertEqual(after, before)


class FromAComponent(BlockingTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--component", "gateway.localhost=s3cret",
                   "--component-port", "0")

    async def test_unprepared_addresses_do_not_slip_past_a_block(self):
        """A component's JIDs are prepared before any check: 'SPAMMER@Gateway.localhost'
        is the blocked spammer@gateway.localhost, 'ALICE@LOCALHOST' is alice."""
        from tests.test_registration_components import ExternalComponent
        self.component_port = self.server.listeners[-1]._port.getHost().port
        xs = await ExternalComponent.connect_component(self, "gateway.localhost", "s3cret")
        alice = await self.online("alice")
        self.assert_ok(await self.block(alice, "spammer@gateway.localhost"))
        xs.send(f"<message from='SPAMMER@gateway.localhost' to='{ALICE}' type='chat'><body>one</body></message>")
        xs.send("<message from='spammer@gateway.localhost' to='ALICE@LOCALHOST' type='chat'><body>two</body></message>")
        xs.send("<presence from='Spammer@gateway.localhost/x' to='Alice@localhost/r'/>")
        xs.send(f"<message from='friend@gateway.localhost' to='{ALICE}' type='chat'><body>genuine</body></message>")
        await alice.wait_for(chat_body("genuine"))
        await self.settle(alice)
        self.nothing(alice, chat_body("one"))
        self.nothing(alice, chat_body("two"))
        self.nothing(alice, lambda e: e.name == "presence" and "gateway" in e.getAttribute("from", "").lower())


class ThePairNode(BlockingTestCase):
    async def test_a_blocked_party_cannot_retract_from_the_shared_history(self):
        """eve's retraction is a write to the conversation, as a publish is:
        it would reach alice (an event) and rewrite alice's archive."""
        alice = await self.online("alice")
        eve = await self.online("eve")
        node = pair(ALICE, EVE)
        self.assert_ok(await self.publish(eve, PUBSUB, node, chat_item("regrettable"), item_id="m1"))
        await alice.wait_for(chat_body("regrettable"))
        self.assert_ok(await self.items(alice, PUBSUB, node))  # alice speaks pubsub on it now
        self.assert_ok(await self.block(alice, EVE))
        mark = len(alice.stanzas)
        self.assert_error(await self.retract(eve, PUBSUB, node, "m1"), "service-unavailable")
        await self.settle(eve, alice)
        self.nothing(alice, lambda e: e.name == "message" and "retract" in e.toXml(), since=mark)
        self.assertEqual(await self.mam(alice), ["regrettable"])


class OwnersSubscribingOthers(BlockingTestCase):
    async def test_a_node_owner_cannot_subscribe_whom_blocked_her(self):
        """XEP-0060 lets an owner subscribe others (§6.1, §8.8.2): eve's own
        node on the pubsub service is no way around alice's block."""
        alice = await self.online("alice")
        eve = await self.online("eve")
        self.assert_ok(await self.create(eve, PUBSUB, "eves-news", {"access_model": "open"}))
        self.assert_ok(await self.block(alice, EVE))
        mark = len(alice.stanzas)
        self.assert_error(await self.subscribe(eve, PUBSUB, "eves-news", jid=ALICE), "service-unavailable")
        reply = await self.pubsub(eve, "set", PUBSUB, "<subscriptions node='eves-news'><subscription "
                                  f"jid='{alice.jid}' subscription='subscribed'/></subscriptions>", owner=True)
        self.assert_failed(reply)
        self.assertEqual(await self.server.storage.get_subscriptions(PUBSUB, "eves-news"), [])
        self.assert_ok(await self.publish(eve, PUBSUB, "eves-news", "<x xmlns='urn:example'>hi</x>"))
        await self.settle(eve, alice)
        self.nothing(alice, lambda e: e.name == "message" and "eves-news" in e.toXml(), since=mark)


class PersonalData(BlockingTestCase):
    async def test_vcard_and_avatar_are_hidden_from_whom_one_blocked_through_both_doors(self):
        """Open nodes (vCard, avatar) are readable by anyone, except whom the
        account blocked (the engine's access_error) and, the other way, by the blocker."""
        alice = await self.online("alice")
        eve = await self.online("eve")
        self.assert_ok(await self.iq(alice, "set", None, "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>"))
        self.assert_ok(await self.iq(eve, "get", ALICE, "<vCard xmlns='vcard-temp'/>"))  # open before
        self.assert_ok(await self.block(alice, EVE))
        self.assert_error(await self.iq(eve, "get", ALICE, "<vCard xmlns='vcard-temp'/>"), "service-unavailable")
        self.assert_error(await self.items(eve, ALICE, "vcard-temp"), "service-unavailable")
        self.assert_error(await self.items(eve, ALICE, "urn:xmpp:avatar:metadata"), "service-unavailable")
        from xep207.pubsub import errors
        with self.assertRaises(errors.StanzaError) as raised:  # whatever door reaches the engine
            await self.server.engine.get_items(eve.jid, ALICE, "vcard-temp")
        self.assertEqual(raised.exception.condition, "service-unavailable")
        # alice asks for eve's: told she blocked her.
        self.assert_blocked_error(await self.iq(alice, "get", EVE, "<vCard xmlns='vcard-temp'/>"))
