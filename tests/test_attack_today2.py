"""Attacks on the day's three changes: native publishes in the conversation
pipeline, push following the delivery's verdict (``KEPT_OFFLINE``), and
output flushed per read.

Each test is a real server with real clients. Where an instant between two
steps of the server must be held (a read in flight, a mark being written),
the storage or window call is wrapped to wait on a Deferred the test fires:
nothing waits on time."""

from twisted.internet import defer, reactor

from tests.doors_helpers import ALICE, BOB, PUBSUB, DoorsTestCase, chat_body, error_of, is_iq, message_with, pair
from tests.sm_helpers import NS_SM, enable as sm_enable, handled, server_side_gone
from tests.test_early_delivery import native_publish
from tests.test_push import PushTestCase, enable as push_enable, summary

NODE = pair(ALICE, BOB)
NS_BLOCKING = "urn:xmpp:blocking"


def gate_calls(test, obj, name: str, select):
    """Wrap ``obj.name`` so that the calls ``select(*args)`` picks wait for
    ``gate`` (fired by the test); ``hit`` fires at the first one held."""
    real = getattr(obj, name)
    gate: defer.Deferred = defer.Deferred()
    hit: defer.Deferred = defer.Deferred()

    def wrapped(*args, **kwargs):
        if select(*args):
            if not hit.called:
                hit.callback(None)
            return gate.addCallback(lambda _: None).addCallback(lambda _: defer.ensureDeferred(_as_coro(
                real(*args, **kwargs))))
        return real(*args, **kwargs)

    setattr(obj, name, wrapped)
    test.addCleanup(lambda: gate.called or gate.callback(None))
    return gate, hit.addTimeout(10, reactor)


async def _as_coro(result):
    if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
        return await result
    return result


class NativeOverwriteAndABlock(DoorsTestCase):
    """A native publish naming an item id is judged again in its turn, "on
    what holds now (a block…)", but the block check comes before the read of
    whose item it would replace: a block stored while that read is in
    flight is not seen: alice's message is answered with a result and
    stored in bob's archive after his block was confirmed (the router keeps
    it from his stream: stored, never delivered, the sender told otherwise). The legacy door checks blocks
    with no wait between the check and the write (``publish_rechecks``)."""

    async def test_a_block_confirmed_while_the_overwrite_check_reads_refuses_the_publish(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        self.chat(alice, BOB, "hello")  # (the conversation exists)
        await bob.wait_for(chat_body("hello"))
        calls = []

        def second_read_of_x(service, node_id, item_ids, *rest):
            if node_id == NODE and list(item_ids) == ["x"]:
                calls.append(1)
                return len(calls) == 2  # (the first judge's read goes; the re-judge's waits)
            return False

        gate, hit = gate_calls(self, self.server.engine.storage, "get_items", second_read_of_x)
        alice.send(native_publish("n", "from the blocked one", item_id="x"))
        await hit  # alice's publish was judged again (no block yet) and reads whose item "x" is
        self.assert_ok(await self.iq(bob, "set", None,
                                     f"<block xmlns='{NS_BLOCKING}'><item jid='{ALICE}'/></block>"))
        gate.callback(None)
        reply = await alice.wait_for(is_iq("n"))
        await self.settle(alice, bob)
        delivered = [e.toXml() for e in bob.stanzas if message_with("from the blocked one")(e)]
        page = await self.server.storage.page_items(PUBSUB, NODE)
        stored = [i.item_id for i in page.items if "from the blocked one" in i.payload]
        self.assertEqual((reply["type"], error_of(reply)[0], delivered, stored),
                         ("error", "service-unavailable", [], []),
                         "alice told it got through, and it is stored in bob's archive, after his block of alice was confirmed")
        self.assertEqual(self.server.chat._locks, {})


class PushForWhatAHibernatedSessionNeverGot(PushTestCase):
    """``KEPT_OFFLINE``: "a one-to-one message none of the account's sessions
    got, kept for its next one". A message written to a XEP-0198 session
    whose connection is gone (hibernated, waiting for ``<resume/>``) that
    then expires is exactly that (``Unreceived.requeue`` moves the
    offline mark back to it), but the mark is written without the hook: the
    phone that dropped its connection is never woken for it, though it is
    the case push exists for."""

    server_args = PushTestCase.server_args + ("--push-body",)

    async def test_a_message_kept_offline_when_its_session_expires_is_pushed(self):
        alice = await self.online("alice", "phone")
        self.assert_ok(await self.iq(alice, "set", None, push_enable("alice-token")))
        await sm_enable(alice, resume=True)
        bob = await self.online("bob", "desk")
        gone = server_side_gone(self.server, alice.jid)
        alice.transport.abortConnection()
        await gone  # hibernated: still bound, waiting for <resume/>
        self.chat(bob, ALICE, "while hibernated")
        await self.settle(bob)
        manager = self.server.router.session(alice.jid).sm
        manager._expiry.cancel()
        manager.service.expire(manager)  # (the resumption window ends now, not in 300 s)
        await self.server.quiesce()
        self.chat(bob, ALICE, "after it expired")
        first = summary(await self.app.next())
        again = await self.online("alice", "laptop")
        await again.wait_for(chat_body("while hibernated"))  # (it was kept offline indeed)
        self.assertEqual(first["last-message-body"], "while hibernated",
                         "the message the expired session never got was kept offline without a push")


class NativeResultAndTheRecipientsWindow(DoorsTestCase):
    """The legacy door counts a message as handled (the sender's XEP-0198
    ``h``) only once the recipient's unacknowledged window is stored
    (``PairPublisher._published``: "where a crash cannot lose it"). The
    native door's answer is its sender's acknowledgement; it goes out before
    bob's window is even written. A crash in between: alice was told the
    message got through, never resends it, and bob's next session does not
    get it (his window was never stored, and it was delivered: no offline
    mark)."""

    async def test_a_native_publishs_result_waits_for_the_recipients_window(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        await sm_enable(bob, resume=False)
        self.chat(alice, BOB, "one")
        got = await bob.wait_for(chat_body("one"))
        bob.send(f"<a xmlns='{NS_SM}' h='{handled(bob, got)}'/>")
        await self.settle(bob, alice)
        window = self.server.chat.offline.window
        stored = window.stored(NODE)
        if stored is not None:
            await stored
        self.assertEqual(window.in_flight, {})
        gate, hit = gate_calls(self, window, "_set_option", lambda *args: True)
        stream = self.server.router.session(alice.jid).stream
        real_send = stream.send
        sent_when = []

        def spy(obj):
            text = obj if isinstance(obj, str) else obj.decode() if isinstance(obj, bytes) else obj.toXml()
            if "'native'" in text or '"native"' in text:
                sent_when.append("window stored" if gate.called else "window not stored yet")
            real_send(obj)

        stream.send = spy
        alice.send(native_publish("native", "n"))
        await bob.wait_for(chat_body("n"))
        await hit  # bob's window is being written
        await self.ping(bob)
        gate.callback(None)
        self.assert_ok(await alice.wait_for(is_iq("native")))
        self.assertEqual(sent_when, ["window stored"])


class OnePushPerMessage(PushTestCase):
    """``KEPT_OFFLINE`` is told per subscription the delivery missed. A party
    may hold a second subscription to its conversation, under one of its
    full JIDs (the pair kind allows any JID of the requestor's account): a
    message then missed by both is pushed twice, and counted twice."""

    server_args = PushTestCase.server_args + ("--push-body",)

    async def test_a_second_subscription_of_the_same_party_does_not_double_the_push(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.chat(bob, ALICE, "hello")  # (the conversation exists)
        await alice.wait_for(chat_body("hello"))
        self.assert_ok(await self.iq(alice, "set", None, push_enable("alice-token")))
        reply = await self.subscribe(alice, PUBSUB, NODE)  # (her full JID, as XEP-0060 §6.1 has it)
        if reply["type"] != "result":
            self.skipTest(f"a second subscription is refused: {reply.toXml()}")
        await self.logout(alice)
        await self.server.quiesce()
        self.chat(bob, ALICE, "first")
        await self.settle(bob)
        self.chat(bob, ALICE, "second")
        pushed = [summary(await self.app.next()) for _ in range(2)]
        self.assertEqual([(p["last-message-body"], p["message-count"]) for p in pushed],
                         [("first", "1"), ("second", "2")])


class AReadThatEndsInAStreamError(DoorsTestCase):
    """One read: a message to bob, a ping, then XML that is not well-formed.
    What the read caused leaves before it returns, each stream once: bob's
    message (on his stream, no reactor turn later), alice's answer before her
    stream error, nothing written twice."""

    async def test_what_a_failing_read_queued_leaves_once_and_in_order(self):
        from tests.test_output import spy_on_writes
        from xep207.server import stream as stream_module

        alice = await self.online("alice")
        bob = await self.online("bob")
        self.chat(alice, BOB, "warm")  # (the conversation exists: the next one is delivered at once)
        await bob.wait_for(chat_body("warm"))
        await self.settle(alice, bob)
        writes = spy_on_writes(self)
        server_alice = self.server.router.session(alice.jid).stream
        server_bob = self.server.router.session(bob.jid).stream
        bob_transport, alice_transport = server_bob.transport, server_alice.transport
        server_alice.dataReceived(
            f"<message to='{BOB}' type='chat'><body>in the bad read</body></message>"
            f"<iq type='get' id='p1' to='{self.server.domain}'><ping xmlns='urn:xmpp:ping'/></iq>"
            "<message><body></message>".encode())
        to_bob = b"".join(writes.get(bob_transport, []))
        to_alice = b"".join(writes.get(alice_transport, []))
        self.assertEqual(to_bob.count(b"in the bad read"), 1, to_bob)
        self.assertEqual(stream_module._to_flush, [])
        self.assertEqual(to_alice.count(b"'p1'") + to_alice.count(b'"p1"'), 1, to_alice)
        self.assertLess(to_alice.find(b"p1"), to_alice.find(b"not-well-formed"), to_alice)
        data = (await alice.closed).decode()
        self.assertEqual(data.count("p1"), 1)
        await bob.wait_for(chat_body("in the bad read"))
