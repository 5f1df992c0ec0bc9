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
    CHAT,
    EVE,
    NODE_CONFIG,
    NS_MUC,
    NS_ROSTER,
    PUBSUB,
    ROOM,
    ROOM_JID,
    DoorsTestCase,
    RoomDoorsTestCase,
    chat_body,
    error_condition,
    error_of,
    error_presence,
    form,
    from_room,
    message_with,
    pair,
)

NODE = pair(ALICE, BOB)
NS_SID = "urn:xmpp:sid:0"


def stanza_ids(message) -> list[tuple[str, str]]:
    return [(c["by"], c["id"]) for c in message.elements(NS_SID, "stanza-id")]


async def neither_purged_nor_deleted(test, node: str, owner, others, others_error: str) -> None:
    """Alice's own ``node`` is purged and deleted by the service alone: she
    gets ``forbidden`` through XEP-0060, anyone else ``others_error``."""
    for verb in ("purge", "delete"):
        request = f"<{verb} node='{node}'/>"
        test.assert_error(await test.pubsub(owner, "set", ALICE, request, owner=True), "forbidden")
        for other in others:
            test.assert_error(await test.pubsub(other, "set", ALICE, request, owner=True), others_error)


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


async def befriend(case, alice, bob) -> None:
    """bob subscribes to alice's presence, she approves (RFC 6121 §3.1), and
    he has her presence (both online as resource ``r``)."""
    bob.send(f"<presence to='{ALICE}' type='subscribe'/>")
    await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe")
    alice.send(f"<presence to='{BOB}' type='subscribed'/>")
    await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{ALICE}/r"
                       and e.getAttribute("type") is None)
    await case.settle(alice, bob)


def configure(node: str, **fields) -> str:
    return f"<configure node='{node}'>{form(NODE_CONFIG, {f'pubsub#{k}': v for k, v in fields.items()})}</configure>"


class AccountNodesConfiguration(DoorsTestCase):
    """The owner may configure her roster and presence nodes through XEP-0060,
    but not away what their legacy doors need: the roster's items kept, all
    of them; her presence stored per resource and notified with its payload."""

    async def test_the_roster_keeps_what_a_roster_set_stores(self):
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        eve = await self.online("eve", "lair")
        for fields in ({"persist_items": "0"}, {"max_items": "1"}, {"publisher": EVE},
                       {"access_model": "open", "publish_model": "open"}):
            reply = await self.pubsub(alice, "set", ALICE, configure("roster", **fields), owner=True)
            self.assert_error(reply, "not-acceptable")
            # A stranger and a contact: hidden (as if no roster existed), as before.
            self.assert_error(await self.pubsub(eve, "set", ALICE, configure("roster", **fields), owner=True),
                              "item-not-found")
            self.assert_error(await self.pubsub(bob, "set", ALICE, configure("roster", **fields), owner=True),
                              "item-not-found")
        # What the kind leaves to her (a title) she may still set.
        self.assert_ok(await self.pubsub(alice, "set", ALICE, configure("roster", title="mine"), owner=True))
        for contact in ("carol@localhost", "dave@localhost"):
            self.assert_ok(await self.iq(alice, "set", None, f"<query xmlns='{NS_ROSTER}'>"
                                                             f"<item jid='{contact}' name='x'/></query>"))
        self.assertEqual(set(await self.roster(alice)), {"carol@localhost", "dave@localhost"})
        self.assertNotIn(EVE, await self.server.storage.get_affiliations(ALICE, "roster"))

    async def test_presence_keeps_reaching_the_contacts(self):
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        await befriend(self, alice, bob)
        for fields in ({"persist_items": "0"}, {"max_items": "1"}, {"deliver_notifications": "0"},
                       {"deliver_payloads": "0"}):
            reply = await self.pubsub(alice, "set", ALICE, configure("presence", **fields), owner=True)
            self.assert_error(reply, "not-acceptable")
            # The contact (a subscriber) is no owner.
            self.assert_error(await self.pubsub(bob, "set", ALICE, configure("presence", **fields), owner=True),
                              "forbidden")
        self.assert_ok(await self.pubsub(alice, "set", ALICE, configure("presence", title="me"), owner=True))
        alice.send("<presence><status>still here</status></presence>")
        got = await bob.wait_for(lambda e: e.name == "presence" and e.status is not None
                                 and str(e.status) == "still here")
        self.assertEqual(got["from"], f"{ALICE}/r")
        second = await self.online("alice", "tablet", presence=False)
        second.send("<presence><status>second</status></presence>")
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{ALICE}/tablet")
        page = await self.server.storage.page_items(ALICE, "presence")
        self.assertEqual(sorted(i.item_id for i in page.items), ["r", "tablet"])


class NotSubscribed(DoorsTestCase):
    async def test_unsubscribing_a_non_subscriber_is_cancel(self):
        """XEP-0060 §6.2.3.2: <unexpected-request/> + <not-subscribed/>, type cancel."""
        alice = await self.online("alice", "phone")
        self.assert_ok(await self.create(alice, PUBSUB, "news"))
        reply = await self.pubsub(alice, "set", PUBSUB, f"<unsubscribe node='news' jid='{ALICE}/phone'/>")
        self.assert_error(reply, "unexpected-request", "not-subscribed")
        self.assertEqual(reply.error["type"], "cancel", reply.toXml())
        self.assertEqual(reply["id"][:1], "q")
        self.assertEqual((reply["from"], reply["to"]), (PUBSUB, f"{ALICE}/phone"))


class LongIds(DoorsTestCase):
    """A node id or item id is at most 1023 octets (a JID part's bound,
    RFC 7622 §3.1), for every backend alike: PostgreSQL cannot index a key of
    more than about 2700 bytes, and answered internal-server-error (logging
    an unhandled error) where memory and SQLite stored the id."""

    storage = "memory"
    LONG = "n" * 1024
    LONGEST = "é" * 511 + "n"  # 1023 octets

    async def test_over_long_ids_are_refused_alike(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.assert_error(await self.create(alice, PUBSUB, self.LONG), "not-acceptable")
        self.assert_error(await self.publish(alice, ALICE, self.LONG, "<x xmlns='urn:example'/>"), "not-acceptable")
        self.assert_ok(await self.create(alice, PUBSUB, "n1"))
        self.assert_error(await self.publish(alice, PUBSUB, "n1", "<x xmlns='urn:example'/>", item_id=self.LONG),
                          "not-acceptable")
        # A party's chat item with a long id, through the pair node.
        self.assert_error(await self.publish(alice, PUBSUB, NODE, "<message xmlns='jabber:client'><body>x</body>"
                                                                  "</message>", item_id=self.LONG),
                          "not-acceptable")
        # A room is a JID's localpart: beyond the bound, no JID (XEP-0045 and RFC 7622 alike).
        self.assert_error(await self.subscribe(alice, CHAT, self.LONG, options={"roomnick": "a"}), "jid-malformed")
        self.assertEqual(await self.server.storage.list_nodes(CHAT), [])
        self.assertEqual(await self.server.storage.list_nodes(ALICE), ["presence", "roster"])
        self.assertEqual((await self.server.storage.page_items(PUBSUB, "n1")).items, ())
        # At the bound: stored, read back, on every backend.
        self.assert_ok(await self.create(alice, PUBSUB, self.LONGEST))
        self.assert_ok(await self.publish(alice, PUBSUB, self.LONGEST, "<x xmlns='urn:example'/>",
                                          item_id=self.LONGEST))
        self.assertEqual(self.item_ids(self.assert_ok(await self.items(alice, PUBSUB, self.LONGEST))),
                         [self.LONGEST])
        # A JID an owner names for someone else: the same bound.
        far = "u" * 600 + "@" + ".".join(["d" * 60] * 8) + "/" + "r" * 200
        self.assertGreater(len(far.split("/")[0].encode()), 1023)
        for body in (f"<subscriptions node='n1'><subscription jid='{far}' subscription='subscribed'/></subscriptions>",
                     f"<affiliations node='n1'><affiliation jid='{far}' affiliation='publisher'/></affiliations>"):
            self.assert_error(await self.pubsub(alice, "set", PUBSUB, body, owner=True), "not-acceptable")
        self.assert_error(await self.subscribe(alice, PUBSUB, "n1", jid=far), "not-acceptable")
        self.assertEqual(await self.server.storage.get_subscriptions(PUBSUB, "n1"), [])
        self.assertEqual(await self.server.storage.get_affiliations(PUBSUB, "n1"), {ALICE: "owner"})
        self.chat(alice, BOB, "the session lives on")
        await bob.wait_for(chat_body("the session lives on"))


class PublishersInAForm(DoorsTestCase):
    """``pubsub#publisher`` in a node's configuration form makes publisher
    affiliations (XEP-0207 §6): an affiliation change by another way, held to
    the same rules — a node keeps its owner, a JID is bounded."""

    async def test_the_owner_listing_herself_stays_owner(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.assert_ok(await self.create(alice, PUBSUB, "news"))
        self.assert_ok(await self.pubsub(alice, "set", PUBSUB, configure("news", publisher=[ALICE, BOB]), owner=True))
        self.assertEqual(await self.server.storage.get_affiliations(PUBSUB, "news"),
                         {ALICE: "owner", BOB: "publisher"})
        self.assert_ok(await self.pubsub(alice, "get", PUBSUB, "<configure node='news'/>", owner=True))
        # Made with the form at creation: the same.
        self.assert_ok(await self.create(alice, PUBSUB, "more", {"publisher": [ALICE, BOB]}))
        self.assertEqual(await self.server.storage.get_affiliations(PUBSUB, "more"),
                         {ALICE: "owner", BOB: "publisher"})
        far = "u" * 1100 + "@localhost"
        self.assert_error(await self.pubsub(alice, "set", PUBSUB, configure("news", publisher=[far]), owner=True),
                          "not-acceptable")
        self.assert_error(await self.create(alice, PUBSUB, "far", {"publisher": [far]}), "not-acceptable")
        self.assertEqual(await self.server.storage.get_affiliations(PUBSUB, "news"),
                         {ALICE: "owner", BOB: "publisher"})
        self.assertIsNone(await self.server.storage.get_node(PUBSUB, "far"))


class LongIdsSQLite(LongIds):
    storage = "sqlite"


class LongIdsPostgreSQL(LongIds):
    storage = "postgresql"


class ArchivingPreferencesHistory(DoorsTestCase):
    """The archive reads each message under the preferences in force when it
    was published, so a version of them is history: retracting one is refused
    (kinds/mamprefs.py), and purging or deleting them all through XEP-0060 —
    which put back in alice's archive what she had said "never" to — too."""

    async def test_the_owner_cannot_purge_or_delete_the_versions(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        self.assert_ok(await self.iq(alice, "set", None, "<prefs xmlns='urn:xmpp:mam:2' default='always'><always/>"
                                                         f"<never><jid>{BOB}</jid></never></prefs>"))
        self.chat(bob, ALICE, "not for my archive")
        await alice.wait_for(chat_body("not for my archive"))
        self.assertEqual(await self.mam(alice, BOB), [])
        # Anyone else: as if there were no such node.
        await neither_purged_nor_deleted(self, "mam-prefs", alice, (bob, eve), "item-not-found")
        self.assertEqual(await self.mam(alice, BOB), [])
        self.assertEqual(await self.mam(bob, ALICE), ["not for my archive"])
        # Newer preferences still apply from their time on, through either door.
        self.assert_ok(await self.iq(alice, "set", None, "<prefs xmlns='urn:xmpp:mam:2' default='always'/>"))
        self.chat(bob, ALICE, "for my archive")
        await alice.wait_for(chat_body("for my archive"))
        self.assertEqual(await self.mam(alice, BOB), ["for my archive"])


NS_RSM = "http://jabber.org/protocol/rsm"


def rsm_of(reply) -> dict:
    found = next((c for c in reply.pubsub.elements() if c.name == "set" and c.uri == NS_RSM), None)
    if found is None:
        return {}
    return {c.name: str(c) for c in found.elements()}


class ItemsArePaged(DoorsTestCase):
    """XEP-0313 reads a pair node a page (at most 250) at a time; XEP-0060's
    ``<items/>`` on the same node returned all of it (up to 10000 messages, or
    10000 items of 64 KiB on a node anyone may fill and read) in one stanza.
    Both doors now answer a page at most, the XEP-0060 one with an RSM
    ``<set/>`` saying more exist (XEP-0060 §6.5.7)."""

    TOTAL = 260

    async def fill(self, requestor: str, service: str, node: str, payload) -> list[str]:
        ids = []
        for n in range(self.TOTAL):
            ids += await self.server.engine.publish(requestor, service, node, [(None, payload(n))])
        return ids

    async def test_a_party_reads_a_page_then_pages_back(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        ids = await self.fill(f"{ALICE}/phone", PUBSUB, NODE,
                              lambda n: f"<message xmlns='jabber:client'><body>m{n}</body></message>")
        reply = self.assert_ok(await self.items(bob, PUBSUB, NODE))
        self.assertEqual(self.item_ids(reply), ids[-250:])
        self.assertEqual(rsm_of(reply)["count"], str(self.TOTAL))
        self.assertEqual(rsm_of(reply)["first"], ids[-250])
        older = self.assert_ok(await self.pubsub(bob, "get", PUBSUB, f"<items node='{NODE}'/>"
                                                 f"<set xmlns='{NS_RSM}'><before>{ids[-250]}</before></set>"))
        self.assertEqual(self.item_ids(older), ids[:10])
        # Asking for more than a page is asking for a page; asking for fewer is no truncation.
        many = self.assert_ok(await self.pubsub(bob, "get", PUBSUB, f"<items node='{NODE}' max_items='1000'/>"))
        self.assertEqual(len(self.item_ids(many)), 250)
        self.assertEqual(rsm_of(many)["count"], str(self.TOTAL))
        few = self.assert_ok(await self.pubsub(bob, "get", PUBSUB, f"<items node='{NODE}' max_items='3'/>"))
        self.assertEqual((self.item_ids(few), rsm_of(few)), (ids[-3:], {}))
        # The MAM door pages the same node too.
        self.assertEqual(len(await self.mam(bob, ALICE)), 50)
        # A stranger: as before, nothing.
        eve = await self.online("eve", "lair")
        self.assert_error(await self.items(eve, PUBSUB, NODE), "item-not-found")

    async def test_an_open_node_anyone_reads(self):
        alice = await self.online("alice", "phone")
        eve = await self.online("eve", "lair")
        self.assert_ok(await self.create(alice, ALICE, "big", {"access_model": "open", "max_items": "1000"}))
        ids = await self.fill(ALICE, ALICE, "big", lambda n: f"<x xmlns='urn:example'>{n}</x>")
        for reader in (alice, eve):
            reply = self.assert_ok(await self.items(reader, ALICE, "big"))
            self.assertEqual(self.item_ids(reply), ids[-250:])
            self.assertEqual(rsm_of(reply)["count"], str(self.TOTAL))

    async def test_a_read_within_a_page_says_nothing_of_pages(self):
        """Under the page (and at it), a plain ``<items/>`` answers every item
        and no RSM ``<set/>``, to the owner and to anyone else alike."""
        alice = await self.online("alice", "phone")
        eve = await self.online("eve", "lair")
        self.assert_ok(await self.create(alice, ALICE, "small", {"access_model": "open", "max_items": "1000"}))
        ids = []
        for n in range(3):
            ids += await self.server.engine.publish(ALICE, ALICE, "small", [(None, f"<x xmlns='urn:example'>{n}</x>")])
        for reader in (alice, eve):
            reply = self.assert_ok(await self.items(reader, ALICE, "small"))
            self.assertEqual((self.item_ids(reply), rsm_of(reply)), (ids, {}))

    async def test_the_block_list_is_whole_through_both_doors(self):
        """A list the legacy door returns whole (XEP-0191 has no paging) is
        whole through XEP-0060 too: the kind's own bound is its size."""
        alice = await self.online("alice", "phone")
        blocked = [f"spammer{n}@example.org" for n in range(self.TOTAL)]
        for jid in blocked:
            await self.server.engine.publish(ALICE, ALICE, "blocklist",
                                             [(None, f"<item xmlns='urn:xmpp:blocking' jid='{jid}'/>")])
        legacy = self.assert_ok(await self.iq(alice, "get", None, "<blocklist xmlns='urn:xmpp:blocking'/>"))
        self.assertEqual(len(list(legacy.blocklist.elements())), self.TOTAL)
        native = self.assert_ok(await self.items(alice, ALICE, "blocklist"))
        self.assertEqual(sorted(self.item_ids(native)), sorted(blocked))
        self.assertEqual(rsm_of(native), {})


class PendingRequestsCap(DoorsTestCase):
    """RFC 6121 requests waiting for approval are capped per account (100 by
    default) so that nobody floods everyone with them. The legacy door kept
    the cap; an XEP-0060 subscribe to a presence node is the same request
    (the contact gets the same <presence type='subscribe'/>) and went past it."""

    users = ("alice", "bob", "carol", "eve", "dave", "erin")

    async def test_the_cap_holds_through_both_doors_together(self):
        presence = self.server.engine.kind_of(ALICE, "presence")
        presence.max_pending = 2
        eve = await self.online("eve", "lair")
        dave = await self.roster_ready("dave")
        erin = await self.roster_ready("erin")
        # One request through each door: both count.
        eve.send(f"<presence to='{ALICE}' type='subscribe'/>")
        self.assertEqual(self.assert_ok(await self.subscribe(eve, BOB, "presence", jid=EVE))
                         .pubsub.subscription["subscription"], "pending")
        await self.settle(eve)
        self.assertEqual((await self.server.storage.get_subscription(ALICE, "presence", EVE)).state, "pending")
        # The third, through XEP-0060: refused, as the legacy door refuses it.
        refused = self.assert_error(await self.subscribe(eve, "dave@localhost", "presence", jid=EVE),
                                    "policy-violation")
        self.assertEqual(refused.error["type"], "modify", refused.toXml())  # (RFC 6120 §8.3.3.12)
        eve.send("<presence to='erin@localhost' type='subscribe'/>")
        error = await eve.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "error")
        self.assertIn("policy-violation", error.toXml())
        await self.settle(eve, dave, erin)
        for victim in (dave, erin):
            self.nothing(victim, lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe")
        for owner in ("dave@localhost", "erin@localhost"):
            self.assertIsNone(await self.server.storage.get_subscription(owner, "presence", EVE))
        # Subscribing to an open node is no request: no cap.
        self.assert_ok(await self.create(eve, EVE, "open-news", {"access_model": "open"}))
        self.assert_ok(await self.subscribe(dave, EVE, "open-news"))



class AccountNodesStay(DoorsTestCase):
    """Purging or deleting the presence node through XEP-0060 ended every
    subscription (or emptied every resource's presence) without the
    unavailable presence RFC 6121 §3.2.3 sends: bob's client showed alice
    online for good. Deleting the roster dropped every item without a roster
    push. Both are the service's (account removal, a restart's stale
    presence); the owner ends subscriptions one by one, through either door."""

    async def test_presence_and_roster_are_not_purged_or_deleted(self):
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        eve = await self.online("eve", "lair")
        await befriend(self, alice, bob)
        self.assert_ok(await self.iq(alice, "set", None, f"<query xmlns='{NS_ROSTER}'><item jid='carol@localhost'/>"
                                                         "</query>"))
        # A contact, a stranger: no owner (the roster: no such node for them).
        await neither_purged_nor_deleted(self, "presence", alice, (bob, eve), "forbidden")
        await neither_purged_nor_deleted(self, "roster", alice, (bob, eve), "item-not-found")
        self.assertEqual((await self.server.storage.get_subscription(ALICE, "presence", BOB)).state, "subscribed")
        self.assertEqual(set(await self.roster(alice)), {BOB, "carol@localhost"})
        alice.send("<presence><status>still yours</status></presence>")
        await bob.wait_for(lambda e: e.name == "presence" and e.status is not None
                           and str(e.status) == "still yours")
        # Ending bob's subscription through XEP-0060 tells him, as the legacy door does.
        self.assert_ok(await self.pubsub(alice, "set", ALICE, f"<subscriptions node='presence'><subscription "
                                                              f"jid='{BOB}' subscription='none'/></subscriptions>",
                                         owner=True))
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{ALICE}/r"
                           and e.getAttribute("type") == "unavailable")

    async def assert_bob_is_told(self, body: str, owner: bool) -> None:
        """RFC 6121 §3.2: the contact whose subscription the user cancels gets
        ``unsubscribed``. The legacy door and XEP-0060 §8.8.2 said it; the
        owner's XEP-0060 unsubscribe of bob and an outcast affiliation did not."""
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        await befriend(self, alice, bob)
        self.assert_ok(await self.pubsub(alice, "set", ALICE, body, owner=owner))
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == ALICE
                           and e.getAttribute("type") == "unsubscribed")
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{ALICE}/r"
                           and e.getAttribute("type") == "unavailable")
        self.assertIsNone(await self.server.storage.get_subscription(ALICE, "presence", BOB))
        self.assertEqual((await self.roster(bob)).get(ALICE), "none")

    async def test_the_owners_unsubscribe_of_a_contact_says_unsubscribed(self):
        await self.assert_bob_is_told(f"<unsubscribe node='presence' jid='{BOB}'/>", owner=False)

    async def test_an_outcast_affiliation_says_unsubscribed(self):
        await self.assert_bob_is_told(f"<affiliations node='presence'><affiliation jid='{BOB}' "
                                      "affiliation='outcast'/></affiliations>", owner=True)

    async def test_a_contacts_delivery_is_the_contacts_to_set(self):
        """XEP-0060 let the owner set options of any subscription: alice
        turned ``pubsub#deliver`` off on bob's subscription to her presence,
        so bob stayed 'to', saw her online for good and heard nothing more,
        while a probe still answered. A subscription's delivery is its
        subscriber's, through either door (RFC 6121 has no such owner switch)."""
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        eve = await self.online("eve", "lair")
        await befriend(self, alice, bob)
        for who in (alice, eve):
            self.assert_error(await self.set_options(who, ALICE, "presence", {"pubsub#deliver": "0"}, jid=BOB),
                              "forbidden")
        stored = await self.server.storage.get_subscription(ALICE, "presence", BOB)
        self.assertNotIn("pubsub#deliver", stored.options)
        alice.send("<presence><status>seen</status></presence>")
        await bob.wait_for(lambda e: e.name == "presence" and e.status is not None and str(e.status) == "seen")
        # Bob's own switch is his.
        self.assert_ok(await self.set_options(bob, ALICE, "presence", {"pubsub#deliver": "0"}, jid=BOB))


class PresenceValues(DoorsTestCase):
    """RFC 6121 §4.7.2: a priority is an integer from -128 to 127, a show
    one of away, chat, dnd, xa. Both doors broadcast whatever came (a
    contact's client that reads the priority as a number, as slixmpp does,
    fails on ``abc``); now both answer bad-request and broadcast nothing."""

    async def test_bad_values_are_refused_through_both_doors(self):
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        await befriend(self, alice, bob)
        second = await self.online("alice", "tablet", presence=False)
        for child in ("<priority>abc</priority>", "<priority>128</priority>", "<priority>-129</priority>",
                      "<priority>1e3</priority>", "<priority>+-5</priority>", "<priority>1_0</priority>",
                      "<priority>²</priority>", "<show>evil</show>", "<priority>1</priority><priority>2</priority>"):
            alice.send(f"<presence>{child}<status>{child}</status></presence>")
            error = await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "error")
            self.assertIn("bad-request", error.toXml())
            reply = await self.publish(second, ALICE, "presence",
                                       f"<presence xmlns='jabber:client'>{child}</presence>")
            self.assert_error(reply, "bad-request", "invalid-payload")
            alice.stanzas.clear()
        await self.settle(alice, second, bob)
        self.nothing(bob, lambda e: e.name == "presence" and ("abc" in e.toXml() or "evil" in e.toXml()
                                                              or "<priority>1" in e.toXml()))
        page = await self.server.storage.page_items(ALICE, "presence")
        self.assertEqual([i.item_id for i in page.items], ["r"])
        # In range, through either door: broadcast.
        alice.send("<presence><show>dnd</show><priority>-128</priority></presence>")
        await bob.wait_for(lambda e: e.name == "presence" and e.show is not None and str(e.show) == "dnd")
        self.assert_ok(await self.publish(second, ALICE, "presence",
                                          "<presence xmlns='jabber:client'><priority> 127 </priority></presence>"))
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{ALICE}/tablet")


class RoomPresenceValues(RoomDoorsTestCase):
    """A room relays its occupants' show and priority to every occupant: the
    presence kind's values rule (RFC 6121 §4.7.2) holds for them too. A join
    or a change with ``<priority>abc</priority>`` was relayed as sent."""

    async def test_bad_values_neither_join_nor_reach_the_occupants(self):
        alice = await self.room_with_alice()
        bob = await self.online("bob", "laptop")
        for child in ("<priority>abc</priority>", "<priority>300</priority>", "<show>evil</show>",
                      "<show>away</show><show>dnd</show>"):
            bob.send(f"<presence to='{ROOM_JID}/Bob'><x xmlns='{NS_MUC}'/>{child}</presence>")
            self.assertEqual(error_condition(await bob.wait_for(error_presence)), "bad-request")
            bob.stanzas.clear()
        await self.settle(alice, bob)
        self.nothing(alice, from_room(ROOM_JID, "Bob"))
        occupants = [s.subscriber for s in await self.server.storage.get_subscriptions(CHAT, ROOM)]
        self.assertNotIn(f"{BOB}/laptop", occupants)
        # A good join, then a bad change: refused, and the occupant stays as it was.
        await self.join(bob, "Bob")
        await alice.wait_for(from_room(ROOM_JID, "Bob"))
        alice.stanzas.clear()
        bob.send(f"<presence to='{ROOM_JID}/Bob'><show>evil</show></presence>")
        self.assertEqual(error_condition(await bob.wait_for(error_presence)), "bad-request")
        bob.send(f"<presence to='{ROOM_JID}/Bob'><show>dnd</show><priority>-5</priority></presence>")
        changed = await alice.wait_for(from_room(ROOM_JID, "Bob"))
        self.assertEqual(str(changed.show), "dnd")
        self.nothing(alice, lambda e: "evil" in e.toXml())
