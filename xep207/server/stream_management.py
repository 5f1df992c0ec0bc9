"""XEP-0198 stream management (``urn:xmpp:sm:3``): acks and resumption.

Why here and not in the stream: a managed session outlives its connection
(while resumable it stays bound, its stanzas queued), so the state belongs to
the ``Session`` (``session.sm``), and it works on stanzas and nonzas only —
TCP, direct TLS or WebSocket streams look the same from here.

Counting: ``handled`` is the client's stanzas this server has *handled*
(routed: a message is stored before it counts), ``sent`` the stanzas written
to the client, ``acked`` the client's last ``h``; ``queue`` holds the
unacknowledged ones (numbered ``acked+1 … sent``). All counts are modulo 2^32.

When a managed session ends for good (the window expired, a clean close, the
same resource bound again, shutdown), what the client never acknowledged is
handed to the ``UNACKED`` hook: nothing is bounced, the offline layer puts
messages back where they wait (``xep207.legacy.offline``).
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import error
from twisted.words.xish import domish

from xep207.hooks import SESSION_UNBOUND, UNACKED
from xep207.xmlutil import parse_stanza

NS_SM = "urn:xmpp:sm:3"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MODULUS = 2 ** 32
STANZA_NAMES = ("message", "presence", "iq")
_STANZA_PREFIXES = tuple(f"<{name}" for name in STANZA_NAMES)


@dataclass(frozen=True)
class SMPolicy:
    """``resume_timeout`` seconds a detached session waits for ``<resume/>``;
    ``max_unacked`` stanzas may wait for an ack (policy-violation beyond); the
    server asks ``<r/>`` after ``request_every`` unacked stanzas or
    ``request_after`` seconds."""

    resume_timeout: float = 300.0
    max_unacked: int = 5000
    request_every: int = 10
    request_after: float = 30.0


def is_stanza(obj) -> bool:
    if isinstance(obj, domish.Element):
        return obj.name in STANZA_NAMES
    if isinstance(obj, bytes):
        obj = obj.decode("utf-8", "replace")
    return isinstance(obj, str) and obj.startswith(_STANZA_PREFIXES)


def _nonza(name: str, **attributes: str) -> domish.Element:
    element = domish.Element((NS_SM, name))
    for key, value in attributes.items():
        element[key] = value
    return element


def _failed(condition: str, h: int | None = None) -> domish.Element:
    failed = _nonza("failed")
    if h is not None:
        failed["h"] = str(h)
    failed.addElement((NS_STANZAS, condition))
    return failed


def _parse_h(element) -> int | None:
    value = element.getAttribute("h", "")
    if not value.isdigit() or len(value) > 10 or int(value) >= MODULUS:
        return None
    return int(value)


class StreamManager:
    """The XEP-0198 state of one session; survives its connection while resumable."""

    def __init__(self, service: "StreamManagement", session, stream, resume_id: str | None,
                 resume_timeout: float):
        self.service = service
        self.session = session
        self.stream: Any = stream  # what it writes to; None while detached
        self.id = resume_id
        self.resume_timeout = resume_timeout
        self.handled = 0
        self.sent = 0
        self.acked = 0
        self.queue: deque = deque()  # (stanza, receipt Deferred or None)
        self.ended = False
        self.resuming = False  # adopted by a new connection, <resumed/> not sent yet
        self._unrequested = 0
        self._request_timer: Any = None
        self._expiry: Any = None

    @property
    def detached(self) -> bool:
        return self.stream is None

    # Outbound -----------------------------------------------------------------------

    def send(self, obj, receipt: defer.Deferred | None = None) -> None:
        if self.ended:
            if receipt is not None:
                receipt.callback(False)
            return
        if not is_stanza(obj):
            if self.stream is not None:
                self.stream.send(obj)
            return
        self.sent = (self.sent + 1) % MODULUS
        self.queue.append((obj, receipt))
        policy = self.service.policy
        if len(self.queue) > policy.max_unacked:
            self.service.overflow(self)
            return
        if self.stream is None:
            return
        self.stream.send(obj)
        self._unrequested += 1
        if self._unrequested >= policy.request_every:
            self.request()
        elif self._request_timer is None:
            self._request_timer = self.service.clock.callLater(policy.request_after, self.request)

    def request(self) -> None:
        """Ask the client how much it has handled (``<r/>``)."""
        self._cancel_request_timer()
        self._unrequested = 0
        if self.stream is not None and self.queue:
            self.stream.send(_nonza("r"))

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None and self._request_timer.active():
            self._request_timer.cancel()
        self._request_timer = None

    def acknowledge(self, h: int) -> bool:
        """The client handled ``h`` stanzas; False when it claims more than were sent."""
        count = (h - self.acked) % MODULUS
        if count > len(self.queue):
            return False
        self.acked = h
        for _ in range(count):
            _, receipt = self.queue.popleft()
            if receipt is not None:
                receipt.callback(True)
        if not self.queue:
            self._cancel_request_timer()
        return True

    # Inbound ------------------------------------------------------------------------

    def received(self) -> None:
        """A stanza from the client: it counts once handled, in order (RFC 6120 §10.1)."""
        later = self.session.after_handled()
        if later is None:
            self.handled = (self.handled + 1) % MODULUS
        else:
            later.addCallback(self._count_handled)

    def _count_handled(self, _) -> None:
        self.handled = (self.handled + 1) % MODULUS

    def answer(self) -> None:
        """``<a h/>`` once every stanza received before the ``<r/>`` is handled."""
        later = self.session.after_handled()
        if later is None:
            self._send_ack(None)
        else:
            later.addCallback(self._send_ack)

    def _send_ack(self, _) -> None:
        if self.stream is not None:
            self.stream.send(_nonza("a", h=str(self.handled)))

    # Connection changes -------------------------------------------------------------

    def connection_lost(self, stream, clean: bool) -> bool:
        """The connection ``stream`` went away; True when the session stays bound
        (detached, waiting for ``<resume/>``)."""
        if stream is not self.stream or self.ended:
            return True  # resumed on another connection meanwhile
        if clean or self.id is None:
            return False
        self.stream = None
        self._cancel_request_timer()
        self._expiry = self.service.clock.callLater(self.resume_timeout, self.service.expire, self)
        return True

    def attach(self, stream, h: int) -> None:
        """Resumed on ``stream``: what the client did not get is sent again."""
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        self.stream = stream
        stream.send(_nonza("resumed", previd=self.id or "", h=str(self.handled)))
        self.acknowledge(h)
        for obj, _ in list(self.queue):
            stream.send(obj)
        self._unrequested = 0
        if self.queue:
            self.request()

    def end(self) -> list:
        """No resumption any more; the unacknowledged stanzas, for the ``UNACKED`` hook."""
        if self.ended:
            return []
        self.ended = True
        self._cancel_request_timer()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        pending, self.queue = list(self.queue), deque()
        unacked = []
        for obj, receipt in pending:
            if receipt is not None:
                receipt.callback(False)
            unacked.append(obj if isinstance(obj, domish.Element) else parse_stanza(
                obj.decode("utf-8") if isinstance(obj, bytes) else obj))
        return unacked


class StreamManagement:
    """The server's side of XEP-0198: a client-stream extension (see
    ``ClientNegotiator``) plus the registry of resumable sessions."""

    namespace = NS_SM

    def __init__(self, router, policy: SMPolicy = SMPolicy(), clock=None):
        self.router = router
        self.policy = policy
        self._clock = clock
        self.resumable: dict[str, StreamManager] = {}
        router.hooks.add(SESSION_UNBOUND, self._session_gone)

    @property
    def clock(self):
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock

    # The client-stream extension ------------------------------------------------------

    def features(self, negotiator, features: domish.Element) -> None:
        if negotiator.user is not None:  # bind-capable: authenticated
            features.addElement((NS_SM, "sm"))

    def on_nonza(self, negotiator, element: domish.Element) -> None:
        handler = {"enable": self._enable, "resume": self._resume, "r": self._request,
                   "a": self._ack}.get(element.name)
        if handler is None:
            return negotiator.xmlstream.fail("unsupported-stanza-type", f"<{element.name}/> is not XEP-0198")
        handler(negotiator, element)

    def _enable(self, negotiator, element) -> None:
        xs, session = negotiator.xmlstream, negotiator.session
        if session is None or session.sm is not None:
            # XEP-0198 §3: after binding, once.
            return xs.send(_failed("unexpected-request"))
        resume = element.getAttribute("resume", "false") in ("true", "1")
        timeout = self.policy.resume_timeout
        requested = element.getAttribute("max", "")
        if requested.isdigit() and 0 < int(requested) < timeout:
            timeout = int(requested)
        resume_id = secrets.token_urlsafe(18) if resume and timeout > 0 else None
        session.sm = StreamManager(self, session, xs, resume_id, timeout)
        enabled = _nonza("enabled")
        if resume_id is not None:
            self.resumable[resume_id] = session.sm
            enabled["id"], enabled["resume"], enabled["max"] = resume_id, "true", str(int(timeout))
        xs.send(enabled)

    def _resume(self, negotiator, element) -> None:
        xs = negotiator.xmlstream
        if negotiator.user is None or negotiator.session is not None:
            return xs.send(_failed("unexpected-request"))
        h = _parse_h(element)
        if h is None:
            return xs.send(_failed("bad-request"))
        manager = self.resumable.get(element.getAttribute("previd", ""))
        account = negotiator._account_key(negotiator.user)  # as bound: normalized
        if manager is None or manager.ended or manager.session.jid.user != account:
            return xs.send(_failed("item-not-found"))
        if not manager.detached or manager.resuming:
            # Its connection is still up (or a replayed <resume/>): one stream per session.
            return xs.send(_failed("unexpected-request"))
        if (h - manager.acked) % MODULUS > len(manager.queue):
            # XEP-0198 §5: an impossible h; the session is beyond repair.
            xs.send(_failed("undefined-condition", h=manager.handled))
            self.router.unbind(manager.session)
            return
        negotiator.adopt(manager.session)  # what the client sends now queues behind the rest
        later = manager.session.after_handled()
        if later is None:
            self._resumed(manager, xs, h)
        else:
            # Its h counts what the old connection delivered, every one of them:
            # else the client would send again what the server already has.
            manager.resuming = True
            later.addCallback(lambda _: self._resumed(manager, xs, h))

    def _resumed(self, manager: StreamManager, xs, h: int) -> None:
        manager.resuming = False
        if manager.ended or xs.transport is None:
            return
        manager.attach(xs, h)
        log.msg(f"resumed {manager.session.full}")

    def _request(self, negotiator, element) -> None:
        session = negotiator.session
        if session is None or session.sm is None:
            return negotiator.xmlstream.fail("unsupported-stanza-type", "stream management is not enabled")
        session.sm.answer()

    def _ack(self, negotiator, element) -> None:
        xs, session = negotiator.xmlstream, negotiator.session
        if session is None or session.sm is None:
            return xs.fail("unsupported-stanza-type", "stream management is not enabled")
        h = _parse_h(element)
        if h is None:
            return xs.fail("bad-format", "h is an unsigned 32-bit integer")
        manager = session.sm
        if not manager.acknowledge(h):
            # XEP-0198 §4: more acknowledged than was sent.
            count = _nonza("handled-count-too-high", h=str(h), **{"send-count": str(manager.sent)})
            log.msg(f"{session.full} acknowledged h={h}, sent {manager.sent}")
            xs.stop_coalescing()
            try:
                xs.sendStreamError(error.StreamError(
                    "undefined-condition", "acknowledged more stanzas than were sent", appCondition=count))
            finally:
                xs.stream = None  # parse nothing more, as ServerStream.fail does

    # Session lifetime -----------------------------------------------------------------

    def connection_lost(self, negotiator, session) -> bool:
        """True when ``session`` stays bound without its connection."""
        if session.sm is None:
            return False
        xs = negotiator.xmlstream
        return session.sm.connection_lost(xs, clean=getattr(xs, "_closed", False))

    def expire(self, manager: StreamManager) -> None:
        manager._expiry = None
        log.msg(f"resumption window of {manager.session.full} expired")
        self.router.unbind(manager.session)

    def overflow(self, manager: StreamManager) -> None:
        session = manager.session
        log.msg(f"{session.full}: more than {self.policy.max_unacked} stanzas unacknowledged")
        if manager.stream is not None:
            manager.stream.fail("policy-violation", "too many unacknowledged stanzas")
        self.router.unbind(session)

    def _session_gone(self, session):
        manager = session.sm
        if manager is None:
            return None
        if manager.id is not None:
            self.resumable.pop(manager.id, None)
        unacked = manager.end()
        if unacked:
            return self.router.hooks.fire(UNACKED, session, unacked)
        return None


def install(server, options, clock=None) -> StreamManagement:
    """Wire XEP-0198 into a ``Server``."""
    policy = SMPolicy(resume_timeout=float(options.get("sm-resume-timeout", SMPolicy.resume_timeout)),
                      max_unacked=int(options.get("sm-max-unacked", SMPolicy.max_unacked)))
    management = StreamManagement(server.router, policy, clock=clock)
    server.router.stream_extensions.append(management)
    return management
