"""The one-to-one hot path (issue 13): the plain-call forms of the stanza hooks
and of the chat capture keep the semantics of the coroutines they replace, and
a change between two messages of a busy conversation (a block, an unblock,
through either door) takes effect at once."""

from twisted.internet import defer
from twisted.trial import unittest

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
        hooks, seen = Hooks(), []
        hooks.add("e", lambda v: defer.succeed(True))
        hooks.add("e", lambda v: seen.append(v))
        self.assertIs(self.successResultOf(hooks.first_now("e", 1)), True)
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
