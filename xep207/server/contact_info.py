"""XEP-0157 contact addresses: who to write to about this server, in its disco#info.

Configured with ``--contact TYPE=URI`` (repeatable) or a ``[contact]`` table
(``abuse = ["mailto:abuse@example.org", "xmpp:admin@example.org"]``); TYPE is
one of XEP-0157's registered fields, with or without ``-addresses``. Shown as
an XEP-0128 extended form on the server's JID, and only when configured.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from wokkel import data_form, disco
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

NS_SERVERINFO = "http://jabber.org/network/serverinfo"
TYPES = ("abuse", "admin", "feedback", "sales", "security", "status", "support")


def parse_addresses(table: Mapping[str, object]) -> dict[str, list[str]]:
    """``{type: URI or URIs}`` as configured → ``{field var: [URI, …]}``; ValueError if wrong."""
    found: dict[str, list[str]] = {}
    for key, value in table.items():
        kind = key[: -len("-addresses")] if key.endswith("-addresses") else key
        if kind not in TYPES:
            raise ValueError(f"unknown contact address type {key!r} (one of {', '.join(TYPES)})")
        values = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
        for uri in values:
            uri = str(uri).strip()
            scheme, colon, rest = uri.partition(":")
            if not colon or not scheme.isalnum() or not rest:
                raise ValueError(f"contact address {uri!r} is not a URI (mailto:…, xmpp:…, https:…)")
            found.setdefault(f"{kind}-addresses", []).append(uri)
    return found


@implementer(disco.IDisco)
class ContactInfo(XMPPHandler):
    def __init__(self, domain: str, addresses: Mapping[str, Sequence[str]]):
        super().__init__()
        self.domain = domain
        self.addresses = {var: list(uris) for var, uris in addresses.items() if uris}

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier or target.user is not None or target.host != self.domain or not self.addresses:
            return []
        form = data_form.Form("result", formNamespace=NS_SERVERINFO)
        for var in sorted(self.addresses):
            form.addField(data_form.Field("list-multi", var=var, values=self.addresses[var]))
        return [form]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []
