"""XEP-0012 last activity: the server's uptime, and when a contact was last online.

The contact's answer is a read of its ``last-activity`` node
(``xep207.pubsub.kinds.lastactivity``) as the requester, so the engine
decides who may know (a presence subscriber, the account itself; a blocked
one never): 0 while a resource is available, else the seconds since the item
was written, which happens when the account's last resource goes unavailable.
"""

from __future__ import annotations

import time

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from wokkel import disco
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xep207.hooks import ITEMS_RETRACTED
from xep207.pubsub.kinds import PRESENCE_NODE, Trusted
from xep207.pubsub.kinds.lastactivity import LAST_ACTIVITY_NODE, NS_LAST
from xep207.xmlutil import answer_iq


@implementer(disco.IDisco)
class LastActivityHandler(XMPPHandler):
    def __init__(self, router, engine, clock=time.time):
        super().__init__()
        self.router = router
        self.engine = engine
        self.clock = clock
        self.started = clock()
        engine.hooks.add(ITEMS_RETRACTED, self._retracted)

    def connectionInitialized(self):
        self.xmlstream.addObserver(f"/iq[@type='get']/query[@xmlns='{NS_LAST}']", self._on_query)

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if not nodeIdentifier and target.user is None and target.host == self.router.domain:
            return [disco.DiscoFeature(NS_LAST)]
        return []

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []

    # Recording ------------------------------------------------------------------

    def _retracted(self, node, item_ids, requestor) -> None:
        """The account's last available resource went away: remember when."""
        account = node.service
        if node.node_id != PRESENCE_NODE or not self.engine.is_pep(account) \
                or self.router.available_resources(account):
            return
        d = defer.ensureDeferred(self._record(account))
        d.addErrback(log.err, f"last activity of {account} not recorded")
        self.router.in_flight.track(d)

    async def _record(self, account: str) -> None:
        actor = Trusted(account)
        # Two resources may go at once (a shutdown): ensure_node takes the race.
        await self.engine.ensure_node(actor, account, LAST_ACTIVITY_NODE)
        await self.engine.publish(actor, account, LAST_ACTIVITY_NODE,
                                  [("last", f"<query xmlns='{NS_LAST}'/>")], vetted=True)

    # Answering ------------------------------------------------------------------

    def _on_query(self, iq):
        answer_iq(self.send, iq, self._answer(iq))

    async def _answer(self, iq):
        to = iq.getAttribute("to", self.router.domain)
        if to == self.router.domain:
            seconds = self.clock() - self.started  # §5: the server's uptime
        elif "@" in to and "/" not in to:
            seconds = await self._contact(iq["from"], to)
        else:
            raise StanzaError("service-unavailable")
        response = xmlstream.toResponse(iq, "result")
        response.addElement((NS_LAST, "query"))["seconds"] = str(max(0, int(seconds)))
        return response

    async def _contact(self, requester: str, contact: str) -> float:
        await self.engine.ensure_node(Trusted(contact), contact, LAST_ACTIVITY_NODE)
        try:
            page = await self.engine.get_items(requester, contact, LAST_ACTIVITY_NODE, max_items=1)
        except StanzaError as exc:
            if exc.condition in ("not-authorized", "forbidden", "item-not-found"):
                # §4: only who may see the contact's presence learns this.
                raise StanzaError("forbidden")
            raise
        if self.router.available_resources(contact):
            return 0
        if not page.items:
            raise StanzaError("item-not-found", text="never seen online")
        return self.clock() - page.items[-1].published
