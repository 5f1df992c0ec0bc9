"""XEP-0077 in-band registration (off unless ``--registration``).

Before authentication the negotiator hands ``jabber:iq:register`` iqs here
(registration of a new account); after it, the same handler serves password
changes and cancellation for the logged-in account.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from wokkel.subprotocols import IQHandlerMixin, XMPPHandler

from xep207.logs import peer_address
from xep207.server import accounts

NS_REGISTER = "jabber:iq:register"


def _fields(query) -> dict[str, str]:
    return {child.name: str(child) for child in query.elements() if child.uri == NS_REGISTER}


def _form(instructions: str) -> "xmlstream.domish.Element":
    from twisted.words.xish import domish

    query = domish.Element((NS_REGISTER, "query"))
    query.addElement("instructions", content=instructions)
    query.addElement("username")
    query.addElement("password")
    return query


class RegistrationHandler(XMPPHandler, IQHandlerMixin):
    """Account registration, password change and cancellation."""

    iqHandlers = {"/iq[@type='get']/query[@xmlns='jabber:iq:register']": "on_get",
                  "/iq[@type='set']/query[@xmlns='jabber:iq:register']": "on_set"}

    def __init__(self, server):
        super().__init__()
        self.server = server
        server.router.handle_registration = self.register_before_login

    def connectionInitialized(self):
        self.xmlstream.addObserver("/iq/query[@xmlns='jabber:iq:register']", self.handleRequest)

    # Logged in: the account itself.

    def on_get(self, iq):
        query = _form("You are registered. Send a new password, or <remove/> to delete the account.")
        query.addElement("registered")
        return query

    async def _on_set(self, iq):
        sender = iq["from"].split("/")[0]
        query = iq.query
        if query.remove is not None:
            await accounts.delete_account(self.server.engine, sender)
            log.msg(f"deleted account {sender} (in-band, from {peer_address(getattr(iq, 'session', None))})")
            self.server.router.forget_account(sender)
            return None
        fields = _fields(query)
        if fields.get("username") not in (None, sender.split("@")[0]):
            raise StanzaError("bad-request", text="you can only change your own password")
        try:
            await accounts.change_password(self.server.engine, sender, fields.get("password", ""))
        except accounts.AccountError as exc:
            raise StanzaError("not-acceptable", text=str(exc))
        return None

    def on_set(self, iq):
        return defer.ensureDeferred(self._on_set(iq))

    # Before login: a new account.

    def register_before_login(self, xs, iq, secure: bool) -> None:
        d = defer.ensureDeferred(self._register(xs, iq, secure))

        def reply(result):
            response = xmlstream.toResponse(iq, "result")
            if result is not None:
                response.addChild(result)
            xs.send(response)

        def failed(failure):
            if failure.check(StanzaError):
                xs.send(failure.value.toResponse(iq))
            else:
                log.err(failure, "registration failed")
                xs.send(StanzaError("internal-server-error").toResponse(iq))

        d.addCallbacks(reply, failed)

    async def _register(self, xs, iq, secure: bool):
        if iq.getAttribute("type") == "get":
            return _form("Choose a username and password.")
        if iq.getAttribute("type") != "set":
            raise StanzaError("bad-request")
        if not secure and self.server.policy.require_tls and self.server.policy.tls is not None:
            raise StanzaError("not-authorized", text="register over TLS")
        fields = _fields(iq.query)
        if not fields.get("username") or not fields.get("password"):
            raise StanzaError("not-acceptable", text="username and password are required")
        # One account per connection, a few per address per hour: attempts
        # count, not only successes, so probing names costs the same.
        if getattr(xs, "registration_attempted", False):
            raise StanzaError("resource-constraint", text="one registration per connection")
        peer = xs.transport.getPeer()
        address = getattr(peer, "host", str(peer))
        limit = self.server.registrations
        if limit.exceeded(address):
            raise StanzaError("resource-constraint",
                              text="too many registrations from your address; try later")
        xs.registration_attempted = True
        limit.record(address)
        try:
            await accounts.create_account(self.server.engine,
                                          f"{fields['username']}@{self.server.domain}", fields["password"])
        except accounts.AccountError as exc:
            xs.registration_attempted = False  # a taken name or short password: may try again here
            condition = "conflict" if "exists" in str(exc) else "not-acceptable"
            raise StanzaError(condition, text=str(exc))
        log.msg(f"registered account {fields['username']}@{self.server.domain} (in-band, from {address})")
        return None
