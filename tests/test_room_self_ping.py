"""XEP-0410 MUC self-ping: "Am I still joined?" — a ping to one's own
occupant JID. XEP-0410 §3 lets the service answer for the occupant (and
advertise ``muc#self-ping-optimization``); a result means joined, and an
error such as <not-acceptable/> means not joined. <item-not-found/> would be
read as "joined under another nick" (slixmpp's xep_0410 does), so a ping to a
nick the sender does not hold is never answered with it.
"""

from tests.doors_helpers import CHAT, ROOM, ROOM_JID, RoomDoorsTestCase, error_of, from_room
from tests.server_helpers import DOMAIN, PASSWORD, ServerTestCase

PING = "<ping xmlns='urn:xmpp:ping'/>"


class SelfPing(RoomDoorsTestCase):
    async def ping_to(self, client, to):
        return await self.iq(client, "get", to, PING)

    async def assert_not_joined(self, client, to):
        reply = await self.ping_to(client, to)
        self.assertEqual(error_of(reply), ("not-acceptable", None), reply.toXml())

    async def test_an_occupant_pings_itself(self):
        alice = await self.room_with_alice()
        self.assert_ok(await self.ping_to(alice, f"{ROOM_JID}/Alice"))

    async def test_strangers_and_others_are_not_that_occupant(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        eve = await self.online("eve", "lair")
        await self.assert_not_joined(eve, f"{ROOM_JID}/Alice")  # a stranger
        await self.assert_not_joined(bob, f"{ROOM_JID}/Alice")  # another occupant's nick
        await self.assert_not_joined(alice, f"{ROOM_JID}/Nobody")
        phone = await self.online("bob", "phone")  # bob's other session is not in the room
        await self.assert_not_joined(phone, f"{ROOM_JID}/Bob")
        # A room that does not exist answers the same (nothing learnt about it).
        await self.assert_not_joined(eve, f"nowhere@{CHAT}/Eve")

    async def test_after_leaving_the_answer_changes(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "desk")
        await self.join(bob, "Bob")
        self.assert_ok(await self.ping_to(bob, f"{ROOM_JID}/Bob"))
        bob.send(f"<presence to='{ROOM_JID}/Bob' type='unavailable'/>")
        await alice.wait_for(from_room(ROOM_JID, "Bob", "unavailable"))
        await self.assert_not_joined(bob, f"{ROOM_JID}/Bob")

    async def test_native_occupants_through_the_other_door(self):
        await self.room_with_alice()
        bob = await self.online("bob", "native")
        self.assert_ok(await self.native_join(bob, "Bob"))
        self.assert_ok(await self.ping_to(bob, f"{ROOM_JID}/Bob"))
        carol = await self.online("carol", "native")
        self.assert_ok(await self.subscribe(carol, CHAT, ROOM, jid=carol.jid.split("/")[0],
                                            options={"roomnick": "Carol"}))
        self.assert_ok(await self.ping_to(carol, f"{ROOM_JID}/Carol"))  # a bare-JID occupant: every resource
        await self.assert_not_joined(carol, f"{ROOM_JID}/Bob")

    async def test_the_room_and_the_service_answer_pings(self):
        alice = await self.room_with_alice()
        self.assert_ok(await self.ping_to(alice, ROOM_JID))
        self.assert_ok(await self.ping_to(alice, CHAT))
        reply = await self.ping_to(alice, f"nowhere@{CHAT}")
        self.assertEqual(error_of(reply)[0], "item-not-found", reply.toXml())
        info = self.assert_ok(await self.iq(alice, "get", ROOM_JID,
                                            "<query xmlns='http://jabber.org/protocol/disco#info'/>"))
        features = {f["var"] for f in info.query.elements() if f.name == "feature"}
        self.assertTrue({"urn:xmpp:ping", "http://jabber.org/protocol/muc#self-ping-optimization"} <= features)


class SelfPingWithSlixmpp(ServerTestCase):
    """slixmpp's own XEP-0410 plugin reads our answers as XEP-0410 means them."""

    users = ("bob", "eve")

    async def test_joined_then_not(self):
        await self.start_server()
        report = await self.run_client("self_ping.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertEqual(report, {"joined": "JOINED", "stranger": "DISCONNECTED", "optimized": True,
                                  "after_leaving": "DISCONNECTED"})
