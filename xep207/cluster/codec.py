"""What crosses between processes, as JSON: an engine ``Event`` with its
recipients, and an ``AuthorizationRequest``.

JSON rather than pickle: a message read from Redis must never be able to run
code in the reader. Each event is encoded once, whatever the number of
processes and recipients it goes to.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from xep207.pubsub.events import AuthorizationRequest, Event, Recipient
from xep207.storage.records import Item, NodeConfig, Subscription


def _subscription(data: dict | None) -> Subscription | None:
    if data is None:
        return None
    return Subscription(data["service"], data["node_id"], data["subscriber"], data["state"],
                        data["subid"], dict(data["options"]), data["via"])


def _subscription_data(subscription: Subscription | None) -> dict | None:
    if subscription is None:
        return None
    return {"service": subscription.service, "node_id": subscription.node_id,
            "subscriber": subscription.subscriber, "state": subscription.state, "subid": subscription.subid,
            "options": dict(subscription.options), "via": subscription.via}


def _item_data(item: Item) -> dict:
    # Not dataclasses.asdict: it deep-copies, and this runs for every event that crosses.
    return {"item_id": item.item_id, "payload": item.payload, "publisher": item.publisher,
            "published": item.published, "seq": item.seq}


def event_data(event: Event) -> dict:
    return {
        "service": event.service, "node_id": event.node_id, "kind": event.kind,
        "items": [_item_data(item) for item in event.items],
        "retracted": list(event.retracted), "include_payloads": event.include_payloads,
        "notification_type": event.notification_type, "redirect": event.redirect,
        "config": event.config.to_dict() if event.config is not None else None,
        "subscription": _subscription_data(event.subscription), "reply_to": event.reply_to,
        "replay": event.replay, "note": event.note, "node_kind": event.node_kind,
    }


def event_from(data: dict) -> Event:
    return Event(
        data["service"], data["node_id"], data["kind"],
        items=tuple(Item(**item) for item in data["items"]),
        retracted=tuple(data["retracted"]), include_payloads=data["include_payloads"],
        notification_type=data["notification_type"], redirect=data["redirect"],
        config=NodeConfig.from_dict(data["config"]) if data["config"] is not None else None,
        subscription=_subscription(data["subscription"]), reply_to=data["reply_to"],
        replay=data["replay"], note=data["note"], node_kind=data["node_kind"])


def recipients_data(recipients: Sequence[Recipient]) -> list:
    return [[r.jid, _subscription_data(r.subscription)] for r in recipients]


def recipients_from(data: list) -> list[Recipient]:
    return [Recipient(jid, _subscription(subscription)) for jid, subscription in data]


def request_data(request: AuthorizationRequest) -> dict:
    return {"service": request.service, "node_id": request.node_id,
            "subscription": _subscription_data(request.subscription),
            "owners": list(request.owners), "node_kind": request.node_kind}


def request_from(data: dict) -> AuthorizationRequest:
    subscription = _subscription(data["subscription"])
    assert subscription is not None
    return AuthorizationRequest(data["service"], data["node_id"], subscription,
                                tuple(data["owners"]), data["node_kind"])


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def loads(text: str | bytes) -> dict[str, Any]:
    message = json.loads(text)
    if not isinstance(message, dict):
        raise ValueError("a cluster message is a JSON object")
    return message
