"""Caches each process keeps, forgotten everywhere when one process writes.

The router remembers which accounts exist (every stanza to a local JID asks);
an account removed on one process must be forgotten — and its sessions
closed — on all of them. Node metadata is not cached at all over a shared
database (``xep207.storage.cache.with_cache`` caches only single-writer
backends, and the cluster refuses those), so there is nothing else to
invalidate: every other read goes to PostgreSQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.python import log

from xep207.cluster.link import ClusterUnavailable

if TYPE_CHECKING:
    from xep207.cluster.node import Cluster


class AccountInvalidation:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        router = cluster.router
        self._forget_here = router.forget_account
        router.forget_account = self.forget  # every caller (XEP-0077 cancel, admin) reaches all

    def forget(self, bare: str) -> None:
        self._forget_here(bare)
        self.cluster.stats["invalidations-sent"] += 1
        d = self.cluster.broadcast({"t": "forget", "n": self.cluster.name, "j": bare})
        d.addErrback(lambda f: f.trap(ClusterUnavailable) and log.msg(
            f"cluster: {bare} removed while Redis is unreachable; other processes forget it on restart"))

    def received(self, message: dict) -> None:
        self._forget_here(str(message["j"]))
