"""The account's block list (XEP-0191) as a private node of its PEP service.

Node ``blocklist`` on an account's bare JID: one item per blocked JID (item id
= the prepared JID, payload ``<item xmlns='urn:xmpp:blocking' jid='…'/>``).
Like ``roster``, nobody but the account may learn it exists. The XEP-0191
iqs (``xep207.legacy.blocking``) and XEP-0060 requests by the owner are two
doors onto it; ``xep207.pubsub.blocking.BlockIndex`` keeps it in memory for
the checks every stanza and notification needs.
"""

from __future__ import annotations

from typing import ClassVar, Sequence
from xml.sax.saxutils import quoteattr

from twisted.words.protocols.jabber.jid import InvalidFormat

from xep207.jids import full_jid
from xep207.pubsub import errors
from xep207.pubsub.kinds.base import Access, AccountPrivateKind, NodeKindName
from xep207.storage.records import NodeConfig
from xep207.xmlutil import parse_stanza

BLOCKLIST_NODE = "blocklist"
NS_BLOCKING = "urn:xmpp:blocking"
MAX_BLOCKED = 1000  # entries per account: a list is read into memory, it must stay small


def blocked_jid(value: str | None) -> str:
    """The prepared JID a block names; ``jid-malformed`` if it is none (XEP-0191 §3.3)."""
    if not value:
        raise errors.StanzaError("jid-malformed", text="a blocked item needs a jid")
    try:
        return full_jid(value)
    except (InvalidFormat, ValueError):
        raise errors.StanzaError("jid-malformed", text=f"not a JID: {value[:100]!r}")


def item_payload(jid: str) -> str:
    return f"<item xmlns='{NS_BLOCKING}' jid={quoteattr(jid)}/>"


class BlocklistKind(AccountPrivateKind):
    name: ClassVar[NodeKindName] = "blocklist"
    node_name = BLOCKLIST_NODE
    what = "the block list"

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        # XEP-0191 pushes are its notifications; items stay until unblocked
        # (never trimmed: a full list refuses the next block instead).
        return super().initial_config(engine, service, node_id).replace(
            access_model="whitelist", persist_items=True, max_items=engine.max_items_limit,
            deliver_notifications=False, send_last_published_item="never")

    async def check_publish(self, access: Access) -> None:
        await super().check_publish(access)
        if len(access.engine.blocks.of(access.service)) >= min(MAX_BLOCKED, access.node.config.max_items):
            raise errors.StanzaError("resource-constraint", text="the block list is full")

    async def vet_item(self, access: Access, item_id, payload: str):
        """An item is one blocked JID, kept under its own (prepared) name."""
        try:
            element = parse_stanza(payload)
        except Exception:
            raise errors.bad_request("invalid-payload")
        if element.name != "item" or element.uri != NS_BLOCKING or any(True for _ in element.elements()):
            raise errors.bad_request("invalid-payload", text=f"an item is <item xmlns='{NS_BLOCKING}' jid='…'/>")
        jid = blocked_jid(element.getAttribute("jid"))
        if item_id is not None and item_id != jid:
            try:
                same = full_jid(item_id) == jid
            except (InvalidFormat, ValueError):
                same = False
            if not same:
                raise errors.bad_request("invalid-payload", text="the item id is the blocked JID")
        return jid, item_payload(jid)



BLOCKLIST_NODES: Sequence[str] = (BLOCKLIST_NODE,)
