"""XEP-0313: paging (RSM and the extended fields) and §6 preferences as a
private ``mam-prefs`` node, honoured per party of a shared pair node."""

from xml.sax.saxutils import quoteattr

from tests.doors_helpers import ALICE, BOB, CAROL, EVE, NS_MAM, DoorsTestCase, chat_body, form

NS_RSM = "http://jabber.org/protocol/rsm"
NODE = "mam-prefs"


def prefs(default: str, always=(), never=()) -> str:
    def jids(values):
        return "".join(f"<jid>{j}</jid>" for j in values)
    return (f"<prefs xmlns='{NS_MAM}' default='{default}'><always>{jids(always)}</always>"
            f"<never>{jids(never)}</never></prefs>")


class MamTestCase(DoorsTestCase):
    async def query(self, client, rsm: str = "", fields: dict | None = None, flip: bool = False):
        """(iq answer, bodies in the order sent, result ids)."""
        query_id = f"mq{id(object())}"
        extra = form(NS_MAM, fields) if fields else ""
        flip_page = "<flip-page/>" if flip else ""
        reply = await self.iq(client, "set", None, f"<query xmlns='{NS_MAM}' queryid={quoteattr(query_id)}>{extra}"
                                                   f"<set xmlns='{NS_RSM}'>{rsm}</set>{flip_page}</query>")
        results = [e for e in client.unconsumed("message") if e.result is not None
                   and e.result.getAttribute("queryid") == query_id]
        for e in results:
            e.consumed = True
        return (reply, [str(r.result.forwarded.message.body) for r in results],
                [r.result["id"] for r in results])

    async def conversation(self, n: int = 5):
        alice = await self.online("alice")
        bob = await self.online("bob")
        for i in range(n):
            self.chat(alice if i % 2 == 0 else bob, BOB if i % 2 == 0 else ALICE, f"m{i}")
            await (bob if i % 2 == 0 else alice).wait_for(chat_body(f"m{i}"))
        return alice, bob


class Paging(MamTestCase):
    async def test_rsm_before_after_max_flip_and_complete(self):
        alice, _ = await self.conversation(5)
        reply, bodies, ids = await self.query(alice, "<max>2</max><before/>")
        self.assertEqual(bodies, ["m3", "m4"])  # empty <before/>: the last page
        self.assertIsNone(reply.fin.getAttribute("complete"))
        reply, bodies, _ = await self.query(alice, f"<max>2</max><before>{ids[0]}</before>")
        self.assertEqual(bodies, ["m1", "m2"])
        reply, bodies, _ = await self.query(alice, f"<max>5</max><before>{ids[0]}</before>")
        self.assertEqual(bodies, ["m0", "m1", "m2"])
        self.assertEqual(reply.fin["complete"], "true")
        reply, bodies, all_ids = await self.query(alice, "<max>10</max>")
        self.assertEqual(reply.fin["complete"], "true")
        reply, bodies, _ = await self.query(alice, f"<max>2</max><after>{all_ids[1]}</after>")
        self.assertEqual(bodies, ["m2", "m3"])
        self.assertIsNone(reply.fin.getAttribute("complete"))
        # flip-page: the same page, newest first; first/last name what was sent first/last.
        reply, bodies, sent = await self.query(alice, "<max>2</max><before/>", flip=True)
        self.assertEqual(bodies, ["m4", "m3"])
        self.assertEqual(str(reply.fin.set.first), sent[0])
        # max 0: just the count.
        reply, bodies, _ = await self.query(alice, "<max>0</max>")
        self.assertEqual((bodies, str(reply.fin.set.count)), ([], "5"))

    async def test_unknown_ids_and_bad_numbers(self):
        alice, _ = await self.conversation(2)
        for rsm in ("<after>nope</after>", "<before>nope</before>"):
            reply, bodies, _ = await self.query(alice, f"<max>5</max>{rsm}")
            self.assert_error(reply, "item-not-found")
            self.assertEqual(bodies, [])
        self.assert_error((await self.query(alice, "<max>-1</max>"))[0], "bad-request")
        self.assert_error((await self.query(alice, "<max>lots</max>"))[0], "bad-request")
        self.assert_error((await self.query(alice, fields={"after-id": "nope"}))[0], "item-not-found")
        await self.ping(alice)

    async def test_extended_fields(self):
        alice, _ = await self.conversation(5)
        _, _, ids = await self.query(alice)
        _, bodies, _ = await self.query(alice, fields={"after-id": ids[1], "before-id": ids[4]})
        self.assertEqual(bodies, ["m2", "m3"])
        _, bodies, _ = await self.query(alice, fields={"ids": [ids[0], ids[3]]})
        self.assertEqual(bodies, ["m0", "m3"])
        reply = await self.iq(alice, "get", None, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        self.assertIn(f"{NS_MAM}#extended", reply.toXml())


class Preferences(MamTestCase):
    async def set_prefs(self, client, body: str):
        return await self.iq(client, "set", None, body)

    async def test_get_and_set_prefs(self):
        alice = await self.online("alice")
        reply = self.assert_ok(await self.iq(alice, "get", None, f"<prefs xmlns='{NS_MAM}'/>"))
        self.assertEqual(reply.prefs["default"], "always")
        reply = self.assert_ok(await self.set_prefs(alice, prefs("roster", [BOB], ["Eve@LocalHost/x", BOB])))
        self.assertEqual(reply.prefs["default"], "roster")
        never = [str(j) for j in reply.prefs.never.elements()]
        always = [str(j) for j in reply.prefs.always.elements()]
        self.assertEqual((always, never), ([], sorted([BOB, EVE])))  # prepared, bare, never wins
        reply = self.assert_ok(await self.iq(alice, "get", None, f"<prefs xmlns='{NS_MAM}'/>"))
        self.assertEqual(reply.prefs["default"], "roster")

    async def test_bad_prefs_change_nothing(self):
        alice = await self.online("alice")
        self.assert_ok(await self.set_prefs(alice, prefs("never")))
        self.assert_error(await self.set_prefs(alice, prefs("sometimes")), "bad-request")
        self.assert_error(await self.set_prefs(alice, f"<prefs xmlns='{NS_MAM}'/>"), "bad-request")
        self.assert_error(await self.set_prefs(alice, prefs("always", never=["a@@b"])), "jid-malformed")
        self.assert_error(await self.set_prefs(alice, prefs("always", never=[f"u{i}@x" for i in range(1001)])),
                          "not-acceptable")
        reply = self.assert_ok(await self.iq(alice, "get", None, f"<prefs xmlns='{NS_MAM}'/>"))
        self.assertEqual(reply.prefs["default"], "never")

    async def test_never_hides_from_one_party_only(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        self.chat(alice, BOB, "kept by both")
        await bob.wait_for(chat_body("kept by both"))
        self.assert_ok(await self.set_prefs(alice, prefs("always", never=[BOB])))
        self.chat(alice, BOB, "only bob keeps")
        await bob.wait_for(chat_body("only bob keeps"))
        self.assertEqual(await self.mam(alice, BOB), ["kept by both"])
        self.assertEqual(await self.mam(bob, ALICE), ["kept by both", "only bob keeps"])
        # Back to always: new messages are archived again; the hidden one stays hidden.
        self.assert_ok(await self.set_prefs(alice, prefs("always")))
        self.chat(bob, ALICE, "after")
        await alice.wait_for(chat_body("after"))
        self.assertEqual(await self.mam(alice), ["kept by both", "after"])

    async def test_roster_default(self):
        alice = await self.online("alice")
        bob = await self.online("bob")
        carol = await self.online("carol")
        alice.send(f"<iq type='set' id='r'><query xmlns='jabber:iq:roster'><item jid='{BOB}'/></query></iq>")
        await alice.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == "r")
        self.assert_ok(await self.set_prefs(alice, prefs("roster", always=[CAROL])))
        self.chat(bob, ALICE, "from a contact")
        self.chat(carol, ALICE, "always carol")
        eve = await self.online("eve")
        self.chat(eve, ALICE, "from a stranger")
        for body in ("from a contact", "always carol", "from a stranger"):
            await alice.wait_for(chat_body(body))
        self.assertEqual(await self.mam(alice), ["from a contact", "always carol"])
        self.assertEqual(await self.mam(eve), ["from a stranger"])

    async def test_the_node_through_both_doors(self):
        alice = await self.online("alice")
        eve = await self.online("eve")
        self.assert_ok(await self.set_prefs(alice, prefs("never")))
        reply = self.assert_ok(await self.items(alice, ALICE, NODE))
        self.assertEqual(len(self.item_ids(reply)), 1)
        # The owner publishes through XEP-0060: the MAM door reads the new version.
        self.assert_ok(await self.publish(alice, ALICE, NODE, prefs("roster")))
        reply = self.assert_ok(await self.iq(alice, "get", None, f"<prefs xmlns='{NS_MAM}'/>"))
        self.assertEqual(reply.prefs["default"], "roster")
        self.assert_error(await self.publish(alice, ALICE, NODE, "<x xmlns='urn:other'/>"),
                          "bad-request", "invalid-payload")
        versions = self.item_ids(self.assert_ok(await self.items(alice, ALICE, NODE)))
        self.assertEqual(len(versions), 2)
        self.assert_error(await self.retract(alice, ALICE, NODE, versions[0]), "forbidden")  # history
        # A stranger: hidden, whatever she tries, and nothing changes.
        found = await self.answers(eve, ALICE, NODE)
        self.assertEqual(set(found.values()), {("error", "item-not-found", None)}, found)
        self.assert_error(await self.iq(eve, "set", ALICE, prefs("always")), "forbidden")
        reply = self.assert_ok(await self.iq(alice, "get", None, f"<prefs xmlns='{NS_MAM}'/>"))
        self.assertEqual(reply.prefs["default"], "roster")
