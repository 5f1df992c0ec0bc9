"""Issue 11, streams, presence and messages: RFC 6120/6121, XEP-0030 and XEP-0359
clauses that real clients rely on, each tried stanza by stanza over a real socket.

One class per numbered item of the issue (rooms are in test_protocol_rooms.py).
A test here fails until its item is fixed; the docstrings quote the clause.
"""

import base64
import hashlib
from xml.sax.saxutils import quoteattr

from tests.server_helpers import open_item
from tests.doors_helpers import (
    ALICE,
    BOB,
    CHAT,
    DOMAIN,
    NS_MAM,
    NS_ROSTER,
    PUBSUB,
    DoorsTestCase,
    chat_body,
    error_of,
    message_with,
)

NS_INFO = "http://jabber.org/protocol/disco#info"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_SID = "urn:xmpp:sid:0"
NS_XML = "http://www.w3.org/XML/1998/namespace"
NS_PARS = "urn:xmpp:pars:0"
NS_NICK = "http://jabber.org/protocol/nick"


def presence_from(user: str, type=None):
    return lambda e: (e.name == "presence" and e.getAttribute("from", "").split("/")[0] == user
                      and e.getAttribute("type") == type)


def roster_push(contact: str, **attributes):
    def match(e):
        if e.name != "iq" or e.getAttribute("type") != "set" or e.query is None or e.query.uri != NS_ROSTER:
            return False
        item = e.query.item
        return (item is not None and item.getAttribute("jid") == contact
                and all(item.getAttribute(k) == v for k, v in attributes.items()))
    return match


def children(element, uri: str, name: str) -> list:
    return [c for c in element.elements() if c.uri == uri and c.name == name]


class ProtocolTestCase(DoorsTestCase):
    async def befriend(self, alice, bob) -> None:
        """bob subscribes to alice's presence and she approves (RFC 6121 §3.1)."""
        bob.send(f"<presence to='{ALICE}' type='subscribe'/>")
        await alice.wait_for(presence_from(BOB, "subscribe"))
        alice.send(f"<presence to='{BOB}' type='subscribed'/>")
        await bob.wait_for(presence_from(ALICE, "subscribed"))
        await self.settle(alice, bob)

    async def features(self, client, to: str) -> list[str]:
        reply = self.assert_ok(await self.iq(client, "get", to, f"<query xmlns='{NS_INFO}'/>"))
        return [f["var"] for f in reply.query.elements() if f.name == "feature"]


class StreamOrder(ProtocolTestCase):
    """RFC 6120 §10.1: stanzas on one input stream are processed in order;
    "If the server's processing of a particular request could have an effect
    on its processing of subsequent data it might receive over that input
    stream ..., it MUST suspend processing of subsequent data until it has
    processed the request." A read after a write on the same stream sees the
    write. Issue item 1 (fails on SQLite, whose writes yield; the memory
    backend passes)."""

    async def test_mam_query_sees_the_message_sent_just_before(self):
        alice = await self.online("alice", "phone")
        await self.online("bob", "desk")
        await self.message_then_mam(alice)

    async def test_same_with_the_contact_offline(self):
        """The issue's case: juliet is not online (the message waits for her)."""
        await self.message_then_mam(await self.online("alice", "phone"))

    async def message_then_mam(self, alice):
        alice.send(f"<message to='{BOB}' type='chat' id='m1'><body>first</body></message>"
                   f"<iq type='set' id='q1'><query xmlns='{NS_MAM}' queryid='x'/></iq>")
        reply = self.assert_ok(await alice.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == "q1"))
        count = next(reply.fin.elements("http://jabber.org/protocol/rsm", "set")).count
        self.assertEqual(str(count), "1", reply.toXml())
        results = [e for e in alice.stanzas if e.name == "message" and e.result is not None]
        self.assertEqual([str(r.result.forwarded.message.body) for r in results], ["first"])

    async def test_items_sees_the_item_published_just_before(self):
        """XEP-0060 over one stream: publish then items, written together."""
        alice = await self.online("alice", "phone")
        self.assert_ok(await self.create(alice, PUBSUB, "ordered"))
        alice.send(f"<iq type='set' id='pub' to='{PUBSUB}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                   "<publish node='ordered'><item id='one'><entry xmlns='urn:example'>1</entry></item>"
                   "</publish></pubsub></iq>"
                   f"<iq type='get' id='get' to='{PUBSUB}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                   "<items node='ordered'/></pubsub></iq>")
        self.assert_ok(await alice.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == "pub"))
        items = self.assert_ok(await alice.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == "get"))
        self.assertEqual(self.item_ids(items), ["one"])


class BoundResourceWithoutPresence(ProtocolTestCase):
    """RFC 6121 §8.5.3.1: "If an available resource or connected resource
    exactly matches the full JID ... For a message stanza, the server MUST
    deliver the stanza to that connected resource." A connected resource is
    one that has bound, presence or not (RFC 6120 §7.1). Issue item 6."""

    async def test_message_to_the_full_jid_is_delivered(self):
        alice = await self.online("alice", "phone")
        bot = await self.online("bob", "bot", presence=False)
        self.chat(alice, bot.jid, "for the bot")
        await bot.wait_for(chat_body("for the bot"), timeout=5)

    async def test_delivered_once_presence_follows_at_the_latest(self):
        alice = await self.online("alice", "phone")
        bot = await self.online("bob", "bot", presence=False)
        self.chat(alice, bot.jid, "late")
        await self.settle(alice, bot)
        bot.send("<presence/>")
        await bot.wait_for(chat_body("late"), timeout=5)
        await self.settle(bot)
        self.assertEqual(len([e for e in bot.stanzas if chat_body("late")(e)]), 1)


class SubscriptionExtensions(ProtocolTestCase):
    """RFC 6121 §3.1.3: the contact's server "MUST deliver the request to all
    available resources" (and §3.1.3 bullet 2, offline: "MUST deliver the
    request when the contact next becomes available"); the request is the
    stanza the user sent, extensions included (XEP-0379 preauth, XEP-0172
    nick, XEP-0115 caps ride on it). Issue item 7."""

    REQUEST = (f"<presence to='{BOB}' type='subscribe'><preauth xmlns='{NS_PARS}' token='t0k3n'/>"
               f"<nick xmlns='{NS_NICK}'>Alice A.</nick>"
               f"<c xmlns='{NS_CAPS}' hash='sha-1' node='http://client' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>"
               "</presence>")

    def assert_extensions(self, request):
        self.assertEqual([c["token"] for c in children(request, NS_PARS, "preauth")], ["t0k3n"], request.toXml())
        self.assertEqual([str(c) for c in children(request, NS_NICK, "nick")], ["Alice A."], request.toXml())
        self.assertEqual(len(children(request, NS_CAPS, "c")), 1, request.toXml())

    async def test_online_contact_gets_the_extensions(self):
        bob = await self.online("bob", "desk")
        await self.roster(bob)
        alice = await self.online("alice", "phone")
        alice.send(self.REQUEST)
        self.assert_extensions(await bob.wait_for(presence_from(ALICE, "subscribe")))

    async def test_offline_contact_gets_the_extensions(self):
        alice = await self.online("alice", "phone")
        alice.send(self.REQUEST)
        await self.settle(alice)
        bob = await self.online("bob", "desk")
        self.assert_extensions(await bob.wait_for(presence_from(ALICE, "subscribe")))


class UnavailableStatus(ProtocolTestCase):
    """RFC 6121 §4.5.2: "the user's server MUST broadcast the unavailable
    presence stanza to the full JIDs of all of the contacts who are subscribed"
    and §4.5.2 "to all of the user's available resources" — the stanza,
    including its <status/> (§4.5.1: "MAY contain a <status/> element").
    Issue item 8."""

    async def test_contacts_and_own_resources_see_the_status(self):
        alice = await self.online("alice", "phone")
        laptop = await self.online("alice", "laptop")
        bob = await self.online("bob", "desk")
        await self.befriend(alice, bob)
        alice.send("<presence type='unavailable'><status>gone to bed</status></presence>")
        for client in (bob, laptop):
            gone = await client.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "unavailable"
                                         and e.getAttribute("from") == f"{ALICE}/phone")
            self.assertEqual(str(gone.status) if gone.status is not None else None, "gone to bed", gone.toXml())


class DiscoInfo(ProtocolTestCase):
    """XEP-0030 §3.1: "every entity MUST support at least the
    'http://jabber.org/protocol/disco#info' feature" (so lists it); a
    feature listed twice is noise clients choke on (XEP-0115 §5.4 refuses
    such a disco#info for caps). Issue item 9."""

    async def test_every_entity_lists_disco_info(self):
        alice = await self.online("alice", "phone")
        for entity in (DOMAIN, ALICE, CHAT, PUBSUB):
            with self.subTest(entity=entity):
                self.assertIn(NS_INFO, await self.features(alice, entity))

    async def test_no_feature_twice(self):
        alice = await self.online("alice", "phone")
        for entity in (DOMAIN, ALICE, CHAT, PUBSUB):
            features = await self.features(alice, entity)
            self.assertEqual(sorted(set(features)), sorted(features), entity)

    async def test_server_advertises_mam(self):
        """The issue's reading, not XEP-0313's: "it MUST advertise the
        'urn:xmpp:mam:2' ... features in response to XEP-0030 requests made to
        archiving JIDs (i.e. JIDs hosting an archive, such as users' bare
        JIDs)" ('Determining support'). The server's JID hosts no archive;
        Profanity asks it anyway, so advertising both is for interop."""
        alice = await self.online("alice", "phone")
        self.assertIn(NS_MAM, await self.features(alice, ALICE))
        self.assertIn(NS_MAM, await self.features(alice, DOMAIN))


class PreApprovedAskPush(ProtocolTestCase):
    """RFC 6121 §3.1.2: on an outbound subscribe the user's server "MUST send a
    roster push to all of the user's interested resources, containing the
    potential contact with a subscription state of 'none' and with notation
    that the subscription is pending (via an 'ask' attribute whose value is
    'subscribe')" — before the contact's server answers, pre-approved or not
    (§3.4 only changes the contact's side). Issue item 10."""

    async def test_ask_push_then_subscription_to(self):
        bob = await self.online("bob", "desk")
        await self.roster(bob)
        bob.send(f"<presence to='{ALICE}' type='subscribed'/>")  # pre-approval (§3.4)
        await self.settle(bob)
        alice = await self.online("alice", "phone")
        await self.roster(alice)
        alice.send(f"<presence to='{BOB}' type='subscribe'/>")
        asked = await alice.wait_for(roster_push(BOB, ask="subscribe"), timeout=5)
        self.assertIn(asked.query.item.getAttribute("subscription", "none"), ("none",))
        to = await alice.wait_for(roster_push(BOB, subscription="to"))
        self.assertLess(alice.stanzas.index(asked), alice.stanzas.index(to))


class UnsubscribeThroughPubsub(ProtocolTestCase):
    """RFC 6121 §3.3: a contact's unsubscribe reaches the user as
    <presence type='unsubscribe'/> (§3.3.2: "the user's server MUST ... deliver
    the unsubscribe stanza to all of the user's available resources"); the
    two doors make an XEP-0060 unsubscribe from a presence node the same
    change. Issue item 11."""

    async def test_legacy_owner_sees_unsubscribe(self):
        alice = await self.online("alice", "phone")
        await self.roster(alice)
        bob = await self.online("bob", "native")
        self.assert_ok(await self.subscribe(bob, ALICE, "presence", jid=BOB))
        await alice.wait_for(presence_from(BOB, "subscribe"))
        alice.send(f"<presence to='{BOB}' type='subscribed'/>")
        await self.settle(alice, bob)
        self.assert_ok(await self.pubsub(bob, "set", ALICE, f"<unsubscribe node='presence' jid='{BOB}'/>"))
        await alice.wait_for(presence_from(BOB, "unsubscribe"), timeout=5)


class IqNits(ProtocolTestCase):
    """RFC 6120 §8.1.3 "the 'id' attribute is REQUIRED for IQ stanzas";
    §8.2.3 "The 'type' attribute is REQUIRED for IQ stanzas. The value MUST be
    one of: get, set, result, error" and "An IQ stanza of type 'get' or 'set'
    MUST contain exactly one child element"; §8.3.3.1 <bad-request/>: "a stanza
    containing XML that does not conform to the appropriate schema ... (e.g.,
    an IQ stanza that includes an unrecognized value of the 'type'
    attribute...)". RFC 7622 §3.3.1/§3.4.1: localpart and resourcepart "MUST
    NOT be more than 1023 octets"; §3.2: a trailing dot "MUST be stripped from
    the domainpart before the JID ... is used for the purpose of routing".
    Issue item 13."""

    def replies_to(self, client, stanza_id):
        return [e for e in client.stanzas if e.name == "iq" and e.getAttribute("id") == stanza_id]

    async def test_iq_without_id_is_bad_request(self):
        alice = await self.online("alice", "phone")
        since = len(alice.stanzas)
        alice.send(f"<iq type='get' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self.settle(alice)
        answers = [e for e in alice.stanzas[since:] if e.name == "iq" and not e.hasAttribute("id")]
        self.assertEqual([error_of(e)[0] for e in answers], ["bad-request"], [e.toXml() for e in answers])

    async def test_iq_with_two_children_gets_one_error(self):
        alice = await self.online("alice", "phone")
        alice.send(f"<iq type='get' id='two' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/>"
                   "<query xmlns='jabber:iq:version'/></iq>")
        await self.settle(alice)
        answers = self.replies_to(alice, "two")
        self.assertEqual([(e["type"], error_of(e)[0]) for e in answers], [("error", "bad-request")],
                         [e.toXml() for e in answers])

    async def test_unknown_iq_type_is_bad_request(self):
        alice = await self.online("alice", "phone")
        alice.send(f"<iq type='foo' id='foo' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        reply = await alice.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == "foo", timeout=5)
        self.assert_error(reply, "bad-request")
        await self.ping(alice)  # the session survives a stanza error

    async def bind(self, resource: str) -> str:
        """The raw answer to a bind request for ``resource``."""
        client = await self.connect()
        await client.authenticate("alice")
        mark = len(client.received)
        client.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                    f"<resource>{resource}</resource></bind></iq>")
        await client.expect("</iq>")
        return client.received[mark:].decode()

    async def test_resource_of_1024_octets_is_refused(self):
        self.assertIn("type='result'", await self.bind("r" * 1023))
        refused = await self.bind("r" * 1024)
        self.assertIn("type='error'", refused)
        self.assertIn("<bad-request", refused)

    async def test_localpart_of_1024_octets_is_malformed(self):
        alice = await self.online("alice", "phone")
        long_reply = await self.iq(alice, "get", f"{'l' * 1024}@{DOMAIN}", "<ping xmlns='urn:xmpp:ping'/>")
        self.assert_error(long_reply, "jid-malformed")
        ok_reply = await self.iq(alice, "get", f"{'l' * 1023}@{DOMAIN}", "<ping xmlns='urn:xmpp:ping'/>")
        self.assertNotEqual(error_of(ok_reply)[0], "jid-malformed", ok_reply.toXml())

    async def test_trailing_dot_domain_is_the_domain(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.chat(alice, f"bob@{DOMAIN}.", "dotted")
        got = await bob.wait_for(chat_body("dotted"), timeout=5)
        self.assertEqual(got["from"], f"{ALICE}/phone")
        self.assert_ok(await self.iq(alice, "get", f"{DOMAIN}.", "<ping xmlns='urn:xmpp:ping'/>"))


class StanzaIds(ProtocolTestCase):
    """XEP-0313 (Archives, "When a message is archived, the server MUST add an
    <stanza-id/> element as defined in XEP-0359 ... The 'by' attribute MUST be
    set to the address of the archive. For regular users that's the bare JID
    of the account"); XEP-0359 §4: the creator "puts its own XMPP address as
    value of the 'by' attribute"; the MAM result id is that stanza ID. RFC 6120 §4.7.4: a stanza without
    xml:lang inherits the stream's, and a server "MUST NOT modify or delete"
    it when routing. Issue item 14."""

    async def test_live_stanza_id_is_the_archive_id(self):
        alice = await self.online("alice", "phone")
        bob = await self.online("bob", "desk")
        self.chat(alice, BOB, "keep me")
        live = await bob.wait_for(chat_body("keep me"))
        ids = [(s.getAttribute("by"), s.getAttribute("id")) for s in children(live, NS_SID, "stanza-id")]
        self.assertEqual(len(ids), 1, live.toXml())
        by, stanza_id = ids[0]
        self.assertEqual(by, BOB)
        reply = self.assert_ok(await self.iq(bob, "set", None, f"<query xmlns='{NS_MAM}' queryid='s'/>"))
        self.assertIsNotNone(reply)
        result = next(e for e in bob.stanzas if e.name == "message" and e.result is not None
                      and "keep me" in e.toXml())
        self.assertEqual(result.result["id"], stanza_id)

    async def test_stanza_xml_lang_is_archived(self):
        alice = await self.online("alice", "phone")
        await self.online("bob", "desk")
        alice.send(f"<message to='{BOB}' type='chat' xml:lang='fr'><body>bonjour</body></message>")
        await self.settle(alice)
        self.assertEqual(await self.archived_lang(alice, "bonjour"), "fr")

    async def test_stream_xml_lang_is_archived(self):
        client = await self.connect()
        header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xml:lang='de' "
                  f"xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>")
        from tests.server_helpers import plain_auth
        client.send(header)
        await client.expect("</stream:features>")
        client.send(plain_auth("alice"))
        await client.expect("<success")
        client.send(header)
        await client.expect("</stream:features>")
        client.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                    "<resource>de</resource></bind></iq>")
        await client.expect("</bind></iq>")
        client.jid = f"{ALICE}/de"
        client.start_parsing(client.received[client._cursor:])
        await self.online("bob", "desk")
        self.chat(client, BOB, "guten Tag")
        await self.settle(client)
        self.assertEqual(await self.archived_lang(client, "guten Tag"), "de")

    async def archived_lang(self, client, body: str):
        self.assert_ok(await self.iq(client, "set", None, f"<query xmlns='{NS_MAM}' queryid='lang'/>"))
        result = next(e for e in client.stanzas if e.name == "message" and e.result is not None
                      and body in e.toXml())
        return result.result.forwarded.message.attributes.get((NS_XML, "lang"))


class ConcurrentUnknownCaps(ProtocolTestCase):
    """Issue item 16, last nit (XEP-0115 §6.2/§8.4): two sessions presenting
    the same unknown ``ver`` at once must both end up with its features, here
    a +notify interest (XEP-0163 §4)."""

    IDENTITY = "<identity category='client' type='pc' name='T'/>"

    def ver(self) -> str:
        text = f"client/pc//T<{NS_INFO}<tune+notify<"
        return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()

    async def test_both_sessions_learn_the_caps(self):
        laptop = await self.online("alice", "laptop", presence=False)
        tablet = await self.online("alice", "tablet", presence=False)
        caps = f"<presence><c xmlns='{NS_CAPS}' hash='sha-1' node='http://client' ver='{self.ver()}'/></presence>"
        laptop.send(caps)
        tablet.send(caps)
        await self.settle(laptop, tablet)
        for client in (laptop, tablet):
            for ask in [e for e in client.stanzas if e.name == "iq" and e.getAttribute("type") == "get"
                        and e.query is not None and e.query.uri == NS_INFO]:
                client.send(f"<iq type='result' id={quoteattr(ask['id'])} to={quoteattr(ask['from'])}>"
                            f"<query xmlns='{NS_INFO}' node={quoteattr(ask.query.getAttribute('node', ''))}>"
                            f"{self.IDENTITY}<feature var='{NS_INFO}'/><feature var='tune+notify'/></query></iq>")
        await self.settle(laptop, tablet)
        phone = await self.online("alice", "phone")
        self.assert_ok(await self.publish(phone, ALICE, "tune", "<tune xmlns='urn:example'>song</tune>"))
        for client in (laptop, tablet):
            await client.wait_for(message_with("song"), timeout=5)


class StreamOrderOnSQLite(StreamOrder):
    storage = "sqlite"
