"""Drive XMPP handlers with raw XML, in memory, and wait for what they send.

A real ``XmlStream`` parses what the test sends (namespaces and all); what the
handlers send is captured instead of written to a socket. Waiting is on the
stanza itself, never on time.
"""

from __future__ import annotations

import itertools
from typing import Callable

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish

from xep207.xmlutil import parse_stanza

_ids = itertools.count(1)


def parse(text: str) -> domish.Element:
    """Parse one serialized stanza (a notification string, say) into an Element."""
    return parse_stanza(text, "jabber:component:accept")


def as_element(obj) -> domish.Element:
    if isinstance(obj, (str, bytes)):
        return parse(obj.decode("utf-8") if isinstance(obj, bytes) else obj)
    # Round-trip through text so that tests see exactly what goes on the wire.
    return parse(obj.toXml())


class _CapturingStream(xmlstream.XmlStream):
    """An XmlStream whose output goes to ``capture`` instead of the transport."""

    def __init__(self, capture: Callable[[object], None]):
        super().__init__(xmlstream.Authenticator())
        self._capture = capture

    def send(self, obj) -> None:
        self._capture(obj)


class StanzaHarness:
    """One in-memory stream with handlers attached, as a component sees it."""

    def __init__(self, handlers, stream_namespace: str = "jabber:component:accept"):
        self.sent: list[domish.Element] = []
        self._waiters: list[tuple[Callable, defer.Deferred]] = []
        self._consumed: set[domish.Element] = set()  # sent, and already given to a wait
        self.xmlstream = _CapturingStream(self._capture)
        self.xmlstream.makeConnection(StringTransport())
        self.xmlstream.dataReceived(
            f"<stream:stream xmlns='{stream_namespace}' "
            "xmlns:stream='http://etherx.jabber.org/streams'>")
        self.handlers = list(handlers)
        for handler in self.handlers:
            handler.parent = self
            handler.makeConnection(self.xmlstream)
        for handler in self.handlers:
            handler.connectionInitialized()

    # The handlers' parent: what they send comes here, and disco iterates it.
    def __iter__(self):
        return iter(self.handlers)

    def send(self, obj):
        self._capture(obj)

    def _capture(self, obj):
        element = as_element(obj)
        self.sent.append(element)
        for waiter in list(self._waiters):
            match, d = waiter
            if match(element):
                self._waiters.remove(waiter)
                d.callback(element)
                break

    def feed(self, xml: str) -> None:
        """Receive raw XML as if from the wire."""
        self.xmlstream.dataReceived(xml)

    def wait_for(self, match: Callable[[domish.Element], bool]) -> defer.Deferred:
        """The first stanza, already sent or still to come, that ``match``es.

        A stanza already sent is consumed so the next wait sees the one after.
        """
        for element in self.sent:
            if match(element) and element not in self._consumed:
                self._consumed.add(element)
                return defer.succeed(element)
        d: defer.Deferred[domish.Element] = defer.Deferred()

        def consume(element: domish.Element) -> domish.Element:
            self._consumed.add(element)
            return element

        self._waiters.append((match, d))
        return d.addCallback(consume)

    def request(self, xml: str) -> defer.Deferred:
        """Send an iq (``id`` is filled in when absent) and fire with its reply."""
        stanza = parse(xml)
        if not stanza.getAttribute("id"):
            stanza["id"] = f"h{next(_ids)}"
        stanza_id = stanza["id"]
        d = self.wait_for(lambda e: e.name == "iq" and e.getAttribute("id") == stanza_id
                          and e.getAttribute("type") in ("result", "error"))
        self.feed(stanza.toXml())
        return d

    def messages_to(self, jid: str) -> list[domish.Element]:
        return [e for e in self.sent if e.name == "message" and e.getAttribute("to") == jid]

    def next_message_to(self, jid: str) -> defer.Deferred:
        return self.wait_for(lambda e: e.name == "message" and e.getAttribute("to") == jid)
