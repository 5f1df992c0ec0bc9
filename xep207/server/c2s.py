"""Client streams (RFC 6120): negotiation, then a ``Session`` handed to the router.

Where a client's bytes enter: ``ServerStream`` (parsing, limits), then
``ClientNegotiator`` (STARTTLS, SASL, compression, bind), then, once bound,
``Router.route_from_session`` for every stanza.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, ISSLTransport
from twisted.python import log
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xep207 import metrics
from xep207.ordering import InOrder
from xep207.jids import jid_from_parts, parse_jid
from xep207.server import sasl
from xep207.server.stream import NS_STREAMS, PRE_AUTH_LIMITS, ServerStream, Shaping, StreamLimits

if TYPE_CHECKING:
    from xep207.server.backpressure import Backpressure

NS_CLIENT = "jabber:client"
_RECEIVED, _SENT, _SENT_KIND = metrics.RECEIVED, metrics.SENT, metrics.KIND_BY_INITIAL
NS_XML = "http://www.w3.org/XML/1998/namespace"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_COMPRESS_FEATURE = "http://jabber.org/features/compress"
NS_COMPRESS = "http://jabber.org/protocol/compress"
NS_ROSTERVER = "urn:xmpp:features:rosterver"
NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register"


@dataclass(frozen=True)
class C2SPolicy:
    """What the operator configured for client streams."""

    domain: str
    tls: object | None = None  # a Twisted TLS context factory, or None
    require_tls: bool = True
    allow_plaintext_auth: bool = False
    compression: bool = True
    limits: StreamLimits = StreamLimits()
    pre_auth_limits: StreamLimits = PRE_AUTH_LIMITS
    shaping: Shaping = Shaping()
    max_unauthenticated: int = 10  # concurrent unauthenticated connections per address
    auth_timeout: float = 60.0
    registration: bool = False
    sasl_secret: bytes = field(default=b"", repr=False)  # keys the decoy credentials of unknown users


class RateWindow:
    """At most ``limit`` events per key within ``window`` seconds (a sliding window)."""

    def __init__(self, clock, limit: int, window: float):
        self._clock = clock
        self.limit = limit
        self.window = window
        self._events: dict[str, list[float]] = {}

    def _recent(self, key: str) -> list[float]:
        now = self._clock.seconds()
        recent = [t for t in self._events.get(key, ()) if now - t < self.window]
        if recent:
            self._events[key] = recent
        else:
            self._events.pop(key, None)
        return recent

    def exceeded(self, key: str) -> bool:
        if key not in self._events:  # (every login asks: most keys never failed)
            return self.limit <= 0
        return len(self._recent(key)) >= self.limit

    def record(self, key: str) -> None:
        if len(self._events) > 10000:  # keys nobody asks about again: forget the stale ones
            for stale in list(self._events):
                self._recent(stale)
        self._recent(key)
        self._events.setdefault(key, []).append(self._clock.seconds())


class AuthThrottle:
    """Failed authentications, limited per remote address and per account.

    Checked where a password or proof would be evaluated, not only at
    ``<auth/>``: parallel exchanges all pass ``<auth/>`` before any fails.
    """

    def __init__(self, clock, max_failures: int = 5, max_account_failures: int = 10, window: float = 60.0):
        self.by_address = RateWindow(clock, max_failures, window)
        self.by_account = RateWindow(clock, max_account_failures, window)

    def blocked(self, address: str, user: str | None = None) -> bool:
        return self.by_address.exceeded(address) or (user is not None and self.by_account.exceeded(user))

    def failed(self, address: str, user: str | None = None) -> None:
        self.by_address.record(address)
        if user is not None:
            self.by_account.record(user)


class PendingConnections:
    """Concurrent unauthenticated connections per remote address."""

    def __init__(self, limit: int):
        self.limit = limit
        self._count: Counter = Counter()

    def admit(self, address: str) -> bool:
        if self._count[address] >= self.limit:
            return False
        self._count[address] += 1
        return True

    def release(self, address: str) -> None:
        self._count[address] -= 1
        if self._count[address] <= 0:
            del self._count[address]


class ClientStream(Protocol):
    """What a ``Session`` needs of its stream: a ``ServerStream``, or the
    in-memory stand-in of ``xep207.testing.harness``."""

    transport: Any  # None once the connection is gone

    def send(self, obj: Any) -> None: ...

    def fail(self, condition: str, text: str | None = None) -> None: ...


def _nothing() -> defer.Deferred:
    return defer.succeed(None)


@dataclass(eq=False)
class Session:
    """A bound client resource. Presence state lives here because routing
    (RFC 6121 §8) depends on it; what presence *means* lives in the legacy layer."""

    jid: jidlib.JID
    stream: ClientStream
    available: bool = False
    priority: int = 0
    presence: str | None = None  # its last available presence, serialized as stored
    interested: frozenset = frozenset()  # XEP-0115/0163 "+notify" node names
    pubsub_nodes: set = field(default_factory=set)  # nodes it used XEP-0060 on
    directed: set = field(default_factory=set)  # full JIDs it sent directed presence to
    roster_requested: bool = False  # RFC 6121 §2.1.6: only such resources get pushes
    carbons: bool = False  # XEP-0280 enabled
    lang: str = ""  # the stream's xml:lang, its stanzas' default (RFC 6120 §4.7.4)
    # RFC 6120 §10.1: a stream's stanzas are handled in order, one after the other.
    in_order: InOrder = field(default_factory=InOrder)
    # What must be stored before the stanzas that made it count as handled
    # (a one-to-one message goes on at its hand-off to storage, issue 13).
    durable: InOrder = field(default_factory=InOrder)
    sm: Any = None  # XEP-0198 state (xep207.server.stream_management.StreamManager) once enabled
    csi: Any = None  # XEP-0352 filter (xep207.server.csi.ClientState) once the client said inactive
    remote: ClassVar[bool] = False  # a session on another process is (xep207.cluster)

    # The bound JID never changes: its strings are made once, not per stanza.
    full: str = field(init=False)
    bare: str = field(init=False)

    def __post_init__(self) -> None:
        self.full = self.jid.full()
        self.bare = self.jid.userhost()

    def after_handled(self) -> defer.Deferred | None:
        """None when every stanza received so far is handled (a message:
        stored); else a Deferred firing then, in the order asked (XEP-0198's h)."""
        if not self.in_order.locked and not self.durable.locked:
            return None
        return self.in_order.run(_nothing).addCallback(self._stored)

    def _stored(self, _) -> defer.Deferred:
        return self.durable.run(_nothing)

    def send(self, stanza) -> None:
        """Write a stanza (an Element or already-serialized text) to the client."""
        if type(stanza) is str:  # (metrics.sent, inline for the usual case)
            _SENT[_SENT_KIND.get(stanza[1:2], "other")] += 1
        else:
            metrics.sent(stanza)
        if self.csi is not None and self.csi.hold(stanza):
            return  # XEP-0352: later, or replaced by a newer one
        if self.sm is not None:  # (``write``, inline: a call less per delivery)
            self.sm.send(stanza)
        else:
            self.stream.send(stanza)

    def write(self, stanza) -> None:
        """Past XEP-0352: counted and kept by XEP-0198 when enabled, then to the stream."""
        if self.sm is not None:
            self.sm.send(stanza)
        else:
            self.stream.send(stanza)

    def send_tracked(self, stanza) -> defer.Deferred:
        """Write a stanza that must not be lost; fires True once the client
        acknowledged it (XEP-0198), or at once when written without stream
        management (at-least-once), False when the session ended first."""
        metrics.sent(stanza)
        if self.csi is not None:
            self.csi.flush()  # what was held goes first
        if self.sm is not None:
            receipt: defer.Deferred = defer.Deferred()
            self.sm.send(stanza, receipt)
            return receipt
        self.stream.send(stanza)
        return defer.succeed(self.stream.transport is not None)

    def close(self, condition: str, text: str | None = None) -> None:
        if self.sm is not None and self.sm.detached:
            self.sm.service.router.unbind(self)  # no connection to tell
            return
        self.stream.fail(condition, text)


def _element(uri: str, name: str, *children: str) -> domish.Element:
    element = domish.Element((uri, name))
    for child in children:
        element.addElement(child)
    return element


# Serialized stream features by what decides them (ClientNegotiator._features_xml),
# each with the policy it was made for.
_FEATURES: dict[tuple, tuple[C2SPolicy, str]] = {}


# What every login sends, written as text (issue 13): exactly what
# ``ServerStream.serialize`` makes of the element (tests/test_login_path.py).

def sasl_text(name: str, data: str) -> str:
    """``<challenge/>`` or ``<success/>`` holding ``data`` (base64: nothing to escape)."""
    if not data:
        return f"<{name} xmlns='{NS_SASL}'/>"
    return f"<{name} xmlns='{NS_SASL}'>{data}</{name}>"


def bind_result(iq: domish.Element, full: str) -> str:
    """``xmlstream.toResponse(iq, "result")`` carrying the bound ``full`` JID."""
    addressed = ""
    for name, value in (("to", iq.getAttribute("from")), ("from", iq.getAttribute("to")),
                        ("id", iq.getAttribute("id"))):
        if value:
            addressed += f" {name}='{domish.escapeToXml(value, 1)}'"
    return (f"<iq{addressed} type='result'><bind xmlns='{NS_BIND}'><jid>{domish.escapeToXml(full)}</jid>"
            "</bind></iq>")


class ClientNegotiator(xmlstream.ListenAuthenticator):
    """Runs RFC 6120 stream negotiation for one client connection."""

    namespace = NS_CLIENT
    # Set by associateWithStream before any callback runs; ClientFactory builds a ServerStream.
    xmlstream: ServerStream

    def __init__(self, policy: C2SPolicy, router, throttle: AuthThrottle, pending: PendingConnections):
        super().__init__()
        self.policy = policy
        self.router = router
        self.throttle = throttle
        self.pending = pending
        self.user: str | None = None  # authenticated localpart
        self.session: Session | None = None
        self._mechanism: sasl.Mechanism | None = None
        self._credentials_mark = 0  # the router's, when authentication began
        self._timeout: IDelayedCall | None = None
        self._admitted = False
        self._address: str | None = None
        self._lang = ""  # the stream header's xml:lang
        self._receivers: tuple | None = None  # see _stanza_receivers

    # Connection and stream headers -----------------------------------------

    def connectionMade(self):
        from twisted.internet import reactor

        self.xmlstream.end_handler = self._connection_lost
        transport = self.xmlstream.transport
        assert transport is not None  # Twisted sets it before connectionMade
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)  # a stanza is a message, not a stream of bytes
        self._admitted = self.pending.admit(self.address)
        if not self._admitted:
            return self.xmlstream.fail("policy-violation",
                                       "too many unauthenticated connections from your address")
        self._timeout = reactor.callLater(self.policy.auth_timeout, self._timed_out)

    def _release_pending(self) -> None:
        if self._admitted:
            self._admitted = False
            self.pending.release(self.address)

    def _cancel_timeout(self) -> None:
        # (dropped, not only cancelled: a DelayedCall and two bound methods
        # per session otherwise, for the collector to walk while it idles)
        timeout, self._timeout = self._timeout, None
        if timeout is not None and timeout.active():
            timeout.cancel()

    def _timed_out(self):
        self._timeout = None
        if self.session is None:
            self.xmlstream.fail("connection-timeout", "no authenticated session in time")

    @property
    def address(self) -> str:
        if self._address is None:  # cached by connectionMade, while the transport is there
            transport = self.xmlstream.transport
            assert transport is not None
            peer = transport.getPeer()
            self._address = peer.host if hasattr(peer, "host") else str(peer)
        return self._address

    _tls: bool | None = None  # tls_active, worked out once per stream

    @property
    def tls_active(self) -> bool:
        """Whether the connection is encrypted (STARTTLS or direct TLS). Only a
        stream restart can follow a change (STARTTLS), so it is worked out once
        per stream (a zope interface lookup, asked several times per login)."""
        if self._tls is None:
            transport = getattr(self.xmlstream.transport, "_transport", self.xmlstream.transport)
            self._tls = ISSLTransport.providedBy(transport)
        return self._tls

    def streamStarted(self, root):
        self._tls = None
        xs = self.xmlstream
        xs.namespace = NS_CLIENT
        # Twisted's XmlStream sets thisEntity and sid to None in __init__, so mypy types them None.
        xs.thisEntity = parse_jid(self.policy.domain)  # type: ignore[assignment]
        xs.prefixes = {NS_STREAMS: "stream"}
        xs.sid = os.urandom(16).hex()  # type: ignore[assignment]
        if root.uri != NS_STREAMS or root.name != "stream":
            return xs.fail("invalid-namespace")
        if root.defaultUri != NS_CLIENT:
            return xs.fail("invalid-namespace", "this port serves jabber:client")
        version = root.getAttribute("version", "0.0")
        try:
            major = int(version.split(".")[0])
        except ValueError:
            major = 0
        if major < 1:
            return xs.fail("unsupported-version")
        xs.version = (1, 0)
        self._lang = root.getAttribute((NS_XML, "lang"), "")
        if root.getAttribute("to", "").lower() != self.policy.domain:
            return xs.fail("host-unknown", f"this server serves {self.policy.domain}")
        xs.send_header(self._features_xml())
        xs.element_handler = self._on_element

    def _features_xml(self) -> str:
        """``_features()`` serialized, made once per kind of stream: they depend
        on the policy, on TLS, compression and authentication, and on the
        stream extensions, which add theirs by whether the client authenticated."""
        xs = self.xmlstream
        # (The policy by identity, kept in the entry: hashing its fields each time cost more.)
        policy = self.policy
        key = (type(xs), id(policy), self.user is None, self.tls_active, xs.compressed,
               tuple(self.router.stream_extensions))
        entry = _FEATURES.get(key)
        if entry is None or entry[0] is not policy:
            if len(_FEATURES) >= 64:  # policies and extensions of servers long gone (tests)
                _FEATURES.clear()
            entry = _FEATURES[key] = (policy, xs.serialize(self._features()))
        return entry[1]

    def _features(self) -> domish.Element:
        features = domish.Element((NS_STREAMS, "features"))
        if self.user is None:
            if self.policy.tls is not None and not self.tls_active:
                starttls = features.addElement((NS_TLS, "starttls"))
                if self.policy.require_tls:
                    starttls.addElement("required")
                    return features
            mechanisms = features.addElement((NS_SASL, "mechanisms"))
            for name in self._mechanisms():
                mechanisms.addElement("mechanism", content=name)
            if self.policy.registration:
                features.addElement((NS_REGISTER_FEATURE, "register"))
        else:
            features.addElement((NS_BIND, "bind"))
            features.addElement((NS_SESSION, "session")).addElement("optional")
            features.addElement((NS_ROSTERVER, "ver"))
            if self.policy.compression and not self.xmlstream.compressed:
                compression = features.addElement((NS_COMPRESS_FEATURE, "compression"))
                compression.addElement("method", content="zlib")
        for extension in self.router.stream_extensions:
            extension.features(self, features)
        return features

    def _mechanisms(self) -> dict:
        plain = self.tls_active or self.policy.allow_plaintext_auth
        return sasl.mechanisms(self.router.lookup_account, plain=plain, secret=self.policy.sasl_secret,
                               may_verify=self._may_verify)

    def _may_verify(self, user: str) -> bool:
        """Asked by a mechanism just before it evaluates a password or proof."""
        return not self.throttle.blocked(self.address, self._account_key(user))

    def _account_key(self, user: str | None) -> str | None:
        if user is None:
            return None
        try:
            return jid_from_parts(user, self.policy.domain).user
        except jidlib.InvalidFormat:
            return user

    # Elements -----------------------------------------------------------------

    def _on_element(self, element):
        # An attribute an observer before us set, not domish's lookup of a
        # child element by that name (``<message><handled/></message>``).
        if element.__dict__.get("handled"):
            return
        element.handled = True
        uri = element.uri
        if uri != NS_CLIENT:  # (no stream extension claims jabber:client: stanzas skip the search)
            extension = self._extension_for(uri)
            if extension is not None:
                return extension.on_nonza(self, element)  # XEP-0198, XEP-0352: not stanzas
            if self.session is not None:
                # (RFC 6120 §4.9.3.22: a first-level child we do not support.
                # A jabber:server stanza from a client would otherwise be
                # routed, and written on, in the namespace of server links.)
                return self.session.close("unsupported-stanza-type",
                                          f"<{element.name}/> in {uri or 'no namespace'} is not a jabber:client stanza")
        session = self.session
        if session is not None:
            name = element.name
            _RECEIVED[name if name in _RECEIVED else "other"] += 1  # (metrics.received, inline)
            self.router.route_from_session(session, element)
            session = self.session  # (routing may have ended it)
            if session is not None and session.sm is not None:  # XEP-0198 counts it once handled
                session.sm.received()
            receivers = self._receivers
            if receivers is None:
                receivers = self._receivers = self._stanza_receivers()
            for received in receivers:
                received(self, element)
            return
        handler = _NEGOTIATION.get((uri, element.name))
        if handler is not None:
            return getattr(self, handler)(element)
        if element.name == "iq" and element.uri == NS_CLIENT:
            return self._on_iq(element)
        self.xmlstream.fail("not-authorized", "negotiate the stream first")

    def _stanza_receivers(self) -> tuple:
        """The extensions' ``received`` (optional: most have nothing to
        count), called after each stanza of a bound session."""
        found = (getattr(extension, "received", None) for extension in self.router.stream_extensions)
        return tuple(received for received in found if received is not None)

    def _extension_for(self, uri):
        for extension in self.router.stream_extensions:
            if extension.namespace == uri:
                return extension
        return None

    def adopt(self, session: Session) -> None:
        """Carry on a bound session on this stream (XEP-0198 resumption)."""
        self.session = session
        session.stream = self.xmlstream
        self._release_pending()
        self._cancel_timeout()
        self.xmlstream.coalesce = True

    def _on_starttls(self, element):
        xs = self.xmlstream
        assert xs.transport is not None  # it just delivered this element
        if self.policy.tls is None or self.tls_active or self.user is not None:
            xs.send(_element(NS_TLS, "failure"))
            xs.transport.loseConnection()
            return
        xs.send(_element(NS_TLS, "proceed"))
        xs.transport.startTLS(self.policy.tls)
        xs.reset()

    def _sasl_failure(self, condition: str, text: str | None = None):
        failure = _element(NS_SASL, "failure", condition)
        if text:
            failure.addElement("text", content=text)
        self.xmlstream.send(failure)
        self._mechanism = None

    def _on_auth(self, element):
        if self.user is not None:
            return self.xmlstream.fail("policy-violation", "already authenticated")
        if self.policy.tls is not None and self.policy.require_tls and not self.tls_active:
            return self._sasl_failure("encryption-required")
        if self.throttle.blocked(self.address):
            return self._sasl_failure("temporary-auth-failure", "too many failed attempts; try later")
        factory = self._mechanisms().get(element.getAttribute("mechanism"))
        if factory is None:
            return self._sasl_failure("invalid-mechanism")
        self._mechanism = mechanism = factory()
        self._credentials_mark = self.router.credentials_mark()
        text = str(element).strip()
        initial = None if text == "" else self._decode(text)
        if initial is not False:
            self._step(mechanism, mechanism.start, initial)

    def _on_response(self, element):
        if self._mechanism is None:
            return self._sasl_failure("malformed-request")
        data = self._decode(str(element).strip())
        if data is not False:
            self._step(self._mechanism, self._mechanism.respond, data)

    def _on_abort(self, element):
        self._sasl_failure("aborted")

    def _decode(self, text: str):
        """Base64 SASL data (``=`` is empty); False after answering bad encoding."""
        if text in ("", "="):
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._sasl_failure("incorrect-encoding")
            return False

    def _step(self, mechanism: sasl.Mechanism, step, data) -> None:
        """Run one step of ``mechanism`` (``start`` or ``respond``) on ``data``
        and answer what it decides: now, or once the account is read."""
        try:
            outcome = step(data)
        except Exception:
            outcome = defer.fail()
        if isinstance(outcome, defer.Deferred):
            outcome.addCallbacks(self._step_answered, self._step_failed,
                                 callbackArgs=(mechanism,), errbackArgs=(mechanism,))
            outcome.addErrback(log.err, "SASL step failed")
            return
        try:
            self._step_answered(outcome, mechanism)
        except Exception:
            log.err(None, "SASL step failed")

    def _step_answered(self, outcome, mechanism: sasl.Mechanism) -> None:
        if self._mechanism is not mechanism or self.xmlstream.transport is None:
            return  # aborted meanwhile, or the client left
        if isinstance(outcome, sasl.Challenge):
            self.xmlstream.send(sasl_text("challenge", base64.b64encode(outcome.data).decode("ascii")
                                          if outcome.data else "="))
        else:
            self._authenticated(outcome)

    def _step_failed(self, failure: Failure, mechanism: sasl.Mechanism) -> None:
        if self._mechanism is not mechanism or self.xmlstream.transport is None:
            return
        error = failure.value
        if not isinstance(error, sasl.SASLFailure):
            # Storage down or corrupt: the client must hear something it can retry on.
            log.msg(f"SASL for {self.address} failed: {failure.getErrorMessage()}")
            metrics.AUTH_FAILURES.labels("temporary-auth-failure").inc()
            return self._sasl_failure("temporary-auth-failure", "the server cannot check credentials now")
        metrics.AUTH_FAILURES.labels(error.condition).inc()
        if error.condition in ("not-authorized", "invalid-authzid"):
            self.throttle.failed(self.address, self._account_key(mechanism.user))
            log.msg(f"failed login as {mechanism.user!r} from {self.address}: {error.condition}")
        self._sasl_failure(error.condition, error.text)

    def _authenticated(self, success: sasl.Success):
        revoked = self.router.revoked_since(f"{success.user}@{self.policy.domain}", self._credentials_mark)
        if revoked is not None:
            # The credentials checked were changed or removed meanwhile.
            return self._sasl_failure("not-authorized", "the account's credentials changed; try again")
        self.user = success.user
        metrics.LOGINS.inc()
        log.msg(f"login {success.user}@{self.policy.domain} from {self.address}")
        self._mechanism = None
        self._release_pending()
        self.xmlstream.send(sasl_text("success", base64.b64encode(success.data).decode("ascii")
                                      if success.data else ""))
        self.xmlstream.authenticated = True  # the restarted stream gets the full limits
        self.xmlstream.reset()

    def _on_compress(self, element):
        xs = self.xmlstream
        if self.user is None or not self.policy.compression or xs.compressed:
            failure = _element(NS_COMPRESS, "failure", "setup-failed")
            return xs.send(failure)
        methods = [str(m) for m in element.elements(NS_COMPRESS, "method")]
        if "zlib" not in methods:
            return xs.send(_element(NS_COMPRESS, "failure", "unsupported-method"))
        xs.send(_element(NS_COMPRESS, "compressed"))
        xs.start_compression()

    # Binding --------------------------------------------------------------------

    def _on_iq(self, iq):
        bind = iq.firstChildElement()
        if self.user is None:
            if self.policy.registration and bind is not None and bind.uri == "jabber:iq:register":
                return self.router.handle_registration(self.xmlstream, iq, secure=self.tls_active)
            return self.xmlstream.fail("not-authorized", "authenticate first")
        if iq.getAttribute("type") != "set" or bind is None or (bind.uri, bind.name) != (NS_BIND, "bind"):
            return self.xmlstream.send(StanzaError("not-authorized", text="bind a resource first").toResponse(iq))
        requested = "".join(str(r) for r in bind.elements(NS_BIND, "resource")).strip()
        resource = requested or uuid.uuid4().hex[:12]
        try:
            full = jid_from_parts(self.user, self.policy.domain, resource)
        except jidlib.InvalidFormat:
            return self.xmlstream.send(StanzaError("bad-request", text="invalid resource").toResponse(iq))
        revoked = self.router.revoked_since(f"{self.user}@{self.policy.domain}", self._credentials_mark)
        if revoked is not None:
            # Authenticated before the password changed or the account went
            # (and maybe another took its name): RFC 6120 §4.9.3.16 / §4.9.3.14.
            return self.xmlstream.fail(revoked, "the account's credentials were revoked")
        self.session = Session(full, self.xmlstream, lang=self._lang)
        self._cancel_timeout()
        self.router.bind(self.session)
        self.xmlstream.send(bind_result(iq, self.session.full))  # (at once: no turn to wait for)
        self.xmlstream.coalesce = True  # negotiation is over: see ServerStream.coalesce

    def _connection_lost(self, reason):
        self._release_pending()
        self._cancel_timeout()
        if self.session is not None:
            session, self.session = self.session, None
            if any(extension.connection_lost(self, session) for extension in self.router.stream_extensions):
                return  # kept bound without a connection (XEP-0198 resumption)
            self.router.unbind(session)


# What a client may send before it is bound, besides an iq: the negotiator's
# method for it (made once, not a dict of bound methods per element).
_NEGOTIATION = {
    (NS_TLS, "starttls"): "_on_starttls",
    (NS_SASL, "auth"): "_on_auth",
    (NS_SASL, "response"): "_on_response",
    (NS_SASL, "abort"): "_on_abort",
    (NS_COMPRESS, "compress"): "_on_compress",
}


class ClientFactory(xmlstream.XmlStreamServerFactory):
    """Creates a ``ServerStream`` with a fresh negotiator per connection.
    Its streams stop reading while ``backpressure`` holds (``ServerStream.backpressure``)."""

    def __init__(self, policy: C2SPolicy, router, throttle: AuthThrottle,
                 backpressure: Backpressure | None = None):
        self.pending = PendingConnections(policy.max_unauthenticated)
        super().__init__(lambda: ClientNegotiator(policy, router, throttle, self.pending))
        self.policy = policy
        self.backpressure = backpressure
        self.clock = None  # the reactor; tests inject a task.Clock to drive traffic shaping

    def buildProtocol(self, addr):
        stream = ServerStream(self.authenticatorFactory(), self.policy.limits, self.policy.pre_auth_limits,
                              self.policy.shaping, clock=self.clock)

        stream.factory = self
        for event, fn in self.bootstraps:
            stream.addObserver(event, fn)
        return stream
