"""Offline delivery when more messages waited than the conversation keeps (issue 12, item 2)."""

from __future__ import annotations

from twisted.trial import unittest

from xep207.pubsub.kinds import PairKind
from xep207.testing import InMemoryServer


class MoreWaitingThanKept(unittest.TestCase):
    async def test_the_newest_kept_messages_are_delivered(self):
        harness = await InMemoryServer.start(accounts=["alice", "bob"])
        self.addCleanup(harness.stop)
        kept = 5
        pair = next(k for k in harness.server.engine.kinds if isinstance(k, PairKind))
        pair.max_items = kept  # a small node, instead of 10,000 messages
        alice = await harness.login("alice", "phone")
        harness.send(alice, "<presence/>")
        for n in range(12):  # bob is offline: the first missed message is trimmed away
            harness.send(alice, f"<message to='bob@localhost' type='chat'><body>m{n}</body></message>")
        await harness.settle()
        bob = await harness.login("bob", "desk")
        harness.send(bob, "<presence/>")
        await harness.settle()
        bodies = [str(e.body) for e in bob.received if e.name == "message" and e.body is not None]
        self.assertEqual(bodies, [f"m{n}" for n in range(12 - kept, 12)])
