"""The storage interface every backend provides.

Every method returns a Deferred. Backends store and return the records of
``xep207.storage.records``; they do no access control and send nothing. A
backend must never block the reactor: do I/O in a thread or asynchronously.

``xep207.testing.StorageContract`` is the executable form of this contract.
"""

from zope.interface import Attribute, Interface


class NodeExists(Exception):
    """``create_node`` for a (service, node_id) that is already there."""


class AccountExists(Exception):
    """``create_account`` for a JID that is already registered."""


class StorageUnavailable(Exception):
    """The database cannot be reached now; the operation did nothing."""


class IStorage(Interface):
    url = Attribute("The URL this backend was opened with (no password).")

    def start():
        """Open connections, create or migrate the schema. Fires when ready."""

    def stop():
        """Close; fires when every acknowledged write is durable."""

    # Nodes ---------------------------------------------------------------

    def create_node(node):
        """Store a new ``Node``; fails with ``NodeExists`` if present."""

    def get_node(service, node_id):
        """The ``Node``, or None."""

    def list_nodes(service):
        """Node ids of one service, sorted."""

    def list_all_nodes():
        """Every (service, node_id) in the store, sorted (for migration and admin)."""

    def set_node_config(service, node_id, config):
        """Replace a node's ``NodeConfig``."""

    def delete_node(service, node_id):
        """Remove a node with its items, subscriptions and affiliations."""

    # Affiliations --------------------------------------------------------

    def get_affiliations(service, node_id):
        """A dict {entity (bare JID): affiliation} of one node."""

    def set_affiliation(service, node_id, entity, affiliation):
        """Set an entity's affiliation; ``"none"`` removes it."""

    def get_entity_affiliations(entity, service=None):
        """``Affiliation`` records of a bare JID, on one service or on all."""

    # Subscriptions -------------------------------------------------------

    def get_subscriptions(service, node_id):
        """Every ``Subscription`` to a node, in any state."""

    def get_subscription(service, node_id, subscriber):
        """The ``Subscription`` of this exact JID (bare or full), or None."""

    def set_subscription(subscription):
        """Insert or replace the subscription of (service, node, subscriber)."""

    def remove_subscription(service, node_id, subscriber):
        """Remove one subscription; no error if absent."""

    def get_entity_subscriptions(entity, service=None, node_id=None):
        """Subscriptions whose subscriber's bare JID is ``entity``."""

    # Items ---------------------------------------------------------------

    def put_item(service, node_id, item, max_items):
        """Store an ``Item`` (replacing one of the same id, which then counts
        as newest) and keep at most ``max_items`` (None: no limit), dropping
        the oldest, in one transaction. Fires with the stored ``Item``
        carrying its assigned ``seq``."""

    def get_items(service, node_id, item_ids):
        """The ``Item``s with these ids that exist, oldest first."""

    def page_items(service, node_id, limit=None, after=None, before=None):
        """An ``ItemPage`` (oldest first). Without ``after``/``before``, the
        newest ``limit`` items; with ``after`` (an item id) those just newer;
        with ``before`` those just older (``before=""``: the last page)."""

    def delete_items(service, node_id, item_ids):
        """Remove items; fires with the ids that were there."""

    def purge_items(service, node_id):
        """Remove every item of a node."""

    # Accounts ------------------------------------------------------------

    def create_account(account):
        """Store a new ``Account``; fails with ``AccountExists``."""

    def get_account(jid):
        """The ``Account`` of a bare JID, or None."""

    def update_account(account):
        """Replace an existing account's credentials."""

    def delete_account(jid):
        """Remove the account and everything it owns: the nodes of its PEP
        service, its subscriptions and affiliations everywhere."""

    def list_accounts(domain=None):
        """Bare JIDs of the accounts, sorted."""
