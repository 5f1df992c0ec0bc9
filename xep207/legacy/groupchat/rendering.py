"""Room events as legacy sessions see them.

An occupant that joined through XEP-0045 gets each room item as a
``type='groupchat'`` message from ``room/nick`` — unless the session speaks
pubsub for the room, then it gets the XEP-0207 event like a native
subscriber. Each item is serialized once per event, addressed per session.
"""

from __future__ import annotations

from xep207.legacy.delivery import speaks_pubsub
from xep207.legacy.render import Template
from xep207.pubsub import render
from xep207.pubsub.events import ITEMS
from xep207.pubsub.kinds.room import NS_NICK, RoomKind
from xep207.storage.records import VIA_LEGACY
from xep207.xmlutil import parse_stanza


def as_groupchat(room_jid: str, item) -> str | None:
    """A room item as the groupchat message occupants see (from room/nick)."""
    try:
        message = parse_stanza(item.payload)
    except Exception:
        return None
    nick = next((str(c) for c in message.elements(NS_NICK, "nick")), None)
    nick = nick or message.getAttribute("from", item.publisher).split("/")[0].split("@")[0]
    message["from"] = f"{room_jid}/{nick}"
    message["type"] = "groupchat"
    message.attributes.pop("to", None)
    return message.toXml()


class RoomRenderer:
    """The legacy renderer of room nodes (``EventDelivery`` hands their events over)."""

    def __init__(self, router, domain: str):
        self.router = router
        self.domain = domain

    def render(self, event):
        return None

    def render_authorization(self, request):
        return None

    def deliver(self, event, recipients):
        if event.node_kind != RoomKind.name:
            return None
        room_jid = f"{event.node_id}@{self.domain}"
        templates = {}
        body = None
        for recipient in recipients:
            via_legacy = recipient.subscription is not None and recipient.subscription.via == VIA_LEGACY
            for session in self.router.sessions_for(recipient.jid) or []:
                if not via_legacy or speaks_pubsub(session, event.node_id):
                    body = body or render.event_body(event)
                    session.send(render.message(event.service, session.full, body, type="headline"))
                    continue
                if event.kind != ITEMS:
                    continue  # occupants learn of config changes and destruction from presence
                for item in event.items:
                    if item.item_id not in templates:
                        xml = as_groupchat(room_jid, item)
                        templates[item.item_id] = Template.around(xml, "message") if xml else None
                    if templates[item.item_id] is not None:
                        session.send(templates[item.item_id].to(session.full))
        return []  # a room keeps no offline copies: history is the items
