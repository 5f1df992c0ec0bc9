"""The storage interface every backend provides.

Every method returns a Deferred. Backends store and return the records of
``xep207.storage.records``; they do no access control and send nothing. A
backend must never block the reactor: do I/O in a thread or asynchronously.

``xep207.testing.StorageContract`` is the executable form of this contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from xep207.storage.records import (
        Account,
        Affiliation,
        AffiliationName,
        Item,
        ItemPage,
        Node,
        NodeConfig,
        Subscription,
    )


class NodeExists(Exception):
    """``create_node`` for a (service, node_id) that is already there."""


class AccountExists(Exception):
    """``create_account`` for a JID that is already registered."""


class StorageUnavailable(Exception):
    """The database cannot be reached now; the operation did nothing."""


class IStorage(Interface):
    url = Attribute("The URL this backend was opened with (no password).")

    def start() -> Deferred[object]:
        """Open connections, create or migrate the schema. Fires when ready."""

    def stop() -> Deferred[object]:
        """Close; fires when every acknowledged write is durable."""

    # Nodes ---------------------------------------------------------------

    def create_node(node: Node) -> Deferred[None]:
        """Store a new ``Node``; fails with ``NodeExists`` if present."""

    def get_node(service: str, node_id: str) -> Deferred[Node | None]:
        """The ``Node``, or None."""

    def list_nodes(service: str) -> Deferred[list[str]]:
        """Node ids of one service, sorted."""

    def list_all_nodes() -> Deferred[list[tuple[str, str]]]:
        """Every (service, node_id) in the store, sorted (for migration and admin)."""

    def set_node_config(service: str, node_id: str, config: NodeConfig) -> Deferred[None]:
        """Replace a node's ``NodeConfig``."""

    def delete_node(service: str, node_id: str) -> Deferred[None]:
        """Remove a node with its items, subscriptions and affiliations."""

    # Affiliations --------------------------------------------------------

    def get_affiliations(service: str, node_id: str) -> Deferred[dict[str, AffiliationName]]:
        """A dict {entity (bare JID): affiliation} of one node."""

    def set_affiliation(service: str, node_id: str, entity: str,
                        affiliation: AffiliationName) -> Deferred[None]:
        """Set an entity's affiliation; ``"none"`` removes it."""

    def get_entity_affiliations(entity: str,
                                service: str | None = None) -> Deferred[list[Affiliation]]:
        """``Affiliation`` records of a bare JID, on one service or on all."""

    # Subscriptions -------------------------------------------------------

    def get_subscriptions(service: str, node_id: str) -> Deferred[list[Subscription]]:
        """Every ``Subscription`` to a node, in any state."""

    def get_subscription(service: str, node_id: str,
                         subscriber: str) -> Deferred[Subscription | None]:
        """The ``Subscription`` of this exact JID (bare or full), or None."""

    def set_subscription(subscription: Subscription) -> Deferred[None]:
        """Insert or replace the subscription of (service, node, subscriber)."""

    def remove_subscription(service: str, node_id: str, subscriber: str) -> Deferred[None]:
        """Remove one subscription; no error if absent."""

    def get_entity_subscriptions(entity: str, service: str | None = None,
                                 node_id: str | None = None) -> Deferred[list[Subscription]]:
        """Subscriptions whose subscriber's bare JID is ``entity``."""

    # Items ---------------------------------------------------------------

    def put_item(service: str, node_id: str, item: Item, max_items: int | None) -> Deferred[Item]:
        """Store an ``Item`` (replacing one of the same id, which then counts
        as newest) and keep at most ``max_items`` (None: no limit), dropping
        the oldest, in one transaction. Fires with the stored ``Item``
        carrying its assigned ``seq``."""

    def get_items(service: str, node_id: str, item_ids: Sequence[str]) -> Deferred[list[Item]]:
        """The ``Item``s with these ids that exist, oldest first."""

    def page_items(service: str, node_id: str, limit: int | None = None, after: str | None = None,
                   before: str | None = None) -> Deferred[ItemPage]:
        """An ``ItemPage`` (oldest first). Without ``after``/``before``, the
        newest ``limit`` items; with ``after`` (an item id) those just newer;
        with ``before`` those just older (``before=""``: the last page)."""

    def delete_items(service: str, node_id: str, item_ids: Sequence[str]) -> Deferred[list[str]]:
        """Remove items; fires with the ids that were there."""

    def purge_items(service: str, node_id: str) -> Deferred[None]:
        """Remove every item of a node."""

    # Accounts ------------------------------------------------------------

    def create_account(account: Account) -> Deferred[None]:
        """Store a new ``Account``; fails with ``AccountExists``."""

    def get_account(jid: str) -> Deferred[Account | None]:
        """The ``Account`` of a bare JID, or None."""

    def update_account(account: Account) -> Deferred[None]:
        """Replace an existing account's credentials."""

    def delete_account(jid: str) -> Deferred[None]:
        """Remove the account and everything it owns: the nodes of its PEP
        service, its subscriptions and affiliations everywhere."""

    def list_accounts(domain: str | None = None) -> Deferred[list[str]]:
        """Bare JIDs of the accounts, sorted."""
