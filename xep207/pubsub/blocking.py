"""Who blocks whom (XEP-0191), in memory: the check every stanza and notification asks.

The truth is each account's ``blocklist`` node (``kinds/blocklist.py``); this
index is a copy kept current by the engine's own events (an item published,
items retracted, the node purged or deleted), loaded once at start-up. So a
check is a dict lookup and never a storage read, and the engine, the node
kinds, the delivery and the router all ask the same question.

JIDs match as XEP-0191 §3.5 says (XEP-0016 §2.1's order): a block of
``user@domain/resource`` stops that resource, ``user@domain`` every resource
of the account, ``domain/resource`` and ``domain`` whatever comes from there.
"""

from __future__ import annotations

from typing import Callable

from xep207.hooks import ITEM_PUBLISHED, ITEMS_RETRACTED, NODE_EMPTIED, Hooks
from xep207.pubsub.kinds.blocklist import BLOCKLIST_NODE

EMPTY: frozenset[str] = frozenset()


def forms_of(jid: str) -> tuple[str, ...]:
    """The list entries that would stop ``jid`` (XEP-0016 §2.1 matching)."""
    head, _, resource = jid.partition("/")
    user, at, domain = head.rpartition("@")
    if not at:
        return (jid, head) if resource else (head,)
    if resource:
        return jid, head, f"{domain}/{resource}", domain
    return head, domain


class BlockIndex:
    """Each account's blocked JIDs, as the engine last wrote them."""

    def __init__(self, hooks: Hooks, is_pep) -> None:
        # Account → the JIDs it blocked; read by the hot paths as ``if not
        # index.lists`` (nobody blocks anybody: a dict's truth, no call). Read only.
        self.lists: dict[str, set[str]] = {}
        self._is_pep = is_pep
        # Called after each change with (account, JIDs added, JIDs removed):
        # the XEP-0191 pushes and presence consequences, whichever door wrote.
        self.listeners: list[Callable[[str, frozenset[str], frozenset[str]], object]] = []
        # The same, when another process of a cluster changed a list (xep207.cluster):
        # only what concerns this process's own sessions (the pushes) runs here.
        self.elsewhere_listeners: list[Callable[[str, frozenset[str], frozenset[str]], object]] = []
        hooks.add(ITEM_PUBLISHED, self._published, priority=1000, kinds=("blocklist",))
        hooks.add(ITEMS_RETRACTED, self._retracted, priority=1000)
        hooks.add(NODE_EMPTIED, self._emptied, priority=1000)

    def __bool__(self) -> bool:
        """Whether anybody blocks anything (the common case, no, costs nothing)."""
        return bool(self.lists)  # (hot paths test ``lists`` itself)

    def of(self, account: str) -> frozenset[str] | set[str]:
        return self.lists.get(account, EMPTY)

    def blocks(self, account: str, jid: str) -> bool:
        """Whether ``account`` (a bare JID) blocked ``jid``."""
        entries = self.lists.get(account)
        if not entries or not jid:
            return False
        return any(form in entries for form in forms_of(jid))

    def replace(self, account: str, jids: set[str]) -> None:
        """``account``'s list as another process of a cluster wrote it
        (xep207.cluster.invalidation); that process ran ``listeners``, this one
        runs ``elsewhere_listeners``."""
        before = frozenset(self.lists.get(account, EMPTY))
        if jids:
            self.lists[account] = set(jids)
        else:
            self.lists.pop(account, None)
        added, removed = frozenset(jids) - before, before - frozenset(jids)
        for listener in self.elsewhere_listeners:
            if added:
                listener(account, added, EMPTY)
            if removed:
                listener(account, EMPTY, removed)

    async def load(self, storage) -> None:
        """At start-up, before any session: every account's list, once."""
        for service, node_id in await storage.list_all_nodes():
            if node_id == BLOCKLIST_NODE and self._is_pep(service):
                page = await storage.page_items(service, node_id)
                if page.items:
                    self.lists[service] = {i.item_id for i in page.items}

    # The engine's events ----------------------------------------------------------

    def _mine(self, node) -> bool:
        return node.node_id == BLOCKLIST_NODE and self._is_pep(node.service)

    def _published(self, node, item, requestor) -> None:
        if self._mine(node):
            entries = self.lists.setdefault(node.service, set())
            if item.item_id not in entries:
                entries.add(item.item_id)
                self._changed(node.service, frozenset({item.item_id}), EMPTY)

    def _retracted(self, node, item_ids, requestor) -> None:
        if self._mine(node):
            entries = self.lists.get(node.service, set())
            removed = frozenset(entries.intersection(item_ids))
            entries.difference_update(removed)
            if not entries:
                self.lists.pop(node.service, None)
            if removed:
                self._changed(node.service, EMPTY, removed)

    def _emptied(self, node, requestor) -> None:
        if self._mine(node):
            removed = frozenset(self.lists.pop(node.service, ()))
            if removed:
                self._changed(node.service, EMPTY, removed)

    def _changed(self, account: str, added: frozenset[str], removed: frozenset[str]) -> None:
        for listener in self.listeners:
            listener(account, added, removed)
