"""Where engine events leave for the network, rendered per recipient.

Each event is serialized once per form it is rendered in; per recipient only
the ``<message>`` envelope differs (``render.message``).
"""

from __future__ import annotations

from typing import Callable

from zope.interface import implementer

from xep207.pubsub import render
from xep207.pubsub.events import IEventSink, IInterestDirectory

# deliver(to, serialized stanza, stanza kind, message type)
Deliver = Callable[[str, str, str, str], None]


@implementer(IEventSink)
class EventDelivery:
    def __init__(self, deliver: Deliver):
        self._deliver = deliver

    def deliver(self, event, recipients):
        if not recipients:
            return
        body = render.event_body(event)
        for recipient in recipients:
            xml = render.message(event.service, recipient.jid, body, type=event.notification_type)
            self._deliver(recipient.jid, xml, "message", event.notification_type)

    def request_authorization(self, request):
        form = render.authorization_form(request)
        for owner in request.owners:
            xml = render.message(request.service, owner, form, id=render.authorization_id(request))
            self._deliver(owner, xml, "message", "normal")


@implementer(IInterestDirectory)
class SessionInterest:
    """XEP-0163 ``+notify`` answered from the router's live sessions."""

    def __init__(self, router):
        self.router = router

    def interested_resources(self, entities, node_id):
        return [session.full for bare in entities
                for session in self.router.available_resources(bare)
                if node_id in session.interested]
