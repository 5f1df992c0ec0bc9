"""Turning engine events into XEP-0060 / XEP-0207 stanzas, serialized once.

A notification's body (the ``<event/>`` element) is serialized once per event;
per recipient only the ``<message>`` envelope is formatted around it.
"""

from __future__ import annotations

import uuid
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


def message(sender: str, recipient: str, body: str, *, type: str | None = None,
            id: str | None = None) -> str:
    """A ``<message>`` envelope around already-serialized children."""
    attributes = f"from={quoteattr(sender)} to={quoteattr(recipient)}"
    if type and type != "normal":
        attributes += f" type={quoteattr(type)}"
    attributes += f" id={quoteattr(id or uuid.uuid4().hex)}"
    return f"<message {attributes}>{body}</message>"


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
