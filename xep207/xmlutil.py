"""Parsing serialized stanzas back into Elements (for the rare paths that need both)."""

from __future__ import annotations

import datetime
import re
from xml.sax.saxutils import quoteattr as _quoteattr, unescape

from twisted.words.xish import domish

# The ``to`` attribute of a serialized stanza's start tag (domish writes
# attributes quoted with ' and escapes &, <, > and ' inside them).
_START_TAG_TO = re.compile(r"""<[^\s>/]+(?:\s+[^\s=>]+=(?:'[^']*'|"[^"]*"))*?\s+to=(?:'([^']*)'|"([^"]*)")""")
_ENTITIES = {"&apos;": "'", "&quot;": '"'}
_SPECIAL = frozenset("&<>'\"\n\r\t")


def parse_stanza(text: str, namespace: str = "jabber:client") -> domish.Element:
    """Parse exactly one serialized stanza into an Element. Its children keep
    their links up: a parsed stanza may be routed on (the router, a cluster's
    other process) to a service whose parser walks up (wokkel's pubsub
    requests). A reader done with it calls ``release``."""
    elements: list[domish.Element] = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = elements.append
    stream.ElementEvent = lambda e: elements[0].addChild(e)
    stream.DocumentEndEvent = lambda: None
    try:
        stream.parse(f"<root xmlns='{namespace}'>{text}</root>")
    finally:
        stream.parser = None  # (the parser's handlers are the stream's methods: a cycle)
    children = [c for c in elements[0].elements()]
    if len(children) != 1:
        raise ValueError(f"expected one stanza, got {len(children)}")
    children[0].parent = None  # (not the wrapper's child: both go with their last reference)
    return children[0]


def addressed_to(text: str) -> str:
    """The ``to`` of one serialized stanza, read off its start tag (the
    renderers need only that of a stored message: no parse)."""
    match = _START_TAG_TO.match(text)
    if match is None:
        return ""
    value = match.group(1) if match.group(1) is not None else match.group(2)
    return unescape(value, _ENTITIES) if "&" in value else value


def answer_iq(send, iq, coroutine) -> None:
    """Run a handler coroutine for ``iq`` and send what it returns, or the
    stanza error it raised (any other failure: ``internal-server-error``)."""
    from twisted.internet import defer
    from twisted.words.protocols.jabber.error import StanzaError

    from xep207 import logs

    def failed(failure):
        if failure.check(StanzaError):
            return failure.value.toResponse(iq)
        logs.failure(failure, f"iq handler failed for {logs.describe(iq)}")
        return StanzaError("internal-server-error").toResponse(iq)

    iq.handled = True
    defer.ensureDeferred(coroutine).addErrback(failed).addCallback(send)


def parse_message_item(payload: str, what: str):
    """A pubsub item that must be one ``jabber:client`` message, parsed; or
    XEP-0060's ``invalid-payload``."""
    from xep207.pubsub import errors

    try:
        message = parse_stanza(payload)
    except Exception:
        raise errors.bad_request("invalid-payload")
    if message.name != "message" or message.uri != "jabber:client":
        raise errors.bad_request("invalid-payload", text=f"{what} is a jabber:client message")
    return message


def release(stanza: domish.Element) -> None:
    """Drop the child-to-parent links under a stanza its handler is done with.

    domish links each child to its parent, so a stanza with a child is a
    reference cycle that only the cyclic garbage collector frees: on
    one-to-one chat its passes cost 25-50 µs a message on SQLite, promoting
    whatever work was in flight at the time (issue 13). Without the links the
    stanza goes the moment its last reference does. For a stanza already
    captured and serialized: nothing reads ``parent`` after that."""
    pending = [stanza]
    while pending:
        for child in pending.pop().children:
            if isinstance(child, domish.Element):
                child.parent = None
                if child.children:
                    pending.append(child)


def restamped(stanza: domish.Element, sender: str, *, drop: tuple[str, ...] = (),
              without_uri: str | None = None, extra: tuple = ()) -> domish.Element:
    """A shallow copy of ``stanza`` sent by ``sender``: the captures store what a
    client sent as items, and the renderers hand it on, always under the
    address the server vouches for. ``drop`` removes attributes, ``without_uri``
    children of a namespace, ``extra`` appends children."""
    copy = domish.Element((stanza.uri, stanza.name), stanza.defaultUri, dict(stanza.attributes))
    copy.children = [c for c in stanza.children
                     if without_uri is None or not (isinstance(c, domish.Element) and c.uri == without_uri)]
    copy.children.extend(extra)
    copy["from"] = sender
    for attribute in drop:
        copy.attributes.pop(attribute, None)
    return copy


def quoteattr(value: str) -> str:
    """``xml.sax.saxutils.quoteattr``, at once for the usual value (an item id,
    a prepared JID) with nothing to escape."""
    if _SPECIAL.isdisjoint(value):
        return "'" + value + "'"
    return _quoteattr(value)


def stamp(published: float) -> str:
    moment = datetime.datetime.fromtimestamp(published, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def with_child(message_xml: str, child_xml: str) -> str:
    """Serialized ``<message …>…</message>`` with one more child at the end."""
    if message_xml.endswith("/>"):
        return message_xml[:-2] + ">" + child_xml + "</message>"
    return message_xml[: -len("</message>")] + child_xml + "</message>"
