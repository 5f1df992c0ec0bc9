"""The XEP-0114 listener: external components, each with its own configured secret."""

from __future__ import annotations

from twisted.python import log
from twisted.words.protocols.jabber import error
from wokkel.component import ListenComponentAuthenticator, XMPPComponentServerFactory


class ComponentAuthenticator(ListenComponentAuthenticator):
    """wokkel's authenticator with the secret looked up by the component's name."""

    def __init__(self, secrets: dict[str, str]):
        super().__init__(None)
        self.secrets = secrets

    def streamStarted(self, rootElement):
        name = rootElement.getAttribute("to", "")
        self.secret = self.secrets.get(name)
        if self.secret is None:
            log.msg(f"refused component {name!r}: not configured")
            self.xmlstream.thisEntity = None
            self.xmlstream.sendStreamError(error.StreamError("host-unknown"))
            return
        super().streamStarted(rootElement)


class ComponentServerFactory(XMPPComponentServerFactory):
    def __init__(self, router, secrets: dict[str, str]):
        super().__init__(router)
        self.authenticatorFactory = lambda: ComponentAuthenticator(secrets)
