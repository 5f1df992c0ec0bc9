"""A real xep207 server inside your test process, and real clients logged into it.

For people who embed xep207 (or write a component, a bot, a bridge) and want
to test against the genuine article: the server listens on a free loopback
port with STARTTLS, SCRAM and PLAIN exactly as in production; the clients are
Twisted's own XMPP client (STARTTLS, SASL, resource binding) over that socket.
Everything waits on stanzas, never on time, and everything is cleaned up.

From a ``twisted.trial`` test case::

    server = await start_server({"alice": "wonderland", "bob": "builder"})
    self.addCleanup(server.stop)
    alice = await server.login("alice")

From pytest with pytest-twisted, ``server_fixture`` makes the same a fixture.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from typing import Callable, Mapping

from twisted.internet import defer, reactor, ssl
from twisted.words.protocols.jabber import client, jid as jidlib, xmlstream
from twisted.words.xish import domish

from xep207.server import accounts as account_store
from xep207.server.tap import Server
from xep207.tap import Options
from xep207.xmlutil import parse_stanza

Match = Callable[[domish.Element], bool]
_ids = itertools.count(1)


def _element(stanza: str | domish.Element) -> domish.Element:
    return parse_stanza(stanza, "jabber:client") if isinstance(stanza, str) else stanza


class Client:
    """One logged-in, bound client stream."""

    def __init__(self, stream: xmlstream.XmlStream):
        self.stream = stream
        self.jid: str = stream.authenticator.jid.full()
        self.received: list[domish.Element] = []
        self._waiters: list[tuple[Match, defer.Deferred]] = []
        self._connected = True
        self._on_close: list[defer.Deferred] = []
        self._consumed: set[domish.Element] = set()  # received, and already given to a wait
        stream.addObserver("/*", self._on_stanza)
        stream.addObserver(xmlstream.STREAM_END_EVENT, self._on_stream_end)

    def send(self, stanza: str | domish.Element) -> None:
        """Send a stanza, given as XML text (``jabber:client`` is implied) or an Element."""
        self.stream.send(_element(stanza))

    def wait_for(self, match: Match, timeout: float = 10) -> defer.Deferred[domish.Element]:
        """The first stanza, already received or still to come, that ``match``es.

        Each stanza satisfies one wait only, so two waits for "a message" see two messages.
        """
        for stanza in self.received:
            if stanza not in self._consumed and match(stanza):
                self._consumed.add(stanza)
                return defer.succeed(stanza)
        d: defer.Deferred[domish.Element] = defer.Deferred(lambda _: self._forget(d))
        self._waiters.append((match, d))
        return d.addTimeout(timeout, reactor, onTimeoutCancel=self._timed_out)

    def _timed_out(self, _result, timeout: float):
        recent = "\n".join(s.toXml() for s in self.received[-5:]) or "nothing"
        raise defer.TimeoutError(f"{self.jid}: no matching stanza within {timeout}s; "
                                 f"the last ones received:\n{recent}")

    def request(self, iq: str | domish.Element,
                timeout: float = 10) -> defer.Deferred[domish.Element]:
        """Send an iq (an ``id`` is added when it has none); fires with its result or error."""
        stanza = _element(iq)
        if not stanza.getAttribute("id"):
            stanza["id"] = f"xep207-testing-{next(_ids)}"
        stanza_id = stanza["id"]
        d = self.wait_for(lambda s: s.name == "iq" and s.getAttribute("id") == stanza_id
                          and s.getAttribute("type") in ("result", "error"), timeout)
        self.send(stanza)
        return d

    def disconnect(self) -> defer.Deferred[None]:
        """Close the stream as a client would; fires once the connection is gone."""
        if not self._connected:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._on_close.append(d)
        if len(self._on_close) == 1:
            self.stream.sendFooter()
            transport = self.stream.transport
            assert transport is not None, "a connected stream has its transport"
            transport.loseConnection()
        return d

    def _on_stream_end(self, _reason) -> None:
        self._connected = False
        waiting, self._on_close = self._on_close, []
        for d in waiting:
            d.callback(None)

    def _forget(self, d: defer.Deferred) -> None:
        self._waiters = [(m, w) for m, w in self._waiters if w is not d]

    def _on_stanza(self, stanza: domish.Element) -> None:
        self.received.append(stanza)
        for match, d in list(self._waiters):
            if match(stanza):
                self._waiters.remove((match, d))
                self._consumed.add(stanza)
                d.callback(stanza)
                return


class RunningServer:
    """A started xep207 server on a free loopback port, and the accounts it was given."""

    def __init__(self, server: Server, data_dir: str, accounts: Mapping[str, str],
                 certificate: str | None):
        self.server = server  # the pieces (storage, engine, router), for tests that look inside
        self.domain: str = server.domain
        listening = server.listeners[0]._port
        assert listening is not None, "a started server listens"
        self.port: int = listening.getHost().port
        self.data_dir = data_dir
        self.accounts = dict(accounts)
        self.certificate = certificate  # what clients trust: the server's own (None: --no-tls)
        self._clients: list[Client] = []

    async def login(self, user: str, password: str | None = None, resource: str = "test",
                    available: bool = True) -> Client:
        """Connect, STARTTLS, authenticate, bind ``resource``; then, when ``available``,
        send initial presence and wait for its echo, so that messages to the bare JID
        reach this client from the moment this returns (RFC 6121)."""
        if password is None:
            password = self.accounts[user]
        if self.certificate is None:
            raise ValueError("login() speaks STARTTLS, as real clients do: keep the server's TLS")
        with open(self.certificate, "rb") as f:
            # Pinned: this server's own certificate is the only one trusted. (Not
            # optionsForClientTLS: its name check refuses the "*.localhost" a
            # self-signed certificate for "localhost" carries.)
            tls = ssl.CertificateOptions(trustRoot=ssl.Certificate.loadPEM(f.read()))
        factory = client.XMPPClientFactory(jidlib.JID(f"{user}@{self.domain}/{resource}"), password,
                                           configurationForTLS=tls)
        stream = await _authenticated_stream(factory, self.port)
        session = Client(stream)
        self._clients.append(session)
        if available:
            session.send("<presence/>")
            await session.wait_for(lambda s: s.name == "presence"
                                   and s.getAttribute("from") == session.jid)
        return session

    async def stop(self) -> None:
        """Disconnect the clients, stop the server, remove its data directory."""
        for session in self._clients:
            await session.disconnect()
        await self.server.top.stopService()
        shutil.rmtree(self.data_dir, ignore_errors=True)


async def _authenticated_stream(factory, port: int, timeout: float = 10) -> xmlstream.XmlStream:
    """Connect and wait until the stream is authenticated and bound. On failure the
    connection is gone before the error is raised: no stray socket, no retry."""
    ready: defer.Deferred[xmlstream.XmlStream] = defer.Deferred()
    gone: defer.Deferred[None] = defer.Deferred()
    streams = []

    def fail(reason):
        if not ready.called:
            ready.errback(reason)

    def connected(stream):
        factory.stopTrying()  # a test client never reconnects (the factory re-arms on connecting)
        streams.append(stream)

    def lost(reason):
        gone.callback(None)
        fail(reason)

    factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, connected)
    factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, ready.callback)
    factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, fail)
    factory.addBootstrap(xmlstream.STREAM_END_EVENT, lost)
    factory.clientConnectionFailed = lambda _connector, reason: fail(reason)
    connector = reactor.connectTCP("127.0.0.1", port, factory)
    try:
        return await ready.addTimeout(timeout, reactor)
    except BaseException:
        connector.disconnect()
        if streams and not gone.called:
            await gone
        raise


async def start_server(accounts: Mapping[str, str], *, domain: str = "localhost",
                       storage: str = "memory:", args: tuple[str, ...] = ()) -> RunningServer:
    """Start a server on a free port of 127.0.0.1 with ``accounts`` (user → password).

    ``args`` are ``twistd xep207`` options (``--registration``, say). Call ``stop()``
    when done: the fixture and ``addCleanup`` do.
    """
    data_dir = tempfile.mkdtemp(prefix="xep207-server-")
    server = None
    try:
        options = Options()
        options.parseOptions(["--domain", domain, "--data-dir", data_dir, "--storage", storage,
                              "--c2s-port", "0", "--c2s-interfaces", "127.0.0.1", "--c2s-direct-tls-port", "0",
                              *args])
        server = Server(options)
        server.top.startService()
        await server.storage_service.ready
        for user, password in accounts.items():
            await account_store.create_account(server.engine, f"{user}@{domain}", password)
    except BaseException:
        if server is not None:
            await server.top.stopService()
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    certificate = None
    if not options["no-tls"]:
        certificate = options["tls-cert"] or os.path.join(data_dir, "tls", f"{domain}.crt")
    return RunningServer(server, data_dir, accounts, certificate)


def server_fixture(accounts: Mapping[str, str], *, scope: str = "function", **options):
    """A pytest fixture (pytest-twisted) that yields a ``RunningServer``.

    In a test module or ``conftest.py``: ``server = server_fixture({"alice": "wonderland"})``;
    ``options`` are those of ``start_server``.
    """
    import pytest_twisted

    @pytest_twisted.async_yield_fixture(scope=scope)
    async def fixture():
        running = await start_server(accounts, **options)
        yield running
        await running.stop()

    return fixture
