"""The XEP-0060 engine: every pubsub use case as a method call.

No sockets and no XML streams: requests arrive as method calls with JID
strings and serialized payloads, answers leave as records, and notifications
leave as ``Event``s to an ``IEventSink``. Every public method returns a
Deferred. Access checks live here and nowhere else.
"""

from __future__ import annotations

import functools
from typing import Iterable, Mapping, Sequence

from twisted.internet import defer

from xep207.pubsub import config as node_config
from xep207.pubsub import errors
from xep207.pubsub.events import (
    CONFIGURATION,
    DELETE,
    ITEMS,
    PURGE,
    RETRACT,
    SUBSCRIPTION,
    AuthorizationRequest,
    Event,
    NullSink,
    Recipient,
    SubscriptionChange,
)
from xep207.storage.interface import NodeExists
from xep207.storage.records import (
    AFFILIATIONS,
    MEMBER,
    NONE,
    OUTCAST,
    OWNER,
    PENDING,
    PUBLISH_ONLY,
    PUBLISHER,
    SUBSCRIBED,
    VIA_PUBSUB,
    Item,
    ItemPage,
    Node,
    NodeConfig,
    Subscription,
    bare,
    new_id,
)

PRESENCE_NODE = "presence"  # XEP-0207: the node that carries presence
ROSTER_NODE = "roster"  # private owner-only node: roster names and groups

_MAY_PUBLISH = {OWNER, PUBLISHER, PUBLISH_ONLY}
_MAY_RETRIEVE = {OWNER, PUBLISHER, MEMBER}


def returns_deferred(method):
    """Run an ``async def`` method as a Deferred, the currency of Twisted callers."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return defer.ensureDeferred(method(*args, **kwargs))

    return wrapper


def _truthy(value) -> bool:
    return value in (True, "1", "true", 1)


class PubSubEngine:
    """One engine serves many pubsub services (a component JID, every PEP
    account), all in one storage. ``service`` arguments are JID strings."""

    def __init__(
        self,
        storage,
        sink=None,
        *,
        pep_domains: Iterable[str] = (),
        interest=None,
        max_payload_size: int = 64 * 1024,
        max_items_limit: int = 10000,
        default_config: NodeConfig = NodeConfig(),
        call_later=None,
    ):
        self.storage = storage
        self.sink = sink or NullSink()
        self.pep_domains = set(pep_domains)
        self.interest = interest
        self.max_payload_size = max_payload_size
        self.max_items_limit = max_items_limit
        self.default_config = default_config
        if call_later is None:
            from twisted.internet import reactor

            call_later = reactor.callLater
        self._call_later = call_later
        # callables(requestor, node, item_id, payload) -> (item_id, payload), or
        # None to pass: how a layer above vets what is published to nodes it
        # gives meaning to (presence nodes, chat nodes, rooms).
        self.payload_filters: list = []

    # Services, nodes and affiliations ---------------------------------------

    def is_pep(self, service: str) -> bool:
        """A bare JID on one of our domains is that account's PEP service."""
        return "@" in service and "/" not in service and service.split("@", 1)[1] in self.pep_domains

    def default_node_config(self, service: str, node_id: str | None) -> NodeConfig:
        if not self.is_pep(service):
            return self.default_config
        pep = self.default_config.replace(itemreply="owner")  # XEP-0163 notifications name no publisher
        if node_id == PRESENCE_NODE:
            # XEP-0207 §8: presence must be authorized, never open.
            return pep.replace(access_model="authorize", max_items=self.max_items_limit)
        if node_id == ROSTER_NODE:
            return pep.replace(access_model="whitelist", max_items=self.max_items_limit,
                               deliver_notifications=False)
        return pep.replace(access_model="presence")  # XEP-0163 §5

    async def _node(self, service: str, node_id: str) -> Node:
        if not node_id:
            raise errors.bad_request("nodeid-required")
        node = await self.storage.get_node(service, node_id)
        if node is None:
            raise errors.item_not_found()
        return node

    async def _affiliations(self, node: Node) -> dict[str, str]:
        affiliations = await self.storage.get_affiliations(node.service, node.node_id)
        if self.is_pep(node.service):
            affiliations[node.service] = OWNER  # a PEP service's account owns it all
        return affiliations

    async def _require_owner(self, node: Node, requestor: str) -> dict[str, str]:
        affiliations = await self._affiliations(node)
        if affiliations.get(bare(requestor)) != OWNER:
            raise errors.forbidden()
        return affiliations

    @returns_deferred
    async def create_node(
        self, requestor: str, service: str, node_id: str | None,
        values: Mapping[str, object] | None = None, *, config: NodeConfig | None = None,
    ) -> str:
        """Create a node (instant when ``node_id`` is None); the requestor owns it."""
        if self.is_pep(service) and bare(requestor) != service:
            raise errors.forbidden(text="only the account may create nodes on its PEP service")
        instant = not node_id
        node_id = node_id or new_id()
        if config is None:
            config = self.default_node_config(service, node_id)
        publishers = None
        if values:
            config, publishers = node_config.apply_values(config, values, self.max_items_limit)
        creator = bare(requestor)
        try:
            await self.storage.create_node(Node(service, node_id, config, creator))
        except NodeExists:
            if instant:
                raise errors.conflict()
            raise errors.conflict(text="node already exists")
        await self.storage.set_affiliation(service, node_id, creator, OWNER)
        for publisher in publishers or ():
            if publisher != creator:
                await self.storage.set_affiliation(service, node_id, publisher, PUBLISHER)
        if config.access_model == "whitelist" and not self.is_pep(service):
            # DESIGN.md: the creator of a whitelist node is subscribed to it,
            # as XEP-0207 §6 shows both parties notified.
            subscription = Subscription(service, node_id, creator, SUBSCRIBED)
            await self.storage.set_subscription(subscription)
            self._changed(subscription, NONE, creator)
        return node_id

    @returns_deferred
    async def get_configuration(self, requestor: str, service: str, node_id: str) -> NodeConfig:
        node = await self._node(service, node_id)
        await self._require_owner(node, requestor)
        return node.config

    @returns_deferred
    async def configure_node(
        self, requestor: str, service: str, node_id: str, values: Mapping[str, object]
    ) -> NodeConfig:
        node = await self._node(service, node_id)
        await self._require_owner(node, requestor)
        config, publishers = node_config.apply_values(node.config, values, self.max_items_limit)
        await self.storage.set_node_config(service, node_id, config)
        for publisher in publishers or ():
            await self.storage.set_affiliation(service, node_id, publisher, PUBLISHER)
        if config.max_items < node.config.max_items:
            await self._trim(service, node_id, config.max_items)
        if config.notify_config:
            node = Node(service, node_id, config, node.creator, node.created)
            recipients = await self._recipients(node)
            self.sink.deliver(
                Event(service, node_id, CONFIGURATION, config=config,
                      include_payloads=config.deliver_payloads,
                      notification_type=config.notification_type),
                recipients)
        return config

    async def _trim(self, service, node_id, max_items):
        page = await self.storage.page_items(service, node_id)
        excess = [i.item_id for i in page.items[: max(0, len(page.items) - max_items)]]
        if excess:
            await self.storage.delete_items(service, node_id, excess)

    @returns_deferred
    async def delete_node(self, requestor: str, service: str, node_id: str,
                          redirect: str | None = None) -> None:
        node = await self._node(service, node_id)
        await self._require_owner(node, requestor)
        recipients = await self._recipients(node) if node.config.notify_delete else []
        await self.storage.delete_node(service, node_id)
        if recipients:
            self.sink.deliver(
                Event(service, node_id, DELETE, redirect=redirect,
                      notification_type=node.config.notification_type),
                recipients)

    @returns_deferred
    async def purge_node(self, requestor: str, service: str, node_id: str) -> None:
        node = await self._node(service, node_id)
        await self._require_owner(node, requestor)
        if not node.config.persist_items:
            raise errors.unsupported("persistent-items")
        await self.storage.purge_items(service, node_id)
        recipients = await self._recipients(node)
        self.sink.deliver(
            Event(service, node_id, PURGE, notification_type=node.config.notification_type),
            recipients)

    @returns_deferred
    async def list_nodes(self, requestor: str, service: str) -> list[str]:
        """Node ids the requestor may know of (disco#items)."""
        node_ids = await self.storage.list_nodes(service)
        visible = []
        for node_id in node_ids:
            node = await self.storage.get_node(service, node_id)
            if node is not None and await self._may_see(node, requestor):
                visible.append(node_id)
        return visible

    @returns_deferred
    async def node_info(self, requestor: str, service: str, node_id: str) -> Node | None:
        node = await self.storage.get_node(service, node_id)
        if node is None or not await self._may_see(node, requestor):
            return None
        return node

    async def _may_see(self, node: Node, requestor: str) -> bool:
        try:
            await self._check_retrieve(node, requestor)
        except errors.StanzaError:
            return False
        return True

    # Access models ----------------------------------------------------------

    async def _presence_subscribers(self, owner: str) -> set[str]:
        """Bare JIDs with an approved subscription to ``owner``'s presence node."""
        subscriptions = await self.storage.get_subscriptions(owner, PRESENCE_NODE)
        return {bare(s.subscriber) for s in subscriptions if s.state == SUBSCRIBED}

    async def _roster_groups(self, owner: str, contact: str) -> set[str]:
        from xep207.pubsub.roster_items import groups_of

        items = await self.storage.get_items(owner, ROSTER_NODE, [contact])
        return groups_of(items[0].payload) if items else set()

    def _owners(self, node: Node, affiliations: Mapping[str, str]) -> list[str]:
        return sorted(e for e, a in affiliations.items() if a == OWNER)

    async def _access_error(self, node: Node, entity: str, affiliations,
                            presence_cache: dict | None = None) -> Exception | None:
        """Why ``entity`` may not subscribe to or read ``node``, or None.

        Shared by subscribe, retrieve and notification so that the three can
        never disagree.
        """
        entity = bare(entity)
        affiliation = affiliations.get(entity, NONE)
        if affiliation == OUTCAST:
            return errors.forbidden()
        if affiliation in _MAY_RETRIEVE:
            return None
        model = node.config.access_model
        if model in ("open", "authorize"):
            return None
        if model == "whitelist":
            return errors.closed_node()
        owners = self._owners(node, affiliations)
        for owner in owners:
            if presence_cache is None:
                subscribers = await self._presence_subscribers(owner)
            else:  # one notification, many entities: read each owner's subscribers once
                if owner not in presence_cache:
                    presence_cache[owner] = await self._presence_subscribers(owner)
                subscribers = presence_cache[owner]
            if entity in subscribers:
                if model == "presence":
                    return None
                allowed = set(node.config.roster_groups_allowed)
                if allowed & await self._roster_groups(owner, entity):
                    return None
        if model == "presence":
            return errors.not_authorized("presence-subscription-required")
        return errors.not_authorized("not-in-roster-group")

    async def _check_retrieve(self, node: Node, requestor: str) -> dict[str, str]:
        affiliations = await self._affiliations(node)
        error = await self._access_error(node, requestor, affiliations)
        if error is not None:
            raise error
        if node.config.access_model == "authorize" and affiliations.get(bare(requestor), NONE) not in _MAY_RETRIEVE:
            subscriptions = await self.storage.get_entity_subscriptions(
                bare(requestor), node.service, node.node_id)
            states = {s.state for s in subscriptions}
            if SUBSCRIBED not in states:
                if PENDING in states:
                    raise errors.not_authorized("pending-subscription")
                raise errors.not_authorized("not-subscribed")
        return affiliations

    # Publishing -------------------------------------------------------------

    @returns_deferred
    async def publish(
        self, requestor: str, service: str, node_id: str,
        items: Sequence[tuple[str | None, str]],
        options: Mapping[str, object] | None = None, *, vetted: bool = False,
    ) -> list[str]:
        """Publish ``items`` as (item id or None, serialized payload) pairs.

        Fires with the item ids, generated where none was given. ``vetted``:
        the payload was built by a capture layer itself, so the payload filters
        (which exist to vet what clients publish) need not parse it again.
        """
        if not node_id:
            raise errors.bad_request("nodeid-required")
        if len(items) > 1:
            raise errors.bad_request("invalid-payload", text="publish one item at a time")
        for _, payload in items:
            if len(payload.encode("utf-8")) > self.max_payload_size:
                raise errors.not_acceptable("payload-too-big")
        node = await self.storage.get_node(service, node_id)
        if node is None:
            if not (self.is_pep(service) and bare(requestor) == service):
                raise errors.item_not_found()
            # XEP-0163 §3: auto-create, with the publish-options as configuration.
            await self.create_node(requestor, service, node_id, options)
            node = await self.storage.get_node(service, node_id)
        elif options:
            self._check_preconditions(node.config, options)
        affiliations = await self._affiliations(node)
        await self._check_publish(node, requestor, affiliations)
        config = node.config
        if not items:
            if config.persist_items or config.deliver_payloads:
                raise errors.bad_request("item-required")
            items = [(None, "")]
        item_id, payload = items[0]
        if not payload and (config.persist_items or config.deliver_payloads):
            raise errors.bad_request("payload-required")
        for payload_filter in () if vetted else self.payload_filters:
            vetted = payload_filter(requestor, node, item_id, payload)
            if vetted is not None:
                item_id, payload = vetted
                break
        item = Item(item_id or new_id(), payload, requestor)
        if config.persist_items:
            item = await self.storage.put_item(service, node_id, item, config.max_items)
        if config.deliver_notifications:
            recipients = await self._recipients(node, affiliations)
            self.sink.deliver(
                Event(service, node_id, ITEMS, items=(item,),
                      include_payloads=config.deliver_payloads,
                      notification_type=config.notification_type,
                      reply_to=requestor if config.itemreply == "publisher" else None),
                recipients)
        return [item.item_id]

    def _check_preconditions(self, config: NodeConfig, options: Mapping[str, object]) -> None:
        """XEP-0060 §7.1.5: every publish-option must match the node's configuration."""
        try:
            wanted, _ = node_config.apply_values(config, options, self.max_items_limit)
        except errors.StanzaError:
            raise errors.precondition_not_met()
        if wanted != config:
            raise errors.precondition_not_met()

    async def _check_publish(self, node: Node, requestor: str, affiliations) -> None:
        affiliation = affiliations.get(bare(requestor), NONE)
        if affiliation in _MAY_PUBLISH:
            return
        model = node.config.publish_model
        if affiliation != OUTCAST:
            if model == "open":
                return
            if model == "subscribers":
                subscriptions = await self.storage.get_entity_subscriptions(
                    bare(requestor), node.service, node.node_id)
                if any(s.state == SUBSCRIBED for s in subscriptions):
                    return
        raise errors.forbidden()

    @returns_deferred
    async def retract(self, requestor: str, service: str, node_id: str,
                      item_ids: Sequence[str], notify: bool = False) -> None:
        node = await self._node(service, node_id)
        if not item_ids:
            raise errors.bad_request("item-required")
        if not node.config.persist_items:
            raise errors.unsupported("persistent-items")
        affiliations = await self._affiliations(node)
        affiliation = affiliations.get(bare(requestor), NONE)
        if affiliation not in _MAY_PUBLISH:
            raise errors.forbidden()
        existing = await self.storage.get_items(service, node_id, item_ids)
        if len(existing) != len(set(item_ids)):
            raise errors.item_not_found()
        if affiliation == PUBLISH_ONLY and any(bare(i.publisher) != bare(requestor) for i in existing):
            raise errors.forbidden()
        deleted = await self.storage.delete_items(service, node_id, item_ids)
        if notify and node.config.notify_retract and deleted:
            recipients = await self._recipients(node, affiliations)
            self.sink.deliver(
                Event(service, node_id, RETRACT, retracted=tuple(deleted),
                      notification_type=node.config.notification_type),
                recipients)

    # Retrieving -------------------------------------------------------------

    @returns_deferred
    async def get_items(
        self, requestor: str, service: str, node_id: str, *,
        item_ids: Sequence[str] = (), max_items: int | None = None,
        after: str | None = None, before: str | None = None,
    ) -> ItemPage:
        node = await self._node(service, node_id)
        await self._check_retrieve(node, requestor)
        if not node.config.persist_items:
            raise errors.unsupported("persistent-items")
        if item_ids:
            found = await self.storage.get_items(service, node_id, item_ids)
            return ItemPage(tuple(found), len(found))
        if max_items is not None and max_items <= 0:
            raise errors.bad_request(text="max_items must be positive")
        page = await self.storage.page_items(service, node_id, max_items, after, before)
        if not page.items and (after or before) and page.count:
            raise errors.item_not_found(text="no such item to page from")
        return page

    # Subscribing ------------------------------------------------------------

    @returns_deferred
    async def subscribe(
        self, requestor: str, service: str, node_id: str, subscriber: str,
        options: Mapping[str, object] | None = None, *, via: str = VIA_PUBSUB,
        approved: bool = False,
    ) -> Subscription:
        """Subscribe; ``approved`` is for callers that already hold the owner's
        consent (an RFC 6121 pre-approval) and skips the authorization step."""
        node = await self._node(service, node_id)
        affiliations = await self._affiliations(node)
        is_owner = affiliations.get(bare(requestor)) == OWNER
        if bare(subscriber) != bare(requestor) and not is_owner:
            raise errors.bad_request("invalid-jid")
        error = await self._access_error(node, subscriber, affiliations)
        if error is not None:
            raise error
        existing = await self.storage.get_subscription(service, node_id, subscriber)
        if existing is not None:
            if existing.state == PENDING:
                raise errors.not_authorized("pending-subscription")
            if options:
                existing = existing.replace(options={**existing.options, **options})
                await self.storage.set_subscription(existing)
            return existing
        needs_approval = (
            not approved and node.config.access_model == "authorize"
            and affiliations.get(bare(subscriber), NONE) not in _MAY_RETRIEVE
        )
        subscription = Subscription(
            service, node_id, subscriber, PENDING if needs_approval else SUBSCRIBED,
            options=dict(options or {}), via=via)
        await self.storage.set_subscription(subscription)
        self._changed(subscription, NONE, requestor)
        if needs_approval:
            self.sink.request_authorization(AuthorizationRequest(
                service, node_id, subscription, tuple(self._owners(node, affiliations))))
        else:
            self._send_last_item_later(node, subscription)
        return subscription

    def _send_last_item_later(self, node: Node, subscription: Subscription) -> None:
        """XEP-0060 §6.1.7, after the subscribe reply has gone out."""
        if node.config.send_last_published_item == "never" or not node.config.persist_items:
            return

        async def send():
            page = await self.storage.page_items(node.service, node.node_id, 1)
            if page.items:
                self.sink.deliver(
                    Event(node.service, node.node_id, ITEMS, items=page.items,
                          include_payloads=node.config.deliver_payloads,
                          notification_type=node.config.notification_type, replay=True),
                    [Recipient(subscription.subscriber, subscription)])

        self._call_later(0, lambda: defer.ensureDeferred(send()))

    @returns_deferred
    async def unsubscribe(self, requestor: str, service: str, node_id: str,
                          subscriber: str, subid: str | None = None) -> None:
        node = await self._node(service, node_id)
        if bare(subscriber) != bare(requestor):
            affiliations = await self._affiliations(node)
            if affiliations.get(bare(requestor)) != OWNER:
                raise errors.bad_request("invalid-jid")
        existing = await self.storage.get_subscription(service, node_id, subscriber)
        if existing is None:
            raise errors.not_subscribed()
        if subid and subid != existing.subid:
            raise errors.not_acceptable("invalid-subid")
        await self.storage.remove_subscription(service, node_id, subscriber)
        self._changed(existing.replace(state=NONE), existing.state, requestor)

    async def _own_subscription(self, requestor, service, node_id, subscriber, subid):
        node = await self._node(service, node_id)
        if bare(subscriber) != bare(requestor):
            affiliations = await self._affiliations(node)
            if affiliations.get(bare(requestor)) != OWNER:
                raise errors.forbidden()
        subscription = await self.storage.get_subscription(service, node_id, subscriber)
        if subscription is None:
            raise errors.not_subscribed()
        if subid and subid != subscription.subid:
            raise errors.not_acceptable("invalid-subid")
        return subscription

    @returns_deferred
    async def get_subscription_options(self, requestor: str, service: str, node_id: str,
                                       subscriber: str, subid: str | None = None) -> Subscription:
        return await self._own_subscription(requestor, service, node_id, subscriber, subid)

    @returns_deferred
    async def set_subscription_options(self, requestor: str, service: str, node_id: str,
                                       subscriber: str, options: Mapping[str, object],
                                       subid: str | None = None) -> Subscription:
        subscription = await self._own_subscription(requestor, service, node_id, subscriber, subid)
        subscription = subscription.replace(options={**subscription.options, **options})
        await self.storage.set_subscription(subscription)
        return subscription

    @returns_deferred
    async def subscriptions_of(self, requestor: str, service: str,
                               node_id: str | None = None) -> list[Subscription]:
        """XEP-0060 §5.6: the requestor's own subscriptions on a service."""
        return await self.storage.get_entity_subscriptions(bare(requestor), service, node_id or None)

    @returns_deferred
    async def affiliations_of(self, requestor: str, service: str) -> list[tuple[str, str]]:
        """XEP-0060 §5.7: the requestor's own affiliations on a service."""
        found = await self.storage.get_entity_affiliations(bare(requestor), service)
        result = [(a.node_id, a.affiliation) for a in found]
        if self.is_pep(service) and bare(requestor) == service:
            owned = {n for n, _ in result}
            result += [(n, OWNER) for n in await self.storage.list_nodes(service) if n not in owned]
        return sorted(result)

    # Owner: subscriptions, affiliations, authorization ----------------------

    @returns_deferred
    async def node_subscriptions(self, requestor: str, service: str, node_id: str) -> list[Subscription]:
        node = await self._node(service, node_id)
        await self._require_owner(node, requestor)
        return await self.storage.get_subscriptions(service, node_id)

    @returns_deferred
    async def set_node_subscriptions(
        self, requestor: str, service: str, node_id: str,
        changes: Sequence[tuple[str, str]],
    ) -> list[tuple[str, str]]:
        """XEP-0060 §8.8.2. Fires with the (jid, state) pairs that failed."""
        node = await self._node(service, node_id)
        affiliations = await self._require_owner(node, requestor)
        failed = []
        for subscriber, state in changes:
            existing = await self.storage.get_subscription(service, node_id, subscriber)
            if state == NONE:
                if existing is not None:
                    await self.storage.remove_subscription(service, node_id, subscriber)
                    await self._notify_subscription_state(node, existing.replace(state=NONE))
                    self._changed(existing.replace(state=NONE), existing.state, requestor)
            elif state == SUBSCRIBED:
                if affiliations.get(bare(subscriber)) == OUTCAST:
                    failed.append((subscriber, state))
                    continue
                subscription = (existing or Subscription(service, node_id, subscriber)).replace(
                    state=SUBSCRIBED)
                await self.storage.set_subscription(subscription)
                if existing is None or existing.state != SUBSCRIBED:
                    await self._notify_subscription_state(node, subscription)
                    self._changed(subscription, existing.state if existing else NONE, requestor)
            else:
                failed.append((subscriber, state))
        return failed

    @returns_deferred
    async def node_affiliations(self, requestor: str, service: str, node_id: str) -> dict[str, str]:
        node = await self._node(service, node_id)
        return await self._require_owner(node, requestor)

    @returns_deferred
    async def set_node_affiliations(self, requestor: str, service: str, node_id: str,
                                    changes: Mapping[str, str]) -> None:
        """XEP-0060 §8.9.2; an outcast loses its subscriptions at once."""
        node = await self._node(service, node_id)
        affiliations = await self._require_owner(node, requestor)
        for entity, affiliation in changes.items():
            if affiliation not in AFFILIATIONS:
                raise errors.bad_request(text=f"unknown affiliation {affiliation!r}")
        after = {**affiliations, **changes}
        if OWNER not in after.values():
            raise errors.not_acceptable(text="a node must keep an owner")
        if self.is_pep(service) and changes.get(service, OWNER) != OWNER:
            raise errors.not_acceptable(text="the account always owns its PEP nodes")
        for entity, affiliation in changes.items():
            await self.storage.set_affiliation(service, node_id, entity, affiliation)
            if affiliation == OUTCAST:
                for subscription in await self.storage.get_entity_subscriptions(entity, service, node_id):
                    await self.storage.remove_subscription(service, node_id, subscription.subscriber)
                    self._changed(subscription.replace(state=NONE), subscription.state, requestor)

    @returns_deferred
    async def answer_authorization(self, requestor: str, service: str, node_id: str,
                                   subscriber: str, allow: bool, subid: str | None = None) -> Subscription:
        """An owner's answer to an ``AuthorizationRequest`` (XEP-0060 §8.6)."""
        node = await self._node(service, node_id)
        await self._require_owner(node, requestor)
        subscription = await self.storage.get_subscription(service, node_id, subscriber)
        if subscription is None or subscription.state != PENDING:
            raise errors.StanzaError("unexpected-request", text="no pending subscription")
        if subid and subid != subscription.subid:
            raise errors.not_acceptable("invalid-subid")
        if allow:
            subscription = subscription.replace(state=SUBSCRIBED)
            await self.storage.set_subscription(subscription)
            self._send_last_item_later(node, subscription)
        else:
            await self.storage.remove_subscription(service, node_id, subscriber)
            subscription = subscription.replace(state=NONE)
        await self._notify_subscription_state(node, subscription)
        self._changed(subscription, PENDING, requestor)
        return subscription

    def _changed(self, subscription: Subscription, previous: str, actor: str) -> None:
        self.sink.subscription_changed(SubscriptionChange(subscription, previous, actor))

    async def _notify_subscription_state(self, node: Node, subscription: Subscription) -> None:
        """XEP-0060 §8.8.4: tell the subscriber its state changed."""
        self.sink.deliver(
            Event(node.service, node.node_id, SUBSCRIPTION, subscription=subscription,
                  notification_type="normal"),
            [Recipient(subscription.subscriber, subscription)])

    # Notifications ----------------------------------------------------------

    async def _recipients(self, node: Node, affiliations=None) -> list[Recipient]:
        """Everyone who gets this node's notifications, access-checked once each.

        Explicit subscriptions first; on a PEP service, also the ``+notify``
        resources of the owner and of the contacts the access model allows.
        """
        if affiliations is None:
            affiliations = await self._affiliations(node)
        subscriptions = await self.storage.get_subscriptions(node.service, node.node_id)
        allowed: dict[str, bool] = {}
        presence_cache: dict[str, set[str]] = {}

        async def may_receive(entity: str) -> bool:
            if entity not in allowed:
                error = await self._access_error(node, entity, affiliations, presence_cache)
                allowed[entity] = error is None
            return allowed[entity]

        recipients = []
        seen = set()
        for subscription in subscriptions:
            if subscription.state != SUBSCRIBED:
                continue
            if not _truthy(subscription.options.get("pubsub#deliver", True)):
                continue
            if await may_receive(bare(subscription.subscriber)):
                recipients.append(Recipient(subscription.subscriber, subscription))
                seen.add(subscription.subscriber)
        if self.interest is not None and self.is_pep(node.service):
            candidates = {node.service}
            if node.config.access_model in ("presence", "roster", "open"):
                if node.service not in presence_cache:
                    presence_cache[node.service] = await self._presence_subscribers(node.service)
                candidates |= presence_cache[node.service]
            candidates = [c for c in sorted(candidates) if await may_receive(c)]
            for resource in self.interest.interested_resources(candidates, node.node_id):
                if resource not in seen and bare(resource) not in seen:
                    recipients.append(Recipient(resource))
                    seen.add(resource)
        return recipients
