"""xep207.deferreds.fired_with_value: a Deferred's result may be read at once
only when it has fired with a value (the login path reads it so)."""

from twisted.internet import defer
from twisted.trial import unittest

from xep207.deferreds import fired_with_value


class FiredWithValue(unittest.TestCase):
    def test_values_fired_already(self):
        for value in (None, False, 0, "account"):
            self.assertTrue(fired_with_value(defer.succeed(value)))

    def test_not_fired(self):
        self.assertFalse(fired_with_value(defer.Deferred()))

    def test_failure_is_not_a_value(self):
        failed = defer.fail(RuntimeError("storage"))
        self.assertFalse(fired_with_value(failed))
        self.failureResultOf(failed, RuntimeError)

    def test_waiting_on_another(self):
        inner: defer.Deferred = defer.Deferred()
        outer = defer.succeed(None)
        outer.addCallback(lambda _: inner)
        self.assertFalse(fired_with_value(outer))  # (its result is ``inner``, unfired)
        inner.callback("late")
        self.assertTrue(fired_with_value(outer))
        self.assertEqual(outer.result, "late")

    def test_paused(self):
        d = defer.succeed("value")
        d.pause()
        self.assertFalse(fired_with_value(d))
        d.unpause()
        self.assertTrue(fired_with_value(d))
