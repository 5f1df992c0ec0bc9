"""Items of the private ``roster`` node: one per contact, ``jabber:iq:roster`` syntax.

The engine reads them for the ``roster`` access model (``roster_groups_allowed``);
the legacy roster view writes them.
"""

from __future__ import annotations

from xml.etree import ElementTree

NS_ROSTER = "jabber:iq:roster"


def groups_of(payload: str) -> set[str]:
    """The group names in a stored roster item (payloads are our own serialization)."""
    try:
        element = ElementTree.fromstring(payload)
    except ElementTree.ParseError:
        return set()
    return {(g.text or "").strip() for g in element.iter(f"{{{NS_ROSTER}}}group")}
