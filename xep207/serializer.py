"""``domish.Element.toXml()`` in one pass for the shape stanzas nearly always have.

A one-to-one message is serialized once, to be stored (issue 13). domish's
serializer is general: a prefix stack and a prefix lookup per element and per
attribute. A client's stanza has none of that to do: each element in its own
default namespace, no prefixed attributes but ``xml:lang``. For exactly that
shape this module writes the very same text in one pass; for anything else
(declared prefixes, attributes in other namespaces, elements whose namespace
is not their default one) it hands the element to domish.
"""

from __future__ import annotations

from typing import Callable

from twisted.words.xish import domish

__all__ = ["serialized"]

NS_XML = "http://www.w3.org/XML/1998/namespace"
# What domish's escapeToXml replaces (in attributes; text: the first three):
# most values contain none, and are written as they are.
_SPECIAL = frozenset("&<>'\"")


class _Unusual(Exception):
    """Something only domish's general serializer writes right."""


def serialized(element: domish.Element, without: Callable[[object], bool] | None = None) -> str:
    """``element.toXml()``; ``without``: its direct children to leave out."""
    out: list[str] = []
    try:
        _write(element, "", out, without)
    except _Unusual:
        if without is not None:
            copy = domish.Element((element.uri, element.name), element.defaultUri, dict(element.attributes),
                                  dict(element.localPrefixes))
            copy.children = [c for c in element.children if not without(c)]
            element = copy
        return element.toXml()
    return "".join(out)


def _write(element: domish.Element, current: str, out: list[str],
           without: Callable[[object], bool] | None = None) -> None:
    if element.localPrefixes:
        raise _Unusual()
    default = element.defaultUri
    if default is None:
        default = current
    uri = element.uri
    if uri is None:
        uri = default
    if uri != default or uri == NS_XML:
        raise _Unusual()  # domish writes a prefix for it
    name = element.name
    # (One string per element where it can be: each ``append`` is a call.)
    head = "<" + name if default == current else "<" + name + " xmlns='" + default + "'"
    for key, value in element.attributes.items():
        if not _SPECIAL.isdisjoint(value):
            value = domish.escapeToXml(value, 1)
        if type(key) is tuple:
            if key[0] != NS_XML:
                raise _Unusual()
            head += " xml:" + key[1] + "='" + value + "'"
        else:
            head += " " + key + "='" + value + "'"
    children = element.children
    if without is not None:
        children = [c for c in children if not without(c)]
    if not children:
        out.append(head + "/>")
        return
    out.append(head + ">")
    for child in children:
        # Text, the usual child of a leaf, costs one exact type check; the
        # rest are tested as before, and a ``str`` subclass that is not
        # ``SerializedXML`` falls through to the same text line.
        if type(child) is not str:
            if isinstance(child, domish.Element):
                _write(child, default, out)
                continue
            if isinstance(child, domish.SerializedXML):
                out.append(child)
                continue
            if not isinstance(child, str):
                raise _Unusual()
        out.append(child if _SPECIAL.isdisjoint(child) else domish.escapeToXml(child))
    out.append("</" + name + ">")
