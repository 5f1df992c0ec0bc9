"""What the parts of the groupchat service share: room lookups, and the little
XEP-0045 needs that the room nodes do not keep.

The rules are the room kind's (``xep207.pubsub.kinds.room``) and occupancy is
the engine's subscriptions. Kept here, in memory, is only what legacy
rendering needs besides: the presence each occupant last sent, the nick it
was announced under, and departures the XEP-0045 side is announcing itself.
"""

from __future__ import annotations

from typing import Any, Mapping

from xep207.pubsub import errors
from xep207.pubsub.kinds import Trusted
from xep207.pubsub.kinds.room import (
    KIND_FIELD,
    MucAffiliation,
    Occupant,
    Room,
    muc_affiliation,
    occupants_of,
)
from xep207.storage.records import NONE, bare

NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_OWNER = NS_MUC + "#owner"

Key = tuple[str, str]  # (room, occupant's full JID)


class Rooms:
    def __init__(self, router, engine, domain: str):
        self.router = router
        self.engine = engine
        self.storage = engine.storage
        self.domain = domain
        self.trusted = Trusted(domain)  # the service's own bookkeeping
        self.presences: dict[Key, str] = {}  # the presence children an occupant last sent
        self.nicks: dict[Key, str] = {}  # the nick an occupant was announced under
        self.leaving: set[Key] = set()  # departures the XEP-0045 side announces itself
        self.renaming: set[Key] = set()  # nick changes the XEP-0045 side announces itself

    async def room(self, name: str) -> Room | None:
        node = await self.storage.get_node(self.domain, name)
        if node is None or node.config.extra.get(KIND_FIELD) != "room":
            return None
        return Room(node)

    def jid(self, room: Room, nick: str | None = None) -> str:
        jid = f"{room.node.node_id}@{self.domain}"
        return f"{jid}/{nick}" if nick else jid

    async def occupants(self, room: Room) -> list[Occupant]:
        return await occupants_of(self.engine, room)

    async def affiliation(self, room: Room, jid: str) -> MucAffiliation:
        """``jid``'s XEP-0045 affiliation with the room."""
        affiliations = await self.storage.get_affiliations(self.domain, room.node.node_id)
        return muc_affiliation(affiliations.get(bare(jid), NONE), bare(jid), room.admins)

    def forget(self, room: Room, jid: str) -> None:
        self.presences.pop((room.node.node_id, jid), None)
        self.nicks.pop((room.node.node_id, jid), None)

    async def configure(self, room: Room, values: Mapping[str, Any] | None = None, **extra: Any) -> None:
        """Change the room node as the service; XEP-0045's own state lives in ``extra``."""
        await self.engine.configure_node(self.trusted, self.domain, room.node.node_id, values or {},
                                         extra={**room.node.config.extra, **extra})

    async def end(self, room: Room) -> None:
        """A temporary room ends with its last occupant, through the engine (native subscribers are told)."""
        try:
            await self.engine.delete_node(self.trusted, self.domain, room.node.node_id)
        except errors.StanzaError:
            pass  # the last two occupants left at once: the other departure ended it
