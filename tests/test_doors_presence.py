"""Presence and roster nodes through both doors: issue 10, TWO_DOORS_SPEC.md
"Presence nodes" and "Roster nodes".

The attack: eve, who owns her presence node, makes alice "subscribed" to it, so
that alice gets a roster push with eve as ``subscription='to'`` and eve's
presence without ever asking. Neither door may let her.
"""

from tests.doors_helpers import (
    ALICE,
    BOB,
    EVE,
    NS_ROSTER,
    DoorsTestCase,
)


def push_about(contact: str):
    def match(e):
        return (e.name == "iq" and e.getAttribute("type") == "set" and e.query is not None
                and e.query.uri == NS_ROSTER and e.query.item is not None and e.query.item["jid"] == contact)
    return match


def presence_from(user: str):
    return lambda e: e.name == "presence" and e.getAttribute("from", "").split("/")[0] == user


class RosterInjection(DoorsTestCase):
    async def assert_alice_untouched(self, alice, eve):
        await self.settle(eve, alice)
        self.nothing(alice, push_about(EVE))
        self.nothing(alice, presence_from(EVE))
        self.assertNotIn(EVE, await self.roster(alice))
        self.assertIsNone(await self.server.storage.get_subscription(EVE, "presence", ALICE))

    async def test_owner_cannot_subscribe_someone_else(self):
        alice = await self.roster_ready("alice")
        eve = await self.roster_ready("eve")
        self.assert_error(await self.subscribe(eve, EVE, "presence", jid=ALICE), "bad-request", "invalid-jid")
        self.assert_error(await self.subscribe(eve, EVE, "presence", jid=f"{ALICE}/r"), "bad-request", "invalid-jid")
        # Had a pending request been made for alice, eve could now approve it herself.
        approve = (f"<subscriptions node='presence'><subscription jid='{ALICE}' subscription='subscribed'/>"
                   "</subscriptions>")
        self.assert_failed(await self.pubsub(eve, "set", EVE, approve, owner=True))
        eve.send("<presence><status>look at me</status></presence>")
        await self.assert_alice_untouched(alice, eve)

    async def test_owner_management_cannot_create_a_subscription(self):
        alice = await self.roster_ready("alice")
        eve = await self.roster_ready("eve")
        reply = await self.pubsub(eve, "set", EVE, "<subscriptions node='presence'><subscription "
                                                   f"jid='{ALICE}' subscription='subscribed'/></subscriptions>",
                                  owner=True)
        self.assert_failed(reply)
        eve.send("<presence><status>look at me</status></presence>")
        await self.assert_alice_untouched(alice, eve)

    async def test_unsolicited_approval_through_the_legacy_door(self):
        alice = await self.roster_ready("alice")
        eve = await self.roster_ready("eve")
        eve.send(f"<presence to='{ALICE}' type='subscribed'/>")
        eve.send("<presence><status>look at me</status></presence>")
        await self.assert_alice_untouched(alice, eve)

    async def test_owner_may_still_approve_a_pending_request(self):
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        reply = self.assert_ok(await self.subscribe(bob, ALICE, "presence", jid=BOB))
        self.assertEqual(reply.pubsub.subscription["subscription"], "pending")
        approve = (f"<subscriptions node='presence'><subscription jid='{BOB}' subscription='subscribed'/>"
                   "</subscriptions>")
        self.assert_ok(await self.pubsub(alice, "set", ALICE, approve, owner=True))
        self.assertEqual((await self.server.storage.get_subscription(ALICE, "presence", BOB)).state, "subscribed")
        self.assertEqual((await self.roster(bob)).get(ALICE), "to")
        # And may remove it again.
        remove = f"<subscriptions node='presence'><subscription jid='{BOB}' subscription='none'/></subscriptions>"
        self.assert_ok(await self.pubsub(alice, "set", ALICE, remove, owner=True))
        self.assertIsNone(await self.server.storage.get_subscription(ALICE, "presence", BOB))

    async def test_a_pre_approval_answers_a_request_through_either_door(self):
        """RFC 6121 §3.4 is the presence kind's rule: a request through
        XEP-0060 uses up a pre-approval made by a legacy 'subscribed', and a
        legacy request one the owner stored on her roster node natively."""
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        alice.send(f"<presence to='{BOB}' type='subscribed'/>")
        await alice.wait_for(lambda e: push_about(BOB)(e) and e.query.item.getAttribute("approved") == "true")
        reply = self.assert_ok(await self.subscribe(bob, ALICE, "presence", jid=BOB))
        self.assertEqual(reply.pubsub.subscription["subscription"], "subscribed")
        self.assertEqual((await self.roster(alice)).get(BOB), "from")
        stored = await self.server.storage.get_items(ALICE, "roster", [BOB])
        self.assertNotIn("approved", stored[0].payload)  # used up
        # The other way round: alice pre-approves eve through her own roster node.
        eve = await self.roster_ready("eve")
        self.assert_ok(await self.publish(alice, ALICE, "roster",
                                          f"<item xmlns='{NS_ROSTER}' jid='{EVE}' approved='true'/>", item_id=EVE))
        eve.send(f"<presence to='{ALICE}' type='subscribe'/>")
        await eve.wait_for(lambda e: presence_from(ALICE)(e) and e.getAttribute("type") == "subscribed")
        await eve.wait_for(lambda e: presence_from(ALICE)(e) and e.getAttribute("type") is None)
        self.assertEqual((await self.server.storage.get_subscription(ALICE, "presence", EVE)).state, "subscribed")
        self.nothing(alice, lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe")

    async def test_a_stranger_cannot_use_someone_elses_pre_approval(self):
        alice = await self.roster_ready("alice")
        eve = await self.roster_ready("eve")
        alice.send(f"<presence to='{BOB}' type='subscribed'/>")
        await alice.wait_for(lambda e: push_about(BOB)(e) and e.query.item.getAttribute("approved") == "true")
        self.assert_error(await self.subscribe(eve, ALICE, "presence", jid=BOB), "bad-request", "invalid-jid")
        reply = self.assert_ok(await self.subscribe(eve, ALICE, "presence", jid=EVE))
        self.assertEqual(reply.pubsub.subscription["subscription"], "pending")
        stored = await self.server.storage.get_items(ALICE, "roster", [BOB])
        self.assertIn("approved='true'", stored[0].payload.replace('"', "'"))  # still bob's

    async def test_nobody_else_publishes_presence(self):
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        eve = await self.roster_ready("eve")
        bob.send(f"<presence to='{ALICE}' type='subscribe'/>")
        alice.send(f"<presence to='{BOB}' type='subscribed'/>")
        await bob.wait_for(lambda e: presence_from(ALICE)(e) and e.getAttribute("type") is None)
        forged = (f"<presence xmlns='jabber:client' from='{ALICE}/r'><status>forged by eve</status></presence>")
        self.assert_failed(await self.publish(eve, ALICE, "presence", forged, item_id="r"))
        await self.settle(eve, bob)
        self.nothing(bob, lambda e: "forged by eve" in e.toXml())
        self.nothing(alice, lambda e: "forged by eve" in e.toXml())


    async def test_presence_item_is_the_publishing_resource(self):
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        bob.send(f"<presence to='{ALICE}' type='subscribe'/>")
        alice.send(f"<presence to='{BOB}' type='subscribed'/>")
        await bob.wait_for(lambda e: presence_from(ALICE)(e) and e.getAttribute("type") is None)
        ghost = (f"<presence xmlns='jabber:client' from='{ALICE}/ghost'><status>native</status></presence>")
        self.assert_ok(await self.publish(alice, ALICE, "presence", ghost, item_id="ghost"))
        got = await bob.wait_for(lambda e: e.name == "presence" and "native" in e.toXml())
        self.assertEqual(got["from"], f"{ALICE}/r")
        page = await self.server.storage.page_items(ALICE, "presence")
        self.assertEqual([i.item_id for i in page.items], ["r"])
        self.assert_failed(await self.publish(alice, ALICE, "presence", "<message xmlns='jabber:client'/>"))
        self.assert_failed(await self.publish(alice, ALICE, "presence",
                                              "<presence xmlns='jabber:client' type='unavailable'/>"))


class NativePresence(DoorsTestCase):
    """XEP-0207 §3: a resource that never sent ``<presence/>`` publishes its
    presence item through XEP-0060 instead, and is available as broadcast
    presence would make it (the ``item-published`` hook on presence nodes;
    a hook told only of some node kinds must be told of this one)."""

    async def test_a_native_presence_publish_makes_the_session_available(self):
        alice = await self.online("alice")
        bot = await self.online("bob", "bot", presence=False)
        self.chat(alice, BOB, "before")  # to the bare JID: no available resource, kept offline
        await self.settle(alice, bot)
        self.nothing(bot, lambda e: "before" in e.toXml())
        payload = "<presence xmlns='jabber:client'><priority>7</priority><status>native</status></presence>"
        self.assert_ok(await self.publish(bot, BOB, "presence", payload, item_id="bot"))
        session = self.server.router.session(f"{BOB}/bot")
        self.assertEqual((session.available, session.priority), (True, 7))
        self.chat(alice, BOB, "after")
        await bot.wait_for(lambda e: e.name == "message" and "after" in e.toXml())


class RosterIsPrivate(DoorsTestCase):
    async def test_every_operation_on_someone_elses_roster_is_hidden(self):
        alice = await self.online("alice", "phone", presence=False)
        alice.send(f"<iq type='set' id='add'><query xmlns='{NS_ROSTER}'><item jid='{BOB}' name='Bobby'/></query></iq>")
        await alice.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == "add")
        eve = await self.online("eve", "lair")
        existing = await self.answers(eve, ALICE, "roster")
        hidden = ("error", "item-not-found", None)
        self.assertEqual({verb: answer for verb, answer in existing.items() if answer != hidden}, {})
        self.assert_failed(await self.create(eve, ALICE, "roster"))
        await self.settle(eve, alice)
        self.nothing(alice, lambda e: "forged" in e.toXml())
        self.assertEqual(await self.roster(alice), {BOB: "none"})
        self.assertIsNone(await self.server.storage.get_subscription(ALICE, "roster", EVE))
        self.assertNotIn(EVE, await self.server.storage.get_affiliations(ALICE, "roster"))
