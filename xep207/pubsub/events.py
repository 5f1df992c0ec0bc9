"""What the engine tells the outside world, and what it asks of it.

The engine emits ``Event``s with their already access-checked recipients to an
``IEventSink``; the XML layer renders each event once and addresses it per
recipient. The engine asks an ``IInterestDirectory`` which online resources
want PEP notifications (XEP-0163 ``+notify``); the server's sessions know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from zope.interface import Interface

from xep207.storage.records import Item, NodeConfig, Subscription, SubscriptionState, quick_init

if TYPE_CHECKING:
    from xep207.pubsub.kinds.base import NodeKindName

ITEMS = "items"
RETRACT = "retract"
PURGE = "purge"
DELETE = "delete"
CONFIGURATION = "configuration"
SUBSCRIPTION = "subscription"


@dataclass(frozen=True)
class Recipient:
    """Where one notification goes. ``subscription`` is None for an implicit
    (``+notify``) PEP recipient."""

    jid: str
    subscription: Subscription | None = None


@quick_init
@dataclass(frozen=True)
class Event:
    service: str
    node_id: str
    kind: str
    items: tuple[Item, ...] = ()
    retracted: tuple[str, ...] = ()
    include_payloads: bool = True
    notification_type: str = "headline"
    redirect: str | None = None
    config: NodeConfig | None = None
    subscription: Subscription | None = None
    reply_to: str | None = None  # XEP-0033 replyto: the publisher, if the node names it
    # Items sent because of a new subscription (send_last_published_item),
    # as opposed to a live publish.
    replay: bool = False
    # What a retraction carried for legacy renderings (an unavailable presence's status).
    note: str = ""
    # The node's kind (``xep207.pubsub.kinds``): the delivery renders by it.
    node_kind: NodeKindName = "generic"


@dataclass(frozen=True)
class AuthorizationRequest:
    """XEP-0060 §8.6: a pending subscription the node owners must decide."""

    service: str
    node_id: str
    subscription: Subscription
    owners: tuple[str, ...]
    node_kind: NodeKindName = "generic"


@dataclass(frozen=True)
class SubscriptionChange:
    """A subscription moved from ``previous`` to ``subscription.state``
    (``"none"`` when removed), because ``actor`` asked. The legacy layer turns
    changes on ``presence`` nodes into roster pushes and presence stanzas."""

    subscription: Subscription
    previous: SubscriptionState
    actor: str
    options_changed: bool = False  # same state, new options (a room nick, say)


class IEventSink(Interface):
    def deliver(event: Event, recipients: Sequence[Recipient]):
        """Send ``event`` to each recipient. Must not raise. May return the
        recipients that no session could take (the kind may keep the event
        for them: offline messages)."""

    def request_authorization(request: AuthorizationRequest):
        """Ask the owners to approve or deny a pending subscription."""

    def subscription_changed(change: SubscriptionChange):
        """A subscription was created, approved, denied or removed."""


class IInterestDirectory(Interface):
    def interested_resources(entities: Iterable[str], node_id: str) -> list[str]:
        """Full JIDs of the online resources of these bare JIDs that advertised
        ``node_id+notify`` in their entity capabilities."""

    def is_online(jid: str) -> bool:
        """A full JID: whether that session is connected; a bare JID: whether
        any of the account's sessions is."""


class NullSink:
    """Drops everything; for an engine used without a transport."""

    def deliver(self, event, recipients):
        pass

    def request_authorization(self, request):
        pass

    def subscription_changed(self, change):
        pass
