"""Who may overwrite an item, when two publishers name one id at once.

XEP-0060 lets publishers and owners replace any item; anyone else who may
publish (an open node, a publish-only affiliation) only their own
(``NodeKind.check_overwrite``). The check reads whose item the id names, then
the write follows: two publishes naming one new id at once each found none,
and the second replaced the first one's item. The engine now holds a claim on
the id from that read until the write is issued (``PubSubEngine._claims``);
a conversation's pipeline does the same for pair nodes
(``tests/test_early_delivery.py``).

The commits are held for real (another connection holds SQLite's write lock),
so both publishes are under way together, whatever the machine's speed."""

import os
import sqlite3

from twisted.internet import defer

from tests.doors_helpers import PUBSUB, DoorsTestCase, error_of

NODE = "board"


class OpenNodeOnSQLite(DoorsTestCase):
    """alice's open node, bob and carol online; commits a test can hold back."""

    storage = "sqlite"

    def storage_url(self):
        self.path = os.path.join(self.data_dir, "xep207.sqlite")
        return f"sqlite:///{self.path}?busy_timeout=30000"

    async def setUp(self):
        await super().setUp()
        self.alice = await self.online("alice")
        self.assert_ok(await self.create(self.alice, PUBSUB, NODE, {"publish_model": "open"}))
        self.bob = await self.online("bob")
        self.carol = await self.online("carol")

    def hold_commits(self) -> sqlite3.Connection:
        locker = sqlite3.connect(self.path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        self.addCleanup(locker.close)
        return locker

    def engine_reached(self, count: int) -> defer.Deferred:
        """Fires once ``count`` publishes reached the engine (a spy: each goes on)."""
        engine = self.server.engine
        real, seen, reached = engine.publish, [0], defer.Deferred()

        def publish(*args, **kwargs):
            d = real(*args, **kwargs)
            seen[0] += 1
            if seen[0] == count:
                reached.callback(None)
            return d

        engine.publish = publish
        self.addCleanup(setattr, engine, "publish", real)
        return reached

    async def at_once(self, publishes):
        """(client, payload, item id) publishes, all under way in the engine
        before any is answered (a session's next stanza waits for its iq's
        answer: no ping can tell); their replies."""
        await self.server.quiesce()  # (and what the logins wrote, committed: the lock waits for no batch)
        await self.server.storage.page_items(PUBSUB, NODE)
        locker = self.hold_commits()
        reached = self.engine_reached(len(publishes))
        replies = [defer.ensureDeferred(self.publish(client, PUBSUB, NODE, f"<entry xmlns='urn:example'>{text}</entry>",
                                                     item_id)) for client, text, item_id in publishes]
        await reached
        locker.execute("ROLLBACK")
        return [await reply for reply in replies]

    def both_at_once(self, item_id: str):
        return self.at_once([(self.bob, "bob", item_id), (self.carol, "carol", item_id)])

    async def stored(self, item_id: str):
        items = await self.server.storage.get_items(PUBSUB, NODE, [item_id])
        return [(i.publisher.split("/")[0], i.payload) for i in items]


class OverwriteClaims(OpenNodeOnSQLite):

    async def test_one_new_id_named_by_two_at_once_is_the_first_ones(self):
        """Whichever the server read first stores it; the other is refused."""
        replies = dict(zip(("bob", "carol"), await self.both_at_once("x")))
        outcomes = {name: (r["type"], error_of(r)[0]) for name, r in replies.items()}
        winners = [name for name, outcome in outcomes.items() if outcome == ("result", None)]
        self.assertEqual(len(winners), 1, outcomes)
        loser = "carol" if winners == ["bob"] else "bob"
        self.assertEqual(outcomes[loser], ("error", "forbidden"))
        self.assertEqual(await self.stored("x"), [(f"{winners[0]}@localhost",
                                                   f"<entry xmlns='urn:example'>{winners[0]}</entry>")])
        self.assertEqual(self.server.engine._claims, {})  # (nothing left held)

    async def test_the_owner_still_replaces_anyones_item_meanwhile(self):
        """A claim orders; it refuses nothing the rule allows: alice (the
        owner) may replace bob's item even while carol's publish is refused."""
        self.assertEqual(sorted(r["type"] for r in await self.both_at_once("y")), ["error", "result"])
        self.assert_ok(await self.publish(self.alice, PUBSUB, NODE, "<entry xmlns='urn:example'>alice</entry>", "y"))
        self.assertEqual(await self.stored("y"), [("alice@localhost", "<entry xmlns='urn:example'>alice</entry>")])

    async def test_ones_own_item_may_be_replaced_by_oneself_at_once(self):
        second_bob = await self.online("bob", "other")
        replies = await self.at_once([(self.bob, "first", "z"), (second_bob, "second", "z")])
        self.assertEqual([r["type"] for r in replies], ["result", "result"])
        self.assertEqual(await self.stored("z"), [("bob@localhost", "<entry xmlns='urn:example'>second</entry>")])
