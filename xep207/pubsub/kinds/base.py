"""What a kind of node is: the rules the engine asks, whichever door a request used.

Every node belongs to one kind (``generic``, ``presence``, ``roster``, ``pair``,
``room``). The engine never decides a permission itself: it asks the node's kind
at each decision point (create, subscribe, publish, overwrite, retract,
retrieve, options, owner operations). A legacy stanza and an XEP-0060 request
for the same node reach the same question and get the same answer.

``NodeKind`` is the generic XEP-0060 behaviour; the other kinds subclass it and
tighten what they give meaning to. Prosody's ``util/pubsub.lua`` (one place
that answers "may this actor do this", and a trusted actor) is the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Mapping, Sequence

from zope.interface import Attribute, Interface, implementer

from xep207.pubsub import errors
from xep207.storage.records import (
    MEMBER,
    NONE,
    OUTCAST,
    OWNER,
    PENDING,
    PUBLISH_ONLY,
    PUBLISHER,
    SUBSCRIBED,
    AffiliationName,
    Item,
    Node,
    NodeConfig,
    Subscription,
    Via,
    bare,
)

if TYPE_CHECKING:
    from xep207.pubsub.engine import PubSubEngine

# The kinds there are, by the ``name`` each ``NodeKind`` class declares.
NodeKindName = Literal["generic", "presence", "roster", "blocklist", "mamprefs", "lastactivity", "pair",
                       "room", "push",
                       "private", "bookmarks", "vcard", "avatar-data"]  # kinds/personal.py

MAY_PUBLISH = frozenset({OWNER, PUBLISHER, PUBLISH_ONLY})
MAY_RETRIEVE = frozenset({OWNER, PUBLISHER, MEMBER})
# The most items one read answers (XEP-0059 pages the rest, XEP-0060 §6.5.7):
# whichever door reads a node others fill (a conversation, an open node of
# 10000 items of 64 KiB), one answer stays bounded. XEP-0313 pages alike.
MAX_PAGE = 250
# XEP-0060 §16.4.2's pubsub#subscribe_options fields.
SUBSCRIBE_OPTIONS = ("pubsub#deliver", "pubsub#digest", "pubsub#digest_frequency", "pubsub#expire",
                     "pubsub#include_body", "pubsub#show-values", "pubsub#subscription_type",
                     "pubsub#subscription_depth")
INTERNAL_OPTION_PREFIX = "xep207#"
KIND_FIELD = "xep207#kind"  # stored in a node's configuration: which kind made it  # subscription options only the service sets


# The longest node id (of a kind that takes any name), item id or JID an
# owner names for someone else that a request may give: a JID part's bound
# (RFC 7622 §3.1), which every backend can index (PostgreSQL refuses keys of
# more than about 2700 bytes), so all answer alike. Ids the service makes,
# and a session's own JID, are not the request's to choose.
MAX_ID_OCTETS = 1023


def too_long(value: str | None) -> bool:
    if not value or len(value) <= MAX_ID_OCTETS // 4:  # (at most 4 octets a character)
        return False
    return len(value.encode("utf-8")) > MAX_ID_OCTETS


def check_id_length(value: str | None, what: str) -> None:
    if too_long(value):
        raise errors.not_acceptable(text=f"{what} is at most {MAX_ID_OCTETS} octets")


class Trusted(str):
    """The service acting for itself, or for a party whose right it has just
    established (a pair node on a first message, room bookkeeping, accounts).

    A trusted request skips the kind's permission checks, never the engine's
    invariants, events or notifications. It is a ``str`` so that it flows
    through the engine like any requestor JID.
    """


def is_trusted(requestor: str) -> bool:
    return isinstance(requestor, Trusted)


@dataclass(frozen=True)
class Access:
    """One requestor in front of one node: what every check needs to know."""

    engine: "PubSubEngine"
    node: Node
    requestor: str
    affiliations: Mapping[str, AffiliationName] = field(default_factory=dict)
    # Reads made for this one request, shared by the checks and the fan-out.
    _read: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    async def subscriptions(self) -> list[Subscription]:
        """The node's subscriptions, read once per request (a room's checks
        and its notification fan-out need the same list)."""
        if "subscriptions" not in self._read:
            self._read["subscriptions"] = await self.engine.storage.get_subscriptions(
                self.node.service, self.node.node_id)
        found = self._read["subscriptions"]
        assert isinstance(found, list)
        return found

    @property
    def trusted(self) -> bool:
        return is_trusted(self.requestor)

    @property
    def affiliation(self) -> AffiliationName:
        return self.affiliations.get(bare(self.requestor), NONE)

    @property
    def is_owner(self) -> bool:
        return self.trusted or self.affiliation == OWNER

    @property
    def service(self) -> str:
        return self.node.service

    @property
    def node_id(self) -> str:
        return self.node.node_id


class INodeKind(Interface):
    """The rules of one kind of node. Every ``check_*`` raises a stanza error
    to refuse; the engine calls them for untrusted requestors only, except
    the ``vet_*`` and ``clean_*`` ones, which keep invariants for everyone."""

    name = Attribute("A short name: rendering and logs refer to the kind by it.")

    def claims(engine, service, node_id):
        """Whether this kind owns the name (reserved: nobody else may create it)."""

    def initial_config(engine, service, node_id):
        """The configuration a new node of this kind starts with."""

    def check_create(engine, requestor, service, node_id, values):
        """Deferred/coroutine: may ``requestor`` create this node through XEP-0060?"""

    def after_create(engine, node, requestor, publishers, via):
        """Coroutine: the affiliations and subscriptions a new node starts with."""

    def may_auto_create(engine, requestor, service, node_id, operation):
        """Coroutine: whether a publish or subscribe to a missing node creates it."""

    def visible(access):
        """Coroutine: False hides the node (every answer as if it did not exist)."""


@implementer(INodeKind)
class NodeKind:
    """Generic XEP-0060 (and XEP-0163 PEP) nodes."""

    name: ClassVar[NodeKindName] = "generic"
    # Whether XEP-0060 §7.1.5 publish-options configure a node that a publish
    # creates (generic nodes do; most kinds fix their own configuration).
    publish_options_configure: ClassVar[bool] = False
    # Whether ``visible``, ``setup_unfinished`` and ``check_publish`` answer from
    # the requestor, the node, its affiliations and its subscriptions alone: the
    # engine may then remember a "yes" for as long as its cache holds those very
    # objects (any write replaces them). What else the answer depends on
    # (block lists) goes in ``publish_rechecks``, asked on every publish.
    publish_verdict_cacheable: ClassVar[bool] = False
    # Whether publishes to its nodes keep one order whichever door they came
    # through (a conversation's pipeline, ``engine.pipeline_turn``): a publish
    # its caller did not place there never takes the remembered-verdict path.
    pipelined: ClassVar[bool] = False
    # Whether an id the engine makes for an item may begin with the time it was
    # stored (``new_item_id``: index locality for an archive that grows). Only
    # where the node's readers are its parties or occupants, who were told that
    # time anyway (delivered as it happened; MAM, room history and offline
    # delivery stamp it); an open node's stranger learns no time from
    # XEP-0060, so elsewhere ids are all random.
    ids_tell_time: ClassVar[bool] = False
    # The most items one untrusted read answers (``MAX_PAGE``); None: the
    # whole node, for an account's own node its legacy door returns whole
    # (a block list: XEP-0191 has no paging), bounded by its own max_items.
    max_page: ClassVar[int | None] = MAX_PAGE
    # The subscription options a requestor may set (XEP-0060 §6.3.5: any
    # other is ``invalid-options``); kinds with options of their own (a
    # room's nick, a pair's) check them themselves.
    subscription_options: ClassVar[Sequence[str]] = SUBSCRIBE_OPTIONS

    def claims(self, engine: "PubSubEngine", service: str, node_id: str) -> bool:
        return True

    def initial_config(self, engine: "PubSubEngine", service: str, node_id: str) -> NodeConfig:
        if not engine.is_pep(service):
            return engine.default_config
        # XEP-0163 §5: PEP nodes default to the presence access model, their
        # notifications name no publisher, and a contact coming online with
        # ``+notify`` gets the last item (§4.3.2: on_sub_and_presence).
        return engine.default_config.replace(itemreply="owner", access_model="presence",
                                             send_last_published_item="on_sub_and_presence")

    # Creating ------------------------------------------------------------------

    async def check_create(self, engine, requestor: str, service: str, node_id: str,
                           values: Mapping[str, object] | None) -> None:
        check_id_length(node_id, "a node id")
        if engine.is_pep(service) and bare(requestor) != service:
            raise errors.forbidden(text="only the account may create nodes on its PEP service")

    async def after_create(self, engine, node: Node, requestor: str,
                           publishers: Sequence[str], via: Via) -> None:
        creator = node.creator
        await engine.storage.set_affiliation(node.service, node.node_id, creator, OWNER)
        for publisher in publishers:
            if publisher != creator:
                await engine.storage.set_affiliation(node.service, node.node_id, publisher, PUBLISHER)
        if node.config.access_model == "whitelist" and not engine.is_pep(node.service):
            # docs/architecture.md: the creator of a whitelist node is subscribed to it,
            # as XEP-0207 §6 shows both parties notified.
            await engine.add_subscription(Subscription(node.service, node.node_id, creator, SUBSCRIBED),
                                          requestor)

    def setup_unfinished(self, access: Access) -> bool:
        """Whether ``after_create`` of this node may still be running (another
        process of a cluster made it a moment ago): a kind whose requests need
        part of that setup says so here, cheaply, from what ``access`` read."""
        return False

    async def finish_setup(self, engine, node: Node, requestor: str, via: Via) -> None:
        """What ``setup_unfinished`` found missing, done idempotently for a
        request of ``requestor``, granting it nothing the creator would not."""

    async def may_auto_create(self, engine, requestor: str, service: str, node_id: str,
                              operation: str) -> bool:
        # XEP-0163 §3: publishing to a missing PEP node creates it.
        if operation == "publish" and engine.is_pep(service) and bare(requestor) == service:
            check_id_length(node_id, "a node id")
            return True
        return False

    def creator(self, engine, requestor: str, service: str, node_id: str) -> str:
        return bare(requestor)

    def listed_owners(self, node: Node) -> list[str]:
        """The owners disco#info's meta-data (``pubsub#owner``) names to
        whoever may see the node: its creator, unless the kind hides JIDs."""
        return [node.creator]

    async def visible(self, access: Access) -> bool:
        return True

    # Owner operations ------------------------------------------------------------

    async def check_owner(self, access: Access, operation: str) -> None:
        """configure, delete, purge, affiliations, subscriptions (XEP-0060 §8)."""
        if not access.is_owner:
            raise errors.forbidden()

    async def check_configure(self, access: Access, values: Mapping[str, object]) -> None:
        await self.check_owner(access, "configure")

    async def check_subscription_change(self, access: Access, subscriber: str, state: str,
                                        existing: Subscription | None) -> bool:
        """Whether an owner's XEP-0060 §8.8.2 change applies (False: it is
        reported as failed)."""
        if state == SUBSCRIBED and access.affiliations.get(bare(subscriber)) == OUTCAST:
            return False
        return state in (NONE, SUBSCRIBED)

    async def check_affiliation_change(self, access: Access,
                                       changes: Mapping[str, AffiliationName]) -> None:
        await self.check_owner(access, "affiliations")

    async def after_affiliation_change(self, engine, node: Node,
                                       changes: Mapping[str, AffiliationName]) -> None:
        """Coroutine: what a kind keeps in step with affiliations, once changed."""

    # Publishing --------------------------------------------------------------------

    async def check_publish(self, access: Access) -> None:
        if access.affiliation in MAY_PUBLISH:
            return
        node = access.node
        if access.affiliation != OUTCAST:
            model = node.config.publish_model
            if model == "open":
                return
            if model == "subscribers" and await access.engine.is_subscribed(node, access.requestor):
                return
        raise errors.forbidden()

    def publish_rechecks(self, engine, requestor: str, node: Node) -> None:
        """Raises a stanza error to refuse a publish whose remembered verdict
        (``publish_verdict_cacheable``) no longer holds for reasons outside the
        node's cached state; the same rule ``check_publish`` also applies."""

    async def vet_item(self, access: Access, item_id: str | None, payload: str) -> tuple[str | None, str]:
        """The item as it will be stored; raises ``invalid-payload`` for what
        the kind gives no meaning to."""
        return item_id, payload

    def reply_to(self, access: Access, item: Item) -> str | None:
        """The XEP-0033 ``replyto`` a notification names (XEP-0207 §5–6): the
        publisher, unless the node's ``pubsub#itemreply`` is ``owner``."""
        return access.requestor if access.node.config.itemreply == "publisher" else None

    def overwrites_any(self, access: Access) -> bool:
        """Whether the requestor may overwrite any item (no need to look at it)."""
        return access.affiliation in (OWNER, PUBLISHER)

    async def check_overwrite(self, access: Access, existing: Item) -> None:
        """XEP-0060 lets publishers overwrite; anyone else only their own items."""
        if bare(existing.publisher) != bare(access.requestor):
            raise errors.forbidden(text="that item was published by someone else")

    async def check_retract(self, access: Access, existing: Sequence[Item]) -> None:
        if access.affiliation in (OWNER, PUBLISHER):
            return
        if access.affiliation == PUBLISH_ONLY:
            if all(bare(i.publisher) == bare(access.requestor) for i in existing):
                return
        raise errors.forbidden()

    # Reading and subscribing -------------------------------------------------------

    async def check_retrieve(self, access: Access) -> None:
        error = await access.engine.access_error(access.node, access.requestor, access.affiliations)
        if error is not None:
            raise error
        node = access.node
        if node.config.access_model == "authorize" and access.affiliation not in MAY_RETRIEVE:
            subscriptions = await access.engine.storage.get_entity_subscriptions(
                bare(access.requestor), node.service, node.node_id)
            states = {s.state for s in subscriptions}
            if SUBSCRIBED not in states:
                if PENDING in states:
                    raise errors.not_authorized("pending-subscription")
                raise errors.not_authorized("not-subscribed")

    async def check_subscribe(self, access: Access, subscriber: str,
                              options: Mapping[str, object]) -> Mapping[str, object]:
        """Admission. Returns the options to store."""
        if bare(subscriber) != bare(access.requestor):
            if not access.is_owner:
                raise errors.bad_request("invalid-jid")
            # XEP-0191: an owner subscribes nobody across a block (notifications would follow).
            blocked = access.engine.block_error(access.requestor, subscriber)
            if blocked is not None:
                raise blocked
        error = await access.engine.access_error(access.node, subscriber, access.affiliations)
        if error is not None:
            raise error
        return self.clean_options(access, None, options)

    def subscriber_key(self, subscriber: str) -> str:
        """The JID a subscription is kept under (XEP-0060: as given)."""
        return subscriber

    async def consume_pre_approval(self, access: Access, subscriber: str) -> bool:
        """A subscription that needs the owner's approval may already hold it
        (RFC 6121 §3.4 for presence): True if so, and it is used up."""
        return False

    def needs_approval(self, access: Access, subscriber: str) -> bool:
        return (access.node.config.access_model == "authorize"
                and access.affiliations.get(bare(subscriber), NONE) not in MAY_RETRIEVE)

    async def check_options(self, access: Access, subscription: Subscription,
                            options: Mapping[str, object]) -> Mapping[str, object]:
        """Who may set which subscription option. Returns the options to store."""
        if bare(subscription.subscriber) != bare(access.requestor) and not access.is_owner:
            raise errors.forbidden()
        return self.clean_options(access, subscription, options)

    def clean_options(self, access: Access, subscription: Subscription | None,
                      options: Mapping[str, object]) -> dict:
        """Internal options are the service's; the kind's are the subscriber's;
        any other is refused (stored, it was a place to keep anything)."""
        if not access.trusted:
            if subscription is not None:
                # The options form comes back whole: what it left as stored is
                # no request (a subscription from before the checks keeps its own).
                options = {k: v for k, v in options.items() if k.startswith(INTERNAL_OPTION_PREFIX)
                           or k not in subscription.options or subscription.options[k] != v}
            only_options(options, self.subscription_options)
            # An empty field sets nothing (kept, it came back as the text "None").
            return {k: v for k, v in options.items() if v is not None}
        return dict(options)

    async def check_unsubscribe(self, access: Access, subscriber: str) -> None:
        if bare(subscriber) != bare(access.requestor) and not access.is_owner:
            raise errors.bad_request("invalid-jid")

    # The service's bookkeeping ------------------------------------------------------

    async def after_publish(self, access: Access, item: Item) -> None:
        """What a stored item means beyond itself, whichever door published it
        (presence's roster: a pre-approval answers a pending request)."""

    async def undelivered(self, engine, node: Node, item: Item, recipient, late: bool = False) -> None:
        """A live item reached none of ``recipient``'s sessions. ``late``: told
        after its publish returned (xep207.cluster), maybe after later items'."""

    async def ends_with_account(self, engine, node: Node, account: str) -> bool:
        """Whether deleting ``account`` deletes this node (it was one of its parties)."""
        return False



class AccountPrivateKind(NodeKind):
    """A node of one account's own state (a block list, archive preferences):
    nobody else may know it exists, only the service configures it, and no
    other entity is affiliated or subscribed, whichever door asks. Subclasses
    name the node and say what it is, for the errors."""

    node_name: ClassVar[str]
    what: ClassVar[str]  # "the block list": who the errors talk about
    max_page: ClassVar[int | None] = None  # (read whole by its account's legacy door)

    def claims(self, engine, service: str, node_id: str) -> bool:
        return node_id == self.node_name and engine.is_pep(service)

    async def visible(self, access: Access) -> bool:
        return access.trusted or bare(access.requestor) == access.service

    async def check_create(self, engine, requestor: str, service: str, node_id: str,
                           values: Mapping[str, object] | None) -> None:
        await super().check_create(engine, requestor, service, node_id, values)
        if values:
            raise errors.not_acceptable(text=f"{self.what}'s configuration is the service's")

    async def check_configure(self, access: Access, values: Mapping[str, object]) -> None:
        await super().check_configure(access, values)
        if values:
            raise errors.not_acceptable(text=f"{self.what}'s configuration is the service's")

    async def check_affiliation_change(self, access: Access,
                                       changes: Mapping[str, AffiliationName]) -> None:
        await super().check_affiliation_change(access, changes)
        if any(e != access.service for e in changes):
            raise errors.not_acceptable(text=f"{self.what} is private to its account")

    async def check_subscription_change(self, access: Access, subscriber: str, state: str,
                                        existing: Subscription | None) -> bool:
        return state == NONE or bare(subscriber) == access.service

def single_value(options: Mapping[str, object], name: str) -> str | None:
    """A text-single option's value; a list of more than one is a bad request."""
    value = options.get(name)
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise errors.bad_request("invalid-options", text=f"{name} takes one value")
        value = value[0]
    return None if value is None else str(value)


def only_options(options: Mapping[str, object], allowed: Sequence[str]) -> None:
    """Refuse options a kind does not define (XEP-0060 §6.3.5 invalid-options)
    and §16.4.2's options whose values are not of their type. An internal
    option a kind lists (a room's role) passes here: the kind says who may set it."""
    for name in options:
        if name in allowed:
            continue
        if name.startswith(INTERNAL_OPTION_PREFIX):
            raise errors.forbidden(text="that subscription option is set by the service")
        raise errors.bad_request("invalid-options", text=f"unknown subscription option {name}")
    check_option_values(options)


_BOOLEAN = frozenset({"0", "1", "true", "false"})
_SHOW_VALUES = frozenset({"away", "chat", "dnd", "online", "xa"})
# XEP-0082 DateTime: the date, the time, fractions of a second, the zone.
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


def _one_of(choices: frozenset[str]):
    return lambda value: value in choices


def _boolean(value: str) -> bool:
    return value in _BOOLEAN


def _whole_number(value: str) -> bool:  # an xs:integer of at most 10 digits (a 32-bit one is plenty)
    return value.isascii() and value.isdigit() and len(value) <= 10


def _depth(value: str) -> bool:  # §16.4.2 lists 1 and all; gloox sends any depth (its "2")
    return value == "all" or (_whole_number(value) and value.strip("0") != "")


def _expire(value: str) -> bool:
    return value == "presence" or _DATETIME.fullmatch(value) is not None


# XEP-0060 §16.4.2's fields, by type: a value outside it was stored as given
# (any text: the place to keep anything moved from the name to the value).
_SINGLE_VALUES = {
    "pubsub#deliver": _boolean, "pubsub#digest": _boolean, "pubsub#include_body": _boolean,
    "pubsub#digest_frequency": _whole_number, "pubsub#expire": _expire,  # (the frequency: milliseconds)
    "pubsub#subscription_type": _one_of(frozenset({"items", "nodes"})),
    "pubsub#subscription_depth": _depth,
}


def check_option_values(options: Mapping[str, object]) -> None:
    """``invalid-options`` for a §16.4.2 option whose value is not of its type.
    An empty field (no value) passes: a form echoed back may hold one."""
    for name, valid in _SINGLE_VALUES.items():
        if name in options and options[name] is not None:
            value = options[name]
            text = value if isinstance(value, str) else _boolean_text(value)
            if text is None or not valid(text):
                raise errors.bad_request("invalid-options", text=f"{name}: not a valid value")
    if "pubsub#show-values" in options and options["pubsub#show-values"] is not None:
        shows = options["pubsub#show-values"]
        shows = [shows] if isinstance(shows, str) else shows
        if not isinstance(shows, (list, tuple)) or len(shows) > len(_SHOW_VALUES) \
                or any(show not in _SHOW_VALUES for show in shows):
            raise errors.bad_request("invalid-options", text="pubsub#show-values: not a valid value")


def _boolean_text(value: object) -> str | None:
    """A parsed boolean (a typed form) as its text; None for anything else (a list)."""
    return ("true" if value else "false") if isinstance(value, bool) else None
