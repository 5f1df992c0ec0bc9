"""Where engine events leave for the network, rendered per recipient session.

DESIGN.md's rule: a subscription made through XEP-0060 gets the XEP-0207
``<message><event/></message>`` form; one made by legacy capture gets the
legacy stanza — unless the receiving session speaks pubsub for that node name
(it advertised ``N+notify`` or used XEP-0060 on a node named N). Each form is
serialized at most once per event; per session only the envelope differs.
"""

from __future__ import annotations

from typing import Mapping

from zope.interface import implementer

from xep207.legacy.render import LegacyRenderer
from xep207.pubsub import render
from xep207.pubsub.events import IEventSink, IInterestDirectory
from xep207.storage.records import VIA_LEGACY

_UNSET = object()


def speaks_pubsub(session, node_id: str) -> bool:
    return node_id in session.interested or node_id in session.pubsub_nodes


@implementer(IEventSink)
class EventDelivery:
    """``renderers`` maps a node kind's name to its legacy renderer."""

    def __init__(self, router, renderers: Mapping[str, LegacyRenderer] | None = None):
        self.router = router
        self.renderers: dict[str, LegacyRenderer] = dict(renderers or {})

    def _legacy(self, event):
        renderer = self.renderers.get(event.node_kind)
        return renderer.render(event) if renderer is not None else None

    def deliver(self, event, recipients):
        renderer = self.renderers.get(event.node_kind)
        takes_over = getattr(renderer, "deliver", None)
        if takes_over is not None:
            answer = takes_over(event, recipients)
            if answer is not None:
                return answer
        body = None
        legacy = _UNSET
        for recipient in recipients:
            sessions = self.router.sessions_for(recipient.jid)
            if sessions is None:  # not one of our accounts: a component, say
                body = body or render.event_body(event)
                self.router.deliver_serialized(
                    recipient.jid, render.message(event.service, recipient.jid, body,
                                                  type=event.notification_type))
                continue
            via_legacy = recipient.subscription is not None and recipient.subscription.via == VIA_LEGACY
            for session in sessions:
                if via_legacy and not speaks_pubsub(session, event.node_id):
                    if legacy is _UNSET:
                        legacy = self._legacy(event)
                    if legacy is not None:
                        for template in legacy:
                            session.send(template.to(session.full))
                        continue
                if session.priority < 0 and "/" not in recipient.jid:
                    continue  # RFC 6121 §8.5.2.1.1: not to negative-priority resources
                body = body or render.event_body(event)
                session.send(render.message(event.service, recipient.jid, body,
                                            type=event.notification_type))

    def request_authorization(self, request):
        form = None
        for owner in request.owners:
            for session in self.router.sessions_for(owner) or ():
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


class PubSubUsage:
    """Router interceptor that never consumes: remembers the node names a
    session used XEP-0060 on, which makes it pubsub-speaking for them."""

    NS_PUBSUB = "http://jabber.org/protocol/pubsub"

    async def intercept(self, stanza) -> bool:
        session = getattr(stanza, "session", None)
        if session is not None and stanza.name == "iq":
            for pubsub in stanza.elements(self.NS_PUBSUB, "pubsub"):
                for verb in pubsub.elements():
                    node = verb.getAttribute("node")
                    if node:
                        session.pubsub_nodes.add(node)
        return False
