"""A one-to-one message on its way into its pair node, pipelined (issue 13).

Where storage runs operations in the order issued (SQLite's one writer,
``memory:``), a conversation's next message need not wait for the one before
to be committed: it is issued as soon as the one before is in storage's queue.
What keeps the rules:

- storage order is the order issued (the writer queue);
- what follows the store — delivery, the pair kind's offline mark — runs for
  each message only after the one before is done (``engine.publish(after=…)``),
  so each sees the mark the one before left;
- anyone else who writes the conversation's marks (offline flush, the
  XEP-0198 window) takes the conversation lock alone, once the pipeline drained;
- a publish to the pair node through the XEP-0060 door joins the same
  pipeline (``native_turn``, the engine's ``pipeline_turn``) once the pair kind
  allowed it (whom it refuses never takes a place), and is judged again if it
  had to wait for its turn (an overwrite always is, holding the lock alone
  until its write is issued: whose item it replaces is read with nothing of
  the conversation issued in between): storage, delivery and offline-mark
  order are the conversation's, whichever door and direction each message
  came through;
- the session's next stanza goes on at the hand-off, but XEP-0198 counts the
  message as handled only once stored (``Session.durable``): an ``<a h/>``
  still means "stored";
- a message that is only routed (a chat state) never overtakes the stored
  messages of its conversation still on their way;
- a message reaches its online recipients as soon as it is in storage's
  queue (``ConversationLock.deliver_early``), when everything ahead of it in
  its conversation reached them already (a native publish ahead of it is
  delivered at its commit; and the engine knows of no publish to the node
  still waiting to notify, and the writer thread keeps up): as Prosody and
  ejabberd route a message without waiting for their archive, so the
  latency is not the commit's. What a delivery means for the store is
  unchanged: the offline mark of a recipient it missed (and with it the
  ``KEPT_OFFLINE`` hook: push), the ``ITEM_PUBLISHED`` hook and the
  sender's XEP-0198 ack wait for the commit, and a store that fails still bounces the message to its sender,
  who is told it was not kept (an online recipient may have it: at least
  once, as XEP-0198 is).

Without ordered writes (a connection pool) each message waits for the one
before, as it always did, through either door.
"""

from __future__ import annotations

from functools import partial

from twisted.internet import defer
from twisted.python.failure import Failure

from xep207.ordering import ConversationLock
from xep207.pubsub.kinds import pair_parties
from xep207.pubsub.kinds.base import NodeKind
from xep207.storage.records import VIA_LEGACY

__all__ = ["PairPublisher"]


class PairPublisher:
    def __init__(self, chat):
        self.chat = chat
        self.engine = chat.engine
        self.router = chat.router
        self.pipelined = bool(getattr(chat.engine.storage, "ordered_writes", False))

    def publish(self, stanza, session, node_id: str, payload: str) -> defer.Deferred | bool:
        """True once the message is in storage's queue (or, without a hand-off,
        stored) — at once, or as a Deferred firing then — or its refusal."""
        lock = self.chat.lock_for(node_id)
        if lock.try_join(share=self.pipelined):
            return self._start(stanza, session, node_id, payload, lock)
        return lock.join().addCallback(lambda _: self._start(stanza, session, node_id, payload, lock))

    def native_turn(self, kind: NodeKind, service: str, node_id: str,
                    alone: bool = False) -> "_NativeTurn | defer.Deferred | None":
        """``engine.pipeline_turn``: a publish to a pair node through the
        XEP-0060 door, judged already, joins the conversation's pipeline as a
        legacy message does: its place at once, or a Deferred firing with it
        once it may join; None for any other node. ``alone`` (an overwrite,
        judged again in its turn): the conversation is its own, as the
        offline flush has it, until its write is issued."""
        if not kind.pipelined or service != self.chat.pubsub_domain:
            return None
        lock = self.chat.lock_for(node_id)
        turn = _NativeTurn(self.chat, node_id, lock, alone)
        if lock.try_acquire() if alone else lock.try_join(share=self.pipelined):
            return turn
        return (lock.acquire() if alone else lock.join()).addCallback(lambda _: turn)

    def behind(self, node_id: str) -> defer.Deferred | None:
        """For a message only routed: fires once the conversation's stored
        messages on their way are delivered; None when there are none."""
        lock = self.chat._locks.get(node_id)
        return lock.after_tail() if lock is not None else None

    def settled_for(self, party: str) -> defer.Deferred | None:
        """Fires once every message of ``party``'s conversations on its way is
        done; None when there are none. One delivered before its commit while
        ``party`` was away gets its offline mark only after the commit: an
        offline backlog must not read the marks before that."""
        waits = [lock.after_tail() for node_id, lock in list(self.chat._locks.items())
                 if party in (pair_parties(node_id) or ())]
        waits = [d for d in waits if d is not None]
        return defer.gatherResults(waits) if waits else None

    def _start(self, stanza, session, node_id: str, payload: str,
               lock: ConversationLock) -> defer.Deferred | bool:
        entry, after = lock.enter()
        handoff = _Handoff()
        # The pair kind creates the node on a party's first message,
        # whichever door it came through.
        full = self.engine.publish(session.full, self.chat.pubsub_domain, node_id, [(None, payload)],
                                   vetted=True, via=VIA_LEGACY, queued=handoff.queued, after=after,
                                   early=partial(lock.deliver_early, entry) if self.pipelined else None,
                                   in_pipeline=True)
        full.addBoth(self._done, node_id, lock, entry, session, handoff, stanza)
        if full.called and not isinstance(full.result, defer.Deferred):
            # Done within this call (``memory:``, nothing before it): no Deferred to wait on.
            result = full.result
            if isinstance(result, Failure):
                full.addErrback(_consumed)
                return defer.fail(result)  # refused before its hand-off: the router answers
            return True
        session.durable.wait_for(full)  # XEP-0198: handled once stored
        self.router.in_flight.track(full)
        if handoff.done:  # in storage's queue already (SQLite's writer): the session goes on
            return True
        handoff.deferred = defer.Deferred()
        return handoff.deferred

    def _done(self, result, node_id: str, lock: ConversationLock, entry: list, session,
              handoff: "_Handoff", stanza):
        result = self._published(result, node_id, lock, entry, session)
        if isinstance(result, defer.Deferred):
            return result.addBoth(self._settled, handoff, stanza)
        return self._settled(result, handoff, stanza)

    def _published(self, result, node_id: str, lock: ConversationLock, entry: list, session=None):
        lock.finish(entry)  # (the next message's consequences wait for this one's)
        lock.leave()
        self.chat.forget_if_idle(node_id, lock)
        if isinstance(result, Failure):
            return result
        stored = self.chat.offline.window.stored(node_id)  # (XEP-0198: where a crash cannot lose it)
        # The same on a cluster's other processes (xep207.cluster.routing: handled there, or kept
        # offline), for a sender whose XEP-0198 acks say so.
        crossed = None
        if self.chat.elsewhere is not None and getattr(session, "sm", None) is not None:
            crossed = self.chat.elsewhere(node_id)
        if stored is None and crossed is None:
            return True
        waits = [d for d in (stored, crossed) if d is not None]
        return defer.gatherResults(waits).addCallback(lambda _: True)

    def _settled(self, result, handoff: "_Handoff", stanza):
        """The outcome, to whoever waits for the hand-off; a failure after it
        bounces the stanza all the same. Nobody waits yet (done within
        ``_start``): the outcome stays for ``_start`` to read."""
        handed = handoff.deferred
        if handed is not None and not handed.called:
            handed.callback(result)  # refused before its hand-off: the router answers
            return None
        if handed is None and not handoff.done:
            return result
        if isinstance(result, Failure):
            self.router.route_failed(result, stanza)  # failed once queued: bounced all the same
        return None


class _NativeTurn:
    """A native publish's place in its conversation's pipeline (``engine.PipelineTurn``):
    entered just before its write is issued, left once it is done (notified,
    offline marks written), refused or failed."""

    __slots__ = ("chat", "node_id", "lock", "entry", "alone")

    def __init__(self, chat, node_id: str, lock: ConversationLock, alone: bool) -> None:
        self.chat = chat
        self.node_id = node_id
        self.lock = lock
        self.entry: list | None = None
        self.alone = alone  # (held alone, not yet a publish of the pipeline)

    def enter(self) -> defer.Deferred | None:
        if self.alone:
            self.alone = False
            self.lock.share()  # (its write is issued next; what queued meanwhile waits until it is done)
        self.entry, after = self.lock.enter()
        return after

    def leave(self) -> None:
        lock = self.lock
        if self.entry is not None:
            lock.finish(self.entry)  # (the next one's consequences wait for this one's)
        if self.alone:
            self.chat.release(self.node_id, lock)  # (refused before it entered)
        else:
            lock.leave()
            self.chat.forget_if_idle(self.node_id, lock)

    def settled(self) -> defer.Deferred | None:
        return self.chat.offline.window.stored(self.node_id)  # (as ``PairPublisher._published``)


class _Handoff:
    """Whether the publish reached storage's queue; the Deferred a caller
    waits on when it had not by the time ``engine.publish`` returned."""

    __slots__ = ("done", "deferred")

    def __init__(self) -> None:
        self.done = False
        self.deferred: defer.Deferred | None = None

    def queued(self) -> None:
        self.done = True
        if self.deferred is not None and not self.deferred.called:
            self.deferred.callback(True)


def _consumed(failure: Failure) -> None:
    return None  # (answered by the caller from the result it read)
