"""Native occupants (XEP-0207 §5): a pubsub client joins a room by subscribing
to its node with a ``roomnick``, and leaves (or is kicked) by the subscription
ending. Legacy occupants see such arrivals and departures as XEP-0045
presences under that nick; changes the XEP-0045 side made announce
themselves and are not told twice.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from twisted.internet import defer
from twisted.python import log

from xep207.legacy.groupchat.occupants import THIS_IS_YOU, Occupants
from xep207.legacy.groupchat.rooms import Rooms
from xep207.pubsub.kinds.room import NICK, Occupant, nick_of
from xep207.storage.records import NONE, OUTCAST, SUBSCRIBED, VIA_PUBSUB, bare
from xep207.xmlutil import parse_stanza


class NativeBridge:
    def __init__(self, rooms: Rooms, occupants: Occupants):
        self.rooms = rooms
        self.occupants = occupants
        self.track = lambda d: d  # the service's in-flight work (a shutdown waits for it)

    def on_subscription_change(self, change) -> None:
        """Every subscription change the engine makes: native joins, and
        departures the XEP-0045 side did not make (a kick through XEP-0060
        included), are announced."""
        subscription = change.subscription
        # A native occupant may subscribe its full JID (as XEP-0207 §5 shows) or
        # its bare JID (then all its resources follow the room).
        if subscription.service != self.rooms.domain:
            return
        key = (subscription.node_id, subscription.subscriber)
        if subscription.state == NONE and key in self.rooms.leaving:
            return  # the XEP-0045 side is announcing this departure itself
        if change.options_changed and key in self.rooms.renaming:
            return  # likewise a nick change
        if subscription.via != VIA_PUBSUB and subscription.state != NONE \
                and not change.options_changed:
            return  # XEP-0045 joins announce themselves, in XEP-0045's order
        d = self.track(defer.ensureDeferred(self._announce(change)))
        d.addErrback(log.err, "native room subscription follow-up failed")

    async def _announce(self, change) -> None:
        rooms = self.rooms
        subscription = change.subscription
        room = await rooms.room(subscription.node_id)
        if room is None:
            return
        key = (room.node.node_id, subscription.subscriber)
        nick = subscription.options.get(NICK)
        if change.options_changed and subscription.state == SUBSCRIBED and nick \
                and key in rooms.nicks and rooms.nicks[key] != nick:
            await self._renamed(room, subscription, rooms.nicks[key], nick)
        elif subscription.state == SUBSCRIBED and nick and key not in rooms.nicks:
            occupants = await rooms.occupants(room)  # the room kind admitted the nick
            rooms.nicks[key] = nick
            occupant = next(o for o in occupants if o.jid == subscription.subscriber)
            others = [o for o in occupants if o.jid != occupant.jid]
            self.occupants.send(self.occupants.presence(room, occupant), others)
        elif subscription.state == NONE and key in rooms.nicks:
            # Left, or removed through XEP-0060 by a moderator (a kick: 307).
            occupant = Occupant(subscription.subscriber, rooms.nicks[key], NONE, "none", subscription)
            rooms.forget(room, occupant.jid)
            kicked = await self._why_removed(room, change)
            gone = self.occupants.presence(room, occupant, type="unavailable", children="", statuses=kicked)
            remaining = await rooms.occupants(room)
            self.occupants.send(gone, remaining)
            if not remaining and not room.flag("persistentroom"):
                await rooms.end(room)
            if subscription.via != VIA_PUBSUB:
                self.occupants.send(self.occupants.presence(room, occupant, type="unavailable", children="",
                                                            statuses=kicked + THIS_IS_YOU), [occupant])

    def on_published(self, node, item, requestor) -> defer.Deferred | None:
        """A subject change published through XEP-0060 becomes the room's
        subject, which newcomers are sent (§7.2.16), as one sent through
        XEP-0045 does (that door records it before publishing: nothing to do then).
        On every publish: a substring test, no storage read, unless a subject."""
        if node.service != self.rooms.domain or "<subject" not in item.payload:
            return None
        d = defer.ensureDeferred(self._record_subject(node.node_id, item))
        return d.addErrback(log.err, "recording a native subject change failed")

    async def _record_subject(self, name: str, item) -> None:
        subject = next((c for c in parse_stanza(item.payload).elements() if c.name == "subject"), None)
        room = await self.rooms.room(name)
        if subject is None or room is None:
            return
        nick = nick_of(item.payload)
        sender = self.rooms.jid(room, nick)
        extra = room.node.config.extra
        if (extra.get("subject"), extra.get("subject_from")) != (str(subject), sender):
            await self.rooms.configure(room, subject=str(subject), subject_from=sender)

    async def _why_removed(self, room, change) -> tuple[int, ...]:
        """XEP-0045 status codes for a departure someone else caused."""
        subscriber = change.subscription.subscriber
        if bare(change.actor) == bare(subscriber):
            return ()
        affiliation = await self.rooms.affiliation(room, subscriber)
        if affiliation == OUTCAST:
            return (301,)  # banned
        if affiliation == NONE and room.flag("membersonly"):
            return (321,)  # no longer a member
        return (307,)  # kicked

    async def _renamed(self, room, subscription, old: str, new: str) -> None:
        """A nick changed through XEP-0060 (§7.6's 303, then the new nick)."""
        rooms = self.rooms
        occupants = await rooms.occupants(room)
        renamed = next((o for o in occupants if o.jid == subscription.subscriber), None)
        if renamed is None:
            return
        rooms.nicks[(room.node.node_id, subscription.subscriber)] = new
        before = Occupant(renamed.jid, old, renamed.affiliation, renamed.role, renamed.subscription)
        new_nick = f" nick={quoteattr(new)}"
        if subscription.via == VIA_PUBSUB:  # a native occupant reads no presences itself
            others = [o for o in occupants if o.jid != renamed.jid]
            gone = self.occupants.presence(room, before, type="unavailable", children="",
                                           statuses=(303,), item_extra=new_nick)
            self.occupants.send(gone, others)
            self.occupants.send(self.occupants.presence(room, renamed), others)
        else:
            self.occupants.announce(room, occupants, before, type="unavailable", children="",
                                    statuses=(303,), item_extra=new_nick)
            self.occupants.announce(room, occupants, renamed)
