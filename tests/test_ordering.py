"""xep207.ordering: one thing after another (a session's stanzas, a room's),
and a publish's hand-off to storage; xmlutil.addressed_to (the rendering's
look at a stored message's ``to``)."""

from twisted.internet import defer
from twisted.trial import unittest
from twisted.words.xish import domish

from xep207.ordering import InOrder, handed_off
from xep207.xmlutil import addressed_to, parse_stanza


class InOrderTests(unittest.TestCase):
    def test_runs_at_once_when_idle_and_queues_behind_pending_work(self):
        order, log = InOrder(), []
        first = defer.Deferred()
        order.run(lambda: log.append("a") or first)
        second = order.run(lambda: log.append("b") or defer.succeed("b done"))
        self.assertEqual(log, ["a"])  # b waits for a
        self.assertTrue(order.locked)
        first.callback(None)
        self.assertEqual(log, ["a", "b"])
        self.assertEqual(self.successResultOf(second), "b done")
        self.assertFalse(order.locked)

    def test_a_failure_reaches_its_caller_and_the_next_one_still_runs(self):
        order, log = InOrder(), []
        gate = defer.Deferred()
        order.run(lambda: gate)
        failing = order.run(lambda: defer.fail(ValueError("bad")))
        raising = order.run(lambda: 1 / 0)
        after = order.run(lambda: log.append("after") or defer.succeed(None))
        gate.callback(None)
        self.failureResultOf(failing, ValueError)
        self.failureResultOf(raising, ZeroDivisionError)
        self.successResultOf(after)
        self.assertEqual(log, ["after"])

    def test_a_long_queue_of_synchronous_work_does_not_recurse(self):
        order, done = InOrder(), []
        gate = defer.Deferred()
        order.run(lambda: gate)
        for i in range(5000):  # deeper than the recursion limit if each ran inside the last
            order.run(lambda i=i: done.append(i) or defer.succeed(None))
        gate.callback(None)
        self.assertEqual(done, list(range(5000)))
        self.assertFalse(order.locked)


class HandedOffTests(unittest.TestCase):
    def test_fires_at_the_hand_off_and_late_failures_go_elsewhere(self):
        late, tracked = [], []
        done = defer.Deferred()

        def start(queued):
            queued()
            return done

        handed = handed_off(start, late.append, tracked.append)
        self.assertIsNone(self.successResultOf(handed))
        done.errback(RuntimeError("disk full"))
        self.assertEqual(len(late), 1)
        self.assertTrue(late[0].check(RuntimeError))
        self.assertEqual(len(tracked), 1)

    def test_a_refusal_before_the_hand_off_is_the_callers(self):
        late = []
        handed = handed_off(lambda queued: defer.fail(ValueError("forbidden")), late.append, lambda d: d)
        self.failureResultOf(handed, ValueError)
        self.assertEqual(late, [])

    def test_without_a_hand_off_it_fires_when_done(self):
        done = defer.Deferred()
        handed = handed_off(lambda queued: done, lambda f: None, lambda d: d)
        self.assertNoResult(handed)
        done.callback(["id"])
        self.assertEqual(self.successResultOf(handed), ["id"])


class AddressedTo(unittest.TestCase):
    def test_matches_a_parse_for_what_domish_writes(self):
        for to in ("bob@example.org", "bob@example.org/r<&>'\"x", "example.org"):
            message = domish.Element((None, "message"))
            message["id"], message["to"], message["type"] = "to='mallory@evil'", to, "chat"
            message.addElement("body", content="to='mallory@evil'")
            xml = message.toXml()
            self.assertEqual(addressed_to(xml), parse_stanza(xml).getAttribute("to"))

    def test_none_is_empty(self):
        self.assertEqual(addressed_to("<message type='chat'><body to='x'/></message>"), "")
        self.assertEqual(addressed_to("<message/>"), "")
