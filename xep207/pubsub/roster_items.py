"""Items of the private ``roster`` node: one per contact, ``jabber:iq:roster`` syntax.

The engine reads them for the ``roster`` access model (``roster_groups_allowed``);
the legacy roster view writes them.
"""

from __future__ import annotations

from xml.etree import ElementTree

from xep207.xmlutil import parse_stanza

NS_ROSTER = "jabber:iq:roster"


def groups_of(payload: str) -> set[str]:
    """The group names in a stored roster item (payloads are our own serialization)."""
    try:
        element = ElementTree.fromstring(payload)
    except ElementTree.ParseError:
        return set()
    return {(g.text or "").strip() for g in element.iter(f"{{{NS_ROSTER}}}group")}


def is_pre_approval(payload: str) -> bool:
    """Whether a stored roster item holds the account's pre-approval (RFC 6121 §3.4)."""
    try:
        element = ElementTree.fromstring(payload)
    except ElementTree.ParseError:
        return False
    return element.get("approved") == "true"


def without_pre_approval(payload: str) -> str:
    """The stored item, its pre-approval used up (name and groups kept)."""
    item = parse_stanza(payload, NS_ROSTER)
    if item.hasAttribute("approved"):
        del item["approved"]
    return item.toXml()
