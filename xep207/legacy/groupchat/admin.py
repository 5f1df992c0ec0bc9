"""muc#admin (XEP-0045 §8–9): affiliation and role lists, bans and
memberships, kicks, voice and moderator grants.

Each change goes through the engine as the requesting occupant, so the room
kind decides who may do what, as it does for the same change made through
XEP-0060; this module announces the outcome in XEP-0045's presences.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xep207.legacy.groupchat.occupants import Occupants
from xep207.legacy.groupchat.rooms import NS_ADMIN, NS_USER, Rooms
from xep207.legacy.render import Template
from xep207.pubsub.kinds.room import (
    ADMIN,
    ROLE,
    Occupant,
    Room,
    may_read_affiliations,
    muc_affiliation,
    pubsub_affiliation,
)
from xep207.storage.records import MEMBER, NONE, OUTCAST, OWNER, bare


class Admin:
    def __init__(self, rooms: Rooms, occupants: Occupants):
        self.rooms = rooms
        self.occupants = occupants

    async def on_iq(self, iq: domish.Element, room: Room) -> domish.Element:
        sender = bare(iq["from"])
        affiliations = await self.rooms.storage.get_affiliations(self.rooms.domain, room.node.node_id)
        mine = muc_affiliation(affiliations.get(sender, NONE), sender, room.admins)
        items = list(iq.query.elements(NS_ADMIN, "item"))
        listing = iq["type"] == "get" and bool(items) and items[0].getAttribute("role") is None \
            and items[0].getAttribute("affiliation") is not None
        if listing and may_read_affiliations(room, mine):
            pass  # the room kind's rule, the same as for an XEP-0060 affiliations get
        elif mine not in (OWNER, ADMIN) and not (iq["type"] == "set" and await self._is_moderator(room, iq["from"])):
            raise StanzaError("forbidden", text="only admins and moderators")
        if iq["type"] == "get":
            response = xmlstream.toResponse(iq, "result")
            await self._list(room, items, affiliations, response.addElement((NS_ADMIN, "query")))
            return response
        for item in items:
            if item.getAttribute("affiliation") is not None:
                await self._set_affiliation(room, item, mine, iq["from"])
            elif item.getAttribute("role") is not None:
                await self._set_role(room, item, iq["from"])
            else:
                raise StanzaError("bad-request", text="an item sets an affiliation or a role")
        return xmlstream.toResponse(iq, "result")

    async def _is_moderator(self, room: Room, jid: str) -> bool:
        return any(o.jid == jid and o.role == "moderator" for o in await self.rooms.occupants(room))

    async def _list(self, room: Room, items, affiliations, answer: domish.Element) -> None:
        """The occupants with a role (§8.5), or the entities with an affiliation (§9.5)."""
        wanted = items[0].getAttribute("affiliation") if items else None
        role = items[0].getAttribute("role") if items else None
        if role:
            for occupant in await self.rooms.occupants(room):
                if occupant.role == role:
                    item = answer.addElement("item")
                    item["nick"], item["role"], item["jid"] = occupant.nick, occupant.role, occupant.jid
                    item["affiliation"] = occupant.affiliation
            return
        for entity, affiliation in sorted(affiliations.items()):
            muc = muc_affiliation(affiliation, entity, room.admins)
            if entity != self.rooms.domain and (wanted is None or muc == wanted):
                item = answer.addElement("item")
                item["jid"], item["affiliation"] = entity, muc

    async def _set_affiliation(self, room: Room, item: domish.Element, mine: str, actor: str) -> None:
        """The room kind decides who may change which affiliation (XEP-0045
        §9–10), as it does for an XEP-0060 affiliations set."""
        rooms = self.rooms
        affiliation = item["affiliation"]
        if affiliation not in (OWNER, ADMIN, MEMBER, NONE, OUTCAST):
            raise StanzaError("bad-request", text="unknown affiliation")
        occupants = await rooms.occupants(room)
        if item.getAttribute("jid") is None and item.getAttribute("nick"):
            # An affiliation is a bare JID's (§9.3): a nick names an occupant's.
            named = next((o for o in occupants if o.nick == item["nick"]), None)
            if named is None:
                raise StanzaError("item-not-found", text="no occupant by that nickname")
            entity = bare(named.jid)
        else:
            try:
                entity = jidlib.JID(item.getAttribute("jid", "")).userhost()
            except jidlib.InvalidFormat:
                raise StanzaError("jid-malformed")
        if affiliation == ADMIN and mine != OWNER:
            raise StanzaError("forbidden", text="only owners grant admin status")
        leaving = {(room.node.node_id, o.jid) for o in occupants if bare(o.jid) == entity}
        rooms.leaving |= leaving  # a ban ends their subscriptions; announced below with 301
        try:
            await rooms.engine.set_node_affiliations(actor, rooms.domain, room.node.node_id,
                                                     {entity: pubsub_affiliation(affiliation)})
        finally:
            rooms.leaving -= leaving
        admins = [a for a in room["roomadmins"] if a != entity]
        if affiliation == ADMIN:
            admins.append(entity)
        if admins != list(room["roomadmins"]):
            await rooms.configure(room, muc={**room.settings, "muc#roomconfig_roomadmins": admins})
        reloaded = await rooms.room(room.node.node_id)
        assert reloaded is not None, "configured just now"
        room = reloaded
        if not any(bare(o.jid) == entity for o in occupants):
            self._tell_absent(room, occupants, entity, affiliation)
        for occupant in occupants:
            if bare(occupant.jid) != entity:
                continue
            if affiliation == OUTCAST:  # the engine ended the subscription
                await self.occupants.announce_leave(room, occupants, occupant, statuses=(301,))
            elif affiliation == NONE and room.flag("membersonly"):
                await self.occupants.leave(room, occupant.jid, statuses=(321,))
            else:
                updated = next((o for o in await rooms.occupants(room) if o.jid == occupant.jid), occupant)
                await self._announce(room, updated)
                await self._reveal(room, occupant, updated)

    def _tell_absent(self, room: Room, occupants: list[Occupant], entity: str, affiliation: str) -> None:
        """The affiliation of someone not in the room changed (XEP-0045 §9.3–9.4):
        the occupants who may see JIDs learn of it from the room (as Prosody
        tells them, and as Conversations keeps a private group's member list),
        and the user is told out of band (status 101)."""
        rooms = self.rooms
        item = f"<item affiliation={quoteattr(affiliation)} jid={quoteattr(entity)}/>"
        told = Template.around(f"<message from={quoteattr(rooms.jid(room))}><x xmlns='{NS_USER}'>{item}</x></message>",
                               "message")
        for occupant in occupants:
            if room.shows_jids_to(occupant.role):
                rooms.router.deliver_serialized(occupant.jid, told.to(occupant.jid))
        stanza = domish.Element((None, "message"))
        stanza["from"], stanza["to"] = rooms.jid(room), entity
        stanza.addRawXml(f"<x xmlns='{NS_USER}'>{item}<status code='101'/></x>")
        rooms.router.route(stanza)

    async def _set_role(self, room: Room, item: domish.Element, actor: str) -> None:
        """A kick or a role change, checked by the room kind like any
        subscription change."""
        role = item["role"]
        nick = item.getAttribute("nick")
        occupant = next((o for o in await self.rooms.occupants(room) if o.nick == nick), None)
        if occupant is None:
            raise StanzaError("item-not-found", text="no occupant by that nickname")
        if role == "none":
            await self.occupants.leave(room, occupant.jid, statuses=(307,), actor=actor)  # kicked
            return
        subscription = await self.rooms.engine.set_subscription_options(
            actor, self.rooms.domain, room.node.node_id, occupant.jid, {ROLE: role})
        changed = Occupant(occupant.jid, occupant.nick, occupant.affiliation, role, subscription)
        await self._announce(room, changed)
        await self._reveal(room, occupant, changed)

    async def _reveal(self, room: Room, before: Occupant, after: Occupant) -> None:
        """A new (or former) moderator of a semi-anonymous room is sent the
        others' presences again, with (or without) their real JIDs, as Prosody does."""
        if room.shows_jids_to(before.role) == room.shows_jids_to(after.role):
            return
        for other in await self.rooms.occupants(room):
            if other.jid != after.jid:
                self.occupants.send(self.occupants.presence(room, other), [after])

    async def _announce(self, room: Room, changed: Occupant) -> None:
        """A changed affiliation or role, told to every occupant alike (the one it concerns too)."""
        occupants = await self.rooms.occupants(room)
        self.occupants.send(self.occupants.presence(room, changed), occupants)
