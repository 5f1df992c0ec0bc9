"""XEP-0357 push notifications: the user's server side.

``<enable/>`` and ``<disable/>`` (iqs to the account's own bare JID) become a
publish to, and retractions from, the account's private ``urn:xmpp:push:0``
node (``xep207.pubsub.kinds.push``) — the same node a client may read or
write through XEP-0060.

When a one-to-one message (an item on a pair node, whichever door published
it) is stored for an account none of whose sessions is available, each of its
registrations gets an ``urn:xmpp:push:summary`` notification: an iq from the
account's bare JID to the app server, publishing to its node with the
registration's publish-options (§7). The summary has the message count since
the account was last online and the sender; the body only with
``--push-body``. An error answer disables that registration (§7; a timeout
is not an error: the app server may just be slow).
"""

from __future__ import annotations

import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jidlib
from twisted.python import log
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel import disco
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xep207 import logs
from xep207.hooks import KEPT_OFFLINE, SESSION_BOUND, STANZA
from xep207.pubsub import errors
from xep207.pubsub.kinds import Trusted
from xep207.pubsub.kinds.push import NS_DATA, NS_PUSH, PUSH_NODE, PushKind, enable_payload, parse_enable
from xep207.storage.records import bare
from xep207.xmlutil import parse_stanza, release

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
SUMMARY = "urn:xmpp:push:summary"
MAX_WAITING = 10000  # notifications awaiting the app server's answer
MAX_PUSHED_IDS = 1000  # per account offline: the items already pushed (a repeat is dropped)


@dataclass(frozen=True)
class _Sent:
    account: str
    item_id: str
    service: str



@implementer(disco.IDisco)
class PushService(XMPPHandler):
    def __init__(self, server, include_body: bool = False):
        super().__init__()
        self.server = server
        self.engine = server.engine
        self.router = server.router
        self.include_body = include_body
        self.waiting: OrderedDict[str, _Sent] = OrderedDict()
        self.missed: Counter = Counter()  # messages since the account was last online
        # Per account, the items pushed since it was last online: a message that two
        # sessions were written and never acknowledged is kept once (one mark) and told
        # once per session (xep207.legacy.unreceived): pushed once, counted once.
        self.pushed: dict[str, OrderedDict[str, None]] = {}
        self.engine.add_kind(PushKind())
        # Whom the delivery missed, as it decided (not who is available by the commit:
        # a message delivered before its commit to a party gone since was read).
        server.hooks.add(KEPT_OFFLINE, self.on_kept_offline, kinds=("pair",))
        server.hooks.add(SESSION_BOUND, self._back_online)
        server.hooks.add(STANZA, self.on_answer, priority=900, stanzas=("iq",))

    def connectionInitialized(self):
        self.xmlstream.addObserver(f"/iq[@type='set']/enable[@xmlns='{NS_PUSH}']", self._on_enable)
        self.xmlstream.addObserver(f"/iq[@type='set']/disable[@xmlns='{NS_PUSH}']", self._on_disable)

    # XEP-0030: the account's bare JID advertises it (§5).

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier or target.user is None or target.resource is not None \
                or target.host != self.server.domain:
            return []
        return [disco.DiscoFeature(NS_PUSH)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []

    # enable / disable -----------------------------------------------------------------

    def _request(self, iq, work) -> None:
        session = iq.__dict__.get("session")
        if iq.__dict__.get("handled", False) or session is None:
            return
        if iq.getAttribute("to") not in (session.bare, self.server.domain):
            return  # someone else's account: not ours to answer
        iq.handled = True
        d = defer.ensureDeferred(work(iq, session))
        d.addCallback(lambda _: self.send(xmlstream.toResponse(iq, "result")))
        d.addErrback(self._failed, iq)

    def _failed(self, failure, iq) -> None:
        if failure.check(StanzaError):
            self.send(failure.value.toResponse(iq))
            return
        logs.failure(failure, "push registration failed")
        self.send(StanzaError("internal-server-error").toResponse(iq))

    def _on_enable(self, iq) -> None:
        self._request(iq, self._enable)

    def _on_disable(self, iq) -> None:
        self._request(iq, self._disable)

    async def _enable(self, iq, session) -> None:
        service, node, form = parse_enable(iq.enable)
        await self.engine.publish(session.full, session.bare, PUSH_NODE,
                                  [(None, enable_payload(service, node, form))])

    async def _disable(self, iq, session) -> None:
        """§6: without ``node``, every registration with that app server goes."""
        disable = iq.disable
        try:
            service = jidlib.JID(disable.getAttribute("jid") or "").full()
        except (jidlib.InvalidFormat, IndexError, RuntimeError):  # Twisted: RuntimeError for ""
            raise errors.bad_request(text="jid: not a JID")
        node = disable.getAttribute("node") or None
        items = await self._registrations(session.bare)
        gone = [item_id for item_id, (jid, item_node, _) in items.items()
                if jid == service and (node is None or item_node == node)]
        if gone:
            await self.engine.retract(session.full, session.bare, PUSH_NODE, gone)

    async def _registrations(self, account: str) -> dict[str, tuple[str, str, domish.Element | None]]:
        if await self.engine.storage.get_node(account, PUSH_NODE) is None:
            return {}  # never enabled (nearly everyone): no item-not-found raised per offline message
        try:
            page = await self.engine.get_items(Trusted(account), account, PUSH_NODE)
        except errors.StanzaError:
            return {}  # no node yet: never enabled
        registrations = {}
        for item in page.items:
            try:
                registrations[item.item_id] = parse_enable(parse_stanza(item.payload, NS_PUSH))
            except (errors.StanzaError, ValueError):
                continue
        return registrations

    # Notifications ---------------------------------------------------------------------

    def _back_online(self, session) -> None:
        self.missed.pop(session.bare, None)
        self.pushed.pop(session.bare, None)

    def on_kept_offline(self, node, item, account: str) -> None:
        pushed = self.pushed.setdefault(account, OrderedDict())
        if item.item_id in pushed:
            return  # (told again: another session of the account missed it too)
        pushed[item.item_id] = None
        while len(pushed) > MAX_PUSHED_IDS:
            pushed.popitem(last=False)
        d = defer.ensureDeferred(self.notify(account, item))
        d.addErrback(logs.failure, f"push notification for {account} failed")
        self.router.in_flight.track(d)

    async def notify(self, account: str, item) -> None:
        try:
            message = parse_stanza(item.payload)
        except ValueError:
            return
        body = next((str(c) for c in message.elements() if c.name == "body"), None)
        release(message)  # (read: no cycle left to the garbage collector, per offline message)
        if body is None:
            return  # chat states, receipts: nothing a user needs waking for
        registrations = await self._registrations(account)
        if not registrations:
            self.pushed.pop(account, None)  # (remembered only for accounts that push)
            return
        self.missed[account] += 1
        for item_id, (service, node, options) in registrations.items():
            iq = self._publish(account, service, node, options, item.publisher, body)
            self.waiting[iq["id"]] = _Sent(account, item_id, service)
            while len(self.waiting) > MAX_WAITING:  # never answered: forgotten, oldest first
                self.waiting.popitem(last=False)
            self.router.route(iq)

    def _publish(self, account, service, node, options, sender, body) -> domish.Element:
        iq = domish.Element((None, "iq"))
        iq["type"] = "set"
        iq["from"] = account
        iq["to"] = service
        iq["id"] = uuid.uuid4().hex
        pubsub = iq.addElement((NS_PUBSUB, "pubsub"))
        publish = pubsub.addElement("publish")
        publish["node"] = node
        notification = publish.addElement("item").addElement((NS_PUSH, "notification"))
        form = notification.addElement((NS_DATA, "x"))
        form["type"] = "submit"
        fields = [("FORM_TYPE", SUMMARY), ("message-count", str(self.missed[account])),
                  ("last-message-sender", sender)]
        if self.include_body:
            fields.append(("last-message-body", body))
        for var, value in fields:
            field = form.addElement("field")
            field["var"] = var
            field.addElement("value", content=value)
        if options is not None:
            pubsub.addElement("publish-options").addChild(options)
        return iq

    def on_answer(self, stanza) -> bool:
        """The app server's answer to a notification: captured here; an error
        disables the registration (§7)."""
        if stanza.name != "iq" or stanza.getAttribute("type") not in ("result", "error"):
            return False
        sent = self.waiting.get(stanza.getAttribute("id", ""))
        if sent is None or stanza.getAttribute("from") != sent.service \
                or bare(stanza.getAttribute("to", "")) != sent.account:
            return False
        del self.waiting[stanza["id"]]
        if stanza["type"] == "error":
            log.msg(f"push service {sent.service} refused a notification for {sent.account}: "
                    "registration disabled")
            d = defer.ensureDeferred(self.engine.retract(Trusted(sent.account), sent.account, PUSH_NODE,
                                                         [sent.item_id]))
            d.addErrback(logs.failure, "disabling a push registration failed")
            self.router.in_flight.track(d)
        return True


def install(server, options) -> PushService:
    service = PushService(server, include_body=bool(options.get("push-body")))
    service.setHandlerParent(server.local)
    return service
