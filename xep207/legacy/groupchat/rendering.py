"""Room events as legacy sessions see them.

An occupant that joined through XEP-0045 gets each room item as a
``type='groupchat'`` message from ``room/nick`` (``EventDelivery`` decides
which sessions get this form). Each item is serialized once per event,
addressed per session.
"""

from __future__ import annotations

from xep207.legacy.render import Template, TemplateRendering
from xep207.pubsub.events import ITEMS
from xep207.pubsub.kinds.room import NS_NICK
from xep207.xmlutil import parse_stanza, release


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
    xml = message.toXml()
    release(message)
    return xml


class RoomRenderer:
    """The legacy renderer of room nodes, for ``EventDelivery``."""

    def __init__(self, domain: str):
        self.domain = domain

    def prepare(self, event) -> TemplateRendering:
        """Room items as groupchat messages from room/nick; occupants learn
        of configuration changes and destruction from presence instead."""
        if event.kind != ITEMS:
            return TemplateRendering(())
        room_jid = f"{event.node_id}@{self.domain}"
        rendered = (as_groupchat(room_jid, item) for item in event.items)
        return TemplateRendering(tuple(Template.around(xml, "message") for xml in rendered if xml))

    def render_authorization(self, request):
        return None
