"""Attacks on rules a node kind keeps for both doors, where one door kept
them and the other did not (the attacker's session of 2026-11-25).

- A pair item's addressing and archive ids: the legacy capture addresses a
  message to the other party and drops a client's own ``<stanza-id/>``
  (XEP-0359 §4); a native publish must not do what a legacy message cannot.
- What the roster and presence nodes' legacy doors depend on (items kept,
  all of them, notifications sent) is not the owner's to configure away
  through XEP-0060: a roster set would answer "result" and store nothing.
- XEP-0060 §6.2.3.2's error for an unsubscribe of a non-subscriber.
"""

from tests.doors_helpers import (
    ALICE,
    BOB,
    EVE,
    NODE_CONFIG,
    NS_ROSTER,
    PUBSUB,
    DoorsTestCase,
    chat_body,
    error_of,
    form,
    message_with,
    pair,
)

NODE = pair(ALICE, BOB)
NS_SID = "urn:xmpp:sid:0"


def stanza_ids(message) -> list[tuple[str, str]]:
    return [(c["by"], c["id"]) for c in message.elements(NS_SID, "stanza-id")]


class PairItems(DoorsTestCase):
    async def test_a_native_message_is_addressed_to_the_other_party_only(self):
        """Through the legacy door a message in alice and bob's node is to bob;
        a native publish naming eve (or anyone but bob) is refused, and bob's
        stream and archive never carry a message of alice's "to eve"."""
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        for to in (EVE, f"{EVE}/lair", "localhost", PUBSUB, "x@remote.example", ALICE):
            reply = await self.publish(alice, PUBSUB, NODE,
                                       f"<message xmlns='jabber:client' to='{to}'><body>to {to}</body></message>")
            self.assert_error(reply, "bad-request", "invalid-payload")
        # The other party, bare or full, however spelled: accepted, as prepared.
        for to in (BOB, f"{BOB}/desk", "BOB@LocalHost/desk"):
            reply = await self.publish(alice, PUBSUB, NODE,
                                       f"<message xmlns='jabber:client' to='{to}'><body>to {to}</body></message>")
            self.assert_ok(reply)
            got = await bob.wait_for(chat_body(f"to {to}"))
            self.assertEqual(got["to"].split("/")[0], BOB, got.toXml())
        self.chat(alice, BOB, "legacy")
        await bob.wait_for(chat_body("legacy"))
        await self.settle(alice, bob, eve)
        self.nothing(bob, lambda e: e.name == "message" and e.body is not None
                     and e.getAttribute("to", BOB).split("/")[0] != BOB)
        self.nothing(eve, message_with("to "))
        self.assertEqual(await self.mam(bob, ALICE), [f"to {BOB}", f"to {BOB}/desk", "to BOB@LocalHost/desk",
                                                      "legacy"])
        page = await self.server.storage.page_items(PUBSUB, NODE)
        self.assertEqual({i.payload.split(" to='")[1].split("'")[0].split("/")[0] for i in page.items}, {BOB})

    async def test_a_clients_own_stanza_id_is_dropped_through_both_doors(self):
        """XEP-0359 §4: only the archive says what its id is. The legacy door
        drops a client's ``<stanza-id/>``; the XEP-0060 door must too, or bob
        holds two ids 'by' his own account, one chosen by alice."""
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        forged = f"<stanza-id xmlns='{NS_SID}' id='forged' by='{BOB}'/><origin-id xmlns='{NS_SID}' id='mine'/>"
        self.assert_ok(await self.publish(alice, PUBSUB, NODE,
                                          f"<message xmlns='jabber:client'><body>native</body>{forged}</message>"))
        alice.send(f"<message to='{BOB}' type='chat'><body>legacy</body>{forged}</message>")
        for body in ("native", "legacy"):
            got = await bob.wait_for(chat_body(body))
            ids = stanza_ids(got)
            self.assertEqual(len(ids), 1, got.toXml())
            self.assertEqual(ids[0][0], BOB)
            self.assertNotEqual(ids[0][1], "forged")
            # A client's origin-id is its own to give (XEP-0359 §3.1): kept.
            self.assertEqual([c["id"] for c in got.elements(NS_SID, "origin-id")], ["mine"], got.toXml())
        page = await self.server.storage.page_items(PUBSUB, NODE)
        self.assertEqual([i for i in page.items if "forged" in i.payload], [])
