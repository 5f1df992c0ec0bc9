"""How a message on a pair node reaches sessions that never speak pubsub (RFC 6121 §8.5).

``ChatCapture.prepare`` makes one ``PairRendering`` per event; the delivery
(``xep207.legacy.delivery``) asks it, per recipient and session, what to write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xep207.pubsub.kinds.pair import NS_SID
from xep207.storage.records import bare
from xep207.xmlutil import addressed_to, quoteattr, stamp, with_child

if TYPE_CHECKING:
    from xep207.legacy.chat import ChatCapture

NS_DELAY = "urn:xmpp:delay"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"

class PairRendering:
    """A message on a pair node, as RFC 6121 delivers it: to the addressed
    resource (else the highest-priority ones) of the other party, with
    XEP-0280 carbons to the parties' other resources; replays (offline
    delivery) carry an XEP-0203 delay."""

    def __init__(self, chat: ChatCapture, event):
        self.chat = chat
        self.event = event
        self.replay = event.replay
        self.items = []
        # Whether some item is addressed to a full JID: only then can an
        # unavailable session be addressed (else ``addressed_sessions`` is []).
        self._to_full = False
        for item in event.items:
            payload = item.payload
            if self.replay:
                payload = with_child(payload, f"<delay xmlns='{NS_DELAY}' from={quoteattr(chat.router.domain)}"
                                              f" stamp='{stamp(item.published)}'/>")
            addressed = addressed_to(item.payload)
            if "/" in addressed:
                self._to_full = True
            self.items.append((item.publisher, item.publisher.split("/", 1)[0], addressed, payload, item.item_id))
        self._targets: dict[str, tuple[str, list]] = {}  # recipient JID → ``_targets_of``
        self._stamped: dict[tuple[str, str], str] = {}

    def _with_stanza_id(self, payload: str, item_id: str, party: str) -> str:
        """XEP-0359/XEP-0313: the id the party's archive knows the message by
        (serialized once per party and item)."""
        key = (party, item_id)
        found = self._stamped.get(key)
        if found is None:
            found = self._stamped[key] = with_child(
                payload, f"<stanza-id xmlns='{NS_SID}' id={quoteattr(item_id)} by={quoteattr(party)}/>")
        return found

    def _targets_of(self, jid: str) -> tuple[str, list]:
        """The party, and per item the sessions it is addressed to (None: it
        sent it; a replay). Callers look in ``_targets`` first (a call less)."""
        party = jid.split("/", 1)[0]
        targets: list = []
        for _, sender_bare, addressed, _, _ in self.items:  # (a loop: one item, nearly always)
            targets.append(None if self.replay or party == sender_bare else self._sessions_addressed(addressed, party))
        found = self._targets[jid] = (party, targets)
        return found

    def _sessions_addressed(self, addressed: str, party: str) -> list:
        """RFC 6121 §8.5.3.2/§8.5.2.1.1: the addressed resource if it is online,
        else the available resources of highest (non-negative) priority."""
        router = self.chat.router
        if "/" in addressed and bare(addressed) == party:
            session = router.session(addressed)
            if session is not None:
                return [session]
        return router.deliverable_resources(party)

    def stanzas_for(self, recipient, session) -> list[str]:
        party, targets_of = self._targets.get(recipient.jid) or self._targets_of(recipient.jid)
        replay = self.replay
        stanzas = []
        for (sender, sender_bare, addressed, payload, item_id), targets in zip(self.items, targets_of):
            if replay or (targets is not None and session in targets):
                xml = self._with_stanza_id(payload, item_id, party)
                if replay or not self.chat.offline.hold(session, xml, item_id, self.event.node_id):
                    stanzas.append(xml)  # (else it waits behind the backlog, or is sent tracked)
            elif session.carbons and session.full != sender:
                direction = "sent" if party == sender_bare else "received"
                stanzas.append(carbon(payload, session, direction))
        return stanzas

    def addressed_sessions(self, recipient) -> list:
        if not self._to_full or self.replay:
            return []  # (the highest-priority available resources: available, all of them)
        found = []
        for targets in (self._targets.get(recipient.jid) or self._targets_of(recipient.jid))[1]:
            for s in targets or ():
                if not s.available:
                    found.append(s)
        return found

    def missed(self, recipient) -> bool:
        if self.replay:
            return False
        party, targets_of = self._targets.get(recipient.jid) or self._targets_of(recipient.jid)
        for (_, sender_bare, _, _, _), targets in zip(self.items, targets_of):
            if party != sender_bare and not targets:
                return True
        return False


def carbon(payload: str, session, direction: str) -> str:
    """XEP-0280: a copy, ``sent`` or ``received``, for another of a party's sessions."""
    return (f"<message from={quoteattr(session.bare)} to={quoteattr(session.full)} type='chat'>"
            f"<{direction} xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>{payload}"
            f"</forwarded></{direction}></message>")
