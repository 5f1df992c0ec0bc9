"""When an account was last online (XEP-0012), as a node of its PEP service.

Node ``last-activity``: one item, written by the service when the account's
last resource goes unavailable; its publication time is the answer. Access
model ``presence``: whoever sees the account's presence may read it (XEP-0012
§4 asks exactly that), through the ``jabber:iq:last`` door or XEP-0060.
Nobody but the service writes it.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

from xep207.pubsub import errors
from xep207.pubsub.kinds.base import Access, NodeKind, NodeKindName
from xep207.storage.records import NodeConfig

LAST_ACTIVITY_NODE = "last-activity"
NS_LAST = "jabber:iq:last"


class LastActivityKind(NodeKind):
    name: ClassVar[NodeKindName] = "lastactivity"

    def claims(self, engine, service: str, node_id: str) -> bool:
        return node_id == LAST_ACTIVITY_NODE and engine.is_pep(service)

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        return super().initial_config(engine, service, node_id).replace(
            access_model="presence", persist_items=True, max_items=1,
            deliver_notifications=False, send_last_published_item="never")

    async def check_create(self, engine, requestor: str, service: str, node_id: str,
                           values: Mapping[str, object] | None) -> None:
        raise errors.forbidden(text="the service keeps the last activity")

    async def may_auto_create(self, engine, requestor: str, service: str, node_id: str,
                              operation: str) -> bool:
        return False  # the service makes it (ensure_node), nobody else

    async def check_configure(self, access: Access, values: Mapping[str, object]) -> None:
        await super().check_configure(access, values)
        if values:
            raise errors.not_acceptable(text="the last activity's configuration is the service's")

    async def check_publish(self, access: Access) -> None:
        raise errors.forbidden(text="the service records the last activity")

    async def check_retract(self, access: Access, existing) -> None:
        raise errors.forbidden(text="the service records the last activity")

    async def check_owner(self, access: Access, operation: str) -> None:
        """The account owns the node (it grants who may read it), but emptying
        it would rewrite the answer its contacts get: the service's alone."""
        await super().check_owner(access, operation)
        if operation in ("purge", "delete"):
            raise errors.forbidden(text="the service records the last activity")
