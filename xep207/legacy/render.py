"""Legacy renderings of node events: what a client that never speaks pubsub receives.

A rendering is serialized once per event as a ``Template``; per recipient
only its ``to`` is filled in. Renderers are looked up in order; the first
that knows the event's node wins (``PresenceRenderer`` here; groupchat and
chat add theirs).
"""

from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Iterable, Protocol
from xml.sax.saxutils import quoteattr

from xep207.pubsub.kinds import PRESENCE_NODE
from xep207.pubsub.kinds.account import REQUEST_EXTENSIONS
from xep207.pubsub.events import ITEMS, RETRACT, SUBSCRIPTION, AuthorizationRequest, Event
from xep207.storage.records import SUBSCRIBED, bare


@functools.lru_cache(maxsize=16384)
def quoted(jid: str) -> str:
    """``quoteattr`` for the few thousand addresses a fan-out writes over and over."""
    return quoteattr(jid)


@dataclass(frozen=True)
class Template:
    """A serialized stanza whose ``to`` is filled in per recipient.

    ``head`` ends just before the ``to`` value, ``tail`` starts right after it.
    """

    head: str
    tail: str

    def to(self, recipient: str) -> str:
        return self.head + quoted(recipient) + self.tail

    @classmethod
    def around(cls, stanza: str, name: str) -> "Template":
        """Insert a ``to`` into serialized ``<name …>`` text."""
        opening = "<" + name
        if not stanza.startswith(opening):
            raise ValueError(f"not a <{name}/>: {stanza[:40]!r}")
        return cls(opening + " to=", stanza[len(opening):])

    @classmethod
    def presence(cls, sender: str, type: str | None = None, inner: str = "") -> "Template":
        type_attribute = f" type={quoteattr(type)}" if type else ""
        closing = f">{inner}</presence>" if inner else "/>"
        return cls("<presence to=", f" from={quoteattr(sender)}{type_attribute}{closing}")


class Rendering(Protocol):
    """One event's legacy form, prepared once for all its recipients."""

    def stanzas_for(self, recipient, session) -> Iterable[str]:
        """The serialized stanzas this session gets (none is fine)."""

    def missed(self, recipient) -> bool:
        """Whether a live event reached none of the recipient's sessions that
        should have had it (the kind may keep it for later)."""

    def addressed_sessions(self, recipient) -> list:
        """Sessions the event is addressed to beyond the available ones."""


class LegacyRenderer(Protocol):
    def prepare(self, event: Event) -> Rendering | None:
        """The legacy form of this event, or None when it has none (the
        XEP-0207 form is sent instead)."""

    def render_authorization(self, request: AuthorizationRequest) -> list[Template] | None:
        """The legacy form of an authorization request, or None."""


@dataclass(frozen=True)
class TemplateRendering:
    """The common case: the same stanzas for everyone, addressed per session."""

    templates: tuple[Template, ...]

    def stanzas_for(self, recipient, session) -> Iterable[str]:
        return [template.to(session.full) for template in self.templates]

    def missed(self, recipient) -> bool:
        return False

    def addressed_sessions(self, recipient) -> list:
        return []


def is_presence_node(service: str, node_id: str) -> bool:
    return node_id == PRESENCE_NODE and "@" in service and "/" not in service


class PresenceRenderer:
    """The ``presence`` node of an account, as RFC 6121 presence stanzas."""

    def prepare(self, event: Event) -> Rendering | None:
        templates = self.render(event)
        return TemplateRendering(tuple(templates)) if templates is not None else None

    def render(self, event: Event) -> list[Template] | None:
        if not is_presence_node(event.service, event.node_id):
            return None
        if event.kind == ITEMS:
            return [Template.around(item.payload, "presence") for item in event.items if item.payload]
        if event.kind == RETRACT:
            return [Template.presence(f"{event.service}/{resource}", "unavailable", event.note)
                    for resource in event.retracted]
        if event.kind == SUBSCRIPTION:
            assert event.subscription is not None, "a subscription event carries its subscription"
            state = "subscribed" if event.subscription.state == SUBSCRIBED else "unsubscribed"
            return [Template.presence(event.service, state)]
        return []  # purge, delete, configuration: nothing a legacy client would understand

    def render_authorization(self, request: AuthorizationRequest) -> list[Template] | None:
        if not is_presence_node(request.service, request.node_id):
            return None
        # RFC 6121 §3.1.3: the request as the user sent it, extensions included.
        extensions = str(request.subscription.options.get(REQUEST_EXTENSIONS, ""))
        return [Template.presence(bare(request.subscription.subscriber), "subscribe", extensions)]
