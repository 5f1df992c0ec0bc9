"""Stanzas and engine events between the processes of a cluster.

Each process listens on its own Redis pub/sub channel. What crosses:

- ``x``: a stanza for one of the receiver's sessions (a ``RemoteSession``'s
  ``send``): RFC 6121 §8 was decided by the sender, over the whole cluster;
- ``e``: an engine event and the recipients the receiver holds sessions
  for — one message per process, the event serialized once; the receiver
  runs ``EventDelivery`` for its own sessions (the rendering, carbons and
  the ``+notify``/legacy choice are per session, so they are made where
  the session is);
- ``a``: an authorization request for owners connected there;
- ``c``: end one of the receiver's sessions with a stream error (an
  administrator's kick, a password change, an account removed);
- ``k``: a full JID bound again elsewhere: the receiver's session of that
  name is replaced (RFC 6120 §7.7.2.2), as one process would, and the
  binder is told once it is gone (``replaced``);
- ``r``: a stanza for a room whose home is the receiver (XEP-0045's, or an
  XEP-0060 request on the room's node). Every room has one home at a time
  (rendezvous hashing over the live processes): its stanzas are handled
  one at a time there, as in one process.

Pub/sub rather than streams: a message only matters to the process holding
the session, and PUBLISH answers how many processes heard it. Nobody (the
process is gone or cut off) → a stanza is bounced at once, and an event's
live items are reported to the node kind as undelivered, exactly as a
recipient with no session is: a one-to-one message waits as an offline
message. What a lost message would cost is thus paid where it matters,
without a stream per process to trim and replay.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.python import log
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xep207.cluster import codec
from xep207.cluster.link import ClusterUnavailable
from xep207.pubsub.events import ITEMS, AuthorizationRequest, Event, Recipient
from xep207.pubsub.kinds.pair import PairKind
from xep207.pubsub.protocol import requested_node
from xep207.xmlutil import parse_stanza

if TYPE_CHECKING:
    from xep207.cluster.directory import RemoteSession
    from xep207.cluster.node import Cluster

# The stream errors another process may end a session with (RFC 6120 §4.9.3).
CLOSE_CONDITIONS = ("conflict", "not-authorized", "policy-violation", "reset", "system-shutdown")
UNREACHABLE = "the server holding that session is unreachable; try again"


class Routing:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self._ids = itertools.count(1)
        self._crossing: dict[str, _Crossing] = {}  # query → a one-to-one message not yet handled there

    @property
    def server(self):
        return self.cluster.server

    # Out ---------------------------------------------------------------------------------

    def forward_stanza(self, session: "RemoteSession", stanza) -> None:
        """``RemoteSession.send``: to the process holding ``session``."""
        if not isinstance(stanza, str) and stanza.__dict__.get("cluster_hop", False):
            log.msg(f"cluster: {session.full} moved while a stanza crossed to it; dropped")
            return
        xml = stanza if isinstance(stanza, str) else stanza.toXml()
        self.cluster.stats["stanzas-forwarded"] += 1
        d = self.cluster.publish(session.node, codec.dumps({"t": "x", "j": session.full, "x": xml}))
        if isinstance(stanza, domish.Element):
            d.addCallback(self._heard, lambda: self.server.router.bounce(stanza, "service-unavailable", UNREACHABLE))
            d.addErrback(self._failed, lambda: self.server.router.bounce(stanza, "service-unavailable",
                                                                         UNREACHABLE))
        else:
            d.addErrback(self._failed, lambda: None)

    def close_session(self, session: "RemoteSession", condition: str, text: str | None) -> None:
        d = self.cluster.publish(session.node, codec.dumps({"t": "c", "j": session.full, "c": condition,
                                                            "x": text}))
        d.addErrback(self._failed, lambda: None)

    def forward_event(self, event: Event, by_node: dict[str, dict[str, Recipient]]) -> None:
        """One message per process holding sessions of these recipients; the
        event serialized once for all of them. A live one-to-one message asks
        to be told once it is handled there (written, its XEP-0198 window
        stored, or kept offline): see ``handled_elsewhere``."""
        body = json.dumps(codec.event_data(event), separators=(",", ":"))
        asks = event.kind == ITEMS and not event.replay and event.node_kind == "pair"
        for node, recipients in by_node.items():
            listed = list(recipients.values())
            ask = ""
            crossing = None
            if asks:
                query = f"{self.cluster.name}:{next(self._ids)}"
                crossing = self._crossing[query] = _Crossing(event.node_id)
                crossing.done.addBoth(self._crossed, query)
                # A shutdown waits for it: confirmed, or kept offline here (else lost with the process).
                self.cluster.work.track(crossing.done)
                ask = ',"q":' + json.dumps(query) + ',"n":' + json.dumps(self.cluster.name)
            text = '{"t":"e","e":' + body + ',"r":' + json.dumps(codec.recipients_data(listed)) + ask + "}"
            self.cluster.stats["events-forwarded"] += 1
            d = self.cluster.publish(node, text)
            if crossing is None:
                missed = lambda listed=listed: self._undelivered(event, listed)  # noqa: E731
                d.addCallback(self._heard, missed)
                d.addErrback(self._failed, missed)
            else:
                d.addBoth(self._asked, crossing, event, listed)

    # A one-to-one message handled elsewhere ----------------------------------------------

    def handled_elsewhere(self, node_id: str) -> defer.Deferred | None:
        """Fires once every live message of this conversation that crossed to
        another process was handled there (or, unanswered within the link's
        reply timeout, kept offline here: at least once, never lost). The chat
        capture waits for it before an XEP-0198 sender's message counts as
        handled, as it waits for its own unacknowledged window in one process."""
        waiting = [c.done for c in self._crossing.values() if c.node_id == node_id and not c.done.called]
        if not waiting:
            return None
        return defer.DeferredList(waiting)

    def _asked(self, result, crossing: "_Crossing", event: Event, listed: list[Recipient]) -> None:
        """The PUBLISH of a message that asked to be confirmed came back."""
        if isinstance(result, Failure):
            if not result.check(ClusterUnavailable):
                log.err(result, "cluster: forwarding a message")
            heard = 0
        else:
            heard = int(result or 0)
        if not heard:  # nobody there: kept offline here
            self._safe_after(crossing, self._undelivered(event, listed))
            return

        def unanswered(failure):
            failure.trap(defer.TimeoutError)
            self.cluster.stats["crossings-unanswered"] += 1
            log.msg(f"cluster: a message in {event.node_id} was not confirmed by the process holding its "
                    "recipient; kept offline too (it may arrive twice)")
            self._safe_after(crossing, self._undelivered(event, listed))

        crossing.answered.addTimeout(self.cluster.link.reply_timeout, self.cluster.reactor)
        crossing.answered.addCallbacks(lambda _: self._safe_after(crossing, None), unanswered)

    @staticmethod
    def _safe_after(crossing: "_Crossing", kept: defer.Deferred | None) -> None:
        def safe(_=None) -> None:
            if not crossing.done.called:
                crossing.done.callback(None)

        if kept is None:
            safe()
        else:
            kept.addBoth(safe)

    def _crossed(self, result, query: str):
        self._crossing.pop(query, None)
        return None

    def _handled(self, message: dict) -> None:
        crossing = self._crossing.get(str(message.get("q")))
        if crossing is not None and not crossing.answered.called:
            self.cluster.stats["crossings-handled"] += 1
            crossing.answered.callback(None)

    def forward_request(self, request: AuthorizationRequest, nodes: set[str]) -> None:
        text = codec.dumps({"t": "a", "q": codec.request_data(request)})
        for node in nodes:
            self.cluster.publish(node, text).addErrback(self._failed, lambda: None)

    @staticmethod
    def _heard(listeners, otherwise) -> None:
        if not int(listeners or 0):
            otherwise()

    @staticmethod
    def _failed(failure, otherwise) -> None:
        failure.trap(ClusterUnavailable)
        otherwise()

    def _undelivered(self, event: Event, recipients: list[Recipient]) -> defer.Deferred | None:
        """Nobody heard: a live item is undelivered to these recipients, and
        their node's kind decides what to keep (the pair kind: offline).
        Fires once it is kept."""
        if event.kind != ITEMS or event.replay:
            return None
        self.cluster.stats["events-undelivered"] += 1

        async def report():
            engine = self.server.engine
            kind = engine.kind_of(event.service, event.node_id)
            node = await engine.storage.get_node(event.service, event.node_id)
            if node is None:
                return
            for item in event.items:
                for recipient in recipients:
                    if isinstance(kind, PairKind):
                        await kind.undelivered(engine, node, item, recipient, late=True)
                    else:  # (a plugin's kind may predate ``late``)
                        await kind.undelivered(engine, node, item, recipient)

        # Reported after the publish returned: under the conversation's lock,
        # as the engine reports a miss inside the publish in one process (the
        # pair kind's mark is read, then written; the offline path shares it).
        d = self.cluster.work.track(defer.ensureDeferred(
            self.server.chat.offline.window.locked(event.node_id, report)))
        d.addErrback(log.err, "cluster: keeping an undelivered item failed")
        return d

    # Rooms: one home each -----------------------------------------------------------------

    def home_of(self, room: str) -> str:
        nodes = self.cluster.live | {self.cluster.name}
        return max(nodes, key=lambda node: hashlib.sha1(f"{node}\0{room}".encode()).digest())

    def room_stanza(self, stanza) -> bool | defer.Deferred:
        """``STANZA`` hook, last: a stanza for a room homed elsewhere goes
        there; one handled here waits, if need be, for the room's state
        (``xep207.cluster.rooms``: the home moved here)."""
        if not self.cluster.started:
            return False
        to = stanza.getAttribute("to")
        if not to:
            return False
        room, at, rest = to.partition("@")
        domain = self.server.groupchat.rooms.domain
        if (rest if at else to).partition("/")[0] != domain:
            return False
        if not at:
            room = ""  # the service itself: XEP-0060 on a room's node is handled
            if stanza.name == "iq" and any(c.name == "pubsub" for c in stanza.elements()):
                room = requested_node(stanza) or ""  # where XEP-0045's stanzas for the room are
        if not room:
            return False
        if not self.cluster.link.up:
            return False  # cut off from Redis: rooms are served here meanwhile
        if stanza.__dict__.get("cluster_hop", False) or self.home_of(room) == self.cluster.name:
            loading = self.cluster.room_state.before_handling(room)
            return False if loading is None else loading.addCallback(lambda _: False)
        home = self.home_of(room)
        self.cluster.stats["room-stanzas-forwarded"] += 1
        d = self.cluster.publish(home, codec.dumps({"t": "r", "x": stanza.toXml()}))
        bounce = lambda: self.server.router.bounce(stanza, "service-unavailable", UNREACHABLE)  # noqa: E731
        d.addCallback(self._heard, lambda: self._home_unreachable(stanza, home))
        d.addErrback(self._failed, bounce)
        return True

    def _home_unreachable(self, stanza, home: str) -> None:
        """Nobody listens on the home's channel: it died (its heartbeat has
        not gone stale here yet) or is cut off. Until its next heartbeat says
        otherwise it is not live here, and the stanza goes to the room's next
        home (which another process reaping it would pick too)."""
        self.cluster.live.discard(home)
        self.cluster.stats["room-homes-unreachable"] += 1
        self.server.router.route(stanza)

    # In -----------------------------------------------------------------------------------

    def received(self, kind, message: dict) -> None:
        router = self.server.router
        if kind == "x":
            full = message["j"]
            bare, _, resource = full.partition("/")
            session = router.sessions.get(bare, {}).get(resource)
            if session is not None:
                session.send(message["x"])
                return
            self._missed(parse_stanza(message["x"]), bare)
        elif kind == "c":
            bare, _, resource = str(message["j"]).partition("/")
            closed = router.sessions.get(bare, {}).get(resource)
            if closed is not None and message.get("c") in CLOSE_CONDITIONS:
                closed.close(message["c"], message.get("x") if isinstance(message.get("x"), str) else None)
        elif kind == "k":
            bare, _, resource = str(message["j"]).partition("/")
            replaced = router.sessions.get(bare, {}).get(resource)
            ended = defer.succeed(None)
            if replaced is not None:
                ended = router.unbind(replaced)
                replaced.close("conflict", "replaced by a new connection")
            query, sender = message.get("q"), message.get("n")
            if isinstance(query, str) and isinstance(sender, str):
                # The new session's first stanza waits for this: its presence after our retraction.
                def answer(_, sender: str = sender, query: str = query) -> None:
                    d = self.cluster.publish(sender, codec.dumps({"t": "replaced", "q": query}))
                    d.addErrback(lambda f: f.trap(ClusterUnavailable))

                ended.addBoth(answer)
        elif kind == "replaced":
            self.cluster.replacement_done(message)
        elif kind == "applied":
            self.server.cluster_invalidation.applied(message)
        elif kind == "handled":
            self._handled(message)
        elif self.cluster.stopping and kind != "e":
            return  # leaving: the sessions are gone, storage is about to close
        elif kind == "e":
            # (Leaving too: its sessions are gone, so its live items are kept
            # offline here and confirmed, before storage closes; the sender
            # need not wait for its reply timeout to keep them itself.)
            event = codec.event_from(message["e"])
            missed = self.server.delivery.deliver(event, codec.recipients_from(message["r"]), forwarded=True)
            # The session left while the event crossed: kept as its kind keeps a miss.
            kept = self._undelivered(event, missed) if missed else None
            query, sender = message.get("q"), message.get("n")
            if isinstance(query, str) and isinstance(sender, str):
                # Handled once written, its XEP-0198 window stored, or kept offline.
                waits = [d for d in (kept, self.server.chat.offline.window.stored(event.node_id)) if d is not None]
                done = defer.gatherResults(waits) if waits else defer.succeed(None)
                done.addBoth(lambda _: self.cluster.publish(sender, '{"t":"handled","q":' + json.dumps(query) + "}")
                             .addErrback(lambda f: f.trap(ClusterUnavailable)))
        elif kind == "a":
            self.server.delivery.request_authorization(codec.request_from(message["q"]), forwarded=True)
        elif kind == "r":
            stanza = parse_stanza(message["x"])
            stanza.cluster_hop = True  # type: ignore[attr-defined]  # handled here, whatever our view of homes
            router.route(stanza)

    def _missed(self, stanza, bare: str) -> None:
        """The session left while its stanza crossed: as RFC 6121 §8.5.3.2 for
        a resource that is not there."""
        router = self.server.router
        stanza.cluster_hop = True
        if stanza.name == "iq":
            router.bounce(stanza, "service-unavailable")
        elif stanza.name == "message" and stanza.getAttribute("type", "normal") in ("normal", "chat"):
            router.deliver_message_to_bare(stanza, bare)


class _Crossing:
    """A live one-to-one message sent to another process: ``answered`` when
    that process says it handled it; ``done`` when it is safe here (handled
    there, or kept offline)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.answered: defer.Deferred = defer.Deferred()
        self.done: defer.Deferred = defer.Deferred()
