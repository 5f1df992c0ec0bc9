"""The unacknowledged window of live one-to-one messages (XEP-0198).

A live pair message written to a managed session is acknowledged later, or
never: its session ends (then ``Unreceived.requeue`` keeps it), or the
server dies (``kill -9``), and the in-memory queue with it. So, per party and
conversation, the first message written and not yet acknowledged is stored
as the subscription option ``UNACKED_MARK``; acks move it (one write at a time
per conversation, reading the window when it runs), an empty window removes
it. At the next initial presence a stored window that no live session holds
is folded into the offline mark: what was never acknowledged arrives again.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet import defer
from twisted.python import log

from xep207.pubsub.kinds import Trusted
from xep207.pubsub.kinds.pair import OFFLINE_MARK

UNACKED_MARK = "xep207#unacked-since"


class UnackedWindow:
    def __init__(self, chat):
        self.chat = chat
        self.engine = chat.engine
        self.storage = chat.storage
        self.pubsub_domain = chat.pubsub_domain
        # (party, node id) → {item id: sessions it was written to, unacknowledged}, oldest first
        self.in_flight: dict[tuple[str, str], OrderedDict] = {}
        self._window_writing: set[tuple[str, str]] = set()
        self._window_stale: set[tuple[str, str]] = set()
        self._waiting: dict[str, list[defer.Deferred]] = {}  # node id → stored() callers

    def stored(self, node_id: str) -> defer.Deferred | None:
        """Fires once no window of this conversation is being written; None when
        none is. A message counts as handled (XEP-0198 ``h``) only after that:
        an acknowledged message is never one a crash can lose."""
        if not self._window_writing or not any(key[1] == node_id for key in self._window_writing):
            return None
        d: defer.Deferred = defer.Deferred()
        self._waiting.setdefault(node_id, []).append(d)
        return d

    def open(self, party: str, node_id: str, item_id: str) -> None:
        key = (party, node_id)
        window = self.in_flight.setdefault(key, OrderedDict())
        opened = not window
        window[item_id] = window.get(item_id, 0) + 1
        if opened:
            self._store_window(key)

    def write_tracked(self, session, xml: str, item_id: str, node_id: str) -> None:
        session.send_tracked(xml).addCallback(self.settled, (session.bare, node_id), item_id)

    def settled(self, acked: bool, key, item_id: str) -> None:
        """Acknowledged, or its session ended (then ``requeue`` keeps it)."""
        window = self.in_flight.get(key)
        if window is None or item_id not in window:
            return
        oldest = next(iter(window)) == item_id
        if window[item_id] > 1:
            window[item_id] -= 1
            return
        del window[item_id]
        if not window:
            del self.in_flight[key]
        if oldest:
            self._store_window(key)

    def _store_window(self, key) -> None:
        """Store where the window begins: one write at a time per conversation,
        reading the window when it runs (a burst of acks costs one or two)."""
        if key in self._window_writing:
            self._window_stale.add(key)
            return
        self._window_writing.add(key)
        defer.ensureDeferred(self._window_writer(key)).addErrback(
            lambda failure: log.msg(f"unacknowledged window of {key}: {failure.getErrorMessage()}"))

    async def _window_writer(self, key) -> None:
        try:
            while True:
                self._window_stale.discard(key)
                await self._write_window(key)
                if key not in self._window_stale:
                    return
        finally:
            self._window_writing.discard(key)
            self._window_stale.discard(key)
            node_id = key[1]
            if not any(k[1] == node_id for k in self._window_writing):
                for waiter in self._waiting.pop(node_id, ()):
                    waiter.callback(None)

    async def _write_window(self, key) -> None:
        party, node_id = key
        window = self.in_flight.get(key)
        first = next(iter(window)) if window else None
        await self.locked(node_id, self._set_option, party, node_id, UNACKED_MARK, first)

    async def _set_option(self, party: str, node_id: str, option: str, value: str | None) -> None:
        current = await self.storage.get_subscription(self.pubsub_domain, node_id, party)
        if current is not None and current.options.get(option) != value:
            await self.engine.set_offline_mark(Trusted(self.pubsub_domain), current, value, option)

    async def locked(self, node_id: str, fn, *args):
        """Marks are read, then written: one writer per conversation at a time
        (the chat capture's lock, which its publish and the pair kind's mark share)."""
        lock = self.chat.lock_for(node_id)
        await lock.acquire()
        try:
            return await fn(*args)
        finally:
            self.chat.release(node_id, lock)

    async def fold(self, subscription):
        """A stored window nobody holds in memory (the server crashed while
        messages were unacknowledged): from its start, they wait offline."""
        node_id, party = subscription.node_id, subscription.subscriber
        current = await self.storage.get_subscription(self.pubsub_domain, node_id, party)
        if current is None or (party, node_id) in self.in_flight:
            return current
        window = current.options.get(UNACKED_MARK)
        if not window:
            return current
        mark = current.options.get(OFFLINE_MARK)
        if mark:
            seqs = {i.item_id: i.seq for i in await self.storage.get_items(self.pubsub_domain, node_id,
                                                                             [mark, window])}
            if window in seqs and seqs[window] < seqs.get(mark, 0):
                mark = window
        else:
            mark = window
        trusted = Trusted(self.pubsub_domain)
        await self.engine.set_offline_mark(trusted, current, mark)
        await self.engine.set_offline_mark(trusted, current, None, UNACKED_MARK)
        return await self.storage.get_subscription(self.pubsub_domain, node_id, party)
