"""The account's XEP-0357 push registrations: a private node of its PEP service.

Node ``urn:xmpp:push:0``: one item per (app server JID, node), the
``<enable/>`` as the client sent it (publish-options included). Like the
``roster``, nobody but the account may learn it exists; unlike a generic
node, an item must be a well-formed ``<enable/>``, and its id is derived from
(jid, node), so enabling twice overwrites and ``<disable/>`` finds it —
whichever door (the ``<enable/>`` iq, or an XEP-0060 publish) it came through.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar, Mapping, Sequence

from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.xish import domish

from xep207.pubsub import errors
from xep207.pubsub.kinds.account import RosterKind
from xep207.pubsub.kinds.base import Access, NodeKindName
from xep207.storage.records import NodeConfig
from xep207.xmlutil import parse_stanza

NS_PUSH = "urn:xmpp:push:0"
PUSH_NODE = NS_PUSH
NS_DATA = "jabber:x:data"
MAX_REGISTRATIONS = 16  # the oldest goes beyond (XEP-0060 max_items)
MAX_NODE_LENGTH = 1024
# Every offline message sends each registration's form to the app server the
# account named: a big form would make one short message a megabyte sent to
# whoever that is. Real app servers ask for a secret and an endpoint or two.
MAX_OPTIONS_BYTES = 4096


def registration_id(service_jid: str, node: str) -> str:
    return hashlib.sha256(f"{service_jid}\0{node}".encode("utf-8")).hexdigest()[:32]


def parse_enable(element: domish.Element) -> tuple[str, str, domish.Element | None]:
    """(app server JID, node, publish-options form or None) of an ``<enable/>``;
    ``bad-request`` for anything else."""
    if element.name != "enable" or element.uri != NS_PUSH:
        raise errors.bad_request("invalid-payload", text="an item is an <enable xmlns='urn:xmpp:push:0'/>")
    try:
        service = jidlib.JID(element.getAttribute("jid") or "").full()
    except (jidlib.InvalidFormat, IndexError, RuntimeError):  # Twisted: RuntimeError for ""
        raise errors.bad_request(text="jid: not a JID")
    node = element.getAttribute("node", "")
    if not node or len(node) > MAX_NODE_LENGTH:
        raise errors.bad_request(text="node: required, at most 1024 characters")
    forms = [c for c in element.elements(NS_DATA, "x")]
    if len(forms) > 1 or (forms and forms[0].getAttribute("type") != "submit"):
        raise errors.bad_request(text="at most one submitted publish-options form")
    if forms and len(forms[0].toXml().encode("utf-8")) > MAX_OPTIONS_BYTES:
        raise errors.not_acceptable(text=f"publish-options: at most {MAX_OPTIONS_BYTES} bytes")
    return service, node, forms[0] if forms else None


def enable_payload(service: str, node: str, form: domish.Element | None) -> str:
    """The canonical stored form: nothing but jid, node and the form."""
    enable = domish.Element((NS_PUSH, "enable"))
    enable["jid"] = service
    enable["node"] = node
    if form is not None:
        enable.addChild(form)
    return enable.toXml()


class PushKind(RosterKind):
    name: ClassVar[NodeKindName] = "push"
    # The owner may lower the bound on registrations (``_bounded``), never lift it.
    fixed_fields: ClassVar[Sequence[str]] = ("access_model", "publish_model", "persist_items")
    owner_empties: ClassVar[bool] = True  # (XEP-0357 <disable/> without a node is as much)

    def claims(self, engine, service: str, node_id: str) -> bool:
        return node_id == PUSH_NODE and engine.is_pep(service)

    def initial_config(self, engine, service: str, node_id: str) -> NodeConfig:
        return super().initial_config(engine, service, node_id).replace(max_items=MAX_REGISTRATIONS)

    async def check_configure(self, access: Access, values: Mapping[str, object]) -> None:
        """The owner may configure her node, but not lift the bound on
        registrations: each one is an iq to someone per offline message."""
        await super().check_configure(access, values)
        _bounded(values)

    async def check_create(self, engine, requestor: str, service: str, node_id: str,
                           values: Mapping[str, object] | None) -> None:
        await super().check_create(engine, requestor, service, node_id, values)
        _bounded(values or {})

    async def vet_item(self, access: Access, item_id: str | None, payload: str) -> tuple[str | None, str]:
        try:
            element = parse_stanza(payload, NS_PUSH)
        except Exception:
            raise errors.bad_request("invalid-payload")
        service, node, form = parse_enable(element)
        return registration_id(service, node), enable_payload(service, node, form)


def _bounded(values: Mapping[str, object]) -> None:
    if "pubsub#max_items" in values:
        wanted = str(values["pubsub#max_items"])
        if not wanted.isdigit() or not 0 < int(wanted) <= MAX_REGISTRATIONS:
            raise errors.not_acceptable(text=f"at most {MAX_REGISTRATIONS} push registrations")
