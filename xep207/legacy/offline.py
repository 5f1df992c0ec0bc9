"""Offline delivery of one-to-one messages: exactly once with XEP-0198, else at least once.

A party's pair subscription carries an offline mark (``OFFLINE_MARK``, set by
the pair kind): the first message it has not received. Why the mark only
moves when the client acknowledged: clearing it before writing lost whatever
a dying connection (or a ``kill -9``) swallowed. So:

- at an initial presence the waiting messages are written in batches with
  ``Session.send_tracked``; after each batch the mark moves to the first
  message the client did not acknowledge (XEP-0198), or past the batch once
  written (no stream management: at least once, each with its XEP-0359
  ``<stanza-id/>`` so a client can drop a duplicate);
- live messages for a session whose backlog is being written wait behind it
  (no inversion, no duplicate: an item in both is sent once);
- when a managed session ends with messages unacknowledged
  (the ``UNACKED`` hook), another available resource gets them (RFC
  6121 §8.5.2.1.1), else the mark moves back to the earliest of them, and
  each is pushed (``xep207.legacy.unreceived``). Nothing is bounced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from twisted.internet import defer
from twisted.python import log

from xep207.hooks import SESSION_UNBOUND, STANZA, UNACKED
from xep207.pubsub.events import ITEMS, Event, Recipient
from xep207.pubsub.kinds import Trusted
from xep207.pubsub.kinds.pair import OFFLINE_MARK, PairKind
from xep207.legacy.unacked import UNACKED_MARK, UnackedWindow
from xep207.legacy.unreceived import Unreceived
from xep207.storage.records import VIA_LEGACY, bare
from xep207.xmlutil import parse_stanza

BATCH = 500  # messages written before waiting for their acknowledgement


@dataclass(eq=False)
class _Backlog:
    """A session's backlog being written; live pair messages wait here."""

    held: list = field(default_factory=list)  # (xml, item_id, node_id)
    written: set = field(default_factory=set)  # item ids of the backlog
    started: bool = False


class OfflineDelivery:
    def __init__(self, chat):
        self.chat = chat
        self.router = chat.router
        self.engine = chat.engine
        self.storage = chat.storage
        self.pubsub_domain = chat.pubsub_domain
        self.flushing: dict = {}  # session → _Backlog, from its first available presence
        self.window = UnackedWindow(chat)
        # A cluster's barrier (``xep207.cluster.invalidation``): fires once
        # every process routes to the session. Unset in one process.
        self.before_backlog: Callable[[object], defer.Deferred | None] | None = None
        self.router.hooks.add(STANZA, self._before_presence, priority=90, stanzas=("presence",))  # observes, never captures
        self.router.hooks.add(SESSION_UNBOUND, self._session_gone)
        self.unreceived = Unreceived(self)
        self.router.hooks.add(UNACKED, self.unreceived.requeue)

    # Holding live messages behind the backlog ------------------------------------------

    def _before_presence(self, stanza) -> bool:
        """The initial presence is about to make the session available: from
        then on its live pair messages wait for the backlog."""
        session = stanza.__dict__.get("session")
        if session is not None and stanza.name == "presence" and not session.available \
                and stanza.getAttribute("type") is None and not stanza.getAttribute("to"):
            self.flushing.setdefault(session, _Backlog())
            # Once this presence is handled, however that went: without a
            # backlog under way (storage failed before it began) nothing waits.
            session.in_order.run(lambda: None).addCallback(self._presence_handled, session)
        return False

    def _presence_handled(self, _, session) -> None:
        backlog = self.flushing.get(session)
        if backlog is not None and not backlog.started:
            self._release(session)

    def hold(self, session, xml: str, item_id: str, node_id: str) -> bool:
        """Called by the pair rendering for a live message: True when this module
        took it (it waits behind the backlog, or it was written tracked)."""
        backlog = self.flushing.get(session)
        if backlog is not None:
            backlog.held.append((xml, item_id, node_id))
            if session.sm is not None:
                self.window.open(session.bare, node_id, item_id)  # waiting in memory is in the window too
            return True
        return self._send_live(session, xml, item_id, node_id)

    def _send_live(self, session, xml: str, item_id: str, node_id: str) -> bool:
        if session.sm is None:
            return False  # at least once: written, and that is all one can know
        self.window.open(session.bare, node_id, item_id)
        self.window.write_tracked(session, xml, item_id, node_id)
        return True

    def _release(self, session) -> None:
        backlog = self.flushing.pop(session, None)
        if backlog is None:
            return
        for xml, item_id, node_id in backlog.held:
            if session.sm is not None:  # (its window was opened when it was held)
                if item_id in backlog.written:
                    self.window.settled(True, (session.bare, node_id), item_id)  # the backlog carried it
                else:
                    self.window.write_tracked(session, xml, item_id, node_id)
            elif item_id not in backlog.written:
                session.send(xml)

    def _session_gone(self, session):
        backlog = self.flushing.pop(session, None)
        if backlog is None or not backlog.held:
            return None
        # Live messages that never left: they wait as offline messages.
        if session.sm is not None:
            for _, item_id, node_id in backlog.held:
                self.window.settled(False, (session.bare, node_id), item_id)
        held = [parse_stanza(xml) for xml, item_id, _ in backlog.held if item_id not in backlog.written]
        return defer.ensureDeferred(self.unreceived.mark_back(session, held))

    # The backlog -----------------------------------------------------------------------

    def deliver_offline(self, session) -> None:
        """At an initial available presence: every message that waited, oldest
        first, once. Under way beside the session's other stanzas (waiting for
        acknowledgements must not hold them up)."""
        self.flushing.setdefault(session, _Backlog()).started = True
        done = defer.ensureDeferred(self._deliver_offline(session)).addErrback(
            lambda failure: log.msg(f"offline delivery to {session.full} failed: {failure.getErrorMessage()}"))
        if session.sm is None:
            # Nothing to wait for but storage: part of the stanza's routing for
            # whoever waits for the server to be quiet (a shutdown, a test).
            self.router.in_flight.track(done)

    async def _deliver_offline(self, session) -> None:
        try:
            subscriptions = await self._marked(session)
            if subscriptions and self.before_backlog is not None:
                # In a cluster, a process that has not yet applied this
                # session's registration keeps a message for it offline —
                # and leaves the mark, already set: a backlog read before that
                # message and ending after it moved the mark past it, unsent.
                # So every process applies the registration first; from then
                # on each routes here (the message waits behind the backlog),
                # and what one kept offline before is stored: read below.
                barrier = self.before_backlog(session)
                if barrier is not None:
                    await barrier
                if session not in self.flushing:
                    return  # it ended meanwhile (up to the reply timeout): the marks stay
                subscriptions = await self._marked(session)  # (a mark may have moved, or been set)
            for subscription in subscriptions:
                subscription = await self.window.locked(subscription.node_id, self.window.fold, subscription)
                if subscription is None or not subscription.options.get(OFFLINE_MARK):
                    continue
                if not await self._flush(session, subscription):
                    return  # the session ended: the marks stay where they are
        finally:
            self._release(session)

    async def _marked(self, session) -> list:
        """The session's conversations with messages waiting (or a stored window),
        once those on their way are marked (``PairPublisher.settled_for``)."""
        await (self.chat.publisher.settled_for(session.bare) or defer.succeed(None))
        subscriptions = await self.storage.get_entity_subscriptions(session.bare, self.pubsub_domain)
        return [s for s in subscriptions if (s.options.get(OFFLINE_MARK) or s.options.get(UNACKED_MARK))
                and self.chat.is_chat_node(s.service, s.node_id)]

    async def _flush(self, session, subscription) -> bool:
        node_id = subscription.node_id
        since = subscription.options[OFFLINE_MARK]
        first = await self.storage.get_items(self.pubsub_domain, node_id, [since])
        page = await self.storage.page_items(self.pubsub_domain, node_id)
        # The first missed message may have been trimmed by max_items since
        # (more waited than the node keeps): then everything kept waited.
        oldest = first[0].seq if first else 0
        waiting = [i for i in page.items if i.seq >= oldest and bare(i.publisher) != session.bare]
        gate = self.chat.delivery.gate
        if gate is not None:  # XEP-0191: what was waiting from whom one blocked since stays unsent
            waiting = [i for i in waiting if not gate.between(str(i.publisher), session.full)]
        recipient = Recipient(session.full, subscription)
        backlog = self.flushing.get(session)
        if subscription.via != VIA_LEGACY or node_id in session.interested or node_id in session.pubsub_nodes:
            # The XEP-0207 form: written as any notification is.
            if waiting:
                self.chat.delivery.deliver(self._event(node_id, waiting), [recipient])
            await self._move_mark(subscription, None)
            return True
        for start in range(0, len(waiting), BATCH):
            batch = waiting[start:start + BATCH]
            receipts = []
            rendering = self.chat.prepare(self._event(node_id, batch))
            for item, xml in zip(batch, rendering.stanzas_for(recipient, session)):
                if backlog is not None:
                    backlog.written.add(item.item_id)
                receipts.append(session.send_tracked(xml))
            if session.sm is not None:
                session.sm.request()  # the acks now, not at the next timer
            # The mark follows the acknowledgements as they come (one write per
            # <a/>, not per message): a crash loses none and repeats none.
            acked = persisted = 0
            for receipt in receipts:
                if not receipt.called and acked > persisted:
                    await self._move_mark(subscription, waiting[start + acked].item_id, session, start + acked)
                    persisted = acked
                if not await receipt:
                    break
                acked += 1
            following = waiting[start + acked] if start + acked < len(waiting) else None
            if acked > persisted or following is None:
                await self._move_mark(subscription, following.item_id if following else None, session,
                                      start + acked)
            if acked < len(batch):
                return False
        if not waiting:
            await self._move_mark(subscription, None)
        return True

    def _event(self, node_id: str, items) -> Event:
        return Event(self.pubsub_domain, node_id, ITEMS, items=tuple(items), node_kind=PairKind.name,
                     notification_type="normal", replay=True)

    async def _move_mark(self, subscription, item_id: str | None, session=None, delivered: int = 0) -> None:
        await self.window.locked(subscription.node_id, self.engine.set_offline_mark, Trusted(self.pubsub_domain),
                           subscription, item_id)
        if session is not None:
            log.msg(f"offline messages of {session.full} in {subscription.node_id}: {delivered} delivered"
                    f"{'' if item_id else ', none left'}")
