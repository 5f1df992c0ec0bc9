"""Caches each process keeps, brought up to date everywhere when one process writes.

- The router remembers which accounts exist (every stanza to a local JID
  asks): an account removed on one process is forgotten — and its sessions
  closed — on all of them.
- The engine's block index (XEP-0191, ``xep207.pubsub.blocking``) holds every
  account's block list in memory, kept by the engine's own events — which fire
  only in the process that wrote. A change to a ``blocklist`` node sends that
  account's whole list to every other process (the XEP-0191 pushes and presence
  consequences were sent by the writing process, cluster-wide).

Node metadata is not cached at all over a shared database
(``xep207.storage.cache.with_cache`` caches only single-writer backends, and
the cluster refuses those): every other read goes to PostgreSQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.python import log

from xep207.cluster.link import ClusterUnavailable
from xep207.hooks import ITEM_PUBLISHED, ITEMS_RETRACTED, NODE_EMPTIED
from xep207.pubsub.kinds.blocklist import BLOCKLIST_NODE

if TYPE_CHECKING:
    from xep207.cluster.node import Cluster


class Invalidation:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        router = cluster.router
        self._forget_here = router.forget_account
        router.forget_account = self.forget  # every caller (XEP-0077, xep207ctl, XEP-0133) reaches all
        engine = cluster.server.engine
        for name in (ITEM_PUBLISHED, ITEMS_RETRACTED, NODE_EMPTIED):
            engine.hooks.add(name, self._written)

    def _send(self, message: dict, what: str) -> None:
        self.cluster.stats["invalidations-sent"] += 1
        d = self.cluster.broadcast({**message, "n": self.cluster.name})
        d.addErrback(lambda f: f.trap(ClusterUnavailable) and log.msg(
            f"cluster: {what} while Redis is unreachable; other processes learn it on restart"))

    # Accounts ------------------------------------------------------------------------

    def forget(self, bare: str) -> None:
        self._forget_here(bare)
        self._send({"t": "forget", "j": bare}, f"{bare} removed")

    # Block lists ----------------------------------------------------------------------

    def _written(self, node, *rest) -> None:
        """After the index took the change here (its handlers run first): the
        whole list goes, so that the other processes apply it at once, in
        order with the stanzas this process sends them next."""
        engine = self.cluster.server.engine
        if node.node_id == BLOCKLIST_NODE and engine.is_pep(node.service):
            self._send({"t": "blocks", "a": node.service, "l": sorted(engine.blocks.of(node.service))},
                       f"the block list of {node.service} changed")

    # In ---------------------------------------------------------------------------------

    def received(self, message: dict) -> None:
        if message.get("t") == "forget":
            self._forget_here(str(message["j"]))
        elif message.get("t") == "blocks":
            account, jids = str(message["a"]), message.get("l")
            engine = self.cluster.server.engine
            if engine.is_pep(account) and isinstance(jids, list):
                engine.blocks.replace(account, {str(jid) for jid in jids})
