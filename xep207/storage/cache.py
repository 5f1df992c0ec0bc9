"""A read-through cache of node metadata in front of a single-writer backend.

The publish path reads a node, its affiliations and its subscriptions for
every notification; items change far more often than those. With SQLite each
read is a trip through the database thread, so the embedded default keeps
them here, invalidated by every write that passes through this wrapper. All
of xep207 shares one storage object, so no write goes around it.

Only for backends one process writes to: a database several xep207
processes share (PostgreSQL) could change under the cache, so it is not used
there.

Every login reads the account (``get_login_account``), and every logout the
account's subscriptions (the rooms it is in): those are kept too (``_Reads``),
so that a login on SQLite does not cross to the database thread twice (issue 13). A name without
an account is remembered as such, like one with: whether a lookup is
answered from here says only that the name was asked for lately, never
whether it exists (SASL's decoys keep the rest of the exchange alike).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from twisted.internet import defer
from zope.interface import implementer

from xep207.storage.interface import IStorage
from xep207.storage.records import bare

_MISSING = object()


class _Reads:
    """Read results by key, the least recently used dropped once their total
    ``weight`` passes ``limit`` (a result's weight: how many records it holds,
    so that a few large answers cannot hold more memory than many small ones).

    ``token(key)`` is taken before reading the backend and ``keep`` stores
    the result only if no write to that key (``forget``) or ``clear`` came
    in between: a read that raced a write may have seen the old data."""

    def __init__(self, limit: int):
        self.limit = limit
        self._entries: OrderedDict = OrderedDict()  # key -> (value, weight)
        self._weight = 0
        self._writes: dict = {}  # key -> writes seen while a read of it may be in flight
        self._epoch = 0

    def get(self, key):
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        self._entries.move_to_end(key)
        return entry[0]

    def token(self, key) -> tuple[int, int]:
        return self._epoch, self._writes.get(key, 0)

    def keep(self, key, token: tuple[int, int], value, weight: int = 1) -> None:
        if token != (self._epoch, self._writes.get(key, 0)) or weight > self.limit:
            return
        self._drop(key)
        self._entries[key] = (value, weight)
        self._weight += weight
        while self._weight > self.limit:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._weight -= dropped

    def _drop(self, key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._weight -= entry[1]

    def forget(self, key) -> None:
        self._writes[key] = self._writes.get(key, 0) + 1
        self._drop(key)
        if len(self._writes) > self.limit:  # (only a race needs the count: restart it)
            self._writes.clear()
            self._epoch += 1

    def clear(self) -> None:
        self._entries.clear()
        self._weight = 0
        self._writes.clear()
        self._epoch += 1

    def forget_stale(self, stale: Callable[[Any], bool]) -> None:
        """Forget the entries whose value ``stale`` says a write changed, and
        let no read in flight be kept (which keys it changes is known only
        of what is here): the other entries stay."""
        for key in [key for key, (value, _) in self._entries.items() if stale(value)]:
            self._drop(key)
        self._writes.clear()
        self._epoch += 1

    def around(self, written: defer.Deferred, key=_MISSING,
               stale: Callable[[Any], bool] | None = None) -> defer.Deferred:
        """Forget ``key``, or with ``stale`` the entries it picks, now and once
        ``written`` fired: a read that started meanwhile saw the old data."""
        def forget(result=None):
            if stale is None:
                self.forget(key)
            else:
                self.forget_stale(stale)
            return result

        forget()
        return written.addBoth(forget)


@implementer(IStorage)
class CachingStorage:
    def __init__(self, backend, max_nodes: int = 20000, max_subscriptions: int = 20000):
        self.backend = backend
        self.url = backend.url
        self.max_nodes = max_nodes
        self._entries: OrderedDict = OrderedDict()  # (kind, service, node) -> value
        self._generation: dict = {}  # (service, node) -> writes seen, to drop racing reads
        self._epoch = 0  # bumped when everything is forgotten at once
        self.put_item = backend.put_item  # (every message: no ``__getattr__`` on the way)
        self._accounts = _Reads(max_nodes)  # bare JID -> Account, or None: no such account
        # bare JID -> {(service, node_id) asked for: that entity's subscriptions}, at most
        # ``max_subscriptions`` of them in all (a roster's worth each: a few MB, not a table's copy)
        self._by_entity = _Reads(max_subscriptions)

    def __getattr__(self, name):
        # Everything not cached passes straight through (items, get_account, other entity queries).
        return getattr(self.backend, name)

    # Cached reads -----------------------------------------------------------------

    def _cached(self, kind, service, node_id, read, copy):
        key = (kind, service, node_id)
        value = self._entries.get(key, _MISSING)
        if value is not _MISSING:
            self._entries.move_to_end(key)
            return defer.succeed(copy(value))
        generation = (self._epoch, self._generation.get((service, node_id), 0))

        def remember(result):
            if (self._epoch, self._generation.get((service, node_id), 0)) == generation:
                self._entries[key] = result
                if len(self._entries) > self.max_nodes * 3:
                    self._entries.popitem(last=False)
            return copy(result)

        return read(service, node_id).addCallback(remember)

    def get_node(self, service, node_id):
        return self._cached("node", service, node_id, self.backend.get_node, lambda n: n)

    def get_affiliations(self, service, node_id):
        return self._cached("affiliations", service, node_id, self.backend.get_affiliations, dict)

    def get_subscriptions(self, service, node_id):
        return self._cached("subscriptions", service, node_id, self.backend.get_subscriptions, list)

    def get_subscription(self, service, node_id, subscriber):
        def pick(subscriptions):
            return next((s for s in subscriptions if s.subscriber == subscriber), None)

        return self.get_subscriptions(service, node_id).addCallback(pick)

    def peek_node(self, service, node_id):
        """``(node, affiliations, subscriptions)`` of an existing node when all
        three are cached, else None: the engine's publish path reads them
        without a Deferred. The objects are the cache's own: read, never change."""
        entries = self._entries
        node = entries.get(("node", service, node_id))
        if node is None or node is _MISSING:
            return None
        affiliations = entries.get(("affiliations", service, node_id))
        subscriptions = entries.get(("subscriptions", service, node_id))
        if affiliations is None or subscriptions is None:
            return None
        return node, affiliations, subscriptions

    def get_login_account(self, jid):
        """``get_account`` for a login (SASL), from memory when read lately.
        ``get_account`` itself still reads the database: account changes
        begin with it, so that they are refused before anything is done
        when the database cannot be written. While the database fails, a
        login asks it too, and is refused as everything else is."""
        if self._failing():
            return self.backend.get_account(jid)
        account = self._accounts.get(jid)
        if account is not _MISSING:
            return defer.succeed(account)
        token = self._accounts.token(jid)

        def remember(account):
            self._accounts.keep(jid, token, account)
            return account

        return self.backend.get_account(jid).addCallback(remember)

    def get_entity_subscriptions(self, entity, service=None, node_id=None):
        query = (service, node_id)
        known = self._by_entity.get(entity)
        if known is not _MISSING and query in known and not self._failing():
            return defer.succeed(list(known[query]))
        token = self._by_entity.token(entity)

        def remember(subscriptions):
            answers = self._by_entity.get(entity)
            answers = {**({} if answers is _MISSING else answers), query: subscriptions}
            self._by_entity.keep(entity, token, answers, sum(1 + len(found) for found in answers.values()))
            return list(subscriptions)

        return self.backend.get_entity_subscriptions(entity, service, node_id).addCallback(remember)

    def _failing(self) -> bool:
        """Whether the database's last answer was that it cannot be used now
        (``xep207.metrics.TimedStorage`` keeps track)."""
        return getattr(self.backend, "unavailable", False)

    # Writes invalidate ------------------------------------------------------------

    def _forget(self, service, node_id, *kinds):
        key = (service, node_id)
        self._generation[key] = self._generation.get(key, 0) + 1
        for kind in kinds or ("node", "affiliations", "subscriptions"):
            self._entries.pop((kind, service, node_id), None)

    def _write(self, result_deferred, service, node_id, *kinds):
        self._forget(service, node_id, *kinds)
        # Forget again once written: a read that started meanwhile saw old data.
        return result_deferred.addBoth(lambda result: self._forget(service, node_id, *kinds) or result)

    def create_node(self, node):
        return self._write(self.backend.create_node(node), node.service, node.node_id)

    def set_node_config(self, service, node_id, config):
        return self._write(self.backend.set_node_config(service, node_id, config), service, node_id, "node")

    def delete_node(self, service, node_id):
        # Its subscriptions go with it, and nothing else: exactly the answers
        # kept that hold one of them change (the others stay); answers still
        # being read are not kept.
        def holds_one(answers) -> bool:
            return any(s.node_id == node_id and s.service == service for found in answers.values() for s in found)

        return self._write(self._by_entity.around(self.backend.delete_node(service, node_id), stale=holds_one),
                           service, node_id)

    def set_affiliation(self, service, node_id, entity, affiliation):
        return self._write(self.backend.set_affiliation(service, node_id, entity, affiliation),
                           service, node_id, "affiliations")

    def set_subscription(self, subscription):
        return self._write_subscription(self.backend.set_subscription(subscription),
                                        subscription.service, subscription.node_id, subscription.subscriber)

    # A backend's writes beyond IStorage are here exactly when the backend has
    # them (a property raising AttributeError: ``hasattr`` says False), so that
    # whoever asks (the engine, the contract's tests) falls back alike with
    # the cache in front of a backend written against IStorage alone.

    @property
    def set_subscription_option(self):
        change = self.backend.set_subscription_option

        def set_subscription_option(service, node_id, subscriber, option, value, only_if_unset=False):
            return self._write_subscription(change(service, node_id, subscriber, option, value, only_if_unset),
                                            service, node_id, subscriber)
        return set_subscription_option

    @property
    def answer_pending_subscription(self):
        answer = self.backend.answer_pending_subscription

        def answer_pending_subscription(service, node_id, subscriber, allow):
            return self._write_subscription(answer(service, node_id, subscriber, allow),
                                            service, node_id, subscriber)
        return answer_pending_subscription

    def remove_subscription(self, service, node_id, subscriber):
        return self._write_subscription(self.backend.remove_subscription(service, node_id, subscriber),
                                        service, node_id, subscriber)

    def _write_subscription(self, result_deferred, service, node_id, subscriber):
        return self._write(self._by_entity.around(result_deferred, bare(subscriber)),
                           service, node_id, "subscriptions")

    def create_account(self, account):
        return self._accounts.around(self.backend.create_account(account), account.jid)

    def update_account(self, account):
        return self._accounts.around(self.backend.update_account(account), account.jid)

    def delete_account(self, jid):
        # Its PEP nodes go, with everyone's subscriptions to them: every entity's answers change.
        def clear(result=None):
            self._entries.clear()
            self._epoch += 1
            self._accounts.forget(jid)
            self._by_entity.clear()
            return result

        clear()
        return self.backend.delete_account(jid).addBoth(clear)


def with_cache(storage):
    """The storage a server should use: cached when one process owns it."""
    return CachingStorage(storage) if getattr(storage, "single_writer", False) else storage
