"""What an idle session keeps (issue 13, memory per idle TLS session): a quiet
TLS stream gives back its memory BIOs' buffers (xep207.server.idle_tls) and
serves on as before, over STARTTLS and direct TLS; an idle session holds no
empty queues, and its stream's attributes fit the smaller dict."""

from __future__ import annotations

import sys
import zlib

from OpenSSL import SSL
from twisted.internet import protocol, reactor, ssl, task
from twisted.trial import unittest

from tests.peers import free_port
from tests.server_helpers import RawClient, ServerTestCase, plain_auth
from xep207.server import idle_parser, idle_tls, tls
from xep207.server.stream import COMPACT_DICT, ServerStream

PING = "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"


class ZlibClient(RawClient):
    """A raw client that can switch to XEP-0138 zlib both ways."""

    inflater = None

    def deflate(self) -> None:
        self.inflater, self.deflater = zlib.decompressobj(), zlib.compressobj()

    def dataReceived(self, data):
        super().dataReceived(self.inflater.decompress(data) if self.inflater is not None else data)

    def send(self, data):
        data = data.encode() if isinstance(data, str) else data
        if self.inflater is not None:
            data = self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        super().send(data)

    async def compress_and_bind(self, resource: str) -> None:
        """Authenticated: XEP-0138 zlib both ways, a new stream, bound as ``resource``."""
        self.send("<compress xmlns='http://jabber.org/protocol/compress'><method>zlib</method></compress>")
        await self.expect("<compressed")
        self.deflate()
        self.header()
        await self.expect("</stream:features>")
        self.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        await self.expect("</bind></iq>")
        self.start_parsing(self.received[self._cursor:])


class QuietTLSStream(ServerTestCase):
    server_args = ("--c2s-rate", "0", "--tls-optional", "--allow-plaintext-auth")

    async def setUp(self):
        self.tls_port = free_port()
        await self.start_server("--c2s-direct-tls-port", str(self.tls_port))
        self.clock = task.Clock()
        self.server.client_factory.clock = self.clock  # direct TLS serves the same factory

    async def connect(self, source=None) -> ZlibClient:
        client = await protocol.ClientCreator(reactor, ZlibClient).connectTCP("127.0.0.1", self.port)
        self.addCleanup(self._close, client)
        return client

    @staticmethod
    async def starttls(client: RawClient) -> None:
        client.header()
        await client.expect("</stream:features>")
        client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await client.expect("<proceed")
        client.transport.startTLS(ssl.CertificateOptions(verify=False))

    async def starttls_client(self, resource: str) -> RawClient:
        client = await self.connect()
        await self.starttls(client)
        await client.login("alice", resource=resource)
        return client

    def connection(self, resource: str) -> SSL.Connection:
        stream = self.server.router.session(f"alice@localhost/{resource}").stream
        connection = idle_tls.tls_connection(stream.transport)
        self.assertIsNotNone(connection)
        return connection

    async def ping(self, client: RawClient, id: str, size: int = 0) -> None:
        padding = f"<x xmlns='urn:pad'>{'p' * size}</x>" if size else ""
        client.send(f"<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/>{padding}</iq>")
        answer = await client.wait_for(lambda e: e.getAttribute("id") == id)
        self.assertEqual(answer.name, "iq")

    async def check_released_and_serving(self, client: RawClient, resource: str) -> None:
        connection = self.connection(resource)
        bios = (connection._into_ssl, connection._from_ssl)
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertNotEqual(connection._into_ssl, bios[0])
        self.assertNotEqual(connection._from_ssl, bios[1])
        # Both ways still work, small and large (a stanza bigger than one TLS record
        # in, its error answer out), and the buffers go again when quiet.
        await self.ping(client, "after-1")
        await self.ping(client, "after-big", size=40_000)
        bios = (connection._into_ssl, connection._from_ssl)
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertNotEqual(connection._into_ssl, bios[0])
        await self.ping(client, "after-2")

    async def test_starttls_stream_releases_its_buffers_and_serves_on(self):
        client = await self.starttls_client("quiet")
        await self.ping(client, "before")
        await self.check_released_and_serving(client, "quiet")

    async def test_direct_tls_stream_releases_its_buffers_and_serves_on(self):
        options = ssl.CertificateOptions(verify=False, acceptableProtocols=[b"xmpp-client"])
        client = await protocol.ClientCreator(reactor, RawClient).connectSSL("127.0.0.1", self.tls_port, options)
        self.addCleanup(self._close, client)
        await client.login("alice", resource="direct")
        await self.ping(client, "before")
        await self.check_released_and_serving(client, "direct")

    async def test_compressed_tls_stream_releases_its_buffers_and_serves_on(self):
        """XEP-0138 over STARTTLS: the compressing wrapper still leads to the TLS connection."""
        client = await self.connect()
        await self.starttls(client)
        await client.authenticate("alice")
        await client.compress_and_bind("zlib")
        self.assertTrue(self.server.router.session("alice@localhost/zlib").stream.compressed)
        await self.ping(client, "before")
        await self.check_released_and_serving(client, "zlib")

    async def test_every_restart_from_a_freed_parser(self):
        """STARTTLS, SASL and XEP-0138 each asked of a parser renewed after an
        idle free: each restarted stream's parser (and its renewal) is that
        stream's, with its checks."""
        streams = []
        build = self.server.client_factory.buildProtocol
        self.server.client_factory.buildProtocol = lambda addr: streams.append(build(addr)) or streams[-1]
        client = await self.connect()

        def free():
            self.clock.advance(idle_parser.QUIET_SECONDS)
            self.assertIsNone(streams[0].stream.parser)

        client.header()
        await client.expect("</stream:features>")
        free()
        client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await client.expect("<proceed")
        client.transport.startTLS(ssl.CertificateOptions(verify=False))
        client.header()
        await client.expect("</stream:features>")
        free()
        client.send(plain_auth("alice"))
        await client.expect("<success")
        client.header()
        await client.expect("</stream:features>")
        free()
        client.send("<compress xmlns='http://jabber.org/protocol/compress'><method>zlib</method></compress>")
        await client.expect("<compressed")
        client.deflate()
        client.header()
        await client.expect("</stream:features>")
        free()
        client.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                    "<resource>all</resource></bind></iq>")
        await client.expect("</bind></iq>")
        client.start_parsing(client.received[client._cursor:])
        free()
        await self.ping(client, "after")
        free()
        client.send("<!-- after three restarts -->")
        error = await client.wait_for(lambda e: e.name == "error")
        self.assertEqual(error.firstChildElement().name, "restricted-xml")

    async def test_a_push_in_the_same_turn_as_the_release_arrives(self):
        """Another session's message to a quiet TLS stream, written in the very
        turn its buffers go (before or after), arrives whole and in order."""
        client = await self.starttls_client("quiet")
        await self.ping(client, "before")
        stream = self.server.router.session("alice@localhost/quiet").stream
        connection = self.connection("quiet")
        bios = (connection._into_ssl, connection._from_ssl)
        stream.send("<message from='bob@localhost/x' type='chat' id='m1'><body>before</body></message>")
        self.clock.advance(idle_parser.QUIET_SECONDS)
        stream.send("<message from='bob@localhost/x' type='chat' id='m2'><body>after</body></message>")
        first = await client.wait_for(lambda e: e.getAttribute("id") == "m1")
        second = await client.wait_for(lambda e: e.getAttribute("id") == "m2")
        self.assertEqual((str(first.body), str(second.body)), ("before", "after"))
        self.assertNotEqual((connection._into_ssl, connection._from_ssl), bios)
        await self.ping(client, "after")

    async def test_a_half_received_record_keeps_its_buffers(self):
        """Bytes OpenSSL has not taken yet (here: a TLS record cut short) stay where they are."""
        client = await self.starttls_client("half")
        await self.ping(client, "before")
        connection = self.connection("half")
        connection.bio_write(b"\x17\x03\x03\x00\x40" + b"\0" * 10)  # as if from the network, unread
        self.assertFalse(idle_tls.release_buffers(connection))
        into = connection._into_ssl
        self.clock.advance(idle_parser.QUIET_SECONDS)
        self.assertEqual(connection._into_ssl, into)

    async def test_plain_tcp_has_no_tls_connection(self):
        client = await self.connect()
        await client.login("alice", resource="plain")
        stream = self.server.router.session("alice@localhost/plain").stream
        self.assertIsNone(idle_tls.tls_connection(stream.transport))
        self.clock.advance(idle_parser.QUIET_SECONDS)
        await self.ping(client, "plain")


class ReleaseBuffers(unittest.TestCase):
    """``release_buffers`` on a connection pair driven by hand (memory BIOs both sides)."""

    def setUp(self):
        import tempfile

        directory = tempfile.mkdtemp()
        self.addCleanup(__import__("shutil").rmtree, directory, True)
        self.server_tls = tls.context_factory("localhost", directory)
        self.server = self.server_tls.serverConnectionForTLS(None)
        self.server.set_accept_state()
        self.client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        self.client.set_connect_state()

    def pump(self):
        moved = True
        while moved:
            moved = False
            for side in (self.client, self.server):
                try:
                    side.do_handshake()
                except SSL.WantReadError:
                    pass
            for source, sink in ((self.client, self.server), (self.server, self.client)):
                try:
                    data = source.bio_read(65536)
                except SSL.WantReadError:
                    continue
                sink.bio_write(data)
                moved = True

    def test_not_before_the_handshake_is_over(self):
        self.assertFalse(idle_tls.release_buffers(self.server))
        try:
            self.client.do_handshake()
        except SSL.WantReadError:
            pass
        self.server.bio_write(self.client.bio_read(65536))
        self.assertFalse(idle_tls.release_buffers(self.server))  # a ClientHello waits, unread

    def test_unread_output_keeps_the_buffers(self):
        self.pump()
        self.server.send(b"unread")
        self.assertFalse(idle_tls.release_buffers(self.server))
        self.pump()
        self.assertTrue(idle_tls.release_buffers(self.server))
        self.assertEqual(self.client.recv(100), b"unread")

    def test_data_flows_both_ways_after_a_release(self):
        self.pump()
        self.assertTrue(idle_tls.release_buffers(self.server))
        self.client.send(b"in")
        self.pump()
        self.assertEqual(self.server.recv(100), b"in")
        data = b"x" * 50_000
        while data:
            data = data[self.server.send(data):]
            self.pump()
        received = b""
        while True:
            try:
                received += self.client.recv(65536)
            except SSL.WantReadError:
                break
        self.assertEqual(len(received), 50_000)
        self.assertTrue(idle_tls.release_buffers(self.server))

    def test_the_context_releases_openssl_buffers_too(self):
        import tempfile

        directory = tempfile.mkdtemp()
        self.addCleanup(__import__("shutil").rmtree, directory, True)
        fresh = tls.context_factory("localhost", directory).getContext()
        self.assertTrue(fresh.set_mode(0) & SSL.MODE_RELEASE_BUFFERS)  # (0 adds nothing: the mode as set)


class IdleSessionHoldsLittle(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def test_no_empty_queues_and_a_small_stream_dict(self):
        await self.start_server()
        clock = task.Clock()
        self.server.client_factory.clock = clock
        client = await self.connect()
        await client.login("alice", resource="idle")
        client.send(PING.format(id="p"))
        await client.expect("id='p'")
        clock.advance(idle_parser.QUIET_SECONDS)
        session = self.server.router.session("alice@localhost/idle")
        stream = session.stream
        self.assertIsInstance(stream, ServerStream)
        self.assertIsNone(session.in_order._queue)
        self.assertIsNone(session.durable._queue)
        self.assertIsNone(stream._unparsed)
        self.assertIsNone(stream.stream.parser)
        # The stream's dict was copied to its size when it went quiet (64 slots,
        # not the 128 CPython gave it on the way past 30 attributes).
        self.assertLessEqual(len(vars(stream)), COMPACT_DICT, sorted(vars(stream)))
        self.assertLess(sys.getsizeof(vars(stream)), 1000)
        await self.ping_ok(client)

    async def test_no_observer_objects_and_the_peers_stream_error_still_closes(self):
        """The negotiator is called directly, not through xish observers (3.4 KiB
        a stream): an idle stream has none; what observers did still happens."""
        await self.start_server()
        client = await self.connect()
        await client.login("alice", resource="err")
        session = self.server.router.session("alice@localhost/err")
        stream = session.stream
        self.assertEqual([event for observers in stream._eventObservers.values() for event in observers], [])
        self.assertEqual([query for observers in stream._xpathObservers.values() for query in observers], [])
        await self.ping_ok(client)  # elements still reach the negotiator
        ended = []
        stream.addObserver("//event/stream/end", lambda reason: ended.append(
            self.server.router.session("alice@localhost/err")))
        client.send("<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                    "</stream:error>")
        await client.closed  # the peer's stream error ends the connection (RFC 6120 §4.9)
        # STREAM_END_EVENT's observers run after the negotiator unbound the session.
        self.assertEqual(ended, [None])

    async def ping_ok(self, client):
        client.send(PING.format(id="again"))
        await client.expect("id='again'")

