"""XEP-0054 vcard-temp over the ``vcard-temp`` node, XEP-0398 avatar conversion, XEP-0153 hashes.

- ``<vCard xmlns='vcard-temp'/>`` get to an account (or no ``to``: one's own) reads
  item ``current`` of that account's ``vcard-temp`` node (``VCardKind``: open to
  all). One's own missing vCard is an empty ``<vCard/>``; someone else's is
  ``item-not-found`` (XEP-0054 §3.2's SHOULD). The server's is a fixed one
  (name and description), not writable.
- a set publishes the item as the user (another account's: ``forbidden``).
- XEP-0398: a vCard with a PHOTO the account publishes (through either door) is
  published as XEP-0084 data + metadata; XEP-0084 metadata the account publishes
  becomes the vCard's PHOTO. The conversions are the service's (``Trusted``)
  writes, and the service's own writes are never converted back.
- XEP-0153: the account's available broadcast presence carries
  ``<x xmlns='vcard-temp:x:update'><photo>SHA-1</photo></x>`` of its vCard photo,
  whatever the client put there; when the photo changes, the online resources'
  presence goes out again with the new hash.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel.subprotocols import XMPPHandler

from xep207 import logs
from xep207.hooks import ITEM_PUBLISHED, SESSION_BOUND, SESSION_UNBOUND, STANZA
from xep207.pubsub.kinds import Trusted, is_trusted
from xep207.pubsub.kinds.personal import (
    AVATAR_DATA_NODE,
    AVATAR_METADATA_NODE,
    VCARD_ITEM,
    VCARD_NODE,
    is_image_type,
    photo_of,
    sha1_hex,
)
from xep207.xmlutil import answer_iq, parse_stanza

NS_VCARD_UPDATE = "vcard-temp:x:update"
NS_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"


def _missing(exc: StanzaError) -> bool:
    return exc.condition == "item-not-found"


def photo_hash(vcard: domish.Element | None) -> str:
    """The XEP-0153 hash of a vCard's photo ('' for none)."""
    if vcard is None:
        return ""
    try:
        photo = photo_of(vcard)
    except StanzaError:
        return ""
    return sha1_hex(photo[1]) if photo else ""


class VCardHandler(XMPPHandler):
    """vcard-temp on the server's own addresses."""

    def __init__(self, engine, domain: str, avatars: "AvatarConversion"):
        super().__init__()
        self.engine = engine
        self.domain = domain
        self.avatars = avatars

    def connectionInitialized(self):
        for kind in ("get", "set"):
            self.xmlstream.addObserver(f"/iq[@type='{kind}']/vCard[@xmlns='{VCARD_NODE}']", self._on_request)

    def _on_request(self, iq):
        answer_iq(self.send, iq, self._answer(iq))

    async def _answer(self, iq):
        requestor = iq["from"]
        account = jidlib.JID(requestor).userhost()
        target = jidlib.JID(iq.getAttribute("to", account))
        response = xmlstream.toResponse(iq, "result")
        if target.user is None:
            if iq["type"] == "set":
                raise StanzaError("forbidden", text="the server's vCard is not for clients to write")
            card = response.addElement((VCARD_NODE, "vCard"))  # the server's own, made up here
            card.addElement("FN", content="xep207")
            card.addElement("DESC", content=f"The XMPP server of {self.domain}")
            return response
        owner = target.userhost()
        if iq["type"] == "set":
            if owner != account:
                raise StanzaError("forbidden", text="a vCard is its account's to write")
            await self.engine.publish(requestor, account, VCARD_NODE, [(VCARD_ITEM, iq.vCard.toXml())])
            await self.avatars.settled(account)  # a read after this set sees the avatar too
            return response
        try:
            page = await self.engine.get_items(requestor, owner, VCARD_NODE, item_ids=[VCARD_ITEM])
        except StanzaError as exc:
            if not _missing(exc):
                raise
            page = None
        if page and page.items:
            response.addRawXml(page.items[0].payload)
        elif owner == account:
            response.addElement((VCARD_NODE, "vCard"))
        else:
            raise StanzaError("item-not-found", text="no vCard")
        return response


class AvatarConversion:
    """XEP-0398 both ways, and the XEP-0153 hash each account's presence carries."""

    def __init__(self, engine, hooks, presence=None):
        self.engine = engine
        self.presence = presence  # PresenceCapture: re-sends presence when the hash changes
        self.hashes: dict[str, str] = {}  # account -> its photo's SHA-1 ('' none), once read
        self._work: dict[str, defer.Deferred] = {}  # account -> its conversions, in order
        engine.hooks.add(ITEM_PUBLISHED, self.on_published, kinds=("vcard", "generic"))  # (avatar metadata: a generic PEP node)
        hooks.add(SESSION_BOUND, self._on_bound)
        hooks.add(SESSION_UNBOUND, self._on_unbound)
        # Before the presence capture (priority 0) stores the presence; never captures.
        hooks.add(STANZA, self.stamp_presence, priority=50, stanzas=("presence",))

    # Conversions ----------------------------------------------------------------

    def on_published(self, node, item, requestor) -> None:
        # Every publish passes here (presence, chat): the node name first, it is cheapest.
        if node.node_id not in (VCARD_NODE, AVATAR_METADATA_NODE) or not self.engine.is_pep(node.service):
            return
        if node.node_id == VCARD_NODE:
            self._remember(node.service, photo_hash(parse_stanza(item.payload, namespace="")))
            if not is_trusted(requestor):
                self._queue(node.service, self.vcard_to_avatar, item.payload)
        elif node.node_id == AVATAR_METADATA_NODE and not is_trusted(requestor):
            self._queue(node.service, self.avatar_to_vcard, item.payload)

    def _queue(self, account: str, convert, payload: str) -> None:
        previous = self._work.get(account, defer.succeed(None))
        d = previous.addCallback(lambda _: defer.ensureDeferred(convert(account, payload)))
        d.addErrback(logs.failure, f"XEP-0398 conversion for {account}")
        self._work[account] = d

        def done(result):
            if self._work.get(account) is d:
                del self._work[account]
            return result
        d.addBoth(done)

    def settled(self, account: str) -> defer.Deferred:
        """Fires when the conversions queued so far for ``account`` are done."""
        pending = self._work.get(account)
        if pending is None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()

        def fire(result: object) -> object:
            d.callback(None)
            return result
        pending.addBoth(fire)
        return d

    async def _current(self, account: str, node_id: str, item_id: str | None = None):
        """The account's item (the newest one without ``item_id``), parsed, or None."""
        try:
            page = await self.engine.get_items(Trusted(account), account, node_id,
                                               item_ids=[item_id] if item_id else (), max_items=None)
        except StanzaError as exc:
            if _missing(exc):
                return None, None
            raise
        if not page.items:
            return None, None
        item = page.items[-1]
        return item.item_id, parse_stanza(item.payload, namespace="")

    async def vcard_to_avatar(self, account: str, payload: str) -> None:
        photo = photo_of(parse_stanza(payload, namespace=""))
        current_id, metadata = await self._current(account, AVATAR_METADATA_NODE)
        actor = Trusted(account)
        if photo is None:
            if metadata is not None and any(True for _ in metadata.elements()):
                await self._publish(actor, account, AVATAR_METADATA_NODE, None,
                                    domish.Element((AVATAR_METADATA_NODE, "metadata")).toXml())
            return
        kind, data = photo
        digest = sha1_hex(data)
        if current_id == digest:
            return
        content = domish.Element((AVATAR_DATA_NODE, "data"))
        content.addContent(base64.b64encode(data).decode("ascii"))
        await self._publish(actor, account, AVATAR_DATA_NODE, digest, content.toXml())
        metadata = domish.Element((AVATAR_METADATA_NODE, "metadata"))
        info = metadata.addElement("info")
        info["id"], info["bytes"], info["type"] = digest, str(len(data)), kind
        await self._publish(actor, account, AVATAR_METADATA_NODE, digest, metadata.toXml())

    async def _publish(self, actor: Trusted, account: str, node_id: str, item_id: str | None,
                       payload: str) -> None:
        """A converted avatar is as public as the vCard it came from (XEP-0398 §4)."""
        exists = await self.engine.node_info(actor, account, node_id) is not None
        options = None if exists else {"pubsub#access_model": "open"}
        if options and node_id == AVATAR_METADATA_NODE:
            options["pubsub#max_items"] = "1"  # the current avatar only
        await self.engine.publish(actor, account, node_id, [(item_id, payload)], options)

    async def avatar_to_vcard(self, account: str, payload: str) -> None:
        metadata = parse_stanza(payload, namespace="")
        if metadata.name != "metadata" or metadata.uri != AVATAR_METADATA_NODE:
            return  # not XEP-0084 metadata: nothing to convert
        infos = [i for i in metadata.elements() if i.name == "info" and i.getAttribute("id")
                 and not i.getAttribute("url")]
        _, vcard = await self._current(account, VCARD_NODE, VCARD_ITEM)
        if vcard is None:
            vcard = domish.Element((VCARD_NODE, "vCard"))
        if not infos:
            if any(c.name == "PHOTO" for c in vcard.elements()):
                await self._write_vcard(account, vcard, None, b"")
            return
        info = infos[0]
        digest = info["id"].lower()
        if photo_hash(vcard) == digest:
            return
        _, data = await self._current(account, AVATAR_DATA_NODE, digest)
        if data is None:
            return  # the data is elsewhere (a URL), or not published yet
        kind = info.getAttribute("type", "image/png")
        if not is_image_type(kind):
            return  # XEP-0084 says an image type; a page is not a vCard PHOTO
        image = base64.b64decode("".join(str(data).split()))
        await self._write_vcard(account, vcard, kind, image)

    async def _write_vcard(self, account: str, vcard: domish.Element, kind: str | None,
                           image: bytes) -> None:
        vcard.children = [c for c in vcard.children
                          if not (isinstance(c, domish.Element) and c.name == "PHOTO")]
        if kind is not None:
            photo = vcard.addElement("PHOTO")
            photo.addElement("TYPE", content=kind)
            photo.addElement("BINVAL", content=base64.b64encode(image).decode("ascii"))
        await self.engine.publish(Trusted(account), account, VCARD_NODE, [(VCARD_ITEM, vcard.toXml())])

    # XEP-0153 -------------------------------------------------------------------------

    def _remember(self, account: str, digest: str) -> None:
        before = self.hashes.get(account)
        self.hashes[account] = digest
        if before is not None and before != digest and self.presence is not None:
            self._queue(account, self._resend_presence, "")

    async def _load(self, account: str) -> str:
        if account not in self.hashes:
            _, vcard = await self._current(account, VCARD_NODE, VCARD_ITEM)
            self.hashes.setdefault(account, photo_hash(vcard))
        return self.hashes[account]

    def _on_bound(self, session) -> None:
        """A login re-reads the hash (a vCard retracted or deleted through XEP-0060
        shows here), when its first presence needs it: a login costs no read."""
        self.hashes.pop(session.bare, None)

    def _on_unbound(self, session) -> None:
        """The cache holds the accounts online, no more."""
        if self.presence is not None and not self.presence.router.sessions.get(session.bare):
            self.hashes.pop(session.bare, None)

    def stamp_presence(self, stanza) -> Any:
        session = stanza.__dict__.get("session")
        if stanza.name != "presence" or session is None or stanza.getAttribute("type") is not None \
                or stanza.getAttribute("to"):
            return None  # directed presence (a room's) is the client's own business
        digest = self.hashes.get(session.bare)
        if digest is not None:
            self._stamp(stanza, digest)
            return None

        async def load_then_stamp():
            self._stamp(stanza, await self._load(session.bare))
        return defer.ensureDeferred(load_then_stamp())

    @staticmethod
    def _stamp(stanza: domish.Element, digest: str) -> None:
        stanza.children = [c for c in stanza.children
                           if not (isinstance(c, domish.Element) and c.uri == NS_VCARD_UPDATE)]
        update = stanza.addElement((NS_VCARD_UPDATE, "x"))
        update.addElement("photo", content=digest or None)

    async def _resend_presence(self, account: str, _: str) -> None:
        """XEP-0153 §4.3: contacts learn of a new photo from presence."""
        for session in self.presence.router.available_resources(account):
            if session.presence and not getattr(session, "remote", False):  # (a cluster's: its process does)
                stanza = parse_stanza(session.presence)
                self._stamp(stanza, self.hashes.get(account, ""))
                await self.presence.available(session, stanza)
