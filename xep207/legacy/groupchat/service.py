"""Where a stanza to the chat service enters, and how the parts are wired.

Stanzas for one room are handled one at a time, so a join, a message and a
kick in the same room never interleave; different rooms run side by side. A
room message holds its room only until its item is in storage's queue (the
writer keeps the order; the commit and the fan-out follow on their own).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber.error import StanzaError
from wokkel import disco
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xep207.hooks import ITEM_PUBLISHED, SESSION_UNBOUND, SUBSCRIPTION_CHANGED
from xep207.inflight import InFlight
from xep207.jids import parse_jid
from xep207.ordering import InOrder
from xep207.legacy.groupchat import discovery, selfping
from xep207.legacy.groupchat.admin import Admin
from xep207.legacy.groupchat.messages import Messages
from xep207.legacy.groupchat.native import NativeBridge
from xep207.legacy.groupchat.occupants import Occupants
from xep207.legacy.groupchat.owner import Owner
from xep207.legacy.groupchat.rendering import RoomRenderer
from xep207.legacy.groupchat.rooms import NS_ADMIN, NS_OWNER, Rooms
from xep207.pubsub.kinds.room import NICK


@implementer(disco.IDisco)
class GroupchatService(XMPPHandler):
    """The XEP-0045 face of the chat service; also the renderer of its nodes."""

    def __init__(self, router, engine, domain: str):
        super().__init__()
        self.router = router
        self.rooms = Rooms(router, engine, domain)
        self.messages = Messages(self.rooms)
        self.occupants = Occupants(self.rooms, self.messages)
        self.owner = Owner(self.rooms, self.occupants)
        self.admin = Admin(self.rooms, self.occupants)
        self.native = NativeBridge(self.rooms, self.occupants)
        self.renderer = RoomRenderer(domain)
        self._rooms_in_order: dict[str, InOrder] = {}
        self.in_flight = InFlight()  # room work under way, for a clean shutdown
        self.messages.late_failure = self._failed
        self.messages.track = self.in_flight.track
        self.native.track = self.in_flight.track
        router.hooks.add(SESSION_UNBOUND, self.occupants.session_gone)
        router.hooks.add(SUBSCRIPTION_CHANGED, self.native.on_subscription_change)
        engine.hooks.add(ITEM_PUBLISHED, self.native.on_published, kinds=("room",))

    # Stanzas in ------------------------------------------------------------------

    def connectionInitialized(self):
        self.xmlstream.addObserver("/presence", self._on_stanza)
        self.xmlstream.addObserver("/message", self._on_stanza)
        self.xmlstream.addObserver(f"/iq/query[@xmlns='{NS_OWNER}']", self._on_stanza)
        self.xmlstream.addObserver(f"/iq/query[@xmlns='{NS_ADMIN}']", self._on_stanza)
        self.xmlstream.addObserver(selfping.PING_REQUEST, self._on_stanza)

    def _on_stanza(self, stanza):
        if stanza.__dict__.get("handled", False):
            return
        stanza.handled = True
        try:
            to = parse_jid(stanza["to"])  # the router prepared it: a cache hit
        except jidlib.InvalidFormat:
            self.router.bounce(stanza, "jid-malformed")
            return
        key = to.user or ""
        in_order = self._rooms_in_order.get(key)
        if in_order is None:
            in_order = self._rooms_in_order[key] = InOrder()
        d = in_order.run(self._dispatched, stanza, to)
        d.addBoth(self._idle, key, in_order)
        self.in_flight.track(d)

    def in_room(self, room: str, call) -> defer.Deferred:
        """``call()`` once the room's stanzas before it are handled, the next
        ones waiting for it: an XEP-0060 request on the room's node
        (``PubSubProtocol.serial``) takes its turn with XEP-0045's, so the
        admission checks of two joins, one per door, never interleave."""
        in_order = self._rooms_in_order.get(room)
        if in_order is None:
            in_order = self._rooms_in_order[room] = InOrder()
        d = in_order.run(call)
        d.addBoth(self._idle, room, in_order)
        self.in_flight.track(d)
        return d

    def _dispatched(self, stanza, to) -> defer.Deferred:
        return defer.ensureDeferred(self._dispatch(stanza, to)).addErrback(self._failed, stanza)

    def _idle(self, result, key, in_order):
        if not in_order.locked and self._rooms_in_order.get(key) is in_order:
            del self._rooms_in_order[key]
        return result

    def _failed(self, failure, stanza):
        if failure.check(StanzaError):
            if stanza.getAttribute("type") == "error":
                return
            if failure.value.appCondition is not None:  # XEP-0191's <blocked/>, say: kept
                self.router.route(failure.value.toResponse(stanza))
            else:
                self.router.bounce(stanza, failure.value.condition, failure.value.text)
            return
        log.err(failure, "groupchat failed")
        self.router.bounce(stanza, "internal-server-error")

    async def _dispatch(self, stanza, to):
        if stanza.name == "iq":
            return await self._on_iq(stanza, to)
        if to.user is None:
            if stanza.name == "message" and stanza.getAttribute("type") != "error":
                raise StanzaError("service-unavailable")
            return
        if stanza.name == "presence":
            return await self.occupants.on_presence(stanza, to.user, to.resource)
        return await self.messages.on_message(stanza, to.user, to.resource)

    async def _on_iq(self, iq, to):
        if next(iq.elements(selfping.NS_PING, "ping"), None) is not None:
            return self.send(await selfping.answer(self.rooms, iq, to))
        if to.user is None or to.resource is not None:
            raise StanzaError("service-unavailable")
        room = await self.rooms.room(to.user)
        if room is None:
            raise StanzaError("item-not-found", text="no such room")
        part = self.owner if iq.query.uri == NS_OWNER else self.admin
        self.send(await part.on_iq(iq, room))

    # The rest of the server --------------------------------------------------------

    async def clear_stale(self) -> None:
        """At start-up nobody is in any room: drop occupancies a crash left."""
        rooms = self.rooms
        for node_id in await rooms.storage.list_nodes(rooms.domain):
            room = await rooms.room(node_id)
            if room is None:
                continue
            for subscription in await rooms.storage.get_subscriptions(rooms.domain, node_id):
                if subscription.options.get(NICK):
                    await rooms.engine.unsubscribe(rooms.trusted, rooms.domain, node_id, subscription.subscriber)
            if not room.flag("persistentroom"):
                await rooms.engine.delete_node(rooms.trusted, rooms.domain, node_id)

    # Discovery -----------------------------------------------------------------------

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        return defer.ensureDeferred(discovery.info(self.rooms, target, nodeIdentifier))

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return defer.ensureDeferred(discovery.items(self.rooms, target, nodeIdentifier))
