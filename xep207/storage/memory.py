"""``memory:`` — everything in dicts; for tests, benchmarks and throwaway servers."""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from typing import Sequence

from twisted.internet import defer
from zope.interface import implementer

from xep207.storage.interface import AccountExists, IStorage, NodeExists
from xep207.storage.records import (
    NONE,
    PENDING,
    SUBSCRIBED,
    Account,
    Affiliation,
    AffiliationName,
    Item,
    ItemPage,
    Node,
    NodeConfig,
    Subscription,
    bare,
)
from xep207.storage.paging import page_of

_Key = tuple[str, str]  # (service, node_id)


@implementer(IStorage)
class MemoryStorage:
    single_writer = True  # this process's dicts: node metadata may be cached (xep207.storage.cache)
    ordered_writes = True  # each operation is done when it returns

    def __init__(self, url: str = "memory:"):
        self.url = url
        self._nodes: dict[_Key, Node] = {}
        self._affiliations: defaultdict[_Key, dict[str, AffiliationName]] = defaultdict(dict)
        # (service, node_id) -> {subscriber jid: Subscription}
        self._subscriptions: defaultdict[_Key, dict[str, Subscription]] = defaultdict(dict)
        # bare jid -> {(service, node_id, subscriber jid)}
        self._by_entity: defaultdict[str, set[tuple[str, str, str]]] = defaultdict(set)
        self._items: defaultdict[_Key, dict[str, Item]] = defaultdict(dict)  # by id, oldest first
        self._accounts: dict[str, Account] = {}
        self._seq = itertools.count(1)

    def start(self) -> defer.Deferred[object]:
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[object]:
        return defer.succeed(None)

    # Nodes

    def create_node(self, node: Node) -> defer.Deferred[None]:
        key = (node.service, node.node_id)
        if key in self._nodes:
            return defer.fail(NodeExists(key))
        self._nodes[key] = node
        return defer.succeed(None)

    def get_node(self, service: str, node_id: str) -> defer.Deferred[Node | None]:
        return defer.succeed(self._nodes.get((service, node_id)))

    def list_nodes(self, service: str) -> defer.Deferred[list[str]]:
        return defer.succeed(sorted(n for s, n in self._nodes if s == service))

    def list_all_nodes(self) -> defer.Deferred[list[tuple[str, str]]]:
        return defer.succeed(sorted(self._nodes))

    def set_node_config(self, service: str, node_id: str,
                        config: NodeConfig) -> defer.Deferred[None]:
        key = (service, node_id)
        if key in self._nodes:
            self._nodes[key] = dataclasses.replace(self._nodes[key], config=config)
        return defer.succeed(None)

    def delete_node(self, service: str, node_id: str) -> defer.Deferred[None]:
        self._delete_node(service, node_id)
        return defer.succeed(None)

    def _delete_node(self, service: str, node_id: str) -> None:
        key = (service, node_id)
        self._nodes.pop(key, None)
        self._affiliations.pop(key, None)
        self._items.pop(key, None)
        for jid in self._subscriptions.pop(key, {}):
            self._by_entity[bare(jid)].discard((service, node_id, jid))

    # Affiliations

    def get_affiliations(self, service: str,
                         node_id: str) -> defer.Deferred[dict[str, AffiliationName]]:
        return defer.succeed(dict(self._affiliations.get((service, node_id), {})))

    def set_affiliation(self, service: str, node_id: str, entity: str,
                        affiliation: AffiliationName) -> defer.Deferred[None]:
        affiliations = self._affiliations[(service, node_id)]
        if affiliation == NONE:
            affiliations.pop(entity, None)
        else:
            affiliations[entity] = affiliation
        return defer.succeed(None)

    def get_entity_affiliations(self, entity: str,
                                service: str | None = None) -> defer.Deferred[list[Affiliation]]:
        found = [
            Affiliation(s, n, entity, affs[entity])
            for (s, n), affs in self._affiliations.items()
            if entity in affs and (service is None or s == service)
        ]
        return defer.succeed(sorted(found, key=lambda a: (a.service, a.node_id)))

    # Subscriptions

    def get_subscriptions(self, service: str, node_id: str) -> defer.Deferred[list[Subscription]]:
        return defer.succeed(list(self._subscriptions.get((service, node_id), {}).values()))

    def get_subscription(self, service: str, node_id: str,
                         subscriber: str) -> defer.Deferred[Subscription | None]:
        return defer.succeed(self._subscriptions.get((service, node_id), {}).get(subscriber))

    def set_subscription(self, subscription: Subscription) -> defer.Deferred[None]:
        s = subscription
        self._subscriptions[(s.service, s.node_id)][s.subscriber] = s
        self._by_entity[bare(s.subscriber)].add((s.service, s.node_id, s.subscriber))
        return defer.succeed(None)

    def set_subscription_option(self, service: str, node_id: str, subscriber: str, option: str,
                                value: object, only_if_unset: bool = False) -> defer.Deferred[Subscription | None]:
        """One option changed, the others kept (``SQLStorage.set_subscription_option``)."""
        current = self._subscriptions.get((service, node_id), {}).get(subscriber)
        if current is None or (only_if_unset and current.options.get(option)):
            return defer.succeed(current)
        options = {k: v for k, v in current.options.items() if k != option}
        if value is not None:
            options[option] = value
        changed = current.replace(options=options)
        self._subscriptions[(service, node_id)][subscriber] = changed
        return defer.succeed(changed)

    def answer_pending_subscription(self, service: str, node_id: str, subscriber: str,
                                    allow: bool) -> defer.Deferred[Subscription | None]:
        """Approve or remove a pending subscription (``SQLStorage.answer_pending_subscription``)."""
        current = self._subscriptions.get((service, node_id), {}).get(subscriber)
        if current is None or current.state != PENDING:
            return defer.succeed(None)
        if allow:
            answered = current.replace(state=SUBSCRIBED)
            self._subscriptions[(service, node_id)][subscriber] = answered
            return defer.succeed(answered)
        self.remove_subscription(service, node_id, subscriber)
        return defer.succeed(current.replace(state=NONE))

    def remove_subscription(self, service: str, node_id: str,
                            subscriber: str) -> defer.Deferred[None]:
        self._subscriptions.get((service, node_id), {}).pop(subscriber, None)
        self._by_entity[bare(subscriber)].discard((service, node_id, subscriber))
        return defer.succeed(None)

    def get_entity_subscriptions(self, entity: str, service: str | None = None,
                                 node_id: str | None = None) -> defer.Deferred[list[Subscription]]:
        found = []
        for s, n, jid in self._by_entity.get(entity, ()):
            if (service is None or s == service) and (node_id is None or n == node_id):
                found.append(self._subscriptions[(s, n)][jid])
        found.sort(key=lambda x: (x.service, x.node_id, x.subscriber))
        return defer.succeed(found)

    # Items

    def put_item(self, service: str, node_id: str, item: Item,
                 max_items: int | None) -> defer.Deferred[Item]:
        items = self._items[(service, node_id)]
        items.pop(item.item_id, None)
        stored = Item(item.item_id, item.payload, item.publisher, item.published, next(self._seq))
        items[item.item_id] = stored
        if max_items is not None:
            while len(items) > max_items:
                del items[next(iter(items))]
        return defer.succeed(stored)

    def get_items(self, service: str, node_id: str,
                  item_ids: Sequence[str]) -> defer.Deferred[list[Item]]:
        items = self._items.get((service, node_id), {})
        found = [items[i] for i in item_ids if i in items]
        found.sort(key=lambda i: i.seq)
        return defer.succeed(found)

    def page_items(self, service: str, node_id: str, limit: int | None = None,
                   after: str | None = None, before: str | None = None) -> defer.Deferred[ItemPage]:
        items = list(self._items.get((service, node_id), {}).values())
        return defer.succeed(page_of(items, limit, after, before))

    def delete_items(self, service: str, node_id: str,
                     item_ids: Sequence[str]) -> defer.Deferred[list[str]]:
        items = self._items.get((service, node_id), {})
        deleted = [i for i in item_ids if items.pop(i, None) is not None]
        return defer.succeed(deleted)

    def purge_items(self, service: str, node_id: str) -> defer.Deferred[None]:
        self._items.pop((service, node_id), None)
        return defer.succeed(None)

    # Accounts

    def create_account(self, account: Account) -> defer.Deferred[None]:
        if account.jid in self._accounts:
            return defer.fail(AccountExists(account.jid))
        self._accounts[account.jid] = account
        return defer.succeed(None)

    def get_account(self, jid: str) -> defer.Deferred[Account | None]:
        return defer.succeed(self._accounts.get(jid))

    def update_account(self, account: Account) -> defer.Deferred[None]:
        self._accounts[account.jid] = account
        return defer.succeed(None)

    def delete_account(self, jid: str) -> defer.Deferred[None]:
        self._accounts.pop(jid, None)
        for service, node_id in [k for k in self._nodes if k[0] == jid]:
            self._delete_node(service, node_id)
        for s, n, sub in list(self._by_entity.pop(jid, ())):
            self._subscriptions.get((s, n), {}).pop(sub, None)
        for affiliations in self._affiliations.values():
            affiliations.pop(jid, None)
        return defer.succeed(None)

    def list_accounts(self, domain: str | None = None) -> defer.Deferred[list[str]]:
        return defer.succeed(
            sorted(j for j, a in self._accounts.items() if domain is None or a.domain == domain)
        )

