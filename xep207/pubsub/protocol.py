"""The engine's XMPP face: wokkel's ``PubSubService`` driven by a resource adapter.

wokkel 18.0.0 parses most XEP-0060 requests; what it lacks on the server side
(publish-options, RSM, retract ``notify``, delete ``redirect``, owner
subscription changes, item ids in the publish reply, subscription options,
authorization answers, invalid JIDs as ``bad-request``) is added here by
subclassing — wokkel's own code is not modified.

Where a stanza enters: ``PubSubProtocol._onPubSubRequest`` (iq) and
``PubSubProtocol._on_authorization_answer`` (message). Where it becomes an
engine call: ``EngineResource``. Where notifications leave: ``deliver``.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import error, jid
from twisted.words.xish import domish
from wokkel import data_form, disco
from wokkel.pubsub import (
    NS_PUBSUB,
    NS_PUBSUB_OWNER,
    NS_PUBSUB_SUBSCRIBE_OPTIONS,
    PubSubRequest,
    PubSubResource,
    PubSubService,
)
from zope.interface import implementer

from xep207 import logs
from xep207.pubsub import config as node_config
from xep207.pubsub import errors, render
from xep207.pubsub.events import IEventSink
from xep207.xmlutil import release
from xep207.storage.interface import StorageUnavailable
from xep207.storage.records import AFFILIATIONS, NONE, SubscriptionState, is_subscription_state

NS_RSM = "http://jabber.org/protocol/rsm"
NS_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"

FEATURES = [
    "access-authorize", "access-open", "access-presence", "access-roster", "access-whitelist",
    "auto-create", "auto-subscribe", "config-node", "create-and-configure", "create-nodes",
    "delete-items", "delete-nodes", "filtered-notifications", "instant-nodes",
    "item-ids", "last-published", "manage-affiliations", "manage-subscriptions",
    "meta-data", "modify-affiliations", "outcast-affiliation", "persistent-items",
    "publish", "publish-options", "publisher-affiliation",
    "publish-only-affiliation", "purge-nodes", "retract-items", "retrieve-affiliations",
    "retrieve-default", "retrieve-items", "retrieve-subscriptions", "subscribe",
    "subscription-options", "subscription-notifications", "config-node-max",
]


def _jid(value: str) -> str:
    """Normalize a JID string, or raise XEP-0060's ``invalid-jid``."""
    try:
        return jid.JID(value).full()
    except (jid.InvalidFormat, TypeError, ValueError):
        raise errors.bad_request("invalid-jid")


def _form_values(form) -> dict:
    """Submitted form values with FORM_TYPE dropped and JIDs made strings."""
    return {k: v for k, v in form.getValues().items() if k != "FORM_TYPE"}


def parse_authorization_answer(form) -> tuple[str, str, bool, str | None]:
    """(node, subscriber, allow, subid) from a submitted authorization form.

    XEP-0207's example misspells the subscriber field ``pusub#subscriber_jid``;
    both spellings are accepted.
    """
    fields = form.fields
    subscriber_field = fields.get("pubsub#subscriber_jid") or fields.get("pusub#subscriber_jid")
    node_field = fields.get("pubsub#node")
    allow_field = fields.get("pubsub#allow")
    if subscriber_field is None or node_field is None or allow_field is None:
        raise errors.bad_request(text="incomplete authorization form")
    subscriber = _jid(str(subscriber_field.value))
    allow = str(allow_field.value).lower() in ("1", "true")
    subid_field = fields.get("pubsub#subid")
    subid = str(subid_field.value) if subid_field is not None and subid_field.value else None
    return str(node_field.value), subscriber, allow, subid


def authorization_answer(message):
    """The submitted authorization form in a message, or None."""
    form = data_form.findForm(message, render.NS_AUTHORIZATION)
    if form is None or form.formType != "submit" or message.getAttribute("type") == "error":
        return None
    return form


def requested_node(iq: domish.Element) -> str | None:
    """The node an XEP-0060 request names, as ``_onPubSubRequest`` will
    read it (None: not a well-formed request naming one)."""
    try:
        return Request.fromElement(iq).nodeIdentifier or None
    except Exception:  # whatever the parser refuses, the service answers
        return None


class Request(PubSubRequest):
    """wokkel's request, with the parameters XEP-0060 has and wokkel 18 lacks."""

    publishOptions = None
    notify = False
    redirect = None
    rsm: dict[str, str | int | None] | None = None
    subscriptionChanges: list[tuple[str, SubscriptionState]] | None = None

    _parameters = dict(
        PubSubRequest._parameters,
        publish=["node", "items", "publishOptions"],
        retract=["node", "notify", "itemIdentifiers"],
        items=["node", "maxItems", "itemIdentifiers", "subidOrNone", "rsm"],
        delete=["node", "redirect"],
        subscriptions=["nodeOrNone"],
        subscriptionsSet=["node", "subscriptionChanges"],
    )

    def parseElement(self, element):
        try:
            super().parseElement(element)
        except jid.InvalidFormat:
            raise errors.bad_request("invalid-jid")

    def _parse_jid(self, verbElement):
        value = verbElement.getAttribute("jid")
        if not value:
            raise errors.bad_request("jid-required")
        self.subscriber = jid.JID(_jid(value))

    def _parse_publishOptions(self, verbElement):
        for element in verbElement.parent.elements(NS_PUBSUB, "publish-options"):
            form = data_form.findForm(element, NS_PUBLISH_OPTIONS)
            if form is None or form.formType != "submit":
                raise errors.bad_request(text="publish-options needs a submitted form")
            self.publishOptions = form

    def _parse_notify(self, verbElement):
        self.notify = verbElement.getAttribute("notify") in ("1", "true")

    def _parse_redirect(self, verbElement):
        for element in verbElement.elements(NS_PUBSUB_OWNER, "redirect"):
            self.redirect = element.getAttribute("uri")

    def _parse_rsm(self, verbElement):
        for element in verbElement.parent.elements(NS_RSM, "set"):
            texts = {}
            for child in element.elements():
                texts[child.name] = str(child)
            rsm: dict[str, str | int | None] = dict(texts)
            try:
                rsm["max"] = int(texts["max"]) if "max" in texts else None
            except ValueError:
                raise errors.bad_request(text="RSM max must be a number")
            self.rsm = rsm

    def _parse_subscriptionChanges(self, verbElement):
        changes: list[tuple[str, SubscriptionState]] = []
        self.subscriptionChanges = changes
        for element in verbElement.elements(NS_PUBSUB_OWNER, "subscription"):
            state = element.getAttribute("subscription")
            if not element.getAttribute("jid") or not is_subscription_state(state):
                raise errors.bad_request(text="each subscription needs a jid and a state")
            changes.append((_jid(element["jid"]), state))


def _subscription_element(subscription, uri=NS_PUBSUB, with_node=True):
    element = domish.Element((uri, "subscription"))
    if with_node:
        element["node"] = subscription.node_id
    element["jid"] = subscription.subscriber
    element["subscription"] = subscription.state
    if subscription.state != NONE:
        element["subid"] = subscription.subid
    return element


class EngineResource(PubSubResource):
    """Adapts parsed wokkel requests to ``PubSubEngine`` calls.

    ``service`` is the JID the request was addressed to: a component, or an
    account's bare JID for PEP.
    """

    features = FEATURES

    def __init__(self, engine, pep=False, allow_create=True):
        self.engine = engine
        self.allow_create = allow_create
        self.discoIdentity = (disco.DiscoIdentity("pubsub", "pep") if pep else
                              disco.DiscoIdentity("pubsub", "service", "xep207 publish-subscribe"))

    def getConfigurationOptions(self):
        return node_config.FIELDS

    @staticmethod
    def _who(request):
        return request.sender.full(), request.recipient.full() if request.recipient else ""

    def getInfo(self, requestor, service, nodeIdentifier):
        if not nodeIdentifier:
            return defer.succeed(None)

        def info(node):
            if node is None:
                return None
            return {"type": "leaf", "meta-data": [
                {"var": "pubsub#title", "value": node.config.title, "type": "text-single"},
                {"var": "pubsub#access_model", "value": node.config.access_model,
                 "type": "list-single"},
                {"var": "pubsub#owner", "type": "jid-multi",
                 "values": self.engine.kind_of(node.service, node.node_id).listed_owners(node)},
            ]}

        return self.engine.node_info(requestor.full(), service.full(), nodeIdentifier).addCallback(info)

    def getNodes(self, requestor, service, nodeIdentifier):
        if nodeIdentifier:
            return defer.succeed([])
        return self.engine.list_nodes(requestor.full(), service.full())

    def create(self, request):
        sender, service = self._who(request)
        if not self.allow_create:
            return defer.fail(errors.forbidden(text="nodes here are made another way (join a room)"))
        values = _form_values(request.options) if request.options else None
        return self.engine.create_node(sender, service, request.nodeIdentifier, values)

    def default(self, request):
        sender, service = self._who(request)
        if request.nodeType != "leaf":
            return defer.fail(errors.unsupported("collections"))
        return defer.succeed(node_config.config_values(self.engine.default_node_config(service, None)))

    def configureGet(self, request):
        sender, service = self._who(request)
        return self.engine.get_configuration(sender, service, request.nodeIdentifier).addCallback(
            node_config.config_values)

    def configureSet(self, request):
        sender, service = self._who(request)
        return self.engine.configure_node(
            sender, service, request.nodeIdentifier, _form_values(request.options)
        ).addCallback(lambda _: None)

    def delete(self, request):
        sender, service = self._who(request)
        return self.engine.delete_node(sender, service, request.nodeIdentifier, request.redirect)

    def purge(self, request):
        sender, service = self._who(request)
        return self.engine.purge_node(sender, service, request.nodeIdentifier)

    def publish(self, request):
        sender, service = self._who(request)
        items = []
        for item in request.items or ():
            children = [c for c in item.elements()]
            if len(children) > 1:
                return defer.fail(errors.bad_request("invalid-payload"))
            payload = children[0].toXml() if children else ""
            items.append((item.getAttribute("id"), payload))
        options = _form_values(request.publishOptions) if request.publishOptions else None
        d = self.engine.publish(sender, service, request.nodeIdentifier, items, options)

        def reply(item_ids):
            response = domish.Element((NS_PUBSUB, "pubsub"))
            publish = response.addElement("publish")
            publish["node"] = request.nodeIdentifier
            for item_id in item_ids:
                publish.addElement("item")["id"] = item_id
            return response

        return d.addCallback(reply)

    def retract(self, request):
        sender, service = self._who(request)
        return self.engine.retract(sender, service, request.nodeIdentifier,
                                   request.itemIdentifiers, request.notify)

    def items(self, request):
        sender, service = self._who(request)
        rsm = request.rsm or {}
        limit = rsm.get("max") if rsm.get("max") is not None else request.maxItems
        d = self.engine.get_items(
            sender, service, request.nodeIdentifier, item_ids=request.itemIdentifiers or (),
            max_items=limit, after=rsm.get("after"), before=rsm.get("before"))

        def reply(page):
            response = domish.Element((NS_PUBSUB, "pubsub"))
            items = response.addElement("items")
            items["node"] = request.nodeIdentifier
            for item in page.items:
                element = items.addElement("item")
                element["id"] = item.item_id
                if item.payload:
                    element.addRawXml(item.payload)
            # XEP-0060 §6.5.7: a read cut short by the node's page says so.
            truncated = not request.itemIdentifiers and len(page.items) < page.count \
                and (limit is None or limit > len(page.items))
            if request.rsm is not None or truncated:
                rsm_set = response.addElement((NS_RSM, "set"))
                if page.items:
                    first = rsm_set.addElement("first", content=page.first)
                    first["index"] = str(page.first_index)
                    rsm_set.addElement("last", content=page.last)
                rsm_set.addElement("count", content=str(page.count))
            return response

        return d.addCallback(reply)

    def subscribe(self, request):
        sender, service = self._who(request)
        options = _form_values(request.options) if request.options else None
        d = self.engine.subscribe(sender, service, request.nodeIdentifier,
                                  request.subscriber.full(), options)

        def reply(subscription):
            response = domish.Element((NS_PUBSUB, "pubsub"))
            response.addChild(_subscription_element(subscription))
            return response

        return d.addCallback(reply)

    def unsubscribe(self, request):
        sender, service = self._who(request)
        return self.engine.unsubscribe(sender, service, request.nodeIdentifier,
                                       request.subscriber.full(), request.subscriptionIdentifier)

    def optionsGet(self, request):
        sender, service = self._who(request)
        d = self.engine.get_subscription_options(
            sender, service, request.nodeIdentifier, request.subscriber.full(),
            request.subscriptionIdentifier)

        def reply(subscription):
            response = domish.Element((NS_PUBSUB, "pubsub"))
            options = response.addElement("options")
            options["node"] = subscription.node_id
            options["jid"] = subscription.subscriber
            options["subid"] = subscription.subid
            form = data_form.Form("form", formNamespace=NS_PUBSUB_SUBSCRIBE_OPTIONS)
            deliver = subscription.options.get("pubsub#deliver", True)
            form.addField(data_form.Field("boolean", var="pubsub#deliver",
                                          value=deliver in (True, "1", "true"),
                                          label="Enable delivery?"))
            for var, value in sorted(subscription.options.items()):
                if var != "pubsub#deliver":
                    if isinstance(value, list):
                        form.addField(data_form.Field("text-multi", var=var, values=value))
                    else:
                        form.addField(data_form.Field("text-single", var=var, value=str(value)))
            options.addChild(form.toElement())
            return response

        return d.addCallback(reply)

    def optionsSet(self, request):
        sender, service = self._who(request)
        if request.options.formType == "cancel":
            return defer.succeed(None)
        return self.engine.set_subscription_options(
            sender, service, request.nodeIdentifier, request.subscriber.full(),
            _form_values(request.options), request.subscriptionIdentifier,
        ).addCallback(lambda _: None)

    def subscriptions(self, request):
        sender, service = self._who(request)
        d = self.engine.subscriptions_of(sender, service, request.nodeIdentifier)

        def reply(subscriptions):
            response = domish.Element((NS_PUBSUB, "pubsub"))
            container = response.addElement("subscriptions")
            if request.nodeIdentifier:
                container["node"] = request.nodeIdentifier
            for subscription in subscriptions:
                container.addChild(_subscription_element(subscription))
            return response

        return d.addCallback(reply)

    def affiliations(self, request):
        sender, service = self._who(request)
        return self.engine.affiliations_of(sender, service)

    def affiliationsGet(self, request):
        sender, service = self._who(request)
        d = self.engine.node_affiliations(sender, service, request.nodeIdentifier)
        return d.addCallback(lambda affs: {jid.JID(e): a for e, a in affs.items()})

    def affiliationsSet(self, request):
        sender, service = self._who(request)
        changes = {e.userhost(): a for e, a in request.affiliations.items()}
        if any(a not in AFFILIATIONS for a in changes.values()):
            return defer.fail(errors.bad_request(text="unknown affiliation"))
        return self.engine.set_node_affiliations(sender, service, request.nodeIdentifier, changes)

    def subscriptionsGet(self, request):
        sender, service = self._who(request)
        d = self.engine.node_subscriptions(sender, service, request.nodeIdentifier)

        def reply(subscriptions):
            response = domish.Element((NS_PUBSUB_OWNER, "pubsub"))
            container = response.addElement("subscriptions")
            container["node"] = request.nodeIdentifier
            for subscription in subscriptions:
                container.addChild(_subscription_element(subscription, NS_PUBSUB_OWNER, False))
            return response

        return d.addCallback(reply)

    def subscriptionsSet(self, request):
        sender, service = self._who(request)
        d = self.engine.set_node_subscriptions(
            sender, service, request.nodeIdentifier, request.subscriptionChanges)

        def reply(failed):
            if failed:
                raise errors.not_acceptable(text="some subscriptions could not be changed: "
                                            + ", ".join(j for j, _ in failed))

        return d.addCallback(reply)


@implementer(IEventSink)
class PubSubProtocol(PubSubService):
    """The pubsub service on one XML stream (a component connection, or the
    internal router's). It is also the engine's event sink on that stream."""

    def __init__(self, engine, resource=None, accepts=None, pep=False, allow_create=True):
        """``accepts(service)`` says which addressed JIDs this instance serves
        (default: any); ``pep`` makes it the PEP service of accounts."""
        super().__init__(resource or EngineResource(engine, pep=pep, allow_create=allow_create))
        self.engine = engine
        self.accepts = accepts or (lambda service: True)
        # Which addressed JIDs this service describes in disco (a room JID is
        # the groupchat service's to describe, though pubsub serves it too).
        self.describes = self.accepts
        # ``serial(node_id, call)``: where requests for one node must take
        # turns with another door's stanzas (a room's: its admission checks
        # read, then write). None: each runs at once.
        self.serial: Callable[[str, Callable[[], defer.Deferred]], defer.Deferred] | None = None

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if not self.describes(target.full()):
            return defer.succeed([])
        return super().getDiscoInfo(requestor, target, nodeIdentifier)

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        if not self.accepts(target.full()):
            return defer.succeed([])
        return super().getDiscoItems(requestor, target, nodeIdentifier)

    def connectionMade(self):
        super().connectionMade()
        self.xmlstream.addObserver("/message/x[@xmlns='jabber:x:data']",
                                   self._on_authorization_answer)

    def _onPubSubRequest(self, iq):
        # Parsed already (wokkel reads ``parent`` while parsing): once handled,
        # the request's cycles go (issue 13; the answer copies its attributes, an
        # error its children, neither its links).
        return self._handle(iq).addErrback(_storage_trouble, iq).addBoth(_released, iq)

    def _handle(self, iq) -> defer.Deferred:
        # wokkel builds its own PubSubRequest here; ours parses more.
        try:
            request = Request.fromElement(iq)
        except data_form.Error as exc:  # a field twice, a field without var: the client's error
            return defer.fail(errors.bad_request(text=f"malformed form: {exc}"))
        if request.recipient is None or not self.accepts(request.recipient.full()):
            return defer.fail(error.StanzaError("service-unavailable"))
        resource = self.resource.locateResource(request)
        preprocess = getattr(self, "_preProcess_" + request.verb, None)
        if preprocess is not None:
            request = preprocess(resource, request)
            if request is None:
                return defer.succeed(None)
        handler = getattr(resource, request.verb, None)
        if handler is None:
            return defer.fail(errors.unsupported("", f"Request verb: {request.verb}"))
        if self.serial is not None and request.nodeIdentifier:
            d = self.serial(request.nodeIdentifier, lambda: handler(request))
        else:
            d = handler(request)
        to_response = getattr(self, "_toResponse_" + request.verb, None)
        if to_response is not None:
            d.addCallback(to_response, resource, request)
        return d

    # Responses our resource builds itself pass through unchanged.
    def _toResponse_subscribe(self, result, resource, request):
        return result

    def _toResponse_subscriptions(self, result, resource, request):
        return result

    def _toResponse_items(self, result, resource, request):
        return result

    def _checkConfiguration(self, resource, form):
        """Type-check a node configuration form, rejecting unknown fields."""
        unknown = [var for var in form.fields if var != "FORM_TYPE"
                   and var not in node_config.FIELDS]
        if unknown:
            raise errors.not_acceptable(text="unsupported configuration field " + unknown[0])
        try:
            form.typeCheck(node_config.FIELDS, filterUnknown=False)
        except (ValueError, TypeError, jid.InvalidFormat) as exc:
            raise errors.not_acceptable(text=str(exc))

    # Authorization answers (XEP-0060 §8.6, XEP-0207 §4) --------------------

    def _on_authorization_answer(self, message):
        form = authorization_answer(message)
        if form is None:
            return
        message.handled = True
        d = self.answer_authorization(message, form)
        d.addErrback(self._answer_failed, message)

    def answer_authorization(self, message, form):
        """Apply an owner's submitted ``subscribe_authorization`` form."""
        try:
            node_id, subscriber, allow, subid = parse_authorization_answer(form)
        except error.StanzaError as exc:
            return defer.fail(exc)
        service = message.getAttribute("to", "")
        return self.engine.answer_authorization(
            message["from"], jid.JID(service).full() if service else "", node_id,
            subscriber, allow, subid)

    def _answer_failed(self, failure, message):
        if failure.check(error.StanzaError):
            self.send(failure.value.toResponse(message))
        else:
            log.err(failure, "authorization answer failed")
            self.send(error.StanzaError("internal-server-error").toResponse(message))

    # IEventSink ------------------------------------------------------------

    def deliver(self, event, recipients):
        if not recipients:
            return
        body = render.event_body(event)
        for recipient in recipients:
            self.send(render.message(event.service, recipient.jid, body,
                                     type=event.notification_type))

    def subscription_changed(self, change):
        pass  # a component has no rosters to update

    def request_authorization(self, request):
        form = render.authorization_form(request)
        for owner in request.owners:
            self.send(render.message(request.service, owner, form,
                                     id=render.authorization_id(request)))


def _storage_trouble(failure, iq: domish.Element):
    """Storage down: one log line, as the legacy door writes (``logs.failure``),
    not wokkel's "Unhandled error in iq handler" traceback per request, and
    the same ``internal-server-error`` answer."""
    failure.trap(StorageUnavailable)
    logs.failure(failure, f"XEP-0060 request {iq.getAttribute('id')!r} from {iq.getAttribute('from')}")
    raise error.StanzaError("internal-server-error")


def _released(result, iq: domish.Element):
    release(iq)
    return result
