"""Pair nodes (``chat:A:B``) through both doors: issue 10, TWO_DOORS_SPEC.md "Pair nodes".

Each test attacks as eve (nobody's contact) or as a party, asserts the spec'd
answer, then that nothing changed: the victims received nothing, the history
(node items, MAM) is intact.
"""

from twisted.internet import reactor

from tests.doors_helpers import (
    ALICE,
    BOB,
    CAROL,
    DOMAIN,
    EVE,
    PUBSUB,
    DoorsTestCase,
    chat_body,
    chat_item,
    error_of,
    message_with,
    pair,
)

NODE = pair(ALICE, BOB)  # chat:alice@localhost:bob@localhost


class Takeover(DoorsTestCase):
    """eve creates alice and bob's future pair node before they ever talk."""

    async def test_open_node_created_by_a_stranger_gets_nothing_live_or_in_mam(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        reply = await self.create(eve, PUBSUB, NODE, {"publish_model": "open", "access_model": "open"})
        self.assert_error(reply, "forbidden")
        self.chat(alice, BOB, "for bob only")
        got = await bob.wait_for(chat_body("for bob only"))
        self.assertEqual((got["from"], got["type"]), (f"{ALICE}/phone", "chat"))
        await self.settle(alice, eve, bob)
        self.nothing(alice, lambda e: e.name == "message" and e.getAttribute("type") == "error")
        self.nothing(eve, message_with("for bob only"))
        self.assert_error(await self.items(eve, PUBSUB, NODE), "item-not-found")
        self.assertEqual(await self.mam(bob, ALICE), ["for bob only"])
        self.assertEqual(await self.mam(alice, BOB), ["for bob only"])
        self.assertEqual(await self.mam(eve), [])

    async def test_open_node_created_by_a_stranger_does_not_eat_offline_messages(self):
        alice = await self.online("alice", "phone")
        eve = await self.online("eve", "lair")
        self.assert_error(await self.create(eve, PUBSUB, NODE, {"publish_model": "open"}), "forbidden")
        self.chat(alice, BOB, "while you were out")
        await self.settle(alice, eve)
        self.nothing(alice, lambda e: e.name == "message" and e.getAttribute("type") == "error")
        self.nothing(eve, message_with("while you were out"))
        bob = await self.online("bob", "desk", presence=False)
        bob.send("<presence/>")
        waited = await bob.wait_for(chat_body("while you were out"))
        self.assertIsNotNone(waited.delay)
        self.assertEqual(waited["from"], f"{ALICE}/phone")

    async def test_default_config_node_by_a_stranger_does_not_bounce_the_parties(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        self.assert_error(await self.create(eve, PUBSUB, NODE), "forbidden")
        self.chat(alice, BOB, "no bounce")
        await bob.wait_for(chat_body("no bounce"))
        self.chat(bob, ALICE, "nor back")
        await alice.wait_for(chat_body("nor back"))
        await self.settle(alice, bob, eve)
        for client in (alice, bob):
            self.nothing(client, lambda e: e.name == "message" and e.getAttribute("type") == "error")
        self.nothing(eve, lambda e: e.name == "message" and ("no bounce" in e.toXml() or "nor back" in e.toXml()))

    async def test_stranger_create_is_forbidden_when_the_pair_exists_too(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        self.chat(alice, BOB, "already talking")
        await bob.wait_for(chat_body("already talking"))
        self.assert_error(await self.create(eve, PUBSUB, NODE), "forbidden")
        absent = pair(ALICE, CAROL)
        self.assert_error(await self.create(eve, PUBSUB, absent), "forbidden")
        self.assertIsNone(await self.server.storage.get_node(PUBSUB, absent))
        self.assertEqual((await self.server.storage.page_items(PUBSUB, NODE)).count, 1)

    async def test_spoofed_sender_through_a_pair_named_node(self):
        """eve (a party of chat:alice:eve) tries to own the node and to speak as carol."""
        alice = await self.online("alice", "phone")
        eve = await self.online("eve", "lair")
        node = pair(ALICE, EVE)
        reply = await self.create(eve, PUBSUB, node, {"publish_model": "open", "access_model": "open"})
        self.assert_error(reply, "not-acceptable")
        subscribe_alice = (f"<subscriptions node='{node}'><subscription jid='{ALICE}' "
                           "subscription='subscribed'/></subscriptions>")
        self.assert_failed(await self.pubsub(eve, "set", PUBSUB, subscribe_alice, owner=True))
        # The canonical way: eve publishes, the node is made as a first message would
        # make it, and the message is eve's whatever ``from`` it claims.
        reply = await self.publish(eve, PUBSUB, node, chat_item("it is me, carol", **{"from": f"{CAROL}/phone"}))
        self.assert_ok(reply)
        got = await alice.wait_for(chat_body("it is me, carol"))
        self.assertEqual((got["from"], got["type"]), (f"{EVE}/lair", "chat"))
        await self.settle(eve, alice)
        self.nothing(alice, lambda e: e.name == "message" and CAROL in e.getAttribute("from", ""))
        self.assertEqual(await self.mam(alice, EVE), ["it is me, carol"])


class PartyCreate(DoorsTestCase):
    async def test_party_creates_the_canonical_node_once(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.assert_ok(await self.create(alice, PUBSUB, NODE))
        self.assert_error(await self.create(alice, PUBSUB, NODE), "conflict")
        # It is the node a first legacy message would have made: chat works both ways
        # (bob has not used XEP-0060 on it yet, so he hears plain chat messages).
        self.chat(bob, ALICE, "on the node alice made")
        await alice.wait_for(message_with("on the node alice made"))
        self.chat(alice, BOB, "and back")
        got = await bob.wait_for(chat_body("and back"))
        self.assertEqual(got["from"], f"{ALICE}/phone")
        self.assert_error(await self.create(bob, PUBSUB, NODE), "conflict")
        # Only the service owns it.
        self.assert_error(await self.pubsub(alice, "set", PUBSUB, f"<delete node='{NODE}'/>", owner=True),
                          "forbidden")

    async def test_party_create_with_a_configuration_is_not_acceptable(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        reply = await self.create(alice, PUBSUB, NODE, {"publish_model": "open", "access_model": "open"})
        self.assert_error(reply, "not-acceptable")
        self.assertIsNone(await self.server.storage.get_node(PUBSUB, NODE))
        self.chat(alice, BOB, "still private")
        await bob.wait_for(chat_body("still private"))

    async def test_malformed_pair_names_are_not_acceptable(self):
        alice = await self.online("alice", "phone")
        for name in (f"chat:{BOB}:{ALICE}",  # not sorted
                     f"chat:{ALICE}:{ALICE}",  # not distinct
                     f"chat:{ALICE}:nobody@{DOMAIN}",  # not an account
                     f"chat:{ALICE}:bob@elsewhere.example",  # not local
                     f"chat:{ALICE}/phone:{BOB}",  # not bare
                     "chat:x:y", "chat:x", "chat:"):
            reply = await self.create(alice, PUBSUB, name)
            self.assertEqual(error_of(reply), ("not-acceptable", None), f"{name}: {reply.toXml()}")
            self.assertIsNone(await self.server.storage.get_node(PUBSUB, name), name)


class StrangerSeesNothing(DoorsTestCase):
    async def test_answers_on_an_existing_pair_equal_those_on_an_absent_one(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        self.chat(alice, BOB, "who talks to whom")
        await bob.wait_for(chat_body("who talks to whom"))
        existing = await self.answers(eve, PUBSUB, NODE)
        absent = await self.answers(eve, PUBSUB, pair(ALICE, CAROL))
        self.assertEqual(existing, absent)
        hidden = ("error", "item-not-found", None)
        self.assertEqual({verb: answer for verb, answer in existing.items() if answer != hidden}, {})
        await self.settle(eve, alice, bob)
        for client in (alice, bob):
            self.nothing(client, message_with("forged"))
        page = await self.server.storage.page_items(PUBSUB, NODE)
        self.assertEqual(page.count, 1)
        self.assertIsNone(await self.server.storage.get_subscription(PUBSUB, NODE, EVE))
        self.assertNotIn(EVE, await self.server.storage.get_affiliations(PUBSUB, NODE))
        self.assertIsNone(await self.server.storage.get_node(PUBSUB, pair(ALICE, CAROL)))

    async def test_publish_options_do_not_reveal_a_hidden_pair(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        self.chat(alice, BOB, "hi")
        await bob.wait_for(chat_body("hi"))
        for node in (NODE, pair(ALICE, CAROL)):
            reply = await self.publish(eve, PUBSUB, node, chat_item("forged"),
                                       publish_options={"pubsub#access_model": "open"})
            self.assert_error(reply, "item-not-found")


class PublishOptionsOrder(DoorsTestCase):
    async def test_non_publisher_gets_forbidden_not_precondition_not_met(self):
        carol = await self.online("carol", "home")
        eve = await self.online("eve", "lair")
        self.assert_ok(await self.create(carol, PUBSUB, "carols-news"))
        item = "<entry xmlns='http://www.w3.org/2005/Atom'><title>forged</title></entry>"
        mismatching = {"pubsub#access_model": "whitelist"}
        self.assert_error(await self.publish(eve, PUBSUB, "carols-news", item, publish_options=mismatching),
                          "forbidden")
        matching = {"pubsub#access_model": "open"}
        self.assert_error(await self.publish(eve, PUBSUB, "carols-news", item, publish_options=matching),
                          "forbidden")
        # The owner still gets the precondition answer.
        reply = await self.publish(carol, PUBSUB, "carols-news", item, publish_options=mismatching)
        self.assert_error(reply, "conflict", "precondition-not-met")
        self.assertEqual((await self.server.storage.page_items(PUBSUB, "carols-news")).count, 0)


class NativeStart(DoorsTestCase):
    """A pubsub-only user starts a one-to-one conversation (XEP-0207 §6)."""

    async def test_first_publish_creates_the_pair_and_reaches_legacy_bob(self):
        alice = await self.online("alice", "native")
        bob = await self.online("bob", "legacy")
        self.assert_ok(await self.publish(alice, PUBSUB, NODE, chat_item("first words")))
        got = await bob.wait_for(chat_body("first words"))
        self.assertEqual((got["from"], got["type"]), (f"{ALICE}/native", "chat"))
        self.assertEqual(got.getAttribute("to", BOB).split("/")[0], BOB)
        self.assertEqual(await self.mam(bob, ALICE), ["first words"])
        # bob answers the legacy way; alice, who speaks pubsub on the node, is told.
        self.chat(bob, ALICE, "who is this?")
        await alice.wait_for(message_with("who is this?"))
        await self.settle(alice, bob)
        self.nothing(alice, lambda e: e.name == "message" and e.getAttribute("type") == "error")

    async def test_first_subscribe_creates_the_pair(self):
        alice = await self.online("alice", "native")
        bob = await self.online("bob", "legacy")
        reply = self.assert_ok(await self.subscribe(alice, PUBSUB, NODE, jid=ALICE))
        self.assertEqual(reply.pubsub.subscription["subscription"], "subscribed")
        self.chat(bob, ALICE, "you subscribed first")
        await alice.wait_for(message_with("you subscribed first"))
        self.chat(alice, BOB, "and I answer the legacy way")
        await bob.wait_for(chat_body("and I answer the legacy way"))
        await self.settle(alice, bob)
        for client in (alice, bob):
            self.nothing(client, lambda e: e.name == "message" and e.getAttribute("type") == "error")


class OnlyTheServiceOwns(DoorsTestCase):
    async def test_party_cannot_manage_the_pair_node(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        eve = await self.online("eve", "lair")
        self.chat(alice, BOB, "keep this")
        await bob.wait_for(chat_body("keep this"))
        for verb in ("configure-set", "delete", "purge", "affiliations-get", "affiliations-set",
                     "subscriptions-get", "subscriptions-set"):
            type, body, owner = self.stranger_attempts(NODE)[verb]
            reply = await self.pubsub(bob, type, PUBSUB, body, owner=owner)
            self.assertEqual(error_of(reply), ("forbidden", None), f"{verb}: {reply.toXml()}")
        self.assert_error(await self.items(eve, PUBSUB, NODE), "item-not-found")
        self.assertEqual((await self.server.storage.page_items(PUBSUB, NODE)).count, 1)
        self.assertNotIn(EVE, await self.server.storage.get_affiliations(PUBSUB, NODE))
        self.assertIsNone(await self.server.storage.get_subscription(PUBSUB, NODE, EVE))


class HistoryRewriting(DoorsTestCase):
    """bob overwrites and retracts carol's message in their pair node."""

    async def test_other_party_cannot_overwrite_or_retract(self):
        carol = await self.online("carol", "home")
        bob = await self.online("bob", "desk")
        node = pair(BOB, CAROL)
        self.chat(carol, BOB, "what carol said")
        await bob.wait_for(chat_body("what carol said"))
        [carols] = self.item_ids(self.assert_ok(await self.items(bob, PUBSUB, node)))
        reply = await self.publish(bob, PUBSUB, node, chat_item("what bob says carol said"), item_id=carols)
        self.assert_error(reply, "forbidden")
        self.assert_error(await self.retract(bob, PUBSUB, node, carols), "forbidden")
        await self.settle(bob, carol)
        self.nothing(carol, message_with("what bob says carol said"))
        self.nothing(carol, lambda e: e.name == "message" and e.event is not None and e.event.retract is not None)
        self.assertEqual(await self.mam(carol, BOB), ["what carol said"])
        self.assertEqual(await self.mam(bob, CAROL), ["what carol said"])

    async def test_own_items_may_be_overwritten_and_retracted(self):
        carol = await self.online("carol", "home")
        bob = await self.online("bob", "desk")
        node = pair(BOB, CAROL)
        self.chat(carol, BOB, "hello bob")
        await bob.wait_for(chat_body("hello bob"))
        self.assert_ok(await self.publish(bob, PUBSUB, node, chat_item("typo"), item_id="bobs-1"))
        await carol.wait_for(chat_body("typo"))
        self.assert_ok(await self.publish(bob, PUBSUB, node, chat_item("fixed"), item_id="bobs-1"))
        self.assertEqual(await self.mam(carol, BOB), ["hello bob", "fixed"])
        self.assert_ok(await self.retract(bob, PUBSUB, node, "bobs-1"))
        self.assertEqual(await self.mam(carol, BOB), ["hello bob"])


class PairSubscriptionOptions(DoorsTestCase):
    async def test_only_deliver_may_be_set(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.chat(alice, BOB, "hi")
        await bob.wait_for(chat_body("hi"))
        self.assert_error(await self.set_options(bob, PUBSUB, NODE, {"xep207#offline-since": "x"}, jid=BOB),
                          "forbidden")
        self.assert_error(await self.set_options(bob, PUBSUB, NODE, {"xep207#kind": "generic"}, jid=BOB),
                          "forbidden")
        self.assert_error(await self.set_options(bob, PUBSUB, NODE, {"x-unknown": "1"}, jid=BOB),
                          "bad-request", "invalid-options")
        self.assert_error(await self.subscribe(bob, PUBSUB, NODE, jid=BOB, options={"x-unknown": "1"}),
                          "bad-request", "invalid-options")
        subscription = await self.server.storage.get_subscription(PUBSUB, NODE, BOB)
        self.assertEqual({k for k in subscription.options if k.startswith("x-") or k == "xep207#kind"}, set())
        self.assert_ok(await self.set_options(bob, PUBSUB, NODE, {"pubsub#deliver": "0"}, jid=BOB))
        # XEP-0060 §16.4.2: pubsub#deliver is a boolean; any other text was stored with the mailbox.
        for value in ("x" * 3000, "maybe", ["1", "0"]):
            self.assert_error(await self.set_options(bob, PUBSUB, NODE, {"pubsub#deliver": value}, jid=BOB),
                              "bad-request", "invalid-options")
        self.assertEqual((await self.server.storage.get_subscription(PUBSUB, NODE, BOB)).options["pubsub#deliver"],
                         "0")


class DeletedAccount(DoorsTestCase):
    """bob deletes his account (XEP-0077) and registers the name again."""

    server_args = DoorsTestCase.server_args + ("--registration",)

    async def register(self, user: str, password: str) -> None:
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        client.send("<iq type='set' id='reg'><query xmlns='jabber:iq:register'>"
                    f"<username>{user}</username><password>{password}</password></query></iq>")
        await client.expect("id='reg' type='result'")
        client.transport.loseConnection()

    async def recreate_bob(self, old_bob):
        old_bob.send("<iq type='set' id='bye'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        await old_bob.closed.addTimeout(10, reactor)  # the account is gone: so is its session
        self.assertIsNone(await self.server.storage.get_account(BOB))
        await self.register("bob", "a new password")
        client = await self.connect()
        await client.login("bob", "a new password", resource="again")
        client.send("<presence/>")
        await client.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == client.jid)
        return client

    async def test_new_account_sees_nothing_old_and_chat_works_both_ways(self):
        alice = await self.online("alice", "phone")
        old_bob = await self.online("bob", "desk")
        self.chat(alice, BOB, "to the old bob")
        await old_bob.wait_for(chat_body("to the old bob"))
        self.chat(old_bob, ALICE, "from the old bob")
        await alice.wait_for(chat_body("from the old bob"))
        bob = await self.recreate_bob(old_bob)
        self.assertEqual(await self.mam(bob), [])
        self.assertEqual(await self.mam(bob, ALICE), [])
        old = await self.items(bob, PUBSUB, NODE)
        self.assertNotIn("old bob", old.toXml())
        # Legacy door, both ways.
        self.chat(alice, BOB, "hello new bob")
        got = await bob.wait_for(message_with("hello new bob"))
        self.assertNotEqual(got.getAttribute("type"), "error")
        self.chat(bob, ALICE, "hello alice")
        back = await alice.wait_for(message_with("hello alice"))
        self.assertEqual((back["from"], back.getAttribute("type")), (f"{BOB}/again", "chat"))
        # XEP-0060 door: the new bob publishes to the pair node.
        self.assert_ok(await self.publish(bob, PUBSUB, NODE, chat_item("native hello")))
        await alice.wait_for(chat_body("native hello"))
        await self.settle(alice, bob)
        for client in (alice, bob):
            self.nothing(client, lambda e: e.name == "message" and e.getAttribute("type") == "error")
        self.nothing(bob, lambda e: "old bob" in e.toXml())
