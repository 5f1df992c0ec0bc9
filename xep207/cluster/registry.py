"""The session registry: which process holds which full JID, kept in Redis.

Per process (a *node* of the cluster, by ``--node-name``):

- ``P:sessions:NODE`` — a hash, full JID → ``SessionInfo`` (availability,
  priority, ``+notify`` interests, whether it asked for the roster, its
  last presence). Written on bind, unbind and every presence change, and
  re-written whole after every reconnection to Redis.
- ``P:owners`` — a hash, full JID → the node that bound it last: of two
  processes binding one full JID at once, exactly one finds the other there.
- ``P:hb`` — a sorted set, node → the Redis server's clock (ms) at its last
  heartbeat (every ``timeout / 3``). One clock, Redis's, so machines'
  clocks may disagree.

Every change is published on ``P:all`` in the same Lua script that makes it,
so each process keeps a *mirror* of the others' sessions and answers routing
questions (RFC 6121 §8 needs every resource's priority) without a round trip.

A node whose heartbeat is older than ``timeout`` is dead. The first process
to notice claims it (``SET P:claim:NODE NX`` in the same script that
re-checks the heartbeat), and only the claimer ends the dead node's
sessions — through the engine, as if each had disconnected, so contacts
and rooms are told exactly once — then drops the node and leaves a
tombstone (``P:reaped:NODE``) that a merely cut-off process finds when it
reconnects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from twisted.words.protocols.jabber import jid as jidlib

HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
local limit = now - tonumber(ARGV[2])
return {redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. limit),
        redis.call('ZRANGEBYSCORE', KEYS[1], limit, '+inf')}
"""

CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[5] == '1' then
  local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if seen and tonumber(seen) >= now - tonumber(ARGV[3]) then return false end
end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[4]) then return false end
local sessions = redis.call('HGETALL', KEYS[3])
table.insert(sessions, 1, 'claimed')
return sessions
"""

RELEASE = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
for _, full in ipairs(redis.call('HKEYS', KEYS[3])) do
  if redis.call('HGET', KEYS[6], full) == ARGV[1] then redis.call('HDEL', KEYS[6], full) end
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if ARGV[3] == '1' then redis.call('SET', KEYS[4], '1', 'EX', 86400) end
redis.call('PUBLISH', KEYS[5], ARGV[4])
return 1
"""

# ARGV: full JID, info ('' = unbound), the message for P:all, this node, '1' for a bind.
# A bind takes the full JID in P:owners and answers the node that held it
# before (to be told ``conflict``): Redis runs one script at a time, so of two
# processes binding one full JID at once exactly one finds the other. An
# update of a session another node has taken since changes nothing.
SET_SESSION = """
local previous = redis.call('HGET', KEYS[3], ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if previous == ARGV[4] then redis.call('HDEL', KEYS[3], ARGV[1]) end
  previous = false
else
  if ARGV[5] ~= '1' and previous and previous ~= ARGV[4] then return false end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
  if previous == ARGV[4] then previous = false end
end
redis.call('PUBLISH', KEYS[2], ARGV[3])
return previous
"""

# ARGV: this node, then full JID, info pairs. A session whose full JID
# another node took meanwhile (bound there while this one was cut off) is not
# registered, nor announced: its name comes back, to be closed.
SYNC = """
for _, full in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('HGET', KEYS[3], full) == ARGV[1] then redis.call('HDEL', KEYS[3], full) end
end
redis.call('DEL', KEYS[1])
local taken = {}
local kept = {}
for i = 2, #ARGV, 2 do
  local owner = redis.call('HGET', KEYS[3], ARGV[i])
  if owner and owner ~= ARGV[1] then table.insert(taken, ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[1])
    kept[ARGV[i]] = ARGV[i + 1]
  end
end
local message = {t = 'sync', n = ARGV[1], s = kept}
redis.call('PUBLISH', KEYS[2], cjson.encode(message))
return taken
"""


@dataclass(frozen=True)
class SessionInfo:
    """What the other processes need to route to a session (RFC 6121 §8,
    XEP-0163 ``+notify``, roster pushes, own-resource presence)."""

    available: bool = False
    priority: int = 0
    interested: tuple[str, ...] = ()
    roster_requested: bool = False
    presence: str | None = None

    @classmethod
    def of(cls, session) -> "SessionInfo":
        return cls(bool(session.available), int(session.priority), tuple(sorted(session.interested)),
                   bool(session.roster_requested), session.presence)

    def dumps(self) -> str:
        return json.dumps([self.available, self.priority, list(self.interested), self.roster_requested,
                           self.presence], separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> "SessionInfo":
        available, priority, interested, roster_requested, presence = json.loads(text)
        return cls(bool(available), int(priority), tuple(str(i) for i in interested),
                   bool(roster_requested), presence if isinstance(presence, str) else None)


class Keys:
    """Redis names, prefixed by the domain: clusters of several domains may share a Redis."""

    def __init__(self, domain: str):
        self.prefix = f"xep207:{domain}:"
        self.heartbeats = self.prefix + "hb"
        self.all = self.prefix + "all"
        self.boot = self.prefix + "boot"
        self.owners = self.prefix + "owners"  # full JID → the node that bound it last

    def sessions(self, node: str) -> str:
        return f"{self.prefix}sessions:{node}"

    def claim(self, node: str) -> str:
        return f"{self.prefix}claim:{node}"

    def reaped(self, node: str) -> str:
        return f"{self.prefix}reaped:{node}"

    def channel(self, node: str) -> str:
        return f"{self.prefix}node:{node}"


def pairs(flat: list) -> dict[str, str]:
    """Redis's flat ``[k1, v1, k2, v2 …]`` as a dict."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def valid_full_jid(full: str) -> bool:
    try:
        return jidlib.JID(full).resource is not None
    except (jidlib.InvalidFormat, IndexError):
        return False
