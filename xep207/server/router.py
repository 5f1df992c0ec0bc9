"""The router: every stanza of the server passes through ``route``.

It knows the local sessions and the services by domain (internal ones such
as ``pubsub.DOMAIN`` and external XEP-0114 components, attached through
wokkel's ``addRoute``/``removeRoute`` protocol), and applies RFC 6121 §8 to
addresses on the local domain. The legacy layer (presence, roster, chat,
groupchat) plugs in through ``hooks``: a ``STANZA`` handler sees a stanza
before the default delivery does and may capture it; ``SESSION_BOUND`` and
``SESSION_UNBOUND`` follow sessions.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xep207 import logs
from xep207.deferreds import fired_with_value
from xep207.hooks import SESSION_BOUND, SESSION_UNBOUND, STANZA, Hooks
from xep207.inflight import InFlight
from xep207.jids import full_jid, jid_from_parts, parse_jid
from xep207.server.c2s import Session
from xep207.server.sasl import SASLFailure
from xep207.storage.interface import StorageUnavailable
from xep207.xmlutil import parse_stanza, release
from xep207.storage.records import Account

STANZAS = ("message", "presence", "iq")
NS_XML = "http://www.w3.org/XML/1998/namespace"


def is_error_or_result(stanza) -> bool:
    return stanza.getAttribute("type") in ("error", "result")


class Route(Protocol):
    """Where stanzas for a domain go: a component's stream or an in-process service."""

    def send(self, obj: Any) -> None: ...


@dataclass(frozen=True)
class _Request:
    """An iq the server itself sent, waiting for its answer."""

    to: str | None
    answer: defer.Deferred


class Router:
    def __init__(self, domain: str, storage, hooks: Hooks | None = None):
        self.domain = domain
        self.hooks = hooks or Hooks()
        self.storage = storage
        self.sessions: dict[str, dict[str, Session]] = defaultdict(dict)
        self.routes: dict[str, Route] = {}
        self.internal_routes: set[str] = set()  # in-process services: answer what they ignore
        self.local_services = None  # stream-like for iqs to the domain and to accounts
        self._known_accounts: dict[str, Account] = {}
        self.handle_registration = None  # XEP-0077 before login, when enabled
        self.deliver_to_all = False  # bare-JID messages to every non-negative resource
        self._requests: dict[str, _Request] = {}
        self.in_flight = InFlight()
        # Credentials revoked while this process runs: account -> (when, stream
        # error). A stream that started authenticating before that may not bind.
        self._revocations = 0
        self._revoked: dict[str, tuple[int, str]] = {}
        # Negotiated on client streams (XEP-0198, XEP-0352): each has a
        # ``namespace`` (never jabber:client) whose elements are its nonzas,
        # ``features``, ``on_nonza``, ``connection_lost`` and, optionally,
        # ``received`` (after each stanza of a bound session).
        self.stream_extensions: list = []
        # The other processes' sessions (xep207.cluster's Directory), when clustered:
        # RFC 6121 §8's choices are made over every process's resources.
        self.directory = None

    # Accounts -------------------------------------------------------------------

    def lookup_account(self, user: str) -> defer.Deferred[Account | None]:
        """SASL's credential lookup: a localpart on our domain. A Deferred
        (fired at once when the storage cache has the account: a login on
        SQLite then does not wait for the database thread)."""
        try:
            bare = jid_from_parts(user, self.domain).userhost()
        except jidlib.InvalidFormat:
            return defer.succeed(None)
        read = getattr(self.storage, "get_login_account", None) or self.storage.get_account
        found = read(bare)
        if fired_with_value(found):
            return found  # (from the cache: nothing can fail)
        return found.addErrback(self._lookup_failed, bare)

    @staticmethod
    def _lookup_failed(failure, bare: str):
        failure.trap(StorageUnavailable)
        # RFC 6120 §6.5.15: the client may retry; without an answer it would wait forever.
        log.msg(f"login of {bare} not checked: {failure.getErrorMessage()}")
        raise SASLFailure("temporary-auth-failure", "the account store is unavailable; try later")

    def known_account(self, bare: str) -> bool:
        """Whether ``bare`` is an account already seen (no storage read)."""
        return bare in self._known_accounts

    async def account_exists(self, bare: str) -> bool:
        if bare in self._known_accounts:
            return True
        try:
            account = await self.storage.get_account(bare)
        except StorageUnavailable:
            if self.sessions.get(bare):
                return True  # a bound session proves it: errors reach it while storage is down
            raise
        if account is not None:
            self._known_accounts[bare] = account
        return account is not None

    def credentials_mark(self) -> int:
        """Taken when a stream starts authenticating; see ``revoked_since``."""
        return self._revocations

    def revoke_credentials(self, bare: str, condition: str) -> None:
        """The account's password changed (``reset``) or the account went
        (``not-authorized``): streams that authenticated before may not bind."""
        self._revocations += 1
        self._revoked[bare] = (self._revocations, condition)

    def revoked_since(self, bare: str, mark: int) -> str | None:
        """The stream error for a stream that began authenticating at ``mark``,
        when the account's credentials were revoked since; else None."""
        when, condition = self._revoked.get(bare, (0, ""))
        return condition if when > mark else None

    def forget_account(self, bare: str) -> None:
        self._known_accounts.pop(bare, None)
        for session in list(self.sessions.get(bare, {}).values()):
            session.close("not-authorized", "account removed")

    # Sessions -------------------------------------------------------------------

    def bind(self, session: Session) -> None:
        """Register a bound resource; an existing one of the same name is
        replaced (RFC 6120 §7.7.2.2, first option: the old one is told
        ``conflict`` and closed)."""
        resource = session.jid.resource
        assert resource is not None  # a bound JID is a full JID
        old = self.sessions.get(session.bare, {}).get(resource)
        if old is not None:
            self.unbind(old)
            old.close("conflict", "replaced by a new connection")
        self.sessions[session.bare][resource] = session  # unbind may have dropped the dict
        self.hooks.fire(SESSION_BOUND, session)

    def unbind(self, session: Session) -> defer.Deferred:
        """Forget a resource; fires when every ``SESSION_UNBOUND`` consequence
        (going unavailable, leaving rooms) has run."""
        done = defer.succeed(None)
        resources = self.sessions.get(session.bare, {})
        resource = session.jid.resource
        assert resource is not None  # a bound JID is a full JID
        if resources.get(resource) is session:
            del resources[resource]
            if not resources:
                self.sessions.pop(session.bare, None)
            for request in [r for r in self._requests.values() if r.to == session.full]:
                request.answer.cancel()  # nobody left to answer
            done = self.hooks.fire(SESSION_UNBOUND, session)
        return self.in_flight.track(done)

    def session(self, full: str) -> Session | None:
        bare, _, resource = full.partition("/")
        found = self.sessions.get(bare, {}).get(resource)
        if found is None and self.directory is not None:
            return self.directory.session(full)  # on another process: its send() crosses there
        return found

    def resources(self, bare: str) -> list[Session]:
        found = list(self.sessions.get(bare, {}).values())
        if self.directory is not None:
            found += self.directory.resources(bare)
        return found

    def available_resources(self, bare: str) -> list[Session]:
        # (Loops, not comprehensions over ``resources``: every delivery asks,
        # and each comprehension or helper is a Python call.)
        found = []
        local = self.sessions.get(bare)
        if local:
            for session in local.values():
                if session.available:
                    found.append(session)
        if self.directory is not None:
            for session in self.directory.resources(bare):
                if session.available:
                    found.append(session)
        return found

    def sessions_for(self, jid: str) -> list[Session] | None:
        """The sessions a stanza for ``jid`` reaches: that resource, or every
        available one of the account; None when ``jid`` is not on our domain."""
        bare, _, resource = jid.partition("/")
        _, at, host = bare.partition("@")
        if not at or host != self.domain:
            return None
        if resource:
            session = self.sessions.get(bare, {}).get(resource)
            if session is None and self.directory is not None:
                session = self.directory.session(jid)
            return [session] if session is not None else []
        return self.available_resources(bare)

    def deliverable_resources(self, bare: str, everyone: bool = False) -> list[Session]:
        """RFC 6121 §8.5.2.1.1: the available resources with non-negative
        priority; only the highest-priority ones unless ``everyone`` or the
        operator's policy (``--deliver-to-all-resources``) says all."""
        candidates: list[Session] = []
        top = 0
        for session in self.available_resources(bare):
            priority = session.priority
            if priority >= 0:
                if priority > top:
                    top = priority
                candidates.append(session)
        if everyone or self.deliver_to_all or len(candidates) < 2:
            return candidates  # (one: it is the highest)
        return [s for s in candidates if s.priority == top]

    # wokkel's router protocol (InternalComponent, XMPPComponentServerFactory) ------

    def addRoute(self, destination: str, xs) -> None:
        self.routes[destination] = xs
        xs.addObserver("/*", self._route_from_service, destination=destination)

    def removeRoute(self, destination: str, xs) -> None:
        if self.routes.get(destination) is xs:
            del self.routes[destination]
        xs.removeObserver("/*", self._route_from_service)

    def _route_from_service(self, stanza, destination: str) -> None:
        """A service or component speaks only for its own domain (XEP-0114
        §3: the server MUST NOT let a component spoof other addresses)."""
        sender = stanza.getAttribute("from", "")
        try:
            host = parse_jid(sender).host if sender else ""
        except jidlib.InvalidFormat:
            host = ""
        if host != destination:
            log.msg(f"dropped a stanza from {destination} claiming to be from {sender!r}")
            return
        try:
            # Prepared, as a session's are: every check downstream (XEP-0191's
            # block list, say) compares prepared JIDs.
            stanza["from"] = full_jid(sender)
            if stanza.getAttribute("to"):
                stanza["to"] = full_jid(stanza["to"])
        except jidlib.InvalidFormat:
            self.bounce(stanza, "jid-malformed")
            return
        self.route(stanza)

    # Routing ----------------------------------------------------------------------

    def route_from_session(self, session: Session, stanza: domish.Element) -> None:
        """A stanza from a bound client: stamp ``from`` (RFC 6120 §8.1.2.1), then route."""
        name = stanza.name
        if name not in STANZAS:
            session.close("unsupported-stanza-type", f"<{name}/> is not a stanza")
            return
        # (The attributes dict itself, as getAttribute and item assignment
        # reach it: a call less each, on every stanza.)
        attributes = stanza.attributes
        claimed = attributes.get("from")
        if claimed and claimed not in (session.full, session.bare):
            session.close("invalid-from", "the from address is not this session's")
            return
        attributes["from"] = session.full
        if name == "iq":
            if not self._well_formed_iq(session, stanza):
                return
            if not attributes.get("to"):
                # RFC 6120 §10.3.3: handled on behalf of the account, as if sent to its bare JID.
                attributes["to"] = session.bare
        if session.lang and (NS_XML, "lang") not in attributes:
            # RFC 6120 §4.7.4: a stanza without xml:lang is in the stream's language;
            # it says so when it leaves the stream (and in the archive).
            attributes[(NS_XML, "lang")] = session.lang
        to = attributes.get("to")
        if to:
            try:
                attributes["to"] = full_jid(to)
            except jidlib.InvalidFormat:  # xep207.jids refuses an empty label (Twisted: IndexError)
                self.bounce(stanza, "jid-malformed")
                return
        # domish.Element takes ad-hoc attributes; its types declare none. ``handled``
        # is the client stream's mark: services downstream set their own. Marks
        # are read from ``__dict__``: ``getattr`` answers a missing one with the
        # child element of that name (<session/>, <cluster_hop/>: the client's).
        stanza.session = session  # type: ignore[attr-defined]
        stanza.handled = False  # type: ignore[attr-defined]
        # RFC 6120 §10.1: a session's stanzas are handled in the order sent, each
        # once the one before has been (a read after a write sees the write).
        self.in_flight.track(session.in_order.run(self._routed, stanza))

    @staticmethod
    def _well_formed_iq(session: Session, iq: domish.Element) -> bool:
        """RFC 6120 §8.2.3: an id, one of four types, and one child for get and
        set; anything else is answered ``bad-request`` by the server itself."""
        kind = iq.getAttribute("type")
        children = sum(1 for _ in iq.elements())
        if iq.getAttribute("id") and (kind in ("result", "error") or (kind in ("get", "set") and children == 1)):
            return True
        if kind in ("result", "error"):
            return False  # never answer an answer (§8.3.1); an id-less one is dropped
        error = StanzaError("bad-request", text="an iq has an id, a type of get, set, result or error, "
                                                "and get or set carry exactly one child").toResponse(iq)
        if not error.getAttribute("from"):
            error["from"] = session.bare  # addressed to no one: the account answers (§10.3.3)
        session.send(error)
        return False

    def route(self, stanza: domish.Element) -> None:
        """Deliver one stanza, from a session, a service or a component."""
        if stanza.name not in STANZAS:
            return
        self.in_flight.track(self._routed(stanza))

    def _routed(self, stanza: domish.Element) -> defer.Deferred:
        """Route; fires when done, failures answered (never an errback).
        A stanza a capture takes at once costs no coroutine (issue 13)."""
        try:
            if stanza.name == "iq" and self._response_to_server(stanza):
                return defer.succeed(None)
            answer = self.hooks.first_now(STANZA, stanza)
        except Exception:
            return defer.fail().addErrback(self.route_failed, stanza)
        if answer is True:  # captured (the usual answer: before isinstance, a Python-level
            return defer.succeed(None)  # ABC check for anything not a Deferred)
        if isinstance(answer, defer.Deferred):
            d = answer.addCallback(self._after_capture, stanza)
        elif answer is not None and answer is not False:
            return defer.succeed(None)  # captured
        else:
            d = defer.ensureDeferred(self._route_uncaptured(stanza))
        return d.addErrback(self.route_failed, stanza)

    def _after_capture(self, answer, stanza: domish.Element):
        if answer is not None and answer is not False:
            return None  # captured
        return defer.ensureDeferred(self._route_uncaptured(stanza))

    async def drain(self) -> None:
        """Wait until every stanza already accepted has been routed (shutdown)."""
        await self.in_flight.drain()

    def route_failed(self, failure, stanza) -> None:
        """A stanza's handling failed: its sender hears why (a capture that
        finishes after it let the next stanza go on answers through this too)."""
        if failure.check(StanzaError):
            self.bounce(stanza, failure.value.condition, failure.value.text)
            return
        logs.failure(failure, f"routing failed for {logs.describe(stanza)}")
        self.bounce(stanza, "internal-server-error")

    def request(self, iq: domish.Element, timeout: float = 30) -> defer.Deferred:
        """Send an iq from the server itself; fires with the result (or
        fails with the error) that comes back."""
        from twisted.internet import reactor

        iq["id"] = iq.getAttribute("id") or uuid.uuid4().hex
        iq["from"] = self.domain
        d: defer.Deferred = defer.Deferred()
        self._requests[iq["id"]] = _Request(iq.getAttribute("to"), d)
        d.addTimeout(timeout, reactor)
        d.addBoth(self._request_done, iq["id"])
        self.route(iq)
        return d

    def _request_done(self, result, request_id):
        self._requests.pop(request_id, None)
        return result

    def _response_to_server(self, stanza) -> bool:
        if stanza.name != "iq" or not is_error_or_result(stanza):
            return False
        if stanza.getAttribute("to", self.domain) != self.domain:
            return False
        request = self._requests.get(stanza.getAttribute("id"))
        if request is None:
            return False
        if stanza["type"] == "result":
            request.answer.callback(stanza)
        else:
            request.answer.errback(StanzaError("undefined-condition", text=stanza.toXml()[:200]))
        return True

    async def _route(self, stanza: domish.Element) -> None:
        if self._response_to_server(stanza):
            return
        if await self.hooks.first(STANZA, stanza):
            return  # captured
        await self._route_uncaptured(stanza)

    async def _route_uncaptured(self, stanza: domish.Element) -> None:
        to = stanza.getAttribute("to")
        if not to:
            to = self.domain if stanza.name == "iq" else stanza["from"].split("/")[0]
            if stanza.name == "iq":
                await self.deliver_local_service(stanza)
                return
        try:
            target = parse_jid(to)
        except jidlib.InvalidFormat:
            self.bounce(stanza, "jid-malformed")
            return
        if target.host == self.domain:
            await self.deliver_local(stanza, target)
            if stanza.name != "iq" or is_error_or_result(stanza):
                # Written or queued as it is (receipts, chat states, directed presence:
                # one or two per chat message; a service's answer): no cycle left to the
                # collector (issue 13). (A request may still be read by a service's
                # handler: wokkel parses it by ``parent``.)
                release(stanza)
        elif target.host in self.routes:
            self.routes[target.host].send(stanza)
            if target.host in self.internal_routes:
                self._unhandled(stanza)
        else:
            # No server-to-server: the rest of the network is unreachable.
            self.bounce(stanza, "remote-server-not-found")

    async def deliver_local(self, stanza: domish.Element, target: jidlib.JID) -> None:
        """RFC 6121 §8.5 for an address on our domain."""
        if target.user is None:
            if stanza.name == "iq":
                await self.deliver_local_service(stanza)
            elif stanza.name == "message" and not is_error_or_result(stanza):
                self.bounce(stanza, "service-unavailable")
            return
        bare = target.userhost()
        if not await self.account_exists(bare):
            # §8.5.1: no such user.
            if stanza.name == "iq" or (stanza.name == "message" and stanza.getAttribute("type") != "headline"):
                self.bounce(stanza, "service-unavailable")
            return
        if target.resource is None:
            await self.deliver_to_bare(stanza, bare)
        else:
            self.deliver_to_full(stanza, target)

    async def deliver_to_bare(self, stanza, bare: str) -> None:
        """§8.5.2: a stanza addressed to an account's bare JID."""
        if stanza.name == "iq":
            await self.deliver_local_service(stanza)
        elif stanza.name == "message":
            self.deliver_message_to_bare(stanza, bare)
        elif stanza.name == "presence":
            for session in self.available_resources(bare):
                session.send(stanza)

    def deliver_message_to_bare(self, stanza, bare: str) -> bool:
        """Returns whether some resource got it."""
        kind = stanza.getAttribute("type", "normal")
        if kind == "groupchat":
            self.bounce(stanza, "service-unavailable")
            return False
        targets = self.deliverable_resources(bare, everyone=kind == "headline")
        for session in targets:
            session.send(stanza)
        if not targets and kind in ("normal", "chat") and not is_error_or_result(stanza):
            self.undeliverable_message(stanza, bare)
        return bool(targets)

    def undeliverable_message(self, stanza, bare: str) -> None:
        """No available resource. The chat layer replaces this with offline
        storage; without it, the sender learns the message did not arrive."""
        self.bounce(stanza, "service-unavailable")

    def deliver_to_full(self, stanza, target: jidlib.JID) -> None:
        """§8.5.3: a stanza addressed to a full JID."""
        session = self.session(target.full())
        if session is not None:
            session.send(stanza)
            return
        if stanza.name == "iq":
            if not is_error_or_result(stanza):
                self.bounce(stanza, "service-unavailable")
        elif stanza.name == "message":
            kind = stanza.getAttribute("type", "normal")
            if kind in ("normal", "chat"):
                self.deliver_message_to_bare(stanza, target.userhost())
            elif kind == "groupchat":
                self.bounce(stanza, "service-unavailable")
        # presence to an unavailable resource: silently ignored (§8.5.3.2.3)

    async def deliver_local_service(self, stanza) -> None:
        if self.local_services is None:
            self.bounce(stanza, "service-unavailable")
        else:
            self.local_services.send(stanza)
            self._unhandled(stanza)

    def _unhandled(self, stanza) -> None:
        """An iq no in-process handler took: RFC 6120 §8.2.3 wants an answer."""
        if stanza.name == "iq" and stanza.getAttribute("type") in ("get", "set") \
                and not stanza.__dict__.get("handled", False):
            self.bounce(stanza, "service-unavailable")

    def deliver_serialized(self, to: str, xml: str, kind: str = "message",
                           message_type: str = "headline") -> None:
        """Deliver a stanza already serialized once for many recipients.

        Used by the pubsub fan-out: the text goes to each session's socket as
        is; only a recipient elsewhere (a component) costs a parse.
        """
        bare, _, resource = to.partition("/")
        host = bare.split("@")[-1]
        if host != self.domain or "@" not in bare:
            self.route(parse_stanza(xml))
            return
        if resource or kind == "presence":
            # that resource, or every available one (never None: the JID is ours)
            sessions = self.sessions_for(to) or []
        else:  # a message to a bare JID: RFC 6121 §8.5.2.1.1
            sessions = self.deliverable_resources(bare, everyone=message_type == "headline")
        for session in sessions:
            session.send(xml)

    # Errors -------------------------------------------------------------------------

    def bounce(self, stanza: domish.Element, condition: str, text: str | None = None) -> None:
        """Send a stanza error back to the sender; never answer an error or a result."""
        if is_error_or_result(stanza) or not stanza.getAttribute("from"):
            return
        # Twisted's table lacks RFC 6120's policy-violation (type modify).
        kind = "modify" if condition == "policy-violation" else None
        response = StanzaError(condition, type=kind, text=text).toResponse(stanza)
        if not response.getAttribute("from"):
            response["from"] = self.domain
        self.route(response)
