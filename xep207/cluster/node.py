"""One process of a cluster: its Redis link, its heartbeat, its part of the
session registry, and the reaping of processes that died.

See ``xep207.cluster.registry`` for what lives in Redis and
``docs/cluster.md`` for what happens on each failure.
"""

from __future__ import annotations

import collections
import itertools
import os
import socket
from typing import Any

from twisted.internet import defer, task
from twisted.python import log
from twisted.words.protocols.jabber import jid as jidlib

from xep207.cluster import codec
from xep207.cluster.directory import Directory
from xep207.cluster.link import ClusterUnavailable, RedisLink
from xep207.cluster.registry import (
    CLAIM,
    HEARTBEAT,
    RELEASE,
    SET_SESSION,
    SYNC,
    Keys,
    SessionInfo,
    pairs,
)
from xep207.cluster.routing import Routing
from xep207.hooks import SESSION_UNBOUND
from xep207.inflight import InFlight
from xep207.pubsub.kinds import PRESENCE_NODE
from xep207.startup import StartupError


def default_node_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class _GoneStream:
    """The stream of a session whose process died: nothing to write to."""

    transport = None

    def send(self, stanza) -> None:
        pass

    def fail(self, condition, text=None) -> None:
        pass


class Cluster:
    """This process in the cluster named by ``--cluster``."""

    def __init__(self, server, url: str, name: str, timeout: float, reactor=None):
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.server = server
        self.router = server.router
        self.name = name
        self.timeout = timeout
        self.keys = Keys(server.domain)
        self.stats: collections.Counter = collections.Counter()  # Redis commands and messages, by kind
        self.routing = Routing(self)
        self.room_state: Any = None  # xep207.cluster.rooms.RoomState, once the groupchat service is there
        self.directory = Directory(self.routing)
        self.link = RedisLink(url, [self.keys.all, self.keys.channel(name)], self._on_message,
                              self._on_up, self._on_down, reply_timeout=min(5.0, max(1.0, timeout)),
                              reactor=reactor)
        self.live: set[str] = set()  # other nodes with a fresh heartbeat
        self.registered: dict[str, SessionInfo] = {}  # what Redis has of our sessions
        self.started = False
        self.stopping = False
        self._first_up: defer.Deferred = defer.Deferred()
        self._grace_until = 0.0  # no reaping until everyone had time to re-register
        self._reaping: set[str] = set()
        self.work = InFlight()  # heartbeats, reapings, undelivered items: waited for on shutdown
        self._queries = itertools.count(1)
        self._replacing: dict[str, defer.Deferred] = {}  # a 'k' sent → until that node ended its session
        self._beating = False
        self._heartbeat = task.LoopingCall(self._beat_safely)
        self._heartbeat.clock = reactor

    # Redis --------------------------------------------------------------------------

    def command(self, *args) -> defer.Deferred:
        self.stats["redis-commands"] += 1
        return self.link.command(*args)

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred:
        self.stats["redis-commands"] += 1
        return self.link.eval(script, keys, args)

    def publish(self, node: str, text: str) -> defer.Deferred:
        """To one other process; fires with how many listeners got it (0: nobody)."""
        self.stats["messages-sent"] += 1
        self.stats["bytes-sent"] += len(text)
        return self.command("PUBLISH", self.keys.channel(node), text)

    def broadcast(self, message: dict) -> defer.Deferred:
        self.stats["messages-sent"] += 1
        return self.command("PUBLISH", self.keys.all, codec.dumps(message))

    # Life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Before the listeners open: connect, clean up after this node's
        previous run and after dead nodes (or, first of a cluster, after
        everyone), register, start beating."""
        self.link.start()
        try:
            await self._first_up.addTimeout(max(10.0, self.timeout), self.reactor)
        except defer.TimeoutError:
            self.link.stop()
            raise StartupError(f"cannot reach the cluster's Redis at {self.link.url}")
        await self._boot()
        self.started = True
        self._heartbeat.start(self.timeout / 3, now=False)
        log.msg(f"cluster: {self.name} joined ({len(self.live)} other live node(s))")

    async def _boot(self) -> None:
        while not await self.command("SET", self.keys.boot, self.name, "NX", "PX", 120000):
            await task.deferLater(self.reactor, 0.1, lambda: None)  # another node is booting
        try:
            dead, live = await self._heartbeats(register=False)
            others = [n for n in live if n != self.name]
            if not others:
                # First of the cluster: nothing anyone left is alive, as in single-process mode.
                await self.server.presence.clear_stale()
                await self.server.groupchat.clear_stale()
                for node in set(dead) | set(live) | {self.name}:
                    await self.command("DEL", self.keys.sessions(node), self.keys.claim(node))
                    await self.command("ZREM", self.keys.heartbeats, node)
                await self.command("DEL", self.keys.owners)
            else:
                await self.reap(self.name, check_alive=False, tombstone=False)
                for node in dead:
                    if node != self.name:
                        await self.reap(node)
            await self.command("DEL", self.keys.reaped(self.name))
            await self.sync()
            await self.beat()
        finally:
            await self.command("DEL", self.keys.boot)
        self._grace_until = self.reactor.seconds() + self.timeout

    async def stop(self) -> None:
        """After the sessions ended (each unregistered itself): leave the cluster."""
        self.stopping = True
        if self._heartbeat.running:
            self._heartbeat.stop()
        for query in list(self._replacing):
            self.replacement_done({"q": query})  # nobody waits for a replaced session any more
        await self.work.drain()  # a reaping under way finishes
        if self.link.up and self.started:
            try:
                claim = await self.command("SET", self.keys.claim(self.name), self.name, "NX", "PX", 10000)
                if claim:
                    await self.eval(RELEASE, self._release_keys(self.name),
                                    [self.name, self.name, "0", codec.dumps({"t": "gone", "n": self.name})])
            except ClusterUnavailable:
                pass
        await self.link.stop()
        # What arrived before the link closed (a room's stanza, an event) finishes before storage closes.
        await self.server.quiesce()
        await self.work.drain()

    def _on_up(self) -> defer.Deferred | None:
        if not self._first_up.called:
            self._first_up.callback(None)
            return None
        return defer.ensureDeferred(self._rejoin())

    def _on_down(self) -> None:
        log.msg(f"cluster: {self.name} cut off from Redis; stanzas for other processes fail until it is back")

    async def _rejoin(self) -> None:
        """Back after losing Redis: were we declared dead meanwhile? Then our
        contacts were told we left: our sessions end (clients reconnect).
        Either way, register again and reload the mirror."""
        if not self.started or self.stopping:
            return
        if await self.command("EXISTS", self.keys.reaped(self.name)):
            log.msg(f"cluster: {self.name} was declared dead while cut off; ending its sessions")
            await self.command("DEL", self.keys.reaped(self.name))
            for session in self._local_sessions():
                session.close("reset", "this server was cut off from its cluster")
                self.router.unbind(session)
        self.registered = {}
        await self.sync()
        await self.beat()
        self._grace_until = self.reactor.seconds() + self.timeout
        log.msg(f"cluster: {self.name} rejoined")

    # Heartbeats and the mirror ----------------------------------------------------------

    async def _heartbeats(self, register: bool) -> tuple[list[str], list[str]]:
        dead, live = await self.eval(HEARTBEAT, [self.keys.heartbeats],
                                     [self.name if register else "", int(self.timeout * 1000)])
        return [_text(n) for n in dead], [_text(n) for n in live]

    def _beat_safely(self) -> None:
        if self._beating:
            return
        self._beating = True
        d = self.work.track(defer.ensureDeferred(self.beat()))
        d.addErrback(lambda f: f.trap(ClusterUnavailable))
        d.addErrback(log.err, "cluster: heartbeat failed")
        d.addBoth(lambda _: setattr(self, "_beating", False))

    async def beat(self) -> None:
        """Say we are alive; push what changed in our sessions (a ``+notify``
        learnt from caps, say); learn who is alive; reap who is not."""
        dead, live = await self._heartbeats(register=True)
        self.live = {n for n in live if n != self.name}
        for node in self.live - set(self.directory.nodes):
            await self.load(node)
        for session in self._local_sessions():
            self.touch(session)
        if self.reactor.seconds() < self._grace_until:
            return
        for node in dead:
            if node != self.name and node not in self._reaping:
                # Apart from the heartbeat: ending many sessions may take longer than the timeout.
                self._reaping.add(node)
                d = self.work.track(defer.ensureDeferred(self.reap(node)))
                d.addErrback(lambda f: f.trap(ClusterUnavailable))
                d.addErrback(log.err, f"cluster: reaping {node} failed")
                d.addBoth(self._reaped, node)

    def _reaped(self, result: object, node: str) -> object:
        self._reaping.discard(node)
        return result

    async def load(self, node: str) -> None:
        flat = await self.command("HGETALL", self.keys.sessions(node))
        self.directory.replace(node, {full: SessionInfo.loads(info) for full, info in pairs(flat or []).items()})

    def _local_sessions(self) -> list:
        return [s for resources in list(self.router.sessions.values()) for s in resources.values()]

    # Our sessions in the registry ---------------------------------------------------------

    def touch(self, session, bind: bool = False) -> defer.Deferred | None:
        """Register ``session`` as it is now, if that changed (``bind``: it
        just bound, and takes its full JID from whichever node held it)."""
        if self.stopping or getattr(session, "remote", False) or self.router.sessions.get(
                session.bare, {}).get(session.jid.resource) is not session:
            return None
        info = SessionInfo.of(session)
        if bind or self.registered.get(session.full) != info:
            return self._write(session.full, info, bind)
        return None

    def presence_changed(self, event) -> None:
        """Every engine event passes here: one on an account's ``presence``
        node may have changed a local session's availability or priority."""
        if event.node_id != PRESENCE_NODE or "@" not in event.service:
            return
        resources = self.router.sessions.get(event.service)
        if not resources:
            return
        for resource in [item.item_id for item in event.items] + list(event.retracted):
            session = resources.get(resource)
            if session is not None:
                self.touch(session)

    def session_bound(self, session) -> None:
        """Registered; the same full JID bound on another process is replaced
        there (RFC 6120 §7.7.2.2: the newer binding wins, the old is told
        ``conflict``). Redis says which node held it (``SET_SESSION``), not
        the mirror: two processes binding one name at once each saw nobody.
        As in one process, the older session is gone (its presence retracted,
        its rooms left) before the new one's first stanza is handled."""
        registered = self.touch(session, bind=True)
        if registered is not None and self.link.up:
            done: defer.Deferred = defer.Deferred()

            def registered_now(result):
                done.callback(None)
                return result

            registered.addBoth(registered_now)
            session.in_order.run(lambda: done)

    def session_unbound(self, session) -> None:
        if getattr(session, "reaped", False) or session.full not in self.registered:
            return
        if self.router.session(session.full) is not None and not getattr(
                self.router.session(session.full), "remote", False):
            return  # replaced by a new local session of the same name: it re-registered
        self._write(session.full, None)

    def availability_changed(self, session) -> defer.Deferred | None:
        """``AVAILABILITY_CHANGED``: registered before anyone hears of the
        presence, so whoever sees it can route to the session at once."""
        if getattr(session, "reaped", False) or self.stopping:
            return None
        info = SessionInfo.of(session)
        if self.registered.get(session.full) == info:
            return None
        return self._write(session.full, info)

    def _write(self, full: str, info: SessionInfo | None, bind: bool = False) -> defer.Deferred:
        if info is None:
            self.registered.pop(full, None)
        else:
            self.registered[full] = info
        if not self.link.up:
            return defer.succeed(None)  # re-synced whole when Redis is back
        text = info.dumps() if info is not None else ""
        message = codec.dumps({"t": "s", "n": self.name, "j": full, "i": text or None})
        d = self.eval(SET_SESSION, [self.keys.sessions(self.name), self.keys.all, self.keys.owners],
                      [full, text, message, self.name, "1" if bind else "0"])
        d.addCallback(self._replaced, full)
        d.addErrback(lambda f: f.trap(ClusterUnavailable))
        d.addErrback(log.err, f"cluster: registering {full} failed")
        return d

    def _replaced(self, previous, full: str) -> defer.Deferred | None:
        """The node that held ``full`` before our bind ends its session there;
        fires once it said so (or after the link's reply timeout)."""
        if not previous or _text(previous) == self.name:
            return None
        self.stats["bindings-replaced"] += 1
        query = f"{self.name}:{next(self._queries)}"
        ended = self._replacing[query] = defer.Deferred()
        ended.addTimeout(self.link.reply_timeout, self.reactor)
        ended.addErrback(lambda f: f.trap(defer.TimeoutError))
        ended.addBoth(lambda _: self._replacing.pop(query, None) and None)

        def unheard(heard) -> None:
            if not int(heard or 0):
                self.replacement_done({"q": query})  # nobody there to end it

        def unreachable(failure) -> None:
            failure.trap(ClusterUnavailable)
            self.replacement_done({"q": query})

        d = self.publish(_text(previous), codec.dumps({"t": "k", "j": full, "n": self.name, "q": query}))
        d.addCallbacks(unheard, unreachable)
        return ended

    def replacement_done(self, message: dict) -> None:
        """The node we replaced a session on ended it (``replaced``)."""
        ended = self._replacing.get(str(message.get("q")))
        if ended is not None and not ended.called:
            ended.callback(None)

    async def sync(self) -> None:
        """Register every session we hold, replacing whatever Redis had; a
        full JID another node bound while we were cut off is theirs now
        (the newer binding): ours ends with ``conflict``."""
        local = {s.full: s for s in self._local_sessions()}
        sessions = {full: SessionInfo.of(s) for full, s in local.items()}
        args: list[Any] = [self.name]
        for full, info in sessions.items():
            args += [full, info.dumps()]
        taken = await self.eval(SYNC, [self.keys.sessions(self.name), self.keys.all, self.keys.owners], args)
        for full in map(_text, taken or []):
            sessions.pop(full, None)
            session = local.get(full)
            if session is not None:
                self.router.unbind(session)
                session.close("conflict", "replaced by a new connection")
        self.registered = sessions
        _, live = await self._heartbeats(register=False)
        for node in live:
            if node != self.name:
                await self.load(node)

    # Reaping --------------------------------------------------------------------------------

    def _release_keys(self, node: str) -> list[str]:
        return [self.keys.heartbeats, self.keys.claim(node), self.keys.sessions(node),
                self.keys.reaped(node), self.keys.all, self.keys.owners]

    async def reap(self, node: str, check_alive: bool = True, tombstone: bool = True) -> bool:
        """End a dead node's sessions, if we are the one to claim it."""
        claim_ttl = int(max(60.0, self.timeout * 10) * 1000)
        reply = await self.eval(CLAIM, [self.keys.heartbeats, self.keys.claim(node), self.keys.sessions(node)],
                                [node, self.name, int(self.timeout * 1000), claim_ttl,
                                 "1" if check_alive else "0"])
        if not reply:
            return False
        sessions = pairs(list(reply)[1:])
        self.directory.drop_node(node)
        self.live.discard(node)
        if node != self.name:
            self.stats["reaped-nodes"] += 1
        log.msg(f"cluster: {self.name} ends the {len(sessions)} session(s) of {node}")
        for full, text in sessions.items():
            elsewhere = self.router.session(full)
            if elsewhere is not None:
                continue  # bound again since, here or on a live node: not ours to end
            try:
                info = SessionInfo.loads(text)
            except (ValueError, TypeError):
                continue
            await self.end_session(full, info)
        await self.eval(RELEASE, self._release_keys(node),
                        [node, self.name, "1" if tombstone else "0", codec.dumps({"t": "gone", "n": node})])
        return True

    async def end_session(self, full: str, info: SessionInfo) -> None:
        """A dead node's session goes as if it had disconnected here: the
        ``SESSION_UNBOUND`` handlers retract its presence (contacts told) and
        take it out of its rooms (occupants told)."""
        from xep207.server.c2s import Session

        try:
            jid = jidlib.JID(full)
        except (jidlib.InvalidFormat, IndexError):
            return
        session = Session(jid, _GoneStream())
        session.available = info.available
        session.priority = info.priority
        session.presence = info.presence
        session.reaped = True  # type: ignore[attr-defined]
        self.stats["reaped-sessions"] += 1
        await self.router.hooks.fire(SESSION_UNBOUND, session)

    # Messages -------------------------------------------------------------------------------

    def _on_message(self, channel: str, text: str) -> None:
        self.stats["messages-received"] += 1
        message = codec.loads(text)
        kind = message.get("t")
        if channel == self.keys.all:
            node = str(message.get("n"))
            if node == self.name:
                if kind == "gone" and self.started and not self.stopping:
                    log.msg(f"cluster: {self.name} was declared dead; rejoining")
                    d = defer.ensureDeferred(self._rejoin_after_reaped())
                    d.addErrback(log.err, "cluster: rejoining failed")
                return
            if kind == "s":
                info = message.get("i")
                self.directory.set(node, message["j"], SessionInfo.loads(info) if info else None)
                self.live.add(node)
            elif kind == "sync":
                self.directory.replace(node, {j: SessionInfo.loads(i) for j, i in message["s"].items()})
                self.live.add(node)
            elif kind == "gone":
                self.directory.drop_node(node)
                self.live.discard(node)
            elif kind in ("forget", "revoke", "blocks", "avatar", "seen"):
                self.server.cluster_invalidation.received(message)
            return
        self.routing.received(kind, message)

    async def _rejoin_after_reaped(self) -> None:
        await self.command("SET", self.keys.reaped(self.name), "1", "EX", 86400)
        await self._rejoin()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def describe(cluster: Cluster) -> dict:
    return {"node": cluster.name, "live": sorted(cluster.live), "remote_sessions": cluster.directory.count(),
            "stats": dict(cluster.stats)}

