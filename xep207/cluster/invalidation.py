"""Caches each process keeps, brought up to date everywhere when one process
writes — before the writer is answered.

- The router remembers which accounts exist (every stanza to a local JID
  asks): an account removed on one process is forgotten — and its sessions
  closed — on all of them; and which accounts' credentials were revoked (a
  password changed, an account removed): a stream that began authenticating
  before may bind on no process.
- The engine's block index (XEP-0191, ``xep207.pubsub.blocking``) holds every
  account's block list in memory, kept by the engine's own events — which fire
  only in the process that wrote. A change to a ``blocklist`` node sends that
  account's whole list to every other process.
- The XEP-0153 photo hash of each account online (``xep207.legacy.vcard``,
  stamped on every presence its sessions send): a vCard written on one
  process is the new hash on all of them (and their sessions' presence is
  sent again, XEP-0153 §4.3, as the writing process does for its own).

Invalidate before answering: the engine waits (``Engine.answer_barrier``),
and the account changes wait (``xep207.server.account_control``),
until every other live process said it applied the change (``applied``, on
the writer's own channel) before the request that made it is answered. So
once a client has its ``<iq type='result'/>`` for a block, no process lets
the blocked contact through. A process that does not answer within the
link's reply timeout is dying or cut off (it will be reaped, or rejoin and
reload): the writer is answered anyway, and says so in its log.

Node metadata is not cached at all over a shared database
(``xep207.storage.cache.with_cache`` caches only single-writer backends, and
the cluster refuses those): every other read goes to PostgreSQL.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.python import log

from xep207.cluster.link import ClusterUnavailable
from xep207.pubsub.kinds.blocklist import BLOCKLIST_NODE
from xep207.pubsub.kinds.personal import VCARD_NODE

if TYPE_CHECKING:
    from xep207.cluster.node import Cluster


class _Waiting:
    """One change sent: how many processes must say they applied it."""

    def __init__(self) -> None:
        self.done: defer.Deferred = defer.Deferred()
        self.expected: int | None = None  # known once PUBLISH answers
        self.applied = 0

    def check(self) -> None:
        if self.expected is not None and self.applied >= self.expected and not self.done.called:
            self.done.callback(None)


class Invalidation:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        router = cluster.router
        self._forget_here = router.forget_account
        router.forget_account = self.forget  # every caller (XEP-0077, xep207ctl, XEP-0133) reaches all
        self._revoke_here = router.revoke_credentials
        router.revoke_credentials = self.revoke
        cluster.server.engine.answer_barrier = self.before_answer
        cluster.server.chat.offline.before_backlog = self.before_backlog
        self._ids = itertools.count(1)
        self._waiting: dict[str, _Waiting] = {}

    def _send(self, message: dict, what: str) -> defer.Deferred:
        """Fires once every other live process applied ``message`` (or after
        the reply timeout, or at once when Redis is unreachable)."""
        cluster = self.cluster
        cluster.stats["invalidations-sent"] += 1
        query = f"{cluster.name}:{next(self._ids)}"
        waiting = self._waiting[query] = _Waiting()

        def heard(listeners) -> None:
            waiting.expected = max(0, int(listeners or 0) - 1)  # (ourselves among the listeners)
            waiting.check()

        def unreachable(failure) -> None:
            failure.trap(ClusterUnavailable)
            log.msg(f"cluster: {what} while Redis is unreachable; other processes reload it when it is back")
            waiting.expected = 0
            waiting.check()

        d = cluster.broadcast({**message, "n": cluster.name, "q": query})
        d.addCallbacks(heard, unreachable)
        d.addErrback(log.err, f"cluster: sending that {what}")

        def late(_):
            log.msg(f"cluster: {what}: {waiting.applied} of {waiting.expected} process(es) applied it "
                    f"within {cluster.link.reply_timeout}s; answering anyway")
            return None

        waiting.done.addTimeout(cluster.link.reply_timeout, cluster.reactor)
        waiting.done.addErrback(lambda f: f.trap(defer.TimeoutError) and late(f))
        waiting.done.addBoth(self._finished, query)
        return waiting.done

    def _finished(self, result, query: str):
        self._waiting.pop(query, None)
        return None

    # Accounts ------------------------------------------------------------------------

    def forget(self, bare: str) -> defer.Deferred:
        self._forget_here(bare)
        return self._send({"t": "forget", "j": bare}, f"{bare} removed")

    def revoke(self, bare: str, condition: str) -> defer.Deferred:
        """A password changed or an account removed: a stream that began
        authenticating before may not bind, on any process."""
        self._revoke_here(bare, condition)
        return self._send({"t": "revoke", "j": bare, "c": condition}, f"the credentials of {bare} revoked")

    # Engine writes ----------------------------------------------------------------------

    def before_answer(self, node) -> defer.Deferred | None:
        """``Engine.answer_barrier``: after a write (and its hooks, so this
        process's own copies are current), what the others must apply."""
        server = self.cluster.server
        engine = server.engine
        if node.node_id == BLOCKLIST_NODE and engine.is_pep(node.service):
            return self._send({"t": "blocks", "a": node.service, "l": sorted(engine.blocks.of(node.service))},
                              f"the block list of {node.service} changed")
        avatars = getattr(server, "avatars", None)
        if node.node_id == VCARD_NODE and avatars is not None and engine.is_pep(node.service):
            return self._send({"t": "avatar", "a": node.service}, f"the vCard of {node.service} changed")
        return None

    # Sessions --------------------------------------------------------------------------

    def before_backlog(self, session) -> defer.Deferred:
        """Before an initial presence's offline backlog is read: every other
        process has applied the session's registration (sent before this on
        the same connection and channel, so applied before this is answered),
        so none of them still keeps a message for it offline behind the
        backlog's back (``OfflineDelivery._deliver_offline``)."""
        return self._send({"t": "seen", "j": session.full}, f"{session.full} available")

    # In ---------------------------------------------------------------------------------

    def received(self, message: dict) -> None:
        kind = message.get("t")
        server = self.cluster.server
        if kind == "forget":
            self._forget_here(str(message["j"]))
        elif kind == "revoke" and message.get("c") in ("reset", "not-authorized"):
            self._revoke_here(str(message["j"]), str(message["c"]))
        elif kind == "blocks":
            account, jids = str(message["a"]), message.get("l")
            engine = server.engine
            if engine.is_pep(account) and isinstance(jids, list):
                engine.blocks.replace(account, {str(jid) for jid in jids})
        elif kind == "avatar":
            account = str(message["a"])
            avatars = getattr(server, "avatars", None)
            if avatars is not None and server.engine.is_pep(account):
                # Read again before saying so: the next presence of our sessions carries it.
                done = self.cluster.work.track(defer.ensureDeferred(_reload_photo_hash(avatars, account)))
                done.addErrback(log.err, f"cluster: reloading the photo hash of {account}")
                done.addBoth(lambda _: self._applied(message))
                return
        self._applied(message)

    def _applied(self, message: dict) -> None:
        sender, query = message.get("n"), message.get("q")
        if isinstance(sender, str) and isinstance(query, str):
            d = self.cluster.publish(sender, '{"t":"applied","q":' + _quoted(query) + "}")
            d.addErrback(lambda f: f.trap(ClusterUnavailable))

    def applied(self, message: dict) -> None:
        """Another process applied one of our changes."""
        waiting = self._waiting.get(str(message.get("q")))
        if waiting is not None:
            waiting.applied += 1
            waiting.check()


async def _reload_photo_hash(avatars, account: str) -> None:
    """Another process wrote the account's vCard: read the hash again if it
    is held here (``_remember`` re-sends our sessions' presence when it
    changed, as the writing process does for its own)."""
    from xep207.legacy.vcard import VCARD_ITEM, photo_hash

    if account in avatars.hashes:
        _, vcard = await avatars._current(account, VCARD_NODE, VCARD_ITEM)
        avatars._remember(account, photo_hash(vcard))


def _quoted(text: str) -> str:
    import json

    return json.dumps(text)
