"""The whole server in memory, without sockets: for embedders' tests and ours.

``InMemoryServer`` builds the real ``xep207.server.tap.Server`` on ``memory:``
storage, with its listeners taken out of the service tree so that nothing
binds a port. Accounts are made by the ordinary account code; a login binds a
real ``Session`` to the router, exactly as the c2s negotiator does after
resource binding, except that the session's stream is a ``CapturedStream``
that keeps what the server writes instead of sending it. Stanzas from a
session enter through ``Router.route_from_session``, as the c2s stream hands
them over. ``settle`` waits, on Deferreds and never on time, until the router,
the groupchat service and the engine's deferred sends have nothing left
under way::

    harness = await InMemoryServer.start(accounts=["alice", "bob"])
    alice = await harness.login("alice", resource="phone")
    reply = await harness.iq(alice, "<iq type='get' to='localhost'><query xmlns='jabber:iq:roster'/></iq>")
    harness.send(alice, "<presence/>")
    await harness.settle()
    alice.received        # parsed elements, in the order the server wrote them
    await harness.stop()
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.xish import domish

from xep207.inflight import InFlight
from xep207.server import accounts
from xep207.server.c2s import Session
from xep207.server.tap import Server
from xep207.tap import Options

__all__ = ["CapturedStream", "HarnessSession", "InMemoryServer", "NoReply", "parse_client_stanza", "synchronously"]

PASSWORD = "harness-password"
_ids = itertools.count(1)


class NoReply(AssertionError):
    """The server went quiet without answering an iq (RFC 6120 §8.2.3 says it must)."""


def parse_client_stanza(text: str) -> domish.Element:
    """One serialized stanza, parsed as a client's stream parser would (no parent)."""
    found: list[domish.Element] = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = found.append
    stream.DocumentEndEvent = lambda: None
    stream.parse("<stream:stream xmlns='jabber:client' "
                 "xmlns:stream='http://etherx.jabber.org/streams'>" + text)
    if len(found) != 1:
        raise ValueError(f"expected one stanza, got {len(found)}: {text[:200]!r}")
    return found[0]


class _OpenTransport:
    """What ``session.stream.transport`` must be while the stream is open."""

    def getPeer(self):
        return "in-memory"


class CapturedStream:
    """Stands in for a client's ``ServerStream``: what the server writes is
    kept as text (serialized at once, as a socket would), parsed on demand."""

    def __init__(self, on_close: Callable[["CapturedStream"], None]):
        self.written: list[str] = []
        self.transport: _OpenTransport | None = _OpenTransport()
        self.error: tuple[str, str | None] | None = None  # the stream error that closed it
        self._on_close = on_close

    def send(self, obj) -> None:
        if self.transport is None:
            return  # a closed socket writes nothing
        self.written.append(obj if isinstance(obj, str) else obj.toXml())

    def fail(self, condition: str, text: str | None = None) -> None:
        """A stream error: the stream closes, and the negotiator unbinds the session."""
        if self.transport is None:
            return
        self.error = (condition, text)
        self.transport = None
        self._on_close(self)


class HarnessSession:
    """A logged-in resource: the router's real ``Session`` and what it received."""

    def __init__(self, session: Session, stream: CapturedStream):
        self.session = session
        self.stream = stream
        self._parsed: list[domish.Element] = []
        self.cursor = 0  # for ``new``: what a test has already looked at

    @property
    def jid(self) -> str:
        return self.session.full

    @property
    def bare(self) -> str:
        return self.session.bare

    @property
    def connected(self) -> bool:
        return self.stream.transport is not None

    @property
    def received(self) -> list[domish.Element]:
        """Every stanza the server wrote to this session, parsed, in order."""
        written = self.stream.written
        while len(self._parsed) < len(written):
            self._parsed.append(parse_client_stanza(written[len(self._parsed)]))
        return self._parsed

    def new(self) -> list[domish.Element]:
        """What arrived since the previous call."""
        received = self.received
        fresh, self.cursor = received[self.cursor:], len(received)
        return fresh

    def __repr__(self):
        return f"<HarnessSession {self.jid}>"


class InMemoryServer:
    """The real server, every stanza in memory."""

    def __init__(self, server: Server, later: InFlight, clock=None):
        self.server = server
        self.clock = clock  # a task.Clock: ``settle`` advances it; None: the reactor runs
        self.domain = server.domain
        self.router = server.router
        self._later = later
        self.sessions: list[HarnessSession] = []

    @classmethod
    async def start(cls, accounts: Iterable[str] = (), domain: str = "localhost",
                    options: Iterable[str] = (), clock=None) -> "InMemoryServer":
        """Start a server (``options`` are extra ``twistd xep207`` arguments)
        and create ``accounts`` (localparts, password ``PASSWORD``).

        With ``clock`` (a ``twisted.internet.task.Clock``) nothing is left to
        the reactor: on ``memory:`` storage every call then completes before
        it returns, and ``synchronously`` can drive the server from plain
        synchronous code (Hypothesis, say)."""
        from twisted.internet import reactor

        parsed = Options()
        parsed.parseOptions(["--domain", domain, "--storage", "memory:", "--no-tls",
                             "--c2s-port", "0", "--c2s-direct-tls-port", "0", *options])
        server = Server(parsed, clock=clock or reactor)
        for listener in server.listeners:
            listener.disownServiceParent()  # no sockets
        later = InFlight()
        _track_deferred_sends(server, later, clock or reactor)
        server.top.startService()
        await server.storage_service.ready
        harness = cls(server, later, clock)
        for user in accounts:
            await harness.create_account(user)
        return harness

    async def stop(self) -> None:
        """Stop as ``twistd`` would: sessions go unavailable, storage closes."""
        await self.settle()
        await self.server.top.stopService()

    # Accounts -------------------------------------------------------------------

    def jid(self, user: str) -> str:
        return f"{user}@{self.domain}"

    async def create_account(self, user: str, password: str = PASSWORD) -> str:
        return await accounts.create_account(self.server.engine, self.jid(user), password)

    async def delete_account(self, user: str) -> None:
        """What ``xep207ctl deluser`` and XEP-0077 ``<remove/>`` do to a live server."""
        await self.server.accounts.delete_user(self.jid(user))
        await self.settle()

    # Sessions -------------------------------------------------------------------

    async def login(self, user: str, resource: str = "harness") -> HarnessSession:
        """Bind ``user@domain/resource`` as the c2s negotiator does once
        authenticated (the account must exist: SASL would refuse otherwise)."""
        if await self.router.lookup_account(user) is None:
            raise accounts.AccountError(f"no account {self.jid(user)}")
        holder: list[HarnessSession] = []
        stream = CapturedStream(lambda _: self._closed(holder[0]))
        session = Session(jidlib.JID(tuple=(user, self.domain, resource)), stream)
        harness_session = HarnessSession(session, stream)
        holder.append(harness_session)
        self.sessions.append(harness_session)
        self.router.bind(session)
        await self.settle()
        return harness_session

    def _closed(self, session: HarnessSession) -> None:
        self.router.unbind(session.session)  # tracked by the router's in_flight

    async def logout(self, session: HarnessSession) -> None:
        """The client closes its stream (what a dropped TCP connection does too)."""
        if session.connected:
            session.stream.transport = None
            self.router.unbind(session.session)
        await self.settle()

    # Stanzas --------------------------------------------------------------------

    def send(self, session: HarnessSession, xml: str | domish.Element) -> domish.Element:
        """A stanza from the client, handed to the router as the c2s stream does."""
        if not session.connected:
            raise AssertionError(f"{session.jid} is not connected")
        stanza = parse_client_stanza(xml if isinstance(xml, str) else xml.toXml())
        # The c2s stream's mark, set before routing (an ad-hoc domish.Element attribute).
        stanza.handled = True  # type: ignore[attr-defined]
        self.router.route_from_session(session.session, stanza)
        return stanza

    async def iq(self, session: HarnessSession, xml: str) -> domish.Element:
        """Send an iq (an ``id`` is added when missing) and return its answer."""
        stanza = parse_client_stanza(xml)
        if not stanza.getAttribute("id"):
            stanza["id"] = f"harness{next(_ids)}"
        start = len(session.stream.written)
        self.send(session, stanza)
        await self.settle()
        for element in session.received[start:]:
            if element.name == "iq" and element.getAttribute("id") == stanza["id"] \
                    and element.getAttribute("type") in ("result", "error"):
                return element
        raise NoReply(f"no answer to {stanza.toXml()[:300]}")

    async def settle(self) -> None:
        """Wait until the server is quiet: nothing routed, no room work, no
        deferred send (the engine's last-item replay) still to run."""
        while True:
            await self.server.quiesce()
            if not self._later:
                if not (self.router.in_flight or self.server.groupchat.in_flight):
                    return
            elif self.clock is not None:
                self.clock.advance(0)
            else:
                await self._later.drain()


def synchronously(coroutine):
    """Run a coroutine of an ``InMemoryServer`` started with a ``Clock`` and
    return its result; fails loudly if it would have had to wait for the
    reactor (then the server is not as in-memory as this harness assumes)."""
    d = defer.ensureDeferred(coroutine)
    outcome: list = []
    d.addBoth(outcome.append)
    if not outcome:
        d.cancel()
        raise AssertionError("the server waited for the reactor; use the async API")
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def _track_deferred_sends(server: Server, later: InFlight, clock) -> None:
    """The engine defers some sends to the next reactor turn (XEP-0060
    §6.1.7's last item, after the subscribe reply). Keep its scheduling but
    track each call, so that ``settle`` can wait for them."""
    engine = server.engine
    if not hasattr(engine, "_call_later"):
        return

    def call_later(delay, fn, *args, **kwargs):
        done: defer.Deferred = defer.Deferred()

        def run():
            d = defer.maybeDeferred(fn, *args, **kwargs)
            d.chainDeferred(done)

        later.track(done.addErrback(_log_failure))
        return clock.callLater(delay, run)

    engine._call_later = call_later


def _log_failure(failure):
    from twisted.python import log

    log.err(failure, "a deferred send failed")
