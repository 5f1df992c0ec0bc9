"""Presence capture (XEP-0207 §3): a client's presence becomes node operations.

- available broadcast presence → publish to the account's ``presence`` node,
  item id = resource, payload = the presence as sent (with ``from`` the full JID);
- unavailable, or a session that drops → retract that resource's item;
- initial presence → the session gets the current items of every ``presence``
  node its account is subscribed to (the probe, answered from storage), the
  presence of its own other resources, and pending subscription requests;
- subscription-related presence → ``SubscriptionCapture``;
- directed presence is delivered as is and remembered for the unavailable broadcast.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.python import log
from twisted.words.xish import domish

from xep207.legacy.render import Template, is_presence_node
from xep207.ordering import handed_off
from xep207.hooks import AVAILABILITY_CHANGED, INITIAL_PRESENCE, ITEM_PUBLISHED, SESSION_UNBOUND, STANZA
from xep207.pubsub import errors
from xep207.pubsub.events import ITEMS, AuthorizationRequest, Event, Recipient
from xep207.pubsub.kinds import PRESENCE_NODE, PresenceKind, Trusted
from xep207.pubsub.kinds.account import check_presence_values, presence_payload
from xep207.storage.records import PENDING, SUBSCRIBED
from xep207.xmlutil import parse_stanza, release

SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")


def priority_of(presence: domish.Element) -> int:
    for element in (c for c in presence.elements() if c.name == "priority"):
        try:
            return max(-128, min(127, int(str(element).strip())))
        except ValueError:
            return 0
    return 0


class PresenceCapture:
    def __init__(self, router, engine, delivery, subscriptions, caps=None):
        self.router = router
        self.engine = engine
        self.storage = engine.storage
        self.delivery = delivery
        self.subscriptions = subscriptions
        self.caps = caps
        router.hooks.add(STANZA, self.intercept, stanzas=("presence",))
        router.hooks.add(SESSION_UNBOUND, self._session_gone)
        engine.hooks.add(ITEM_PUBLISHED, self.on_published, kinds=("presence",))

    def on_published(self, node, item, requestor) -> None:
        """A native presence publish (XEP-0207 §3) makes its session
        available, as broadcast presence would."""
        if not is_presence_node(node.service, node.node_id):
            return
        session = self.router.session(requestor)
        if session is not None and not session.available:
            session.available = True
            presence = parse_stanza(item.payload)
            session.priority = priority_of(presence)
            release(presence)
            session.presence = item.payload
        elif session is not None:
            session.presence = item.payload

    async def clear_stale(self) -> None:
        """At start-up no resource is online: drop presence items a previous
        run left behind (a crash skips the unavailable retractions)."""
        for account in await self.storage.list_accounts():
            try:
                await self.engine.purge_node(Trusted(account), account, PRESENCE_NODE)
            except errors.StanzaError:
                pass  # no presence node (an account made by an older version)

    def intercept(self, stanza):
        """(A plain call for every stanza that is not a presence: no coroutine.)"""
        if stanza.name != "presence" or stanza.__dict__.get("session") is None:
            return False
        return self._intercept(stanza)

    async def _intercept(self, stanza) -> bool:
        session = stanza.session
        kind = stanza.getAttribute("type")
        to = stanza.getAttribute("to")
        if kind in SUBSCRIPTION_TYPES:
            if to:
                await self.subscriptions.handle(session, stanza)
            return True
        if kind == "probe":
            return True  # the server answers probes itself, from node items
        if kind not in (None, "unavailable"):
            return False  # errors route as usual
        if to:
            if kind is None:
                session.directed.add(to)
            else:
                session.directed.discard(to)
            return False
        if kind is None:
            try:
                check_presence_values(stanza)  # (the presence kind's rule, both doors)
            except errors.StanzaError as exc:
                self.router.bounce(stanza, exc.condition, exc.text)
                return True
            await self.available(session, stanza)
        else:
            # RFC 6121 §4.5: the unavailable presence as sent, its <status/> included.
            await self.unavailable(session, note="".join(c.toXml() for c in stanza.elements()
                                                         if c.name == "status"))
        return True

    async def available(self, session, stanza) -> None:
        initial = not session.available
        session.available = True
        session.priority = priority_of(stanza)
        payload = presence_payload(stanza, session.full)
        session.presence = payload
        if self.caps is not None:
            self.caps.update(session, stanza)
        release(stanza)  # (the payload and the caps are read: no cycle left to the garbage collector)
        await self.router.hooks.fire(AVAILABILITY_CHANGED, session)
        if initial:
            # The probe and offline delivery below read what this wrote.
            await self.engine.publish(session.full, session.bare, PRESENCE_NODE,
                                      [(session.jid.resource, payload)], vetted=True)
        else:
            # A change of status: the session's next stanza goes on once the item
            # is in storage's queue (what comes next is ordered after it), so a
            # burst of changes shares one commit and its fan-out one write per
            # contact's session (docs/architecture.md, "The hot path").
            await handed_off(
                lambda queued: self.engine.publish(session.full, session.bare, PRESENCE_NODE,
                                                   [(session.jid.resource, payload)], vetted=True, queued=queued),
                lambda failure: self.router.route_failed(failure, stanza), self.router.in_flight.track)
        template = Template.around(payload, "presence")
        for other in self.router.available_resources(session.bare):
            other.send(template.to(other.full))
        if initial:
            await self.probe(session)
            await self.router.hooks.fire(INITIAL_PRESENCE, session)  # offline delivery and the like

    async def probe(self, session) -> None:
        """RFC 6121 §4.2.2's probe, answered from the contacts' ``presence`` nodes."""
        subscriptions = await self.storage.get_entity_subscriptions(session.bare, node_id=PRESENCE_NODE)
        for subscription in subscriptions:
            if subscription.state != SUBSCRIBED or subscription.service == session.bare:
                continue
            page = await self.storage.page_items(subscription.service, PRESENCE_NODE)
            if page.items:
                self.delivery.deliver(
                    Event(subscription.service, PRESENCE_NODE, ITEMS, items=page.items, replay=True,
                          node_kind=PresenceKind.name),
                    [Recipient(session.full, subscription)])
        for other in self.router.available_resources(session.bare):
            if other is not session and other.presence:
                session.send(Template.around(other.presence, "presence").to(session.full))
        for pending in await self.storage.get_subscriptions(session.bare, PRESENCE_NODE):
            if pending.state == PENDING:
                self.delivery.request_authorization(
                    AuthorizationRequest(session.bare, PRESENCE_NODE, pending, (session.full,),
                                         node_kind=PresenceKind.name))

    async def unavailable(self, session, echo: bool = True, note: str = "") -> None:
        if not session.available:
            return
        session.available = False
        session.presence = None
        await self.router.hooks.fire(AVAILABILITY_CHANGED, session)
        try:
            await self.engine.retract(session.full, session.bare, PRESENCE_NODE,
                                      [session.jid.resource], notify=True, note=note)
        except errors.StanzaError:
            pass  # nothing was published for this resource
        gone = Template.presence(session.full, "unavailable", note)
        for other in self.router.available_resources(session.bare):
            other.send(gone.to(other.full))
        if echo and session.stream.transport is not None:
            session.send(gone.to(session.full))
        for target in sorted(session.directed):
            stanza = domish.Element((None, "presence"))
            stanza["from"], stanza["to"], stanza["type"] = session.full, target, "unavailable"
            self.router.route(stanza)
        session.directed.clear()

    def _session_gone(self, session) -> defer.Deferred | None:
        if not session.available:
            return None  # never sent presence (or already unavailable): nothing to tell
        d = defer.ensureDeferred(self.unavailable(session, echo=False))
        return d.addErrback(log.err, f"unavailable broadcast for {session.full} failed")
