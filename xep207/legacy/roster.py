"""The roster (RFC 6121 §2) as a view over nodes, not a second store.

A contact's ``subscription``/``ask`` come from the ``presence`` nodes: my
subscriptions to theirs (``to``, ``ask``) and theirs to mine (``from``). Names,
groups and pre-approvals are items of my private ``roster`` node, one per
contact, in ``jabber:iq:roster`` syntax.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field, replace
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from wokkel.subprotocols import XMPPHandler

from xep207.pubsub.kinds import PRESENCE_NODE, ROSTER_NODE, Trusted
from xep207.pubsub.roster_items import NS_ROSTER
from xep207.storage.records import PENDING, SUBSCRIBED
from xep207.xmlutil import answer_iq

MAX_GROUP_LENGTH = 1023


@dataclass(frozen=True)
class RosterEntry:
    jid: str
    name: str = ""
    groups: tuple[str, ...] = ()
    approved: bool = False
    to: bool = False  # I see their presence
    from_: bool = False  # they see mine
    ask: bool = False  # my request is pending
    listed: bool = True  # shown in the roster (pending-in only is not)
    extra: dict = field(default_factory=dict)

    @property
    def subscription(self) -> str:
        return {(True, True): "both", (True, False): "to", (False, True): "from"}.get(
            (self.to, self.from_), "none")

    def to_xml(self, remove: bool = False) -> str:
        attributes = f"jid={quoteattr(self.jid)}"
        if remove:
            return f"<item {attributes} subscription='remove'/>"
        if self.name:
            attributes += f" name={quoteattr(self.name)}"
        attributes += f" subscription={quoteattr(self.subscription)}"
        if self.ask:
            attributes += " ask='subscribe'"
        if self.approved:
            attributes += " approved='true'"
        groups = "".join(f"<group>{escape(g)}</group>" for g in self.groups)
        return f"<item {attributes}>{groups}</item>" if groups else f"<item {attributes}/>"

    def stored_xml(self) -> str:
        """What the roster node keeps: the user's own data, not the derived state."""
        attributes = f"xmlns='{NS_ROSTER}' jid={quoteattr(self.jid)}"
        if self.name:
            attributes += f" name={quoteattr(self.name)}"
        if self.approved:
            attributes += " approved='true'"
        groups = "".join(f"<group>{escape(g)}</group>" for g in self.groups)
        return f"<item {attributes}>{groups}</item>"


def _parse_stored(payload: str) -> RosterEntry | None:
    try:
        element = ElementTree.fromstring(payload)
    except ElementTree.ParseError:
        return None
    groups = tuple(g.text or "" for g in element.iter(f"{{{NS_ROSTER}}}group"))
    return RosterEntry(element.get("jid", ""), element.get("name", ""), groups,
                       element.get("approved") == "true", listed=True)


class RosterView:
    """Computes rosters and pushes them to interested resources."""

    def __init__(self, router, engine):
        self.router = router
        self.engine = engine
        self.storage = engine.storage

    async def entries(self, user: str) -> dict[str, RosterEntry]:
        entries: dict[str, RosterEntry] = {}
        for item in (await self.storage.page_items(user, ROSTER_NODE)).items:
            entry = _parse_stored(item.payload)
            if entry is not None:
                entries[item.item_id] = replace(entry, jid=item.item_id)
        for subscription in await self.storage.get_entity_subscriptions(user, node_id=PRESENCE_NODE):
            contact = subscription.service
            if contact == user or "@" not in contact:
                continue
            entry = entries.get(contact, RosterEntry(contact, listed=False))
            entries[contact] = replace(entry, to=subscription.state == SUBSCRIBED,
                                       ask=subscription.state == PENDING)
        for subscription in await self.storage.get_subscriptions(user, PRESENCE_NODE):
            contact = subscription.subscriber.split("/")[0]
            if contact == user:
                continue
            if subscription.state == SUBSCRIBED:
                entry = entries.get(contact, RosterEntry(contact, listed=False))
                entries[contact] = replace(entry, from_=True)
        return entries

    async def entry(self, user: str, contact: str) -> RosterEntry:
        return (await self.entries(user)).get(contact, RosterEntry(contact, listed=False))

    @staticmethod
    def version(entries: dict[str, RosterEntry]) -> str:
        digest = hashlib.sha256()
        for contact in sorted(entries):
            if entries[contact].listed:
                digest.update(entries[contact].to_xml().encode("utf-8"))
        return digest.hexdigest()[:16]

    async def store(self, user: str, entry: RosterEntry) -> None:
        await self.engine.publish(user, user, ROSTER_NODE, [(entry.jid, entry.stored_xml())])

    async def ensure(self, user: str, contact: str) -> bool:
        """Make sure ``contact`` is on ``user``'s roster (RFC 6121 adds it when a
        subscription starts). Returns whether it was added."""
        if await self.storage.get_items(user, ROSTER_NODE, [contact]):
            return False
        await self.store(user, RosterEntry(contact))
        return True

    async def forget(self, user: str, contact: str) -> None:
        try:
            await self.engine.retract(Trusted(user), user, ROSTER_NODE, [contact])
        except StanzaError:
            pass  # never listed

    async def push(self, user: str, contact: str, remove: bool = False, *, asking: bool = False) -> None:
        """RFC 6121 §2.1.6: a roster push to every interested resource.
        ``asking``: the item as it is while the user's request is on its way
        (§3.1.2), even when a pre-approval answers it at once."""
        sessions = [s for s in self.router.resources(user) if s.roster_requested]
        if not sessions:
            return
        entries = await self.entries(user)
        entry = entries.get(contact, RosterEntry(contact, listed=False))
        if asking:
            entry = replace(entry, ask=True, listed=True)
            entries[contact] = entry
        if not entry.listed and not remove:
            return
        ver = self.version(entries)
        item = entry.to_xml(remove=remove)
        for session in sessions:
            session.send(f"<iq type='set' id='push-{uuid.uuid4().hex[:12]}' to={quoteattr(session.full)}>"
                         f"<query xmlns='{NS_ROSTER}' ver='{ver}'>{item}</query></iq>")


class RosterHandler(XMPPHandler):
    """``jabber:iq:roster`` get and set, answered from ``RosterView``."""

    def __init__(self, view: RosterView, subscriptions):
        super().__init__()
        self.view = view
        self.subscriptions = subscriptions

    def connectionInitialized(self):
        self.xmlstream.addObserver(f"/iq/query[@xmlns='{NS_ROSTER}']", self._on_roster)

    def _on_roster(self, iq):
        answer_iq(self.send, iq, self._handle(iq))

    async def _handle(self, iq):
        sender = jidlib.JID(iq["from"])
        user = sender.userhost()
        if iq.getAttribute("to") not in (None, user, sender.full()):
            raise StanzaError("forbidden", text="a roster belongs to its account")
        session = self.view.router.session(sender.full())
        if iq.getAttribute("type") == "get":
            return await self._get(iq, user, session)
        if iq.getAttribute("type") == "set":
            await self._set(iq, user)
            return xmlstream.toResponse(iq, "result")
        raise StanzaError("bad-request")

    async def _get(self, iq, user, session):
        if session is not None:
            session.roster_requested = True
        entries = await self.view.entries(user)
        ver = self.view.version(entries)
        response = xmlstream.toResponse(iq, "result")
        if iq.query.getAttribute("ver") == ver:
            return response  # XEP-0237: unchanged; pushes will follow
        query = response.addElement((NS_ROSTER, "query"))
        query["ver"] = ver
        for contact in sorted(entries):
            if entries[contact].listed:
                query.addRawXml(entries[contact].to_xml())
        return response

    async def _set(self, iq, user):
        items = [e for e in iq.query.elements() if e.name == "item" and e.uri == NS_ROSTER]
        if len(items) != 1:
            raise StanzaError("bad-request", text="a roster set carries exactly one item")
        item = items[0]
        try:
            contact = jidlib.JID(item.getAttribute("jid", ""))
        except jidlib.InvalidFormat:
            raise StanzaError("bad-request", text="invalid JID")
        if not item.getAttribute("jid") or contact.resource is not None:
            raise StanzaError("bad-request", text="roster items are bare JIDs")
        contact = contact.userhost()
        if item.getAttribute("subscription") == "remove":
            await self.subscriptions.remove_contact(user, contact)
            return
        groups = [str(g).strip() for g in item.elements(NS_ROSTER, "group")]
        if any(not g for g in groups):
            raise StanzaError("not-acceptable", text="empty group name")
        if any(len(g) > MAX_GROUP_LENGTH for g in groups):
            raise StanzaError("not-acceptable", text="group name too long")
        if len(set(groups)) != len(groups):
            raise StanzaError("bad-request", text="duplicate group")
        entry = await self.view.entry(user, contact)
        entry = replace(entry, name=item.getAttribute("name", ""), groups=tuple(groups), listed=True)
        await self.view.store(user, entry)
        await self.view.push(user, contact)

