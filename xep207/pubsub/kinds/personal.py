"""An account's personal data as PEP nodes: private storage, bookmarks, vCard, avatar.

Each legacy protocol reads and writes one node on the account's PEP service, so
the same kind answers whether a client speaks XEP-0049/0048/0054 or XEP-0060:

- ``jabber:iq:private`` (``private``): XEP-0049 private XML storage, one item per
  namespace (item id = the namespace); nobody but the account may learn it
  exists. XEP-0048 conferences are not kept here: they are the items of
  ``urn:xmpp:bookmarks:1`` (XEP-0411), so ``storage:bookmarks`` holds the rest.
- ``urn:xmpp:bookmarks:1`` (``bookmarks``): XEP-0402, one item per room (item id =
  the room's bare JID), access ``whitelist``, ``max_items`` the service's maximum,
  invisible to everyone but the account.
- ``vcard-temp`` (``vcard``): the XEP-0054 vCard, item ``current``; readable by
  anyone (vCards are public in XEP-0054 practice), written by the account only.
- ``urn:xmpp:avatar:data`` (``avatar-data``): XEP-0084 image data; the item id must
  be the SHA-1 of the bytes. Otherwise a generic PEP node (publish-options apply).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import ClassVar, Mapping, Sequence

from twisted.words.protocols.jabber import jid as jidlib

from xep207.pubsub import config as node_config
from xep207.pubsub import errors
from xep207.pubsub.kinds.base import Access, NodeKind, NodeKindName
from xep207.storage.records import NONE, AffiliationName, NodeConfig, Subscription, bare
from xep207.xmlutil import parse_stanza

PRIVATE_NODE = "jabber:iq:private"
BOOKMARKS_NODE = "urn:xmpp:bookmarks:1"
VCARD_NODE = "vcard-temp"
AVATAR_DATA_NODE = "urn:xmpp:avatar:data"
AVATAR_METADATA_NODE = "urn:xmpp:avatar:metadata"
VCARD_ITEM = "current"
NS_BOOKMARKS_0048 = "storage:bookmarks"
# XEP-0049 §3: namespaces a client may not store (they would mean something to the stream).
RESERVED_PRIVATE = frozenset({"jabber:client", "jabber:server", "jabber:iq:private"})


def parse_payload(payload: str, namespace: str, name: str | None = None, what: str = "the item"):
    """One element of ``namespace`` (and ``name``), or ``invalid-payload``."""
    try:
        element = parse_stanza(payload, namespace="")
    except Exception:
        raise errors.bad_request("invalid-payload", text=f"{what} is not one XML element")
    if element.uri != namespace or (name is not None and element.name != name):
        expected = f"<{name} xmlns='{namespace}'/>" if name else f"an element of {namespace}"
        raise errors.bad_request("invalid-payload", text=f"{what} must be {expected}")
    return element


def decode_base64(text: str) -> bytes:
    """Strict base64 (whitespace, which vCards fold lines with, allowed); ``invalid-payload`` otherwise."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise errors.bad_request("invalid-payload", text="not base64 data")


def sha1_hex(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# What a kind promises and its owner may not configure away.
FIXED_FIELDS = ("access_model", "publish_model", "persist_items", "max_items")


def check_fixed(kind: "NodeKind", access: Access, values: Mapping[str, object],
                fields: Sequence[str] = FIXED_FIELDS) -> bool:
    """Whether ``values`` leave the kind's fixed fields as the kind made them
    (a bookmarks node trimmed to one item loses bookmarks on the next XEP-0048 write)."""
    engine = access.engine
    if "pubsub#publisher" in values:
        return False
    wanted, _ = node_config.apply_values(access.node.config, values, engine.max_items_limit)
    fixed = kind.initial_config(engine, access.service, access.node_id)
    return all(getattr(wanted, f) == getattr(fixed, f) for f in fields)


def is_image_type(kind: str) -> bool:
    """A PHOTO's TYPE (XEP-0153 §3.1: an image MIME type); nothing a client would render as a page."""
    return kind.lower().startswith("image/") and kind.isprintable() and " " not in kind and len(kind) <= 64


class AccountOnlyKind(NodeKind):
    """A node of one account's PEP service that nobody else may see (like ``roster``)."""

    node_name: ClassVar[str] = ""
    max_page: ClassVar[int | None] = None  # (XEP-0048 reads every bookmark at once)

    def claims(self, engine, service: str, node_id: str) -> bool:
        return node_id == self.node_name and engine.is_pep(service)

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        return super().initial_config(engine, service, node_id).replace(
            access_model="whitelist", max_items=engine.max_items_limit,
            send_last_published_item="never")

    async def visible(self, access: Access) -> bool:
        return access.trusted or bare(access.requestor) == access.service

    async def check_configure(self, access: Access, values: Mapping[str, object]) -> None:
        await super().check_configure(access, values)
        if not check_fixed(self, access, values):
            raise errors.not_acceptable(text="this node is private to its account, and keeps every item")

    async def check_affiliation_change(self, access: Access,
                                       changes: Mapping[str, AffiliationName]) -> None:
        await super().check_affiliation_change(access, changes)
        if any(e != access.service for e in changes):
            raise errors.not_acceptable(text="this node is private to its account")

    async def check_subscription_change(self, access: Access, subscriber: str, state: str,
                                        existing: Subscription | None) -> bool:
        return state == NONE or bare(subscriber) == access.service


class PrivateKind(AccountOnlyKind):
    name: ClassVar[NodeKindName] = "private"
    node_name = PRIVATE_NODE

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        # XEP-0049 has no notifications; nothing to push.
        return super().initial_config(engine, service, node_id).replace(deliver_notifications=False)

    async def vet_item(self, access: Access, item_id, payload: str):
        try:
            element = parse_stanza(payload, namespace="")
        except Exception:
            raise errors.bad_request("invalid-payload", text="private data is one XML element")
        namespace = element.uri or ""
        if not namespace or namespace in RESERVED_PRIVATE:
            raise errors.not_acceptable(text=f"{namespace or 'no namespace'} may not be stored (XEP-0049)")
        if item_id not in (None, namespace):
            raise errors.bad_request("invalid-payload", text="the item id is the data's namespace")
        if namespace == NS_BOOKMARKS_0048 and any(c.name == "conference" for c in element.elements()):
            raise errors.bad_request(
                "invalid-payload", text=f"conferences are the items of {BOOKMARKS_NODE} (XEP-0411)")
        return namespace, payload


class BookmarksKind(AccountOnlyKind):
    name: ClassVar[NodeKindName] = "bookmarks"
    node_name = BOOKMARKS_NODE

    async def vet_item(self, access: Access, item_id, payload: str):
        """XEP-0402 §3: item id = the room's bare JID, payload a ``<conference/>``."""
        room = bookmark_jid(item_id)
        conference = parse_payload(payload, BOOKMARKS_NODE, "conference", "a bookmark")
        if conference.getAttribute("autojoin", "false") not in ("true", "false", "1", "0"):
            raise errors.bad_request("invalid-payload", text="autojoin is a boolean")
        return room, payload


def bookmark_jid(value: str | None) -> str:
    """A room's bare JID, normalized, or ``invalid-payload``."""
    room = None
    if value:
        try:
            room = jidlib.JID(value)
        except (jidlib.InvalidFormat, ValueError, TypeError, IndexError):
            pass
    if room is None or not room.user or room.resource:
        raise errors.bad_request("invalid-payload", text="a bookmark's id is a room's bare JID")
    return room.userhost()


class VCardKind(NodeKind):
    """XEP-0054 stored as a PEP node: public, one item, the account's to write."""

    name: ClassVar[NodeKindName] = "vcard"

    def claims(self, engine, service: str, node_id: str) -> bool:
        return node_id == VCARD_NODE and engine.is_pep(service)

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        return super().initial_config(engine, service, node_id).replace(
            access_model="open", max_items=1, send_last_published_item="never")

    async def may_auto_create(self, engine, requestor: str, service: str, node_id: str,
                              operation: str) -> bool:
        if operation != "publish":
            return False
        if bare(requestor) != service:
            raise errors.forbidden(text="a vCard is its account's to write")
        return True

    async def check_configure(self, access: Access, values: Mapping[str, object]) -> None:
        await super().check_configure(access, values)
        if not check_fixed(self, access, values):
            raise errors.not_acceptable(text="a vCard is public and its account's to write (XEP-0054)")

    async def check_affiliation_change(self, access: Access,
                                       changes: Mapping[str, AffiliationName]) -> None:
        await super().check_affiliation_change(access, changes)
        if any(e != access.service and a not in (NONE, "outcast") for e, a in changes.items()):
            raise errors.not_acceptable(text="a vCard is its account's to write")

    async def vet_item(self, access: Access, item_id, payload: str):
        if item_id not in (None, VCARD_ITEM):
            raise errors.bad_request("invalid-payload", text=f"the vCard is item '{VCARD_ITEM}'")
        vcard = parse_payload(payload, VCARD_NODE, "vCard", "a vCard")
        photo_of(vcard)  # a PHOTO must decode
        return VCARD_ITEM, payload


def photo_of(vcard) -> tuple[str, bytes] | None:
    """A vCard's (TYPE, image bytes), or None when it has no embedded PHOTO."""
    photo = next((c for c in vcard.elements() if c.name == "PHOTO"), None)
    if photo is None:
        return None
    binval = next((c for c in photo.elements() if c.name == "BINVAL"), None)
    if binval is None:
        return None  # an EXTVAL (a URL) carries no image here
    kind = next((str(c).strip() for c in photo.elements() if c.name == "TYPE"), "") or "image/png"
    if not is_image_type(kind):
        raise errors.bad_request("invalid-payload", text="a PHOTO's TYPE is an image type")
    data = decode_base64(str(binval))
    if not data:
        raise errors.bad_request("invalid-payload", text="an empty PHOTO")
    return kind, data


class AvatarDataKind(NodeKind):
    """XEP-0084 §4.2: the item id is the SHA-1 of the image; a wrong one is refused."""

    name: ClassVar[NodeKindName] = "avatar-data"
    publish_options_configure = True  # otherwise a generic PEP node

    def claims(self, engine, service: str, node_id: str) -> bool:
        return node_id == AVATAR_DATA_NODE and engine.is_pep(service)

    async def vet_item(self, access: Access, item_id, payload: str):
        element = parse_payload(payload, AVATAR_DATA_NODE, "data", "avatar data")
        data = decode_base64(str(element))
        if not data:
            raise errors.bad_request("invalid-payload", text="empty avatar data")
        digest = sha1_hex(data)
        if item_id is not None and item_id.lower() != digest:
            raise errors.bad_request("invalid-payload",
                                     text="the item id must be the SHA-1 of the image (XEP-0084 §4.2)")
        return digest, payload


def personal_kinds() -> list[NodeKind]:
    return [PrivateKind(), BookmarksKind(), VCardKind(), AvatarDataKind()]
