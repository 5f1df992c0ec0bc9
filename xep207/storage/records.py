"""Records: the small immutable data that storage keeps and the engine passes around.

JIDs are kept as normalized strings (``JID.full()``): storage backends and their
indexes compare strings, and the engine never needs more than bare/full.
"""

from __future__ import annotations

import dataclasses
import time
import os
from dataclasses import dataclass, field
from typing import Callable, Final, Iterator, Literal, Mapping, TypeGuard, TypeVar, get_args

# The vocabularies below are ``Literal`` string types, not enums: the values
# stay plain ``str`` at run time, so storage rows, JSON and XML attributes are
# exactly the strings XEP-0060 names, and mypy still rejects a misspelling.

# Affiliations (XEP-0060 §4.1), strongest first.
AffiliationName = Literal["owner", "publisher", "publish-only", "member", "none", "outcast"]
OWNER: Final = "owner"
PUBLISHER: Final = "publisher"
PUBLISH_ONLY: Final = "publish-only"
MEMBER: Final = "member"
NONE: Final = "none"
OUTCAST: Final = "outcast"
AFFILIATIONS: Final[tuple[AffiliationName, ...]] = get_args(AffiliationName)

# Subscription states (XEP-0060 §4.2); "none" only in a change that removed one.
SubscriptionState = Literal["none", "pending", "subscribed", "unconfigured"]
SUBSCRIBED: Final = "subscribed"
PENDING: Final = "pending"
UNCONFIGURED: Final = "unconfigured"
SUBSCRIPTION_STATES: Final[tuple[SubscriptionState, ...]] = get_args(SubscriptionState)

# How a subscription came to be; decides how its notifications are rendered.
Via = Literal["pubsub", "legacy"]
VIA_PUBSUB: Final = "pubsub"
VIA_LEGACY: Final = "legacy"


def is_affiliation(value: object) -> TypeGuard[AffiliationName]:
    """Whether a string from the wire or a form names an affiliation."""
    return value in AFFILIATIONS


def is_subscription_state(value: object) -> TypeGuard[SubscriptionState]:
    """Whether a string from the wire names a subscription state."""
    return value in SUBSCRIPTION_STATES


_Record = TypeVar("_Record", bound=type)


class _Factory:
    """The default of a field made by a factory (a sentinel nobody passes)."""


def quick_init(cls: _Record) -> _Record:
    """A frozen dataclass, with an ``__init__`` that fills the instance's
    ``__dict__`` directly. The dataclass's own ``__init__`` sets each field
    through ``object.__setattr__`` (a Python call each: frozen forbids plain
    assignment), and an Event (14 fields) and an Item are made per publish
    (issue 13). Same parameters and defaults (factories included); equality,
    hash, repr, ``dataclasses.replace`` and the frozen ``__setattr__`` stay
    the dataclass's (tests/test_records.py)."""
    fields = dataclasses.fields(cls)
    names: dict = {"_FACTORY": _Factory}
    parameters, factories = [], []
    for f in fields:
        if f.default is not dataclasses.MISSING:
            names[f"_default_{f.name}"] = f.default
            parameters.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_factory_{f.name}"] = f.default_factory
            parameters.append(f"{f.name}=_FACTORY")
            factories.append(f"    if {f.name} is _FACTORY:\n        {f.name} = _factory_{f.name}()\n")
        else:
            parameters.append(f.name)
    # Stored into the instance's own ``__dict__``, a key at a time in field
    # order: no call per field, and the dict stays key-sharing (one built and
    # set whole would be a dict of its own per instance: 248 bytes an Item, not 184).
    stores = "".join(f"    _d[{f.name!r}] = {f.name}\n" for f in fields)
    exec(f"def __init__(self, {', '.join(parameters)}):\n{''.join(factories)}"
         f"    _d = self.__dict__\n{stores}", names)
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls


def bare(jid: str) -> str:
    """The bare form of a normalized JID string."""
    return jid.split("/", 1)[0]


_IDS_PER_READ = 256
_random_ids: Iterator[str] = iter(())


def _more_random_ids() -> Iterator[str]:
    pool = os.urandom(16 * _IDS_PER_READ).hex()
    return iter([pool[i:i + 32] for i in range(0, len(pool), 32)])


def new_id() -> str:
    """32 random hex digits, as ``uuid4().hex``: one per item, so taken from one
    ``os.urandom`` read per 256 ids (issue 13). Each id is its own 16 random
    bytes, never handed out twice: ``next`` on a list iterator is atomic, a
    refill is fresh randomness, and a forked child starts with a pool of its own."""
    global _random_ids
    for found in _random_ids:
        return found
    _random_ids = _more_random_ids()
    return next(_random_ids)


def new_item_id(clock: Callable[[], float] = time.time) -> str:
    """An item's id: 32 hex digits, the first 12 the milliseconds since the
    epoch, the other 20 random (80 bits), as a UUIDv7 orders them.

    Why ordered: every node's items are indexed by (node, id), and random ids
    land on a random page of that index each time — a batch of 300 chat
    messages dirtied ~300 pages to write and checkpoint. Ids that grow with
    time append at the end of each node's range: SQLite's writer went from
    83–89 to 44–52 µs per item at 90,000 items (issue 13), and random ids only
    get worse as the archive grows. XEP-0359 asks that an id be unpredictable
    and tell nothing like the archive's size: the random part keeps it
    unpredictable, and the time it tells is the one the archive states anyway
    (XEP-0313's delay stamp) — hence only for kinds that state it
    (``NodeKind.ids_tell_time``); other items keep ``new_id``."""
    return f"{int(clock() * 1000) & 0xFFFFFFFFFFFF:012x}{new_id()[:20]}"


def _forget_random_ids() -> None:
    global _random_ids
    _random_ids = iter(())


os.register_at_fork(after_in_child=_forget_random_ids)


@dataclass(frozen=True)
class NodeConfig:
    """A node's configuration (``pubsub#node_config``), with XEP-0060 defaults.

    ``extra`` keeps fields that the engine does not interpret but other layers
    do (a MUC room's ``muc#roomconfig_*`` fields, for instance).
    """

    access_model: str = "open"
    publish_model: str = "publishers"
    max_items: int = 10
    persist_items: bool = True
    deliver_payloads: bool = True
    deliver_notifications: bool = True
    notify_retract: bool = True
    notify_delete: bool = True
    notify_config: bool = False
    notification_type: str = "headline"
    send_last_published_item: str = "never"
    title: str = ""
    roster_groups_allowed: tuple[str, ...] = ()
    # XEP-0207 §5–6 show notifications with an XEP-0033 replyto naming the
    # publisher; "owner" hides publishers (XEP-0060's pubsub#itemreply).
    itemreply: str = "publisher"
    extra: Mapping[str, object] = field(default_factory=dict)

    def replace(self, **changes) -> "NodeConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["roster_groups_allowed"] = list(self.roster_groups_allowed)
        data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "NodeConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "roster_groups_allowed" in values:
            values["roster_groups_allowed"] = tuple(values["roster_groups_allowed"])
        return cls(**values)


@dataclass(frozen=True)
class Node:
    service: str
    node_id: str
    config: NodeConfig
    creator: str = ""
    created: float = field(default_factory=time.time)


@quick_init
@dataclass(frozen=True)
class Item:
    """A published item. ``payload`` is serialized XML, kept as sent.

    ``seq`` orders items across the whole store (newer is larger); backends
    assign it on ``put_item``.
    """

    item_id: str
    payload: str
    publisher: str
    published: float = field(default_factory=time.time)
    seq: int = 0


@dataclass(frozen=True)
class Subscription:
    service: str
    node_id: str
    subscriber: str
    state: SubscriptionState = SUBSCRIBED
    subid: str = field(default_factory=new_id)
    options: Mapping[str, object] = field(default_factory=dict)
    via: Via = VIA_PUBSUB

    def replace(self, **changes) -> "Subscription":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Affiliation:
    service: str
    node_id: str
    entity: str
    affiliation: AffiliationName


@dataclass(frozen=True)
class ItemPage:
    """One page of items (XEP-0059), oldest first."""

    items: tuple[Item, ...]
    count: int
    first_index: int = 0

    @property
    def first(self) -> str | None:
        return self.items[0].item_id if self.items else None

    @property
    def last(self) -> str | None:
        return self.items[-1].item_id if self.items else None


@dataclass(frozen=True)
class Account:
    """A local account. Only SCRAM material is stored, never the password."""

    user: str
    domain: str
    salt: bytes
    iterations: int
    stored_key_sha1: bytes
    server_key_sha1: bytes
    stored_key_sha256: bytes
    server_key_sha256: bytes
    created: float = field(default_factory=time.time)

    @property
    def jid(self) -> str:
        return f"{self.user}@{self.domain}"
