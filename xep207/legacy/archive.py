"""XEP-0313 message archive: a read of the items of the user's pair nodes, not a second store.

A pair node is shared by its two parties, so the archive is each party's
*view* of it: a message is in a party's view when the party's preferences
(``mam-prefs``, ``xep207.pubsub.kinds.mamprefs``) in force when the message
was published said to archive messages with the other party. "never" for
one party hides the message from that party's archive only; the other
party's view, and offline delivery, still read the item.
"""

from __future__ import annotations

import bisect
import datetime
from xml.sax.saxutils import quoteattr

from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from wokkel import data_form
from wokkel.subprotocols import XMPPHandler

from xep207.jids import bare_jid
from xep207.legacy.chat import pair_node_id
from xep207.legacy.pair_rendering import NS_DELAY, NS_FORWARD
from xep207.pubsub.kinds import ROSTER_NODE, pair_parties
from xep207.pubsub.kinds.base import MAX_PAGE
from xep207.pubsub.kinds.mamprefs import MAM_PREFS_NODE, Prefs, prefs_of
from xep207.storage.paging import page_of
from xep207.xmlutil import answer_iq, stamp

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
DEFAULT_PAGE = 50


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise StanzaError("bad-request", text=f"not an XEP-0082 date-time: {value}")


class ArchiveHandler(XMPPHandler):
    def __init__(self, chat):
        super().__init__()
        self.chat = chat

    def connectionInitialized(self):
        self.xmlstream.addObserver(f"/iq[@type='set']/query[@xmlns='{NS_MAM}']", self._on_query)
        self.xmlstream.addObserver(f"/iq[@type='get']/query[@xmlns='{NS_MAM}']", self._on_form)

    def _on_form(self, iq):
        iq.handled = True
        response = xmlstream.toResponse(iq, "result")
        query = response.addElement((NS_MAM, "query"))
        form = data_form.Form("form", formNamespace=NS_MAM)
        for var in ("with", "start", "end", "after-id", "before-id"):
            form.addField(data_form.Field("text-single" if var != "with" else "jid-single", var=var))
        form.addField(data_form.Field("list-multi", var="ids"))
        query.addChild(form.toElement())
        self.send(response)

    def _on_query(self, iq):
        answer_iq(self.send, iq, self._query(iq))

    async def _query(self, iq):
        requester = jidlib.JID(iq["from"])
        user = requester.userhost()
        if iq.getAttribute("to", user) != user:
            raise StanzaError("forbidden", text="an archive belongs to its account")
        query = iq.query
        fields = {}
        try:
            form = data_form.findForm(query, NS_MAM)
        except data_form.Error as exc:  # a field twice, a field without var: the client's error
            raise StanzaError("bad-request", text=f"malformed form: {exc}")
        if form is not None:
            fields = {k: v for k, v in form.getValues().items() if k != "FORM_TYPE"}
        for var, value in fields.items():
            if var != "ids" and isinstance(value, list):
                raise StanzaError("bad-request", text=f"the field {var} takes one value")
        with_jid = fields.get("with")
        start, end = _parse_time(fields.get("start")), _parse_time(fields.get("end"))
        rsm = {child.name: str(child) for s in query.elements(NS_RSM, "set") for child in s.elements()}
        try:
            limit = min(int(rsm.get("max", DEFAULT_PAGE)), MAX_PAGE)
        except ValueError:
            raise StanzaError("bad-request", text="RSM max must be a number")
        if limit < 0:
            raise StanzaError("bad-request", text="RSM max must not be negative")

        items = await self._items(user, str(with_jid) if with_jid else None)
        items = [i for i in items if (start is None or i.published >= start)
                 and (end is None or i.published <= end)]
        items = _by_ids(items, fields)
        after, before = rsm.get("after"), rsm.get("before")
        if after is None and before is None:
            chosen = items[:limit]  # XEP-0313: from the beginning, chronologically
            first_index = 0
        else:
            known = {i.item_id for i in items}
            if (after and after not in known) or (before and before not in known):
                # XEP-0059 §2.6, the same for an id of nobody's and of someone else's.
                raise StanzaError("item-not-found", text="no such archive id to page from")
            page = page_of(items, limit, after, before)
            chosen, first_index = list(page.items), page.first_index

        queryid = query.getAttribute("queryid")
        session = self.chat.router.session(requester.full())
        if any(True for _ in query.elements(NS_MAM, "flip-page")):
            chosen = chosen[::-1]  # XEP-0313 §4.2: the page, newest first
        for item in chosen if session is not None else ():
            queryid_attribute = f" queryid={quoteattr(queryid)}" if queryid else ""
            session.send(
                f"<message to={quoteattr(requester.full())} from={quoteattr(user)}>"
                f"<result xmlns='{NS_MAM}'{queryid_attribute} id={quoteattr(item.item_id)}>"
                f"<forwarded xmlns='{NS_FORWARD}'><delay xmlns='{NS_DELAY}' stamp='{stamp(item.published)}'/>"
                f"{item.payload}</forwarded></result></message>")
        response = xmlstream.toResponse(iq, "result")
        fin = response.addElement((NS_MAM, "fin"))
        if before is not None:
            complete = not chosen or items[0] in chosen
        else:
            complete = not chosen or items[-1] in chosen
        if complete:
            fin["complete"] = "true"
        rsm_set = fin.addElement((NS_RSM, "set"))
        if chosen:
            rsm_set.addElement("first", content=chosen[0].item_id)["index"] = str(first_index)
            rsm_set.addElement("last", content=chosen[-1].item_id)
        rsm_set.addElement("count", content=str(len(items)))
        return response

    async def _items(self, user: str, with_jid: str | None):
        storage = self.chat.storage
        service = self.chat.pubsub_domain
        if with_jid:
            try:
                contact = bare_jid(with_jid)  # RFC 7622's limits, as everywhere
            except (jidlib.InvalidFormat, ValueError):
                raise StanzaError("bad-request", text="invalid with")
            node_ids = [pair_node_id(user, contact)]
        else:
            node_ids = [s.node_id for s in await storage.get_entity_subscriptions(user, service)
                        if self.chat.is_chat_node(service, s.node_id)]
        view = await ArchiveView.of(storage, user)
        items: list = []
        for node_id in node_ids:
            node = await storage.get_node(service, node_id)
            affiliations = await storage.get_affiliations(service, node_id) if node else {}
            if node is None or user not in affiliations:
                continue  # only the two parties may read a pair node
            contact = next((p for p in pair_parties(node_id) or () if p != user), user)
            items.extend(i for i in (await storage.page_items(service, node_id)).items
                         if view.archives(contact, i.published))
        items.sort(key=lambda i: i.seq)
        return items


def _by_ids(items, fields) -> list:
    """XEP-0313 §4.1.3 (extended): ``after-id``, ``before-id`` (exclusive) and ``ids``."""
    ids = [i.item_id for i in items]
    for var, keep in (("after-id", lambda n: items[n + 1:]), ("before-id", lambda n: items[:n])):
        value = fields.get(var)
        if value:
            if str(value) not in ids:
                raise StanzaError("item-not-found", text=f"no such archive id: {value}")
            items = keep(ids.index(str(value)))
            ids = [i.item_id for i in items]
    wanted = fields.get("ids")
    if wanted:
        wanted = {str(w) for w in (wanted if isinstance(wanted, list) else [wanted])}
        items = [i for i in items if i.item_id in wanted]
    return items


class ArchiveView:
    """One account's archiving preferences through time, read once per query."""

    def __init__(self, versions: list[tuple[float, Prefs]], roster: set[str]):
        self.times = [t for t, _ in versions]
        self.versions = [p for _, p in versions]
        self.roster = roster

    @classmethod
    async def of(cls, storage, user: str) -> "ArchiveView":
        page = await storage.page_items(user, MAM_PREFS_NODE)
        versions = sorted(((i.published, prefs_of(i.payload)) for i in page.items), key=lambda v: v[0])
        roster: set[str] = set()
        if any(p.default == "roster" for _, p in versions):
            roster = {i.item_id for i in (await storage.page_items(user, ROSTER_NODE)).items}
        return cls(versions, roster)

    def archives(self, contact: str, published: float) -> bool:
        """The preferences in force when the message was published (none yet: archive)."""
        index = bisect.bisect_right(self.times, published) - 1
        prefs = self.versions[index] if index >= 0 else Prefs()
        return prefs.archives(contact, self.roster.__contains__)
