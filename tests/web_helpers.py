"""A real WebSocket client (autobahn's) for the server's RFC 7395 endpoint, and
plain HTTP requests (twisted.web's Agent) for its other resources."""

from __future__ import annotations

import base64

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, reactor, ssl
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, PartialDownloadError, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from twisted.words.xish import domish
from zope.interface import implementer

from tests.server_helpers import DOMAIN, PASSWORD

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"


def parse_message(text: str) -> domish.Element:
    """One WebSocket message as a standalone XML document (RFC 7395 §3.3.3): fails
    the test if it is not exactly one well-formed element."""
    found: list = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = found.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(b"<message-wrapper>" + text.encode("utf-8") + b"</message-wrapper>")
    if len(found) != 1:
        raise AssertionError(f"not one element: {text!r}")
    return found[0]


class XMPPWebSocketClient(WebSocketClientProtocol):
    """Sends text messages, keeps every message received, waits on them."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []
        self._consumed: set[int] = set()
        self._waiters: list = []
        self.opened: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()
        self.subprotocol = None
        self.jid = None

    def onConnect(self, response):
        self.subprotocol = response.protocol

    def onOpen(self):
        self.opened.callback(self)

    def onMessage(self, payload, isBinary):
        assert not isBinary, "the server sent a binary message"
        self.messages.append(payload.decode("utf-8"))
        self._check()

    def onClose(self, wasClean, code, reason):
        self.close_code, self.close_reason = code, reason
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {code} {reason}"))
        for _, d in self._waiters:
            d.errback(AssertionError(f"closed ({code} {reason}) while waiting; got {self.messages[-5:]}"))
        self._waiters = []
        self.closed.callback((code, reason))

    def _check(self):
        for match, d in list(self._waiters):
            for index, text in enumerate(self.messages):
                if index in self._consumed:
                    continue
                element = parse_message(text)
                if match(element):
                    self._waiters.remove((match, d))
                    self._consumed.add(index)
                    d.callback(element)
                    break

    def wait_for(self, match, timeout: float = 10) -> defer.Deferred:
        """The first message not yet consumed (received or to come) for which ``match(element)`` holds."""
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((match, d))
        self._check()
        return d.addTimeout(timeout, reactor)

    def next_named(self, name: str, timeout: float = 10) -> defer.Deferred:
        return self.wait_for(lambda e: e.name == name, timeout)

    def send_text(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"), isBinary=False)

    def open_stream(self, to: str = DOMAIN) -> None:
        self.send_text(f"<open xmlns='{NS_FRAMING}' to='{to}' version='1.0' xml:lang='en'/>")

    async def features(self, to: str = DOMAIN) -> domish.Element:
        self.open_stream(to)
        opening = await self.next_named("open")
        assert opening.uri == NS_FRAMING, opening.toXml()
        return await self.next_named("features")

    async def login(self, user: str, password: str = PASSWORD, resource: str = "ws") -> None:
        """PLAIN, a stream restart, bind: as a browser client does over wss://."""
        await self.features()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send_text(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        success = await self.wait_for(lambda e: e.name in ("success", "failure"))
        assert success.name == "success", success.toXml()
        await self.features()
        self.send_text(f"<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns='{NS_BIND}'>"
                       f"<resource>{resource}</resource></bind></iq>")
        result = await self.wait_for(lambda e: e.getAttribute("id") == "bind")
        assert result["type"] == "result", result.toXml()
        self.jid = f"{user}@{DOMAIN}/{resource}"


@implementer(IPolicyForHTTPS)
class _TrustAll:
    """The test server's self-signed certificate, accepted (its name is checked elsewhere)."""

    def creatorForNetloc(self, hostname, port):
        return ssl.CertificateOptions(verify=False)


async def connect_ws(testcase, url: str, protocols=("xmpp",)) -> XMPPWebSocketClient:
    """A WebSocket client connected to ``url`` (ws:// or wss://), closed after the test."""
    factory = WebSocketClientFactory(url, protocols=list(protocols) or None)
    factory.protocol = XMPPWebSocketClient
    factory.noisy = False
    made: defer.Deferred = defer.Deferred()

    def build(addr):
        protocol = WebSocketClientFactory.buildProtocol(factory, addr)
        made.callback(protocol)
        return protocol

    factory.buildProtocol = build
    context = ssl.CertificateOptions(verify=False) if url.startswith("wss:") else None
    connectWS(factory, context)
    client = await made

    async def close():
        if not client.closed.called:
            client.transport.abortConnection()
            await client.closed

    testcase.addCleanup(close)
    await client.opened
    return client


async def http_request(method: str, url: str, body: bytes | None = None,
                       headers: dict[str, str] | None = None) -> tuple[int, Headers, bytes]:
    """One real HTTP(S) request; (status, response headers, body)."""
    from twisted.web.client import FileBodyProducer
    from io import BytesIO

    agent = Agent(reactor, contextFactory=_TrustAll() if url.startswith("https:") else BrowserLikePolicyForHTTPS())
    producer = FileBodyProducer(BytesIO(body)) if body is not None else None
    raw = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
    response = await agent.request(method.encode(), url.encode(), raw, producer)
    try:
        data = await readBody(response)
    except PartialDownloadError as exc:  # a body without a length, ended by the connection
        data = exc.response
    headers = response.headers.copy()
    if isinstance(response.length, int) and method != "HEAD":
        # Agent keeps connection-control headers apart: put the length back for the tests
        headers.setRawHeaders("content-length", [str(response.length)])
    return response.code, headers, data
