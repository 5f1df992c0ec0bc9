"""An idle stream frees its XML parser (xep207.server.idle_parser) and gets a
primed one on its next bytes: stanzas, limits and the stream's end behave as
if the parser had never gone."""

from twisted.internet import reactor, task
from twisted.trial import unittest
from twisted.words.xish import domish

from tests.server_helpers import ServerTestCase
from xep207.server import idle_parser

PING = "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
NS_STREAMS = "http://etherx.jabber.org/streams"


class IdleParser(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--c2s-rate", "0")

    async def setUp(self):
        await self.start_server()
        self.clock = task.Clock()
        self.server.client_factory.clock = self.clock
        self.client = await self.connect()
        await self.client.login("alice", resource="idle")
        self.stream = self.server.router.session("alice@localhost/idle").stream

    async def pumping(self, d):
        """``d``'s result, running meanwhile what the stream put on its (fake)
        clock for "now": a large read is parsed a slice per turn."""
        while not d.called:
            await task.deferLater(reactor, 0, self.clock.advance, 0)
        return await d

    async def ping(self, id):
        self.client.send(PING.format(id=id))
        await self.client.expect(f"id='{id}'")

    async def test_a_quiet_stream_frees_its_parser_and_still_serves(self):
        await self.ping("p1")
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(self.stream.stream.parser)
        await self.ping("p2")  # a fresh parser, primed with the stream's namespaces
        self.assertIsNotNone(self.stream.stream.parser)
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(self.stream.stream.parser)
        # The stream prefix of the header is still bound: a stream-level element parses.
        self.client.send("<iq type='get' id='p3'><ping xmlns='urn:xmpp:ping'/></iq>"
                         "<message to='alice@localhost/idle' id='m1'><body>x</body>"
                         "<stream:x xmlns:stream='urn:other'/></message>")
        await self.client.expect("id='m1'")
        self.assertIn(b"id='p3'", self.client.received)

    async def test_a_quiet_stream_keeps_none_of_its_parser_handlers(self):
        """While idle, a session holds what the collector must walk at every
        full pass: the parser's closures are made again with the next parser,
        and the authentication timer went with the bind."""
        import gc
        import types

        def handlers_of(stream):
            gc.collect()
            return [f for f in gc.get_objects() if type(f) is types.FunctionType
                    and f.__qualname__.startswith("ServerStream._install_parser_handlers.")
                    and any(c.cell_contents is stream for c in f.__closure__ or ()
                            if c.cell_contents is not None)]

        self.assertTrue(handlers_of(self.stream))  # on_start, on_end, ...
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(self.stream.stream.parser)
        self.assertEqual(handlers_of(self.stream), [])
        self.assertIsNone(self.stream.authenticator._timeout)
        await self.ping("p1")
        self.assertTrue(handlers_of(self.stream))

    async def test_limits_still_apply_after_a_fresh_parser(self):
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(self.stream.stream.parser)
        self.client.send("<message to='bob@localhost'>" + "<a>" * 100 + "</a>" * 100 + "</message>")
        data = await self.client.closed
        self.assertIn(b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'", data)

    async def test_the_size_limit_still_applies_after_a_fresh_parser(self):
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(self.stream.stream.parser)
        self.client.send("<message to='bob@localhost'><body>" + "x" * 300_000 + "</body></message>")
        data = await self.pumping(self.client.closed)
        self.assertIn(b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'", data)

    async def test_the_stream_end_after_a_fresh_parser_is_a_clean_close(self):
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(self.stream.stream.parser)
        self.client.send("</stream:stream>")
        data = await self.client.closed
        self.assertTrue(data.endswith(b"</stream:stream>"))
        self.assertNotIn(b"xmpp-streams", data)

    async def test_a_stanza_half_received_keeps_its_parser(self):
        self.client.send("<iq type='get' id='half'><ping xmlns='urn:xmpp:ping'/>")
        await self.ping_bystander_free_turn()
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNotNone(self.stream.stream.parser)
        self.client.send("</iq>")
        await self.client.expect("id='half'")

    async def test_a_partial_tag_keeps_its_parser(self):
        self.client.send("<iq type='get' id='tag'><ping xmlns='urn:xmpp:ping'/></iq><pres")
        await self.client.expect("id='tag'")
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNotNone(self.stream.stream.parser)  # expat still holds "<pres"
        self.client.send(f"ence/>{PING.format(id='after')}")
        await self.client.expect("id='after'")

    async def ping_bystander_free_turn(self):
        """Wait until the server has read what was sent, with a second session."""
        other = await self.connect()
        await other.login("bob")
        other.send(PING.format(id="turn"))
        await other.expect("id='turn'")


class HeaderFor(unittest.TestCase):
    def root(self, prefixes, default="jabber:client"):
        root = domish.Element((NS_STREAMS, "stream"), defaultUri=default, localPrefixes=prefixes)
        return root

    def test_the_usual_header_is_shared(self):
        header = idle_parser.header_for(self.root({"stream": NS_STREAMS}))
        self.assertIs(header, idle_parser._CLIENT_HEADER)

    def test_another_prefix_and_odd_uris_are_kept(self):
        header = idle_parser.header_for(self.root({"s": NS_STREAMS, "q": "urn:a'b&c"}))
        self.assertEqual(header, b'<s:stream xmlns="jabber:client" xmlns:q="urn:a\'b&amp;c" '
                                 b'xmlns:s="http://etherx.jabber.org/streams">')
        parser = idle_parser.fresh_parser(header)
        names = []
        parser.StartElementHandler = lambda name, attributes: names.append(name)
        parser.Parse(b"<q:x/><y/></s:stream>", True)  # both prefixes bound, the root's end matches
        self.assertEqual(names, ["urn:a'b&c x", "jabber:client y"])

    def test_an_ambiguous_root_name_keeps_the_parser(self):
        self.assertIsNone(idle_parser.header_for(self.root({"a": NS_STREAMS, "b": NS_STREAMS})))
        self.assertIsNone(idle_parser.header_for(self.root({"a": NS_STREAMS}, default=NS_STREAMS)))


class IdleWebSocketParser(ServerTestCase):
    """RFC 7395: each message is checked against the parser's position; a freed
    parser is renewed before that check."""

    server_args = ("--no-tls", "--allow-plaintext-auth", "--http-port", "0", "--http-plain",
                   "--http-interfaces", "127.0.0.1")

    async def test_a_websocket_stream_renews_its_freed_parser(self):
        from tests.web_helpers import connect_ws

        await self.start_server()
        client = await connect_ws(self, f"ws://127.0.0.1:{self.server.web.port}/xmpp-websocket")
        await client.login("alice", resource="ws")
        stream = self.server.router.session("alice@localhost/ws").stream
        stream._free_parser()  # what the quiet timer does (its clock is tested over TCP above)
        self.assertIsNone(stream.stream.parser)
        client.send_text("<iq xmlns='jabber:client' type='get' id='ws1'><ping xmlns='urn:xmpp:ping'/></iq>")
        answer = await client.wait_for(lambda e: e.getAttribute("id") == "ws1")
        self.assertEqual(answer["type"], "result")
        stream._free_parser()
        client.send_text("<presence xmlns='jabber:client'/>trailing")  # still refused after renewal
        error = await client.wait_for(lambda e: e.name == "error")
        self.assertEqual(error.firstChildElement().name, "not-well-formed")
        code, _ = await client.closed
        self.assertEqual(code, 1000)

    async def test_a_websocket_fresh_parser_keeps_the_stream_checks(self):
        """After an idle free, the WebSocket stream's fresh parser refuses what
        the first refused: a comment (restricted XML) and a stanza too deep."""
        from tests.web_helpers import connect_ws

        await self.start_server()
        for data, condition in (("<!-- x -->", "restricted-xml"),
                                ("<message xmlns='jabber:client'>" + "<a>" * 65 + "</a>" * 65 + "</message>",
                                 "policy-violation")):
            client = await connect_ws(self, f"ws://127.0.0.1:{self.server.web.port}/xmpp-websocket")
            await client.login("alice", resource="ws")
            stream = self.server.router.session("alice@localhost/ws").stream
            stream._free_parser()
            self.assertIsNone(stream.stream.parser)
            client.send_text(data)
            error = await client.wait_for(lambda e: e.name == "error")
            self.assertEqual(error.firstChildElement().name, condition)
            await client.closed
