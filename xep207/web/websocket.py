"""XMPP over WebSocket (RFC 7395): the c2s stream, adapted at the transport edge.

A WebSocket carries one complete XML element per text message, and the stream
header and footer become ``<open/>`` and ``<close/>`` elements of their own
namespace. Everything in between — SASL, bind, limits, shaping, routing — is the
TCP stream's own code: ``WebSocketStream`` is a ``ServerStream`` run by the same
``ClientNegotiator``. Incoming messages are turned back into the byte stream that
class parses (an ``<open/>`` becomes a ``<stream:stream>`` header, each stanza is
fed as it came, after checking it is exactly one element), and every element it
sends leaves as one message, namespace declarations included. TLS is the HTTPS
layer beneath, so the stream offers no STARTTLS and no XEP-0138 compression.
"""

from __future__ import annotations

import re
import uuid
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.words.xish import domish
from zope.interface import directlyProvides

from xep207.server.c2s import AuthThrottle, C2SPolicy, ClientNegotiator, PendingConnections
from xep207.server.stream import NS_STREAMS, ServerStream, as_one_read

if TYPE_CHECKING:
    from xep207.server.backpressure import Backpressure

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_XML = "http://www.w3.org/XML/1998/namespace"
SUBPROTOCOL = "xmpp"
PATH = b"xmpp-websocket"
CLOSE = f"<close xmlns='{NS_FRAMING}'/>"
# RFC 7395 §3.3.3 does not recommend an XML declaration in a message, but allows it.
_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>")
_START_TAG_NAME = re.compile(r"<([^\s/>]+)")


class FramingError(Exception):
    """A message that is not one element RFC 7395 allows here; ``condition`` is
    the RFC 6120 stream error it earns."""

    def __init__(self, condition: str, text: str):
        super().__init__(text)
        self.condition = condition


def _refuse(*_):
    raise FramingError("restricted-xml", "DTDs, entities, comments and processing instructions are not allowed")


def parse_frame_header(data: bytes) -> tuple[str, dict[str, str]]:
    """The name (``open`` or ``close``) and attributes of a framing element sent
    where a stream header is expected (a message of its own, parsed alone)."""
    parser = expat.ParserCreate(namespace_separator=" ")
    found: list[tuple[str, dict[str, str]]] = []
    depth = 0

    def start(name, attributes):
        nonlocal depth
        depth += 1
        if depth > 1 or found:
            raise FramingError("not-well-formed", "one empty <open/> element per message (RFC 7395 §3.3.3)")
        found.append((name, attributes))

    def end(name):
        nonlocal depth
        depth -= 1

    def text(data):
        if data.strip():
            raise FramingError("not-well-formed", "text outside an element")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    for handler in ("StartDoctypeDeclHandler", "EntityDeclHandler", "CommentHandler",
                    "ProcessingInstructionHandler", "UnparsedEntityDeclHandler", "NotationDeclHandler"):
        setattr(parser, handler, _refuse)
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise FramingError("not-well-formed", str(exc)) from None
    if not found:
        raise FramingError("not-well-formed", "no element in the message")
    name, attributes = found[0]
    uri, _, local = name.rpartition(" ")
    if uri != NS_FRAMING or local not in ("open", "close"):
        raise FramingError("invalid-namespace", f"expected <open xmlns='{NS_FRAMING}'/> (RFC 7395 §3.4)")
    return local, attributes


def stream_header(attributes: dict[str, str]) -> bytes:
    """The RFC 6120 stream header an ``<open/>`` stands for (RFC 7395 §3.3.2: same attributes)."""
    header = [f"<stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}'"]
    for name, value in attributes.items():
        uri, _, local = name.rpartition(" ")
        if uri == NS_XML and local == "lang":
            header.append(f" xml:lang={quoteattr(value)}")
        elif not uri and local in ("to", "from", "version", "id"):
            header.append(f" {local}={quoteattr(value)}")
    header.append(">")
    return "".join(header).encode("utf-8")


def with_client_namespace(text: str) -> str:
    """Serialized stanza text as a standalone document: the router's text omits
    ``xmlns='jabber:client'``, inherited on a TCP stream from its header."""
    end = text.find(">")
    start_tag = text[:end]
    if " xmlns=" in start_tag or not start_tag.startswith("<"):
        return text
    match = _START_TAG_NAME.match(text)
    if match is None or ":" in match.group(1):
        return text
    cut = match.end()
    return f"{text[:cut]} xmlns='jabber:client'{text[cut:]}"


class FrameTransport:
    """What a ``WebSocketStream`` writes to: each write is one text message.
    Flow control and addresses are the underlying connection's."""

    def __init__(self, protocol: XMPPWebSocketProtocol):
        self._protocol = protocol

    @property
    def _connection(self) -> Any:
        return self._protocol.transport

    def write(self, data: bytes) -> None:
        self._protocol.sendMessage(data, isBinary=False)

    def writeSequence(self, data) -> None:
        for chunk in data:
            self.write(chunk)

    def loseConnection(self) -> None:
        self._protocol.sendClose(1000)

    def abortConnection(self) -> None:
        if self._connection is not None:
            self._connection.abortConnection()

    def getPeer(self):
        return self._protocol.peer_address

    def getHost(self):
        return self._protocol.host_address

    def registerProducer(self, producer, streaming) -> None:
        connection = self._connection
        if connection is None:
            return
        # twisted.web's channel registered itself before the WebSocket took the
        # connection over; the stream is its producer now.
        connection.unregisterProducer()
        connection.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if self._connection is not None:
            self._connection.unregisterProducer()

    def pauseProducing(self) -> None:
        if self._connection is not None:
            self._connection.pauseProducing()

    def resumeProducing(self) -> None:
        if self._connection is not None:
            self._connection.resumeProducing()


class WebSocketStream(ServerStream):
    """A client stream whose bytes come and go as RFC 7395 messages."""

    # Messages received while the storage writer was behind, handled once it
    # caught up (``xep207.server.backpressure``; a TCP stream keeps the bytes
    # it read unparsed instead). None while there are none.
    _waiting: deque[bytes] | None = None

    def __init__(self, authenticator, domain: str, *args, **kwargs):
        super().__init__(authenticator, *args, **kwargs)
        self.domain = domain
        self._awaiting_open = True
        self._held: list[domish.Element] = []

    # One element per message: never several stanzas in one write.
    @property
    def coalesce(self) -> bool:
        return False

    @coalesce.setter
    def coalesce(self, value: bool) -> None:
        pass

    def reset(self) -> None:
        """A stream restart (after SASL): the client sends a new ``<open/>``."""
        super().reset()
        self._awaiting_open = True

    def _install_parser_handlers(self, stream, parser) -> None:
        super()._install_parser_handlers(stream, parser)  # (each fresh parser's too)
        on_text = parser.CharacterDataHandler

        def text(data):
            if stream.currElem is None and data.strip():
                raise domish.ParserError("text outside an element (RFC 7395 §3.3.3)")
            on_text(data)

        parser.CharacterDataHandler = text

    # Incoming ------------------------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        """One text message from the client."""
        if self.stream is None:
            return
        if self._waiting or self._wait_for_storage():
            if self._waiting is None:
                self._waiting = deque()
            self._waiting.append(data)  # (the connection is paused: what its last read held)
            return
        self._handle_message(data)

    def storage_caught_up(self) -> None:
        """``ServerStream``'s, for messages: those that waited are handled in
        order, until the storage is behind again (the rest then wait on)."""
        super().storage_caught_up()
        waiting = self._waiting
        while waiting and self.stream is not None and not self._wait_for_storage():
            self._handle_message(waiting.popleft())
        if not waiting:
            self._waiting = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        waiting, self._waiting = self._waiting, None
        while waiting and self.stream is not None:  # sent before it closed (RFC 6120 §10.1)
            self._handle_message(waiting.popleft())
        super().connectionLost(reason)

    def _handle_message(self, data: bytes) -> None:
        if self.stream is None:
            return  # (failed while the message waited)
        data = _DECLARATION.sub(b"", data, count=1).strip()
        if not data:
            return  # whitespace: a keepalive, as on TCP
        if len(data) > self.limits.stanza_size:
            return self.fail("policy-violation", f"stanza larger than {self.limits.stanza_size} bytes")
        if self._awaiting_open:
            return self._open(data)
        # Parsed by the stream's own parser (its limits and restrictions), each
        # element held until the whole message proved to be exactly one.
        stream, self._held = self.stream, []
        parser = self.live_parser(stream)  # renewed if freed while idle
        start = parser.CurrentByteIndex
        # At once, whole: not a slice per reactor turn as a large TCP read
        # (dataReceived), or the element is still unparsed when counted below.
        self._feed(data)
        held, self._held = self._held, []
        if self.stream is not stream:
            return  # failed while parsing: the stream error is out
        # expat keeps a token it could not finish (``<iq/><mess``) for the next
        # message without a word: its position then stops short of the end.
        if len(held) != 1 or stream.currElem is not None or parser.CurrentByteIndex != start + len(data):
            return self.fail("not-well-formed", "a message carries exactly one complete element (RFC 7395 §3.3.3)")
        element = held[0]
        if element.uri == NS_FRAMING:
            if element.name == "close":
                self.stream = None  # nothing more is read
                return self.onDocumentEnd()
            return self.fail("bad-format", f"<{element.name}/> where a stanza was expected")
        self.onElement(element)

    def _open(self, data: bytes) -> None:
        try:
            name, attributes = parse_frame_header(data)
        except FramingError as exc:
            return self.fail(exc.condition, str(exc))
        if name == "close":
            self.stream = None
            return self.onDocumentEnd()
        self._awaiting_open = False
        self.dataReceived(stream_header(attributes))

    def _on_complete_stanza(self, element) -> None:
        if len(self._held) >= 1:
            raise domish.ParserError("more than one element in a message (RFC 7395 §3.3.3)")
        self._held.append(element)

    def control_frame(self, received: int, answer: int) -> bool:
        """A ping (``received`` bytes) that autobahn answers with a pong (``answer``
        bytes) beside our messages: charged to shaping like data, and its answer
        counted toward the unread output. False when that drops the peer."""
        self._charge(received)
        if self._output_blocked:
            self._queued_output += answer
            if self._queued_output > self.shaping.max_output:
                self._drop_reader()
                return False
        return True

    # Outgoing ------------------------------------------------------------------------

    def sendHeader(self) -> None:
        opening = domish.Element((NS_FRAMING, "open"))
        opening["from"] = self.domain
        opening["id"] = self.sid or uuid.uuid4().hex
        opening["version"] = "1.0"
        opening[(NS_XML, "lang")] = "en"
        ServerStream.send(self, opening.toXml())
        self._headerSent = True

    def send_header(self, features: str) -> None:
        self.sendHeader()  # RFC 7395: the <open/> is a message of its own
        self.send(features)

    def sendFooter(self) -> None:
        ServerStream.send(self, CLOSE)

    def serialize(self, element: Any) -> str:
        return element.toXml(prefixes={NS_STREAMS: "stream"}, prefixesInScope=[])  # each message stands alone

    def send(self, obj) -> None:
        if domish.IElement.providedBy(obj):
            obj = self.serialize(obj)
        elif isinstance(obj, bytes):
            obj = obj.decode("utf-8")
        super().send(with_client_namespace(obj))


class XMPPWebSocketProtocol(WebSocketServerProtocol):
    """The WebSocket side: handshake with subprotocol ``xmpp``, text messages
    handed to a ``WebSocketStream``."""

    factory: XMPPWebSocketFactory
    stream: WebSocketStream | None = None
    transport: Any  # the TCP or TLS connection
    peer_address: Any = None  # kept for the stream's log lines once the connection is gone
    host_address: Any = None

    def onConnect(self, request):
        if SUBPROTOCOL not in request.protocols:
            # RFC 7395 §3.1: without the subprotocol this is not an XMPP connection.
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "the WebSocket subprotocol 'xmpp' is required")
        return SUBPROTOCOL

    def onOpen(self):
        self.peer_address = self.transport.getPeer()
        self.host_address = self.transport.getHost()
        stream = self.factory.build_stream()
        transport = FrameTransport(self)
        if self.factory.secure:
            directlyProvides(transport, ISSLTransport)  # the negotiator's tls_active
        self.stream = stream
        stream.makeConnection(transport)

    def dataReceived(self, data):
        # One read may hold several messages: what they cause leaves once it is handled.
        as_one_read(super().dataReceived, data)

    def onMessage(self, payload, isBinary):
        if isBinary:
            # RFC 7395 §3.2: text only; RFC 6455 §7.4.1's code for data of a type not accepted.
            self._fail_connection(1003, "XMPP over WebSocket uses text messages")
            return
        if self.stream is not None:
            self.stream.message_received(payload)

    def onPing(self, payload):
        # A pong is written straight to the connection: bounded like the stream's output.
        stream = self.stream
        if stream is not None and not stream.control_frame(len(payload) + 6, len(payload) + 2):
            return
        super().onPing(payload)

    def onClose(self, wasClean, code, reason):
        # autobahn leaves the timer of a close it started running when the peer
        # drops the connection instead of answering; nothing is left to time out.
        for name in ("closeHandshakeTimeoutCall", "autoPingPendingCall", "autoPingTimeoutCall"):
            call = getattr(self, name, None)
            if call is not None:
                call.cancel()
                setattr(self, name, None)
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.connectionLost(Failure(ConnectionError(f"WebSocket closed ({code})")))


class XMPPWebSocketFactory(WebSocketServerFactory):
    """Builds streams as the TCP ``ClientFactory`` does, with a policy of their own
    (no STARTTLS, no compression) but the same router, throttle and unauthenticated cap."""

    protocol = XMPPWebSocketProtocol  # type: ignore[assignment]  # autobahn's factories are untyped

    def __init__(self, policy: C2SPolicy, router, throttle: AuthThrottle, pending: PendingConnections,
                 secure: bool, clock=None, backpressure: Backpressure | None = None):
        super().__init__(server="xep207")
        self.policy = replace(policy, tls=None, require_tls=False, compression=False)
        self.router = router
        self.throttle = throttle
        self.pending = pending
        self.secure = secure
        self.clock = clock  # the reactor; tests inject a task.Clock to drive traffic shaping
        self.backpressure = backpressure  # as the TCP listener's (``ServerStream.backpressure``)
        self.noisy = False
        largest = self.policy.limits.stanza_size + 1024
        self.setProtocolOptions(
            maxMessagePayloadSize=largest, maxFramePayloadSize=largest,
            perMessageCompressionAccept=lambda offers: None,  # secrets beside attacker data (CRIME)
            failByDrop=False,  # a protocol error gets its RFC 6455 close code, not a dropped connection
            openHandshakeTimeout=30, closeHandshakeTimeout=5, autoPingInterval=60, autoPingTimeout=30)

    def build_stream(self) -> WebSocketStream:
        policy = self.policy
        negotiator = ClientNegotiator(policy, self.router, self.throttle, self.pending)
        stream = WebSocketStream(negotiator, policy.domain, policy.limits, policy.pre_auth_limits,
                                 policy.shaping, clock=self.clock)
        stream.factory = self  # (its backpressure)
        return stream


class WebSocketEndpoint(WebSocketResource):
    """``/xmpp-websocket``: the WebSocket handshake, and a short answer for
    anything else (autobahn's own page would name its version)."""

    def render(self, request):
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if request.postpath or upgrade != b"websocket":
            request.setResponseCode(426 if not request.postpath else 404)
            request.setHeader(b"Upgrade", b"websocket")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"XMPP over WebSocket (RFC 7395): connect here with the subprotocol 'xmpp'.\n"
        return super().render(request)


def websocket_factory(server, secure: bool) -> XMPPWebSocketFactory:
    """The WebSocket endpoint of a running ``Server``: its c2s policy, router,
    throttle, and its TCP listener's count of unauthenticated connections and backpressure."""
    return XMPPWebSocketFactory(server.policy, server.router, server.throttle, server.client_factory.pending,
                                secure, backpressure=server.client_factory.backpressure)


__all__ = ["NS_FRAMING", "WebSocketEndpoint", "WebSocketStream", "XMPPWebSocketFactory", "websocket_factory"]
