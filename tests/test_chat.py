"""One-to-one messaging over pair nodes (XEP-0207 §6), at the XML level over real sockets."""


from tests.server_helpers import DOMAIN, ServerTestCase
from tests.test_presence_roster import is_result
from xep207.legacy.chat import pair_node_id

ALICE, BOB, IAGO = f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"iago@{DOMAIN}"
PUBSUB = f"pubsub.{DOMAIN}"
NODE = pair_node_id(ALICE, BOB)
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_MAM = "urn:xmpp:mam:2"


def is_message(body=None):
    def match(e):
        return e.name == "message" and e.body is not None and (body is None or str(e.body) == body)
    return match


def is_carbon(kind):
    return lambda e: e.name == "message" and any(c.name == kind for c in e.elements())


class ChatTestCase(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")
    users = ("alice", "bob", "iago")

    async def setUp(self):
        await self.start_server()

    async def online(self, user, resource, priority=0, carbons=False, presence=True):
        client = await self.connect()
        await client.login(user, resource=resource)
        if carbons:
            client.send("<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            await client.wait_for(is_result("carbons"))
        if presence:
            client.send(f"<presence><priority>{priority}</priority></presence>")
            await client.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == client.jid)
        return client

    def chat(self, client, to, body, type="chat"):
        client.send(f"<message to='{to}' type='{type}'><body>{body}</body></message>")


class Routing(ChatTestCase):
    async def test_bare_full_priority_and_carbons(self):
        alice = await self.online("alice", "phone")
        alice_laptop = await self.online("alice", "laptop", carbons=True)
        bob_desk = await self.online("bob", "desk", priority=5)
        bob_phone = await self.online("bob", "phone", priority=1, carbons=True)
        bob_away = await self.online("bob", "away", priority=-1)
        # To the bare JID: the highest priority resource only; carbons to the others who asked.
        self.chat(alice, BOB, "to bare")
        got = await bob_desk.wait_for(is_message("to bare"))
        self.assertEqual((got["from"], got["type"]), (f"{ALICE}/phone", "chat"))
        received = await bob_phone.wait_for(is_carbon("received"))
        self.assertIn("to bare", received.toXml())
        sent = await alice_laptop.wait_for(is_carbon("sent"))
        self.assertIn("to bare", sent.toXml())
        # To a full JID: that resource.
        self.chat(alice, f"{BOB}/phone", "to phone")
        await bob_phone.wait_for(is_message("to phone"))
        # A resource not online: treated as the bare JID.
        self.chat(alice, f"{BOB}/gone", "to gone")
        await bob_desk.wait_for(is_message("to gone"))
        # Nobody got what was not theirs; the sender never got its own message back.
        self.assertEqual([e for e in bob_away.stanzas if e.name == "message"], [])
        self.assertEqual([e for e in bob_desk.stanzas if is_message("to phone")(e)], [])
        self.assertEqual([e for e in alice.stanzas if e.name == "message"], [])
        stored = await self.server.storage.page_items(PUBSUB, NODE)
        self.assertEqual(stored.count, 3)

    async def test_both_first_messages_at_once(self):
        """The pair node is made by the first message: two at once (two
        processes of a cluster, or one) must not bounce the loser's with
        ``conflict``, and both parties hear both."""
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.chat(alice, BOB, "from alice")
        self.chat(bob, ALICE, "from bob")
        await bob.wait_for(is_message("from alice"))
        await alice.wait_for(is_message("from bob"))
        for client in (alice, bob):
            errors = [e.toXml() for e in client.stanzas if e.name == "message" and e.getAttribute("type") == "error"]
            self.assertEqual(errors, [])
        stored = await self.server.storage.page_items(PUBSUB, NODE)
        self.assertEqual(stored.count, 2)

    async def test_not_stored_kinds_route_without_archiving(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        alice.send(f"<message to='{BOB}' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        state = await bob.wait_for(lambda e: e.name == "message" and e.composing is not None)
        self.assertEqual(state["from"], f"{ALICE}/phone")
        self.chat(alice, BOB, "news", type="headline")
        await bob.wait_for(is_message("news"))
        self.assertIsNone(await self.server.storage.get_node(PUBSUB, NODE))

    async def test_unknown_user(self):
        alice = await self.online("alice", "phone")
        self.chat(alice, f"nobody@{DOMAIN}", "hello?")
        error = await alice.wait_for(lambda e: e.name == "message" and e.getAttribute("type") == "error")
        self.assertIn("service-unavailable", error.toXml())


class DeliveryToAllResources(ChatTestCase):
    server_args = ChatTestCase.server_args + ("--deliver-to-all-resources",)

    async def test_policy_reaches_every_non_negative_resource(self):
        alice = await self.online("alice", "phone")
        high = await self.online("bob", "desk", priority=5)
        low = await self.online("bob", "phone", priority=1)
        negative = await self.online("bob", "away", priority=-1)
        self.chat(alice, BOB, "everyone")
        await high.wait_for(is_message("everyone"))
        await low.wait_for(is_message("everyone"))
        negative.send("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>")
        await negative.wait_for(is_result("after"))  # anything sent to it before has arrived
        self.assertEqual([e for e in negative.stanzas if e.name == "message"], [])


class Offline(ChatTestCase):
    async def test_delivered_at_next_presence_in_order_once(self):
        alice = await self.online("alice", "phone")
        for i in range(3):
            self.chat(alice, BOB, f"m{i}")
        alice.send("<iq type='get' id='read'><ping xmlns='urn:xmpp:ping'/></iq>")
        await alice.wait_for(is_result("read"))  # the server has read the messages …
        await self.server.quiesce()  # … and routed and stored them
        self.assertEqual((await self.server.storage.page_items(PUBSUB, NODE)).count, 3)
        bob = await self.online("bob", "desk", presence=False)
        bob.send("<presence/>")
        bodies = []
        for i in range(3):
            message = await bob.wait_for(is_message(f"m{i}"))
            self.assertIsNotNone(message.delay)
            bodies.append(str(message.body))
        self.assertEqual(bodies, ["m0", "m1", "m2"])
        bob.transport.loseConnection()
        await bob.closed
        again = await self.online("bob", "desk")
        ping = "<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>"
        again.send(ping)
        await again.wait_for(is_result("sync"))
        self.assertEqual([e for e in again.stanzas if e.name == "message"], [])


class OfflineAcrossRestart(ChatTestCase):
    storage = "sqlite"

    async def test_waiting_messages_survive_a_restart(self):
        alice = await self.online("alice", "phone")
        self.chat(alice, BOB, "before restart")
        self.chat(alice, BOB, "still waiting")
        alice.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        await alice.wait_for(is_result("sync"))
        await self.restart_server()
        bob = await self.online("bob", "desk", presence=False)
        bob.send("<presence/>")
        first = await bob.wait_for(is_message("before restart"))
        second = await bob.wait_for(is_message("still waiting"))
        self.assertEqual(first.delay["from"], DOMAIN)
        self.assertIsNotNone(second.delay)


class Archive(ChatTestCase):
    async def test_mam_paging_and_filters(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        for i in range(5):
            self.chat(alice, BOB, f"m{i}")
            await bob.wait_for(is_message(f"m{i}"))

        async def query(rsm="", form="", stanza_id="q"):
            alice.send(f"<iq type='set' id='{stanza_id}'><query xmlns='{NS_MAM}' queryid='{stanza_id}'>{form}"
                       f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query></iq>")
            fin = await alice.wait_for(is_result(stanza_id))
            results = [e for e in alice.unconsumed("message") if e.result is not None
                       and e.result.getAttribute("queryid") == stanza_id]
            for e in results:
                e.consumed = True
            return fin, [str(r.result.forwarded.message.body) for r in results], results

        fin, bodies, results = await query("<max>2</max>", stanza_id="p1")
        self.assertEqual(bodies, ["m0", "m1"])
        self.assertIsNone(fin.fin.getAttribute("complete"))
        self.assertEqual(str(fin.fin.set.count), "5")
        self.assertIsNotNone(results[0].result.forwarded.delay)
        last = str(fin.fin.set.last)
        fin, bodies, _ = await query(f"<max>10</max><after>{last}</after>", stanza_id="p2")
        self.assertEqual(bodies, ["m2", "m3", "m4"])
        self.assertEqual(fin.fin["complete"], "true")
        fin, bodies, _ = await query("<max>2</max><before/>", stanza_id="p3")
        self.assertEqual(bodies, ["m3", "m4"])
        with_form = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                     f"<value>{NS_MAM}</value></field><field var='with'><value>{IAGO}</value></field></x>")
        fin, bodies, _ = await query("<max>10</max>", with_form, stanza_id="p4")
        self.assertEqual(bodies, [])
        future = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                  f"<value>{NS_MAM}</value></field><field var='start'><value>2999-01-01T00:00:00Z</value></field></x>")
        fin, bodies, _ = await query("<max>10</max>", future, stanza_id="p5")
        self.assertEqual(bodies, [])


class PairNodesArePrivate(ChatTestCase):
    async def test_third_party_cannot_reach_a_pair_node(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        iago = await self.online("iago", "pda")
        self.chat(alice, BOB, "secret")
        await bob.wait_for(is_message("secret"))
        attempts = {
            "subscribe": f"<subscribe node='{NODE}' jid='{IAGO}/pda'/>",
            "items": f"<items node='{NODE}'/>",
            "publish": f"<publish node='{NODE}'><item><message xmlns='jabber:client'><body>forged</body></message></item></publish>",
        }
        for verb, body in attempts.items():
            kind = "get" if verb == "items" else "set"
            iago.send(f"<iq type='{kind}' id='{verb}' to='{PUBSUB}'><pubsub xmlns='{NS_PUBSUB}'>{body}</pubsub></iq>")
            reply = await iago.wait_for(is_result(verb))
            self.assertEqual(reply["type"], "error", verb)
        iago.send(f"<iq type='get' id='disco' to='{PUBSUB}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        listing = await iago.wait_for(is_result("disco"))
        self.assertNotIn(NODE, listing.toXml())
        iago.send(f"<iq type='set' id='mam'><query xmlns='{NS_MAM}' queryid='x'/></iq>")
        await iago.wait_for(is_result("mam"))
        self.assertEqual([e for e in iago.stanzas if "secret" in e.toXml()], [])
        self.assertEqual([e for e in bob.stanzas if "forged" in e.toXml()], [])
        self.assertEqual((await self.server.storage.page_items(PUBSUB, NODE)).count, 1)


class XEP0207Messaging(ChatTestCase):
    users = ("juliet", "romeo")

    async def test_section_6_examples(self):
        juliet = await self.online("juliet", "balcony")
        romeo = await self.online("romeo", "mobile")
        juliet.send(f"<iq type='set' to='{PUBSUB}' id='create1'><pubsub xmlns='{NS_PUBSUB}'>"
                    "<create node='me_and_romeo'/><configure><x xmlns='jabber:x:data' type='submit'>"
                    "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>"
                    "<field var='pubsub#access_model'><value>whitelist</value></field>"
                    f"<field var='pubsub#publisher'><value>romeo@{DOMAIN}</value></field>"
                    "</x></configure></pubsub></iq>")
        self.assertEqual((await juliet.wait_for(is_result("create1")))["type"], "result")
        juliet.send(f"<iq type='set' to='{PUBSUB}' id='manage1'><pubsub xmlns='{NS_PUBSUB}#owner'>"
                    f"<subscriptions node='me_and_romeo'><subscription jid='romeo@{DOMAIN}' subscription='subscribed'/>"
                    "</subscriptions></pubsub></iq>")
        self.assertEqual((await juliet.wait_for(is_result("manage1")))["type"], "result")
        juliet.send(f"<iq type='set' to='{PUBSUB}' id='msg1'><pubsub xmlns='{NS_PUBSUB}'><publish node='me_and_romeo'>"
                    "<item><message xmlns='jabber:client'><body>wherefore art thou?</body></message></item>"
                    "</publish></pubsub></iq>")
        self.assertEqual((await juliet.wait_for(is_result("msg1")))["type"], "result")
        for client in (romeo, juliet):
            note = await client.wait_for(lambda e: e.name == "message" and e.event is not None
                                         and e.event.items is not None)
            self.assertEqual(note["from"], PUBSUB)
            self.assertEqual(note.event.items["node"], "me_and_romeo")
            self.assertEqual(str(note.event.items.item.message.body), "wherefore art thou?")
            address = note.addresses.address
            self.assertEqual((address["type"], address["jid"]), ("replyto", f"juliet@{DOMAIN}/balcony"))


class LegacyTalksToNative(ChatTestCase):
    async def test_conversation_across_one_node(self):
        alice = await self.online("alice", "legacy")
        bob = await self.online("bob", "native")
        self.chat(alice, BOB, "hello native")
        await bob.wait_for(is_message("hello native"))
        # Bob uses XEP-0060 on the pair node: from now on it speaks pubsub there.
        bob.send(f"<iq type='get' id='hist' to='{PUBSUB}'><pubsub xmlns='{NS_PUBSUB}'><items node='{NODE}'/></pubsub></iq>")
        history = await bob.wait_for(is_result("hist"))
        self.assertIn("hello native", history.toXml())
        self.chat(alice, BOB, "second")
        event = await bob.wait_for(lambda e: e.name == "message" and e.event is not None and "second" in e.toXml())
        self.assertEqual(event["from"], PUBSUB)
        bob.send(f"<iq type='set' id='reply' to='{PUBSUB}'><pubsub xmlns='{NS_PUBSUB}'><publish node='{NODE}'>"
                 f"<item><message xmlns='jabber:client' from='{IAGO}/forged'><body>hello legacy</body></message>"
                 "</item></publish></pubsub></iq>")
        self.assertEqual((await bob.wait_for(is_result("reply")))["type"], "result")
        reply = await alice.wait_for(is_message("hello legacy"))
        self.assertEqual((reply["from"], reply["type"]), (f"{BOB}/native", "chat"))




class RoutingOnPostgreSQL(Routing):
    storage = "postgresql"


class OfflineOnPostgreSQL(Offline):
    storage = "postgresql"


class ArchiveOnPostgreSQL(Archive):
    storage = "postgresql"
