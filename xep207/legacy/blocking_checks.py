"""XEP-0191 §3.5–3.6 where stanzas and notifications pass: nothing between an
account and whom it blocked, whichever door it came through.

``BlockingCapture`` runs ahead of every other capture (chat would store the
message): the account writing to whom it blocked is told ``not-acceptable`` +
``<blocked/>``; a blocked sender's messages and iqs are refused
``service-unavailable`` (never stored, so never offline nor archived), the
rest is dropped. ``BlockGate`` is ``EventDelivery``'s per-session filter, for
every node kind. Both ask the engine's in-memory ``BlockIndex``.
"""

from __future__ import annotations

from xep207.hooks import STANZA
from xep207.pubsub import errors
from xep207.pubsub.blocking import BlockIndex, forms_of
from xep207.pubsub.events import RETRACT
from xep207.pubsub.kinds import PRESENCE_NODE
from xep207.pubsub.kinds.room import nick_of


PRIORITY = 90  # before every capture (chat would store the message), after PubSubUsage


def bare_of(jid: str) -> str:
    return jid.split("/", 1)[0]


class BlockingCapture:
    """The router's check for stanzas between an account and whom it blocked."""

    def __init__(self, router, index: BlockIndex):
        self.router = router
        self.index = index
        router.hooks.add(STANZA, self.intercept, priority=PRIORITY)

    def intercept(self, stanza) -> bool:
        index = self.index
        if not index.lists:
            return False  # nobody blocks anybody: one truth test per stanza
        sender, to = stanza.getAttribute("from"), stanza.getAttribute("to")
        if not sender or not to:
            return False
        sender_bare, to_bare = bare_of(sender), bare_of(to)
        if sender_bare == to_bare or self.router.domain in (sender_bare, to_bare):
            return False  # oneself, and one's own server, are never blocked
        kind = stanza.getAttribute("type")
        session = stanza.__dict__.get("session")
        if index.blocks(sender_bare, to):
            # §3.5: the account writes to whom it blocked.
            if session is not None and kind != "error" and not (stanza.name == "iq" and kind == "result"):
                session.send(errors.blocked().toResponse(stanza))
            # Errors the server makes on the account's behalf (a bounce) go out.
            return session is not None or kind != "error"
        if index.blocks(to_bare, sender):
            # §3.6: from whom the account blocked.
            if stanza.name == "message" and kind in (None, "normal", "chat"):
                if "/" in to and self.router.session(to) is not None:
                    return True  # a connected resource: an error would tell a room to kick it
                self.router.bounce(stanza, "service-unavailable")
            elif stanza.name == "iq" and kind in ("get", "set"):
                self.router.bounce(stanza, "service-unavailable")
            return True  # presence, results, errors, headlines: dropped
        return False


class BlockGate:
    """``EventDelivery``'s filter: who published an event, and whether a
    session is on the other side of a block from them."""

    def __init__(self, index: BlockIndex):
        self.index = index

    @staticmethod
    def senders(event) -> tuple[str, ...]:
        if event.node_kind == "room":
            # Occupants speak as room/nick (never as their real JID: filtering on
            # that would tell the blocker which nick is whom in a semi-anonymous room).
            room = f"{event.node_id}@{event.service}"
            nicks = (nick_of(item.payload) for item in event.items)
            return (room, *dict.fromkeys(f"{room}/{nick}" for nick in nicks if nick))
        found = []
        if "@" in event.service:
            found.append(event.service)  # an account's PEP node: the account speaks
            if event.kind == RETRACT and event.node_id == PRESENCE_NODE:
                found += [f"{event.service}/{r}" for r in event.retracted]
        found += [str(item.publisher) for item in event.items if item.publisher]
        return tuple(dict.fromkeys(found))

    def between(self, sender: str, recipient: str) -> bool:
        """Whether either side blocked the other (one's own account never)."""
        sender_bare, recipient_bare = bare_of(sender), bare_of(recipient)
        index = self.index
        return bool(index) and sender_bare != recipient_bare and (
            index.blocks(recipient_bare, sender) or index.blocks(sender_bare, recipient))

    def for_event(self, event) -> "EventGate | None":
        """The test for this event's recipients, or None when nothing can be blocked."""
        if not self.index.lists:
            return None
        senders = self.senders(event)
        if not senders:
            return None
        return EventGate(self.index, senders)


class EventGate:
    """``BlockGate.between`` for one event's senders and each of its recipients,
    with the lists looked up once per event: a recipient costs one dict lookup
    (its own list) when no sender's account blocks anybody — the common case.

    ``account(jid)`` is the whole test for a recipient JID; ``resource(full)``
    adds what only a session's full JID can match (a sender's block of that
    one resource), and is needed only when ``per_resource``.
    """

    __slots__ = ("_lists", "_senders", "_blocking", "per_resource")

    def __init__(self, index: BlockIndex, senders: tuple[str, ...]):
        self._lists = index.of
        self._senders = [(sender, bare_of(sender), forms_of(sender)) for sender in senders]
        # Senders whose account blocks somebody, with that list.
        self._blocking = [(sender_bare, entries) for _, sender_bare, entries in
                          ((s, b, index.of(b)) for s, b, _ in self._senders) if entries]
        self.per_resource = bool(self._blocking)

    def account(self, recipient: str) -> bool:
        """Whether ``recipient`` (bare or full) and a sender are on either side of a block."""
        recipient_bare = bare_of(recipient)
        own = self._lists(recipient_bare)
        if own:  # the recipient blocked a sender (XEP-0191 §3.6)
            for _, sender_bare, forms in self._senders:
                if sender_bare != recipient_bare and not own.isdisjoint(forms):
                    return True
        return self.resource(recipient) if self._blocking else False

    def resource(self, recipient: str) -> bool:
        """Whether a sender's account blocked ``recipient`` (§3.5)."""
        recipient_bare = bare_of(recipient)
        forms = None
        for sender_bare, entries in self._blocking:
            if sender_bare != recipient_bare:
                forms = forms or forms_of(recipient)
                if not entries.isdisjoint(forms):
                    return True
        return False
