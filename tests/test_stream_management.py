"""XEP-0198 stream management over real sockets: acks both ways, resumption,
the bounded window and queue, and every bad case's answer."""

from __future__ import annotations

from twisted.internet import task

from tests.server_helpers import DOMAIN, ServerTestCase
from tests.sm_helpers import (NS_SM, NS_STREAMS_ERROR, ask_resume, authenticate, bodies, enable, failed_condition, handled,
                              server_side_gone, sm, stream_error)

ALICE = f"alice@{DOMAIN}"
PING = "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"


def chat(to: str, text: str) -> str:
    return f"<message to='{to}' type='chat'><body>{text}</body></message>"


def is_body(text):
    return lambda e: e.name == "message" and any(c.name == "body" and str(c) == text for c in e.elements())


class Acks(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def setUp(self):
        await self.start_server()
        self.alice = await self.connect()
        await self.alice.login("alice", resource="phone")
        self.bob = await self.connect()
        await self.bob.login("bob", resource="desk")

    def manager(self, full=f"{ALICE}/phone"):
        return self.server.router.session(full).sm

    async def test_feature_only_after_authentication(self):
        client = await self.connect()
        client.header()
        features = await client.expect("</stream:features>")
        self.assertNotIn(b"urn:xmpp:sm:3", features)
        await authenticate(await self.connect(), "alice")  # asserts <sm/> is offered there

    async def test_enable_without_resume(self):
        enabled = await enable(self.alice, resume=False)
        self.assertIsNone(enabled.getAttribute("id"))
        self.assertIsNone(enabled.getAttribute("resume"))
        self.assertEqual(self.manager().id, None)

    async def test_enable_with_resume_and_the_server_counts_what_it_handled(self):
        enabled = await enable(self.alice)
        self.assertEqual((enabled.getAttribute("resume"), enabled.getAttribute("max")), ("true", "300"))
        self.assertTrue(len(enabled["id"]) >= 16)
        for n in range(3):
            self.alice.send(PING.format(id=f"p{n}"))
        self.alice.send(f"<r xmlns='{NS_SM}'/>")
        ack = await self.alice.wait_for(sm("a"))
        self.assertEqual(ack["h"], "3")  # the <a/> waits until all three were handled
        self.alice.send(PING.format(id="p3"))
        self.alice.send(f"<r xmlns='{NS_SM}'/>")
        self.assertEqual((await self.alice.wait_for(sm("a")))["h"], "4")

    async def test_the_server_asks_after_ten_stanzas_and_forgets_what_was_acked(self):
        await enable(self.alice)
        for n in range(10):
            self.bob.send(chat(f"{ALICE}/phone", f"m{n}"))
        await self.alice.wait_for(sm("r"))
        last = await self.alice.wait_for(is_body("m9"))
        self.assertEqual(len(self.manager().queue), 10)
        self.alice.send(f"<a xmlns='{NS_SM}' h='{handled(self.alice, last)}'/>")
        self.alice.send(PING.format(id="sync"))
        await self.alice.wait_for(lambda e: e.getAttribute("id") == "sync")
        self.assertEqual(len(self.manager().queue), 1)  # the ping's answer alone

    async def test_the_server_asks_on_a_timer(self):
        clock = task.Clock()
        self.server.stream_management._clock = clock
        await enable(self.alice)
        self.bob.send(chat(f"{ALICE}/phone", "lonely"))
        await self.alice.wait_for(is_body("lonely"))
        self.assertEqual([e for e in self.alice.stanzas if e.uri == NS_SM and e.name == "r"], [])
        clock.advance(30)
        await self.alice.wait_for(sm("r"))

    async def test_the_client_may_shorten_the_window_not_lengthen_it(self):
        self.alice.send(f"<enable xmlns='{NS_SM}' resume='true' max='5'/>")
        self.assertEqual((await self.alice.wait_for(sm("enabled")))["max"], "5")
        self.bob.send(f"<enable xmlns='{NS_SM}' resume='true' max='99999'/>")
        self.assertEqual((await self.bob.wait_for(sm("enabled")))["max"], "300")
        client = await self.connect()
        await client.login("alice", resource="third")
        client.send(f"<enable xmlns='{NS_SM}' resume='true' max='soon'/>")
        self.assertEqual((await client.wait_for(sm("enabled")))["max"], "300")

    async def test_enable_twice_fails_and_the_session_goes_on(self):
        await enable(self.alice)
        self.alice.send(f"<enable xmlns='{NS_SM}'/>")
        self.assertEqual(failed_condition(await self.alice.wait_for(sm("failed"))), "unexpected-request")
        self.alice.send(PING.format(id="after"))
        self.assertEqual((await self.alice.wait_for(lambda e: e.getAttribute("id") == "after"))["type"], "result")

    async def test_enable_before_bind_fails(self):
        client = await self.connect()
        await authenticate(client, "alice")
        client.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        self.assertEqual(failed_condition(await client.wait_for(sm("failed"))), "unexpected-request")
        self.assertEqual(self.server.stream_management.resumable, {})

    async def test_r_before_enable_is_a_stream_error(self):
        self.alice.send(f"<r xmlns='{NS_SM}'/>")
        self.assertIn(f"<unsupported-stanza-type xmlns='{NS_STREAMS_ERROR}'",
                      stream_error(await self.alice.closed))

    async def test_a_before_enable_is_a_stream_error(self):
        self.alice.send(f"<a xmlns='{NS_SM}' h='0'/>")
        self.assertIn("<unsupported-stanza-type", stream_error(await self.alice.closed))

    async def test_garbage_h_is_a_stream_error(self):
        await enable(self.alice)
        self.alice.send(f"<a xmlns='{NS_SM}' h='-1'/>")
        self.assertIn("<bad-format", stream_error(await self.alice.closed))

    async def test_h_greater_than_sent_is_undefined_condition(self):
        await enable(self.alice)
        self.bob.send(chat(f"{ALICE}/phone", "one"))
        await self.alice.wait_for(is_body("one"))
        self.alice.send(f"<a xmlns='{NS_SM}' h='5'/>")
        error = stream_error(await self.alice.closed)
        self.assertIn("<undefined-condition", error)
        self.assertIn(f"<handled-count-too-high xmlns='{NS_SM}' h='5' send-count='1'", error)

    async def test_unknown_sm_element_is_a_stream_error(self):
        await enable(self.alice)
        self.alice.send(f"<bogus xmlns='{NS_SM}'/>")
        self.assertIn("<unsupported-stanza-type", stream_error(await self.alice.closed))

    async def test_too_many_unacked_is_policy_violation_and_nothing_is_lost(self):
        self.server.stream_management.policy = self.server.stream_management.policy.__class__(max_unacked=5)
        await enable(self.alice)
        self.alice.send("<presence/>")
        for n in range(8):
            self.bob.send(chat(ALICE, f"m{n}"))
        self.assertIn("<policy-violation", stream_error(await self.alice.closed))
        # Everything the client did not acknowledge waits for its next session.
        again = await self.connect()
        await again.login("alice", resource="again")
        again.send("<presence/>")
        await again.wait_for(is_body("m7"))
        self.assertEqual(bodies(again), [f"m{n}" for n in range(8)])


class Resumption(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def setUp(self):
        await self.start_server()
        self.bob = await self.connect()
        await self.bob.login("bob", resource="desk")
        self.alice = await self.connect()
        await self.alice.login("alice", resource="phone")
        self.sm_id = (await enable(self.alice))["id"]
        self.alice.send("<presence/>")
        await self.alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{ALICE}/phone")

    async def drop_alice(self):
        gone = server_side_gone(self.server, f"{ALICE}/phone")
        self.alice.transport.abortConnection()
        await gone

    async def resume(self, h: int, previd=None, user="alice"):
        client = await self.connect()
        await ask_resume(client, user, previd or self.sm_id, h)
        return client

    async def test_resumed_gets_what_was_not_acked_and_what_came_meanwhile(self):
        for n in range(3):
            self.bob.send(chat(ALICE, f"m{n}"))
        first = await self.alice.wait_for(is_body("m0"))
        await self.alice.wait_for(is_body("m2"))
        h = handled(self.alice, first)
        await self.drop_alice()
        session = self.server.router.session(f"{ALICE}/phone")
        self.assertIsNotNone(session)  # still bound, still available
        self.assertTrue(session.available)
        self.bob.send(chat(ALICE, "m3"))  # queued while detached
        self.bob.send(PING.format(id="sync"))
        await self.bob.wait_for(lambda e: e.getAttribute("id") == "sync")
        client = await self.resume(h)
        resumed = await client.wait_for(sm("resumed"))
        self.assertEqual(resumed["previd"], self.sm_id)
        await client.wait_for(is_body("m3"))
        self.assertEqual(bodies(client), ["m1", "m2", "m3"])
        self.assertIs(self.server.router.session(f"{ALICE}/phone"), session)  # the same place
        client.send(PING.format(id="p"))
        self.assertEqual((await client.wait_for(lambda e: e.getAttribute("id") == "p"))["to"], f"{ALICE}/phone")
        # A second <resume/> of the same id, while it is attached: refused, the first goes on.
        other = await self.resume(0)
        self.assertEqual(failed_condition(await other.wait_for(sm("failed"))), "unexpected-request")
        self.bob.send(chat(ALICE, "m4"))
        await client.wait_for(is_body("m4"))

    async def test_a_clean_close_ends_the_session_for_good(self):
        self.bob.send(chat(ALICE, "unread"))
        await self.alice.wait_for(is_body("unread"))
        self.alice.send("</stream:stream>")
        await self.alice.closed
        await self.server.quiesce()
        self.assertIsNone(self.server.router.session(f"{ALICE}/phone"))
        client = await self.resume(0)
        self.assertEqual(failed_condition(await client.wait_for(sm("failed"))), "item-not-found")
        again = await self.connect()
        await again.login("alice", resource="again")
        again.send("<presence/>")
        await again.wait_for(is_body("unread"))  # not acknowledged: it waited offline

    async def test_resume_unknown_id(self):
        client = await self.resume(0, previd="no-such-session")
        failed = await client.wait_for(sm("failed"))
        self.assertEqual(failed_condition(failed), "item-not-found")
        client.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        await client.wait_for(lambda e: e.getAttribute("id") == "bind")  # it may still bind

    async def test_resume_of_another_account_is_unknown(self):
        await self.drop_alice()
        client = await self.resume(0, user="bob")
        self.assertEqual(failed_condition(await client.wait_for(sm("failed"))), "item-not-found")
        self.assertIsNotNone(self.server.router.session(f"{ALICE}/phone"))  # untouched

    async def test_resume_with_garbage_h(self):
        await self.drop_alice()
        client = await self.resume("x1")
        self.assertEqual(failed_condition(await client.wait_for(sm("failed"))), "bad-request")

    async def test_resume_with_h_too_high_ends_the_session(self):
        await self.drop_alice()
        client = await self.resume(99)
        failed = await client.wait_for(sm("failed"))
        self.assertEqual(failed_condition(failed), "undefined-condition")
        self.assertEqual(failed["h"], "1")  # the server handled alice's presence
        self.assertIsNone(self.server.router.session(f"{ALICE}/phone"))
        again = await self.resume(0)
        self.assertEqual(failed_condition(await again.wait_for(sm("failed"))), "item-not-found")

    async def test_resume_after_bind_is_unexpected(self):
        await self.drop_alice()
        client = await self.connect()
        await client.login("alice", resource="laptop")
        client.send(f"<resume xmlns='{NS_SM}' previd='{self.sm_id}' h='0'/>")
        self.assertEqual(failed_condition(await client.wait_for(sm("failed"))), "unexpected-request")

    async def test_window_expires_unbinds_and_unacked_messages_wait_offline(self):
        clock = task.Clock()
        self.server.stream_management._clock = clock
        self.bob.send(chat(ALICE, "kept"))
        await self.alice.wait_for(is_body("kept"))
        await self.drop_alice()
        self.bob.send(chat(ALICE, "meanwhile"))
        self.bob.send(PING.format(id="sync"))
        await self.bob.wait_for(lambda e: e.getAttribute("id") == "sync")
        self.assertIsNotNone(self.server.router.session(f"{ALICE}/phone"))
        clock.advance(300)
        await self.server.quiesce()
        self.assertIsNone(self.server.router.session(f"{ALICE}/phone"))
        client = await self.resume(0)
        self.assertEqual(failed_condition(await client.wait_for(sm("failed"))), "item-not-found")
        again = await self.connect()
        await again.login("alice", resource="again")
        again.send("<presence/>")
        await again.wait_for(is_body("meanwhile"))
        self.assertEqual(bodies(again), ["kept", "meanwhile"])
        self.assertFalse([e for e in self.bob.stanzas if e.getAttribute("type") == "error"])  # nothing bounced

    async def test_a_new_bind_of_the_same_resource_replaces_a_detached_session(self):
        self.bob.send(chat(ALICE, "unacked"))
        await self.alice.wait_for(is_body("unacked"))
        await self.drop_alice()
        again = await self.connect()
        await again.login("alice", resource="phone")
        self.assertIsNot(self.server.router.session(f"{ALICE}/phone").stream, None)
        again.send("<presence/>")
        await again.wait_for(is_body("unacked"))
        self.assertEqual(bodies(again), ["unacked"])
        self.assertEqual(self.server.stream_management.resumable, {})

    async def test_unacked_go_to_another_available_resource(self):
        laptop = await self.connect()
        await laptop.login("alice", resource="laptop")
        laptop.send("<presence/>")
        await laptop.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{ALICE}/laptop")
        self.bob.send(chat(f"{ALICE}/phone", "for the phone"))
        await self.alice.wait_for(is_body("for the phone"))
        await self.drop_alice()
        self.server.router.unbind(self.server.router.session(f"{ALICE}/phone"))  # as the window's end would
        await laptop.wait_for(is_body("for the phone"))


class SlixmppResumes(ServerTestCase):
    """slixmpp's own XEP-0198 plugin, over STARTTLS: enable, acks, a dropped
    connection, resumption with what was sent meanwhile."""

    async def test_slixmpp_resumes(self):
        from tests.server_helpers import PASSWORD

        await self.start_server()
        report = await self.run_client("sm_resume.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertTrue(report["sm_id"])
        self.assertEqual(report["before"], ["m0", "m1", "m2"])
        self.assertTrue(report["resumed"])
        self.assertEqual(report["after"], ["m3", "m4"])
        self.assertEqual(report["pong_to"], f"{ALICE}/phone")
        self.assertGreaterEqual(report["handled_by_server"], 1)


class ExactlyOnceAcrossResumption(ServerTestCase):
    """The soak's lost messages, made deterministic: ``h`` on both sides counts
    from ``<enabled/>``; a client that resends what ``<resumed h/>`` leaves out
    has every message handled exactly once, wherever the connection broke."""

    server_args = Resumption.server_args
    setUp = Resumption.setUp
    drop_alice = Resumption.drop_alice
    resume = Resumption.resume

    async def test_a_stanza_written_before_enabled_is_not_in_h(self):
        tablet = await self.connect()
        await tablet.login("alice", resource="tablet")
        self.bob.send(chat(f"{ALICE}/tablet", "early"))
        await tablet.wait_for(is_body("early"))  # after the bind, before <enable/>: not counted
        sm_id = (await enable(tablet))["id"]
        self.bob.send(chat(f"{ALICE}/tablet", "m1"))
        self.bob.send(chat(f"{ALICE}/tablet", "m2"))
        first = await tablet.wait_for(is_body("m1"))
        await tablet.wait_for(is_body("m2"))
        manager = self.server.router.session(f"{ALICE}/tablet").sm
        self.assertEqual(manager.sent, 2)
        h = handled(tablet, first)
        self.assertEqual(h, 1)  # counting "early" too (h=2) would have made the server skip m2 below
        gone = server_side_gone(self.server, f"{ALICE}/tablet")
        tablet.transport.abortConnection()
        await gone
        client = await self.resume(h, previd=sm_id)
        resumed = await client.wait_for(sm("resumed"))
        await client.wait_for(is_body("m2"))
        self.assertEqual(bodies(client), ["m2"])
        self.assertEqual(resumed["previd"], sm_id)

    async def test_a_directed_presence_counts_in_h_like_a_message(self):
        # The soak client wrote its room join outside its window: each <a h/> then
        # covered one message more than the server had, and a drop lost it.
        self.alice.send(f"<presence to='room@conference.{DOMAIN}/alice'/>")
        self.alice.send(chat(f"bob@{DOMAIN}/desk", "after the join"))
        self.alice.send(f"<r xmlns='{NS_SM}'/>")
        self.assertEqual((await self.alice.wait_for(sm("a")))["h"], "3")  # setUp's presence, the join, the message

    async def _send_drop_resume(self, count: int, partial: bool, wait_routed: bool):
        sent = [f"x{n}" for n in range(count)]
        for text in sent:
            self.alice.send(chat(f"bob@{DOMAIN}/desk", text))
        if partial:
            self.alice.send(f"<message to='bob@{DOMAIN}/desk' type='chat'><body>half")  # mid-stanza
        if wait_routed:
            await self.bob.wait_for(is_body(sent[-1]))
        await self.drop_alice()  # before reading any <a/>
        client = await self.resume(0)
        resumed = await client.wait_for(sm("resumed"))
        done = int(resumed["h"]) - 1  # the setUp's <presence/> was the first
        self.assertLessEqual(done, count)
        if wait_routed:
            self.assertEqual(done, count)  # all of them handled before the connection broke
        for text in sent[done:]:  # XEP-0198: what the server did not count, again
            client.send(chat(f"bob@{DOMAIN}/desk", text))
        client.send(f"<r xmlns='{NS_SM}'/>")
        self.assertEqual((await client.wait_for(sm("a")))["h"], str(count + 1))
        self.bob.send(PING.format(id="sync"))  # after the <a/>: everything routed
        await self.bob.wait_for(lambda e: e.getAttribute("id") == "sync")
        self.assertEqual(bodies(self.bob), sent)  # each once, in order, nothing half

    async def test_dropped_right_after_sending(self):
        await self._send_drop_resume(20, partial=False, wait_routed=False)

    async def test_dropped_mid_stanza(self):
        await self._send_drop_resume(20, partial=True, wait_routed=False)

    async def test_dropped_after_routing_before_the_ack(self):
        await self._send_drop_resume(20, partial=True, wait_routed=True)
