"""The one-to-one hot path (issue 13): the plain-call forms of the stanza hooks
and of the chat capture keep the semantics of the coroutines they replace, and
a change between two messages of a busy conversation (a block, an unblock,
through either door) takes effect at once."""

from twisted.internet import defer
from twisted.trial import unittest
from twisted.words.xish import domish

from tests.doors_helpers import ALICE, EVE, chat_body, message_with
from tests.test_blocking import NODE, NS_BLOCKING, BlockingTestCase

from xep207.hooks import Hooks
from xep207.ordering import ConversationLock


class FirstNow(unittest.TestCase):
    def test_an_answer_at_once_is_returned_as_is(self):
        hooks, seen = Hooks(), []
        hooks.add("e", lambda v: seen.append("a") or False)
        hooks.add("e", lambda v: seen.append("b") or "taken")
        hooks.add("e", lambda v: seen.append("c") or "late")
        self.assertEqual(hooks.first_now("e", 1), "taken")
        self.assertEqual(seen, ["a", "b"])
        self.assertIsNone(Hooks().first_now("nothing"))

    def test_a_deferred_false_passes_on_to_the_next_handler(self):
        hooks, pending, seen = Hooks(), defer.Deferred(), []
        hooks.add("e", lambda v: pending)
        hooks.add("e", lambda v: seen.append(v) or "second")
        answer = hooks.first_now("e", 7)
        self.assertIsInstance(answer, defer.Deferred)
        self.assertEqual(seen, [])  # the next handler waits for the first's answer
        pending.callback(False)
        self.assertEqual(self.successResultOf(answer), "second")
        self.assertEqual(seen, [7])

    def test_a_deferred_answer_stops_there(self):
        hooks, seen, pending = Hooks(), [], defer.Deferred()
        hooks.add("e", lambda v: pending)
        hooks.add("e", lambda v: seen.append(v))
        answer = hooks.first_now("e", 1)
        pending.callback(True)
        self.assertIs(self.successResultOf(answer), True)
        self.assertEqual(seen, [])

    def test_a_fired_deferred_answers_at_once(self):
        # (a publish handed to storage at once: no callback chain per message)
        hooks, seen = Hooks(), []
        hooks.add("e", lambda v: seen.append("first") or defer.succeed(None))
        hooks.add("e", lambda v: seen.append("second") or defer.succeed(False))
        hooks.add("e", lambda v: seen.append("third") or defer.succeed(True))
        hooks.add("e", lambda v: seen.append("never"))
        self.assertIs(hooks.first_now("e", 1), True)
        self.assertEqual(seen, ["first", "second", "third"])

    def test_a_fired_failure_stays_a_failure(self):
        hooks, seen = Hooks(), []
        hooks.add("e", lambda v: defer.fail(ValueError("stored nowhere")))
        hooks.add("e", lambda v: seen.append(v))
        self.failureResultOf(hooks.first_now("e", 1), ValueError)
        self.assertEqual(seen, [])

    def test_a_coroutine_handler_is_awaited(self):
        hooks = Hooks()

        async def passes(v):
            return None

        async def answers(v):
            return v * 2

        hooks.add("e", passes)
        hooks.add("e", answers)
        self.assertEqual(self.successResultOf(hooks.first_now("e", 21)), 42)

    def test_a_failure_reaches_the_caller(self):
        hooks = Hooks()
        hooks.add("e", lambda v: defer.fail(ValueError("bad")))
        hooks.add("e", lambda v: "never")
        self.failureResultOf(hooks.first_now("e", 1), ValueError)

    async def test_first_still_answers_as_a_coroutine(self):
        hooks = Hooks()
        hooks.add("e", lambda v: defer.succeed(None))
        hooks.add("e", lambda v: "x")
        self.assertEqual(await hooks.first("e", 1), "x")


class NotifyByKind(unittest.TestCase):
    """``ITEM_PUBLISHED`` runs on every publish: a handler that asked for
    some node kinds is not called for the others; one that did not sees all."""

    def test_only_the_handlers_of_the_kind_run_in_priority_order(self):
        hooks, seen = Hooks(), []
        hooks.add("e", lambda v: seen.append(("pair", v)), kinds=("pair",))
        hooks.add("e", lambda v: seen.append(("all", v)))
        hooks.add("e", lambda v: seen.append(("first", v)), priority=5, kinds=("room", "pair"))
        hooks.notify("e", 1, kind="pair")
        hooks.notify("e", 2, kind="presence")
        hooks.notify("e", 3, kind="room")
        self.assertEqual(seen, [("first", 1), ("pair", 1), ("all", 1), ("all", 2), ("first", 3), ("all", 3)])
        hooks.add("e", lambda v: seen.append(("late", v)), kinds=("presence",))  # (the plans start over)
        seen.clear()
        hooks.notify("e", 4, kind="presence")
        self.assertEqual(seen, [("all", 4), ("late", 4)])

    def test_a_failing_handler_is_logged_and_the_others_still_run(self):
        hooks, seen = Hooks(), []
        hooks.add("e", lambda v: 1 / 0, priority=3)
        hooks.add("e", lambda v: defer.fail(ValueError("later")), priority=2)
        hooks.add("e", lambda v: seen.append(v))
        self.assertIsNone(hooks.notify("e", 7, kind="pair"))
        self.assertEqual(seen, [7])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError, ValueError)), 2)

    def test_one_handler_added_for_two_kinds_in_two_calls(self):
        """Each ``add`` is a registration of its own (a plugin's method for the
        pair kind, then for the room kind): neither replaces the other's kinds."""
        hooks, seen = Hooks(), []

        def handler(v):
            seen.append(v)
        hooks.add("e", handler, kinds=("pair",))
        hooks.add("e", handler, kinds=("room",))
        for value, kind in ((1, "pair"), (2, "room"), (3, "presence")):
            hooks.notify("e", value, kind=kind)
        self.assertEqual(seen, [1, 2])
        hooks.remove("e", handler)  # (every registration of it)
        hooks.add("e", handler)  # again, for every kind
        seen.clear()
        for value, kind in ((4, "pair"), (5, "presence")):
            hooks.notify("e", value, kind=kind)
        self.assertEqual(seen, [4, 5])

    def test_one_handler_added_for_two_stanza_names_in_two_calls(self):
        hooks, seen = Hooks(), []

        def handler(stanza):
            seen.append(stanza.name)
        hooks.add("s", handler, stanzas=("message",))
        hooks.add("s", handler, stanzas=("presence",))
        for name in ("message", "presence", "iq"):
            hooks.first_now("s", domish.Element((None, name)))
        self.assertEqual(seen, ["message", "presence"])

    def test_fire_still_calls_every_handler(self):
        hooks, seen = Hooks(), []
        hooks.add("e", lambda v: seen.append(v), kinds=("pair",))
        self.successResultOf(hooks.fire("e", 9))
        self.assertEqual(seen, [9])


class TheConversationLock(unittest.TestCase):
    def test_free_takes_no_deferred_and_waiters_go_in_order(self):
        lock, order = ConversationLock(), []
        self.assertTrue(lock.try_acquire())
        self.assertFalse(lock.try_acquire())
        first, second = lock.acquire(), lock.acquire()
        first.addCallback(lambda _: order.append(1))
        second.addCallback(lambda _: order.append(2))
        lock.release()
        self.assertEqual(order, [1])
        self.assertTrue(lock.locked)  # handed over, never free in between
        lock.release()
        self.assertEqual(order, [1, 2])
        lock.release()
        self.assertFalse(lock.locked)
        self.assertFalse(lock.waiting)


class ChangesBetweenMessages(BlockingTestCase):
    async def test_a_block_between_two_messages_of_a_busy_pair_holds_at_once(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        for i in range(20):  # a burst: the pair's messages queue behind each other
            eve.send(f"<message to='{ALICE}' type='chat'><body>burst {i}</body></message>")
        await alice.wait_for(chat_body("burst 19"))
        # Blocked through XEP-0060 (a publish to the block list node) ...
        self.assert_ok(await self.publish(alice, ALICE, NODE, f"<item xmlns='{NS_BLOCKING}' jid='{EVE}'/>"))
        eve.send(f"<message id='after' to='{ALICE}' type='chat'><body>after the block</body></message>")
        error = await eve.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "after")
        self.assertIn("service-unavailable", error.error.toXml())
        alice.send(f"<message id='mine' to='{EVE}' type='chat'><body>not to you</body></message>")
        error = await alice.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "mine")
        self.assertIn("not-acceptable", error.error.toXml())
        # ... and unblocked through XEP-0191: the very next message passes.
        self.assert_ok(await self.unblock(alice, EVE))
        eve.send(f"<message to='{ALICE}' type='chat'><body>unblocked</body></message>")
        await alice.wait_for(chat_body("unblocked"))
        await self.settle(alice, eve)
        self.nothing(alice, message_with("after the block"))
        self.nothing(eve, message_with("not to you"))
        bodies = [str(e.body) for e in alice.stanzas if e.name == "message" and e.body is not None]
        self.assertEqual([b for b in bodies if b.startswith("burst")], [f"burst {i}" for i in range(20)])


class ThePipeline(unittest.TestCase):
    """Publishes of one conversation share its lock in order (xep207.legacy.pair_publish)."""

    def test_each_turn_comes_once_every_earlier_one_finished(self):
        lock, turns = ConversationLock(), []
        self.assertTrue(lock.try_join())
        self.assertTrue(lock.try_join())
        self.assertTrue(lock.try_join())
        first, none = lock.enter()
        second, second_turn = lock.enter()
        third, third_turn = lock.enter()
        self.assertIsNone(none)
        second_turn.addCallback(lambda _: turns.append(2))
        third_turn.addCallback(lambda _: turns.append(3))
        lock.finish(third)  # (failed early): it waits its place all the same
        self.assertEqual(turns, [])
        lock.finish(first)
        self.assertEqual(turns, [2])
        lock.finish(second)
        self.assertEqual(turns, [2, 3])
        self.assertEqual(len(lock._order), 0)  # the third had finished: its turn passed at once
        for _ in range(3):
            lock.leave()
        self.assertFalse(lock.locked)

    def test_others_wait_for_the_pipeline_to_drain_and_publishes_behind_them(self):
        lock, order = ConversationLock(), []
        self.assertTrue(lock.try_join())
        entry, _ = lock.enter()
        lock.acquire().addCallback(lambda _: order.append("mark"))
        self.assertFalse(lock.try_join())  # someone waits: no sharing past them
        lock.join().addCallback(lambda _: order.append("next publish"))
        lock.finish(entry)
        lock.leave()
        self.assertEqual(order, ["mark"])
        lock.release()
        self.assertEqual(order, ["mark", "next publish"])
        self.assertEqual(lock.publishing, 1)

    def test_held_alone_then_shared_publishes_join_behind_it(self):
        """An overwrite through the XEP-0060 door holds the conversation alone
        while it reads whose item it replaces, then shares it once its write
        is issued (``PairPublisher.native_turn``)."""
        lock = ConversationLock()
        self.assertTrue(lock.try_acquire())
        self.assertFalse(lock.try_join())  # alone: nobody joins
        lock.share()
        entry, _ = lock.enter()
        self.assertTrue(lock.try_join())  # its write issued: the next publish joins
        second, turn = lock.enter()
        self.assertFalse(turn.called)
        lock.finish(entry)
        lock.leave()
        self.assertTrue(turn.called)
        self.assertTrue(lock.locked)
        lock.finish(second)
        lock.leave()
        self.assertFalse(lock.locked)

    def test_without_sharing_each_publish_waits(self):
        lock = ConversationLock()
        self.assertTrue(lock.try_join(share=False))
        self.assertFalse(lock.try_join(share=False))

    def test_after_tail_fires_when_the_pending_ones_finished(self):
        lock, fired = ConversationLock(), []
        self.assertIsNone(lock.after_tail())
        lock.try_join()
        entry, _ = lock.enter()
        lock.after_tail().addCallback(lambda _: fired.append(True))
        self.assertEqual(fired, [])
        lock.finish(entry)
        self.assertEqual(fired, [True])

    def test_early_delivery_only_with_everything_ahead_delivered(self):
        """``deliver_early``: delivery order is the order entered, whichever
        way (at once, or after the store) each one went."""
        lock = ConversationLock()
        lock.try_join()
        first, _ = lock.enter()
        self.assertTrue(lock.deliver_early(first))
        self.assertFalse(lock.deliver_early(first))  # (once)
        second, _ = lock.enter()
        self.assertTrue(lock.deliver_early(second))  # the first went already, stored or not
        late, _ = lock.enter()  # (delivered after its store: not asked, or could not)
        fourth, _ = lock.enter()
        self.assertFalse(lock.deliver_early(fourth))  # it would overtake ``late``
        lock.finish(first)
        lock.finish(second)
        lock.finish(late)  # (its delivery came before its end)
        fifth, _ = lock.enter()
        self.assertFalse(lock.deliver_early(fifth))  # ``fourth`` is still to be delivered
        lock.finish(fourth)
        lock.finish(fifth)
        self.assertEqual((lock.undelivered, len(lock._order)), (0, 0))

    def test_a_waiting_chat_state_is_not_overtaken_by_an_early_delivery(self):
        lock, sent = ConversationLock(), []
        lock.try_join()
        stored, _ = lock.enter()
        lock.after_tail().addCallback(lambda _: sent.append("composing"))
        behind, _ = lock.enter()
        self.assertFalse(lock.deliver_early(behind))
        lock.finish(stored)
        self.assertEqual(sent, ["composing"])
        self.assertEqual(lock.undelivered, 1)  # only ``behind``: its turn has come
        lock.finish(behind)
        self.assertEqual(lock.undelivered, 0)

    def test_a_long_pipeline_finishing_at_once_does_not_recurse(self):
        lock = ConversationLock()
        entries = []
        for _ in range(5000):
            lock.try_join()
            entry, turn = lock.enter()
            if turn is not None:
                turn.addCallback(lambda _, e=entry: lock.finish(e))  # finishes as soon as its turn comes
            entries.append(entry)
        lock.finish(entries[0])
        self.assertEqual(len(lock._order), 0)


class PipelinedOnSQLite(BlockingTestCase):
    """SQLite: a conversation's next message is issued before the one before is
    committed; what a client can observe stays as it was."""

    storage = "sqlite"

    async def test_an_ack_covers_only_stored_messages(self):
        from tests.sm_helpers import NS_SM, enable, sm

        alice = await self.online("alice")
        bob = await self.online("bob")
        await enable(alice, resume=False)
        for i in range(60):
            alice.send(f"<message to='bob@localhost' type='chat'><body>s{i}</body></message>")
        alice.send(f"<r xmlns='{NS_SM}'/>")
        ack = await alice.wait_for(sm("a"))
        page = await self.server.storage.page_items("pubsub.localhost", "chat:alice@localhost:bob@localhost")
        self.assertEqual(ack["h"], "60")
        self.assertEqual(len(page.items), 60)  # every message the <a h/> counts is stored
        await bob.wait_for(chat_body("s59"))
        got = [str(e.body) for e in bob.stanzas if e.name == "message" and e.body is not None]
        self.assertEqual(got, [f"s{i}" for i in range(60)])

    async def test_a_chat_state_never_overtakes_the_messages_before_it(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        for i in range(40):
            alice.send(f"<message to='bob@localhost' type='chat'><body>b{i}</body></message>")
        alice.send("<message to='bob@localhost' type='chat' id='typing'>"
                   "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        await bob.wait_for(lambda e: e.getAttribute("id") == "typing")
        got = [str(e.body) if e.body is not None else "typing" for e in bob.stanzas if e.name == "message"]
        self.assertEqual(got, [f"b{i}" for i in range(40)] + ["typing"])

    async def test_offline_messages_of_a_burst_wait_once_each(self):
        bob = await self.online("bob")
        for i in range(80):
            bob.send(f"<message to='alice@localhost' type='chat'><body>o{i}</body></message>")
        await self.ping(bob)
        alice = await self.online("alice")
        await alice.wait_for(chat_body("o79"))
        await self.settle(alice)
        got = [str(e.body) for e in alice.stanzas if e.name == "message" and e.body is not None]
        self.assertEqual(got, [f"o{i}" for i in range(80)])


class ChangesBetweenMessagesOnSQLite(ChangesBetweenMessages):
    storage = "sqlite"


class UglyCasesOnSQLite(BlockingTestCase):
    """A fussy client against the pipelined path: what it claims is not stored,
    what it cannot address is refused, and its session lives on."""

    storage = "sqlite"

    async def test_a_forged_stanza_id_and_prefixed_extensions_while_a_burst_is_pending(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        for i in range(20):
            alice.send(f"<message to='bob@localhost' type='chat'><body>p{i}</body></message>")
        alice.send("<message to='bob@localhost' type='chat' xmlns:x='urn:x' id='odd'>"
                   "<stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='bob@localhost'/>"
                   "<x:ext a='&apos;&amp;'/><body>odd &lt;one&gt;</body></message>")
        got = await bob.wait_for(lambda e: e.getAttribute("id") == "odd")
        ids = [c["id"] for c in got.elements() if c.name == "stanza-id"]
        self.assertEqual(len(ids), 1)
        self.assertNotEqual(ids[0], "forged")
        self.assertEqual(str(got.body), "odd <one>")
        ext = next(c for c in got.elements() if c.name == "ext")
        self.assertEqual((ext.uri, ext["a"]), ("urn:x", "'&"))
        page = await self.server.storage.page_items("pubsub.localhost", "chat:alice@localhost:bob@localhost")
        self.assertEqual(len(page.items), 21)
        self.assertNotIn("forged", page.items[-1].payload)

    async def test_chat_states_nobody_can_receive_while_a_burst_is_pending(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        for i in range(20):
            alice.send(f"<message to='bob@localhost' type='chat'><body>q{i}</body></message>")
        composing = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
        alice.send(f"<message to='@@bad' type='chat' id='bad'>{composing}</message>")
        alice.send(f"<message type='chat' id='nowhere'>{composing}</message>")
        alice.send(f"<message to='nobody@localhost' type='chat' id='nobody'><body>hi</body></message>")
        bad = await alice.wait_for(lambda e: e.getAttribute("id") == "bad")
        self.assertIn("jid-malformed", bad.error.toXml())
        nobody = await alice.wait_for(lambda e: e.getAttribute("id") == "nobody")
        self.assertIn("service-unavailable", nobody.error.toXml())
        await self.ping(alice)  # the session lives on
        await bob.wait_for(chat_body("q19"))
        got = [str(e.body) for e in bob.stanzas if e.name == "message" and e.body is not None]
        self.assertEqual(got, [f"q{i}" for i in range(20)])
