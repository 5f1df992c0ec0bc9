"""Turning engine events into XEP-0060 / XEP-0207 stanzas, serialized once.

A notification's body (the ``<event/>`` element) is serialized once per event;
per recipient only the ``<message>`` envelope is formatted around it.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from xep207.pubsub.events import (
    CONFIGURATION,
    DELETE,
    ITEMS,
    PURGE,
    RETRACT,
    SUBSCRIPTION,
    AuthorizationRequest,
    Event,
)

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_EVENT = NS_PUBSUB + "#event"
NS_AUTHORIZATION = NS_PUBSUB + "#subscribe_authorization"
NS_DATA = "jabber:x:data"
NS_ADDRESS = "http://jabber.org/protocol/address"


def event_body(event: Event) -> str:
    """The serialized ``<event xmlns='…#event'>`` element of a notification."""
    node = quoteattr(event.node_id)
    if event.kind == ITEMS:
        parts = []
        for item in event.items:
            if event.include_payloads and item.payload:
                parts.append(f"<item id={quoteattr(item.item_id)}>{item.payload}</item>")
            else:
                parts.append(f"<item id={quoteattr(item.item_id)}/>")
        inner = f"<items node={node}>{''.join(parts)}</items>"
    elif event.kind == RETRACT:
        retracts = "".join(f"<retract id={quoteattr(i)}/>" for i in event.retracted)
        inner = f"<items node={node}>{retracts}</items>"
    elif event.kind == PURGE:
        inner = f"<purge node={node}/>"
    elif event.kind == DELETE:
        redirect = f"<redirect uri={quoteattr(event.redirect)}/>" if event.redirect else ""
        inner = f"<delete node={node}>{redirect}</delete>"
    elif event.kind == CONFIGURATION:
        inner = f"<configuration node={node}/>"
    elif event.kind == SUBSCRIPTION:
        s = event.subscription
        assert s is not None, "a subscription event carries its subscription"
        inner = (f"<subscription node={node} jid={quoteattr(s.subscriber)}"
                 f" subid={quoteattr(s.subid)} subscription={quoteattr(s.state)}/>")
    else:
        raise ValueError(f"unknown event kind {event.kind!r}")
    body = f"<event xmlns='{NS_EVENT}'>{inner}</event>"
    if event.reply_to:
        body += (f"<addresses xmlns='{NS_ADDRESS}'>"
                 f"<address type='replyto' jid={quoteattr(event.reply_to)}/></addresses>")
    return body


@functools.lru_cache(maxsize=16384)
def quoted(value: str) -> str:
    """``quoteattr`` for the few thousand addresses a fan-out writes over and over."""
    return quoteattr(value)


# Message ids: unique in this process (a counter) and across restarts (a random
# prefix); a notification's id is a name, not a secret, so no random bytes per copy.
_ID_PREFIX = uuid.uuid4().hex[:12]
_id_counter = itertools.count(1)


def new_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):x}"


def message(sender: str, recipient: str, body: str, *, type: str | None = None,
            id: str | None = None) -> str:
    """A ``<message>`` envelope around already-serialized children."""
    return Envelope.around(sender, body, type).to(recipient, id)


@dataclass(frozen=True)
class Envelope:
    """A ``<message>`` around serialized children, made once per event; per
    recipient only ``to`` and a fresh ``id`` are filled in."""

    head: str  # up to the ``to`` value
    middle: str  # between it and the id's value
    tail: str  # after the id's value

    @classmethod
    def around(cls, sender: str, body: str, type: str | None = None) -> "Envelope":
        typed = f" type={quoteattr(type)}" if type and type != "normal" else ""
        return cls(f"<message from={quoted(sender)} to=", f"{typed} id=", f">{body}</message>")

    def to(self, recipient: str, id: str | None = None) -> str:
        ident = quoteattr(id) if id else f"'{new_id()}'"
        return f"{self.head}{quoted(recipient)}{self.middle}{ident}{self.tail}"


def _field(var: str, value: str, type: str, label: str | None = None) -> str:
    label_attribute = f" label={quoteattr(label)}" if label else ""
    return (f"<field var={quoteattr(var)} type={quoteattr(type)}{label_attribute}>"
            f"<value>{escape(value)}</value></field>")


def authorization_id(request: AuthorizationRequest) -> str:
    """The message id of an authorization request; the owner's answer echoes it."""
    return "auth-" + request.subscription.subid


def authorization_form(request: AuthorizationRequest) -> str:
    """XEP-0060 §8.6 / XEP-0207 §4: the ``subscribe_authorization`` form.

    We always send ``pubsub#subscriber_jid`` (XEP-0207's example misspells it
    ``pusub#``; that spelling is accepted on the way in).
    """
    s = request.subscription
    return (
        f"<x xmlns='{NS_DATA}' type='form'>"
        "<title>PubSub subscriber request</title>"
        "<instructions>To approve this entity&apos;s subscription request, click the OK "
        "button. To deny the request, click the cancel button.</instructions>"
        + _field("FORM_TYPE", NS_AUTHORIZATION, "hidden")
        + _field("pubsub#subid", s.subid, "hidden")
        + _field("pubsub#node", s.node_id, "text-single", "Node ID")
        + _field("pubsub#subscriber_jid", s.subscriber, "jid-single", "Subscriber Address")
        + _field("pubsub#allow", "false", "boolean",
                 "Allow this JID to subscribe to this pubsub node?")
        + "</x>"
    )
