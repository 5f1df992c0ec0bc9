"""XEP-0191 blocking command: a door onto the account's ``blocklist`` node.

State: the private ``blocklist`` node (``xep207.pubsub.kinds.blocklist``),
kept in memory by the engine's ``BlockIndex``. This module is the legacy door
(``<blocklist/>``, ``<block/>``, ``<unblock/>``) and what a change means:

- pushes (§3.3/§3.4) to the account's sessions that asked for the list,
  whichever door changed it (the index tells its listeners);
- presence: a newly blocked JID sees the account go unavailable; an unblocked
  one gets the current presence again, and the account the contact's;
- enforcement: ``blocking_checks`` (stanzas and notifications); the engine
  (access checks) and the pair kind (publish) ask the same index, so
  XEP-0060 requests meet the same rule.
"""

from __future__ import annotations

import uuid
from xml.sax.saxutils import quoteattr

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from wokkel import disco
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xep207.hooks import SESSION_UNBOUND
from xep207.legacy.blocking_checks import BlockGate, BlockingCapture, bare_of
from xep207.legacy.delivery import speaks_pubsub
from xep207.legacy.render import Template
from xep207.pubsub import render
from xep207.pubsub.blocking import BlockIndex, forms_of
from xep207.pubsub.events import ITEMS, RETRACT, Event, Recipient
from xep207.pubsub.kinds import PRESENCE_NODE, PresenceKind
from xep207.pubsub.kinds.blocklist import BLOCKLIST_NODE, MAX_BLOCKED, NS_BLOCKING, blocked_jid, item_payload
from xep207.storage.records import SUBSCRIBED, bare
from xep207.xmlutil import answer_iq


class BlockingHandler(XMPPHandler):
    """``urn:xmpp:blocking`` iqs to one's own account, as engine calls on the
    ``blocklist`` node; and what a change means, whichever door made it."""

    def __init__(self, router, engine, delivery):
        super().__init__()
        self.router = router
        self.engine = engine
        self.storage = engine.storage
        self.delivery = delivery
        self.index: BlockIndex = engine.blocks
        self.interested: set[str] = set()  # full JIDs that asked for the list (§3.2)
        # account -> (requests under way, JIDs changed meanwhile): one push per request
        self._batches: dict[str, tuple[int, set[str]]] = {}
        self.index.listeners.append(self._changed)
        self.index.elsewhere_listeners.append(self._changed_elsewhere)
        router.hooks.add(SESSION_UNBOUND, lambda session: self.interested.discard(session.full))

    def connectionInitialized(self):
        self.xmlstream.addObserver(f"/iq[@type='get']/blocklist[@xmlns='{NS_BLOCKING}']", self._on_get)
        self.xmlstream.addObserver(f"/iq[@type='set']/block[@xmlns='{NS_BLOCKING}']", self._on_block)
        self.xmlstream.addObserver(f"/iq[@type='set']/unblock[@xmlns='{NS_BLOCKING}']", self._on_unblock)

    def _on_get(self, iq):
        answer_iq(self.send, iq, self._get(iq))

    def _on_block(self, iq):
        answer_iq(self.send, iq, self._block(iq))

    def _on_unblock(self, iq):
        answer_iq(self.send, iq, self._unblock(iq))

    @staticmethod
    def _account(iq) -> tuple[str, str]:
        sender = iq["from"]
        user = bare_of(sender)
        if iq.getAttribute("to") not in (None, user):
            raise StanzaError("forbidden", text="a block list belongs to its account")
        return sender, user

    @staticmethod
    def _jids(request) -> list[str]:
        """The JIDs of a block or unblock, all checked before anything changes."""
        jids = [blocked_jid(e.getAttribute("jid")) for e in request.elements()
                if e.name == "item" and e.uri == NS_BLOCKING]
        return list(dict.fromkeys(jids))

    async def _get(self, iq):
        sender, user = self._account(iq)
        self.interested.add(sender)
        try:
            page = await self.engine.get_items(sender, user, BLOCKLIST_NODE)
            items = page.items
        except StanzaError as exc:
            if exc.condition != "item-not-found":
                raise
            items = ()  # nothing ever blocked: no node yet
        response = xmlstream.toResponse(iq, "result")
        blocklist = response.addElement((NS_BLOCKING, "blocklist"))
        for item in sorted(items, key=lambda i: i.item_id):
            blocklist.addElement("item")["jid"] = item.item_id
        return response

    async def _block(self, iq):
        sender, user = self._account(iq)
        jids = self._jids(iq.block)
        if not jids:
            raise StanzaError("bad-request", text="a block names at least one JID (§3.3)")
        new = [j for j in jids if j not in self.index.of(user)]
        if len(self.index.of(user)) + len(new) > MAX_BLOCKED:
            raise StanzaError("resource-constraint", text="the block list is full")
        self._begin(user)
        try:
            for jid in new:
                await self.engine.publish(sender, user, BLOCKLIST_NODE, [(jid, item_payload(jid))])
        finally:
            self._end(user, "block")
        return xmlstream.toResponse(iq, "result")

    async def _unblock(self, iq):
        sender, user = self._account(iq)
        jids = self._jids(iq.unblock)
        self._begin(user)
        try:
            if not jids:
                if self.index.of(user):  # §3.4: no item unblocks everyone
                    await self.engine.purge_node(sender, user, BLOCKLIST_NODE)
            else:
                present = [j for j in jids if j in self.index.of(user)]
                if present:
                    await self.engine.retract(sender, user, BLOCKLIST_NODE, present)
        finally:
            self._end(user, "unblock")
        return xmlstream.toResponse(iq, "result")

    def _begin(self, account: str) -> None:
        depth, changed = self._batches.get(account, (0, set()))
        self._batches[account] = (depth + 1, changed)

    def _end(self, account: str, verb: str) -> None:
        depth, changed = self._batches.pop(account)
        if depth > 1:
            self._batches[account] = (depth - 1, changed)
        elif changed:
            self._push(account, verb, changed)

    # What a change means ----------------------------------------------------------

    def _changed(self, account: str, added: frozenset[str], removed: frozenset[str]) -> None:
        batch = self._batches.get(account)
        if batch is not None:
            batch[1].update(added or removed)  # one push when the request is done
        else:
            self._push(account, "block" if added else "unblock", added or removed)
        d = defer.ensureDeferred(self._presence_after(account, added, removed))
        d.addErrback(log.err, f"presence after a block list change of {account} failed")
        self.router.in_flight.track(d)

    def _changed_elsewhere(self, account: str, added: frozenset[str], removed: frozenset[str]) -> None:
        """Another process of a cluster changed the list: the sessions here that
        asked for it are pushed here (the presence consequences went from there)."""
        self._push(account, "block" if added else "unblock", added or removed)

    def _push(self, account: str, verb: str, jids) -> None:
        items = "".join(f"<item jid={quoteattr(j)}/>" for j in sorted(jids))
        for session in self.router.resources(account):
            if session.full in self.interested:
                session.send(f"<iq type='set' id='push-{uuid.uuid4().hex[:12]}' to={quoteattr(session.full)}>"
                             f"<{verb} xmlns='{NS_BLOCKING}'>{items}</{verb}></iq>")

    @staticmethod
    def _matches(jids, jid: str) -> bool:
        return any(form in jids for form in forms_of(jid))

    async def _presence_after(self, account: str, added: frozenset[str], removed: frozenset[str]) -> None:
        subscribers = [s for s in await self.storage.get_subscriptions(account, PRESENCE_NODE)
                       if s.state == SUBSCRIBED]
        resources = [s for s in self.router.available_resources(account)]
        for subscription in subscribers:
            for session in self.router.available_resources(bare(subscription.subscriber)):
                if added and self._matches(added, session.full):
                    self._unavailable(account, resources, session)  # §3.3
                elif removed and self._matches(removed, session.full) \
                        and not self.index.blocks(account, session.full):
                    self._replay(account, subscription, session.full)  # §3.4
        for session in resources:
            for target in [t for t in session.directed if added and self._matches(added, t)]:
                session.directed.discard(target)
                other = self.router.session(target)
                if other is not None:
                    other.send(Template.presence(session.full, "unavailable").to(other.full))
        if removed:
            # And the account sees again the contacts it unblocked.
            for subscription in await self.storage.get_entity_subscriptions(account, node_id=PRESENCE_NODE):
                if subscription.state == SUBSCRIBED and subscription.service != account \
                        and self._matches(removed, subscription.service):
                    self._replay(subscription.service, subscription, account)

    def _unavailable(self, account: str, resources, session) -> None:
        if not resources:
            return
        if speaks_pubsub(session, PRESENCE_NODE):
            event = Event(account, PRESENCE_NODE, RETRACT, retracted=tuple(r.jid.resource for r in resources))
            session.send(render.message(account, session.full, render.event_body(event)))
            return
        for resource in resources:
            session.send(Template.presence(resource.full, "unavailable").to(session.full))

    def _replay(self, contact: str, subscription, recipient: str) -> None:
        d = defer.ensureDeferred(self.storage.page_items(contact, PRESENCE_NODE))

        def send(page):
            if page.items:
                self.delivery.deliver(Event(contact, PRESENCE_NODE, ITEMS, items=page.items, replay=True,
                                            node_kind=PresenceKind.name),
                                      [Recipient(recipient, subscription)])

        d.addCallback(send)
        self.router.in_flight.track(d)


@implementer(disco.IDisco)
class BlockingDisco(XMPPHandler):
    """The server advertises ``urn:xmpp:blocking`` (XEP-0191 §2)."""

    def __init__(self, domain: str):
        super().__init__()
        self.domain = domain

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if not nodeIdentifier and target.user is None and target.host == self.domain:
            return [disco.DiscoFeature(NS_BLOCKING)]
        return []

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


def install(server) -> None:
    """Wire XEP-0191 into a ``xep207.server.tap.Server``: the door, the
    router check, the delivery filter and the index loaded at start-up."""
    BlockingCapture(server.router, server.engine.blocks)
    server.delivery.gate = BlockGate(server.engine.blocks)
    for handler in (BlockingHandler(server.router, server.engine, server.delivery), BlockingDisco(server.domain)):
        handler.setHandlerParent(server.local)
    server.storage_service.ready.addCallback(
        lambda _: defer.ensureDeferred(server.engine.blocks.load(server.storage)))
