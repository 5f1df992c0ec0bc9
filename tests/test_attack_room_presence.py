"""An occupant's show and priority (RFC 6121 §4.7.2, the presence kind's
``check_presence_values``, asked of a room's presences too), attacked as a
fussy client would: what real clients send must still pass (whitespace, a
signed priority, a <priority/> of another namespace, a departure whatever
its values), what is refused comes from the occupant JID it was sent to
(XEP-0045 §7.2.6, §7.6) and leaves the occupant as it was."""

from tests.doors_helpers import (
    BOB,
    CHAT,
    NS_MUC,
    ROOM,
    ROOM_JID,
    RoomDoorsTestCase,
    error_condition,
    error_presence,
    from_room,
    statuses,
)
from xep207.pubsub.kinds.room import NICK


class RoomPresenceValuesAttacked(RoomDoorsTestCase):
    async def occupancy(self, jid):
        return next((s for s in await self.server.storage.get_subscriptions(CHAT, ROOM) if s.subscriber == jid), None)

    async def test_what_clients_send_passes_as_sent(self):
        """xs:byte and the show values collapse whitespace: pretty-printing
        clients and a ``+5`` are fine; a ``<priority/>`` of another namespace
        is an extension, not RFC 6121's."""
        alice = await self.room_with_alice()
        bob = await self.online("bob", "laptop")
        bob.send(f"<presence to='{ROOM_JID}/Bob'><x xmlns='{NS_MUC}'/>\n  <show>\n    away\n  </show>"
                 "<priority> +5 </priority><priority xmlns='urn:example:other'>high</priority></presence>")
        own = await bob.wait_for(lambda e: from_room(ROOM_JID, "Bob")(e) and 110 in statuses(e))
        self.assertEqual(str(own.show).strip(), "away")
        seen = await alice.wait_for(from_room(ROOM_JID, "Bob"))
        self.assertEqual(str(seen.show).strip(), "away")
        self.assertEqual(str(seen.priority).strip(), "+5")
        bob.send(f"<presence to='{ROOM_JID}/Bob'><show>xa</show><priority>-128</priority></presence>")
        changed = await alice.wait_for(lambda e: from_room(ROOM_JID, "Bob")(e) and str(e.show) == "xa")
        self.assertEqual(str(changed.priority), "-128")
        self.nothing(bob, error_presence)

    async def test_refused_from_the_occupant_jid_and_the_occupant_stays(self):
        """A refused change comes back from room@service/nick, the occupant is
        still in the room under its nick, with its last good presence, and may
        go on talking."""
        alice = await self.room_with_alice()
        bob = await self.online("bob", "laptop")
        await self.join(bob, "Bob")
        bob.send(f"<presence to='{ROOM_JID}/Bob'><show>dnd</show></presence>")
        await alice.wait_for(lambda e: from_room(ROOM_JID, "Bob")(e) and str(e.show) == "dnd")
        mark = len(alice.stanzas)
        bob.send(f"<presence to='{ROOM_JID}/Bob'><show>dnd</show><priority>128</priority></presence>")
        refused = await bob.wait_for(error_presence)
        self.assertEqual(refused.getAttribute("from"), f"{ROOM_JID}/Bob")
        self.assertEqual(error_condition(refused), "bad-request")
        bob.send(f"<message to='{ROOM_JID}' type='groupchat'><body>still here</body></message>")
        said = await alice.wait_for(lambda e: e.name == "message" and e.getAttribute("from") == f"{ROOM_JID}/Bob")
        self.assertEqual(str(said.body), "still here")
        self.nothing(alice, lambda e: e.name == "presence", since=mark)
        self.assertEqual((await self.occupancy(f"{BOB}/laptop")).options[NICK], "Bob")
        # A newcomer sees Bob's last good presence, not the refused one.
        carol = await self.online("carol", "desk")
        carol.send(f"<presence to='{ROOM_JID}/Carol'><x xmlns='{NS_MUC}'/></presence>")
        about_bob = await carol.wait_for(from_room(ROOM_JID, "Bob"))
        self.assertEqual(str(about_bob.show), "dnd")
        self.assertIsNone(about_bob.priority)

    async def test_a_refused_nick_change_keeps_the_nick(self):
        """A nick change with a bad show: refused from the new occupant JID
        (as a nick conflict is, §7.6), no 303, the nick unchanged."""
        alice = await self.room_with_alice()
        bob = await self.online("bob", "laptop")
        await self.join(bob, "Bob")
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        mark = len(alice.stanzas)
        bob.send(f"<presence to='{ROOM_JID}/Robert'><show>evil</show></presence>")
        refused = await bob.wait_for(error_presence)
        self.assertEqual(refused.getAttribute("from"), f"{ROOM_JID}/Robert")
        self.assertEqual(error_condition(refused), "bad-request")
        await self.settle(alice, bob)
        self.nothing(alice, lambda e: e.name == "presence", since=mark)
        self.assertEqual((await self.occupancy(f"{BOB}/laptop")).options[NICK], "Bob")
        bob.send(f"<presence to='{ROOM_JID}/Robert'><show>chat</show></presence>")  # (a good one is a rename)
        renamed = await alice.wait_for(lambda e: from_room(ROOM_JID, "Bob", "unavailable")(e) and 303 in statuses(e))
        self.assertIsNotNone(renamed)
        await alice.wait_for(lambda e: from_room(ROOM_JID, "Robert")(e) and str(e.show) == "chat")

    async def test_leaving_whatever_the_values(self):
        """An unavailable presence leaves, even with values a change would
        have been refused for (a client must always be able to go)."""
        alice = await self.room_with_alice()
        bob = await self.online("bob", "laptop")
        await self.join(bob, "Bob")
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        bob.send(f"<presence to='{ROOM_JID}/Bob' type='unavailable'><priority>abc</priority>"
                 "<show>evil</show></presence>")
        await alice.wait_for(from_room(ROOM_JID, "Bob", "unavailable"))
        await bob.wait_for(from_room(ROOM_JID, "Bob", "unavailable"))
        self.assertIsNone(await self.occupancy(f"{BOB}/laptop"))
        self.nothing(bob, error_presence)

