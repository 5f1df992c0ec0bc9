"""XEP-0207 §3–4 stanza by stanza, and RFC 6121 subscription scenarios, over real sockets."""


from tests.server_helpers import DOMAIN, ServerTestCase

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_EVENT = NS_PUBSUB + "#event"
NS_ROSTER = "jabber:iq:roster"
JULIET = f"juliet@{DOMAIN}"
ROMEO = f"romeo@{DOMAIN}"
BARD = f"bard@{DOMAIN}"
NURSE = f"nurse@{DOMAIN}"


def is_presence(sender=None, type=None):
    def match(e):
        return (e.name == "presence" and (sender is None or e.getAttribute("from") == sender)
                and e.getAttribute("type") == type)
    return match


def is_push(contact):
    def match(e):
        return (e.name == "iq" and e.getAttribute("type") == "set" and e.query is not None
                and e.query.uri == NS_ROSTER and e.query.item is not None and e.query.item["jid"] == contact)
    return match


def is_event(node):
    def match(e):
        return e.name == "message" and e.event is not None and e.event.uri == NS_EVENT and \
            any(c.getAttribute("node") == node for c in e.event.elements())
    return match


def is_result(stanza_id):
    return lambda e: e.name == "iq" and e.getAttribute("id") == stanza_id


class PresenceTestCase(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")
    users = ("juliet", "romeo", "bard", "nurse")

    async def setUp(self):
        await self.start_server()

    async def online(self, user, resource, roster=True, presence="<presence/>"):
        client = await self.connect()
        await client.login(user, resource=resource)
        if roster:
            client.send("<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>")
            await client.wait_for(is_result("roster1"))
        if presence:
            client.send(presence)
            await client.wait_for(is_presence(client.jid))  # our own presence, echoed
        return client

    async def befriend(self, watcher, watched, watched_user):
        """``watcher`` subscribes to ``watched_user``'s presence, who approves."""
        watcher.send(f"<presence to='{watched_user}' type='subscribe'/>")
        await watched.wait_for(is_presence(watcher.jid.split("/")[0], "subscribe"))
        watched.send(f"<presence to='{watcher.jid.split('/')[0]}' type='subscribed'/>")
        await watcher.wait_for(is_presence(watched_user, "subscribed"))

    async def roster(self, client):
        stanza_id = f"r{id(client) % 100000}"
        client.send(f"<iq type='get' id='{stanza_id}'><query xmlns='jabber:iq:roster'/></iq>")
        reply = await client.wait_for(is_result(stanza_id))
        return {i["jid"]: (i.getAttribute("subscription"), i.getAttribute("ask"), i.getAttribute("name"),
                           sorted(str(g) for g in i.elements(NS_ROSTER, "group")))
                for i in reply.query.elements(NS_ROSTER, "item")}


class XEP0207Presence(PresenceTestCase):
    async def test_presence_update_reaches_subscribers_only(self):
        """§3 examples 1–2: Juliet's presence update goes to her subscribers."""
        juliet = await self.online("juliet", "balcony")
        romeo = await self.online("romeo", "mobile")
        nurse = await self.online("nurse", "chamber")
        await self.befriend(romeo, juliet, JULIET)
        juliet.send("<presence><status>Moping</status></presence>")
        update = await romeo.wait_for(lambda e: e.name == "presence" and e.status is not None)
        self.assertEqual((update["from"], update["to"], str(update.status)),
                         (f"{JULIET}/balcony", f"{ROMEO}/mobile", "Moping"))
        # The nurse never subscribed: no presence of Juliet's, by any path.
        nurse.send(f"<iq type='get' id='peek' to='{JULIET}'><pubsub xmlns='{NS_PUBSUB}'>"
                   "<items node='presence'/></pubsub></iq>")
        refused = await nurse.wait_for(is_result("peek"))
        self.assertEqual(refused["type"], "error")
        self.assertIn("not-authorized", refused.toXml())
        self.assertEqual([e for e in nurse.stanzas if e.name == "presence" and
                          e.getAttribute("from", "").startswith(JULIET)], [])

    async def test_native_presence_publish_and_mixed_subscribers(self):
        """§3 examples 3–4: a pubsub publish to `presence`; a native subscriber
        gets the XEP's message, a legacy subscriber a presence stanza."""
        juliet = await self.online("juliet", "balcony")
        romeo = await self.online("romeo", "mobile")
        nurse = await self.online("nurse", "chamber")
        # Romeo subscribes the pubsub way, the nurse the legacy way.
        romeo.send(f"<iq type='set' id='sub1' to='{JULIET}'><pubsub xmlns='{NS_PUBSUB}'>"
                   f"<subscribe node='presence' jid='{ROMEO}'/></pubsub></iq>")
        reply = await romeo.wait_for(is_result("sub1"))
        self.assertEqual(reply.pubsub.subscription["subscription"], "pending")
        await juliet.wait_for(is_presence(ROMEO, "subscribe"))
        juliet.send(f"<presence to='{ROMEO}' type='subscribed'/>")
        state = await romeo.wait_for(is_event("presence"))
        self.assertEqual(state.event.subscription["subscription"], "subscribed")
        await self.befriend(nurse, juliet, JULIET)

        juliet.send("<iq type='set' id='pres1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                    "<publish node='presence'><item><presence from='juliet@localhost/balcony' "
                    "xmlns='jabber:client'><status>Moping</status></presence></item></publish></pubsub></iq>")
        result = await juliet.wait_for(is_result("pres1"))
        self.assertEqual(result["type"], "result")
        note = await romeo.wait_for(lambda e: is_event("presence")(e) and e.event.items is not None
                                    and "Moping" in e.toXml())
        self.assertEqual(note["from"], JULIET)
        presence = note.event.items.item.presence
        self.assertEqual((presence.uri, presence["from"], str(presence.status)),
                         ("jabber:client", f"{JULIET}/balcony", "Moping"))
        legacy = await nurse.wait_for(lambda e: e.name == "presence" and e.status is not None
                                      and str(e.status) == "Moping")
        self.assertEqual(legacy["from"], f"{JULIET}/balcony")

    async def test_native_publish_cannot_spoof_the_sender(self):
        juliet = await self.online("juliet", "balcony")
        romeo = await self.online("romeo", "mobile")
        await self.befriend(romeo, juliet, JULIET)
        juliet.send("<iq type='set' id='spoof'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                    "<publish node='presence'><item><presence from='nurse@localhost/chamber' "
                    "xmlns='jabber:client'><status>forged</status></presence></item></publish></pubsub></iq>")
        await juliet.wait_for(is_result("spoof"))
        update = await romeo.wait_for(lambda e: e.name == "presence" and e.status is not None
                                      and str(e.status) == "forged")
        self.assertEqual(update["from"], f"{JULIET}/balcony")

    async def test_unavailable_and_dropped_sessions_retract(self):
        juliet = await self.online("juliet", "balcony")
        romeo = await self.online("romeo", "mobile")
        await self.befriend(romeo, juliet, JULIET)
        await romeo.wait_for(is_presence(f"{JULIET}/balcony"))  # her presence, once approved
        juliet.send("<presence type='unavailable'/>")
        gone = await romeo.wait_for(is_presence(f"{JULIET}/balcony", "unavailable"))
        self.assertEqual(gone["to"], f"{ROMEO}/mobile")
        self.assertEqual((await self.server.storage.page_items(JULIET, "presence")).count, 0)
        juliet.send("<presence/>")
        await romeo.wait_for(is_presence(f"{JULIET}/balcony"))
        juliet.transport.loseConnection()
        await romeo.wait_for(is_presence(f"{JULIET}/balcony", "unavailable"))

    async def test_initial_presence_probe_and_own_resources(self):
        juliet = await self.online("juliet", "balcony")
        romeo = await self.online("romeo", "mobile")
        await self.befriend(romeo, juliet, JULIET)
        juliet.send("<presence><show>away</show></presence>")
        await romeo.wait_for(lambda e: e.name == "presence" and e.show is not None)  # stored
        # Romeo's second device comes online: it is told Juliet's current presence
        # (answered from the node's items) and about Romeo's other resource.
        laptop = await self.online("romeo", "laptop", presence=None)
        laptop.send("<presence/>")
        probe = await laptop.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{JULIET}/balcony")
        self.assertEqual(str(probe.show), "away")
        await laptop.wait_for(is_presence(f"{ROMEO}/mobile"))
        await romeo.wait_for(is_presence(f"{ROMEO}/laptop"))

    async def test_directed_presence_gets_unavailable_on_logout(self):
        juliet = await self.online("juliet", "balcony")
        nurse = await self.online("nurse", "chamber")
        juliet.send(f"<presence to='{NURSE}/chamber'><status>psst</status></presence>")
        await nurse.wait_for(lambda e: e.name == "presence" and e.status is not None)
        juliet.transport.loseConnection()
        await nurse.wait_for(is_presence(f"{JULIET}/balcony", "unavailable"))


class XEP0207Subscriptions(PresenceTestCase):
    async def test_legacy_subscription_request_and_approval(self):
        """§4 examples 1–4."""
        juliet = await self.online("juliet", "balcony")
        bard = await self.online("bard", "globe")
        bard.send(f"<presence to='{JULIET}' type='subscribe'/>")
        request = await juliet.wait_for(is_presence(BARD, "subscribe"))
        self.assertEqual(request["to"], f"{JULIET}/balcony")
        ask = await bard.wait_for(is_push(JULIET))
        self.assertEqual((ask.query.item["subscription"], ask.query.item["ask"]), ("none", "subscribe"))
        juliet.send(f"<presence to='{BARD}' type='subscribed'/>")
        push = await juliet.wait_for(is_push(BARD))
        self.assertEqual(push.query.item["subscription"], "from")
        approved = await bard.wait_for(is_presence(JULIET, "subscribed"))
        self.assertEqual(approved["to"], f"{BARD}/globe")
        self.assertEqual((await self.roster(bard))[JULIET][:2], ("to", None))
        self.assertEqual((await self.roster(juliet))[BARD][:2], ("from", None))

    async def test_pubsub_subscription_request_and_form_approval(self):
        """§4 examples 5–7: the XEP's own syntax end to end."""
        juliet = await self.online("juliet", "balcony",
                                   presence="<presence><c xmlns='http://jabber.org/protocol/caps' "
                                            "hash='sha-1' node='x' ver='unknown'/></presence>")
        # Juliet uses XEP-0060 on `presence`: she speaks pubsub for it from now on.
        juliet.send("<iq type='set' id='pres1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                    "<publish node='presence'><item><presence xmlns='jabber:client'/></item></publish></pubsub></iq>")
        await juliet.wait_for(is_result("pres1"))
        bard = await self.online("bard", "globe")
        bard.send(f"<iq type='set' to='{JULIET}' id='sub1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                  f"<subscribe node='presence' jid='{BARD}'/></pubsub></iq>")
        await bard.wait_for(is_result("sub1"))
        form = await juliet.wait_for(lambda e: e.name == "message" and e.x is not None)
        fields = {f["var"]: str(f.value) for f in form.x.elements() if f.name == "field"}
        self.assertEqual(fields["FORM_TYPE"], "http://jabber.org/protocol/pubsub#subscribe_authorization")
        self.assertEqual(fields["pubsub#node"], "presence")
        self.assertEqual(fields["pubsub#subscriber_jid"], BARD)
        self.assertEqual(fields["pubsub#allow"], "false")
        self.assertEqual(form["to"], f"{JULIET}/balcony")
        juliet.send(f"<message to='{DOMAIN}' id='{form['id']}'><x xmlns='jabber:x:data' type='submit'>"
                    "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#subscribe_authorization</value></field>"
                    "<field var='pubsub#node'><value>presence</value></field>"
                    f"<field var='pubsub#subscriber_jid'><value>{BARD}</value></field>"
                    "<field var='pubsub#allow'><value>true</value></field></x></message>")
        push = await juliet.wait_for(is_push(BARD))
        self.assertEqual(push.query.item["subscription"], "from")
        state = await bard.wait_for(is_event("presence"))
        self.assertEqual(state.event.subscription["subscription"], "subscribed")
        self.assertEqual((await self.roster(bard))[JULIET][0], "to")

    async def test_mutual_subscription_is_both(self):
        juliet = await self.online("juliet", "balcony")
        romeo = await self.online("romeo", "mobile")
        await self.befriend(romeo, juliet, JULIET)
        await self.befriend(juliet, romeo, ROMEO)
        self.assertEqual((await self.roster(juliet))[ROMEO][0], "both")
        self.assertEqual((await self.roster(romeo))[JULIET][0], "both")

    async def test_pre_approval(self):
        juliet = await self.online("juliet", "balcony")
        juliet.send(f"<presence to='{ROMEO}' type='subscribed'/>")
        push = await juliet.wait_for(is_push(ROMEO))
        self.assertEqual(push.query.item.getAttribute("approved"), "true")
        romeo = await self.online("romeo", "mobile")
        romeo.send(f"<presence to='{JULIET}' type='subscribe'/>")
        await romeo.wait_for(is_presence(JULIET, "subscribed"))
        await romeo.wait_for(is_presence(f"{JULIET}/balcony"))  # her current presence follows
        self.assertEqual([e for e in juliet.unconsumed("presence") if e.getAttribute("type") == "subscribe"], [])
        self.assertEqual((await self.roster(juliet))[ROMEO][0], "from")

    async def test_a_request_and_an_approval_that_cross(self):
        """Romeo's request and Juliet's 'subscribed' sent at once: whichever the
        server handles first, he ends up subscribed and sees her (each handler
        reading that the other had not happened yet left a request pending and
        a pre-approval stored, forever)."""
        for attempt in range(8):
            juliet = await self.online("juliet", f"balcony{attempt}", presence=None)
            romeo = await self.online("romeo", f"mobile{attempt}")
            romeo.send(f"<presence to='{JULIET}' type='subscribe'/>")
            juliet.send(f"<presence/><presence to='{ROMEO}' type='subscribed'/>")
            await romeo.wait_for(is_presence(JULIET, "subscribed"))
            await romeo.wait_for(is_presence(f"{JULIET}/balcony{attempt}"))
            self.assertEqual((await self.roster(juliet))[ROMEO][:2], ("from", None))
            self.assertEqual((await self.roster(romeo))[JULIET][:2], ("to", None))
            # Back to strangers for the next attempt.
            romeo.send(f"<presence to='{JULIET}' type='unsubscribe'/>")
            await juliet.wait_for(is_presence(ROMEO, "unsubscribe"))
            for client in (juliet, romeo):
                client.send("</stream:stream>")
                await client.closed

    async def test_unsubscribe_and_unsubscribed(self):
        juliet = await self.online("juliet", "balcony")
        romeo = await self.online("romeo", "mobile")
        await self.befriend(romeo, juliet, JULIET)
        romeo.send(f"<presence to='{JULIET}' type='unsubscribe'/>")
        await juliet.wait_for(is_presence(ROMEO, "unsubscribe"))
        await romeo.wait_for(is_presence(f"{JULIET}/balcony", "unavailable"))
        self.assertEqual((await self.roster(romeo))[JULIET][0], "none")
        await self.befriend(romeo, juliet, JULIET)
        juliet.send(f"<presence to='{ROMEO}' type='unsubscribed'/>")
        await romeo.wait_for(is_presence(JULIET, "unsubscribed"))
        await romeo.wait_for(is_presence(f"{JULIET}/balcony", "unavailable"))
        self.assertEqual((await self.roster(juliet))[ROMEO][0], "none")
        juliet.send("<presence><status>after</status></presence>")
        await juliet.wait_for(lambda e: e.name == "presence" and e.status is not None)
        self.assertEqual([e for e in romeo.unconsumed("presence") if e.status is not None], [])

    async def test_denied_request(self):
        juliet = await self.online("juliet", "balcony")
        romeo = await self.online("romeo", "mobile")
        romeo.send(f"<presence to='{JULIET}' type='subscribe'/>")
        await juliet.wait_for(is_presence(ROMEO, "subscribe"))
        juliet.send(f"<presence to='{ROMEO}' type='unsubscribed'/>")
        await romeo.wait_for(is_presence(JULIET, "unsubscribed"))
        self.assertIsNone(await self.server.storage.get_subscription(JULIET, "presence", ROMEO))

    async def test_request_to_offline_contact_waits_for_login(self):
        romeo = await self.online("romeo", "mobile")
        romeo.send(f"<presence to='{JULIET}' type='subscribe'/>")
        await romeo.wait_for(is_push(JULIET))
        juliet = await self.online("juliet", "balcony", presence=None)
        juliet.send("<presence/>")
        request = await juliet.wait_for(is_presence(ROMEO, "subscribe"))
        self.assertEqual(request["to"], f"{JULIET}/balcony")

    async def test_pushes_reach_every_interested_resource(self):
        juliet = await self.online("juliet", "balcony")
        other = await self.online("juliet", "garden")
        quiet = await self.online("juliet", "tomb", roster=False)
        juliet.send("<iq type='set' id='set1'><query xmlns='jabber:iq:roster'>"
                    f"<item jid='{ROMEO}' name='Romeo'><group>Montagues</group></item></query></iq>")
        await juliet.wait_for(is_result("set1"))
        for client in (juliet, other):
            push = await client.wait_for(is_push(ROMEO))
            self.assertEqual((push.query.item["name"], str(push.query.item.group)), ("Romeo", "Montagues"))
        self.assertEqual([e for e in quiet.stanzas if is_push(ROMEO)(e)], [])

    async def test_roster_set_get_and_remove(self):
        juliet = await self.online("juliet", "balcony")
        romeo = await self.online("romeo", "mobile")
        await self.befriend(romeo, juliet, JULIET)
        await self.befriend(juliet, romeo, ROMEO)
        juliet.send("<iq type='set' id='set1'><query xmlns='jabber:iq:roster'>"
                    f"<item jid='{ROMEO}' name='R'><group>Friends</group><group>Lovers</group></item></query></iq>")
        await juliet.wait_for(is_result("set1"))
        self.assertEqual((await self.roster(juliet))[ROMEO], ("both", None, "R", ["Friends", "Lovers"]))
        juliet.send(f"<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='{ROMEO}' "
                    "subscription='remove'/></query></iq>")
        await juliet.wait_for(is_result("rm"))
        removed = await juliet.wait_for(lambda e: is_push(ROMEO)(e) and e.query.item.getAttribute("subscription") == "remove")
        self.assertEqual(removed["to"], juliet.jid)
        self.assertNotIn(ROMEO, await self.roster(juliet))
        self.assertEqual((await self.roster(romeo))[JULIET][0], "none")
        await romeo.wait_for(is_presence(JULIET, "unsubscribed"))

    async def test_roster_versioning(self):
        juliet = await self.online("juliet", "balcony")
        juliet.send("<iq type='get' id='v1'><query xmlns='jabber:iq:roster' ver=''/></iq>")
        first = await juliet.wait_for(is_result("v1"))
        ver = first.query["ver"]
        juliet.send(f"<iq type='get' id='v2'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>")
        unchanged = await juliet.wait_for(is_result("v2"))
        self.assertIsNone(unchanged.query)


class SubscriptionErrors(PresenceTestCase):
    async def test_errors_and_abuse(self):
        juliet = await self.online("juliet", "balcony")
        juliet.send(f"<presence to='ghost@{DOMAIN}' type='subscribe'/>")
        await juliet.wait_for(is_presence(f"ghost@{DOMAIN}", "unsubscribed"))
        juliet.send(f"<presence to='{JULIET}' type='subscribe' id='self'/>")
        error = await juliet.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "error")
        self.assertIn("<bad-request", error.toXml())
        juliet.send("<iq type='set' id='two'><query xmlns='jabber:iq:roster'>"
                    f"<item jid='{ROMEO}'/><item jid='{BARD}'/></query></iq>")
        self.assertEqual((await juliet.wait_for(is_result("two")))["type"], "error")
        for bad, stanza_id in ((f"<item jid='{ROMEO}'><group>a</group><group>a</group></item>", "dup"),
                               (f"<item jid='{ROMEO}'><group></group></item>", "empty"),
                               ("<item jid='@@'/>", "badjid"),
                               (f"<item jid='{ROMEO}/res'/>", "full")):
            juliet.send(f"<iq type='set' id='{stanza_id}'><query xmlns='jabber:iq:roster'>{bad}</query></iq>")
            reply = await juliet.wait_for(is_result(stanza_id))
            self.assertEqual(reply["type"], "error", stanza_id)
        self.assertEqual(await self.roster(juliet), {})

    async def test_flood_of_requests_is_limited(self):
        presence = self.server.engine.kind_of(JULIET, "presence")  # (the cap is the kind's, both doors)
        presence.max_pending = 2
        romeo = await self.online("romeo", "mobile")
        for contact in (JULIET, BARD):
            romeo.send(f"<presence to='{contact}' type='subscribe'/>")
            await romeo.wait_for(is_push(contact))
        romeo.send(f"<presence to='{NURSE}' type='subscribe'/>")
        error = await romeo.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "error")
        self.assertIn("policy-violation", error.toXml())
        self.assertIsNone(await self.server.storage.get_subscription(NURSE, "presence", ROMEO))




class SubscriptionsOnPostgreSQL(XEP0207Subscriptions):
    storage = "postgresql"


class PresenceOnSQLite(XEP0207Presence):
    storage = "sqlite"
