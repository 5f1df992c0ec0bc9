"""XEP-0352 client state indication (``urn:xmpp:csi:0``).

Why: a phone in a pocket pays for every wake-up. While its client says
``<inactive/>``, what can wait does: presence updates (only the latest per
sender is kept), messages without a body (chat states, receipts, pubsub
notifications). What cannot wait goes at once — a message with a body
anywhere in it (a chat message, a carbon, a XEP-0207 chat event), an iq, an
error, a subscription request — after everything held, so the order the
client sees stays the order it was sent. ``<active/>`` flushes everything.
The held queue is bounded: past ``max_held`` it is flushed, never dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import count

from twisted.words.xish import domish

from xep207.xmlutil import parse_stanza

NS_CSI = "urn:xmpp:csi:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
MAX_HELD = 1000
URGENT_PRESENCE = ("subscribe", "subscribed", "unsubscribe", "unsubscribed", "error", "probe")


_NOW = object()  # written at once, without flushing what is held


def _text(obj) -> str:
    if isinstance(obj, domish.Element):
        return obj.toXml()
    return obj.decode("utf-8") if isinstance(obj, bytes) else obj


def hold_key(obj) -> object | None:
    """None when ``obj`` must go now, after what is held; ``_NOW`` when it goes
    regardless; else what a newer stanza of the same key replaces."""
    if isinstance(obj, domish.Element):
        name = obj.name
    else:
        text = _text(obj)
        name = "presence" if text.startswith("<presence") else "message" if text.startswith("<message") else "iq"
    if name == "iq":
        return _NOW
    text = _text(obj)
    if name == "message" and "<body" in text:
        return None  # a body, at any depth: a person wrote it
    element = obj if isinstance(obj, domish.Element) else parse_stanza(text)
    kind = element.getAttribute("type")
    sender = element.getAttribute("from", "")
    if name == "presence":
        return None if kind in URGENT_PRESENCE else ("presence", sender)
    if kind == "error":
        return None
    children = [c for c in element.elements()]
    if children and all(c.uri == NS_CHATSTATES for c in children):
        return ("chatstate", sender)  # only the latest state matters
    return ("message", next(_serial))


_serial = count()


class ClientState:
    """What an inactive session holds back, in arrival order."""

    def __init__(self, session, max_held: int = MAX_HELD):
        self.session = session
        self.max_held = max_held
        self.held: OrderedDict = OrderedDict()

    def hold(self, obj) -> bool:
        """True when ``obj`` waits; else the held stanzas were written first."""
        key = hold_key(obj)
        if key is _NOW:
            return False  # an answer to the client's own request: no order to keep with the rest
        if key is None:
            self.flush()
            return False
        self.held.pop(key, None)  # the newer one replaces it, in its own place
        self.held[key] = obj
        if len(self.held) > self.max_held:
            self.flush()
        return True

    def flush(self) -> None:
        held, self.held = self.held, OrderedDict()
        for obj in held.values():
            self.session.write(obj)


class ClientStateIndication:
    """The client-stream extension (see ``ClientNegotiator``)."""

    namespace = NS_CSI

    def __init__(self, max_held: int = MAX_HELD):
        self.max_held = max_held

    def features(self, negotiator, features: domish.Element) -> None:
        if negotiator.user is not None:
            features.addElement((NS_CSI, "csi"))

    def connection_lost(self, negotiator, session) -> bool:
        return False

    def on_nonza(self, negotiator, element: domish.Element) -> None:
        session = negotiator.session
        if element.name not in ("active", "inactive"):
            return negotiator.xmlstream.fail("unsupported-stanza-type", f"<{element.name}/> is not XEP-0352")
        if session is None:
            return negotiator.xmlstream.fail("not-authorized", "bind a resource first")
        if element.name == "inactive":
            if session.csi is None:
                session.csi = ClientState(session, self.max_held)
        elif session.csi is not None:
            state, session.csi = session.csi, None
            state.flush()


def install(server) -> ClientStateIndication:
    """Wire XEP-0352 into a ``Server``."""
    indication = ClientStateIndication()
    server.router.stream_extensions.append(indication)
    return indication
