"""The web port attacked: what a stranger on the network, a hostile page and a
fussy client can do to the HTTP port, its WebSocket endpoint and its uploads.
Real sockets throughout; raw bytes where a well-behaved client library would
not send what is being tried."""

from __future__ import annotations

import socket
from urllib.parse import parse_qs, urlsplit, urlunsplit

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from tests.server_helpers import DOMAIN, ServerTestCase
from tests.web_helpers import NS_FRAMING, connect_ws, http_request
from xep207.web.upload import NS_UPLOAD

UPLOAD = f"upload.{DOMAIN}"


class RawHTTP(protocol.Protocol):
    """A TCP connection that sends bytes as told and keeps what comes back."""

    def __init__(self):
        self.received = b""
        self.lost: defer.Deferred = defer.Deferred()
        self._waiting: list = []

    def dataReceived(self, data):
        self.received += data
        for marker, d in list(self._waiting):
            if marker in self.received:
                self._waiting.remove((marker, d))
                d.callback(self.received)

    def connectionLost(self, reason):
        for _, d in self._waiting:
            d.errback(ConnectionError(f"closed; got {self.received[:300]!r}"))
        self._waiting = []
        self.lost.callback(self.received)

    def wait_for(self, marker: bytes, timeout: float = 10) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        if marker in self.received:
            d.callback(self.received)
            return d
        self._waiting.append((marker, d))
        return d.addTimeout(timeout, reactor)

    def closed(self, timeout: float = 10) -> defer.Deferred:
        """The whole answer, once the server has closed the connection."""
        d: defer.Deferred = defer.Deferred()
        self.lost.addCallback(lambda data: (d.called or d.callback(data), data)[1])
        return d.addTimeout(timeout, reactor)


async def raw_http(testcase, port: int) -> RawHTTP:
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawHTTP())

    def close():
        if client.transport.connected:
            client.transport.abortConnection()
            return client.lost

    testcase.addCleanup(close)
    return client


class PlainWebPort(ServerTestCase):
    """Plain HTTP on loopback (raw requests), uploads of up to 1 MB."""

    server_args = ("--tls-optional", "--allow-plaintext-auth", "--http-port", "0", "--http-plain",
                   "--http-interfaces", "127.0.0.1", "--upload-max-size", "1000000",
                   "--upload-quota", "3000000")

    async def setUp(self):
        await self.start_server()
        self.web_port = self.server.web.port
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.upload = self.server.web.upload
        self._ids = 0

    async def slot(self, client, filename="cat.png", size=1000, content_type="image/png") -> tuple[str, str]:
        self._ids += 1
        client.send(f"<iq type='get' to='{UPLOAD}' id='s{self._ids}'><request xmlns='{NS_UPLOAD}' "
                    f"filename='{filename}' size='{size}' content-type='{content_type}'/></iq>")
        answer = await client.wait_for(lambda e: e.getAttribute("id") == f"s{self._ids}")
        self.assertEqual(answer["type"], "result", answer.toXml())
        return tuple(self.local(answer.slot.elements(NS_UPLOAD, kind).__next__()["url"])  # type: ignore[return-value]
                     for kind in ("put", "get"))

    def local(self, url: str) -> str:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.web_port}"))

    async def alice(self):
        client = await self.connect()
        await client.login("alice", resource="up")
        return client

    # A stranger's body is not buffered -----------------------------------------------

    async def test_a_strangers_large_body_is_refused_before_it_is_read(self):
        """Before: any request (an unsigned PUT to /upload/, a POST to host-meta)
        could announce a body as large as the largest upload, and twisted.web
        read all of it to a temporary file before the resource could refuse:
        disk and memory for anyone who connects, a thousand connections at a time."""
        for head in (f"PUT /upload/{'0' * 32}/cat.png?e=9999999999&u=alice%40{DOMAIN}&t=image%2Fpng&s={'0' * 64} "
                     "HTTP/1.1",
                     "PUT /upload/x HTTP/1.1",
                     "POST /.well-known/host-meta HTTP/1.1",
                     "PUT /xmpp-websocket HTTP/1.1"):
            client = await raw_http(self, self.web_port)
            client.transport.write(f"{head}\r\nHost: {DOMAIN}\r\nContent-Length: 999999\r\n\r\n".encode()
                                   + b"x" * 1000)
            answer = await client.closed()
            self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), (head, answer[:200]))

    async def test_a_signed_large_upload_is_still_accepted(self):
        client = await self.alice()
        put, get = await self.slot(client, size=999999)
        status, _, _ = await http_request("PUT", put, b"y" * 999999, {"Content-Type": "image/png"})
        self.assertEqual(status, 201)
        # the same URL again (used), or for another size: refused before the body
        for length in (999999, 999998):
            raw = await raw_http(self, self.web_port)
            raw.transport.write(f"PUT {urlsplit(put).path}?{urlsplit(put).query} HTTP/1.1\r\nHost: {DOMAIN}\r\n"
                                f"Content-Type: image/png\r\nContent-Length: {length}\r\n\r\n".encode())
            answer = await raw.closed()
            self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        status, _, data = await http_request("GET", get)
        self.assertEqual((status, len(data)), (200, 999999))

    async def test_an_expired_url_does_not_buy_a_large_body(self):
        from twisted.internet import task

        client = await self.alice()
        clock = task.Clock()
        clock.advance(self.upload.clock.seconds())
        self.upload.clock = clock
        put, _ = await self.slot(client, size=500000)
        clock.advance(301)
        raw = await raw_http(self, self.web_port)
        parts = urlsplit(put)
        raw.transport.write(f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {DOMAIN}\r\n"
                            f"Content-Type: image/png\r\nContent-Length: 500000\r\n\r\n".encode())
        answer = await raw.closed()
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])

    # Slot ids and signatures ----------------------------------------------------------

    async def test_a_slot_id_with_a_trailing_newline_is_no_slot_id(self):
        """Before: the slot id pattern ended in "$", which matches before a final
        newline: ``/upload/<32 hex>%0A/...`` passed as a slot id."""
        from xep207.web.upload import SLOT_ID

        self.assertIsNone(SLOT_ID.match("0" * 32 + "\n"))
        with self.assertRaises(AssertionError):
            self.upload.store.path("0" * 32 + "\n")
        status, _, _ = await http_request("GET", f"{self.base}/upload/{'0' * 32}%0A/cat.png")
        self.assertEqual(status, 404)

    async def test_forged_signatures_are_refused(self):
        """Held: upper-case hex, a truncated or extended signature, the signature
        of one slot on another, a changed name, owner, type or size."""
        client = await self.alice()
        put, get = await self.slot(client)
        other, _ = await self.slot(client, filename="dog.png")
        parts, other_parts = urlsplit(put), urlsplit(other)
        query, other_query = parse_qs(parts.query), parse_qs(other_parts.query)
        signature = query["s"][0]

        def with_query(**changes) -> str:
            changed = dict({k: v[0] for k, v in query.items()}, **changes)
            return urlunsplit(parts._replace(query="&".join(f"{k}={v}" for k, v in changed.items())))

        forged = [with_query(s=signature.upper()), with_query(s=signature[:32]), with_query(s=signature + "00"),
                  with_query(s=other_query["s"][0]), with_query(s=signature, e=query["e"][0] + "0"),
                  with_query(t="image%2Fsvg%2Bxml"), with_query(s=[signature, signature][0] + "&s=" + signature),
                  urlunsplit(other_parts._replace(query=parts.query)),
                  urlunsplit(parts._replace(path=parts.path.replace(".png", ".PNG")))]
        for url in forged:
            status, _, _ = await http_request("PUT", url, b"x" * 1000, {"Content-Type": "image/png"})
            self.assertEqual(status, 403, url)
        status, _, _ = await http_request("GET", get)
        self.assertEqual(status, 404)
        status, _, _ = await http_request("PUT", put, b"x" * 1000, {"Content-Type": "image/png"})
        self.assertEqual(status, 201)


    # What held ----------------------------------------------------------------------

    async def test_two_slot_requests_at_once_cannot_exceed_the_quota(self):
        """Held: the quota counts issued slots, decided synchronously per request."""
        client = await self.alice()
        client.send("".join(f"<iq type='get' to='{UPLOAD}' id='race{i}'><request xmlns='{NS_UPLOAD}' "
                            f"filename='f{i}' size='900000'/></iq>" for i in range(4)))
        answers = [await client.wait_for(lambda e, i=i: e.getAttribute("id") == f"race{i}") for i in range(4)]
        self.assertEqual([a["type"] for a in answers], ["result", "result", "result", "error"])

    async def test_other_methods_ranges_and_hostile_names(self):
        """Held: POST is 405, DELETE 501 (twisted.web's escaped pages), a Range is answered with the whole file (200),
        a name with quotes, CR/LF and unicode cannot break the Content-Disposition."""
        client = await self.alice()
        put, get = await self.slot(client, filename="a&quot;b&#13;&#10;X-Evil: 1;é.txt", content_type="text/plain")
        status, _, _ = await http_request("PUT", put, b"z" * 1000, {"Content-Type": "text/plain"})
        self.assertEqual(status, 201)
        for method, code in (("DELETE", 501), ("POST", 405)):
            status, _, _ = await http_request(method, get, b"" if method == "POST" else None)
            self.assertEqual(status, code, method)
        raw = await raw_http(self, self.web_port)
        raw.transport.write(f"<script>alert(1)</script> {urlsplit(get).path} HTTP/1.1\r\nHost: x\r\n"
                            "Connection: close\r\n\r\n".encode())
        self.assertNotIn(b"<script>", await raw.closed())
        status, headers, data = await http_request("GET", get, headers={"Range": "bytes=0-9"})
        self.assertEqual((status, len(data)), (200, 1000))
        disposition = headers.getRawHeaders("content-disposition")
        self.assertEqual(len(disposition), 1)
        self.assertFalse(headers.hasHeader("x-evil"))
        self.assertEqual(disposition[0], "inline; filename=\"a_bX-Evil_ 1__.txt\"; "
                                         "filename*=UTF-8''a%22bX-Evil%3A%201%3B%C3%A9.txt")
        self.assertEqual(headers.getRawHeaders("content-security-policy"), ["default-src 'none'; sandbox"])

    async def test_host_meta_ignores_the_host_header(self):
        """Held: the advertised URL is built from the domain, never from Host."""
        for path in ("/.well-known/host-meta", "/.well-known/host-meta.json"):
            raw = await raw_http(self, self.web_port)
            raw.transport.write(f"GET {path} HTTP/1.1\r\nHost: evil.example\"><x\r\n"
                                "Connection: close\r\n\r\n".encode())
            answer = await raw.closed()
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
            self.assertNotIn(b"evil", answer)
            self.assertIn(f"ws://{DOMAIN}:{self.web_port}/xmpp-websocket".encode(), answer)
            self.assertIn(b"Access-Control-Allow-Origin: *", answer)

    async def test_smuggling_a_second_length_is_refused(self):
        """Held (twisted.web): two Content-Lengths, or a length beside chunked, are 400."""
        for headers in ("Content-Length: 5\r\nContent-Length: 6", "Content-Length: 5\r\nTransfer-Encoding: chunked",
                        "Content-Length: +5", "Transfer-Encoding: chunked, identity"):
            raw = await raw_http(self, self.web_port)
            raw.transport.write(f"POST /.well-known/host-meta HTTP/1.1\r\nHost: {DOMAIN}\r\n{headers}\r\n\r\n"
                                "hello0\r\n\r\nGET /x HTTP/1.1\r\n\r\n".encode())
            answer = await raw.closed()
            self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), (headers, answer[:100]))
            self.assertEqual(answer.count(b"HTTP/1.1 "), 1, headers)


class WebSocketFraming(ServerTestCase):
    """RFC 7395 §3.3.3 taken literally: one whole element per message."""

    server_args = ("--no-tls", "--allow-plaintext-auth", "--http-port", "0", "--http-plain",
                   "--http-interfaces", "127.0.0.1")

    async def setUp(self):
        await self.start_server()
        self.url = f"ws://127.0.0.1:{self.server.web.port}/xmpp-websocket"

    async def assert_stream_error(self, client, condition: str) -> None:
        error = await client.wait_for(lambda e: e.name == "error")
        self.assertEqual(error.firstChildElement().name, condition, error.toXml())
        await client.wait_for(lambda e: e.name == "close" and e.uri == NS_FRAMING)
        await client.closed

    async def test_a_message_ending_in_the_start_of_another_element(self):
        """Before: ``<iq/><iq`` passed as one element: expat kept the unfinished
        tag without an event and the next message completed it."""
        client = await connect_ws(self, self.url)
        await client.login("alice")
        client.send_text("<iq xmlns='jabber:client' type='get' id='one'><ping xmlns='urn:xmpp:ping'/></iq><iq")
        client.send_text(" xmlns='jabber:client' type='get' id='two'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self.assert_stream_error(client, "not-well-formed")
        self.assertFalse([m for m in client.messages if "id='one'" in m or "id='two'" in m], client.messages)

    async def test_a_message_ending_in_a_partial_tag_before_authentication(self):
        client = await connect_ws(self, self.url)
        await client.features()
        client.send_text("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth><a")
        await self.assert_stream_error(client, "not-well-formed")

    async def test_fragmented_messages_are_whole_messages(self):
        """Held: a message in many continuation frames is one message; its size
        limit counts all fragments (autobahn's maxMessagePayloadSize)."""
        client = await connect_ws(self, self.url)
        await client.login("alice")
        stanza = b"<iq xmlns='jabber:client' type='get' id='frag'><ping xmlns='urn:xmpp:ping'/></iq>"
        client.beginMessage(isBinary=False)
        for i in range(0, len(stanza), 7):
            client.sendMessageFrame(stanza[i:i + 7])
        client.endMessage()
        answer = await client.wait_for(lambda e: e.getAttribute("id") == "frag")
        self.assertEqual(answer["type"], "result")
        # fragments adding up past the largest stanza: a WebSocket close (1009), nothing parsed
        client.beginMessage(isBinary=False)
        client.sendMessageFrame(b"<message xmlns='jabber:client' to='bob@localhost'><body>")
        for _ in range(300):
            client.sendMessageFrame(b"x" * 1024)
        code, _ = await client.closed
        self.assertEqual(code, 1009)


PING = b"\x89\xfd\x00\x00\x00\x00" + b"p" * 125  # a masked ping (all-zero mask) of 125 bytes


@implementer(IPushProducer)
class Flood:
    """Writes ``batch`` again and again as fast as the connection takes it (no
    faster: the bytes are the server's to read, not this process's to buffer),
    up to ``limit`` bytes."""

    def __init__(self, transport, batch: bytes, limit: int):
        self.transport, self.batch, self.limit = transport, batch, limit
        self.sent = 0
        self.paused = False
        transport.registerProducer(self, True)
        reactor.callLater(0, self.resumeProducing)

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.sent < self.limit and self.transport.connected:
            self.transport.write(self.batch)
            self.sent += len(self.batch)

    def pauseProducing(self):
        self.paused = True

    def stopProducing(self):
        self.paused = True


class WebSocketAttacks(ServerTestCase):
    """ws:// on loopback with a small output bound and no rate limit (shaping
    would stop reading the flood first, and hide the output bound)."""

    server_args = ("--no-tls", "--allow-plaintext-auth", "--http-port", "0", "--http-plain",
                   "--http-interfaces", "127.0.0.1", "--max-output-buffer", "65536", "--c2s-rate", "0")

    async def setUp(self):
        await self.start_server()
        self.url = f"ws://127.0.0.1:{self.server.web.port}/xmpp-websocket"

    async def test_a_ping_flood_from_a_peer_that_does_not_read_is_dropped(self):
        """Before: autobahn answered every ping with a pong written past the
        stream's output bound, so a client that sends pings and reads nothing
        grew the server's write buffer by what it sent, without end."""
        client = await connect_ws(self, self.url)
        client.open_stream()
        await client.next_named("features")
        client.transport.pauseProducing()  # reads nothing more
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        flood = Flood(client.transport, PING * 500, limit=48 * 1024 * 1024)
        await client.closed.addTimeout(60, reactor)
        self.assertLess(flood.sent, flood.limit)
