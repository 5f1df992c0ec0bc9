"""Attacks on the item-id claims (``PubSubEngine._claims``), the XEP-0060
door's storage errors, backpressure and push via ``KEPT_OFFLINE``.

Each test is a real server with real clients. Where two publishes must be
under way together, SQLite's commits are held for real (another connection
holds the write lock) and the test waits on the storage calls being issued
(spies that call through at once): nothing waits on time."""


from twisted.internet import defer, reactor

from tests.doors_helpers import ALICE, PUBSUB, chat_body, error_of
from tests.sm_helpers import enable as sm_enable, server_side_gone
from tests.test_overwrite_claims import NODE, OpenNodeOnSQLite
from tests.test_push import PushTestCase, enable as push_enable, summary



def entry(text: str) -> str:
    return f"<entry xmlns='urn:example'>{text}</entry>"


def spy(test, obj, name: str, select) -> defer.Deferred:
    """Fires once a call of ``obj.name`` that ``select(*args)`` picks was
    issued (it goes on at once, unchanged)."""
    real = getattr(obj, name)
    hit: defer.Deferred = defer.Deferred()

    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        if not hit.called and select(*args):
            hit.callback(None)
        return result

    setattr(obj, name, wrapped)
    test.addCleanup(setattr, obj, name, real)
    test.addCleanup(lambda: hit.called or hit.callback(None))  # (no timer left behind)
    return hit.addTimeout(10, reactor)


class ClaimsAndTheOwner(OpenNodeOnSQLite):
    """The claim is taken only by a publish that reads whose item it
    replaces; the owner's (``overwrites_any``) takes none and its write is
    issued at once. A stranger's publish whose read found no item (or its
    own) but whose write is not issued yet then replaces the item the owner
    stored meanwhile: the owner was answered first, and a stranger replaced
    an item of someone else — what ``check_overwrite`` refuses."""

    async def test_a_strangers_publish_in_flight_does_not_replace_what_the_owner_stored_after_its_read(self):
        for client in (self.alice, self.bob):  # (what their publishes read is cached: only the claimed read is left)
            self.assert_ok(await self.publish(client, PUBSUB, NODE, entry("warm"), f"warm-{client.jid[0]}"))
        await self.server.quiesce()
        await self.server.storage.page_items(PUBSUB, NODE)
        storage = self.server.engine.storage
        locker = self.hold_commits()
        read = spy(self, storage, "get_items", lambda s, n, ids, *r: n == NODE and list(ids) == ["w"])
        bob = defer.ensureDeferred(self.publish(self.bob, PUBSUB, NODE, entry("bob"), "w"))
        await read  # bob's read of whose item "w" is: issued (his claim held)
        written = spy(self, storage, "put_item", lambda s, n, item, *r: n == NODE and item.item_id == "w"
                      and item.publisher.startswith("alice@"))
        reached = spy(self, self.server.engine, "publish", lambda requestor, *r: requestor.startswith("alice@"))
        alice = defer.ensureDeferred(self.publish(self.alice, PUBSUB, NODE, entry("alice"), "w"))
        await reached  # the owner's publish went as far as it goes now (what it reads is cached):
        claim = self.server.engine._claims.get((PUBSUB, NODE, "w"))
        self.assertTrue(written.called or (claim is not None and len(claim.waiting) == 1))  # written, or waiting
        locker.execute("ROLLBACK")
        alice_reply, bob_reply = await alice, await bob
        outcome = (alice_reply["type"], bob_reply["type"], error_of(bob_reply)[0], await self.stored("w"))
        # Either bob's write came first and alice's replaced it, or bob's was
        # judged on alice's item and refused: never bob's over alice's.
        self.assertIn(outcome, [
            ("result", "result", None, [("alice@localhost", entry("alice"))]),
            ("result", "error", "forbidden", [("alice@localhost", entry("alice"))]),
        ])
        self.assertEqual(self.server.engine._claims, {})


class OnePushForAMessageTwoSessionsMissed(PushTestCase):
    """``Unreceived.mark_back`` tells ``KEPT_OFFLINE`` for each message a
    session was written and never acknowledged. A message to the bare JID
    is written to each of the account's sessions: when both drop their
    connections without acknowledging it, it is kept once (one offline
    mark), but told twice: pushed twice, and counted as two messages."""

    server_args = PushTestCase.server_args + ("--push-body",)

    async def test_a_message_two_sessions_never_acknowledged_is_pushed_once(self):
        phone = await self.online("alice", "phone")
        self.assert_ok(await self.iq(phone, "set", None, push_enable("alice-token")))
        tablet = await self.online("alice", "tablet")
        for client in (phone, tablet):
            await sm_enable(client, resume=False)
        bob = await self.online("bob", "desk")
        self.chat(bob, ALICE, "both got it")
        for client in (phone, tablet):
            await client.wait_for(chat_body("both got it"))
        for client in (phone, tablet):
            gone = server_side_gone(self.server, client.jid)
            client.transport.abortConnection()
            await gone
            await self.server.quiesce()
        await self.settle(bob)
        self.chat(bob, ALICE, "then another")
        pushed = [summary(await self.app.next()) for _ in range(2)]
        self.assertEqual([(p["last-message-body"], p["message-count"]) for p in pushed],
                         [("both got it", "1"), ("then another", "2")])
