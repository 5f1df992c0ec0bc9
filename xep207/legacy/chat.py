"""One-to-one messaging as pubsub (XEP-0207 §6): a whitelist node per pair.

Capture: a ``chat`` or ``normal`` message with a body from A to B becomes a
publish to A and B's pair node on the pubsub service (created on first use:
whitelist, both parties publishers and subscribers, persistent items).

Rendering (``ChatDelivery``): B's sessions get the message by RFC 6121 §8.5
(the addressed resource, else the highest-priority ones); B's and A's other
resources get XEP-0280 carbons if they enabled them, the "bcc" of the XEP;
pubsub-speaking sessions get the XEP-0207 event. A message nobody could take
stays an item and is delivered, with XEP-0203 ``<delay/>``, at B's next
available presence — in order, once. The archive (XEP-0313) is a read of the
same items.
"""

from __future__ import annotations

import datetime
from typing import Callable
from xml.sax.saxutils import quoteattr as _quoteattr

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.xish import domish

from xep207.hooks import STANZA
from xep207.jids import parse_jid
from xep207.legacy.offline import OfflineDelivery
from xep207.legacy.pair_publish import PairPublisher
from xep207.ordering import ConversationLock
from xep207.pubsub.events import ITEMS
from xep207.pubsub.kinds import pair_node_id
from xep207.pubsub.kinds.pair import OFFLINE_MARK, PairKind  # noqa: F401 (metrics reads OFFLINE_MARK here)
from xep207.serializer import serialized
from xep207.storage.records import bare
from xep207.xmlutil import addressed_to, release, restamped

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_SID = "urn:xmpp:sid:0"
STORED_TYPES = ("chat", "normal")


_SPECIAL = frozenset("&<>'\"\n\r\t")


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


def is_stored(stanza: domish.Element) -> bool:
    """Chat and normal messages with a body are archived; chat states without
    a body, headlines and errors only route (issue 6)."""
    if stanza.attributes.get("type", "normal") in STORED_TYPES:
        for child in stanza.children:  # (a loop: no generator per message)
            if isinstance(child, domish.Element) and child.name == "body":
                return True
    return False


def is_stanza_id(child) -> bool:
    return isinstance(child, domish.Element) and child.uri == NS_SID and child.name == "stanza-id"


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

    def prepare(self, event) -> "PairRendering | None":
        if event.kind != ITEMS:
            return None  # configuration, deletion: only the XEP-0207 form says it
        return PairRendering(self, event)

    def render_authorization(self, request):
        return None

    def _targets(self, addressed: str, party: str):
        """RFC 6121 §8.5.3.2/§8.5.2.1.1: the addressed resource if it is online,
        else the available resources of highest (non-negative) priority."""
        if "/" in addressed and bare(addressed) == party:
            session = self.router.session(addressed)
            if session is not None:
                return [session]
        return self.router.deliverable_resources(party)

    def _carbon(self, payload: str, session, direction: str) -> str:
        return (f"<message from={quoteattr(session.bare)} to={quoteattr(session.full)} type='chat'>"
                f"<{direction} xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>{payload}"
                f"</forwarded></{direction}></message>")

    # Offline delivery -------------------------------------------------------------

    def deliver_offline(self, session) -> None:
        """At an initial available presence: every message that waited, oldest first
        (``xep207.legacy.offline``: once with XEP-0198, else at least once)."""
        self.offline.deliver_offline(session)


class PairRendering:
    """A message on a pair node, as RFC 6121 delivers it: to the addressed
    resource (else the highest-priority ones) of the other party, with
    XEP-0280 carbons to the parties' other resources; replays (offline
    delivery) carry an XEP-0203 delay."""

    def __init__(self, chat: ChatCapture, event):
        self.chat = chat
        self.event = event
        self.replay = event.replay
        self.items = []
        # Whether some item is addressed to a full JID: only then can an
        # unavailable session be addressed (else ``addressed_sessions`` is []).
        self._to_full = False
        for item in event.items:
            payload = item.payload
            if self.replay:
                payload = with_child(payload, f"<delay xmlns='{NS_DELAY}' from={quoteattr(chat.router.domain)}"
                                              f" stamp='{stamp(item.published)}'/>")
            addressed = addressed_to(item.payload)
            if "/" in addressed:
                self._to_full = True
            self.items.append((item.publisher, item.publisher.split("/", 1)[0], addressed, payload, item.item_id))
        self._targets: dict[str, tuple[str, list]] = {}  # recipient JID → ``_targets_of``
        self._stamped: dict[tuple[str, str], str] = {}

    def _with_stanza_id(self, payload: str, item_id: str, party: str) -> str:
        """XEP-0359/XEP-0313: the id the party's archive knows the message by
        (serialized once per party and item)."""
        key = (party, item_id)
        found = self._stamped.get(key)
        if found is None:
            found = self._stamped[key] = with_child(
                payload, f"<stanza-id xmlns='{NS_SID}' id={quoteattr(item_id)} by={quoteattr(party)}/>")
        return found

    def _targets_of(self, jid: str) -> tuple[str, list]:
        """The party, and per item the sessions it is addressed to (None: it
        sent it; a replay). Callers look in ``_targets`` first (a call less)."""
        party = jid.split("/", 1)[0]
        targets: list = []
        for _, sender_bare, addressed, _, _ in self.items:  # (a loop: one item, nearly always)
            targets.append(None if self.replay or party == sender_bare else self.chat._targets(addressed, party))
        found = self._targets[jid] = (party, targets)
        return found

    def stanzas_for(self, recipient, session) -> list[str]:
        party, targets_of = self._targets.get(recipient.jid) or self._targets_of(recipient.jid)
        replay = self.replay
        stanzas = []
        for (sender, sender_bare, addressed, payload, item_id), targets in zip(self.items, targets_of):
            if replay or (targets is not None and session in targets):
                xml = self._with_stanza_id(payload, item_id, party)
                if replay or not self.chat.offline.hold(session, xml, item_id, self.event.node_id):
                    stanzas.append(xml)  # (else it waits behind the backlog, or is sent tracked)
            elif session.carbons and session.full != sender:
                direction = "sent" if party == sender_bare else "received"
                stanzas.append(self.chat._carbon(payload, session, direction))
        return stanzas

    def addressed_sessions(self, recipient) -> list:
        if not self._to_full or self.replay:
            return []  # (the highest-priority available resources: available, all of them)
        found = []
        for targets in (self._targets.get(recipient.jid) or self._targets_of(recipient.jid))[1]:
            for s in targets or ():
                if not s.available:
                    found.append(s)
        return found

    def missed(self, recipient) -> bool:
        if self.replay:
            return False
        party, targets_of = self._targets.get(recipient.jid) or self._targets_of(recipient.jid)
        for (_, sender_bare, _, _, _), targets in zip(self.items, targets_of):
            if party != sender_bare and not targets:
                return True
        return False


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
