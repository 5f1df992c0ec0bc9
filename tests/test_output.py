"""What the server writes to a bound client: TCP_NODELAY, one write per read
handled or per reactor turn (in pieces of at most one TLS record), and nothing queued lost or
reordered when the stream ends."""

import socket

from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from tests.server_helpers import DOMAIN, AliceAndBobOnline, ServerTestCase
from tests.web_helpers import connect_ws

from xep207.server import stream as stream_module
from xep207.server.stream import WRITE_CHUNK, write_now


def spy_on_writes(testcase) -> dict:
    """transport → what ``write_now`` wrote to it, in order (a spy: the real
    write still happens; undone after the test)."""
    writes: dict = {}
    real_write = stream_module.write_now

    def recording_write(to, data):
        writes.setdefault(to, []).append(data)
        real_write(to, data)

    testcase.patch(stream_module, "write_now", recording_write)
    return writes


class Output(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def setUp(self):
        await self.start_server()
        self.client = await self.connect()
        await self.client.login("alice", resource="out")
        self.session = self.server.router.session(f"alice@{DOMAIN}/out")
        self._written = spy_on_writes(self)

    @property
    def writes(self) -> list[int]:
        """The sizes of the writes to alice's connection."""
        return [len(data) for data in self._written.get(self.session.stream.transport, [])]

    def test_client_sockets_have_tcp_nodelay(self):
        handle = self.session.stream.transport.getHandle()
        self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async def test_plain_tcp_output_goes_to_the_socket_at_once(self):
        """No registration for writability and no extra reactor turn per write
        when the socket takes it all (issue 13)."""
        transport = self.session.stream.transport
        self.session.send(f"<message from='{DOMAIN}' id='now'/>")
        stream_module._flush_all()  # the end of this turn, run here
        self.assertEqual(self.writes, [len(f"<message from='{DOMAIN}' id='now'/>")])
        self.assertEqual((transport._tempDataBuffer, len(transport.dataBuffer) - transport.offset), ([], 0))
        self.assertNotIn(transport, reactor.getWriters())
        await self.client.expect("id='now'")

    async def test_a_write_the_socket_does_not_take_whole_is_queued_in_order(self):
        transport = self.session.stream.transport
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.client.transport.pauseProducing()  # the client stops reading: the socket fills
        body = "y" * 1000
        try:
            for i in range(400):
                self.session.send(f"<message from='{DOMAIN}' id='p{i}'><body>{body}</body></message>")
                if i % 50 == 49:
                    stream_module._flush_all()
            stream_module._flush_all()
            self.assertTrue(transport._tempDataBuffer or len(transport.dataBuffer) > transport.offset)
        finally:
            self.client.transport.resumeProducing()
        await self.client.wait_for(lambda e: e.getAttribute("id") == "p399")
        ids = [e["id"] for e in self.client.stanzas if e.name == "message"]
        self.assertEqual(ids, [f"p{i}" for i in range(400)])

    async def test_one_turn_one_write(self):
        for i in range(50):
            self.session.send(f"<message from='{DOMAIN}' id='m{i}'><body>{i}</body></message>")
        await self.client.wait_for(lambda e: e.getAttribute("id") == "m49")
        self.assertEqual(self.writes, [sum(self.writes)])
        ids = [e["id"] for e in self.client.stanzas if e.name == "message"]
        self.assertEqual(ids, [f"m{i}" for i in range(50)])

    async def test_a_large_turn_is_written_in_record_sized_pieces(self):
        body = "x" * 1000
        for i in range(100):
            self.session.send(f"<message from='{DOMAIN}' id='b{i}'><body>{body}</body></message>")
        await self.client.wait_for(lambda e: e.getAttribute("id") == "b99")
        self.assertGreater(len(self.writes), 1)
        self.assertTrue(all(size <= WRITE_CHUNK for size in self.writes), self.writes)
        ids = [e["id"] for e in self.client.stanzas if e.name == "message"]
        self.assertEqual(ids, [f"b{i}" for i in range(100)])
        self.assertEqual([str(e.body) for e in self.client.stanzas if e.name == "message"], [body] * 100)

    async def test_queued_stanzas_go_before_a_stream_error(self):
        for i in range(3):
            self.session.send(f"<message from='{DOMAIN}' id='q{i}'/>")
        self.session.close("policy-violation", "enough")  # the same turn
        data = (await self.client.closed).decode()
        positions = [data.index(f"id='q{i}'") for i in range(3)]
        self.assertEqual(positions, sorted(positions))
        self.assertLess(positions[-1], data.index("<policy-violation"))
        self.assertTrue(data.endswith("</stream:stream>"))

    async def test_queued_stanzas_go_before_the_answer_to_a_closing_client(self):
        self.session.send(f"<message from='{DOMAIN}' id='last'/>")
        self.client.send("</stream:stream>")  # handled in a later turn than the send above, or the same
        data = (await self.client.closed).decode()
        self.assertIn("id='last'", data)

    async def test_sends_after_a_turn_are_written_in_the_next(self):
        self.session.send(f"<message from='{DOMAIN}' id='t1'/>")
        await self.client.expect("id='t1'")
        await task.deferLater(reactor, 0, lambda: None)  # one more reactor turn, not a timing guess
        self.session.send(f"<message from='{DOMAIN}' id='t2'/>")
        await self.client.expect("id='t2'")
        self.assertEqual(len(self.writes), 2)


class WhatAReadCauses(AliceAndBobOnline):
    """Output a read causes leaves once that read is handled, not at the end
    of the reactor turn: the turn may hold two dozen other clients' reads
    (issue 13: a one-to-one message waited for all of them)."""

    async def setUp(self):
        await super().setUp()
        self.stream = self.server.router.session(self.alice.jid).stream
        self.writes = spy_on_writes(self)

    def written_to(self, client) -> bytes:
        return b"".join(self.writes.get(self.server.router.session(client.jid).stream.transport, []))

    async def test_a_one_to_one_message_is_written_before_the_read_returns(self):
        self.alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>first</body></message>")
        await self.bob.expect("first")  # (the conversation exists)
        self.stream.dataReceived(f"<message to='bob@{DOMAIN}' type='chat'><body>second</body></message>".encode())
        self.assertIn(b"<body>second</body>", self.written_to(self.bob))  # no reactor turn yet
        self.assertEqual(stream_module._to_flush, [])
        await self.bob.expect("second")

    async def test_what_one_read_causes_is_still_one_write_per_stream(self):
        pings = "".join(f"<iq type='get' id='p{i}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
                        for i in range(3))
        self.stream.dataReceived(pings.encode())
        writes = self.writes.get(self.stream.transport, [])
        self.assertEqual(len(writes), 1, writes)
        for i in range(3):
            self.assertIn(f"id='p{i}'".encode(), writes[0])
        await self.alice.wait_for(lambda e: e.getAttribute("id") == "p2")


class WhatAWebSocketReadCauses(ServerTestCase):
    """The same over WebSocket (RFC 7395): its messages reach their stream
    through the WebSocket connection's read, not the stream's own."""

    server_args = ("--tls-optional", "--allow-plaintext-auth", "--http-port", "0",
                   "--http-interfaces", "127.0.0.1")

    async def setUp(self):
        await self.start_server()

    async def test_a_browsers_message_is_written_before_the_read_returns(self):
        bob = await self.connect()
        await bob.login("bob", resource="tcp")
        bob.send("<presence/>")
        await bob.expect("<presence")
        alice = await connect_ws(self, f"wss://127.0.0.1:{self.server.web.port}/xmpp-websocket")
        await alice.login("alice", resource="browser")
        alice.send_text(f"<message xmlns='jabber:client' type='chat' to='bob@{DOMAIN}'><body>first</body></message>")
        await bob.expect("first")  # (the conversation exists)
        connection = self.server.router.session(alice.jid).stream.transport._protocol
        bob_transport = self.server.router.session(f"bob@{DOMAIN}/tcp").stream.transport
        written = spy_on_writes(self)
        seen_at_return = []
        real_read = connection.dataReceived

        def read(data):
            real_read(data)
            seen_at_return.append(b"".join(written.get(bob_transport, [])))

        connection.dataReceived = read
        alice.send_text(f"<message xmlns='jabber:client' type='chat' to='bob@{DOMAIN}'><body>second</body></message>")
        await bob.expect("second")
        self.assertTrue(any(b"<body>second</body>" in chunk for chunk in seen_at_return), seen_at_return)


class _Reader(protocol.Protocol):
    """A peer that reads only when told to (so the server's socket buffer fills)."""

    def __init__(self, expected: int):
        self.expected = expected
        self.received = bytearray()
        self.done = defer.Deferred()
        self.lost = defer.Deferred()

    def connectionMade(self):
        self.transport.pauseProducing()

    def dataReceived(self, data):
        self.received += data
        if len(self.received) >= self.expected and not self.done.called:
            self.done.callback(bytes(self.received))

    def connectionLost(self, reason):
        self.lost.callback(None)


class DirectWrite(unittest.TestCase):
    """``write_now`` sends at once only where that cannot change what the peer
    receives: whatever the kernel does not take waits in Twisted's queue, and
    everything written later goes after it."""

    async def connected(self, expected: int):
        accepted = defer.Deferred()

        class Accept(protocol.Protocol):
            def connectionMade(self):
                accepted.callback(self.transport)

        port = reactor.listenTCP(0, protocol.Factory.forProtocol(Accept), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        reader = _Reader(expected)
        await protocol.ClientCreator(reactor, lambda: reader).connectTCP("127.0.0.1", port.getHost().port)
        transport = await accepted
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

        def close():
            reader.transport.loseConnection()
            return reader.lost

        self.addCleanup(close)
        return transport, reader

    async def test_order_is_kept_when_the_kernel_takes_only_part(self):
        chunks = [bytes([65 + i % 26]) * 40000 for i in range(50)]  # 2 MB: far beyond the socket buffers
        transport, reader = await self.connected(sum(map(len, chunks)))
        for chunk in chunks:
            write_now(transport, chunk)
        # The kernel took part at once; the rest waits in Twisted's queue, in order.
        self.assertTrue(transport.dataBuffer or transport._tempDataBuffer)
        write_now(transport, b"")  # nothing to write is nothing written
        reader.transport.resumeProducing()
        self.assertEqual(await reader.done, b"".join(chunks))

    async def test_a_small_write_on_an_idle_connection_leaves_at_once(self):
        transport, reader = await self.connected(5)
        write_now(transport, b"hello")
        self.assertFalse(transport.dataBuffer or transport._tempDataBuffer)  # sent, not queued
        reader.transport.resumeProducing()
        self.assertEqual(await reader.done, b"hello")

    async def test_a_write_to_a_closed_peer_is_left_to_twisted(self):
        transport, reader = await self.connected(1)
        reader.transport.loseConnection()
        await reader.lost
        gone = defer.Deferred()
        transport.protocol.connectionLost = lambda reason: gone.callback(None)
        for _ in range(20):  # the first may still be accepted by the kernel; then a reset
            write_now(transport, b"x" * 1000)
        await gone  # Twisted noticed and closed the connection; no exception reached the caller
