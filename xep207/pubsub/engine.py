"""The XEP-0060 engine: every pubsub use case as a method call.

No sockets and no XML streams: requests arrive as method calls with JID
strings and serialized payloads, answers leave as records, and notifications
leave as ``Event``s to an ``IEventSink``. Every public method returns a
Deferred. Access checks live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
import unicodedata
from typing import Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from twisted.internet import defer
from twisted.python.failure import Failure

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
from xep207.hooks import ITEM_PUBLISHED, ITEMS_RETRACTED, NODE_EMPTIED, SUBSCRIPTION_CHANGED, Hooks
from xep207.pubsub.blocking import BlockIndex
from xep207.pubsub.kinds import PRESENCE_NODE, ROSTER_NODE, PresenceKind, RosterKind
from xep207.pubsub.kinds.base import (
    check_id_length,
    too_long,
    INTERNAL_OPTION_PREFIX,
    MAY_RETRIEVE,
    Access,
    NodeKind,
    Trusted,
    is_trusted,
)
from xep207.pubsub.kinds.account import ACCOUNT_NODES
from xep207.pubsub.kinds.blocklist import BlocklistKind
from xep207.pubsub.kinds.lastactivity import LastActivityKind
from xep207.pubsub.kinds.mamprefs import MamPrefsKind
from xep207.ordering import InOrder
from xep207.pubsub.kinds.pair import OFFLINE_MARK
from xep207.storage.interface import NodeExists
from xep207.storage.records import (
    NONE,
    OUTCAST,
    OWNER,
    PENDING,
    PUBLISHER,
    SUBSCRIBED,
    VIA_PUBSUB,
    Account,
    AffiliationName,
    Item,
    ItemPage,
    Node,
    NodeConfig,
    Subscription,
    SubscriptionState,
    Via,
    bare,
    is_affiliation,
    new_id,
    new_item_id,
)


def _item_id(kind: NodeKind) -> str:
    """A new item's id: it tells the time it was stored only where the kind's
    readers are told that time anyway."""
    return new_item_id() if kind.ids_tell_time else new_id()


def _failed(d: defer.Deferred) -> bool:
    """Refused at once (storage stopped): nothing to deliver early."""
    return d.called and isinstance(d.result, Failure)


def returns_deferred(method):
    """Run an ``async def`` method as a Deferred, the currency of Twisted callers."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return defer.ensureDeferred(method(*args, **kwargs))

    return wrapper


KIND_CACHE_SIZE = 65536
# An XMPP URI naming a node: a JID (3071 octets at most, RFC 7622) and a node id.
MAX_REDIRECT_OCTETS = 4096


_UNDECIDED = object()


def _without_reads(node: Node, entity: str, affiliations) -> Exception | None | object:
    """The access-model answer for a bare JID when affiliations and the model
    alone decide it (no roster or presence read), else ``_UNDECIDED``."""
    affiliation = affiliations.get(entity, NONE)
    if affiliation == OUTCAST:
        return errors.forbidden()
    if affiliation in MAY_RETRIEVE:
        return None
    model = node.config.access_model
    if model in ("open", "authorize"):
        return None
    if model == "whitelist":
        return errors.closed_node()
    return _UNDECIDED


def _deliverable(subscriptions: Iterable[Subscription]) -> Iterator[Subscription]:
    """The subscriptions notifications go to: subscribed, and ``pubsub#deliver`` not off."""
    for subscription in subscriptions:
        if subscription.state == SUBSCRIBED:
            deliver = subscription.options.get("pubsub#deliver", True)
            if deliver is True or _truthy(deliver):
                yield subscription


def _same_state(a: tuple, b: tuple) -> bool:
    """Whether two cached (node, affiliations, subscriptions) are the very same
    objects: the cache replaces them on any write, through either door."""
    return a[0] is b[0] and a[1] is b[1] and a[2] is b[2]


def _truthy(value) -> bool:
    return value in (True, "1", "true", 1)


class _Verdicts:
    """The requestors a kind let publish to one node (their ``Access``), as
    judged on ``state``: the cache's (node, affiliations, subscriptions)."""

    __slots__ = ("state", "kind", "allowed", "recipients")

    def __init__(self, state: tuple, kind: NodeKind) -> None:
        self.state = state
        self.kind = kind
        self.allowed: dict[str, Access] = {}
        # Who gets its notifications, once decided (not on a PEP service, where
        # block lists and ``+notify`` resources also count): a function of ``state``.
        self.recipients: tuple[Recipient, ...] | None = None


class PipelineTurn(Protocol):
    """A publish's place in its node's pipeline (a conversation's:
    ``xep207.legacy.pair_publish``), taken once the publish was judged."""

    def enter(self) -> defer.Deferred | None:
        """Its place in the order, taken just before its write is issued: a
        Deferred firing once what entered before it is done (None: nothing is)."""

    def leave(self) -> None:
        """Done (stored and notified, or refused or failed): the next one's turn."""

    def settled(self) -> defer.Deferred | None:
        """After ``leave`` of a publish that succeeded: a Deferred firing once
        what its delivery left to be written is (a recipient's XEP-0198
        window: the publisher is answered only then, as the legacy door's
        sender counts a message handled only then); None when nothing is.
        (On a cluster the legacy door also waits for the other processes'
        handling, for a sender with XEP-0198; the native door does not.)"""


class NodeCreatedElsewhere(errors.StanzaError):
    """The node a create named exists after all: made by another request or
    process since this one looked. A ``conflict`` to whoever asked to create
    it; a node made by first use goes on with the one that won."""


class AutoCreation:
    """A node being made by first use; later requests wait for it."""

    def __init__(self) -> None:
        self._waiting: list[defer.Deferred] = []

    def wait(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        return d

    def finish(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)


# RFC 3986 §2: the ASCII a URI holds (unreserved, reserved, and "%");
# RFC 3987 §4.1: no bidi formatting in an IRI (U+2066-2069 alike).
_URI_ASCII = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")
_BIDI_FORMATTING = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def check_redirect(uri: str) -> None:
    """XEP-0060 §8.4.3: a deleted node's subscribers are pointed at another
    node, an XMPP URI (RFC 5122). A client may follow it (subscribe there) or
    show it as a link, so nothing else goes out to every subscriber: not a
    ``javascript:`` or web address, not a kilobyte of text, not a quote that
    ends a web client's link, not text shown reversed."""
    scheme, _, rest = uri.partition(":")
    path = rest.split("?", 1)[0].split("#", 1)[0].removeprefix("//")
    if scheme.lower() != "xmpp" or not path.strip("/") or len(uri.encode("utf-8")) > MAX_REDIRECT_OCTETS \
            or any((c not in _URI_ASCII) if c.isascii() else
                   (c.isspace() or unicodedata.category(c) == "Cc" or c in _BIDI_FORMATTING) for c in uri) \
            or _PERCENT.search(uri):
        raise errors.bad_request(text="a redirect is an xmpp: URI")


class PubSubEngine:
    """One engine serves many pubsub services (a component JID, every PEP
    account), all in one storage. ``service`` arguments are JID strings.

    Every permission is the node kind's (``xep207.pubsub.kinds``); a
    ``Trusted`` requestor (the service itself) skips the kinds' checks but
    not the engine's invariants, events or notifications. Nothing else in
    the server writes storage.
    """

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
        kinds: Sequence[NodeKind] = (),
        hooks: Hooks | None = None,
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
        self.hooks = hooks or Hooks()
        # Accounts being deleted: kinds refuse to create nodes naming them (a
        # pair node made half-way would outlive the account, for a new owner
        # of the name to read).
        self.retiring: set[str] = set()
        # Most specific first; the generic kind claims whatever is left.
        self.kinds: list[NodeKind] = [*kinds, PresenceKind(), RosterKind(), BlocklistKind(),
                                       MamPrefsKind(), LastActivityKind()]
        self.generic = NodeKind()
        # A kind claims a node by its service and name alone, so the answer is
        # remembered (bounded; forgotten when a kind is added).
        self._kind_cache: dict[tuple[str, str], NodeKind] = {}
        # A cached node's metadata, read without a Deferred (``CachingStorage``).
        self._peek = getattr(storage, "peek_node", None)
        # Without a cache: the node and its metadata in one read, where the
        # backend offers it (the SQL ones).
        self._read_state = None if self._peek is not None else getattr(storage, "get_node_state", None)
        # Whether storage runs operations in the order they were issued (one
        # writer: SQLite's thread, memory:); a pool of connections does not.
        self._ordered_writes = bool(getattr(storage, "ordered_writes", False))
        # (a writer thread falling behind: no early delivery meanwhile; ``SQLStorage.keeping_up``)
        self._keeping_up: Callable[[], bool] | None = getattr(storage, "keeping_up", None)
        self._mark_orders: dict[tuple[str, str, str, str], InOrder] = {}  # offline marks being changed
        # What kinds derive from a node's cached metadata (a room's occupants),
        # keyed by node, valid while the cache hands out the same objects.
        self.derived: dict[tuple[str, str], tuple] = {}
        # Who passed a cacheable kind's publish checks, per node, valid while the
        # cache hands out the same node, affiliations and subscriptions objects.
        self._verdicts: dict[tuple[str, str], _Verdicts] = {}
        # Publishes per node whose notifications wait for their commit: none
        # may be overtaken by one delivered early (``publish(early=…)``).
        self._notifying_late: dict[tuple[str, str], int] = {}
        self.blocks = BlockIndex(self.hooks, self.is_pep)  # XEP-0191, from the blocklist nodes
        # xep207.cluster: after a write, a Deferred to wait for before the
        # writer is answered (other processes' in-memory copies of the node
        # brought up to date), or None. Unset in one process.
        self.answer_barrier: Callable[[Node], defer.Deferred | None] | None = None
        # Nodes being made by a request's first use (``_access_or_create``).
        self._auto_creating: dict[tuple[str, str], AutoCreation] = {}
        # xep207.legacy.chat: the pipeline a publish to a conversation (a pair
        # node) joins, for the publishes whose caller did not put them there
        # (``publish(in_pipeline=…)``: the XEP-0060 door's): a turn, a Deferred
        # firing with one once it may join, or None (no pipeline for the node).
        # Its last argument (an overwrite): the turn is taken alone, nothing
        # else entering before this one did.
        self.pipeline_turn: Callable[[NodeKind, str, str, bool],
                                     PipelineTurn | defer.Deferred | None] | None = None
        # (service, node, item id) → the lock a publish naming that id holds
        # from reading whose item it would replace until its write is issued
        # (with ordered writes; else done): two publishers naming one id at
        # once each found none, and the second replaced the first one's item.
        # (A conversation's pipeline does the same for pair nodes.)
        self._claims: dict[tuple[str, str, str], defer.DeferredLock] = {}

    async def _barrier(self, node: Node) -> None:
        if self.answer_barrier is not None:
            waiting = self.answer_barrier(node)
            if waiting is not None:
                await waiting

    def add_kind(self, kind: NodeKind) -> None:
        """A kind added later (a plugin, a service) is asked before the built-in ones."""
        self.kinds.insert(0, kind)
        self._kind_cache.clear()
        self._verdicts.clear()  # (judged by the kinds there were)

    def kind_of(self, service: str, node_id: str) -> NodeKind:
        key = (service, node_id)
        found = self._kind_cache.get(key)
        if found is not None:
            return found
        found = self.generic
        for kind in self.kinds:
            if kind.claims(self, service, node_id):
                found = kind
                break
        if len(self._kind_cache) >= KIND_CACHE_SIZE:
            self._kind_cache.clear()
        self._kind_cache[key] = found
        return found

    # Services, nodes and affiliations ---------------------------------------

    def is_pep(self, service: str) -> bool:
        """A bare JID on one of our domains is that account's PEP service."""
        return "@" in service and "/" not in service and service.split("@", 1)[1] in self.pep_domains

    def default_node_config(self, service: str, node_id: str | None) -> NodeConfig:
        if node_id is None:
            return self.generic.initial_config(self, service, "")
        return self.kind_of(service, node_id).initial_config(self, service, node_id)

    async def _affiliations(self, node: Node) -> dict[str, AffiliationName]:
        affiliations = await self.storage.get_affiliations(node.service, node.node_id)
        if self.is_pep(node.service):
            affiliations[node.service] = OWNER  # a PEP service's account owns it all
        return affiliations

    async def _access(self, requestor: str, service: str, node_id: str) -> tuple[NodeKind, Access]:
        """The node's kind and the requestor's access to it. A node the
        requestor may not see answers exactly as a missing one does."""
        kind, access = await self._access_if_exists(requestor, service, node_id)
        if access is None:
            raise errors.item_not_found()
        return kind, access

    async def _access_if_exists(self, requestor: str, service: str,
                                node_id: str) -> tuple[NodeKind, Access | None]:
        """As ``_access``, but a missing node gives None (the caller may create it)."""
        if not node_id:
            raise errors.bad_request("nodeid-required")
        kind = self.kind_of(service, node_id)
        access = self._cached_access(requestor, service, node_id)
        if access is None and self._read_state is not None:
            node, affiliations, subscriptions = await self._read_state(service, node_id)
            if node is None:
                return kind, None
            if self.is_pep(service):
                affiliations[service] = OWNER
            access = Access(self, node, requestor, affiliations)
            access._read["subscriptions"] = subscriptions
        if access is None:
            node = await self.storage.get_node(service, node_id)
            if node is None:
                return kind, None
            access = Access(self, node, requestor, await self._affiliations(node))
        if not access.trusted and not await kind.visible(access):
            raise errors.item_not_found()
        return kind, access

    def cached_metadata(self, service: str, node_id: str) -> tuple | None:
        """``(node, affiliations, subscriptions)`` as the storage cache holds them
        (the same objects until a write replaces them), or None. Read only."""
        return self._peek(service, node_id) if self._peek is not None else None

    def remember_derived(self, key: tuple[str, str], value: tuple) -> None:
        if len(self.derived) >= KIND_CACHE_SIZE:
            self.derived.clear()
        self.derived[key] = value

    def _cached_access(self, requestor: str, service: str, node_id: str) -> Access | None:
        """``Access`` from the storage cache alone (no read, no Deferred), when
        the node, its affiliations and its subscriptions are all cached."""
        if self._peek is None:
            return None
        state = self._peek(service, node_id)
        if state is None:
            return None
        node, affiliations, subscriptions = state
        if self.is_pep(service):  # the cache's own objects are read, never changed
            affiliations = {**affiliations, service: OWNER}
        access = Access(self, node, requestor, affiliations)
        access._read["subscriptions"] = subscriptions
        access._read["state"] = state  # (the very objects it was judged on: ``_remember_verdict``)
        return access

    # Publish verdicts: what a cacheable kind's checks said, per cached node state.

    def _remember_verdict(self, kind: NodeKind, access: Access) -> None:
        """``access.requestor`` passed the kind's visibility, setup and publish
        checks on the node, affiliations and subscriptions the cache holds now
        (those very objects: any write replaces them, and the verdict with them).
        Only decisions made on cached objects are remembered."""
        state = access._read.get("state")
        if not isinstance(state, tuple) or self._peek is None:
            return
        current = self._peek(access.service, access.node_id)
        if current is None or not _same_state(current, state):
            return
        key = (access.service, access.node_id)
        entry = self._verdicts.get(key)
        if entry is None or not _same_state(entry.state, current):
            if len(self._verdicts) >= KIND_CACHE_SIZE:
                self._verdicts.clear()
            entry = self._verdicts[key] = _Verdicts(current, kind)
        if len(entry.allowed) < 64:  # (a pair node has two parties' resources)
            entry.allowed[access.requestor] = access

    def _publish_known(self, requestor: str, service: str, node_id: str, entry: tuple[str | None, str],
                       queued: Callable[[], object] | None,
                       after: defer.Deferred | None,
                       early: Callable[[], bool] | None = None,
                       in_pipeline: bool = False) -> defer.Deferred | None:
        """The common publish (a chat message) as plain calls, when its verdict
        is remembered for the node state the cache holds now; else None (the
        full path judges it, and remembers). The kind's ``publish_rechecks``
        (what lives outside the node: block lists) still runs every time."""
        verdicts = self._verdicts.get((service, node_id))
        if verdicts is None or (verdicts.kind.pipelined and not in_pipeline and self.pipeline_turn is not None):
            return None  # (a conversation's publish its caller did not place in the pipeline: ``_publish`` does)
        access = verdicts.allowed.get(requestor)
        if access is None or isinstance(requestor, Trusted):
            return None  # (a Trusted requestor is never remembered: it equals the string it names)
        state = self._peek(service, node_id)  # type: ignore[misc]
        if state is None or not _same_state(state, verdicts.state):
            return None
        item_id, payload = entry
        node = access.node
        config = node.config
        if item_id or not payload or not config.persist_items or self.answer_barrier is not None \
                or len(payload) * 4 > self.max_payload_size:
            return None  # (an overwrite, a large payload, a cluster: the full path)
        verdicts.kind.publish_rechecks(self, requestor, node)
        item = Item(_item_id(verdicts.kind), payload, requestor)
        stored = self.storage.put_item(service, node_id, item, config.max_items)
        if queued is not None and self._ordered_writes:
            queued()  # whatever is issued next runs after it
            if early is not None and config.deliver_notifications and not _failed(stored) \
                    and (service, node_id) not in self._notifying_late \
                    and (self._keeping_up is None or self._keeping_up()):
                recipients = self._recipients_known(verdicts, access)
                if recipients is not None and early():
                    undelivered = self.sink.deliver(self._item_event(verdicts.kind, access, item), recipients)
                    return stored.addCallback(self._stored_delivered, verdicts.kind, access, after, undelivered)
        key = self._delivery_pending(service, node_id)
        return stored.addCallback(self._stored_known, verdicts, access, after).addBoth(self._delivery_done, key)

    def _delivery_pending(self, service: str, node_id: str) -> tuple[str, str]:
        key = (service, node_id)
        self._notifying_late[key] = self._notifying_late.get(key, 0) + 1
        return key

    def _delivery_done(self, result, key: tuple[str, str]):
        left = self._notifying_late[key] - 1
        if left:
            self._notifying_late[key] = left
        else:
            del self._notifying_late[key]
        return result

    def _stored_delivered(self, item: Item, kind: NodeKind, access: Access, after: defer.Deferred | None,
                          undelivered):
        """What follows the store of an item delivered before it: the hook
        (which means "stored") and the kind's ``undelivered``, in turn."""
        if after is not None and not after.called:
            return after.addCallback(lambda _: self._stored_delivered(item, kind, access, None, undelivered))
        self.hooks.notify(ITEM_PUBLISHED, access.node, item, access.requestor, kind=kind.name)
        if undelivered:
            return defer.ensureDeferred(self._after_delivery(kind, access, item, undelivered))
        return [item.item_id]

    def _stored_known(self, item: Item, verdicts: _Verdicts, access: Access, after: defer.Deferred | None):
        if after is not None and not after.called:
            return after.addCallback(lambda _: self._notify_known(item, verdicts, access))
        return self._notify_known(item, verdicts, access)

    def _notify_known(self, item: Item, verdicts: _Verdicts, access: Access):
        node = access.node
        kind = verdicts.kind
        self.hooks.notify(ITEM_PUBLISHED, node, item, access.requestor, kind=kind.name)
        config = node.config
        if config.deliver_notifications:
            recipients = self._recipients_known(verdicts, access)
            if recipients is None:
                return defer.ensureDeferred(self._notify(kind, access, item))
            undelivered = self.sink.deliver(self._item_event(kind, access, item), recipients)
            if undelivered:
                return defer.ensureDeferred(self._after_delivery(kind, access, item, undelivered))
        return [item.item_id]

    def _recipients_known(self, verdicts: _Verdicts, access: Access) -> Sequence[Recipient] | None:
        """The recipients, as a plain call, from the cached node state the
        verdict was made on; None when deciding them needs a read."""
        recipients: Sequence[Recipient] | None = verdicts.recipients
        if recipients is None:
            node = access.node
            recipients = self._recipients_now(node, access.affiliations, verdicts.state[2])
            if recipients is not None and not self.is_pep(node.service):
                verdicts.recipients = tuple(recipients)
        return recipients

    async def _notify(self, kind: NodeKind, access: Access, item: Item) -> list[str]:
        """What follows a stored item (its hook fired): notifications, the
        kind's ``undelivered`` and ``after_publish``."""
        node = access.node
        config = node.config
        undelivered = None
        if config.deliver_notifications:
            recipients = await self._recipients(node, access.affiliations, await access.subscriptions())
            undelivered = self.sink.deliver(self._item_event(kind, access, item), recipients)
        return await self._after_delivery(kind, access, item, undelivered)

    @staticmethod
    def _item_event(kind: NodeKind, access: Access, item: Item) -> Event:
        node = access.node
        config = node.config
        return Event(node.service, node.node_id, ITEMS, items=(item,),
                     include_payloads=config.deliver_payloads,
                     notification_type=config.notification_type,
                     reply_to=kind.reply_to(access, item),
                     node_kind=kind.name)

    async def _after_delivery(self, kind: NodeKind, access: Access, item: Item, undelivered) -> list[str]:
        for recipient in undelivered or ():
            await kind.undelivered(self, access.node, item, recipient)
        await kind.after_publish(access, item)
        return [item.item_id]

    async def _owner_access(self, requestor, service, node_id, operation) -> tuple[NodeKind, Access]:
        kind, access = await self._access(requestor, service, node_id)
        if not access.trusted:
            await kind.check_owner(access, operation)
        return kind, access

    async def _access_or_create(self, requestor: str, service: str, node_id: str, operation: str,
                                via: Via, values: Mapping[str, object] | None = None
                                ) -> tuple[NodeKind, Access, bool]:
        """``_access``, except that a missing node is created when its kind says
        this operation creates it (XEP-0163 PEP publish, a pair's first message
        or subscribe, a room's first join), else ``item-not-found``. The bool
        says whether it was created now."""
        key = (service, node_id)
        while True:
            kind, access = await self._access_if_exists(requestor, service, node_id)
            if access is not None:
                if kind.setup_unfinished(access):
                    await kind.finish_setup(self, access.node, requestor, via)
                    kind, access = await self._access(requestor, service, node_id)
                return kind, access, False
            pending = self._auto_creating.get(key)
            if pending is None:
                if not await kind.may_auto_create(self, requestor, service, node_id, operation):
                    raise errors.item_not_found()
                # (another request may have begun creating it while the kind was asked)
                pending = self._auto_creating.get(key)
                if pending is None:
                    break
            # Two first messages of one pair at once: the second waits for the
            # first's creation (its kind's setup included), then uses the node.
            await pending.wait()
        done = self._auto_creating[key] = AutoCreation()
        try:
            await self._create(requestor, service, node_id, kind, values, via=via)
        except NodeCreatedElsewhere:
            # Another process of a cluster made it between our read and our
            # write: the request goes on against that node, as if it had been
            # there (the loop's first step, setup included).
            created = False
        else:
            created = True
        finally:
            if self._auto_creating.get(key) is done:
                del self._auto_creating[key]
            done.finish()
        if not created:
            return await self._access_or_create(requestor, service, node_id, operation, via, values)
        kind, access = await self._access(requestor, service, node_id)
        return kind, access, True

    async def is_subscribed(self, node: Node, requestor: str) -> bool:
        subscriptions = await self.storage.get_entity_subscriptions(
            bare(requestor), node.service, node.node_id)
        return any(s.state == SUBSCRIBED for s in subscriptions)

    @returns_deferred
    async def create_node(
        self, requestor: str, service: str, node_id: str | None,
        values: Mapping[str, object] | None = None, *, config: NodeConfig | None = None,
        via: Via = VIA_PUBSUB,
    ) -> str:
        """Create a node (instant when ``node_id`` is None); its kind decides who may."""
        kind = self.kind_of(service, node_id) if node_id else self.generic
        if not is_trusted(requestor):
            await kind.check_create(self, requestor, service, node_id or "", values)
            if values:
                await self._check_create_form(requestor, service, node_id, kind, values)
        return await self._create(requestor, service, node_id, kind, values, config=config, via=via)

    async def _check_create_form(self, requestor: str, service: str, node_id: str | None,
                                 kind: NodeKind, values: Mapping[str, object]) -> None:
        """A create's form is a configuration: the kind's ``check_configure``
        judges it as if the requestor configured the new node (a vCard open to
        any publisher, a presence node without authorization: refused)."""
        node = Node(service, node_id or "", kind.initial_config(self, service, node_id or ""),
                    kind.creator(self, requestor, service, node_id or ""))
        owners: dict[str, AffiliationName] = {node.creator: OWNER}
        if self.is_pep(service):
            owners[service] = OWNER
        await kind.check_configure(Access(self, node, requestor, owners), values)
        self._applied_form(node.config, values, untrusted=True)

    def _applied_form(self, config: NodeConfig, values: Mapping[str, object], *, untrusted: bool):
        """A configuration form applied (create's and configure's alike): the new
        config and the ``pubsub#publisher`` JIDs it names, each within the id
        bound when a request chose them."""
        config, publishers = node_config.apply_values(config, values, self.max_items_limit)
        if untrusted:
            for publisher in publishers or ():
                check_id_length(publisher, "a JID")
        return config, publishers

    async def _create(self, requestor, service, node_id, kind, values, *, config=None,
                      via: Via = VIA_PUBSUB):
        instant = not node_id
        node_id = node_id or new_id()
        if config is None:
            config = kind.initial_config(self, service, node_id)
        publishers: list[str] = []
        if values:
            config, listed = node_config.apply_values(config, values, self.max_items_limit)
            publishers = listed or []
        node = Node(service, node_id, config, kind.creator(self, requestor, service, node_id))
        try:
            await self.storage.create_node(node)
        except NodeExists:
            if instant:
                raise errors.conflict()
            raise NodeCreatedElsewhere("conflict", text="node already exists")
        await kind.after_create(self, node, requestor, publishers, via)
        return node_id

    @returns_deferred
    async def ensure_node(self, requestor: Trusted, service: str, node_id: str,
                          config: NodeConfig | None = None, via: Via = VIA_PUBSUB) -> bool:
        """The service makes sure a node of its own exists; True if it made it now."""
        kind = self.kind_of(service, node_id)
        if await self.storage.get_node(service, node_id) is not None:
            return False
        try:
            await self._create(requestor, service, node_id, kind, None, config=config, via=via)
        except errors.StanzaError:
            return False  # created meanwhile
        return True

    @returns_deferred
    async def get_configuration(self, requestor: str, service: str, node_id: str) -> NodeConfig:
        _, access = await self._owner_access(requestor, service, node_id, "configure")
        return access.node.config

    @returns_deferred
    async def configure_node(
        self, requestor: str, service: str, node_id: str, values: Mapping[str, object],
        *, extra: Mapping[str, object] | None = None,
    ) -> NodeConfig:
        """``extra``: what a kind keeps beside XEP-0060's fields (a room's
        settings); only the service itself sets it."""
        kind, access = await self._access(requestor, service, node_id)
        if not access.trusted:
            if extra is not None:
                raise errors.forbidden()
            await kind.check_configure(access, values)
        node = access.node
        config, publishers = self._applied_form(node.config, values, untrusted=not access.trusted)
        if extra is not None:
            config = config.replace(extra=dict(extra))
        await self.storage.set_node_config(service, node_id, config)
        for publisher in publishers or ():
            if access.affiliations.get(publisher) != OWNER:  # (listing an owner demotes nobody)
                await self.storage.set_affiliation(service, node_id, publisher, PUBLISHER)
        if config.max_items < node.config.max_items:
            await self._trim(service, node_id, config.max_items)
        if config.notify_config and values:
            node = Node(service, node_id, config, node.creator, node.created)
            recipients = await self._recipients(node)
            self._deliver(
                Event(service, node_id, CONFIGURATION, config=config,
                      include_payloads=config.deliver_payloads,
                      notification_type=config.notification_type),
                recipients, node)
        return config

    async def _trim(self, service, node_id, max_items):
        page = await self.storage.page_items(service, node_id)
        excess = [i.item_id for i in page.items[: max(0, len(page.items) - max_items)]]
        if excess:
            await self.storage.delete_items(service, node_id, excess)

    @returns_deferred
    async def delete_node(self, requestor: str, service: str, node_id: str,
                          redirect: str | None = None) -> None:
        _, access = await self._owner_access(requestor, service, node_id, "delete")
        if redirect is not None and not access.trusted:
            check_redirect(redirect)
        node = access.node
        recipients = await self._recipients(node) if node.config.notify_delete else []
        subscriptions = await self.storage.get_subscriptions(service, node_id)
        await self.storage.delete_node(service, node_id)
        self.hooks.fire(NODE_EMPTIED, node, requestor)
        if self.answer_barrier is not None:
            await self._barrier(node)
        for subscription in subscriptions:
            self._changed(subscription.replace(state=NONE), subscription.state, requestor)
        if recipients:
            self._deliver(
                Event(service, node_id, DELETE, redirect=redirect,
                      notification_type=node.config.notification_type),
                recipients, node)

    @returns_deferred
    async def purge_node(self, requestor: str, service: str, node_id: str) -> None:
        _, access = await self._owner_access(requestor, service, node_id, "purge")
        node = access.node
        if not node.config.persist_items:
            raise errors.unsupported("persistent-items")
        await self.storage.purge_items(service, node_id)
        self.hooks.fire(NODE_EMPTIED, node, requestor)
        if self.answer_barrier is not None:
            await self._barrier(node)
        recipients = await self._recipients(node)
        self._deliver(
            Event(service, node_id, PURGE, notification_type=node.config.notification_type),
            recipients, node)

    @returns_deferred
    async def list_nodes(self, requestor: str, service: str) -> list[str]:
        """Node ids the requestor may know of (disco#items)."""
        node_ids = await self.storage.list_nodes(service)
        visible = []
        for node_id in node_ids:
            if await self._may_see(requestor, service, node_id):
                visible.append(node_id)
        return visible

    @returns_deferred
    async def node_info(self, requestor: str, service: str, node_id: str) -> Node | None:
        if not await self._may_see(requestor, service, node_id):
            return None
        return await self.storage.get_node(service, node_id)

    async def _may_see(self, requestor: str, service: str, node_id: str) -> bool:
        try:
            kind, access = await self._access(requestor, service, node_id)
            if not access.trusted:
                await kind.check_retrieve(access)
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

    def _owners(self, node: Node, affiliations: Mapping[str, AffiliationName]) -> list[str]:
        return sorted(e for e, a in affiliations.items() if a == OWNER)

    def block_error(self, entity: str, service: str) -> Exception | None:
        """XEP-0191 between ``entity`` (who asks) and the account ``service``:
        nothing from an account reaches whom it blocked, nor anything from whom
        one blocked; whichever door asks. None on a service that is no account."""
        blocks = self.blocks
        if not blocks:
            return None
        service, entity_bare = bare(service), bare(entity)
        own, theirs = blocks.of(service), blocks.of(entity_bare)
        if not own and not theirs:
            return None  # neither side blocks anybody: two dict lookups
        if not self.is_pep(service) or entity_bare == service:
            return None
        if own and blocks.blocks(service, entity):
            return errors.StanzaError("service-unavailable")
        if theirs and blocks.blocks(entity_bare, service):
            return errors.blocked()
        return None

    def _blocked_subscriber(self, access: Access, subscriber: str) -> Exception | None:
        """An owner subscribing someone else (XEP-0060 §8.8.2, §8.6): not across
        a block, between the subscriber and the account whose node it is or
        the owner who asks (a node of the pubsub service belongs to no account)."""
        return self.block_error(access.requestor, subscriber) or self.block_error(access.service, subscriber)

    async def access_error(self, node: Node, entity: str, affiliations,
                           presence_cache: dict | None = None) -> Exception | None:
        """Why ``entity`` may not subscribe to or read ``node`` by its access
        model, or None. Shared by subscribe, retrieve and notification so
        that the three can never disagree."""
        entity = bare(entity)
        blocked = self.block_error(entity, node.service)
        if blocked is not None:
            return blocked
        verdict = _without_reads(node, entity, affiliations)
        if verdict is not _UNDECIDED:
            assert verdict is None or isinstance(verdict, Exception)
            return verdict
        model = node.config.access_model
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

    # Publishing -------------------------------------------------------------

    def publish(
        self, requestor: str, service: str, node_id: str,
        items: Sequence[tuple[str | None, str]],
        options: Mapping[str, object] | None = None, *, vetted: bool = False,
        via: Via = VIA_PUBSUB, queued: Callable[[], object] | None = None,
        after: defer.Deferred | None = None, early: Callable[[], bool] | None = None,
        in_pipeline: bool = False,
    ) -> defer.Deferred:
        """Publish ``items`` as (item id or None, serialized payload) pairs.

        Fires with the item ids, generated where none was given. ``vetted``:
        the payload was built by a capture from a stanza it already stamped,
        so the kind's vetting (which parses) need not run again. ``queued``
        is called as soon as the item's write is issued where storage runs
        operations in the order issued (``ordered_writes``: one writer), so
        that whatever comes next sees it and its consequences (an offline
        mark) without waiting for the commit; a caller keeping stanzas in
        order may go on from there. Elsewhere (a pool of connections) it is
        not called: the caller goes on when the publish is done. ``after``
        (never failing): what runs once the item is stored (notifications, the
        kind's ``undelivered``) waits for it — the previous publish of a
        pipeline of them, whose consequences this one must see. ``early``
        (a one-to-one message): asked once the item is in storage's queue,
        on the plain-call path below, whether its notifications may leave
        now instead of after the commit (True: they did; the hook and the
        kind's ``undelivered`` still wait for the commit and for ``after``).
        A store that fails after that still fails the publish.

        ``in_pipeline``: the caller put this publish in its node's pipeline
        itself (the chat capture, a legacy message: ``after`` and ``early``
        are its place there). Any other publish to a node with a pipeline (a
        conversation's, ``pipeline_turn``) joins it here once judged, before
        its write is issued: stored, notified and offline-marked in the same
        order as the legacy door's messages, whichever door it came through.

        A publish the engine judged before, against the very node, affiliations
        and subscriptions the cache still holds, takes a plain-call path
        (``_publish_known``): no coroutine, no access read (issue 13).
        """
        if vetted and not options and len(items) == 1 and self._peek is not None:
            try:
                known = self._publish_known(requestor, service, node_id, items[0], queued, after, early,
                                            in_pipeline)
            except Exception:
                return defer.fail()  # (a refusal, or storage refusing at once: as the full path fails)
            if known is not None:
                return known
        return defer.ensureDeferred(self._publish(requestor, service, node_id, items, options, vetted=vetted,
                                                  via=via, queued=queued, after=after,
                                                  in_pipeline=in_pipeline))

    async def _publish(
        self, requestor: str, service: str, node_id: str,
        items: Sequence[tuple[str | None, str]],
        options: Mapping[str, object] | None, *, vetted: bool,
        via: Via, queued: Callable[[], object] | None,
        after: defer.Deferred | None, in_pipeline: bool = False,
    ) -> list[str]:
        if not node_id:
            raise errors.bad_request("nodeid-required")
        if len(items) > 1:
            raise errors.bad_request("invalid-payload", text="publish one item at a time")
        for _, payload in items:
            # (at most 4 bytes a character: most payloads need no encoding to tell)
            if len(payload) * 4 > self.max_payload_size and len(payload.encode("utf-8")) > self.max_payload_size:
                raise errors.not_acceptable("payload-too-big")
        turn: PipelineTurn | None = None
        claim: tuple[str, str, str] | None = None
        try:
            while True:  # (twice for a publish that waited for its turn in a pipeline, or names an item id there: below)
                # XEP-0163 §3: a PEP node made by a publish takes the publish-options as
                # its configuration (the kind's ``may_auto_create`` is its create check).
                target = self.kind_of(service, node_id)
                generic = target is self.generic or target.publish_options_configure
                kind, access, created = await self._access_or_create(
                    requestor, service, node_id, "publish", via, options if generic else None)
                if created and generic:
                    options = None  # they were the configuration; a kind's own config is checked below
                node = access.node
                if not access.trusted:
                    await kind.check_publish(access)  # permission first: preconditions leak nothing
                    if kind.publish_verdict_cacheable:
                        self._remember_verdict(kind, access)
                if options:
                    self._check_preconditions(node.config, options)
                config = node.config
                if not items:
                    if config.persist_items or config.deliver_payloads:
                        raise errors.bad_request("item-required")
                    items = [(None, "")]
                item_id, payload = items[0]
                if not payload and (config.persist_items or config.deliver_payloads):
                    raise errors.bad_request("payload-required")
                if not vetted and payload:
                    item_id, payload = await kind.vet_item(access, item_id, payload)
                if not access.trusted:
                    check_id_length(item_id, "an item id")
                overwrite = False  # (whether whose item it replaces is checked)
                if item_id and config.persist_items and not access.trusted and claim is None \
                        and not (kind.pipelined and self.pipeline_turn is not None):
                    claim = (service, node_id, item_id)  # (an owner's too: a claimant's write must not land on it)
                    await self._claim(claim)
                if item_id and config.persist_items and not access.trusted \
                        and not kind.overwrites_any(access):
                    overwrite = True
                    existing = await self.storage.get_items(service, node_id, [item_id])
                    if existing:
                        await kind.check_overwrite(access, existing[0])
                    # (blocks again, after that read: one stored while it was in flight)
                    kind.publish_rechecks(self, requestor, node)
                if turn is not None or in_pipeline or self.pipeline_turn is None:
                    break
                # Judged: a publish to a conversation its caller did not put in
                # the conversation's pipeline (the XEP-0060 door's) takes its
                # place there now. Whom the kind refused never does.
                joined = self.pipeline_turn(kind, service, node_id, overwrite)
                if not isinstance(joined, defer.Deferred):
                    turn = joined  # (None: the node has no pipeline)
                    if turn is None or not overwrite:
                        break
                else:
                    turn = await joined
                # It waited for its turn (the pipeline was held alone, or
                # serializes): judged again, on what holds now (a block, an
                # outcast, the node deleted since), as a legacy message that
                # waited is judged once its turn came. An overwrite always
                # is, holding the conversation alone: whose item it replaces
                # is read with no write of the conversation issued between
                # that read and its own (two parties' publishes naming one
                # item id at once each found none, and the second replaced
                # the first party's message).
                items, vetted = [(item_id, payload)], True
        except BaseException:
            if turn is not None:
                turn.leave()
            if claim is not None:
                self._unclaim(claim)
            raise
        key = self._delivery_pending(service, node_id)
        try:
            item = Item(item_id or _item_id(kind), payload, requestor)
            if turn is not None:
                after = turn.enter()  # (its write is issued next, in this call: stored in that order)
            if config.persist_items:
                stored = self.storage.put_item(service, node_id, item, config.max_items)
                if queued is not None and self._ordered_writes:
                    queued()  # whatever is issued next runs after it
                if claim is not None and self._ordered_writes:
                    self._unclaim(claim)  # (the next claimant's read is answered after this write)
                    claim = None
                item = await stored
                if claim is not None:
                    self._unclaim(claim)
                    claim = None
            elif queued is not None and self._ordered_writes:
                queued()
            if after is not None and not after.called:
                await after
            self.hooks.notify(ITEM_PUBLISHED, node, item, requestor, kind=kind.name)
            if self.answer_barrier is not None:
                await self._barrier(node)
            published = await self._notify(kind, access, item)
        finally:
            self._delivery_done(None, key)
            if turn is not None:
                turn.leave()
            if claim is not None:
                self._unclaim(claim)
        settled = turn.settled() if turn is not None else None
        if settled is not None:
            await settled  # (a crash after the answer must not lose what the answer says was handled)
        return published

    async def _claim(self, key: tuple[str, str, str]) -> None:
        lock = self._claims.get(key)
        if lock is None:
            lock = self._claims[key] = defer.DeferredLock()
        await lock.acquire()

    def _unclaim(self, key: tuple[str, str, str]) -> None:
        lock = self._claims[key]
        lock.release()
        if not lock.locked and self._claims.get(key) is lock:
            del self._claims[key]

    def _check_preconditions(self, config: NodeConfig, options: Mapping[str, object]) -> None:
        """XEP-0060 §7.1.5: every publish-option must match the node's configuration."""
        try:
            wanted, _ = node_config.apply_values(config, options, self.max_items_limit)
        except errors.StanzaError:
            raise errors.precondition_not_met()
        if wanted != config:
            raise errors.precondition_not_met()

    @returns_deferred
    async def retract(self, requestor: str, service: str, node_id: str,
                      item_ids: Sequence[str], notify: bool = False, *, note: str = "") -> None:
        """``note``: serialized children the retraction carries to legacy
        renderings (the ``<status/>`` of an unavailable presence)."""
        kind, access = await self._access(requestor, service, node_id)
        node = access.node
        if not item_ids:
            raise errors.bad_request("item-required")
        if not node.config.persist_items:
            raise errors.unsupported("persistent-items")
        existing = await self.storage.get_items(service, node_id, item_ids)
        if not access.trusted:
            await kind.check_retract(access, existing)
        if len(existing) != len(set(item_ids)):
            raise errors.item_not_found()
        deleted = await self.storage.delete_items(service, node_id, item_ids)
        if deleted:
            self.hooks.fire(ITEMS_RETRACTED, node, deleted, requestor)
            if self.answer_barrier is not None:
                await self._barrier(node)
        if notify and node.config.notify_retract and deleted:
            recipients = await self._recipients(node, access.affiliations)
            self._deliver(
                Event(service, node_id, RETRACT, retracted=tuple(deleted),
                      notification_type=node.config.notification_type, note=note),
                recipients, node)

    # Retrieving -------------------------------------------------------------

    @returns_deferred
    async def get_items(
        self, requestor: str, service: str, node_id: str, *,
        item_ids: Sequence[str] = (), max_items: int | None = None,
        after: str | None = None, before: str | None = None,
    ) -> ItemPage:
        kind, access = await self._access(requestor, service, node_id)
        if not access.trusted:
            await kind.check_retrieve(access)
            if kind.max_page is not None and not item_ids:
                max_items = kind.max_page if max_items is None else min(max_items, kind.max_page)
        if not access.node.config.persist_items:
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
        options: Mapping[str, object] | None = None, *, via: Via = VIA_PUBSUB,
        approved: bool = False, bookkeeping: Mapping[str, object] | None = None,
    ) -> Subscription:
        """Subscribe; ``approved`` is for callers that already hold the owner's
        consent (an RFC 6121 pre-approval) and skips the authorization step.
        ``bookkeeping``: ``xep207#…`` options the service keeps beside the
        subscriber's (the extensions of a legacy request, say); the kind's
        checks still run on the request itself."""
        if any(not k.startswith(INTERNAL_OPTION_PREFIX) for k in bookkeeping or {}):
            raise ValueError("bookkeeping options are xep207#… ones")
        kind, access, _ = await self._access_or_create(requestor, service, node_id, "subscribe", via)
        node = access.node
        subscriber = kind.subscriber_key(subscriber)
        if not access.trusted and bare(subscriber) != bare(requestor):
            check_id_length(subscriber, "a JID")
        existing = await self.storage.get_subscription(service, node_id, subscriber)
        if existing is not None:
            if existing.state == PENDING:
                raise errors.not_authorized("pending-subscription")
            if options:
                cleaned = (dict(options) if access.trusted
                           else await kind.check_options(access, existing, options))
                existing = existing.replace(options={**existing.options, **cleaned})
                await self.storage.set_subscription(existing)
            return existing
        if access.trusted:
            cleaned = dict(options or {})
        else:
            cleaned = dict(await kind.check_subscribe(access, subscriber, options or {}))
        needs_approval = not approved and kind.needs_approval(access, subscriber)
        if needs_approval and await kind.consume_pre_approval(access, subscriber):
            needs_approval = False
        subscription = Subscription(
            service, node_id, subscriber, PENDING if needs_approval else SUBSCRIBED,
            options={**cleaned, **(bookkeeping or {})}, via=via)
        await self.add_subscription(subscription, requestor)
        if needs_approval and await self._approved_since(kind, access, subscriber):
            return subscription  # pending as answered; the approval's notification follows (§8.6)
        if needs_approval:
            self.sink.request_authorization(AuthorizationRequest(
                service, node_id, subscription, tuple(self._owners(node, access.affiliations)),
                node_kind=kind.name))
        else:
            self._send_last_item_later(node, subscription)
        return subscription

    async def _approved_since(self, kind: NodeKind, access: Access, subscriber: str) -> bool:
        """The owner's consent stored between our look for it and our pending
        write (RFC 6121 §3.4: her 'subscribed' crossed this request, through
        either door): it answers the request now. The owner's side re-reads
        too; whichever answers second finds nothing pending."""
        if not await kind.consume_pre_approval(access, subscriber):
            return False
        try:
            await self.answer_authorization(Trusted(access.service), access.service, access.node_id,
                                            subscriber, True)
        except errors.StanzaError:
            pass  # the owner's side answered it first
        return True

    async def add_subscription(self, subscription: Subscription, actor: str) -> None:
        """Store a new subscription and tell the world (kinds use it on creation)."""
        await self.storage.set_subscription(subscription)
        self._changed(subscription, NONE, actor)

    def _send_last_item_later(self, node: Node, subscription: Subscription) -> None:
        """XEP-0060 §6.1.7, after the subscribe reply has gone out."""
        if node.config.send_last_published_item == "never" or not node.config.persist_items:
            return

        async def send():
            page = await self.storage.page_items(node.service, node.node_id, 1)
            if page.items:
                self._deliver(
                    Event(node.service, node.node_id, ITEMS, items=page.items,
                          include_payloads=node.config.deliver_payloads,
                          notification_type=node.config.notification_type, replay=True),
                    [Recipient(subscription.subscriber, subscription)], node)

        self._call_later(0, lambda: defer.ensureDeferred(send()))

    @returns_deferred
    async def unsubscribe(self, requestor: str, service: str, node_id: str,
                          subscriber: str, subid: str | None = None) -> None:
        kind, access = await self._access(requestor, service, node_id)
        subscriber = kind.subscriber_key(subscriber)
        if not access.trusted:
            await kind.check_unsubscribe(access, subscriber)
        existing = await self.storage.get_subscription(service, node_id, subscriber)
        if existing is None:
            raise errors.not_subscribed("cancel")
        if subid and subid != existing.subid:
            raise errors.not_acceptable("invalid-subid")
        await self.storage.remove_subscription(service, node_id, subscriber)
        if bare(requestor) != bare(subscriber):
            # The owner ended it: told as §8.8.2's change is (RFC 6121's unsubscribed).
            await self._notify_subscription_state(access.node, existing.replace(state=NONE))
        self._changed(existing.replace(state=NONE), existing.state, requestor)

    async def _subscription_of(self, access: Access, subscriber: str, subid: str | None) -> Subscription:
        subscriber = self.kind_of(access.service, access.node_id).subscriber_key(subscriber)
        subscription = await self.storage.get_subscription(access.service, access.node_id, subscriber)
        if subscription is None:
            raise errors.not_subscribed()
        if subid and subid != subscription.subid:
            raise errors.not_acceptable("invalid-subid")
        return subscription

    @returns_deferred
    async def get_subscription_options(self, requestor: str, service: str, node_id: str,
                                       subscriber: str, subid: str | None = None) -> Subscription:
        kind, access = await self._access(requestor, service, node_id)
        if bare(subscriber) != bare(requestor) and not access.is_owner:
            raise errors.forbidden()
        subscription = await self._subscription_of(access, subscriber, subid)
        if access.trusted:
            return subscription
        # The service's bookkeeping (xep207#…) is not the subscriber's to see.
        return subscription.replace(options={k: v for k, v in subscription.options.items()
                                             if not k.startswith(INTERNAL_OPTION_PREFIX)})

    @returns_deferred
    async def set_subscription_options(self, requestor: str, service: str, node_id: str,
                                       subscriber: str, options: Mapping[str, object],
                                       subid: str | None = None) -> Subscription:
        kind, access = await self._access(requestor, service, node_id)
        subscription = await self._subscription_of(access, subscriber, subid)
        cleaned = dict(options) if access.trusted else await kind.check_options(access, subscription, options)
        updated = subscription.replace(options={**subscription.options, **cleaned})
        await self.storage.set_subscription(updated)
        if updated.options != subscription.options:
            self._changed(updated, subscription.state, requestor, options_changed=True)
        return updated

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
        await self._owner_access(requestor, service, node_id, "subscriptions")
        return await self.storage.get_subscriptions(service, node_id)

    @returns_deferred
    async def set_node_subscriptions(
        self, requestor: str, service: str, node_id: str,
        changes: Sequence[tuple[str, str]],
    ) -> list[tuple[str, str]]:
        """XEP-0060 §8.8.2. Fires with the (jid, state) pairs that failed."""
        kind, access = await self._access(requestor, service, node_id)
        if not access.trusted:
            await kind.check_owner(access, "subscriptions")
        node = access.node
        failed = []
        for subscriber, state in changes:
            subscriber = kind.subscriber_key(subscriber)
            existing = await self.storage.get_subscription(service, node_id, subscriber)
            if not access.trusted and (
                    too_long(subscriber)
                    or (state == SUBSCRIBED and self._blocked_subscriber(access, subscriber) is not None)
                    or not await kind.check_subscription_change(access, subscriber, state, existing)):
                failed.append((subscriber, state))
                continue
            if state == NONE:
                if existing is not None:
                    await self.storage.remove_subscription(service, node_id, subscriber)
                    await self._notify_subscription_state(node, existing.replace(state=NONE))
                    self._changed(existing.replace(state=NONE), existing.state, requestor)
            elif state == SUBSCRIBED and existing is not None and existing.state == PENDING:
                # An approval, as answer_authorization's: one of two at once tells the subscriber.
                answered = await self._answer_pending(existing, True)
                if answered is None:  # answered meanwhile: done if approved, failed if denied
                    now = await self.storage.get_subscription(service, node_id, subscriber)
                    if now is None or now.state != SUBSCRIBED:
                        failed.append((subscriber, state))
                    continue
                await self._notify_subscription_state(node, answered)
                self._changed(answered, PENDING, requestor)
            elif state == SUBSCRIBED:
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
    async def node_affiliations(self, requestor: str, service: str,
                                node_id: str) -> dict[str, AffiliationName]:
        _, access = await self._owner_access(requestor, service, node_id, "affiliations")
        return dict(access.affiliations)

    @returns_deferred
    async def set_node_affiliations(self, requestor: str, service: str, node_id: str,
                                    changes: Mapping[str, str]) -> None:
        """XEP-0060 §8.9.2; an outcast loses its subscriptions at once.
        ``changes`` may come straight from the wire: unknown names are refused."""
        kind, access = await self._access(requestor, service, node_id)
        valid: dict[str, AffiliationName] = {}
        for entity, affiliation in changes.items():
            if not is_affiliation(affiliation):
                raise errors.bad_request(text=f"unknown affiliation {affiliation!r}")
            if not access.trusted:
                check_id_length(entity, "a JID")
            valid[entity] = affiliation
        if not access.trusted:
            await kind.check_affiliation_change(access, valid)
        after = {**access.affiliations, **valid}
        if OWNER not in after.values():
            raise errors.not_acceptable(text="a node must keep an owner")
        if self.is_pep(service) and valid.get(service, OWNER) != OWNER:
            raise errors.not_acceptable(text="the account always owns its PEP nodes")
        for entity, affiliation in valid.items():
            await self.storage.set_affiliation(service, node_id, entity, affiliation)
            if affiliation == OUTCAST:
                for subscription in await self.storage.get_entity_subscriptions(entity, service, node_id):
                    await self.storage.remove_subscription(service, node_id, subscription.subscriber)
                    await self._notify_subscription_state(access.node, subscription.replace(state=NONE))
                    self._changed(subscription.replace(state=NONE), subscription.state, requestor)
        await kind.after_affiliation_change(self, access.node, valid)

    @returns_deferred
    async def answer_authorization(self, requestor: str, service: str, node_id: str,
                                   subscriber: str, allow: bool, subid: str | None = None) -> Subscription:
        """An owner's answer to an ``AuthorizationRequest`` (XEP-0060 §8.6)."""
        kind, access = await self._owner_access(requestor, service, node_id, "subscriptions")
        node = access.node
        subscriber = kind.subscriber_key(subscriber)
        subscription = await self.storage.get_subscription(service, node_id, subscriber)
        if subscription is None or subscription.state != PENDING:
            raise errors.StanzaError("unexpected-request", text="no pending subscription")
        if allow and not access.trusted:
            # XEP-0191: a legacy 'subscribed' across a block is dropped; this door neither approves.
            blocked = self._blocked_subscriber(access, subscriber)
            if blocked is not None:
                raise blocked
        if subid and subid != subscription.subid:
            raise errors.not_acceptable("invalid-subid")
        answered = await self._answer_pending(subscription, allow)
        if answered is None:
            raise errors.StanzaError("unexpected-request", text="the subscription was answered meanwhile")
        if allow:
            self._send_last_item_later(node, answered)
        await self._notify_subscription_state(node, answered)
        self._changed(answered, PENDING, requestor)
        return answered

    async def _answer_pending(self, pending: Subscription, allow: bool) -> Subscription | None:
        """Approve or remove ``pending`` if it still is: None when another
        answer came first since it was read. Two answers at once (the owner's
        two doors, or a crossing's two sides on two processes of a cluster)
        each read it pending; only the one whose write finds it so tells the
        subscriber, or it would hear 'subscribed' twice."""
        service, node_id, subscriber = pending.service, pending.node_id, pending.subscriber
        if hasattr(self.storage, "answer_pending_subscription"):  # (the cache has it when its backend has)
            return await self.storage.answer_pending_subscription(service, node_id, subscriber, allow)
        # A backend without it (a plugin's): read again and write, as close together as it can.
        current = await self.storage.get_subscription(service, node_id, subscriber)
        if current is None or current.state != PENDING:
            return None
        if allow:
            await self.storage.set_subscription(current.replace(state=SUBSCRIBED))
            return current.replace(state=SUBSCRIBED)
        await self.storage.remove_subscription(service, node_id, subscriber)
        return current.replace(state=NONE)

    # The service's own bookkeeping --------------------------------------------------

    @returns_deferred
    async def create_account(self, actor: Trusted, account: Account) -> None:
        """A new account and its XEP-0207 nodes (``presence``, ``roster``)."""
        await self.storage.create_account(account)
        for node_id in ACCOUNT_NODES:
            await self.ensure_node(actor, account.jid, node_id)

    @returns_deferred
    async def update_account(self, actor: Trusted, account: Account) -> None:
        """New SCRAM keys (a password change)."""
        await self.storage.update_account(account)

    @returns_deferred
    async def delete_account(self, actor: Trusted, account: str) -> None:
        self.retiring.add(account)
        try:
            await self.delete_account_data(actor, account)
            await self.storage.delete_account(account)
        finally:
            self.retiring.discard(account)

    @returns_deferred
    async def delete_account_data(self, actor: Trusted, account: str) -> None:
        """Before an account goes: its nodes (PEP and pair nodes) are deleted
        and its subscriptions and affiliations elsewhere end, with events, so
        that a new account of the same name inherits nothing."""
        for node_id in await self.storage.list_nodes(account):
            await self.delete_node(actor, account, node_id)
        for subscription in await self.storage.get_entity_subscriptions(account):
            kind = self.kind_of(subscription.service, subscription.node_id)
            node = await self.storage.get_node(subscription.service, subscription.node_id)
            if node is None:
                continue
            if await kind.ends_with_account(self, node, account):
                await self.delete_node(actor, node.service, node.node_id)
            else:
                await self.storage.remove_subscription(node.service, node.node_id,
                                                       subscription.subscriber)
                self._changed(subscription.replace(state=NONE), subscription.state, actor)
        for affiliation in await self.storage.get_entity_affiliations(account):
            if await self.storage.get_node(affiliation.service, affiliation.node_id) is not None:
                await self.storage.set_affiliation(affiliation.service, affiliation.node_id, account, NONE)
        # Others' roster items about the account (names, groups, pre-approvals):
        # a new account of the same name is somebody else.
        for other in await self.storage.list_accounts(account.split("@", 1)[1]):
            if other != account and await self.storage.get_items(other, ROSTER_NODE, [account]):
                await self.retract(actor, other, ROSTER_NODE, [account])

    @returns_deferred
    async def set_offline_mark(self, actor: Trusted, subscription: Subscription,
                               value: str | None, option: str = OFFLINE_MARK, *,
                               only_if_unset: bool = False) -> None:
        """The pair kind's undelivered-message mark (set, or cleared with None);
        ``option`` names another such mark (``xep207.legacy.offline``'s);
        ``only_if_unset``: keep a mark already there. One change at a time per
        subscription and mark: messages missed together, whose publishes go on
        before their commits, would otherwise each read "no mark" and the last win."""
        if not option.startswith("xep207#"):
            raise ValueError("offline marks are xep207#… options")
        key = (subscription.service, subscription.node_id, subscription.subscriber, option)
        order = self._mark_orders.get(key)
        if order is None:
            order = self._mark_orders[key] = InOrder()
        try:
            await order.run(lambda: defer.ensureDeferred(self._set_offline_mark(key, value, only_if_unset)))
        finally:
            if not order.locked and self._mark_orders.get(key) is order:
                del self._mark_orders[key]

    async def _set_offline_mark(self, key: tuple[str, str, str, str], value: str | None,
                                only_if_unset: bool) -> None:
        service, node_id, subscriber, option = key
        backend = getattr(self.storage, "backend", self.storage)  # behind the cache, if any
        # A database other processes write (a cluster's PostgreSQL): one transaction,
        # other writers lose nothing. (Single-writer backends keep the read-then-write:
        # tests/test_offline_exactly_once.py's kill -9 mid flush relies on it; see issue 13 notes.)
        if hasattr(backend, "set_subscription_option") and not getattr(backend, "single_writer", False):
            await self.storage.set_subscription_option(service, node_id, subscriber, option, value, only_if_unset)
            return
        current = await self.storage.get_subscription(service, node_id, subscriber)
        if current is None or (only_if_unset and current.options.get(option)):
            return
        options = {k: v for k, v in current.options.items() if k != option}
        if value is not None:
            options[option] = value
        await self.storage.set_subscription(current.replace(options=options))

    def _changed(self, subscription: Subscription, previous: SubscriptionState, actor: str,
                 options_changed: bool = False) -> None:
        change = SubscriptionChange(subscription, previous, actor, options_changed)
        self.sink.subscription_changed(change)
        self.hooks.fire(SUBSCRIPTION_CHANGED, change)

    async def _notify_subscription_state(self, node: Node, subscription: Subscription) -> None:
        """XEP-0060 §8.8.4: tell the subscriber its state changed."""
        self._deliver(
            Event(node.service, node.node_id, SUBSCRIPTION, subscription=subscription,
                  notification_type="normal"),
            [Recipient(subscription.subscriber, subscription)], node)

    def _deliver(self, event: Event, recipients: Sequence[Recipient], node: Node):
        """Hand an event to the sink, labelled with the node's kind (the
        delivery picks the legacy renderer by it)."""
        event = dataclasses.replace(event, node_kind=self.kind_of(node.service, node.node_id).name)
        return self.sink.deliver(event, recipients)

    # Notifications ----------------------------------------------------------

    def _recipients_now(self, node: Node, affiliations,
                        subscriptions: Sequence[Subscription]) -> list[Recipient] | None:
        """``_recipients`` as a plain call, when affiliations, access model and
        block lists decide every subscriber and no ``+notify`` resource counts
        (not a PEP service); else None."""
        pep = self.is_pep(node.service)
        if pep and self.interest is not None:
            return None
        blocking = pep and bool(self.blocks)
        recipients = []
        allowed: dict[str, bool | object] = {}
        for subscription in _deliverable(subscriptions):
            subscriber = subscription.subscriber
            entity = bare(subscriber)
            verdict = allowed.get(entity)
            if verdict is None:
                verdict = allowed[entity] = self._verdict_without_reads(node, entity, affiliations, blocking)
            if verdict is _UNDECIDED:
                return None
            if verdict:
                recipients.append(Recipient(subscriber, subscription))
        return recipients

    def _verdict_without_reads(self, node: Node, entity: str, affiliations, blocking: bool) -> bool | object:
        """Whether ``entity`` receives this node's notifications, decided by
        block lists, affiliation and access model alone; ``_UNDECIDED`` when
        only ``access_error`` (which may read presence) can tell."""
        if blocking and self.block_error(entity, node.service) is not None:
            return False
        quick = _without_reads(node, entity, affiliations)
        return quick if quick is _UNDECIDED else quick is None

    async def _recipients(self, node: Node, affiliations=None,
                          subscriptions: Sequence[Subscription] | None = None) -> list[Recipient]:
        """Everyone who gets this node's notifications, access-checked once each.

        Explicit subscriptions first; on a PEP service, also the ``+notify``
        resources of the owner and of the contacts the access model allows.
        """
        if affiliations is None:
            affiliations = await self._affiliations(node)
        if subscriptions is None:
            subscriptions = await self.storage.get_subscriptions(node.service, node.node_id)
        decided = self._recipients_now(node, affiliations, subscriptions)
        if decided is not None:
            return decided
        allowed: dict[str, bool] = {}
        presence_cache: dict[str, set[str]] = {}

        async def may_receive(entity: str) -> bool:
            if entity not in allowed:
                error = await self.access_error(node, entity, affiliations, presence_cache)
                allowed[entity] = error is None
            return allowed[entity]

        recipients = []
        seen = set()
        # XEP-0191 applies on an account's node (access_error's first question,
        # asked here without a coroutine: two dict lookups per subscriber).
        blocking = bool(self.blocks) and self.is_pep(node.service)
        for subscription in _deliverable(subscriptions):
            entity = bare(subscription.subscriber)
            # Most subscribers are decided by affiliation and access model alone.
            known = allowed.get(entity)
            if known is None:
                quick = self._verdict_without_reads(node, entity, affiliations, blocking)
                known = allowed[entity] = await may_receive(entity) if quick is _UNDECIDED else bool(quick)
            if known:
                recipients.append(Recipient(subscription.subscriber, subscription))
                seen.add(subscription.subscriber)
        if self.interest is not None and self.is_pep(node.service):
            candidates = {node.service}
            if node.config.access_model in ("presence", "roster", "open"):
                if node.service not in presence_cache:
                    presence_cache[node.service] = await self._presence_subscribers(node.service)
                candidates |= presence_cache[node.service]
            receivers = [c for c in sorted(candidates) if await may_receive(c)]
            for resource in self.interest.interested_resources(receivers, node.node_id):
                if resource not in seen and bare(resource) not in seen:
                    recipients.append(Recipient(resource))
                    seen.add(resource)
        return recipients
