"""In-process XMPP services: the handlers behind the server's own addresses.

``LocalServices`` receives iqs addressed to the domain or to an account's
bare JID (disco, ping, version, PEP, roster…). Services with a domain of their
own (``pubsub.DOMAIN``, ``chat.DOMAIN``) are wokkel ``InternalComponent``s on
the router. Both talk to the router through an ``XmlPipe``, exactly as an
external component would through a socket.
"""

from __future__ import annotations

from twisted.words.protocols.jabber import jid as jidlib
from wokkel.component import InternalComponent
from wokkel.generic import XmlPipe
from wokkel import disco
from twisted.words.protocols.jabber.xmlstream import XMPPHandlerCollection
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

import xep207
from xep207.server.element_dispatch import faster


class LocalServices(XMPPHandlerCollection):
    def __init__(self, router):
        super().__init__()
        pipe = XmlPipe()
        faster(pipe.source)  # many iq handlers: dispatched by plans (issue 13)
        faster(pipe.sink)
        self.xmlstream = pipe.source
        router.local_services = pipe.sink
        pipe.sink.addObserver("/*", router.route)

    def addHandler(self, handler):
        super().addHandler(handler)
        handler.makeConnection(self.xmlstream)
        handler.connectionInitialized()

    def send(self, obj):
        self.xmlstream.send(obj)


class InternalService(InternalComponent):
    """wokkel's ``InternalComponent`` whose pipe dispatches elements by plans
    (``xep207.server.element_dispatch``), not by matching every handler's
    XPath query in turn."""

    def startService(self):
        super().startService()
        faster(self._pipe.source)
        faster(self._pipe.sink)


@implementer(disco.IDisco)
class ServerDisco(XMPPHandler):
    """XEP-0030 for the server itself and for accounts (with PEP, XEP-0163 §7)."""

    def __init__(self, router, registration: bool = False):
        super().__init__()
        self.router = router
        self.registration = registration

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier:
            return []
        if target.user is None and target.host == self.router.domain:
            info = [disco.DiscoIdentity("server", "im", f"xep207 {xep207.__version__}"),
                    # Profanity asks the server, not the account, whether MAM is there.
                    disco.DiscoFeature("urn:xmpp:mam:2"),
                    disco.DiscoFeature("jabber:iq:roster"),
                    disco.DiscoFeature("urn:xmpp:features:rosterver"),
                    disco.DiscoFeature("urn:xmpp:carbons:2"),
                    # XEP-0077 self-service (password change, cancellation) is always
                    # there; sign-up is the stream feature, offered with --registration.
                    disco.DiscoFeature("jabber:iq:register"),
                    # it lists its services (getDiscoItems): Converse.js looks for them only if told so
                    disco.DiscoFeature("http://jabber.org/protocol/disco#items")]
            return info
        if target.user is not None and target.resource is None:
            return [disco.DiscoIdentity("account", "registered"), disco.DiscoFeature("urn:xmpp:mam:2")]
        return []

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier or target.user is not None:
            return []
        return [disco.DiscoItem(jidlib.JID(domain)) for domain in sorted(self.router.routes)]


class LegacySession(XMPPHandler):
    """RFC 3921's session establishment, a no-op since RFC 6121 (we advertise it
    as optional); old clients still send it and expect a result."""

    def connectionInitialized(self):
        self.xmlstream.addObserver("/iq[@type='set']/session[@xmlns='urn:ietf:params:xml:ns:xmpp-session']",
                                   self._on_session)

    def _on_session(self, iq):
        from twisted.words.protocols.jabber.xmlstream import toResponse

        iq.handled = True
        self.send(toResponse(iq, "result"))
