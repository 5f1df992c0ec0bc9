"""The two nodes every account has on its PEP service (XEP-0207 §3–4).

``presence``: one item per online resource, the presence as sent; access model
``authorize``, so a subscription is a presence subscription (RFC 6121 §3) and
needs the owner's consent. Nobody may make someone else a subscriber — not even
the owner, or a stranger could push herself into anyone's roster.

``roster``: the account's private names, groups and pre-approvals; nobody but
the account may even learn that it exists.
"""

from __future__ import annotations

import re
from typing import ClassVar, Mapping, Sequence

from xep207.pubsub import errors
from xep207.pubsub.kinds.base import Access, NodeKind, NodeKindName, Trusted, only_options
from xep207.pubsub.kinds.personal import FIXED_FIELDS, check_fixed
from xep207.pubsub.roster_items import is_pre_approval, without_pre_approval
from xep207.storage.records import (
    MEMBER,
    NONE,
    OUTCAST,
    PENDING,
    SUBSCRIBED,
    AffiliationName,
    Item,
    NodeConfig,
    Subscription,
    bare,
)
from xep207.xmlutil import parse_stanza, release, restamped

PRESENCE_NODE = "presence"  # XEP-0207: the node that carries presence
ROSTER_NODE = "roster"  # private owner-only node: roster names and groups
PRESENCE_OPTIONS = ("pubsub#deliver",)
PRESENCE_FIXED = ("persist_items", "max_items", "deliver_notifications", "deliver_payloads")
REQUEST_EXTENSIONS = "xep207#request"  # a legacy subscribe's children, for the contact (RFC 6121 §3.1.3)


SHOWS = ("away", "chat", "dnd", "xa")
_INTEGER = re.compile(r"[+-]?[0-9]{1,4}")  # (xs:byte's lexical space, bounded before int())


def check_presence_values(presence) -> None:
    """RFC 6121 §4.7.2: at most one priority, an integer from -128 to 127,
    and one show among ``SHOWS``; a ``bad-request`` otherwise, whichever door
    (contacts' clients read them as such: nothing else is broadcast)."""
    seen: set[str] = set()
    for child in presence.elements():
        if child.uri != presence.uri or child.name not in ("priority", "show"):
            continue
        if child.name in seen:
            raise errors.bad_request(text=f"one <{child.name}/> at most")
        seen.add(child.name)
        text = str(child).strip()
        if child.name == "show" and text not in SHOWS:
            raise errors.bad_request(text="show is away, chat, dnd or xa")
        if child.name == "priority" and not (_INTEGER.fullmatch(text) and -128 <= int(text) <= 127):
            raise errors.bad_request(text="priority is an integer from -128 to 127")


def presence_payload(presence, sender: str) -> str:
    """The presence as the node stores it: from the full JID, addressed to nobody."""
    return restamped(presence, sender, drop=("to", "id")).toXml()


class PresenceKind(NodeKind):
    name: ClassVar[NodeKindName] = "presence"
    # Requests one account may have waiting for approval, whichever door sent
    # them (each one is a <presence type='subscribe'/> to somebody).
    max_pending: int = 100

    def claims(self, engine, service: str, node_id: str) -> bool:
        return node_id == PRESENCE_NODE and engine.is_pep(service)

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        # XEP-0207 §8: presence must be authorized, never open.
        return super().initial_config(engine, service, node_id).replace(
            access_model="authorize", max_items=engine.max_items_limit,
            send_last_published_item="never")  # the probe sends presence, not this

    async def vet_item(self, access: Access, item_id, payload: str):
        """A native presence publish is the same operation as broadcast
        presence: item id = resource, ``from`` the publishing resource."""
        if "/" not in access.requestor:
            raise errors.bad_request("invalid-payload", text="presence comes from a resource")
        try:
            presence = parse_stanza(payload)
        except Exception:
            raise errors.bad_request("invalid-payload")
        if presence.name != "presence" or presence.uri != "jabber:client" or \
                presence.getAttribute("type") is not None:
            raise errors.bad_request("invalid-payload",
                                     text="the item must be an available jabber:client presence")
        try:
            check_presence_values(presence)
        except errors.StanzaError as exc:
            raise errors.bad_request("invalid-payload", text=exc.text)
        payload = presence_payload(presence, access.requestor)
        release(presence)  # (serialized: no cycle left to the collector, per native presence)
        return access.requestor.split("/", 1)[1], payload

    def subscriber_key(self, subscriber: str) -> str:
        """RFC 6121: presence subscriptions are between bare JIDs, whichever
        door (one request per account, and the legacy answers reach it)."""
        return bare(subscriber)

    async def check_configure(self, access: Access, values: Mapping[str, object]) -> None:
        await super().check_configure(access, values)
        if "pubsub#publisher" in values or values.get("pubsub#publish_model", "publishers") != "publishers":
            raise errors.not_acceptable(text="only the account's resources publish its presence")
        if values.get("pubsub#access_model", "authorize") != "authorize":
            raise errors.not_acceptable(text="presence needs the owner's authorization (XEP-0207 §8)")
        if not check_fixed(self, access, values, PRESENCE_FIXED):
            # Probes read the items (one per resource), broadcast is the notification.
            raise errors.not_acceptable(text="presence is kept per resource and broadcast with its payload")

    async def check_owner(self, access: Access, operation: str) -> None:
        """Emptying or deleting the node would end every subscription, or
        every resource's presence, with no unavailable presence for legacy
        contacts (RFC 6121 §3.2.3): the service's (account removal, a
        restart's stale presence); the owner ends subscriptions one by one."""
        await super().check_owner(access, operation)
        if operation in ("purge", "delete"):
            raise errors.forbidden(text="presence ends per resource (unavailable) or per contact (unsubscribed)")

    async def check_retract(self, access: Access, existing) -> None:
        """A resource retracts its own presence only (item id = resource)."""
        resource = access.requestor.split("/", 1)[1] if "/" in access.requestor else None
        if bare(access.requestor) != access.service or any(i.item_id != resource for i in existing):
            raise errors.forbidden(text="a resource retracts its own presence")

    async def check_subscribe(self, access: Access, subscriber: str,
                              options: Mapping[str, object]) -> Mapping[str, object]:
        if bare(subscriber) != bare(access.requestor) and not access.trusted:
            raise errors.bad_request("invalid-jid")  # nobody subscribes anybody else
        if not access.trusted:
            only_options(options, PRESENCE_OPTIONS)
        cleaned = await super().check_subscribe(access, subscriber, options)
        if not access.trusted and self.needs_approval(access, subscriber):
            await self.check_pending(access.engine, subscriber)
        return cleaned

    async def check_pending(self, engine, subscriber: str) -> None:
        """``policy-violation`` once ``subscriber`` has ``max_pending`` requests waiting."""
        outgoing = await engine.storage.get_entity_subscriptions(bare(subscriber), node_id=PRESENCE_NODE)
        if sum(1 for s in outgoing if s.state == PENDING) >= self.max_pending:
            raise errors.StanzaError("policy-violation", type="modify",
                                     text="too many pending subscription requests")

    async def consume_pre_approval(self, access: Access, subscriber: str) -> bool:
        """RFC 6121 §3.4: the account's 'subscribed' sent before the request is
        kept on its roster item; a request through either door uses it up."""
        engine, owner, contact = access.engine, access.service, bare(subscriber)
        stored = await engine.storage.get_items(owner, ROSTER_NODE, [contact])
        if not stored or not is_pre_approval(stored[0].payload):
            return False
        await engine.publish(Trusted(owner), owner, ROSTER_NODE,
                             [(contact, without_pre_approval(stored[0].payload))])
        return True

    async def check_options(self, access: Access, subscription: Subscription,
                            options: Mapping[str, object]) -> Mapping[str, object]:
        """The subscriber's alone: an owner switching a contact's delivery off
        leaves it 'to' and hearing nothing, not even unavailable (RFC 6121
        has no such switch; the owner ends a subscription instead)."""
        if not access.trusted:
            only_options(options, PRESENCE_OPTIONS)
            if bare(subscription.subscriber) != bare(access.requestor):
                raise errors.forbidden(text="a subscription's options are its subscriber's")
        return await super().check_options(access, subscription, options)

    async def check_subscription_change(self, access: Access, subscriber: str, state: str,
                                        existing: Subscription | None) -> bool:
        """The owner approves a pending request or ends a subscription; she
        never creates one (RFC 6121: the contact asks first)."""
        if state == SUBSCRIBED:
            return existing is not None and existing.state in (PENDING, SUBSCRIBED)
        return state == NONE

    async def check_affiliation_change(self, access: Access,
                                       changes: Mapping[str, AffiliationName]) -> None:
        await super().check_affiliation_change(access, changes)
        if any(a not in (NONE, OUTCAST, MEMBER) for e, a in changes.items() if e != access.service):
            raise errors.not_acceptable(text="only the account publishes its presence")


class RosterKind(NodeKind):
    name: ClassVar[NodeKindName] = "roster"
    # What the jabber:iq:roster door needs kept: every item, the account's alone.
    fixed_fields: ClassVar[Sequence[str]] = FIXED_FIELDS
    max_page: ClassVar[int | None] = None  # (the account's own, read whole as a roster is)
    # Whether the owner may purge or delete the node: a roster emptied so
    # would push nothing to the account's legacy sessions (items go one by one).
    owner_empties: ClassVar[bool] = False

    def claims(self, engine, service: str, node_id: str) -> bool:
        return node_id == ROSTER_NODE and engine.is_pep(service)

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        return super().initial_config(engine, service, node_id).replace(
            access_model="whitelist", max_items=engine.max_items_limit, deliver_notifications=False,
            send_last_published_item="never")

    async def visible(self, access: Access) -> bool:
        return access.trusted or bare(access.requestor) == access.service

    async def check_owner(self, access: Access, operation: str) -> None:
        await super().check_owner(access, operation)
        if operation in ("purge", "delete") and not self.owner_empties:
            raise errors.forbidden(text="roster items are removed one by one (subscription='remove')")

    async def check_configure(self, access: Access, values: Mapping[str, object]) -> None:
        """A roster set answered "result" must be stored: the owner does not
        configure away the items, nor share the node."""
        await super().check_configure(access, values)
        if not check_fixed(self, access, values, self.fixed_fields):
            raise errors.not_acceptable(text="a roster keeps every item and is its account's alone")

    async def check_affiliation_change(self, access: Access,
                                       changes: Mapping[str, AffiliationName]) -> None:
        await super().check_affiliation_change(access, changes)
        if any(e != access.service for e in changes):
            raise errors.not_acceptable(text="a roster is private to its account")

    async def check_subscription_change(self, access: Access, subscriber: str, state: str,
                                        existing: Subscription | None) -> bool:
        return state == NONE or bare(subscriber) == access.service

    async def after_publish(self, access: Access, item: Item) -> None:
        """RFC 6121 §3.1.4/§3.4: a pre-approval stored (a legacy 'subscribed', or
        the owner's native publish) while the contact's request is pending is
        the owner's approval of it, used up at once: never a pending request
        and a pre-approval side by side. Across a block (XEP-0191) it stays a
        pre-approval, as a legacy 'subscribed' would not pass either."""
        if not is_pre_approval(item.payload):
            return
        engine, owner, contact = access.engine, access.service, item.item_id
        pending = await engine.storage.get_subscription(owner, PRESENCE_NODE, contact)
        if pending is None or pending.state != PENDING:
            return
        try:
            await engine.answer_authorization(owner, owner, PRESENCE_NODE, contact, True)
        except errors.StanzaError:
            return  # answered meanwhile (the crossing's other side), or blocked
        await engine.publish(Trusted(owner), owner, ROSTER_NODE, [(contact, without_pre_approval(item.payload))])


ACCOUNT_NODES: Sequence[str] = (PRESENCE_NODE, ROSTER_NODE)
