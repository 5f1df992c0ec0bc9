"""XEP-0191 blocking: the ``blocklist`` node through both doors, and its enforcement.

alice blocks eve (or bob); every path a stanza or a notification can take
between them must be closed, whichever door it came through.
"""

from tests.doors_helpers import (
    ALICE, BOB, CAROL, EVE, NODE_CONFIG, PUBSUB, DoorsTestCase, chat_body, chat_item, event_on, form,
    message_with, pair,
)
from tests.server_helpers import DOMAIN

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKED = "urn:xmpp:blocking:errors"
NODE = "blocklist"


def items(*jids: str) -> str:
    return "".join(f"<item jid='{j}'/>" for j in jids)


def is_push(verb: str):
    return lambda e: (e.name == "iq" and e.getAttribute("type") == "set"
                      and any(c.name == verb and c.uri == NS_BLOCKING for c in e.elements()))


def pushed_jids(push) -> list[str]:
    return sorted(i["jid"] for c in push.elements() for i in c.elements() if i.name == "item")


def presence_from(jid: str, type=None):
    return lambda e: (e.name == "presence" and e.getAttribute("from") == jid
                      and e.getAttribute("type") == type)


class BlockingTestCase(DoorsTestCase):
    async def block(self, client, *jids: str):
        return await self.iq(client, "set", None, f"<block xmlns='{NS_BLOCKING}'>{items(*jids)}</block>")

    async def unblock(self, client, *jids: str):
        return await self.iq(client, "set", None, f"<unblock xmlns='{NS_BLOCKING}'>{items(*jids)}</unblock>")

    async def blocklist(self, client) -> list[str]:
        reply = self.assert_ok(await self.iq(client, "get", None, f"<blocklist xmlns='{NS_BLOCKING}'/>"))
        return sorted(i["jid"] for i in reply.blocklist.elements() if i.name == "item")

    def assert_blocked_error(self, stanza):
        self.assertEqual(stanza["type"], "error", stanza.toXml())
        self.assertIn("not-acceptable", stanza.error.toXml())
        self.assertTrue(any(c.uri == NS_BLOCKED and c.name == "blocked" for c in stanza.error.elements()),
                        stanza.toXml())

    async def contacts(self, a: str, b: str) -> None:
        """a and b see each other's presence (both subscribed, both doors set up as RFC 6121 does)."""
        await self.server.engine.subscribe(a, b, "presence", a, approved=True, via="legacy")
        await self.server.engine.subscribe(b, a, "presence", b, approved=True, via="legacy")


class TheBlockCommand(BlockingTestCase):
    async def test_block_list_unblock_and_unblock_all(self):
        alice = await self.online("alice")
        self.assertEqual(await self.blocklist(alice), [])
        self.assert_ok(await self.block(alice, EVE, f"{BOB}/phone", "example.org"))
        self.assertEqual(await self.blocklist(alice), sorted([EVE, f"{BOB}/phone", "example.org"]))
        self.assert_ok(await self.unblock(alice, EVE, CAROL))  # carol was never blocked: fine
        self.assertEqual(await self.blocklist(alice), sorted([f"{BOB}/phone", "example.org"]))
        self.assert_ok(await self.unblock(alice))  # no item: everyone
        self.assertEqual(await self.blocklist(alice), [])
        self.assert_ok(await self.unblock(alice))  # again, with nothing blocked
        self.assertEqual(self.server.engine.blocks.of(ALICE), frozenset())

    async def test_jids_are_prepared_and_kept_once(self):
        alice = await self.online("alice")
        self.assert_ok(await self.block(alice, "EVE@LocalHost", EVE))
        self.assertEqual(await self.blocklist(alice), [EVE])
        page = await self.server.storage.page_items(ALICE, NODE)
        self.assertEqual([i.item_id for i in page.items], [EVE])

    async def test_bad_requests_change_nothing(self):
        alice = await self.online("alice")
        self.assert_ok(await self.block(alice, CAROL))
        self.assert_error(await self.iq(alice, "set", None, f"<block xmlns='{NS_BLOCKING}'/>"), "bad-request")
        self.assert_error(await self.block(alice, EVE, "a@b@c"), "jid-malformed")
        self.assert_error(await self.iq(alice, "set", None, f"<block xmlns='{NS_BLOCKING}'><item/></block>"),
                          "jid-malformed")
        self.assert_error(await self.block(alice, "@localhost"), "jid-malformed")
        self.assert_error(await self.block(alice, "x" * 2000 + "@localhost"), "jid-malformed")
        self.assert_error(await self.unblock(alice, "bad@@jid"), "jid-malformed")
        self.assertEqual(await self.blocklist(alice), [CAROL])  # nothing half-done
        # Someone else's list: not through this door either.
        eve = await self.online("eve")
        self.assert_error(await self.iq(eve, "get", ALICE, f"<blocklist xmlns='{NS_BLOCKING}'/>"), "forbidden")
        self.assert_error(await self.iq(eve, "set", ALICE, f"<unblock xmlns='{NS_BLOCKING}'/>"), "forbidden")
        self.assertEqual(await self.blocklist(alice), [CAROL])
        await self.ping(alice)  # the session survived all of it

    async def test_pushes_reach_the_sessions_that_asked_for_the_list(self):
        phone = await self.online("alice", "phone")
        laptop = await self.online("alice", "laptop")
        quiet = await self.online("alice", "quiet")
        await self.blocklist(phone)
        await self.blocklist(laptop)
        self.assert_ok(await self.block(phone, EVE))
        for client in (phone, laptop):
            push = await client.wait_for(is_push("block"))
            self.assertEqual(pushed_jids(push), [EVE])
        self.assert_ok(await self.unblock(laptop))
        for client in (phone, laptop):
            push = await client.wait_for(is_push("unblock"))
            self.assertEqual(pushed_jids(push), [EVE])
        await self.settle(phone, quiet)
        self.nothing(quiet, lambda e: is_push("block")(e) or is_push("unblock")(e))

    async def test_the_server_advertises_it(self):
        alice = await self.online("alice")
        reply = await self.iq(alice, "get", DOMAIN, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        features = [f["var"] for f in reply.query.elements() if f.name == "feature"]
        self.assertIn(NS_BLOCKING, features)


class TheNodeThroughBothDoors(BlockingTestCase):
    async def test_the_owner_reads_and_writes_the_same_list_through_xep0060(self):
        alice = await self.online("alice")
        await self.blocklist(alice)  # pushes wanted
        self.assert_ok(await self.block(alice, EVE))
        await alice.wait_for(is_push("block"))
        reply = self.assert_ok(await self.items(alice, ALICE, NODE))
        self.assertEqual(self.item_ids(reply), [EVE])
        # Publish through XEP-0060: the XEP-0191 door sees it and the session is pushed.
        self.assert_ok(await self.publish(alice, ALICE, NODE, f"<item xmlns='{NS_BLOCKING}' jid='{BOB}'/>"))
        push = await alice.wait_for(is_push("block"))
        self.assertEqual(pushed_jids(push), [BOB])
        self.assertEqual(await self.blocklist(alice), [BOB, EVE])
        # Retract through XEP-0060: an unblock push.
        self.assert_ok(await self.retract(alice, ALICE, NODE, EVE))
        push = await alice.wait_for(is_push("unblock"))
        self.assertEqual(pushed_jids(push), [EVE])
        self.assertEqual(await self.blocklist(alice), [BOB])
        # Purge: everyone unblocked.
        self.assert_ok(await self.pubsub(alice, "set", ALICE, f"<purge node='{NODE}'/>", owner=True))
        push = await alice.wait_for(is_push("unblock"))
        self.assertEqual(pushed_jids(push), [BOB])
        self.assertEqual(await self.blocklist(alice), [])

    async def test_the_owner_cannot_store_what_is_not_a_block(self):
        alice = await self.online("alice")
        self.assert_error(await self.publish(alice, ALICE, NODE, "<x xmlns='urn:other'/>"),
                          "bad-request", "invalid-payload")
        self.assert_error(await self.publish(alice, ALICE, NODE, f"<item xmlns='{NS_BLOCKING}' jid='a@@b'/>"),
                          "jid-malformed")
        self.assert_error(await self.publish(alice, ALICE, NODE, f"<item xmlns='{NS_BLOCKING}' jid='{EVE}'/>",
                                             item_id=BOB), "bad-request", "invalid-payload")
        self.assert_ok(await self.publish(alice, ALICE, NODE, f"<item xmlns='{NS_BLOCKING}' jid='{EVE}'/>"))
        config = form(NODE_CONFIG, {"pubsub#access_model": "open"})
        self.assert_error(await self.pubsub(alice, "set", ALICE, f"<configure node='{NODE}'>{config}</configure>",
                                            owner=True), "not-acceptable")
        self.assertEqual(await self.blocklist(alice), [EVE])

    async def test_a_stranger_finds_nothing_and_changes_nothing(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        found = await self.answers(eve, ALICE, NODE)  # before the node exists
        self.assert_ok(await self.block(alice, EVE))
        # After: eve is blocked, so the router refuses her iqs to alice altogether.
        self.assertEqual(set(found.values()), {("error", "item-not-found", None)}, found)
        carol = await self.online("carol")
        found = await self.answers(carol, ALICE, NODE)
        self.assertEqual(set(found.values()), {("error", "item-not-found", None)}, found)
        self.assert_failed(await self.create(carol, ALICE, NODE))
        self.assertEqual(await self.blocklist(alice), [EVE])
        self.assertNotIn(CAROL, await self.server.storage.get_affiliations(ALICE, NODE))


class Enforcement(BlockingTestCase):
    async def test_messages_both_ways(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        self.assert_ok(await self.block(alice, EVE))
        # alice writes to eve: not-acceptable + <blocked/>, nothing reaches eve.
        alice.send(f"<message id='m1' to='{EVE}' type='chat'><body>psst</body></message>")
        self.assert_blocked_error(await alice.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "m1"))
        # eve writes to alice: service-unavailable; never stored, never archived.
        eve.send(f"<message id='m2' to='{ALICE}' type='chat'><body>hello?</body></message>")
        error = await eve.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "m2")
        self.assertEqual(error["type"], "error")
        self.assertIn("service-unavailable", error.error.toXml())
        eve.send(f"<message to='{ALICE}/r' type='chat'><body>to the resource</body></message>")
        eve.send(f"<message to='{ALICE}' type='headline'><body>news</body></message>")
        reply = await self.iq(eve, "get", f"{ALICE}/r", "<ping xmlns='urn:xmpp:ping'/>")
        self.assert_error(reply, "service-unavailable")
        await self.settle(eve, alice)
        self.nothing(eve, chat_body("psst"))
        self.nothing(alice, message_with("hello?"))
        self.nothing(alice, message_with("to the resource"))
        self.nothing(alice, message_with("news"))
        self.assertEqual(await self.mam(alice), [])
        self.assertIsNone(await self.server.storage.get_node(PUBSUB, pair(ALICE, EVE)))
        # Unblocked: talk again.
        self.assert_ok(await self.unblock(alice, EVE))
        eve.send(f"<message to='{ALICE}' type='chat'><body>again</body></message>")
        await alice.wait_for(chat_body("again"))

    async def test_offline_messages_from_a_blocked_sender_are_not_stored(self):
        alice = await self.online("alice")
        self.assert_ok(await self.block(alice, EVE))
        await self.logout(alice)
        eve = await self.online("eve")
        eve.send(f"<message id='m' to='{ALICE}' type='chat'><body>while you slept</body></message>")
        error = await eve.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "m")
        self.assertIn("service-unavailable", error.error.toXml())
        alice = await self.online("alice")
        await self.settle(alice, eve)
        self.nothing(alice, message_with("while you slept"))

    async def test_the_pair_node_through_xep0060_meets_the_same_check(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        self.chat(eve, ALICE, "before")
        await alice.wait_for(chat_body("before"))
        self.assert_ok(await self.block(alice, EVE))
        reply = await self.publish(eve, PUBSUB, pair(ALICE, EVE), chat_item("sneaky"))
        self.assert_error(reply, "service-unavailable")
        reply = await self.publish(alice, PUBSUB, pair(ALICE, EVE), chat_item("mine"))
        self.assert_blocked_error(reply)
        await self.settle(eve, alice)
        self.nothing(alice, message_with("sneaky"))
        self.nothing(eve, message_with("mine"))
        page = await self.server.storage.page_items(PUBSUB, pair(ALICE, EVE))
        self.assertEqual(len(page.items), 1)  # "before" only

    async def test_presence_goes_unavailable_and_comes_back(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        await self.contacts(ALICE, EVE)
        alice.send("<presence><status>here</status></presence>")
        await eve.wait_for(lambda e: presence_from(alice.jid)(e) and "here" in e.toXml())
        self.assert_ok(await self.block(alice, EVE))
        await eve.wait_for(presence_from(alice.jid, "unavailable"))
        mark = len(eve.stanzas)
        alice.send("<presence><status>still here</status></presence>")
        eve.send(f"<presence type='subscribe' to='{ALICE}'/>")
        eve.send(f"<presence to='{ALICE}/r'/>")
        await self.settle(alice, eve)
        self.nothing(eve, lambda e: e.name == "presence" and e.getAttribute("from") == alice.jid, since=mark)
        self.nothing(alice, lambda e: e.name == "presence" and e.getAttribute("from", "").startswith(EVE)
                     and e.getAttribute("type") in ("subscribe", None) and "still" not in e.toXml(), since=mark)
        # A new session of eve is not told alice is here (the probe is answered without her).
        eve2 = await self.online("eve", "two")
        await self.settle(eve2, alice)
        self.nothing(eve2, presence_from(alice.jid))
        # Unblocked: eve sees alice again.
        self.assert_ok(await self.unblock(alice, EVE))
        await eve.wait_for(lambda e: presence_from(alice.jid)(e) and "still here" in e.toXml())

    async def test_a_pending_request_from_a_blocked_jid_is_not_shown(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        eve.send(f"<presence type='subscribe' to='{ALICE}'/>")
        await alice.wait_for(presence_from(EVE, "subscribe"))
        self.assert_ok(await self.block(alice, EVE))
        phone = await self.online("alice", "phone")  # the probe re-sends pending requests
        await self.settle(phone, eve)
        self.nothing(phone, presence_from(EVE, "subscribe"))

    async def test_subscribing_to_the_blockers_presence_through_xep0060_fails(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        self.assert_ok(await self.block(alice, "eve@localhost"))
        # The router refuses eve's iqs to alice's PEP service...
        self.assert_error(await self.subscribe(eve, ALICE, "presence", jid=EVE), "service-unavailable")
        # ...and the engine says the same to anyone who reaches it otherwise.
        from xep207.pubsub import errors
        with self.assertRaises(errors.StanzaError) as raised:
            await self.server.engine.subscribe(EVE, ALICE, "presence", EVE)
        self.assertEqual(raised.exception.condition, "service-unavailable")
        with self.assertRaises(errors.StanzaError) as raised:
            await self.server.engine.subscribe(ALICE, EVE, "presence", ALICE)
        self.assertEqual(raised.exception.condition, "not-acceptable")
        self.assertIsNone(await self.server.storage.get_subscription(ALICE, "presence", EVE))

    async def test_pep_notifications_stop(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        await self.contacts(ALICE, EVE)
        eve.send("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>")
        eve.session = self.server.router.session(eve.jid)
        self.server.router.session(eve.jid).interested = frozenset({"urn:xmpp:tune", "urn:xmpp:tune+notify"})
        self.assert_ok(await self.publish(alice, ALICE, "urn:xmpp:tune",
                                          "<tune xmlns='http://jabber.org/protocol/tune'><title>one</title></tune>"))
        await eve.wait_for(event_on("urn:xmpp:tune"))
        self.assert_ok(await self.block(alice, EVE))
        mark = len(eve.stanzas)
        self.assert_ok(await self.publish(alice, ALICE, "urn:xmpp:tune",
                                          "<tune xmlns='http://jabber.org/protocol/tune'><title>two</title></tune>"))
        await self.settle(alice, eve)
        self.nothing(eve, event_on("urn:xmpp:tune"), since=mark)

    async def test_a_blocked_resource_or_domain(self):
        alice = await self.online("alice")
        bob_phone = await self.online("bob", "phone")
        bob_desk = await self.online("bob", "desk")
        self.assert_ok(await self.block(alice, f"{BOB}/phone"))
        self.chat(bob_phone, ALICE, "from the phone")
        self.chat(bob_desk, ALICE, "from the desk")
        await alice.wait_for(chat_body("from the desk"))
        await self.settle(bob_phone, alice)
        self.nothing(alice, chat_body("from the phone"))
        # A whole domain.
        self.assert_ok(await self.block(alice, DOMAIN))
        self.chat(bob_desk, ALICE, "domain blocked")
        await self.settle(bob_desk, alice)
        self.nothing(alice, chat_body("domain blocked"))
        await self.ping(alice)  # one's own server still answers

    async def test_room_private_messages_from_a_blocked_occupant(self):
        from tests.doors_helpers import ROOM_JID, NS_MUC, from_room, statuses
        alice = await self.online("alice")
        eve = await self.online("eve")
        for client, nick in ((alice, "Alice"), (eve, "Eve")):
            client.send(f"<presence to='{ROOM_JID}/{nick}'><x xmlns='{NS_MUC}'/></presence>")
            own = await client.wait_for(lambda e, n=nick: from_room(ROOM_JID, n)(e) and 110 in statuses(e))
            if 201 in statuses(own):  # a new room is locked until its owner accepts it (XEP-0045 §10.1.2)
                self.assert_ok(await self.iq(client, "set", ROOM_JID, f"<query xmlns='{NS_MUC}#owner'>"
                                                                      "<x xmlns='jabber:x:data' type='submit'/></query>"))
        self.assert_ok(await self.block(alice, f"{ROOM_JID}/Eve"))
        eve.send(f"<message to='{ROOM_JID}/Alice' type='chat'><body>private</body></message>")
        await self.settle(eve, alice)  # groupchat from den/Eve: tests/test_attack_blocking.py
        self.nothing(alice, message_with("private"))


class Limits(BlockingTestCase):
    async def test_a_full_list_refuses_more_and_keeps_what_it_had(self):
        from xep207.pubsub.kinds.blocklist import MAX_BLOCKED

        alice = await self.online("alice")
        self.assert_ok(await self.block(alice, *(f"u{i}@spam.example" for i in range(MAX_BLOCKED))))
        self.assert_error(await self.block(alice, EVE, f"u0@spam.example"), "resource-constraint")
        self.assert_error(await self.publish(alice, ALICE, NODE, f"<item xmlns='{NS_BLOCKING}' jid='{EVE}'/>"),
                          "resource-constraint")
        self.assertEqual(len(await self.blocklist(alice)), MAX_BLOCKED)
        self.assertNotIn(EVE, self.server.engine.blocks.of(ALICE))
        self.assert_ok(await self.block(alice, "u1@spam.example"))  # already there: nothing new


class AcrossRestart(BlockingTestCase):
    storage = "sqlite"

    async def test_the_index_is_loaded_at_start(self):
        alice = await self.online("alice")
        self.assert_ok(await self.block(alice, EVE))
        await self.restart_server()
        self.assertEqual(self.server.engine.blocks.of(ALICE), {EVE})
        eve = await self.online("eve")
        eve.send(f"<message id='m' to='{ALICE}' type='chat'><body>after the restart</body></message>")
        error = await eve.wait_for(lambda e: e.name == "message" and e.getAttribute("id") == "m")
        self.assertIn("service-unavailable", error.error.toXml())


class SlixmppBlocking(BlockingTestCase):
    server_args = ()  # TLS and SCRAM, as a real client wants them

    async def test_slixmpp_xep0191_plugin(self):
        from tests.server_helpers import PASSWORD

        report = await self.run_client("blocking_scenario.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertTrue(report["advertised"])
        self.assertEqual(report["initial"], [])
        self.assertEqual(report["pushed"], sorted([EVE, "spam.example"]))
        self.assertEqual(report["listed"], sorted([EVE, "spam.example"]))
        self.assertEqual(report["incoming"], ["error", "service-unavailable"])
        self.assertEqual(report["outgoing"], ["error", "not-acceptable", True])
        self.assertEqual(report["unpushed"], [EVE])
        self.assertEqual(report["after"], "friends again")
        self.assertEqual(report["final"], ["spam.example"])
