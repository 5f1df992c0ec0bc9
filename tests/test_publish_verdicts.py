"""The engine's remembered publish verdicts (issue 13): a party's chat message
to its pair node skips the kind's checks only while the cache holds the very
node, affiliations and subscriptions they were judged on; anything that
changes one of them (through either door, or the service) judges the next
message anew, and the block lists are asked on every message.

The engine is called here exactly as the chat capture calls it (``vetted``,
``via='legacy'``, ``in_pipeline``: each call waits for the one before, as the
conversation's pipeline would), so that the engine itself, not the legacy
``BlockingCapture`` in front of it, must refuse."""

import os

from twisted.internet import defer
from twisted.trial import unittest

from tests.doors_helpers import ALICE, BOB, DOMAIN, EVE, PUBSUB, chat_body, message_with, pair
from tests.server_helpers import PASSWORD
from tests.test_blocking import NODE as BLOCKLIST, NS_BLOCKING, BlockingTestCase

from xep207.hooks import SESSION_UNBOUND
from xep207.ordering import InOrder
from xep207.pubsub.errors import StanzaError
from xep207.pubsub.kinds.base import Trusted
from xep207.server import accounts
from xep207.storage.records import new_id, new_item_id

NODE = pair(ALICE, BOB)


def payload(sender: str, body: str) -> str:
    return f"<message from='{sender}' to='{BOB}' type='chat'><body>{body}</body></message>"


class RememberedVerdicts(BlockingTestCase):
    async def setUp(self):
        await super().setUp()
        engine = self.server.engine
        self.judged = []  # requestors the full path judged (the remembered path is not counted)
        full_path = engine._publish

        def counted(requestor, *args, **kwargs):
            self.judged.append(requestor)
            return full_path(requestor, *args, **kwargs)

        engine._publish = counted

    def send(self, sender: str, body: str):
        """A chat message as the capture publishes it."""
        return self.server.engine.publish(sender, PUBSUB, NODE, [(None, payload(sender, body))],
                                          vetted=True, via="legacy", in_pipeline=True)

    async def refused(self, sender: str, body: str) -> str:
        try:
            await self.send(sender, body)
        except StanzaError as e:
            return e.condition
        self.fail(f"{sender}'s {body!r} was published")

    async def talking(self):
        """alice/phone and bob online, two messages sent: the second one remembered."""
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        await self.send(f"{ALICE}/phone", "one")
        await self.send(f"{ALICE}/phone", "two")
        await bob.wait_for(chat_body("two"))
        self.judged.clear()
        await self.send(f"{ALICE}/phone", "three")
        self.assertEqual(self.judged, [], "a known sender on an unchanged node takes the remembered path")
        await bob.wait_for(chat_body("three"))
        return alice, bob

    async def read_back(self):
        """Whatever reads the node next (a disco, a fan-out) fills the cache
        again, with new objects: the next message must not ride on the old verdict."""
        storage = self.server.storage
        await storage.get_node(PUBSUB, NODE)
        await storage.get_affiliations(PUBSUB, NODE)
        await storage.get_subscriptions(PUBSUB, NODE)

    async def stored_bodies(self) -> list[str]:
        page = await self.server.storage.page_items(PUBSUB, NODE)
        return [i.payload.split("<body>")[1].split("</body>")[0] for i in page.items]

    async def test_a_conversations_publish_from_outside_its_pipeline_is_judged_in_full(self):
        """A vetted publish to a pair node its caller did not place in the
        conversation's pipeline never rides on a remembered verdict: the full
        path judges it and places it there (``PairKind.pipelined``)."""
        alice, bob = await self.talking()
        await self.server.engine.publish(f"{ALICE}/phone", PUBSUB, NODE,
                                         [(None, payload(f"{ALICE}/phone", "outside"))], vetted=True, via="legacy")
        self.assertEqual(self.judged, [f"{ALICE}/phone"])
        await bob.wait_for(chat_body("outside"))
        self.assertEqual(await self.stored_bodies(), ["one", "two", "three", "outside"])

    async def test_a_block_by_the_recipient_through_xep0191_refuses_the_next_message(self):
        alice, bob = await self.talking()
        self.assert_ok(await self.block(bob, ALICE))
        self.assertEqual(await self.refused(f"{ALICE}/phone", "blocked"), "service-unavailable")
        self.assert_ok(await self.unblock(bob, ALICE))
        await self.send(f"{ALICE}/phone", "unblocked")
        await bob.wait_for(chat_body("unblocked"))
        self.assertEqual(await self.stored_bodies(), ["one", "two", "three", "unblocked"])

    async def test_a_block_by_the_sender_through_xep0060_refuses_the_next_message(self):
        alice, bob = await self.talking()
        self.assert_ok(await self.publish(alice, ALICE, BLOCKLIST, f"<item xmlns='{NS_BLOCKING}' jid='{BOB}'/>"))
        self.assertEqual(await self.refused(f"{ALICE}/phone", "to one I blocked"), "not-acceptable")
        self.assertEqual(await self.stored_bodies(), ["one", "two", "three"])

    async def test_a_block_of_one_resource_refuses_that_resource_only(self):
        alice, bob = await self.talking()
        laptop = await self.online("alice", "laptop")
        await self.send(f"{ALICE}/laptop", "from the laptop")
        await bob.wait_for(chat_body("from the laptop"))
        self.assert_ok(await self.block(bob, f"{ALICE}/phone"))
        self.assertEqual(await self.refused(f"{ALICE}/phone", "phone"), "service-unavailable")
        await self.send(f"{ALICE}/laptop", "laptop again")
        await bob.wait_for(chat_body("laptop again"))
        await self.settle(alice, laptop, bob)
        self.nothing(bob, chat_body("phone"))

    async def test_an_affiliation_change_by_the_service_is_judged_anew(self):
        alice, bob = await self.talking()
        # A party cannot change affiliations through XEP-0060 ...
        reply = await self.pubsub(alice, "set", PUBSUB, f"<affiliations node='{NODE}'>"
                                  f"<affiliation jid='{BOB}' affiliation='none'/></affiliations>", owner=True)
        self.assert_failed(reply)
        await self.send(f"{ALICE}/phone", "still a publisher")
        # ... the service can: alice is an outcast now.
        await self.server.engine.set_node_affiliations(Trusted(PUBSUB), PUBSUB, NODE, {ALICE: "outcast"})
        await self.read_back()
        self.judged.clear()
        self.assertEqual(await self.refused(f"{ALICE}/phone", "no longer"), "forbidden")
        self.assertEqual(self.judged, [f"{ALICE}/phone"])
        await self.server.engine.set_node_affiliations(Trusted(PUBSUB), PUBSUB, NODE, {ALICE: "publisher"})
        await self.send(f"{ALICE}/phone", "again")
        await bob.wait_for(chat_body("again"))
        self.assertEqual(await self.stored_bodies(), ["one", "two", "three", "still a publisher", "again"])

    async def test_a_subscription_option_set_through_xep0060_is_judged_anew(self):
        alice, bob = await self.talking()
        self.assert_ok(await self.set_options(bob, PUBSUB, NODE, {"pubsub#deliver": "0"}, jid=BOB))
        await self.read_back()
        self.judged.clear()
        await self.send(f"{ALICE}/phone", "not delivered live")
        self.assertEqual(self.judged, [f"{ALICE}/phone"], "a new subscriptions state: judged again")
        self.assert_ok(await self.set_options(bob, PUBSUB, NODE, {"pubsub#deliver": "1"}, jid=BOB))
        await self.send(f"{ALICE}/phone", "delivered again")
        # (bob used XEP-0060 on the node: he speaks pubsub for it now, and gets the event form)
        await bob.wait_for(message_with("delivered again"))
        await self.settle(alice, bob)
        self.nothing(bob, message_with("not delivered live"))
        self.assertIn("not delivered live", await self.stored_bodies())

    async def test_a_deleted_node_is_made_again_as_by_a_first_message(self):
        alice, bob = await self.talking()
        old = self.server.engine.cached_metadata(PUBSUB, NODE)
        await self.server.engine.delete_node(Trusted(PUBSUB), PUBSUB, NODE)
        self.judged.clear()
        await self.send(f"{ALICE}/phone", "a new start")
        self.assertEqual(self.judged, [f"{ALICE}/phone"])
        await bob.wait_for(chat_body("a new start"))
        self.assertEqual(await self.stored_bodies(), ["a new start"])
        subscriptions = await self.server.storage.get_subscriptions(PUBSUB, NODE)
        self.assertEqual(sorted(s.subscriber for s in subscriptions), [ALICE, BOB])
        self.assertIsNot(self.server.engine.cached_metadata(PUBSUB, NODE), old)

    async def test_a_deleted_account_takes_its_pair_with_it(self):
        alice, bob = await self.talking()
        await self.server.engine.delete_account(Trusted(DOMAIN), BOB)
        await self.read_back()
        self.assertEqual(await self.refused(f"{ALICE}/phone", "to nobody"), "not-acceptable")
        self.assertEqual(await self.server.storage.get_node(PUBSUB, NODE), None)

    async def test_a_stranger_and_the_service_name_are_never_taken_for_a_party(self):
        alice, bob = await self.talking()
        for stranger in ("eve@localhost/lair", "eve@localhost", PUBSUB, ALICE.upper() + "/phone"):
            self.assertEqual(await self.refused(stranger, "me too"), "item-not-found", stranger)
        self.assertEqual(await self.stored_bodies(), ["one", "two", "three"])

    async def test_real_stanzas_through_the_legacy_door_are_judged_anew_after_a_change(self):
        alice, bob = await self.talking()
        for i in range(3):
            alice.send(f"<message to='{BOB}' type='chat'><body>real {i}</body></message>")
        await bob.wait_for(chat_body("real 2"))
        self.assertEqual(self.judged, [], "the capture's publishes ride on the remembered verdict")
        # The service makes alice an outcast: her next stanza is refused by the engine.
        await self.server.engine.set_node_affiliations(Trusted(PUBSUB), PUBSUB, NODE, {ALICE: "outcast"})
        await self.read_back()
        alice.send(f"<message id='refused' to='{BOB}' type='chat'><body>refused</body></message>")
        error = await alice.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "refused")
        self.assertEqual(error["type"], "error")
        self.assertIn("forbidden", error.error.toXml())
        self.assertEqual(self.judged, [f"{ALICE}/phone"])
        await self.settle(alice, bob)
        self.nothing(bob, chat_body("refused"))
        self.assertNotIn("refused", await self.stored_bodies())

    async def test_an_oversized_message_is_refused_after_remembered_ones(self):
        alice, bob = await self.talking()
        engine = self.server.engine
        big = "x" * (engine.max_payload_size + 1)
        self.assertEqual(await self.refused(f"{ALICE}/phone", big), "not-acceptable")
        self.assertEqual(await self.stored_bodies(), ["one", "two", "three"])

    async def test_a_kind_added_later_forgets_what_the_old_kinds_allowed(self):
        alice, bob = await self.talking()
        self.assertTrue(self.server.engine._verdicts)
        self.server.engine.add_kind(type(self.server.engine.kind_of(PUBSUB, NODE))(PUBSUB))
        self.assertFalse(self.server.engine._verdicts)
        await self.send(f"{ALICE}/phone", "judged by the new kind")
        self.assertEqual(self.judged, [f"{ALICE}/phone"])

    async def test_a_native_publish_is_judged_and_vetted_every_time(self):
        alice, bob = await self.talking()
        reply = await self.publish(alice, PUBSUB, NODE, f"<message xmlns='jabber:client' to='{BOB}'>"
                                                       "<body>natively</body></message>")
        self.assert_ok(reply)
        await bob.wait_for(chat_body("natively"))
        self.assert_ok(await self.block(bob, ALICE))
        reply = await self.publish(alice, PUBSUB, NODE, f"<message xmlns='jabber:client' to='{BOB}'>"
                                                       "<body>natively blocked</body></message>")
        self.assert_error(reply, "service-unavailable")
        self.assertEqual(await self.stored_bodies(), ["one", "two", "three", "natively"])


    async def test_a_block_of_the_whole_domain_refuses_the_next_message(self):
        alice, bob = await self.talking()
        self.assert_ok(await self.block(bob, DOMAIN))
        self.assertEqual(await self.refused(f"{ALICE}/phone", "from the domain"), "service-unavailable")
        self.assertEqual(await self.stored_bodies(), ["one", "two", "three"])

    async def test_every_xep0060_request_of_a_stranger_and_a_party_leaves_the_pair_as_it_was(self):
        """Purge, delete, configure, affiliations, subscriptions... by eve and by
        alice through XEP-0060: refused; the remembered verdict stays true and
        the conversation goes on in order, nothing lost."""
        alice, bob = await self.talking()
        eve = await self.online("eve", "lair")
        state = self.server.engine.cached_metadata(PUBSUB, NODE)
        answers = await self.answers(eve, PUBSUB, NODE)
        self.assertEqual({verb: a for verb, a in answers.items() if a[0] != "error"}, {}, "eve changed nothing")
        await self.answers(alice, PUBSUB, NODE)
        self.assertEqual(await self.server.storage.get_affiliations(PUBSUB, NODE),
                         {PUBSUB: "owner", ALICE: "publisher", BOB: "publisher"})
        subscriptions = await self.server.storage.get_subscriptions(PUBSUB, NODE)
        self.assertEqual(sorted(s.subscriber for s in subscriptions), [ALICE, BOB])
        if self.server.engine.cached_metadata(PUBSUB, NODE) is state:
            self.judged.clear()
        await self.send(f"{ALICE}/phone", "four")
        await bob.wait_for(chat_body("four"))
        # (alice's own publish among her attempts is a party's message: stored)
        self.assertEqual(await self.stored_bodies(), ["one", "two", "three", "forged", "four"])
        await self.settle(alice, bob, eve)
        self.nothing(eve, message_with("four"))

    async def gone(self, client, full: str) -> None:
        """``client`` logged out and its session ``full`` unbound on the server."""
        unbound: defer.Deferred = defer.Deferred()

        def seen(session):
            if session.full == full and not unbound.called:
                unbound.callback(None)

        self.server.hooks.add(SESSION_UNBOUND, seen)
        self.addCleanup(self.server.hooks.remove, SESSION_UNBOUND, seen)
        await self.logout(client)
        if self.server.router.session(full) is not None:
            await unbound

    async def test_a_message_missed_on_the_remembered_path_is_kept_offline_and_archived(self):
        alice, bob = await self.talking()
        await self.gone(bob, f"{BOB}/desk")
        self.judged.clear()
        await self.send(f"{ALICE}/phone", "while away")
        self.assertEqual(self.judged, [], "bob going away changes nothing the verdict depends on")
        bob = await self.online("bob", "desk")
        await bob.wait_for(chat_body("while away"))
        self.assertIn("while away", await self.mam(alice, BOB))

    async def test_an_account_made_again_with_the_same_name_starts_anew(self):
        alice, bob = await self.talking()
        await self.gone(bob, f"{BOB}/desk")
        await self.server.engine.delete_account(Trusted(DOMAIN), BOB)
        await accounts.create_account(self.server.engine, BOB, PASSWORD)
        new_bob = await self.online("bob", "new")
        self.judged.clear()
        await self.send(f"{ALICE}/phone", "hello, new bob")
        self.assertEqual(self.judged, [f"{ALICE}/phone"])
        await new_bob.wait_for(chat_body("hello, new bob"))
        self.assertEqual(await self.stored_bodies(), ["hello, new bob"])

    async def test_messages_through_both_doors_from_one_session_arrive_in_order(self):
        """Legacy messages (the remembered path) and a native publish (the full
        path) sent back to back from one session: stored and delivered in order."""
        alice, bob = await self.talking()
        native = (f"<iq type='set' id='native' to='{PUBSUB}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                  f"<publish node='{NODE}'><item><message xmlns='jabber:client' to='{BOB}'><body>n</body>"
                  "</message></item></publish></pubsub></iq>")
        alice.send(f"<message to='{BOB}' type='chat'><body>l1</body></message>" + native
                   + f"<message to='{BOB}' type='chat'><body>l2</body></message>")
        await bob.wait_for(chat_body("l2"))
        await self.settle(alice, bob)
        received = [str(e.body) for e in bob.stanzas if e.name == "message" and e.body is not None]
        self.assertEqual(received[-3:], ["l1", "n", "l2"])
        self.assertEqual((await self.stored_bodies())[-3:], ["l1", "n", "l2"])


class RememberedVerdictsOnSQLite(RememberedVerdicts):
    storage = "sqlite"


class ItemIds(unittest.TestCase):
    """``new_id`` takes ids from one ``os.urandom`` read per 256: still 128
    random bits each, never one twice, and a forked child draws its own."""

    def test_ids_are_hex_of_16_bytes_and_unique_across_refills(self):
        ids = [new_id() for _ in range(3000)]
        self.assertEqual(len(set(ids)), len(ids))
        self.assertTrue(all(len(i) == 32 and int(i, 16) >= 0 for i in ids))

    def test_a_forked_child_does_not_repeat_the_parents_pool(self):
        new_id()  # the pool is filled: a child that kept it would hand out the parent's next ids
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next ids, then out at once
            os.write(write, "".join(new_id() for _ in range(4)).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as f:
            child = f.read()
        parent = [new_id() for _ in range(4)]
        self.assertEqual(len(child), 128)
        self.assertFalse(any(i in child for i in parent))

    def test_item_ids_grow_with_time_and_stay_unpredictable(self):
        """An item id is ordered by its millisecond (index locality: new rows
        at the end of each node's range), then 80 random bits (XEP-0359)."""
        earlier, later = new_item_id(lambda: 1764000000.001), new_item_id(lambda: 1764000000.002)
        self.assertLess(earlier, later)
        self.assertLess(new_item_id(lambda: 1764000000.999), new_item_id(lambda: 1764000001.0))
        same_ms = [new_item_id(lambda: 1764000000.5) for _ in range(1000)]
        self.assertTrue(all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in same_ms))
        self.assertEqual({i[:12] for i in same_ms}, {f"{1764000000500:012x}"})
        self.assertEqual(len({i[12:] for i in same_ms}), 1000)
        self.assertNotEqual([i[12:] for i in same_ms], sorted(i[12:] for i in same_ms))  # (no counter)


class WaitFor(unittest.TestCase):
    """``InOrder.wait_for``: a chat message's store counted for XEP-0198 without
    a function and a Deferred made per message; what runs next still waits."""

    def test_what_runs_next_waits_for_it_in_order(self):
        order, first, second = InOrder(), defer.Deferred(), defer.Deferred()
        ran = []
        order.run(lambda: first)
        order.wait_for(second)  # behind the first
        order.run(lambda: ran.append("third"))
        first.callback(None)
        self.assertEqual(ran, [])
        self.assertTrue(order.locked)
        second.errback(RuntimeError("its owner handles it"))
        self.assertEqual(ran, ["third"])
        self.assertFalse(order.locked)
        self.failureResultOf(second, RuntimeError)

    def test_idle_and_done_costs_nothing(self):
        order = InOrder()
        order.wait_for(defer.succeed(None))
        self.assertFalse(order.locked)
        pending = defer.Deferred()
        order.wait_for(pending)
        self.assertTrue(order.locked)
        pending.callback(None)
        self.assertFalse(order.locked)

    def test_a_fired_deferred_still_waiting_on_another_is_not_done(self):
        """A store whose result chain waits on more (the XEP-0198 window being
        written) keeps what comes next waiting, through ``run`` and ``wait_for``."""
        for use_run in (True, False):
            order, inner, ran = InOrder(), defer.Deferred(), []
            outer = defer.succeed(None)
            outer.addCallback(lambda _: inner)  # called, but paused on ``inner``
            if use_run:
                order.run(lambda: outer)
            else:
                order.wait_for(outer)
            order.run(lambda: ran.append("next"))
            self.assertEqual(ran, [], use_run)
            inner.callback(None)
            self.assertEqual(ran, ["next"], use_run)
            self.assertFalse(order.locked)
