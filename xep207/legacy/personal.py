"""The account's personal data, installed on a server in one call: XEP-0049
private storage, XEP-0048/0402 bookmarks (XEP-0411), XEP-0054 vCards, XEP-0084
avatars with XEP-0398 conversion and XEP-0153 hashes. The data are nodes of the
account's PEP service (``xep207.pubsub.kinds.personal``); this wires their
legacy door and says so in disco."""

from __future__ import annotations

from wokkel import disco
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xep207.legacy.private import PrivateStorageHandler
from xep207.legacy.vcard import NS_CONVERSION, AvatarConversion, VCardHandler
from xep207.pubsub.kinds.personal import personal_kinds

NS_BOOKMARKS_COMPAT = "urn:xmpp:bookmarks:1#compat"  # XEP-0411 through XEP-0049


@implementer(disco.IDisco)
class PersonalDisco(XMPPHandler):
    """What the account (and the server, for vcard-temp) says it does."""

    def __init__(self, domain: str):
        super().__init__()
        self.domain = domain

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier or target.host != self.domain or target.resource is not None:
            return []
        if target.user is None:
            return [disco.DiscoFeature("vcard-temp")]  # XEP-0054 §2
        return [disco.DiscoFeature("vcard-temp"), disco.DiscoFeature(NS_CONVERSION),
                disco.DiscoFeature(NS_BOOKMARKS_COMPAT)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


def install(server) -> None:
    """Add the kinds to the engine and the handlers to the server's own addresses."""
    for kind in personal_kinds():
        server.engine.add_kind(kind)
    server.avatars = AvatarConversion(server.engine, server.hooks, server.presence)
    for handler in (PrivateStorageHandler(server.engine),
                    VCardHandler(server.engine, server.domain, server.avatars),
                    PersonalDisco(server.domain)):
        handler.setHandlerParent(server.local)
