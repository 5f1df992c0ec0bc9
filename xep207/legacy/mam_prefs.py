"""XEP-0313 §6 archiving preferences: a door onto the account's ``mam-prefs`` node.

A get reads the version in force (the node's last item; none: the server's
default, archive everything); a set publishes a new version as the account,
so the node kind vets it exactly as an XEP-0060 publish by the owner.
"""

from __future__ import annotations

from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from wokkel import disco
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xep207.pubsub.kinds.mamprefs import MAM_PREFS_NODE, NS_MAM, Prefs, prefs_of
from xep207.xmlutil import answer_iq


@implementer(disco.IDisco)
class MamPrefsHandler(XMPPHandler):
    def __init__(self, engine, domain: str):
        super().__init__()
        self.engine = engine
        self.domain = domain

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        """after-id, before-id, ids and flip-page (``xep207.legacy.archive``)."""
        if not nodeIdentifier and target.host == self.domain and target.resource is None:
            return [disco.DiscoFeature(NS_MAM + "#extended")]
        return []

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []

    def connectionInitialized(self):
        for type in ("get", "set"):  # never answer an answer (RFC 6120 §8.2.3)
            self.xmlstream.addObserver(f"/iq[@type='{type}']/prefs[@xmlns='{NS_MAM}']", self._on_prefs)

    def _on_prefs(self, iq):
        answer_iq(self.send, iq, self._handle(iq))

    async def _handle(self, iq):
        sender = iq["from"]
        user = sender.split("/", 1)[0]
        if iq.getAttribute("to") not in (None, user):
            raise StanzaError("forbidden", text="archiving preferences belong to their account")
        if iq["type"] == "set":
            await self.engine.publish(sender, user, MAM_PREFS_NODE, [(None, iq.prefs.toXml())])
        current = await self.current(sender, user)
        response = xmlstream.toResponse(iq, "result")
        response.addRawXml(current.to_xml())
        return response

    async def current(self, requestor: str, user: str) -> Prefs:
        try:
            page = await self.engine.get_items(requestor, user, MAM_PREFS_NODE, max_items=1)
        except StanzaError as exc:
            if exc.condition != "item-not-found":
                raise
            return Prefs()  # never set
        return prefs_of(page.items[-1].payload) if page.items else Prefs()
