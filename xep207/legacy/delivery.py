"""Where engine events leave for the network, rendered per recipient session.

The rule (docs/architecture.md): a subscription made through XEP-0060 gets the XEP-0207
``<message><event/></message>`` form; one made by legacy capture gets the
legacy stanza — unless the receiving session speaks pubsub for that node name
(it advertised ``N+notify`` or used XEP-0060 on a node named N). Each form is
serialized at most once per event; per session only the envelope differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from zope.interface import implementer

from xep207.legacy.render import LegacyRenderer, Rendering
from xep207.pubsub import render
from xep207.pubsub.events import IEventSink, IInterestDirectory, Recipient
from xep207.pubsub.kinds.base import NodeKindName
from xep207.storage.records import VIA_LEGACY

if TYPE_CHECKING:
    from xep207.legacy.blocking_checks import BlockGate


def speaks_pubsub(session, node_id: str) -> bool:
    return node_id in session.interested or node_id in session.pubsub_nodes


def pubsub_type(event) -> str:
    """XEP-0060 notifications are ``normal`` or ``headline`` (a room's node
    says ``groupchat`` for its legacy rendering)."""
    return event.notification_type if event.notification_type in ("normal", "headline") else "headline"


@implementer(IEventSink)
class EventDelivery:
    """The one place where a notification's form is chosen, per recipient session.

    ``renderers`` maps a node kind's name to its legacy renderer; a kind
    without one is pubsub-only. Rendering reads, never writes: what a kind
    must remember (an offline message) is reported back to the engine as the
    recipients that were missed.
    """

    def __init__(self, router, renderers: Mapping[NodeKindName, LegacyRenderer] | None = None):
        self.router = router
        self.renderers: dict[NodeKindName, LegacyRenderer] = dict(renderers or {})
        self.gate: BlockGate | None = None  # XEP-0191: what must not pass (xep207.legacy.blocking_checks)
        self.cluster: Any = None  # xep207.cluster: other processes render for their own sessions

    def deliver(self, event, recipients, *, forwarded: bool = False) -> list[Recipient]:
        """``forwarded``: another process of the cluster sent this event on
        for the sessions held here (it did everything else)."""
        renderer = self.renderers.get(event.node_kind)
        rendering: Rendering | None = None  # the legacy form, prepared once,
        prepared = False  # when first needed
        envelope = None  # the XEP-0207 form, serialized once, when first needed
        missed = []
        elsewhere: dict | None = None  # process → its recipients, sent on once each
        if self.cluster is not None:
            self.cluster.presence_changed(event)
        gate = self.gate.for_event(event) if self.gate is not None else None
        per_resource = gate is not None and gate.per_resource
        sessions_for = self.router.sessions_for
        node_id = event.node_id
        for recipient in recipients:
            if gate is not None and gate.account(recipient.jid):
                continue
            sessions = sessions_for(recipient.jid)
            if sessions is None:
                if not forwarded:  # not one of our accounts: a component, say
                    envelope = envelope or self._envelope(event)
                    self.router.deliver_serialized(recipient.jid, envelope.to(recipient.jid))
                continue
            subscription = recipient.subscription
            legacy = renderer is not None and subscription is not None and subscription.via == VIA_LEGACY
            if legacy and not prepared:
                rendering = renderer.prepare(event) if renderer is not None else None
                prepared = True
            if legacy and rendering is not None:
                # RFC 6121 §8.5.3.1: a message to a connected full JID reaches it,
                # available or not (a bot that never sends presence, say).
                addressed = rendering.addressed_sessions(recipient)
                if addressed:
                    addressed = [s for s in addressed if s not in sessions]
                    if addressed:
                        sessions = sessions + addressed
            for session in sessions:
                if per_resource and gate is not None and gate.resource(session.full):
                    continue
                if session.remote:  # held by another process: it renders for it
                    if not forwarded:
                        elsewhere = elsewhere if elsewhere is not None else {}
                        elsewhere.setdefault(session.node, {})[recipient.jid] = recipient
                    continue
                if legacy and not (node_id in session.interested or node_id in session.pubsub_nodes):
                    # A client that never speaks pubsub never sees a pubsub stanza:
                    # an event its kind does not render reaches it as nothing.
                    if rendering is not None:
                        for xml in rendering.stanzas_for(recipient, session):
                            session.send(xml)
                    continue
                if session.priority < 0 and "/" not in recipient.jid:
                    continue  # RFC 6121 §8.5.2.1.1: not to negative-priority resources
                envelope = envelope or self._envelope(event)
                session.send(envelope.to(session.full))
            if legacy and rendering is not None and rendering.missed(recipient):
                missed.append(recipient)
        if elsewhere and self.cluster is not None:
            self.cluster.routing.forward_event(event, elsewhere)
        return missed

    @staticmethod
    def _envelope(event) -> render.Envelope:
        return render.Envelope.around(event.service, render.event_body(event), pubsub_type(event))

    def request_authorization(self, request, *, forwarded: bool = False):
        form = None
        elsewhere: set = set()
        for owner in request.owners:
            for session in self.router.sessions_for(owner) or ():
                if self.gate is not None and self.gate.between(request.subscription.subscriber, session.full):
                    continue
                if session.remote:  # held by another process: it renders for it
                    elsewhere.add(session.node)
                    continue
                templates = None
                if not speaks_pubsub(session, request.node_id):
                    renderer = self.renderers.get(request.node_kind)
                    if renderer is not None:
                        templates = renderer.render_authorization(request)
                if templates is not None:
                    for template in templates:
                        session.send(template.to(session.full))
                else:
                    form = form or render.authorization_form(request)
                    session.send(render.message(request.service, session.full, form,
                                                id=render.authorization_id(request)))
        if elsewhere and not forwarded and self.cluster is not None:
            self.cluster.routing.forward_request(request, elsewhere)

    def subscription_changed(self, change):
        pass  # the engine fires the SUBSCRIPTION_CHANGED hook; captures listen there


@implementer(IInterestDirectory)
class SessionInterest:
    """XEP-0163 ``+notify`` answered from the router's live sessions."""

    def __init__(self, router):
        self.router = router

    def interested_resources(self, entities, node_id):
        return [session.full for bare in entities
                for session in self.router.available_resources(bare)
                if node_id in session.interested]

    def is_online(self, jid):
        if "/" in jid:
            return self.router.session(jid) is not None
        return bool(self.router.resources(jid))


class PubSubUsage:
    """Router interceptor that never consumes: remembers the node names a
    session used XEP-0060 on, which makes it pubsub-speaking for them."""

    NS_PUBSUB = "http://jabber.org/protocol/pubsub"

    def intercept(self, stanza) -> bool:
        session = stanza.__dict__.get("session")
        if session is not None and stanza.name == "iq":
            for pubsub in stanza.elements(self.NS_PUBSUB, "pubsub"):
                for verb in pubsub.elements():
                    node = verb.getAttribute("node")
                    if node:
                        session.pubsub_nodes.add(node)
        return False
