"""What the server writes to a bound client: TCP_NODELAY, one write per reactor
turn (in pieces of at most one TLS record), and nothing queued lost or
reordered when the stream ends."""

import socket

from twisted.internet import reactor, task

from tests.server_helpers import DOMAIN, ServerTestCase

from xep207.server import stream as stream_module
from xep207.server.stream import WRITE_CHUNK


class Output(ServerTestCase):
    server_args = ("--no-tls", "--allow-plaintext-auth")

    async def setUp(self):
        await self.start_server()
        self.client = await self.connect()
        await self.client.login("alice", resource="out")
        self.session = self.server.router.session(f"alice@{DOMAIN}/out")
        self.writes = []
        transport = self.session.stream.transport
        real_write = stream_module.write_now

        def counting_write(to, data):  # a spy: the real write still happens
            if to is transport:
                self.writes.append(len(data))
            real_write(to, data)

        self.patch(stream_module, "write_now", counting_write)

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
