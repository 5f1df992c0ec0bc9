"""XEP-0313 message archive: a read of the items of the user's pair nodes, not a second store."""

from __future__ import annotations

import datetime
from xml.sax.saxutils import quoteattr

from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from wokkel import data_form
from wokkel.subprotocols import XMPPHandler

from xep207.legacy.chat import NS_DELAY, NS_FORWARD, pair_node_id, stamp
from xep207.storage.paging import page_of
from xep207.xmlutil import answer_iq

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
DEFAULT_PAGE = 50
MAX_PAGE = 250


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
        for var in ("with", "start", "end"):
            form.addField(data_form.Field("text-single" if var != "with" else "jid-single", var=var))
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
        with_jid = fields.get("with")
        start, end = _parse_time(fields.get("start")), _parse_time(fields.get("end"))
        rsm = {child.name: str(child) for s in query.elements(NS_RSM, "set") for child in s.elements()}
        try:
            limit = min(int(rsm.get("max", DEFAULT_PAGE)), MAX_PAGE)
        except ValueError:
            raise StanzaError("bad-request", text="RSM max must be a number")

        items = await self._items(user, str(with_jid) if with_jid else None)
        items = [i for i in items if (start is None or i.published >= start)
                 and (end is None or i.published <= end)]
        after, before = rsm.get("after"), rsm.get("before")
        if after is None and before is None:
            chosen = items[:limit]  # XEP-0313: from the beginning, chronologically
            first_index = 0
        else:
            page = page_of(items, limit, after, before)
            if not page.items and (after or before) and items and not (
                    (after and after == items[-1].item_id) or (before and before == items[0].item_id)):
                raise StanzaError("item-not-found", text="no such archive id to page from")
            chosen, first_index = list(page.items), page.first_index

        queryid = query.getAttribute("queryid")
        session = self.chat.router.session(requester.full())
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
            complete = not chosen or chosen[0] is items[0]
        else:
            complete = not chosen or chosen[-1] is items[-1]
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
                contact = jidlib.JID(with_jid).userhost()
            except jidlib.InvalidFormat:
                raise StanzaError("bad-request", text="invalid with")
            node_ids = [pair_node_id(user, contact)]
        else:
            node_ids = [s.node_id for s in await storage.get_entity_subscriptions(user, service)
                        if self.chat.is_chat_node(service, s.node_id)]
        items = []
        for node_id in node_ids:
            node = await storage.get_node(service, node_id)
            affiliations = await storage.get_affiliations(service, node_id) if node else {}
            if node is None or user not in affiliations:
                continue  # only the two parties may read a pair node
            items.extend((await storage.page_items(service, node_id)).items)
        items.sort(key=lambda i: i.seq)
        return items
