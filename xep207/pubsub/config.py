"""Node configuration: the ``pubsub#node_config`` fields and their mapping to ``NodeConfig``."""

from __future__ import annotations

from typing import Any, Mapping

from xep207.pubsub import errors
from xep207.storage.records import NodeConfig

ACCESS_MODELS = ("open", "presence", "roster", "authorize", "whitelist")
PUBLISH_MODELS = ("publishers", "subscribers", "open")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
NOTIFICATION_TYPES = ("normal", "headline")
ITEMREPLY = ("owner", "publisher")


def _choices(values):
    return {v: v for v in values}


# wokkel's field definitions: used to render forms and to type-check submissions.
FIELDS: dict[str, dict] = {
    "pubsub#title": {"type": "text-single", "label": "A friendly name for the node"},
    "pubsub#access_model": {
        "type": "list-single", "label": "Who may subscribe and retrieve items",
        "options": _choices(ACCESS_MODELS)},
    "pubsub#publish_model": {
        "type": "list-single", "label": "Who may publish items",
        "options": _choices(PUBLISH_MODELS)},
    "pubsub#max_items": {"type": "text-single", "label": "Max number of items to persist"},
    "pubsub#persist_items": {"type": "boolean", "label": "Persist items to storage"},
    "pubsub#deliver_payloads": {"type": "boolean", "label": "Deliver payloads with notifications"},
    "pubsub#deliver_notifications": {"type": "boolean", "label": "Deliver event notifications"},
    "pubsub#notify_retract": {"type": "boolean", "label": "Notify subscribers of retracted items"},
    "pubsub#notify_delete": {"type": "boolean", "label": "Notify subscribers when the node is deleted"},
    "pubsub#notify_config": {"type": "boolean", "label": "Notify subscribers when the configuration changes"},
    "pubsub#notification_type": {
        "type": "list-single", "label": "Message type of notifications",
        "options": _choices(NOTIFICATION_TYPES)},
    "pubsub#send_last_published_item": {
        "type": "list-single", "label": "When to send the last published item",
        "options": _choices(SEND_LAST)},
    "pubsub#itemreply": {
        "type": "list-single", "label": "Whom replies go to (publisher: notifications name the publisher)",
        "options": _choices(ITEMREPLY)},
    "pubsub#roster_groups_allowed": {
        "type": "list-multi", "label": "Roster groups allowed to subscribe"},
    # XEP-0207 §6 lists publishers in the configuration form; we accept them
    # and turn them into publisher affiliations (see docs/architecture.md).
    "pubsub#publisher": {"type": "jid-multi", "label": "Publishers (become publisher affiliations)"},
}

_BOOLEANS = {
    "pubsub#persist_items": "persist_items",
    "pubsub#deliver_payloads": "deliver_payloads",
    "pubsub#deliver_notifications": "deliver_notifications",
    "pubsub#notify_retract": "notify_retract",
    "pubsub#notify_delete": "notify_delete",
    "pubsub#notify_config": "notify_config",
}
_CHOICES = {
    "pubsub#access_model": ("access_model", ACCESS_MODELS),
    "pubsub#publish_model": ("publish_model", PUBLISH_MODELS),
    "pubsub#send_last_published_item": ("send_last_published_item", SEND_LAST),
    "pubsub#notification_type": ("notification_type", NOTIFICATION_TYPES),
    "pubsub#itemreply": ("itemreply", ITEMREPLY),
}


def config_values(config: NodeConfig) -> dict:
    """The form values of a configuration, for wokkel's ``makeFields``."""
    values = {"pubsub#title": config.title,
              "pubsub#max_items": str(config.max_items),
              "pubsub#roster_groups_allowed": list(config.roster_groups_allowed)}
    for var, attribute in _BOOLEANS.items():
        values[var] = getattr(config, attribute)
    for var, (attribute, _) in _CHOICES.items():
        values[var] = getattr(config, attribute)
    return values


def apply_values(
    config: NodeConfig, values: Mapping[str, Any], max_items_limit: int
) -> tuple[NodeConfig, list[str] | None]:
    """Apply submitted, type-checked form values to ``config``.

    Returns the new configuration and the ``pubsub#publisher`` list (None when
    absent). Unknown fields and bad values raise ``not-acceptable``: a silently
    ignored setting is a security surprise (think ``access_model``).
    ``values`` are typed per field (a list for the multi fields), hence ``Any``.
    """
    changes: dict[str, object] = {}
    publishers = None
    for var, value in values.items():
        if var == "FORM_TYPE":
            continue
        if var in _BOOLEANS:
            changes[_BOOLEANS[var]] = value in (True, 1, "1", "true")
        elif var in _CHOICES:
            attribute, allowed = _CHOICES[var]
            if value not in allowed:
                raise errors.not_acceptable(text=f"{var} must be one of {', '.join(allowed)}")
            changes[attribute] = value
        elif var == "pubsub#max_items":
            changes["max_items"] = parse_max_items(value, max_items_limit)
        elif var == "pubsub#title":
            changes["title"] = str(value or "")
        elif var == "pubsub#roster_groups_allowed":
            changes["roster_groups_allowed"] = tuple(value or ())
        elif var == "pubsub#publisher":
            publishers = [j.userhost() if hasattr(j, "userhost") else str(j) for j in value or ()]
        else:
            raise errors.not_acceptable(text=f"unsupported configuration field {var}")
    return config.replace(**changes), publishers


def parse_max_items(value, limit: int) -> int:
    if value == "max":
        return limit
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise errors.not_acceptable(text="pubsub#max_items must be a number or 'max'")
    if not 0 < number <= limit:
        raise errors.not_acceptable(text=f"pubsub#max_items must be between 1 and {limit}")
    return number
