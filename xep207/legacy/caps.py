"""XEP-0115 entity capabilities → XEP-0163 ``+notify`` interests per session.

The first time a ``ver`` is seen, the server asks the client (disco#info on
``node#ver``), checks that the answer hashes to ``ver`` (a poisoned cache
would route other users' notifications wrongly) and remembers the features
by ``ver``. Interests decide both implicit PEP delivery and, per docs/architecture.md,
whether a session gets the XEP-0207 form of a node's events.
"""

from __future__ import annotations

import base64
import hashlib

from twisted.internet import defer
from twisted.python import log
from twisted.words.xish import domish

from xep207.pubsub.events import ITEMS, Event, Recipient
from xep207.storage.records import SUBSCRIBED

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DATA = "jabber:x:data"
NOTIFY = "+notify"


def verification_string(query: domish.Element) -> str:
    """XEP-0115 §5.1."""
    identities = sorted(
        (i.getAttribute("category", ""), i.getAttribute("type", ""),
         i.getAttribute((("http://www.w3.org/XML/1998/namespace", "lang")), ""), i.getAttribute("name", ""))
        for i in query.elements(NS_DISCO_INFO, "identity"))
    features = sorted(f.getAttribute("var", "") for f in query.elements(NS_DISCO_INFO, "feature"))
    text = "".join("/".join(identity) + "<" for identity in identities)
    text += "".join(feature + "<" for feature in features)
    forms = []
    for form in query.elements(NS_DATA, "x"):
        fields = {}
        form_type = None
        for field in form.elements(NS_DATA, "field"):
            values = sorted(str(v) for v in field.elements(NS_DATA, "value"))
            if field.getAttribute("var") == "FORM_TYPE":
                form_type = values[0] if values else ""
            else:
                fields[field.getAttribute("var", "")] = values
        if form_type is not None:
            forms.append((form_type, fields))
    for form_type, fields in sorted(forms):
        text += form_type + "<"
        for var in sorted(fields):
            text += var + "<" + "".join(value + "<" for value in fields[var])
    return text


def well_formed(query: domish.Element) -> bool:
    """XEP-0115 §5.4: no duplicate identities or features, and no ``<`` in
    any value — it would let two different feature lists share one
    verification string, poisoning the cache every session relies on."""
    identities = [(i.getAttribute("category", ""), i.getAttribute("type", ""),
                   i.getAttribute(("http://www.w3.org/XML/1998/namespace", "lang"), ""),
                   i.getAttribute("name", "")) for i in query.elements(NS_DISCO_INFO, "identity")]
    features = [f.getAttribute("var", "") for f in query.elements(NS_DISCO_INFO, "feature")]
    values = [v for identity in identities for v in identity] + features
    for form in query.elements(NS_DATA, "x"):
        for field in form.elements(NS_DATA, "field"):
            values.append(field.getAttribute("var", ""))
            values.extend(str(v) for v in field.elements(NS_DATA, "value"))
    return (len(set(identities)) == len(identities) and len(set(features)) == len(features)
            and not any("<" in value for value in values))


def features_of(query: domish.Element) -> set[str]:
    return {f.getAttribute("var", "") for f in query.elements(NS_DISCO_INFO, "feature")}


class CapsTracker:
    def __init__(self, router, engine, delivery) -> None:
        self.router = router
        self.engine = engine
        self.delivery = delivery
        self.known: dict[str, frozenset] = {}  # ver -> +notify node names
        self._asking: dict[str, list] = {}  # ver -> sessions waiting for its features

    def update(self, session, presence: domish.Element) -> None:
        caps = next(presence.elements(NS_CAPS, "c"), None)
        if caps is None or caps.getAttribute("hash") != "sha-1" or not caps.getAttribute("ver"):
            return
        ver = caps["ver"]
        if ver in self.known:
            self._interested(session, self.known[ver])
            return
        if ver in self._asking:  # asked already: this session learns with the first
            self._asking[ver].append(session)
            return
        self._asking[ver] = [session]
        d = defer.ensureDeferred(self._learn(session, caps.getAttribute("node", ""), ver))
        d.addErrback(lambda f: log.msg(f"caps {ver} from {session.full} not learned: {f.getErrorMessage()}"))
        d.addBoth(lambda _: self._asking.pop(ver, None))

    async def _learn(self, session, node: str, ver: str) -> None:
        iq = domish.Element((None, "iq"))
        iq["type"], iq["to"] = "get", session.full
        iq.addElement((NS_DISCO_INFO, "query"))["node"] = f"{node}#{ver}"
        result = await self.router.request(iq)
        query = next(result.elements(NS_DISCO_INFO, "query"), None)
        if query is None or not well_formed(query):
            log.msg(f"caps {ver} from {session.full}: malformed disco#info, ignored")
            return
        digest = base64.b64encode(hashlib.sha1(verification_string(query).encode("utf-8")).digest()).decode()
        if digest != ver:
            log.msg(f"caps ver mismatch from {session.full}: ignored")
            return
        interests = frozenset(f[: -len(NOTIFY)] for f in features_of(query) if f.endswith(NOTIFY))
        self.known[ver] = interests
        for waiting in self._asking.get(ver, [session]):
            self._interested(waiting, interests)

    def _interested(self, session, interests: frozenset) -> None:
        new = interests - session.interested
        session.interested = interests
        if new:
            d = defer.ensureDeferred(self._send_last_items(session, new))
            d.addErrback(log.err, "sending last PEP items failed")

    async def _send_last_items(self, session, nodes) -> None:
        """XEP-0163 §4.3.2: on a new interest, the last item of each node the
        contact may see (its own account's and its presence contacts')."""
        storage = self.engine.storage
        services = {session.bare}
        for subscription in await storage.get_entity_subscriptions(session.bare, node_id="presence"):
            if subscription.state == SUBSCRIBED:
                services.add(subscription.service)
        for service in sorted(services):
            for node_id in sorted(nodes):
                if node_id == "presence":
                    continue  # presence is the probe's business
                node = await self.engine.node_info(session.bare, service, node_id)
                if node is None or node.config.send_last_published_item != "on_sub_and_presence":
                    continue  # XEP-0060: the node says whether a coming online gets it
                page = await storage.page_items(service, node_id, 1)
                if page.items:
                    self.delivery.deliver(
                        Event(service, node_id, ITEMS, items=page.items,
                              node_kind=self.engine.kind_of(service, node_id).name,
                              include_payloads=node.config.deliver_payloads, replay=True),
                        [Recipient(session.full)])
