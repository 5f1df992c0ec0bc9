"""Attacks on what landed on 2026-11-24: nodes made by first use (race-safe
creation, ``setup_unfinished``/``finish_setup``) and RFC 6121 §3.4
pre-approvals as the presence kind's rule through both doors."""

from tests.cluster_helpers import ClusterMixin
from tests.doors_helpers import ALICE, BOB, EVE, NS_PUBSUB, NS_ROSTER, PUBSUB, DoorsTestCase, chat_item, pair
from xep207.storage.records import SUBSCRIBED, VIA_LEGACY, Node, Subscription
from tests.test_presence_roster import JULIET, ROMEO, PresenceTestCase, is_presence, is_result
from tests.test_doors_presence import presence_from, push_about


def subscribed_from(user: str):
    return lambda e: presence_from(user)(e) and e.getAttribute("type") == "subscribed"


class PreApprovals(DoorsTestCase):
    async def state(self, owner, subscriber):
        subscription = await self.server.storage.get_subscription(owner, "presence", subscriber)
        return None if subscription is None else subscription.state

    async def stored_approval(self, owner, contact) -> bool:
        stored = await self.server.storage.get_items(owner, "roster", [contact])
        return bool(stored) and "approved" in stored[0].payload

    async def test_a_native_pre_approval_answers_a_pending_request(self):
        """Bob's request is pending; alice's pubsub-native client approves by
        storing approved='true' on her roster item (what a legacy 'subscribed'
        does too). A pending request and a pre-approval side by side, forever,
        is the stuck state the crossing fix exists to prevent."""
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        bob.send(f"<presence to='{ALICE}' type='subscribe'/>")
        await alice.wait_for(lambda e: presence_from(BOB)(e) and e.getAttribute("type") == "subscribe")
        self.assertEqual(await self.state(ALICE, BOB), "pending")
        self.assert_ok(await self.publish(alice, ALICE, "roster",
                                          f"<item xmlns='{NS_ROSTER}' jid='{BOB}' approved='true'/>", item_id=BOB))
        await bob.wait_for(subscribed_from(ALICE))
        self.assertEqual(await self.state(ALICE, BOB), "subscribed")
        self.assertFalse(await self.stored_approval(ALICE, BOB))  # used up, not left for a later request
        await self.settle(alice, bob)
        self.assertEqual(len([e for e in bob.stanzas if subscribed_from(ALICE)(e)]), 1)

    async def test_a_pre_approval_is_used_once_and_exactly_one_subscribed(self):
        """Used up by the first request: after bob unsubscribes, his next
        request is pending again; each approval tells bob once."""
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        alice.send(f"<presence to='{BOB}' type='subscribed'/>")
        await alice.wait_for(lambda e: push_about(BOB)(e) and e.query.item.getAttribute("approved") == "true")
        bob.send(f"<presence to='{ALICE}' type='subscribe'/>")
        await bob.wait_for(subscribed_from(ALICE))
        await self.settle(alice, bob)
        self.assertEqual(len([e for e in bob.stanzas if subscribed_from(ALICE)(e)]), 1)
        self.nothing(alice, lambda e: presence_from(BOB)(e) and e.getAttribute("type") == "subscribe")
        bob.send(f"<presence to='{ALICE}' type='unsubscribe'/>")
        await alice.wait_for(lambda e: presence_from(BOB)(e) and e.getAttribute("type") == "unsubscribe")
        reply = self.assert_ok(await self.subscribe(bob, ALICE, "presence", jid=BOB))
        self.assertEqual(reply.pubsub.subscription["subscription"], "pending")

    async def test_a_blocked_contact_cannot_use_a_pre_approval(self):
        """XEP-0191: alice pre-approved bob, then blocked him. Neither door lets
        bob's request use it, nor tells him it exists; it is still there once
        she unblocks him."""
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        alice.send(f"<presence to='{BOB}' type='subscribed'/>")
        await alice.wait_for(lambda e: push_about(BOB)(e) and e.query.item.getAttribute("approved") == "true")
        reply = await self.iq(alice, "set", None, f"<block xmlns='urn:xmpp:blocking'><item jid='{BOB}'/></block>")
        self.assert_ok(reply)
        since = len(bob.stanzas)
        self.assert_failed(await self.subscribe(bob, ALICE, "presence", jid=BOB))
        bob.send(f"<presence to='{ALICE}' type='subscribe'/>")
        await self.settle(bob, alice)
        self.assertIsNone(await self.state(ALICE, BOB))
        self.assertTrue(await self.stored_approval(ALICE, BOB))
        self.nothing(bob, subscribed_from(ALICE), since)
        self.nothing(bob, push_about(ALICE), since)  # not even an 'ask' that betrays the approval
        self.nothing(alice, lambda e: presence_from(BOB)(e) and e.getAttribute("type") == "subscribe")

    async def test_a_pre_approval_is_keyed_by_the_bare_jid_only(self):
        """A request from bob's full JID, in another case, uses bob's own
        pre-approval and nobody else's; eve's roster saying 'approved' for
        alice gives eve nothing at alice's."""
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob", "Phone")
        eve = await self.roster_ready("eve")
        self.assert_ok(await self.publish(eve, EVE, "roster",
                                          f"<item xmlns='{NS_ROSTER}' jid='{ALICE}' approved='true'/>",
                                          item_id=ALICE))
        reply = self.assert_ok(await self.subscribe(eve, ALICE, "presence", jid=EVE))
        self.assertEqual(reply.pubsub.subscription["subscription"], "pending")
        alice.send(f"<presence to='{BOB}' type='subscribed'/>")
        await alice.wait_for(lambda e: push_about(BOB)(e) and e.query.item.getAttribute("approved") == "true")
        self.assert_error(await self.subscribe(eve, ALICE, "presence", jid=BOB.upper()), "bad-request")
        self.assertTrue(await self.stored_approval(ALICE, BOB))
        reply = self.assert_ok(await self.subscribe(bob, ALICE, "presence", jid=f"{BOB.upper()}/Other"))
        self.assertEqual(reply.pubsub.subscription["subscription"], "subscribed")
        self.assertEqual(await self.state(ALICE, BOB), "subscribed")
        self.assertEqual(await self.state(ALICE, EVE), "pending")

    async def test_nobody_else_writes_a_pre_approval_on_a_roster_node(self):
        """Eve approves herself on alice's roster node (XEP-0060, or a create
        of it): the node does not exist for her, and her request stays pending."""
        alice = await self.roster_ready("alice")
        eve = await self.roster_ready("eve")
        approval = f"<item xmlns='{NS_ROSTER}' jid='{EVE}' approved='true'/>"
        self.assert_error(await self.publish(eve, ALICE, "roster", approval, item_id=EVE), "item-not-found")
        self.assert_failed(await self.create(eve, ALICE, "roster"))
        reply = self.assert_ok(await self.subscribe(eve, ALICE, "presence", jid=EVE))
        self.assertEqual(reply.pubsub.subscription["subscription"], "pending")
        self.assertFalse(await self.stored_approval(ALICE, EVE))
        await self.settle(eve, alice)
        self.nothing(eve, subscribed_from(ALICE))

    async def test_a_junk_roster_item_with_approved_when_a_request_arrives(self):
        """Alice's native client stored junk on her own roster node, an
        ``approved`` attribute on something that is no roster item. Bob's
        request, through either door, gets an answer (no internal error), the
        sessions survive, and alice's roster still reads."""
        alice = await self.roster_ready("alice")
        bob = await self.roster_ready("bob")
        eve = await self.roster_ready("eve")
        self.assert_ok(await self.publish(alice, ALICE, "roster",
                                          "<junk xmlns='urn:example:junk' approved='true'><x/></junk>",
                                          item_id=BOB))
        self.assert_ok(await self.publish(alice, ALICE, "roster",
                                          f"<item xmlns='{NS_ROSTER}' jid='{EVE}' approved='1'/>", item_id=EVE))
        reply = self.assert_ok(await self.subscribe(bob, ALICE, "presence", jid=BOB))
        self.assertIn(reply.pubsub.subscription["subscription"], ("pending", "subscribed"))
        eve.send(f"<presence to='{ALICE}' type='subscribe'/>")
        await self.settle(eve, alice, bob)
        self.assertIn(await self.state(ALICE, EVE), ("pending", "subscribed"))
        self.assertIn(BOB, await self.roster(alice))
        await self.ping(bob)
        await self.ping(eve)


class FirstUse(DoorsTestCase):
    async def test_explicit_create_of_an_existing_node_is_a_conflict(self):
        """XEP-0060 §8.1.1: whatever made the node (a first message, a publish),
        an explicit create of it answers ``conflict``, and leaves it as it was."""
        alice = await self.online("alice")
        bob = await self.online("bob")
        node = pair(ALICE, BOB)
        self.chat(alice, BOB, "hello")
        await bob.wait_for(lambda e: e.name == "message" and e.body is not None)
        self.assert_error(await self.create(alice, PUBSUB, node), "conflict")
        self.assert_error(await self.create(bob, PUBSUB, node), "conflict")
        self.assert_ok(await self.publish(alice, ALICE, "urn:example:mine", "<x xmlns='urn:example'/>"))
        self.assert_error(await self.create(alice, ALICE, "urn:example:mine"), "conflict")
        self.assertEqual((await self.server.storage.page_items(PUBSUB, node)).count, 1)
        subscriptions = await self.server.storage.get_subscriptions(PUBSUB, node)
        self.assertEqual(sorted(s.subscriber for s in subscriptions), [ALICE, BOB])

    async def test_a_stranger_gets_nothing_from_a_pair_node_made_by_first_use(self):
        """Eve cannot make alice and bob's node, nor join it once made: every
        request answers as for a missing node, and no subscription or
        affiliation of hers appears."""
        alice = await self.online("alice")
        bob = await self.online("bob")
        eve = await self.online("eve")
        node = pair(ALICE, BOB)
        for attempt in (self.subscribe(eve, PUBSUB, node, jid=EVE),
                        self.publish(eve, PUBSUB, node, chat_item("forged"))):
            self.assert_error(await attempt, "item-not-found")
        self.assertIsNone(await self.server.storage.get_node(PUBSUB, node))
        # Eve and alice race to first use: whichever runs first, eve is no party.
        eve_subscribe = self.subscribe(eve, PUBSUB, node, jid=EVE)
        self.chat(alice, BOB, "first")
        self.assert_error(await eve_subscribe, "item-not-found")
        await bob.wait_for(lambda e: e.name == "message" and e.body is not None)
        self.assert_error(await self.subscribe(eve, PUBSUB, node, jid=EVE), "item-not-found")
        self.assert_error(await self.subscribe(alice, PUBSUB, node, jid=EVE), "bad-request")
        subscriptions = await self.server.storage.get_subscriptions(PUBSUB, node)
        self.assertEqual(sorted(s.subscriber for s in subscriptions), [ALICE, BOB])
        affiliations = await self.server.storage.get_affiliations(PUBSUB, node)
        self.assertNotIn(EVE, affiliations)


class CrossingThroughXEP0060(PresenceTestCase):
    """Today's crossing fix re-reads in the legacy door only: a request made
    through XEP-0060 and the owner's 'subscribed' at once must also end as one
    approval (each side read that the other had not happened)."""

    async def test_a_native_request_and_a_legacy_approval_that_cross(self):
        for attempt in range(8):
            juliet = await self.online("juliet", f"balcony{attempt}", presence=None)
            romeo = await self.online("romeo", f"mobile{attempt}")
            stanza_id = f"sub{attempt}"
            romeo.send(f"<iq type='set' id='{stanza_id}' to='{JULIET}'><pubsub xmlns='{NS_PUBSUB}'>"
                       f"<subscribe node='presence' jid='{ROMEO}'/></pubsub></iq>")
            juliet.send(f"<presence/><presence to='{ROMEO}' type='subscribed'/>")
            reply = await romeo.wait_for(is_result(stanza_id))
            self.assertEqual(reply["type"], "result", reply.toXml())
            # Romeo asked natively: juliet's presence reaches him as her node's item.
            await romeo.wait_for(lambda e: e.name == "message" and e.event is not None
                                 and f"id='balcony{attempt}'" in e.toXml())
            # Read through juliet's own process (another's storage cache may lag).
            juliet.send("<iq type='get' id='ros'><query xmlns='jabber:iq:roster'/></iq>")
            items = (await juliet.wait_for(is_result("ros"))).query.elements(NS_ROSTER, "item")
            item = next(i for i in items if i["jid"] == ROMEO)
            self.assertEqual(item.getAttribute("subscription"), "from", item.toXml())
            self.assertIsNone(item.getAttribute("approved"), "a pre-approval left behind")
            approvals = [e for e in romeo.stanzas if is_presence(JULIET, "subscribed")(e)
                         or (e.name == "message" and "subscription='subscribed'" in e.toXml())]
            self.assertLessEqual(len(approvals), 1)
            romeo.send(f"<presence to='{JULIET}' type='unsubscribe'/>")
            await juliet.wait_for(is_presence(ROMEO, "unsubscribe"))
            for client in (juliet, romeo):
                client.send("</stream:stream>")
                await client.closed


class CrossingThroughXEP0060InCluster(ClusterMixin, CrossingThroughXEP0060):
    pass


class HalfMadePairNode(DoorsTestCase):
    async def test_finishing_a_pair_node_grants_nothing_to_an_account_gone(self):
        """Another process made alice and bob's node and subscribed alice, then
        stopped (a crash) before bob's subscription and the affiliations; bob
        removed his account meanwhile (his removal found no subscription of
        his there). Alice's next request finishes the setup, and must not
        subscribe the removed bob, or the next ``bob`` to register inherits
        the conversation."""
        engine, storage = self.server.engine, self.server.storage
        alice = await self.online("alice")
        await self.server.accounts.delete_user(BOB)
        node_id = pair(ALICE, BOB)
        kind = engine.kind_of(PUBSUB, node_id)
        await storage.create_node(Node(PUBSUB, node_id, kind.initial_config(engine, PUBSUB, node_id), PUBSUB))
        await storage.set_subscription(Subscription(PUBSUB, node_id, ALICE, SUBSCRIBED, via=VIA_LEGACY))
        self.assert_failed(await self.publish(alice, PUBSUB, node_id, chat_item("for the old bob")))
        self.assertIsNone(await storage.get_subscription(PUBSUB, node_id, BOB))
        self.assertNotIn(BOB, await storage.get_affiliations(PUBSUB, node_id))
        self.assertEqual((await storage.page_items(PUBSUB, node_id)).count, 0)
        await self.ping(alice)


class FirstUseAtOnce(DoorsTestCase):
    """Every door's first use of one pair node at once, in one process (a
    pool of connections interleaves them) and across the cluster."""

    async def test_first_subscribe_publish_and_message_at_once(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        node_id = pair(ALICE, BOB)
        requests = [self.subscribe(alice, PUBSUB, node_id, jid=ALICE),
                    self.publish(bob, PUBSUB, node_id, chat_item("native from bob"))]
        self.chat(alice, BOB, "legacy from alice")
        self.chat(bob, ALICE, "legacy from bob")
        for request in requests:
            self.assert_ok(await request)
        await self.settle(alice, bob)
        for client in (alice, bob):
            self.nothing(client, lambda e: e.getAttribute("type") == "error")
        storage = self.server.storage
        self.assertEqual(sorted(s.subscriber for s in await storage.get_subscriptions(PUBSUB, node_id)),
                         [ALICE, BOB])
        affiliations = await storage.get_affiliations(PUBSUB, node_id)
        self.assertEqual({affiliations.get(ALICE), affiliations.get(BOB)}, {"publisher"})
        self.assertEqual((await storage.page_items(PUBSUB, node_id)).count, 3)


class FirstUseAtOncePostgreSQL(FirstUseAtOnce):
    storage = "postgresql"


class FirstUseAtOnceInCluster(ClusterMixin, FirstUseAtOnce):
    pass
