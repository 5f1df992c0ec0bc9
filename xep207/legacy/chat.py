"""One-to-one messaging as pubsub (XEP-0207 §6): a whitelist node per pair.

Capture: a ``chat`` or ``normal`` message with a body from A to B becomes a
publish to A and B's pair node on the pubsub service (created on first use:
whitelist, both parties publishers and subscribers, persistent items).

Rendering (``xep207.legacy.pair_rendering``): B's sessions get the message by RFC 6121 §8.5
(the addressed resource, else the highest-priority ones); B's and A's other
resources get XEP-0280 carbons if they enabled them, the "bcc" of the XEP;
pubsub-speaking sessions get the XEP-0207 event. A message nobody could take
stays an item and is delivered, with XEP-0203 ``<delay/>``, at B's next
available presence — in order, once. The archive (XEP-0313) is a read of the
same items.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.xish import domish

from xep207.hooks import STANZA
from xep207.jids import parse_jid
from xep207.legacy.offline import OfflineDelivery
from xep207.legacy.pair_publish import PairPublisher
from xep207.legacy.pair_rendering import NS_CARBONS, PairRendering
from xep207.ordering import ConversationLock
from xep207.pubsub.events import ITEMS
from xep207.pubsub.kinds import pair_node_id
from xep207.pubsub.kinds.pair import (  # noqa: F401 (metrics reads OFFLINE_MARK here)
    OFFLINE_MARK,
    PairKind,
    is_stanza_id,
)
from xep207.serializer import serialized
from xep207.xmlutil import release, restamped

STORED_TYPES = ("chat", "normal")


def is_stored(stanza: domish.Element) -> bool:
    """Chat and normal messages with a body are archived; chat states without
    a body, headlines and errors only route (issue 6)."""
    if stanza.attributes.get("type", "normal") in STORED_TYPES:
        for child in stanza.children:  # (a loop: no generator per message)
            if isinstance(child, domish.Element) and child.name == "body":
                return True
    return False


def without_stanza_ids(stanza: domish.Element) -> domish.Element:
    if not any(is_stanza_id(c) for c in stanza.children):
        return stanza
    copy = restamped(stanza, stanza.getAttribute("from", ""))
    copy.children = [c for c in copy.children if not is_stanza_id(c)]
    return copy


class ChatCapture:
    """Router interceptor for one-to-one messages, and the renderer of pair nodes."""

    def __init__(self, router, engine, pubsub_domain: str, delivery):
        self.router = router
        self.delivery = delivery
        self.engine = engine
        self.storage = engine.storage
        self.pubsub_domain = pubsub_domain
        self._locks: dict[str, ConversationLock] = {}
        # xep207.cluster: node id → a Deferred until its messages are safe on the other processes
        self.elsewhere: Callable[[str], defer.Deferred | None] | None = None
        router.hooks.add(STANZA, self.intercept, stanzas=("message",))
        self.offline = OfflineDelivery(self)
        self.publisher = PairPublisher(self)
        # A publish to a pair node through the XEP-0060 door joins the same
        # pipeline as the legacy door's messages (``PairPublisher.native_turn``).
        engine.pipeline_turn = self.publisher.native_turn

    def is_chat_node(self, service: str, node_id: str) -> bool:
        return isinstance(self.engine.kind_of(service, node_id), PairKind)

    # Capture ---------------------------------------------------------------------

    def lock_for(self, node_id: str) -> ConversationLock:
        lock = self._locks.get(node_id)
        if lock is None:
            lock = self._locks[node_id] = ConversationLock()
        return lock

    def release(self, node_id: str, lock: ConversationLock) -> None:
        lock.release()
        self.forget_if_idle(node_id, lock)

    def forget_if_idle(self, node_id: str, lock: ConversationLock) -> None:
        """A conversation's lock goes once nothing holds or waits for it."""
        if not lock.locked and self._locks.get(node_id) is lock:
            del self._locks[node_id]

    def intercept(self, stanza):
        """False; True once the message is in storage's queue, or a Deferred
        firing True then (issue 13: no coroutine, and often no Deferred)."""
        session = stanza.__dict__.get("session")
        if session is None or stanza.name != "message":
            return False
        if not is_stored(stanza):
            return self._behind_conversation(stanza, session) if self._locks else False
        to = stanza.getAttribute("to")
        if not to:
            return False
        try:
            target = parse_jid(to)  # prepared once per distinct string (xep207.jids)
        except jidlib.InvalidFormat:
            return False  # the router answers jid-malformed
        if target.host != self.router.domain or target.user is None:
            return False
        contact = target.userhost()
        if contact == session.bare:
            return False  # a note to oneself or one's other device: routed as RFC 6121 says
        if self.router.known_account(contact):
            return self._publish(stanza, session, contact)
        return defer.ensureDeferred(self._publish_if_account(stanza, session, contact))

    def _behind_conversation(self, stanza, session):
        """A message only routed (a chat state) waits for its conversation's
        stored messages still on their way (``xep207.legacy.pair_publish``)."""
        try:
            target = parse_jid(stanza.getAttribute("to") or "")
        except jidlib.InvalidFormat:
            return False
        if target.host != self.router.domain or target.user is None or target.userhost() == session.bare:
            return False
        wait = self.publisher.behind(pair_node_id(session.bare, target.userhost()))
        return False if wait is None else wait.addCallback(lambda _: False)

    async def _publish_if_account(self, stanza, session, contact: str) -> bool:
        if not await self.router.account_exists(contact):
            return False  # the router answers service-unavailable
        published = self._publish(stanza, session, contact)
        return (await published) if isinstance(published, defer.Deferred) else published

    def _publish(self, stanza, session, contact: str) -> defer.Deferred | bool:
        node_id = pair_node_id(session.bare, contact)
        # A client's own <stanza-id/> claims what only an archive says (XEP-0359 §4).
        if stanza.attributes.get("from") == session.full:  # (the router stamped it): one pass
            payload = serialized(stanza, is_stanza_id)
        else:
            payload = restamped(without_stanza_ids(stanza), session.full).toXml()
        release(stanza)  # (from now on it is the payload: the Element need not wait for the collector)
        # A conversation's messages keep their order, each seeing the offline
        # mark the one before left; XEP-0198 counts one once stored.
        return self.publisher.publish(stanza, session, node_id, payload)

    # Rendering -------------------------------------------------------------------

    def prepare(self, event) -> PairRendering | None:
        if event.kind != ITEMS:
            return None  # configuration, deletion: only the XEP-0207 form says it
        return PairRendering(self, event)

    def render_authorization(self, request):
        return None

    # Offline delivery -------------------------------------------------------------

    def deliver_offline(self, session) -> None:
        """At an initial available presence: every message that waited, oldest first
        (``xep207.legacy.offline``: once with XEP-0198, else at least once)."""
        self.offline.deliver_offline(session)


class CarbonsHandler:
    """XEP-0280 enable/disable; the flag lives on the session."""

    NS = NS_CARBONS

    def __init__(self, router):
        self.router = router
        router.hooks.add(STANZA, self.intercept, stanzas=("iq",))

    def intercept(self, stanza) -> bool:
        session = stanza.__dict__.get("session")
        if session is None or stanza.name != "iq" or stanza.getAttribute("type") != "set":
            return False
        child = stanza.firstChildElement()
        if child is None or child.uri != NS_CARBONS or child.name not in ("enable", "disable"):
            return False
        session.carbons = child.name == "enable"
        response = domish.Element((None, "iq"))
        response["type"], response["id"], response["to"] = "result", stanza.getAttribute("id", ""), session.full
        session.send(response)
        return True
