"""A room's XEP-0045 rendering state survives its home moving.

Every stanza for a room is handled by its home process (``routing``), which
keeps, in memory, what the room nodes do not (``xep207.legacy.groupchat.rooms``):
the presence children each occupant last sent (``<show/>``, ``<status/>``, caps)
and the nick each was announced under. When the home dies, or a process
joins and the rendezvous hash moves a room, the new home would start with
neither: a newcomer would see every occupant without its show and status, and
a native (XEP-0060) departure of an occupant it never saw join would go
unannounced.

So, in a cluster:

- the occupants' presence children are written through to Redis, one hash
  per room (``xep207:D:room:ROOM``, field = the occupant's full JID), by
  whichever process changes them (the home, or a process ending a session);
- the first stanza a process handles for a room since the set of live
  processes last changed loads that hash back (only for current occupants,
  read from the room's subscriptions in PostgreSQL) and the nicks from the
  occupants' ``roomnick`` subscription options, before the stanza is handled.

Everything else a room needs is durable already: occupancy and nicks
(subscriptions), affiliations, the subject and the locked/unconfigured flags
(the node's configuration), the history (items). Redis losing these hashes
loses show and status until each occupant's next presence, nothing more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.python import log

from xep207.cluster.link import ClusterUnavailable
from xep207.cluster.registry import pairs
from xep207.pubsub.kinds.room import NICK
from xep207.storage.records import SUBSCRIBED

if TYPE_CHECKING:
    from xep207.cluster.node import Cluster

MAX_LOADED = 65536  # room names remembered as loaded
MAX_CHILDREN = 16384  # bytes of presence children kept per occupant (a presence is bounded by the stream anyway)


class _WrittenThrough(dict):
    """``Rooms.presences``: (room, occupant) → presence children, each change
    also written to the room's Redis hash (not awaited: the room goes on; a
    failed write costs a show/status after a takeover, logged)."""

    def __init__(self, state: "RoomState", *args):
        super().__init__(*args)
        self.state = state

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        room, jid = key
        if len(value) <= MAX_CHILDREN:
            self.state.write("HSET", room, jid, value)

    def pop(self, key, *default):
        room, jid = key
        self.state.write("HDEL", room, jid)
        return super().pop(key, *default)


class RoomState:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self.rooms = cluster.server.groupchat.rooms
        self.rooms.presences = _WrittenThrough(self, self.rooms.presences)
        self.loaded: set[str] = set()  # rooms whose state this process has, since…
        self._live: frozenset[str] = frozenset()  # … the live processes were these
        self._loading: dict[str, defer.Deferred] = {}

    def key(self, room: str) -> str:
        return f"{self.cluster.keys.prefix}room:{room}"

    def write(self, command: str, room: str, *args) -> None:
        if not self.cluster.link.up:
            return
        d = self.cluster.command(command, self.key(room), *args)
        d.addErrback(lambda f: f.trap(ClusterUnavailable))
        d.addErrback(log.err, f"cluster: keeping the occupant presences of {room}")

    def before_handling(self, room: str) -> defer.Deferred | None:
        """Called for every stanza this process handles for ``room`` (as its
        home): None when the room's state is here, else a Deferred that fires
        once it is (stanzas arriving meanwhile wait for the same load, in order)."""
        live = frozenset(self.cluster.live)
        if live != self._live or len(self.loaded) >= MAX_LOADED:
            # Homes may have moved: what we hold may be stale, or missing. (Or
            # stanzas named very many rooms: loading again costs a read, no more.)
            self._live = live
            self.loaded.clear()
        if room in self.loaded:
            return None
        loading = self._loading.get(room)
        if loading is None:
            loading = self._loading[room] = self.cluster.work.track(defer.ensureDeferred(self._load(room)))
            loading.addErrback(lambda f: f.trap(ClusterUnavailable))
            loading.addErrback(log.err, f"cluster: loading the state of room {room}")
            loading.addBoth(self._loaded, room)
        waiter: defer.Deferred = defer.Deferred()

        def release(result):
            waiter.callback(None)
            return result

        loading.addBoth(release)
        return waiter

    def _loaded(self, result, room: str):
        self._loading.pop(room, None)
        self.loaded.add(room)
        return result

    async def _load(self, room: str) -> None:
        """Redis has the latest presence children (every change is written
        there); the subscriptions say who is in the room and under which nick."""
        rooms = self.rooms
        subscriptions = await rooms.storage.get_subscriptions(rooms.domain, room)
        occupants = {s.subscriber: str(s.options[NICK]) for s in subscriptions
                     if s.state == SUBSCRIBED and s.options.get(NICK)}
        stored = pairs(await self.cluster.command("HGETALL", self.key(room)) or [])
        self.cluster.stats["rooms-loaded"] += 1
        for key in [k for k in rooms.nicks if k[0] == room and k[1] not in occupants]:
            del rooms.nicks[key]  # left while the room was homed elsewhere
        for key in [k for k in rooms.presences if k[0] == room and k[1] not in occupants]:
            dict.__delitem__(rooms.presences, key)
        for jid, nick in occupants.items():
            rooms.nicks[(room, jid)] = nick
            if jid in stored:
                dict.__setitem__(rooms.presences, (room, jid), stored[jid])  # (already in Redis)
        gone = [jid for jid in stored if jid not in occupants]
        if gone:
            self.write("HDEL", room, *gone)
