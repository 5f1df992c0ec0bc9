"""A client stream's input path attacked: what a client writes must reach
others (live, offline, archived) well-formed and with the same meaning, or be
refused with the right error; and what real clients write still works."""

from twisted.trial import unittest

from tests.cluster_helpers import ClusterMixin
from tests.server_helpers import DOMAIN, AliceAndBobOnline, ServerTestCase, quiet_server_stream

NS_STREAMS_ERROR = "urn:ietf:params:xml:ns:xmpp-streams"

# A namespace name closing its own element and the message around it, then
# writing a whole stanza "from" someone else (expat refuses a space in a
# namespace name, not a tab). Twisted's serializer writes namespace names
# unescaped: this used to reach the recipient as a second, forged stanza.
FORGERY = ("'/></message><message\tfrom='boss@localhost'\ttype='chat'\tid='forged'><body>pay</body>"
           "</message><message><x\txmlns='b")


def escaped(text: str) -> str:
    """As an attribute value in double quotes (a tab as a reference: a literal one reads as a space)."""
    for raw, reference in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("\t", "&#9;")):
        text = text.replace(raw, reference)
    return text


class NamespaceNames(AliceAndBobOnline):
    async def assert_refused(self, client, condition: str = "bad-format"):
        data = (await client.closed).decode("utf-8", "replace")
        self.assertIn(f"<{condition} xmlns='{NS_STREAMS_ERROR}'/>", data)
        self.assertTrue(data.endswith("</stream:stream>"))

    async def assert_nothing_forged(self, client):
        client.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        await client.wait_for(lambda e: e.getAttribute("id") == "ping")
        self.assertNotIn(b"forged", client.received)
        self.assertEqual([m.getAttribute("id") for m in client.unconsumed("message")], [])

    async def test_a_namespace_name_cannot_write_a_stanza_live_or_stored(self):
        for to, where in ((f"bob@{DOMAIN}", "element"), (f"carol@{DOMAIN}", "attribute")):
            declaration = f'xmlns="{escaped(FORGERY)}"' if where == "element" else \
                f'xmlns:a="{escaped(FORGERY)}" a:b="1"'
            self.alice.send(f"<message to='{to}' type='chat' id='{where}'><body>hi</body><x {declaration}/>"
                            "</message>")
            await self.assert_refused(self.alice)
            self.alice = await self.connect()
            await self.alice.login("alice")
        await self.assert_nothing_forged(self.bob)
        carol = await self.connect()
        await carol.login("carol")
        carol.send("<presence/>")
        await self.assert_nothing_forged(carol)

    async def test_quotes_ampersands_and_control_characters_in_any_namespace_name_are_refused(self):
        for declaration in ("xmlns=\"urn:a'b\"", "xmlns='urn:a&amp;b'", "xmlns='urn:a&lt;b'", "xmlns='urn:a&#9;b'",
                            "xmlns:p='urn:a&#10;b' p:c='1'", "xmlns:p='urn:a&quot;b'"):
            self.alice.send(f"<message to='bob@{DOMAIN}' id='q'><x {declaration}/></message>")
            await self.assert_refused(self.alice)
            self.alice = await self.connect()
            await self.alice.login("alice")
        await self.assert_nothing_forged(self.bob)
        # what real namespaces look like still passes, prefixed or not
        self.alice.send(f"<message to='bob@{DOMAIN}' id='fine'><x xmlns='urn:xmpp:x:0?a=1#b;c(d)'/>"
                        "<p:y xmlns:p='http://example.com/~u/ns%20x' p:z='1'/></message>")
        got = await self.bob.wait_for(lambda e: e.getAttribute("id") == "fine")
        self.assertEqual([c.uri for c in got.elements()], ["urn:xmpp:x:0?a=1#b;c(d)", "http://example.com/~u/ns%20x"])


class TheWebSocketDoor(ServerTestCase):
    """RFC 7395's door parses with the TCP stream's parser: the same refusals."""

    server_args = ("--no-tls", "--allow-plaintext-auth", "--http-port", "0", "--http-plain",
                   "--http-interfaces", "127.0.0.1")

    async def setUp(self):
        from tests.web_helpers import connect_ws

        await self.start_server()
        self.url = f"ws://127.0.0.1:{self.server.web.port}/xmpp-websocket"
        self.bob = await connect_ws(self, self.url)
        await self.bob.login("bob")
        self.bob.send_text("<presence xmlns='jabber:client'/>")
        await self.bob.wait_for(lambda e: e.name == "presence")
        self.alice = await self.connect()
        await self.alice.login("alice")

    async def test_a_namespace_name_is_refused_through_this_door_too(self):
        from tests.web_helpers import connect_ws

        carol = await connect_ws(self, self.url)
        await carol.login("alice", resource="ws")
        carol.send_text(f"<message xmlns='jabber:client' to='bob@{DOMAIN}' id='f'><x xmlns=\"{escaped(FORGERY)}\"/>"
                        "</message>")
        error = await carol.wait_for(lambda e: e.name == "error")
        self.assertEqual(error.firstChildElement().name, "bad-format")
        self.bob.send_text("<iq xmlns='jabber:client' type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self.bob.wait_for(lambda e: e.getAttribute("id") == "ping")
        self.assertFalse([m for m in self.bob.messages if "forged" in m])


def meaning(element, skip=()):
    """What a namespace-aware reader takes from an element: names, namespaces,
    attributes and text, not prefixes nor where declarations stand."""
    children, text = [], []
    for child in element.children:
        if isinstance(child, str):
            text.append(child)
        elif (child.uri, child.name) not in skip:
            children.append(meaning(child, skip))
    attributes = sorted((k if isinstance(k, tuple) else ("", k), v) for k, v in element.attributes.items())
    return (element.uri, element.name, attributes, "".join(text), children)


# Everything a client may legally write in a message, in one.
TRICKY = ("<c:message xmlns:c='jabber:client' xmlns:x='urn:example:x' to='{to}' type='chat' id='{id}' "
          "xml:lang='fr' x:to='not-the-recipient' x:from='not-the-sender'>"
          "<c:body>&lt;b&gt; &amp; &apos;q&apos; \u00e9\U0001F600<![CDATA[<raw> & ]]>end</c:body>"
          "<x:data x:type='1' type='2'><x:item xmlns:x='urn:example:other' x:a='redeclared'/>"
          "<plain xmlns=''><c:thread>deep</c:thread></plain>"
          "<s:error xmlns:s='http://etherx.jabber.org/streams'/></x:data>"
          "<thread xmlns='jabber:client' parent='p'>t</thread></c:message>")
NS_SID, NS_DELAY = ("urn:xmpp:sid:0", "stanza-id"), ("urn:xmpp:delay", "delay")


class StoredAndForwarded(ServerTestCase):
    """A message with every namespace trick a client may use reads the same
    to its recipient live, from offline storage, from the archive and as a
    carbon: well-formed, the same names, namespaces, attributes and text."""

    users = ("alice", "bob", "carol")
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def online(self, user, resource="raw"):
        client = await self.connect()
        await client.login(user, resource=resource)
        client.send("<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        await client.wait_for(lambda e: e.getAttribute("id") == "carbons")
        client.send("<presence/>")
        await client.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == client.jid)
        return client

    async def test_every_copy_means_what_was_sent(self):
        from twisted.words.xish import domish

        await self.start_server()
        alice, other, bob = await self.online("alice"), await self.online("alice", "other"), await self.online("bob")

        def sent(to, id):
            parsed = []
            stream = domish.elementStream()
            stream.DocumentStartEvent = lambda root: None
            stream.ElementEvent = parsed.append
            stream.DocumentEndEvent = lambda: None
            stream.parse(f"<stream xmlns='jabber:client'>{TRICKY.format(to=to, id=id)}</stream>")
            parsed[0].attributes["from"] = alice.jid
            return meaning(parsed[0], (NS_SID, NS_DELAY))

        alice.send(TRICKY.format(to=f"bob@{DOMAIN}", id="live"))
        alice.send(TRICKY.format(to=f"carol@{DOMAIN}", id="stored"))
        live = await bob.wait_for(lambda e: e.getAttribute("id") == "live")
        self.assertEqual(meaning(live, (NS_SID, NS_DELAY)), sent(f"bob@{DOMAIN}", "live"))
        carbon = await other.wait_for(lambda e: e.name == "message" and e.sent is not None)
        copied = next(carbon.sent.forwarded.elements("jabber:client", "message"))
        self.assertEqual(meaning(copied, (NS_SID, NS_DELAY)), sent(f"bob@{DOMAIN}", "live"))
        alice.send(f"<iq type='get' id='after' to='carol@{DOMAIN}'/>")  # after the stored one
        await alice.wait_for(lambda e: e.getAttribute("id") == "after")

        carol = await self.online("carol")
        offline = await carol.wait_for(lambda e: e.getAttribute("id") == "stored")
        self.assertEqual(meaning(offline, (NS_SID, NS_DELAY)), sent(f"carol@{DOMAIN}", "stored"))
        bob.send("<iq type='set' id='mam'><query xmlns='urn:xmpp:mam:2' queryid='q'/></iq>")
        await bob.wait_for(lambda e: e.getAttribute("id") == "mam")
        result = next(m for m in bob.unconsumed("message") if m.result is not None)
        archived = next(result.result.forwarded.elements("jabber:client", "message"))
        self.assertEqual(meaning(archived, (NS_SID, NS_DELAY)), sent(f"bob@{DOMAIN}", "live"))
        for client in (alice, other, bob, carol):  # every stream still parses
            client.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
            await client.wait_for(lambda e: e.getAttribute("id") == "ping")


class LargeOverWebSocket(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--http-port", "0", "--http-plain",
                   "--http-interfaces", "127.0.0.1")

    async def test_a_stanza_larger_than_a_parse_slice_in_one_message(self):
        # An avatar published from a browser is one WebSocket message of tens
        # of KB; the TCP stream parses such a read a slice per reactor turn.
        from tests.web_helpers import connect_ws

        await self.start_server()
        url = f"ws://127.0.0.1:{self.server.web.port}/xmpp-websocket"
        alice = await connect_ws(self, url)
        await alice.login("alice")
        import base64
        import hashlib

        image = bytes(range(256)) * 180
        data = base64.b64encode(image).decode()
        alice.send_text("<iq xmlns='jabber:client' type='set' id='avatar'>"
                        "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                        f"<publish node='urn:xmpp:avatar:data'><item id='{hashlib.sha1(image).hexdigest()}'>"
                        f"<data xmlns='urn:xmpp:avatar:data'>{data}</data></item></publish></pubsub></iq>")
        answer = await alice.wait_for(lambda e: e.getAttribute("id") == "avatar")
        self.assertEqual(answer["type"], "result", answer.toXml()[-300:])
        alice.send_text("<iq xmlns='jabber:client' type='get' id='back'>"
                        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:avatar:data'/>"
                        "</pubsub></iq>")
        back = await alice.wait_for(lambda e: e.getAttribute("id") == "back")
        self.assertTrue(data in back.toXml())


DOCUMENT = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            "to='localhost' version='1.0'>\n <message to='a'><body>\u00e9\u20ac\U0001F600</body></message>"
            " \u00e9 &amp; &#x20AC; <![CDATA[ <not-an-element/> ]]> "
            "<p:iq xmlns:p='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></p:iq>\t\r\n"
            "<presence/></stream:stream>").encode("utf-8")


class QuietMoments(unittest.TestCase):
    """A stream read a byte at a time, quiet long enough between any two bytes
    for its parser to be freed (idle_parser), reads as one read at once."""

    def elements(self, chunks, quiet, compressed=False):
        from twisted.internet import task
        from twisted.internet.testing import StringTransport

        from xep207.server import idle_parser

        clock, found, freed = task.Clock(), [], []
        stream = quiet_server_stream(clock=clock)
        stream.onElement = lambda e: found.append(e.toXml())
        stream.onDocumentEnd = lambda: found.append("end")
        transport = StringTransport()
        stream.makeConnection(transport)
        stream.authenticated = True
        if compressed:
            stream.dataReceived(DOCUMENT[:DOCUMENT.index(b">") + 1])
            stream.start_compression()
        for chunk in chunks:
            stream.dataReceived(chunk)
            if quiet:
                clock.advance(idle_parser.QUIET_SECONDS)
                freed.append(stream.stream is not None and stream.stream.parser is None)
        self.assertEqual(transport.value(), b"")  # no stream error
        return found, freed

    def test_a_byte_at_a_time_with_a_release_wherever_one_may_happen(self):
        document = DOCUMENT
        whole, _ = self.elements([document], quiet=False)
        self.assertEqual(len(whole), 4)
        split, freed = self.elements([document[i:i + 1] for i in range(len(document))], quiet=True)
        self.assertEqual(split, whole)
        self.assertGreater(sum(freed), 10)  # (the releases did happen)

    def test_text_of_many_lines_is_handed_over_a_buffer_at_a_time_before_and_after_a_release(self):
        # One call per line appended each line to the text so far: 250 KB of
        # newlines took a second of the reactor (quadratic).
        from twisted.internet import task
        from twisted.internet.testing import StringTransport

        from xep207.server import idle_parser

        clock, found = task.Clock(), []
        stream = quiet_server_stream(clock=clock)
        stream.onElement = found.append
        stream.makeConnection(StringTransport())
        stream.dataReceived(DOCUMENT[:DOCUMENT.index(b">") + 1])
        for _ in range(2):
            calls = []
            handler = stream.stream.parser.CharacterDataHandler
            stream.stream.parser.CharacterDataHandler = lambda data: (calls.append(data), handler(data))
            stream.dataReceived(b"<message><body>" + b"a&amp;\n" * 1000 + b"</body></message>")
            self.assertEqual(str(found[-1].body), "a&\n" * 1000)
            self.assertEqual(len(calls), -(-len("a&\n" * 1000) // idle_parser.TEXT_BUFFER))  # a call per buffer
            stream.stream.parser.CharacterDataHandler = handler
            clock.advance(idle_parser.QUIET_SECONDS)  # the next one on a fresh parser
            self.assertIsNone(stream.stream.parser)
            stream.live_parser(stream.stream)

    def test_the_same_compressed_a_byte_at_a_time(self):
        import zlib

        whole, _ = self.elements([DOCUMENT], quiet=False)
        deflater = zlib.compressobj()
        data = b"".join(deflater.compress(DOCUMENT[i:i + 9]) + deflater.flush(zlib.Z_SYNC_FLUSH)
                        for i in range(0, len(DOCUMENT), 9))  # a flush (a block end) every 9 bytes
        split, freed = self.elements([data[i:i + 1] for i in range(len(data))], quiet=True, compressed=True)
        self.assertEqual(split, whole)
        self.assertGreater(sum(freed), 10)


class ManyNamespacedAttributes(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def test_more_than_64_on_an_element_is_a_policy_violation(self):
        # Twisted's serializer is quadratic in them (a 250 KB stanza of 8000
        # took half a second per copy written); 64 pass, as any real stanza.
        await self.start_server()
        alice, bob = await self.connect(), await self.connect()
        await alice.login("alice")
        await bob.login("bob")
        bob.send("<presence/>")
        await bob.wait_for(lambda e: e.name == "presence")

        def message(count, id):
            attributes = "".join(f" xmlns:p{i}='urn:p:{i}' p{i}:a='{i}'" for i in range(count))
            return f"<message to='bob@{DOMAIN}' id='{id}'><body>x</body><x xmlns='urn:x'{attributes}/></message>"

        alice.send(message(64, "fine"))
        got = await bob.wait_for(lambda e: e.getAttribute("id") == "fine")
        self.assertEqual(len(got.x.attributes), 64)
        alice.send(message(65, "refused"))
        data = (await alice.closed).decode()
        self.assertIn(f"<policy-violation xmlns='{NS_STREAMS_ERROR}'/>", data)
        self.assertIn("more than 64 namespaced attributes", data)


class WhatFollowsATransportSwitch(ServerTestCase):
    """RFC 6120 §5.4.3.3: nothing the client sent in the clear after its
    <starttls/> counts once TLS is up (a man in the middle appending an <auth/>
    would otherwise log the client in as the attacker's account)."""

    async def test_an_auth_in_the_same_read_as_starttls_is_not_processed(self):
        from twisted.internet import ssl

        from tests.server_helpers import STREAM_HEADER, plain_auth

        await self.start_server()
        # right after it, and past a parse slice (a large read is parsed a
        # slice per reactor turn: the slices after the switch too)
        for injected in (plain_auth("bob"), " " * 20000 + STREAM_HEADER.format(domain=DOMAIN) + plain_auth("bob")):
            client = await self.connect()
            client.header()
            await client.expect("</stream:features>")
            client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + injected)
            await client.expect("<proceed")
            client.transport.startTLS(ssl.CertificateOptions(verify=False))
            client.header()
            features = (await client.expect("</stream:features>"))[client.received.index(b"<proceed"):]
            self.assertNotIn(b"<success", features)
            self.assertIn(b"<mechanisms", features)
            self.assertNotIn(b"<bind", features)
            client.send(plain_auth("alice"))  # the client's own login then works as usual
            await client.expect("<success")
            client.header()
            self.assertIn(b"<bind", await client.expect("</stream:features>"))


class BeforeTheHeader(ServerTestCase):
    async def test_an_error_before_our_header_opens_a_jabber_client_stream(self):
        # RFC 6120 §4.9.1.2: the header we send first, then the error; it
        # used to be in Twisted's placeholder namespace, 'invalid'.
        await self.start_server()
        for data in ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:x=\"a'b\" "
                     "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>", "\x00 no xml"):
            client = await self.connect()
            client.send(data)
            closed = (await client.closed).decode()
            self.assertTrue(closed.startswith("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
                                              "xmlns='jabber:client'"), closed)
            self.assertIn("<stream:error>", closed)


class MarksAreNotChildren(ClusterMixin, ServerTestCase):
    """The server marks stanzas with Python attributes (session, handled,
    cluster_hop); domish answers an attribute it does not have with the child
    element of that name, which the client chooses."""

    processes = 2
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def test_a_child_named_cluster_hop_does_not_keep_a_room_stanza_from_its_home(self):
        await self.start_server()
        routing = self.servers[0].cluster.routing
        home = self.servers[1].cluster.name
        room = next(f"room{i}" for i in range(1000) if routing.home_of(f"room{i}") == home)
        alice = await self.connect()  # on the first process
        await alice.login("alice")
        alice.send(f"<presence to='{room}@chat.{DOMAIN}/Alice'><x xmlns='http://jabber.org/protocol/muc'/>"
                   "<cluster_hop/></presence>")
        joined = await alice.wait_for(lambda e: e.name == "presence" and e.getAttribute("from", "").startswith(room))
        self.assertIsNone(joined.getAttribute("type"), joined.toXml())
        self.assertEqual(self.servers[0].cluster.stats["room-stanzas-forwarded"], 1)


class CompressedAtTheRate(unittest.TestCase):
    """XEP-0138: what a client's bytes inflate to is parsed at its shaping
    rate. 16 KB of zlib inflate to 16 MB; the rest of a read waited for
    nothing, and one read of tiny stanzas (250 000 of them) held the reactor
    for seconds."""

    def test_a_small_read_that_inflates_to_megabytes_is_parsed_as_the_rate_allows(self):
        import zlib

        from twisted.internet import task
        from twisted.internet.testing import StringTransport

        from xep207.server.stream import Shaping

        header = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                  b"to='localhost' version='1.0'>")
        clock, seen = task.Clock(), []
        shaping = Shaping()
        stream = quiet_server_stream(shaping=shaping, clock=clock)
        stream.onElement = lambda e: seen.append(e["h"])
        stream.authenticated = True
        transport = StringTransport()
        stream.makeConnection(transport)
        stream.dataReceived(header)
        stream.start_compression()
        count = 40000
        deflater = zlib.compressobj(9)
        requests = b"".join(b"<r xmlns='urn:xmpp:sm:3' h='%d'/>" % i for i in range(count))
        data = deflater.compress(header) + deflater.compress(requests) + deflater.flush(zlib.Z_SYNC_FLUSH)
        self.assertLess(len(data), 160 * 1024)
        stream.dataReceived(data)
        # the burst's worth at once (and the chunk that crossed it), not the megabyte
        first = len(seen)
        self.assertLess(first * 30, shaping.burst + 2 * 16 * 1024)
        self.assertEqual(transport.producerState, "paused")
        for _ in range(200):
            if len(seen) == count:
                break
            clock.advance(1)
        self.assertEqual(seen, [str(i) for i in range(count)])  # all of it, in order
        self.assertGreater(clock.seconds(), 20)  # at about 32 KB/s (1.2 MB inflated)
