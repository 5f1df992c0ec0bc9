"""What a party's session was written and never received: kept offline, and pushed.

A managed session that ends with messages unacknowledged (the ``UNACKED``
hook), or one that ends while live messages waited behind its backlog
(``xep207.legacy.offline``): another available resource gets them (RFC 6121
§8.5.2.1.1), else each conversation's offline mark moves back to the earliest
of them that was stored, and each one stored is told ``KEPT_OFFLINE`` (XEP-0357
push: a phone whose connection died while its session waited for ``<resume/>``
is the case push exists for). Nothing is bounced.
"""

from __future__ import annotations

from twisted.python import log
from twisted.words.xish import domish

from xep207.hooks import KEPT_OFFLINE
from xep207.legacy.pair_rendering import NS_CARBONS
from xep207.pubsub.kinds import Trusted, pair_node_id
from xep207.pubsub.kinds.pair import NS_SID, OFFLINE_MARK, PairKind
from xep207.storage.records import bare

__all__ = ["Unreceived", "stanza_id_of"]


def stanza_id_of(message: domish.Element, party: str) -> str | None:
    """The archive id (XEP-0359) this server stamped for ``party``."""
    for child in message.elements(NS_SID, "stanza-id"):
        if child.getAttribute("by") == party:
            return child.getAttribute("id")
    return None


class Unreceived:
    def __init__(self, offline):
        self.router = offline.router
        self.engine = offline.engine
        self.storage = offline.storage
        self.pubsub_domain = offline.pubsub_domain
        self.window = offline.window

    async def requeue(self, session, stanzas) -> None:
        """RFC 6121 §8.5.2.1.1 for what the client never acknowledged: another
        available resource gets it, else it waits as an offline message."""
        messages = [s for s in stanzas if s.name == "message" and self._worth_keeping(s)]
        if not messages:
            return
        others = [s for s in self.router.deliverable_resources(session.bare) if s is not session]
        if others:
            for message in messages:
                for other in others:
                    copy = domish.Element((None, "message"), attribs=dict(message.attributes))
                    copy.children = list(message.children)
                    copy["to"] = other.full
                    other.send(copy)
            return
        await self.mark_back(session, messages)

    @staticmethod
    def _worth_keeping(message: domish.Element) -> bool:
        """Chat and normal messages with a body; chat states, groupchat
        (the room's history has it), headlines, errors and carbons are not kept."""
        if message.getAttribute("type", "normal") not in ("chat", "normal"):
            return False
        names = {(c.uri, c.name) for c in message.elements()}
        return any(name == "body" for _, name in names) and not any(uri == NS_CARBONS for uri, _ in names)

    async def mark_back(self, session, messages) -> None:
        """The mark of each conversation moves back to its earliest unreceived message."""
        unreceived: dict[str, list[str]] = {}  # node id → item ids, oldest first
        for message in messages:
            item_id = stanza_id_of(message, session.bare)
            sender = bare(message.getAttribute("from", ""))
            if item_id is None or not sender or sender == session.bare:
                continue
            unreceived.setdefault(pair_node_id(session.bare, sender), []).append(item_id)
        for node_id, item_ids in unreceived.items():
            try:
                await self.window.locked(node_id, self._mark_at_most, session.bare, node_id, item_ids)
            except Exception as exc:  # storage trouble: logged, the other conversations still tried
                log.msg(f"could not keep unacknowledged messages of {session.bare} in {node_id}: {exc}")

    async def _mark_at_most(self, party: str, node_id: str, item_ids: list[str]) -> None:
        """The earliest of ``item_ids`` stored, by ``seq`` (one delivered early may never be,
        and a native publish may arrive ahead of one stored before it); then
        ``KEPT_OFFLINE`` for each one stored (push: a session that dropped
        its connection and never came back is the phone push exists for)."""
        current = await self.storage.get_subscription(self.pubsub_domain, node_id, party)
        if current is None:
            return
        mark = current.options.get(OFFLINE_MARK)
        asked = [*item_ids, mark] if mark else item_ids
        items = {i.item_id: i for i in await self.storage.get_items(self.pubsub_domain, node_id, asked)}
        kept = [items[i] for i in item_ids if i in items]
        if not kept:
            return  # none was stored: nothing waits
        item_id = min(kept, key=lambda item: item.seq).item_id
        if item_id != mark and not (mark in items and items[mark].seq <= items[item_id].seq):
            await self.engine.set_offline_mark(Trusted(self.pubsub_domain), current, item_id)  # (lock held)
        node = await self.storage.get_node(self.pubsub_domain, node_id)
        if node is not None:
            for item in kept:
                self.engine.hooks.notify(KEPT_OFFLINE, node, item, party, kind=PairKind.name)
