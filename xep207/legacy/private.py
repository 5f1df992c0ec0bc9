"""XEP-0049 private XML storage, and XEP-0048 bookmarks in it kept as XEP-0402 items.

The legacy door of two account nodes (``xep207.pubsub.kinds.personal``):

- ``<query xmlns='jabber:iq:private'>`` get/set → the item of the ``jabber:iq:private``
  node whose id is the child's namespace (an empty child answers a missing one);
- ``storage:bookmarks`` is a view (XEP-0411): its conferences are the items of
  ``urn:xmpp:bookmarks:1`` (one per room), the rest (URLs, extensions) the
  private item. Writing it publishes and retracts bookmark items, with events
  to the account's ``+notify`` resources; a XEP-0402 publish shows in the next
  XEP-0048 read. One copy of each bookmark, so the two can never disagree.

Every write is an engine call as the requesting user: the kinds decide.
"""

from __future__ import annotations

from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel.subprotocols import XMPPHandler

from xep207.pubsub.kinds.personal import (
    BOOKMARKS_NODE,
    NS_BOOKMARKS_0048,
    PRIVATE_NODE,
    RESERVED_PRIVATE,
    bookmark_jid,
)
from xep207.xmlutil import answer_iq, parse_stanza

NS_PRIVATE = "jabber:iq:private"
TRUE = ("true", "1")


def _text(element: domish.Element, name: str) -> str | None:
    child = next((c for c in element.elements() if c.name == name), None)
    return None if child is None else str(child)


class Bookmark:
    """The fields XEP-0048 and XEP-0402 share, for one room."""

    __slots__ = ("room", "name", "autojoin", "nick", "password")

    def __init__(self, room: str, name: str | None, autojoin: bool, nick: str | None,
                 password: str | None):
        self.room, self.name, self.autojoin, self.nick, self.password = room, name, autojoin, nick, password

    def key(self) -> tuple:
        return (self.name or None, self.autojoin, self.nick or None, self.password or None)

    @classmethod
    def from_0048(cls, conference: domish.Element) -> "Bookmark":
        try:
            room = bookmark_jid(conference.getAttribute("jid"))
        except StanzaError:
            raise StanzaError("bad-request", text="each conference needs a room's bare JID")
        return cls(room, conference.getAttribute("name"), conference.getAttribute("autojoin") in TRUE,
                   _text(conference, "nick"), _text(conference, "password"))

    @classmethod
    def from_0402(cls, room: str, conference: domish.Element) -> "Bookmark":
        return cls(room, conference.getAttribute("name"), conference.getAttribute("autojoin") in TRUE,
                   _text(conference, "nick"), _text(conference, "password"))

    def _fill(self, element: domish.Element) -> domish.Element:
        if self.name:
            element["name"] = self.name
        element["autojoin"] = "true" if self.autojoin else "false"
        if self.nick:
            element.addElement("nick", content=self.nick)
        if self.password:
            element.addElement("password", content=self.password)
        return element

    def as_0048(self) -> domish.Element:
        element = domish.Element((NS_BOOKMARKS_0048, "conference"))
        element["jid"] = self.room
        return self._fill(element)

    def as_0402(self, keep: domish.Element | None = None) -> str:
        """The XEP-0402 payload; ``keep``: the item it replaces, whose
        ``<extensions/>`` XEP-0048 cannot express and must not lose."""
        element = self._fill(domish.Element((BOOKMARKS_NODE, "conference")))
        if keep is not None:
            for child in keep.elements(BOOKMARKS_NODE, "extensions"):
                element.addChild(child)
        return element.toXml()


class PrivateStorageHandler(XMPPHandler):
    """``jabber:iq:private`` on the account's address (RFC 6120 §10.3.3: no ``to``)."""

    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    def connectionInitialized(self):
        for kind in ("get", "set"):
            self.xmlstream.addObserver(f"/iq[@type='{kind}']/query[@xmlns='{NS_PRIVATE}']",
                                       self._on_request)

    def _on_request(self, iq):
        answer_iq(self.send, iq, self._answer(iq))

    async def _answer(self, iq):
        requestor = iq["from"]
        account = jidlib.JID(requestor).userhost()
        if jidlib.JID(iq.getAttribute("to", account)).full() != account:
            raise StanzaError("forbidden", text="private storage is its account's alone")
        children = list(iq.query.elements())
        if len(children) != 1:
            raise StanzaError("bad-request", text="one element to store or retrieve (XEP-0049)")
        element = children[0]
        namespace = element.uri or ""
        if not namespace or namespace in RESERVED_PRIVATE:
            raise StanzaError("not-acceptable", text=f"{namespace or 'no namespace'} is not private data")
        response = xmlstream.toResponse(iq, "result")
        query = response.addElement((NS_PRIVATE, "query"))
        if iq["type"] == "get":
            if namespace == NS_BOOKMARKS_0048:
                query.addChild(await self.read_bookmarks(requestor, account))
            else:
                query.addChild(await self.read(requestor, account, namespace) or element)
        elif namespace == NS_BOOKMARKS_0048:
            await self.write_bookmarks(requestor, account, element)
            del response.children[:]  # XEP-0049 §2.1: an empty result
        else:
            await self.engine.publish(requestor, account, PRIVATE_NODE, [(namespace, element.toXml())])
            del response.children[:]
        return response

    async def read(self, requestor: str, account: str, namespace: str) -> domish.Element | None:
        try:
            page = await self.engine.get_items(requestor, account, PRIVATE_NODE, item_ids=[namespace])
        except StanzaError as exc:
            if exc.condition == "item-not-found":
                return None  # nothing stored yet
            raise
        return parse_stanza(page.items[0].payload, namespace="") if page.items else None

    async def bookmarks(self, requestor: str, account: str) -> dict[str, tuple[Bookmark, domish.Element]]:
        """The XEP-0402 items, by room."""
        try:
            page = await self.engine.get_items(requestor, account, BOOKMARKS_NODE)
        except StanzaError as exc:
            if exc.condition == "item-not-found":
                return {}
            raise
        found = {}
        for item in page.items:
            conference = parse_stanza(item.payload, namespace="")
            found[item.item_id] = (Bookmark.from_0402(item.item_id, conference), conference)
        return found

    async def read_bookmarks(self, requestor: str, account: str) -> domish.Element:
        storage = await self.read(requestor, account, NS_BOOKMARKS_0048)
        if storage is None:
            storage = domish.Element((NS_BOOKMARKS_0048, "storage"))
        for bookmark, _ in (await self.bookmarks(requestor, account)).values():
            storage.addChild(bookmark.as_0048())
        return storage

    async def write_bookmarks(self, requestor: str, account: str, storage: domish.Element) -> None:
        if storage.name != "storage":
            raise StanzaError("bad-request", text="XEP-0048 bookmarks are a <storage/>")
        conferences = [c for c in storage.elements() if c.name == "conference"]
        wanted: dict[str, Bookmark] = {}
        for conference in conferences:
            bookmark = Bookmark.from_0048(conference)
            wanted[bookmark.room] = bookmark
        rest = domish.Element((NS_BOOKMARKS_0048, "storage"))
        for child in storage.children:
            if not (isinstance(child, domish.Element) and child.name == "conference"):
                rest.addChild(child)
        existing = await self.bookmarks(requestor, account)
        for room, bookmark in wanted.items():
            current = existing.get(room)
            if current is None or current[0].key() != bookmark.key():
                await self.engine.publish(requestor, account, BOOKMARKS_NODE,
                                          [(room, bookmark.as_0402(current[1] if current else None))])
        for room in existing:
            if room not in wanted:
                await self.engine.retract(requestor, account, BOOKMARKS_NODE, [room], True)
        if rest.children or await self.read(requestor, account, NS_BOOKMARKS_0048) is not None:
            await self.engine.publish(requestor, account, PRIVATE_NODE, [(NS_BOOKMARKS_0048, rest.toXml())])


__all__ = ["PrivateStorageHandler", "Bookmark", "NS_PRIVATE"]
