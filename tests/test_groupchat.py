"""XEP-0045 over room nodes, and XEP-0207 §5's native syntax on the same rooms."""


from tests.server_helpers import DOMAIN, ServerTestCase
from tests.test_presence_roster import is_result

CHAT = f"chat.{DOMAIN}"
ROOM = f"characters@{CHAT}"
NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"


def statuses(presence):
    x = next((c for c in presence.elements() if c.name == "x" and c.uri == NS_USER), None)
    return sorted(int(s["code"]) for s in x.elements() if s.name == "status") if x is not None else []


def from_room(nick, type=None):
    return lambda e: (e.name == "presence" and e.getAttribute("from") == f"{ROOM}/{nick}"
                      and e.getAttribute("type") == type)


def groupchat(body):
    return lambda e: e.name == "message" and e.getAttribute("type") == "groupchat" and \
        e.body is not None and str(e.body) == body


def error_presence(e):
    return e.name == "presence" and e.getAttribute("type") == "error"


class RoomTestCase(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")
    users = ("juliet", "romeo", "bard", "iago")

    async def setUp(self):
        await self.start_server()

    async def online(self, user, resource="r"):
        client = await self.connect()
        await client.login(user, resource=resource)
        client.send("<presence/>")
        await client.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == client.jid)
        return client

    async def join(self, client, nick, muc="", expect_ok=True, instant=True):
        """A room it creates (201) it accepts as an instant room, as Gajim,
        Conversations and poezio do (XEP-0045 §10.1.2)."""
        client.send(f"<presence to='{ROOM}/{nick}'><x xmlns='{NS_MUC}'>{muc}</x></presence>")
        if not expect_ok:
            return await client.wait_for(error_presence)
        own = await client.wait_for(lambda e: from_room(nick)(e) and 110 in statuses(e))
        await client.wait_for(lambda e: e.name == "message" and e.subject is not None)
        if instant and 201 in statuses(own):
            client.send(f"<iq type='set' to='{ROOM}' id='instant'><query xmlns='{NS_MUC}#owner'>"
                        "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
            await client.wait_for(is_result("instant"))
        return own

    def say(self, client, body, to=ROOM, type="groupchat"):
        client.send(f"<message to='{to}' type='{type}'><body>{body}</body></message>")

    async def configure(self, owner, **fields):
        values = "".join(f"<field var='muc#roomconfig_{k}'><value>{v}</value></field>" for k, v in fields.items())
        owner.send(f"<iq type='set' to='{ROOM}' id='cfg'><query xmlns='{NS_MUC}#owner'>"
                   "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                   f"<value>{NS_MUC}#roomconfig</value></field>{values}</x></query></iq>")
        return await owner.wait_for(is_result("cfg"))


class Joining(RoomTestCase):
    async def test_create_join_order_and_messages(self):
        juliet = await self.online("juliet")
        own = await self.join(juliet, "JC")
        self.assertEqual(statuses(own), [110, 201])  # semi-anonymous by default: no 100
        romeo = await self.online("romeo")
        romeo.send(f"<presence to='{ROOM}/Romeo'><x xmlns='{NS_MUC}'/></presence>")
        # The occupant list first, then its own presence, then the subject (no history yet).
        first = await romeo.wait_for(lambda e: e.name == "presence" and e.getAttribute("from", "").startswith(ROOM))
        self.assertEqual(first["from"], f"{ROOM}/JC")
        second = await romeo.wait_for(lambda e: e.name == "presence" and e.getAttribute("from", "").startswith(ROOM))
        self.assertEqual((second["from"], statuses(second)), (f"{ROOM}/Romeo", [110]))
        await romeo.wait_for(lambda e: e.name == "message" and e.subject is not None)
        arrival = await juliet.wait_for(from_room("Romeo"))
        self.assertEqual(next(c for c in arrival.elements() if c.name == "x").item["role"], "participant")

        self.say(juliet, "hi")
        for client in (juliet, romeo):  # the sender gets its reflection
            message = await client.wait_for(groupchat("hi"))
            self.assertEqual((message["from"], message["to"]), (f"{ROOM}/JC", client.jid))
        stored = await self.server.storage.page_items(CHAT, "characters")
        self.assertEqual(stored.count, 1)

    async def test_nick_conflict_change_and_leave(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        romeo = await self.online("romeo")
        refused = await self.join(romeo, "JC", expect_ok=False)
        self.assertIn("<conflict", refused.toXml())
        await self.join(romeo, "Romeo")
        romeo.send(f"<presence to='{ROOM}/Montague'/>")
        gone = await juliet.wait_for(from_room("Romeo", "unavailable"))
        self.assertEqual(statuses(gone), [303])
        self.assertEqual(next(c for c in gone.elements() if c.name == "x").item["nick"], "Montague")
        await juliet.wait_for(from_room("Montague"))
        romeo.send(f"<presence to='{ROOM}/Montague' type='unavailable'/>")
        left = await romeo.wait_for(from_room("Montague", "unavailable"))
        self.assertEqual(statuses(left), [110])
        await juliet.wait_for(from_room("Montague", "unavailable"))

    async def test_dropped_session_leaves(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        romeo = await self.online("romeo")
        await self.join(romeo, "Romeo")
        romeo.transport.loseConnection()
        await juliet.wait_for(from_room("Romeo", "unavailable"))

    async def test_non_occupant_message_is_not_acceptable(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        iago = await self.online("iago")
        self.say(iago, "sneaky")
        error = await iago.wait_for(lambda e: e.name == "message" and e.getAttribute("type") == "error")
        self.assertIn("not-acceptable", error.toXml())
        self.assertEqual([e for e in juliet.stanzas if "sneaky" in e.toXml()], [])

    async def test_private_message_and_invitation(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        romeo = await self.online("romeo")
        await self.join(romeo, "Romeo")
        juliet.send(f"<message to='{ROOM}/Romeo' type='chat'><body>psst</body></message>")
        private = await romeo.wait_for(lambda e: e.name == "message" and e.body is not None and str(e.body) == "psst")
        self.assertEqual(private["from"], f"{ROOM}/JC")
        bard = await self.online("bard")
        juliet.send(f"<message to='{ROOM}'><x xmlns='{NS_USER}'><invite to='bard@{DOMAIN}'>"
                    "<reason>a play</reason></invite></x></message>")
        invitation = await bard.wait_for(lambda e: e.name == "message" and e.x is not None)
        self.assertEqual(invitation["from"], ROOM)
        # A semi-anonymous room names the inviter by its occupant JID (§7.8.2 allows it).
        self.assertEqual(invitation.x.invite["from"], f"{ROOM}/JC")


class Moderation(RoomTestCase):
    async def test_kick_and_ban(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        iago = await self.online("iago")
        await self.join(iago, "Iago")
        juliet.send(f"<iq type='set' to='{ROOM}' id='kick'><query xmlns='{NS_MUC}#admin'>"
                    "<item nick='Iago' role='none'/></query></iq>")
        await juliet.wait_for(is_result("kick"))
        kicked = await iago.wait_for(from_room("Iago", "unavailable"))
        self.assertEqual(statuses(kicked), [110, 307])
        await self.join(iago, "Iago")
        juliet.send(f"<iq type='set' to='{ROOM}' id='ban'><query xmlns='{NS_MUC}#admin'>"
                    f"<item jid='iago@{DOMAIN}' affiliation='outcast'/></query></iq>")
        await juliet.wait_for(is_result("ban"))
        banned = await iago.wait_for(from_room("Iago", "unavailable"))
        self.assertEqual(statuses(banned), [110, 301])
        refused = await self.join(iago, "Iago", expect_ok=False)
        self.assertIn("<forbidden", refused.toXml())
        juliet.send(f"<iq type='get' to='{ROOM}' id='list'><query xmlns='{NS_MUC}#admin'>"
                    "<item affiliation='outcast'/></query></iq>")
        listing = await juliet.wait_for(is_result("list"))
        self.assertEqual([i["jid"] for i in listing.query.elements()], [f"iago@{DOMAIN}"])
        iago.send(f"<iq type='get' to='{ROOM}' id='peek'><query xmlns='{NS_MUC}#admin'>"
                  "<item affiliation='owner'/></query></iq>")
        self.assertEqual((await iago.wait_for(is_result("peek")))["type"], "error")

    async def test_moderated_room_silences_visitors(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        self.assertEqual((await self.configure(juliet, moderatedroom="1"))["type"], "result")
        romeo = await self.online("romeo")
        await self.join(romeo, "Romeo")
        self.say(romeo, "may I?")
        error = await romeo.wait_for(lambda e: e.name == "message" and e.getAttribute("type") == "error")
        self.assertIn("forbidden", error.toXml())
        juliet.send(f"<iq type='set' to='{ROOM}' id='voice'><query xmlns='{NS_MUC}#admin'>"
                    "<item nick='Romeo' role='participant'/></query></iq>")
        await juliet.wait_for(is_result("voice"))
        self.say(romeo, "thank you")
        await juliet.wait_for(groupchat("thank you"))

    async def test_subject(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        juliet.send(f"<message to='{ROOM}' type='groupchat'><subject>Act II</subject></message>")
        await juliet.wait_for(lambda e: e.name == "message" and e.subject is not None and str(e.subject) == "Act II")
        romeo = await self.online("romeo")
        romeo.send(f"<presence to='{ROOM}/Romeo'><x xmlns='{NS_MUC}'/></presence>")
        subject = await romeo.wait_for(lambda e: e.name == "message" and e.subject is not None)
        self.assertEqual((str(subject.subject), subject["from"]), ("Act II", f"{ROOM}/JC"))
        romeo.send(f"<message to='{ROOM}' type='groupchat'><subject>Mine</subject></message>")
        error = await romeo.wait_for(lambda e: e.name == "message" and e.getAttribute("type") == "error")
        self.assertIn("forbidden", error.toXml())


class EntryRules(RoomTestCase):
    async def test_members_only_password_and_full(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        await self.configure(juliet, membersonly="1", persistentroom="1")
        romeo = await self.online("romeo")
        refused = await self.join(romeo, "Romeo", expect_ok=False)
        self.assertIn("registration-required", refused.toXml())
        juliet.send(f"<iq type='set' to='{ROOM}' id='member'><query xmlns='{NS_MUC}#admin'>"
                    f"<item jid='romeo@{DOMAIN}' affiliation='member'/></query></iq>")
        await juliet.wait_for(is_result("member"))
        await self.join(romeo, "Romeo")
        await self.configure(juliet, membersonly="0", passwordprotectedroom="1", roomsecret="cauldron",
                             maxusers="3")
        bard = await self.online("bard")
        refused = await self.join(bard, "Bard", expect_ok=False)
        self.assertIn("not-authorized", refused.toXml())
        await self.join(bard, "Bard", muc="<password>cauldron</password>")
        iago = await self.online("iago")
        refused = await self.join(iago, "Iago", muc="<password>cauldron</password>", expect_ok=False)
        self.assertIn("service-unavailable", refused.toXml())

    async def test_reserved_room_is_locked_until_configured(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC", instant=False)
        juliet.send(f"<iq type='get' to='{ROOM}' id='form'><query xmlns='{NS_MUC}#owner'/></iq>")
        await juliet.wait_for(is_result("form"))
        romeo = await self.online("romeo")
        refused = await self.join(romeo, "Romeo", expect_ok=False)
        self.assertIn("item-not-found", refused.toXml())
        await self.configure(juliet, roomname="Reserved")
        await self.join(romeo, "Romeo")

    async def test_instant_room_stays_open_when_others_arrive_first(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        romeo = await self.online("romeo")
        await self.join(romeo, "Romeo")
        juliet.send(f"<iq type='get' to='{ROOM}' id='form'><query xmlns='{NS_MUC}#owner'/></iq>")
        await juliet.wait_for(is_result("form"))
        bard = await self.online("bard")
        await self.join(bard, "Bard")  # asking for the form later does not lock anyone out

    async def test_cancelled_initial_configuration_destroys_the_room(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC", instant=False)
        juliet.send(f"<iq type='get' to='{ROOM}' id='form'><query xmlns='{NS_MUC}#owner'/></iq>")
        await juliet.wait_for(is_result("form"))
        juliet.send(f"<iq type='set' to='{ROOM}' id='cancel'><query xmlns='{NS_MUC}#owner'>"
                    "<x xmlns='jabber:x:data' type='cancel'/></query></iq>")
        await juliet.wait_for(is_result("cancel"))
        self.assertIsNone(await self.server.storage.get_node(CHAT, "characters"))

    async def test_config_form_forbidden_to_others_and_destroy(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        romeo = await self.online("romeo")
        await self.join(romeo, "Romeo")
        juliet.send(f"<iq type='get' to='{ROOM}' id='form'><query xmlns='{NS_MUC}#owner'/></iq>")
        form = await juliet.wait_for(is_result("form"))
        self.assertIn("muc#roomconfig_membersonly", form.toXml())
        romeo.send(f"<iq type='get' to='{ROOM}' id='steal'><query xmlns='{NS_MUC}#owner'/></iq>")
        self.assertIn("forbidden", (await romeo.wait_for(is_result("steal"))).toXml())
        juliet.send(f"<iq type='set' to='{ROOM}' id='end'><query xmlns='{NS_MUC}#owner'>"
                    "<destroy><reason>curtain</reason></destroy></query></iq>")
        await juliet.wait_for(is_result("end"))
        told = await romeo.wait_for(from_room("Romeo", "unavailable"))
        self.assertIn("curtain", told.toXml())
        self.assertIsNone(await self.server.storage.get_node(CHAT, "characters"))

    async def test_discovery(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        juliet.send(f"<iq type='get' to='{CHAT}' id='items'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        items = await juliet.wait_for(is_result("items"))
        self.assertEqual([i["jid"] for i in items.query.elements()], [ROOM])
        juliet.send(f"<iq type='get' to='{ROOM}' id='info'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        info = await juliet.wait_for(is_result("info"))
        features = {f["var"] for f in info.query.elements() if f.name == "feature"}
        self.assertTrue({NS_MUC, "muc_open", "muc_temporary", "muc_public"} <= features)


class History(RoomTestCase):
    async def test_history_limits(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        for i in range(4):
            self.say(juliet, f"line {i}")
            await juliet.wait_for(groupchat(f"line {i}"))
        romeo = await self.online("romeo")

        async def history(muc, nick):
            romeo.send(f"<presence to='{ROOM}/{nick}'><x xmlns='{NS_MUC}'>{muc}</x></presence>")
            await romeo.wait_for(lambda e: from_room(nick)(e) and 110 in statuses(e))
            subject = await romeo.wait_for(lambda e: e.name == "message" and e.subject is not None)
            got = [e for e in romeo.stanzas if e.name == "message" and e.body is not None
                   and not getattr(e, "counted", False) and e.delay is not None]
            for e in got:
                e.counted = True
            self.assertTrue(all(romeo.stanzas.index(e) < romeo.stanzas.index(subject) for e in got))
            romeo.send(f"<presence to='{ROOM}/{nick}' type='unavailable'/>")
            await romeo.wait_for(lambda e: from_room(nick, "unavailable")(e))
            return [str(e.body) for e in got]

        self.assertEqual(await history("", "A"), ["line 0", "line 1", "line 2", "line 3"])
        self.assertEqual(await history("<history maxstanzas='2'/>", "B"), ["line 2", "line 3"])
        self.assertEqual(await history("<history maxstanzas='0'/>", "C"), [])
        self.assertEqual(await history("<history since='2999-01-01T00:00:00Z'/>", "D"), [])
        self.assertEqual(await history("<history seconds='3600'/>", "E"), ["line 0", "line 1", "line 2", "line 3"])
        self.assertEqual(len(await history("<history maxchars='400'/>", "F")), 1)


    async def test_a_prefixed_groupchat_message_is_reflected_and_replayed_well_formed(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        juliet.send(f"<c:message xmlns:c='jabber:client' to='{ROOM}' type='groupchat'><c:body>pre</c:body>"
                    "<e:x xmlns:e='urn:example:e'/></c:message>")
        reflected = await juliet.wait_for(groupchat("pre"))
        self.assertEqual([(c.uri, c.name) for c in reflected.elements()][:2],
                         [("jabber:client", "body"), ("urn:example:e", "x")])
        romeo = await self.online("romeo")
        romeo.send(f"<c:presence xmlns:c='jabber:client' to='{ROOM}/Romeo'><m:x xmlns:m='{NS_MUC}'/></c:presence>")
        replayed = await romeo.wait_for(groupchat("pre"))
        self.assertIsNotNone(replayed.delay)
        await romeo.wait_for(lambda e: from_room("Romeo")(e) and 110 in statuses(e))
        self.assertNotIn(b"c:message", juliet.received + romeo.received)


class Persistence(RoomTestCase):
    storage = "sqlite"

    async def test_rooms_affiliations_and_history_survive_a_restart(self):
        juliet = await self.online("juliet")
        await self.join(juliet, "JC")
        await self.configure(juliet, persistentroom="1", roomname="The Globe")
        juliet.send(f"<iq type='set' to='{ROOM}' id='ban'><query xmlns='{NS_MUC}#admin'>"
                    f"<item jid='iago@{DOMAIN}' affiliation='outcast'/></query></iq>")
        await juliet.wait_for(is_result("ban"))
        self.say(juliet, "remember me")
        await juliet.wait_for(groupchat("remember me"))
        await self.restart_server()
        romeo = await self.online("romeo")
        romeo.send(f"<presence to='{ROOM}/Romeo'><x xmlns='{NS_MUC}'/></presence>")
        own = await romeo.wait_for(lambda e: from_room("Romeo")(e) and 110 in statuses(e))
        self.assertEqual(statuses(own), [110])  # not created anew
        await romeo.wait_for(groupchat("remember me"))
        iago = await self.online("iago")
        self.assertIn("<forbidden", (await self.join(iago, "Iago", expect_ok=False)).toXml())


class NativeGroupchat(RoomTestCase):
    async def test_section_5_examples_with_mixed_occupants(self):
        bard = await self.online("bard", "globe")
        await self.join(bard, "Bard")
        juliet = await self.online("juliet", "balcony")
        juliet.send(f"<iq type='set' to='{CHAT}' id='sub2'><pubsub xmlns='{NS_PUBSUB}'>"
                    f"<subscribe node='characters' jid='juliet@{DOMAIN}/balcony'/>"
                    f"<options node='characters' jid='juliet@{DOMAIN}/balcony'><x xmlns='jabber:x:data' type='submit'>"
                    "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#subscribe_options</value></field>"
                    "<field var='roomnick'><value>JC</value></field></x></options></pubsub></iq>")
        self.assertEqual((await juliet.wait_for(is_result("sub2")))["type"], "result")
        await bard.wait_for(from_room("JC"))  # the native occupant appears under its roomnick
        # Legacy message: the native occupant gets the XEP-0207 event, replyto the
        # sender's occupant JID (a semi-anonymous room shows no participant a real JID).
        self.say(bard, "hi from the globe")
        await bard.wait_for(groupchat("hi from the globe"))
        event = await juliet.wait_for(lambda e: e.name == "message" and e.event is not None)
        self.assertEqual(event["from"], CHAT)
        self.assertEqual(event.event.items["node"], "characters")
        self.assertIn("hi from the globe", event.toXml())
        self.assertEqual(event.addresses.address["jid"], f"{ROOM}/Bard")
        # §5 "Groupchat Publish": legacy occupants see an ordinary groupchat message.
        juliet.send(f"<iq from='juliet@{DOMAIN}/balcony' to='{CHAT}' type='set' id='gc1'>"
                    f"<pubsub xmlns='{NS_PUBSUB}'><publish node='characters'><item>"
                    "<message xmlns='jabber:client'><body>hi</body></message></item></publish></pubsub></iq>")
        self.assertEqual((await juliet.wait_for(is_result("gc1")))["type"], "result")
        seen = await bard.wait_for(groupchat("hi"))
        self.assertEqual(seen["from"], f"{ROOM}/JC")
        mine = await juliet.wait_for(lambda e: e.name == "message" and e.event is not None and ">hi<" in e.toXml())
        self.assertEqual(mine.addresses.address["jid"], f"{ROOM}/JC")
        # Leaving: unsubscribe.
        juliet.send(f"<iq type='set' to='{CHAT}' id='unsub'><pubsub xmlns='{NS_PUBSUB}'>"
                    f"<unsubscribe node='characters' jid='juliet@{DOMAIN}/balcony'/></pubsub></iq>")
        await juliet.wait_for(is_result("unsub"))
        await bard.wait_for(from_room("JC", "unavailable"))

    async def test_native_publish_needs_a_roomnick(self):
        bard = await self.online("bard", "globe")
        await self.join(bard, "Bard")
        iago = await self.online("iago", "pda")
        iago.send(f"<iq to='{CHAT}' type='set' id='gc1'><pubsub xmlns='{NS_PUBSUB}'><publish node='characters'>"
                  "<item><message xmlns='jabber:client'><body>lurker</body></message></item></publish></pubsub></iq>")
        self.assertEqual((await iago.wait_for(is_result("gc1")))["type"], "error")
        iago.send(f"<iq to='{CHAT}' type='set' id='mk'><pubsub xmlns='{NS_PUBSUB}'><create node='mine'/></pubsub></iq>")
        self.assertEqual((await iago.wait_for(is_result("mk")))["type"], "error")
        self.assertEqual([e for e in bard.stanzas if "lurker" in e.toXml()], [])


class JoiningOnPostgreSQL(Joining):
    storage = "postgresql"


class ModerationOnPostgreSQL(Moderation):
    storage = "postgresql"
