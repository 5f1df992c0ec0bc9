"""A stream whose parser was freed while quiet makes the parser's handlers
again for the next one (ServerStream._install_parser_handlers): every check
the first parser made, the fresh one makes — before and after authentication,
across a stream restart — and the authentication timer still fires for a
session that authenticates and never binds."""

from twisted.internet import reactor, task

from tests.server_helpers import ServerTestCase, plain_auth
from tests.sm_helpers import ask_resume, enable, server_side_gone, sm
from xep207.server import idle_parser

PING = "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
BIND = ("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        "<resource>r</resource></bind></iq>")


def stream_error(condition: str) -> bytes:
    return f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'".encode()


class FreshParserChecks(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--c2s-rate", "0")

    async def setUp(self):
        await self.start_server()
        self.clock = task.Clock()
        factory = self.server.client_factory
        factory.clock = self.clock
        self.streams = []
        build = factory.buildProtocol

        def recorded(addr):
            stream = build(addr)
            self.streams.append(stream)
            return stream

        factory.buildProtocol = recorded

    async def idle_session(self):
        client = await self.connect()
        await client.login("alice", resource="idle")
        await self.freed(client, "p0")
        return client

    async def freed(self, client, id):
        """A ping answered (all read), then the quiet timer: the parser is gone."""
        client.send(PING.format(id=id))
        await client.expect(f"id='{id}'")
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(self.streams[-1].stream.parser)

    async def refused(self, client, data, condition):
        client.send(data)
        while not client.closed.called:  # (a large read is parsed a slice per turn of the fake clock)
            await task.deferLater(reactor, 0, self.clock.advance, 0)
        received = await client.closed
        self.assertIn(stream_error(condition), received)

    async def test_a_comment_is_restricted_xml(self):
        await self.refused(await self.idle_session(), "<!-- hi -->", "restricted-xml")

    async def test_a_processing_instruction_is_restricted_xml(self):
        await self.refused(await self.idle_session(), "<?x y?>", "restricted-xml")

    async def test_an_unsafe_namespace_name_is_bad_format(self):
        await self.refused(await self.idle_session(),
                           "<message xmlns:x='urn:a&lt;b' to='bob@localhost'/>", "bad-format")

    async def test_too_many_elements_in_a_stanza_is_a_policy_violation(self):
        await self.refused(await self.idle_session(),
                           "<message to='bob@localhost'>" + "<a/>" * 5001 + "</message>", "policy-violation")

    async def test_an_open_cdata_section_keeps_its_fresh_parser(self):
        client = await self.idle_session()
        client.send("<![CDATA[ x")
        await self.freed_not(client)
        client.send(" ]]>" + PING.format(id="after"))
        await client.expect("id='after'")

    async def freed_not(self, client):
        """What was sent is read (a second session's answer), and the quiet
        timer keeps the parser."""
        other = await self.connect()
        await other.login("bob")
        await self.freed(other, "turn")
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNotNone(self.streams[0].stream.parser)

    async def test_before_authentication_the_fresh_parser_keeps_the_small_limits(self):
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(self.streams[-1].stream.parser)
        # 9 levels below the root: within the session's 64, not the 8 before authentication
        await self.refused(client, "<a>" * 9 + "</a>" * 9, "policy-violation")

    async def test_a_restart_after_sasl_from_a_freed_parser_binds_the_new_stream(self):
        """Authenticated from a fresh parser, restarted, freed again: the
        parser after that is the restarted stream's, with the session's limits."""
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        self.clock.advance(idle_parser.QUIET_SECONDS)
        server_stream = self.streams[-1]
        self.assertIsNone(server_stream.stream.parser)
        client.send(plain_auth("alice"))
        await client.expect("<success")
        client.header()
        await client.expect("</stream:features>")
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(server_stream.stream.parser)
        client.send(BIND)
        await client.expect("</bind></iq>")
        await self.freed(client, "p1")
        client.send("<message to='bob@localhost'>" + "<a>" * 20 + "</a>" * 20 + "</message>" + PING.format(id="p2"))
        await client.expect("id='p2'")  # deeper than 8: the session's limits, not the first stream's
        await self.freed(client, "p3")
        await self.refused(client, "<message to='bob@localhost'>" + "<a>" * 65 + "</a>" * 65 + "</message>",
                           "policy-violation")

    async def test_the_stream_end_after_a_restart_and_a_fresh_parser_is_clean(self):
        client = await self.connect()
        await client.authenticate("alice")
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(self.streams[-1].stream.parser)
        client.send("</stream:stream>")
        received = await client.closed
        self.assertTrue(received.endswith(b"</stream:stream>"))
        self.assertNotIn(b"xmpp-streams", received)


    async def test_the_restarted_streams_own_prefixes_after_a_fresh_parser(self):
        """The header after SASL binds other prefixes than the first (``s`` for
        the streams namespace, ``f`` for another): a fresh parser is primed
        with the restarted stream's, not the first stream's."""
        client = await self.connect()
        client.header()
        await client.expect("</stream:features>")
        client.send(plain_auth("alice"))
        await client.expect("<success")
        client.send("<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'"
                    " xmlns:f='urn:example:f' to='localhost' version='1.0'>")
        await client.expect("</stream:features>")
        client.send(BIND)
        await client.expect("</bind></iq>")
        await self.freed(client, "p1")
        client.send("<message to='alice@localhost/r' id='m1'><body>x</body><f:x/></message>")
        await client.expect("id='m1'")
        await client.expect("urn:example:f")
        await self.freed(client, "p2")
        client.send("</s:stream>")  # the root's end, under the restarted stream's prefix
        received = await client.closed
        self.assertTrue(received.endswith(b"</stream:stream>"))
        self.assertNotIn(b"xmpp-streams", received)


class AuthTimeout(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth", "--auth-timeout", "1")

    async def setUp(self):
        await self.start_server()

    async def test_authenticated_and_never_bound_times_out(self):
        """RFC 6120 §4.9.3.4: authentication without a resource is not a session."""
        client = await self.connect()
        await client.authenticate("alice")
        received = await client.closed
        self.assertIn(stream_error("connection-timeout"), received)

    async def test_bound_does_not_time_out(self):
        client = await self.connect()
        await client.login("alice")
        stream = self.server.router.session("alice@localhost/raw").stream
        self.assertIsNone(stream.authenticator._timeout)  # dropped at bind, not left to fire
        other = await self.connect()
        other.header()
        await other.closed  # the bystander's timer fired: the bound session's would have by now
        client.send(PING.format(id="alive"))
        await client.expect("id='alive'")

    async def test_a_resumed_session_keeps_no_timer_and_renews_its_parser(self):
        """XEP-0198: a session resumed on a new connection is bound there: no
        authentication timer cuts it, and its parser, freed, comes back."""
        clock = task.Clock()
        self.server.client_factory.clock = clock
        alice = await self.connect()
        await alice.login("alice", resource="phone")
        previd = (await enable(alice))["id"]
        gone = server_side_gone(self.server, "alice@localhost/phone")
        alice.transport.abortConnection()
        await gone
        client = await self.connect()
        await ask_resume(client, "alice", previd)
        await client.wait_for(sm("resumed"))
        stream = self.server.router.session("alice@localhost/phone").stream
        self.assertIsNone(stream.authenticator._timeout)
        other = await self.connect()
        other.header()
        await other.closed  # a timer started after the resumed connection's has fired
        clock.advance(idle_parser.QUIET_SECONDS)
        self.assertIsNone(stream.stream.parser)
        client.send(PING.format(id="resumed"))
        await client.wait_for(lambda e: e.getAttribute("id") == "resumed")
