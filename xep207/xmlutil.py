"""Parsing serialized stanzas back into Elements (for the rare paths that need both)."""

from __future__ import annotations

from twisted.words.xish import domish


def parse_stanza(text: str, namespace: str = "jabber:client") -> domish.Element:
    """Parse exactly one serialized stanza into an Element."""
    elements = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = elements.append
    stream.ElementEvent = lambda e: elements[0].addChild(e)
    stream.DocumentEndEvent = lambda: None
    stream.parse(f"<root xmlns='{namespace}'>{text}</root>")
    children = [c for c in elements[0].elements()]
    if len(children) != 1:
        raise ValueError(f"expected one stanza, got {len(children)}")
    return children[0]
