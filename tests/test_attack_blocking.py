"""Attacks on XEP-0191 blocking, MAM preferences and paging, and last activity."""

from tests.doors_helpers import (
    ALICE, BOB, EVE, NS_MAM, NS_USER, ROOM_JID, RoomDoorsTestCase, chat_body, form, message_with,
)
from tests.server_helpers import DOMAIN
from tests.test_blocking import NS_BLOCKING, BlockingTestCase, presence_from


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
