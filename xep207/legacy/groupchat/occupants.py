"""The presence side of XEP-0045 (§7.2–7.14): joining, changing nick or
presence, leaving, and the occupant presences everyone is sent about it.

Joining is subscribing with a ``roomnick`` and leaving is unsubscribing: the
room kind admits or refuses exactly as it does an XEP-0060 request; what is
left here is XEP-0045's announcements, in XEP-0045's order.
"""

from __future__ import annotations

from typing import Callable, Iterable
from xml.sax.saxutils import escape, quoteattr

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xep207.legacy.groupchat.messages import Messages
from xep207.legacy.groupchat.rooms import NS_MUC, NS_USER, Rooms
from xep207.legacy.render import Template
from xep207.pubsub import errors
from xep207.pubsub.kinds import Trusted
from xep207.pubsub.kinds.account import check_presence_values
from xep207.pubsub.kinds.room import NICK, PASSWORD_OPTION, Occupant, Room, role_of
from xep207.storage.records import NONE, VIA_LEGACY, bare

THIS_IS_YOU = (110,)


class RoomPresence:
    """One occupant's presence, with its real JID and without: a
    semi-anonymous room shows the JID to moderators only (§7.2.4), and to
    the occupant itself. Each form is serialized once, when first needed."""

    def __init__(self, room: Room, about: str, sender: str, build: Callable[[bool], Template]):
        self.room = room
        self.about = about  # the bare JID it is about
        self.sender = sender  # the occupant JID it is from
        self._build = build
        self._built: dict[bool, Template] = {}

    def for_recipient(self, recipient: Occupant) -> Template:
        shown = self.room.shows_jids_to(recipient.role) or bare(recipient.jid) == self.about
        if shown not in self._built:
            self._built[shown] = self._build(shown)
        return self._built[shown]


class Occupants:
    def __init__(self, rooms: Rooms, messages: Messages):
        self.rooms = rooms
        self.messages = messages

    # What occupants are told about each other ---------------------------------------

    def presence(self, room: Room, occupant: Occupant, *, type: str | None = None, statuses: tuple[int, ...] = (),
                 children: str | None = None, item_extra: str = "") -> "RoomPresence":
        """``occupant``'s presence as the room sends it (§7.2.3): what it last
        sent (``children``), its affiliation and role, the status codes."""
        if children is None:
            children = self.rooms.presences.get((room.node.node_id, occupant.jid), "")
        codes = "".join(f"<status code='{code}'/>" for code in statuses)
        sender = self.rooms.jid(room, occupant.nick)

        def serialized(with_jid: bool) -> Template:
            jid = f" jid={quoteattr(occupant.jid)}" if with_jid else ""
            item = (f"<item affiliation={quoteattr(occupant.affiliation)} role={quoteattr(occupant.role)}"
                    f"{jid}{item_extra}/>")
            return Template.presence(sender, type, f"{children}<x xmlns='{NS_USER}'>{item}{codes}</x>")

        return RoomPresence(room, bare(occupant.jid), sender, serialized)

    def send(self, presence: "RoomPresence", recipients: Iterable[Occupant]) -> None:
        blocks = self.rooms.engine.blocks
        for recipient in recipients:
            if blocks and bare(recipient.jid) != presence.about \
                    and blocks.blocks(bare(recipient.jid), presence.sender):
                continue  # XEP-0191 §3.6: the recipient blocked that occupant
            template = presence.for_recipient(recipient)
            self.rooms.router.deliver_serialized(recipient.jid, template.to(recipient.jid), "presence")

    def announce(self, room: Room, occupants: Iterable[Occupant], occupant: Occupant, *,
                 statuses: tuple[int, ...] = (), own: tuple[int, ...] = THIS_IS_YOU, **details) -> None:
        """``occupant``'s presence to the others, then to itself with the
        ``own`` status codes added (110: this is you)."""
        self.send(self.presence(room, occupant, statuses=statuses, **details),
                  [o for o in occupants if o.jid != occupant.jid])
        self.send(self.presence(room, occupant, statuses=(*statuses, *own), **details), [occupant])

    # Presence to room@service/nick -------------------------------------------------

    async def on_presence(self, stanza: domish.Element, name: str, nick: str | None) -> None:
        """A presence to room ``name`` as ``nick``: a join, a change or a departure."""
        sender = stanza["from"]
        kind = stanza.getAttribute("type")
        room = await self.rooms.room(name)
        if kind in ("error", "unavailable"):
            if room is not None:
                if kind == "error":
                    await self.leave(room, sender, statuses=(333,))  # its client failed: 333
                else:
                    status = "".join(str(s) for s in stanza.elements() if s.name == "status")
                    await self.leave(room, sender, status_text=status)
            return
        if kind is not None:
            return  # subscriptions to rooms mean nothing
        if nick is None:
            raise StanzaError("jid-malformed", text="join as room@service/nick")
        # RFC 6121 §4.7.2, as the presence kind asks it of a contact's presence:
        # the room sends these to every occupant (only this door carries them).
        check_presence_values(stanza)
        current = None
        if room is not None:
            current = next((o for o in await self.rooms.occupants(room) if o.jid == sender), None)
        children = "".join(c.toXml() for c in stanza.elements()
                           if c.uri != NS_MUC and c.name in ("show", "status", "priority", "c")
                           or c.uri not in (NS_MUC, NS_USER, "jabber:client", None))
        if room is None or current is None:
            await self.join(room, name, nick, sender, stanza, children)
        elif current.nick != nick:
            await self.change_nick(room, current, nick, children)
        else:
            self.rooms.presences[(room.node.node_id, sender)] = children
            self.announce(room, await self.rooms.occupants(room), current)

    async def join(self, room: Room | None, name: str, nick: str, sender: str, stanza: domish.Element,
                   children: str) -> None:
        """Joining is subscribing with a ``roomnick``: the room kind admits
        (or refuses) exactly as it does an XEP-0060 subscribe."""
        rooms = self.rooms
        created = room is None
        muc = next(stanza.elements(NS_MUC, "x"), None)
        options = {NICK: nick}
        given = next(muc.elements(NS_MUC, "password"), None) if muc is not None else None
        if given is not None:
            options[PASSWORD_OPTION] = str(given)
        subscription = await rooms.engine.subscribe(sender, rooms.domain, name, sender, options, via=VIA_LEGACY)
        room = await rooms.room(name)
        assert room is not None, "the subscription has just made or found it"
        if created and muc is None:
            # A groupchat 1.0 join (no MUC <x/>) knows nothing of status 201:
            # its room opens at once, as Prosody's does.
            await rooms.configure(room, locked=False)
        occupants = [o for o in await rooms.occupants(room) if o.jid != sender]
        affiliation = await rooms.affiliation(room, sender)
        rooms.presences[(name, sender)] = children
        rooms.nicks[(name, sender)] = nick
        occupant = Occupant(sender, nick, affiliation, role_of(room, affiliation, subscription), subscription)
        # 1. the occupant list to the joiner, 2. its presence to the others and last to itself.
        for other in occupants:
            self.send(self.presence(room, other), [occupant])
        own = (110, 100) if room.non_anonymous else (110,)  # §7.2.3: 100 warns that everyone sees the JID
        self.announce(room, occupants, occupant, own=(*own, 201) if created else own)
        # 3. history, 4. the subject.
        await self.messages.welcome(room, sender, muc)

    async def change_nick(self, room: Room, occupant: Occupant, nick: str, children: str) -> None:
        rooms = self.rooms
        occupants = await rooms.occupants(room)
        key = (room.node.node_id, occupant.jid)
        rooms.renaming.add(key)
        try:
            subscription = await rooms.engine.set_subscription_options(
                occupant.jid, rooms.domain, room.node.node_id, occupant.jid, {NICK: nick})
        finally:
            rooms.renaming.discard(key)
        self.announce(room, occupants, occupant, type="unavailable", children="", statuses=(303,),
                      item_extra=f" nick={quoteattr(nick)}")
        rooms.presences[(room.node.node_id, occupant.jid)] = children
        rooms.nicks[(room.node.node_id, occupant.jid)] = nick
        renamed = Occupant(occupant.jid, nick, occupant.affiliation, occupant.role, subscription)
        self.announce(room, await rooms.occupants(room), renamed)

    # Leaving -------------------------------------------------------------------------

    async def leave(self, room: Room, jid: str, *, statuses: tuple[int, ...] = (), status_text: str = "",
                    actor: str | None = None) -> None:
        """``actor``: a moderator removing someone (a kick), checked by the room kind."""
        rooms = self.rooms
        occupants = await rooms.occupants(room)
        occupant = next((o for o in occupants if o.jid == jid), None)
        if occupant is None:
            return
        key = (room.node.node_id, jid)
        rooms.leaving.add(key)
        try:
            if actor is None:
                await rooms.engine.unsubscribe(Trusted(jid), rooms.domain, room.node.node_id, jid)
            else:
                failed = await rooms.engine.set_node_subscriptions(actor, rooms.domain, room.node.node_id,
                                                                   [(jid, NONE)])
                if failed:
                    raise StanzaError("not-allowed", text="moderators cannot remove an admin")
        except errors.StanzaError as exc:
            if exc.condition in ("unexpected-request", "item-not-found"):
                # Left meanwhile (a dropped session racing its own leave), or the room
                # ended with its last occupant (on the room's home, in a cluster): told already.
                return
            raise
        finally:
            rooms.leaving.discard(key)
        await self.announce_leave(room, occupants, occupant, statuses=statuses, status_text=status_text)

    async def announce_leave(self, room: Room, occupants: list[Occupant], occupant: Occupant, *,
                             statuses: tuple[int, ...] = (), status_text: str = "") -> None:
        """``occupants``: those in the room before ``occupant`` left."""
        self.rooms.forget(room, occupant.jid)
        children = f"<status>{escape(status_text)}</status>" if status_text else ""
        # §7.14: an unavailable presence says role 'none': no longer an occupant.
        gone = Occupant(occupant.jid, occupant.nick, occupant.affiliation, "none", occupant.subscription)
        same_nick = [o for o in occupants if o.nick == occupant.nick and o.jid != occupant.jid]
        if same_nick and not statuses:
            # §7.2.8: another session still holds the nick, so the occupant is
            # still there; only the leaving session hears it left.
            self.send(self.presence(room, gone, type="unavailable", children=children,
                                    statuses=THIS_IS_YOU), [occupant])
            return
        self.announce(room, occupants, gone, type="unavailable", children=children, statuses=statuses)
        if len(occupants) == 1 and not room.flag("persistentroom"):
            await self.rooms.end(room)

    def session_gone(self, session) -> defer.Deferred:
        """A session that ends leaves every room it is in; the last one of an
        account also ends the account's bare-JID (native) occupancies, whose
        resources have all gone (an occupant is a connected session)."""
        rooms = self.rooms
        gone = {session.full} if rooms.router.resources(session.bare) else {session.full, session.bare}

        def occupancies(subscriptions) -> defer.Deferred | None:
            held = [s for s in subscriptions if s.subscriber in gone and s.options.get(NICK)]
            if not held:
                return None  # (nearly every session: in no room, no coroutine)
            return defer.ensureDeferred(leave_all(held))

        async def leave_all(held):
            for subscription in held:
                room = await rooms.room(subscription.node_id)
                if room is not None:
                    await self.leave(room, subscription.subscriber)

        d = rooms.storage.get_entity_subscriptions(session.bare, rooms.domain).addCallback(occupancies)
        return d.addErrback(log.err, f"leaving rooms for {session.full} failed")
