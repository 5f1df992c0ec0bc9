"""Pair nodes: one-to-one chat as pubsub (XEP-0207 §6).

``chat:A:B`` on the pubsub service (A < B, the bare JIDs of two local accounts)
holds A and B's conversation. The name is reserved; the service owns the node;
both parties publish and are subscribed; nobody else may learn it exists. A
legacy chat message and a native publish are the same operation: the first one
of either kind creates the node.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar, Mapping, Sequence

from twisted.words.xish import domish

from xep207.hooks import KEPT_OFFLINE
from xep207.jids import InvalidFormat, full_jid
from xep207.pubsub import errors
from xep207.pubsub.kinds.base import KIND_FIELD, Access, NodeKind, NodeKindName, Trusted, only_options
from xep207.storage.records import (
    OWNER,
    PUBLISHER,
    SUBSCRIBED,
    VIA_LEGACY,
    VIA_PUBSUB,
    Item,
    Node,
    NodeConfig,
    Subscription,
    Via,
    bare,
)
from xep207.xmlutil import parse_message_item, release, restamped

PAIR_PREFIX = "chat:"
OFFLINE_MARK = "xep207#offline-since"  # subscription option: first undelivered item
PAIR_OPTIONS = ("pubsub#deliver",)
NS_SID = "urn:xmpp:sid:0"


def is_stanza_id(child) -> bool:
    """A client's own XEP-0359 ``<stanza-id/>`` claims what only the archive
    says (§4): an item of a pair node never keeps one, whichever door."""
    return isinstance(child, domish.Element) and child.uri == NS_SID and child.name == "stanza-id"


@lru_cache(maxsize=65536)  # a pure function of strings, asked on every message (issue 13)
def pair_node_id(a: str, b: str) -> str:
    """A stable node name for two bare JIDs, whoever writes first."""
    first, second = sorted((a, b))
    return f"{PAIR_PREFIX}{first}:{second}"


@lru_cache(maxsize=65536)
def pair_parties(node_id: str) -> tuple[str, str] | None:
    """The two bare JIDs of a well-formed pair name, else None."""
    if not node_id.startswith(PAIR_PREFIX):
        return None
    parts = node_id[len(PAIR_PREFIX):].split(":")
    if len(parts) != 2 or parts[0] >= parts[1]:
        return None
    if any("@" not in p or "/" in p or not p.split("@", 1)[0] for p in parts):
        return None
    return parts[0], parts[1]


class PairKind(NodeKind):
    name: ClassVar[NodeKindName] = "pair"
    ids_tell_time: ClassVar[bool] = True  # (read by those told the time anyway)
    # Visible to its parties, set up once both are affiliated, published to by
    # publishers: all from the node's cached state; the block lists are
    # ``publish_rechecks`` (issue 13: a chat message's checks without a coroutine).
    publish_verdict_cacheable: ClassVar[bool] = True
    pipelined: ClassVar[bool] = True  # (a conversation: xep207.legacy.pair_publish)

    def __init__(self, pubsub_domain: str, max_items: int = 10000):
        self.pubsub_domain = pubsub_domain
        self.max_items = max_items

    def claims(self, engine, service: str, node_id: str) -> bool:
        return service == self.pubsub_domain and node_id.startswith(PAIR_PREFIX)

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        return engine.default_config.replace(
            access_model="whitelist", publish_model="publishers", persist_items=True,
            max_items=min(self.max_items, engine.max_items_limit), notification_type="normal",
            extra={KIND_FIELD: "chat"})

    def creator(self, engine, requestor: str, service: str, node_id: str) -> str:
        return service  # the service owns every pair node

    @staticmethod
    def _is_party(access: Access) -> bool:
        parties = pair_parties(access.node_id)
        return parties is not None and bare(access.requestor) in parties

    async def _well_formed(self, engine, node_id: str) -> tuple[str, str]:
        parties = pair_parties(node_id)
        if parties is None or any(p.split("@", 1)[1] not in engine.pep_domains for p in parties):
            raise errors.not_acceptable(text="a pair node is chat:A:B for two accounts, A < B")
        for party in parties:
            if party in engine.retiring or await engine.storage.get_account(party) is None:
                raise errors.not_acceptable(text="a pair node is chat:A:B for two accounts, A < B")
        return parties

    async def check_create(self, engine, requestor: str, service: str, node_id: str,
                           values: Mapping[str, object] | None) -> None:
        parties = await self._well_formed(engine, node_id)  # a property of the name alone
        if bare(requestor) not in parties:
            raise errors.forbidden(text="pair nodes are made by their parties' first message")
        if values:
            raise errors.not_acceptable(text="a pair node's configuration is the service's")

    async def may_auto_create(self, engine, requestor: str, service: str, node_id: str,
                              operation: str) -> bool:
        parties = pair_parties(node_id)
        if parties is None or bare(requestor) not in parties:
            return False
        await self._well_formed(engine, node_id)
        return True

    async def after_create(self, engine, node: Node, requestor: str,
                           publishers: Sequence[str], via: Via) -> None:
        await self._set_up(engine, node, requestor, via, only_missing=False)

    def setup_unfinished(self, access: Access) -> bool:
        # The parties' affiliations are written last: both present, both subscribed.
        return any(party not in access.affiliations for party in pair_parties(access.node_id) or ())

    async def finish_setup(self, engine, node: Node, requestor: str, via: Via) -> None:
        # The creator checked both accounts before it made the node; one may be
        # gone or going since (its removal found no subscription of its here):
        # finishing must not subscribe it for the next account of that name.
        await self._well_formed(engine, node.node_id)
        await self._set_up(engine, node, requestor, via, only_missing=True)

    async def _set_up(self, engine, node: Node, requestor: str, via: Via, *, only_missing: bool) -> None:
        """Both parties subscribed, then the affiliations that say so: a party
        must not miss the first message because another process was still
        making the node (``finish_setup`` runs the same steps, idempotently)."""
        service, node_id = node.service, node.node_id
        parties = pair_parties(node_id) or ()
        for party in parties:
            if only_missing and await engine.storage.get_subscription(service, node_id, party) is not None:
                continue
            # The party who started it natively hears XEP-0207 events; the
            # other one hears chat messages until it speaks pubsub itself.
            native = via == VIA_PUBSUB and party == bare(requestor)
            party_via: Via = VIA_PUBSUB if native else VIA_LEGACY
            await engine.add_subscription(
                Subscription(service, node_id, party, SUBSCRIBED, via=party_via), Trusted(service))
        await engine.storage.set_affiliation(service, node_id, service, OWNER)
        for party in parties:
            await engine.storage.set_affiliation(service, node_id, party, PUBLISHER)

    async def visible(self, access: Access) -> bool:
        return access.trusted or self._is_party(access)

    async def vet_item(self, access: Access, item_id, payload: str):
        """A message from the publisher, whatever the payload claims."""
        message = parse_message_item(payload, "a chat item")
        if "/" not in access.requestor:
            raise errors.bad_request("invalid-payload", text="messages come from a resource")
        parties = pair_parties(access.node_id) or ()
        others = [p for p in parties if p != bare(access.requestor)]
        message["to"] = _addressee(message.getAttribute("to"), others[0] if others else bare(access.requestor))
        message["type"] = message.getAttribute("type", "chat")
        if message["type"] not in ("chat", "normal"):
            raise errors.bad_request("invalid-payload", text="a one-to-one message is of type chat or normal")
        stamped = restamped(message, access.requestor)
        stamped.children = [c for c in stamped.children if not is_stanza_id(c)]
        payload = stamped.toXml()
        release(message)  # (serialized: no cycle left to the collector, per native message)
        return item_id, payload

    async def check_publish(self, access: Access) -> None:
        await super().check_publish(access)
        self._check_blocks(access)

    def publish_rechecks(self, engine, requestor: str, node: Node) -> None:
        if engine.blocks.lists:  # (nobody blocks anybody: nothing to ask)
            _blocks_between(engine, requestor, node.node_id)

    @staticmethod
    def _check_blocks(access: Access) -> None:
        _blocks_between(access.engine, access.requestor, access.node_id)

    def overwrites_any(self, access: Access) -> bool:
        return False  # shared history: nobody rewrites another's message

    async def check_overwrite(self, access: Access, existing: Item) -> None:
        if bare(existing.publisher) != bare(access.requestor):
            raise errors.forbidden(text="that message is the other party's")

    async def check_retract(self, access: Access, existing: Sequence[Item]) -> None:
        if any(bare(i.publisher) != bare(access.requestor) for i in existing):
            raise errors.forbidden(text="that message is the other party's")
        self._check_blocks(access)  # it would reach the other party and rewrite its archive

    async def check_subscribe(self, access: Access, subscriber: str,
                              options: Mapping[str, object]) -> Mapping[str, object]:
        if bare(subscriber) != bare(access.requestor):
            raise errors.bad_request("invalid-jid")
        only_options(options, PAIR_OPTIONS)
        return await super().check_subscribe(access, subscriber, options)

    async def check_unsubscribe(self, access: Access, subscriber: str) -> None:
        """A party's subscription is its mailbox: ending it would swallow the
        other party's messages. ``pubsub#deliver`` turns notifications off."""
        await super().check_unsubscribe(access, subscriber)
        if subscriber in (pair_parties(access.node_id) or ()):
            raise errors.StanzaError("not-allowed", text="a party stays subscribed to its conversation")

    async def check_options(self, access: Access, subscription: Subscription,
                            options: Mapping[str, object]) -> Mapping[str, object]:
        if not access.trusted:
            only_options(options, PAIR_OPTIONS)
        return await super().check_options(access, subscription, options)

    async def undelivered(self, engine, node: Node, item: Item, recipient, late: bool = False) -> None:
        """Remember the first message a party missed; its next session gets
        everything from there (XEP-0160 offline delivery, read from the items).
        ``late``: reported after its publish returned (a cluster's other
        process was gone), maybe after later misses: the mark then moves back
        to the earlier one (at least once: an offline delivery under way may
        have carried it already). Then ``KEPT_OFFLINE`` (XEP-0357 push): the
        delivery's own verdict, not whether the party is available by now (a
        message delivered before its commit to a party gone since was read)."""
        subscription = recipient.subscription
        if subscription is None or bare(subscription.subscriber) == bare(item.publisher):
            return
        if not late:
            # In order, inside the publish: an earlier miss is remembered (kept atomically).
            await engine.set_offline_mark(Trusted(node.service), subscription, item.item_id, only_if_unset=True)
        elif not await self._mark_back(engine, node, item, subscription):
            return  # (no longer a party: nothing is kept for it)
        engine.hooks.notify(KEPT_OFFLINE, node, item, bare(subscription.subscriber), kind=self.name)

    @staticmethod
    async def _mark_back(engine, node: Node, item: Item, subscription) -> bool:
        """Whether the party is still subscribed (then the message is kept for it)."""
        current = await engine.storage.get_subscription(node.service, node.node_id, subscription.subscriber)
        if current is None:
            return False
        mark = current.options.get(OFFLINE_MARK)
        if mark == item.item_id:
            return True
        if mark:
            if not item.seq:  # (a store that did not say where it put the item)
                return True
            marked = await engine.storage.get_items(node.service, node.node_id, [mark])
            if not marked or marked[0].seq <= item.seq:
                return True  # an earlier miss is remembered (or trimmed since: older still): this one comes with it
        await engine.set_offline_mark(Trusted(node.service), current, item.item_id)
        return True

    async def ends_with_account(self, engine, node: Node, account: str) -> bool:
        return account in (pair_parties(node.node_id) or ())


def _addressee(to: str | None, other: str) -> str:
    """A message in A and B's node is to the other party, as a legacy one
    routed there is: bare or one of its resources, prepared (a native
    publish "to" anyone else would sit in the other party's stream and
    archive as a message of the publisher's to a third)."""
    if not to:
        return other
    try:
        prepared = full_jid(to)
    except (InvalidFormat, ValueError):
        raise errors.bad_request("invalid-payload", text="the message's to is not a JID")
    if prepared.split("/", 1)[0] != other:
        raise errors.bad_request("invalid-payload", text="a message in this node is to the other party")
    return prepared


def _blocks_between(engine, requestor: str, node_id: str) -> None:
    """XEP-0191 §3.5–3.6, whichever door the message (or its retraction)
    came through: a party who blocked the other is told so; a blocked one
    reaches nothing."""
    blocks = engine.blocks
    if not blocks:
        return
    me = bare(requestor)
    for other in pair_parties(node_id) or ():
        if other == me:
            continue
        if blocks.blocks(me, other):
            raise errors.blocked()
        if blocks.blocks(other, requestor):
            raise errors.StanzaError("service-unavailable")
